//! The subschema entry (`CN=Aggregate,CN=Schema,CN=Configuration,<base>`): attribute types and object classes
//! for what we serve, so schema-reading clients (Apache Directory Studio, some CTI tools) know the syntaxes.
//! Attribute types come from a table of AD's definitions plus every attribute the Graph→AD mapping
//! (`schema/mapping.toml`) and the projection produce, so the subschema follows the mapping.

use crate::directory::entry::{Attribute, Entry};
use crate::directory::EntryKind;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// AD's attribute types and object classes, as data in `schema/ad-schema.toml`.
pub const AD_SCHEMA: &str = include_str!("../../schema/ad-schema.toml");

#[derive(Debug, Default, serde::Deserialize)]
struct AdSchema {
    syntaxes: BTreeMap<String, String>,
    attributes: BTreeMap<String, AttrDef>,
    classes: BTreeMap<String, ClassDef>,
}

#[derive(Debug, serde::Deserialize)]
struct AttrDef {
    oid: String,
    syntax: String,
    single: bool,
}

#[derive(Debug, serde::Deserialize)]
struct ClassDef {
    oid: String,
    sup: String,
    kind: String,
}

/// The compiled-in schema, parsed once. It is checked by a unit test; should it ever not parse, the subschema
/// is still served, with the mapped attributes only.
fn ad_schema() -> &'static AdSchema {
    static SCHEMA: OnceLock<AdSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        toml::from_str(AD_SCHEMA).unwrap_or_else(|e| {
            tracing::error!(error = %e, "schema/ad-schema.toml does not parse");
            AdSchema::default()
        })
    })
}

const DSTRING: &str = "1.3.6.1.4.1.1466.115.121.1.15";
const PHONE: &str = "1.3.6.1.4.1.1466.115.121.1.50";

pub fn subschema_dn(base: &str) -> String {
    format!("CN=Aggregate,CN=Schema,CN=Configuration,{base}")
}

fn attribute_type(name: &str, oid: &str, syntax: &str, single: bool) -> String {
    let sv = if single { " SINGLE-VALUE" } else { "" };
    format!("( {oid} NAME '{name}' SYNTAX '{syntax}'{sv} )")
}

/// Attribute names the default mapping and the projection produce.
fn mapped_attributes() -> Vec<String> {
    let mut names: Vec<String> = crate::directory::mapping::COMPUTED
        .iter()
        .map(|s| s.to_string())
        .collect();
    type Kinds = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;
    if let Ok(kinds) = toml::from_str::<Kinds>(crate::directory::mapping::DEFAULT_MAPPING) {
        names.extend(kinds.into_values().flat_map(|m| m.into_keys()));
    }
    names.sort_by_key(|n| n.to_ascii_lowercase());
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    names
}

/// Every attribute type we describe: (name, OID, syntax, single-valued).
fn attribute_types() -> Vec<(String, String, &'static str, bool)> {
    let schema = ad_schema();
    let mut out: Vec<(String, String, &'static str, bool)> = schema
        .attributes
        .iter()
        .map(|(n, a)| {
            let syntax = schema.syntaxes.get(&a.syntax).map(String::as_str).unwrap_or(DSTRING);
            (n.clone(), a.oid.clone(), syntax, a.single)
        })
        .collect();
    for name in mapped_attributes() {
        if out.iter().any(|(n, ..)| n.eq_ignore_ascii_case(&name)) {
            continue;
        }
        let syntax = if crate::directory::phone::is_phone_attr(&name) {
            PHONE
        } else {
            DSTRING
        };
        out.push((name.clone(), format!("{name}-oid"), syntax, false));
    }
    out
}

/// The subschema entry.
pub fn subschema(base: &str) -> Entry {
    let dn = subschema_dn(base);
    let attrs = attribute_types();
    let types = attrs
        .iter()
        .map(|(n, o, s, sv)| Bytes::from(attribute_type(n, o, s, *sv)))
        .collect();
    let all: Vec<&str> = attrs
        .iter()
        .map(|a| a.0.as_str())
        .filter(|n| *n != "objectClass")
        .collect();
    let classes = ad_schema()
        .classes
        .iter()
        .map(|(n, ClassDef { oid: o, sup, kind })| {
            let sup = if sup.is_empty() {
                String::new()
            } else {
                format!(" SUP {sup}")
            };
            let must = if *n == "top" {
                " MUST objectClass".to_string()
            } else {
                String::new()
            };
            let may = if *n == "top" {
                format!(" MAY ( {} )", all.join(" $ "))
            } else {
                String::new()
            };
            Bytes::from(format!("( {o} NAME '{n}'{sup} {kind}{must}{may} )"))
        })
        .collect();
    let dn_norm = crate::directory::entry::normalize_dn(&dn).unwrap_or_default();
    Entry {
        id: dn_norm.clone().into(),
        kind: EntryKind::Container,
        dn: dn.clone().into(),
        dn_norm: dn_norm.into(),
        guid: [0; 16],
        usn_changed: 0,
        usn_created: 0,
        attrs: vec![
            Attribute {
                name: "objectClass".into(),
                values: vec!["top".into(), "subSchema".into()],
            },
            Attribute {
                name: "cn".into(),
                values: vec!["Aggregate".into()],
            },
            Attribute {
                name: "distinguishedName".into(),
                values: vec![Bytes::from(dn)],
            },
            Attribute {
                name: "attributeTypes".into(),
                values: types,
            },
            Attribute {
                name: "objectClasses".into(),
                values: classes,
            },
        ]
        .into(),
        sort_keys: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ad_schema_data_file_parses_and_names_known_syntaxes() {
        let s: super::AdSchema = toml::from_str(super::AD_SCHEMA).expect("schema/ad-schema.toml parses");
        assert!(s.attributes.len() > 30 && s.classes.contains_key("user"));
        for (name, a) in &s.attributes {
            assert!(
                s.syntaxes.contains_key(&a.syntax),
                "{name}: unknown syntax {}",
                a.syntax
            );
        }
        for (name, c) in &s.classes {
            assert!(
                c.sup.is_empty() || s.classes.contains_key(&c.sup),
                "{name}: unknown superior {}",
                c.sup
            );
        }
    }

    #[test]
    fn subschema_lists_phone_attributes() {
        let e = super::subschema("DC=contoso,DC=example");
        assert!(e.strs("attributeTypes").any(|t| t.contains("NAME 'ipPhone'")));
        assert!(
            e.strs("attributeTypes")
                .any(|t| t.contains("NAME 'physicalDeliveryOfficeName'")),
            "from the mapping"
        );
        assert!(e
            .strs("attributeTypes")
            .any(|t| t.contains("NAME 'extensionAttribute15'")));
        assert!(e
            .strs("objectClasses")
            .any(|t| t.contains("NAME 'user' SUP organizationalPerson")));
    }
}
