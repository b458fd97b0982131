//! Operations under fire: LDAP clients (ldapsearch) and a CardDAV client (vdirsyncer) keep working while
//! Microsoft's cloud misbehaves (429 storms, 503s, an expired delta token answered with 410, a connection cut
//! mid-page, an expired client secret). Pass = no failed or wrong client answer, no lost objects, and the status
//! and the metrics tell the story.

mod common;

use common::*;
use graph_sim::Fault;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Count the entries `ldapsearch` returns, or say why it failed.
fn count(port: u16, filter: &str) -> Result<usize, String> {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
            "-b",
            BASE_DN,
            filter,
            "1.1",
        ])
        .output()
        .map_err(|e| format!("cannot run ldapsearch (install ldap-utils): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("dn:"))
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_no_errors_and_no_losses_while_graph_misbehaves() {
    let sim = sim(150, 8, 10, 21).await;
    let ctl = sim.control();
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.expect("initial sync");
    let people = engine.dir.snapshot().counts().users;
    let (port, shutdown) = ldap_server(engine.dir.published(), "unused", true).await;
    let carddav = entradir::carddav::start(carddav_config("phone", "pw"), engine.dir.published(), {
        let s = shutdown.clone();
        async move { s.cancelled().await }
    })
    .await
    .unwrap();
    let vdir = Arc::new(Vdirsyncer::new(
        &format!("http://{}/", carddav.local_addr.unwrap()),
        "phone",
        "pw",
    ));
    let v = vdir.clone();
    tokio::task::spawn_blocking(move || {
        v.discover("all");
        v.run(&["sync"]);
    })
    .await
    .unwrap();
    let cards = vdir.cards("all").len();
    // The book leaves disabled accounts out (`include_disabled = false`); contacts are in it.
    let listed = engine
        .dir
        .snapshot()
        .entries()
        .filter(|e| e.kind == entradir::directory::EntryKind::User)
        .filter(|e| {
            e.first_str("userAccountControl")
                .and_then(|v| v.parse::<i64>().ok())
                .is_none_or(|u| u & 2 == 0)
        })
        .count();
    assert!(
        listed > 100 && listed < people,
        "the tenant has disabled users: {listed} of {people} enabled"
    );
    assert!(cards >= listed, "every enabled person has a card: {cards} for {listed}");

    // Clients: search all people over and over; every answer must succeed and never show fewer people than
    // before (the faults below only add users).
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    // The phone's address book: sync over and over; every sync must succeed and never lose a card.
    let syncs = Arc::new(AtomicUsize::new(0));
    {
        let (stop, failures, syncs, v) = (stop.clone(), failures.clone(), syncs.clone(), vdir.clone());
        clients.push(std::thread::spawn(move || {
            let mut last = cards;
            while !stop.load(Ordering::Relaxed) {
                match v.try_run(&["sync"]) {
                    Ok(_) => {
                        let n = v.cards("all").len();
                        if n < last {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("vdirsyncer has {n} cards after {last}"));
                        }
                        last = n;
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                syncs.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..2 {
        let (stop, answers, failures) = (stop.clone(), answers.clone(), failures.clone());
        clients.push(std::thread::spawn(move || {
            let mut last = people;
            while !stop.load(Ordering::Relaxed) {
                match count(port, "(&(objectCategory=person)(objectClass=user))") {
                    Ok(n) if n >= last => last = n,
                    Ok(n) => failures.lock().unwrap().push(format!("saw {n} people after {last}")),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                answers.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let add = |n: usize| {
        ctl.add_user(
            serde_json::json!({"displayName": format!("Fault Test {n}"), "userPrincipalName": format!("fault{n}@contoso.example"),
                "accountEnabled": true, "userType": "Member"})
            .as_object()
            .cloned()
            .unwrap(),
        )
        .unwrap()
    };
    let faults = [
        Fault::Throttle {
            requests: 6,
            retry_after_secs: 1,
            scope: Default::default(),
        },
        Fault::Unavailable {
            requests: 3,
            status: 503,
            scope: Default::default(),
        },
        Fault::Unavailable {
            requests: 2,
            status: 504,
            scope: Default::default(),
        },
        Fault::ExpireDeltaTokens {
            style: Default::default(),
        },
        Fault::CutConnection { requests: 2 },
        Fault::ExpireAccessTokens,
    ];
    let mut added = 0;
    for f in faults {
        added += 1;
        add(added);
        ctl.fault(f.clone());
        engine
            .round()
            .await
            .unwrap_or_else(|e| panic!("round with {f:?} should recover: {e}"));
        assert_eq!(engine.dir.snapshot().counts().users, people + added, "after {f:?}");
    }

    // An expired secret: the round fails, the directory is kept, the status says why.
    added += 1;
    add(added);
    ctl.fault(Fault::ExpireSecret { expired: true });
    ctl.fault(Fault::ExpireAccessTokens);
    let err = engine.round().await.expect_err("an expired secret cannot sync");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(
        engine.dir.snapshot().counts().users,
        people + added - 1,
        "nothing lost, nothing half-applied"
    );
    let st = engine.status.lock().unwrap().clone();
    assert_eq!(st.failures, 1);
    assert!(st.last_error.as_deref().unwrap_or("").contains("expired"));
    assert!(st.throttled >= 6, "throttled waits are counted: {}", st.throttled);
    let last = st.history.back().expect("the round is in the history");
    assert_eq!(last.outcome, "failed");
    assert!(last.error.as_deref().unwrap_or("").contains("expired"), "{last:?}");
    ctl.fault(Fault::ExpireSecret { expired: false });
    engine.round().await.expect("a renewed secret syncs again");
    let st = engine.status.lock().unwrap().clone();
    let last = st.history.back().expect("the round is in the history");
    assert_eq!((last.outcome, last.entries_changed > 0), ("applied", true), "{last:?}");
    assert!(last.graph_requests > 0 && last.error.is_none(), "{last:?}");
    assert_eq!(st.history.len() as u64, st.rounds.min(entradir::sync::HISTORY as u64));
    assert_eq!(engine.dir.snapshot().counts().users, people + added);

    // Let the phone sync at least twice more, so it sees the end state through the load.
    let seen = syncs.load(Ordering::Relaxed);
    while syncs.load(Ordering::Relaxed) < seen + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(vdir.cards("all").len(), cards + added, "the phone has every new person");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "client failures: {failures:?}");
    assert!(
        answers.load(Ordering::Relaxed) > 10,
        "the clients kept searching throughout"
    );

    // What an operator sees in /metrics: every kind of fault, and clients that only ever got good answers.
    let mut m = String::new();
    entradir::metrics::render(&mut m);
    let value = |series: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    for status in ["429", "503", "504", "410"] {
        let n: u64 = ["users", "groups", "devices"]
            .iter()
            .map(|e| {
                value(&format!(
                    "entradir_graph_http_requests_total{{endpoint=\"{e}\",status=\"{status}\"}}"
                ))
            })
            .sum();
        assert!(n > 0, "Graph {status} answers are counted:\n{m}");
    }
    assert!(
        m.lines()
            .any(|l| l.starts_with("entradir_graph_http_requests_total{endpoint=\"token\",status=\"4")),
        "the refused secret shows at the token endpoint:\n{m}"
    );
    assert!(value("entradir_ldap_operations_total{op=\"search\",result=\"success\"}") > 10);
    let bad_ldap: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("entradir_ldap_operations_total{"))
        .filter(|l| !l.contains("result=\"success\"") && !l.contains("op=\"unbind\""))
        .collect();
    assert!(bad_ldap.is_empty(), "only successful LDAP answers: {bad_ldap:?}");
    assert!(
        value("entradir_http_requests_total{area=\"carddav\",status=\"207\"}") > 0,
        "{m}"
    );
    let bad_http: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("entradir_http_requests_total{") && l.contains("status=\"5"))
        .collect();
    assert!(bad_http.is_empty(), "no CardDAV server errors: {bad_http:?}");
    assert!(m.contains("entradir_ldap_operation_duration_seconds_bucket{op=\"search\",le=\"+Inf\"}"));
    shutdown.cancel();
    sim.shutdown().await;
}
