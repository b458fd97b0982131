//! Walks the CardDAV service over real HTTP the way iOS/macOS Contacts, DAVx5, Thunderbird and Linphone do, and
//! checks the vendor phone books. Responses are read with an XML tree parser and every vCard with the tests' own
//! reader plus `vcard4` for 4.0 (`tests/common/vcard.rs`), never with calcard, which wrote them.

#[path = "common/vcard.rs"]
mod vcard_reader;
#[path = "common/xml.rs"]
mod xml_reader;

use entradir::carddav::auth::hash_password;
use entradir::carddav::sample;
use entradir::carddav::sample::snapshot;
use entradir::carddav::xml::{CALSERVER, CARDDAV, DAV};
use entradir::carddav::{Account, BookConfig, CardDavConfig, CardDavServer};
use entradir::directory::{Entry, Published};
use std::collections::HashMap;
use std::sync::Arc;
use vcard_reader::Card;
use xml_reader::{parse, Element};

const USER: &str = "phone";
const PASS: &str = "correct horse";

/// 40 people, changed at versions 1..=5 (so change order differs from id order).
fn initial_people() -> Vec<Entry> {
    (0..40).map(|i| sample::person(i, 1 + (i as u64 * 7) % 5)).collect()
}

struct Server {
    base: String,
    dir: Published,
    /// The running configuration, swapped as a SIGHUP does.
    config: Arc<arc_swap::ArcSwap<CardDavConfig>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(tweak: impl FnOnce(&mut CardDavConfig)) -> Server {
    let mut cfg = CardDavConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        accounts: vec![Account {
            name: USER.into(),
            password_hash: hash_password(PASS).unwrap(),
            networks: vec![],
        }],
        ..Default::default()
    };
    tweak(&mut cfg);
    let dir = Published::new(snapshot(5, initial_people()));
    let config = Arc::new(arc_swap::ArcSwap::from_pointee(cfg));
    let server = CardDavServer::bind(config.clone(), dir.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        dir,
        config,
        _stop: tx,
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: bool,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Client {
    fn new(s: &Server) -> Client {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Client {
            http,
            base: s.base.clone(),
            auth: true,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut rb = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if self.auth {
            rb = rb.basic_auth(USER, Some(PASS));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.body(body.to_string()).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Reply {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    async fn propfind(&self, path: &str, depth: &str, props: &str) -> Vec<Resp> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:card="{CARDDAV}" xmlns:cs="{CALSERVER}"><d:prop>{props}</d:prop></d:propfind>"#
        );
        let r = self
            .send(
                "PROPFIND",
                path,
                &[("Depth", depth), ("Content-Type", "application/xml")],
                &body,
            )
            .await;
        assert_eq!(r.status, 207, "PROPFIND {path}: {}", r.body);
        responses(&r.body)
    }

    async fn report(&self, path: &str, body: &str) -> Reply {
        self.send(
            "REPORT",
            path,
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            body,
        )
        .await
    }
}

/// One `DAV:response`: its href, its status (if a bare status response), and properties by (ns, name) → (status
/// code, element).
#[derive(Debug)]
struct Resp {
    href: String,
    status: Option<u16>,
    props: HashMap<(String, String), (u16, Element)>,
}

impl Resp {
    fn prop(&self, ns: &str, name: &str) -> Option<&Element> {
        self.props
            .get(&(ns.to_string(), name.to_string()))
            .filter(|(s, _)| *s == 200)
            .map(|(_, e)| e)
    }

    fn href_in(&self, ns: &str, name: &str) -> String {
        self.prop(ns, name)
            .and_then(|p| p.child(DAV, "href"))
            .map(|h| h.text.clone())
            .unwrap_or_default()
    }
}

fn code(status: &str) -> u16 {
    status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn multistatus(body: &str) -> Element {
    let root = parse(body.as_bytes()).unwrap_or_else(|e| panic!("unparsable multistatus ({e}): {body}"));
    assert!(root.is(DAV, "multistatus"), "{body}");
    root
}

fn responses(body: &str) -> Vec<Resp> {
    let root = multistatus(body);
    root.children_named(DAV, "response")
        .map(|r| {
            let mut props = HashMap::new();
            for ps in r.children_named(DAV, "propstat") {
                let st = code(&ps.child(DAV, "status").unwrap().text);
                for p in &ps.child(DAV, "prop").unwrap().children {
                    props.insert((p.ns.clone(), p.name.clone()), (st, p.clone()));
                }
            }
            Resp {
                href: r.child(DAV, "href").unwrap().text.clone(),
                status: r.child(DAV, "status").map(|s| code(&s.text)),
                props,
            }
        })
        .collect()
}

fn sync_token(body: &str) -> String {
    multistatus(body)
        .child(DAV, "sync-token")
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// A whole card.
fn vcard(text: &str) -> Card {
    Card::parse(text).unwrap_or_else(|e| panic!("card rejected: {e}\n{text}"))
}

/// A card cut down to selected properties.
fn partial_vcard(text: &str) -> Card {
    Card::read(text).unwrap_or_else(|e| panic!("partial card rejected: {e}\n{text}"))
}

/// Check a card against the sample person it should show.
fn check_card(text: &str, version: &str) -> String {
    let card = vcard(text);
    assert_eq!(card.texts("VERSION"), [version], "{text}");
    let fn_ = card.texts("FN").pop().unwrap();
    let i: usize = fn_.rsplit(' ').next().unwrap().parse().unwrap();
    let expected = sample::person(i, 0);
    assert_eq!(fn_, expected.first_str("displayName").unwrap());
    let tels = card.texts("TEL");
    assert!(tels.contains(&format!("+4930{:07}", 1_000_000 + i)), "{tels:?}");
    for line in text.split("\r\n") {
        assert!(line.len() <= 75, "overlong line {line:?}");
    }
    let has_photo = card.has("PHOTO");
    assert_eq!(has_photo, i.is_multiple_of(10), "{fn_}");
    fn_
}

fn address_data_of(r: &Resp) -> String {
    r.prop(CARDDAV, "address-data")
        .map(|a| a.text.clone())
        .unwrap_or_default()
}

/// Discovery as iOS/macOS Contacts does it: well-known, principal, home, books; then etags and a multiget (3.0).
#[tokio::test]
async fn ios_style_discovery_and_multiget() {
    let s = start(|_| {}).await;
    let c = Client::new(&s);

    let r = c.send("PROPFIND", "/.well-known/carddav", &[("Depth", "0")], "").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "/dav/");

    let anon = Client {
        auth: false,
        ..Client::new(&s)
    };
    let r = anon.send("PROPFIND", "/dav/", &[("Depth", "0")], "").await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm=\"entradir\""));
    let wrong = c
        .http
        .request(reqwest::Method::GET, format!("{}/dav/", s.base))
        .basic_auth(USER, Some("nope"));
    assert_eq!(wrong.send().await.unwrap().status().as_u16(), 401);

    let r = c.send("OPTIONS", "/dav/books/all/", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["dav"], "1, 3, addressbook");
    assert!(r.headers["allow"].to_str().unwrap().contains("REPORT"));

    let root = c
        .propfind("/dav/", "0", "<d:current-user-principal/><d:resourcetype/>")
        .await;
    let principal = root[0].href_in(DAV, "current-user-principal");
    assert_eq!(principal, "/dav/principals/phone/");

    let p = c
        .propfind(
            &principal,
            "0",
            "<card:addressbook-home-set/><d:displayname/><d:principal-URL/>",
        )
        .await;
    let home = p[0].href_in(CARDDAV, "addressbook-home-set");
    assert_eq!(home, "/dav/books/");

    let props = "<d:resourcetype/><d:displayname/><cs:getctag/><d:sync-token/><card:supported-address-data/>\
        <d:current-user-privilege-set/><d:supported-report-set/><x:unknown xmlns:x=\"urn:example:x\"/>";
    let books = c.propfind(&home, "1", props).await;
    let book = books
        .iter()
        .find(|b| {
            b.prop(DAV, "resourcetype")
                .is_some_and(|rt| rt.child(CARDDAV, "addressbook").is_some())
        })
        .expect("an address book");
    assert_eq!(book.href, "/dav/books/all/");
    assert_eq!(book.prop(DAV, "displayname").unwrap().text, "All users");
    let ctag: u64 = book
        .prop(CALSERVER, "getctag")
        .unwrap()
        .text
        .parse()
        .expect("ctag is an integer");
    // Linphone reads the ctag into a C int.
    assert!(ctag <= i32::MAX as u64, "{ctag}");
    assert!(token_number(&book.prop(DAV, "sync-token").unwrap().text) > 0);
    let versions: Vec<&str> = book
        .prop(CARDDAV, "supported-address-data")
        .unwrap()
        .children
        .iter()
        .filter_map(|t| t.attr("version"))
        .collect();
    assert_eq!(versions, ["3.0", "4.0"]);
    let privs: Vec<String> = book
        .prop(DAV, "current-user-privilege-set")
        .unwrap()
        .children
        .iter()
        .flat_map(|p| p.children.iter().map(|c| c.name.clone()))
        .collect();
    assert_eq!(privs, ["read"]);
    let reports: Vec<String> = book
        .prop(DAV, "supported-report-set")
        .unwrap()
        .children
        .iter()
        .filter_map(|sr| {
            sr.child(DAV, "report")
                .and_then(|r| r.children.first())
                .map(|r| r.name.clone())
        })
        .collect();
    assert_eq!(
        reports,
        ["addressbook-multiget", "addressbook-query", "sync-collection"]
    );
    assert_eq!(book.props[&("urn:example:x".to_string(), "unknown".to_string())].0, 404);

    let r = c.send("PROPFIND", &book.href, &[("Depth", "infinity")], "").await;
    assert_eq!(r.status, 403);
    assert!(parse(r.body.as_bytes())
        .unwrap()
        .child(DAV, "propfind-finite-depth")
        .is_some());

    let cards = c.propfind(&book.href, "1", "<d:getetag/><d:getcontenttype/>").await;
    // The same question again is answered from the response cache: same answer, still a well-formed 207.
    let again = c.propfind(&book.href, "1", "<d:getetag/><d:getcontenttype/>").await;
    let etags = |r: &[Resp]| -> Vec<(String, String)> {
        r.iter()
            .map(|x| {
                (
                    x.href.clone(),
                    x.prop(DAV, "getetag").map(|e| e.text.clone()).unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(etags(&cards), etags(&again));
    let cards: Vec<&Resp> = cards.iter().filter(|r| r.href.ends_with(".vcf")).collect();
    assert_eq!(cards.len(), 40);
    for card in &cards {
        let etag = &card.prop(DAV, "getetag").unwrap().text;
        assert!(etag.starts_with('"') && etag.ends_with('"'), "strong etag: {etag}");
        assert!(card.prop(DAV, "getcontenttype").unwrap().text.starts_with("text/vcard"));
    }

    let mut hrefs: String = cards.iter().map(|c| format!("<d:href>{}</d:href>", c.href)).collect();
    hrefs.push_str("<d:href>/dav/books/all/does-not-exist.vcf</d:href>");
    let body = format!(
        r#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:prop><d:getetag/><card:address-data/></d:prop>{hrefs}</card:addressbook-multiget>"#
    );
    let r = c.report(&book.href, &body).await;
    assert_eq!(r.status, 207);
    let got = responses(&r.body);
    assert_eq!(got.len(), 41);
    let missing = got.iter().find(|g| g.href.ends_with("does-not-exist.vcf")).unwrap();
    assert_eq!(missing.status, Some(404));
    let mut names = Vec::new();
    for g in got.iter().filter(|g| g.status.is_none()) {
        names.push(check_card(&address_data_of(g), "3.0"));
        let etag_in_propfind = &cards
            .iter()
            .find(|c| c.href == g.href)
            .unwrap()
            .prop(DAV, "getetag")
            .unwrap()
            .text;
        assert_eq!(&g.prop(DAV, "getetag").unwrap().text, etag_in_propfind);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 40);

    // GET with a strong ETag and If-None-Match.
    let one = &cards[0].href;
    let r = c.send("GET", one, &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("PHOTO;ENCODING=b;TYPE=JPEG:") || !r.body.contains("PHOTO"));
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let r = c.send("GET", one, &[("If-None-Match", &etag)], "").await;
    assert_eq!(r.status, 304);
    let r = c.send("GET", one, &[("If-None-Match", "\"other\"")], "").await;
    assert_eq!(r.status, 200);
    let r = c.send("GET", one, &[("Accept", "text/vcard; version=4.0")], "").await;
    check_card(&r.body, "4.0");
}

/// DAVx5/Thunderbird: initial sync-collection with inline 4.0 data, an incremental sync after a change, a
/// paged sync with DAV:limit, and an unknown token.
#[tokio::test]
async fn sync_collection_like_davx5_and_thunderbird() {
    let s = start(|_| {}).await;
    let c = Client::new(&s);
    let sync = |token: &str, limit: Option<usize>, version: &str| {
        let limit = limit
            .map(|n| format!("<d:limit><d:nresults>{n}</d:nresults></d:limit>"))
            .unwrap_or_default();
        format!(
            r#"<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>{limit}<d:prop><d:getetag/><card:address-data content-type="text/vcard" version="{version}"/></d:prop></d:sync-collection>"#
        )
    };
    let r = c.report("/dav/books/all/", &sync("", None, "4.0")).await;
    assert_eq!(r.status, 207);
    let all = responses(&r.body);
    assert_eq!(all.len(), 40);
    for a in &all {
        check_card(&address_data_of(a), "4.0");
    }
    let token = sync_token(&r.body);
    let number = token_number;
    let first = number(&token);

    // Nothing changed: an empty answer with the same token.
    let r = c.report("/dav/books/all/", &sync(&token, None, "4.0")).await;
    assert!(responses(&r.body).is_empty());
    assert_eq!(sync_token(&r.body), token);

    // Person 3 changes and person 40 joins in version 6.
    let mut people = initial_people();
    let mut changed = sample::person(3, 6);
    changed.attrs.set("title", vec!["CEO".into()]);
    people[3] = changed;
    people.push(sample::person(40, 6));
    s.dir.publish(snapshot(6, people));
    let r = c.report("/dav/books/all/", &sync(&token, None, "3.0")).await;
    let delta = responses(&r.body);
    let mut hrefs: Vec<&str> = delta.iter().map(|d| d.href.as_str()).collect();
    hrefs.sort();
    assert_eq!(
        hrefs,
        [
            format!("/dav/books/all/{}.vcf", sample::person_id(3)),
            format!("/dav/books/all/{}.vcf", sample::person_id(40))
        ]
    );
    let card3 = delta.iter().find(|d| d.href.contains(&sample::person_id(3))).unwrap();
    assert_eq!(vcard(&address_data_of(card3)).texts("TITLE"), ["CEO"]);
    let token6 = sync_token(&r.body);
    assert_eq!(number(&token6), first + 1, "one directory version later");

    // Paged initial sync: 7 per page until done; every card exactly once.
    let mut token = String::new();
    let mut seen: Vec<String> = Vec::new();
    for round in 0.. {
        assert!(round < 20, "paging does not terminate");
        let r = c.report("/dav/books/all/", &sync(&token, Some(7), "3.0")).await;
        assert_eq!(r.status, 207, "{}", r.body);
        let page = responses(&r.body);
        let truncated = page
            .iter()
            .any(|p| p.status == Some(507) && p.href == "/dav/books/all/");
        seen.extend(page.iter().filter(|p| p.status.is_none()).map(|p| p.href.clone()));
        token = sync_token(&r.body);
        if !truncated {
            break;
        }
        assert_eq!(page.iter().filter(|p| p.status.is_none()).count(), 7);
    }
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((n, seen.len()), (41, 41));
    assert_eq!(token, token6);

    // The current token as another replica (another instance) would have handed it out: refused too.
    let (_, number_part) = token6.rsplit_once('.').unwrap();
    let other_replica = format!("urn:entradir:sync:0ther.{number_part}");
    for bad in [
        "urn:entradir:sync:99",
        "http://example.com/other-server-token",
        "urn:entradir:sync:abc",
        other_replica.as_str(),
    ] {
        let r = c.report("/dav/books/all/", &sync(bad, None, "3.0")).await;
        assert_eq!(r.status, 403, "{bad}");
        assert!(parse(r.body.as_bytes())
            .unwrap()
            .child(DAV, "valid-sync-token")
            .is_some());
    }
    // Thunderbird starts over only on 400 (it gives up on 403), so it gets 400 with the same body.
    let tb = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.3.1";
    let body = sync("urn:entradir:sync:99", None, "3.0");
    let r = c.send("REPORT", "/dav/books/all/", &[("User-Agent", tb)], &body).await;
    assert_eq!(r.status, 400);
    assert!(parse(r.body.as_bytes())
        .unwrap()
        .child(DAV, "valid-sync-token")
        .is_some());
}

/// Linphone: getctag as an integer, an addressbook-query with an empty filter, multiget of short relative
/// hrefs in 4.0; plus a TEL reverse lookup and a query limit.
#[tokio::test]
async fn linphone_style_query_and_short_hrefs() {
    let s = start(|_| {}).await;
    let c = Client::new(&s);
    let ctag = c.propfind("/dav/books/all/", "0", "<cs:getctag/><d:sync-token/>").await;
    // Linphone keeps the ctag in a C int.
    let n: Result<i32, _> = ctag[0].prop(CALSERVER, "getctag").unwrap().text.parse();
    assert!(n.is_ok(), "{n:?}");

    let query = |filter: &str, limit: &str| {
        format!(
            r#"<card:addressbook-query xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:prop><d:getetag/></d:prop>{filter}{limit}</card:addressbook-query>"#
        )
    };
    let r = c.report("/dav/books/all/", &query("<card:filter/>", "")).await;
    let all = responses(&r.body);
    assert_eq!(all.len(), 40);
    let r = c.report("/dav/books/all/", &query("", "")).await;
    assert_eq!(responses(&r.body).len(), 40);

    let short: String = all
        .iter()
        .take(5)
        .map(|a| format!("<d:href>{}</d:href>", a.href.rsplit('/').next().unwrap()))
        .collect();
    let body = format!(
        r#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:prop><d:getetag/><card:address-data content-type="text/vcard" version="4.0"/></d:prop>{short}</card:addressbook-multiget>"#
    );
    let got = responses(&c.report("/dav/books/all/", &body).await.body);
    assert_eq!(got.len(), 5);
    for g in &got {
        assert!(!g.href.starts_with('/'), "href echoed as sent");
        check_card(&address_data_of(g), "4.0");
    }

    // Reverse lookup of person 17's number as a PBX would spell it.
    let tel = |mt: &str, n: &str| {
        query(
            &format!(
                r#"<card:filter><card:prop-filter name="TEL"><card:text-match match-type="{mt}">{n}</card:text-match></card:prop-filter></card:filter>"#
            ),
            "",
        )
    };
    for (mt, n) in [
        ("equals", "+49 30 1000017"),
        ("equals", "0301000017"),
        ("ends-with", "1000017"),
    ] {
        let got = responses(&c.report("/dav/books/all/", &tel(mt, n)).await.body);
        let hrefs: Vec<&str> = got.iter().map(|g| g.href.as_str()).collect();
        assert_eq!(
            hrefs,
            [format!("/dav/books/all/{}.vcf", sample::person_id(17))],
            "{mt} {n}"
        );
    }
    let got = responses(
        &c.report("/dav/books/all/", &tel("starts-with", "030 100001"))
            .await
            .body,
    );
    assert_eq!(got.len(), 10);

    let fnq = r#"<card:filter test="anyof"><card:prop-filter name="FN"><card:text-match collation="i;unicode-casemap" match-type="contains">müller</card:text-match></card:prop-filter></card:filter>"#;
    let got = responses(&c.report("/dav/books/all/", &query(fnq, "")).await.body);
    assert_eq!(got.len(), 10);
    let got = responses(
        &c.report(
            "/dav/books/all/",
            &query(fnq, "<card:limit><card:nresults>3</card:nresults></card:limit>"),
        )
        .await
        .body,
    );
    assert_eq!(got.iter().filter(|g| g.status.is_none()).count(), 3);
    assert!(got.iter().any(|g| g.status == Some(507) && g.href == "/dav/books/all/"));

    let bad = r#"<card:filter><card:prop-filter name="FN"><card:text-match collation="i;klingon">x</card:text-match></card:prop-filter></card:filter>"#;
    let r = c.report("/dav/books/all/", &query(bad, "")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("supported-collation"));
}

/// address-data naming properties (RFC 6352 §10.4), as contact pickers ask for names and numbers without photos:
/// only those properties come back (plus BEGIN/VERSION/UID/END), in both versions, in multiget and
/// sync-collection; the same UID as the full card so a client can match them.
#[tokio::test]
async fn address_data_with_selected_properties() {
    let s = start(|_| {}).await;
    let c = Client::new(&s);
    let ids = [0usize, 3, 17];
    let hrefs: String = ids
        .iter()
        .map(|i| format!("<d:href>/dav/books/all/{}.vcf</d:href>", sample::person_id(*i)))
        .collect();
    let multiget = |data: &str| {
        format!(
            r#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:prop><d:getetag/>{data}</d:prop>{hrefs}</card:addressbook-multiget>"#
        )
    };
    let full = responses(
        &c.report("/dav/books/all/", &multiget("<card:address-data/>"))
            .await
            .body,
    );
    let uid_of = |href: &str| {
        let r = full.iter().find(|r| r.href == href).unwrap();
        vcard(&address_data_of(r)).texts("UID")
    };
    for version in ["3.0", "4.0"] {
        let data = format!(
            r#"<card:address-data content-type="text/vcard" version="{version}"><card:prop name="FN"/><card:prop name="tel"/></card:address-data>"#
        );
        let r = c.report("/dav/books/all/", &multiget(&data)).await;
        assert_eq!(r.status, 207, "{}", r.body);
        let got = responses(&r.body);
        assert_eq!(got.len(), ids.len());
        for g in &got {
            let text = address_data_of(g);
            let card = partial_vcard(&text);
            let mut names: Vec<&str> = card.props.iter().map(|p| p.name.as_str()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names, ["BEGIN", "END", "FN", "TEL", "UID", "VERSION"], "{text}");
            assert_eq!(card.texts("VERSION"), [version]);
            // 4.0 writes the UID as a urn:uuid: URI, 3.0 as bare text.
            let bare = |v: Vec<String>| -> Vec<String> {
                v.into_iter()
                    .map(|u| u.trim_start_matches("urn:uuid:").to_string())
                    .collect()
            };
            assert_eq!(bare(card.texts("UID")), bare(uid_of(&g.href)));
            let i: usize = card.texts("FN")[0].rsplit(' ').next().unwrap().parse().unwrap();
            assert!(g.href.contains(&sample::person_id(i)));
            let tels = card.texts("TEL");
            // Work, mobile for every third person, fax for every fifth (all TEL).
            let expect_tels = 1 + usize::from(i.is_multiple_of(3)) + usize::from(i.is_multiple_of(5));
            assert_eq!(tels.len(), expect_tels, "{text}");
            assert!(
                tels.iter().any(|t| t.contains(&format!("{:07}", 1_000_000 + i))),
                "{tels:?}"
            );
            assert!(!text.contains("PHOTO") && !text.contains("EMAIL"), "{text}");
            assert!(
                text.starts_with("BEGIN:VCARD\r\n") && text.ends_with("\r\nEND:VCARD\r\n"),
                "{text:?}"
            );
        }
    }

    // The same selection in a sync-collection: every card cut down, the photo of person 0 left out.
    let body = format!(
        r#"<d:sync-collection xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:sync-token/><d:sync-level>1</d:sync-level><d:prop><d:getetag/><card:address-data><card:prop name="N"/></card:address-data></d:prop></d:sync-collection>"#
    );
    let got = responses(&c.report("/dav/books/all/", &body).await.body);
    assert_eq!(got.len(), 40);
    for g in &got {
        let card = partial_vcard(&address_data_of(g));
        assert_eq!(card.texts("N").len(), 1);
        assert!(card
            .props
            .iter()
            .all(|p| matches!(p.name.as_str(), "BEGIN" | "VERSION" | "N" | "UID" | "END")));
    }
}

/// getctag, sync-token and the collection ETag are per book: a group book keeps them while people outside the
/// group change, and raises them when one of its members changes or leaves; the all-users book follows every
/// person. Old tokens still give the right delta, and a group-only change leaves the all-users book alone.
#[tokio::test]
async fn ctag_and_sync_token_are_per_book() {
    let s = start(|c| {
        c.books.push(BookConfig {
            name: "team".into(),
            display_name: "Team".into(),
            group: Some("Team".into()),
        })
    })
    .await;
    let client = Client::new(&s);
    let c = &client;
    let mut people = initial_people();
    let team = |people: &[Entry], ids: &[usize], usn: u64| {
        let members: Vec<&Entry> = ids.iter().map(|i| &people[*i]).collect();
        sample::group("Team", &members, usn)
    };
    let publish = |version: u64, people: &[Entry], extra: Vec<Entry>| {
        let mut all = people.to_vec();
        all.extend(extra);
        s.dir.publish(snapshot(version, all));
    };
    publish(6, &people, vec![team(&people, &[1, 2, 3], 6)]);

    // (getctag, sync-token, getetag) of both books as a client's collection listing shows them.
    let state = move || async move {
        let books = c
            .propfind("/dav/books/", "1", "<cs:getctag/><d:sync-token/><d:getetag/>")
            .await;
        let get = |href: &str| {
            let b = books.iter().find(|b| b.href == href).unwrap();
            let ctag: u64 = b
                .prop(CALSERVER, "getctag")
                .unwrap()
                .text
                .parse()
                .expect("integer ctag");
            let token = b.prop(DAV, "sync-token").unwrap().text.clone();
            let etag = b.prop(DAV, "getetag").unwrap().text.clone();
            // The collection ETag is the ctag; the token's number is the book's change version.
            assert_eq!(etag, format!("\"{ctag}\""));
            assert!(token_number(&token) > 0);
            (ctag, token)
        };
        (get("/dav/books/all/"), get("/dav/books/team/"))
    };
    let sync = move |book: &str, token: &str| {
        let body = format!(
            r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
        );
        let path = format!("/dav/books/{book}/");
        async move {
            let r = c.report(&path, &body).await;
            assert_eq!(r.status, 207, "{}", r.body);
            let mut items: Vec<(String, u16)> = responses(&r.body)
                .into_iter()
                .map(|x| {
                    let id = x.href.rsplit('/').next().unwrap().trim_end_matches(".vcf").to_string();
                    (id, x.status.unwrap_or(200))
                })
                .collect();
            items.sort();
            (items, sync_token(&r.body))
        }
    };
    let (all6, team6) = state().await;
    let (members, _) = sync("team", "").await;
    assert_eq!(members.len(), 3);

    // Someone outside the group changes: only the all-users book moves.
    people[10] = sample::person(10, 7);
    people[10].attrs.retain(|a| a.name.as_ref() != "title");
    publish(7, &people, vec![team(&people, &[1, 2, 3], 6)]);
    let (all7, team7) = state().await;
    assert_eq!(team7, team6, "an unrelated change must not touch the group book");
    assert!(
        all7.0 != all6.0 && token_number(&all7.1) > token_number(&all6.1),
        "{all7:?} after {all6:?}"
    );
    assert_eq!(sync("team", &team6.1).await, (vec![], team6.1.clone()));
    assert_eq!(
        sync("all", &all6.1).await,
        (vec![(sample::person_id(10), 200)], all7.1.clone())
    );

    // A group-only change (the group's description) moves the group book, not the all-users book.
    let mut g = team(&people, &[1, 2, 3], 8);
    g.attrs.push(entradir::directory::Attribute {
        name: "description".into(),
        values: vec![bytes::Bytes::from_static(b"the team")],
    });
    publish(8, &people, vec![g]);
    let (all8, team8) = state().await;
    assert_eq!(all8, all7);
    assert!(team8.0 != team7.0 && token_number(&team8.1) > token_number(&team7.1));

    // Member 2 leaves the group (the directory rewrites the group's members and person 2's memberOf): the group
    // book's ctag changes and its delta from the old token reports the card as gone.
    people[2] = sample::person(2, 9);
    people[2].attrs.retain(|a| a.name.as_ref() != "memberOf");
    publish(9, &people, vec![team(&people, &[1, 3], 9)]);
    let (all9, team9) = state().await;
    assert!(
        team9.0 != team8.0 && token_number(&team9.1) > token_number(&team8.1),
        "{team9:?} after {team8:?}"
    );
    assert!(all9.0 != all8.0 && token_number(&all9.1) > token_number(&all8.1));
    assert_eq!(
        sync("team", &team8.1).await,
        (vec![(sample::person_id(2), 404)], team9.1.clone())
    );
    // The oldest team token still gives the whole change since then: person 2 gone, nothing new. (People who
    // changed outside the group in between are reported gone as well: harmless for hrefs the client never had,
    // and the book cannot tell who was a member at an older version.)
    let (delta, token) = sync("team", &team6.1).await;
    assert_eq!(token, team9.1);
    assert!(delta.contains(&(sample::person_id(2), 404)), "{delta:?}");
    assert!(
        delta
            .iter()
            .all(|(id, code)| *code == 404 && *id != sample::person_id(1) && *id != sample::person_id(3)),
        "{delta:?}"
    );
    let (members, _) = sync("team", "").await;
    assert_eq!(members, [(sample::person_id(1), 200), (sample::person_id(3), 200)]);

    // A nested group joins the team: persons 4 and 5 enter the book although their own entries did not change,
    // so the directory's change history does not name them; the delta must still bring their cards.
    let sub = sample::group("Sub", &[&people[4], &people[5]], 5);
    let with_sub = |usn: u64| sample::group("Team", &[&people[1], &people[3], &sub], usn);
    publish(10, &people, vec![with_sub(10), sub.clone()]);
    let (_, team10) = state().await;
    // A reload that changes nothing in the books (a certificate renewal, say) keeps tokens and what they need.
    let same = (**s.config.load()).clone();
    s.config.store(Arc::new(same));
    let (delta, token) = sync("team", &team9.1).await;
    assert_eq!(token, team10.1);
    for i in [4, 5] {
        assert!(
            delta.contains(&(sample::person_id(i), 200)),
            "person {i} joined: {delta:?}"
        );
    }
    // ... and taken out again: their cards are gone from the book.
    publish(11, &people, vec![team(&people, &[1, 3], 11), sub.clone()]);
    let (_, team11) = state().await;
    let (delta, token) = sync("team", &team10.1).await;
    assert_eq!(token, team11.1);
    for i in [4, 5] {
        assert!(
            delta.contains(&(sample::person_id(i), 404)),
            "person {i} left: {delta:?}"
        );
    }
    let (members, _) = sync("team", "").await;
    assert_eq!(members, [(sample::person_id(1), 200), (sample::person_id(3), 200)]);
}

/// Writes are refused with need-privileges; bad bodies get 400/413 with reasons; anonymous networks read.
#[tokio::test]
async fn refusals_limits_and_anonymous_read() {
    let s = start(|c| {
        c.anonymous_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.max_body_bytes = 64 * 1024;
        c.books.push(BookConfig {
            name: "r-and-d".into(),
            display_name: "R&D".into(),
            group: Some("nope".into()),
        });
    })
    .await;
    let c = Client::new(&s);
    let card = format!("/dav/books/all/{}.vcf", sample::person_id(1));
    for m in [
        "PUT",
        "DELETE",
        "MKCOL",
        "PROPPATCH",
        "MOVE",
        "COPY",
        "LOCK",
        "UNLOCK",
        "POST",
    ] {
        let r = c.send(m, &card, &[], "BEGIN:VCARD\r\nEND:VCARD\r\n").await;
        assert_eq!(r.status, 403, "{m}");
        let err = parse(r.body.as_bytes()).unwrap();
        assert!(
            err.is(DAV, "error") && err.child(DAV, "need-privileges").is_some(),
            "{m}: {}",
            r.body
        );
    }
    let r = c
        .send(
            "PROPFIND",
            "/dav/",
            &[("Depth", "0")],
            "<d:propfind xmlns:d=\"DAV:\"><d:prop>",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("malformed"), "{}", r.body);
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d:propfind xmlns:d="DAV:"><d:prop>&x;</d:prop></d:propfind>"#;
    let r = c.send("PROPFIND", "/dav/", &[("Depth", "0")], xxe).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("DOCTYPE"), "{}", r.body);
    let huge = format!(
        "<d:propfind xmlns:d=\"DAV:\"><d:prop>{}</d:prop></d:propfind>",
        "<d:getetag/>".repeat(10_000)
    );
    let r = c.send("PROPFIND", "/dav/", &[("Depth", "0")], &huge).await;
    assert_eq!(r.status, 413);
    let r = c
        .send(
            "REPORT",
            "/dav/books/all/",
            &[],
            "<x:unknown-report xmlns:x=\"urn:x\"/>",
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c.send("PROPFIND", "/dav/books/nope/", &[("Depth", "0")], "").await;
    assert_eq!(r.status, 404);

    // The group book exists even though its group does not: empty, not an error.
    let books = c.propfind("/dav/books/", "1", "<d:displayname/>").await;
    assert!(books
        .iter()
        .any(|b| b.href == "/dav/books/r-and-d/" && b.prop(DAV, "displayname").unwrap().text == "R&D"));
    let members = c.propfind("/dav/books/r-and-d/", "1", "<d:getetag/>").await;
    assert_eq!(members.len(), 1);

    let anon = Client {
        auth: false,
        ..Client::new(&s)
    };
    let p = anon.propfind("/dav/", "0", "<d:current-user-principal/>").await;
    assert_eq!(
        p[0].href_in(DAV, "current-user-principal"),
        "/dav/principals/anonymous/"
    );
    assert_eq!(anon.send("GET", &card, &[], "").await.status, 200);
}

/// (tag, attributes, text) of every element in document order.
type XmlEvent = (String, Vec<(String, String)>, String);

fn xml_events(body: &str) -> Vec<XmlEvent> {
    let root = xml_reader::parse_allowing_doctype(body.as_bytes()).unwrap_or_else(|e| panic!("bad XML {e}: {body}"));
    xml_reader::descendants(&root)
        .into_iter()
        .map(|e| (e.name.clone(), e.attrs.clone(), e.text.clone()))
        .collect()
}

fn texts_of(ev: &[XmlEvent], tag: &str) -> Vec<String> {
    ev.iter()
        .filter(|(n, _, _)| n == tag)
        .map(|(_, _, t)| t.trim().to_string())
        .collect()
}

#[tokio::test]
async fn vendor_phone_books() {
    let s = start(|c| c.phonebook_number_format = entradir::carddav::NumberFormat::National).await;
    let c = Client::new(&s);
    let get = |path: &'static str| {
        let c = &c;
        async move {
            let r = c.send("GET", path, &[], "").await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.headers["content-type"], "text/xml; charset=utf-8");
            r.body
        }
    };
    let y = xml_events(&get("/phonebook/yealink.xml").await);
    assert_eq!(y[0].0, "YealinkIPPhoneDirectory");
    let names = texts_of(&y, "Name");
    assert_eq!(names.len(), 40);
    assert!(names.contains(&"Jürgen Smith & Sons 21".to_string()), "{names:?}");
    // In AD's order (the Unicode collation), not by code point: Ólafur among the O's, not after Zoë.
    let first = |p: &str| names.iter().position(|n| n.starts_with(p)).expect(p);
    let last = |p: &str| names.iter().rposition(|n| n.starts_with(p)).expect(p);
    assert!(
        last("Marie-Claire") < first("Ólafur") && last("Ólafur") < first("Sven"),
        "{names:?}"
    );
    assert!(last("Sven") < first("Zoë"), "{names:?}");
    let tels = texts_of(&y, "Telephone");
    assert!(tels.contains(&"0301000011".to_string()), "national format: {tels:?}");
    assert!(tels.contains(&"01712000003".to_string()), "{tels:?}");

    let raw = get("/phonebook/all/snom.xml").await;
    assert!(raw.contains("<tbook e='2' version='2.0'"));
    let sn = xml_events(&raw);
    assert_eq!(sn.iter().filter(|e| e.0 == "contact").count(), 40);
    // Every tenth sample person has a photo: Snom gets it as base64 JPEG, unless asked to leave photos out.
    let photos = texts_of(&sn, "photo");
    assert_eq!(photos.len(), 4);
    for p in &photos {
        use base64::Engine as _;
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(p.trim())
            .expect("base64 photo");
        assert_eq!(jpeg[..2], [0xff, 0xd8], "a JPEG");
    }
    let without = xml_events(&get("/phonebook/all/snom.xml?photos=0").await);
    assert_eq!(without.iter().filter(|e| e.0 == "contact").count(), 40);
    assert!(texts_of(&without, "photo").is_empty());
    let post = c.send("POST", "/phonebook/snom.xml?q=zo%C3%AB", &[], "").await;
    assert_eq!(post.status, 200);
    assert_eq!(xml_events(&post.body).iter().filter(|e| e.0 == "contact").count(), 4);

    let ci = xml_events(&get("/phonebook/cisco.xml").await);
    let entries = ci.iter().filter(|e| e.0 == "DirectoryEntry").count();
    assert_eq!(entries, 32, "a Cisco page holds 32 entries");
    let next: Vec<String> = texts_of(&ci, "URL")
        .into_iter()
        .filter(|u| u.contains("page=2"))
        .collect();
    assert_eq!(next.len(), 1, "{ci:?}");
    assert!(next[0].starts_with(&s.base), "absolute soft-key URL: {next:?}");
    let r = c.send("GET", &next[0], &[], "").await;
    let p2 = xml_events(&r.body);
    // 40 work numbers + 14 mobiles (every third person) = 54 rows → 22 on page 2.
    assert_eq!(p2.iter().filter(|e| e.0 == "DirectoryEntry").count(), 22);
    let found = xml_events(&c.send("GET", "/phonebook/cisco.xml?q=1000017", &[], "").await.body);
    assert_eq!(texts_of(&found, "Name")[0], "Ayşe O'Brien 17");
    assert_eq!(found.iter().filter(|e| e.0 == "DirectoryEntry").count(), 1);
    let search = xml_events(&get("/phonebook/cisco-search.xml").await);
    assert_eq!(texts_of(&search, "QueryStringParam"), ["q"]);

    let gs = xml_events(&get("/phonebook/grandstream.xml").await);
    assert_eq!(gs[0].0, "AddressBook");
    assert_eq!(gs.iter().filter(|e| e.0 == "Contact").count(), 40);
    let fv_raw = get("/phonebook/fanvil.xml").await;
    let fv = xml_events(&fv_raw);
    assert_eq!(fv[0].0, "FanvilIPPhoneDirectory");
    assert!(texts_of(&fv, "Name").iter().all(|n| !n.contains('&')));
    assert!(texts_of(&fv, "Name").contains(&"Jürgen Smith + Sons 21".to_string()));
    let gg = xml_events(&get("/phonebook/gigaset.xml").await);
    let entry = gg.iter().find(|e| e.0 == "entry").unwrap();
    assert!(entry.1.iter().any(|(k, _)| k == "surname") && entry.1.iter().any(|(k, _)| k == "office1"));
    assert_eq!(c.send("GET", "/phonebook/unknown.xml", &[], "").await.status, 404);
    assert_eq!(
        c.send("GET", "/phonebook/nobook/yealink.xml", &[], "").await.status,
        404
    );
}

/// The number in a sync token `urn:entradir:sync:<instance>.<n>` (the book's change version plus the epoch).
fn token_number(token: &str) -> u64 {
    let rest = token
        .strip_prefix("urn:entradir:sync:")
        .expect("an entradir sync token");
    let (instance, n) = rest.split_once('.').expect("<instance>.<n>");
    assert!(!instance.is_empty(), "{token}");
    n.parse().expect("a number after the instance")
}
