//! Simple Paged Results (RFC 2696) state: the first page computes the candidate bitmap against one snapshot;
//! each page walks it on from the last entry returned (a sorted search materialises its ordered ids once).
//! The cookie names that state, so a client paging through 100k entries sees one consistent version even
//! while syncs publish new snapshots.
//!
//! A state is memory a client holds on the server (the ordered ids or the candidate bitmap, and the snapshot
//! it pins), so it is bounded the way AD bounds it (MaxResultSetsPerConn, MaxResultSetSize): at most
//! [`MAX_OPEN`] per connection, [`Budget::per_connection`] bytes per connection and [`Budget::total`] for the
//! whole server, each forgotten when not continued within [`Budget::ttl`]. A search whose state would not fit
//! gets `adminLimitExceeded` instead of a cookie.

use crate::directory::{Candidates, EntryId, Snapshot};
use crate::ldap::filter::Compiled;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Paged searches a connection may keep open at once (AD's MaxResultSetsPerConn); the oldest is dropped
/// beyond this.
pub const MAX_OPEN: usize = 10;

/// Bytes of paging state held by all connections together.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The bounds on paging state.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// A paged search not continued for this long is forgotten; its cookie is then refused.
    pub ttl: Duration,
    pub per_connection: usize,
    pub total: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        // A sorted state of every entry of a 1M-user tenant is 4 MB: MAX_OPEN of them fit a connection.
        Budget {
            ttl: Duration::from_secs(300),
            per_connection: 64 << 20,
            total: 512 << 20,
        }
    }
}

/// Where a paged search stands.
pub enum Cursor {
    /// A sorted search: every match, in the requested order, and the next position.
    Sorted { ids: Arc<Vec<EntryId>>, pos: usize },
    /// An unsorted search: its candidates (checked against the filter bound to the same snapshot) and the
    /// last id returned.
    Walk {
        cands: Arc<Candidates>,
        filter: Arc<Compiled>,
        after: Option<EntryId>,
        /// The candidates' count: RFC 2696's estimate of the result size.
        total: u64,
    },
}

impl Cursor {
    /// The bytes this cursor holds (what it shares with the snapshot is not counted).
    fn weight(&self) -> usize {
        const BASE: usize = 256;
        BASE + match self {
            Cursor::Sorted { ids, .. } => ids.len() * size_of::<EntryId>(),
            Cursor::Walk { cands, .. } => cands.ids.as_ref().map_or(0, |b| b.serialized_size()),
        }
    }
}

pub struct PageState {
    pub snap: Arc<Snapshot>,
    pub cursor: Cursor,
    /// Hash of base, scope and filter: a cookie is only valid for the search that produced it.
    pub fingerprint: u64,
}

/// Bytes charged against the server-wide budget, returned when dropped.
struct Charge(usize);

impl Charge {
    fn new(weight: usize) -> Charge {
        HELD.fetch_add(weight, Ordering::Relaxed);
        Charge(weight)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A stored state and its charge.
struct Held {
    state: PageState,
    charge: Charge,
    at: Instant,
}

/// Why a paged search's state was not kept.
#[derive(Debug, thiserror::Error)]
#[error(
    "the paged search holds too many results for the server to keep between pages ({weight} bytes; \
     {available} available); narrow the filter or page without server-side sorting"
)]
pub struct OverBudget {
    weight: usize,
    available: usize,
}

/// One connection's paged searches.
#[derive(Default)]
pub struct Pages {
    next: u64,
    open: BTreeMap<u64, Held>,
    budget: Budget,
}

impl Pages {
    pub fn new(budget: Budget) -> Pages {
        Pages {
            budget,
            ..Pages::default()
        }
    }

    /// Store state and return its cookie (16 octets: handle and snapshot version). Expired states go first,
    /// then this connection's oldest while it is over its bounds; a state that still does not fit is refused.
    pub fn put(&mut self, st: PageState) -> Result<Vec<u8>, OverBudget> {
        self.expire(Instant::now());
        let weight = st.cursor.weight();
        // What this connection could free by dropping its older states counts as available; a state that does
        // not fit even so is refused before anything is dropped. (The server-wide sum is read without a lock:
        // connections storing at the same moment may overshoot it by a state each.)
        let others = HELD.load(Ordering::Relaxed).saturating_sub(self.held());
        let available = self.budget.per_connection.min(self.budget.total.saturating_sub(others));
        if weight > available {
            return Err(OverBudget { weight, available });
        }
        while self.open.len() >= MAX_OPEN || (!self.open.is_empty() && self.held() + weight > available) {
            self.open.pop_first();
        }
        let charge = Charge::new(weight);
        self.next += 1;
        let mut cookie = self.next.to_be_bytes().to_vec();
        cookie.extend_from_slice(&st.snap.version.to_be_bytes());
        self.open.insert(
            self.next,
            Held {
                state: st,
                charge,
                at: Instant::now(),
            },
        );
        Ok(cookie)
    }

    /// Take the state a cookie names (it is put back under a new cookie if more pages remain).
    pub fn take(&mut self, cookie: &[u8]) -> Option<PageState> {
        self.expire(Instant::now());
        let handle = u64::from_be_bytes(cookie.get(..8)?.try_into().ok()?);
        let version = u64::from_be_bytes(cookie.get(8..16)?.try_into().ok()?);
        if cookie.len() != 16 {
            return None;
        }
        // The page being served owns the state now; it is charged again if put back.
        let Held { state, .. } = self.open.remove(&handle)?;
        (state.snap.version == version).then_some(state)
    }

    fn held(&self) -> usize {
        self.open.values().map(|h| h.charge.0).sum()
    }

    /// Forget the states not continued within the TTL (on every search, so a connection that stopped paging
    /// does not keep them until it closes).
    pub fn expire_stale(&mut self) {
        self.expire(Instant::now());
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.budget.ttl;
        self.open.retain(|_, h| now.duration_since(h.at) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(snap: &Arc<Snapshot>, n: usize) -> PageState {
        PageState {
            snap: snap.clone(),
            cursor: Cursor::Sorted {
                ids: Arc::new(vec![0; n]),
                pos: 0,
            },
            fingerprint: 1,
        }
    }

    #[test]
    fn cookies_are_single_use_and_bounded() {
        let snap = Arc::new(crate::ldap::filter::tests::sample());
        let mut p = Pages::default();
        let c = p.put(state(&snap, 0)).expect("fits");
        assert!(p.take(&c).is_some());
        assert!(p.take(&c).is_none(), "a cookie is consumed by its page");
        assert!(p.take(b"garbage").is_none());
        let first = p.put(state(&snap, 0)).expect("fits");
        for _ in 0..MAX_OPEN {
            p.put(state(&snap, 0)).expect("fits");
        }
        assert!(p.take(&first).is_none(), "oldest state is evicted");
        assert_eq!(p.open.len(), MAX_OPEN);
    }

    #[test]
    fn states_expire_and_stay_within_their_budget() {
        let snap = Arc::new(crate::ldap::filter::tests::sample());
        let mut p = Pages::new(Budget {
            ttl: Duration::ZERO,
            ..Budget::default()
        });
        let c = p.put(state(&snap, 0)).expect("fits");
        assert!(p.take(&c).is_none(), "expired");

        // 1,000 ids are 4,256 bytes: two fit a 10,000-byte connection, a third evicts the oldest.
        let mut p = Pages::new(Budget {
            per_connection: 10_000,
            ..Budget::default()
        });
        let a = p.put(state(&snap, 1000)).expect("fits");
        let b = p.put(state(&snap, 1000)).expect("fits");
        let c = p.put(state(&snap, 1000)).expect("fits after evicting the oldest");
        assert!(p.take(&a).is_none());
        assert!(p.take(&b).is_some() && p.take(&c).is_some());
        let e = p
            .put(state(&snap, 5000))
            .expect_err("larger than a connection may hold");
        assert!(e.to_string().contains("20256 bytes"), "{e}");

        // The server-wide budget applies to every connection.
        let mut p = Pages::new(Budget {
            total: 0,
            ..Budget::default()
        });
        assert!(p.put(state(&snap, 0)).is_err());
    }
}
