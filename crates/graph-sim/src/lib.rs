//! The Graph simulator: a stand-in for Microsoft's cloud used by entradir's tests, `entradir demo` and
//! `entradir graph-sim`. A crate of its own so that a production build of the server (`--no-default-features`)
//! contains none of it, and so that it cannot lean on the server's code: it speaks Graph as documented, with
//! its own types ([`model`]).
//!
//! It serves the token endpoint (`POST /{tenant}/oauth2/v2.0/token`), the Graph v1.0 delta endpoints for users,
//! groups, devices and org contacts, and the user photo endpoints, over plain HTTP on one port, so the
//! authority and the Graph URL of a client are both [`SimHandle::base_url`]. The tenant is generated
//! deterministically from a seed ([`tenant`] model, [`gen`] generator) and mutated through [`Control`] (in
//! process) or `/_sim/...` (HTTP); faults ([`Fault`]) make it behave as badly as the real service can.
//!
//! ```no_run
//! use graph_sim::{self as sim, Fault, FaultScope, GraphKind, SimOptions};
//!
//! # async fn example() -> std::io::Result<()> {
//! let sim = sim::start(SimOptions { users: 50, ..SimOptions::default() }).await?; // 127.0.0.1:0
//! let control = sim.control();
//! let first = control.ids(GraphKind::User)[0].clone();
//! let mut props = serde_json::Map::new();
//! props.insert("jobTitle".into(), "Tester".into());
//! control.update_user(&first, props).ok(); // the next delta round returns exactly this user
//! control.fault(Fault::Throttle { requests: 1, retry_after_secs: 2, scope: FaultScope::Delta });
//! // ... point the client at sim.base_url() with sim.tenant_id() / client_id() / client_secret(), sync ...
//! let truth = control.export(); // what the directory should now contain
//! # let _ = truth;
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod auth;
pub mod control;
pub mod delta;
mod der;
pub mod faults;
pub mod gen;
mod http;
pub mod jpeg;
pub mod model;
pub mod names;
pub mod tenant;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

pub use control::{Control, GroupExport, TenantExport};
pub use delta::Paging;
pub use faults::{Endpoint, ExpiryStyle, Fault, FaultScope, RequestRecord};
pub use model::{GraphKind, MemberRef};
pub use tenant::SimError;

/// How to start the simulator (also the `entradir graph-sim` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Number of generated users.
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Number of generated groups.
    #[arg(long, default_value_t = 40)]
    pub groups: usize,
    /// Number of generated devices.
    #[arg(long, default_value_t = 150)]
    pub devices: usize,
    /// Number of generated organisational contacts.
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    /// Seed for the tenant generator; the same seed gives the same tenant.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Objects per delta page.
    #[arg(long, default_value_t = 200)]
    pub page_size: usize,
    /// Members per `members@delta` slice; larger groups repeat across pages.
    #[arg(long, default_value_t = 150)]
    pub member_slice: usize,
    /// Every n-th delta page repeats the previous page's last object (0: no replays).
    #[arg(long, default_value_t = 3)]
    pub replay_every: u32,
    /// Delta token lifetime in seconds (Graph: 7 days).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub token_lifetime_secs: u64,
    /// Directory (tenant) id the token endpoint accepts.
    #[arg(long, default_value = DEMO_TENANT)]
    pub tenant_id: String,
    /// Application (client) id the token endpoint accepts.
    #[arg(long, default_value = DEMO_CLIENT)]
    pub client_id: String,
    /// Client secret the token endpoint accepts.
    #[arg(long, default_value = DEMO_SECRET)]
    pub client_secret: String,
    /// PEM client certificate (RSA); when given, client assertions must name it (`x5t#S256` or `x5t`) and be
    /// signed with its key (RS256 or PS256).
    #[arg(long)]
    pub client_certificate: Option<PathBuf>,
    /// Share of users with a photo (0.0 to 1.0).
    #[arg(long, default_value_t = 0.3)]
    pub photo_ratio: f64,
    /// The tenant's verified domain, used in UPNs and mail addresses.
    #[arg(long, default_value = "contoso.example")]
    pub domain: String,
}

pub const DEMO_TENANT: &str = "00000000-0000-4000-8000-000000000001";
pub const DEMO_CLIENT: &str = "entradir-demo";
pub const DEMO_SECRET: &str = "demo-secret";

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: 500,
            groups: 40,
            devices: 150,
            contacts: 20,
            seed: 1,
            page_size: 200,
            member_slice: 150,
            replay_every: 3,
            token_lifetime_secs: 7 * 24 * 3600,
            tenant_id: DEMO_TENANT.into(),
            client_id: DEMO_CLIENT.into(),
            client_secret: DEMO_SECRET.into(),
            client_certificate: None,
            photo_ratio: 0.3,
            domain: "contoso.example".into(),
        }
    }
}

impl SimOptions {
    fn generator(&self) -> gen::GenOptions {
        gen::GenOptions {
            users: self.users,
            groups: self.groups,
            devices: self.devices,
            contacts: self.contacts,
            seed: self.seed,
            photo_ratio: self.photo_ratio,
            domain: self.domain.clone(),
        }
    }
}

/// A running simulator. Dropping it without [`SimHandle::shutdown`] leaves the server running until the runtime
/// ends.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<control::Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: both the authority (token endpoint) and the Graph URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.creds.tenant_id
    }

    pub fn client_id(&self) -> &str {
        &self.shared.creds.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.creds.client_secret
    }

    pub fn control(&self) -> Control {
        Control::new(self.shared.clone())
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Generates the tenant, binds `opts.listen` and serves in a background task.
pub async fn start(opts: SimOptions) -> std::io::Result<SimHandle> {
    let certificate_der = match &opts.client_certificate {
        Some(path) => Some(read_certificate(path)?),
        None => None,
    };
    let tenant = gen::generate(&opts.generator());
    let paging = Paging {
        page_size: opts.page_size.max(1),
        member_slice: opts.member_slice.max(1),
        replay_every: opts.replay_every,
        empty_first_page: true,
        token_lifetime: Duration::from_secs(opts.token_lifetime_secs),
    };
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let creds = control::Credentials {
        tenant_id: opts.tenant_id.clone(),
        client_id: opts.client_id.clone(),
        client_secret: opts.client_secret.clone(),
        certificate_der,
    };
    let shared = Arc::new(control::Shared::new(addr, tenant, paging, creds));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(http::serve(listener, shared.clone(), stopped));
    Ok(SimHandle {
        addr,
        shared,
        stop,
        task,
    })
}

fn read_certificate(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let pem = std::fs::read(path)?;
    let first = CertificateDer::pem_slice_iter(&pem).next();
    match first {
        Some(Ok(der)) if auth::rsa_public_key(&der).is_some() => Ok(der.to_vec()),
        Some(Ok(_)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: the certificate's key is not RSA (Entra signs client assertions with RSA only)",
                path.display()
            ),
        )),
        Some(Err(e)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: the certificate PEM is unreadable: {e}", path.display()),
        )),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: no PEM certificate found", path.display()),
        )),
    }
}

/// `entradir graph-sim`: start, print how to use it, serve until Ctrl-C.
pub async fn run(opts: SimOptions) -> anyhow::Result<()> {
    let sim = start(opts.clone()).await?;
    let base = sim.base_url();
    let counts = {
        let c = sim.control();
        GraphKindCounts {
            users: c.ids(GraphKind::User).len(),
            groups: c.ids(GraphKind::Group).len(),
            devices: c.ids(GraphKind::Device).len(),
            contacts: c.ids(GraphKind::Contact).len(),
        }
    };
    println!("entradir graph-sim listening on {base}");
    println!(
        "tenant: {} users, {} groups, {} devices, {} contacts (seed {})",
        counts.users, counts.groups, counts.devices, counts.contacts, opts.seed
    );
    println!();
    println!("entradir config:");
    println!("  [entra]");
    println!("  tenant_id = \"{}\"", sim.tenant_id());
    println!("  client_id = \"{}\"", sim.client_id());
    println!("  authority = \"{base}\"");
    println!("  graph_url = \"{base}\"");
    println!(
        "  # client secret: {} (put it in client_secret_file or ENTRADIR_CLIENT_SECRET)",
        sim.client_secret()
    );
    println!();
    println!("try it (curl + jq):");
    println!(
        "  TOKEN=$(curl -s {base}/{}/oauth2/v2.0/token -d grant_type=client_credentials -d client_id={} \\",
        sim.tenant_id(),
        sim.client_id()
    );
    println!(
        "      -d client_secret={} -d scope={base}/.default | jq -r .access_token)",
        sim.client_secret()
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/v1.0/users/delta?$select=displayName,businessPhones,manager'");
    println!();
    println!("{}", http::control_help(&base));
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
}

struct GraphKindCounts {
    users: usize,
    groups: usize,
    devices: usize,
    contacts: usize,
}
