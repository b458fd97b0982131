//! Who is asking: HTTP Basic auth against the service accounts (PHC argon2 hashes, the same `[[accounts]]` LDAP
//! binds use), or anonymous read from configured networks.
//!
//! Argon2 is deliberately slow, and CardDAV clients send credentials with every request, so a successful
//! verification is remembered for a few minutes under a SHA-256 of (name, password, stored hash); a changed
//! password or hash therefore never matches a stale entry. Verification runs on the blocking pool, at most a few
//! at a time, so a password-guessing client cannot starve the runtime.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 4096;
const CONCURRENT_VERIFICATIONS: usize = 4;

/// Remembers recent successful verifications; shared by all connections.
pub struct Authenticator {
    ok: Mutex<HashMap<[u8; 32], Instant>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Failed logins per source address: each 401 for wrong credentials waits longer.
    throttle: crate::accounts::LoginThrottle,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            ok: Mutex::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS)),
            throttle: Default::default(),
        }
    }
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
            // Debug-quoted and cut short: the name is the client's text (a newline must not forge a log line, and
            // a password typed into the name field must not land in the log whole).
            let name: String = authorization
                .and_then(parse_basic)
                .map(|(n, _)| n.chars().take(32).collect())
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
        let account = accounts
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(&name))
            .filter(|a| a.allowed_from(peer))
            .ok_or(AuthFailure::Invalid)?;
        let key = cache_key(&account.name, &password, &account.password_hash);
        if self.cached(&key) {
            return Ok(Principal::User(account.name.clone()));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthFailure::Invalid)?;
        let hash = account.password_hash.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false);
        if !verified {
            return Err(AuthFailure::Invalid);
        }
        self.remember(key);
        Ok(Principal::User(account.name.clone()))
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let map = self.ok.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_some_and(|t| t.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut map = self.ok.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.retain(|_, t| t.elapsed() < CACHE_TTL);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(key, Instant::now());
    }
}

fn cache_key(name: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        name.to_ascii_lowercase().as_bytes(),
        password.as_bytes(),
        hash.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
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
