//! Panics caught in one request. A bug that panics while answering one LDAP or HTTP request must cost that
//! request only: it is answered as an error, counted in `entradir_panics_total`, and logged once.
//!
//! Once, because Rust's default hook prints every panic to stderr before it unwinds to the request's guard,
//! which then logs it with the request's context: two reports of one bug, the first without the context an
//! admin needs. The hook installed here stays quiet inside a guarded request and only notes where the panic
//! happened, for the guard's log line; elsewhere (a panic nothing catches) Rust's default report stands.

use crate::metrics::{self, PanicArea};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Report each panic once (see the module docs). Installed once per process; later calls do nothing.
pub fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST.with(|l| *l.borrow_mut() = Some(location));
                return;
            }
            default(info);
        }));
    });
}

/// A panic caught by a guard: what it said and where.
#[derive(Debug, Clone)]
pub struct Caught {
    pub message: String,
    pub location: String,
}

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at {})", self.message, self.location)
    }
}

/// Run `work`, catching a panic in it; a caught one is counted under `area`. The caller answers the request
/// and logs `Caught` with its context.
pub fn catch<R>(area: PanicArea, work: impl FnOnce() -> R) -> Result<R, Caught> {
    let was = GUARDED.with(|g| g.replace(true));
    let out = catch_unwind(AssertUnwindSafe(work));
    GUARDED.with(|g| g.set(was));
    out.map_err(|payload| caught(area, &*payload))
}

/// [`catch`] for a future: every poll runs guarded.
pub async fn catch_async<F: Future>(area: PanicArea, fut: F) -> Result<F::Output, Caught> {
    Guarded {
        fut: Box::pin(fut),
        area,
    }
    .await
}

struct Guarded<F> {
    fut: Pin<Box<F>>,
    area: PanicArea,
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let area = self.area;
        match catch(area, || self.fut.as_mut().poll(cx)) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(c) => Poll::Ready(Err(c)),
        }
    }
}

/// A panic payload caught elsewhere (a blocking task's `JoinError`), counted and described like [`catch`]'s.
pub fn caught(area: PanicArea, payload: &(dyn std::any::Any + Send)) -> Caught {
    metrics::panic_caught(area);
    Caught {
        message: payload_text(payload),
        location: LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "unknown".into()),
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_panic_is_caught_with_its_place() {
        install_hook();
        let c = catch(PanicArea::Http, || -> u32 { panic!("boom {}", 7) }).expect_err("caught");
        assert_eq!(c.message, "boom 7");
        assert!(c.location.contains("panics.rs"), "{c}");
        assert_eq!(catch(PanicArea::Http, || 5).ok(), Some(5));
        assert!(!GUARDED.with(Cell::get), "the flag is restored");
    }

    fn c_is_true() -> bool {
        std::hint::black_box(true)
    }

    #[tokio::test]
    async fn a_panicking_future_is_caught() {
        install_hook();
        let c = catch_async(PanicArea::Http, async {
            tokio::task::yield_now().await;
            if c_is_true() {
                panic!("late");
            }
        })
        .await
        .expect_err("caught");
        assert_eq!(c.message, "late");
    }
}
