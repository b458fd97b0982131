//! The XML phone books, CardDAV and `/lookup` of the shipped binary as an admin shapes them: shared mailboxes
//! and room accounts hidden through `directory.exclude_groups` (nested groups too) while LDAP still serves them,
//! the kinds and order of numbers a desk phone lists, and a vendor cap that serves a large book in pages.
//! A SIGHUP that changes these rules applies without a restart; a bad value is refused naming the field.

mod common;

use common::binary::{config_head, free_port, ldapsearch, run_ready, sighup, start_sim, wait_for, Proc, BIN};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PAULA: &str = "00000000-0000-4000-8000-00000000b001";
const ROOM: &str = "00000000-0000-4000-8000-00000000b002";
const MAILBOX: &str = "00000000-0000-4000-8000-00000000b003";
const HILDE: &str = "00000000-0000-4000-8000-00000000c001";

/// `curl -s` with `args`: status and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (Debian package curl) is installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("the status line");
    (status.trim().parse().unwrap(), body.to_string())
}

/// A JSON request to the simulator's control API: its status and answer.
fn sim(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (status, text) = curl(&[
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body.to_string(),
        &url,
    ]);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn user(id: &str, given: &str, sn: &str, extra: Value) -> Value {
    let nick = id.rsplit('-').next().unwrap();
    let mut u = json!({"id": id, "displayName": format!("{given} {sn}"), "givenName": given, "surname": sn,
        "userPrincipalName": format!("{nick}@contoso.example"), "mailNickname": nick});
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

/// The config, with `carddav` lines and `directory` lines added; loopback reads without credentials unless
/// `carddav` says otherwise.
fn write_config(dir: &Path, sim: u16, ports: (u16, u16, u16), directory: &str, carddav: &str) {
    let (http, ldap, admin) = ports;
    let anonymous = if carddav.contains("anonymous_networks") {
        ""
    } else {
        "anonymous_networks = [\"127.0.0.0/8\"]"
    };
    let carddav = format!("{anonymous}\n{carddav}");
    let cfg = config_head(dir, sim, "org_contacts = true", directory)
        + &format!(
            r#"[ldap]
listen = "127.0.0.1:{ldap}"
allow_anonymous = true

[carddav]
listen = "127.0.0.1:{http}"
{carddav}

[admin]
listen = "127.0.0.1:{admin}"

# Graph has home numbers on org contacts only; AD's homePhone is not mapped by default.
[mapping.contact]
homePhone = "phones[type=home].number | phone"
"#
        );
    std::fs::write(dir.join("entradir.toml"), cfg).unwrap();
}

/// `/lookup/number?n=…` (curl URL-encodes the number): status and body.
fn lookup(http: u16, n: &str) -> (u16, String) {
    let param = format!("n={n}");
    curl(&[
        "-G",
        "--data-urlencode",
        &param,
        &format!("http://127.0.0.1:{http}/lookup/number"),
    ])
}

fn get(http: u16, path: &str) -> String {
    let (status, body) = curl(&[&format!("http://127.0.0.1:{http}{path}")]);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The `<Name>`s of a Yealink book, in its order.
fn yealink_names(xml: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("Name"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

/// The numbers one person is listed with in a Yealink book.
fn yealink_numbers(xml: &str, name: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let entry = doc
        .descendants()
        .filter(|n| n.has_tag_name("DirectoryEntry"))
        .find(|e| e.children().any(|c| c.has_tag_name("Name") && c.text() == Some(name)))
        .unwrap_or_else(|| panic!("{name} in {xml}"));
    entry
        .children()
        .filter(|c| c.has_tag_name("Telephone"))
        .map(|c| c.text().unwrap_or_default().to_string())
        .collect()
}

/// `(first last)` of every contact of a Snom `tbook`.
fn snom_names(xml: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("contact"))
        .map(|c| {
            let field = |t: &str| {
                c.children()
                    .find(|x| x.has_tag_name(t))
                    .and_then(|x| x.text())
                    .unwrap_or_default()
                    .to_string()
            };
            format!("{} {}", field("first_name"), field("last_name"))
        })
        .collect()
}

fn check_config(dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.join("entradir.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn exclusions_number_order_and_caps_shape_every_book() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(40, 3, 0, 31);
    let add = |u: Value| assert_eq!(sim(sim_port, "POST", "/_sim/users", &u).0, 201, "{u}");
    add(user(
        PAULA,
        "Paula",
        "Visible",
        json!({"businessPhones": ["030 5551001"], "mobilePhone": "0151 55510010"}),
    ));
    let hilde = json!({"id": HILDE, "displayName": "Hilde Home", "givenName": "Hilde", "surname": "Home",
        "phones": [{"type": "business", "number": "030 5554004"}, {"type": "mobile", "number": "0151 55540040"},
                   {"type": "home", "number": "030 9994004"}]});
    assert_eq!(sim(sim_port, "POST", "/_sim/contacts", &hilde).0, 201);
    add(user(ROOM, "Room", "Kepler", json!({"businessPhones": ["030 5552002"]})));
    add(user(
        MAILBOX,
        "Sales",
        "Mailbox",
        json!({"businessPhones": ["030 5553003"]}),
    ));
    // Rooms holds Kepler directly and the shared mailbox through a nested group.
    let group = |name: &str| {
        let (status, v) = sim(sim_port, "POST", "/_sim/groups", &json!({"displayName": name}));
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let (rooms, shared) = (group("Rooms"), group("Shared Mailboxes"));
    for (g, member) in [(&rooms, ROOM), (&shared, MAILBOX), (&rooms, shared.as_str())] {
        let (status, v) = sim(
            sim_port,
            "POST",
            &format!("/_sim/groups/{g}/members"),
            &json!({"id": member}),
        );
        assert_eq!((status, &v["added"]), (200, &json!(true)), "{g} += {member}: {v}");
    }

    let ports = (free_port(), free_port(), free_port());
    let (http, ldap, admin) = ports;
    let excluding = r#"exclude_groups = ["Rooms"]"#;
    let shaped = "phonebook_numbers = [\"mobile\", \"work\"]\nphonebook_max_entries = { snom = 10 }";
    write_config(dir, sim_port, ports, excluding, shaped);
    let (ok, said) = check_config(dir);
    assert!(ok, "{said}");
    let server: Proc = run_ready(&dir.join("entradir.toml"), admin);

    // Hidden from the phone books (directly and through the nested group), CardDAV and caller-ID...
    let book = get(http, "/phonebook/yealink.xml");
    let names = yealink_names(&book);
    assert!(names.contains(&"Paula Visible".to_string()), "{names:?}");
    for hidden in ["Room Kepler", "Sales Mailbox"] {
        assert!(!names.contains(&hidden.to_string()), "{hidden} is excluded: {names:?}");
    }
    let (status, body) = lookup(http, "030 5552002");
    assert_eq!(status, 404, "an excluded room is not a caller: {body}");
    let (status, _) = lookup(http, "030 5551001");
    assert_eq!(status, 200);
    let (status, cards) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("http://127.0.0.1:{http}/dav/books/all/"),
    ]);
    assert_eq!(status, 207, "{cards}");
    assert!(
        cards.contains(PAULA) && !cards.contains(ROOM) && !cards.contains(MAILBOX),
        "{cards}"
    );
    // ...while LDAP, which a PBX admin filters themselves, still has them.
    let ldif = ldapsearch(ldap, None, &["(sn=Kepler)", "cn"]);
    assert!(ldif.contains("cn: Room Kepler"), "{ldif}");

    // Mobile first, home numbers not listed, and not found by a search either.
    assert_eq!(
        yealink_numbers(&book, "Paula Visible"),
        ["+4915155510010", "+49305551001"]
    );
    assert_eq!(yealink_numbers(&book, "Hilde Home"), ["+4915155540040", "+49305554004"]);
    let found = get(http, "/phonebook/yealink.xml?q=309994004");
    assert!(yealink_names(&found).is_empty(), "home numbers are hidden: {found}");

    // Snom's cap: pages of 10, everyone once, in book order; a page past the end is empty.
    let mut paged = Vec::new();
    for page in 1.. {
        let got = snom_names(&get(http, &format!("/phonebook/snom.xml?page={page}")));
        assert!(got.len() <= 10, "page {page}: {got:?}");
        if got.is_empty() {
            break;
        }
        paged.extend(got);
    }
    assert_eq!(paged.len(), names.len(), "{paged:?}\n{names:?}");
    assert_eq!(snom_names(&get(http, "/phonebook/snom.xml")), paged[..10]);
    assert_eq!(
        yealink_names(&get(http, "/phonebook/yealink.xml")).len(),
        names.len(),
        "yealink has no cap"
    );

    // A reload without the exclusion lists them again; the old order comes back with the defaults.
    write_config(dir, sim_port, ports, "", "");
    sighup(&server);
    wait_for("the reload to list the room", Duration::from_secs(30), || {
        yealink_names(&get(http, "/phonebook/yealink.xml")).contains(&"Room Kepler".to_string())
    });
    let book = get(http, "/phonebook/yealink.xml");
    assert!(yealink_names(&book).contains(&"Sales Mailbox".to_string()));
    assert_eq!(
        yealink_numbers(&book, "Hilde Home"),
        ["+49305554004", "+4915155540040", "+49309994004"]
    );
    assert_eq!(
        yealink_names(&get(http, "/phonebook/yealink.xml?q=309994004")),
        ["Hilde Home"],
        "the home number is listed and found again"
    );
    let (status, body) = lookup(http, "030 5552002");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Room Kepler"), "{body}");

    // Bad values are refused by check-config, naming the field and what is allowed.
    for (carddav, want) in [
        (
            "phonebook_numbers = [\"fax\"]",
            "carddav.phonebook_numbers: unknown kind \"fax\"",
        ),
        ("phonebook_numbers = []", "carddav.phonebook_numbers is empty"),
        (
            "phonebook_numbers = [\"work\", \"Work\"]",
            "carddav.phonebook_numbers lists \"work\" twice",
        ),
        ("phonebook_max_entries = { cisco = 5 }", "cisco pages hold 32 entries"),
        (
            "phonebook_max_entries = { polycom = 5 }",
            "unknown phone book format \"polycom\"",
        ),
        ("phonebook_max_entries = { snom = -1 }", "phonebook_max_entries"),
    ] {
        write_config(dir, sim_port, ports, "", carddav);
        let (ok, said) = check_config(dir);
        assert!(!ok && said.contains(want), "{carddav}: {said}");
    }
}

/// Behind a TLS-terminating proxy on loopback (`trusted_proxies`): the client's address from
/// `X-Forwarded-For` decides `anonymous_networks` (a spoofed left-most entry does not), and the answers' URLs
/// carry the scheme and host the client used. From an address that is not trusted, the headers change nothing.
#[test]
fn a_trusted_proxy_passes_on_the_client_and_its_url() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(40, 2, 0, 5);
    let photo = dir.join("p.jpg");
    std::fs::write(&photo, b"\xff\xd8\xff\xe0 not decoded here \xff\xd9").unwrap();
    assert_eq!(
        sim(
            sim_port,
            "POST",
            "/_sim/users",
            &user(PAULA, "Paula", "Visible", json!({"businessPhones": ["030 5551001"]}))
        )
        .0,
        201
    );
    let upload = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", photo.display()),
        &format!("http://127.0.0.1:{sim_port}/_sim/users/{PAULA}/photo"),
    ]);
    assert_eq!(upload.0, 204, "{}", upload.1);
    let ports = (free_port(), free_port(), free_port());
    let (http, _, admin) = ports;
    let proxied = "anonymous_networks = [\"10.20.0.0/16\"]\ntrusted_proxies = [\"127.0.0.1\"]";
    write_config(dir, sim_port, ports, "", proxied);
    let server: Proc = run_ready(&dir.join("entradir.toml"), admin);
    let lookup = format!("http://127.0.0.1:{http}/lookup/number?n=0305551001");
    let status = |headers: &[&str]| {
        let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
        args.push(&lookup);
        curl(&args).0
    };
    // The proxy itself is not a phone network; a phone behind it is; a client claiming one is not.
    assert_eq!(status(&[]), 401);
    assert_eq!(status(&["X-Forwarded-For: 10.20.3.4"]), 200);
    assert_eq!(status(&["X-Forwarded-For: 10.20.3.4, 192.0.2.77"]), 401);
    assert_eq!(
        status(&["X-Forwarded-For: 10.20.3.4", "X-Forwarded-For: 192.0.2.77"]),
        401
    );
    assert_eq!(status(&["X-Forwarded-For: garbage"]), 401);
    // URLs in answers: what the client asked the proxy for.
    // What a TLS-terminating proxy sends for a phone at 10.20.3.4 that asked for https://dir.example.com/.
    let proxied = |url: &str| {
        curl(&[
            "-H",
            "X-Forwarded-For: 10.20.3.4",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "X-Forwarded-Host: dir.example.com",
            url,
        ])
    };
    let (code, body) = proxied(&lookup);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["photo"], format!("https://dir.example.com/photo/{PAULA}.jpg"), "{v}");
    let (_, page) = proxied(&format!("http://127.0.0.1:{http}/phonebook/cisco.xml"));
    assert!(
        page.contains("https://dir.example.com/phonebook/all/cisco.xml?"),
        "{page}"
    );

    // Without trusted_proxies the same headers are only text: loopback is anonymous (as configured), the
    // address claimed is not what decides, and the URLs are the ones asked.
    write_config(dir, sim_port, ports, "", "trusted_proxies = []");
    sighup(&server);
    wait_for("the reload", Duration::from_secs(30), || status(&[]) == 200);
    assert_eq!(status(&["X-Forwarded-For: 192.0.2.77"]), 200);
    let (_, body) = curl(&[
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Forwarded-Host: evil.example",
        &lookup,
    ]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["photo"], format!("http://127.0.0.1:{http}/photo/{PAULA}.jpg"), "{v}");

    // A bad entry is refused naming the field.
    write_config(dir, sim_port, ports, "", "trusted_proxies = [\"proxy.example\"]");
    let (ok, said) = check_config(dir);
    assert!(
        !ok && said.contains("carddav.trusted_proxies") && said.contains("proxy.example"),
        "{said}"
    );
}
