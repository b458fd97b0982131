//! Service accounts (`[[accounts]]`): who may bind over LDAP and read address books over CardDAV, and from
//! which networks.
//!
//! Passwords are stored only as argon2 PHC strings. Verification is deliberately slow and takes about 19 MiB
//! of memory each, so LDAP binds and CardDAV logins both go through one [`Verifier`]: at most
//! [`CONCURRENT_VERIFICATIONS`] at a time on the blocking pool, a short-lived cache of verified secrets, and
//! equal work for names that are no account. Failed logins are slowed down per source by [`LoginThrottle`].

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
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

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

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
    verify_in(password.as_bytes(), phc, &mut Vec::new())
}

/// [`verify_password`] in working memory the caller keeps (grown to the hash's memory cost when needed). The
/// verifier reuses a few such buffers: argon2 allocating 19 MiB per check on whichever blocking thread runs
/// it leaves that much behind in each thread's allocator arena, and a burst of failed logins then holds
/// hundreds of MiB long after it ended.
fn verify_in(password: &[u8], phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&h) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && bool::from(subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes()))
}

/// Argon2 verifications running at once, LDAP and CardDAV together: bounds their memory (19 MiB each with the
/// default parameters) and leaves the runtime's blocking pool to the rest.
pub const CONCURRENT_VERIFICATIONS: usize = 4;
/// How long a verified (account, password) pair is taken without argon2: long enough that a PBX binding for
/// every call or a phone sending Basic auth with every request pays once a minute, short enough that a removed
/// account or changed password is noticed soon even without a reload.
pub const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);
const VERIFIED_MAX: usize = 4096;

/// Checks passwords for LDAP and CardDAV alike; one per process ([`verifier`]).
pub struct Verifier {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Argon2 working memory, at most one buffer per permit, allocated on first use and reused.
    memory: std::sync::Arc<std::sync::Mutex<Vec<Vec<argon2::Block>>>>,
    /// SHA-256 of (account, password, stored hash) → when it verified. Never the password itself.
    ok: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
    /// A hash of a random password with the default parameters, verified for unknown names.
    dummy: std::sync::OnceLock<String>,
    /// Argon2 verifications run (not answered from the cache), known and unknown names alike.
    runs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's verifier, shared by the LDAP and CardDAV front ends.
pub fn verifier() -> &'static Verifier {
    static V: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
    V.get_or_init(Verifier::default)
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS)),
            memory: Default::default(),
            ok: Default::default(),
            dummy: std::sync::OnceLock::new(),
            runs: Default::default(),
        }
    }
}

impl Verifier {
    /// Whether `password` is `account`'s. `None` (no such account) does the same argon2 work against a dummy
    /// hash and answers false, so the time taken does not tell which names exist.
    pub async fn check(&self, account: Option<&Account>, password: &[u8]) -> bool {
        let key = account.map(|a| verified_key(&a.name, password, &a.password_hash));
        if key.as_ref().is_some_and(|k| self.cached(k)) {
            return true;
        }
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let hash = match account {
            Some(a) => a.password_hash.clone(),
            None => self.dummy_hash(),
        };
        let pw = password.to_vec();
        let pool = self.memory.clone();
        let runs = self.runs.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // One buffer per permit: holding a permit means one is free or none was made yet.
            let mut memory = lock(&pool).pop().unwrap_or_default();
            let ok = crate::panics::catch(crate::metrics::PanicArea::Auth, || {
                std::str::from_utf8(&pw).is_ok() && {
                    runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    verify_in(&pw, &hash, &mut memory)
                }
            });
            lock(&pool).push(memory);
            ok
        })
        .await
        .unwrap_or(Ok(false))
        .unwrap_or_else(|caught| {
            tracing::error!(panic = %caught, "internal error checking a password (a bug: please report it); refused");
            false
        });
        match key {
            Some(k) if ok => {
                self.remember(k);
                true
            }
            _ => false,
        }
    }

    /// Argon2 verifications run so far.
    pub fn verifications(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| {
                let random: [u8; 16] = rand::random();
                hash_password(&format!("{random:x?}")).unwrap_or_default()
            })
            .clone()
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let map = self.ok.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_some_and(|t| t.elapsed() < VERIFIED_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut map = self.ok.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_MAX {
            map.retain(|_, t| t.elapsed() < VERIFIED_TTL);
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
        }
        map.insert(key, std::time::Instant::now());
    }
}

/// The cache key: the stored hash is part of it, so a changed password or hash never matches a stale entry.
fn verified_key(name: &str, password: &[u8], phc: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [name.to_ascii_lowercase().as_bytes(), password, phc.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// A client-supplied login name as it may appear in a log: cut to 32 characters (a password typed into the
/// name field must not land in the log whole). Log it with `?` so quotes and escapes keep a newline in it from
/// forging a log line.
pub fn loggable_name(name: &str) -> String {
    name.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_cut_for_the_log() {
        assert_eq!(loggable_name("pbx"), "pbx");
        let long = "ä".repeat(40);
        assert_eq!(loggable_name(&long).chars().count(), 32);
        assert_eq!(format!("{:?}", loggable_name("a\nfake line")), "\"a\\nfake line\"");
    }

    fn account(name: &str, password: &str) -> Account {
        Account {
            name: name.into(),
            password_hash: hash_password(password).unwrap(),
            networks: vec![],
        }
    }

    /// One verifier serves LDAP and CardDAV: a verified secret is remembered (the second check runs no argon2),
    /// a wrong one is not, and an unknown name runs an argon2 verification with the same parameters as a known
    /// one (counted, not timed: the work is what must be equal, and a loaded machine's clock says little).
    #[tokio::test]
    async fn verified_secrets_are_cached_and_unknown_names_cost_the_same() {
        let v = Verifier::default();
        let a = account("pbx", "right");
        assert!(v.check(Some(&a), b"right").await);
        assert_eq!(v.verifications(), 1);
        assert!(v.check(Some(&a), b"right").await);
        assert_eq!(v.verifications(), 1, "a verified secret is answered from the cache");
        assert!(!v.check(Some(&a), b"wrong").await);
        assert!(
            !v.check(Some(&a), b"wrong").await,
            "failures are not cached as successes"
        );
        assert_eq!(v.verifications(), 3, "every wrong password runs argon2");
        let other = Account {
            password_hash: hash_password("changed").unwrap(),
            ..a.clone()
        };
        assert!(
            !v.check(Some(&other), b"right").await,
            "a changed hash does not match a cached entry"
        );
        assert_eq!(v.verifications(), 4);
        assert!(!v.check(None, b"right").await);
        assert!(!v.check(None, b"right").await);
        assert_eq!(v.verifications(), 6, "an unknown name runs argon2 every time");
        let params = |phc: &str| phc.rsplitn(3, '$').nth(2).map(str::to_string);
        assert_eq!(
            params(&v.dummy_hash()),
            params(&a.password_hash),
            "the dummy hash has the algorithm, version and costs of a real one"
        );
        assert!(params(&a.password_hash).is_some_and(|p| p.contains("m=19456")));
    }

    /// 40 wrong passwords at once: never more than CONCURRENT_VERIFICATIONS argon2 runs (19 MiB each) together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_are_bounded() {
        let v = std::sync::Arc::new(Verifier::default());
        let a = std::sync::Arc::new(account("pbx", "right"));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (v, a) = (v.clone(), a.clone());
                tokio::spawn(async move { v.check(Some(&a), format!("wrong{i}").as_bytes()).await })
            })
            .collect();
        let mut lowest = CONCURRENT_VERIFICATIONS;
        while tasks.iter().any(|t| !t.is_finished()) {
            lowest = lowest.min(v.permits.available_permits());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for t in tasks {
            assert!(!t.await.unwrap());
        }
        assert_eq!(lowest, 0, "the bound was reached");
        assert_eq!(v.permits.available_permits(), CONCURRENT_VERIFICATIONS);
    }

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

    /// Verifying in reused memory agrees with argon2's own verification, for other algorithms, versions and
    /// costs than the default too, and a buffer grown for a large cost serves a smaller one.
    #[test]
    fn verification_in_reused_memory_agrees_with_argon2() {
        use argon2::password_hash::PasswordVerifier;
        use argon2::{Algorithm, Params, Version};
        let mut memory = Vec::new();
        for (alg, ver, m, t, p) in [
            (Algorithm::Argon2id, Version::V0x13, 4096, 2, 1),
            (Algorithm::Argon2i, Version::V0x13, 512, 3, 2),
            (Algorithm::Argon2d, Version::V0x10, 256, 1, 4),
            (Algorithm::Argon2id, Version::V0x13, 19456, 2, 1),
        ] {
            let hasher = Argon2::new(alg, ver, Params::new(m, t, p, None).unwrap());
            let salt = SaltString::generate(&mut OsRng);
            let phc = hasher.hash_password(b"pbx-Secret", &salt).unwrap().to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for pw in [&b"pbx-Secret"[..], b"pbx-secret", b""] {
                let theirs = Argon2::default().verify_password(pw, &parsed).is_ok();
                assert_eq!(verify_in(pw, &phc, &mut memory), theirs, "{phc} with {pw:?}");
                assert_eq!(theirs, pw == b"pbx-Secret");
            }
        }
        assert_eq!(memory.len(), 19456, "grown to the largest cost seen, not shrunk");
        assert!(
            !verify_in(b"x", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$", &mut memory),
            "no hash part"
        );
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

/// The source a failure (or a connection, for per-source caps) is counted for: the address, or its /64 for
/// IPv6.
pub fn source(ip: IpAddr) -> IpAddr {
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
