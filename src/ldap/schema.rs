//! The subschema entry (`CN=Aggregate,CN=Schema,CN=Configuration,<base>`): attribute types and object classes
//! for what we serve, so schema-reading clients (Apache Directory Studio, some CTI tools) know the syntaxes.
//! Attribute types come from a table of AD's definitions plus every attribute the Graph→AD mapping
//! (`schema/mapping.toml`) and the projection produce, so the subschema follows the mapping.

use crate::directory::entry::{Attribute, Entry};
use crate::directory::EntryKind;
use bytes::Bytes;

const DSTRING: &str = "1.3.6.1.4.1.1466.115.121.1.15";
const OCTETS: &str = "1.3.6.1.4.1.1466.115.121.1.40";
const DN: &str = "1.3.6.1.4.1.1466.115.121.1.12";
const INTEGER: &str = "1.3.6.1.4.1.1466.115.121.1.27";
const GTIME: &str = "1.3.6.1.4.1.1466.115.121.1.24";
const PHONE: &str = "1.3.6.1.4.1.1466.115.121.1.50";
const OID: &str = "1.3.6.1.4.1.1466.115.121.1.38";

/// (name, OID, syntax, single-valued). OIDs are AD's; attributes whose OID we do not ship use the
/// RFC 4512-tolerated `name-oid` placeholder form that OpenLDAP also emits.
const ATTRIBUTES: &[(&str, &str, &str, bool)] = &[
    ("objectClass", "2.5.4.0", OID, false),
    ("cn", "2.5.4.3", DSTRING, true),
    ("sn", "2.5.4.4", DSTRING, true),
    ("givenName", "2.5.4.42", DSTRING, true),
    ("displayName", "1.2.840.113556.1.2.13", DSTRING, true),
    ("name", "1.2.840.113556.1.4.1", DSTRING, true),
    ("mail", "0.9.2342.19200300.100.1.3", DSTRING, true),
    ("userPrincipalName", "1.2.840.113556.1.4.656", DSTRING, true),
    ("sAMAccountName", "1.2.840.113556.1.4.221", DSTRING, true),
    ("distinguishedName", "2.5.4.49", DN, true),
    ("objectCategory", "1.2.840.113556.1.4.782", DN, true),
    ("objectGUID", "1.2.840.113556.1.4.2", OCTETS, true),
    ("objectSid", "1.2.840.113556.1.4.146", OCTETS, true),
    ("telephoneNumber", "2.5.4.20", PHONE, true),
    ("otherTelephone", "1.2.840.113556.1.2.18", PHONE, false),
    ("mobile", "0.9.2342.19200300.100.1.41", PHONE, true),
    ("homePhone", "0.9.2342.19200300.100.1.20", PHONE, true),
    ("pager", "0.9.2342.19200300.100.1.42", PHONE, true),
    ("facsimileTelephoneNumber", "2.5.4.23", PHONE, true),
    ("ipPhone", "1.2.840.113556.1.4.721", PHONE, true),
    ("title", "2.5.4.12", DSTRING, true),
    ("department", "1.2.840.113556.1.2.141", DSTRING, true),
    ("company", "1.2.840.113556.1.2.146", DSTRING, true),
    ("member", "2.5.4.31", DN, false),
    ("memberOf", "1.2.840.113556.1.2.102", DN, false),
    ("manager", "0.9.2342.19200300.100.1.10", DN, true),
    ("userAccountControl", "1.2.840.113556.1.4.8", INTEGER, true),
    ("groupType", "1.2.840.113556.1.4.750", INTEGER, true),
    ("thumbnailPhoto", "2.16.840.1.113730.3.1.35", OCTETS, true),
    ("jpegPhoto", "0.9.2342.19200300.100.1.60", OCTETS, false),
    ("whenCreated", "1.2.840.113556.1.2.2", GTIME, true),
    ("whenChanged", "1.2.840.113556.1.2.3", GTIME, true),
    ("uSNCreated", "1.2.840.113556.1.2.19", INTEGER, true),
    ("uSNChanged", "1.2.840.113556.1.2.120", INTEGER, true),
    ("proxyAddresses", "1.2.840.113556.1.2.210", DSTRING, false),
    ("mailNickname", "1.2.840.113556.1.2.447", DSTRING, true),
    ("employeeID", "1.2.840.113556.1.4.35", DSTRING, true),
    (
        "msRTCSIP-PrimaryUserAddress",
        "msRTCSIP-PrimaryUserAddress-oid",
        DSTRING,
        true,
    ),
];

/// (name, OID, superior, kind).
const CLASSES: &[(&str, &str, &str, &str)] = &[
    ("top", "2.5.6.0", "", "ABSTRACT"),
    ("person", "2.5.6.6", "top", "STRUCTURAL"),
    ("organizationalPerson", "2.5.6.7", "person", "STRUCTURAL"),
    ("user", "1.2.840.113556.1.5.9", "organizationalPerson", "STRUCTURAL"),
    ("computer", "1.2.840.113556.1.3.30", "user", "STRUCTURAL"),
    ("contact", "1.2.840.113556.1.5.15", "organizationalPerson", "STRUCTURAL"),
    ("group", "1.2.840.113556.1.5.8", "top", "STRUCTURAL"),
    ("container", "1.2.840.113556.1.3.23", "top", "STRUCTURAL"),
    ("domainDNS", "1.2.840.113556.1.5.67", "top", "STRUCTURAL"),
];

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
    let mut out: Vec<(String, String, &'static str, bool)> = ATTRIBUTES
        .iter()
        .map(|(n, o, s, sv)| (n.to_string(), o.to_string(), *s, *sv))
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
    let classes = CLASSES
        .iter()
        .map(|(n, o, sup, kind)| {
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
        ],
    }
}

#[cfg(test)]
mod tests {
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
