//! LDAP load tool: N connections run a PBX-like query mix for a fixed time and report searches/s and
//! p50/p99 latency per query kind.
//!
//! The data is as unkind as a real company's: names drawn with real-world skew (`graph_sim::names`: Müller
//! and Schmidt a few percent each, "Sch" a seventh of everyone), numbers in DDI blocks whose last digits repeat
//! across offices, two groups of which one holds everybody. The queries are what PBXs and phones send, with a
//! size limit of 50 and an attribute list: caller-ID `(|(telephoneNumber=…)(mobile=…))` (a third of them for
//! numbers nobody has), the last seven digits, Yealink `(|(cn=X*)(sn=X*))`, contains `(|(cn=*X*)(sn=X*))`,
//! Snom `(&(telephoneNumber=*)(sn=X*))` with X the first three or four letters of a name as typed, and
//! `memberOf`.
//!
//! In-process (default): generates `--users` AD-style users, serves them on loopback and loads that server.
//! Against another server (e.g. slapd loaded with `--write-ldif`): `--addr host:port --base DC=... [--bind DN
//! --password PW]`; the generated query values then match that data when `--users` is the same.
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
use graph_sim::names;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Query kinds: what PBXs and desk phones send (see the module doc).
const KINDS: &[&str] = &["exact", "suffix", "yealink", "contains", "snom", "memberof"];

/// Offices: (country calling code, area code, first digits of the DDI block). Extensions are numbered within
/// each block, so the last digits of numbers repeat across offices as they do in real companies.
const OFFICES: &[(&str, &str, &str)] = &[
    ("49", "30", "2094"),
    ("49", "221", "3390"),
    ("49", "89", "5461"),
    ("49", "40", "7114"),
    ("43", "1", "5123"),
    ("41", "44", "2981"),
];

/// One generated person: what the entries hold and what the load client asks for.
struct Person {
    given: &'static str,
    sn: String,
    cn: String,
    /// E.164, as entradir's projection stores numbers.
    phone: String,
    mobile: Option<String>,
}

/// The same people in every process (the server and each load client generate them from the same seed):
/// skewed real-world names ([`graph_sim::names`]), cn made unique the way AD admins do it.
fn people(users: usize) -> Vec<Person> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut next_ext = vec![0usize; OFFICES.len()];
    (0..users)
        .map(|_| {
            let given = names::given(&mut rng);
            let sn = names::surname(&mut rng);
            let base = format!("{given} {sn}");
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            let cn = if *n == 1 { base } else { format!("{base} {n}") };
            // Most staff sit in the two big offices.
            let o = if rng.gen_bool(0.6) {
                rng.gen_range(0..2)
            } else {
                rng.gen_range(0..OFFICES.len())
            };
            let (cc, area, block) = OFFICES[o];
            let ext = next_ext[o];
            next_ext[o] += 1;
            // 4-digit extensions, a longer block once an office outgrows 10,000.
            let phone = if ext < 10_000 {
                format!("+{cc}{area}{block}{ext:04}")
            } else {
                format!("+{cc}{area}{}{ext:06}", &block[..2])
            };
            let mobile = rng
                .gen_bool(0.7)
                .then(|| format!("+4915{}{:07}", rng.gen_range(1..10), rng.gen_range(0..10_000_000)));
            Person {
                given,
                sn,
                cn,
                phone,
                mobile,
            }
        })
        .collect()
}

/// The first `n` characters, as a person types them.
fn typed(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

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

fn user(i: usize, p: &Person, base: &str) -> Entry {
    let dn = format!("CN={},CN=Users,{base}", entradir::directory::dn::escape_value(&p.cn));
    let s = |v: &str| vec![Bytes::from(v.to_string())];
    let mut attrs = vec![
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
        ("cn", s(&p.cn)),
        ("sn", s(&p.sn)),
        ("givenName", s(p.given)),
        ("displayName", s(&p.cn)),
        ("sAMAccountName", s(&format!("u{i}"))),
        ("mail", s(&format!("u{i}@contoso.example"))),
        ("telephoneNumber", s(&p.phone)),
        (
            "userAccountControl",
            s(if i.is_multiple_of(20) { "514" } else { "512" }),
        ),
        (
            "memberOf",
            vec![
                Bytes::from(format!("CN=Team {},CN=Users,{base}", i % 50)),
                Bytes::from(format!("CN=Alle Mitarbeiter,CN=Users,{base}")),
            ],
        ),
        ("distinguishedName", s(&dn)),
    ];
    if let Some(m) = &p.mobile {
        attrs.push(("mobile", s(m)));
    }
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
        sort_keys: Default::default(),
    }
}

fn directory(users: usize, base: &str) -> Published {
    let mut v: Vec<Entry> = people(users)
        .iter()
        .enumerate()
        .map(|(i, p)| user(i, p, base))
        .collect();
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
        ]
        .into(),
        sort_keys: Default::default(),
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

/// The request for query `kind` number `n`, and the attributes it asks for. Names and numbers come from a
/// person picked at random, so common surnames are searched as often as they occur.
fn query(kind: &str, n: usize, people: &[Person], base: &str, portable: bool) -> (Filter, &'static [&'static str]) {
    const CALLER_ID: &[&str] = &["displayName", "telephoneNumber", "mobile"];
    const BOOK: &[&str] = &["cn", "telephoneNumber", "mobile"];
    let p = &people[n.wrapping_mul(2_654_435_761) % people.len().max(1)];
    // Three or four letters, mostly of the surname, as typed (often all lower case).
    let typed_name = || {
        let len = 3 + n % 2;
        let src = if n.is_multiple_of(5) { p.given } else { p.sn.as_str() };
        let t = typed(src, len);
        if n.is_multiple_of(3) {
            t.to_lowercase()
        } else {
            t
        }
    };
    let (f, attrs) = match kind {
        "exact" => {
            // A third of incoming calls come from numbers nobody in the directory has.
            let number = if n.is_multiple_of(3) {
                format!("+4969{:08}", n % 100_000_000)
            } else {
                p.phone.clone()
            };
            let number = if portable {
                number
            } else {
                // What a German trunk delivers: the national form.
                match number.strip_prefix("+49") {
                    Some(rest) => format!("0{rest}"),
                    None => number,
                }
            };
            (format!("(|(telephoneNumber={number})(mobile={number}))"), CALLER_ID)
        }
        "suffix" => {
            let last7: String = p
                .phone
                .chars()
                .rev()
                .take(7)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (format!("(telephoneNumber=*{last7})"), CALLER_ID)
        }
        "yealink" => {
            let x = typed_name();
            (format!("(|(cn={x}*)(sn={x}*))"), BOOK)
        }
        "contains" => {
            let x = typed_name();
            (format!("(|(cn=*{x}*)(sn={x}*))"), BOOK)
        }
        "snom" => {
            let x = typed_name();
            (format!("(&(telephoneNumber=*)(sn={x}*))"), BOOK)
        }
        _ => {
            let g = if n.is_multiple_of(4) {
                "Alle Mitarbeiter".to_string()
            } else {
                format!("Team {}", n % 50)
            };
            (format!("(memberOf=CN={g},CN=Users,{base})"), BOOK)
        }
    };
    (
        Filter::parse(&f).unwrap_or(Filter::Present("objectClass".into())),
        attrs,
    )
}

struct Stats {
    lat: Vec<Vec<u32>>,
    errors: usize,
}

async fn client(
    addr: SocketAddr,
    o: Arc<Opts>,
    people: Arc<Vec<Person>>,
    kinds: Arc<Vec<&'static str>>,
    seed: usize,
    until: Instant,
) -> Stats {
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
    let mut n = seed;
    while Instant::now() < until {
        id += 1;
        n += 1;
        let kind = kinds[n % kinds.len()];
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let (f, attrs) = query(kind, n, &people, &o.base, o.portable);
        let req = encode_search(id, &o.base, Scope::Sub, o.size_limit, &f, attrs, &[]);
        let t = Instant::now();
        if s.write_all(&req).await.is_err() || !wait_done(&mut s, &mut buf, id).await {
            st.errors += 1;
            return st;
        }
        st.lat[k].push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    st
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
        let running = tokio::spawn(server.run(stop));
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
            let server = match Server::bind(cfg, dir).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot start the server: {e}");
                    std::process::exit(1);
                }
            };
            let addr = server.local_addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 389)));
            tokio::spawn(server.run(stop.clone()));
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
    let people = Arc::new(people(o.users));
    // Warm-up pass, as a server that has been up for a while has seen these queries.
    let warm = Instant::now() + Duration::from_millis(500);
    client(addr, o.clone(), people.clone(), kinds.clone(), 0, warm).await;

    let until = Instant::now() + o.duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|c| tokio::spawn(client(addr, o.clone(), people.clone(), kinds.clone(), c * 7919, until)))
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
