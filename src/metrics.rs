//! Process-wide counters and latency histograms for the admin endpoint's `/metrics`: LDAP operations by type
//! and result, HTTP (CardDAV and phone book) requests by area and status, open connections, Graph requests by
//! endpoint and status, and the expiry dates of certificates and credentials.
//!
//! The front ends count here without knowing about the admin endpoint, the way a Prometheus registry works.
//! Label sets are small and fixed (operation types, result codes, status codes), so the hot path is one or two
//! relaxed atomic adds into preallocated arrays: no lock, no allocation, no hashing per LDAP operation. Only the
//! rare events (Graph requests, expiry dates) sit behind a mutex.
//!
//! The exposition is Prometheus text format 0.0.4, appended by [`render`] to what the admin endpoint writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: a PBX lookup should land in the sub-millisecond ones.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A cumulative-at-render latency histogram.
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        // Nanoseconds: many LDAP lookups take under a microsecond. u64 nanoseconds last 584 years of summed time.
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// LDAP operation types, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapOp {
    Bind,
    Search,
    Compare,
    Extended,
    /// add, modify, delete, modDN: always refused (the directory is read-only).
    Write,
    Abandon,
    Unbind,
}

impl LdapOp {
    const ALL: [LdapOp; 7] = [
        LdapOp::Bind,
        LdapOp::Search,
        LdapOp::Compare,
        LdapOp::Extended,
        LdapOp::Write,
        LdapOp::Abandon,
        LdapOp::Unbind,
    ];

    fn name(self) -> &'static str {
        match self {
            LdapOp::Bind => "bind",
            LdapOp::Search => "search",
            LdapOp::Compare => "compare",
            LdapOp::Extended => "extended",
            LdapOp::Write => "write",
            LdapOp::Abandon => "abandon",
            LdapOp::Unbind => "unbind",
        }
    }
}

/// LDAP result codes are below 128 (RFC 4511 plus AD's); anything else is counted as "other".
const CODES: usize = 128;
/// The result slot of operations that end without a result message (abandon, unbind, an abandoned search).
const NO_RESULT: usize = CODES;

/// The name the LDAP RFCs give a result code, for the `result` label.
fn ldap_code_name(code: usize) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        12 => "unavailableCriticalExtension",
        16 => "noSuchAttribute",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        NO_RESULT => "none",
        _ => "unknown",
    }
}

const HTTP_AREAS: usize = 4;

/// What an HTTP request was for, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpArea {
    /// CardDAV, discovery and OPTIONS.
    CardDav,
    /// `/phonebook/` XML directories for desk phones.
    Phonebook,
    /// `/lookup/` caller-ID and search answers, and `/photo/` pictures.
    Lookup,
    /// Anything else (unknown paths, health probes of load balancers).
    Other,
}

impl HttpArea {
    const ALL: [HttpArea; HTTP_AREAS] = [
        HttpArea::CardDav,
        HttpArea::Phonebook,
        HttpArea::Lookup,
        HttpArea::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            HttpArea::CardDav => "carddav",
            HttpArea::Phonebook => "phonebook",
            HttpArea::Lookup => "lookup",
            HttpArea::Other => "other",
        }
    }

    /// Classify a request path.
    pub fn of_path(path: &str) -> HttpArea {
        if path.starts_with("/phonebook/") || path == "/phonebook" {
            HttpArea::Phonebook
        } else if path.starts_with("/lookup/") || path.starts_with("/photo/") {
            HttpArea::Lookup
        } else if path.starts_with("/dav") || path.starts_with("/.well-known/") || path == "/" {
            HttpArea::CardDav
        } else {
            HttpArea::Other
        }
    }
}

/// Protocols whose open connections are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Ldap,
    Ldaps,
    Http,
    Https,
    Admin,
}

impl Listener {
    const ALL: [Listener; 5] = [
        Listener::Ldap,
        Listener::Ldaps,
        Listener::Http,
        Listener::Https,
        Listener::Admin,
    ];

    fn name(self) -> &'static str {
        match self {
            Listener::Ldap => "ldap",
            Listener::Ldaps => "ldaps",
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Admin => "admin",
        }
    }
}

struct Registry {
    ldap_ops: [[AtomicU64; CODES + 1]; LdapOp::ALL.len()],
    ldap_latency: [Histogram; LdapOp::ALL.len()],
    /// Status codes 100..=599 by area.
    http: [[AtomicU64; 500]; HTTP_AREAS],
    http_latency: [Histogram; HTTP_AREAS],
    connections: [AtomicI64; Listener::ALL.len()],
    /// (endpoint, status) → count; status 0 = no HTTP answer (connection failed or cut).
    graph: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// (use, file) → Unix time the credential stops working.
    expiry: Mutex<BTreeMap<(String, String), u64>>,
    /// Panics caught in one request and answered as an error, by [`PanicArea`].
    panics: [AtomicU64; PanicArea::ALL.len()],
    /// (service, reason) → connections closed at accept.
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// Where a caught panic happened, for the `area` label of `entradir_panics_total` (see [`crate::panics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicArea {
    Ldap,
    /// CardDAV, phone books and the other HTTP requests of that listener.
    Http,
    /// A password check (LDAP bind or HTTP login), which is then refused.
    Auth,
}

impl PanicArea {
    const ALL: [PanicArea; 3] = [PanicArea::Ldap, PanicArea::Http, PanicArea::Auth];

    fn name(self) -> &'static str {
        match self {
            PanicArea::Ldap => "ldap",
            PanicArea::Http => "http",
            PanicArea::Auth => "auth",
        }
    }
}

/// Count a panic that was caught and answered as an error for its request only.
pub fn panic_caught(area: PanicArea) {
    let i = PanicArea::ALL.iter().position(|a| *a == area).unwrap_or(0);
    REGISTRY.panics[i].fetch_add(1, Ordering::Relaxed);
}

static REGISTRY: Registry = Registry {
    ldap_ops: [const { [const { AtomicU64::new(0) }; CODES + 1] }; LdapOp::ALL.len()],
    ldap_latency: [const { Histogram::new() }; LdapOp::ALL.len()],
    http: [const { [const { AtomicU64::new(0) }; 500] }; HTTP_AREAS],
    http_latency: [const { Histogram::new() }; HTTP_AREAS],
    connections: [const { AtomicI64::new(0) }; Listener::ALL.len()],
    graph: Mutex::new(BTreeMap::new()),
    expiry: Mutex::new(BTreeMap::new()),
    panics: [const { AtomicU64::new(0) }; PanicArea::ALL.len()],
    refused: Mutex::new(BTreeMap::new()),
};

/// Count a connection closed at accept because a cap was reached (see [`crate::net::listen`]).
pub fn connection_refused(service: &'static str, reason: &'static str) {
    let mut m = REGISTRY.refused.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry((service, reason)).or_insert(0) += 1;
}

fn op_index(op: LdapOp) -> usize {
    LdapOp::ALL.iter().position(|o| *o == op).unwrap_or(0)
}

/// Count an LDAP operation; `code` is the result code sent, `None` when no result message was sent.
pub fn ldap_op(op: LdapOp, code: Option<u8>, elapsed: Duration) {
    let i = op_index(op);
    let slot = code.map_or(NO_RESULT, |c| usize::from(c).min(CODES - 1));
    REGISTRY.ldap_ops[i][slot].fetch_add(1, Ordering::Relaxed);
    REGISTRY.ldap_latency[i].observe(elapsed);
}

/// Count an HTTP request by area and status.
pub fn http_request(area: HttpArea, status: u16, elapsed: Duration) {
    let a = HttpArea::ALL.iter().position(|x| *x == area).unwrap_or(2);
    if let Some(c) = usize::from(status)
        .checked_sub(100)
        .and_then(|i| REGISTRY.http[a].get(i))
    {
        c.fetch_add(1, Ordering::Relaxed);
    }
    REGISTRY.http_latency[a].observe(elapsed);
}

/// An open connection, counted until dropped.
pub struct ConnectionGuard(usize);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        REGISTRY.connections[self.0].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Count a connection as open for as long as the guard lives.
pub fn connection(l: Listener) -> ConnectionGuard {
    let i = Listener::ALL.iter().position(|x| *x == l).unwrap_or(0);
    REGISTRY.connections[i].fetch_add(1, Ordering::Relaxed);
    ConnectionGuard(i)
}

/// Count a request to Microsoft Graph; `status` 0 means no HTTP answer arrived.
pub fn graph_request(endpoint: &'static str, status: u16) {
    let mut m = REGISTRY.graph.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry((endpoint, status)).or_insert(0) += 1;
}

/// What a Graph URL is, for the `endpoint` label (a fixed set, so tenants' ids never become labels).
pub fn graph_endpoint(url: &str) -> &'static str {
    let path = url.split('?').next().unwrap_or(url);
    if path.contains("/oauth2/") {
        "token"
    } else if path.contains("/photo") {
        "photo"
    } else if path.contains("/users") {
        "users"
    } else if path.contains("/groups") {
        "groups"
    } else if path.contains("/devices") {
        "devices"
    } else if path.contains("/contacts") {
        "contacts"
    } else {
        "other"
    }
}

/// Replace all known expiry dates (on start and after every successful reload), as
/// `(use, file, unix seconds)`.
pub fn set_expiries(all: Vec<(String, String, u64)>) {
    let mut m = REGISTRY.expiry.lock().unwrap_or_else(|e| e.into_inner());
    m.clear();
    for (what, file, at) in all {
        m.insert((what, file), at);
    }
}

/// Known expiry dates: `(use, file, unix seconds)`.
pub fn expiries() -> Vec<(String, String, u64)> {
    let m = REGISTRY.expiry.lock().unwrap_or_else(|e| e.into_inner());
    m.iter().map(|((w, f), t)| (w.clone(), f.clone(), *t)).collect()
}

/// Escape a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Append this registry's metrics in Prometheus text format.
pub fn render(out: &mut String) {
    let r = &REGISTRY;
    header(
        out,
        "entradir_ldap_operations_total",
        "LDAP operations by type and result code.",
        "counter",
    );
    for (i, op) in LdapOp::ALL.iter().enumerate() {
        for (code, c) in r.ldap_ops[i].iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "entradir_ldap_operations_total{{op=\"{}\",result=\"{}\"}} {n}",
                    op.name(),
                    ldap_code_name(code)
                );
            }
        }
    }
    header(
        out,
        "entradir_ldap_operation_duration_seconds",
        "Time from reading an LDAP request to having its last response ready.",
        "histogram",
    );
    for (i, op) in LdapOp::ALL.iter().enumerate() {
        if r.ldap_latency[i].count() > 0 {
            r.ldap_latency[i].render(
                out,
                "entradir_ldap_operation_duration_seconds",
                &format!("op=\"{}\"", op.name()),
            );
        }
    }
    header(
        out,
        "entradir_http_requests_total",
        "CardDAV and phone book requests by area and HTTP status.",
        "counter",
    );
    for (a, area) in HttpArea::ALL.iter().enumerate() {
        for (i, c) in r.http[a].iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "entradir_http_requests_total{{area=\"{}\",status=\"{}\"}} {n}",
                    area.name(),
                    i + 100
                );
            }
        }
    }
    header(
        out,
        "entradir_http_request_duration_seconds",
        "Time to answer a CardDAV or phone book request (until the response body is ready).",
        "histogram",
    );
    for (a, area) in HttpArea::ALL.iter().enumerate() {
        if r.http_latency[a].count() > 0 {
            r.http_latency[a].render(
                out,
                "entradir_http_request_duration_seconds",
                &format!("area=\"{}\"", area.name()),
            );
        }
    }
    header(
        out,
        "entradir_open_connections",
        "Client connections open now, by listener.",
        "gauge",
    );
    for (i, l) in Listener::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "entradir_open_connections{{listener=\"{}\"}} {}",
            l.name(),
            r.connections[i].load(Ordering::Relaxed).max(0)
        );
    }
    header(
        out,
        "entradir_connections_refused_total",
        "Connections closed at accept because a cap was reached, by service and the setting that capped them.",
        "counter",
    );
    for ((service, reason), n) in r.refused.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "entradir_connections_refused_total{{service=\"{service}\",reason=\"{reason}\"}} {n}"
        );
    }
    header(
        out,
        "entradir_graph_http_requests_total",
        "Requests to Microsoft Graph and the token endpoint by endpoint and HTTP status (0: no answer).",
        "counter",
    );
    for ((endpoint, status), n) in r.graph.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "entradir_graph_http_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
        );
    }
    header(
        out,
        "entradir_panics_total",
        "Panics caught while answering one request (answered as an error; a bug to report), by area.",
        "counter",
    );
    for (i, a) in PanicArea::ALL.iter().enumerate() {
        let n = r.panics[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "entradir_panics_total{{area=\"{}\"}} {n}", a.name());
    }
    header(
        out,
        "entradir_credential_expiry_timestamp_seconds",
        "When a TLS certificate or Graph credential stops working (Unix time), by use and file.",
        "gauge",
    );
    for (what, file, at) in expiries() {
        let _ = writeln!(
            out,
            "entradir_credential_expiry_timestamp_seconds{{use=\"{}\",file=\"{}\"}} {at}",
            label(&what),
            label(&file)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "op=\"search\"");
        assert!(out.contains("x_bucket{op=\"search\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"search\",le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"search\",le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{op=\"search\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{op=\"search\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{op=\"search\"} 10.00075\n"), "{out}");
    }

    #[test]
    fn graph_urls_map_to_a_fixed_set_of_endpoints() {
        let g = "https://graph.microsoft.com/v1.0";
        assert_eq!(graph_endpoint(&format!("{g}/users/delta?$select=id")), "users");
        assert_eq!(graph_endpoint(&format!("{g}/users/abc/photos/96x96/$value")), "photo");
        assert_eq!(graph_endpoint(&format!("{g}/groups/delta?$deltatoken=x")), "groups");
        assert_eq!(
            graph_endpoint("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
            "token"
        );
        assert_eq!(graph_endpoint(&format!("{g}/organization")), "other");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
