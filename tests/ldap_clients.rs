//! End-to-end: the LDAP server on a loopback port, driven by the real OpenLDAP `ldapsearch` (ldap-utils) with
//! the queries real PBXs, phones and Jabber send, plus raw-socket checks for malformed input.
//!
//! Needs `ldapsearch` on PATH (CI installs ldap-utils).

use base64::Engine;
use bytes::Bytes;
use entradir::directory::entry::{normalize_dn, Attribute, Entry};
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{EntryKind, Naming, Published, Snapshot};
use entradir::ldap::{hash_password, Account, CancellationToken, LdapConfig, Server};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const BASE: &str = "DC=contoso,DC=example";
const PASSWORD: &str = "Pbx-Secret-1";
const PHOTO: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x80, 0x81, 0xfe,
];
const GUID: [u8; 16] = [
    0x2a, 0x00, 0xff, 0x80, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x7f, 0x01, 0x02, 0x03, 0x04,
];

fn entry(id: &str, kind: EntryKind, dn: &str, attrs: Vec<(&str, Vec<Bytes>)>) -> Entry {
    let mut attrs: Vec<Attribute> = attrs
        .into_iter()
        .map(|(n, v)| Attribute {
            name: n.into(),
            values: v,
        })
        .collect();
    attrs.push(Attribute {
        name: "distinguishedName".into(),
        values: vec![Bytes::from(dn.to_string())],
    });
    Entry {
        id: id.into(),
        kind,
        dn: dn.into(),
        dn_norm: normalize_dn(dn).unwrap().into(),
        guid: [0; 16],
        usn_changed: 1,
        usn_created: 1,
        attrs: attrs.into(),
        sort_keys: Default::default(),
    }
}

fn s(v: &str) -> Vec<Bytes> {
    vec![Bytes::from(v.to_string())]
}

fn user_oc() -> Vec<Bytes> {
    ["top", "person", "organizationalPerson", "user"]
        .iter()
        .map(|c| Bytes::from(*c))
        .collect()
}

/// A directory like the projection produces: 3 named users, 250 generated ones, a computer and nested groups.
fn directory() -> Published {
    let person = format!("CN=Person,CN=Schema,CN=Configuration,{BASE}");
    let users = format!("CN=Users,{BASE}");
    let sales = format!("CN=Sales,{users}");
    let berlin = format!("CN=Sales Berlin,{users}");
    let mut v = vec![
        entry(
            &BASE.to_lowercase(),
            EntryKind::Domain,
            BASE,
            vec![("objectClass", vec!["top".into(), "domain".into(), "domainDNS".into()])],
        ),
        entry(
            &users.to_lowercase(),
            EntryKind::Container,
            &users,
            vec![
                ("objectClass", vec!["top".into(), "container".into()]),
                ("cn", s("Users")),
            ],
        ),
    ];
    let named = [
        (
            "u-jane",
            "Jane",
            "Doe",
            "+49 30 1234567",
            "+49 171 5550100",
            "4711",
            "512",
            Some(&berlin),
        ),
        (
            "u-max",
            "Max",
            "Müller",
            "089 9876543",
            "0172 5550199",
            "4712",
            "512",
            None,
        ),
        ("u-gone", "Otto", "Disabled", "+49 40 5550111", "", "4713", "514", None),
    ];
    for (id, given, sn, tel, mobile, ip, uac, group) in named {
        let cn = format!("{given} {sn}");
        let dn = format!("CN={cn},{users}");
        let mut a = vec![
            ("objectClass", user_oc()),
            ("objectCategory", s(&person)),
            ("cn", s(&cn)),
            ("name", s(&cn)),
            ("sn", s(sn)),
            ("givenName", s(given)),
            ("displayName", s(&cn)),
            ("sAMAccountName", s(&given.to_lowercase())),
            (
                "userPrincipalName",
                s(&format!("{}@contoso.example", given.to_lowercase())),
            ),
            (
                "mail",
                s(&format!(
                    "{}.{}@contoso.example",
                    given.to_lowercase(),
                    sn.to_lowercase()
                )),
            ),
            ("telephoneNumber", s(tel)),
            ("ipPhone", s(ip)),
            ("userAccountControl", s(uac)),
            ("title", s("Engineer")),
            (
                "msRTCSIP-PrimaryUserAddress",
                s(&format!("sip:{}@contoso.example", given.to_lowercase())),
            ),
        ];
        if !mobile.is_empty() {
            a.push(("mobile", s(mobile)));
        }
        if id == "u-jane" {
            a.push(("thumbnailPhoto", vec![Bytes::from_static(PHOTO)]));
            a.push(("objectGUID", vec![Bytes::copy_from_slice(&GUID)]));
        }
        if let Some(g) = group {
            a.push(("memberOf", s(g)));
        }
        v.push(entry(id, EntryKind::User, &dn, a));
    }
    for i in 0..250 {
        let cn = format!("Bulk User {i:03}");
        v.push(entry(
            &format!("u-bulk-{i:03}"),
            EntryKind::User,
            &format!("CN={cn},{users}"),
            vec![
                ("objectClass", user_oc()),
                ("objectCategory", s(&person)),
                ("cn", s(&cn)),
                ("sn", s(&format!("User{i:03}"))),
                ("telephoneNumber", s(&format!("+49 221 {:07}", 3_000_000 + i))),
                ("userAccountControl", s("512")),
            ],
        ));
    }
    let mut pc_oc = user_oc();
    pc_oc.push("computer".into());
    v.push(entry(
        "c-pc01",
        EntryKind::Computer,
        &format!("CN=PC01,{users}"),
        vec![
            ("objectClass", pc_oc),
            (
                "objectCategory",
                s(&format!("CN=Computer,CN=Schema,CN=Configuration,{BASE}")),
            ),
            ("cn", s("PC01")),
            ("userAccountControl", s("4096")),
        ],
    ));
    v.push(entry(
        "g-berlin",
        EntryKind::Group,
        &berlin,
        vec![
            ("objectClass", vec!["top".into(), "group".into()]),
            ("cn", s("Sales Berlin")),
            ("member", s(&format!("CN=Jane Doe,{users}"))),
            ("memberOf", s(&sales)),
        ],
    ));
    v.push(entry(
        "g-sales",
        EntryKind::Group,
        &sales,
        vec![
            ("objectClass", vec!["top".into(), "group".into()]),
            ("cn", s("Sales")),
            ("member", s(&berlin)),
        ],
    ));
    let snap = Snapshot::from_entries(Naming::new(BASE).unwrap(), PhoneNormalizer::new("DE").unwrap(), 42, v);
    Published::new(snap)
}

struct Running {
    addr: SocketAddr,
    ldaps: Option<SocketAddr>,
    stop: CancellationToken,
    _ca_dir: Option<tempfile::TempDir>,
    ca_file: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn tls_material() -> (tempfile::TempDir, String, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "entradir test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    // libldap checks the certificate against the reverse-resolved name of the peer, which on most machines is
    // the host name rather than "localhost", so both go into the certificate.
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if !h.trim().is_empty() && h.trim() != "localhost" {
            names.push(h.trim().to_string());
        }
    }
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let chain = format!("{}{}", cert.pem(), ca.pem());
    let cfg = entradir::ldap::tls::server_config_from_pem(chain.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    (dir, ca_path.to_string_lossy().into_owned(), cfg)
}

async fn start(tls: bool, allow_anonymous: bool) -> Running {
    let mut cfg = LdapConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        allow_anonymous,
        accounts: vec![Account {
            name: "pbx".into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            networks: vec!["127.0.0.0/8".parse().unwrap()],
        }],
        ..LdapConfig::default()
    };
    let mut ca = None;
    if tls {
        let (dir, path, server_cfg) = tls_material();
        cfg.tls = Some(server_cfg);
        cfg.starttls = true;
        cfg.ldaps_listen = Some("127.0.0.1:0".parse().unwrap());
        ca = Some((dir, path));
    }
    let server = Server::bind(cfg, directory()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let ldaps = server.ldaps_local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    let (ca_dir, ca_file) = match ca {
        Some((d, p)) => (Some(d), Some(p)),
        None => (None, None),
    };
    Running {
        addr,
        ldaps,
        stop,
        _ca_dir: ca_dir,
        ca_file,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn dns(&self) -> Vec<String> {
        self.values("dn")
    }
    /// Values of `attr` (LDIF `attr: text` or base64 `attr:: ...` for non-ASCII text).
    fn values(&self, attr: &str) -> Vec<String> {
        let plain = format!("{attr}: ");
        let b64 = format!("{attr}:: ");
        self.stdout
            .lines()
            .filter_map(|l| {
                if let Some(v) = l.strip_prefix(&plain) {
                    return Some(v.to_string());
                }
                let v = base64::engine::general_purpose::STANDARD
                    .decode(l.strip_prefix(&b64)?)
                    .ok()?;
                Some(
                    String::from_utf8(v)
                        .unwrap_or_else(|e| base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                )
            })
            .collect()
    }
}

/// Run ldapsearch with `args` (plus -LLL -x -o ldif-wrap=no) against `url`, optionally with a CA file.
async fn ldapsearch(url: String, ca: Option<String>, args: Vec<String>) -> Out {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("ldapsearch");
        if std::env::var_os("LDAP_TEST_DEBUG").is_some() {
            cmd.args(["-d", "1"]);
        }
        cmd.args(["-LLL", "-x", "-o", "ldif-wrap=no", "-o", "nettimeout=10", "-H", &url])
            .args(&args);
        // Keep the machine's ldap.conf out of the test, but honour LDAPTLS_* from the environment.
        cmd.env("LDAPCONF", "/dev/null")
            .env("LDAPRC", "entradir-test-no-ldaprc");
        if let Some(ca) = ca {
            cmd.env("LDAPTLS_CACERT", ca).env("LDAPTLS_REQCERT", "demand");
        }
        let o = cmd
            .output()
            .expect("ldapsearch must be installed (apt-get install ldap-utils)");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn url(r: &Running) -> String {
    format!("ldap://127.0.0.1:{}", r.addr.port())
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Bound search as the service account, subtree from the base.
async fn search(r: &Running, filter: &str, attrs: &[&str]) -> Out {
    let mut a = args(&[
        "-D",
        "CN=pbx,CN=Users,DC=contoso,DC=example",
        "-w",
        PASSWORD,
        "-b",
        BASE,
        filter,
    ]);
    a.extend(args(attrs));
    ldapsearch(url(r), None, a).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootdse_is_public_but_data_needs_a_bind() {
    let r = start(false, false).await;
    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-b",
            "",
            "-s",
            "base",
            "(objectClass=*)",
            "defaultNamingContext",
            "supportedControl",
            "highestCommittedUSN",
        ]),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.values("defaultNamingContext"), vec![BASE]);
    assert_eq!(o.values("highestCommittedUSN"), vec!["42"]);
    assert!(o
        .values("supportedControl")
        .contains(&"1.2.840.113556.1.4.319".to_string()));

    let o = ldapsearch(url(&r), None, args(&["-b", BASE, "(sn=Doe)"])).await;
    assert_eq!(
        o.code, 1,
        "anonymous search must fail with operationsError: {}",
        o.stdout
    );
    assert!(o.stderr.contains("000004DC"), "{}", o.stderr);
    assert!(o.dns().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_in_all_three_name_forms() {
    let r = start(false, false).await;
    for name in [
        "CN=pbx,CN=Users,DC=contoso,DC=example",
        "pbx@contoso.example",
        "CONTOSO\\pbx",
    ] {
        let o = ldapsearch(
            url(&r),
            None,
            args(&["-D", name, "-w", PASSWORD, "-b", BASE, "(sn=Doe)", "cn"]),
        )
        .await;
        assert_eq!(o.code, 0, "{name}: {}", o.stderr);
        assert_eq!(o.values("cn"), vec!["Jane Doe"], "{name}");
    }
    let started = std::time::Instant::now();
    let o = ldapsearch(
        url(&r),
        None,
        args(&["-D", "pbx@contoso.example", "-w", "wrong", "-b", BASE, "(sn=Doe)"]),
    )
    .await;
    assert_eq!(o.code, 49, "{}", o.stderr);
    assert!(o.stderr.contains("data 52e"), "{}", o.stderr);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "failed binds are delayed"
    );
    let o = ldapsearch(
        url(&r),
        None,
        args(&["-D", "nobody@contoso.example", "-w", PASSWORD, "-b", BASE, "(sn=Doe)"]),
    )
    .await;
    assert_eq!(o.code, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_lookups_match_any_spelling() {
    let r = start(false, false).await;
    for filter in [
        "(telephoneNumber=+49 30 1234567)",
        "(telephoneNumber=004930 1234567)",
        "(telephoneNumber=030 1234567)",
        "(telephoneNumber=*1234567)",
        "(|(telephoneNumber=*5550100)(mobile=*5550100)(ipPhone=*5550100))",
        "(|(telephoneNumber=*3012345*)(mobile=*3012345*)(ipPhone=*3012345*))",
        "(|(telephoneNumber=+4930123*)(Mobile=+4930123*)(ipPhone=+4930123*))",
    ] {
        let o = search(&r, filter, &["cn", "telephoneNumber"]).await;
        assert_eq!(o.code, 0, "{filter}: {}", o.stderr);
        assert_eq!(o.values("cn"), vec!["Jane Doe"], "{filter}");
    }
    let o = search(&r, "(telephoneNumber=*3000042)", &["cn"]).await;
    assert_eq!(o.values("cn"), vec!["Bulk User 042"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phonebook_queries_from_real_devices() {
    let r = start(false, false).await;
    // Yealink name search: prefix and contains.
    let o = search(&r, "(|(cn=Jan*)(sn=Jan*))", &["cn"]).await;
    assert_eq!(o.values("cn"), vec!["Jane Doe"]);
    let o = search(&r, "(|(cn=*üll*)(sn=*üll*))", &["cn"]).await;
    assert_eq!(o.values("cn"), vec!["Max Müller"]);
    // Snom: number present and surname.
    let o = search(&r, "(&(telephoneNumber=*)(sn=Doe))", &["cn", "telephoneNumber"]).await;
    assert_eq!(o.values("telephoneNumber"), vec!["+49 30 1234567"]);
    // Cisco CUCM directory sync: users that are not computers and not disabled.
    let cucm = "(&(objectclass=user)(!(objectclass=Computer))(!(UserAccountControl:1.2.840.113556.1.4.803:=2)))";
    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-E",
            "pr=100/noprompt",
            cucm,
            "sAMAccountName",
        ]),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let dns = o.dns();
    assert_eq!(dns.len(), 252, "2 enabled named users + 250 bulk");
    assert!(!dns.iter().any(|d| d.contains("Otto") || d.contains("PC01")));
    // Crestron / Unify style.
    let o = search(
        &r,
        "(&(displayName=Max*)(objectCategory=person)(objectClass=user))",
        &["displayName"],
    )
    .await;
    assert_eq!(o.values("displayName"), vec!["Max Müller"]);
    // anr as Jabber sends it.
    let o = search(&r, "(anr=Jane D)", &["cn"]).await;
    assert_eq!(o.values("cn"), vec!["Jane Doe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jabber_attributes_with_binary_photo_and_guid() {
    let r = start(false, false).await;
    let attrs = [
        "displayName",
        "givenName",
        "sn",
        "mail",
        "telephoneNumber",
        "mobile",
        "title",
        "thumbnailPhoto",
        "msRTCSIP-PrimaryUserAddress",
        "userPrincipalName",
    ];
    let o = search(&r, "(&(objectCategory=person)(sAMAccountName=jane))", &attrs).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let photo = o.values("thumbnailPhoto");
    assert_eq!(photo, vec![base64::engine::general_purpose::STANDARD.encode(PHOTO)]);
    assert_eq!(
        o.values("msRTCSIP-PrimaryUserAddress"),
        vec!["sip:jane@contoso.example"]
    );
    // Binary equality with \XX escapes (not valid UTF-8): ldap3_proto alone would drop the connection.
    let guid: String = GUID.iter().map(|b| format!("\\{b:02x}")).collect();
    let o = search(&r, &format!("(objectGUID={guid})"), &["cn"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.values("cn"), vec!["Jane Doe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_size_limits_scopes_and_chains() {
    let r = start(false, false).await;
    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-E",
            "pr=100/noprompt",
            "(sn=User*)",
            "1.1",
        ]),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut dns = o.dns();
    assert_eq!(dns.len(), 250);
    dns.sort();
    dns.dedup();
    assert_eq!(dns.len(), 250, "no entry twice across pages");

    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-z",
            "5",
            "(sn=User*)",
            "cn",
        ]),
    )
    .await;
    assert_eq!(o.code, 4, "sizeLimitExceeded after partial results: {}", o.stderr);
    assert_eq!(o.dns().len(), 5);

    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            "CN=Nobody,CN=Users,DC=contoso,DC=example",
            "(objectClass=*)",
        ]),
    )
    .await;
    assert_eq!(o.code, 32);
    assert!(
        o.stderr.contains("Matched DN: CN=Users,DC=contoso,DC=example"),
        "{}",
        o.stderr
    );

    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-s",
            "one",
            "(objectClass=*)",
            "1.1",
        ]),
    )
    .await;
    assert_eq!(o.dns(), vec!["CN=Users,DC=contoso,DC=example"]);

    let chain = "(memberOf:1.2.840.113556.1.4.1941:=CN=Sales,CN=Users,DC=contoso,DC=example)";
    let o = search(&r, chain, &["cn"]).await;
    let mut cns = o.values("cn");
    cns.sort();
    assert_eq!(cns, vec!["Jane Doe", "Sales Berlin"]);

    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-E",
            "!sss=cn/1.2.3",
            "(sn=User00*)",
            "cn",
        ]),
    )
    .await;
    assert_eq!(o.code, 0, "server side sort: {}", o.stderr);
    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-E",
            "!sss=-cn",
            "(sn=User00*)",
            "cn",
        ]),
    )
    .await;
    assert_eq!(o.values("cn").first().map(String::as_str), Some("Bulk User 009"));
    let o = ldapsearch(
        url(&r),
        None,
        args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "-e",
            "!1.2.3.4.5",
            "(sn=Doe)",
        ]),
    )
    .await;
    assert_eq!(o.code, 12, "unknown critical control: {}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_ldaps() {
    let r = start(true, true).await;
    let o = ldapsearch(
        format!("ldap://localhost:{}", r.addr.port()),
        r.ca_file.clone(),
        args(&[
            "-ZZ",
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "(sn=Doe)",
            "cn",
        ]),
    )
    .await;
    assert_eq!(o.code, 0, "StartTLS: {}", o.stderr);
    assert_eq!(o.values("cn"), vec!["Jane Doe"]);
    let port = r.ldaps.unwrap().port();
    let o = ldapsearch(
        format!("ldaps://localhost:{port}"),
        r.ca_file.clone(),
        args(&["-D", "CONTOSO\\pbx", "-w", PASSWORD, "-b", BASE, "(sn=Doe)", "cn"]),
    )
    .await;
    assert_eq!(o.code, 0, "LDAPS: {}", o.stderr);
    assert_eq!(o.values("cn"), vec!["Jane Doe"]);
}

fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_tls_on_plain_port_close_cleanly() {
    let r = start(false, true).await;
    let addr = r.addr;
    let (http, hello, bad) = tokio::task::spawn_blocking(move || {
        let http = raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n");
        let hello = raw_exchange(
            addr,
            &[0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03],
        );
        // A well-framed message whose protocolOp is nonsense.
        let bad = raw_exchange(addr, &[0x30, 0x06, 0x02, 0x01, 0x05, 0x99, 0x01, 0x00]);
        (http, hello, bad)
    })
    .await
    .unwrap();
    let notice = b"1.3.6.1.4.1.1466.20036";
    assert!(
        http.windows(notice.len()).any(|w| w == notice),
        "garbage gets a Notice of Disconnection"
    );
    assert!(hello.is_empty(), "a TLS ClientHello is just closed");
    assert!(bad.windows(notice.len()).any(|w| w == notice));
    let mut buf = bytes::BytesMut::from(&bad[..]);
    let msg = tokio_util::codec::Decoder::decode(&mut ldap3_proto::LdapCodec::default(), &mut buf)
        .unwrap()
        .unwrap();
    match msg.op {
        ldap3_proto::proto::LdapOp::ExtendedResponse(r) => {
            assert_eq!(msg.msgid, 0);
            assert_eq!(r.res.code, ldap3_proto::proto::LdapResultCode::ProtocolError);
        }
        other => panic!("expected a Notice of Disconnection, got {other:?}"),
    }
    // The server is unaffected.
    let o = ldapsearch(url(&r), None, args(&["-b", BASE, "(sn=Doe)", "cn"])).await;
    assert_eq!(o.values("cn"), vec!["Jane Doe"], "{}", o.stderr);
}

mod raw {
    //! Protocol behaviour that ldapsearch cannot show: pipelining, limits, idle timeout.

    use super::*;
    use bytes::BytesMut;
    use entradir::ldap::filter::Filter;
    use entradir::ldap::proto::{encode_bind, encode_search, take_response, Response, Scope};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn read_until_done(s: &mut TcpStream, buf: &mut BytesMut, want_done: usize) -> Vec<Response> {
        let mut got = Vec::new();
        let mut dones = 0;
        while dones < want_done {
            while let Some(r) = take_response(buf).unwrap() {
                if matches!(r.tag, 0x61 | 0x65) {
                    dones += 1;
                }
                got.push(r);
            }
            if dones >= want_done {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "server closed early");
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_requests_all_get_answers() {
        let r = start(false, false).await;
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        let mut req = BytesMut::new();
        req.extend_from_slice(&encode_bind(1, "pbx@contoso.example", PASSWORD.as_bytes()));
        let f = Filter::parse("(telephoneNumber=*3000042)").unwrap();
        for id in 2..42 {
            req.extend_from_slice(&encode_search(id, BASE, Scope::Sub, 0, &f, &["cn"], &[]));
        }
        s.write_all(&req).await.unwrap();
        let mut buf = BytesMut::new();
        let got = read_until_done(&mut s, &mut buf, 41).await;
        assert_eq!(
            got[0],
            Response {
                id: 1,
                tag: 0x61,
                code: Some(0)
            },
            "bind answered first"
        );
        let mut done_ids: Vec<i64> = got.iter().filter(|r| r.tag == 0x65).map(|r| r.id).collect();
        done_ids.sort();
        assert_eq!(done_ids, (2..42).collect::<Vec<_>>());
        assert_eq!(got.iter().filter(|r| r.tag == 0x64).count(), 40, "one entry per search");
        assert!(got.iter().filter(|r| r.tag == 0x65).all(|r| r.code == Some(0)));
    }

    /// A client that asks for a large result and stops reading is disconnected after `write_timeout`, while
    /// another client's searches are answered meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_disconnected() {
        let users = format!("CN=Users,{BASE}");
        let big = Bytes::from(vec![b'x'; 16 * 1024]);
        let structural = [
            entry(
                &BASE.to_lowercase(),
                EntryKind::Domain,
                BASE,
                vec![("objectClass", vec!["top".into(), "domain".into()])],
            ),
            entry(
                &users.to_lowercase(),
                EntryKind::Container,
                &users,
                vec![("objectClass", vec!["top".into(), "container".into()])],
            ),
        ];
        let entries: Vec<Entry> = structural
            .into_iter()
            .chain((0..2000).map(|i| {
                entry(
                    &format!("u{i}"),
                    EntryKind::User,
                    &format!("CN=User {i},{users}"),
                    vec![
                        ("objectClass", user_oc()),
                        ("cn", s(&format!("User {i}"))),
                        ("description", vec![big.clone()]),
                    ],
                )
            }))
            .collect();
        let snap = Snapshot::from_entries(
            Naming::new(BASE).unwrap(),
            PhoneNormalizer::new("DE").unwrap(),
            1,
            entries,
        );
        let mut cfg = LdapConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            write_timeout: Duration::from_millis(500),
            size_limit: 0,
            allow_anonymous: true,
            ..LdapConfig::default()
        };
        cfg.accounts.clear();
        let server = Server::bind(cfg, Published::new(snap)).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));

        // 2,000 entries of 16 KiB: some 32 MB, far more than the socket buffers hold.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        let all = Filter::parse("(objectClass=*)").unwrap();
        stalled
            .write_all(&encode_search(1, BASE, Scope::Sub, 0, &all, &["description"], &[]))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut other = TcpStream::connect(addr).await.unwrap();
        let one = Filter::parse("(cn=User 7)").unwrap();
        other
            .write_all(&encode_search(2, BASE, Scope::Sub, 0, &one, &["cn"], &[]))
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        let got = read_until_done(&mut other, &mut buf, 1).await;
        assert_eq!(
            got.iter().filter(|r| r.tag == 0x64).count(),
            1,
            "the other client is answered"
        );

        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Now read: what the buffers held, then the end of the connection, without the search's done message.
        let mut buf = BytesMut::new();
        let mut done = false;
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stalled.read_buf(&mut buf))
                .await
                .expect("the server closed the stalled connection")
                .unwrap_or(0);
            while let Some(r) = take_response(&mut buf).unwrap_or(None) {
                done |= r.tag == 0x65;
            }
            if n == 0 {
                break;
            }
        }
        assert!(!done, "the stalled client was cut off, not served to the end");
        assert!(started.elapsed() >= Duration::from_millis(500));
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed_and_busy_servers_say_so() {
        let mut cfg = LdapConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            idle_timeout: Duration::from_millis(300),
            max_connections: 1,
            allow_anonymous: true,
            ..LdapConfig::default()
        };
        cfg.accounts.clear();
        let server = Server::bind(cfg, directory()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));

        let mut first = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let mut b = BytesMut::from(&buf[..]);
        let notice = take_response(&mut b).unwrap().expect("a Notice of Disconnection");
        assert_eq!((notice.id, notice.tag, notice.code), (0, 0x78, Some(51)), "busy");

        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "closed by the idle timeout, not at once"
        );

        // A connection in use is not idle: a lookup every 100 ms for well over the timeout is answered every
        // time, and the connection is closed only once the lookups stop. (After a pause: the closed connection's
        // slot is given back as its task ends.)
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let one = Filter::parse("(objectClass=*)").unwrap();
        let mut buf = BytesMut::new();
        for id in 1..=12 {
            busy.write_all(&encode_search(id, BASE, Scope::Base, 0, &one, &["cn"], &[]))
                .await
                .unwrap();
            let got = read_until_done(&mut busy, &mut buf, 1).await;
            assert!(got.iter().any(|r| r.tag == 0x65), "lookup {id} answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stopped = std::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut rest))
            .await
            .expect("closed once idle")
            .unwrap();
        assert!(
            stopped.elapsed() >= Duration::from_millis(150),
            "closed by the idle timeout after the last lookup"
        );
        stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_accounts_without_restart() {
    let cfg = LdapConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        accounts: vec![Account {
            name: "pbx".into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            networks: vec![],
        }],
        ..LdapConfig::default()
    };
    let server = Server::bind(cfg.clone(), directory()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    let url = format!("ldap://127.0.0.1:{}", addr.port());
    let bind = |pw: &str| args(&["-D", "pbx@contoso.example", "-w", pw, "-b", BASE, "(sn=Doe)", "cn"]);
    assert_eq!(ldapsearch(url.clone(), None, bind(PASSWORD)).await.code, 0);

    let mut next = cfg.clone();
    next.accounts[0].password_hash = hash_password("rotated").unwrap();
    next.accounts[0].networks = vec!["10.0.0.0/8".parse().unwrap()];
    handle.reload(next.clone(), Default::default()).unwrap();
    let o = ldapsearch(url.clone(), None, bind("rotated")).await;
    assert_eq!(o.code, 49, "network restriction applies after reload");
    assert!(o.stderr.contains("data 531"), "{}", o.stderr);
    next.accounts[0].networks.clear();
    handle.reload(next.clone(), Default::default()).unwrap();
    assert_eq!(ldapsearch(url.clone(), None, bind("rotated")).await.code, 0);
    assert_eq!(
        ldapsearch(url.clone(), None, bind(PASSWORD)).await.code,
        49,
        "old password no longer works"
    );

    let mut bad = next.clone();
    bad.starttls = true;
    assert!(
        handle.reload(bad, Default::default()).is_err(),
        "StartTLS without a certificate is refused, old config kept"
    );
    assert_eq!(ldapsearch(url.clone(), None, bind("rotated")).await.code, 0);

    // A new listen address: bound first (an address another process holds fails and changes nothing), then
    // moved to.
    let foreign = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let taken = foreign.local_addr().unwrap();
    let mut moved = next.clone();
    moved.listen = Some(taken);
    let busy = handle.prepare_listeners(&moved).await;
    assert!(busy.is_err_and(|e| e.to_string().contains(&taken.to_string())));
    assert_eq!(ldapsearch(url.clone(), None, bind("rotated")).await.code, 0);
    moved.listen = Some("127.0.0.2:0".parse().unwrap());
    let change = handle.prepare_listeners(&moved).await.unwrap();
    handle.reload(moved, change).unwrap();
    let new_addr = handle.local_addr().unwrap();
    assert_eq!(new_addr.ip().to_string(), "127.0.0.2");
    let new_url = format!("ldap://{new_addr}");
    assert_eq!(ldapsearch(new_url, None, bind("rotated")).await.code, 0);
    assert_ne!(
        ldapsearch(url, None, bind("rotated")).await.code,
        0,
        "the old address is closed"
    );
    stop.cancel();
}

mod hardening {
    //! Hostile or odd input from issue #11: reversed ranges, huge limits, wrong-password floods, hang-ups during
    //! a failed bind's delay, one source opening many connections.

    use super::*;
    use bytes::BytesMut;
    use entradir::ldap::ber;
    use entradir::ldap::proto::{encode_bind, take_response, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// `objectClass;range=3-1` once sliced backwards and killed the worker (ldapsearch saw the connection
    /// drop). Reversed ranges now leave the attribute out, like a range past the end; the entries come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reversed_ranges_and_huge_time_limits_are_answered() {
        let r = start(false, false).await;
        for range in ["objectClass;range=3-1", "objectClass;range=2-0", "member;range=5-1"] {
            let o = search(&r, "(objectCategory=person)", &[range, "cn"]).await;
            assert_eq!(o.code, 0, "{range}: {}", o.stderr);
            assert!(
                o.values("cn").contains(&"Jane Doe".to_string()),
                "{range}: {}",
                o.stdout
            );
            assert!(o.values("objectClass").is_empty(), "{range}: {}", o.stdout);
        }
        let o = search(&r, "(objectCategory=person)", &["objectClass;range=1-2"]).await;
        assert!(
            o.stdout.contains("objectClass;range=1-2: person"),
            "a real range still works: {}",
            o.stdout
        );
        // ldapsearch itself refuses `-l 9223372036854775807` ("invalid timelimit"); maxInt is the most it sends.
        let mut a = args(&["-l", "2147483647", "-z", "2147483647"]);
        a.extend(args(&[
            "-D",
            "CN=pbx,CN=Users,DC=contoso,DC=example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "(sn=Doe)",
            "cn",
        ]));
        let o = ldapsearch(url(&r), None, a).await;
        assert_eq!(
            (o.code, o.values("cn")),
            (0, vec!["Jane Doe".to_string()]),
            "{}",
            o.stderr
        );
        // 2^63-1 seconds, as a client without ldapsearch's check sends it: once an overflow panic.
        let mut search = BytesMut::new();
        ber::put_constructed(&mut search, 0x30, |m| {
            ber::put_int(m, 0x02, 2);
            ber::put_constructed(m, 0x63, |q| {
                ber::put_tlv(q, 0x04, BASE.as_bytes());
                ber::put_tlv(q, 0x0a, &[2]);
                ber::put_tlv(q, 0x0a, &[0]);
                ber::put_int(q, 0x02, i64::MAX);
                ber::put_int(q, 0x02, i64::MAX);
                ber::put_tlv(q, 0x01, &[0]);
                entradir::ldap::filter::Filter::parse("(sn=Doe)").unwrap().encode(q);
                ber::put_constructed(q, 0x30, |a| ber::put_tlv(a, 0x04, b"cn"));
            });
        });
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(&encode_bind(1, "pbx@contoso.example", PASSWORD.as_bytes()))
            .await
            .unwrap();
        s.write_all(&search).await.unwrap();
        let mut buf = BytesMut::new();
        let bind = read_response(&mut s, &mut buf, Duration::from_secs(10)).await;
        assert_eq!((bind.id, bind.code), (1, Some(0)));
        let entry = read_response(&mut s, &mut buf, Duration::from_secs(10)).await;
        let done = read_response(&mut s, &mut buf, Duration::from_secs(10)).await;
        assert_eq!((entry.id, entry.tag), (2, 0x64));
        assert_eq!((done.id, done.tag, done.code), (2, 0x65, Some(0)));
    }

    async fn wrong_bind(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&encode_bind(1, "pbx@contoso.example", b"wrong"))
            .await
            .unwrap();
        s
    }

    async fn server(max_connections: usize, per_source: usize) -> (SocketAddr, CancellationToken) {
        let cfg = LdapConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            max_connections,
            max_connections_per_source: per_source,
            accounts: vec![Account {
                name: "pbx".into(),
                password_hash: hash_password(PASSWORD).unwrap(),
                networks: vec![],
            }],
            ..LdapConfig::default()
        };
        let server = Server::bind(cfg, directory()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));
        (addr, stop)
    }

    async fn bound_search_works(addr: SocketAddr) -> Out {
        let a = args(&[
            "-D",
            "pbx@contoso.example",
            "-w",
            PASSWORD,
            "-b",
            BASE,
            "(sn=Doe)",
            "cn",
        ]);
        ldapsearch(format!("ldap://{addr}"), None, a).await
    }

    async fn read_response(s: &mut TcpStream, buf: &mut BytesMut, within: Duration) -> Response {
        loop {
            if let Some(r) = take_response(buf).unwrap() {
                return r;
            }
            let n = tokio::time::timeout(within, s.read_buf(buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "closed without an answer");
        }
    }

    /// A client that connects, sends a wrong bind and hangs up used to keep its connection slot for the whole
    /// delay (8 s once a source has failed a few times), so a handful of them locked every PBX out; and a
    /// client waiting for its delayed answer held a slot too. With one slot: neither blocks the PBX now.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_binds_waiting_out_their_delay_do_not_lock_others_out() {
        let (addr, stop) = server(1, 0).await;
        // Five failures from this address (answered 0.25 s … 4 s later): the next ones wait 8 s.
        let mut p = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        for id in 1..=5 {
            p.write_all(&encode_bind(id, "pbx@contoso.example", b"wrong"))
                .await
                .unwrap();
            let r = read_response(&mut p, &mut buf, Duration::from_secs(10)).await;
            assert_eq!((r.id, r.code), (id, Some(49)));
        }
        drop(p);
        let hung_up = wrong_bind(addr).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(hung_up);
        let mut waiting = wrong_bind(addr).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let o = bound_search_works(addr).await;
        assert_eq!(
            (o.code, o.values("cn")),
            (0, vec!["Jane Doe".to_string()]),
            "{}",
            o.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(3), "not after the 8 s delays");
        // The waiting client still gets its answer once its delay is over (the slot is free again by then).
        let mut buf = BytesMut::new();
        let r = read_response(&mut waiting, &mut buf, Duration::from_secs(20)).await;
        assert_eq!((r.id, r.tag, r.code), (1, 0x61, Some(49)));
        stop.cancel();
    }

    /// `max_connections_per_source`: the third connection from one address is refused as busy; others'
    /// connections and the address's own after one closed are not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_cannot_take_every_connection() {
        let (addr, stop) = server(100, 2).await;
        let first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let notice = take_response(&mut BytesMut::from(&buf[..])).unwrap().expect("a notice");
        assert_eq!((notice.id, notice.tag, notice.code), (0, 0x78, Some(51)), "busy");
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let o = bound_search_works(addr).await;
        assert_eq!(
            (o.code, o.values("cn")),
            (0, vec!["Jane Doe".to_string()]),
            "{}",
            o.stderr
        );
        stop.cancel();
    }
}
