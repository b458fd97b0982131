//! The sync engine: runs Graph rounds on an interval and on demand, applies them to the [`Directory`],
//! persists state after every successful round, and keeps a status the admin endpoint reports.
//!
//! A failed round changes nothing that is served: the directory is only touched with a complete [`Round`].
//! Neither does a round that would remove more than [`DeleteGuard`] allows (a revoked permission or an emptied
//! tenant looks like mass deletion): it is held until an admin allows it (`POST /sync?allow_deletes=N`) or
//! raises the limit.
//!
//! Applying a round, re-projecting after a reload and writing the state file take from milliseconds to tens of
//! seconds of CPU and disk. The running engine ([`SyncEngine::run`]) moves itself onto a blocking thread for
//! them (`spawn_blocking`) and back, so the async workers that serve LDAP and CardDAV never wait for it; the
//! order stays as it was: apply, then write the state, then report.

use crate::directory::change::Round;
use crate::directory::{state, ApplyReport, Directory, Settings};
use crate::graph::{PhotoPlan, SyncError, Syncer};
use crate::time::unix_now;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many users' photos are re-checked per round at most, so a large tenant spreads the load over rounds.
const PHOTO_RECHECKS_PER_ROUND: usize = 200;

/// What the engine reports to metrics and `/status`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncStatus {
    pub rounds: u64,
    pub failures: u64,
    /// Unix seconds of the last successful round.
    pub last_success: Option<u64>,
    pub last_error: Option<String>,
    pub last_report: Option<ApplyReport>,
    pub last_duration_ms: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    pub retries: u64,
    pub state_errors: u64,
    /// The last round was not applied because it would remove this many objects; cleared by the next round
    /// that is applied.
    pub deletes_held: Option<HeldDeletes>,
    /// The last [`HISTORY`] rounds, oldest first (the admin console's timeline).
    pub history: std::collections::VecDeque<RoundRecord>,
}

/// Rounds kept in [`SyncStatus::history`]: a day of rounds at a 15-minute interval.
pub const HISTORY: usize = 96;

/// One round as the admin console's timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundRecord {
    /// Unix seconds when the round ended.
    pub at: u64,
    pub duration_ms: u64,
    /// `applied`, `held` (too many deletions) or `failed`.
    pub outcome: &'static str,
    pub entries_changed: usize,
    pub entries_removed: usize,
    /// Graph requests of the round (delta pages and photos; 0 when it failed before counting them).
    pub graph_requests: u64,
    pub throttled: u64,
    /// What went wrong, in the words the log uses.
    pub error: Option<String>,
}

impl SyncStatus {
    fn record(&mut self, r: RoundRecord) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(r);
    }
}

/// A round held by the [`DeleteGuard`], as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldDeletes {
    /// Objects the round would have removed.
    pub removals: usize,
    /// Objects in the directory now.
    pub objects: usize,
    pub max_deletes: usize,
    pub max_delete_percent: u32,
}

/// How much one round may remove before it needs an admin's confirmation (`directory.max_deletes`,
/// `directory.max_delete_percent`). A round is held when it removes more than `max_deletes` objects, or more
/// than `max_delete_percent` % of the directory; the share counts only above [`SHARE_FLOOR`] removals, so a
/// small directory can still lose a handful of objects without anyone confirming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    pub max_deletes: usize,
    pub max_delete_percent: u32,
}

/// Removals at or below this are never held for their share of the directory.
pub const SHARE_FLOOR: usize = 10;

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_deletes: 500,
            max_delete_percent: 20,
        }
    }
}

impl DeleteGuard {
    /// Whether removing `removals` of `objects` needs confirming.
    pub fn holds(&self, removals: usize, objects: usize) -> bool {
        let share = removals > SHARE_FLOOR
            && (removals as u128) * 100 > (objects as u128) * u128::from(self.max_delete_percent);
        removals > self.max_deletes || share
    }
}

/// A round's Graph part, handed to its CPU part.
struct Fetched {
    started: std::time::Instant,
    result: Result<Round, SyncError>,
}

/// Requests to the running engine.
pub enum Command {
    /// Run a round now (SIGUSR1, `POST /sync`); the reply says how it went.
    SyncNow(Option<oneshot::Sender<Result<ApplyReport, String>>>),
    /// Let the next round remove up to this many objects even when [`DeleteGuard`] would hold it
    /// (`POST /sync?allow_deletes=N`). Used once, by the next round that gets as far as applying.
    AllowDeletes(usize),
    /// New settings after a reload: re-project from stored Graph data (no resync), and use the new Graph client
    /// and intervals from the next round on.
    Reconfigure(Box<Reconfig>, oneshot::Sender<ApplyReport>),
}

/// Everything a reload hands the engine, validated beforehand.
pub struct Reconfig {
    pub settings: Settings,
    /// A Graph client for the reloaded `[entra]` section; used only if its configuration differs from the
    /// running one, so an unchanged reload keeps the cached access token.
    pub syncer: Syncer,
    pub interval: Duration,
    pub photo_recheck: Duration,
    pub delete_guard: DeleteGuard,
}

pub struct SyncEngine {
    pub syncer: Syncer,
    pub dir: Directory,
    pub state_dir: Option<PathBuf>,
    pub tenant_id: String,
    pub photo_recheck: Duration,
    pub status: Arc<Mutex<SyncStatus>>,
    pub delete_guard: DeleteGuard,
    /// Removals the admin allowed for the next round ([`Command::AllowDeletes`]).
    pub allow_deletes: Option<usize>,
}

/// Why a round fetched from Graph was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(
        "sync round held: it would remove {} of {} objects (directory.max_deletes = {}, max_delete_percent = {}); \
         the served directory is unchanged. If this is intended, confirm with POST /sync?allow_deletes={} or \
         raise the limits and reload",
        .0.removals, .0.objects, .0.max_deletes, .0.max_delete_percent, .0.removals
    )]
    DeletesHeld(HeldDeletes),
}

/// A round, or `None` as soon as the server is shutting down: a round waiting for an unreachable Graph would
/// otherwise hold the shutdown for the whole grace period. Nothing is lost: the state of the last completed
/// round is on disk, and a round cut short during its disk part finishes on its blocking thread (the state
/// file is replaced atomically). The abandoned round, which owns the engine, is leaked rather than dropped:
/// the process is ending, and freeing a large directory takes seconds.
async fn until_shutdown<T>(
    round: impl std::future::Future<Output = Option<T>>,
    shutdown: &CancellationToken,
) -> Option<T> {
    let mut round = Box::pin(round);
    tokio::select! {
        done = round.as_mut() => done,
        _ = shutdown.cancelled() => {
            std::mem::forget(round);
            None
        }
    }
}

impl SyncEngine {
    /// One round: fetch, apply, persist. On error, or when the round is held for its deletions, nothing
    /// changes (the delta links stay, so the next round fetches the same changes again). (The running engine
    /// does the same with the apply and persist on a blocking thread; see [`SyncEngine::run`].)
    pub async fn round(&mut self) -> Result<ApplyReport, RoundError> {
        let fetched = self.fetch().await;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.conclude(fetched)),
            _ => self.conclude(fetched),
        }
    }

    /// The Graph part of a round: everything that waits on the network.
    async fn fetch(&mut self) -> Fetched {
        let started = std::time::Instant::now();
        let plan = PhotoPlan {
            known: self.dir.photos_known(),
            recheck: self.dir.photo_rechecks(
                unix_now().saturating_sub(self.photo_recheck.as_secs()),
                PHOTO_RECHECKS_PER_ROUND,
            ),
        };
        let links = self.dir.delta_links().clone();
        let result = self.syncer.round(&links, &plan).await;
        Fetched { started, result }
    }

    /// The CPU and disk part of a round: check the deletions, apply a complete round, write the state, update
    /// the status.
    fn conclude(&mut self, fetched: Fetched) -> Result<ApplyReport, RoundError> {
        let Fetched { started, result } = fetched;
        // The status is updated only once the round is applied, so "rounds: n" means n rounds are visible.
        let outcome = match result {
            Ok(round) => {
                let removals = self.dir.store().removals(&round);
                let objects = self.dir.store().len();
                let allowed = self.allow_deletes.take();
                let guard = self.delete_guard;
                if guard.holds(removals, objects) && allowed.is_none_or(|n| removals > n) {
                    Err(RoundError::DeletesHeld(HeldDeletes {
                        removals,
                        objects,
                        max_deletes: guard.max_deletes,
                        max_delete_percent: guard.max_delete_percent,
                    }))
                } else {
                    Ok((self.apply(&round), round.stats))
                }
            }
            Err(e) => Err(RoundError::Sync(e)),
        };
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.rounds += 1;
        st.last_duration_ms = started.elapsed().as_millis() as u64;
        let mut record = RoundRecord {
            at: unix_now(),
            duration_ms: st.last_duration_ms,
            outcome: "applied",
            entries_changed: 0,
            entries_removed: 0,
            graph_requests: 0,
            throttled: 0,
            error: None,
        };
        let result = match outcome {
            Ok((report, stats)) => {
                record.entries_changed = report.entries_changed;
                record.entries_removed = report.entries_removed;
                record.graph_requests = stats.requests + stats.photo_requests;
                record.throttled = stats.throttled;
                st.graph_requests += stats.requests + stats.photo_requests;
                st.throttled += stats.throttled;
                st.retries += stats.retries;
                st.last_success = Some(unix_now());
                st.last_error = None;
                st.last_report = Some(report.clone());
                st.deletes_held = None;
                Ok(report)
            }
            Err(RoundError::DeletesHeld(held)) => {
                let e = RoundError::DeletesHeld(held.clone());
                st.last_error = Some(e.to_string());
                st.deletes_held = Some(held);
                record.outcome = "held";
                record.error = st.last_error.clone();
                Err(e)
            }
            Err(e) => {
                st.failures += 1;
                st.last_error = Some(e.to_string());
                record.outcome = "failed";
                record.error = st.last_error.clone();
                Err(e)
            }
        };
        st.record(record);
        drop(st);
        if let Ok(r) = &result {
            if crate::directory::core::is_bulk(r.entries_changed, self.dir.snapshot().len()) {
                // The round's objects are gone now, and the state is written.
                crate::memory::release_free_memory();
            }
        }
        result
    }

    /// Apply a round and write the state (readers keep using the previous snapshot meanwhile).
    fn apply(&mut self, round: &Round) -> ApplyReport {
        let report = self.dir.apply(round);
        tracing::info!(
            version = report.version,
            changed = report.entries_changed,
            removed = report.entries_removed,
            full = ?round.full,
            requests = round.stats.requests,
            photo_requests = round.stats.photo_requests,
            throttled = round.stats.throttled,
            unparsable_phones = report.unparsable_phones,
            "sync round applied"
        );
        for (upn, line) in &report.unmatched_csv_rows {
            tracing::warn!(
                upn,
                line,
                "UPN-matching CSV row matches no user (check spelling and case)"
            );
        }
        self.persist();
        report
    }

    /// Write the state file; a failure is logged and counted, never fatal (the served data is still right).
    pub fn persist(&self) {
        let Some(dir) = &self.state_dir else { return };
        if let Err(e) = state::save(
            dir,
            &self.tenant_id,
            self.dir.store(),
            self.dir.delta_links(),
            self.dir.snapshot().version,
        ) {
            tracing::error!(error = %e, "could not persist state; will retry after the next round");
            self.status.lock().unwrap_or_else(|e| e.into_inner()).state_errors += 1;
        }
    }

    /// Run until `shutdown`: a round at start, then every `interval` and whenever asked. Returns the engine
    /// after persisting its state, or `None` when a round's thread failed and the engine is gone.
    /// Rounds every `interval`, each wait drawn from ±10 % of it: replicas of one tenant started together
    /// drift apart instead of polling Graph in lockstep.
    pub async fn run(
        mut self,
        mut interval: Duration,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> Option<SyncEngine> {
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {
                    let (engine, _) = until_shutdown(self.logged_round(), &shutdown).await?;
                    self = engine;
                    next = tokio::time::Instant::now() + jittered(interval);
                }
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(Command::SyncNow(reply)) => {
                        let (engine, r) = until_shutdown(self.logged_round(), &shutdown).await?;
                        self = engine;
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                        next = tokio::time::Instant::now() + jittered(interval);
                    }
                    Some(Command::AllowDeletes(n)) => self.allow_deletes = Some(n),
                    Some(Command::Reconfigure(reconfig, reply)) => {
                        let Reconfig { settings, syncer, interval: every, photo_recheck, delete_guard } = *reconfig;
                        self.delete_guard = delete_guard;
                        if syncer.config() != self.syncer.config() {
                            tracing::info!("Graph settings changed; the next round uses them");
                            self.syncer = syncer;
                        }
                        self.photo_recheck = photo_recheck;
                        if every != interval {
                            interval = every;
                            next = tokio::time::Instant::now() + jittered(interval);
                        }
                        let reprojected = self.off_workers(move |engine| {
                            let report = engine.dir.reconfigure(settings);
                            tracing::info!(version = report.version, changed = report.entries_changed,
                                removed = report.entries_removed, "directory re-projected with the new settings");
                            engine.persist();
                            report
                        });
                        // Dropping `reply` unanswered tells the reload that the engine has stopped.
                        let (engine, report) = reprojected.await?;
                        self = engine;
                        let _ = reply.send(report);
                    }
                }
            }
        }
        self.off_workers(|engine| engine.persist())
            .await
            .map(|(engine, ())| engine)
    }

    /// A round whose CPU and disk part runs on a blocking thread. `None` when that thread failed (a panic): the
    /// engine is gone then, and `run` stops, as it did when a panic ended the task.
    async fn logged_round(mut self) -> Option<(SyncEngine, Result<ApplyReport, String>)> {
        let fetched = self.fetch().await;
        let (engine, r) = self.off_workers(move |engine| engine.conclude(fetched)).await?;
        let r = r.map_err(|e| {
            match &e {
                RoundError::DeletesHeld(_) => tracing::warn!("{e}"),
                RoundError::Sync(_) => {
                    tracing::error!(error = %e, "sync round failed; still serving the last good directory")
                }
            }
            e.to_string()
        });
        Some((engine, r))
    }

    /// Run `work` on the engine on a blocking thread and hand the engine back.
    async fn off_workers<R: Send + 'static>(
        self,
        work: impl FnOnce(&mut SyncEngine) -> R + Send + 'static,
    ) -> Option<(SyncEngine, R)> {
        let mut engine = self;
        let task = tokio::task::spawn_blocking(move || {
            let r = work(&mut engine);
            (engine, r)
        });
        match task.await {
            Ok(done) => Some(done),
            Err(e) => {
                tracing::error!(error = %e, "the sync engine failed and has stopped; restart entradir");
                None
            }
        }
    }
}

/// `interval` give or take up to 10 %, at random.
fn jittered(interval: Duration) -> Duration {
    use rand::Rng;
    interval.mul_f64(rand::thread_rng().gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_are_spread_around_the_interval() {
        let every = Duration::from_secs(300);
        let waits: Vec<Duration> = (0..200).map(|_| super::jittered(every)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(270) && *w <= Duration::from_secs(330)));
        let spread = waits.iter().max().unwrap().saturating_sub(*waits.iter().min().unwrap());
        assert!(
            spread > Duration::from_secs(30),
            "replicas would still poll together: {spread:?}"
        );
    }

    use super::*;
    use crate::directory::change::{Change, GraphKind};
    use crate::directory::store::{Object, Store};

    fn store(users: usize) -> Store {
        let mut s = Store::default();
        for i in 0..users {
            s.users.insert(format!("u{i}"), Object::default());
        }
        s
    }

    fn upsert(id: &str) -> Change {
        Change::Upsert {
            kind: GraphKind::User,
            id: id.into(),
            props: Default::default(),
        }
    }

    #[test]
    fn removals_count_what_a_round_would_drop() {
        let s = store(100);
        let removed = |id: &str| Change::Removed {
            kind: GraphKind::User,
            id: id.into(),
            permanent: true,
        };
        let delta = Round {
            changes: vec![
                removed("u1"),
                removed("u2"),
                removed("nobody"),
                removed("u3"),
                upsert("u3"),
            ],
            ..Round::default()
        };
        assert_eq!(s.removals(&delta), 2, "unknown ids and restored ones do not count");
        let full = Round {
            full: vec![GraphKind::User],
            changes: (0..30).map(|i| upsert(&format!("u{i}"))).collect(),
            ..Round::default()
        };
        assert_eq!(s.removals(&full), 70, "a full read drops what it does not list");
        let empty = Round {
            full: vec![GraphKind::User, GraphKind::Group],
            ..Round::default()
        };
        assert_eq!(s.removals(&empty), 100);
        assert_eq!(s.len(), 100, "counting changes nothing");
    }

    #[test]
    fn the_guard_holds_many_or_a_large_share() {
        let g = DeleteGuard::default();
        assert!(!g.holds(0, 0));
        assert!(!g.holds(500, 100_000) && g.holds(501, 100_000));
        assert!(!g.holds(20, 100) && g.holds(21, 100), "more than 20 %");
        assert!(!g.holds(SHARE_FLOOR, 12), "a handful is never held for its share");
        assert!(g.holds(SHARE_FLOOR + 1, 12));
        let none = DeleteGuard {
            max_deletes: 0,
            max_delete_percent: 100,
        };
        assert!(none.holds(1, 1000) && !none.holds(0, 1000));
    }
}
