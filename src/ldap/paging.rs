//! Simple Paged Results (RFC 2696) state: the first page computes the candidate bitmap against one snapshot;
//! each page walks it on from the last entry returned (a sorted search materialises its ordered ids once).
//! The cookie names that state, so a client paging through 100k entries sees one consistent version even
//! while syncs publish new snapshots.

use crate::directory::{Candidates, EntryId, Snapshot};
use crate::ldap::filter::Compiled;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Paged searches a connection may keep open at once; the oldest is dropped beyond this.
const MAX_OPEN: usize = 16;

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

pub struct PageState {
    pub snap: Arc<Snapshot>,
    pub cursor: Cursor,
    /// Hash of base, scope and filter: a cookie is only valid for the search that produced it.
    pub fingerprint: u64,
}

#[derive(Default)]
pub struct Pages {
    next: u64,
    open: BTreeMap<u64, PageState>,
}

impl Pages {
    /// Store state and return its cookie (16 octets: handle and snapshot version).
    pub fn put(&mut self, st: PageState) -> Vec<u8> {
        self.next += 1;
        let mut cookie = self.next.to_be_bytes().to_vec();
        cookie.extend_from_slice(&st.snap.version.to_be_bytes());
        self.open.insert(self.next, st);
        while self.open.len() > MAX_OPEN {
            self.open.pop_first();
        }
        cookie
    }

    /// Take the state a cookie names (it is put back under a new cookie if more pages remain).
    pub fn take(&mut self, cookie: &[u8]) -> Option<PageState> {
        let handle = u64::from_be_bytes(cookie.get(..8)?.try_into().ok()?);
        let version = u64::from_be_bytes(cookie.get(8..16)?.try_into().ok()?);
        if cookie.len() != 16 {
            return None;
        }
        let st = self.open.remove(&handle)?;
        (st.snap.version == version).then_some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_single_use_and_bounded() {
        let snap = Arc::new(crate::ldap::filter::tests::sample());
        let mut p = Pages::default();
        let st = || PageState {
            snap: snap.clone(),
            cursor: Cursor::Sorted {
                ids: Arc::new(vec![]),
                pos: 0,
            },
            fingerprint: 1,
        };
        let c = p.put(st());
        assert!(p.take(&c).is_some());
        assert!(p.take(&c).is_none(), "a cookie is consumed by its page");
        assert!(p.take(b"garbage").is_none());
        let first = p.put(st());
        for _ in 0..MAX_OPEN {
            p.put(st());
        }
        assert!(p.take(&first).is_none(), "oldest state is evicted");
    }
}
