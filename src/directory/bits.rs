//! Posting lists: the dense ids ([`EntryId`]) of the entries that hold one indexed value.
//!
//! Most indexed values (a mail address, a GUID, a phone number) belong to exactly one entry, so a single id is
//! kept inline; shared values get a compressed bitmap (`roaring`, as tantivy and meilisearch use) behind an
//! `Arc`. Snapshots share the bitmaps: the first change in a new snapshot copies the one bitmap it touches
//! (`Arc::make_mut`), later changes in the same round edit that copy in place. AND, OR and NOT of a filter
//! are then bitmap operations instead of merges of sorted string lists.

use roaring::RoaringBitmap;
use std::sync::Arc;

/// A directory entry's dense id within a snapshot lineage: assigned when the entry first appears, kept while
/// it exists, reused after it is removed. GUID strings are mapped to it at the edges only.
pub type EntryId = u32;

#[derive(Debug, Clone)]
pub(crate) enum Bits {
    One(EntryId),
    Many(Arc<RoaringBitmap>),
}

impl Bits {
    /// The posting of sorted, distinct ids; `None` for none.
    pub(crate) fn from_sorted(ids: &[EntryId]) -> Option<Bits> {
        match ids {
            [] => None,
            [one] => Some(Bits::One(*one)),
            _ => Some(Bits::Many(Arc::new(sorted_bitmap(ids)))),
        }
    }

    /// Add sorted, distinct ids at once (a batch's additions to one key).
    pub(crate) fn extend_sorted(&mut self, ids: &[EntryId]) {
        match self {
            Bits::One(x) if ids == [*x] => {}
            Bits::One(x) => {
                let mut b = sorted_bitmap(ids);
                b.insert(*x);
                *self = Bits::Many(Arc::new(b));
            }
            Bits::Many(b) => {
                // As in `insert`: only copy a shared bitmap when something is new to it.
                if ids.iter().any(|&id| !b.contains(id)) {
                    *Arc::make_mut(b) |= sorted_bitmap(ids);
                }
            }
        }
    }

    /// Remove `id`; `true` when nothing is left (the caller drops the posting).
    pub(crate) fn remove(&mut self, id: EntryId) -> bool {
        match self {
            Bits::One(x) => *x == id,
            Bits::Many(b) => {
                if b.contains(id) {
                    let b = Arc::make_mut(b);
                    b.remove(id);
                    if b.len() == 1 {
                        if let Some(last) = b.min() {
                            *self = Bits::One(last);
                        }
                    }
                }
                false
            }
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Bits::One(_) => 1,
            Bits::Many(b) => b.len(),
        }
    }

    /// The ids as a bitmap of their own (a copy: the caller combines it with others).
    pub(crate) fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            Bits::One(x) => RoaringBitmap::from_iter([*x]),
            Bits::Many(b) => RoaringBitmap::clone(b),
        }
    }

    /// Add the ids to `out`.
    pub(crate) fn union_into(&self, out: &mut RoaringBitmap) {
        match self {
            Bits::One(x) => {
                out.insert(*x);
            }
            Bits::Many(b) => *out |= &**b,
        }
    }

    /// Keep in `out` only the ids that are also here.
    pub(crate) fn intersect_into(&self, out: &mut RoaringBitmap) {
        match self {
            Bits::One(x) => {
                let had = out.contains(*x);
                out.clear();
                if had {
                    out.insert(*x);
                }
            }
            Bits::Many(b) => *out &= &**b,
        }
    }

    /// Ids in ascending order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = EntryId> + '_> {
        match self {
            Bits::One(x) => Box::new(std::iter::once(*x)),
            Bits::Many(b) => Box::new(b.iter()),
        }
    }
}

fn sorted_bitmap(ids: &[EntryId]) -> RoaringBitmap {
    // Sorted input is the batch's contract; fall back to inserting one by one rather than fail.
    RoaringBitmap::from_sorted_iter(ids.iter().copied()).unwrap_or_else(|_| ids.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn grows_shrinks_and_snapshots_keep_their_copy() {
        let mut p = Bits::One(7);
        p.extend_sorted(&[7]);
        assert!(matches!(p, Bits::One(7)));
        p.extend_sorted(&[3]);
        let older = p.clone();
        assert!(!p.remove(7));
        assert!(matches!(p, Bits::One(3)), "back to the inline form");
        assert_eq!(
            older.iter().collect::<Vec<_>>(),
            [3, 7],
            "a clone (an older snapshot) is unchanged"
        );
        assert!(p.remove(3), "empty: the caller drops it");
    }

    /// Every operation against a `BTreeSet` model, with clones kept as older snapshots would keep them.
    #[test]
    fn matches_a_sorted_set_model() {
        let mut p = Bits::One(0);
        let mut model: BTreeSet<u32> = BTreeSet::from([0]);
        let mut kept: Vec<(Bits, BTreeSet<u32>)> = Vec::new();
        let mut x: u64 = 7;
        for step in 0..20_000u32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = ((x >> 33) % 150_000) as u32;
            if (x >> 20).is_multiple_of(3) && model.len() > 1 {
                let gone = p.remove(id);
                model.remove(&id);
                assert!(!gone);
            } else if step % 5 == 0 {
                // A batch's additions: several sorted ids, some maybe present already.
                let ids: BTreeSet<u32> = (0..6).map(|k| (id + k * 997) % 150_000).collect();
                let ids: Vec<u32> = ids.into_iter().collect();
                p.extend_sorted(&ids);
                model.extend(ids);
            } else {
                p.extend_sorted(&[id]);
                model.insert(id);
            }
            if step % 4000 == 0 {
                kept.push((p.clone(), model.clone()));
            }
            assert_eq!(p.len(), model.len() as u64);
        }
        assert_eq!(p.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        for probe in [0, 1, 77_777, 149_999, 150_000, u32::MAX] {
            assert_eq!(p.to_bitmap().contains(probe), model.contains(&probe), "{probe}");
        }
        for (old, m) in &kept {
            assert_eq!(old.iter().collect::<Vec<_>>(), m.iter().copied().collect::<Vec<_>>());
        }
        let mut all = RoaringBitmap::new();
        p.union_into(&mut all);
        assert_eq!(all.len(), model.len() as u64);
        let mut half: RoaringBitmap = (0..75_000).collect();
        p.intersect_into(&mut half);
        assert_eq!(half.len(), model.range(..75_000).count() as u64);
    }

    #[test]
    fn inserting_a_present_id_copies_nothing() {
        let mut p = Bits::One(1);
        for i in 2..1000 {
            p.extend_sorted(&[i]);
        }
        let shared = p.clone();
        p.extend_sorted(&[500]);
        p.extend_sorted(&[3, 400, 999]);
        let (Bits::Many(a), Bits::Many(b)) = (&p, &shared) else {
            panic!("many ids")
        };
        assert!(Arc::ptr_eq(a, b), "still the snapshot's bitmap");
    }
}
