//! Posting lists for the snapshot indexes: the ids of the entries that have a value.
//!
//! Most indexed values (a mail address, a phone number, a GUID) belong to exactly one entry. A persistent
//! set allocates a whole B-tree node even for one element, so single ids are stored inline and only shared
//! values get a list: at 100k users this is the difference between megabytes and gigabytes of index.

use std::sync::Arc;

/// Ids per chunk of a [`Postings::Many`]: a change copies one chunk and the list of chunk pointers.
const CHUNK: usize = 128;

type Chunk = Arc<Vec<Arc<str>>>;

#[derive(Debug, Clone, Default)]
pub enum Postings {
    #[default]
    Empty,
    One(Arc<str>),
    /// Sorted ids without duplicates, in chunks of at most `CHUNK` (128; none empty), each chunk's ids below the
    /// next chunk's. A two-level persistent list rather than a B-tree set: snapshots share the chunks, a change
    /// copies the chunk list and the one chunk it touches, and a full projection, which inserts ids in ascending
    /// order, appends after a single comparison where the B-tree compared a dozen strings per insert (a third
    /// of a 100k-user restart).
    Many {
        len: usize,
        chunks: Arc<Vec<Chunk>>,
    },
}

impl Postings {
    pub fn insert(&mut self, id: Arc<str>) {
        match self {
            Postings::Empty => *self = Postings::One(id),
            Postings::One(existing) if *existing == id => {}
            Postings::One(existing) => {
                let pair = if *existing < id {
                    vec![existing.clone(), id]
                } else {
                    vec![id, existing.clone()]
                };
                *self = Postings::Many {
                    len: 2,
                    chunks: Arc::new(vec![Arc::new(pair)]),
                };
            }
            Postings::Many { len, chunks } => {
                if chunks.last().and_then(|c| c.last()).is_some_and(|last| *last < id) {
                    let chunks = Arc::make_mut(chunks);
                    match chunks.last_mut() {
                        Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(id),
                        _ => chunks.push(Arc::new(vec![id])),
                    }
                    *len += 1;
                    return;
                }
                let i = chunk_for(chunks, &id);
                // Look before copying: re-inserting a present id must not copy a list shared with a snapshot.
                let Err(pos) = chunks[i].binary_search(&id) else {
                    return;
                };
                let chunks = Arc::make_mut(chunks);
                let chunk = Arc::make_mut(&mut chunks[i]);
                chunk.insert(pos, id);
                *len += 1;
                if chunk.len() > CHUNK {
                    let right = chunk.split_off(chunk.len() / 2);
                    chunks.insert(i + 1, Arc::new(right));
                }
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        match self {
            Postings::One(existing) if &**existing == id => *self = Postings::Empty,
            Postings::Many { len, chunks } => {
                let i = chunk_for(chunks, id);
                let Ok(pos) = chunks[i].binary_search_by(|x| (**x).cmp(id)) else {
                    return;
                };
                let list = Arc::make_mut(chunks);
                let chunk = Arc::make_mut(&mut list[i]);
                chunk.remove(pos);
                if chunk.is_empty() {
                    list.remove(i);
                }
                *len -= 1;
                if *len == 1 {
                    if let Some(last) = list.first().and_then(|c| c.first()).cloned() {
                        *self = Postings::One(last);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Postings::Empty)
    }

    pub fn len(&self) -> usize {
        match self {
            Postings::Empty => 0,
            Postings::One(_) => 1,
            Postings::Many { len, .. } => *len,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        match self {
            Postings::Empty => false,
            Postings::One(existing) => &**existing == id,
            Postings::Many { chunks, .. } => chunks[chunk_for(chunks, id)]
                .binary_search_by(|x| (**x).cmp(id))
                .is_ok(),
        }
    }

    /// Ids in ascending order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match self {
            Postings::Empty => Box::new(std::iter::empty()),
            Postings::One(id) => Box::new(std::iter::once(id)),
            Postings::Many { chunks, .. } => Box::new(chunks.iter().flat_map(|c| c.iter())),
        }
    }
}

/// The chunk that holds `id` or where it belongs: the first whose last id is not below it (the last chunk
/// for ids above all). `chunks` is never empty.
fn chunk_for(chunks: &[Chunk], id: &str) -> usize {
    chunks
        .partition_point(|c| c.last().is_some_and(|last| &**last < id))
        .min(chunks.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_between_forms() {
        let mut p = Postings::default();
        p.insert("b".into());
        p.insert("b".into());
        assert!(matches!(p, Postings::One(_)));
        p.insert("a".into());
        assert_eq!(p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(p.contains("a") && !p.contains("c"));
        p.remove("a");
        assert!(matches!(p, Postings::One(_)) && p.contains("b") && p.len() == 1);
        p.remove("b");
        assert!(p.is_empty());
    }

    /// Every operation against a `BTreeSet` model, across chunk splits and emptied chunks, with a clone kept
    /// as an older snapshot would.
    #[test]
    fn many_matches_a_sorted_set_across_chunks() {
        use std::collections::BTreeSet;
        let mut p = Postings::default();
        let mut model: BTreeSet<String> = BTreeSet::new();
        let mut snapshots: Vec<(Postings, BTreeSet<String>)> = Vec::new();
        // A deterministic mix: ascending appends (a projection), then scattered inserts and removals.
        let mut x: u64 = 7;
        for step in 0..6000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = if step < 1500 {
                format!("{step:05}")
            } else {
                format!("{:05}", (x >> 33) % 4000)
            };
            if step >= 1500 && (x >> 20).is_multiple_of(3) {
                p.remove(&id);
                model.remove(&id);
            } else {
                p.insert(id.as_str().into());
                model.insert(id);
            }
            if step % 1000 == 0 {
                snapshots.push((p.clone(), model.clone()));
            }
            assert_eq!(p.len(), model.len());
        }
        let ids = |p: &Postings| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&p), model.iter().cloned().collect::<Vec<_>>());
        let Postings::Many { chunks, .. } = &p else {
            panic!("thousands of ids")
        };
        assert!(chunks.len() > 10, "split into chunks");
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        for probe in ["00000", "01234", "03999", "04000", "zzz", ""] {
            assert_eq!(p.contains(probe), model.contains(probe), "{probe}");
        }
        for (old, m) in &snapshots {
            assert_eq!(
                ids(old),
                m.iter().cloned().collect::<Vec<_>>(),
                "a clone is never changed"
            );
        }
        for id in model.iter().skip(1) {
            p.remove(id);
        }
        assert!(matches!(p, Postings::One(_)) && p.len() == 1);
    }

    #[test]
    fn many_stays_sorted_and_snapshots_keep_their_copy() {
        let mut p = Postings::default();
        for id in ["m", "c", "x", "a", "m", "z", "b"] {
            p.insert(id.into());
        }
        let ids = |p: &Postings| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&p), ["a", "b", "c", "m", "x", "z"]);
        let older = p.clone();
        p.remove("c");
        p.remove("nope");
        p.insert("d".into());
        assert_eq!(ids(&p), ["a", "b", "d", "m", "x", "z"]);
        assert_eq!(
            ids(&older),
            ["a", "b", "c", "m", "x", "z"],
            "a clone (an older snapshot) is not changed"
        );
        assert!(p.contains("d") && !p.contains("c") && older.contains("c"));
        for id in ["a", "b", "d", "m", "x"] {
            p.remove(id);
        }
        assert!(matches!(p, Postings::One(_)) && p.contains("z"));
    }

    #[test]
    fn inserting_a_present_id_copies_nothing() {
        let mut p = Postings::default();
        for i in 0..1000 {
            p.insert(format!("{i:04}").into());
        }
        let shared = p.clone();
        p.insert("0500".into());
        let (Postings::Many { chunks: a, .. }, Postings::Many { chunks: b, .. }) = (&p, &shared) else {
            panic!("many ids")
        };
        assert!(Arc::ptr_eq(a, b), "still the snapshot's list");
    }
}
