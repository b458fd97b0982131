//! vCard rendering: a directory entry becomes a version-neutral [`Card`] model, which is written as vCard 3.0
//! (RFC 2426) or 4.0 (RFC 6350) and evaluated by addressbook-query filters.
//!
//! Why a hand-written writer instead of a crate: `vcard4` only writes 4.0, and macOS/iOS and most phones need
//! 3.0. `calcard` writes both, but pulls chrono-tz, mail-parser/builder and the JMAP tooling into the server for
//! what is a dozen properties with fixed shapes, its owned property tree would have to be rebuilt for every
//! entry, and it needs Rust 1.88 where the server builds with 1.85. The rules that matter are few and are implemented here once: escaping of `\ , ;` and newlines in text
//! values (component-wise in structured values), folding at 75 octets on UTF-8 boundaries with CRLF + space,
//! `ENCODING=b` photos in 3.0 versus `data:` URIs in 4.0, and 3.0's required `N`. `calcard`'s parser is used in the
//! tests (an independent implementation) to check every card we write.

use crate::carddav::config::VCardVersion;
use crate::directory::phone::PhoneNormalizer;
use crate::directory::{Entry, EntryKind};
use base64::Engine;
use bytes::Bytes;
use std::fmt::Write as _;

/// A property value before version-specific encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// `;`-separated components (N, ORG, ADR), each escaped on its own.
    Structured(Vec<String>),
    /// `,`-separated list (CATEGORIES).
    List(Vec<String>),
    /// A timestamp, written in the version's syntax.
    Timestamp {
        y: u16,
        mo: u8,
        d: u8,
        h: u8,
        mi: u8,
        s: u8,
    },
    Uid(String),
    Photo {
        mime: &'static str,
        data: Bytes,
    },
}

/// One property: upper-case name, parameters with lower-case values (the writer adapts case per version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    pub name: &'static str,
    pub params: Vec<(&'static str, Vec<&'static str>)>,
    pub value: Value,
}

impl Prop {
    fn new(name: &'static str, value: Value) -> Prop {
        Prop {
            name,
            params: Vec::new(),
            value,
        }
    }

    fn typed(name: &'static str, types: &[&'static str], value: Value) -> Prop {
        Prop {
            name,
            params: vec![("TYPE", types.to_vec())],
            value,
        }
    }

    /// The value as filters see it: unescaped text, components joined by `;`, list items by `,`.
    pub fn text(&self) -> String {
        match &self.value {
            Value::Text(t) | Value::Uid(t) => t.clone(),
            Value::Structured(c) => c.join(";"),
            Value::List(l) => l.join(","),
            Value::Timestamp { y, mo, d, h, mi, s } => format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
            Value::Photo { .. } => String::new(),
        }
    }
}

/// The version-neutral card for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub props: Vec<Prop>,
}

impl Card {
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Prop> + 'a {
        self.props.iter().filter(move |p| p.name.eq_ignore_ascii_case(name))
    }
}

/// objectGUID (AD byte order) in its canonical UUID form.
pub fn uuid_string(guid: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes_le(*guid).hyphenated().to_string()
}

/// Whether `userAccountControl` has ACCOUNTDISABLE (bit 2) set.
pub fn is_disabled(e: &Entry) -> bool {
    e.first_str("userAccountControl")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|uac| uac & 2 != 0)
}

/// Whether the entry is a person an address book shows (users and contacts).
pub fn is_person(e: &Entry) -> bool {
    matches!(e.kind, EntryKind::User | EntryKind::Contact)
}

/// Phone attributes in card order, with their vCard TYPEs.
const PHONES: &[(&str, &[&str])] = &[
    ("telephoneNumber", &["work", "voice"]),
    ("otherTelephone", &["work", "voice"]),
    ("ipPhone", &["work", "voice"]),
    ("mobile", &["cell", "voice"]),
    ("otherMobile", &["cell", "voice"]),
    ("homePhone", &["home", "voice"]),
    ("facsimileTelephoneNumber", &["work", "fax"]),
    ("pager", &["pager"]),
];

fn nonempty<'a>(e: &'a Entry, attr: &str) -> Option<&'a str> {
    e.first_str(attr).map(str::trim).filter(|s| !s.is_empty())
}

/// The display name: displayName, cn, "givenName sn", mail, in that order of preference.
pub fn display_name(e: &Entry) -> String {
    if let Some(n) = nonempty(e, "displayName").or_else(|| nonempty(e, "cn")) {
        return n.to_string();
    }
    let parts: Vec<&str> = [nonempty(e, "givenName"), nonempty(e, "sn")]
        .into_iter()
        .flatten()
        .collect();
    if !parts.is_empty() {
        return parts.join(" ");
    }
    nonempty(e, "mail")
        .map(str::to_string)
        .unwrap_or_else(|| e.id.to_string())
}

/// The phone numbers of an entry as the card shows them: E.164 where parseable, de-duplicated by number.
pub fn phone_numbers(e: &Entry, phones: &PhoneNormalizer) -> Vec<(&'static [&'static str], String)> {
    let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (attr, types) in PHONES {
        for raw in e.strs(attr).map(str::trim).filter(|s| !s.is_empty()) {
            let key = phones.key(raw);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            out.push((types, phones.to_e164(raw).unwrap_or_else(|| raw.to_string())));
        }
    }
    out
}

/// Group names for CATEGORIES: the first RDN value of each memberOf DN.
fn group_names(e: &Entry) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for dn in e.strs("memberOf") {
        let name = crate::directory::dn::parse_dn(dn)
            .and_then(|rdns| rdns.into_iter().next())
            .and_then(|rdn| rdn.into_iter().next())
            .map(|(_, v)| v);
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out.sort_by_key(|n| n.to_lowercase());
    out
}

/// `20261122103000.0Z` (generalized time) → timestamp parts.
fn parse_generalized_time(s: &str) -> Option<Value> {
    let d = s.get(..14)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| d.get(a..b).and_then(|x| x.parse::<u16>().ok());
    let (y, mo, day, h, mi, sec) = (n(0, 4)?, n(4, 6)?, n(6, 8)?, n(8, 10)?, n(10, 12)?, n(12, 14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(Value::Timestamp {
        y,
        mo: mo as u8,
        d: day as u8,
        h: h as u8,
        mi: mi as u8,
        s: sec.min(59) as u8,
    })
}

fn photo(e: &Entry) -> Option<Value> {
    let data = e
        .values("thumbnailPhoto")
        .first()
        .or_else(|| e.values("jpegPhoto").first())?;
    let mime = if data.starts_with(&[0xFF, 0xD8]) {
        "image/jpeg"
    } else if data.starts_with(b"\x89PNG") {
        "image/png"
    } else if data.starts_with(b"GIF8") {
        "image/gif"
    } else {
        return None;
    };
    Some(Value::Photo {
        mime,
        data: data.clone(),
    })
}

/// Build the card model of an entry.
pub fn build(e: &Entry, phones: &PhoneNormalizer) -> Card {
    let mut props = Vec::with_capacity(16);
    let fn_ = display_name(e);
    let sn = nonempty(e, "sn").unwrap_or_default().to_string();
    let given = nonempty(e, "givenName").unwrap_or_default().to_string();
    let n = if sn.is_empty() && given.is_empty() {
        vec![fn_.clone(), String::new()]
    } else {
        vec![sn, given]
    };
    props.push(Prop::new("FN", Value::Text(fn_)));
    props.push(Prop::new(
        "N",
        Value::Structured(vec![
            n[0].clone(),
            n[1].clone(),
            String::new(),
            String::new(),
            String::new(),
        ]),
    ));
    let company = nonempty(e, "company").unwrap_or_default();
    let department = nonempty(e, "department").unwrap_or_default();
    if !company.is_empty() || !department.is_empty() {
        let mut c = vec![company.to_string()];
        if !department.is_empty() {
            c.push(department.to_string());
        }
        props.push(Prop::new("ORG", Value::Structured(c)));
    }
    if let Some(t) = nonempty(e, "title") {
        props.push(Prop::new("TITLE", Value::Text(t.to_string())));
    }
    for (types, number) in phone_numbers(e, phones) {
        props.push(Prop::typed("TEL", types, Value::Text(number)));
    }
    for mail in e.strs("mail").map(str::trim).filter(|m| !m.is_empty()) {
        props.push(Prop::typed(
            "EMAIL",
            &["internet", "work"],
            Value::Text(mail.to_string()),
        ));
    }
    let adr: Vec<String> = [
        "physicalDeliveryOfficeName",
        "streetAddress",
        "l",
        "st",
        "postalCode",
        "co",
    ]
    .iter()
    .map(|a| nonempty(e, a).unwrap_or_default().to_string())
    .collect();
    if adr.iter().any(|c| !c.is_empty()) {
        let mut c = vec![String::new()];
        c.extend(adr);
        props.push(Prop::typed("ADR", &["work"], Value::Structured(c)));
    }
    let groups = group_names(e);
    if !groups.is_empty() {
        props.push(Prop::new("CATEGORIES", Value::List(groups)));
    }
    props.push(Prop::new("UID", Value::Uid(uuid_string(&e.guid))));
    if let Some(rev) = e.first_str("whenChanged").and_then(parse_generalized_time) {
        props.push(Prop::new("REV", rev));
    }
    if let Some(p) = photo(e) {
        props.push(Prop::new("PHOTO", p));
    }
    Card { props }
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
}

/// Append one content line, folded so that no physical line exceeds 75 octets (RFC 6350 §3.2, RFC 2425 §5.8.1).
pub(crate) fn push_folded(out: &mut String, line: &str) {
    const MAX: usize = 75;
    let mut width = 0usize;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > MAX {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// Write the card in the requested version.
pub fn write(card: &Card, v: VCardVersion) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("BEGIN:VCARD\r\n");
    let _ = write!(out, "VERSION:{}\r\n", v.as_str());
    out.push_str("PRODID:-//entradir//CardDAV//EN\r\n");
    if v == VCardVersion::V4 {
        out.push_str("KIND:individual\r\n");
    }
    let mut line = String::with_capacity(128);
    for p in &card.props {
        line.clear();
        line.push_str(p.name);
        for (name, values) in &p.params {
            // `internet` is a 3.0 EMAIL type that RFC 6350 dropped.
            let values: Vec<&str> = values
                .iter()
                .copied()
                .filter(|val| v == VCardVersion::V3 || *val != "internet")
                .collect();
            if values.is_empty() {
                continue;
            }
            let _ = write!(line, ";{name}=");
            for (i, val) in values.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                match v {
                    VCardVersion::V3 => line.push_str(&val.to_ascii_uppercase()),
                    VCardVersion::V4 => line.push_str(val),
                }
            }
        }
        match &p.value {
            Value::Text(t) => {
                line.push(':');
                escape_text(t, &mut line);
            }
            Value::Structured(cs) => {
                line.push(':');
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        line.push(';');
                    }
                    escape_text(c, &mut line);
                }
            }
            Value::List(items) => {
                line.push(':');
                for (i, c) in items.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    escape_text(c, &mut line);
                }
            }
            Value::Timestamp { y, mo, d, h, mi, s } => {
                let _ = match v {
                    VCardVersion::V3 => write!(line, ":{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                    VCardVersion::V4 => write!(line, ":{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
                };
            }
            Value::Uid(u) => {
                let _ = match v {
                    VCardVersion::V3 => write!(line, ":{u}"),
                    VCardVersion::V4 => write!(line, ":urn:uuid:{u}"),
                };
            }
            Value::Photo { mime, data } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                let _ = match v {
                    VCardVersion::V3 => {
                        let ty = mime.trim_start_matches("image/").to_ascii_uppercase();
                        write!(line, ";ENCODING=b;TYPE={ty}:{b64}")
                    }
                    VCardVersion::V4 => write!(line, ":data:{mime};base64,{b64}"),
                };
            }
        }
        push_folded(&mut out, &line);
    }
    out.push_str("END:VCARD\r\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directory::Attribute;
    use calcard::vcard::{VCard, VCardProperty, VCardValue};
    use std::sync::Arc;

    pub(crate) fn attr(name: &str, values: &[&[u8]]) -> Attribute {
        Attribute {
            name: name.into(),
            values: values.iter().map(|v| Bytes::copy_from_slice(v)).collect(),
        }
    }

    /// A user entry as the projection would produce it (subset of attributes).
    pub(crate) fn person(id: &str, usn: u64, attrs: &[(&str, &str)]) -> Entry {
        let cn = attrs.iter().find(|(k, _)| *k == "cn").map(|(_, v)| *v).unwrap_or(id);
        let dn = format!(
            "CN={},CN=Users,DC=contoso,DC=example",
            crate::directory::dn::escape_value(cn)
        );
        let mut guid = [0u8; 16];
        for (i, b) in id.bytes().enumerate() {
            guid[i % 16] ^= b;
        }
        let mut list = vec![attr(
            "objectClass",
            &[b"top", b"person", b"organizationalPerson", b"user"],
        )];
        for (k, v) in attrs {
            match list.iter_mut().find(|a| a.name.as_ref() == *k) {
                Some(a) => a.values.push(Bytes::copy_from_slice(v.as_bytes())),
                None => list.push(attr(k, &[v.as_bytes()])),
            }
        }
        Entry {
            id: id.into(),
            kind: EntryKind::User,
            dn_norm: crate::directory::entry::normalize_dn(&dn).unwrap_or_default().into(),
            dn: dn.into(),
            guid,
            usn_changed: usn,
            usn_created: 1,
            attrs: list,
        }
    }

    pub(crate) fn phones() -> PhoneNormalizer {
        PhoneNormalizer::new("DE").unwrap()
    }

    /// Parse with calcard (not our writer) and return (name, params-lowercased, text) triples.
    pub(crate) fn parse_other(text: &str) -> VCard {
        match VCard::parse(text) {
            Ok(c) => c,
            Err(e) => panic!("calcard rejected our card: {e:?}\n{text}"),
        }
    }

    pub(crate) fn texts(card: &VCard, prop: VCardProperty) -> Vec<String> {
        card.entries
            .iter()
            .filter(|e| e.name == prop)
            .map(|e| {
                e.values
                    .iter()
                    .map(|v| match v {
                        VCardValue::Text(t) => t.clone(),
                        VCardValue::Component(c) => c.join(";"),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            })
            .collect()
    }

    fn jane() -> Entry {
        let mut e = person(
            "1b6f0c5e-0000-4000-8000-000000000001",
            7,
            &[
                ("cn", "Jane Doe"),
                ("displayName", "Doe, Jane; \"JD\" \\ Ünïcødé 山田"),
                ("givenName", "Jane"),
                ("sn", "Doe"),
                ("mail", "jane.doe@contoso.example"),
                ("telephoneNumber", "030 1234567"),
                ("otherTelephone", "+49 (0)30 123-4567"),
                ("mobile", "0171 2345678"),
                ("facsimileTelephoneNumber", "030 1234599"),
                ("ipPhone", "ext. 12"),
                ("title", "Head of R&D, Berlin"),
                ("department", "R&D"),
                ("company", "Contoso; Ltd"),
                ("streetAddress", "Hauptstraße 1\nHinterhaus"),
                ("l", "Berlin"),
                ("postalCode", "10115"),
                ("co", "Germany"),
                ("memberOf", "CN=Sales\\, EMEA,OU=Groups,DC=contoso,DC=example"),
                ("memberOf", "CN=All Staff,OU=Groups,DC=contoso,DC=example"),
                ("whenChanged", "20261122103000.0Z"),
            ],
        );
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.extend((0..3000u32).map(|i| (i % 251) as u8));
        e.attrs.push(attr("thumbnailPhoto", &[&jpeg]));
        e
    }

    #[test]
    fn v3_card_round_trips_through_another_parser() {
        let e = jane();
        let text = write(&build(&e, &phones()), VCardVersion::V3);
        for line in text.split("\r\n") {
            assert!(line.len() <= 75, "line longer than 75 octets: {line:?}");
        }
        assert!(text.contains("PHOTO;ENCODING=b;TYPE=JPEG:"), "{text}");
        let card = parse_other(&text);
        assert_eq!(texts(&card, VCardProperty::Version), ["3.0"]);
        assert_eq!(texts(&card, VCardProperty::Fn), ["Doe, Jane; \"JD\" \\ Ünïcødé 山田"]);
        assert_eq!(texts(&card, VCardProperty::N), ["Doe;Jane;;;"]);
        assert_eq!(texts(&card, VCardProperty::Org), ["Contoso; Ltd;R&D"]);
        assert_eq!(texts(&card, VCardProperty::Title), ["Head of R&D, Berlin"]);
        // telephoneNumber and otherTelephone are the same number: one TEL; ipPhone is kept as typed.
        assert_eq!(
            texts(&card, VCardProperty::Tel),
            ["+49301234567", "ext. 12", "+491712345678", "+49301234599"]
        );
        assert_eq!(texts(&card, VCardProperty::Email), ["jane.doe@contoso.example"]);
        assert_eq!(
            texts(&card, VCardProperty::Adr),
            [";;Hauptstraße 1\nHinterhaus;Berlin;;10115;Germany"]
        );
        assert_eq!(texts(&card, VCardProperty::Categories), ["All Staff;Sales, EMEA"]);
        assert_eq!(texts(&card, VCardProperty::Uid), [uuid_string(&e.guid)]);
        let photo = card.entries.iter().find(|p| p.name == VCardProperty::Photo).unwrap();
        match &photo.values[0] {
            VCardValue::Binary(d) => assert_eq!(&d.data[..], e.values("thumbnailPhoto")[0].as_ref()),
            other => panic!("photo not binary: {other:?}"),
        }
    }

    #[test]
    fn v4_card_uses_data_uris_and_urn_uids() {
        let e = jane();
        let text = write(&build(&e, &phones()), VCardVersion::V4);
        assert!(text.contains("PHOTO:data:image/jpeg;base64,/9j/"), "{text}");
        assert!(text.contains("TEL;TYPE=cell,voice:+491712345678"), "{text}");
        assert!(text.contains("REV:20261122T103000Z"), "{text}");
        assert!(text.contains("EMAIL;TYPE=work:jane.doe@contoso.example"), "{text}");
        let card = parse_other(&text);
        assert_eq!(texts(&card, VCardProperty::Version), ["4.0"]);
        assert_eq!(
            texts(&card, VCardProperty::Uid),
            [format!("urn:uuid:{}", uuid_string(&e.guid))]
        );
        assert_eq!(texts(&card, VCardProperty::Fn), ["Doe, Jane; \"JD\" \\ Ünïcødé 山田"]);
        for line in text.split("\r\n") {
            assert!(line.len() <= 75);
        }
    }

    #[test]
    fn minimal_entry_still_has_fn_and_n() {
        let e = person("x1", 3, &[("mail", "x@contoso.example")]);
        let text = write(&build(&e, &phones()), VCardVersion::V3);
        let card = parse_other(&text);
        assert_eq!(texts(&card, VCardProperty::Fn), ["x@contoso.example"]);
        assert_eq!(texts(&card, VCardProperty::N), ["x@contoso.example;;;;"]);
        assert!(texts(&card, VCardProperty::Rev).is_empty());
    }

    #[test]
    fn folding_never_splits_a_character() {
        let long = "山".repeat(60);
        let mut out = String::new();
        push_folded(&mut out, &format!("FN:{long}"));
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75);
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded.trim_end(), format!("FN:{long}"));
    }

    #[test]
    fn disabled_and_person_checks() {
        let mut e = person("u", 1, &[("userAccountControl", "514")]);
        assert!(is_disabled(&e) && is_person(&e));
        e.attrs.retain(|a| a.name.as_ref() != "userAccountControl");
        e.attrs.push(attr("userAccountControl", &[b"512"]));
        assert!(!is_disabled(&e));
        e.kind = EntryKind::Group;
        assert!(!is_person(&e));
        let _ = Arc::new(e);
    }
}
