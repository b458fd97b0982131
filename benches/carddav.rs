//! CardDAV by hand: a 10k-person book (10 % with photos) served on 127.0.0.1 and queried over HTTP the way
//! clients do. Prints time and response bytes for the initial sync-collection with address-data, a PROPFIND
//! Depth 1 of etags, a TEL reverse-lookup query, a 10-change incremental sync and getctag.
//!
//! Run: `cargo bench --bench carddav` (optionally `-- 20000` for another book size).

use entradir::carddav::sample::snapshot;
use entradir::carddav::{sample, Account, CardDavConfig, CardDavServer};
use entradir::directory::{Entry, Published};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Bench {
    http: reqwest::Client,
    base: String,
}

impl Bench {
    async fn call(&self, method: &str, path: &str, depth: &str, body: String) -> (u16, usize) {
        let (status, body) = self.call_text(method, path, depth, body).await;
        (status, body.len())
    }

    async fn call_text(&self, method: &str, path: &str, depth: &str, body: String) -> (u16, String) {
        let r = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.base),
            )
            .basic_auth("bench", Some("bench"))
            .header("Depth", depth)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// The book's current sync token (its number is the service's epoch plus a directory version).
    async fn sync_token(&self, path: &str) -> String {
        let body = r#"<d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>"#;
        let (status, text) = self.call_text("PROPFIND", path, "0", body.to_string()).await;
        assert_eq!(status, 207);
        let start = text.find("<D:sync-token>").expect("sync-token") + "<D:sync-token>".len();
        let end = start + text[start..].find('<').expect("end of sync-token");
        text[start..end].to_string()
    }

    /// The first answer (computed from the warmed card cache) and the best of the repeats (identical requests on
    /// the same snapshot are answered from the response cache, as for a fleet of phones).
    async fn measure(&self, name: &str, runs: usize, method: &str, path: &str, depth: &str, body: &str) {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let (status, n) = self.call(method, path, depth, body.to_string()).await;
            times.push(t.elapsed());
            assert!(status == 207 || status == 200, "{name}: HTTP {status}");
            bytes = n;
        }
        let cold = times[0];
        let best = times.iter().min().copied().unwrap_or_default();
        println!(
            "{name:<44} {:>10.2} ms {:>10.2} ms {:>12} bytes",
            ms(cold),
            ms(best),
            bytes
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let people: Vec<Entry> = (0..n).map(|i| sample::person(i, 1 + (i as u64 % 50))).collect();
    let dir = Published::new(snapshot(50, people.clone()));
    let cfg = CardDavConfig {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        accounts: vec![Account {
            name: "bench".into(),
            password_hash: entradir::carddav::auth::hash_password("bench").expect("hash"),
            networks: vec![],
        }],
        ..Default::default()
    };
    let server = CardDavServer::bind(Arc::new(arc_swap::ArcSwap::from_pointee(cfg)), dir.clone())
        .await
        .expect("bind");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    tokio::spawn(server.run(std::future::pending()));
    let b = Bench {
        http: reqwest::Client::new(),
        base,
    };
    // Let the start-up warm-up finish, as it would long before the first phone asks, and authenticate once
    // (argon2 runs once per account and password, then the verification is cached).
    tokio::time::sleep(Duration::from_millis(500 + n as u64 / 10)).await;
    let (status, _) = b.call("GET", "/dav/", "0", String::new()).await;
    assert_eq!(status, 200);
    // Loopback TCP needs a few megabytes before its windows are grown; a phone on a LAN pays that once per
    // connection as well, so it is not counted against the server: one unrelated large GET first.
    let (status, _) = b.call("GET", "/dav/books/all/", "0", String::new()).await;
    assert_eq!(status, 200);

    println!("CardDAV benchmark: {n} people, {} with photos", n / 10);
    println!("{:<44} {:>13} {:>13} {:>18}", "", "first", "repeat", "response");
    let sync = |token: &str| {
        format!(
            r#"<d:sync-collection xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/><c:address-data/></d:prop></d:sync-collection>"#
        )
    };
    b.measure(
        "initial sync-collection with address-data",
        5,
        "REPORT",
        "/dav/books/all/",
        "1",
        &sync(""),
    )
    .await;
    b.measure(
        "PROPFIND Depth 1 getetag",
        5,
        "PROPFIND",
        "/dav/books/all/",
        "1",
        r#"<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#,
    )
    .await;
    let tel = format!(
        r#"<c:addressbook-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><c:address-data/></d:prop><c:filter><c:prop-filter name="TEL"><c:text-match match-type="equals">+49 30 {:07}</c:text-match></c:prop-filter></c:filter></c:addressbook-query>"#,
        1_000_000 + n / 2
    );
    b.measure(
        "TEL reverse lookup (addressbook-query)",
        5,
        "REPORT",
        "/dav/books/all/",
        "1",
        &tel,
    )
    .await;
    b.measure(
        "getctag (PROPFIND Depth 0)",
        5,
        "PROPFIND",
        "/dav/books/all/",
        "0",
        r#"<d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/></d:prop></d:propfind>"#,
    )
    .await;

    let token = b.sync_token("/dav/books/all/").await;
    let mut next = people;
    for i in (0..10).map(|k| k * (n / 10).max(1)) {
        next[i] = sample::person(i, 51);
        next[i].attrs.retain(|a| a.name.as_ref() != "title");
    }
    dir.publish(snapshot(51, next));
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.measure(
        "incremental sync-collection (10 changes)",
        5,
        "REPORT",
        "/dav/books/all/",
        "1",
        &sync(&token),
    )
    .await;
}
