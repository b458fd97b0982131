//! Who talks LDAP to this server, and what they ask: the admin console's "clients" page.
//!
//! An admin chasing "the phone shows no name" needs to see which address binds with which account and the
//! filters it really sends. This module keeps that per (source address, account) in process memory, bounded:
//! at most [`MAX_CLIENTS`] clients (the least recently seen is dropped), [`MAX_SHAPES`] filter shapes and
//! [`RECENT`] operations each, and the last [`FAILED_BINDS`] failed binds. A filter's *shape* is the filter
//! with its values left out (`(|(cn=…*)(sn=…*))`), so a phone that searches a thousand names counts as one
//! kind of query; one example with values is kept, cut to [`EXAMPLE_MAX`] bytes.
//!
//! Nothing is written to disk and nothing here is needed to answer LDAP: a poisoned lock is taken over, never
//! propagated.

use super::filter::Filter;
use super::proto::Code;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

/// Clients remembered; beyond this the least recently seen one is forgotten.
pub const MAX_CLIENTS: usize = 256;
/// Distinct filter shapes kept per client; beyond this the least used one is replaced.
pub const MAX_SHAPES: usize = 32;
/// Operations kept per client, newest first.
pub const RECENT: usize = 10;
/// Failed binds kept, all clients together.
pub const FAILED_BINDS: usize = 50;
/// Longest example filter kept (bytes; cut at a character boundary).
pub const EXAMPLE_MAX: usize = 200;

/// One filter shape a client sends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shape {
    pub shape: String,
    /// A hash of `shape`: what a search compares (a search does not write its shape out unless it is new).
    #[serde(skip)]
    key: u64,
    pub count: u64,
    /// The last filter of this shape, with its values.
    pub example: Arc<str>,
}

/// One operation, as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recent {
    pub at: u64,
    /// `bind`, `bind as` or `search`.
    pub op: &'static str,
    /// The filter of a search, the name of a failed bind; empty for a bind.
    pub detail: Arc<str>,
    /// The LDAP result (`success`, `invalidCredentials`, …).
    pub result: &'static str,
}

impl Recent {
    /// As the console shows it: `bind`, `bind as <name>`, `search <filter>`.
    pub fn what(&self) -> String {
        if self.detail.is_empty() {
            self.op.to_string()
        } else {
            format!("{} {}", self.op, self.detail)
        }
    }
}

/// What one (address, account) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Client {
    pub address: IpAddr,
    /// The bound account; `None` for anonymous operations.
    pub account: Option<Arc<str>>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub binds: u64,
    pub searches: u64,
    /// Operations that did not end in success (a size limit reached counts: the client asked for too much).
    pub errors: u64,
    /// Most used first (in [`snapshot`]'s view).
    pub shapes: Vec<Shape>,
    /// Newest first.
    pub recent: VecDeque<Recent>,
}

/// A bind that failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedBind {
    pub at: u64,
    pub address: IpAddr,
    /// The bind name as given, made safe to show ([`crate::accounts::loggable_name`]).
    pub name: String,
    pub reason: &'static str,
}

type Key = (IpAddr, Option<Arc<str>>);

#[derive(Default)]
struct Log {
    clients: HashMap<Key, Client>,
    failed: VecDeque<FailedBind>,
}

static LOG: LazyLock<Mutex<Log>> = LazyLock::new(Mutex::default);

fn log() -> std::sync::MutexGuard<'static, Log> {
    LOG.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// The client's record, made when new; a full log first forgets the least recently seen client (a scan,
    /// but only when a new client arrives at a full log).
    fn client(&mut self, address: IpAddr, account: Option<&Arc<str>>, now: u64) -> &mut Client {
        let key: Key = (address, account.cloned());
        if !self.clients.contains_key(&key) && self.clients.len() >= MAX_CLIENTS {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.clients.remove(&k);
            }
        }
        let c = self.clients.entry(key).or_insert_with(|| Client {
            address,
            account: account.cloned(),
            first_seen: now,
            last_seen: now,
            binds: 0,
            searches: 0,
            errors: 0,
            shapes: Vec::new(),
            recent: VecDeque::new(),
        });
        c.last_seen = now;
        c
    }
}

impl Client {
    fn note(&mut self, at: u64, op: &'static str, detail: Arc<str>, result: &'static str) {
        if self.recent.len() >= RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(Recent { at, op, detail, result });
    }
}

impl Log {
    fn bind_ok(&mut self, address: IpAddr, account: &Arc<str>, now: u64) {
        let c = self.client(address, Some(account), now);
        c.binds += 1;
        c.note(now, "bind", Arc::from(""), "success");
    }

    /// `name` is already made safe to show and cut.
    fn bind_failed(&mut self, address: IpAddr, name: String, reason: &'static str, now: u64) {
        if self.failed.len() >= FAILED_BINDS {
            self.failed.pop_back();
        }
        let detail: Arc<str> = Arc::from(name.as_str());
        self.failed.push_front(FailedBind {
            at: now,
            address,
            name,
            reason,
        });
        let c = self.client(address, None, now);
        c.errors += 1;
        c.note(now, "bind as", detail, "invalidCredentials");
    }

    /// `example` is the filter as [`write_filter`] writes it with values, `key` the hash of its shape.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        address: IpAddr,
        account: Option<&Arc<str>>,
        filter: &Filter,
        key: u64,
        example: Arc<str>,
        code: Option<Code>,
        now: u64,
    ) {
        let result = code.map_or("abandoned", code_name);
        let c = self.client(address, account, now);
        c.searches += 1;
        if code != Some(Code::Success) {
            c.errors += 1;
        }
        match c.shapes.iter_mut().position(|s| s.key == key) {
            Some(i) => {
                c.shapes[i].count += 1;
                c.shapes[i].example = example.clone();
                // One step up per use: frequent shapes move away from the end, where a new shape replaces the
                // last one when the list is full (the view sorts them fully).
                if i > 0 && c.shapes[i].count > c.shapes[i - 1].count {
                    c.shapes.swap(i, i - 1);
                }
            }
            None => {
                if c.shapes.len() >= MAX_SHAPES {
                    c.shapes.pop();
                }
                let mut shape = String::new();
                write_filter(&mut shape, filter, false);
                c.shapes.push(Shape {
                    shape,
                    key,
                    count: 1,
                    example: example.clone(),
                });
            }
        }
        c.note(now, "search", example, result);
    }

    fn view(&self) -> (Vec<Client>, Vec<FailedBind>) {
        let mut clients: Vec<Client> = self.clients.values().cloned().collect();
        clients.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.address.cmp(&b.address)));
        for c in &mut clients {
            c.shapes.sort_by_key(|s| std::cmp::Reverse(s.count));
        }
        (clients, self.failed.iter().cloned().collect())
    }
}

/// A successful bind by `account` from `address`.
pub(crate) fn bind_ok(address: IpAddr, account: &Arc<str>) {
    let now = crate::time::unix_now();
    log().bind_ok(address, account, now);
}

/// A failed bind from `address` with `name` (as given by the client).
pub(crate) fn bind_failed(address: IpAddr, name: &str, reason: &'static str) {
    let now = crate::time::unix_now();
    let name = cut(&crate::accounts::loggable_name(name), EXAMPLE_MAX);
    log().bind_failed(address, name, reason, now);
}

/// A search by `account` (`None`: anonymous) from `address` that ended with `code` (`None`: no result sent,
/// the search was abandoned or the client went away). The filter is written out before the lock is taken.
pub(crate) fn search(address: IpAddr, account: Option<&Arc<str>>, filter: &Filter, code: Option<Code>) {
    let now = crate::time::unix_now();
    let (key, example) = shape_and_example(filter);
    log().search(address, account, filter, key, example, code, now);
}

/// The hash of a filter's shape and the filter with its values, cut to [`EXAMPLE_MAX`].
fn shape_and_example(filter: &Filter) -> (u64, Arc<str>) {
    let mut key = ShapeKey(rustc_hash::FxHasher::default());
    write_filter(&mut key, filter, false);
    let mut example = String::new();
    write_filter(&mut example, filter, true);
    let example: Arc<str> = if example.len() <= EXAMPLE_MAX {
        example.into()
    } else {
        cut(&example, EXAMPLE_MAX).into()
    };
    (std::hash::Hasher::finish(&key.0), example)
}

/// Every client remembered, most recently seen first, and the failed binds, newest first (copied out, so
/// rendering them holds no lock).
pub fn snapshot() -> (Vec<Client>, Vec<FailedBind>) {
    log().view()
}

/// The LDAP name of a result code (RFC 4511 §4.1.9), as client logs print it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Success => "success",
        Code::OperationsError => "operationsError",
        Code::ProtocolError => "protocolError",
        Code::TimeLimitExceeded => "timeLimitExceeded",
        Code::SizeLimitExceeded => "sizeLimitExceeded",
        Code::CompareFalse => "compareFalse",
        Code::CompareTrue => "compareTrue",
        Code::AuthMethodNotSupported => "authMethodNotSupported",
        Code::AdminLimitExceeded => "adminLimitExceeded",
        Code::UnavailableCriticalExtension => "unavailableCriticalExtension",
        Code::NoSuchAttribute => "noSuchAttribute",
        Code::NoSuchObject => "noSuchObject",
        Code::InvalidDnSyntax => "invalidDNSyntax",
        Code::InvalidCredentials => "invalidCredentials",
        Code::Busy => "busy",
        Code::Unavailable => "unavailable",
        Code::UnwillingToPerform => "unwillingToPerform",
        Code::Other => "other",
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when something was cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Write `f` in the string form of RFC 4515; with `values` false every value is written as `…`.
/// A filter's shape hashed as [`write_filter`] writes it, without making the string.
struct ShapeKey(rustc_hash::FxHasher);

impl std::fmt::Write for ShapeKey {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        std::hash::Hasher::write(&mut self.0, s.as_bytes());
        Ok(())
    }
}

pub(crate) fn write_filter(out: &mut impl std::fmt::Write, f: &Filter, values: bool) {
    let value = |out: &mut dyn std::fmt::Write, v: &[u8]| {
        if !values {
            let _ = out.write_char('…');
            return;
        }
        match std::str::from_utf8(v) {
            Ok(s) => {
                for ch in s.chars() {
                    match ch {
                        '*' | '(' | ')' | '\\' | '\0' => {
                            let _ = write!(out, "\\{:02x}", ch as u32);
                        }
                        c => {
                            let _ = out.write_char(c);
                        }
                    }
                }
            }
            Err(_) => {
                for b in v {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
        }
    };
    match f {
        Filter::And(fs) | Filter::Or(fs) => {
            let _ = out.write_str(if matches!(f, Filter::And(_)) { "(&" } else { "(|" });
            for f in fs {
                write_filter(out, f, values);
            }
            let _ = out.write_char(')');
        }
        Filter::Not(f) => {
            let _ = out.write_str("(!");
            write_filter(out, f, values);
            let _ = out.write_char(')');
        }
        Filter::Eq(a, v) | Filter::Ge(a, v) | Filter::Le(a, v) | Filter::Approx(a, v) => {
            let op = match f {
                Filter::Eq(..) => "=",
                Filter::Ge(..) => ">=",
                Filter::Le(..) => "<=",
                _ => "~=",
            };
            let _ = write!(out, "({a}{op}");
            value(out, v);
            let _ = out.write_char(')');
        }
        Filter::Sub(a, s) => {
            let _ = write!(out, "({a}=");
            if let Some(v) = &s.initial {
                value(out, v);
            }
            let _ = out.write_char('*');
            for v in &s.any {
                value(out, v);
                let _ = out.write_char('*');
            }
            if let Some(v) = &s.final_ {
                value(out, v);
            }
            let _ = out.write_char(')');
        }
        Filter::Present(a) => {
            let _ = write!(out, "({a}=*)");
        }
        Filter::Ext {
            rule,
            attr,
            value: v,
            dn_attrs,
        } => {
            let _ = out.write_char('(');
            if let Some(a) = attr {
                let _ = out.write_str(a);
            }
            if *dn_attrs {
                let _ = out.write_str(":dn");
            }
            if let Some(r) = rule {
                let _ = write!(out, ":{r}");
            }
            let _ = out.write_str(":=");
            value(out, v);
            let _ = out.write_char(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &str, values: bool) -> String {
        let mut s = String::new();
        write_filter(&mut s, &Filter::parse(f).unwrap(), values);
        s
    }

    #[test]
    fn filters_are_written_back_in_their_string_form_and_as_shapes() {
        for f in [
            "(|(cn=Schm*)(sn=Schm*))",
            "(&(objectCategory=person)(|(telephoneNumber=*4930*)(mobile=*1234)))",
            "(!(userAccountControl:1.2.840.113556.1.4.803:=2))",
            "(cn=a\\2ab\\28c\\29)",
            "(sn>=M)",
        ] {
            assert_eq!(text(f, true), f);
        }
        assert_eq!(text("(|(cn=Schm*)(sn=*mid*t))", false), "(|(cn=…*)(sn=*…*…))");
    }

    /// A search as the public function records it, into a log of the test's own.
    fn search_into(log: &mut Log, ip: IpAddr, account: Option<&Arc<str>>, f: &str, code: Code, now: u64) {
        let f = Filter::parse(f).unwrap();
        let (key, example) = shape_and_example(&f);
        log.search(ip, account, &f, key, example, Some(code), now);
    }

    #[test]
    fn one_client_per_address_and_account_with_bounded_shapes_and_recent_operations() {
        let mut log = Log::default();
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        let acct: Arc<str> = Arc::from("pbx-test");
        log.bind_ok(ip, &acct, 1);
        for i in 0..(MAX_SHAPES + 5) {
            search_into(
                &mut log,
                ip,
                Some(&acct),
                &format!("(|(cn=x*)(sn{i}=y*))"),
                Code::Success,
                2,
            );
        }
        for _ in 0..3 {
            search_into(
                &mut log,
                ip,
                Some(&acct),
                "(telephoneNumber=+49301234)",
                Code::Success,
                3,
            );
        }
        search_into(&mut log, ip, None, "(cn=x)", Code::InvalidCredentials, 4);
        log.bind_failed(ip, "CN=intruder".into(), "wrong password", 5);
        let (clients, failed) = log.view();
        assert_eq!(clients.len(), 2, "the account and the anonymous client are told apart");
        assert!(clients[0].account.is_none(), "most recently seen first");
        let pbx = clients
            .iter()
            .find(|c| c.account.as_deref() == Some("pbx-test"))
            .unwrap();
        assert_eq!(pbx.binds, 1);
        assert_eq!(pbx.searches, MAX_SHAPES as u64 + 5 + 3);
        assert_eq!(pbx.shapes.len(), MAX_SHAPES);
        assert_eq!(pbx.shapes[0].shape, "(telephoneNumber=…)");
        assert_eq!(pbx.shapes[0].count, 3);
        assert_eq!(pbx.recent.len(), RECENT);
        assert_eq!(pbx.recent[0].what(), "search (telephoneNumber=+49301234)");
        let anon = &clients[0];
        assert_eq!(anon.errors, 2);
        assert_eq!(anon.recent[0].what(), "bind as CN=intruder");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].name.as_str(), failed[0].reason),
            ("CN=intruder", "wrong password")
        );
    }

    #[test]
    fn the_least_recently_seen_client_is_forgotten_and_failed_binds_are_bounded() {
        let mut log = Log::default();
        for i in 0..(MAX_CLIENTS + 10) {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            // The first client keeps coming back, so it is never the least recently seen.
            search_into(
                &mut log,
                "10.9.9.9".parse().unwrap(),
                None,
                "(cn=a)",
                Code::Success,
                i as u64,
            );
            search_into(&mut log, ip, None, "(cn=a)", Code::Success, i as u64);
            log.bind_failed(ip, format!("guess{i}"), "unknown account", i as u64);
        }
        let (clients, failed) = log.view();
        assert_eq!(clients.len(), MAX_CLIENTS);
        assert!(clients
            .iter()
            .any(|c| c.address == "10.9.9.9".parse::<IpAddr>().unwrap()));
        assert!(
            !clients.iter().any(|c| c.address == IpAddr::from([10, 0, 0, 0])),
            "the oldest one-time client is gone"
        );
        assert!(
            clients.iter().any(|c| c.address == IpAddr::from([10, 0, 1, 9])),
            "the newest is kept"
        );
        assert_eq!(failed.len(), FAILED_BINDS);
        assert_eq!(failed[0].name, format!("guess{}", MAX_CLIENTS + 9), "newest first");
    }

    #[test]
    fn long_examples_are_cut_at_a_character_boundary() {
        let long = "ü".repeat(300);
        let c = cut(&long, EXAMPLE_MAX);
        assert!(c.len() <= EXAMPLE_MAX + '…'.len_utf8());
        assert!(c.ends_with('…'));
    }
}
