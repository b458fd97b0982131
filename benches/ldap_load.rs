//! LDAP load tool: N connections run a PBX-like query mix for a fixed time and report searches/s and
//! p50/p99 latency per query kind.
//!
//! In-process (default): generates `--users` AD-style users, serves them on loopback and loads that server.
//! Against another server (e.g. slapd loaded with `entradir export --format ldif`): `--addr host:port
//! --base DC=... [--bind DN --password PW]`; the generated query values then have to match that data (same
//! `--users` and `--seed`).
//!
//! `cargo bench --bench ldap_load -- --users 100000 --connections 64 --duration 10 [--only exact]`
//!
//! Server in its own process (as slapd runs): `--serve 127.0.0.1:13999` in one shell, then `--addr
//! 127.0.0.1:13999` with the same `--users` in another.

use bytes::{Bytes, BytesMut};
use entradir::directory::entry::{normalize_dn, Attribute, Entry};
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{EntryKind, Naming, Published, Snapshot};
use entradir::ldap::filter::Filter;
use entradir::ldap::proto::{encode_bind, encode_search, take_response, Scope};
use entradir::ldap::{CancellationToken, LdapConfig, Server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIVEN: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hans", "Ida", "Jonas", "Klara", "Lukas", "Mia", "Noah",
    "Olga", "Paul", "Rosa", "Simon", "Tina", "Uwe", "Vera", "Wolf", "Yara", "Zoe",
];
const SURNAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Braun",
    "Zimmermann",
    "Krüger",
    "Hartmann",
    "Lange",
    "Werner",
    "Krause",
    "Lehmann",
    "Köhler",
    "Maier",
    "Herrmann",
    "König",
    "Walter",
];
const KINDS: &[&str] = &["exact", "suffix", "prefix", "substring", "memberof"];

struct Opts {
    users: usize,
    connections: usize,
    duration: Duration,
    addr: Option<SocketAddr>,
    base: String,
    bind: Option<(String, String)>,
    only: Option<String>,
    size_limit: i64,
    /// Write the generated users as LDIF (for loading slapd) and exit.
    write_ldif: Option<String>,
    /// Only serve the generated users on this address (no load) until killed: the server in its own process,
    /// as slapd is, for a second instance of this tool to load with `--addr`.
    serve: Option<SocketAddr>,
    /// Send numbers as stored (`+49 221 …`) so servers without phone normalisation find them too.
    portable: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        users: 10_000,
        connections: 64,
        duration: Duration::from_secs(10),
        addr: None,
        base: "DC=contoso,DC=example".into(),
        bind: None,
        only: None,
        size_limit: 50,
        write_ldif: None,
        serve: None,
        portable: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let mut password = String::new();
    let mut dn = None;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--users" => o.users = v.parse().unwrap_or(o.users),
            "--connections" => o.connections = v.parse().unwrap_or(o.connections),
            "--duration" => o.duration = Duration::from_secs(v.parse().unwrap_or(10)),
            "--addr" => o.addr = v.parse().ok(),
            "--base" => o.base = v,
            "--bind" => dn = Some(v),
            "--password" => password = v,
            "--only" => o.only = Some(v),
            "--size-limit" => o.size_limit = v.parse().unwrap_or(50),
            "--write-ldif" => o.write_ldif = Some(v),
            "--serve" => o.serve = v.parse().ok(),
            "--portable" => {
                o.portable = true;
                i += 1;
                continue;
            }
            // `cargo bench` passes --bench; ignore anything else.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o.bind = dn.map(|d| (d, password));
    o
}

fn number(i: usize) -> String {
    format!("+49 221 {:07}", 3_000_000 + i)
}

fn user(i: usize, base: &str) -> Entry {
    let given = GIVEN[i % GIVEN.len()];
    let sn = SURNAMES[(i / GIVEN.len()) % SURNAMES.len()];
    let cn = format!("{given} {sn} {i}");
    let dn = format!("CN={cn},CN=Users,{base}");
    let s = |v: &str| vec![Bytes::from(v.to_string())];
    let attrs = vec![
        (
            "objectClass",
            vec![
                Bytes::from("top"),
                "person".into(),
                "organizationalPerson".into(),
                "user".into(),
            ],
        ),
        (
            "objectCategory",
            s(&format!("CN=Person,CN=Schema,CN=Configuration,{base}")),
        ),
        ("cn", s(&cn)),
        ("sn", s(sn)),
        ("givenName", s(given)),
        ("displayName", s(&cn)),
        ("sAMAccountName", s(&format!("u{i}"))),
        ("mail", s(&format!("u{i}@contoso.example"))),
        ("telephoneNumber", s(&number(i))),
        ("mobile", s(&format!("+49 171 {:07}", 5_000_000 + i))),
        ("userAccountControl", s("512")),
        ("memberOf", s(&format!("CN=Team {},CN=Users,{base}", i % 50))),
        ("distinguishedName", s(&dn)),
    ];
    Entry {
        id: format!("{i:08}").into(),
        kind: EntryKind::User,
        dn: dn.clone().into(),
        dn_norm: normalize_dn(&dn).unwrap_or_default().into(),
        guid: [0; 16],
        usn_changed: 1,
        usn_created: 1,
        attrs: attrs
            .into_iter()
            .map(|(n, v)| Attribute {
                name: n.into(),
                values: v,
            })
            .collect(),
    }
}

fn directory(users: usize, base: &str) -> Published {
    let mut v: Vec<Entry> = (0..users).map(|i| user(i, base)).collect();
    let mk = |dn: String, cls: &str, id: String, rdn: (&str, &str)| Entry {
        id: id.into(),
        kind: EntryKind::Container,
        dn_norm: normalize_dn(&dn).unwrap_or_default().into(),
        dn: dn.into(),
        guid: [0; 16],
        usn_changed: 1,
        usn_created: 1,
        attrs: vec![
            Attribute {
                name: "objectClass".into(),
                values: vec!["top".into(), Bytes::from(cls.to_string())],
            },
            Attribute {
                name: rdn.0.into(),
                values: vec![Bytes::from(rdn.1.to_string())],
            },
        ],
    };
    let first_dc = base
        .split(',')
        .next()
        .and_then(|r| r.split_once('='))
        .map(|(_, v)| v)
        .unwrap_or("contoso");
    v.push(mk(base.to_string(), "domain", "~base".into(), ("dc", first_dc)));
    v.push(mk(
        format!("CN=Users,{base}"),
        "container",
        "~users".into(),
        ("cn", "Users"),
    ));
    let naming = Naming::new(base).expect("valid base DN");
    let phones = PhoneNormalizer::new("DE").expect("DE is known");
    Published::new(Snapshot::from_entries(naming, phones, 1, v))
}

/// The request for query `kind` number `n`.
fn query(kind: &str, n: usize, users: usize, base: &str, portable: bool) -> Filter {
    let i = (n.wrapping_mul(2_654_435_761)) % users.max(1);
    let f = match kind {
        "exact" if portable => format!("(|(telephoneNumber={0})(mobile={0}))", number(i)),
        "exact" => format!("(|(telephoneNumber=0221 {0:07})(mobile=0221 {0:07}))", 3_000_000 + i),
        "suffix" => format!("(telephoneNumber=*{:07})", 3_000_000 + i),
        "prefix" => {
            let sn = SURNAMES[n % SURNAMES.len()];
            format!("(|(cn={0}*)(sn={0}*))", &sn[..sn.len().min(4)])
        }
        "substring" => {
            let sn = SURNAMES[n % SURNAMES.len()];
            let mid: String = sn.chars().skip(1).take(4).collect();
            format!("(|(cn=*{mid}*)(sn=*{mid}*))")
        }
        _ => format!("(memberOf=CN=Team {},CN=Users,{base})", n % 50),
    };
    Filter::parse(&f).unwrap_or(Filter::Present("objectClass".into()))
}

struct Stats {
    lat: Vec<Vec<u32>>,
    errors: usize,
}

async fn client(addr: SocketAddr, o: Arc<Opts>, kinds: Arc<Vec<&'static str>>, seed: usize, until: Instant) -> Stats {
    let mut st = Stats {
        lat: vec![Vec::new(); KINDS.len()],
        errors: 0,
    };
    let Ok(mut s) = TcpStream::connect(addr).await else {
        st.errors += 1;
        return st;
    };
    let _ = s.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut id = 1i64;
    if let Some((dn, pw)) = &o.bind {
        if s.write_all(&encode_bind(id, dn, pw.as_bytes())).await.is_err() || !wait_done(&mut s, &mut buf, id).await {
            st.errors += 1;
            return st;
        }
    }
    let attrs = ["cn", "displayName", "telephoneNumber", "mobile"];
    let mut n = seed;
    while Instant::now() < until {
        id += 1;
        n += 1;
        let kind = kinds[n % kinds.len()];
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let f = query(kind, n, o.users, &o.base, o.portable);
        let req = encode_search(id, &o.base, Scope::Sub, o.size_limit, &f, &attrs, &[]);
        let t = Instant::now();
        if s.write_all(&req).await.is_err() || !wait_done(&mut s, &mut buf, id).await {
            st.errors += 1;
            return st;
        }
        st.lat[k].push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    st
}

/// A running server encodes every entry once after start (and changed ones after each publish); measure the
/// steady state after that, as a server that has been up for a while is.
async fn wait_encoded(handle: &entradir::ldap::ServerHandle, entries: usize) {
    let t = Instant::now();
    while handle.cached_entries() < entries && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "encoded {} entries in {:.1}s",
        handle.cached_entries(),
        t.elapsed().as_secs_f64()
    );
}

async fn wait_done(s: &mut TcpStream, buf: &mut BytesMut, id: i64) -> bool {
    loop {
        loop {
            match take_response(buf) {
                Ok(Some(r)) if r.id == id && matches!(r.tag, 0x61 | 0x65) => {
                    return matches!(r.code, Some(0) | Some(4))
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let o = Arc::new(opts());
    let stop = CancellationToken::new();
    if let Some(path) = &o.write_ldif {
        let snap = directory(o.users, &o.base).load();
        let written = std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .and_then(|mut f| entradir::export::write_ldif(&mut f, &snap).and_then(|_| std::io::Write::flush(&mut f)));
        if let Err(e) = written {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
        eprintln!("wrote {} entries to {path}", snap.len());
        return;
    }
    if let Some(listen) = o.serve {
        let cfg = LdapConfig {
            listen: Some(listen),
            allow_anonymous: true,
            max_connections: 4096,
            ..LdapConfig::default()
        };
        let server = match Server::bind(cfg, directory(o.users, &o.base)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot start the server: {e}");
                std::process::exit(1);
            }
        };
        let handle = server.handle();
        let entries = o.users + 2;
        let running = tokio::spawn(server.run(stop));
        wait_encoded(&handle, entries).await;
        eprintln!("serving {} users on {listen}", o.users);
        let _ = running.await;
        return;
    }
    let addr = match o.addr {
        Some(a) => a,
        None => {
            let t = Instant::now();
            let dir = directory(o.users, &o.base);
            eprintln!("generated {} users in {:.1}s", o.users, t.elapsed().as_secs_f64());
            let cfg = LdapConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                allow_anonymous: true,
                max_connections: o.connections + 16,
                ..LdapConfig::default()
            };
            let entries = dir.load().len();
            let server = match Server::bind(cfg, dir).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot start the server: {e}");
                    std::process::exit(1);
                }
            };
            let addr = server.local_addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 389)));
            let handle = server.handle();
            tokio::spawn(server.run(stop.clone()));
            wait_encoded(&handle, entries).await;
            addr
        }
    };
    let kinds: Arc<Vec<&'static str>> = Arc::new(match &o.only {
        Some(k) => KINDS.iter().copied().filter(|x| x == k).collect(),
        None => KINDS.to_vec(),
    });
    if kinds.is_empty() {
        eprintln!("--only must be one of {KINDS:?}");
        std::process::exit(2);
    }
    // Warm-up pass so the encoding cache is populated, as it is on a running server.
    let warm = Instant::now() + Duration::from_millis(500);
    client(addr, o.clone(), kinds.clone(), 0, warm).await;

    let until = Instant::now() + o.duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|c| tokio::spawn(client(addr, o.clone(), kinds.clone(), c * 7919, until)))
        .collect();
    let mut all = vec![Vec::new(); KINDS.len()];
    let mut errors = 0;
    for t in tasks {
        if let Ok(st) = t.await {
            errors += st.errors;
            for (k, v) in st.lat.into_iter().enumerate() {
                all[k].extend(v);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ldap_load: {} users, {} connections, {:.1}s, size limit {}",
        o.users, o.connections, secs, o.size_limit
    );
    println!(
        "{:<10} {:>10} {:>12} {:>9} {:>9}",
        "query", "searches", "searches/s", "p50 ms", "p99 ms"
    );
    let mut total = 0;
    let mut merged = Vec::new();
    for (k, v) in all.iter_mut().enumerate() {
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        total += v.len();
        merged.extend_from_slice(v);
        println!(
            "{:<10} {:>10} {:>12.0} {:>9.3} {:>9.3}",
            KINDS[k],
            v.len(),
            v.len() as f64 / secs,
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    merged.sort_unstable();
    println!(
        "{:<10} {:>10} {:>12.0} {:>9.3} {:>9.3}",
        "all",
        total,
        total as f64 / secs,
        pct(&merged, 0.5),
        pct(&merged, 0.99)
    );
    if errors > 0 {
        println!("errors: {errors}");
    }
    stop.cancel();
}
