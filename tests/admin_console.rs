//! The admin console (`/console/` on the admin listener) of the shipped binary, read in a real browser:
//! Debian's Chromium, headless, driven by Playwright (`tests/clients/console_browser.py`, from the venv
//! `scripts/test` creates). The simulator tenant is given the problems the console exists to show: a number
//! nobody can parse, a number two people share, a sAMAccountName two people want, a UPN-CSV row that matches
//! nobody, a user without a number; a PBX account binds and searches with ldapsearch, and one bind fails.
//!
//! curl checks what a browser does not show: the security headers, the bearer token, and the network guard
//! after a reload. Set `ENTRADIR_CONSOLE_SCREENSHOT=docs/console.png` to refresh the README's screenshot.

mod common;

use common::binary::{config_head, free_port, ldapsearch, run_server, sighup, start_sim, wait_for};
use common::venv_bin;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "console-test-token-4711";
const PASSWORD: &str = "console-secret";

/// A JSON request to the simulator's control API; its status.
fn sim(port: u16, method: &str, path: &str, body: &Value) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn user(id: &str, display: &str, upn: &str, created: &str, extra: Value) -> Value {
    let (given, sn) = display.split_once(' ').unwrap();
    let mut u = json!({"id": id, "displayName": display, "givenName": given, "surname": sn,
        "userPrincipalName": upn, "mailNickname": upn.split('@').next().unwrap(),
        "createdDateTime": created, "department": "Console"});
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

/// curl's status, headers and body for a GET with more arguments.
fn get(url: &str, more: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(more)
        .arg(url)
        .output()
        .expect("curl is installed");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        std::fs::read_to_string(headers).unwrap_or_default().to_lowercase(),
        body.to_string(),
    )
}

fn write_config(dir: &Path, sim_port: u16, ports: (u16, u16, u16), networks: &str) {
    let (ldap, http, admin) = ports;
    let cfg = config_head(
        dir,
        sim_port,
        "photos = false",
        &format!("upn_matching_csv = \"{}\"", dir.join("upn.csv").display()),
    ) + &format!(
        r#"[ldap]
listen = "127.0.0.1:{ldap}"

[carddav]
listen = "127.0.0.1:{http}"

[admin]
listen = "127.0.0.1:{admin}"
token_file = "{token}"
{networks}

[[accounts]]
name = "pbx"
password_hash = "{hash}"
"#,
        token = dir.join("admin-token").display(),
        hash = entradir::accounts::hash_password(PASSWORD).unwrap(),
    );
    std::fs::write(dir.join("entradir.toml"), cfg).unwrap();
}

#[test]
fn the_console_shows_what_the_pbx_sees_in_a_real_browser() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let (_sim, sim_port) = start_sim(30, 3, 0, 4242);
    let add = |u: Value| assert_eq!(sim(sim_port, "POST", "/_sim/users", &u), 201, "{u}");
    add(user(
        "00000000-0000-4000-8000-00000000c0a1",
        "Ulla Unparsable",
        "ulla@contoso.example",
        "2020-02-01T00:00:00Z",
        json!({"businessPhones": ["ask the front desk"]}),
    ));
    add(user(
        "00000000-0000-4000-8000-00000000c0a2",
        "Sami Shared",
        "sami@contoso.example",
        "2020-02-01T00:00:00Z",
        json!({"businessPhones": ["+49 30 5550777"]}),
    ));
    add(user(
        "00000000-0000-4000-8000-00000000c0a3",
        "Sina Shared",
        "sina@contoso.example",
        "2020-02-02T00:00:00Z",
        json!({"businessPhones": ["030 555 07 77"]}),
    ));
    // Two people whose UPNs want the same sAMAccountName: the one created first holds it.
    add(user(
        "00000000-0000-4000-8000-00000000c0a4",
        "Jo Doe",
        "jdoe@contoso.example",
        "2019-05-01T00:00:00Z",
        json!({"businessPhones": ["+49 89 4400123"]}),
    ));
    add(user(
        "00000000-0000-4000-8000-00000000c0a5",
        "Jonas Doe",
        "jdoe@fabrikam.example",
        "2021-05-01T00:00:00Z",
        json!({"businessPhones": ["+49 89 4400124"]}),
    ));
    add(user(
        "00000000-0000-4000-8000-00000000c0a6",
        "Nora Nonumber",
        "nora@contoso.example",
        "2020-03-01T00:00:00Z",
        json!({"businessPhones": []}),
    ));
    std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
    std::fs::write(dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("upn.csv"),
        "EntraUPN,LocalUsername\nulla@contoso.example,ulla.u\nleft.long.ago@contoso.example,gone\n",
    )
    .unwrap();
    let ports = (free_port(), free_port(), free_port());
    let (ldap, _, admin) = ports;
    write_config(dir, sim_port, ports, "");
    let server = run_server(&dir.join("entradir.toml"));
    let base = format!("http://127.0.0.1:{admin}");
    wait_for("the server to be ready", Duration::from_secs(60), || {
        get(&format!("{base}/readyz"), &[]).0 == 200
    });

    // The PBX: a bind, a phone-book search as Yealink sends it, a caller-ID lookup; and a bind that fails.
    let pbx = Some(("pbx", PASSWORD));
    let found = ldapsearch(ldap, pbx, &["(|(cn=Sha*)(sn=Sha*))", "cn"]);
    assert!(
        found.contains("Sami Shared") && found.contains("Sina Shared"),
        "{found}"
    );
    ldapsearch(ldap, pbx, &["(telephoneNumber=+49894400123)", "cn"]);
    let refused = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &format!("ldap://127.0.0.1:{ldap}"),
            "-D",
            "pbx",
            "-w",
            "guess",
        ])
        .args(["-b", "DC=contoso,DC=example", "(cn=*)"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a wrong password must not bind");

    // What a browser does not show: the guard and the headers.
    let (status, _, body) = get(&format!("{base}/console/"), &[]);
    assert_eq!(status, 401, "no token, no console: {body}");
    assert!(body.contains("Admin token"), "{body}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, headers, body) = get(&format!("{base}/console/quality"), &["-H", &bearer]);
    assert_eq!(status, 200, "{body}");
    for h in [
        "content-security-policy: default-src 'none'",
        "cache-control: no-store",
        "x-frame-options: deny",
    ] {
        assert!(headers.contains(h), "{h} missing in {headers}");
    }
    assert!(!body.contains("<script"), "the console runs no script");
    let (status, _, body) = get(
        &format!("{base}/console/lookup?q=%3Cscript%3Ealert(1)%3C/script%3E"),
        &["-H", &bearer],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("<script>alert") && (body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;")),
        "input is escaped: {body}"
    );
    // A filter alone (no number or name): every entry it matches is counted, the HTTP part says what it needs.
    let (status, _, body) = get(
        &format!("{base}/console/lookup?q=&filter=(objectClass=*)"),
        &["-H", &bearer],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Type a number or a name"), "{body}");
    let (status, _, body) = get(&format!("{base}/console/lookup?q=%FF%ZZ&filter="), &["-H", &bearer]);
    assert_eq!(
        status, 200,
        "undecodable input is shown, not refused with an error page: {body}"
    );
    let (status, _, body) = get(
        &format!("{base}/console/lookup?q={}", "a".repeat(600)),
        &["-H", &bearer],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("longer than 512"), "{body}");
    let (status, _, _) = get(&format!("{base}/console/"), &["-X", "POST", "-H", &bearer]);
    assert_eq!(status, 405, "the console is read-only");

    // A round that fails (the client secret expired) and rounds after it, one of them throttled: the
    // timeline's material.
    let post_sync = || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                &bearer,
            ])
            .arg(format!("{base}/sync"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0)
    };
    assert_eq!(
        sim(
            sim_port,
            "POST",
            "/_sim/faults",
            &json!({"type": "expireSecret", "expired": true})
        ),
        204
    );
    assert_eq!(
        sim(sim_port, "POST", "/_sim/faults", &json!({"type": "expireAccessTokens"})),
        204
    );
    assert_eq!(post_sync(), 502, "a round with an expired secret fails");
    assert_eq!(
        sim(
            sim_port,
            "POST",
            "/_sim/faults",
            &json!({"type": "expireSecret", "expired": false})
        ),
        204
    );
    add(user(
        "00000000-0000-4000-8000-00000000c0a7",
        "Lena Later",
        "lena@contoso.example",
        "2022-01-01T00:00:00Z",
        json!({"businessPhones": ["+49 40 7770001"]}),
    ));
    assert_eq!(
        sim(
            sim_port,
            "POST",
            "/_sim/faults",
            &json!({"type": "throttle", "requests": 1, "retryAfterSecs": 1})
        ),
        204
    );
    assert_eq!(post_sync(), 200, "a throttled round retries and applies");
    assert_eq!(post_sync(), 200);

    // The browser.
    let facts = json!({
        "rounds": 4,
        "failed_error_words": "secret",
        "unparsable_person": "Ulla Unparsable",
        "unparsable_value": "ask the front desk",
        "shared_number": "+49305550777",
        "shared_by": ["Sami Shared", "Sina Shared"],
        "csv_unmatched_upn": "left.long.ago@contoso.example",
        "csv_unmatched_line": 3,
        "clash_wanted": "jdoe",
        "clash_person": "Jonas Doe",
        "clash_holder": "Jo Doe (jdoe)",
        "no_number_person": "Nora Nonumber",
        "lookup_number_spelling": "089 / 44 00 123",
        "lookup_number_key": "49894400123",
        "lookup_number_person": "Jo Doe",
        "lookup_name_letters": "Sha",
        "lookup_name_people": ["Sami Shared", "Sina Shared"],
        "account": "pbx",
        "shape": "(|(cn=…*)(sn=…*))",
        "failed_bind_name": "pbx",
    });
    let facts_path = dir.join("facts.json");
    std::fs::write(&facts_path, facts.to_string()).unwrap();
    let shot = std::env::var("ENTRADIR_CONSOLE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.join("console.png"));
    let out = Command::new(venv_bin("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/console_browser.py"))
        .arg(&base)
        .arg(TOKEN)
        .arg(&facts_path)
        .arg(&shot)
        .output()
        .expect("the venv's python (scripts/test creates it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser check failed:\n{said}");
    assert!(said.contains("console: all pages checked"), "{said}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");

    // A reload that narrows the console to another network locks loopback out, and says why.
    write_config(dir, sim_port, ports, r#"console_networks = ["192.0.2.0/24"]"#);
    sighup(&server);
    wait_for("the reload to apply", Duration::from_secs(30), || {
        get(&format!("{base}/console/"), &["-H", &bearer]).0 == 403
    });
    let (_, _, body) = get(&format!("{base}/console/"), &["-H", &bearer]);
    assert!(body.contains("192.0.2.0/24") && body.contains("127.0.0.1"), "{body}");
    // The rest of the admin endpoint is not affected.
    assert_eq!(get(&format!("{base}/readyz"), &[]).0, 200);

    // A network that is not one is refused by check-config, naming the key and the value.
    write_config(
        dir,
        sim_port,
        ports,
        r#"console_networks = ["127.0.0.0/8", "10.0.0.0/33"]"#,
    );
    let out = Command::new(common::binary::BIN)
        .args(["check-config", "--config"])
        .arg(dir.join("entradir.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config accepts a bad network: {said}");
    assert!(
        said.contains("admin.console_networks[1]") && said.contains("10.0.0.0/33"),
        "{said}"
    );
}
