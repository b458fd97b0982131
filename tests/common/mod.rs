//! Shared set-up for integration tests: a Graph simulator, a Syncer pointed at it, and a Directory.
#![allow(dead_code)]

pub mod binary;
pub mod vcard;
pub mod xml;

use entradir::directory::change::{MemberRef, PhotoState};
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::store::{Object, PhotoRecord, Store};
use entradir::directory::{Directory, Entry, Naming, Settings, Snapshot};
use entradir::graph::{GraphConfig, RetryPolicy, Syncer};
use entradir::sync::{SyncEngine, SyncStatus};
use graph_sim::{self as sim, SimHandle, SimOptions, TenantExport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BASE_DN: &str = "DC=contoso,DC=example";

/// A program from the Python venv holding the real clients (vdirsyncer, ldap3, vobject): `ENTRADIR_VENV`, else
/// `<repo>/.venv`, as `scripts/test` creates it. Missing is a test failure that says how to get it.
pub fn venv_bin(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("ENTRADIR_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} not found: run scripts/test (it creates the venv) or set ENTRADIR_VENV",
        bin.display()
    );
    bin
}

pub fn settings() -> Settings {
    Settings::new(Naming::new(BASE_DN).unwrap(), PhoneNormalizer::new("DE").unwrap())
}

pub async fn sim(users: usize, groups: usize, devices: usize, seed: u64) -> SimHandle {
    sim::start(SimOptions {
        users,
        groups,
        devices,
        contacts: 10,
        seed,
        page_size: 50,
        ..SimOptions::default()
    })
    .await
    .expect("start the Graph simulator")
}

/// Fast retries so fault tests take seconds, not minutes.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
    }
}

pub fn graph_config(sim: &SimHandle) -> GraphConfig {
    let mut g = entradir::demo::graph_config(sim);
    g.photo_size = Some("96x96".into());
    g.retry = fast_retry();
    g
}

pub fn engine(sim: &SimHandle, settings: Settings, state_dir: Option<std::path::PathBuf>) -> SyncEngine {
    SyncEngine {
        syncer: Syncer::new(graph_config(sim)).expect("syncer"),
        dir: Directory::new(settings, Store::default(), Default::default()),
        state_dir,
        tenant_id: sim.tenant_id().to_string(),
        photo_recheck: Duration::from_secs(3600),
        status: Arc::new(Mutex::new(SyncStatus::default())),
        delete_guard: Default::default(),
        allow_deletes: None,
    }
}

/// The Store the tenant's current truth corresponds to.
pub fn store_from_export(x: &TenantExport) -> Store {
    let obj = |m: &serde_json::Map<String, serde_json::Value>| Object {
        props: entradir::directory::props::Props::from_map(&without_id(m)),
        ..Object::default()
    };
    let mut s = Store::default();
    for u in &x.users {
        let id = id_of(u);
        let mut o = obj(u);
        o.manager = x.managers.get(&id).cloned();
        s.users.insert(id, o);
    }
    for g in &x.groups {
        let mut o = obj(&g.props);
        o.members = g
            .members
            .iter()
            .map(|m| MemberRef {
                id: m.id.clone(),
                odata_type: m.odata_type.clone(),
            })
            .collect::<std::collections::BTreeSet<MemberRef>>();
        s.groups.insert(id_of(&g.props), o);
    }
    for d in &x.devices {
        s.devices.insert(id_of(d), obj(d));
    }
    for c in &x.contacts {
        s.contacts.insert(id_of(c), obj(c));
    }
    for (id, (etag, jpeg)) in &x.photos {
        let state = PhotoState::Present {
            etag: etag.clone(),
            jpeg: bytes::Bytes::from(jpeg.clone()),
        };
        s.photos.insert(id.clone(), PhotoRecord { state, checked_at: 0 });
    }
    s
}

fn id_of(m: &serde_json::Map<String, serde_json::Value>) -> String {
    m.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn without_id(m: &serde_json::Map<String, serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
    let mut m = m.clone();
    m.remove("id");
    m
}

/// The directory the tenant should project to, computed from scratch (names included: they are a function of
/// the tenant).
pub fn expected(x: &TenantExport, settings: Settings) -> Arc<Snapshot> {
    Directory::new(settings, store_from_export(x), Default::default())
        .published()
        .load()
}

/// Attributes that legitimately differ between an incrementally synced and a freshly projected directory.
const VOLATILE: &[&str] = &["whenCreated", "whenChanged", "uSNCreated"];

/// An entry's DN and its sorted attributes, for comparisons.
pub type Comparable = (String, Vec<(String, Vec<Vec<u8>>)>);

pub fn comparable(e: &Entry) -> Comparable {
    let mut attrs: Vec<(String, Vec<Vec<u8>>)> = e
        .attrs
        .iter()
        .filter(|a| !VOLATILE.iter().any(|v| v.eq_ignore_ascii_case(a.name)))
        .map(|a| {
            let mut vals: Vec<Vec<u8>> = a.values.iter().map(|v| v.to_vec()).collect();
            vals.sort();
            (a.name.to_string(), vals)
        })
        .collect();
    attrs.sort();
    (e.dn.to_string(), attrs)
}

/// Panics with a readable diff when the two snapshots do not hold the same entries.
fn show(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|x| match std::str::from_utf8(x) {
            Ok(s) if s.len() <= 120 => s.to_string(),
            _ => format!("<{} bytes>", x.len()),
        })
        .collect()
}

pub fn assert_same_directory(actual: &Snapshot, expected: &Snapshot, context: &str) {
    let a: BTreeMap<String, _> = actual.entries().map(|e| (e.id.to_string(), comparable(e))).collect();
    let b: BTreeMap<String, _> = expected.entries().map(|e| (e.id.to_string(), comparable(e))).collect();
    let missing: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    let extra: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: missing {missing:?}, unexpected {extra:?}"
    );
    for (id, exp) in &b {
        let act = &a[id];
        if act != exp {
            let diff: Vec<String> = exp
                .1
                .iter()
                .filter(|x| !act.1.contains(x))
                .map(|(n, v)| {
                    format!(
                        "expected {n}={:?}",
                        v.iter().map(|x| String::from_utf8_lossy(x)).collect::<Vec<_>>()
                    )
                })
                .chain(act.1.iter().filter(|x| !exp.1.contains(x)).map(|(n, v)| {
                    format!(
                        "got {n}={:?}",
                        v.iter().map(|x| String::from_utf8_lossy(x)).collect::<Vec<_>>()
                    )
                }))
                .collect();
            panic!("{context}: entry {id} ({}) differs: {diff:?}", exp.0);
        }
    }
}

/// The well-known test user: a comma in her display name (DN escaping), a national number and a mobile.
pub const JANE: &str = "00112233-4455-6677-8899-aabbccddeeff";

/// Add [`JANE`] to the simulated tenant, with `extra` properties on top.
pub fn add_jane(ctl: &graph_sim::Control, extra: serde_json::Value) {
    let mut props = serde_json::json!({
        "id": JANE, "displayName": "Doe, Jane", "givenName": "Jane", "surname": "Doe",
        "userPrincipalName": "jane.doe@contoso.example", "mail": "jane.doe@contoso.example",
        "mailNickname": "jdoe", "accountEnabled": true, "userType": "Member",
        "businessPhones": ["030 1234567"], "mobilePhone": "0171 2345678", "jobTitle": "Buyer",
        "department": "Purchasing", "companyName": "Contoso"
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    ctl.add_user(props.as_object().cloned().unwrap_or_default())
        .expect("add Jane");
}

/// Serve `dir` over LDAP on a free loopback port with one service account `pbx` / `password`; the server stops
/// when the returned token is cancelled.
pub async fn ldap_server(
    dir: entradir::directory::Published,
    password: &str,
    allow_anonymous: bool,
) -> (u16, tokio_util::sync::CancellationToken) {
    ldap_server_with(dir, password, |c| c.allow_anonymous = allow_anonymous).await
}

/// [`ldap_server`] with the configuration changed by `tweak`.
pub async fn ldap_server_with(
    dir: entradir::directory::Published,
    password: &str,
    tweak: impl FnOnce(&mut entradir::ldap::LdapConfig),
) -> (u16, tokio_util::sync::CancellationToken) {
    let mut cfg = entradir::ldap::LdapConfig {
        listen: Some("127.0.0.1:0".parse().expect("loopback address")),
        accounts: vec![entradir::ldap::Account {
            name: "pbx".into(),
            password_hash: entradir::accounts::hash_password(password).expect("hash"),
            networks: vec![],
        }],
        ..entradir::ldap::LdapConfig::default()
    };
    tweak(&mut cfg);
    let server = entradir::ldap::Server::bind(cfg, dir)
        .await
        .expect("bind the LDAP listener");
    let port = server.local_addr().expect("listening").port();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (port, stop)
}

/// A vdirsyncer set-up: a read-only CardDAV storage at `url` synced into a filesystem store under a temp dir.
pub struct Vdirsyncer {
    pub bin: std::path::PathBuf,
    pub config: std::path::PathBuf,
    /// The filesystem store; each book becomes a directory of `.vcf` files.
    pub store: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Vdirsyncer {
    /// Write the config for `url` (the service root, e.g. `http://127.0.0.1:8080/`) with Basic credentials.
    pub fn new(url: &str, user: &str, password: &str) -> Vdirsyncer {
        let bin = venv_bin("vdirsyncer");
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = tmp.path().join("cards");
        let config = tmp.path().join("config");
        std::fs::create_dir_all(&store).expect("store dir");
        std::fs::write(
            &config,
            format!(
                r#"[general]
status_path = "{status}"

[pair contacts]
a = "entradir"
b = "local"
collections = ["from a"]
conflict_resolution = "a wins"

[storage entradir]
type = "carddav"
url = "{url}"
username = "{user}"
password = "{password}"
read_only = true

[storage local]
type = "filesystem"
path = "{store}"
fileext = ".vcf"
"#,
                status = tmp.path().join("status").display(),
                store = store.display()
            ),
        )
        .expect("vdirsyncer config");
        Vdirsyncer {
            bin,
            config,
            store,
            _tmp: tmp,
        }
    }

    /// Run a vdirsyncer command; `Err` carries its output when it fails.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new(&self.bin)
            .env("VDIRSYNCER_CONFIG", &self.config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run vdirsyncer: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("vdirsyncer {args:?} failed:\n{text}"))
        }
    }

    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `discover` for the book `book`, pre-creating the local collection so it does not stop to ask.
    pub fn discover(&self, book: &str) -> String {
        std::fs::create_dir_all(self.store.join(book)).expect("local collection");
        self.run(&["discover"])
    }

    /// The card files synced for `book`.
    pub fn cards(&self, book: &str) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.store.join(book))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

/// CardDAV on a free loopback port with one account (`user` / `password`), everything else at its default.
pub fn carddav_config(user: &str, password: &str) -> entradir::carddav::CardDavConfig {
    entradir::carddav::CardDavConfig {
        listen: Some("127.0.0.1:0".parse().expect("loopback address")),
        accounts: vec![entradir::carddav::Account {
            name: user.into(),
            password_hash: entradir::accounts::hash_password(password).expect("hash"),
            networks: vec![],
        }],
        ..Default::default()
    }
}

/// A JSON object literal as Graph properties for the simulator's control API.
pub fn props(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The smallest JPEG-looking photo: enough for the photo paths, quick to compare.
pub const TINY_JPEG: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0xff, 0xd9,
];

/// Add a security group named `name` to the simulated tenant; returns its id.
pub fn add_security_group(ctl: &graph_sim::Control, name: &str) -> String {
    ctl.add_group(props(serde_json::json!({
        "displayName": name, "securityEnabled": true, "mailEnabled": false, "groupTypes": []
    })))
    .expect("add group")
}

/// Filters that exercise every index, derived from the entries of `snap`: equality on the indexed attributes,
/// presence, name prefixes of one to four letters and fragments, phone numbers exact and by their last digits
/// and first digits, memberOf and in-chain membership, objectCategory short forms, userAccountControl bits,
/// and NOT, AND and OR around them.
pub fn index_probe_filters(snap: &Snapshot) -> Vec<String> {
    use entradir::directory::EntryKind;
    let esc = |v: &str| -> String {
        v.chars()
            .map(|c| match c {
                '*' | '(' | ')' | '\\' | '\0' => format!("\\{:02x}", c as u32),
                c => c.to_string(),
            })
            .collect()
    };
    let mut f: Vec<String> = vec![
        "(objectClass=*)".into(),
        "(objectClass=user)".into(),
        "(objectClass=group)".into(),
        "(&(objectClass=user)(!(objectClass=computer)))".into(),
        "(objectCategory=person)".into(),
        "(objectCategory=computer)".into(),
        "(telephoneNumber=*)".into(),
        "(mobile=*)".into(),
        "(&(objectCategory=person)(!(mobile=*)))".into(),
        "(thumbnailPhoto=*)".into(),
        "(userAccountControl:1.2.840.113556.1.4.803:=2)".into(),
        "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))".into(),
        "(userAccountControl:1.2.840.113556.1.4.804:=4098)".into(),
        "(|(telephoneNumber=*)(mail=*))".into(),
        "(!(cn=*a*))".into(),
    ];
    let people: Vec<&Arc<Entry>> = snap
        .entries()
        .filter(|e| matches!(e.kind, EntryKind::User | EntryKind::Contact))
        .collect();
    let step = (people.len() / 16).max(1);
    for e in people.iter().step_by(step) {
        for attr in ["cn", "sn", "givenName", "displayName"] {
            if let Some(v) = e.first_str(attr) {
                let chars: Vec<char> = v.chars().collect();
                for n in [1, 2, 3, 4] {
                    let p: String = chars.iter().take(n).collect();
                    f.push(format!("({attr}={}*)", esc(&p)));
                }
                if chars.len() > 4 {
                    let mid: String = chars[1..4].iter().collect();
                    f.push(format!(
                        "(|(cn=*{0}*)(sn={1}*))",
                        esc(&mid),
                        esc(&chars[..3].iter().collect::<String>())
                    ));
                    f.push(format!(
                        "(&(telephoneNumber=*)(sn={}*))",
                        esc(&chars[..3].iter().collect::<String>())
                    ));
                }
                f.push(format!("({attr}={})", esc(v)));
            }
        }
        for attr in ["mail", "sAMAccountName", "userPrincipalName"] {
            if let Some(v) = e.first_str(attr) {
                f.push(format!("({attr}={})", esc(&v.to_uppercase())));
            }
        }
        for attr in ["telephoneNumber", "mobile"] {
            if let Some(v) = e.first_str(attr) {
                let d: String = v.chars().filter(|c| c.is_ascii_digit()).collect();
                f.push(format!("({attr}={})", esc(v)));
                f.push(format!("(|(telephoneNumber={0})(mobile={0}))", esc(v)));
                if d.len() > 7 {
                    f.push(format!("({attr}=*{})", &d[d.len() - 7..]));
                    f.push(format!("({attr}=+{}*)", &d[..5]));
                    f.push(format!("({attr}=*{}*)", &d[3..7]));
                }
            }
        }
        for g in e.strs("memberOf").take(2) {
            f.push(format!("(memberOf={})", esc(g)));
            f.push(format!("(memberOf:1.2.840.113556.1.4.1941:={})", esc(g)));
            f.push(format!("(&(objectCategory=person)(memberOf={}))", esc(g)));
        }
        if let Some(m) = e.first_str("manager") {
            f.push(format!("(manager={})", esc(m)));
        }
        let guid: String = e.guid.iter().map(|b| format!("\\{b:02x}")).collect();
        f.push(format!("(objectGUID={guid})"));
        f.push(format!("(member:1.2.840.113556.1.4.1941:={})", esc(&e.dn)));
    }
    f.sort();
    f.dedup();
    f
}

/// The ids matching `filter` within `scope`, through the indexes (checking candidates unless they are exact).
fn via_index(s: &Snapshot, filter: &entradir::ldap::filter::Filter, scope: &entradir::directory::Query) -> Vec<String> {
    let c = entradir::ldap::filter::Compiled::new(filter, s);
    let cands = s.query(&entradir::directory::Query::And(vec![scope.clone(), c.query(s)]));
    let mut ids: Vec<String> = cands
        .iter_after(s, None)
        .filter_map(|i| s.get(i))
        .filter(|e| cands.exact || c.matches(e, s))
        .map(|e| e.id.to_string())
        .collect();
    ids.sort();
    ids
}

/// The same by evaluating every entry (no index).
fn via_scan(s: &Snapshot, filter: &entradir::ldap::filter::Filter, below: Option<&str>) -> Vec<String> {
    let c = entradir::ldap::filter::Compiled::new(filter, s);
    let mut ids: Vec<String> = s
        .entries()
        .filter(|e| below.is_none_or(|b| entradir::directory::dn::parent_norm(&e.dn_norm) == Some(b)))
        .filter(|e| c.matches(e, s))
        .map(|e| e.id.to_string())
        .collect();
    ids.sort();
    ids
}

/// Compare two snapshots through every index: each probe filter (see [`index_probe_filters`]) answered from the
/// indexes of `actual` must equal a full scan of `actual`, and the indexes of `expected` (typically rebuilt from
/// scratch, where `actual` was built incrementally) must give the same entries, whole tree and one container.
pub fn assert_same_indexes(actual: &Snapshot, expected: &Snapshot, context: &str) {
    use entradir::directory::entry::normalize_dn;
    use entradir::directory::Query;
    let users = normalize_dn(&format!("CN=Users,{BASE_DN}")).expect("container DN");
    let base = normalize_dn(BASE_DN).expect("base DN");
    let filters = index_probe_filters(expected);
    assert!(filters.len() > 50, "{context}: only {} probe filters", filters.len());
    for text in &filters {
        let filter = entradir::ldap::filter::Filter::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        for (scope, below) in [
            (Query::Subtree(base.clone()), None),
            (Query::Children(users.clone()), Some(users.as_str())),
        ] {
            let a = via_index(actual, &filter, &scope);
            let scan = via_scan(actual, &filter, below);
            assert_eq!(a, scan, "{context}: index and full scan differ for {text} in {scope:?}");
            let b = via_index(expected, &filter, &scope);
            assert_eq!(
                a, b,
                "{context}: incremental and rebuilt indexes differ for {text} in {scope:?}"
            );
        }
    }
}
