//! Posting lists for the snapshot indexes: the ids of the entries that have a value.
//!
//! Most indexed values (a mail address, a phone number, a GUID) belong to exactly one entry. A persistent
//! set allocates a whole B-tree node even for one element, so single ids are stored inline and only shared
//! values get a set: at 100k users this is the difference between megabytes and gigabytes of index.

use imbl::OrdSet;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub enum Postings {
    #[default]
    Empty,
    One(Arc<str>),
    Many(OrdSet<Arc<str>>),
}

impl Postings {
    pub fn insert(&mut self, id: Arc<str>) {
        match self {
            Postings::Empty => *self = Postings::One(id),
            Postings::One(existing) if *existing == id => {}
            Postings::One(existing) => {
                let mut set = OrdSet::new();
                set.insert(existing.clone());
                set.insert(id);
                *self = Postings::Many(set);
            }
            Postings::Many(set) => {
                set.insert(id);
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        match self {
            Postings::One(existing) if &**existing == id => *self = Postings::Empty,
            Postings::Many(set) => {
                set.remove(id);
                if set.len() == 1 {
                    if let Some(last) = set.get_min().cloned() {
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
            Postings::Many(set) => set.len(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        match self {
            Postings::Empty => false,
            Postings::One(existing) => &**existing == id,
            Postings::Many(set) => set.contains(id),
        }
    }

    /// Ids in ascending order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match self {
            Postings::Empty => Box::new(std::iter::empty()),
            Postings::One(id) => Box::new(std::iter::once(id)),
            Postings::Many(set) => Box::new(set.iter()),
        }
    }
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
}
