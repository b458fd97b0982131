//! The RootDSE (base search on "") as Active Directory presents it, built per request from the snapshot.

use super::schema;
use crate::directory::entry::{normalize_dn, Attribute, Entry};
use crate::directory::{EntryKind, Snapshot};
use bytes::Bytes;
use std::time::SystemTime;

/// Controls we honour (and advertise); a critical control not listed here gets unavailableCriticalExtension.
pub const SUPPORTED_CONTROLS: &[&str] = &[
    super::proto::OID_PAGED,
    super::proto::OID_SORT_REQUEST,
    "1.2.840.113556.1.4.1339", // domain scope: we never chase referrals anyway
    "1.2.840.113556.1.4.1340", // search options
    "1.2.840.113556.1.4.801",  // SD flags: no security descriptors are served
    "1.2.840.113556.1.4.417",  // show deleted: there are no deleted objects to show
    "2.16.840.1.113730.3.4.2", // ManageDsaIT
];

const CAPABILITIES: &[&str] = &[
    "1.2.840.113556.1.4.800",  // Active Directory
    "1.2.840.113556.1.4.1670", // AD v51 (Windows Server 2003)
    "1.2.840.113556.1.4.1791", // LDAP integration
    "1.2.840.113556.1.4.1935", // AD v60 (Windows Server 2008)
    "1.2.840.113556.1.4.2080", // AD v61R2
    "1.2.840.113556.1.4.2237", // W8
];

/// `20261122223344.0Z` from a system time.
pub fn generalized_time(t: SystemTime) -> String {
    crate::time::generalized_time(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

fn attr(name: &str, values: &[&str]) -> Attribute {
    Attribute {
        name: name.into(),
        values: values.iter().map(|v| Bytes::copy_from_slice(v.as_bytes())).collect(),
    }
}

/// The RootDSE entry for the snapshot; `host` is the server's DNS name.
pub fn root_dse(snap: &Snapshot, host: &str) -> Entry {
    let base = &*snap.naming.base_dn;
    let config = format!("CN=Configuration,{base}");
    let schema_nc = format!("CN=Schema,{config}");
    let sub = schema::subschema_dn(base);
    let usn = snap.version.to_string();
    let now = generalized_time(SystemTime::now());
    let server = format!("CN={host},CN=Servers,CN=Default-First-Site-Name,CN=Sites,{config}");
    let service = format!(
        "{}:{}$@{}",
        snap.naming.dns_domain,
        host.split('.').next().unwrap_or(host).to_lowercase(),
        snap.naming.dns_domain.to_uppercase()
    );
    Entry {
        id: "".into(),
        kind: EntryKind::Domain,
        dn: "".into(),
        dn_norm: "".into(),
        guid: [0; 16],
        usn_changed: snap.version,
        usn_created: 0,
        attrs: vec![
            attr("objectClass", &["top"]),
            attr("currentTime", &[&now]),
            attr("subschemaSubentry", &[&sub]),
            attr("dsServiceName", &[&format!("CN=NTDS Settings,{server}")]),
            attr("namingContexts", &[base, &config, &schema_nc]),
            attr("defaultNamingContext", &[base]),
            attr("rootDomainNamingContext", &[base]),
            attr("configurationNamingContext", &[&config]),
            attr("schemaNamingContext", &[&schema_nc]),
            attr("serverName", &[&server]),
            attr("supportedControl", SUPPORTED_CONTROLS),
            attr("supportedLDAPVersion", &["3", "2"]),
            attr(
                "supportedLDAPPolicies",
                &["MaxPageSize", "MaxValRange", "MaxConnections", "MaxConnIdleTime"],
            ),
            attr("supportedSASLMechanisms", &[]),
            attr("supportedCapabilities", CAPABILITIES),
            attr(
                "supportedExtension",
                &[super::proto::OID_STARTTLS, super::proto::OID_WHOAMI],
            ),
            attr("highestCommittedUSN", &[&usn]),
            attr("isSynchronized", &["TRUE"]),
            attr("isGlobalCatalogReady", &["FALSE"]),
            attr("dnsHostName", &[host]),
            attr("ldapServiceName", &[&service]),
            attr("domainFunctionality", &["7"]),
            attr("forestFunctionality", &["7"]),
            attr("domainControllerFunctionality", &["7"]),
            attr("vendorName", &["entradir"]),
        ]
        .into_iter()
        .filter(|a| !a.values.is_empty())
        .collect(),
        sort_keys: Default::default(),
    }
}

/// Whether a normalised base is the subschema entry.
pub fn is_subschema(base_norm: &str, snap: &Snapshot) -> bool {
    if !base_norm.starts_with("cn=aggregate,") {
        return false;
    }
    normalize_dn(&schema::subschema_dn(&snap.naming.base_dn)).is_some_and(|s| s == base_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_is_civil_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(generalized_time(t), "20231114221320.0Z");
        assert_eq!(generalized_time(SystemTime::UNIX_EPOCH), "19700101000000.0Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(generalized_time(leap), "20000229000000.0Z");
    }

    #[test]
    fn root_dse_names_the_naming_context() {
        let snap = crate::ldap::filter::tests::sample();
        let e = root_dse(&snap, "dc1.contoso.example");
        assert_eq!(e.first_str("defaultNamingContext"), Some("DC=contoso,DC=example"));
        assert_eq!(e.first_str("highestCommittedUSN"), Some("9"));
        assert!(e.strs("supportedCapabilities").any(|c| c == "1.2.840.113556.1.4.800"));
    }
}
