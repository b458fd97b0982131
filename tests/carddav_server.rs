//! The HTTP server around the CardDAV service: HTTPS with a certificate loaded from PEM files, configuration
//! swapped at runtime (new books and accounts, same listener and connections), and graceful shutdown.

use entradir::carddav::auth::hash_password;
use entradir::carddav::config::load_tls;
use entradir::carddav::{sample, start, Account, BookConfig, CardDavConfig, CardDavServer};
use entradir::directory::Published;
use std::sync::Arc;
use std::time::Duration;

fn published() -> Published {
    Published::new(sample::snapshot(3, sample::people(12, 2)))
}

fn account(name: &str, pw: &str) -> Account {
    Account {
        name: name.into(),
        password_hash: hash_password(pw).unwrap(),
        networks: vec![],
    }
}

async fn propfind(http: &reqwest::Client, url: &str, user: &str, pw: &str) -> (u16, String) {
    let r = http
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), url)
        .basic_auth(user, Some(pw))
        .header("Depth", "1")
        .body(r#"<d:propfind xmlns:d="DAV:"><d:prop><d:displayname/></d:prop></d:propfind>"#)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn https_reload_and_graceful_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    assert!(load_tls(&key, &key).is_err(), "a key is not a certificate");
    assert!(load_tls(&tmp.path().join("missing.pem"), &key).is_err());

    let cfg = CardDavConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(load_tls(&cert, &key).unwrap()),
        accounts: vec![account("phone", "one")],
        ..Default::default()
    };
    let swap = Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone()));
    let server = CardDavServer::bind(swap.clone(), published()).await.unwrap();
    let (plain, tls) = (server.local_addr().unwrap(), server.tls_local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", tls)
        .build()
        .unwrap();
    let home = format!("https://localhost:{}/dav/books/", tls.port());
    let (status, body) = propfind(&https, &home, "phone", "one").await;
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("/dav/books/all/"));
    let vcards = https
        .get(format!("https://localhost:{}/dav/books/all/", tls.port()))
        .basic_auth("phone", Some("one"));
    let text = vcards.send().await.unwrap().text().await.unwrap();
    assert_eq!(text.matches("BEGIN:VCARD").count(), 12);

    // Reload: a new book and a changed password, picked up by the next request on the same connections.
    let http = reqwest::Client::new();
    let plain_home = format!("http://{plain}/dav/books/");
    assert_eq!(propfind(&http, &plain_home, "phone", "one").await.0, 207);
    let mut next = cfg.clone();
    next.accounts = vec![account("phone", "two")];
    next.books.push(BookConfig {
        name: "extra".into(),
        display_name: "Extra".into(),
        group: Some("none".into()),
    });
    swap.store(Arc::new(next));
    assert_eq!(
        propfind(&http, &plain_home, "phone", "one").await.0,
        401,
        "old password refused after reload"
    );
    let (status, body) = propfind(&http, &plain_home, "phone", "two").await;
    assert_eq!(status, 207);
    assert!(body.contains("/dav/books/extra/") && body.contains("Extra"), "{body}");
    let (status, _) = propfind(&https, &home, "phone", "two").await;
    assert_eq!(status, 207);

    // Shutdown: run() returns promptly and the port stops answering.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(12), running)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    let fresh = reqwest::Client::new();
    assert!(fresh.get(format!("http://{plain}/dav/")).send().await.is_err());
}

#[tokio::test]
async fn start_handle_checks_and_applies_reloads() {
    let cfg = CardDavConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        accounts: vec![account("phone", "one")],
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = start(cfg.clone(), published(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let url = format!("http://{}/dav/books/", handle.local_addr.unwrap());
    let http = reqwest::Client::new();
    assert_eq!(propfind(&http, &url, "phone", "one").await.0, 207);
    let mut bad = cfg.clone();
    bad.books.push(BookConfig {
        name: "a b".into(),
        display_name: "x".into(),
        group: None,
    });
    assert!(
        handle.reload(bad, Default::default()).is_err(),
        "an invalid book name is refused and nothing changes"
    );
    assert_eq!(propfind(&http, &url, "phone", "one").await.0, 207);
    let mut next = cfg.clone();
    next.accounts = vec![account("phone", "two")];
    next.listen = Some("127.0.0.2:0".parse().unwrap());
    let change = handle.prepare_listeners(&next).await.unwrap();
    handle.reload(next, change).unwrap();
    let moved = format!("http://{}/dav/books/", handle.addrs().0.unwrap());
    assert!(moved.starts_with("http://127.0.0.2:"), "{moved}");
    assert_eq!(propfind(&http, &moved, "phone", "two").await.0, 207);
    assert_eq!(
        propfind(&http, &url, "phone", "two").await.0,
        207,
        "the client's open keep-alive connection to the old address still works"
    );
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &url)
            .send()
            .await
            .is_err(),
        "the old address no longer accepts new connections"
    );
    let _ = stop.send(());
    handle.join().await.unwrap();
}
