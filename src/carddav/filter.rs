//! addressbook-query filters (RFC 6352 §10.5): parsing the `CARDDAV:filter` element and evaluating it against a
//! card model.
//!
//! Text matching follows the requested collation: `i;unicode-casemap` (the default; Unicode lower-casing as the
//! case fold), `i;ascii-casemap` and `i;octet`. TEL values are phone numbers, so for them a needle with digits is
//! compared by number rather than by spelling: `equals` compares the normalised E.164 digits, `starts-with` takes
//! national prefixes (`030…`) as international, `ends-with`/`contains` look at the digits. This is exactly what
//! the snapshot's phone index answers, which lets a TEL lookup use the index ([`Filter::phone_candidates`]) and
//! stay correct: the index gives candidates, the same rules here verify them.

use crate::carddav::vcard::{Card, Prop};
use crate::carddav::xml::{Element, CARDDAV};
use crate::directory::phone::{digits, PhoneNormalizer};
use crate::directory::snapshot::PhoneQuery;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unsupported collation {0:?}")]
    Collation(String),
    #[error("invalid filter: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collation {
    UnicodeCasemap,
    AsciiCasemap,
    Octet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMatch {
    pub needle: String,
    pub collation: Collation,
    pub match_type: MatchType,
    pub negate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamFilter {
    pub name: String,
    pub not_defined: bool,
    pub text: Option<TextMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropFilter {
    pub name: String,
    pub allof: bool,
    pub not_defined: bool,
    pub texts: Vec<TextMatch>,
    pub params: Vec<ParamFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub allof: bool,
    pub props: Vec<PropFilter>,
}

fn test_attr(el: &Element) -> Result<bool, FilterError> {
    match el.attr("test") {
        None | Some("anyof") => Ok(false),
        Some("allof") => Ok(true),
        Some(other) => Err(FilterError::Invalid(format!(
            "test={other:?} (expected anyof or allof)"
        ))),
    }
}

fn parse_text_match(el: &Element) -> Result<TextMatch, FilterError> {
    let collation = match el.attr("collation").unwrap_or("i;unicode-casemap") {
        "i;unicode-casemap" => Collation::UnicodeCasemap,
        "i;ascii-casemap" => Collation::AsciiCasemap,
        "i;octet" => Collation::Octet,
        other => return Err(FilterError::Collation(other.to_string())),
    };
    let match_type = match el.attr("match-type").unwrap_or("contains") {
        "equals" => MatchType::Equals,
        "contains" => MatchType::Contains,
        "starts-with" => MatchType::StartsWith,
        "ends-with" => MatchType::EndsWith,
        other => return Err(FilterError::Invalid(format!("match-type={other:?}"))),
    };
    let negate = match el.attr("negate-condition").unwrap_or("no") {
        "yes" => true,
        "no" => false,
        other => return Err(FilterError::Invalid(format!("negate-condition={other:?}"))),
    };
    Ok(TextMatch {
        needle: el.text.clone(),
        collation,
        match_type,
        negate,
    })
}

impl Filter {
    /// Parse `CARDDAV:filter`; `None` (no filter element) matches everything, as does an empty filter.
    pub fn parse(el: Option<&Element>) -> Result<Filter, FilterError> {
        let Some(el) = el else { return Ok(Filter::default()) };
        let mut f = Filter {
            allof: test_attr(el)?,
            props: Vec::new(),
        };
        for pf in el.children_named(CARDDAV, "prop-filter") {
            let name = pf
                .attr("name")
                .ok_or_else(|| FilterError::Invalid("prop-filter without name".into()))?;
            let mut p = PropFilter {
                name: name.to_ascii_uppercase(),
                allof: test_attr(pf)?,
                not_defined: pf.child(CARDDAV, "is-not-defined").is_some(),
                texts: Vec::new(),
                params: Vec::new(),
            };
            for tm in pf.children_named(CARDDAV, "text-match") {
                p.texts.push(parse_text_match(tm)?);
            }
            for pa in pf.children_named(CARDDAV, "param-filter") {
                let name = pa
                    .attr("name")
                    .ok_or_else(|| FilterError::Invalid("param-filter without name".into()))?;
                p.params.push(ParamFilter {
                    name: name.to_ascii_uppercase(),
                    not_defined: pa.child(CARDDAV, "is-not-defined").is_some(),
                    text: pa.child(CARDDAV, "text-match").map(parse_text_match).transpose()?,
                });
            }
            f.props.push(p);
        }
        Ok(f)
    }

    pub fn matches(&self, card: &Card, phones: &PhoneNormalizer) -> bool {
        if self.props.is_empty() {
            return true;
        }
        let mut results = self.props.iter().map(|p| p.matches(card, phones));
        if self.allof {
            results.all(|r| r)
        } else {
            results.any(|r| r)
        }
    }

    /// When every match must satisfy one TEL text-match, the phone index query that yields a superset of the
    /// matches; `None` when the filter needs a scan.
    pub fn phone_candidates(&self) -> Option<PhoneQuery<'_>> {
        if !self.allof && self.props.len() != 1 {
            return None;
        }
        self.props.iter().find_map(|p| {
            let required =
                p.name == "TEL" && !p.not_defined && (p.allof || (p.texts.len() == 1 && p.params.is_empty()));
            if !required {
                return None;
            }
            p.texts
                .iter()
                .find(|t| !t.negate && t.collation != Collation::Octet && !digits(&t.needle).is_empty())
                .map(|t| match t.match_type {
                    MatchType::Equals => PhoneQuery::Exact(&t.needle),
                    MatchType::StartsWith => PhoneQuery::Prefix(&t.needle),
                    MatchType::EndsWith => PhoneQuery::Suffix(&t.needle),
                    MatchType::Contains => PhoneQuery::Contains(&t.needle),
                })
        })
    }
}

impl Filter {
    /// Words one of which every card this filter can match holds in a name or mail attribute, for the trigram
    /// index (`Query::Text`) to find the candidates instead of reading every card: a directory search. Only
    /// for FN and EMAIL (projected from displayName or cn, and mail, all indexed), with ASCII needles of three
    /// characters or more without spaces (an FN made of givenName and sn has no such needle across the two),
    /// not negated; `None` when the filter could match a card outside what the words find.
    pub fn text_candidates(&self) -> Option<Vec<String>> {
        let bound = |p: &PropFilter| -> Option<Vec<String>> {
            if !matches!(p.name.as_str(), "FN" | "EMAIL") || p.not_defined || !p.params.is_empty() || p.texts.is_empty()
            {
                return None;
            }
            let usable = |t: &TextMatch| {
                !t.negate
                    && t.needle.is_ascii()
                    && t.needle.len() >= 3
                    && !t.needle.chars().any(|c| c.is_ascii_whitespace())
            };
            if p.allof {
                p.texts
                    .iter()
                    .find(|t| usable(t))
                    .map(|t| vec![t.needle.to_ascii_lowercase()])
            } else if p.texts.iter().all(usable) {
                Some(p.texts.iter().map(|t| t.needle.to_ascii_lowercase()).collect())
            } else {
                None
            }
        };
        if self.props.is_empty() {
            return None;
        }
        if self.allof {
            self.props.iter().find_map(bound)
        } else {
            let mut all = Vec::new();
            for p in &self.props {
                all.extend(bound(p)?);
            }
            Some(all)
        }
    }
}

impl PropFilter {
    fn matches(&self, card: &Card, phones: &PhoneNormalizer) -> bool {
        let instances: Vec<&Prop> = card.all(&self.name).collect();
        if self.not_defined {
            return instances.is_empty();
        }
        if self.texts.is_empty() && self.params.is_empty() {
            return !instances.is_empty();
        }
        let is_tel = self.name == "TEL";
        instances.iter().any(|prop| {
            let value = prop.text();
            let mut conds = self
                .texts
                .iter()
                .map(|t| {
                    if is_tel {
                        t.matches_phone(&value, phones)
                    } else {
                        t.matches(&value)
                    }
                })
                .chain(self.params.iter().map(|pf| pf.matches(prop)));
            if self.allof {
                conds.all(|c| c)
            } else {
                conds.any(|c| c)
            }
        })
    }
}

impl ParamFilter {
    fn matches(&self, prop: &Prop) -> bool {
        // TYPE is the only parameter our cards carry.
        let values: &[&str] = if self.name.eq_ignore_ascii_case("TYPE") {
            prop.types
        } else {
            &[]
        };
        if self.not_defined {
            return values.is_empty();
        }
        match &self.text {
            None => !values.is_empty(),
            // A negated match on an absent parameter is true (nothing equals the needle).
            Some(t) if values.is_empty() => t.negate,
            Some(t) => {
                if t.negate {
                    values.iter().all(|v| t.matches(v))
                } else {
                    values.iter().any(|v| t.matches(v))
                }
            }
        }
    }
}

impl TextMatch {
    pub fn matches(&self, value: &str) -> bool {
        let (v, n) = match self.collation {
            Collation::UnicodeCasemap => (value.to_lowercase(), self.needle.to_lowercase()),
            Collation::AsciiCasemap => (value.to_ascii_lowercase(), self.needle.to_ascii_lowercase()),
            Collation::Octet => (value.to_string(), self.needle.clone()),
        };
        let hit = match self.match_type {
            MatchType::Equals => v == n,
            MatchType::Contains => v.contains(&n),
            MatchType::StartsWith => v.starts_with(&n),
            MatchType::EndsWith => v.ends_with(&n),
        };
        hit != self.negate
    }

    /// Phone semantics (see the module doc); falls back to text when the needle has no digits or is `i;octet`.
    pub fn matches_phone(&self, value: &str, phones: &PhoneNormalizer) -> bool {
        let needle_digits = digits(&self.needle);
        if needle_digits.is_empty() || self.collation == Collation::Octet {
            return self.matches(value);
        }
        let key = phones.key(value);
        let hit = match self.match_type {
            MatchType::Equals => key == phones.key(&self.needle),
            MatchType::StartsWith => {
                let p = phones.prefix_key(&self.needle);
                !p.is_empty() && key.starts_with(&p)
            }
            MatchType::EndsWith => key.ends_with(&needle_digits),
            MatchType::Contains => key.contains(&needle_digits),
        };
        hit != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::vcard::build;
    use crate::carddav::vcard::tests::{person, phones};
    use crate::carddav::xml::parse;

    fn filter(xml: &str) -> Result<Filter, FilterError> {
        let doc = format!(r#"<C:filter xmlns:C="urn:ietf:params:xml:ns:carddav" {xml}"#);
        let el = parse(doc.as_bytes()).unwrap();
        Filter::parse(Some(&el))
    }

    fn card() -> Card {
        build(
            &person(
                "p",
                1,
                &[
                    ("cn", "Jürgen Groß"),
                    ("givenName", "Jürgen"),
                    ("sn", "Groß"),
                    ("mail", "jg@contoso.example"),
                    ("telephoneNumber", "030 1234567"),
                    ("mobile", "+49 171 2345678"),
                ],
            ),
            &phones(),
        )
    }

    fn check(xml: &str) -> bool {
        filter(xml).unwrap().matches(&card(), &phones())
    }

    #[test]
    fn empty_filter_matches_all() {
        assert!(Filter::parse(None).unwrap().matches(&card(), &phones()));
        assert!(check("/>"));
    }

    #[test]
    fn text_matches_and_collations() {
        let m = |inner: &str| {
            check(&format!(
                r#"><C:prop-filter name="FN">{inner}</C:prop-filter></C:filter>"#
            ))
        };
        assert!(m(r#"<C:text-match>JÜRGEN</C:text-match>"#));
        assert!(m(r#"<C:text-match match-type="starts-with">jür</C:text-match>"#));
        assert!(m(r#"<C:text-match match-type="ends-with">groß</C:text-match>"#));
        assert!(m(r#"<C:text-match match-type="equals">jürgen groß</C:text-match>"#));
        assert!(!m(r#"<C:text-match match-type="equals">jürgen</C:text-match>"#));
        assert!(!m(r#"<C:text-match collation="i;ascii-casemap">JÜRGEN</C:text-match>"#));
        assert!(m(r#"<C:text-match collation="i;ascii-casemap">JüRGEN</C:text-match>"#));
        assert!(!m(r#"<C:text-match collation="i;octet">jürgen</C:text-match>"#));
        assert!(m(r#"<C:text-match negate-condition="yes">nobody</C:text-match>"#));
        assert!(!m(r#"<C:text-match negate-condition="yes">Jürgen</C:text-match>"#));
        assert_eq!(
            filter(
                r#"><C:prop-filter name="FN"><C:text-match collation="x;y">a</C:text-match></C:prop-filter></C:filter>"#
            ),
            Err(FilterError::Collation("x;y".into()))
        );
        assert!(filter(r#"test="sometimes"/>"#).is_err());
        assert!(filter(r#"><C:prop-filter/></C:filter>"#).is_err());
    }

    #[test]
    fn anyof_allof_defined_and_params() {
        let both = r#"><C:prop-filter name="FN"><C:text-match>zzz</C:text-match></C:prop-filter>
            <C:prop-filter name="EMAIL"><C:text-match>contoso</C:text-match></C:prop-filter></C:filter>"#;
        assert!(check(both));
        assert!(!check(&format!(r#"test="allof"{both}"#)));
        assert!(check(
            r#"><C:prop-filter name="NICKNAME"><C:is-not-defined/></C:prop-filter></C:filter>"#
        ));
        assert!(!check(
            r#"><C:prop-filter name="EMAIL"><C:is-not-defined/></C:prop-filter></C:filter>"#
        ));
        assert!(check(r#"><C:prop-filter name="email"/></C:filter>"#));
        let cell = r#"><C:prop-filter name="TEL" test="allof"><C:param-filter name="TYPE"><C:text-match match-type="equals">CELL</C:text-match></C:param-filter><C:text-match>171</C:text-match></C:prop-filter></C:filter>"#;
        assert!(check(cell));
        let work_171 = cell.replace("CELL", "fax");
        assert!(!check(&work_171));
        assert!(check(
            r#"><C:prop-filter name="FN"><C:param-filter name="TYPE"><C:is-not-defined/></C:param-filter></C:prop-filter></C:filter>"#
        ));
    }

    #[test]
    fn phone_numbers_match_in_any_spelling() {
        let tel = |mt: &str, n: &str| {
            check(&format!(
                r#"><C:prop-filter name="TEL"><C:text-match match-type="{mt}">{n}</C:text-match></C:prop-filter></C:filter>"#
            ))
        };
        assert!(tel("equals", "+49301234567"));
        assert!(tel("equals", "030/123 45 67"));
        assert!(tel("equals", "0049 30 1234567"));
        assert!(!tel("equals", "030 123456"));
        assert!(tel("starts-with", "030 12"));
        assert!(tel("ends-with", "4567"));
        assert!(tel("contains", "2345678"));
        assert!(!tel("contains", "999"));
        let f = filter(r#"><C:prop-filter name="TEL"><C:text-match match-type="ends-with">4567</C:text-match></C:prop-filter></C:filter>"#).unwrap();
        assert!(matches!(f.phone_candidates(), Some(PhoneQuery::Suffix("4567"))));
        let scan = filter(r#"><C:prop-filter name="TEL"><C:text-match>1</C:text-match></C:prop-filter><C:prop-filter name="FN"/></C:filter>"#).unwrap();
        assert!(scan.phone_candidates().is_none());
    }
}
