//! Starting the protocol front ends (LDAP, CardDAV) from the config, and swapping their settings on reload
//! without dropping connections.
//!
//! Everything a reload needs is built and validated here first ([`FrontEnds::prepare_reload`]); only a fully
//! valid set of settings is applied ([`FrontEnds::apply_reload`]).

use crate::carddav::{self, CardDavConfig};
use crate::config::Config;
use crate::directory::Published;
use crate::ldap;
use anyhow::{anyhow, Context as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Count a reload attempt for metrics.
pub fn count_reload(ok: bool) {
    if ok { &RELOADS_OK } else { &RELOADS_FAILED }.fetch_add(1, Ordering::Relaxed);
}

/// (successful, failed) reloads since start.
pub fn reload_counts() -> (u64, u64) {
    (
        RELOADS_OK.load(Ordering::Relaxed),
        RELOADS_FAILED.load(Ordering::Relaxed),
    )
}

/// The running front ends.
pub struct FrontEnds {
    tasks: JoinSet<()>,
    ldap: Option<ldap::ServerHandle>,
    carddav: Option<carddav::CardDavHandle>,
}

/// Validated new front-end settings (and sockets for changed listen addresses), applied only when the whole
/// reload is good. Dropping it unapplied closes the new sockets again, and listens again where a same-port move
/// had closed the running socket.
pub struct Prepared {
    ldap: Option<(ldap::LdapConfig, ldap::ListenerChange)>,
    carddav: Option<(CardDavConfig, carddav::ListenerChange)>,
}

fn carddav_config(cfg: &Config) -> anyhow::Result<Option<CardDavConfig>> {
    CardDavConfig::from_config(cfg).map_err(|e| anyhow!("carddav: {e}"))
}

/// Read a PEM certificate chain and key into a rustls server config; errors name the config keys.
fn load_tls(cert: &Path, key: &Path, what: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    ldap::tls::load_server_config(&cert.to_string_lossy(), &key.to_string_lossy()).map_err(|e| anyhow!("{what}: {e}"))
}

/// The TLS settings for a front end: its own `tls_cert`/`tls_key`, else the shared `[tls]` section.
fn tls_for(
    cfg: &Config,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
    section: &str,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(load_tls(c, k, &format!("{section}.tls_cert/tls_key"))?)),
        (None, None) => match &cfg.tls {
            Some(t) => Ok(Some(load_tls(&t.cert, &t.key, "tls.cert/tls.key")?)),
            None => Ok(None),
        },
        _ => Err(anyhow!("{section}.tls_cert and {section}.tls_key go together")),
    }
}

fn ldap_config(cfg: &Config) -> anyhow::Result<Option<ldap::LdapConfig>> {
    let Some(s) = &cfg.ldap else { return Ok(None) };
    let tls = tls_for(cfg, &s.tls_cert, &s.tls_key, "ldap")?;
    if tls.is_none() && (s.starttls || s.ldaps_listen.is_some()) {
        return Err(anyhow!(
            "ldap.starttls / ldap.ldaps_listen need ldap.tls_cert and ldap.tls_key (or a [tls] section)"
        ));
    }
    Ok(Some(ldap::LdapConfig {
        listen: s.listen,
        ldaps_listen: s.ldaps_listen,
        starttls: s.starttls,
        tls,
        allow_anonymous: s.allow_anonymous,
        max_connections: s.max_connections,
        max_connections_per_source: s.max_connections_per_source,
        idle_timeout: s.idle_timeout,
        write_timeout: s.write_timeout,
        paged_search_ttl: s.paged_search_ttl,
        encoding_cache_mib: s.encoding_cache_mib,
        max_page_size: s.max_page_size,
        size_limit: s.size_limit,
        time_limit: s.time_limit,
        accounts: cfg.service_accounts()?,
        proxy_protocol_from: s
            .proxy_protocol_from
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("ldap.proxy_protocol_from: {e}"))?,
        ..ldap::LdapConfig::default()
    }))
}

/// Validate the front-end parts of a config (certificates, accounts, networks) without starting anything.
pub fn check(cfg: &Config) -> anyhow::Result<()> {
    ldap_config(cfg)?;
    if let Some(c) = carddav_config(cfg)? {
        c.validate().map_err(|e| anyhow!("carddav: {e}"))?;
    }
    Ok(())
}

/// Bind the front ends' listen addresses and let them go again: that they are free now (a start that has to
/// wait for the first sync before it listens still fails at once on a taken port).
pub async fn check_addresses(cfg: &Config) -> anyhow::Result<()> {
    let mut addrs = Vec::new();
    if let Some(l) = &cfg.ldap {
        addrs.extend([("ldap.listen", l.listen), ("ldap.ldaps_listen", l.ldaps_listen)]);
    }
    if let Some(c) = &cfg.carddav {
        addrs.extend([("carddav.listen", c.listen), ("carddav.tls_listen", c.tls_listen)]);
    }
    for (key, addr) in addrs {
        crate::net::bind(addr).await.context(key)?;
    }
    Ok(())
}

pub async fn start(cfg: &Config, dir: Published, shutdown: CancellationToken) -> anyhow::Result<FrontEnds> {
    let connections = [
        cfg.ldap.as_ref().map_or(0, |l| l.max_connections),
        cfg.carddav.as_ref().map_or(0, |c| c.max_connections),
        crate::admin::MAX_CONNECTIONS,
    ]
    .into_iter()
    .fold(0u64, |n, c| n.saturating_add(c as u64));
    crate::net::ensure_fd_limit(connections);
    let mut tasks = JoinSet::new();
    let mut ldap_handle = None;
    if let Some(lc) = ldap_config(cfg)? {
        let server = ldap::Server::bind(lc, dir.clone()).await.context("LDAP")?;
        ldap_handle = Some(server.handle());
        let sd = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = server.run(sd).await {
                tracing::error!(error = %e, "LDAP server stopped");
            }
        });
    }
    let mut carddav_handle = None;
    if let Some(cc) = carddav_config(cfg)? {
        let sd = shutdown.clone();
        let h = carddav::start(cc, dir.clone(), async move { sd.cancelled().await })
            .await
            .context("CardDAV")?;
        carddav_handle = Some(h);
    }
    Ok(FrontEnds {
        tasks,
        ldap: ldap_handle,
        carddav: carddav_handle,
    })
}

impl FrontEnds {
    /// The CardDAV front end's lookup inspector, when CardDAV is configured (for the admin console).
    pub(crate) fn carddav_inspector(&self) -> Option<crate::carddav::lookup::Inspector> {
        self.carddav.as_ref().map(|h| h.inspector())
    }

    /// Build and validate the front-end settings of a new config and bind changed listen addresses; nothing is
    /// applied yet.
    pub async fn prepare_reload(&self, cfg: &Config) -> anyhow::Result<Prepared> {
        let ldap = match (ldap_config(cfg)?, &self.ldap) {
            (Some(lc), Some(h)) => {
                let change = h.prepare_listeners(&lc).await.context("ldap")?;
                Some((lc, change))
            }
            (new, running) => {
                if new.is_some() != running.is_some() {
                    tracing::warn!("adding or removing the [ldap] section takes effect after a restart");
                }
                None
            }
        };
        let carddav = match (carddav_config(cfg)?, &self.carddav) {
            (Some(c), Some(h)) => {
                h.check(&c).map_err(|e| anyhow!("carddav: {e}"))?;
                let change = h.prepare_listeners(&c).await.context("carddav")?;
                Some((c, change))
            }
            (new, running) => {
                if new.is_some() != running.is_some() {
                    tracing::warn!("adding or removing the [carddav] section takes effect after a restart");
                }
                None
            }
        };
        Ok(Prepared { ldap, carddav })
    }

    pub fn apply_reload(&self, p: Prepared) {
        if let (Some(h), Some((lc, change))) = (&self.ldap, p.ldap) {
            if let Err(e) = h.reload(lc, change) {
                tracing::error!(error = %e, "LDAP settings not reloaded");
            }
        }
        if let (Some(h), Some((c, change))) = (&self.carddav, p.carddav) {
            if let Err(e) = h.reload(c, change) {
                tracing::error!(error = %e, "CardDAV settings not reloaded");
            }
        }
    }

    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
        if let Some(h) = self.carddav.take() {
            if let Err(e) = h.join().await {
                tracing::error!(error = %e, "CardDAV server stopped");
            }
        }
    }
}
