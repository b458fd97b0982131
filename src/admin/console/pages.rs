//! The console's simpler pages (sign-in, refusals, the sync timeline, the LDAP clients) and the layout every
//! page shares: each page is a view model of plain strings and numbers, rendered by its template.

use super::{page, HTML};
use crate::admin::AdminState;
use askama::Template;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// What the layout (`base.html`) shows around every page.
pub(super) struct Nav {
    pub title: &'static str,
    pub base_dn: String,
    pub signed_in: bool,
    pub version: &'static str,
    pub dir_version: u64,
    pub links: [(&'static str, &'static str); 4],
}

impl Nav {
    pub(super) fn new(st: &AdminState, title: &'static str, signed_in: bool) -> Nav {
        let snap = st.dir.load();
        Nav {
            title,
            base_dn: snap.naming.base_dn.to_string(),
            signed_in,
            version: env!("CARGO_PKG_VERSION"),
            dir_version: snap.version,
            links: [
                ("/console/", "Sync"),
                ("/console/quality", "Data quality"),
                ("/console/lookup", "Lookup tester"),
                ("/console/clients", "Clients"),
            ],
        }
    }
}

/// Render a template; a template error (a bug, not bad input) is logged and answered 500.
pub(super) fn render(status: StatusCode, t: &impl Template) -> Response<Full<Bytes>> {
    match t.render() {
        Ok(html) => page(status, HTML, html),
        Err(e) => {
            tracing::error!(error = %e, "admin console: a page could not be rendered (a bug: please report it)");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "the page could not be rendered\n",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "console/refused.html")]
struct Refused {
    nav: Nav,
    message: String,
}

pub(super) fn refused(status: StatusCode, nav: Nav, message: String) -> Response<Full<Bytes>> {
    render(status, &Refused { nav, message })
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct Login {
    nav: Nav,
    message: Option<String>,
}

pub(super) fn login(status: StatusCode, nav: Nav, message: Option<String>) -> Response<Full<Bytes>> {
    render(status, &Login { nav, message })
}

/// A round as the timeline draws it.
struct Bar {
    x: usize,
    y: u32,
    h: u32,
    outcome: &'static str,
    title: String,
}

/// A round as the table lists it.
struct Row {
    at: String,
    outcome: &'static str,
    duration: String,
    changed: usize,
    removed: usize,
    requests: u64,
    throttled: u64,
    error: String,
}

struct Expiry {
    what: String,
    file: String,
    at: String,
    days: i64,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "console/sync.html")]
struct Sync {
    nav: Nav,
    health: String,
    health_class: &'static str,
    age: String,
    users: usize,
    groups: usize,
    computers: usize,
    contacts: usize,
    rounds: u64,
    failures: u64,
    throttled: u64,
    requests: u64,
    last_error: Option<String>,
    held: Option<String>,
    bars: Vec<Bar>,
    svg_width: usize,
    table: Vec<Row>,
    expiries: Vec<Expiry>,
}

/// A time as the tables show it: UTC, to the second, without ISO 8601's `T` and `Z` (the headers say UTC).
pub(super) fn when(unix: u64) -> String {
    crate::time::iso8601(unix).replace('T', " ").replace('Z', "")
}

/// Rounds listed in the table (the timeline draws all of the kept history).
const TABLE_ROWS: usize = 20;

/// `3 min ago` and the like.
fn ago(seconds: u64) -> String {
    match seconds {
        0..=89 => format!("{seconds} s ago"),
        90..=5399 => format!("{} min ago", (seconds + 30) / 60),
        5400..=172_799 => format!("{} h ago", (seconds + 1800) / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The page at `/console/`.
pub(super) fn sync(st: &AdminState, nav: Nav) -> Response<Full<Bytes>> {
    let snap = st.dir.load();
    let status = st.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = crate::time::unix_now();
    let stale_after = st.settings.load().stale_after;
    let (health, health_class, age) = match snap.synced_at {
        Some(t) => {
            let at = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let secs = now.saturating_sub(at);
            let fresh = secs <= stale_after.as_secs();
            (
                if fresh {
                    "Fresh".to_string()
                } else {
                    "Stale".to_string()
                },
                if fresh { "good" } else { "bad" },
                format!(
                    "Last good sync {} ({}); stale after {} s.",
                    ago(secs),
                    crate::time::iso8601(at),
                    stale_after.as_secs()
                ),
            )
        }
        None if snap.counts().tenant_objects() > 0 => (
            "From the state file".into(),
            "bad",
            "Served from the state file; no sync round has succeeded since the server started.".into(),
        ),
        None => ("No data yet".into(), "bad", "The first sync has not finished.".into()),
    };
    // Heights on a log scale: a 20 ms round and a 20 s full sync both stay visible.
    let height = |ms: u64| -> u32 { (8.0 + 12.0 * ((ms.max(1)) as f64).log10()).clamp(4.0, 60.0) as u32 };
    let bars: Vec<Bar> = status
        .history
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let h = height(r.duration_ms);
            Bar {
                x: i * 8 + 1,
                y: 62 - h,
                h,
                outcome: r.outcome,
                title: format!(
                    "{}: {}, {}, {} changed, {} removed{}",
                    crate::time::iso8601(r.at),
                    r.outcome,
                    duration_text(r.duration_ms),
                    r.entries_changed,
                    r.entries_removed,
                    r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                ),
            }
        })
        .collect();
    let table: Vec<Row> = status
        .history
        .iter()
        .rev()
        .take(TABLE_ROWS)
        .map(|r| Row {
            at: when(r.at),
            outcome: r.outcome,
            duration: duration_text(r.duration_ms),
            changed: r.entries_changed,
            removed: r.entries_removed,
            requests: r.graph_requests,
            throttled: r.throttled,
            error: r.error.clone().unwrap_or_default(),
        })
        .collect();
    let mut expiries: Vec<Expiry> = crate::metrics::expiries()
        .into_iter()
        .map(|(what, file, at)| {
            let days = (at as i64 - now as i64).div_euclid(86_400);
            Expiry {
                what,
                file,
                at: when(at),
                days,
                class: if days < 0 {
                    "expired"
                } else if days < 30 {
                    "soon"
                } else {
                    ""
                },
            }
        })
        .collect();
    expiries.sort_by_key(|e| e.days);
    let held = status.deletes_held.as_ref().map(|h| {
        format!(
            "A sync round would remove {} of {} objects, more than the delete limits allow (max_deletes {}, \
             max_delete_percent {} %); the directory is served unchanged until POST /sync?allow_deletes={} \
             confirms it.",
            h.removals, h.objects, h.max_deletes, h.max_delete_percent, h.removals
        )
    });
    let c = snap.counts();
    let page = Sync {
        nav,
        health,
        health_class,
        age,
        users: c.users,
        groups: c.groups,
        computers: c.computers,
        contacts: c.contacts,
        rounds: status.rounds,
        failures: status.failures,
        throttled: status.throttled,
        requests: status.graph_requests,
        last_error: status.last_error.clone(),
        held,
        svg_width: (bars.len() * 8).max(8),
        bars,
        table,
        expiries,
    };
    render(StatusCode::OK, &page)
}

struct ClientView {
    address: String,
    account: String,
    first_seen: String,
    last_seen: String,
    binds: u64,
    searches: u64,
    errors: u64,
    shapes: Vec<crate::ldap::clients::Shape>,
    recent: Vec<RecentView>,
}

struct RecentView {
    at: String,
    what: String,
    result: &'static str,
}

struct FailedView {
    at: String,
    address: String,
    name: String,
    reason: &'static str,
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct Clients {
    nav: Nav,
    max_clients: usize,
    clients: Vec<ClientView>,
    failed: Vec<FailedView>,
}

/// The page at `/console/clients`.
pub(super) fn clients(nav: Nav) -> Response<Full<Bytes>> {
    let (clients, failed) = crate::ldap::clients::snapshot();
    let t = when;
    let page = Clients {
        nav,
        max_clients: crate::ldap::clients::MAX_CLIENTS,
        clients: clients
            .into_iter()
            .map(|c| ClientView {
                address: c.address.to_string(),
                account: c
                    .account
                    .as_deref()
                    .map_or("anonymous".into(), |a| format!("account {a}")),
                first_seen: t(c.first_seen),
                last_seen: t(c.last_seen),
                binds: c.binds,
                searches: c.searches,
                errors: c.errors,
                shapes: c.shapes,
                recent: c
                    .recent
                    .into_iter()
                    .map(|r| RecentView {
                        at: t(r.at),
                        what: r.what(),
                        result: r.result,
                    })
                    .collect(),
            })
            .collect(),
        failed: failed
            .into_iter()
            .map(|f| FailedView {
                at: t(f.at),
                address: f.address.to_string(),
                name: f.name,
                reason: f.reason,
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(ago(5), "5 s ago");
        assert_eq!(ago(600), "10 min ago");
        assert_eq!(ago(7200), "2 h ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(duration_text(250), "250 ms");
        assert_eq!(duration_text(12_345), "12.3 s");
        assert_eq!(when(0), "1970-01-01 00:00:00");
    }
}
