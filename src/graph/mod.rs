//! Microsoft Graph: authentication, HTTP with retries and throttling, delta sync and photos.
//!
//! This module is the only part of entradir that talks to Microsoft's cloud. It owns:
//! - [`auth`]: OAuth2 client credentials (client secret or certificate assertion), token caching and renewal;
//! - [`http`]: one HTTP client with proxy support, retries, `Retry-After` and backoff, and the counters that end up
//!   in [`RoundStats`](crate::directory::change::RoundStats);
//! - [`delta`]: `/users|groups|devices|contacts/delta` paging and the conversion of delta items into
//!   [`Change`]s;
//! - [`photos`]: user photos, which delta queries do not track;
//! - [`Syncer`]: one sync *round* at a time, all kinds plus photos, returned as a whole
//!   [`Round`] or as an error, never as a partial round, so a failed round leaves
//!   the published directory untouched.
//!
//! It knows nothing about LDAP, CardDAV or the AD projection: it reports what Graph said, in Graph's terms.
//!
//! The app registration needs these *application* permissions with admin consent: `User.Read.All` (users, their
//! managers and photos), `GroupMember.Read.All` (groups and members), `Device.Read.All` (with `devices`) and
//! `OrgContact.Read.All` (with `org_contacts`).

pub mod auth;
pub mod delta;
pub mod http;
pub mod photos;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::directory::change::{Change, DeltaLinks, GraphKind, Round};

pub use auth::CredentialProblem;
pub use http::RetryPolicy;

/// Where and how to reach Microsoft Graph, and what to read from it. Compared on reload to tell whether the
/// Graph client must be rebuilt.
#[derive(Clone, PartialEq, Eq)]
pub struct GraphConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
    /// Login endpoint, e.g. `https://login.microsoftonline.com` (global) or `https://login.microsoftonline.us`.
    pub authority: String,
    /// Graph endpoint, e.g. `https://graph.microsoft.com` (global) or `https://graph.microsoft.us`.
    pub graph_url: String,
    /// Optional http/https proxy for both the login and the Graph endpoint. Without it the usual
    /// `HTTPS_PROXY`/`NO_PROXY` environment variables apply.
    pub proxy: Option<String>,
    /// Fetch user photos.
    pub photos: bool,
    /// Photo size such as `96x96` (`/photos/{size}/$value`); `None` fetches the default `/photo/$value`.
    pub photo_size: Option<String>,
    /// Also read organisational contacts (`/contacts/delta`, needs `OrgContact.Read.All`).
    pub org_contacts: bool,
    /// Also read devices (`/devices/delta`, needs `Device.Read.All`).
    pub devices: bool,
    /// Asks Graph for pages of this many objects (`Prefer: odata.maxpagesize`); Graph may ignore it.
    pub page_size_hint: Option<u32>,
    /// Extra user properties to `$select` on top of [`delta::USER_SELECT`] (e.g. extension attributes).
    pub extra_user_select: Vec<String>,
    pub retry: RetryPolicy,
}

impl GraphConfig {
    /// A configuration for the global cloud reading everything: photos, devices and org contacts on, Graph's
    /// default photo size, the default retry policy. `entradir run` sets each switch from the config file.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>, credential: Credential) -> GraphConfig {
        GraphConfig {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            credential,
            authority: DEFAULT_AUTHORITY.to_string(),
            graph_url: DEFAULT_GRAPH_URL.to_string(),
            proxy: None,
            photos: true,
            photo_size: None,
            org_contacts: true,
            devices: true,
            page_size_hint: None,
            extra_user_select: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// The kinds this configuration reads, in the order they are reported.
    pub fn kinds(&self) -> Vec<GraphKind> {
        GraphKind::ALL
            .into_iter()
            .filter(|k| match k {
                GraphKind::User | GraphKind::Group => true,
                GraphKind::Device => self.devices,
                GraphKind::Contact => self.org_contacts,
            })
            .collect()
    }
}

impl fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphConfig")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("authority", &self.authority)
            .field("graph_url", &self.graph_url)
            .field("proxy", &self.proxy.as_ref().map(|p| redact_url_userinfo(p)))
            .field("photos", &self.photos)
            .field("photo_size", &self.photo_size)
            .field("org_contacts", &self.org_contacts)
            .field("devices", &self.devices)
            .field("page_size_hint", &self.page_size_hint)
            .field("extra_user_select", &self.extra_user_select)
            .field("retry", &self.retry)
            .finish()
    }
}

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// How the application proves its identity to the token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A client secret from the app registration ("Certificates & secrets"), the secret's *value*.
    Secret(String),
    /// A certificate registered with the app and its private key (RSA, PKCS#8 or PKCS#1 PEM). entradir signs a
    /// client assertion with it; the key never leaves the process.
    Certificate { cert_pem: String, key_pem: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret(<redacted>)"),
            Credential::Certificate { .. } => f.write_str("Credential::Certificate { <redacted> }"),
        }
    }
}

/// Why a sync round (or setting up the syncer) failed. Every variant says which URL or setting is involved and,
/// where we know it, what the operator should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("invalid Graph configuration: {0}")]
    Config(String),
    /// The token endpoint rejected our credentials; `problem` says what to fix.
    #[error("{problem} (login endpoint said: {detail})")]
    Credential { problem: CredentialProblem, detail: String },
    /// The token endpoint failed for another reason (unreachable, throttled, garbage).
    #[error("could not get an access token from {url}: {detail}")]
    Token { url: String, detail: String },
    /// Graph refused the request for good (a 4xx other than 401/404/410/429 that retrying will not fix).
    #[error("Graph answered HTTP {status} for {url}: {code}: {message}")]
    Graph {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "Graph answered HTTP 403 for {url} ({code}: {message}): grant the app registration the application \
         permissions User.Read.All, GroupMember.Read.All, Device.Read.All (and OrgContact.Read.All for contacts) \
         and give admin consent"
    )]
    Forbidden { url: String, code: String, message: String },
    /// Graph kept answering 401 even with a freshly issued token.
    #[error("Graph rejected a freshly issued access token for {url}: {message}")]
    Unauthorized { url: String, message: String },
    /// Retries (throttling, 5xx, network errors) ran out.
    #[error("giving up on {url} after {attempts} attempts; last problem: {last}")]
    Exhausted { url: String, attempts: u32, last: String },
    /// Graph answered 200 with something we cannot use (wrong shape, missing fields).
    #[error("unusable answer from {url}: {detail}")]
    BadResponse { url: String, detail: String },
    /// The delta state behind `url` expired (410 Gone, `syncStateNotFound`, `resyncRequired`). The syncer handles
    /// this itself by reading the kind from scratch; it only escapes if that fails again.
    #[error("Graph says the delta state behind {url} has expired ({detail})")]
    DeltaExpired { url: String, detail: String },
}

/// Which user photos a round should fetch, decided by the directory.
#[derive(Clone)]
pub struct PhotoPlan<'a> {
    /// Users whose photo state the directory already has (present or absent). Users upserted in a round that are
    /// not in this set get their photo fetched in the same round. Borrowed: at 100k users a copy per round cost
    /// more than the rest of a quiet round.
    pub known: &'a dyn KnownPhotos,
    /// Users to re-check this round regardless (the directory's slow re-check schedule).
    pub recheck: Vec<String>,
}

impl Default for PhotoPlan<'static> {
    fn default() -> Self {
        PhotoPlan {
            known: &NoPhotosKnown,
            recheck: Vec::new(),
        }
    }
}

impl fmt::Debug for PhotoPlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhotoPlan")
            .field("recheck", &self.recheck.len())
            .finish_non_exhaustive()
    }
}

/// The set of users with a known photo state, as the directory keeps it.
pub trait KnownPhotos: Sync {
    fn knows(&self, user_id: &str) -> bool;
}

impl<V: Sync> KnownPhotos for std::collections::BTreeMap<String, V> {
    fn knows(&self, user_id: &str) -> bool {
        self.contains_key(user_id)
    }
}

impl KnownPhotos for HashSet<String> {
    fn knows(&self, user_id: &str) -> bool {
        self.contains(user_id)
    }
}

/// No photo known yet (a first round).
struct NoPhotosKnown;

impl KnownPhotos for NoPhotosKnown {
    fn knows(&self, _: &str) -> bool {
        false
    }
}

/// Runs sync rounds against one tenant. Holds the HTTP client and the cached access token between rounds; delta
/// links live with the caller (they are persisted with the directory).
#[derive(Debug)]
pub struct Syncer {
    cfg: GraphConfig,
    http: http::GraphHttp,
    /// `notAfter` of the client certificate (warned about by [`crate::expiry`]).
    certificate_expires_at: Option<u64>,
}

impl Syncer {
    /// Validates the configuration (URLs, proxy, certificate and key) and builds the HTTP client. Does not talk to
    /// the network; see [`Syncer::check_credentials`].
    pub fn new(mut cfg: GraphConfig) -> Result<Syncer, SyncError> {
        cfg.graph_url = normalize_base(&cfg.graph_url, "graph_url")?;
        cfg.authority = normalize_base(&cfg.authority, "authority")?;
        if cfg.tenant_id.trim().is_empty() || cfg.tenant_id.contains(['/', '?', '#']) {
            return Err(SyncError::Config(format!(
                "tenant_id {:?} is not a tenant id or domain",
                cfg.tenant_id
            )));
        }
        if cfg.client_id.trim().is_empty() {
            return Err(SyncError::Config("client_id is empty".into()));
        }
        if let Some(size) = &cfg.photo_size {
            if !photos::valid_size(size) {
                return Err(SyncError::Config(format!(
                    "photo_size {size:?} is not a size like \"96x96\" (Graph offers 48x48 up to 648x648)"
                )));
            }
        }
        for field in &cfg.extra_user_select {
            if field.is_empty()
                || !field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/'))
            {
                return Err(SyncError::Config(format!(
                    "extra user property {field:?} is not a Graph property name"
                )));
            }
        }
        let http = http::GraphHttp::new(&cfg)?;
        let certificate_expires_at = match &cfg.credential {
            Credential::Certificate { cert_pem, .. } => crate::tls::certificate_not_after(cert_pem),
            Credential::Secret(_) => None,
        };
        Ok(Syncer {
            cfg,
            http,
            certificate_expires_at,
        })
    }

    /// When the client certificate expires (Unix seconds); `None` for a client secret, whose expiry only the app
    /// registration knows.
    pub fn credential_expires_at(&self) -> Option<u64> {
        self.certificate_expires_at
    }

    pub fn config(&self) -> &GraphConfig {
        &self.cfg
    }

    /// Fetches an access token now, so `check-config` and start-up can report bad credentials before the first
    /// round.
    pub async fn check_credentials(&self) -> Result<(), SyncError> {
        self.http.auth().invalidate_all().await;
        self.http.auth().token().await.map(|_| ())
    }

    /// One round: every configured kind from its delta link (or from scratch), then photos for
    /// `photos.recheck` plus every user upserted this round that is not in `photos.known`.
    ///
    /// Kinds read from scratch (no link, stale link, expired delta state) are listed in `Round::full`. A kind that
    /// has a link in `links` but is no longer configured (e.g. `devices = false`) is also listed in `full`, with no
    /// changes and no new link, so the directory drops its objects. Either every kind completes and the round is
    /// returned, or the round fails as a whole.
    pub async fn round(&mut self, links: &DeltaLinks, photos: &PhotoPlan<'_>) -> Result<Round, SyncError> {
        let counters = http::Counters::default();
        let now = unix_now();
        let kinds = self.cfg.kinds();
        let outcomes = futures_util::future::try_join_all(
            kinds
                .iter()
                .map(|&kind| delta::sync_kind(&self.http, &self.cfg, kind, links.links.get(&kind), now, &counters)),
        )
        .await?;

        let mut round = Round::default();
        for (kind, outcome) in kinds.iter().zip(outcomes) {
            if outcome.full {
                round.full.push(*kind);
            }
            round.changes.extend(outcome.changes);
            round.delta_links.links.insert(*kind, outcome.link);
        }
        for kind in links.links.keys() {
            if !kinds.contains(kind) {
                round.full.push(*kind);
            }
        }
        round.full.sort();

        if self.cfg.photos {
            let wanted = photo_targets(&round.changes, photos);
            if !wanted.is_empty() {
                round.photos = photos::fetch_photos(
                    &self.http,
                    &self.cfg.graph_url,
                    self.cfg.photo_size.as_deref(),
                    wanted,
                    &counters,
                )
                .await;
            }
        }
        round.stats = counters.snapshot();
        tracing::info!(
            full = ?round.full,
            changes = round.changes.len(),
            photos = round.photos.len(),
            requests = round.stats.requests,
            photo_requests = round.stats.photo_requests,
            throttled = round.stats.throttled,
            retries = round.stats.retries,
            "Graph sync round complete"
        );
        Ok(round)
    }
}

/// The users whose photo this round fetches: the re-check list plus users upserted this round that the directory
/// does not know yet, minus users removed this round. Sorted and without duplicates so rounds are reproducible.
fn photo_targets(changes: &[Change], plan: &PhotoPlan<'_>) -> Vec<String> {
    // The last word on a user within the round wins: removed then re-added means present.
    let mut present: HashMap<&str, bool> = HashMap::new();
    for change in changes {
        match change {
            Change::Upsert {
                kind: GraphKind::User,
                id,
                ..
            } => {
                present.insert(id, true);
            }
            Change::Removed {
                kind: GraphKind::User,
                id,
                ..
            } => {
                present.insert(id, false);
            }
            _ => {}
        }
    }
    let mut wanted: BTreeSet<&str> = plan.recheck.iter().map(String::as_str).collect();
    wanted.extend(
        present
            .iter()
            .filter(|(id, p)| **p && !plan.known.knows(id))
            .map(|(id, _)| *id),
    );
    wanted
        .into_iter()
        .filter(|id| present.get(id) != Some(&false))
        .map(str::to_string)
        .collect()
}

/// Checks a base URL from the configuration and strips the trailing slash so paths can be appended.
fn normalize_base(raw: &str, key: &str) -> Result<String, SyncError> {
    let parsed =
        url::Url::parse(raw.trim()).map_err(|e| SyncError::Config(format!("{key} {raw:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(SyncError::Config(format!(
            "{key} {raw:?} must be an http(s) URL with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(SyncError::Config(format!(
            "{key} {raw:?} must not have a query or fragment"
        )));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// A URL for logs: user and password (a proxy may carry them) replaced.
fn redact_url_userinfo(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("redacted");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

pub(crate) use crate::time::unix_now;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    /// The orchestrator runs rounds on spawned tasks, so the round future must be `Send` (checked at compile
    /// time).
    #[allow(dead_code)]
    fn round_future_is_send(syncer: &mut Syncer, links: &DeltaLinks, plan: &PhotoPlan<'_>) {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&syncer.round(links, plan));
    }

    fn upsert(id: &str) -> Change {
        Change::Upsert {
            kind: GraphKind::User,
            id: id.into(),
            props: Map::new().into(),
        }
    }

    #[test]
    fn photo_targets_are_new_users_plus_rechecks_minus_removed() {
        let changes = vec![
            upsert("new"),
            upsert("known"),
            Change::Upsert {
                kind: GraphKind::Group,
                id: "group".into(),
                props: Map::new().into(),
            },
            Change::Removed {
                kind: GraphKind::User,
                id: "gone".into(),
                permanent: true,
            },
            Change::Removed {
                kind: GraphKind::User,
                id: "back".into(),
                permanent: false,
            },
            upsert("back"),
        ];
        let known: HashSet<String> = ["known".to_string(), "gone".to_string()].into_iter().collect();
        let plan = PhotoPlan {
            known: &known,
            recheck: vec!["old".into(), "gone".into(), "new".into()],
        };
        assert_eq!(photo_targets(&changes, &plan), vec!["back", "new", "old"]);
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let mut cfg = GraphConfig::new("t", "c", Credential::Secret("s3cr3t-value".into()));
        cfg.proxy = Some("http://user:hunter2@proxy:3128".into());
        let shown = format!("{cfg:?} {:?}", Syncer::new(cfg.clone()).unwrap());
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let cert = Credential::Certificate {
            cert_pem: "CERTDATA".into(),
            key_pem: "KEYDATA".into(),
        };
        assert!(!format!("{cert:?}").contains("KEYDATA"));
    }

    #[test]
    fn bad_configuration_is_rejected_with_the_key_named() {
        let base = GraphConfig::new("tenant", "client", Credential::Secret("x".into()));
        let mut cfg = base.clone();
        cfg.graph_url = "not a url".into();
        assert!(Syncer::new(cfg).unwrap_err().to_string().contains("graph_url"));
        let mut cfg = base.clone();
        cfg.photo_size = Some("big".into());
        assert!(Syncer::new(cfg).unwrap_err().to_string().contains("photo_size"));
        let mut cfg = base.clone();
        cfg.tenant_id = "a/b".into();
        assert!(Syncer::new(cfg).unwrap_err().to_string().contains("tenant_id"));
        let mut cfg = base;
        cfg.authority = "ftp://login".into();
        assert!(Syncer::new(cfg).unwrap_err().to_string().contains("authority"));
    }

    #[test]
    fn kinds_follow_configuration() {
        let mut cfg = GraphConfig::new("t", "c", Credential::Secret("x".into()));
        cfg.org_contacts = true;
        assert_eq!(cfg.kinds(), GraphKind::ALL.to_vec());
        cfg.devices = false;
        cfg.org_contacts = false;
        assert_eq!(cfg.kinds(), vec![GraphKind::User, GraphKind::Group]);
    }
}
