//! CardDAV over the real pipeline: a simulated Entra tenant, synced with delta queries and projected to AD
//! entries, served as address books. A client syncs (sync-collection, and vdirsyncer when its venv exists),
//! the tenant changes, the next round lands, and the incremental sync brings exactly the changed cards.

mod common;

use common::vcard::Card;
use common::xml::{parse, Element};
use common::*;
use entradir::carddav::auth::hash_password;
use entradir::carddav::vcard::uuid_string;
use entradir::carddav::xml::{CARDDAV, DAV};
use entradir::carddav::{Account, BookConfig, CardDavConfig, CardDavServer};
use entradir::directory::{EntryKind, Snapshot};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn listed(snap: &Snapshot) -> usize {
    snap.entries()
        .filter(|e| matches!(e.kind, EntryKind::User | EntryKind::Contact))
        .filter(|e| {
            e.first_str("userAccountControl")
                .and_then(|u| u.parse::<u32>().ok())
                .is_none_or(|u| u & 2 == 0)
        })
        .count()
}

async fn sync_collection(base: &str, book: &str, token: &str) -> (Vec<(String, u16, String)>, String) {
    let body = format!(
        r#"<d:sync-collection xmlns:d="DAV:" xmlns:c="{CARDDAV}"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/><c:address-data/></d:prop></d:sync-collection>"#
    );
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"REPORT").unwrap(),
            format!("{base}/dav/books/{book}/"),
        )
        .basic_auth("pbx", Some("pw"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    let text = r.text().await.unwrap();
    let root = parse(text.as_bytes()).unwrap();
    let items = root
        .children_named(DAV, "response")
        .map(|r| {
            let href = r.child(DAV, "href").unwrap().text.clone();
            let status: &Element = r
                .child(DAV, "status")
                .or_else(|| r.child(DAV, "propstat").and_then(|p| p.child(DAV, "status")))
                .unwrap();
            let code = status.text.split(' ').nth(1).unwrap().parse().unwrap();
            let data = r
                .child(DAV, "propstat")
                .and_then(|p| p.child(DAV, "prop"))
                .and_then(|p| p.child(CARDDAV, "address-data"))
                .map(|d| d.text.clone())
                .unwrap_or_default();
            (href, code, data)
        })
        .collect();
    (items, root.child(DAV, "sync-token").unwrap().text.clone())
}

fn card(href: &str, data: &str) -> Card {
    Card::parse(data).unwrap_or_else(|e| panic!("card {href} rejected: {e}\n{data}"))
}

async fn vsync(bin: &Path, config: &Path, cmd: &'static str) -> String {
    let (bin, config) = (bin.to_path_buf(), config.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin)
            .env("VDIRSYNCER_CONFIG", config)
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "vdirsyncer {cmd}: {text}");
        text
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_tenant_books_follow_new_rounds() {
    let sim = sim(40, 4, 3, 11).await;
    let ctl = sim.control();
    let jane = JANE;
    add_jane(&ctl, json!({}));
    let photo = TINY_JPEG.to_vec();
    ctl.set_photo(jane, Some(photo.clone())).unwrap();
    let hotline = add_security_group(&ctl, "Hotline");
    ctl.add_member(&hotline, jane).unwrap();

    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let published = engine.dir.published();

    let cfg = CardDavConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        accounts: vec![Account {
            name: "pbx".into(),
            password_hash: hash_password("pw").unwrap(),
            networks: vec![],
        }],
        books: vec![BookConfig {
            name: "hotline".into(),
            display_name: "Hotline".into(),
            group: Some("Hotline".into()),
        }],
        ..Default::default()
    };
    let server = CardDavServer::bind(Arc::new(arc_swap::ArcSwap::from_pointee(cfg)), published.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    // Initial sync: every enabled user and contact, each card valid, Jane's complete.
    let (all, token) = sync_collection(&base, "all", "").await;
    let expected = listed(&published.load());
    assert!(expected > 30);
    assert_eq!(all.len(), expected);
    let snap = published.load();
    let jane_entry = snap.entry(jane).expect("jane synced");
    let jane_href = format!("/dav/books/all/{jane}.vcf");
    for (href, code, data) in &all {
        assert_eq!(*code, 200);
        let card = card(href, data);
        assert_eq!(card.values("VERSION"), ["3.0"]);
        assert_eq!(card.values("FN").len(), 1, "{data}");
        if *href == jane_href {
            assert_eq!(card.values("FN"), ["Doe, Jane"]);
            assert_eq!(card.values("TEL"), ["+49301234567", "+491712345678"]);
            assert_eq!(card.values("EMAIL"), ["jane.doe@contoso.example"]);
            assert_eq!(card.values("TITLE"), ["Buyer"]);
            assert_eq!(card.values("UID"), [uuid_string(&jane_entry.guid)]);
            assert!(card.values("CATEGORIES").contains(&"Hotline".to_string()), "{data}");
            assert_eq!(card.photo(), Some(Ok(photo.clone())), "{data}");
        }
    }
    assert!(all.iter().any(|(h, _, _)| *h == jane_href));
    let (hot, hot_token) = sync_collection(&base, "hotline", "").await;
    assert_eq!(
        hot.iter().map(|(h, _, _)| h.as_str()).collect::<Vec<_>>(),
        [format!("/dav/books/hotline/{jane}.vcf")]
    );

    // vdirsyncer mirrors the book read-only.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("cards");
    std::fs::create_dir_all(store.join("all")).unwrap();
    let config = tmp.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[general]\nstatus_path = \"{}\"\n\n[pair c]\na = \"remote\"\nb = \"local\"\ncollections = [\"all\"]\n\
             conflict_resolution = \"a wins\"\n\n[storage remote]\ntype = \"carddav\"\nurl = \"{base}/\"\n\
             username = \"pbx\"\npassword = \"pw\"\nread_only = true\n\n[storage local]\ntype = \"filesystem\"\n\
             path = \"{}\"\nfileext = \".vcf\"\n",
            tmp.path().join("status").display(),
            store.display()
        ),
    )
    .unwrap();
    let bin = venv_bin("vdirsyncer");
    vsync(&bin, &config, "discover").await;
    vsync(&bin, &config, "sync").await;
    assert_eq!(std::fs::read_dir(store.join("all")).unwrap().count(), expected);

    // The tenant changes: Jane gets a new title, someone else is disabled. One round later the incremental
    // sync carries exactly Jane's new card and the disabled account as gone.
    ctl.update_user(jane, props(json!({"jobTitle": "Head of Buying"})))
        .unwrap();
    let other = snap
        .entries()
        .find(|e| {
            e.kind == EntryKind::User && e.id.as_ref() != jane && all.iter().any(|(h, _, _)| h.contains(e.id.as_ref()))
        })
        .unwrap()
        .id
        .to_string();
    ctl.update_user(&other, props(json!({"accountEnabled": false})))
        .unwrap();
    engine.round().await.unwrap();
    let (delta, next) = sync_collection(&base, "all", &token).await;
    let mut got: Vec<(String, u16)> = delta.iter().map(|(h, c, _)| (h.clone(), *c)).collect();
    got.sort();
    let mut want = vec![(jane_href.clone(), 200), (format!("/dav/books/all/{other}.vcf"), 404)];
    want.sort();
    assert_eq!(got, want);
    let new_jane = &delta.iter().find(|(h, _, _)| *h == jane_href).unwrap().2;
    assert_eq!(card(&jane_href, new_jane).texts("TITLE"), ["Head of Buying"]);
    assert_ne!(next, token);

    let log = vsync(&bin, &config, "sync").await;
    let updates = log.lines().filter(|l| l.contains("Copying (updating)")).count();
    let deletes = log.lines().filter(|l| l.contains("Deleting")).count();
    assert_eq!((updates, deletes), (1, 1), "only the changed card is fetched:\n{log}");
    assert_eq!(std::fs::read_dir(store.join("all")).unwrap().count(), expected - 1);
    // Group books follow membership: Jane leaves the Hotline group, `other2` joins it.
    let other2 = snap
        .entries()
        .find(|e| e.kind == EntryKind::User && e.id.as_ref() != jane && e.id.as_ref() != other)
        .unwrap()
        .id
        .to_string();
    // (A token from before the last round would also list `other` as gone: a changed person outside the book
    // is reported removed because the server keeps no per-book history; clients ignore unknown removals.)
    let (_, hot_token) = sync_collection(&base, "hotline", &hot_token).await;
    ctl.remove_member(&hotline, jane).unwrap();
    ctl.add_member(&hotline, &other2).unwrap();
    engine.round().await.unwrap();
    let (delta, _) = sync_collection(&base, "hotline", &hot_token).await;
    let mut got: Vec<(String, u16)> = delta.iter().map(|(h, c, _)| (h.clone(), *c)).collect();
    got.sort();
    let mut want = vec![
        (format!("/dav/books/hotline/{jane}.vcf"), 404),
        (format!("/dav/books/hotline/{other2}.vcf"), 200),
    ];
    want.sort();
    assert_eq!(got, want);

    // A card's ETag changes only with its bytes. `report` reports to Jane; when `report` is deleted, Jane's
    // entry changes (her `directReports`) but her card does not: sync-collection reports the deletion only,
    // Jane keeps her ETag, and vdirsyncer fetches nothing.
    let report = snap
        .entries()
        .find(|e| {
            e.kind == EntryKind::User
                && ![jane, other.as_str(), other2.as_str()].contains(&e.id.as_ref())
                && all.iter().any(|(h, _, _)| h.contains(e.id.as_ref()))
        })
        .unwrap()
        .id
        .to_string();
    ctl.set_manager(&report, Some(jane)).unwrap();
    engine.round().await.unwrap();
    let (_, token) = sync_collection(&base, "all", &next).await;
    vsync(&bin, &config, "sync").await;
    let jane_before = published.load().entry(jane).unwrap().clone();
    let etag_before = etag(&base, &jane_href).await;
    ctl.delete(graph_sim::GraphKind::User, &report, false).unwrap();
    engine.round().await.unwrap();
    let jane_after = published.load().entry(jane).unwrap().clone();
    assert!(
        jane_after.usn_changed > jane_before.usn_changed,
        "Jane's entry changed (directReports)"
    );
    let (delta, _) = sync_collection(&base, "all", &token).await;
    let got: Vec<(String, u16)> = delta.iter().map(|(h, c, _)| (h.clone(), *c)).collect();
    assert_eq!(got, [(format!("/dav/books/all/{report}.vcf"), 404)]);
    assert_eq!(etag(&base, &jane_href).await, etag_before);
    let log = vsync(&bin, &config, "sync").await;
    let updates = log.lines().filter(|l| l.contains("Copying (updating)")).count();
    let deletes = log.lines().filter(|l| l.contains("Deleting")).count();
    assert_eq!((updates, deletes), (0, 1), "no card fetched for nothing:\n{log}");

    let _ = stop.send(());
}

async fn etag(base: &str, href: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{base}{href}"))
        .basic_auth("pbx", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{href}");
    r.headers()["etag"].to_str().unwrap().to_string()
}
