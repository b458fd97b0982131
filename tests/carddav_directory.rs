//! The CardDAV directory gateway (draft-daboo-carddav-directory-gateway) as iOS and macOS Contacts use it:
//! the principal names the directory in `CARDDAV:directory-gateway`, the collection says `CARDDAV:directory`,
//! a Depth 1 listing holds no cards, searches (`addressbook-query` on FN and EMAIL, "contains", as Contacts
//! sends them) return at most `max_results` with a 507 when there were more, and sync-collection is refused.
//! Only the accounts in `[carddav.directory] accounts` get it; the home does not list it; bad values are
//! refused by `check-config`. Requests are sent with curl against the binary and the simulator.

mod common;

use common::binary::{config_head, free_port, password_hash, run_ready, start_sim, BIN};
use std::path::Path;
use std::process::Command;

/// curl as `account` (`None`: anonymous): status and body.
fn dav(http: u16, account: Option<&str>, method: &str, path: &str, depth: &str, body: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{http}{path}");
    let auth = account.map(|a| format!("{a}:dir-secret"));
    let mut args = vec!["-s", "-S", "--max-time", "20", "-w", "\n%{http_code}", "-X", method];
    if let Some(a) = &auth {
        args.extend(["-u", a.as_str()]);
    }
    args.extend(["-H", "Content-Type: application/xml; charset=utf-8"]);
    let depth = format!("Depth: {depth}");
    args.extend(["-H", depth.as_str(), "--data-binary", body, url.as_str()]);
    let out = Command::new("curl").args(&args).output().expect("curl is installed");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

/// Every `<D:response>`: its href and the status codes inside it.
fn responses(xml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    doc.descendants()
        .filter(|n| n.has_tag_name(("DAV:", "response")))
        .map(|r| {
            let text = |name: &str| {
                r.descendants()
                    .filter(|n| n.has_tag_name(("DAV:", name)))
                    .filter_map(|n| n.text())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            (text("href"), text("status"))
        })
        .collect()
}

const PRINCIPAL_PROPS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<A:propfind xmlns:A="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><A:prop><C:addressbook-home-set/><C:directory-gateway/><A:displayname/><A:principal-URL/></A:prop></A:propfind>"#;

const COLLECTION_PROPS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<A:propfind xmlns:A="DAV:"><A:prop><A:resourcetype/><A:displayname/><A:supported-report-set/><A:getetag/></A:prop></A:propfind>"#;

/// What Contacts sends when someone types into the search field of a directory.
fn search(text: &str, nresults: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<C:addressbook-query xmlns:A="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><A:prop><A:getetag/><C:address-data/></A:prop><C:filter test="anyof"><C:prop-filter name="FN"><C:text-match collation="i;unicode-casemap" match-type="contains">{text}</C:text-match></C:prop-filter><C:prop-filter name="EMAIL"><C:text-match collation="i;unicode-casemap" match-type="contains">{text}</C:text-match></C:prop-filter></C:filter><C:limit><C:nresults>{nresults}</C:nresults></C:limit></C:addressbook-query>"#
    )
}

fn write_config(dir: &Path, sim: u16, http: u16, admin: u16, directory: &str, extra: &str) {
    let hash = password_hash("dir-secret");
    let cfg = config_head(dir, sim, "", "")
        + &format!(
            r#"[carddav]
listen = "127.0.0.1:{http}"
anonymous_networks = ["127.0.0.0/8"]
{extra}

{directory}

[admin]
listen = "127.0.0.1:{admin}"

[[accounts]]
name = "staff"
password_hash = "{hash}"

[[accounts]]
name = "pbx"
password_hash = "{hash}"
"#
        );
    std::fs::write(dir.join("entradir.toml"), cfg).unwrap();
}

#[test]
fn ios_and_macos_search_the_directory_and_never_sync_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(200, 3, 0, 21);
    let (http, admin) = (free_port(), free_port());
    let section =
        "[carddav.directory]\ndisplay_name = \"Contoso directory\"\naccounts = [\"staff\"]\nmax_results = 5\n\
                   books = [\"team\"]";
    let team = "[[carddav.books]]\nname = \"team\"\ngroup = \"Team Sales\"";
    write_config(dir, sim_port, http, admin, section, team);
    let _server = run_ready(&dir.join("entradir.toml"), admin);

    // The principal names the directory, for the account it is offered to only.
    let (status, xml) = dav(
        http,
        Some("staff"),
        "PROPFIND",
        "/dav/principals/staff/",
        "0",
        PRINCIPAL_PROPS,
    );
    assert_eq!(status, 207, "{xml}");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let gateway = doc
        .descendants()
        .find(|n| n.has_tag_name(("urn:ietf:params:xml:ns:carddav", "directory-gateway")))
        .and_then(|g| g.children().find(|c| c.has_tag_name(("DAV:", "href"))))
        .and_then(|h| h.text())
        .unwrap_or_else(|| panic!("directory-gateway href in {xml}"))
        .to_string();
    assert_eq!(gateway, "/dav/books/directory/");
    let (_, xml) = dav(
        http,
        Some("pbx"),
        "PROPFIND",
        "/dav/principals/pbx/",
        "0",
        PRINCIPAL_PROPS,
    );
    assert!(
        responses(&xml)[0].1.contains("404") && !xml.contains("/dav/books/directory/"),
        "pbx is not offered it: {xml}"
    );
    for who in [Some("pbx"), None] {
        let (status, _) = dav(http, who, "PROPFIND", &gateway, "0", COLLECTION_PROPS);
        assert_eq!(status, 404, "{who:?}");
    }

    // The collection: a directory address book that lists nothing and offers no sync.
    let (status, xml) = dav(http, Some("staff"), "PROPFIND", &gateway, "1", COLLECTION_PROPS);
    assert_eq!(status, 207);
    assert_eq!(responses(&xml).len(), 1, "Depth 1 lists no cards: {xml}");
    assert!(
        xml.contains("directory/>") && xml.contains("Contoso directory"),
        "{xml}"
    );
    assert!(
        xml.contains("addressbook-query") && !xml.contains("sync-collection"),
        "{xml}"
    );
    // Its accounts sync only their small book; the others still get every book.
    let home = |who: &str| -> Vec<String> {
        let (_, xml) = dav(http, Some(who), "PROPFIND", "/dav/books/", "1", COLLECTION_PROPS);
        responses(&xml).into_iter().map(|r| r.0).collect()
    };
    assert_eq!(home("staff"), ["/dav/books/", "/dav/books/team/"]);
    assert_eq!(home("pbx"), ["/dav/books/", "/dav/books/all/", "/dav/books/team/"]);
    let (status, _) = dav(
        http,
        Some("staff"),
        "PROPFIND",
        "/dav/books/all/",
        "0",
        COLLECTION_PROPS,
    );
    assert_eq!(status, 404, "not offered to staff");
    let sync = r#"<A:sync-collection xmlns:A="DAV:"><A:sync-token/><A:sync-level>1</A:sync-level><A:prop><A:getetag/></A:prop></A:sync-collection>"#;
    let (status, body) = dav(http, Some("staff"), "REPORT", &gateway, "1", sync);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("supported-report"), "{body}");

    // A search that matches many: max_results cards, and a 507 for the collection saying there were more,
    // also when the client asked for more.
    let (status, xml) = dav(http, Some("staff"), "REPORT", &gateway, "1", &search("e", 50));
    assert_eq!(status, 207, "{xml}");
    let rs = responses(&xml);
    let cards: Vec<&(String, String)> = rs.iter().filter(|r| r.0.ends_with(".vcf")).collect();
    assert_eq!(cards.len(), 5, "{rs:?}");
    assert!(rs.iter().any(|r| r.0 == gateway && r.1.contains("507")), "{rs:?}");
    assert!(xml.contains("BEGIN:VCARD"), "cards come with their data");
    let (_, xml) = dav(http, Some("staff"), "REPORT", &gateway, "1", &search("e", 2));
    assert_eq!(responses(&xml).iter().filter(|r| r.0.ends_with(".vcf")).count(), 2);
    // A name that one person has: that card, nothing cut.
    let (_, all) = dav(http, Some("pbx"), "REPORT", "/dav/books/all/", "1", &search("e", 1));
    let one_card = roxmltree::Document::parse(&all).unwrap();
    let fn_line = one_card
        .descendants()
        .filter_map(|n| n.text())
        .find_map(|t| {
            t.lines()
                .find(|l| l.starts_with("FN:"))
                .map(|l| l[3..].trim().to_string())
        })
        .expect("an FN line");
    let (_, xml) = dav(http, Some("staff"), "REPORT", &gateway, "1", &search(&fn_line, 50));
    let rs = responses(&xml);
    assert!(
        !rs.is_empty() && rs.iter().all(|r| r.0.ends_with(".vcf")),
        "{fn_line}: {rs:?}"
    );
    assert!(xml.contains(&format!("FN:{fn_line}")));
    let (_, xml) = dav(
        http,
        Some("staff"),
        "REPORT",
        &gateway,
        "1",
        &search("nobody-has-this-name", 50),
    );
    assert!(responses(&xml).is_empty(), "{xml}");
    // A card found there can be fetched from the directory.
    let href = &responses(&dav(http, Some("staff"), "REPORT", &gateway, "1", &search("e", 1)).1)[0].0;
    let (status, card) = dav(http, Some("staff"), "GET", href, "0", "");
    assert_eq!(status, 200, "{href}");
    assert!(card.starts_with("BEGIN:VCARD"), "{card}");

    // Bad configurations name what is wrong.
    for (section, extra, want) in [
        (
            "[carddav.directory]\naccounts = [\"nobody\"]",
            "",
            "no [[accounts]] entry named \"nobody\"",
        ),
        (
            "[carddav.directory]\nmax_results = 0",
            "",
            "carddav.directory.max_results is 0",
        ),
        (
            "[carddav.directory]",
            "[[carddav.books]]\nname = \"directory\"\ngroup = \"Team 1\"",
            "the name \"directory\" is the [carddav.directory] collection's",
        ),
        ("[carddav.directory]\nmax_result = 5", "", "max_result"),
        (
            "[carddav.directory]\nbooks = [\"sales\"]",
            "",
            "carddav.directory.books: no book named \"sales\"",
        ),
    ] {
        write_config(dir, sim_port, http, admin, section, extra);
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(dir.join("entradir.toml"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && said.contains(want), "{section}: {said}");
    }
}
