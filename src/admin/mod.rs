//! The admin endpoint (`[admin] listen`, default 127.0.0.1:9180): Prometheus metrics, health and readiness, a
//! JSON status page, a token-protected trigger for an immediate sync, and the read-only admin console
//! ([`console`], under `/console/`).
//!
//! It reads the published snapshot and the sync engine's status; it never touches the directory itself.
//!
//! It is meant for localhost or a management network, but still treats every caller as hostile: the token is
//! compared in constant time, request bodies are refused above [`MAX_BODY`] before being read, headers must
//! arrive within [`HEADER_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are served at once.

mod console;

use crate::directory::{Published, Snapshot};
use crate::net::listen::{self, Conn, Limits, Refusal, Socket};
use crate::net::Rebindable;
use crate::sync::{Command, SyncStatus};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Largest request body read (`POST /sync` needs none).
pub const MAX_BODY: usize = 4096;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 32;

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    pub dir: Published,
    pub status: Arc<Mutex<SyncStatus>>,
    pub commands: mpsc::Sender<Command>,
    /// The settings a reload may change.
    pub settings: Arc<ArcSwap<AdminSettings>>,
    pub started: SystemTime,
    /// Set on SIGTERM: `/readyz` says 503 from then on while the server drains.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The CardDAV front end's `/lookup` code, once it runs (the console's lookup tester asks it).
    pub(crate) carddav: Arc<arc_swap::ArcSwapOption<crate::carddav::lookup::Inspector>>,
    pub(crate) console: Arc<console::Console>,
}

impl AdminState {
    /// The state of a new admin endpoint; `carddav` is set once the front ends have started.
    pub fn new(
        dir: Published,
        status: Arc<Mutex<SyncStatus>>,
        commands: mpsc::Sender<Command>,
        settings: Arc<ArcSwap<AdminSettings>>,
        draining: Arc<std::sync::atomic::AtomicBool>,
    ) -> AdminState {
        AdminState {
            dir,
            status,
            commands,
            settings,
            started: SystemTime::now(),
            draining,
            carddav: Arc::default(),
            console: Arc::default(),
        }
    }
}

/// Admin settings from the config, swapped on reload.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token for `POST /sync`; `None` (no token file, or an empty one) refuses the trigger.
    pub token: Option<String>,
    /// `/readyz` reports stale (503) when the last good sync is older than this.
    pub stale_after: Duration,
    /// How long SIGTERM keeps serving with `/readyz` at 503 before the listeners close.
    pub drain_period: Duration,
    /// Who may open the console.
    pub console_networks: Vec<crate::accounts::Cidr>,
    /// Facts the console's data-quality page needs from the rest of the config: a UPN mapping file is set,
    /// photos are synced.
    pub upn_csv: bool,
    pub photos: bool,
}

impl AdminSettings {
    /// Read the settings (and the token file) from a config section; errors name the key and file. An empty
    /// token file would make `Bearer ` a valid credential: it disables `POST /sync` like a missing one.
    pub fn from_config(a: &crate::config::AdminSection) -> anyhow::Result<AdminSettings> {
        let token = match &a.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("admin.token_file: cannot read {}", p.display()))?
                    .trim()
                    .to_string(),
            )
            .filter(|t| !t.is_empty()),
            None => None,
        };
        let console_networks = a
            .console_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse()
                    .map_err(|e| anyhow::anyhow!("admin.console_networks[{i}]: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(AdminSettings {
            token,
            stale_after: a.stale_after,
            drain_period: a.drain_period,
            console_networks,
            upn_csv: false,
            photos: false,
        })
    }

    /// [`AdminSettings::from_config`] of the whole config.
    pub fn for_config(cfg: &crate::config::Config) -> anyhow::Result<AdminSettings> {
        Ok(AdminSettings {
            upn_csv: cfg.directory.upn_matching_csv.is_some(),
            photos: cfg.entra.photos,
            ..AdminSettings::from_config(&cfg.admin)?
        })
    }

    /// The console networks as the config writes them.
    fn console_networks_text(&self) -> String {
        let v: Vec<String> = self.console_networks.iter().map(|c| c.to_string()).collect();
        v.join(", ")
    }
}

impl AdminSettings {
    /// Say once (at start and after a reload) when `POST /sync` is disabled, so a 403 is no surprise.
    pub fn log_trigger_state(&self, a: &crate::config::AdminSection) {
        if self.token.is_none() {
            match &a.token_file {
                Some(p) => tracing::warn!(
                    file = %p.display(),
                    "admin.token_file is empty: POST /sync is disabled until it holds a token"
                ),
                None => tracing::info!("admin.token_file is not set: POST /sync is disabled"),
            }
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Prometheus text exposition of what an operator needs to see.
pub fn metrics(st: &AdminState) -> String {
    let snap = st.dir.load();
    let s = st.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = unix(SystemTime::now());
    let mut out = String::new();
    let mut m = |name: &str, help: &str, kind: &str, lines: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    m(
        "entradir_sync_rounds_total",
        "Sync rounds attempted.",
        "counter",
        &[(String::new(), s.rounds as f64)],
    );
    m(
        "entradir_sync_failures_total",
        "Sync rounds that failed (the served directory was kept).",
        "counter",
        &[(String::new(), s.failures as f64)],
    );
    if let Some(t) = s.last_success {
        m(
            "entradir_sync_last_success_timestamp_seconds",
            "Unix time of the last successful sync round.",
            "gauge",
            &[(String::new(), t as f64)],
        );
        m(
            "entradir_sync_last_success_age_seconds",
            "Seconds since the last successful sync round.",
            "gauge",
            &[(String::new(), now.saturating_sub(t) as f64)],
        );
    }
    m(
        "entradir_sync_last_duration_seconds",
        "Duration of the last sync round.",
        "gauge",
        &[(String::new(), s.last_duration_ms as f64 / 1000.0)],
    );
    m(
        "entradir_graph_requests_total",
        "Requests sent to Microsoft Graph (delta pages and photos).",
        "counter",
        &[(String::new(), s.graph_requests as f64)],
    );
    m(
        "entradir_graph_throttled_total",
        "Graph answers of 429/503 that made us wait.",
        "counter",
        &[(String::new(), s.throttled as f64)],
    );
    m(
        "entradir_graph_retries_total",
        "Graph requests retried.",
        "counter",
        &[(String::new(), s.retries as f64)],
    );
    m(
        "entradir_sync_deletes_held",
        "Objects the last sync round would have removed, held for confirmation (POST /sync?allow_deletes=N); 0 when none.",
        "gauge",
        &[(String::new(), s.deletes_held.as_ref().map_or(0, |h| h.removals) as f64)],
    );
    m(
        "entradir_state_write_failures_total",
        "Failed writes of the state file.",
        "counter",
        &[(String::new(), s.state_errors as f64)],
    );
    let c = snap.counts();
    m(
        "entradir_directory_objects",
        "Published entries by kind.",
        "gauge",
        &[
            ("{kind=\"user\"}".into(), c.users as f64),
            ("{kind=\"group\"}".into(), c.groups as f64),
            ("{kind=\"computer\"}".into(), c.computers as f64),
            ("{kind=\"contact\"}".into(), c.contacts as f64),
        ],
    );
    m(
        "entradir_directory_version",
        "Version of the published snapshot (highestCommittedUSN).",
        "gauge",
        &[(String::new(), snap.version as f64)],
    );
    if let Some(r) = &s.last_report {
        m(
            "entradir_unparsable_phone_numbers",
            "Phone numbers that could not be normalised in the last round.",
            "gauge",
            &[(String::new(), r.unparsable_phones as f64)],
        );
        m(
            "entradir_upn_csv_unmatched_rows",
            "UPN-matching CSV rows that match no user.",
            "gauge",
            &[(String::new(), r.unmatched_csv_rows.len() as f64)],
        );
    }
    let (ok, failed) = crate::frontends::reload_counts();
    m(
        "entradir_reloads_total",
        "Configuration reloads (SIGHUP) by result.",
        "counter",
        &[
            ("{result=\"ok\"}".into(), ok as f64),
            ("{result=\"failed\"}".into(), failed as f64),
        ],
    );
    m(
        "entradir_uptime_seconds",
        "Seconds since start.",
        "gauge",
        &[(String::new(), now.saturating_sub(unix(st.started)) as f64)],
    );
    crate::metrics::render(&mut out);
    out
}

/// `/readyz`: whether the directory is worth serving. A fresh start without a state file holds only the base DN
/// and its containers until the first sync: not ready (and LDAP and CardDAV do not listen yet).
fn readiness(snap: &Snapshot, stale_after: Duration, now: SystemTime) -> (StatusCode, String) {
    let c = snap.counts();
    let tenant_objects = c.tenant_objects();
    match snap.synced_at {
        None if tenant_objects == 0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no directory yet (first sync pending)\n".into(),
        ),
        None => (
            StatusCode::OK,
            "ready (served from state; no sync since start yet)\n".into(),
        ),
        Some(t) => {
            let age = now.duration_since(t).unwrap_or_default();
            if age > stale_after {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("stale: last good sync {}s ago\n", age.as_secs()),
                )
            } else {
                (
                    StatusCode::OK,
                    format!("ready: version {}, last sync {}s ago\n", snap.version, age.as_secs()),
                )
            }
        }
    }
}

async fn handle(
    st: AdminState,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    if path == "/console" || path.starts_with("/console/") {
        return Ok(console::handle(&st, peer, req).await);
    }
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(&st)),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            let (code, text) = if st.draining.load(std::sync::atomic::Ordering::Relaxed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining: shutting down; still serving until the drain period ends\n".to_string(),
                )
            } else {
                readiness(&st.dir.load(), st.settings.load().stale_after, SystemTime::now())
            };
            reply(code, "text/plain", text)
        }
        (&Method::GET, "/status") => {
            let snap = st.dir.load();
            let s = st.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let body = serde_json::json!({
                "version": snap.version,
                "base_dn": &*snap.naming.base_dn,
                "counts": snap.counts(),
                "synced_at": snap.synced_at.map(unix),
                "sync": s,
                "reloads": {"ok": crate::frontends::reload_counts().0, "failed": crate::frontends::reload_counts().1},
                "entradir": env!("CARGO_PKG_VERSION"),
            });
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        (&Method::POST, "/sync") => post_sync(&st, req).await,
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /console/ /metrics /healthz /readyz /status or POST /sync\n",
        ),
    })
}

/// Whether the `Authorization` header carries `token`, compared in constant time (the header's length is not
/// secret; its content is).
fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    bool::from(given.ct_eq(token.as_bytes()))
}

/// `allow_deletes=N` in the query, if present: `Err` for a value that is not a number.
fn allow_deletes(query: Option<&str>) -> Result<Option<usize>, String> {
    for pair in query.unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("allow_deletes=") {
            return v
                .parse()
                .map(Some)
                .map_err(|_| format!("allow_deletes must be a number of objects, not {v:?}\n"));
        }
    }
    Ok(None)
}

/// `POST /sync[?allow_deletes=N]`: run a round now, optionally allowing it to remove up to N objects.
async fn post_sync(st: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |code, msg: String| reply(code, "text/plain", msg);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "POST /sync takes no body\n".into());
    }
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let allow = allow_deletes(req.uri().query());
    // Read (and drop) a body without Content-Length too, but never more than MAX_BODY.
    if http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .is_err()
    {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "POST /sync takes no body\n".into());
    }
    let Some(token) = st.settings.load().token.clone() else {
        return text(
            StatusCode::FORBIDDEN,
            "POST /sync is disabled: admin.token_file is not set or the file is empty\n".into(),
        );
    };
    if !bearer_matches(auth.as_deref(), &token) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n".into());
    }
    let allow = match allow {
        Ok(a) => a,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    if let Some(n) = allow {
        tracing::info!(
            allow_deletes = n,
            "the next sync round may remove up to {n} objects (POST /sync)"
        );
        if st.commands.send(Command::AllowDeletes(n)).await.is_err() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sync engine is not running\n".into(),
            );
        }
    }
    let (tx, rx) = oneshot::channel();
    if st.commands.send(Command::SyncNow(Some(tx))).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sync engine is not running\n".into(),
        );
    }
    match rx.await {
        Ok(Ok(r)) => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&r).unwrap_or_default(),
        ),
        Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("sync failed: {e}\n")),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the sync engine stopped\n".into()),
    }
}

/// Serve until `shutdown`, from whichever socket `listener` holds (a reload may move it).
pub async fn serve(listener: Arc<Rebindable>, st: AdminState, shutdown: CancellationToken) {
    let sockets = vec![Socket {
        listener,
        tls: false,
        metric: crate::metrics::Listener::Admin,
    }];
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        drain: Duration::from_secs(2),
    };
    listen::run(Arc::new(Admin(st)), sockets, limits, shutdown).await;
}

/// The admin endpoint as the shared accept loop sees it: loopback by default, so no per-source cap.
struct Admin(AdminState);

impl listen::Service for Admin {
    const NAME: &'static str = "admin";
    const METRIC: &'static str = "admin";

    fn per_source(&self) -> usize {
        0
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }

    fn refusal(&self, why: Refusal) -> Bytes {
        listen::http_busy(why)
    }

    async fn serve(self: Arc<Self>, conn: Conn) {
        let st = self.0.clone();
        let peer = conn.peer.ip();
        let svc = hyper::service::service_fn(move |req| handle(st.clone(), peer, req));
        listen::serve_http(conn, HEADER_TIMEOUT, svc, "admin").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some(&b"Bearer s3cret"[..]), "s3cret"));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"bearer s3cret",
            b"s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(!bearer_matches(Some(wrong), "s3cret"), "{wrong:?}");
        }
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn an_empty_token_file_disables_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  \n").unwrap();
        let section = crate::config::AdminSection {
            token_file: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(AdminSettings::from_config(&section).unwrap().token, None);
        std::fs::write(&file, "t0ken\n").unwrap();
        assert_eq!(
            AdminSettings::from_config(&section).unwrap().token.as_deref(),
            Some("t0ken")
        );
    }

    #[test]
    fn console_networks_default_to_loopback_and_a_bad_one_is_named() {
        let s = AdminSettings::from_config(&crate::config::AdminSection::default()).unwrap();
        let loopback = |ip: &str| s.console_networks.iter().any(|n| n.contains(ip.parse().unwrap()));
        assert!(loopback("127.0.0.1") && loopback("::1"));
        assert!(!loopback("192.0.2.1"));
        assert_eq!(s.console_networks_text(), "127.0.0.0/8, ::1/128");
        let section = crate::config::AdminSection {
            console_networks: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            ..Default::default()
        };
        let e = AdminSettings::from_config(&section).unwrap_err().to_string();
        assert!(
            e.contains("admin.console_networks[1]") && e.contains("10.0.0.0/33"),
            "{e}"
        );
    }

    #[test]
    fn allow_deletes_is_read_from_the_query() {
        assert_eq!(allow_deletes(None), Ok(None));
        assert_eq!(allow_deletes(Some("allow_deletes=300")), Ok(Some(300)));
        assert_eq!(allow_deletes(Some("x=1&allow_deletes=7")), Ok(Some(7)));
        assert!(allow_deletes(Some("allow_deletes=-1")).is_err());
    }
    use crate::directory::phone::PhoneNormalizer;
    use crate::directory::{Directory, Naming, Settings};

    #[test]
    fn ready_only_with_tenant_data_and_not_stale() {
        let naming = Naming::new("DC=contoso,DC=example").unwrap();
        let phones = PhoneNormalizer::new("DE").unwrap();
        // What a first start without a state file publishes: the base DN and its containers.
        let fresh = Directory::new(Settings::new(naming, phones), Default::default(), Default::default());
        let skeleton = fresh.snapshot();
        assert!(
            !skeleton.is_empty(),
            "the skeleton has entries, which is what readyz used to look at"
        );
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        assert_eq!(readiness(skeleton, hour, now).0, StatusCode::SERVICE_UNAVAILABLE);

        let mut from_state = crate::carddav::sample::snapshot(7, vec![crate::carddav::sample::person(1, 7)]);
        let (code, text) = readiness(&from_state, hour, now);
        assert_eq!(code, StatusCode::OK);
        assert!(text.contains("served from state"), "{text}");

        from_state.set_synced_at(now - Duration::from_secs(60));
        assert_eq!(readiness(&from_state, hour, now).0, StatusCode::OK);
        let (code, text) = readiness(&from_state, Duration::from_secs(30), now);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.starts_with("stale: last good sync 60s ago"), "{text}");
    }
}
