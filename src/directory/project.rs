//! Graph objects → AD-style entries: object classes, computed attributes (GUID, SID, UAC, group types,
//! memberOf/member, manager), the configured mapping, and photos.

use crate::directory::change::{GraphKind, PhotoState};
use crate::directory::collation::Collation;
use crate::directory::dn::escape_value;
use crate::directory::entry::{normalize_dn, Attribute, Attrs, Entry, EntryKind, SortKeys};
use crate::directory::mapping::{EvalStats, Mapping};
use crate::directory::phone::PhoneNormalizer;
use crate::directory::snapshot::Naming;
use crate::directory::store::{Object, PhotoRecord};
use bytes::Bytes;
use std::sync::Arc;

/// userAccountControl flags AD sets on the objects we present.
pub const UAC_ACCOUNTDISABLE: u32 = 0x2;
pub const UAC_NORMAL_ACCOUNT: u32 = 0x200;
pub const UAC_WORKSTATION_TRUST_ACCOUNT: u32 = 0x1000;

/// Builds attribute lists in presentation order, skipping empty values.
#[derive(Default)]
pub struct AttrsBuilder {
    attrs: Vec<Attribute>,
}

impl AttrsBuilder {
    pub fn add_values(&mut self, name: &str, values: Vec<Bytes>) {
        let values: Vec<Bytes> = values.into_iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return;
        }
        if let Some(a) = self.attrs.iter_mut().find(|a| a.name.eq_ignore_ascii_case(name)) {
            for v in values {
                if !a.values.contains(&v) {
                    a.values.push(v);
                }
            }
        } else {
            self.attrs.push(Attribute {
                name: crate::directory::entry::attr_name(name),
                values,
            });
        }
    }

    pub fn add_strs<S: AsRef<str>>(&mut self, name: &str, values: impl IntoIterator<Item = S>) {
        self.add_values(
            name,
            values
                .into_iter()
                .map(|s| Bytes::copy_from_slice(s.as_ref().as_bytes()))
                .collect(),
        );
    }

    pub fn add(&mut self, name: &str, value: impl AsRef<str>) {
        self.add_strs(name, [value]);
    }

    /// The attributes, packed (see [`Attrs`]).
    pub fn finish(self) -> Attrs {
        Attrs::pack(self.attrs)
    }
}

/// `objectGUID` bytes for a Graph id: the GUID in AD byte order (Data1-3 little-endian). Ids that are not
/// GUIDs (never seen from Graph, but possible from a hand-made tenant) get a stable name-based UUID.
pub fn guid_bytes(id: &str) -> [u8; 16] {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => u.to_bytes_le(),
        Err(_) => {
            use sha2::Digest;
            let h = sha2::Sha256::digest(id.as_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[..16]);
            b
        }
    }
}

/// Binary SID from its string form `S-1-12-1-…` (AD wire format: revision, sub-authority count, 48-bit
/// big-endian authority, little-endian 32-bit sub-authorities). `None` if malformed.
pub fn sid_bytes(sid: &str) -> Option<Vec<u8>> {
    let mut parts = sid.strip_prefix("S-")?.split('-');
    let rev: u8 = parts.next()?.parse().ok()?;
    let auth: u64 = parts.next()?.parse().ok()?;
    let subs: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if subs.len() > 15 || auth >= 1 << 48 {
        return None;
    }
    let mut out = vec![rev, subs.len() as u8];
    out.extend_from_slice(&auth.to_be_bytes()[2..]);
    for s in subs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Some(out)
}

pub use crate::time::generalized_time;

/// Everything projection needs besides the object itself.
pub struct Context<'a> {
    pub naming: &'a Naming,
    pub mapping: &'a Mapping,
    pub phones: &'a PhoneNormalizer,
    pub collation: &'a Collation,
    pub stats: &'a mut EvalStats,
}

/// The names and links already resolved for one object.
pub struct Resolved<'a> {
    pub id: &'a str,
    pub kind: GraphKind,
    pub obj: &'a Object,
    pub cn: &'a str,
    pub container_dn: &'a str,
    pub sam: &'a str,
    pub upn: Option<&'a str>,
    pub member_of: Vec<String>,
    pub members: Vec<String>,
    pub manager: Option<String>,
    pub direct_reports: Vec<String>,
    pub photo: Option<&'a PhotoRecord>,
    pub version: u64,
    pub created_version: u64,
}

pub fn object_dn(cn: &str, container_dn: &str) -> String {
    format!("CN={},{}", escape_value(cn), container_dn)
}

/// Build the entry for one Graph object.
pub fn project(r: &Resolved<'_>, cx: &mut Context<'_>) -> Entry {
    let dn = object_dn(r.cn, r.container_dn);
    let dn_norm = normalize_dn(&dn).unwrap_or_else(|| dn.to_lowercase());
    let schema = |cn: &str| format!("CN={cn},CN=Schema,CN=Configuration,{}", cx.naming.base_dn);
    let mut a = AttrsBuilder::default();
    let enabled = r
        .obj
        .props
        .get("accountEnabled")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let (kind, classes, category): (EntryKind, &[&str], &str) = match r.kind {
        GraphKind::User => (
            EntryKind::User,
            &["top", "person", "organizationalPerson", "user"],
            "Person",
        ),
        GraphKind::Group => (EntryKind::Group, &["top", "group"], "Group"),
        GraphKind::Device => (
            EntryKind::Computer,
            &["top", "person", "organizationalPerson", "user", "computer"],
            "Computer",
        ),
        GraphKind::Contact => (
            EntryKind::Contact,
            &["top", "person", "organizationalPerson", "contact"],
            "Person",
        ),
    };
    a.add_strs("objectClass", classes.iter().copied());
    a.add("cn", r.cn);
    for (attr, expr) in cx.mapping.for_kind(r.kind) {
        let vals = expr.eval(&r.obj.props, cx.phones, cx.stats);
        a.add_strs(attr, vals);
    }
    a.add("distinguishedName", &dn);
    a.add("name", r.cn);
    a.add("instanceType", "4");
    a.add("objectCategory", schema(category));
    a.add_values("objectGUID", vec![Bytes::copy_from_slice(&guid_bytes(r.id))]);
    if let Some(sid) = r.obj.str("securityIdentifier").and_then(sid_bytes) {
        a.add_values("objectSid", vec![Bytes::from(sid)]);
    }
    match r.kind {
        GraphKind::User => {
            a.add("sAMAccountName", r.sam);
            a.add("sAMAccountType", "805306368");
            if let Some(upn) = r.upn {
                a.add("userPrincipalName", upn);
            }
            let uac = UAC_NORMAL_ACCOUNT | if enabled { 0 } else { UAC_ACCOUNTDISABLE };
            a.add("userAccountControl", uac.to_string());
        }
        GraphKind::Device => {
            a.add("sAMAccountName", r.sam);
            if let Some(host) = r.obj.str("displayName").and_then(crate::directory::names::host_label) {
                a.add("dNSHostName", format!("{host}.{}", cx.naming.dns_domain));
            }
            a.add("sAMAccountType", "805306369");
            let uac = UAC_WORKSTATION_TRUST_ACCOUNT | if enabled { 0 } else { UAC_ACCOUNTDISABLE };
            a.add("userAccountControl", uac.to_string());
        }
        GraphKind::Group => {
            a.add("sAMAccountName", r.sam);
            let security = r
                .obj
                .props
                .get("securityEnabled")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let unified = r
                .obj
                .props
                .get("groupTypes")
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.iter().any(|t| t.as_str() == Some("Unified")));
            // AD: 0x2 global, 0x8 universal, 0x80000000 security-enabled; stored as a signed 32-bit integer.
            let scope: u32 = if unified { 0x8 } else { 0x2 };
            let gt = (scope | if security { 0x8000_0000 } else { 0 }) as i32;
            a.add("groupType", gt.to_string());
            a.add("sAMAccountType", if security { "268435456" } else { "268435457" });
            a.add_strs("member", &r.members);
        }
        GraphKind::Contact => {}
    }
    a.add_strs("memberOf", &r.member_of);
    if let Some(m) = &r.manager {
        a.add("manager", m);
    }
    a.add_strs("directReports", &r.direct_reports);
    if let Some(PhotoRecord {
        state: PhotoState::Present { jpeg, .. },
        ..
    }) = r.photo
    {
        a.add_values("thumbnailPhoto", vec![jpeg.clone()]);
        a.add_values("jpegPhoto", vec![jpeg.clone()]);
    }
    // When Graph says when the object was created, that is the same for every replica and every resync; the
    // time this server first saw it is the fallback (organisational contacts carry no such date).
    let created = ["createdDateTime", "registrationDateTime"]
        .iter()
        .find_map(|p| r.obj.str(p).and_then(crate::time::parse_iso8601))
        .unwrap_or(r.obj.created_at);
    a.add("whenCreated", generalized_time(created));
    a.add("whenChanged", generalized_time(r.obj.changed_at.max(created)));
    a.add("uSNCreated", r.created_version.to_string());
    let attrs = a.finish();
    Entry {
        id: r.id.into(),
        kind,
        dn: dn.into(),
        dn_norm: dn_norm.into(),
        guid: guid_bytes(r.id),
        usn_changed: r.version,
        usn_created: r.created_version,
        sort_keys: SortKeys::of(&attrs, cx.collation),
        attrs,
    }
}

/// The domain object or a container on the path to the entries.
pub fn structural(dn: &str, naming: &Naming, version: u64) -> Option<Entry> {
    let dn_norm = normalize_dn(dn)?;
    let rdns = crate::directory::dn::parse_dn(dn)?;
    let (ty, val) = rdns.first()?.first()?.clone();
    let mut a = AttrsBuilder::default();
    let kind = if *dn_norm == *naming.base_dn_norm {
        a.add_strs("objectClass", ["top", "domain", "domainDNS"]);
        a.add("dc", &val);
        a.add("name", &val);
        a.add(
            "objectCategory",
            format!("CN=Domain-DNS,CN=Schema,CN=Configuration,{}", naming.base_dn),
        );
        EntryKind::Domain
    } else if ty.eq_ignore_ascii_case("ou") {
        a.add_strs("objectClass", ["top", "organizationalUnit"]);
        a.add("ou", &val);
        a.add("name", &val);
        a.add(
            "objectCategory",
            format!("CN=Organizational-Unit,CN=Schema,CN=Configuration,{}", naming.base_dn),
        );
        EntryKind::Container
    } else {
        a.add_strs("objectClass", ["top", "container"]);
        a.add("cn", &val);
        a.add("name", &val);
        a.add(
            "objectCategory",
            format!("CN=Container,CN=Schema,CN=Configuration,{}", naming.base_dn),
        );
        EntryKind::Container
    };
    a.add("distinguishedName", dn);
    a.add("instanceType", "4");
    let guid = guid_bytes(&format!("entradir:{dn_norm}"));
    a.add_values("objectGUID", vec![Bytes::copy_from_slice(&guid)]);
    let id: Arc<str> = dn_norm.clone().into();
    Some(Entry {
        id,
        kind,
        dn: dn.into(),
        dn_norm: dn_norm.into(),
        guid,
        usn_changed: version,
        usn_created: version,
        attrs: a.finish(),
        sort_keys: SortKeys::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_in_ad_byte_order() {
        let b = guid_bytes("00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(
            b,
            [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
    }

    #[test]
    fn sid_is_binary_encoded() {
        let b = sid_bytes("S-1-12-1-1-2").unwrap();
        assert_eq!(b, vec![1, 3, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        assert!(sid_bytes("S-1-x").is_none());
        assert!(sid_bytes("garbage").is_none());
    }
}
