//! Server-side sort (RFC 2891, AD's `1.2.840.113556.1.4.473`): the order of a sorted search's results.
//!
//! Text sorts by the directory's collation ([`crate::directory::collation`]), as AD sorts it, not by code
//! point. The names clients sort on carry their collation keys from the projection, so a sort compares bytes;
//! other attributes, other ordering rules and multi-valued attributes are keyed once per entry per sort.

use crate::directory::collation::{Ordering, SORTED};
use crate::directory::{Entry, EntryId, Snapshot};
use crate::ldap::proto::SortKey;
use std::borrow::Cow;
use std::cmp::Ordering as Cmp;
use std::sync::Arc;

/// Why a sort control cannot be honoured: RFC 2891's `inappropriateMatching` (18).
#[derive(Debug, thiserror::Error)]
#[error("sort key {attr}: unknown ordering rule {rule:?}")]
pub(crate) struct UnknownRule {
    attr: String,
    rule: String,
}

impl UnknownRule {
    /// The `sortResult` code of the sort response control.
    pub(crate) const SORT_RESULT: u8 = 18;
}

/// The sort keys of one request, resolved against a snapshot.
pub(crate) struct Sorter {
    keys: Vec<Key>,
}

struct Key {
    attr: String,
    /// Where the entries' precomputed keys for `attr` are, when `order` is the directory's collation.
    slot: Option<usize>,
    order: Ordering,
    reverse: bool,
}

/// One entry's value for one sort key.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Value<'a> {
    Bytes(Cow<'a, [u8]>),
    Number(i128),
}

impl Sorter {
    pub(crate) fn new(keys: &[SortKey], snap: &Snapshot) -> Result<Sorter, UnknownRule> {
        let keys = keys
            .iter()
            .map(|k| {
                let order = Ordering::of_rule(k.rule.as_deref(), &snap.collation).ok_or_else(|| UnknownRule {
                    attr: k.attr.clone(),
                    rule: k.rule.clone().unwrap_or_default(),
                })?;
                let own = matches!(&order, Ordering::Collated(c) if Arc::ptr_eq(c, &snap.collation));
                let slot = own
                    .then(|| SORTED.iter().position(|n| n.eq_ignore_ascii_case(&k.attr)))
                    .flatten();
                Ok(Key {
                    attr: k.attr.clone(),
                    slot,
                    order,
                    reverse: k.reverse,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Sorter { keys })
    }

    /// Sort `v` in place. Entries without a value for a key sort after those with one, in either direction, as
    /// AD does (RFC 2891 would put them first when reversed); ties keep their order.
    pub(crate) fn sort(&self, v: &mut Vec<(EntryId, Arc<Entry>)>) {
        self.sort_first(v, usize::MAX);
    }

    /// Like [`Sorter::sort`] for the first `n` entries only: `v` becomes the `n` first in order, then (when
    /// there were more) one of the rest, so a size-limited search can tell that more would follow. Selecting
    /// them costs time linear in the matches, not a sort of all of them.
    pub(crate) fn sort_first(&self, v: &mut Vec<(EntryId, Arc<Entry>)>, n: usize) {
        let mut keyed: Vec<(Vec<Option<Value<'_>>>, usize)> = v
            .iter()
            .enumerate()
            .map(|(i, (_, e))| (self.keys.iter().map(|k| k.value(e)).collect(), i))
            .collect();
        // Ties broken by position: the order a stable sort gives, whichever way the entries are picked.
        let order = |(a, ia): &(Vec<Option<Value<'_>>>, usize), (b, ib): &(Vec<Option<Value<'_>>>, usize)| {
            for (i, k) in self.keys.iter().enumerate() {
                let ord = match (&a[i], &b[i]) {
                    (Some(x), Some(y)) if k.reverse => y.cmp(x),
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => Cmp::Less,
                    (None, Some(_)) => Cmp::Greater,
                    (None, None) => Cmp::Equal,
                };
                if ord.is_ne() {
                    return ord;
                }
            }
            ia.cmp(ib)
        };
        if n < keyed.len() {
            keyed.select_nth_unstable_by(n, order);
            keyed.truncate(n + 1);
            keyed[..n].sort_unstable_by(order);
        } else {
            keyed.sort_unstable_by(order);
        }
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut taken: Vec<Option<(EntryId, Arc<Entry>)>> = std::mem::take(v).into_iter().map(Some).collect();
        v.extend(order.into_iter().filter_map(|i| taken[i].take()));
    }
}

impl Key {
    /// An entry's value for this key: of several values the least (RFC 2891 §2.2), in either direction.
    fn value<'e>(&self, e: &'e Entry) -> Option<Value<'e>> {
        let pick = |it: &mut dyn Iterator<Item = Value<'e>>| it.min();
        match &self.order {
            Ordering::Collated(c) => {
                if let Some(key) = self.slot.and_then(|s| e.sort_keys.get(s)) {
                    return Some(Value::Bytes(Cow::Borrowed(key)));
                }
                pick(&mut e.strs(&self.attr).map(|s| Value::Bytes(Cow::Owned(c.key(s)))))
            }
            Ordering::Numeric => pick(
                &mut e
                    .strs(&self.attr)
                    .filter_map(|s| s.trim().parse::<i128>().ok())
                    .map(Value::Number),
            ),
            Ordering::Octets => pick(&mut e.values(&self.attr).iter().map(|b| Value::Bytes(Cow::Borrowed(b)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::sample::person;
    use crate::directory::phone::PhoneNormalizer;
    use crate::directory::Naming;

    /// The first n of a partial sort are the first n of the full sort, ties in id order, for keys with many
    /// ties (surnames) and without, both directions, and any n; one more entry follows when there are more.
    #[test]
    fn the_first_n_are_those_a_full_sort_puts_first() {
        let naming = Naming::new("DC=contoso,DC=example").unwrap();
        let phones = PhoneNormalizer::new("DE").unwrap();
        let snap = Snapshot::from_entries(naming, phones, 1, (0..500).map(|i| person(i * 7 % 500, 1)).collect());
        let all: Vec<(EntryId, Arc<Entry>)> = snap.entries_with_ids().map(|(i, e)| (i, e.clone())).collect();
        for (attr, reverse) in [("sn", false), ("sn", true), ("cn", false), ("telephoneNumber", true)] {
            let keys = [SortKey {
                attr: attr.into(),
                rule: None,
                reverse,
            }];
            let sorter = Sorter::new(&keys, &snap).unwrap();
            let mut full = all.clone();
            sorter.sort(&mut full);
            let ids = |v: &[(EntryId, Arc<Entry>)]| v.iter().map(|(i, _)| *i).collect::<Vec<_>>();
            for n in [0, 1, 2, 49, 50, 499, 500, 600] {
                let mut first = all.clone();
                sorter.sort_first(&mut first, n);
                let shown = n.min(all.len());
                assert_eq!(
                    ids(&first[..shown]),
                    ids(&full[..shown]),
                    "{attr} reverse {reverse}, first {n}"
                );
                assert_eq!(
                    first.len(),
                    (n + 1).min(all.len()),
                    "{attr}, first {n}: one more when there is"
                );
            }
        }
    }
}
