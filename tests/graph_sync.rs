//! The Graph sync engine against the Graph simulator over real HTTP: full and incremental rounds, expired delta
//! state, throttling, transient failures, cut connections, credential problems and token renewal.
//!
//! Every test replays the rounds into a small model of "what Graph told us" and compares it with the simulator's
//! export of the live tenant, so a test fails if a change is lost, duplicated or misread.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use entradir::directory::change::{Change, DeltaLink, DeltaLinks, GraphKind, PhotoState, Round};
use entradir::graph::delta::{CONTACT_SELECT, DEVICE_SELECT, GROUP_SELECT, USER_SELECT};
use entradir::graph::{Credential, CredentialProblem, GraphConfig, PhotoPlan, RetryPolicy, SyncError, Syncer};
use graph_sim::GraphKind as SimKind;
use graph_sim::{self as sim, Endpoint, ExpiryStyle, Fault, FaultScope, SimHandle, SimOptions};
use serde_json::{json, Map, Value};

fn options() -> SimOptions {
    SimOptions {
        users: 450,
        groups: 30,
        devices: 60,
        contacts: 12,
        seed: 7,
        page_size: 100,
        ..SimOptions::default()
    }
}

async fn start(opts: SimOptions) -> SimHandle {
    sim::start(opts).await.expect("the simulator starts")
}

/// Retries fast enough for tests, but with the production logic.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

fn config(sim: &SimHandle) -> GraphConfig {
    let mut cfg = entradir::demo::graph_config(sim);
    cfg.photo_size = Some("96x96".into());
    cfg.org_contacts = true;
    cfg.retry = fast_retry();
    cfg
}

fn syncer(sim: &SimHandle) -> Syncer {
    Syncer::new(config(sim)).expect("valid config")
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What the rounds told us, applied the way the contract in `directory::change` describes.
#[derive(Debug, Default)]
struct Model {
    objects: BTreeMap<GraphKind, BTreeMap<String, Map<String, Value>>>,
    members: BTreeMap<String, BTreeSet<String>>,
    managers: BTreeMap<String, String>,
    photos: BTreeMap<String, PhotoState>,
    links: DeltaLinks,
}

/// A Graph value as a round carries it: members sent as `null` inside an object (such as
/// `onPremisesExtensionAttributes`) are left out, and an object left empty is cleared (`null`).
fn stored(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), stored(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if kept.is_empty() {
                Value::Null
            } else {
                Value::Object(kept)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(stored).collect()),
        other => other.clone(),
    }
}

impl Model {
    fn apply(&mut self, round: &Round) {
        for kind in &round.full {
            self.objects.remove(kind);
            match kind {
                GraphKind::Group => self.members.clear(),
                GraphKind::User => self.managers.clear(),
                _ => {}
            }
        }
        for change in &round.changes {
            match change {
                Change::Upsert { kind, id, props } => {
                    let entry = self.objects.entry(*kind).or_default().entry(id.clone()).or_default();
                    for (k, v) in props.to_json() {
                        entry.insert(k, v);
                    }
                }
                Change::Removed { kind, id, .. } => {
                    if let Some(objects) = self.objects.get_mut(kind) {
                        objects.remove(id);
                    }
                    if *kind == GraphKind::Group {
                        self.members.remove(id);
                    }
                    if *kind == GraphKind::User {
                        self.managers.remove(id);
                        self.photos.remove(id);
                    }
                }
                Change::Members { group, added, removed } => {
                    let members = self.members.entry(group.clone()).or_default();
                    members.extend(added.iter().map(|m| m.id.clone()));
                    for id in removed {
                        members.remove(id);
                    }
                }
                Change::Manager { user, manager } => match manager {
                    Some(m) => {
                        self.managers.insert(user.clone(), m.clone());
                    }
                    None => {
                        self.managers.remove(user);
                    }
                },
            }
        }
        if round.full.contains(&GraphKind::User) {
            // Users missing from a full read are gone, and so are their photos (a user deleted for good while the
            // delta state expired is simply absent from the new read).
            let users = self.ids(GraphKind::User);
            self.photos.retain(|id, _| users.contains(id));
        }
        for photo in &round.photos {
            self.photos.insert(photo.user.clone(), photo.state.clone());
        }
        self.links = round.delta_links.clone();
    }

    fn ids(&self, kind: GraphKind) -> BTreeSet<String> {
        self.objects
            .get(&kind)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn plan(&self) -> PhotoPlan<'_> {
        PhotoPlan {
            known: &self.photos,
            recheck: Vec::new(),
        }
    }

    /// Asserts that the model equals the simulator's live tenant on every property we select.
    fn assert_matches(&self, sim: &SimHandle) {
        let export = sim.control().export();
        let check = |kind: GraphKind, truth: Vec<&Map<String, Value>>, select: &[&str]| {
            let ids: BTreeSet<String> = truth
                .iter()
                .map(|o| o["id"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(self.ids(kind), ids, "{kind:?} ids");
            let ours = &self.objects[&kind];
            for object in truth {
                let id = object["id"].as_str().unwrap_or_default();
                for key in select.iter().filter(|k| !matches!(**k, "members" | "manager")) {
                    let want = stored(object.get(*key).unwrap_or(&Value::Null));
                    let got = ours[id].get(*key).unwrap_or(&Value::Null);
                    assert_eq!(got, &want, "{kind:?} {id} property {key}");
                }
            }
        };
        check(GraphKind::User, export.users.iter().collect(), USER_SELECT);
        check(
            GraphKind::Group,
            export.groups.iter().map(|g| &g.props).collect(),
            GROUP_SELECT,
        );
        check(GraphKind::Device, export.devices.iter().collect(), DEVICE_SELECT);
        check(GraphKind::Contact, export.contacts.iter().collect(), CONTACT_SELECT);
        for group in &export.groups {
            let id = group.props["id"].as_str().unwrap_or_default();
            let want: BTreeSet<String> = group.members.iter().map(|m| m.id.clone()).collect();
            let got = self.members.get(id).cloned().unwrap_or_default();
            assert_eq!(got, want, "members of group {id}");
        }
        assert_eq!(self.managers, export.managers, "managers");
        for (user, state) in &self.photos {
            match (state, export.photos.get(user)) {
                (PhotoState::Present { etag, jpeg }, Some((want_etag, want_jpeg))) => {
                    assert_eq!(etag, want_etag, "photo etag of {user}");
                    assert_eq!(jpeg.as_ref(), want_jpeg.as_slice(), "photo of {user}");
                }
                (PhotoState::Absent, None) => {}
                (state, truth) => panic!("photo of {user}: we have {state:?}, the tenant has {truth:?}"),
            }
        }
    }
}

async fn full_sync(sim: &SimHandle) -> (Syncer, Model, Round) {
    let mut syncer = syncer(sim);
    let mut model = Model::default();
    let round = syncer
        .round(&DeltaLinks::default(), &model.plan())
        .await
        .expect("initial round");
    model.apply(&round);
    (syncer, model, round)
}

#[tokio::test]
async fn initial_sync_reads_the_whole_tenant() {
    let sim = start(options()).await;
    let export = sim.control().export();
    assert!(export.users.len() >= 400 && !export.groups.is_empty() && !export.devices.is_empty());

    let (_, model, round) = full_sync(&sim).await;
    assert_eq!(round.full, GraphKind::ALL.to_vec());
    assert_eq!(
        round.delta_links.links.keys().copied().collect::<Vec<_>>(),
        GraphKind::ALL.to_vec()
    );
    model.assert_matches(&sim);
    // Every user's photo was checked once, present or absent.
    assert_eq!(round.photos.len(), export.users.len());
    assert_eq!(
        round
            .photos
            .iter()
            .filter(|p| matches!(p.state, PhotoState::Present { .. }))
            .count(),
        export.photos.len()
    );
    assert!(round.stats.pages >= 5, "{:?}", round.stats);
    assert_eq!(round.stats.photo_requests, export.users.len() as u64);
    assert_eq!(round.stats.retries, 0);
}

#[tokio::test]
async fn incremental_round_reads_only_the_change() {
    let sim = start(options()).await;
    let (mut syncer, mut model, _) = full_sync(&sim).await;
    let control = sim.control();
    let user = control.ids(SimKind::User)[3].clone();
    control
        .update_user(&user, obj(json!({"jobTitle": "Head of Telephony"})))
        .unwrap();

    let round = syncer
        .round(&model.links, &model.plan())
        .await
        .expect("incremental round");
    assert!(round.full.is_empty(), "{:?}", round.full);
    let touched: Vec<&str> = round
        .changes
        .iter()
        .map(|c| match c {
            Change::Upsert { id, .. } | Change::Removed { id, .. } => id.as_str(),
            Change::Members { group, .. } => group.as_str(),
            Change::Manager { user, .. } => user.as_str(),
        })
        .collect();
    assert!(
        !touched.is_empty() && touched.iter().all(|id| *id == user),
        "{touched:?}"
    );
    // One delta request per kind, no photos (the user is known).
    assert_eq!(round.stats.requests, 4, "{:?}", round.stats);
    assert_eq!(round.stats.photo_requests, 0);
    model.apply(&round);
    model.assert_matches(&sim);

    // A second quiet round changes nothing.
    let quiet = syncer.round(&model.links, &model.plan()).await.expect("quiet round");
    assert!(quiet.changes.is_empty() && quiet.full.is_empty(), "{:?}", quiet.changes);
}

#[tokio::test]
async fn deletions_memberships_managers_and_new_objects_arrive_incrementally() {
    let sim = start(options()).await;
    let (mut syncer, mut model, _) = full_sync(&sim).await;
    let control = sim.control();
    let users = control.ids(SimKind::User);
    let groups = control.ids(SimKind::Group);
    control.delete(SimKind::User, &users[0], true).unwrap();
    control.delete(SimKind::User, &users[1], false).unwrap();
    control.set_manager(&users[2], Some(&users[5])).unwrap();
    control.set_manager(&users[6], None).unwrap();
    control.add_member(&groups[0], &users[7]).unwrap();
    control
        .add_member_ref(
            &groups[0],
            graph_sim::MemberRef {
                id: "sp-77".into(),
                odata_type: "servicePrincipal".into(),
            },
        )
        .unwrap();
    let device = control.ids(SimKind::Device)[0].clone();
    control.add_member(&groups[1], &device).unwrap();
    let new_user = control
        .add_user(obj(
            json!({"displayName": "Jürgen Öztürk", "userPrincipalName": "jo@contoso.example"}),
        ))
        .unwrap();
    control
        .set_photo(&new_user, Some(vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 0xFF, 0xD9]))
        .unwrap();
    control
        .delete(SimKind::Device, &control.ids(SimKind::Device)[1], true)
        .unwrap();

    let round = syncer
        .round(&model.links, &model.plan())
        .await
        .expect("incremental round");
    assert!(round.full.is_empty());
    assert!(round.changes.contains(&Change::Removed {
        kind: GraphKind::User,
        id: users[0].clone(),
        permanent: true
    }));
    assert!(round.changes.contains(&Change::Removed {
        kind: GraphKind::User,
        id: users[1].clone(),
        permanent: false
    }));
    assert!(round.changes.iter().any(|c| matches!(c, Change::Members { added, .. }
        if added.iter().any(|m| m.id == "sp-77" && m.odata_type == "servicePrincipal"))));
    assert!(round.changes.iter().any(|c| matches!(c, Change::Members { added, .. }
        if added.iter().any(|m| m.id == device && m.odata_type == "device"))));
    // The new user's photo is fetched in the same round; known users are not re-fetched.
    assert_eq!(round.photos.len(), 1, "{:?}", round.photos);
    assert_eq!(round.photos[0].user, new_user);
    model.apply(&round);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn expired_delta_state_restarts_from_scratch_in_the_same_round() {
    for style in [ExpiryStyle::Gone, ExpiryStyle::BadRequest] {
        let sim = start(options()).await;
        let (mut syncer, mut model, _) = full_sync(&sim).await;
        let control = sim.control();
        let user = control.ids(SimKind::User)[10].clone();
        control.delete(SimKind::User, &user, true).unwrap();
        control.fault(Fault::ExpireDeltaTokens { style });

        let round = syncer
            .round(&model.links, &model.plan())
            .await
            .expect("round after expiry");
        assert_eq!(round.full, GraphKind::ALL.to_vec(), "{style:?}");
        model.apply(&round);
        model.assert_matches(&sim);
        assert!(!model.ids(GraphKind::User).contains(&user));

        // The fresh links work incrementally again.
        let next = syncer.round(&model.links, &model.plan()).await.expect("next round");
        assert!(
            next.full.is_empty() && next.changes.is_empty(),
            "{style:?}: {:?}",
            next.full
        );
    }
}

#[tokio::test]
async fn links_older_than_seven_days_are_not_tried() {
    let sim = start(options()).await;
    let (mut syncer, mut model, _) = full_sync(&sim).await;
    let mut links = model.links.clone();
    let week_ago = links.links[&GraphKind::Group].obtained_at - 8 * 86_400;
    links.links.insert(
        GraphKind::Group,
        DeltaLink {
            obtained_at: week_ago,
            ..links.links[&GraphKind::Group].clone()
        },
    );
    sim.control().clear_request_log();

    let round = syncer.round(&links, &model.plan()).await.expect("round");
    assert_eq!(round.full, vec![GraphKind::Group]);
    let group_requests: Vec<String> = sim
        .control()
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Delta(SimKind::Group))
        .map(|r| r.path)
        .collect();
    assert!(
        group_requests.iter().all(|p| !p.contains("deltatoken")),
        "{group_requests:?}"
    );
    model.apply(&round);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn kinds_no_longer_configured_are_dropped() {
    let sim = start(options()).await;
    let (_, mut model, _) = full_sync(&sim).await;
    let mut cfg = config(&sim);
    cfg.devices = false;
    let round = Syncer::new(cfg)
        .unwrap()
        .round(&model.links, &model.plan())
        .await
        .expect("round");
    assert_eq!(round.full, vec![GraphKind::Device]);
    assert!(!round.delta_links.links.contains_key(&GraphKind::Device));
    model.apply(&round);
    assert!(model.ids(GraphKind::Device).is_empty());
}

/// For every 429 in the log, the next request for the same URL came no earlier than `Retry-After` allowed.
#[tokio::test]
async fn throttling_honours_retry_after() {
    let sim = start(options()).await;
    let (mut syncer, mut model, _) = full_sync(&sim).await;
    let control = sim.control();
    control
        .update_user(&control.ids(SimKind::User)[0], obj(json!({"department": "Sales"})))
        .unwrap();
    control.clear_request_log();
    control.fault(Fault::Throttle {
        requests: 3,
        retry_after_secs: 1,
        scope: FaultScope::Delta,
    });

    let round = syncer
        .round(&model.links, &model.plan())
        .await
        .expect("round despite throttling");
    assert_eq!(round.stats.throttled, 3, "{:?}", round.stats);
    let log = control.request_log();
    let throttled: Vec<_> = log.iter().enumerate().filter(|(_, r)| r.status == 429).collect();
    assert_eq!(throttled.len(), 3);
    for (i, record) in throttled {
        let retry = log[i + 1..]
            .iter()
            .find(|r| r.path == record.path)
            .expect("the throttled request was retried");
        let waited = retry.at.duration_since(record.at);
        assert!(
            waited >= Duration::from_millis(990),
            "{} retried after {waited:?}",
            record.path
        );
    }
    model.apply(&round);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn unavailable_and_gateway_timeouts_are_retried() {
    let sim = start(options()).await;
    let control = sim.control();
    control.fault(Fault::Unavailable {
        requests: 2,
        status: 503,
        scope: FaultScope::Delta,
    });
    control.fault(Fault::Unavailable {
        requests: 1,
        status: 504,
        scope: FaultScope::Photos,
    });
    let (_, model, round) = full_sync(&sim).await;
    assert_eq!(round.stats.retries, 3, "{:?}", round.stats);
    model.assert_matches(&sim);
    assert_eq!(
        round.photos.len(),
        control.ids(SimKind::User).len(),
        "the retried photo is not lost"
    );
}

#[tokio::test]
async fn connections_cut_mid_page_are_retried() {
    let sim = start(options()).await;
    let control = sim.control();
    control.fault(Fault::CutConnection { requests: 3 });
    let (_, model, round) = full_sync(&sim).await;
    let cut = control.request_log().iter().filter(|r| r.cut).count();
    assert_eq!(cut, 3);
    assert!(round.stats.retries >= 3, "{:?}", round.stats);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn a_round_that_cannot_finish_fails_as_a_whole() {
    let sim = start(options()).await;
    let (mut syncer, model, _) = full_sync(&sim).await;
    let control = sim.control();
    control
        .update_user(&control.ids(SimKind::User)[0], obj(json!({"department": "Sales"})))
        .unwrap();
    control.fault(Fault::Unavailable {
        requests: 100,
        status: 503,
        scope: FaultScope::Delta,
    });
    let err = syncer
        .round(&model.links, &model.plan())
        .await
        .expect_err("no round while Graph is down");
    assert!(matches!(err, SyncError::Exhausted { attempts: 5, .. }), "{err}");
    assert!(err.to_string().contains("/v1.0/"), "the error names the URL: {err}");

    control.clear_faults();
    let round = syncer
        .round(&model.links, &model.plan())
        .await
        .expect("round after recovery");
    assert!(round.full.is_empty() && !round.changes.is_empty());
}

#[tokio::test]
async fn photo_failures_skip_the_user_but_keep_the_round() {
    let sim = start(SimOptions {
        users: 8,
        groups: 2,
        devices: 2,
        contacts: 1,
        ..options()
    })
    .await;
    let control = sim.control();
    control.fault(Fault::Unavailable {
        requests: 1000,
        status: 503,
        scope: FaultScope::Photos,
    });
    let mut model = Model::default();
    let round = syncer(&sim)
        .round(&DeltaLinks::default(), &model.plan())
        .await
        .expect("round without photos");
    assert!(round.photos.is_empty(), "{:?}", round.photos);
    assert_eq!(
        round.stats.photo_requests,
        8 * 5,
        "every user was tried with the full retry budget"
    );
    model.apply(&round);
    model.assert_matches(&sim);

    // Next round, the directory still does not know these photos, so they are fetched again.
    control.clear_faults();
    let next = syncer(&sim)
        .round(&model.links, &model.plan())
        .await
        .expect("next round");
    assert!(next.changes.is_empty());
    assert_eq!(
        next.photos.len(),
        0,
        "photos of users not upserted are only fetched when the plan asks"
    );
    let plan = PhotoPlan {
        known: &HashSet::new(),
        recheck: control.ids(SimKind::User),
    };
    let retried = syncer(&sim)
        .round(&model.links, &plan)
        .await
        .expect("round with rechecks");
    assert_eq!(retried.photos.len(), 8);
}

#[tokio::test]
async fn photo_rechecks_see_new_and_removed_photos() {
    let sim = start(SimOptions {
        users: 30,
        groups: 2,
        devices: 2,
        contacts: 1,
        ..options()
    })
    .await;
    let (mut syncer, mut model, _) = full_sync(&sim).await;
    let control = sim.control();
    let users = control.ids(SimKind::User);
    let jpeg = vec![0xFF, 0xD8, 0xFF, 0xDB, 9, 9, 9, 0xFF, 0xD9];
    control.set_photo(&users[0], Some(jpeg.clone())).unwrap();
    control.set_photo(&users[1], None).unwrap();
    let plan = PhotoPlan {
        known: &model.photos,
        recheck: vec![users[0].clone(), users[1].clone()],
    };
    let round = syncer.round(&model.links, &plan).await.expect("round");
    assert_eq!(round.photos.len(), 2);
    assert!(matches!(&round.photos[0].state, PhotoState::Present { jpeg: got, .. } if got.as_ref() == jpeg.as_slice()));
    assert_eq!(round.photos[1].state, PhotoState::Absent);
    model.apply(&round);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn an_expired_secret_is_a_clear_error_and_no_round() {
    let sim = start(SimOptions {
        users: 5,
        groups: 1,
        devices: 1,
        contacts: 1,
        ..options()
    })
    .await;
    sim.control().fault(Fault::ExpireSecret { expired: true });
    let mut syncer = syncer(&sim);
    let err = syncer
        .round(&DeltaLinks::default(), &PhotoPlan::default())
        .await
        .expect_err("no round");
    assert!(
        matches!(
            err,
            SyncError::Credential {
                problem: CredentialProblem::SecretExpired,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("client secret has expired") && message.contains("create a new one"),
        "{message}"
    );
    assert!(
        !message.contains(sim.client_secret()),
        "the secret must not appear in errors"
    );
    assert_eq!(sim.control().request_count(Endpoint::Delta(SimKind::User)), 0);
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_such() {
    let sim = start(SimOptions {
        users: 5,
        groups: 1,
        devices: 1,
        contacts: 1,
        ..options()
    })
    .await;
    let mut cfg = config(&sim);
    cfg.credential = Credential::Secret("not-the-secret".into());
    let err = Syncer::new(cfg)
        .unwrap()
        .check_credentials()
        .await
        .expect_err("wrong secret");
    assert!(
        matches!(
            err,
            SyncError::Credential {
                problem: CredentialProblem::SecretInvalid,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(syncer(&sim).check_credentials().await.is_ok());
}

#[tokio::test]
async fn a_revoked_access_token_is_renewed_once() {
    let sim = start(SimOptions {
        users: 50,
        groups: 3,
        devices: 3,
        contacts: 2,
        ..options()
    })
    .await;
    let (mut syncer, model, _) = full_sync(&sim).await;
    let control = sim.control();
    assert_eq!(
        control.request_count(Endpoint::Token),
        1,
        "the token is cached across requests"
    );
    control.fault(Fault::ExpireAccessTokens);
    let round = syncer
        .round(&model.links, &model.plan())
        .await
        .expect("round after revocation");
    assert!(round.full.is_empty());
    let token_requests = control.request_count(Endpoint::Token);
    assert!(
        (2..=3).contains(&token_requests),
        "renewed, not once per request: {token_requests}"
    );
    assert!(control.request_log().iter().any(|r| r.status == 401));
}

#[tokio::test]
async fn certificate_credentials_work() {
    let key_pem = include_str!("../src/graph/testdata/test-rsa-pkcs8.pem");
    let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["entradir-test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("client.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();

    let sim = start(SimOptions {
        users: 10,
        groups: 2,
        devices: 2,
        contacts: 1,
        client_certificate: Some(cert_path),
        ..options()
    })
    .await;
    let mut cfg = config(&sim);
    cfg.credential = Credential::Certificate {
        cert_pem: cert.pem(),
        key_pem: key_pem.to_string(),
    };
    let mut syncer = Syncer::new(cfg).unwrap();
    assert!(syncer.credential_expires_at().is_some_and(|t| t > 1_700_000_000));
    let round = syncer
        .round(&DeltaLinks::default(), &PhotoPlan::default())
        .await
        .expect("certificate round");
    let mut model = Model::default();
    model.apply(&round);
    model.assert_matches(&sim);
}

#[tokio::test]
async fn page_size_hint_and_extra_properties_are_sent() {
    let sim = start(SimOptions {
        users: 10,
        groups: 1,
        devices: 1,
        contacts: 1,
        ..options()
    })
    .await;
    let mut cfg = config(&sim);
    cfg.extra_user_select = vec!["employeeType".into()];
    cfg.photos = false;
    let round = Syncer::new(cfg)
        .unwrap()
        .round(&DeltaLinks::default(), &PhotoPlan::default())
        .await
        .expect("round");
    assert!(round.photos.is_empty() && round.stats.photo_requests == 0);
    let first_user_request = sim
        .control()
        .request_log()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::Delta(SimKind::User))
        .expect("users were read");
    assert!(
        first_user_request.path.contains("employeeType"),
        "{}",
        first_user_request.path
    );
}

/// Random tenant mutations and faults between rounds; after every round, what the rounds said must equal the live
/// tenant. This is the sync engine's half of the model-based tests: it catches lost, duplicated or misordered
/// changes across member slices, replays, removals, restores and restarts from scratch.
#[tokio::test]
async fn random_mutations_and_faults_keep_the_model_equal_to_the_tenant() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    for seed in [11u64, 12, 13, 14] {
        let sim = start(SimOptions {
            users: 260,
            groups: 15,
            devices: 40,
            contacts: 8,
            seed,
            page_size: 50,
            member_slice: 20,
            ..SimOptions::default()
        })
        .await;
        let control = sim.control();
        let (mut syncer, mut model, _) = full_sync(&sim).await;
        model.assert_matches(&sim);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut soft_deleted: Vec<(SimKind, String)> = Vec::new();

        for round_no in 0..8 {
            let mut recheck = Vec::new();
            for _ in 0..rng.gen_range(0..15) {
                let users = control.ids(SimKind::User);
                let groups = control.ids(SimKind::Group);
                let devices = control.ids(SimKind::Device);
                let pick = |rng: &mut SmallRng, ids: &[String]| ids[rng.gen_range(0..ids.len())].clone();
                // Refusals (a group containing itself, a duplicate) are fine: the tenant just stays as it is.
                match rng.gen_range(0..12) {
                    0 => {
                        let props = match rng.gen_range(0..4) {
                            0 => json!({"jobTitle": format!("Title {}", rng.gen::<u16>())}),
                            1 => json!({"businessPhones": [format!("+49 89 {}", rng.gen_range(1000..9999))]}),
                            2 => json!({"accountEnabled": rng.gen::<bool>(), "officeLocation": null}),
                            _ => json!({"displayName": format!("Zoë Ñúñez {}", rng.gen::<u16>())}),
                        };
                        let _ = control.update_user(&pick(&mut rng, &users), obj(props));
                    }
                    1 => {
                        let id = control
                            .add_user(obj(json!({"displayName": format!("New {}", rng.gen::<u32>())})))
                            .unwrap();
                        if rng.gen_bool(0.5) {
                            let _ = control.set_photo(&id, Some(vec![0xFF, 0xD8, 0xFF, rng.gen(), 0xFF, 0xD9]));
                        }
                    }
                    2 => {
                        let id = pick(&mut rng, &users);
                        let permanent = rng.gen_bool(0.4);
                        if control.delete(SimKind::User, &id, permanent).is_ok() && !permanent {
                            soft_deleted.push((SimKind::User, id));
                        }
                    }
                    3 if !soft_deleted.is_empty() => {
                        let (kind, id) = soft_deleted.swap_remove(rng.gen_range(0..soft_deleted.len()));
                        let _ = control.restore(kind, &id);
                    }
                    4 | 5 => {
                        let member = match rng.gen_range(0..3) {
                            0 => pick(&mut rng, &groups),
                            1 => pick(&mut rng, &devices),
                            _ => pick(&mut rng, &users),
                        };
                        let _ = control.add_member(&pick(&mut rng, &groups), &member);
                    }
                    6 => {
                        let export = control.export();
                        let group = &export.groups[rng.gen_range(0..export.groups.len())];
                        if let Some(member) = group.members.first() {
                            let _ = control.remove_member(group.props["id"].as_str().unwrap_or_default(), &member.id);
                        }
                    }
                    7 => {
                        let manager = rng.gen_bool(0.7).then(|| pick(&mut rng, &users));
                        let _ = control.set_manager(&pick(&mut rng, &users), manager.as_deref());
                    }
                    8 => {
                        let id = pick(&mut rng, &groups);
                        let permanent = rng.gen_bool(0.3);
                        if control.delete(SimKind::Group, &id, permanent).is_ok() && !permanent {
                            soft_deleted.push((SimKind::Group, id));
                        }
                    }
                    9 => {
                        let _ = control.delete(SimKind::Device, &pick(&mut rng, &devices), true);
                        let _ = control.add_device(obj(json!({"displayName": format!("PC-{}", rng.gen::<u16>())})));
                    }
                    10 => {
                        let user = pick(&mut rng, &users);
                        let photo = rng.gen_bool(0.6).then(|| vec![0xFF, 0xD8, 0xFF, rng.gen(), 0xFF, 0xD9]);
                        let _ = control.set_photo(&user, photo);
                        recheck.push(user);
                    }
                    _ => {
                        let contacts = control.ids(SimKind::Contact);
                        let _ = control.update(
                            SimKind::Contact,
                            &pick(&mut rng, &contacts),
                            obj(json!({"jobTitle": format!("Partner {}", rng.gen::<u16>())})),
                        );
                    }
                }
            }
            match rng.gen_range(0..6) {
                0 => control.fault(Fault::Unavailable {
                    requests: rng.gen_range(1..3),
                    status: 503,
                    scope: FaultScope::Graph,
                }),
                1 => control.fault(Fault::CutConnection {
                    requests: rng.gen_range(1..3),
                }),
                2 => control.fault(Fault::Throttle {
                    requests: 2,
                    retry_after_secs: 0,
                    scope: FaultScope::Graph,
                }),
                3 => control.fault(Fault::ExpireDeltaTokens {
                    style: if rng.gen_bool(0.5) {
                        ExpiryStyle::Gone
                    } else {
                        ExpiryStyle::BadRequest
                    },
                }),
                _ => {}
            }
            let plan = PhotoPlan {
                known: &model.photos,
                recheck,
            };
            let round = syncer
                .round(&model.links, &plan)
                .await
                .unwrap_or_else(|e| panic!("seed {seed} round {round_no}: {e}"));
            model.apply(&round);
            model.assert_matches(&sim);
            control.clear_faults();
        }
    }
}

/// With `proxy` set, both the login and the Graph requests go through it. The simulator stands in for the proxy
/// here: it answers absolute-form requests for hosts that do not exist, which only arrive through a proxy.
#[tokio::test]
async fn requests_go_through_the_configured_proxy() {
    let sim = start(SimOptions {
        users: 10,
        groups: 2,
        devices: 2,
        contacts: 1,
        ..options()
    })
    .await;
    let mut cfg = config(&sim);
    cfg.authority = "http://login.entradir-test.invalid".into();
    cfg.graph_url = "http://graph.entradir-test.invalid".into();
    cfg.proxy = Some(sim.base_url());
    cfg.photos = false;
    let round = Syncer::new(cfg)
        .unwrap()
        .round(&DeltaLinks::default(), &PhotoPlan::default())
        .await
        .expect("round through the proxy");
    assert!(round
        .delta_links
        .links
        .values()
        .all(|l| l.url.starts_with("http://graph.entradir-test.invalid/")));
    let mut model = Model::default();
    model.apply(&round);
    model.assert_matches(&sim);

    let mut cfg = config(&sim);
    cfg.proxy = Some("http://[not-a-proxy".into());
    let err = Syncer::new(cfg).unwrap_err().to_string();
    assert!(err.contains("proxy"), "{err}");
}

/// Exchange Online allows about 4 concurrent photo requests per app; slow photo answers show we never exceed it
/// and do use it.
#[tokio::test]
async fn at_most_four_photo_requests_are_in_flight() {
    let sim = start(SimOptions {
        users: 24,
        groups: 1,
        devices: 1,
        contacts: 1,
        ..options()
    })
    .await;
    sim.control().fault(Fault::Delay {
        millis: 50,
        scope: FaultScope::Photos,
    });
    let (_, _, round) = full_sync(&sim).await;
    assert_eq!(round.photos.len(), 24);
    assert_eq!(sim.control().peak_concurrency(Endpoint::Photo), 4);
}
