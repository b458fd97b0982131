//! Model-based sync tests: random tenant mutations and faults in the Graph simulator, then a sync round; after
//! every round the published directory must equal the projection of the tenant's truth.

mod common;

use common::*;
use graph_sim::Fault;
use graph_sim::GraphKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

fn props(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// One random mutation of the tenant; returns a description for failure messages.
/// `photos`: whether photos may change too (only where every photo is re-checked each round: a round re-checks at
/// most 200, so at thousands of users a changed photo shows up rounds later, by design).
fn mutate(ctl: &graph_sim::Control, rng: &mut StdRng, n: u32, photos: bool) -> String {
    let users = ctl.ids(GraphKind::User);
    let groups = ctl.ids(GraphKind::Group);
    let pick = |rng: &mut StdRng, v: &Vec<String>| v[rng.gen_range(0..v.len())].clone();
    match rng.gen_range(0..if photos { 9 } else { 8 }) {
        0 => {
            let id = ctl
                .add_user(props(json!({
                    "displayName": format!("Model User {n}"), "givenName": "Model", "surname": format!("User{n}"),
                    "userPrincipalName": format!("model.user{n}@contoso.example"), "mailNickname": format!("model{n}"),
                    "businessPhones": [format!("030 555{n:04}")], "accountEnabled": true, "userType": "Member"
                })))
                .expect("add user");
            format!("add user {id}")
        }
        1 => {
            let id = pick(rng, &users);
            ctl.update_user(
                &id,
                props(json!({"displayName": format!("Renamed {n}"), "department": "Model"})),
            )
            .expect("update");
            format!("rename user {id}")
        }
        2 => {
            let id = pick(rng, &users);
            ctl.update_user(&id, props(json!({"mobilePhone": format!("+49 171 {n:07}")})))
                .expect("update");
            format!("new mobile for {id}")
        }
        3 => {
            let id = pick(rng, &users);
            let permanent = rng.gen_bool(0.5);
            ctl.delete(GraphKind::User, &id, permanent).expect("delete");
            format!("delete user {id} (permanent {permanent})")
        }
        4 => {
            let (g, u) = (pick(rng, &groups), pick(rng, &users));
            ctl.add_member(&g, &u).expect("add member");
            format!("add {u} to {g}")
        }
        5 => {
            let g = pick(rng, &groups);
            let x = ctl.export();
            let members = x
                .groups
                .iter()
                .find(|e| e.props.get("id").and_then(|v| v.as_str()) == Some(&g));
            match members.and_then(|m| m.members.first()) {
                Some(m) => {
                    ctl.remove_member(&g, &m.id).expect("remove member");
                    format!("remove {} from {g}", m.id)
                }
                None => "no-op".into(),
            }
        }
        6 => {
            let g = pick(rng, &groups);
            ctl.update(
                GraphKind::Group,
                &g,
                props(json!({"displayName": format!("Group renamed {n}")})),
            )
            .expect("rename group");
            format!("rename group {g}")
        }
        7 => {
            let (u, m) = (pick(rng, &users), pick(rng, &users));
            let m = if u == m { None } else { Some(m.as_str()) };
            ctl.set_manager(&u, m).expect("manager");
            format!("manager of {u} = {m:?}")
        }
        _ => {
            let u = pick(rng, &users);
            let photo = if rng.gen_bool(0.5) {
                None
            } else {
                Some(graph_sim::jpeg::photo(u64::from(n) + 1000))
            };
            ctl.set_photo(&u, photo.clone()).expect("photo");
            format!("photo of {u}: {}", if photo.is_some() { "new" } else { "removed" })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mutations_and_faults_keep_the_directory_equal_to_the_tenant() {
    for seed in [42, 7] {
        run_model(seed, 120, 12, 12).await;
    }
}

/// The same at a size where index postings turn into real bitmaps and groups into big ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_users_over_dozens_of_rounds() {
    run_model(2026, 2000, 120, 24).await;
}

async fn run_model(seed: u64, users: usize, groups: usize, rounds: u32) {
    let sim = sim(users, groups, users / 6, seed).await;
    let ctl = sim.control();
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.expect("initial sync");
    let x = ctl.export();
    assert!(
        engine.dir.snapshot().counts().users > 50,
        "the initial sync published the users"
    );
    let fresh = expected(&x, settings());
    assert_same_directory(engine.dir.snapshot(), &fresh, "initial sync");
    assert_same_indexes(engine.dir.snapshot(), &fresh, "initial sync");

    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u32;
    for round in 0..rounds {
        let mut log = Vec::new();
        for _ in 0..rng.gen_range(1..8 + users / 200) {
            n += 1;
            log.push(mutate(&ctl, &mut rng, n, users <= 200));
        }
        // Photos are re-checked on a schedule, not tracked by delta: re-check everything this round so the
        // comparison with the truth is exact.
        engine.photo_recheck = std::time::Duration::ZERO;
        match round % 4 {
            1 => ctl.fault(Fault::Throttle {
                requests: 2,
                retry_after_secs: 1,
                scope: Default::default(),
            }),
            2 => ctl.fault(Fault::Unavailable {
                requests: 2,
                status: 503,
                scope: Default::default(),
            }),
            3 => ctl.fault(Fault::CutConnection { requests: 1 }),
            _ => {}
        }
        if round == 6 {
            ctl.fault(Fault::ExpireDeltaTokens {
                style: Default::default(),
            });
            log.push("delta tokens expired".into());
        }
        engine
            .round()
            .await
            .unwrap_or_else(|e| panic!("round {round} after {log:?}: {e}"));
        let x = ctl.export();
        let fresh = expected(&x, settings());
        let context = format!("seed {seed} round {round} after {log:?}");
        assert_same_directory(engine.dir.snapshot(), &fresh, &context);
        // Every few rounds (and the last): the incremental indexes against the rebuilt ones, filter by filter.
        if round % 8 == 7 || round + 1 == rounds {
            assert_same_indexes(engine.dir.snapshot(), &fresh, &context);
        }
    }
    sim.shutdown().await;
}
