//! Caller-ID lookups while phones pull their phone books: does HTTP work or a reload hold up LDAP?
//!
//! Starts `entradir graph-sim` (a 5,000-user tenant) and `entradir run` with LDAP and CardDAV on loopback, then
//! measures one PBX connection's caller-ID lookups (`(|(telephoneNumber=…)(mobile=…))`, one every 5 ms) in
//! four phases: quiet; while `--phones` HTTP clients fetch `yealink.xml`, Cisco pages, name searches, a CardDAV
//! PROPFIND of etags and a TEL addressbook-query back to back; while a SIGHUP that re-projects the directory
//! lands every second; and both at once. Prints p50/p99/max of the lookups and what the phones got.
//!
//! `cargo bench --bench http_vs_ldap -- [--users 5000] [--phones 8] [--seconds 6] [--runs 3] [--bin NAME=PATH]…`
//!
//! Without `--bin` it measures the `entradir` binary of this build; several `--bin`s (e.g. a build of the
//! previous commit, `--bin before=/tmp/base/target/release/entradir --bin after=target/release/entradir`) are
//! run alternately, `--runs` times each, so that they share the machine's ups and downs.

use bytes::BytesMut;
use entradir::ldap::filter::Filter;
use entradir::ldap::proto::{encode_search, take_response, Scope};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// The tests' child-process helpers (killed when dropped, free ports).
#[allow(dead_code)]
#[path = "../tests/common/binary.rs"]
mod binary;
use binary::{free_port, Proc};

const BASE: &str = "DC=contoso,DC=example";
const PHASES: [&str; 4] = ["quiet", "phones", "reloads", "phones+reloads"];

struct Opts {
    users: usize,
    phones: usize,
    seconds: u64,
    runs: usize,
    bins: Vec<(String, PathBuf)>,
}

fn opts() -> Opts {
    let mut o = Opts {
        users: 5000,
        phones: 8,
        seconds: 6,
        runs: 3,
        bins: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--users" => o.users = v.parse().unwrap_or(o.users),
            "--phones" => o.phones = v.parse().unwrap_or(o.phones),
            "--seconds" => o.seconds = v.parse().unwrap_or(o.seconds),
            "--runs" => o.runs = v.parse().unwrap_or(o.runs),
            "--bin" => match v.split_once('=') {
                Some((name, path)) => o.bins.push((name.to_string(), path.into())),
                None => o.bins.push((v.clone(), v.clone().into())),
            },
            // `cargo bench` passes --bench; ignore anything else.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if o.bins.is_empty() {
        o.bins.push(("this".into(), env!("CARGO_BIN_EXE_entradir").into()));
    }
    o
}

fn config(dir: &Path, sim: u16, ldap: u16, dav: u16, admin: u16, include_disabled: bool) -> String {
    let entra = format!("include_disabled = {include_disabled}\n");
    binary::config_head(dir, sim, &entra, "")
        + &format!(
            r#"[ldap]
listen = "127.0.0.1:{ldap}"
allow_anonymous = true

[carddav]
listen = "127.0.0.1:{dav}"
anonymous_networks = ["127.0.0.0/8"]

[admin]
listen = "127.0.0.1:{admin}"
"#
        )
}

/// Lookup latencies (µs) of one phase, and whether every lookup found its person.
#[derive(Default)]
struct Lookups {
    micros: Vec<u64>,
    missed: usize,
}

/// What the phones got in one phase.
#[derive(Default, Clone, Copy)]
struct PhoneStats {
    ok: usize,
    busy: usize,
    other: usize,
}

/// One PBX connection looking up callers every 5 ms until `stop`.
async fn lookups(port: u16, numbers: Arc<Vec<String>>, stop: Arc<AtomicBool>) -> Lookups {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("LDAP connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = BytesMut::new();
    let mut out = Lookups::default();
    let attrs = ["displayName", "telephoneNumber", "mobile"];
    let mut id = 0i64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        id += 1;
        let n = &numbers[id as usize % numbers.len()];
        let f = Filter::parse(&format!("(|(telephoneNumber={n})(mobile={n}))")).expect("filter");
        let req = encode_search(id, BASE, Scope::Sub, 10, &f, &attrs, &[]);
        let t = Instant::now();
        s.write_all(&req).await.expect("LDAP write");
        let mut found = 0;
        'done: loop {
            while let Some(r) = take_response(&mut buf).expect("LDAP response") {
                match r.tag {
                    0x64 if r.id == id => found += 1,
                    0x65 if r.id == id => break 'done,
                    _ => {}
                }
            }
            if s.read_buf(&mut buf).await.expect("LDAP read") == 0 {
                panic!("LDAP connection closed");
            }
        }
        out.micros.push(t.elapsed().as_micros() as u64);
        if found == 0 {
            out.missed += 1;
        }
    }
    out
}

/// One phone: requests back to back until `stop`, cycling through what phones and CardDAV clients ask.
async fn phone(base: String, k: usize, names: Arc<Vec<String>>, stop: Arc<AtomicBool>) -> PhoneStats {
    let http = reqwest::Client::new();
    let mut st = PhoneStats::default();
    let mut n = k;
    let propfind = r#"<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = &names[n % names.len()];
        let req = match n % 6 {
            0 => http.get(format!("{base}/phonebook/all/yealink.xml")),
            1 | 2 => http.get(format!("{base}/phonebook/all/cisco.xml?page={}", 1 + n % 40)),
            3 => http.get(format!("{base}/phonebook/all/yealink.xml?q={name}")),
            4 => http
                .request(reqwest::Method::from_bytes(b"PROPFIND").expect("method"), format!("{base}/dav/books/all/"))
                .header("Depth", "1")
                .body(propfind),
            _ => http
                .request(reqwest::Method::from_bytes(b"REPORT").expect("method"), format!("{base}/dav/books/all/"))
                .header("Depth", "1")
                .body(format!(
                    r#"<c:addressbook-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/></d:prop><c:filter><c:prop-filter name="FN"><c:text-match match-type="contains">{name}</c:text-match></c:prop-filter></c:filter></c:addressbook-query>"#
                )),
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                match status {
                    200 | 207 => st.ok += 1,
                    503 => {
                        st.busy += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => st.other += 1,
                }
            }
            Err(_) => st.other += 1,
        }
    }
    st
}

/// Numbers and name fragments of the tenant's people, from the Yealink book.
async fn tenant_sample(dav: u16) -> (Vec<String>, Vec<String>) {
    let body = reqwest::get(format!("http://127.0.0.1:{dav}/phonebook/all/yealink.xml"))
        .await
        .expect("phone book")
        .text()
        .await
        .expect("phone book body");
    let doc = roxmltree::Document::parse(&body).expect("phone book XML");
    let mut numbers = Vec::new();
    let mut names = Vec::new();
    for e in doc.descendants().filter(|n| n.has_tag_name("DirectoryEntry")) {
        let tel = e
            .children()
            .find(|c| c.has_tag_name("Telephone"))
            .and_then(|c| c.text());
        let name = e.children().find(|c| c.has_tag_name("Name")).and_then(|c| c.text());
        if let (Some(tel), Some(name)) = (tel, name) {
            if tel.starts_with('+') && numbers.len() < 500 {
                numbers.push(tel.to_string());
            }
            if let Some(first) = name.split_whitespace().next().filter(|f| f.len() >= 3) {
                if names.len() < 50 && !names.iter().any(|x: &String| x == first) {
                    names.push(first.to_string());
                }
            }
        }
    }
    assert!(numbers.len() >= 50, "too few people with numbers in the tenant");
    (numbers, names)
}

fn wait_ready(admin: u16, timeout: Duration) {
    let t = Instant::now();
    loop {
        let ready = (|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
            write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out.starts_with("HTTP/1.1 200"))
        })()
        .unwrap_or(false);
        if ready {
            return;
        }
        assert!(t.elapsed() < timeout, "server not ready after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One run of one binary: all four phases. Returns per phase the lookups and the phones' counts.
async fn run_once(bin: &Path, o: &Opts, sim: u16) -> Vec<(Lookups, PhoneStats, usize)> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), "demo-secret\n").expect("secret");
    let (ldap, dav, admin) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("entradir.toml");
    let cfgs = [true, false].map(|d| config(dir.path(), sim, ldap, dav, admin, d));
    std::fs::write(&cfg, &cfgs[0]).expect("config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let server = Proc(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("ENTRADIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start entradir run"),
    );
    wait_ready(admin, Duration::from_secs(120));
    let (numbers, names) = tenant_sample(dav).await;
    let (numbers, names) = (Arc::new(numbers), Arc::new(names));
    // Let the warm-up after the first sync finish, as on a server that has been up a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut results = Vec::new();
    for phase in PHASES {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = tokio::spawn(lookups(ldap, numbers.clone(), stop.clone()));
        let phones: Vec<_> = if phase.starts_with("phones") {
            (0..o.phones)
                .map(|k| tokio::spawn(phone(format!("http://127.0.0.1:{dav}"), k, names.clone(), stop.clone())))
                .collect()
        } else {
            Vec::new()
        };
        let mut reloads = 0;
        let until = Instant::now() + Duration::from_secs(o.seconds);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            if phase.ends_with("reloads") {
                reloads += 1;
                std::fs::write(&cfg, &cfgs[reloads % 2]).expect("config");
                let ok = Command::new("kill")
                    .args(["-HUP", &server.0.id().to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "kill -HUP");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let l = probe.await.expect("lookups");
        let mut p = PhoneStats::default();
        for h in phones {
            let s = h.await.expect("phone");
            p.ok += s.ok;
            p.busy += s.busy;
            p.other += s.other;
        }
        results.push((l, p, reloads));
    }
    let ok = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let t = Instant::now();
        let mut server = server;
        while t.elapsed() < Duration::from_secs(15) {
            if matches!(server.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    results
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn range(v: &[f64], unit: &str) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(0.0, f64::max);
    let fmt = |x: f64| if x < 10.0 { format!("{x:.2}") } else { format!("{x:.0}") };
    if v.len() == 1 || fmt(lo) == fmt(hi) {
        format!("{}{unit}", fmt(lo))
    } else {
        format!("{}–{}{unit}", fmt(lo), fmt(hi))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    let sim_port = free_port();
    let _sim = Proc(
        Command::new(&o.bins[o.bins.len() - 1].1)
            .args(["graph-sim", "--listen", &format!("127.0.0.1:{sim_port}")])
            .args(["--users", &o.users.to_string(), "--groups", &(o.users / 10).to_string()])
            .args(["--devices", &(o.users / 5).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start graph-sim"),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", sim_port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "graph-sim did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "caller-ID lookups (one LDAP connection, one every 5 ms) on a {}-user tenant; {} phones; {} s per phase; {} runs",
        o.users, o.phones, o.seconds, o.runs
    );
    // [bin][phase] -> per run (p50, p99, max, phone ok/s, busy, other, missed, lookups)
    let mut all: Vec<Vec<Vec<[f64; 8]>>> = vec![vec![Vec::new(); PHASES.len()]; o.bins.len()];
    for run in 0..o.runs {
        for (b, (name, path)) in o.bins.iter().enumerate() {
            let results = run_once(path, &o, sim_port).await;
            for (ph, (mut l, p, _)) in results.into_iter().enumerate() {
                l.micros.sort_unstable();
                let row = [
                    pct(&l.micros, 0.5),
                    pct(&l.micros, 0.99),
                    pct(&l.micros, 1.0),
                    p.ok as f64 / o.seconds as f64,
                    p.busy as f64,
                    p.other as f64,
                    l.missed as f64,
                    l.micros.len() as f64,
                ];
                eprintln!(
                    "run {} {name:<8} {:<15} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  phones {:>6.0}/s ok, {} busy, {} failed; {} lookups, {} missed",
                    run + 1,
                    PHASES[ph],
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    p.busy,
                    p.other,
                    l.micros.len(),
                    l.missed
                );
                all[b][ph].push(row);
            }
        }
    }
    println!();
    println!(
        "| binary | phase | lookup p50 | lookup p99 | lookup max | phone answers/s | 503s | failed | lookups missed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (b, (name, _)) in o.bins.iter().enumerate() {
        for (ph, phase) in PHASES.iter().enumerate() {
            let rows = &all[b][ph];
            let col = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
            let phones = if phase.starts_with("phones") {
                range(&col(3), "")
            } else {
                "–".into()
            };
            println!(
                "| {name} | {phase} | {} | {} | {} | {phones} | {} | {} | {} |",
                range(&col(0), " ms"),
                range(&col(1), " ms"),
                range(&col(2), " ms"),
                col(4).iter().sum::<f64>(),
                col(5).iter().sum::<f64>(),
                col(6).iter().sum::<f64>(),
            );
        }
    }
}
