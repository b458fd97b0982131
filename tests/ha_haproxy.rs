//! Two replicas behind HAProxy, run from `deploy/haproxy/haproxy.cfg` itself (its addresses and ports rewritten
//! for loopback: replica 1 on 127.0.0.11, replica 2 on 127.0.0.12, the proxy on 127.0.0.1). Caller-ID lookups
//! (`ldapsearch`, one new connection each, retried once when the connection fails, as a PBX reconnects) run
//! through the proxy without pause while one replica is killed with `kill -9` and restarted, killed again and
//! started without its state (nothing to serve until its first sync, which is slowed down), and then while both
//! are restarted one after the other with SIGTERM, and while each reloads (SIGHUP): every lookup finds the caller, none fails after its retry,
//! none is answered by a replica that is not ready (an empty answer counts as wrong). Alongside, a Python ldap3
//! client keeps one connection open as a PBX does, and reconnects once when it drops.
//!
//! The second test checks that two replicas present the same directory: a collision whose first holder is
//! deleted before the second replica starts, LDIF exports compared entry by entry, and vdirsyncer syncing
//! through the proxy while its requests alternate between the replicas.

mod common;

use common::binary::{config_head, free_port, haproxy, ldapsearch_at, run_server, start_sim_with, wait_for, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PHONE_PASSWORD: &str = "phone-pw";
const BASE: &str = "DC=contoso,DC=example";

struct Ports {
    ldap: u16,
    http: u16,
    admin: u16,
}

/// One replica: its own state directory, the same ports on its own loopback address.
struct Replica {
    ip: &'static str,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Replica {
    fn new(ip: &'static str, root: &Path, sim: u16, ports: &Ports) -> Replica {
        Replica::with(ip, root, sim, ports, "")
    }

    /// A replica with more `[entra]` settings.
    fn with(ip: &'static str, root: &Path, sim: u16, ports: &Ports, entra: &str) -> Replica {
        let dir = root.join(ip);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
        let cfg = config_head(&dir, sim, entra, "")
            + &format!(
                r#"[ldap]
listen = "{ip}:{ldap}"
allow_anonymous = true

[carddav]
listen = "{ip}:{http}"
anonymous_networks = ["127.0.0.0/8"]

[admin]
listen = "{ip}:{admin}"
drain_period = "3s"

[[accounts]]
name = "phone"
password_hash = "{hash}"
"#,
                ldap = ports.ldap,
                http = ports.http,
                admin = ports.admin,
                hash = entradir::accounts::hash_password(PHONE_PASSWORD).unwrap(),
            );
        std::fs::write(dir.join("entradir.toml"), cfg).unwrap();
        let mut r = Replica { ip, dir, proc: None };
        r.start(ports);
        r
    }

    fn start(&mut self, ports: &Ports) {
        self.spawn();
        let (ip, admin) = (self.ip, ports.admin);
        wait_for("the replica to be ready", Duration::from_secs(60), || {
            readyz(ip, admin) == Some(200)
        });
    }

    /// SIGUSR1: sync now.
    fn sync_now(&self) {
        let p = self.proc.as_ref().expect("running");
        let _ = Command::new("kill").args(["-USR1", &p.0.id().to_string()]).status();
    }

    fn spawn(&mut self) {
        self.proc = Some(run_server(&self.dir.join("entradir.toml")));
    }

    fn kill9(&mut self) {
        drop(self.proc.take()); // Proc's drop is SIGKILL and wait
    }

    /// SIGTERM, and wait until the process has exited.
    fn terminate(&mut self) {
        let mut p = self.proc.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status();
        let start = Instant::now();
        while p.0.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn readyz(ip: &str, port: u16) -> Option<u16> {
    http(ip, port, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// One HTTP/1.1 request; the status.
fn http(ip: &str, port: u16, request: &str) -> Option<u16> {
    http_status(ip, port, request).ok()
}

/// [`http`], saying what went wrong when no status came back.
fn http_status(ip: &str, port: u16, request: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((ip, port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    match out.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
        Some(status) => Ok(status),
        None => Err(format!("read: {read:?} after {} bytes: {out:?}", out.len())),
    }
}

/// Arm (or with `millis` 0, clear) a delay on the simulator's delta responses.
fn delay_graph(sim: u16, millis: u64) {
    let body = format!(r#"{{"type":"delay","millis":{millis},"scope":"delta"}}"#);
    let request = format!(
        "POST /_sim/faults HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        http("127.0.0.1", sim, &request),
        Some(204),
        "the simulator takes the fault"
    );
}

/// One caller-ID lookup through the proxy: the DNs found, or `None` when ldapsearch failed.
fn lookup(port: u16, number: &str) -> Option<Vec<String>> {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-o",
            "nettimeout=10",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
        ])
        .args([
            "-b",
            "DC=contoso,DC=example",
            &format!("(telephoneNumber={number})"),
            "1.1",
        ])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("dn: ").map(str::to_string))
            .collect()
    })
}

/// The shipped HAProxy file pointed at loopback: the proxy's LDAP, LDAPS and HTTP fronts on 127.0.0.1, the
/// replicas at 127.0.0.11 and .12 on `ports`.
fn loopback_proxy_config(ports: &Ports, front_ldap: u16, front_ldaps: u16, front_http: u16) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg")).unwrap();
    let cfg = shipped
        .replace("bind :389", &format!("bind 127.0.0.1:{front_ldap}"))
        .replace("bind :636", &format!("bind 127.0.0.1:{front_ldaps}"))
        .replace("bind :8080", &format!("bind 127.0.0.1:{front_http}"))
        .replace("maxconn 10000", "maxconn 1000")
        .replace("10.0.0.", "127.0.0.")
        .replace(":389 ", &format!(":{} ", ports.ldap))
        .replace(":8080 ", &format!(":{} ", ports.http))
        .replace("port 9180", &format!("port {}", ports.admin));
    assert!(
        cfg.contains(&format!("127.0.0.11:{} check port {}", ports.ldap, ports.admin)),
        "{cfg}"
    );
    cfg
}

/// HAProxy (`haproxy -db`) on `cfg`, its output in `<root>/<name>.log`; the process and the log's path.
fn start_haproxy(root: &Path, name: &str, cfg: &str) -> (Proc, PathBuf) {
    let cfg_path = root.join(format!("{name}.cfg"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let log_path = root.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let proc = Proc(
        haproxy()
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy (Debian package haproxy) is installed"),
    );
    (proc, log_path)
}

#[test]
fn lookups_through_haproxy_survive_kill_9_and_rolling_restarts() {
    let root = tempfile::tempdir().unwrap();
    // Small delta pages, so that a first sync against a slowed-down Graph takes seconds.
    let (_sim, sim_port) = start_sim_with(300, 12, 20, 9, &["--page-size", "25"]);
    let ports = Ports {
        ldap: free_port(),
        http: free_port(),
        admin: free_port(),
    };
    let mut r1 = Replica::new("127.0.0.11", root.path(), sim_port, &ports);
    let mut r2 = Replica::new("127.0.0.12", root.path(), sim_port, &ports);

    // The shipped configuration, pointed at loopback.
    let (front_ldap, front_ldaps, front_http) = (free_port(), free_port(), free_port());
    let cfg = loopback_proxy_config(&ports, front_ldap, front_ldaps, front_http);
    let (_haproxy, log_path) = start_haproxy(root.path(), "haproxy", &cfg);
    let proxy_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // A caller known to both replicas.
    let direct = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            &format!("ldap://127.0.0.11:{}", ports.ldap),
        ])
        .args([
            "-b",
            "DC=contoso,DC=example",
            "(&(objectCategory=person)(telephoneNumber=*))",
            "telephoneNumber",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&direct.stdout).into_owned();
    let dn = text
        .lines()
        .find_map(|l| l.strip_prefix("dn: "))
        .expect("a user")
        .to_string();
    let number = text
        .lines()
        .find_map(|l| l.strip_prefix("telephoneNumber: "))
        .expect("a number")
        .to_string();
    let start = Instant::now();
    while !lookup(front_ldap, &number).is_some_and(|d| d.contains(&dn)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the proxy passes no lookup; its log:\n{}",
            proxy_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Lookups without pause until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, retried, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let caller = {
        let (stop, done, retried, failed) = (stop.clone(), done.clone(), retried.clone(), failed.clone());
        let (number, dn) = (number.clone(), dn.clone());
        std::thread::spawn(move || {
            let mut wrong = Vec::new();
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let answer = lookup(front_ldap, &number).or_else(|| {
                    retried.fetch_add(1, Ordering::Relaxed);
                    lookup(front_ldap, &number)
                });
                match answer {
                    Some(dns) if dns == [dn.clone()] => {}
                    Some(dns) => wrong.push((t0.elapsed().as_millis(), dns)),
                    None => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            wrong
        })
    };
    // The long-lived client (tests/clients/ldap3_caller.py).
    let stop_file = root.path().join("stop-ldap3");
    // Written on the way out, also when an assertion fails first: the client then ends instead of looping on.
    let _stop = StopFile(stop_file.clone());
    let python = Command::new(common::venv_bin("python3"))
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ldap3_caller.py"),
            "127.0.0.1",
            &front_ldap.to_string(),
            "DC=contoso,DC=example",
            &number,
            &dn,
        ])
        .arg(&stop_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 from the venv");
    let settle = || std::thread::sleep(Duration::from_secs(2));
    settle();

    // kill -9 one replica, then bring it back from its state file.
    r1.kill9();
    settle();
    r1.start(&ports);
    settle();

    // A replica that lost its state has nothing to serve until its first sync (slow here): its LDAP port refuses
    // connections until then, so the proxy passes every lookup to the other one; an empty answer would count
    // as wrong. (Listening at once and relying on /readyz alone is not enough: the proxy still holds a replica
    // killed a moment ago for up, and sends it clients until its checks fail.)
    r1.kill9();
    std::fs::remove_dir_all(r1.dir.join("state")).unwrap();
    delay_graph(sim_port, 300);
    r1.spawn();
    let (ip, ldap) = (r1.ip, ports.ldap);
    wait_for("the empty replica's admin endpoint", Duration::from_secs(20), || {
        readyz(ip, ports.admin) == Some(503)
    });
    let unready_since = Instant::now();
    assert!(
        std::net::TcpStream::connect((ip, ldap)).is_err(),
        "LDAP refuses before the first sync"
    );
    wait_for("the first sync", Duration::from_secs(60), || {
        readyz(ip, ports.admin) == Some(200)
    });
    let unready_for = unready_since.elapsed();
    delay_graph(sim_port, 0);
    assert!(
        unready_for > Duration::from_secs(3),
        "the replica was unready only {unready_for:?}: the case is not tested"
    );
    settle();

    // A rolling restart with SIGTERM: each drains (/readyz 503, serving on) before it stops, and the next one
    // goes only when the proxy has the restarted one back (as an admin would check).
    let ups = |name: &str| proxy_log().matches(&format!("Server ldap/{name} is UP")).count();
    let back = |name: &str, before: usize| {
        wait_for("the proxy to take the replica back", Duration::from_secs(20), || {
            ups(name) > before
        })
    };
    let before = ups("r1");
    r1.terminate();
    r1.start(&ports);
    back("r1", before);
    let before = ups("r2");
    r2.terminate();
    r2.start(&ports);
    back("r2", before);
    settle();

    // A reload (SIGHUP) on each in turn, lookups going on.
    for r in [&r1, &r2] {
        let p = r.proc.as_ref().expect("running");
        let _ = Command::new("kill").args(["-HUP", &p.0.id().to_string()]).status();
        settle();
    }

    stop.store(true, Ordering::Relaxed);
    let wrong = caller.join().unwrap();
    let (done, retried, failed) = (
        done.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    assert_eq!(
        failed, 0,
        "{failed} of {done} lookups failed after a retry ({retried} retried)"
    );
    assert!(done > 100, "only {done} lookups ran");
    eprintln!("{done} lookups through HAProxy, {retried} retried once after a dropped connection, none failed");

    std::fs::write(&stop_file, "").unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "the ldap3 client failed");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the ldap3 client's report");
    assert_eq!(stats["failed"], 0, "ldap3: {stats}");
    assert_eq!(stats["wrong"], serde_json::json!([]), "ldap3: {stats}");
    assert!(stats["done"].as_u64() > Some(100), "ldap3: {stats}");
    // Both replicas were restarted, so its connection was dropped at least once.
    assert!(stats["reconnects"].as_u64() >= Some(1), "ldap3: {stats}");
    eprintln!("ldap3 on one connection: {stats}");
}

/// Creates its file when dropped: the stop signal of `tests/clients/ldap3_caller.py`.
struct StopFile(PathBuf);

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// A request to the simulator's control API with a JSON body; the status.
fn sim_call(sim: u16, method: &str, path: &str, body: &serde_json::Value) -> u16 {
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    http_status("127.0.0.1", sim, &request)
        .unwrap_or_else(|e| panic!("the simulator on port {sim}: {method} {path}: {e}"))
}

/// The simulator's tenant as Graph JSON.
fn sim_export(sim: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", sim)).unwrap();
    s.write_all(b"GET /_sim/export HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response") + 4;
    serde_json::from_slice(&out[at..]).expect("export JSON")
}

/// Attributes AD itself keeps per domain controller: update sequence numbers, and when this replica learned of
/// a change. (`whenCreated` is Graph's creation date where Graph has one; organisational contacts have none,
/// and there it is when the replica first saw them.)
const PER_REPLICA: &[&str] = &["uSNCreated", "uSNChanged", "whenChanged"];

/// One replica's LDIF export of the whole tree (ldapsearch, paged), per-replica attributes dropped: DN → the
/// entry's lines as served.
fn ldif_export(ip: &str, port: u16) -> std::collections::BTreeMap<String, Vec<String>> {
    let text = ldapsearch_at(ip, port, None, &["-E", "pr=200/noprompt", "(objectClass=*)", "*"]);
    let mut entries = std::collections::BTreeMap::new();
    for block in text.split("\n\n").filter(|b| b.contains("dn")) {
        let mut lines = block.lines();
        let Some(dn) = lines.next().filter(|l| l.starts_with("dn")) else {
            continue;
        };
        let contact = block.lines().any(|l| l == "objectClass: contact");
        let kept: Vec<String> = lines
            .filter(|l| !PER_REPLICA.iter().any(|a| l.starts_with(&format!("{a}: "))))
            .filter(|l| !(contact && l.starts_with("whenCreated: ")))
            .map(str::to_string)
            .collect();
        entries.insert(dn.to_string(), kept);
    }
    entries
}

/// Where two exports differ, for a readable failure.
fn export_diff(
    a: &std::collections::BTreeMap<String, Vec<String>>,
    b: &std::collections::BTreeMap<String, Vec<String>>,
) -> String {
    let mut out = String::new();
    for dn in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
        if a.get(dn) != b.get(dn) {
            out += &format!("{dn}\n  r1: {:?}\n  r2: {:?}\n", a.get(dn), b.get(dn));
        }
    }
    out
}

/// The sAMAccountName a replica gives the object with this objectGUID (Graph id), by an LDAP search.
fn sam_of(ip: &str, port: u16, id: &str) -> Option<String> {
    let out = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-o", "nettimeout=10"])
        .args(["-H", &format!("ldap://{ip}:{port}"), "-b", BASE])
        .arg(format!("(objectGUID={})", guid_filter(id)))
        .arg("sAMAccountName")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("sAMAccountName: ").map(str::to_string))
}

/// An objectGUID assertion for a GUID string: the 16 bytes in AD's order (the first three groups
/// little-endian), each escaped.
fn guid_filter(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let byte = |i: usize| &hex[2 * i..2 * i + 2];
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    order.iter().map(|&i| format!("\\{}", byte(i))).collect()
}

/// A replica's answer to a PROPFIND of the all-users book for its cards' ETags (as the phone account), card
/// by card.
fn etag_listing(ip: &str, port: u16) -> String {
    use base64::Engine;
    use std::io::{Read, Write};
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("phone:{PHONE_PASSWORD}"));
    let request = format!(
        "PROPFIND /dav/books/all/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 207"), "{out}");
    // The cards' responses only: the headers carry a date, and the book's own ETag (its ctag) is per replica.
    // (Sorted: the order of a listing is each replica's own.)
    let mut cards: Vec<&str> = out
        .split("<D:response>")
        .filter(|r| r.contains(".vcf</D:href>"))
        .collect();
    cards.sort_unstable();
    cards.join("\n")
}

/// A GET as the phone account: the body of a 200 answer.
fn get_as_phone(ip: &str, port: u16, path: &str) -> String {
    use base64::Engine;
    use std::io::{Read, Write};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("phone:{PHONE_PASSWORD}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n");
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The UIDs of the cards vdirsyncer holds for the book `all`.
fn synced_uids(v: &common::Vdirsyncer) -> std::collections::BTreeSet<String> {
    v.cards("all")
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            text.lines().find_map(|l| {
                l.strip_prefix("UID:")
                    .map(|u| u.trim().trim_start_matches("urn:uuid:").to_string())
            })
        })
        .collect()
}

/// The people the all-users book should hold: the tenant's enabled members (no guests) and its contacts.
fn tenant_people(sim: u16) -> std::collections::BTreeSet<String> {
    let x = sim_export(sim);
    let str_of = |o: &serde_json::Value, k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let users = x["users"].as_array().cloned().unwrap_or_default();
    let contacts = x["contacts"].as_array().cloned().unwrap_or_default();
    users
        .iter()
        .filter(|u| u.get("accountEnabled").and_then(|v| v.as_bool()) != Some(false))
        .filter(|u| str_of(u, "userType") != "Guest" && !str_of(u, "userPrincipalName").contains("#EXT#"))
        .chain(contacts.iter())
        .map(|o| str_of(o, "id"))
        .collect()
}

#[test]
fn two_replicas_with_different_histories_present_the_same_directory() {
    let root = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = start_sim_with(80, 8, 10, 31, &[]);
    let ports = Ports {
        ldap: free_port(),
        http: free_port(),
        admin: free_port(),
    };
    // Collisions: two users want `jdoe`, two devices the same computer name, two contacts the same CN (contacts
    // carry no creation date: their ids decide).
    let first = "00000000-0000-4000-8000-00000000f001";
    let second = "00000000-0000-4000-8000-00000000f002";
    let add = |coll: &str, body: serde_json::Value| {
        assert_eq!(
            sim_call(sim_port, "POST", &format!("/_sim/{coll}"), &body),
            201,
            "{body}"
        )
    };
    add(
        "users",
        serde_json::json!({"id": first, "displayName": "John Doe", "mailNickname": "jdoe",
        "userPrincipalName": "jdoe@contoso.example", "createdDateTime": "2019-02-01T08:00:00Z",
        "businessPhones": ["+49 30 5550101"]}),
    );
    add(
        "users",
        serde_json::json!({"id": second, "displayName": "John Doe", "mailNickname": "jdoe",
        "userPrincipalName": "jdoe@fabrikam.example", "createdDateTime": "2021-07-01T08:00:00Z",
        "businessPhones": ["+49 30 5550102"]}),
    );
    let (pc1, pc2) = (
        "00000000-0000-4000-8000-00000000d001",
        "00000000-0000-4000-8000-00000000d002",
    );
    add(
        "devices",
        serde_json::json!({"id": pc1, "displayName": "iPhone", "registrationDateTime": "2020-01-01T00:00:00Z"}),
    );
    add(
        "devices",
        serde_json::json!({"id": pc2, "displayName": "iPhone", "registrationDateTime": "2022-01-01T00:00:00Z"}),
    );
    for id in [
        "00000000-0000-4000-8000-00000000c001",
        "00000000-0000-4000-8000-00000000c002",
    ] {
        add(
            "contacts",
            serde_json::json!({"id": id, "displayName": "Hotline", "mailNickname": "hotline"}),
        );
    }

    // Replica 1 sees both holders; its second jdoe carries a number.
    let mut r1 = Replica::with("127.0.0.11", root.path(), sim_port, &ports, "org_contacts = true");
    assert_eq!(sam_of(r1.ip, ports.ldap, first).as_deref(), Some("jdoe"));
    let numbered = sam_of(r1.ip, ports.ldap, second).expect("the second jdoe");
    assert!(numbered.len() == 8 && numbered.starts_with("jdoe"), "{numbered}");
    assert!(sam_of(r1.ip, ports.ldap, pc2).is_some_and(|s| s != "IPHONE$"));
    let hotline_cns = ldif_export(r1.ip, ports.ldap)
        .keys()
        .filter(|dn| dn.starts_with("dn: CN=Hotline"))
        .count();
    assert_eq!(hotline_cns, 2, "two contacts named Hotline, two DNs");

    // The first holders leave before replica 2 ever starts.
    for (coll, id) in [("users", first), ("devices", pc1)] {
        let path = format!("/_sim/{coll}/{id}?permanent=true");
        let request = format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(http("127.0.0.1", sim_port, &request), Some(204));
    }
    r1.sync_now();
    wait_for("replica 1 to see the departures", Duration::from_secs(30), || {
        sam_of(r1.ip, ports.ldap, first).is_none()
    });
    assert_eq!(
        sam_of(r1.ip, ports.ldap, second).as_deref(),
        Some("jdoe"),
        "the next in rank takes the name"
    );
    assert_eq!(sam_of(r1.ip, ports.ldap, pc2).as_deref(), Some("IPHONE$"));

    let mut r2 = Replica::with("127.0.0.12", root.path(), sim_port, &ports, "org_contacts = true");
    let (e1, e2) = (ldif_export(r1.ip, ports.ldap), ldif_export(r2.ip, ports.ldap));
    assert!(e1.len() > 80, "{} entries", e1.len());
    assert!(e1 == e2, "the exports differ:\n{}", export_diff(&e1, &e2));

    // vdirsyncer through the proxy, its requests alternating between the replicas (round robin instead of the
    // shipped file's per-source stickiness, so that every sync crosses replicas).
    let front_http = free_port();
    let cfg = loopback_proxy_config(&ports, free_port(), free_port(), front_http)
        .replace("balance source", "balance roundrobin");
    assert!(cfg.contains("balance roundrobin"), "{cfg}");
    let (_haproxy, log_path) = start_haproxy(root.path(), "haproxy-rr", &cfg);
    wait_for("the proxy", Duration::from_secs(20), || {
        http(
            "127.0.0.1",
            front_http,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_some()
    });
    let v = common::Vdirsyncer::new(&format!("http://127.0.0.1:{front_http}/"), "phone", PHONE_PASSWORD);
    v.discover("all");
    v.run(&["sync"]);
    let people = tenant_people(sim_port);
    assert!(people.len() > 50);
    assert_eq!(synced_uids(&v), people, "the local copy holds the tenant's people");

    // Changes in the tenant; each replica syncs on its own.
    assert_eq!(
        sim_call(
            sim_port,
            "PATCH",
            &format!("/_sim/users/{second}"),
            &serde_json::json!({"jobTitle": "Head of Phones"})
        ),
        200
    );
    let leaver = sim_export(sim_port)["users"]
        .as_array()
        .and_then(|us| {
            us.iter()
                .filter_map(|u| u["id"].as_str())
                .find(|id| people.contains(*id) && *id != second)
        })
        .expect("a user in the book")
        .to_string();
    let request =
        format!("DELETE /_sim/users/{leaver}?permanent=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(http("127.0.0.1", sim_port, &request), Some(204));
    let newcomer = "00000000-0000-4000-8000-00000000f003";
    add(
        "users",
        serde_json::json!({"id": newcomer, "displayName": "Jane Doe", "mailNickname": "jdoe",
        "userPrincipalName": "jane.doe@contoso.example", "businessPhones": ["+49 30 5550103"]}),
    );
    for r in [&r1, &r2] {
        r.sync_now();
        wait_for("a replica to sync the changes", Duration::from_secs(30), || {
            sam_of(r.ip, ports.ldap, newcomer).is_some()
        });
    }
    // The newcomer wants `jdoe` too and ranks last: nobody is renamed.
    assert_eq!(sam_of(r2.ip, ports.ldap, second).as_deref(), Some("jdoe"));
    let (e1, e2) = (ldif_export(r1.ip, ports.ldap), ldif_export(r2.ip, ports.ldap));
    assert!(
        e1 == e2,
        "the exports differ after the changes:\n{}",
        export_diff(&e1, &e2)
    );

    v.run(&["sync"]);
    assert_eq!(
        synced_uids(&v),
        tenant_people(sim_port),
        "the local copy follows the tenant"
    );
    // Card ETags are the content's, the same on both replicas: syncs that cross replicas fetch nothing more.
    let (l1, l2) = (etag_listing(r1.ip, ports.http), etag_listing(r2.ip, ports.http));
    assert!(l1.matches("getetag>").count() > 100, "{l1}");
    assert_eq!(l1, l2, "both replicas list the same hrefs and ETags");
    for vendor in ["yealink", "snom", "cisco"] {
        let path = format!("/phonebook/all/{vendor}.xml");
        let (b1, b2) = (
            get_as_phone(r1.ip, ports.http, &path),
            get_as_phone(r2.ip, ports.http, &path),
        );
        // (Cisco's is paged: Jane is not on its first page.)
        assert!(vendor == "cisco" || b1.contains("Jane Doe"), "{b1}");
        assert_eq!(b1, b2, "both replicas serve the same {vendor} phone book");
    }
    for _ in 0..2 {
        let log = v.run(&["sync"]);
        assert!(!log.contains("Copying"), "nothing changed, nothing is fetched:\n{log}");
    }
    let card = v
        .cards("all")
        .into_iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|t| t.contains(second))
        .expect("the second jdoe's card");
    assert!(card.contains("Head of Phones"), "{card}");
    let proxy_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for server in ["carddav/r1", "carddav/r2"] {
        assert!(proxy_log.contains(server), "no request went to {server}:\n{proxy_log}");
    }
    drop((r1.proc.take(), r2.proc.take()));
}
