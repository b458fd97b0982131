//! The control API: mutate the simulated tenant, inject faults, read the request log and export the truth.
//!
//! [`Control`] is the in-process form (Rust tests, `entradir demo`); `http.rs` exposes the same operations under
//! `/_sim/...`. All methods are synchronous: they take a short lock on the shared state and never block on I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::delta::{Paging, TokenPolicy};
use super::faults::{Endpoint, Fault, FaultState, RequestRecord};
use super::tenant::{SimError, Tenant};
use crate::model::{GraphKind, MemberRef};

/// Credentials and identity the token endpoint checks.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// DER of the client certificate, when assertions must name it in `x5t#S256`.
    pub certificate_der: Option<Vec<u8>>,
}

/// Access tokens handed out, and whether the secret counts as expired.
#[derive(Debug, Default)]
pub struct AuthState {
    pub issued: HashMap<String, Instant>,
    pub secret_expired: bool,
}

/// State shared by the HTTP server and every [`Control`].
#[derive(Debug)]
pub struct Shared {
    /// Where the server listens; links use the request's Host header when there is one.
    pub addr: std::net::SocketAddr,
    pub tenant: Mutex<Tenant>,
    pub faults: Mutex<FaultState>,
    pub log: Mutex<Vec<RequestRecord>>,
    /// Per endpoint: (requests in flight now, peak since the log was last cleared).
    pub concurrency: Mutex<HashMap<Endpoint, (usize, usize)>>,
    pub auth: Mutex<AuthState>,
    pub tokens: Mutex<TokenPolicy>,
    pub paging: Mutex<Paging>,
    pub creds: Credentials,
    pub started: Instant,
}

impl Shared {
    /// State around a given tenant and credentials, not yet serving.
    pub fn new(addr: std::net::SocketAddr, tenant: Tenant, paging: Paging, creds: Credentials) -> Shared {
        Shared {
            addr,
            tenant: Mutex::new(tenant),
            faults: Mutex::default(),
            log: Mutex::default(),
            concurrency: Mutex::default(),
            auth: Mutex::default(),
            tokens: Mutex::default(),
            paging: Mutex::new(paging),
            creds,
            started: Instant::now(),
        }
    }
}

/// Locks a mutex; a panic elsewhere while holding it must not take the simulator down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A group with its complete current member list, as in the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupExport {
    pub props: Map<String, Value>,
    pub members: Vec<MemberRef>,
}

/// The tenant's live objects as Graph JSON: the truth a test computes the expected directory from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantExport {
    /// Users with all their properties (not only Graph's default set).
    pub users: Vec<Map<String, Value>>,
    pub groups: Vec<GroupExport>,
    pub devices: Vec<Map<String, Value>>,
    pub contacts: Vec<Map<String, Value>>,
    /// User id → manager id.
    pub managers: BTreeMap<String, String>,
    /// User id → (ETag, JPEG bytes). JSON form: `{"<id>": {"etag": "...", "jpeg": "<base64>"}}`.
    #[serde(with = "photo_map")]
    pub photos: PhotoMap,
}

/// User id → (ETag, JPEG bytes).
pub type PhotoMap = BTreeMap<String, (String, Vec<u8>)>;

mod photo_map {
    use std::collections::BTreeMap;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Photo {
        etag: String,
        jpeg: String,
    }

    pub fn serialize<S: Serializer>(m: &super::PhotoMap, s: S) -> Result<S::Ok, S::Error> {
        let out: BTreeMap<&String, Photo> = m
            .iter()
            .map(|(id, (etag, jpeg))| {
                (
                    id,
                    Photo {
                        etag: etag.clone(),
                        jpeg: STANDARD.encode(jpeg),
                    },
                )
            })
            .collect();
        out.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::PhotoMap, D::Error> {
        let m = BTreeMap::<String, Photo>::deserialize(d)?;
        m.into_iter()
            .map(|(id, p)| {
                let jpeg = STANDARD.decode(p.jpeg).map_err(serde::de::Error::custom)?;
                Ok((id, (p.etag, jpeg)))
            })
            .collect()
    }
}

/// Handle to mutate and observe a running simulator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Control {
        Control { shared }
    }

    fn tenant(&self) -> MutexGuard<'_, Tenant> {
        lock(&self.shared.tenant)
    }

    /// Adds an object of any kind; `props["id"]` is used when present, else a fresh GUID. Returns the id.
    pub fn add(&self, kind: GraphKind, props: Map<String, Value>) -> Result<String, SimError> {
        self.tenant().add(kind, props)
    }

    pub fn add_user(&self, props: Map<String, Value>) -> Result<String, SimError> {
        self.add(GraphKind::User, props)
    }

    pub fn add_group(&self, props: Map<String, Value>) -> Result<String, SimError> {
        self.add(GraphKind::Group, props)
    }

    pub fn add_device(&self, props: Map<String, Value>) -> Result<String, SimError> {
        self.add(GraphKind::Device, props)
    }

    pub fn add_contact(&self, props: Map<String, Value>) -> Result<String, SimError> {
        self.add(GraphKind::Contact, props)
    }

    /// Sets properties of a live object. Returns whether anything changed (no change: no delta entry).
    pub fn update(&self, kind: GraphKind, id: &str, props: Map<String, Value>) -> Result<bool, SimError> {
        self.tenant().update(kind, id, props)
    }

    pub fn update_user(&self, id: &str, props: Map<String, Value>) -> Result<bool, SimError> {
        self.update(GraphKind::User, id, props)
    }

    /// Soft delete (restorable, `@removed: changed`) or permanent delete (`@removed: deleted`).
    pub fn delete(&self, kind: GraphKind, id: &str, permanent: bool) -> Result<(), SimError> {
        self.tenant().delete(kind, id, permanent)
    }

    /// Restores a soft-deleted object (its old group memberships are not restored).
    pub fn restore(&self, kind: GraphKind, id: &str) -> Result<(), SimError> {
        self.tenant().restore(kind, id)
    }

    /// Adds a tenant object (user, group, device, contact) to a group; returns false if it was a member already.
    pub fn add_member(&self, group: &str, member: &str) -> Result<bool, SimError> {
        self.add_member_ref(
            group,
            MemberRef {
                id: member.to_string(),
                odata_type: String::new(),
            },
        )
    }

    /// Adds a member with an explicit type, e.g. a `servicePrincipal` that is not a synced object.
    pub fn add_member_ref(&self, group: &str, member: MemberRef) -> Result<bool, SimError> {
        self.tenant().add_member(group, member)
    }

    pub fn remove_member(&self, group: &str, member: &str) -> Result<bool, SimError> {
        self.tenant().remove_member(group, member)
    }

    pub fn set_manager(&self, user: &str, manager: Option<&str>) -> Result<bool, SimError> {
        self.tenant().set_manager(user, manager)
    }

    /// Sets (Some) or removes (None) a user's photo. Photos are not tracked by delta, as in Graph.
    pub fn set_photo(&self, user: &str, jpeg: Option<Vec<u8>>) -> Result<(), SimError> {
        self.tenant().set_photo(user, jpeg)
    }

    /// Live object ids of one kind, sorted.
    pub fn ids(&self, kind: GraphKind) -> Vec<String> {
        self.tenant().live_ids(kind)
    }

    /// All properties of a live object.
    pub fn get(&self, kind: GraphKind, id: &str) -> Option<Map<String, Value>> {
        self.tenant().live(kind, id).ok().map(|o| o.props.clone())
    }

    /// Arms a fault (see [`Fault`]).
    pub fn fault(&self, fault: Fault) {
        match &fault {
            Fault::ExpireDeltaTokens { style } => {
                let mut p = lock(&self.shared.tokens);
                p.epoch += 1;
                p.style = *style;
            }
            Fault::ExpireSecret { expired } => lock(&self.shared.auth).secret_expired = *expired,
            Fault::ExpireAccessTokens => {
                let now = Instant::now();
                for expiry in lock(&self.shared.auth).issued.values_mut() {
                    *expiry = now;
                }
            }
            _ => {}
        }
        lock(&self.shared.faults).arm(&fault);
    }

    pub fn clear_faults(&self) {
        self.fault(Fault::Clear);
    }

    /// Every request answered so far, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// How many logged requests went to this endpoint.
    pub fn request_count(&self, endpoint: Endpoint) -> usize {
        lock(&self.shared.log).iter().filter(|r| r.endpoint == endpoint).count()
    }

    /// Clears the request log and the concurrency peaks.
    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
        for e in lock(&self.shared.concurrency).values_mut() {
            e.1 = e.0;
        }
    }

    /// The most requests to this endpoint that were in flight at once (e.g. photos: Graph allows about 4).
    pub fn peak_concurrency(&self, endpoint: Endpoint) -> usize {
        lock(&self.shared.concurrency).get(&endpoint).map_or(0, |e| e.1)
    }

    pub fn paging(&self) -> Paging {
        *lock(&self.shared.paging)
    }

    /// Changes page size, member slices, replays, empty first pages, token lifetime for later requests.
    pub fn set_paging(&self, paging: Paging) {
        *lock(&self.shared.paging) = paging;
    }

    /// The current live tenant as Graph JSON.
    pub fn export(&self) -> TenantExport {
        let t = self.tenant();
        let live = |kind: GraphKind| -> Vec<Map<String, Value>> {
            t.objects(kind)
                .values()
                .filter(|o| o.is_live())
                .map(|o| o.props.clone())
                .collect()
        };
        let groups = t
            .objects(GraphKind::Group)
            .values()
            .filter(|o| o.is_live())
            .map(|g| GroupExport {
                props: g.props.clone(),
                members: g
                    .live_members()
                    .map(|(id, m)| MemberRef {
                        id: id.clone(),
                        odata_type: m.odata_type.clone(),
                    })
                    .collect(),
            })
            .collect();
        let mut managers = BTreeMap::new();
        let mut photos = BTreeMap::new();
        for (id, u) in t.objects(GraphKind::User).iter().filter(|(_, o)| o.is_live()) {
            if let Some(m) = &u.manager {
                managers.insert(id.clone(), m.clone());
            }
            if let Some(p) = &u.photo {
                photos.insert(id.clone(), (p.etag.clone(), p.jpeg.to_vec()));
            }
        }
        TenantExport {
            users: live(GraphKind::User),
            groups,
            devices: live(GraphKind::Device),
            contacts: live(GraphKind::Contact),
            managers,
            photos,
        }
    }
}
