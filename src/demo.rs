//! `entradir demo`: the whole product on a simulated tenant, in one process, with nothing to configure.
//!
//! The Graph simulator runs in-process and the server is configured through the same TOML parsing path as
//! `entradir run`, so the demo exercises the real code.

use crate::config::Config;
use graph_sim::{self as sim, SimOptions};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The demo's service account; printed at start.
pub const DEMO_ACCOUNT: &str = "pbx";
pub const DEMO_PASSWORD: &str = "demo-password";

#[derive(clap::Args, Debug, Clone)]
pub struct DemoOptions {
    /// Users in the simulated tenant.
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Groups in the simulated tenant.
    #[arg(long, default_value_t = 40)]
    pub groups: usize,
    /// Devices in the simulated tenant.
    #[arg(long, default_value_t = 150)]
    pub devices: usize,
    /// Seed for the tenant generator (same seed, same tenant).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// LDAP listen address.
    #[arg(long, default_value = "127.0.0.1:10389")]
    pub ldap: SocketAddr,
    /// CardDAV / phonebook listen address.
    #[arg(long, default_value = "127.0.0.1:10080")]
    pub carddav: SocketAddr,
    /// Admin (metrics/health) listen address.
    #[arg(long, default_value = "127.0.0.1:19180")]
    pub admin: SocketAddr,
    /// Keep state here (default: a temporary directory removed at exit).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Sync interval against the simulator.
    #[arg(long, default_value = "30s")]
    pub sync_interval: String,
}

/// Where the demo keeps its files.
pub struct DemoFiles<'a> {
    pub client_secret: &'a std::path::Path,
    pub admin_token: &'a std::path::Path,
    pub state_dir: &'a std::path::Path,
}

/// The config text the demo runs with (also handy as a starting point: `entradir.example.toml` documents all).
pub fn demo_config(
    opts: &DemoOptions,
    sim_url: &str,
    tenant: &str,
    client: &str,
    files: &DemoFiles<'_>,
    hash: &str,
) -> String {
    format!(
        r#"[entra]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_file = "{secret}"
authority = "{sim_url}"
graph_url = "{sim_url}"
sync_interval = "{interval}"
org_contacts = true

[directory]
base_dn = "DC=contoso,DC=example"
state_dir = "{state}"
default_country = "DE"

[ldap]
listen = "{ldap}"
allow_anonymous = true

[carddav]
listen = "{carddav}"

[admin]
listen = "{admin}"
token_file = "{token}"

[[accounts]]
name = "{account}"
password_hash = "{hash}"
"#,
        secret = files.client_secret.display(),
        token = files.admin_token.display(),
        interval = opts.sync_interval,
        state = files.state_dir.display(),
        ldap = opts.ldap,
        carddav = opts.carddav,
        admin = opts.admin,
        account = DEMO_ACCOUNT,
    )
}

/// A Graph client configuration for a running simulator: its login and Graph URL and its client secret, the
/// defaults for everything else (callers adjust photos, retries and the like).
pub fn graph_config(sim: &sim::SimHandle) -> crate::graph::GraphConfig {
    let mut g = crate::graph::GraphConfig::new(
        sim.tenant_id(),
        sim.client_id(),
        crate::graph::Credential::Secret(sim.client_secret().to_string()),
    );
    g.authority = sim.base_url();
    g.graph_url = sim.base_url();
    g
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let sim = sim::start(SimOptions {
        users: opts.users,
        groups: opts.groups,
        devices: opts.devices,
        seed: opts.seed,
        ..SimOptions::default()
    })
    .await?;
    let tmp = tempdir()?;
    let state_dir = opts.state_dir.clone().unwrap_or_else(|| tmp.join("state"));
    let secret_file = tmp.join("client-secret");
    let token_file = tmp.join("admin-token");
    // A fresh admin token per demo (console sign-in and POST /sync), printed below.
    let token: String = {
        use rand::Rng;
        rand::rngs::OsRng
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect()
    };
    for (file, content) in [(&secret_file, sim.client_secret()), (&token_file, token.as_str())] {
        // Owner-only, as the operator's own secret files should be (entradir warns otherwise).
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)?;
        std::io::Write::write_all(&mut f, content.as_bytes())?;
    }
    let hash = crate::accounts::hash_password(DEMO_PASSWORD)?;
    let text = demo_config(
        &opts,
        &sim.base_url(),
        sim.tenant_id(),
        sim.client_id(),
        &DemoFiles {
            client_secret: &secret_file,
            admin_token: &token_file,
            state_dir: &state_dir,
        },
        &hash,
    );
    let cfg = Config::parse(&tmp.join("demo.toml"), &text)?;
    // Say which port is taken before printing instructions that would not work (a second demo, say).
    for (what, addr) in [
        ("--ldap", opts.ldap),
        ("--carddav", opts.carddav),
        ("--admin", opts.admin),
    ] {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            sim.shutdown().await;
            let _ = std::fs::remove_dir_all(&tmp);
            anyhow::bail!(
                "{addr} ({what}) is not free: {e}; is another entradir demo running? Choose another with {what}"
            );
        }
    }
    let (number, name) = example_user(&sim.control().export());
    println!(
        "entradir demo: simulated tenant with {} users, {} groups, {} devices (Graph simulator at {})\n\
         \n  LDAP     ldap://{ldap}   base DC=contoso,DC=example, anonymous read allowed\n\
         \x20          service account: CN={acct},CN=Users,DC=contoso,DC=example / {acct}@contoso.example / CONTOSO\\{acct}\n\
         \x20          password: {pw}\n\
         \x20 CardDAV  http://{carddav}/.well-known/carddav   (user {acct}, password {pw})\n\
         \x20 Admin    http://{admin}/metrics  /status  /readyz\n\
         \x20 Console  http://{admin}/console/   (admin token: {token})\n\
         \nTry (caller lookup by the last digits, a phone-book name search, paging):\n\
         \x20 ldapsearch -x -H ldap://{ldap} -b DC=contoso,DC=example '(telephoneNumber=*{number})' cn telephoneNumber mobile\n\
         \x20 ldapsearch -x -H ldap://{ldap} -D {acct}@contoso.example -w {pw} -b DC=contoso,DC=example '(|(cn=*{name}*)(sn=*{name}*))' cn mail\n\
         \x20 ldapsearch -x -H ldap://{ldap} -b DC=contoso,DC=example -E pr=100/noprompt '(objectCategory=person)' sAMAccountName\n\
         \nStop with Ctrl-C.\n",
        opts.users,
        opts.groups,
        opts.devices,
        sim.base_url(),
        ldap = opts.ldap,
        carddav = opts.carddav,
        admin = opts.admin,
        acct = DEMO_ACCOUNT,
        pw = DEMO_PASSWORD,
    );
    let r = crate::server::run(cfg, None).await;
    sim.shutdown().await;
    if opts.state_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r
}

/// A phone-number suffix and a name fragment that exist in the generated tenant, for the printed examples.
fn example_user(x: &sim::TenantExport) -> (String, String) {
    for u in &x.users {
        let phone = u
            .get("businessPhones")
            .and_then(|p| p.as_array())
            .and_then(|p| p.first())
            .and_then(|p| p.as_str());
        let surname = u.get("surname").and_then(|s| s.as_str());
        if let (Some(phone), Some(surname)) = (phone, surname) {
            let digits: String = phone.chars().filter(|c| c.is_ascii_digit()).collect();
            if digits.len() >= 7 && surname.chars().count() >= 4 {
                let name: String = surname.chars().skip(1).take(3).collect::<String>().to_lowercase();
                return (digits[digits.len() - 7..].to_string(), name);
            }
        }
    }
    ("1234567".into(), "mül".into())
}

fn tempdir() -> std::io::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("entradir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
