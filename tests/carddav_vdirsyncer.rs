//! A real CardDAV client against the server: vdirsyncer (Python) discovers the books from the service root,
//! syncs them read-only into a filesystem store, and after a change in the directory fetches only that card.
//!
//! vdirsyncer comes from a virtualenv: `$ENTRADIR_VENV` or `<repo>/.venv`, as `scripts/test` creates it; a
//! missing venv fails the test with a message saying so.

mod common;

use common::vcard::Card;
use entradir::carddav::sample::snapshot;
use entradir::carddav::{sample, CardDavServer};
use entradir::directory::Published;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn title_of(path: &Path) -> String {
    // vdirsyncer's filesystem storage writes the card it fetched with LF line ends.
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let card = Card::parse(&text).unwrap_or_else(|e| panic!("{} rejected: {e}\n{text}", path.display()));
    card.texts("TITLE").pop().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vdirsyncer_read_only_sync_and_incremental_update() {
    let cfg = common::carddav_config("phone", "pw");
    let people = sample::people(30, 2);
    let dir = Published::new(snapshot(2, people.clone()));
    let server = CardDavServer::bind(Arc::new(arc_swap::ArcSwap::from_pointee(cfg)), dir.clone())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let v = common::Vdirsyncer::new(&format!("http://{addr}/"), "phone", "pw");
    let v = Arc::new(v);
    let v2 = v.clone();
    let discovered = tokio::task::spawn_blocking(move || v2.discover("all")).await.unwrap();
    assert!(
        discovered.contains("all"),
        "vdirsyncer discovered no book 'all':\n{discovered}"
    );

    let v2 = v.clone();
    tokio::task::spawn_blocking(move || v2.run(&["sync"])).await.unwrap();
    let files: Vec<PathBuf> = v.cards("all");
    assert_eq!(files.len(), 30, "one file per person");
    let heads = files.iter().filter(|f| title_of(f) == "Head of R&D").count();
    assert_eq!(
        heads, 5,
        "people 0, 7, 14, 21, 28 head R&D (escaping of & survived the round trip)"
    );

    // Person 4 gets a new title in version 3: the next sync must fetch exactly that card.
    let mut next = people.clone();
    next[4] = sample::person(4, 3);
    next[4].attrs.set("title", vec!["Chief Phone Officer".into()]);
    dir.publish(snapshot(3, next));
    let v2 = v.clone();
    let log = tokio::task::spawn_blocking(move || v2.run(&["sync"])).await.unwrap();
    let updates: Vec<&str> = log.lines().filter(|l| l.contains("Copying (updating)")).collect();
    assert_eq!(updates.len(), 1, "exactly one card re-fetched:\n{log}");
    // vdirsyncer names items by vCard UID: the objectGUID in UUID form.
    let uid = entradir::carddav::vcard::uuid_string(&sample::person(4, 0).guid);
    assert!(updates[0].contains(&uid), "{log}");
    assert!(
        !log.contains("Copying (uploading)") && !log.contains("Deleting"),
        "{log}"
    );
    let changed = files
        .iter()
        .find(|f| f.to_string_lossy().contains(&sample::person_id(4)));
    let changed = changed.cloned().unwrap_or_else(|| {
        // vdirsyncer names files by UID, not by href: find the card by content.
        files
            .iter()
            .find(|f| title_of(f) == "Chief Phone Officer")
            .cloned()
            .expect("updated card on disk")
    });
    assert_eq!(title_of(&changed), "Chief Phone Officer");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// Every 3.0 card, parsed by vobject (Python), an implementation independent of calcard, which wrote it, and of the tests' own reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vobject_parses_every_card() {
    let bin = common::venv_bin("vdirsyncer");
    let python = bin.with_file_name("python");
    let cfg = common::carddav_config("phone", "pw");
    let dir = Published::new(snapshot(2, sample::people(60, 2)));
    let server = CardDavServer::bind(Arc::new(arc_swap::ArcSwap::from_pointee(cfg)), dir)
        .await
        .unwrap();
    let url = format!("http://{}/dav/books/all/", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/carddav_vobject.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([url.as_str(), "phone", "pw"])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["cards"], 60);
    assert_eq!(summary["unique_uids"], 60);
    assert_eq!(summary["photos"].as_array().unwrap().len(), 6);
    // Every person has a work number, every third a mobile, every fifth a fax.
    assert_eq!(summary["tels"], 60 + 20 + 12);
    let names: Vec<&str> = summary["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        names.contains(&"Jürgen Smith & Sons 21") && names.contains(&"Ayşe O'Brien 17"),
        "{names:?}"
    );
    let _ = stop.send(());
}
