//! Service accounts and simple bind: the three name forms AD accepts and AD's failure texts. Verification
//! (bounded, cached, equal work for unknown names) is [`crate::accounts::Verifier`]'s, shared with CardDAV.

use crate::directory::dn::parse_dn;
use crate::directory::Naming;

pub use crate::accounts::{Account, Cidr, CidrError};

pub use crate::accounts::hash_password;

/// Check a password against a PHC hash (CPU-heavy: call from a blocking thread). LDAP passwords are octets;
/// one that is not UTF-8 cannot match a hash made by `entradir hash-password`.
pub fn verify_password(password: &[u8], phc: &str) -> bool {
    std::str::from_utf8(password).is_ok_and(|p| crate::accounts::verify_password(p, phc))
}

/// Which account a bind name refers to: `CN=svc,OU=...` (first RDN value), `svc@dns.domain`,
/// `DOMAIN\svc` or the bare name.
pub fn resolve_name<'a>(name: &str, accounts: &'a [Account], naming: &Naming) -> Option<&'a Account> {
    let name = name.trim();
    let user = if let Some((u, domain)) = name.split_once('@') {
        if !domain.eq_ignore_ascii_case(&naming.dns_domain) {
            return None;
        }
        u.to_string()
    } else if let Some((domain, u)) = name.split_once('\\') {
        if !domain.eq_ignore_ascii_case(&naming.netbios) && !domain.eq_ignore_ascii_case(&naming.dns_domain) {
            return None;
        }
        u.to_string()
    } else if name.contains('=') {
        let rdns = parse_dn(name)?;
        rdns.first()?.first()?.1.clone()
    } else {
        name.to_string()
    };
    accounts.iter().find(|a| a.name.eq_ignore_ascii_case(&user))
}

/// AD's message texts for failed binds, which PBX admins recognise (52e = bad password, 531 = workstation).
pub const MSG_BAD_CREDENTIALS: &str =
    "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563";
pub const MSG_BAD_WORKSTATION: &str =
    "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 531, v4563";

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Vec<Account> {
        vec![Account {
            name: "pbx".into(),
            password_hash: String::new(),
            networks: vec![],
        }]
    }

    #[test]
    fn three_name_forms_resolve() {
        let n = Naming::new("DC=contoso,DC=example").unwrap();
        let a = accounts();
        for name in [
            "CN=pbx,CN=Users,DC=contoso,DC=example",
            "cn=PBX,ou=Service,dc=contoso,dc=example",
            "pbx@contoso.example",
            "CONTOSO\\pbx",
            "contoso\\PBX",
            "pbx",
        ] {
            assert_eq!(
                resolve_name(name, &a, &n).map(|a| a.name.as_str()),
                Some("pbx"),
                "{name}"
            );
        }
        for name in ["pbx@other.example", "OTHER\\pbx", "CN=someone,DC=x", "CN=pbx,", ""] {
            assert!(resolve_name(name, &a, &n).is_none(), "{name}");
        }
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(b"s3cret", &h));
        assert!(!verify_password(b"S3cret", &h));
        assert!(!verify_password(b"s3cret", "not a hash"));
    }

    #[test]
    fn networks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains("2001:db8::1".parse().unwrap()));
        assert!(!c.contains("10.1.2.3".parse().unwrap()));
        let c: Cidr = "192.0.2.7".parse().unwrap();
        assert!(c.contains("192.0.2.7".parse().unwrap()) && !c.contains("192.0.2.8".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
