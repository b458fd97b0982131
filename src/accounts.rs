//! Service accounts (`[[accounts]]`): who may bind over LDAP and read address books over CardDAV, and from
//! which networks.
//!
//! Passwords are stored only as argon2 PHC strings; verification is deliberately slow, so callers run it off
//! the async runtime (`spawn_blocking`).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::net::IpAddr;
use std::str::FromStr;

/// A service account: `password_hash` is a PHC string (`$argon2id$v=19$...`); when `networks` is not empty the
/// account is only accepted from those networks.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub password_hash: String,
    pub networks: Vec<Cidr>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Whether a client at `ip` may use this account.
    pub fn allowed_from(&self, ip: IpAddr) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(ip))
    }
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?}: expected CIDR notation such as 10.0.0.0/8 or 2001:db8::/32")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside; IPv4-mapped IPv6 peers (dual-stack sockets) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// A PHC string (`$argon2id$v=19$...`) for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string. A malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let n: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.9.9".parse().unwrap()), "IPv4-mapped peers");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()) && !one.contains("2001:db8::2".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("S3cret", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}

/// Failed logins per source, so password guessing from one place gets slower with every miss (LDAP binds and
/// HTTP Basic auth each keep one). The delay doubles from 250 ms up to 8 s and decays: a source is forgotten 15
/// minutes after its last failure. A success does not reset it (an attacker holding one valid account could
/// otherwise clear the count between guesses); a client that fixed its password is not delayed anyway, since
/// only failures wait. IPv6 sources count per /64, the block one host usually has.
///
/// The delays of one source run one after another ([`LoginThrottle::wait_failed`]), so opening more connections
/// does not multiply the guesses: one source gets one answer to a wrong password per delay.
///
/// The table is bounded: at [`THROTTLE_TRACKED`] sources it is pruned of forgotten ones at most once a minute, and
/// while it is still full every new source gets the longest delay without being added (all of those share one
/// queue).
pub struct LoginThrottle {
    failures: dashmap::DashMap<IpAddr, Source>,
    last_prune: std::sync::Mutex<Option<std::time::Instant>>,
    /// The queue of sources the full table does not track.
    overflow: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Failures on record for one source, and the queue its delayed answers wait in.
struct Source {
    count: u32,
    last: std::time::Instant,
    queue: std::sync::Arc<tokio::sync::Mutex<()>>,
}

const THROTTLE_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const THROTTLE_MAX_DOUBLINGS: u32 = 5;
const THROTTLE_FORGET: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Sources tracked at most.
pub const THROTTLE_TRACKED: usize = 10_000;
const THROTTLE_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            failures: dashmap::DashMap::new(),
            last_prune: std::sync::Mutex::new(None),
            overflow: Default::default(),
        }
    }
}

/// The source a failure is counted for: the address, or its /64 for IPv6.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl LoginThrottle {
    /// Count a failure from `ip` and wait before it may be answered: the delay, after the delays of this
    /// source's earlier failures still waiting.
    pub async fn wait_failed(&self, ip: IpAddr) {
        let (delay, queue) = self.record(ip);
        let _turn = queue.lock().await;
        tokio::time::sleep(delay).await;
    }

    /// Count a failure from `ip`; returns how long its answer waits (not counting the queue).
    pub fn failed(&self, ip: IpAddr) -> std::time::Duration {
        self.record(ip).0
    }

    fn record(&self, ip: IpAddr) -> (std::time::Duration, std::sync::Arc<tokio::sync::Mutex<()>>) {
        let longest = THROTTLE_FIRST * 2u32.pow(THROTTLE_MAX_DOUBLINGS);
        let now = std::time::Instant::now();
        let key = source(ip);
        if !self.failures.contains_key(&key) && self.failures.len() >= THROTTLE_TRACKED {
            self.prune(now);
            if self.failures.len() >= THROTTLE_TRACKED {
                return (longest, self.overflow.clone());
            }
        }
        let mut entry = self.failures.entry(key).or_insert_with(|| Source {
            count: 0,
            last: now,
            queue: Default::default(),
        });
        let s = entry.value_mut();
        if now.duration_since(s.last) >= THROTTLE_FORGET {
            s.count = 0;
        }
        s.count = s.count.saturating_add(1);
        s.last = now;
        let delay = THROTTLE_FIRST * 2u32.pow((s.count - 1).min(THROTTLE_MAX_DOUBLINGS));
        (delay, s.queue.clone())
    }

    /// Drop forgotten sources, at most once per [`THROTTLE_PRUNE_EVERY`].
    fn prune(&self, now: std::time::Instant) {
        let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < THROTTLE_PRUNE_EVERY) {
            return;
        }
        *last = Some(now);
        self.failures
            .retain(|_, s| now.duration_since(s.last) < THROTTLE_FORGET);
    }

    /// Sources with failures on record.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delays_double_per_source_up_to_a_cap_and_do_not_reset_on_success() {
        let t = LoginThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let delays: Vec<Duration> = (0..8).map(|_| t.failed(a)).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[5], Duration::from_secs(8));
        assert_eq!(delays[7], Duration::from_secs(8), "capped");
        assert_eq!(
            t.failed(b),
            Duration::from_millis(250),
            "other addresses are not punished"
        );
        // One host's IPv6 addresses share a /64.
        let v6a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::99".parse().unwrap();
        assert_eq!(t.failed(v6a), Duration::from_millis(250));
        assert_eq!(t.failed(v6b), Duration::from_millis(500));
    }

    /// Parallel wrong passwords from one source are answered one after another, not all after one delay.
    #[tokio::test(start_paused = true)]
    async fn parallel_failures_from_one_source_queue_up() {
        let t = std::sync::Arc::new(LoginThrottle::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let start = tokio::time::Instant::now();
        let waits: Vec<_> = (0..3)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move { t.wait_failed(ip).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap();
        }
        // 250 ms + 500 ms + 1 s, in a row.
        assert!(start.elapsed() >= Duration::from_millis(1750), "{:?}", start.elapsed());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let again = tokio::time::Instant::now();
        t.wait_failed(other).await;
        assert!(
            again.elapsed() < Duration::from_millis(300),
            "other sources do not queue behind it"
        );
    }

    #[test]
    fn a_flood_of_sources_cannot_grow_the_table() {
        let t = LoginThrottle::default();
        for i in 0..(THROTTLE_TRACKED as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let d = t.failed(ip);
            if i as usize >= THROTTLE_TRACKED {
                assert_eq!(d, Duration::from_secs(8), "untracked newcomers get the longest delay");
            }
        }
        assert_eq!(t.tracked(), THROTTLE_TRACKED);
    }
}
