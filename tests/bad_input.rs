//! Bad input thrown at the shipped binary (`entradir run` against `entradir graph-sim`), stage by stage: LDAP
//! PDUs that are malformed, truncated, 10,000 levels deep or 200 KB long, non-UTF-8 values, reversed and open
//! ranges, huge limits, garbage paging cookies, a client that pipelines 10,000 searches and never reads,
//! thousands of idle connections, a wrong-password flood; on HTTP an XML bomb, a 50 MB body, `Depth: infinity`,
//! path traversal, slowloris headers and every write method; bad admin tokens and bodies.
//!
//! After every stage the process must be alive, a caller-ID lookup (`ldapsearch`) and a paged count of the users
//! must give the answers they gave before, and the resident memory must come back to within [`RSS_SLACK_MIB`] of
//! what it was after the first sync.

mod common;

use common::binary::{config_head, free_port, password_hash, rss_kib, run_server, start_sim, wait_for, Proc};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How far above its settled size the server's RSS may stay after a stage (glibc keeps some freed memory).
const RSS_SLACK_MIB: u64 = 96;
const BASE: &str = "DC=contoso,DC=example";
const PASSWORD: &str = "pbx-Secret-1";

// ---- a small BER writer: the bad PDUs have to be built by hand, no client library sends them ----

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn int(tag: u8, v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(tag, &bytes[start..])
}

fn octets(v: &[u8]) -> Vec<u8> {
    tlv(0x04, v)
}

fn eq_filter(attr: &str, value: &[u8]) -> Vec<u8> {
    tlv(0xa3, &[octets(attr.as_bytes()), octets(value)].concat())
}

fn present(attr: &str) -> Vec<u8> {
    tlv(0x87, attr.as_bytes())
}

struct Search<'a> {
    base: &'a str,
    scope: u8,
    size_limit: i64,
    time_limit: i64,
    filter: Vec<u8>,
    attrs: Vec<&'a str>,
}

impl Search<'_> {
    fn users(filter: Vec<u8>) -> Search<'static> {
        Search {
            base: BASE,
            scope: 2,
            size_limit: 0,
            time_limit: 0,
            filter,
            attrs: vec!["cn"],
        }
    }

    fn pdu(&self, id: i64, controls: &[Vec<u8>]) -> Vec<u8> {
        let attrs: Vec<u8> = self.attrs.iter().flat_map(|a| octets(a.as_bytes())).collect();
        let op = tlv(
            0x63,
            &[
                octets(self.base.as_bytes()),
                tlv(0x0a, &[self.scope]),
                tlv(0x0a, &[0]),
                int(0x02, self.size_limit),
                int(0x02, self.time_limit),
                tlv(0x01, &[0]),
                self.filter.clone(),
                tlv(0x30, &attrs),
            ]
            .concat(),
        );
        message(id, op, controls)
    }
}

fn message(id: i64, op: Vec<u8>, controls: &[Vec<u8>]) -> Vec<u8> {
    let mut body = [int(0x02, id), op].concat();
    if !controls.is_empty() {
        body.extend(tlv(0xa0, &controls.concat()));
    }
    tlv(0x30, &body)
}

fn bind(id: i64, name: &str, password: &str) -> Vec<u8> {
    let op = tlv(
        0x60,
        &[int(0x02, 3), octets(name.as_bytes()), tlv(0x80, password.as_bytes())].concat(),
    );
    message(id, op, &[])
}

fn paged(size: i64, cookie: &[u8]) -> Vec<u8> {
    let value = tlv(0x30, &[int(0x02, size), octets(cookie)].concat());
    tlv(
        0x30,
        &[octets(b"1.2.840.113556.1.4.319"), tlv(0x01, &[0xff]), octets(&value)].concat(),
    )
}

// ---- reading answers ----

/// One BER element from the stream: (tag, content). `None` at the end of the stream or on a timeout.
fn read_element(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = if head[1] < 0x80 {
        head[1] as usize
    } else {
        let n = (head[1] & 0x7f) as usize;
        let mut b = vec![0u8; n];
        s.read_exact(&mut b).ok()?;
        b.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize)
    };
    let mut content = vec![0u8; len];
    s.read_exact(&mut content).ok()?;
    Some((head[0], content))
}

/// Split the content of a constructed element into its children.
fn children(mut c: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while c.len() >= 2 {
        let (len, hdr) = if c[1] < 0x80 {
            (c[1] as usize, 2)
        } else {
            let n = (c[1] & 0x7f) as usize;
            (c[2..2 + n].iter().fold(0usize, |a, x| (a << 8) | *x as usize), 2 + n)
        };
        out.push((c[0], c[hdr..hdr + len].to_vec()));
        c = &c[hdr + len..];
    }
    out
}

/// What an LDAP exchange ended with.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The operation's result (SearchResultDone, BindResponse): code and the number of entries before it.
    Done { code: u8, entries: usize },
    /// A Notice of Disconnection (unsolicited, message id 0) with this code.
    Disconnected(u8),
    /// The server closed the connection without a word.
    Closed,
}

fn result_code(op: &[u8]) -> u8 {
    children(op)
        .first()
        .map_or(255, |(_, c)| c.first().copied().unwrap_or(255))
}

/// Read until the operation with `id` is done, or the connection ends.
fn outcome(s: &mut TcpStream, id: i64) -> Outcome {
    let mut entries = 0;
    while let Some((_, msg)) = read_element(s) {
        let parts = children(&msg);
        let (Some((_, mid)), Some((tag, op))) = (parts.first(), parts.get(1)) else {
            return Outcome::Closed;
        };
        let mid = mid.iter().fold(0i64, |a, x| (a << 8) | *x as i64);
        match *tag {
            0x64 => entries += 1,
            0x78 if mid == 0 => return Outcome::Disconnected(result_code(op)),
            0x65 | 0x61 if mid == id => {
                return Outcome::Done {
                    code: result_code(op),
                    entries,
                }
            }
            _ => {}
        }
    }
    Outcome::Closed
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Send `pdu` on a new connection, end the sending half (so a truncated PDU stays truncated), and read the
/// outcome of operation `id`.
fn exchange(addr: SocketAddr, pdu: &[u8], id: i64) -> Outcome {
    let mut s = connect(addr);
    s.write_all(pdu).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    outcome(&mut s, id)
}

// ---- the server under test ----

struct Server {
    proc: Proc,
    ldap: SocketAddr,
    http: u16,
    admin: u16,
    number: String,
    caller: String,
    users: usize,
    rss_settled: u64,
    _dir: tempfile::TempDir,
}

fn ldapsearch(port: u16, args: &[&str]) -> String {
    common::binary::ldapsearch(port, Some(("pbx", PASSWORD)), args)
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "demo-secret\n").unwrap();
        std::fs::write(dir.path().join("token"), "admin-t0ken\n").unwrap();
        let (sim, sim_port) = start_sim(300, 12, 20, 5);
        let (ldap, http, admin) = (free_port(), free_port(), free_port());
        let cfg = config_head(dir.path(), sim_port, "", "")
            + &format!(
                r#"[ldap]
listen = "127.0.0.1:{ldap}"
max_connections = 1500
write_timeout = "3s"

[carddav]
listen = "127.0.0.1:{http}"

[admin]
listen = "127.0.0.1:{admin}"
token_file = "{token}"

[[accounts]]
name = "pbx"
password_hash = "{hash}"
"#,
                token = dir.path().join("token").display(),
                hash = password_hash(PASSWORD),
            );
        let cfg_path = dir.path().join("entradir.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let proc = run_server(&cfg_path);
        wait_for("first sync", Duration::from_secs(60), || {
            http_status(admin, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == Some(200)
        });
        drop(sim); // from here on the directory is what it is: answers must not change
        let any = ldapsearch(
            ldap,
            &["(&(objectCategory=person)(telephoneNumber=*))", "telephoneNumber"],
        );
        let number = any
            .lines()
            .find_map(|l| l.strip_prefix("telephoneNumber: "))
            .expect("a user with a number")
            .to_string();
        let mut s = Server {
            proc,
            ldap: SocketAddr::from(([127, 0, 0, 1], ldap)),
            http,
            admin,
            number,
            caller: String::new(),
            users: 0,
            rss_settled: 0,
            _dir: dir,
        };
        s.caller = s.caller_id();
        s.users = s.paged_count();
        assert!(s.users > 200, "{} users", s.users);
        // Settle: the encodings of a full read are cached, the allocator has its arenas, and the password
        // check has made all of its working buffers (eight wrong passwords at once, from other hosts).
        for _ in 0..3 {
            s.paged_count();
        }
        let ldap = s.ldap;
        let warm: Vec<_> = (0..8u8)
            .map(|i| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let Ok(mut c) = connect_from([127, 0, 3, 1 + i], ldap).await else {
                            return;
                        };
                        let _ = c.write_all(&bind(1, "pbx", "not-the-password")).await;
                        let mut buf = [0u8; 256];
                        let _ = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
                    })
                })
            })
            .collect();
        for w in warm {
            let _ = w.join();
        }
        s.rss_settled = rss_kib(s.proc.0.id()) / 1024;
        s
    }

    fn caller_id(&self) -> String {
        let filter = format!("(|(telephoneNumber={n})(mobile={n}))", n = self.number);
        let out = ldapsearch(self.ldap.port(), &[&filter, "cn"]);
        let dns: Vec<&str> = out.lines().filter(|l| l.starts_with("dn")).collect();
        assert!(!dns.is_empty(), "caller-ID finds {}", self.number);
        dns.join("\n")
    }

    fn paged_count(&self) -> usize {
        let out = ldapsearch(
            self.ldap.port(),
            &[
                "-E",
                "pr=50/noprompt",
                "(&(objectCategory=person)(objectClass=user))",
                "1.1",
            ],
        );
        out.lines().filter(|l| l.starts_with("dn")).count()
    }

    /// The checks after every stage.
    fn healthy(&mut self, stage: &str) {
        assert!(self.proc.0.try_wait().unwrap().is_none(), "{stage}: the server exited");
        assert_eq!(self.caller_id(), self.caller, "{stage}: caller-ID answer changed");
        assert_eq!(self.paged_count(), self.users, "{stage}: paged user count changed");
        let bound = self.rss_settled + RSS_SLACK_MIB;
        let pid = self.proc.0.id();
        let start = Instant::now();
        let mut rss = rss_kib(pid) / 1024;
        while rss > bound && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(250));
            rss = rss_kib(pid) / 1024;
        }
        assert!(
            rss <= bound,
            "{stage}: RSS {rss} MiB, more than {RSS_SLACK_MIB} MiB above the settled {} MiB",
            self.rss_settled
        );
        eprintln!("{stage}: healthy, RSS {rss} MiB (settled {} MiB)", self.rss_settled);
    }

    fn bound(&self) -> Vec<u8> {
        bind(1, "pbx", PASSWORD)
    }
}

fn http_status(port: u16, request: &str) -> Option<u16> {
    http_raw(port, request.as_bytes()).0
}

/// Send a raw HTTP request; (status, whole answer).
fn http_raw(port: u16, request: &[u8]) -> (Option<u16>, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (None, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.split_whitespace().nth(1).and_then(|c| c.parse().ok()), text)
}

fn basic() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("pbx:{PASSWORD}"))
}

/// A connection from another loopback address (127.0.0.x), as a second host on the LAN would be.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    sock.connect(to).await
}

#[test]
fn bad_input_leaves_the_server_answering_the_same() {
    // The idle-connection stage holds 2,700 sockets here, and the server as many (it raises its own limit;
    // the child inherits this one).
    let limit = rlimit::increase_nofile_limit(4096).unwrap_or(0);
    assert!(
        limit >= 3200,
        "this test needs 3,200 open files; the hard limit allows {limit} (raise it: ulimit -Hn)"
    );
    let mut srv = Server::start();
    let ldap = srv.ldap;
    let auth = srv.bound();
    let after_bind = |pdu: Vec<u8>, id: i64| -> Outcome {
        let mut s = connect(ldap);
        s.write_all(&auth).unwrap();
        assert_eq!(outcome(&mut s, 1), Outcome::Done { code: 0, entries: 0 }, "bind");
        s.write_all(&pdu).unwrap();
        outcome(&mut s, id)
    };

    // 1. Malformed and truncated PDUs: a protocol error for the connection, never a crash.
    let good = Search::users(present("cn")).pdu(2, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "length beyond any buffer",
            vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01],
        ),
        ("indefinite length", vec![0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00]),
        ("wrong operation tag", message(2, tlv(0x7f, b"x"), &[])),
        ("empty sequence", vec![0x30, 0x00]),
        (
            "message id out of range",
            message(i64::from(u32::MAX) + 7, tlv(0x42, b""), &[]),
        ),
    ];
    for (what, pdu) in &cases {
        let o = exchange(ldap, pdu, 2);
        assert!(matches!(o, Outcome::Disconnected(2) | Outcome::Closed), "{what}: {o:?}");
    }
    srv.healthy("malformed PDUs");

    // 2. Filters 10,000 levels deep and 200 KB long, non-UTF-8 values, reversed and open ranges, limits.
    let mut deep = eq_filter("cn", b"x");
    for _ in 0..10_000 {
        deep = tlv(0xa2, &deep);
    }
    let o = after_bind(Search::users(deep).pdu(2, &[]), 2);
    assert!(
        matches!(o, Outcome::Done { code: 2 | 11 | 53, .. } | Outcome::Disconnected(2)),
        "10,000-deep filter: {o:?}"
    );
    let wide: Vec<u8> = (0..10_000)
        .flat_map(|i| eq_filter("cn", format!("nobody-{i:05}").as_bytes()))
        .collect();
    let wide = tlv(0xa1, &wide);
    assert!(wide.len() > 200_000);
    let o = after_bind(Search::users(wide).pdu(2, &[]), 2);
    assert!(
        matches!(
            o,
            Outcome::Done { code: 0, entries: 0 } | Outcome::Done { code: 11 | 53, .. } | Outcome::Disconnected(2)
        ),
        "200 KB filter: {o:?}"
    );
    let o = after_bind(Search::users(eq_filter("cn", b"\xff\xfe\xc3(")).pdu(2, &[]), 2);
    assert_eq!(
        o,
        Outcome::Done { code: 0, entries: 0 },
        "a non-UTF-8 value matches nobody"
    );
    for range in [
        "member;range=5-1",
        "member;range=*-3",
        "member;range=10-*",
        "member;range=-1-4294967296",
        "objectClass;range=3-1",
    ] {
        let mut s = Search::users(present("member"));
        s.attrs = vec![range];
        let o = after_bind(s.pdu(2, &[]), 2);
        assert!(matches!(o, Outcome::Done { code: 0, .. }), "{range}: {o:?}");
    }
    for (size, time) in [
        (i64::from(i32::MAX), i64::from(i32::MAX)),
        (-1, -1),
        (i64::MAX, i64::MAX),
    ] {
        let mut s = Search::users(present("cn"));
        (s.size_limit, s.time_limit) = (size, time);
        let o = after_bind(s.pdu(2, &[]), 2);
        assert!(
            matches!(o, Outcome::Done { code: 0 | 4, .. } | Outcome::Disconnected(2)),
            "limits {size}/{time}: {o:?}"
        );
    }
    srv.healthy("filters, values, ranges and limits");

    // 3. Garbage paging cookies: unwillingToPerform (53) or a protocol error, never a wrong page.
    for cookie in [&b"garbage"[..], &[0u8; 64][..], &[0xff; 3][..]] {
        let o = after_bind(Search::users(present("cn")).pdu(2, &[paged(10, cookie)]), 2);
        assert!(
            matches!(
                o,
                Outcome::Done {
                    code: 2 | 53,
                    entries: 0
                }
            ),
            "cookie {cookie:?}: {o:?}"
        );
    }
    srv.healthy("garbage paging cookies");

    // 4. A client that pipelines 10,000 searches for everybody and never reads: closed after write_timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let greedy = std::thread::spawn(move || {
        let mut s = TcpStream::connect(ldap).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut burst = bind(1, "pbx", PASSWORD);
        for id in 2..10_002 {
            let mut q = Search::users(present("objectClass"));
            q.attrs = vec!["*"];
            burst.extend(q.pdu(id, &[]));
        }
        // The server stops reading once its answers back up; this write then blocks until it gives up on us.
        let _ = s.write_all(&burst);
        std::thread::sleep(Duration::from_secs(5));
    });
    std::thread::sleep(Duration::from_secs(1));
    srv.healthy("while a client pipelines 10,000 searches and never reads");
    greedy.join().unwrap();
    srv.healthy("after the pipelining client");

    // 5. Thousands of idle connections: 1,500 from one host, of which the per-source cap (64) keeps only a few
    // and closes the rest, and 1,200 spread over 30 hosts; the PBX on 127.0.0.1 is served while they are open.
    let (idle, kept_from_one) = rt.block_on(async {
        let mut one = Vec::new();
        for _ in 0..1_500 {
            if let Ok(c) = connect_from([127, 0, 0, 2], ldap).await {
                one.push(c);
            }
        }
        let mut spread = Vec::new();
        for host in 0..30u8 {
            for _ in 0..40 {
                if let Ok(c) = connect_from([127, 0, 1, 10 + host], ldap).await {
                    spread.push(c);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Still open: nothing to read yet. Closed by the server: a notice of disconnection, or the end.
        let mut buf = [0u8; 256];
        let kept = one
            .iter()
            .filter(|c| matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        spread.extend(one);
        (spread, kept)
    });
    assert!(
        kept_from_one <= 64,
        "{kept_from_one} idle connections kept from one host"
    );
    srv.healthy("with 2,700 idle connections");
    drop(idle);
    srv.healthy("after the idle connections");

    // 6. A wrong-password flood: 300 binds at once from ten hosts.
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..300u16 {
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = connect_from([127, 0, 2, 1 + (i % 10) as u8], ldap).await else {
                    return;
                };
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = c.write_all(&bind(1, "pbx", &format!("wrong-{i}"))).await;
                let mut buf = [0u8; 256];
                let _ = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    srv.healthy("after a wrong-password flood");

    // 7. HTTP: slowloris connections first (held through the next stages), then bodies and paths.
    let slow: Vec<TcpStream> = (0..50)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", srv.http)).ok()?;
            s.write_all(b"PROPFIND /dav/books/all/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect();
    let slow_since = Instant::now();
    let auth = basic();
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol6;</D:displayname></D:prop></D:propfind>"#;
    let req = |method: &str, path: &str, extra: &str, body: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, _) = http_raw(
        srv.http,
        req("PROPFIND", "/dav/books/all/", "Depth: 0\r\n", bomb).as_bytes(),
    );
    assert_eq!(status, Some(400), "an XML bomb is a bad request");
    let (status, _) = http_raw(
        srv.http,
        req(
            "REPORT",
            "/dav/books/all/",
            "Depth: 1\r\n",
            &bomb.replace("propfind", "addressbook-query"),
        )
        .as_bytes(),
    );
    assert_eq!(status, Some(400), "an XML bomb in a REPORT is a bad request");
    // 50 MB, announced and chunked: refused with 413 once past the limit, never buffered whole.
    for framing in ["Content-Length: 52428800", "Transfer-Encoding: chunked"] {
        let mut s = TcpStream::connect(("127.0.0.1", srv.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Read while writing: the answer comes before the body is done, and the reset after it would drop it.
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut answer = Vec::new();
            let _ = r.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        });
        let head =
            format!("REPORT /dav/books/all/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n{framing}\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut chunk = vec![b'<'; 1 << 20];
        if framing.starts_with("Transfer") {
            chunk = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
        }
        for _ in 0..50 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let answer = reader.join().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "50 MB body, {framing}: {:?}",
            answer.lines().next()
        );
    }
    // Depth: infinity is refused (RFC 4918 propfind-finite-depth).
    let (status, text) = http_raw(
        srv.http,
        req("PROPFIND", "/dav/books/all/", "Depth: infinity\r\n", "").as_bytes(),
    );
    assert_eq!(status, Some(403), "Depth: infinity: {text}");
    assert!(text.contains("propfind-finite-depth"), "{text}");
    // Path traversal, raw and encoded: nothing outside the books.
    for path in [
        "/dav/books/../../../../etc/passwd",
        "/dav/books/all/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/dav/books/all/..%2f..%2f..%2fetc%2fpasswd",
        "/phonebook/..%2F..%2Fetc%2Fpasswd/yealink.xml",
        "/dav/books/all/%00.vcf",
        "/dav/books/all/%ff%fe.vcf",
    ] {
        let (status, text) = http_raw(srv.http, req("GET", path, "", "").as_bytes());
        assert!(matches!(status, Some(400 | 404)), "{path}: {status:?}");
        assert!(!text.contains("root:"), "{path}");
    }
    // Every write method on a read-only server: 403 or 405, nothing changes.
    for method in [
        "PUT",
        "DELETE",
        "MKCOL",
        "PROPPATCH",
        "MOVE",
        "COPY",
        "LOCK",
        "UNLOCK",
        "POST",
        "PATCH",
        "BOGUS",
    ] {
        let (status, _) = http_raw(
            srv.http,
            req(method, "/dav/books/all/", "Destination: /dav/books/x/\r\n", "<x/>").as_bytes(),
        );
        assert!(matches!(status, Some(403 | 405 | 501)), "{method}: {status:?}");
    }
    srv.healthy("HTTP bodies, paths and methods");

    // 8. Admin: bad tokens, a large body, garbage.
    for token in ["", "admin-t0ke", "admin-t0ken-and-more", "Bearer admin-t0ken"] {
        let status = http_status(
            srv.admin,
            &format!("POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, Some(401), "token {token:?}");
    }
    let big = format!(
        "POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-t0ken\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    assert_eq!(http_status(srv.admin, &big), Some(413), "a large admin body");
    let (status, _) = http_raw(srv.admin, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert!(matches!(status, None | Some(400)), "garbage to admin: {status:?}");
    srv.healthy("admin tokens and bodies");

    // The slowloris connections were cut once the header timeout passed, without holding anything up.
    let wait = Duration::from_secs(35).saturating_sub(slow_since.elapsed());
    std::thread::sleep(wait);
    let cut = slow
        .into_iter()
        .filter_map(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut b = [0u8; 512];
            // Closed: an answer (408) or the end, or a reset; still open: the read times out.
            Some(match s.read(&mut b) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            })
        })
        .filter(|closed| *closed)
        .count();
    assert_eq!(cut, 50, "slowloris connections are closed after the header timeout");
    srv.healthy("after the slowloris connections");
}
