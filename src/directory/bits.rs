//! Posting lists: the dense ids ([`EntryId`]) of the entries that hold one indexed value.
//!
//! Most indexed values (a mail address, a GUID, a phone number) belong to exactly one entry, and many of the
//! rest to two or three, so up to three ids are kept inline; more get a compressed bitmap (`roaring`, as tantivy and meilisearch use) behind an
//! `Arc`. Snapshots share the bitmaps: the first change in a new snapshot copies the one bitmap it touches
//! (`Arc::make_mut`), later changes in the same round edit that copy in place. AND, OR and NOT of a filter
//! are then bitmap operations instead of merges of sorted string lists.

use roaring::RoaringBitmap;
use std::sync::Arc;

/// A directory entry's dense id within a snapshot lineage: assigned when the entry first appears, kept while
/// it exists, reused after it is removed. GUID strings are mapped to it at the edges only.
pub type EntryId = u32;

/// How many ids a posting holds inline.
const FEW: usize = 3;

#[derive(Debug, Clone)]
pub(crate) enum Bits {
    /// One to [`FEW`] ids, sorted. Most indexed values belong to one entry and many of the rest to two or
    /// three (namesakes, a shared desk number, the rare tail of name prefixes); a bitmap would spend three
    /// allocations and over a hundred bytes on them, this variant none and no more than a bitmap's handle.
    Few {
        len: u8,
        ids: [EntryId; FEW],
    },
    Many(Arc<RoaringBitmap>),
}

const _: () = assert!(
    std::mem::size_of::<Bits>() == 16,
    "a posting is a map value: keep it two words"
);

impl Bits {
    /// The posting of sorted, distinct ids; `None` for none.
    pub(crate) fn from_sorted(ids: &[EntryId]) -> Option<Bits> {
        match ids.len() {
            0 => None,
            n if n <= FEW => {
                let mut few = [0; FEW];
                few[..n].copy_from_slice(ids);
                Some(Bits::Few { len: n as u8, ids: few })
            }
            _ => Some(Bits::Many(Arc::new(sorted_bitmap(ids)))),
        }
    }

    /// The ids when held inline.
    fn few(&self) -> Option<&[EntryId]> {
        match self {
            Bits::Few { len, ids } => Some(&ids[..usize::from(*len)]),
            Bits::Many(_) => None,
        }
    }

    /// Add sorted, distinct ids at once (a batch's additions to one key).
    pub(crate) fn extend_sorted(&mut self, ids: &[EntryId]) {
        match self {
            Bits::Few { .. } => {
                let have = self.few().unwrap_or_default();
                if ids.iter().all(|id| have.binary_search(id).is_ok()) {
                    return;
                }
                let mut all: Vec<EntryId> = have.iter().chain(ids).copied().collect();
                all.sort_unstable();
                all.dedup();
                if let Some(b) = Bits::from_sorted(&all) {
                    *self = b;
                }
            }
            Bits::Many(b) => {
                // As in `remove`: only copy a shared bitmap when something is new to it.
                if ids.iter().any(|&id| !b.contains(id)) {
                    *Arc::make_mut(b) |= sorted_bitmap(ids);
                }
            }
        }
    }

    /// Remove `id`; `true` when nothing is left (the caller drops the posting).
    pub(crate) fn remove(&mut self, id: EntryId) -> bool {
        match self {
            Bits::Few { len, ids } => {
                let n = usize::from(*len);
                if let Some(at) = ids[..n].iter().position(|x| *x == id) {
                    ids.copy_within(at + 1..n, at);
                    *len -= 1;
                }
                *len == 0
            }
            Bits::Many(b) => {
                if b.contains(id) {
                    let b = Arc::make_mut(b);
                    b.remove(id);
                    if b.len() <= FEW as u64 {
                        let rest: Vec<EntryId> = b.iter().collect();
                        if let Some(few) = Bits::from_sorted(&rest) {
                            *self = few;
                        }
                    }
                }
                false
            }
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Bits::Few { len, .. } => u64::from(*len),
            Bits::Many(b) => b.len(),
        }
    }

    /// The ids as a bitmap of their own (a copy: the caller combines it with others).
    pub(crate) fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            Bits::Few { .. } => sorted_bitmap(self.few().unwrap_or_default()),
            Bits::Many(b) => RoaringBitmap::clone(b),
        }
    }

    /// Add the ids to `out`.
    pub(crate) fn union_into(&self, out: &mut RoaringBitmap) {
        match self {
            Bits::Few { .. } => out.extend(self.few().unwrap_or_default().iter().copied()),
            Bits::Many(b) => *out |= &**b,
        }
    }

    /// Keep in `out` only the ids that are also here.
    pub(crate) fn intersect_into(&self, out: &mut RoaringBitmap) {
        match self {
            Bits::Few { .. } => {
                let mut kept = [0; FEW];
                let mut n = 0;
                for &id in self.few().unwrap_or_default() {
                    if out.contains(id) {
                        kept[n] = id;
                        n += 1;
                    }
                }
                out.clear();
                out.extend(kept[..n].iter().copied());
            }
            Bits::Many(b) => *out &= &**b,
        }
    }

    /// Ids in ascending order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = EntryId> + '_> {
        match self {
            Bits::Few { .. } => Box::new(self.few().unwrap_or_default().iter().copied()),
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
        let ids = |p: &Bits| p.iter().collect::<Vec<_>>();
        let mut p = Bits::from_sorted(&[7]).expect("one");
        p.extend_sorted(&[7]);
        assert_eq!(p.few(), Some(&[7][..]));
        p.extend_sorted(&[3]);
        p.extend_sorted(&[1, 9]);
        assert!(matches!(p, Bits::Many(_)), "past the inline ids");
        let older = p.clone();
        assert!(!p.remove(7));
        assert_eq!(p.few(), Some(&[1, 3, 9][..]), "back to the inline form");
        assert!(!p.remove(1));
        assert!(!p.remove(42), "absent: nothing changes");
        assert_eq!(ids(&p), [3, 9]);
        assert_eq!(ids(&older), [1, 3, 7, 9], "a clone (an older snapshot) is unchanged");
        assert!(!p.remove(9));
        assert!(p.remove(3), "empty: the caller drops it");
    }

    /// Every operation against a `BTreeSet` model, with clones kept as older snapshots would keep them.
    #[test]
    fn matches_a_sorted_set_model() {
        let mut p = Bits::from_sorted(&[0]).expect("one");
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

    /// A posting that crosses between the inline and the bitmap form again and again, every query checked.
    #[test]
    fn small_postings_match_a_sorted_set_model() {
        let mut p = Bits::from_sorted(&[5]).expect("one");
        let mut model: BTreeSet<u32> = BTreeSet::from([5]);
        let mut x: u64 = 11;
        let probe: RoaringBitmap = [0, 2, 3, 5, 70_000].into_iter().collect();
        for _ in 0..5_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = [0, 2, 3, 5, 6, 70_000][((x >> 33) % 6) as usize];
            if (x >> 20).is_multiple_of(2) && model.len() > 1 {
                assert!(!p.remove(id));
                model.remove(&id);
            } else if (x >> 24).is_multiple_of(3) {
                let ids: Vec<u32> = model
                    .iter()
                    .copied()
                    .chain([id, 6])
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                p.extend_sorted(&ids);
                model.extend(ids);
            } else {
                p.extend_sorted(&[id]);
                model.insert(id);
            }
            let want: Vec<u32> = model.iter().copied().collect();
            assert_eq!(p.iter().collect::<Vec<_>>(), want);
            assert_eq!(p.len(), want.len() as u64);
            assert_eq!(
                p.few().is_some(),
                want.len() <= FEW,
                "inline exactly when small: {want:?}"
            );
            assert_eq!(p.to_bitmap().iter().collect::<Vec<_>>(), want);
            let mut and = probe.clone();
            p.intersect_into(&mut and);
            assert_eq!(and, &probe & &p.to_bitmap());
            let mut or = probe.clone();
            p.union_into(&mut or);
            assert_eq!(or, &probe | &p.to_bitmap());
        }
    }

    #[test]
    fn inserting_a_present_id_copies_nothing() {
        let mut p = Bits::from_sorted(&[1]).expect("one");
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
