//! Who is asking: HTTP Basic auth against the service accounts (PHC argon2 hashes, the same `[[accounts]]` LDAP
//! binds use), or anonymous read from configured networks.
//!
//! Argon2 is deliberately slow, and CardDAV clients send credentials with every request: verification goes
//! through the process's [`crate::accounts::Verifier`], shared with LDAP binds, which bounds how many run at
//! once and remembers verified secrets for a minute.

use base64::Engine;
use std::net::IpAddr;

pub use crate::accounts::{hash_password, verify_password};

pub use crate::accounts::{Account, Cidr, CidrError};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Anonymous,
}

impl Principal {
    /// URL segment of the principal.
    pub fn segment(&self) -> &str {
        match self {
            Principal::User(n) => n,
            Principal::Anonymous => "anonymous",
        }
    }
}

/// Why a request was not let in (both answer 401 with a challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
}

/// Decides who a caller is; shared by all connections.
#[derive(Default)]
pub struct Authenticator {
    /// Failed logins per source address: each 401 for wrong credentials waits longer.
    throttle: crate::accounts::LoginThrottle,
}

impl Authenticator {
    /// Decide who the caller is from the `Authorization` header value and the peer address. Wrong credentials
    /// are logged (account and address, never the password) and answered after a per-address delay.
    pub async fn authenticate(
        &self,
        accounts: &[Account],
        anonymous: &[Cidr],
        authorization: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Principal, AuthFailure> {
        let result = self.check(accounts, anonymous, authorization, peer).await;
        if result == Err(AuthFailure::Invalid) {
            let name: String = authorization
                .and_then(parse_basic)
                .map(|(n, _)| crate::accounts::loggable_name(&n))
                .unwrap_or_default();
            tracing::info!(%peer, account = ?name, "HTTP login failed: unknown account, wrong password or network not allowed");
            self.throttle.wait_failed(peer).await;
        }
        result
    }

    async fn check(
        &self,
        accounts: &[Account],
        anonymous: &[Cidr],
        authorization: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Principal, AuthFailure> {
        let Some(header) = authorization else {
            return if anonymous.iter().any(|n| n.contains(peer)) {
                Ok(Principal::Anonymous)
            } else {
                Err(AuthFailure::Missing)
            };
        };
        let (name, password) = parse_basic(header).ok_or(AuthFailure::Invalid)?;
        // A name that is no account here (or not from this network) is verified against a dummy hash, so the
        // answer takes as long as for a real account.
        let account = accounts
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(&name))
            .filter(|a| a.allowed_from(peer));
        if !crate::accounts::verifier().check(account, password.as_bytes()).await {
            return Err(AuthFailure::Invalid);
        }
        match account {
            Some(a) => Ok(Principal::User(a.name.clone())),
            None => Err(AuthFailure::Invalid),
        }
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(header).ok()?.trim();
    let (scheme, b64) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
        .into_bytes()
    }

    #[test]
    fn cidr_matching() {
        let n: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()) && !host.contains("127.0.0.2".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    // Paused clock: wrong credentials wait the growing per-source delay, which need not pass in real time.
    #[tokio::test(start_paused = true)]
    async fn basic_auth_and_anonymous_networks() {
        let accounts = vec![
            Account {
                name: "phone".into(),
                password_hash: hash_password("s3cret").unwrap(),
                networks: vec![],
            },
            Account {
                name: "desk".into(),
                password_hash: hash_password("s3cret").unwrap(),
                networks: vec!["198.51.100.0/24".parse().unwrap()],
            },
        ];
        let anon: Vec<Cidr> = vec!["192.0.2.0/24".parse().unwrap()];
        let auth = Authenticator::default();
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        let wan: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            auth.authenticate(&accounts, &anon, None, lan).await,
            Ok(Principal::Anonymous)
        );
        assert_eq!(
            auth.authenticate(&accounts, &anon, None, wan).await,
            Err(AuthFailure::Missing)
        );
        let good = basic("phone", "s3cret");
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&good), wan).await,
            Ok(Principal::User("phone".into()))
        );
        // Second time from the cache; a wrong password must still fail although the name is cached.
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&good), wan).await,
            Ok(Principal::User("phone".into()))
        );
        let wrong = basic("phone", "guess");
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&wrong), lan).await,
            Err(AuthFailure::Invalid)
        );
        let nobody = basic("nobody", "s3cret");
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&nobody), wan).await,
            Err(AuthFailure::Invalid)
        );
        for junk in [&b"Basic !!!"[..], b"Bearer abc", b"Basic", b"\xff\xfe"] {
            assert_eq!(
                auth.authenticate(&accounts, &anon, Some(junk), wan).await,
                Err(AuthFailure::Invalid)
            );
        }
        let desk = basic("desk", "s3cret");
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&desk), wan).await,
            Ok(Principal::User("desk".into()))
        );
        assert_eq!(
            auth.authenticate(&accounts, &anon, Some(&desk), lan).await,
            Err(AuthFailure::Invalid)
        );
        let broken = vec![Account {
            name: "x".into(),
            password_hash: "not-a-phc".into(),
            networks: vec![],
        }];
        assert_eq!(
            auth.authenticate(&broken, &[], Some(&basic("x", "y")), wan).await,
            Err(AuthFailure::Invalid)
        );
    }
}
