//! vCard rendering: a directory entry becomes a version-neutral [`Card`] model, which addressbook-query filters
//! evaluate and which is written as vCard 3.0 (RFC 2426) or 4.0 (RFC 6350) by `calcard`.
//!
//! Why calcard: the design card names `vcard4`, but it writes 4.0 only, and macOS/iOS and most phones need 3.0.
//! calcard (Stalwart's, maintained with their mail server) writes both from one model: escaping of `\ , ;` and
//! newlines, folding at 75 octets on character boundaries, `ENCODING=b;TYPE=JPEG` photos in 3.0, the version's
//! date syntax. It is used without its default `jmap` feature, which would bring the JSContact conversion.
//! calcard also marks non-ASCII 3.0 values `CHARSET=UTF-8`, a vCard 2.1 habit RFC 2426 removed (the charset is
//! the MIME type's): strict clients show the parameter or drop the property, so [`write`] takes it out again.
//!
//! What stays here is what a directory entry means as a card: which attributes become which properties, 3.0's
//! required `N`, `urn:uuid:` UIDs in 4.0, and 4.0 photos as `data:` URIs.
//!
//! The tests parse every card with other implementations than calcard: a reader written from the RFCs
//! (`tests/common/vcard.rs`, here and in the integration tests), the `vcard4` crate for every 4.0 card, and
//! Python's vobject in the vdirsyncer test.

use crate::carddav::config::VCardVersion;
use crate::directory::phone::PhoneNormalizer;
use crate::directory::{Entry, EntryKind};
use base64::Engine;
use bytes::Bytes;
use calcard::common::Data;
use calcard::vcard::{
    VCard, VCardEntry, VCardParameter, VCardParameterName, VCardParameterValue, VCardProperty, VCardValue as CalValue,
    VCardVersion as CalVersion,
};

/// A property value before version-specific encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Text(String),
    /// `;`-separated components (N, ORG, ADR), each escaped on its own.
    Structured(Vec<String>),
    /// `,`-separated list (CATEGORIES).
    List(Vec<String>),
    Uid(String),
    Photo {
        mime: &'static str,
        data: Bytes,
    },
}

/// One property: its name, its `TYPE` values in lower case (the only parameter a directory card needs; the
/// writer adapts their case per version), and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    pub name: VCardProperty,
    pub types: &'static [&'static str],
    pub value: Value,
}

impl Prop {
    fn new(name: VCardProperty, value: Value) -> Prop {
        Prop {
            name,
            types: &[],
            value,
        }
    }

    fn typed(name: VCardProperty, types: &'static [&'static str], value: Value) -> Prop {
        Prop { name, types, value }
    }

    /// The value as filters see it: unescaped text, components joined by `;`, list items by `,`.
    pub fn text(&self) -> String {
        match &self.value {
            Value::Text(t) | Value::Uid(t) => t.clone(),
            Value::Structured(c) => c.join(";"),
            Value::List(l) => l.join(","),
            Value::Photo { .. } => String::new(),
        }
    }
}

/// The version-neutral card for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub props: Vec<Prop>,
}

/// Hashed for the card's ETag: the same content gives the same tag in every process of a release.
impl std::hash::Hash for Prop {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.name.as_str().hash(h);
        self.types.hash(h);
        self.value.hash(h);
    }
}

impl std::hash::Hash for Card {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.props.hash(h);
    }
}

impl Card {
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Prop> + 'a {
        self.props
            .iter()
            .filter(move |p| p.name.as_str().eq_ignore_ascii_case(name))
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

fn photo(e: &Entry) -> Option<Value> {
    let data = e
        .values("thumbnailPhoto")
        .bytes(0)
        .or_else(|| e.values("jpegPhoto").bytes(0))?;
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
    props.push(Prop::new(VCardProperty::Fn, Value::Text(fn_)));
    props.push(Prop::new(
        VCardProperty::N,
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
        props.push(Prop::new(VCardProperty::Org, Value::Structured(c)));
    }
    if let Some(t) = nonempty(e, "title") {
        props.push(Prop::new(VCardProperty::Title, Value::Text(t.to_string())));
    }
    for (types, number) in phone_numbers(e, phones) {
        props.push(Prop::typed(VCardProperty::Tel, types, Value::Text(number)));
    }
    for mail in e.strs("mail").map(str::trim).filter(|m| !m.is_empty()) {
        props.push(Prop::typed(
            VCardProperty::Email,
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
        props.push(Prop::typed(VCardProperty::Adr, &["work"], Value::Structured(c)));
    }
    let groups = group_names(e);
    if !groups.is_empty() {
        props.push(Prop::new(VCardProperty::Categories, Value::List(groups)));
    }
    props.push(Prop::new(VCardProperty::Uid, Value::Uid(uuid_string(&e.guid))));
    // No REV: the only date Graph could give it is when this replica saw a change (`whenChanged`), which
    // differs between replicas and would give one person two ETags behind a load balancer.
    if let Some(p) = photo(e) {
        props.push(Prop::new(VCardProperty::Photo, p));
    }
    Card { props }
}

/// Text as a card may carry it: carriage returns and other control characters (but tab and newline, which
/// the writer escapes) are dropped. Directory data can hold them; a card line must not.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| *c == '\t' || *c == '\n' || !c.is_control())
        .collect()
}

fn text(s: &str) -> CalValue {
    CalValue::Text(clean(s))
}

/// `TYPE=` values: upper case in 3.0 (as RFC 2426 writes them and older phones compare them), lower case in 4.0.
/// `internet` is a 3.0 EMAIL type that RFC 6350 dropped.
fn type_params(types: &[&str], v: VCardVersion) -> Vec<VCardParameter> {
    types
        .iter()
        .filter(|t| v == VCardVersion::V3 || **t != "internet")
        .map(|t| {
            let value = match v {
                VCardVersion::V3 => t.to_ascii_uppercase(),
                VCardVersion::V4 => t.to_string(),
            };
            VCardParameter::new(VCardParameterName::Type, VCardParameterValue::Text(value))
        })
        .collect()
}

/// The card as calcard's model, in the shape the version wants (UID as a URN and photos as `data:` URIs in
/// 4.0; binary photos, which calcard writes as `ENCODING=b;TYPE=JPEG`, in 3.0).
fn to_calcard(card: &Card, v: VCardVersion) -> VCard {
    let mut entries = Vec::with_capacity(card.props.len() + 2);
    entries.push(VCardEntry::new(VCardProperty::Prodid).with_value("-//entradir//CardDAV//EN".to_string()));
    if v == VCardVersion::V4 {
        entries.push(VCardEntry::new(VCardProperty::Kind).with_value("individual".to_string()));
    }
    for p in &card.props {
        let params = type_params(p.types, v);
        let values = match &p.value {
            Value::Text(t) => vec![text(t)],
            Value::Structured(cs) | Value::List(cs) => cs.iter().map(|c| text(c)).collect(),
            Value::Uid(u) => vec![CalValue::Text(match v {
                VCardVersion::V3 => clean(u),
                VCardVersion::V4 => format!("urn:uuid:{}", clean(u)),
            })],
            Value::Photo { mime, data } => vec![match v {
                VCardVersion::V3 => CalValue::Binary(Data {
                    content_type: Some(mime.to_string()),
                    data: data.to_vec(),
                }),
                // A URI value, which is not escaped: calcard writes binary values in 4.0 as `base64\,`, an
                // escaped comma that URI parsers (Thunderbird's ical.js) keep, breaking the photo.
                VCardVersion::V4 => CalValue::Text(format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(data)
                )),
            }],
        };
        entries.push(VCardEntry::new(p.name.clone()).with_params(params).with_values(values));
    }
    VCard { entries }
}

/// Append one content line, folded so that no physical line exceeds 75 octets (RFC 6350 §3.2, RFC 2425 §5.8.1).
/// Used for lines the partial-card filter rewrites; whole cards are folded by calcard.
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
    let version = match v {
        VCardVersion::V3 => CalVersion::V3_0,
        VCardVersion::V4 => CalVersion::V4_0,
    };
    let mut out = String::with_capacity(512);
    // Writing into a String cannot fail.
    let _ = to_calcard(card, v).write_to(&mut out, version);
    match v {
        VCardVersion::V3 => without_charset(&out),
        VCardVersion::V4 => out,
    }
}

/// A 3.0 card without calcard's `;CHARSET=UTF-8` parameters. Only the parameter part of a property (before
/// the first `:` outside quotes) is touched, never a value; calcard writes the parameter unbroken by folding,
/// and lines only get shorter.
fn without_charset(card: &str) -> String {
    const CHARSET: &str = ";CHARSET=UTF-8";
    if !card.contains(CHARSET) {
        return card.to_string();
    }
    let mut out = String::with_capacity(card.len());
    for (i, line) in card.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        if line.starts_with([' ', '\t']) {
            out.push_str(line);
            continue;
        }
        let mut quoted = false;
        let params_end = line
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ':' && !quoted
            })
            .map_or(line.len(), |(at, _)| at);
        let (params, value) = line.split_at(params_end);
        out.push_str(&params.replacen(CHARSET, "", 1));
        out.push_str(value);
    }
    out
}

/// The tests' own vCard reader (shared with the integration tests), independent of calcard.
#[cfg(test)]
#[path = "../../tests/common/vcard.rs"]
pub(crate) mod reader;

#[cfg(test)]
pub(crate) mod tests {
    use super::reader;
    use super::*;
    use crate::directory::Attribute;
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
            attrs: list.into(),
            sort_keys: Default::default(),
        }
    }

    pub(crate) fn phones() -> PhoneNormalizer {
        PhoneNormalizer::new("DE").unwrap()
    }

    /// Parse with the tests' reader (not calcard, which wrote the card).
    pub(crate) fn parse_other(text: &str) -> reader::Card {
        reader::Card::parse(text).unwrap_or_else(|e| panic!("card rejected: {e}\n{text}"))
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
        // RFC 2426 §3 and RFC 2425 define these parameters and no others (no vCard 2.1 CHARSET).
        for p in &card.props {
            for (name, _) in &p.params {
                assert!(
                    ["TYPE", "ENCODING", "VALUE", "LANGUAGE", "CONTEXT"].contains(&name.to_ascii_uppercase().as_str()),
                    "{} carries {name}, which RFC 2426 does not define:\n{text}",
                    p.name
                );
            }
        }
        assert_eq!(card.texts("VERSION"), ["3.0"]);
        assert_eq!(card.texts("FN"), ["Doe, Jane; \"JD\" \\ Ünïcødé 山田"]);
        assert_eq!(card.texts("N"), ["Doe;Jane;;;"]);
        assert_eq!(card.texts("ORG"), ["Contoso; Ltd;R&D"]);
        assert_eq!(card.texts("TITLE"), ["Head of R&D, Berlin"]);
        // telephoneNumber and otherTelephone are the same number: one TEL; ipPhone is kept as typed.
        assert_eq!(
            card.texts("TEL"),
            ["+49301234567", "ext. 12", "+491712345678", "+49301234599"]
        );
        assert_eq!(card.texts("EMAIL"), ["jane.doe@contoso.example"]);
        assert_eq!(card.texts("ADR"), [";;Hauptstraße 1\nHinterhaus;Berlin;;10115;Germany"]);
        assert_eq!(card.values("CATEGORIES"), ["All Staff", "Sales, EMEA"]);
        assert_eq!(card.texts("UID"), [uuid_string(&e.guid)]);
        let photo = card.photo().expect("a photo").expect("a readable photo");
        assert_eq!(&photo[..], e.values("thumbnailPhoto").first().expect("stored"));
    }

    #[test]
    fn v4_card_uses_data_uris_and_urn_uids() {
        let e = jane();
        let text = write(&build(&e, &phones()), VCardVersion::V4);
        assert!(text.contains("PHOTO:data:image/jpeg;base64,/9j/"), "{text}");
        assert!(text.contains("TEL;TYPE=cell,voice:+491712345678"), "{text}");
        assert!(!text.contains("REV:"), "no per-replica date: {text}");
        assert!(text.contains("EMAIL;TYPE=work:jane.doe@contoso.example"), "{text}");
        let card = parse_other(&text);
        assert_eq!(card.texts("VERSION"), ["4.0"]);
        assert_eq!(card.texts("UID"), [format!("urn:uuid:{}", uuid_string(&e.guid))]);
        assert_eq!(card.texts("FN"), ["Doe, Jane; \"JD\" \\ Ünïcødé 山田"]);
        assert_eq!(card.texts("KIND"), ["individual"]);
        let photo = card.photo().expect("a photo").expect("a readable photo");
        assert_eq!(&photo[..], e.values("thumbnailPhoto").first().expect("stored"));
    }

    /// Directory text can carry control characters and long values; the card drops the former and folds the
    /// latter without losing the spaces that fall on a fold.
    #[test]
    fn control_characters_dropped_and_folds_lossless() {
        // `TITLE:` and 69 characters fill the first line, the fold space and 74 more the second: spaces at
        // positions 68 and 142 end a physical line each.
        let title = format!("{} {} End", "A".repeat(68), "B".repeat(73));
        let e = person(
            "x2",
            4,
            &[
                ("displayName", "Bell\u{7}Ringer\r"),
                ("title", &title),
                ("telephoneNumber", "030 1"),
            ],
        );
        for v in [VCardVersion::V3, VCardVersion::V4] {
            let text = write(&build(&e, &phones()), v);
            let card = parse_other(&text);
            assert_eq!(card.texts("FN"), ["BellRinger"], "{text}");
            assert_eq!(card.texts("TITLE"), std::slice::from_ref(&title), "{text}");
        }
    }

    #[test]
    fn minimal_entry_still_has_fn_and_n() {
        let e = person("x1", 3, &[("mail", "x@contoso.example")]);
        let text = write(&build(&e, &phones()), VCardVersion::V3);
        let card = parse_other(&text);
        assert_eq!(card.texts("FN"), ["x@contoso.example"]);
        assert_eq!(card.texts("N"), ["x@contoso.example;;;;"]);
        assert!(card.texts("REV").is_empty());
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
