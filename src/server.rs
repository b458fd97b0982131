//! Wiring for `entradir run` and `entradir demo`: load state, start the sync engine and the front ends, and
//! react to signals (SIGHUP reload, SIGUSR1 sync now, SIGTERM/SIGINT graceful stop).

use crate::admin::AdminSettings;
use crate::config::Config;
use crate::directory::{state, Directory};
use crate::graph::{Credential, GraphConfig, Syncer};
use crate::net::Rebindable;
use crate::sync::{Command, Reconfig, SyncEngine, SyncStatus};
use crate::time::unix_now;
use anyhow::{anyhow, Context as _};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long in-flight work may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How often credential expiry warnings are repeated.
const EXPIRY_CHECK: Duration = Duration::from_secs(12 * 3600);

/// Warn when a file holding a secret or private key can be read by other users.
pub fn warn_if_exposed(path: &Path, what: &str) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        // Group bits are fine when the group is our own primary group (a Kubernetes Secret mounted with fsGroup
        // is 0440 root:<fsGroup>; a host's `entradir` group holds entradir alone).
        let risky = if own_gid() == Some(meta.gid()) { 0o007 } else { 0o077 };
        if mode & risky != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "{what} is readable by other users; restrict it with: chmod 600 {}",
                path.display()
            );
        }
    }
}

/// The process's real group id (Linux: from /proc).
fn own_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Every configured file that holds a secret or a private key.
pub fn check_secret_files(cfg: &Config) {
    if let Some(p) = &cfg.entra.client_secret_file {
        warn_if_exposed(p, "entra.client_secret_file");
    }
    if let Some(p) = &cfg.entra.client_key {
        warn_if_exposed(p, "entra.client_key");
    }
    let tls_keys = [
        cfg.ldap.as_ref().and_then(|l| l.tls_key.clone()),
        cfg.carddav.as_ref().and_then(|c| c.tls_key.clone()),
        cfg.tls.as_ref().map(|t| t.key.clone()),
        cfg.admin.token_file.clone(),
    ];
    for p in tls_keys.iter().flatten() {
        warn_if_exposed(p, "a TLS key or admin token file");
    }
}

/// The Graph client settings for a config.
pub fn graph_config(cfg: &Config) -> anyhow::Result<GraphConfig> {
    let credential = match (&cfg.entra.client_certificate, &cfg.entra.client_key) {
        (Some(cert), Some(key)) => Credential::Certificate {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("entra.client_certificate: cannot read {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("entra.client_key: cannot read {}", key.display()))?,
        },
        _ => Credential::Secret(cfg.client_secret()?.ok_or_else(|| {
            anyhow!(
                "no Graph credential: set entra.client_secret_file (or the ENTRADIR_CLIENT_SECRET environment \
                 variable), or entra.client_certificate and entra.client_key"
            )
        })?),
    };
    let mut g = GraphConfig::new(&cfg.entra.tenant_id, &cfg.entra.client_id, credential);
    g.authority = cfg.entra.authority.clone();
    g.graph_url = cfg.entra.graph_url.clone();
    g.proxy = cfg.entra.proxy.clone();
    g.photos = cfg.entra.photos;
    g.photo_size = cfg.entra.photo_size.clone();
    g.org_contacts = cfg.entra.org_contacts;
    g.devices = cfg.entra.devices;
    // Whatever a mapping override reads must be asked for.
    if let Ok(m) = crate::directory::mapping::Mapping::with_overrides(&cfg.mapping) {
        g.extra_user_select = m.referenced_properties(crate::directory::change::GraphKind::User);
    }
    Ok(g)
}

/// Take `directory.state_dir`'s lock for as long as the result lives (none without a state_dir): one process
/// writes a state_dir, and a second one is refused with the holder's PID.
pub fn lock_state(cfg: &Config) -> anyhow::Result<Option<state::StateLock>> {
    cfg.directory
        .state_dir
        .as_deref()
        .map(state::lock)
        .transpose()
        .context("directory.state_dir")
}

/// Build the directory from the state file (served at once, even with Graph unreachable) and the sync engine.
pub fn engine(cfg: &Config) -> anyhow::Result<SyncEngine> {
    let settings = cfg.directory_settings()?;
    let tenant = cfg.entra.tenant_id.clone();
    let loaded = match &cfg.directory.state_dir {
        Some(dir) => match state::load(dir, &tenant) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "not using the state file");
                None
            }
        },
        None => None,
    };
    let dir = match loaded {
        Some(st) => {
            let d = Directory::resume(settings, st.store, st.delta_links, st.version);
            tracing::info!(
                entries = d.snapshot().len(),
                "serving the directory from the state file"
            );
            d
        }
        None => Directory::new(settings, Default::default(), Default::default()),
    };
    let syncer = Syncer::new(graph_config(cfg)?)?;
    Ok(SyncEngine {
        syncer,
        dir,
        state_dir: cfg.directory.state_dir.clone(),
        tenant_id: tenant,
        photo_recheck: cfg.entra.photo_recheck,
        status: Arc::new(Mutex::new(SyncStatus::default())),
        delete_guard: cfg.delete_guard(),
        allow_deletes: None,
    })
}

/// Run the server until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP (None: reload not available, as in
/// the demo).
pub async fn run(mut cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    check_secret_files(&cfg);
    let _state_lock = lock_state(&cfg)?;
    let engine = engine(&cfg)?;
    let published = engine.dir.published();
    let status = engine.status.clone();
    let shutdown = CancellationToken::new();
    // An early return (a listener that cannot bind) stops whatever was already started.
    let _stop_on_return = shutdown.clone().drop_guard();
    let (tx, rx) = mpsc::channel(16);
    let admin = Admin {
        listener: Rebindable::new(
            cfg.admin.listen,
            crate::net::bind(cfg.admin.listen).await.context("admin.listen")?,
        ),
        settings: Arc::new(ArcSwap::from_pointee(AdminSettings::for_config(&cfg)?)),
    };
    admin.settings.load().log_trigger_state(&cfg.admin);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = crate::admin::AdminState::new(
        published.clone(),
        status.clone(),
        tx.clone(),
        admin.settings.clone(),
        draining.clone(),
    );
    let inspector = st.carddav.clone();
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut usr1 = signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let (fronts, sync_task) = if has_directory(&published.load()) {
        // Served from the state file: listen now; the sync starts last, so a failed start never leaves a
        // sync round writing state behind it.
        let fronts = crate::frontends::start(&cfg, published.clone(), shutdown.clone()).await?;
        inspector.store(fronts.carddav_inspector().map(Arc::new));
        tokio::spawn(crate::admin::serve(admin.listener.clone(), st, shutdown.clone()));
        let sync_task = tokio::spawn(engine.run(cfg.entra.sync_interval, rx, shutdown.clone()));
        (fronts, sync_task)
    } else {
        // Nothing to serve yet. Answering "nobody has this number" would be a wrong answer, so the LDAP and
        // CardDAV ports refuse connections until the first sync is in: a PBX tries its second server, a load
        // balancer another replica. Their addresses are checked now, so a taken port still fails the start.
        crate::frontends::check(&cfg)?;
        crate::frontends::check_addresses(&cfg).await?;
        tokio::spawn(crate::admin::serve(admin.listener.clone(), st, shutdown.clone()));
        let mut sync_task = tokio::spawn(engine.run(cfg.entra.sync_interval, rx, shutdown.clone()));
        tracing::info!("no directory yet (no state file): LDAP and CardDAV listen once the first sync is in");
        let mut published_versions = published.subscribe();
        while !has_directory(&published.load()) {
            tokio::select! {
                _ = published_versions.changed() => {}
                _ = &mut sync_task => anyhow::bail!("the sync engine stopped before the first sync (see above)"),
                // A fixed secret or config must not wait for a sync that cannot succeed without it.
                _ = hup.recv() => match &config_path {
                    Some(p) => {
                        if let Some((_, next)) = reload(p, &cfg.entra.tenant_id, &tx, None, &admin).await {
                            cfg = next;
                            tracing::info!("SIGHUP before the first sync: syncing now with the new configuration");
                            let _ = tx.try_send(Command::SyncNow(None));
                        }
                    }
                    None => tracing::warn!("SIGHUP ignored: no config file to reload"),
                },
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: syncing now");
                    let _ = tx.try_send(Command::SyncNow(None));
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM before the first sync: stopping");
                    shutdown.cancel();
                    let _ = tokio::time::timeout(GRACE, sync_task).await;
                    return Ok(());
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("SIGINT before the first sync: stopping");
                    shutdown.cancel();
                    let _ = tokio::time::timeout(GRACE, sync_task).await;
                    return Ok(());
                }
            }
        }
        let fronts = crate::frontends::start(&cfg, published.clone(), shutdown.clone()).await?;
        inspector.store(fronts.carddav_inspector().map(Arc::new));
        (fronts, sync_task)
    };
    let mut expiries = crate::expiry::collect(&cfg);
    crate::expiry::publish(&expiries);
    crate::expiry::warn_soon(&expiries, unix_now());
    // Expiry warnings repeat twice a day, so they reach whoever reads today's log.
    let mut expiry_check = tokio::time::interval_at(tokio::time::Instant::now() + EXPIRY_CHECK, EXPIRY_CHECK);

    loop {
        tokio::select! {
            _ = hup.recv() => match &config_path {
                Some(p) => {
                    if let Some((next, _)) = reload(p, &cfg.entra.tenant_id, &tx, Some(&fronts), &admin).await {
                        expiries = next;
                    }
                }
                None => tracing::warn!("SIGHUP ignored: no config file to reload"),
            },
            _ = expiry_check.tick() => crate::expiry::warn_soon(&expiries, unix_now()),
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: syncing now");
                let _ = tx.try_send(Command::SyncNow(None));
            }
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    // Not ready first, still serving: a load balancer checking /readyz moves new clients to another replica
    // before the listeners close. A second signal ends the wait.
    let drain = admin.settings.load().drain_period;
    if !drain.is_zero() {
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            drain_period = ?drain,
            "/readyz now answers 503; serving on until the drain period ends (a second SIGTERM stops now)"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            _ = term.recv() => tracing::info!("SIGTERM again: stopping now"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT again: stopping now"),
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(GRACE, async {
        if let Ok(Some(engine)) = sync_task.await {
            // The process ends next. Freeing a large tenant's directory allocation by allocation takes longer
            // than the rest of the shutdown (20 s at 100k users); the kernel reclaims it at once.
            std::mem::forget(engine);
        }
        fronts.join().await;
    })
    .await;
    Ok(())
}

/// Whether a snapshot is worth serving: tenant objects (from the state file or a sync), or a completed sync of
/// a tenant that has none.
fn has_directory(s: &crate::directory::Snapshot) -> bool {
    s.synced_at.is_some() || s.counts().tenant_objects() > 0
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot install signal handler")
}

/// The admin endpoint's reloadable parts.
struct Admin {
    listener: Arc<Rebindable>,
    settings: Arc<ArcSwap<AdminSettings>>,
}

/// SIGHUP: validate everything and bind changed listen addresses first; apply only if all of it is good.
/// Returns the credential expiry dates of the applied config, and the config. `fronts` is `None` before the
/// front ends are started (they start from the returned config then).
async fn reload(
    path: &Path,
    tenant_id: &str,
    tx: &mpsc::Sender<Command>,
    fronts: Option<&crate::frontends::FrontEnds>,
    admin: &Admin,
) -> Option<(Vec<crate::expiry::Expiry>, Config)> {
    let prepared = async {
        let cfg = Config::load(path)?;
        anyhow::ensure!(
            cfg.entra.tenant_id == tenant_id,
            "entra.tenant_id changed from {tenant_id} to {}: switching tenants needs a restart",
            cfg.entra.tenant_id
        );
        let settings = cfg.directory_settings()?;
        let syncer = Syncer::new(graph_config(&cfg)?).context("entra")?;
        let admin_settings = AdminSettings::for_config(&cfg)?;
        let fe = match fronts {
            Some(f) => Some(f.prepare_reload(&cfg).await?),
            None => {
                crate::frontends::check(&cfg)?;
                None
            }
        };
        let admin_listener = admin.listener.prepare(cfg.admin.listen).await.context("admin.listen")?;
        let reconfig = Reconfig {
            settings,
            syncer,
            interval: cfg.entra.sync_interval,
            photo_recheck: cfg.entra.photo_recheck,
            delete_guard: cfg.delete_guard(),
        };
        anyhow::Ok((cfg, reconfig, admin_settings, fe, admin_listener))
    };
    let (cfg, reconfig, admin_settings, fe, admin_listener) = match prepared.await {
        Ok(p) => p,
        Err(e) => {
            // Counted before it is logged, so whoever reads the log line finds the metric already updated.
            crate::frontends::count_reload(false);
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running configuration");
            return None;
        }
    };
    check_secret_files(&cfg);
    if let (Some(f), Some(fe)) = (fronts, fe) {
        f.apply_reload(fe);
    }
    admin_settings.log_trigger_state(&cfg.admin);
    admin.settings.store(Arc::new(admin_settings));
    if let Some(change) = admin_listener {
        let (old, new) = admin.listener.apply(change);
        tracing::info!(?old, ?new, "admin endpoint moved");
    }
    let expiries = crate::expiry::collect(&cfg);
    crate::expiry::publish(&expiries);
    crate::expiry::warn_soon(&expiries, unix_now());
    // The engine takes the new settings between rounds; a round can take long (a large tenant, a retrying
    // Graph), and SIGTERM must not wait behind it, so the reply is awaited on the side.
    let (rtx, rrx) = oneshot::channel();
    // A failed send drops the reply sender with the command: the reply below is then an error.
    let _ = tx.send(Command::Reconfigure(Box::new(reconfig), rtx)).await;
    tokio::spawn(async move {
        match rrx.await {
            Ok(report) => {
                crate::frontends::count_reload(true);
                tracing::info!(version = report.version, "reload applied");
            }
            Err(_) => {
                crate::frontends::count_reload(false);
                tracing::error!("reload not applied: the sync engine has stopped");
            }
        }
    });
    Some((expiries, cfg))
}
