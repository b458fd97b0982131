//! The Graph→AD attribute mapping: `schema/mapping.toml` compiled into the binary as the default, with
//! per-attribute overrides from the config file.

use crate::directory::change::GraphKind;
use crate::directory::phone::PhoneNormalizer;
use crate::directory::props::{Props, Val};
use std::collections::BTreeMap;

/// The default mapping shipped in `schema/mapping.toml`.
pub const DEFAULT_MAPPING: &str = include_str!("../../schema/mapping.toml");

/// Attributes computed by the projection; a mapping may not set them.
pub const COMPUTED: &[&str] = &[
    "objectClass",
    "objectCategory",
    "cn",
    "name",
    "distinguishedName",
    "sAMAccountName",
    "sAMAccountType",
    "userPrincipalName",
    "objectGUID",
    "objectSid",
    "memberOf",
    "member",
    "manager",
    "directReports",
    "userAccountControl",
    "groupType",
    "thumbnailPhoto",
    "jpegPhoto",
    "whenCreated",
    "whenChanged",
    "uSNCreated",
    "uSNChanged",
    "instanceType",
];

#[derive(Debug, thiserror::Error)]
#[error("mapping for {kind} attribute {attr:?}: {reason}")]
pub struct MappingError {
    pub kind: String,
    pub attr: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    Rest(usize),
    Select { field: String, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    Phone,
    Lower,
    Upper,
}

/// One compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    steps: Vec<Step>,
    filters: Vec<Filter>,
}

/// Counters the projection reports after a round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvalStats {
    pub unparsable_phones: u64,
}

impl Expr {
    pub fn parse(src: &str) -> Result<Expr, String> {
        let mut parts = src.split('|');
        let path = parts.next().unwrap_or("").trim();
        if path.is_empty() {
            return Err("empty property path".into());
        }
        let mut steps = Vec::new();
        for seg in path.split('.') {
            let (name, rest) = match seg.find('[') {
                Some(i) => (&seg[..i], &seg[i..]),
                None => (seg, ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad property name {seg:?}"));
            }
            steps.push(Step::Field(name.to_string()));
            let mut rest = rest;
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| format!("missing ] in {seg:?}"))?;
                let inner = &rest[1..close];
                rest = &rest[close + 1..];
                if let Some((f, v)) = inner.split_once('=') {
                    steps.push(Step::Select {
                        field: f.trim().to_string(),
                        value: v.trim().to_string(),
                    });
                } else if let Some(n) = inner.strip_suffix(':') {
                    steps.push(Step::Rest(
                        n.trim().parse().map_err(|_| format!("bad slice [{inner}]"))?,
                    ));
                } else {
                    steps.push(Step::Index(
                        inner.trim().parse().map_err(|_| format!("bad index [{inner}]"))?,
                    ));
                }
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("unexpected {rest:?} in {seg:?}"));
                }
            }
        }
        let filters = parts
            .map(|f| match f.trim() {
                "phone" => Ok(Filter::Phone),
                "lower" => Ok(Filter::Lower),
                "upper" => Ok(Filter::Upper),
                other => Err(format!("unknown filter {other:?} (known: phone, lower, upper)")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Expr { steps, filters })
    }

    /// The string values this expression yields for a Graph object (empty strings dropped).
    pub fn eval(&self, props: &Props, phones: &PhoneNormalizer, stats: &mut EvalStats) -> Vec<String> {
        let mut cur: Vec<&Val> = Vec::new();
        let mut first = true;
        for step in &self.steps {
            let mut next = Vec::new();
            match step {
                Step::Field(name) => {
                    if first {
                        next.extend(props.get(name));
                    } else {
                        for v in &cur {
                            match v {
                                Val::Obj(m) => next.extend(m.get(name)),
                                Val::Arr(a) => next.extend(a.iter().filter_map(|x| x.get(name))),
                                _ => {}
                            }
                        }
                    }
                }
                Step::Index(n) => next.extend(cur.iter().filter_map(|v| v.as_array()).filter_map(|a| a.get(*n))),
                Step::Rest(n) => next.extend(cur.iter().filter_map(|v| v.as_array()).flat_map(|a| a.iter().skip(*n))),
                Step::Select { field, value } => next.extend(
                    cur.iter()
                        .filter_map(|v| v.as_array())
                        .flat_map(|a| a.iter())
                        .filter(|x| {
                            x.get(field)
                                .and_then(Val::as_str)
                                .is_some_and(|s| s.eq_ignore_ascii_case(value))
                        }),
                ),
            }
            first = false;
            cur = next;
        }
        let mut out = Vec::new();
        for v in cur {
            match v {
                Val::Str(s) => out.push(s.to_string()),
                Val::Num(n) => out.push(n.to_string()),
                Val::Bool(b) => out.push(if *b { "TRUE" } else { "FALSE" }.to_string()),
                Val::Arr(a) => out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string))),
                _ => {}
            }
        }
        out.retain(|s| !s.trim().is_empty());
        // A number written nationally belongs to the person's country (Graph's usageLocation, ISO 3166).
        let region = props.get("usageLocation").and_then(Val::as_str);
        for f in &self.filters {
            for s in out.iter_mut() {
                *s = match f {
                    Filter::Lower => s.to_lowercase(),
                    Filter::Upper => s.to_uppercase(),
                    Filter::Phone => match phones.to_e164_in(s, region) {
                        Some(e) => e,
                        None => {
                            stats.unparsable_phones += 1;
                            s.trim().to_string()
                        }
                    },
                };
            }
        }
        out
    }
}

/// Per kind, AD attribute → expression, in a stable order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    pub kinds: BTreeMap<GraphKind, Vec<(String, Expr)>>,
}

fn kind_name(kind: GraphKind) -> &'static str {
    match kind {
        GraphKind::User => "user",
        GraphKind::Group => "group",
        GraphKind::Device => "device",
        GraphKind::Contact => "contact",
    }
}

impl Mapping {
    /// The default mapping with `overrides` (kind name → attribute → expression, "" removes) applied.
    pub fn with_overrides(overrides: &BTreeMap<String, BTreeMap<String, String>>) -> Result<Mapping, MappingError> {
        let defaults: BTreeMap<String, BTreeMap<String, String>> =
            toml::from_str(DEFAULT_MAPPING).map_err(|e| MappingError {
                kind: "schema/mapping.toml".into(),
                attr: String::new(),
                reason: e.to_string(),
            })?;
        let mut mapping = Mapping::default();
        for kind in GraphKind::ALL {
            let name = kind_name(kind);
            let mut attrs: Vec<(String, String)> =
                defaults.get(name).cloned().unwrap_or_default().into_iter().collect();
            if let Some(o) = overrides.get(name) {
                for (attr, expr) in o {
                    attrs.retain(|(a, _)| !a.eq_ignore_ascii_case(attr));
                    if !expr.trim().is_empty() {
                        attrs.push((attr.clone(), expr.clone()));
                    }
                }
            }
            let mut compiled = Vec::new();
            for (attr, src) in attrs {
                let err = |reason: String| MappingError {
                    kind: name.into(),
                    attr: attr.clone(),
                    reason,
                };
                if COMPUTED.iter().any(|c| c.eq_ignore_ascii_case(&attr)) {
                    return Err(err("is computed by entradir and cannot be mapped".into()));
                }
                if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(err("is not a valid LDAP attribute name".into()));
                }
                compiled.push((attr.clone(), Expr::parse(&src).map_err(err)?));
            }
            mapping.kinds.insert(kind, compiled);
        }
        for k in overrides.keys() {
            if !GraphKind::ALL.iter().any(|g| kind_name(*g) == k) {
                return Err(MappingError {
                    kind: k.clone(),
                    attr: String::new(),
                    reason: "unknown object kind (use user, group, device or contact)".into(),
                });
            }
        }
        Ok(mapping)
    }

    /// The top-level Graph properties the mapping reads for a kind (to add to delta `$select`).
    pub fn referenced_properties(&self, kind: GraphKind) -> Vec<String> {
        let mut out: Vec<String> = self
            .for_kind(kind)
            .iter()
            .filter_map(|(_, e)| match e.steps.first() {
                Some(Step::Field(f)) => Some(f.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn for_kind(&self, kind: GraphKind) -> &[(String, Expr)] {
        self.kinds.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn eval(expr: &str, v: Value) -> Vec<String> {
        let n = PhoneNormalizer::new("DE").unwrap();
        Expr::parse(expr)
            .unwrap()
            .eval(&Props::from_map(v.as_object().unwrap()), &n, &mut EvalStats::default())
    }

    #[test]
    fn expressions_walk_graph_json() {
        let u = json!({"businessPhones": ["030 1234567", "+1 425 555 0100"], "ext": {"a": "x"},
            "phones": [{"type": "mobile", "number": "0171 2345678"}, {"type": "business", "number": "1"}]});
        assert_eq!(eval("businessPhones[0] | phone", u.clone()), vec!["+49301234567"]);
        assert_eq!(eval("businessPhones[1:] | phone", u.clone()), vec!["+14255550100"]);
        assert_eq!(eval("ext.a | upper", u.clone()), vec!["X"]);
        assert_eq!(
            eval("phones[type=mobile].number | phone", u.clone()),
            vec!["+491712345678"]
        );
        assert!(eval("missing", u).is_empty());
    }

    #[test]
    fn default_mapping_compiles_and_overrides_apply() {
        let m = Mapping::with_overrides(&BTreeMap::new()).unwrap();
        assert!(m.for_kind(GraphKind::User).iter().any(|(a, _)| a == "telephoneNumber"));
        let mut o = BTreeMap::new();
        o.insert(
            "user".to_string(),
            BTreeMap::from([("title".to_string(), String::new())]),
        );
        o.get_mut("user")
            .unwrap()
            .insert("ipPhone".into(), "extensionAttribute1".into());
        let m = Mapping::with_overrides(&o).unwrap();
        assert!(!m.for_kind(GraphKind::User).iter().any(|(a, _)| a == "title"));
        assert!(m.for_kind(GraphKind::User).iter().any(|(a, _)| a == "ipPhone"));
        let bad = BTreeMap::from([(
            "user".to_string(),
            BTreeMap::from([("objectGUID".to_string(), "id".to_string())]),
        )]);
        assert!(Mapping::with_overrides(&bad)
            .unwrap_err()
            .to_string()
            .contains("computed"));
        let bad = BTreeMap::from([(
            "user".to_string(),
            BTreeMap::from([("x".to_string(), "a | nope".to_string())]),
        )]);
        assert!(Mapping::with_overrides(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown filter"));
    }
}
