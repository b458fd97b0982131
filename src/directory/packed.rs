//! A persistent ordered map packed into sorted blocks: the snapshot's large ordered indexes (equality hashes,
//! phone digit keys).
//!
//! imbl's `OrdMap` gives every node room for 64 keys and 65 child pointers, and a map built by inserting keeps
//! its nodes half to three quarters full, so the equality index of a large tenant (some fifteen keys per user)
//! cost about twice its keys. Here the entries live in sorted blocks of at most [`BLOCK`] behind `Arc`s, found
//! by a binary search over the blocks' first keys. A clone (the next snapshot) shares every block and copies
//! only the list of them; a change copies the one block it touches, so a round costs in proportion to its
//! change; [`PackedMap::compact`] refills the blocks after a full build, which leaves the map as small as a
//! sorted array.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Entries per block: a change copies one block (a few KiB), a lookup searches the block list, then a block.
const BLOCK: usize = 256;

#[derive(Clone)]
pub(crate) struct PackedMap<K, V> {
    /// Sorted, none empty, each block's keys below the next block's first key.
    blocks: Arc<Vec<Block<K, V>>>,
}

#[derive(Clone)]
struct Block<K, V> {
    /// `items[0].0`, held here so that finding a block reads one array.
    first: K,
    items: Arc<Vec<(K, V)>>,
}

impl<K, V> Default for PackedMap<K, V> {
    fn default() -> Self {
        PackedMap { blocks: Arc::default() }
    }
}

impl<K: Ord + Clone, V: Clone> PackedMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The block that holds `k` if any does: the last one starting at or before it (the first for a key
    /// before every block).
    fn block_of(&self, k: &K) -> usize {
        self.blocks.partition_point(|b| b.first <= *k).saturating_sub(1)
    }

    /// Where `k` is: its block, and its place in the block (`Err`: where it would go).
    fn find(&self, k: &K) -> Option<(usize, Result<usize, usize>)> {
        let bi = self.block_of(k);
        let b = self.blocks.get(bi)?;
        Some((bi, b.items.binary_search_by(|(x, _)| x.cmp(k))))
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        let (bi, Ok(i)) = self.find(k)? else { return None };
        Some(&self.blocks[bi].items[i].1)
    }

    /// The value of `k` to change in place: copies its block if an older snapshot shares it.
    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let (bi, Ok(i)) = self.find(k)? else { return None };
        let blocks = Arc::make_mut(&mut self.blocks);
        Some(&mut Arc::make_mut(&mut blocks[bi].items)[i].1)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let Some((bi, at)) = self.find(&k) else {
            Arc::make_mut(&mut self.blocks).push(Block {
                first: k.clone(),
                items: Arc::new(vec![(k, v)]),
            });
            return None;
        };
        let last_block = bi + 1 == self.blocks.len();
        let blocks = Arc::make_mut(&mut self.blocks);
        let block = &mut blocks[bi];
        let items = Arc::make_mut(&mut block.items);
        let i = match at {
            Ok(i) => return Some(std::mem::replace(&mut items[i].1, v)),
            Err(i) => i,
        };
        if i == 0 {
            block.first = k.clone();
        }
        items.insert(i, (k, v));
        if items.len() > BLOCK {
            // A map filled in key order appends to its last block: that one stays full and a new one starts,
            // so such a map is dense without a compaction. Anywhere else, halves, which leaves room on both
            // sides.
            let cut = if last_block && i + 1 == items.len() {
                BLOCK
            } else {
                items.len() / 2
            };
            let tail = items.split_off(cut);
            items.shrink_to_fit();
            let first = tail[0].0.clone();
            blocks.insert(
                bi + 1,
                Block {
                    first,
                    items: Arc::new(tail),
                },
            );
        }
        None
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let (bi, Ok(i)) = self.find(k)? else { return None };
        let blocks = Arc::make_mut(&mut self.blocks);
        let items = Arc::make_mut(&mut blocks[bi].items);
        let (_, v) = items.remove(i);
        let left = items.len();
        match items.first().map(|(k, _)| k.clone()) {
            None => {
                blocks.remove(bi);
            }
            Some(first) => {
                blocks[bi].first = first;
                // A block that removals have nearly emptied joins its right neighbour when both fit in one,
                // so blocks do not dwindle to a key each.
                if left < BLOCK / 8 && blocks.get(bi + 1).is_some_and(|n| n.items.len() + left <= BLOCK) {
                    let next = blocks.remove(bi + 1);
                    Arc::make_mut(&mut blocks[bi].items).extend(next.items.iter().cloned());
                }
            }
        }
        Some(v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.blocks.iter().flat_map(|b| b.items.iter().map(|(k, v)| (k, v)))
    }

    /// The entries with keys in `range`, in order; starts at the block of the lower bound.
    pub(crate) fn range(&self, range: impl RangeBounds<K>) -> impl Iterator<Item = (&K, &V)> + '_ {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let first_block = match &start {
            Bound::Included(k) | Bound::Excluded(k) => self.block_of(k),
            Bound::Unbounded => 0,
        };
        let before_start = move |k: &K| match &start {
            Bound::Included(s) => k < s,
            Bound::Excluded(s) => k <= s,
            Bound::Unbounded => false,
        };
        let before_end = move |k: &K| match &end {
            Bound::Included(e) => k <= e,
            Bound::Excluded(e) => k < e,
            Bound::Unbounded => true,
        };
        self.blocks
            .get(first_block..)
            .unwrap_or_default()
            .iter()
            .flat_map(|b| b.items.iter())
            .skip_while(move |(k, _)| before_start(k))
            .take_while(move |(k, _)| before_end(k))
            .map(|(k, v)| (k, v))
    }

    /// Refill every block to [`BLOCK`] entries, each exactly sized: after a full build, whose inserts leave
    /// blocks part full. Copies the whole map once (older snapshots keep theirs).
    pub(crate) fn compact(&mut self) {
        let all: Vec<(K, V)> = self.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let blocks = all
            .chunks(BLOCK)
            .map(|c| Block {
                first: c[0].0.clone(),
                items: Arc::new(c.to_vec()),
            })
            .collect();
        self.blocks = Arc::new(blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(m: &PackedMap<u32, u32>, model: &BTreeMap<u32, u32>) {
        assert_eq!(m.iter().count(), model.len());
        let got: Vec<(u32, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        let want: Vec<(u32, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want);
        for b in m.blocks.iter() {
            assert!(
                !b.items.is_empty() && b.items.len() <= BLOCK,
                "block of {}",
                b.items.len()
            );
            assert_eq!(b.first, b.items[0].0);
        }
    }

    /// Every operation against a `BTreeMap`, with clones kept as older snapshots keep them; keys inserted in
    /// random order, in order, and removed in runs, so blocks split, empty and merge.
    #[test]
    fn matches_a_btreemap_and_clones_stay_as_they_were() {
        let mut m: PackedMap<u32, u32> = PackedMap::new();
        let mut model = BTreeMap::new();
        let mut kept: Vec<(PackedMap<u32, u32>, BTreeMap<u32, u32>)> = Vec::new();
        let mut x: u64 = 3;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        for step in 0..40_000u32 {
            let r = next();
            match r % 10 {
                0..=4 => {
                    let k = next() % 20_000;
                    assert_eq!(m.insert(k, step), model.insert(k, step));
                }
                5 => {
                    // In order, as a map filled by increasing keys (uSN) is.
                    let k = 20_000 + step;
                    assert_eq!(m.insert(k, step), model.insert(k, step));
                }
                6..=8 => {
                    let k = next() % 20_000;
                    assert_eq!(m.remove(&k), model.remove(&k));
                }
                _ => {
                    let k = next() % 20_000;
                    if let Some(v) = m.get_mut(&k) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v += 1;
                    }
                }
            }
            if step % 5_000 == 0 {
                kept.push((m.clone(), model.clone()));
                check(&m, &model);
            }
            let k = next() % 60_000;
            assert_eq!(m.get(&k), model.get(&k));
        }
        check(&m, &model);
        for (lo, hi) in [(0, 10), (5_000, 5_300), (19_990, 20_010), (59_000, 70_000), (7, 7)] {
            let got: Vec<u32> = m.range(lo..hi).map(|(k, _)| *k).collect();
            let want: Vec<u32> = model.range(lo..hi).map(|(k, _)| *k).collect();
            assert_eq!(got, want, "{lo}..{hi}");
            let got: Vec<u32> = m.range(lo..=hi).map(|(k, _)| *k).collect();
            let want: Vec<u32> = model.range(lo..=hi).map(|(k, _)| *k).collect();
            assert_eq!(got, want, "{lo}..={hi}");
        }
        for (old, model) in &kept {
            check(old, model);
        }
        // Removing runs of neighbours merges nearly empty blocks.
        let blocks_before = m.blocks.len();
        for k in 0..15_000 {
            assert_eq!(m.remove(&k), model.remove(&k));
        }
        check(&m, &model);
        assert!(m.blocks.len() < blocks_before, "{} < {blocks_before}", m.blocks.len());
        m.compact();
        check(&m, &model);
        assert_eq!(
            m.blocks.len(),
            model.len().div_ceil(BLOCK),
            "full blocks after compacting"
        );
    }

    #[test]
    fn a_map_filled_in_order_is_dense() {
        let mut m = PackedMap::new();
        for k in 0..10 * BLOCK as u32 {
            m.insert(k, ());
        }
        assert_eq!(m.blocks.len(), 10);
        assert_eq!(m.range(..).count(), 10 * BLOCK);
        assert!(m.get(&(10 * BLOCK as u32)).is_none());
        let empty: PackedMap<u32, ()> = PackedMap::new();
        assert_eq!(empty.range(..).count(), 0);
        assert!(empty.get(&0).is_none());
    }
}
