//! The blocking threads CardDAV work runs on, and how many requests may use them at once.
//!
//! Multistatus answers, whole-book vCard streams and phone books take milliseconds to tens of milliseconds of
//! CPU each. Run on the async workers, they hold up everything else those workers serve, above all LDAP
//! caller-ID lookups, which a PBX needs within a ring. So that work goes to `spawn_blocking` threads, at most
//! one per core at a time (the rest queue), and when the queue is full too, the request is refused at once with
//! 503 and `Retry-After` rather than waiting without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How a request could not be run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OffloadError {
    #[error("{0} requests are running or waiting already")]
    Busy(usize),
    #[error("the request's task failed: {0}")]
    Failed(#[from] tokio::task::JoinError),
    /// The work panicked (a bug); counted in `entradir_panics_total`.
    #[error("internal error (a bug: please report it): {0}")]
    Panicked(crate::panics::Caught),
}

/// A bound on running and waiting blocking work.
pub(crate) struct Offload {
    running: Arc<Semaphore>,
    /// Requests admitted and not finished (running or waiting).
    admitted: Arc<AtomicUsize>,
    max_admitted: usize,
}

/// Requests allowed to wait per core, beyond those running: a fleet of phones polling at once fits; a flood does
/// not pile up.
const QUEUE_PER_CORE: usize = 32;

impl Offload {
    /// `threads` running at once, `queue` more waiting.
    pub(crate) fn new(threads: usize, queue: usize) -> Offload {
        let threads = threads.max(1);
        Offload {
            running: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(AtomicUsize::new(0)),
            max_admitted: threads + queue,
        }
    }

    /// One thread per core, [`QUEUE_PER_CORE`] waiting per core.
    pub(crate) fn for_this_machine() -> Offload {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Offload::new(cores, cores * QUEUE_PER_CORE)
    }

    /// Run `work` on a blocking thread once one of the slots is free; refuse at once when the queue is full.
    /// A slot is held until `work` has finished, even if the caller stops waiting (the client went away), so
    /// the bound holds for the CPU actually in use.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, OffloadError> {
        let admitted =
            Admitted::enter(&self.admitted, self.max_admitted).ok_or(OffloadError::Busy(self.max_admitted))?;
        let Ok(permit) = self.running.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return Err(OffloadError::Busy(self.max_admitted));
        };
        let task = tokio::task::spawn_blocking(move || {
            let out = crate::panics::catch(crate::metrics::PanicArea::Http, work);
            drop(permit);
            drop(admitted);
            out
        });
        task.await?.map_err(OffloadError::Panicked)
    }

    /// Requests running or waiting now.
    #[cfg(test)]
    pub(crate) fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }
}

/// One admitted request; leaving (drop) makes room for the next.
struct Admitted(Arc<AtomicUsize>);

impl Admitted {
    fn enter(count: &Arc<AtomicUsize>, max: usize) -> Option<Admitted> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Admitted(count.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A panic in the work is that request's error; the slot is free again for the next one.
    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_and_frees_its_slot() {
        crate::panics::install_hook();
        let offload = Offload::new(1, 0);
        let r = offload
            .run(|| -> u32 {
                let v: Vec<u32> = Vec::new();
                v[std::hint::black_box(3)]
            })
            .await;
        match r {
            Err(OffloadError::Panicked(c)) => assert!(c.message.contains("index out of bounds"), "{c}"),
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert_eq!(offload.admitted(), 0);
        assert_eq!(offload.run(|| 7).await.ok(), Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_at_most_its_threads_queues_the_next_and_refuses_beyond_the_queue() {
        let offload = Arc::new(Offload::new(1, 2));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (o, rx, tx) = (offload.clone(), release_rx.clone(), started_tx.clone());
            tasks.push(tokio::spawn(async move {
                o.run(move || {
                    let _ = tx.send(i);
                    let _ = rx.lock().unwrap().recv();
                    i
                })
                .await
            }));
        }
        // One runs; wait until all three are admitted (one running, two queued).
        let first = started_rx.recv().await.unwrap();
        while offload.admitted() < 3 {
            tokio::task::yield_now().await;
        }
        assert!(started_rx.try_recv().is_err(), "one thread: the others wait");
        let refused = offload.run(|| 0).await;
        assert!(matches!(refused, Err(OffloadError::Busy(3))), "{refused:?}");
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        let mut done: Vec<usize> = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap().unwrap());
        }
        done.sort();
        assert_eq!(done, [0, 1, 2]);
        assert!(first < 3);
        assert_eq!(offload.admitted(), 0);
        assert_eq!(offload.run(|| 7).await.unwrap(), 7, "room again");
    }
}
