//! The shipped binary, end to end: `entradir graph-sim` as Microsoft's cloud, `entradir run` with a config file,
//! queried with the real `ldapsearch`; reload with a bad and then a good config (SIGHUP), a reload that moves the
//! listen addresses while a client (Python ldap3) keeps its connection, sync on SIGUSR1, graceful stop on SIGTERM
//! with the state persisted; `entradir export` resuming from that state; twenty reloads while `ldapsearch` and
//! `vdirsyncer` keep working; `kill -9` during state writes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{free_port, run_server, start_sim, wait_for, Proc, BIN};

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default(),
    ))
}

fn ldapsearch(port: u16, args: &[&str]) -> String {
    common::binary::ldapsearch(port, None, args)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The date ten days from now: a client secret that close to expiry must be warned about.
fn secret_expiry() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    entradir::time::iso8601(now + 10 * 86_400)[..10].to_string()
}

fn config(dir: &Path, sim: u16, ldap: u16, admin: u16, extra: &str) -> String {
    let entra = format!("client_secret_expires = {}\n", secret_expiry());
    common::binary::config_head(dir, sim, &entra, extra)
        + &format!(
            r#"[ldap]
listen = "127.0.0.1:{ldap}"
allow_anonymous = true

[admin]
listen = "127.0.0.1:{admin}"
drain_period = "3s"
"#
        )
}

/// A CTI-style client (Python ldap3) that binds once and then searches on the same connection for every line
/// it reads, printing the number of entries found.
const LONG_LIVED_CLIENT: &str = r#"
import sys
from ldap3 import Server, Connection, SUBTREE
c = Connection(Server('127.0.0.1', port=int(sys.argv[1])), auto_bind=True)
for _ in sys.stdin:
    c.search(sys.argv[2], '(objectCategory=person)', SUBTREE, attributes=['sAMAccountName'])
    print(len(c.entries), flush=True)
"#;

#[test]
fn run_reload_sync_and_stop_like_an_admin_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(80, 6, 5, 9);
    let (ldap_port, admin_port) = (free_port(), free_port());
    let cfg_path = dir.path().join("entradir.toml");
    std::fs::write(&cfg_path, config(dir.path(), sim_port, ldap_port, admin_port, "")).unwrap();

    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains(&format!(
            "graph client secret {} expires {}",
            dir.path().join("secret").display(),
            secret_expiry()
        )) && said.contains("WARNING: the graph client secret expires in"),
        "check-config lists the expiry dates and warns: {said}"
    );

    let mut server = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("ENTRADIR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
        }
    });
    let server = Proc(server);
    wait_for("first sync", Duration::from_secs(60), || {
        log.lock().unwrap().contains("sync round applied")
    });

    // A PBX-style lookup through the real client.
    let users = ldapsearch(
        ldap_port,
        &["(&(objectClass=user)(!(objectClass=computer)))", "sAMAccountName"],
    );
    let n_users = users.lines().filter(|l| l.starts_with("dn:")).count(); // "dn::" when base64
    assert!(n_users > 50, "users published: {n_users}");
    // The log line is written while the round is applied; the status counts it right after.
    wait_for("the round in /metrics", Duration::from_secs(10), || {
        http_get(admin_port, "/metrics")
            .is_some_and(|(status, m)| status == 200 && m.contains("entradir_sync_rounds_total 1"))
    });
    assert_eq!(http_get(admin_port, "/readyz").unwrap().0, 200);
    assert!(
        log.lock().unwrap().contains("the graph client secret expires in"),
        "a secret near its end is warned about at start"
    );
    let metrics = http_get(admin_port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("entradir_credential_expiry_timestamp_seconds{use=\"graph_client_secret\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("entradir_ldap_operations_total{op=\"search\",result=\"success\"} 1\n"),
        "the one search so far is counted: {metrics}"
    );

    // A broken edit is rejected as a whole: still serving, failure counted, the log names file and line.
    std::fs::write(
        &cfg_path,
        config(dir.path(), sim_port, ldap_port, admin_port, "bogus_key = 1\n"),
    )
    .unwrap();
    signal(&server.0, "-HUP");
    wait_for("reload failure", Duration::from_secs(20), || {
        log.lock().unwrap().contains("reload failed")
    });
    assert!(log.lock().unwrap().contains("bogus_key"), "the error names the key");
    assert!(http_get(admin_port, "/metrics")
        .unwrap()
        .1
        .contains("entradir_reloads_total{result=\"failed\"} 1"));
    let still = ldapsearch(ldap_port, &["(&(objectClass=user)(!(objectClass=computer)))", "1.1"]);
    assert_eq!(
        still.lines().filter(|l| l.starts_with("dn:")).count(),
        n_users,
        "still serving everything"
    );

    // A good edit (a UPN-matching CSV) applies and re-projects without a resync.
    let some_upn = users
        .lines()
        .find_map(|l| l.strip_prefix("sAMAccountName: "))
        .unwrap()
        .to_string();
    let upn_line = ldapsearch(
        ldap_port,
        &[&format!("(sAMAccountName={some_upn})"), "userPrincipalName"],
    );
    let upn = upn_line
        .lines()
        .find_map(|l| l.strip_prefix("userPrincipalName: "))
        .unwrap()
        .to_string();
    std::fs::write(
        dir.path().join("usermatching.csv"),
        format!("EntraUPN,LocalUsername\n{upn},local.hero@corp.local\n"),
    )
    .unwrap();
    let csv = format!(
        "upn_matching_csv = \"{}\"\n",
        dir.path().join("usermatching.csv").display()
    );
    std::fs::write(&cfg_path, config(dir.path(), sim_port, ldap_port, admin_port, &csv)).unwrap();
    signal(&server.0, "-HUP");
    wait_for("reload applied", Duration::from_secs(20), || {
        log.lock().unwrap().contains("reload applied")
    });
    let hero = ldapsearch(ldap_port, &["(sAMAccountName=local.hero)", "userPrincipalName"]);
    assert!(hero.contains("userPrincipalName: local.hero@corp.local"), "{hero}");

    // Moving the listen addresses: a connected CTI client keeps its connection; new clients use the new ports.
    let mut cti = Command::new(common::venv_bin("python"))
        .args(["-c", LONG_LIVED_CLIENT, &ldap_port.to_string(), "DC=contoso,DC=example"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cti_in = cti.stdin.take().unwrap();
    let mut cti_out = BufReader::new(cti.stdout.take().unwrap());
    let cti = Proc(cti);
    let mut ask = || {
        use std::io::Write;
        writeln!(cti_in, "search").unwrap();
        let mut line = String::new();
        cti_out.read_line(&mut line).unwrap();
        line.trim()
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("ldap3 client said {line:?}"))
    };
    let people = ask();
    assert!(people >= n_users, "{people} people");
    let (new_ldap, new_admin) = (free_port(), free_port());
    std::fs::write(&cfg_path, config(dir.path(), sim_port, new_ldap, new_admin, &csv)).unwrap();
    signal(&server.0, "-HUP");
    wait_for("the move to apply", Duration::from_secs(20), || {
        log.lock().unwrap().matches("reload applied").count() == 2
    });
    let moved = ldapsearch(new_ldap, &["(sAMAccountName=local.hero)", "1.1"]);
    assert_eq!(moved.lines().filter(|l| l.starts_with("dn:")).count(), 1);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ldap_port)).is_err(),
        "the old LDAP port is closed"
    );
    assert_eq!(ask(), people, "the connection from before the move still answers");
    drop(cti);
    assert_eq!(http_get(new_admin, "/readyz").unwrap().0, 200);
    assert!(
        http_get(admin_port, "/readyz").is_none(),
        "the old admin port is closed"
    );
    let (ldap_port, admin_port) = (new_ldap, new_admin);

    // A move that keeps the port, from 127.0.0.1 to every address: the old socket has to close first.
    let wildcard = config(dir.path(), sim_port, ldap_port, admin_port, &csv).replace(
        &format!("listen = \"127.0.0.1:{ldap_port}\""),
        &format!("listen = \"0.0.0.0:{ldap_port}\""),
    );
    std::fs::write(&cfg_path, wildcard).unwrap();
    signal(&server.0, "-HUP");
    let applied = || log.lock().unwrap().matches("reload applied").count() == 3;
    let start = std::time::Instant::now();
    while !applied() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        applied(),
        "the same-port move did not apply; server log:\n{}",
        log.lock().unwrap()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.2", ldap_port)).is_ok(),
        "the wildcard socket accepts on another loopback address"
    );
    let found = ldapsearch(ldap_port, &["(sAMAccountName=local.hero)", "1.1"]);
    assert_eq!(found.lines().filter(|l| l.starts_with("dn:")).count(), 1);

    // SIGUSR1 syncs now; SIGTERM stops cleanly and leaves the state behind.
    signal(&server.0, "-USR1");
    wait_for("second round", Duration::from_secs(30), || {
        http_get(admin_port, "/metrics").is_some_and(|m| m.1.contains("entradir_sync_rounds_total 2"))
    });

    // Rotating the client secret: SIGHUP picks up the new file. A wrong one fails the next round, says why and
    // keeps serving; the right one syncs again.
    let metric = |text: &str| http_get(admin_port, "/metrics").is_some_and(|m| m.1.contains(text));
    std::fs::write(dir.path().join("secret"), "the-secret-id-not-the-value\n").unwrap();
    signal(&server.0, "-HUP");
    wait_for("reload 3", Duration::from_secs(20), || {
        log.lock().unwrap().matches("reload applied").count() == 4
    });
    signal(&server.0, "-USR1");
    wait_for("the failed round", Duration::from_secs(30), || {
        metric("entradir_sync_failures_total 1")
    });
    assert!(log.lock().unwrap().contains("the client secret is wrong"));
    let still = ldapsearch(ldap_port, &["(&(objectClass=user)(!(objectClass=computer)))", "1.1"]);
    assert_eq!(still.lines().filter(|l| l.starts_with("dn:")).count(), n_users);
    std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
    signal(&server.0, "-HUP");
    wait_for("reload 4", Duration::from_secs(20), || {
        log.lock().unwrap().matches("reload applied").count() == 5
    });
    signal(&server.0, "-USR1");
    wait_for("a good round again", Duration::from_secs(30), || {
        metric("entradir_sync_rounds_total 4")
    });
    assert!(metric("entradir_sync_failures_total 1\n"), "the fourth round succeeded");
    let mut server = server;
    // SIGTERM: not ready at once, while LDAP keeps answering through the drain period; then it stops.
    signal(&server.0, "-TERM");
    let start = Instant::now();
    wait_for("/readyz to turn 503", Duration::from_secs(2), || {
        http_get(admin_port, "/readyz").is_some_and(|r| r.0 == 503 && r.1.contains("draining"))
    });
    let found = ldapsearch(ldap_port, &["(sAMAccountName=local.hero)", "1.1"]);
    assert_eq!(
        found.lines().filter(|l| l.starts_with("dn:")).count(),
        1,
        "served while draining"
    );
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "did not stop within 20s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "stopped before the drain period ended"
    );
    assert!(dir.path().join("state").join("entradir-state.json").exists());

    // export resumes from that state: only the delta is fetched, and LDIF comes out.
    let out = Command::new(BIN)
        .args(["export", "--format", "ldif", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let ldif = String::from_utf8_lossy(&out.stdout);
    assert!(ldif.starts_with("version: 1\n"), "RFC 2849 header");
    assert!(ldif.matches("\ndn:").count() >= n_users, "every user is exported");
    assert!(ldif.contains("objectGUID:: "), "binary values are base64");
}

#[test]
fn reloads_under_load_drop_nothing_and_kill_9_during_a_state_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
    let (mut sim, sim_port) = start_sim(2000, 30, 50, 4);
    let (ldap_port, admin_port, dav_port) = (free_port(), free_port(), free_port());
    let cfg_path = dir.path().join("entradir.toml");
    // Plus CardDAV for a phone's address book, and the account it logs in with.
    let cfg_a = format!(
        "{}\n[carddav]\nlisten = \"127.0.0.1:{dav_port}\"\n\n[[accounts]]\nname = \"phone\"\npassword_hash = \"{}\"\n",
        config(dir.path(), sim_port, ldap_port, admin_port, ""),
        entradir::accounts::hash_password("phone-pw").unwrap()
    );
    let cfg_b = cfg_a.replace(
        "default_country = \"DE\"",
        "default_country = \"DE\"\nusers_container = \"CN=Users\"",
    );
    std::fs::write(&cfg_path, &cfg_a).unwrap();
    let start = |cfg_path: &Path| {
        Proc(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(cfg_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut server = start(&cfg_path);
    let synced = || http_get(admin_port, "/metrics").is_some_and(|m| m.1.contains("entradir_sync_rounds_total 1"));
    wait_for("first sync", Duration::from_secs(60), synced);
    let people = |port| {
        // Paged, as directory-sync tools ask: more people than AD's 1000-entry size limit.
        let out = ldapsearch(port, &["-E", "pr=500/noprompt", "(objectCategory=person)", "1.1"]);
        out.lines().filter(|l| l.starts_with("dn:")).count()
    };
    let before = people(ldap_port);
    assert!(before > 1500, "{before}");
    let phone = std::sync::Arc::new(common::Vdirsyncer::new(
        &format!("http://127.0.0.1:{dav_port}/"),
        "phone",
        "phone-pw",
    ));
    phone.discover("all");
    phone.run(&["sync"]);
    let cards = phone.cards("all").len();
    // Disabled accounts are in LDAP (as in AD) but not in the phone book.
    assert!(cards > 1500 && cards <= before, "{cards} cards for {before} people");

    // Many SIGHUPs while a client searches on one persistent flow of connections: no error, no short answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = std::thread::spawn(move || {
        let mut answers = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            assert_eq!(
                people(ldap_port),
                before,
                "a search during reloads returned a different directory"
            );
            answers += 1;
        }
        answers
    });
    let (stop3, phone2) = (stop.clone(), phone.clone());
    let address_book = std::thread::spawn(move || {
        let mut syncs = 0;
        while !stop3.load(std::sync::atomic::Ordering::Relaxed) || syncs == 0 {
            phone2
                .try_run(&["sync"])
                .unwrap_or_else(|e| panic!("a CardDAV sync failed during reloads: {e}"));
            assert_eq!(
                phone2.cards("all").len(),
                cards,
                "the address book changed during reloads"
            );
            syncs += 1;
        }
        syncs
    });
    for i in 0..20 {
        // Written the way config management does (temp file + rename), so a reload never reads half a file.
        let tmp = cfg_path.with_extension("toml.tmp");
        std::fs::write(&tmp, if i % 2 == 0 { &cfg_b } else { &cfg_a }).unwrap();
        std::fs::rename(&tmp, &cfg_path).unwrap();
        signal(&server.0, "-HUP");
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = client.join().expect("no client saw an error during reloads");
    assert!(answers >= 3, "the client kept searching ({answers} answers)");
    address_book
        .join()
        .expect("the address book synced without errors during reloads");
    // Signals that arrive while a reload runs coalesce (as Unix signals do); the last file is what counts.
    let metrics = http_get(admin_port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("entradir_reloads_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("entradir_reloads_total{result=\"ok\"} 0"),
        "{metrics}"
    );

    // kill -9 while state files are being written (each SIGUSR1 round persists), then restart with Graph gone:
    // the last complete state is served at once.
    for _ in 0..5 {
        signal(&server.0, "-USR1");
        std::thread::sleep(Duration::from_millis(40));
    }
    signal(&server.0, "-KILL");
    let _ = server.0.wait();
    let _ = sim.0.kill();
    let _ = sim.0.wait();
    let state_dir = dir.path().join("state");
    assert!(state_dir.join("entradir-state.json").exists());
    server = start(&cfg_path);
    wait_for("LDAP after restart", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", ldap_port)).is_ok()
    });
    assert_eq!(
        people(ldap_port),
        before,
        "served from the state file with Graph down, nothing lost"
    );
    // Its sync round is still retrying the unreachable Graph; SIGTERM does not wait for that, and a second one
    // ends the drain period at once.
    signal(&server.0, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(&server.0, "-TERM");
    let stopping = Instant::now();
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "SIGTERM waited for a sync round against an unreachable Graph, or the second one for the drain period"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
}

/// One HTTP request with an optional bearer token; (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default(),
    )
}

/// Issue #11: one writer per state_dir, and a round that would delete most of the directory (here: the tenant
/// lost 30 of its 40 users at once, as when consent is revoked or the wrong tenant is configured) is held until
/// an admin confirms it with `POST /sync?allow_deletes=N`.
#[test]
fn a_second_writer_is_refused_and_mass_deletions_wait_for_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
    std::fs::write(dir.path().join("token"), "admin-t0ken\n").unwrap();
    let (_sim, sim_port) = start_sim(40, 3, 2, 11);
    let (ldap_port, admin_port) = (free_port(), free_port());
    let cfg_path = dir.path().join("entradir.toml");
    let cfg = config(dir.path(), sim_port, ldap_port, admin_port, "")
        + &format!("token_file = \"{}\"\n", dir.path().join("token").display());
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut server = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("ENTRADIR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
        }
    });
    let server = Proc(server);
    wait_for("first sync", Duration::from_secs(60), || {
        log.lock().unwrap().contains("sync round applied")
    });

    // A second process on the same state_dir is refused, naming the directory and the holder.
    let export = Command::new(BIN)
        .args(["export", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&export.stderr);
    assert!(!export.status.success(), "export beside a running server must refuse");
    assert!(
        said.contains(&dir.path().join("state").display().to_string())
            && said.contains(&format!("PID {}", server.0.id())),
        "{said}"
    );

    let people = |port| {
        ldapsearch(port, &["(&(objectClass=user)(!(objectClass=computer)))", "1.1"])
            .lines()
            .filter(|l| l.starts_with("dn:"))
            .count()
    };
    let before = people(ldap_port);
    assert!(before > 25, "{before}");
    let (_, ids) = http(sim_port, "GET", "/_sim/users", None);
    let ids: Vec<String> = serde_json::from_str(&ids).unwrap();
    for id in ids.iter().take(30) {
        let (status, body) = http(sim_port, "DELETE", &format!("/_sim/users/{id}?permanent=true"), None);
        assert!(status < 300, "{status} {body}");
    }

    let (status, body) = http(admin_port, "POST", "/sync", Some("wrong"));
    assert_eq!(status, 401, "{body}");
    // A body announced far over the limit is refused before anything is read.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
        write!(
            s,
            "POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-t0ken\r\nContent-Length: 100000000\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }
    let (status, body) = http(admin_port, "POST", "/sync", Some("admin-t0ken"));
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("would remove 30 of") && body.contains("allow_deletes=30"),
        "{body}"
    );
    assert_eq!(people(ldap_port), before, "LDAP still serves everyone");
    assert!(log.lock().unwrap().contains("sync round held: it would remove 30 of"));
    let (_, status_json) = http(admin_port, "GET", "/status", None);
    let st: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    assert_eq!(st["sync"]["deletes_held"]["removals"], 30, "{status_json}");
    let (_, metrics) = http(admin_port, "GET", "/metrics", None);
    assert!(metrics.contains("entradir_sync_deletes_held 30\n"), "{metrics}");

    // Too small an allowance is still held; the right one applies.
    let (status, _) = http(admin_port, "POST", "/sync?allow_deletes=29", Some("admin-t0ken"));
    assert_eq!(status, 502);
    assert_eq!(people(ldap_port), before);
    let (status, body) = http(admin_port, "POST", "/sync?allow_deletes=30", Some("admin-t0ken"));
    assert_eq!(status, 200, "{body}");
    // Some of the 30 may have been guests, which were never published.
    let after = people(ldap_port);
    assert!(after + 20 <= before, "{after} of {before}");
    let (_, metrics) = http(admin_port, "GET", "/metrics", None);
    assert!(metrics.contains("entradir_sync_deletes_held 0\n"), "{metrics}");

    // Once the server is gone the state_dir is free again.
    signal(&server.0, "-TERM");
    let mut server = server;
    let _ = server.0.wait();
    let export = Command::new(BIN)
        .args(["export", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
}

/// A first start with a wrong client secret: nothing to serve, so LDAP refuses connections (rather than answer
/// that nobody has the number) and /readyz says why; fixing the secret file and sending SIGHUP syncs at once,
/// and LDAP then listens and answers.
#[test]
fn a_first_start_without_state_listens_once_a_reload_fixes_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "not-the-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(40, 3, 3, 4);
    let (ldap_port, admin_port) = (free_port(), free_port());
    let cfg_path = dir.path().join("entradir.toml");
    std::fs::write(&cfg_path, config(dir.path(), sim_port, ldap_port, admin_port, "")).unwrap();
    let server = run_server(&cfg_path);
    wait_for("the failed first round", Duration::from_secs(30), || {
        http_get(admin_port, "/metrics").is_some_and(|m| m.1.contains("entradir_sync_failures_total 1"))
    });
    let ready = http_get(admin_port, "/readyz").unwrap();
    assert_eq!(ready.0, 503, "{ready:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ldap_port)).is_err(),
        "LDAP refuses while there is nothing to serve"
    );

    std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
    signal(&server.0, "-HUP");
    wait_for("LDAP after the reload's sync", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", ldap_port)).is_ok()
    });
    let found = ldapsearch(ldap_port, &["(objectCategory=person)", "1.1"]);
    assert!(found.lines().filter(|l| l.starts_with("dn:")).count() >= 20, "{found}");
    assert_eq!(http_get(admin_port, "/readyz").unwrap().0, 200);
}
