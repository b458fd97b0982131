//! The admin endpoint (`[admin] listen`, default 127.0.0.1:9180): Prometheus metrics, health and readiness, a
//! JSON status page, and a token-protected trigger for an immediate sync.
//!
//! It reads the published snapshot and the sync engine's status; it never touches the directory itself.

use crate::directory::{Published, Snapshot};
use crate::net::Rebindable;
use crate::sync::{Command, SyncStatus};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    pub dir: Published,
    pub status: Arc<Mutex<SyncStatus>>,
    pub commands: mpsc::Sender<Command>,
    /// The settings a reload may change.
    pub settings: Arc<ArcSwap<AdminSettings>>,
    pub started: SystemTime,
}

/// Admin settings from the config, swapped on reload.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token for `POST /sync`; `None` refuses the trigger.
    pub token: Option<String>,
    /// `/readyz` reports stale (503) when the last good sync is older than this.
    pub stale_after: Duration,
}

impl AdminSettings {
    /// Read the settings (and the token file) from a config section; errors name the key and file.
    pub fn from_config(a: &crate::config::AdminSection) -> anyhow::Result<AdminSettings> {
        let token = match &a.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("admin.token_file: cannot read {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(AdminSettings {
            token,
            stale_after: a.stale_after,
        })
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
/// and its containers until the first sync: not ready, although the LDAP listener already answers for them.
fn readiness(snap: &Snapshot, stale_after: Duration, now: SystemTime) -> (StatusCode, String) {
    let c = snap.counts();
    let tenant_objects = c.users + c.groups + c.computers + c.contacts;
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

async fn handle(st: AdminState, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(&st)),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            let (code, text) = readiness(&st.dir.load(), st.settings.load().stale_after, SystemTime::now());
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
        (&Method::POST, "/sync") => {
            let auth = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = req.into_body().collect().await;
            match &st.settings.load().token {
                None => reply(
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    "POST /sync is disabled: set admin.token_file\n",
                ),
                Some(t) if auth.as_deref() != Some(&format!("Bearer {t}")) => reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "missing or wrong bearer token\n",
                ),
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    if st.commands.send(Command::SyncNow(Some(tx))).await.is_err() {
                        reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            "the sync engine is not running\n",
                        )
                    } else {
                        match rx.await {
                            Ok(Ok(r)) => reply(
                                StatusCode::OK,
                                "application/json",
                                serde_json::to_vec(&r).unwrap_or_default(),
                            ),
                            Ok(Err(e)) => reply(StatusCode::BAD_GATEWAY, "text/plain", format!("sync failed: {e}\n")),
                            Err(_) => reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "text/plain",
                                "the sync engine stopped\n",
                            ),
                        }
                    }
                }
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics /healthz /readyz /status or POST /sync\n",
        ),
    })
}

/// Serve until `shutdown`, from whichever socket `listener` holds (a reload may move it).
pub async fn serve(listener: Arc<Rebindable>, st: AdminState, shutdown: CancellationToken) {
    if let Some(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoint listening");
    }
    let mut acceptor = listener.acceptor();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = acceptor.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::phone::PhoneNormalizer;
    use crate::directory::{Directory, Naming, Settings};

    #[test]
    fn ready_only_with_tenant_data_and_not_stale() {
        let naming = Naming::new("DC=contoso,DC=example").unwrap();
        let phones = PhoneNormalizer::new("DE").unwrap();
        // What a first start without a state file publishes: the base DN and its containers.
        let fresh = Directory::new(
            Settings::new(naming, phones),
            Default::default(),
            Default::default(),
            Default::default(),
        );
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
