//! A deterministic sample directory of people for tests, benchmarks and demos of the CardDAV front end alone
//! (without the Graph simulator): names with non-ASCII letters and XML/vCard special characters, German and
//! foreign numbers in mixed spellings, group memberships, and a JPEG photo on every tenth person.

use crate::directory::phone::PhoneNormalizer;
use crate::directory::{Attribute, Entry, EntryKind, Naming, Snapshot};
use bytes::Bytes;

/// A snapshot of `entries` at `version` under `DC=contoso,DC=example`, phone numbers normalised for Germany (the
/// naming the sample people's DNs use).
pub fn snapshot(version: u64, entries: Vec<Entry>) -> Snapshot {
    Snapshot::from_entries(
        Naming::new("DC=contoso,DC=example").expect("a valid base DN"),
        PhoneNormalizer::new("DE").expect("a known country"),
        version,
        entries,
    )
}

const GIVEN: &[&str] = &[
    "Anna",
    "Jürgen",
    "Zoë",
    "Li",
    "Ólafur",
    "Marie-Claire",
    "Tom",
    "Ayşe",
    "Jean",
    "Sven",
];
const FAMILY: &[&str] = &[
    "Müller",
    "O'Brien",
    "Smith & Sons",
    "Nguyễn",
    "Schmidt",
    "García",
    "Kowalski",
    "Łukasz",
];
const DEPTS: &[&str] = &["Sales", "R&D", "Support", "Finance; Legal", "IT"];

fn attr(name: &str, values: Vec<Vec<u8>>) -> Attribute {
    Attribute {
        name: name.into(),
        values: values.into_iter().map(Bytes::from).collect(),
    }
}

/// A small but valid JPEG-looking blob (SOI marker, filler, EOI) of about `size` bytes.
fn photo(i: usize, size: usize) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0];
    v.extend((0..size).map(|k| ((k * 31 + i) % 251) as u8));
    v.extend([0xFF, 0xD9]);
    v
}

/// The id (a GUID string) of sample person `i`.
pub fn person_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Sample person `i`, last changed at `usn`.
pub fn person(i: usize, usn: u64) -> Entry {
    let given = GIVEN[i % GIVEN.len()];
    let family = FAMILY[(i / GIVEN.len()) % FAMILY.len()];
    let display = format!("{given} {family} {i}");
    let dn = format!(
        "CN={},CN=Users,DC=contoso,DC=example",
        crate::directory::dn::escape_value(&display)
    );
    let mut guid = [0u8; 16];
    guid[..8].copy_from_slice(&(i as u64).to_le_bytes());
    guid[8] = 0x80;
    let s = |v: &str| v.as_bytes().to_vec();
    let mut attrs = vec![
        attr(
            "objectClass",
            vec![s("top"), s("person"), s("organizationalPerson"), s("user")],
        ),
        attr("cn", vec![s(&display)]),
        attr("displayName", vec![s(&display)]),
        attr("givenName", vec![s(given)]),
        attr("sn", vec![s(&format!("{family} {i}"))]),
        attr("mail", vec![s(&format!("user{i}@contoso.example"))]),
        attr("telephoneNumber", vec![s(&format!("030 {:07}", 1_000_000 + i))]),
        attr(
            "title",
            vec![s(if i.is_multiple_of(7) { "Head of R&D" } else { "Engineer" })],
        ),
        attr("department", vec![s(DEPTS[i % DEPTS.len()])]),
        attr("company", vec![s("Contoso")]),
        attr("l", vec![s("Berlin")]),
        attr("co", vec![s("Germany")]),
        attr(
            "memberOf",
            vec![s(&format!(
                "CN={},OU=Groups,DC=contoso,DC=example",
                crate::directory::dn::escape_value(DEPTS[i % DEPTS.len()])
            ))],
        ),
        attr("whenChanged", vec![s("20261122103000.0Z")]),
        attr("userAccountControl", vec![s("512")]),
    ];
    if i.is_multiple_of(3) {
        attrs.push(attr("mobile", vec![s(&format!("+49 171 {:07}", 2_000_000 + i))]));
    }
    if i.is_multiple_of(5) {
        attrs.push(attr(
            "facsimileTelephoneNumber",
            vec![s(&format!("+1 425 555 {:04}", i % 10_000))],
        ));
    }
    if i.is_multiple_of(10) {
        attrs.push(attr("thumbnailPhoto", vec![photo(i, 8 * 1024)]));
    }
    Entry {
        id: person_id(i).into(),
        kind: EntryKind::User,
        dn_norm: crate::directory::entry::normalize_dn(&dn).unwrap_or_default().into(),
        dn: dn.into(),
        guid,
        usn_changed: usn,
        usn_created: 1,
        attrs: attrs.into(),
        sort_keys: Default::default(),
    }
}

/// `n` sample people, all last changed at `usn`.
pub fn people(n: usize, usn: u64) -> Vec<Entry> {
    (0..n).map(|i| person(i, usn)).collect()
}

/// A group `cn` (id `group-<cn>`) listing `members` by DN, last changed at `usn`: for group books.
pub fn group(cn: &str, members: &[&Entry], usn: u64) -> Entry {
    let dn = format!(
        "CN={},OU=Groups,DC=contoso,DC=example",
        crate::directory::dn::escape_value(cn)
    );
    let member_dns: Vec<Vec<u8>> = members.iter().map(|m| m.dn.as_bytes().to_vec()).collect();
    Entry {
        id: format!("group-{cn}").into(),
        kind: EntryKind::Group,
        dn_norm: crate::directory::entry::normalize_dn(&dn).unwrap_or_default().into(),
        dn: dn.into(),
        guid: [7; 16],
        usn_changed: usn,
        usn_created: 1,
        attrs: vec![
            attr("objectClass", vec![b"top".to_vec(), b"group".to_vec()]),
            attr("cn", vec![cn.as_bytes().to_vec()]),
            attr("member", member_dns),
        ]
        .into(),
        sort_keys: Default::default(),
    }
}
