//! Served data survives restarts and Graph outages; a corrupt state file costs a full sync, not a crash.

mod common;

use common::*;
use entradir::directory::state::{self, STATE_FILE};
use entradir::directory::Directory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_serves_from_state_while_graph_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(60, 6, 10, 11).await;
    let mut engine = engine(&sim, settings(), Some(dir.path().to_path_buf()));
    engine.round().await.unwrap();
    let before = engine.dir.published().load();
    assert!(before.counts().users > 0);

    // "Restart" with Graph unreachable: the directory is served from the state file at once.
    let st = state::load(dir.path(), sim.tenant_id())
        .unwrap()
        .expect("state was written");
    assert_eq!(st.version, before.version, "the state remembers the published version");
    let restored = Directory::resume(settings(), st.store, st.delta_links, st.version);
    assert_same_directory(&restored.published().load(), &before, "restored from state");
    let after = restored.published().load();
    assert!(
        after.version > before.version,
        "versions (highestCommittedUSN, uSNChanged) keep growing across a restart: {} after {}",
        after.version,
        before.version
    );
    assert!(
        after.changes_since(before.version).is_some() && after.changes_since(before.version - 1).is_none(),
        "a client token from the last saved version is answered; older ones must start over (removals before \
         the restart are not remembered)"
    );
    let mut offline = engine;
    offline.dir = restored;
    let url = sim.base_url();
    let ctl = sim.control();
    let x = ctl.export();
    sim.shutdown().await;
    let mut g = graph_config_for(&url, &x);
    g.retry.max_attempts = 2;
    offline.syncer = entradir::graph::Syncer::new(g).unwrap();
    assert!(offline.round().await.is_err(), "Graph is down");
    assert_same_directory(
        &offline.dir.published().load(),
        &before,
        "a failed round changes nothing",
    );
    assert_eq!(offline.status.lock().unwrap().failures, 1);
}

fn graph_config_for(url: &str, _x: &graph_sim::TenantExport) -> entradir::graph::GraphConfig {
    let mut g = entradir::graph::GraphConfig::new(
        "00000000-0000-4000-8000-000000000001",
        "entradir-demo",
        entradir::graph::Credential::Secret("demo-secret".into()),
    );
    g.authority = url.to_string();
    g.graph_url = url.to_string();
    g.retry = fast_retry();
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_from_state_fetches_only_the_delta() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(200, 10, 20, 12).await;
    let ctl = sim.control();
    let mut first = engine(&sim, settings(), Some(dir.path().to_path_buf()));
    first.round().await.unwrap();
    let full_requests = ctl.request_log().len();
    let st = state::load(dir.path(), sim.tenant_id()).unwrap().unwrap();
    let mut second = engine(&sim, settings(), Some(dir.path().to_path_buf()));
    second.dir = Directory::new(settings(), st.store, st.delta_links);
    let u = ctl.ids(graph_sim::GraphKind::User)[0].clone();
    ctl.update_user(
        &u,
        serde_json::json!({"jobTitle": "Changed"}).as_object().cloned().unwrap(),
    )
    .unwrap();
    ctl.clear_request_log();
    let report = second.round().await.unwrap();
    let delta_requests = ctl.request_log().len();
    assert!(
        delta_requests * 4 < full_requests,
        "delta round used {delta_requests} requests, full {full_requests}"
    );
    assert_eq!(report.entries_changed, 1, "only the changed user was re-projected");
    assert_eq!(
        second.dir.published().load().entry(&u).unwrap().first_str("title"),
        Some("Changed")
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_set_aside_and_rebuilt_by_a_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATE_FILE), b"{ this is not json").unwrap();
    let err = state::load(dir.path(), "t").unwrap_err().to_string();
    assert!(err.contains("corrupt") && err.contains(STATE_FILE), "{err}");
    let sim = sim(20, 2, 2, 13).await;
    let mut engine = engine(&sim, settings(), Some(dir.path().to_path_buf()));
    engine.round().await.unwrap();
    let st = state::load(dir.path(), sim.tenant_id())
        .unwrap()
        .expect("a fresh state file");
    assert_eq!(st.store.users.len(), sim.control().export().users.len());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_that_reads_new_properties_resyncs_users_from_scratch() {
    let sim = sim(30, 3, 3, 14).await;
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let links = engine.dir.delta_links().clone();
    let plan = entradir::graph::PhotoPlan {
        known: engine.dir.photos_known(),
        recheck: Vec::new(),
    };
    let same = engine.syncer.round(&links, &plan).await.unwrap();
    assert!(same.full.is_empty(), "unchanged $select resumes from the delta links");
    let mut g = graph_config(&sim);
    g.extra_user_select = vec!["employeeType".into()];
    let mut syncer = entradir::graph::Syncer::new(g).unwrap();
    let round = syncer.round(&links, &plan).await.unwrap();
    assert_eq!(
        round.full,
        vec![entradir::directory::change::GraphKind::User],
        "only users read more now"
    );
    sim.shutdown().await;
}
