//! Unique names, `sAMAccountName` and the RDN (`CN=`) of every published object, as a function of the tenant.
//!
//! Two replicas synced from one tenant must hand out the same names whatever each has seen before (a PBX moved
//! between them by a load balancer must find `jdoe2` where it left it), so names depend on the current tenant
//! only, never on the order in which a process learned of objects. The rule is a serial dictatorship: objects
//! are ranked by Graph's `createdDateTime` (`registrationDateTime` for devices; objects without one, such as
//! organisational contacts, come after all dated ones), then by id; in that order, each takes the first of its
//! candidate names that no object ranked before it holds.
//!
//! - The first candidate is the bare wish (the UPN's local part, a CSV name, the display name). The next ones
//!   carry a four-digit number drawn from the object's own id (`jdoe4821`), not a counter: a counter would make
//!   every later holder move up when one leaves; a number of its own moves nobody. (After 64 numbers tried,
//!   one digit more: a name thousands want still has room.)
//! - A new object ranks after every existing one (it was created last), so an arrival renames nobody (except
//!   one that comes with an old date: restored, re-enabled, added to the scope, or undated and ranked by id).
//!   When the first holder of a name leaves, the next in rank takes the bare name: the one rename this rule
//!   makes, and the price of being the same on every replica (a history-keeping rule would let a replica started
//!   after the departure disagree for good). README: "Names and identity".
//! - A CN collision inside a container is settled the same way, with the candidates `Name`, `Name (sam)` and
//!   `Name (id)`.
//!
//! [`NameBook::update`] keeps the assignment equal to a from-scratch computation while touching only the
//! objects a change concerns: each key remembers who passed it over, and a freed key is offered to them in rank
//! order.

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Characters AD does not allow in a sAMAccountName.
const SAM_ILLEGAL: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
];

/// AD's limit for user and group sAMAccountNames.
pub const SAM_MAX: usize = 20;

/// One object's names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assigned {
    pub sam: String,
    pub cn: String,
    pub container: String,
}

/// What an object would like to be called, and its rank among objects that want the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub sam: String,
    pub cn: String,
    pub container: String,
    /// Computer accounts end in `$` and have a 15-character NetBIOS limit before it.
    pub computer: bool,
    /// Unix seconds of the object's creation as Graph reports it; `None` ranks after every dated object.
    pub created: Option<u64>,
}

/// Who goes first when objects want the same name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Rank {
    created: u64,
    id: Arc<str>,
}

/// One published object's wish and what it holds in each name space.
#[derive(Debug, Clone)]
struct Holder {
    rank: Rank,
    /// The sanitised wish (`sam`) and the trimmed CN wish.
    sam_base: String,
    cn_base: String,
    computer: bool,
    names: Assigned,
    /// Per space: `None` while nothing is held, else the keys passed over before the held one (usually none).
    /// Kept rather than recomputed because a CN candidate carries the sAMAccountName, which may have moved
    /// since; the held key is always that of the held name.
    sam_claim: Option<Vec<String>>,
    cn_claim: Option<Vec<String>>,
}

/// The two name spaces: sAMAccountNames are unique in the domain, CNs within their container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Sam,
    Dn,
}

/// Who holds each key of one space, and who passed each key over because someone ranked before held it.
#[derive(Debug, Clone, Default)]
struct Keys {
    owner: FxHashMap<String, Rank>,
    skipped: FxHashMap<String, BTreeSet<Rank>>,
    /// While settling: the freed keys each woken object was offered. Only the first in rank of a key's
    /// skippers is woken; if the key is still free once it has chosen, the next one is.
    waking: FxHashMap<Rank, Vec<String>>,
}

/// All objects' names.
#[derive(Debug, Clone, Default)]
pub struct NameBook {
    /// Boxed: a hash table keeps up to half its slots empty, and a holder is some two hundred bytes.
    holders: FxHashMap<Arc<str>, Box<Holder>>,
    sams: Keys,
    dns: Keys,
}

/// One object whose names changed in an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub id: String,
    /// Its DN changed, it appeared, or it left: entries naming it must be re-projected too.
    pub dn_changed: bool,
}

/// An object that holds a name other than the one it wanted, because an object ranked before it holds that one:
/// what the admin console lists as a collision to fix at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The wanted sAMAccountName, when it was not granted.
    pub wanted_sam: Option<String>,
    pub sam: String,
    /// The wanted CN, when it was not granted in its container.
    pub wanted_cn: Option<String>,
    pub cn: String,
}

/// What each touched object was called before an update (`None`: it had no names).
type Before = FxHashMap<Arc<str>, Option<Assigned>>;

impl NameBook {
    pub fn get(&self, id: &str) -> Option<&Assigned> {
        self.holders.get(id).map(|h| &h.names)
    }

    /// Whether `id` was passed over for its first-choice sAMAccountName or CN (`None`: it got both, or it
    /// holds no names).
    pub fn clash(&self, id: &str) -> Option<Clash> {
        let h = self.holders.get(id)?;
        let miss = |space: Space| {
            let first = h.candidate(space, 0);
            (h.name(space) != first).then_some(first)
        };
        let (wanted_sam, wanted_cn) = (miss(Space::Sam), miss(Space::Dn));
        (wanted_sam.is_some() || wanted_cn.is_some()).then(|| Clash {
            wanted_sam,
            sam: h.names.sam.clone(),
            wanted_cn,
            cn: h.names.cn.clone(),
        })
    }

    /// The ids that hold names.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.holders.keys().map(|k| &**k)
    }

    /// Apply what objects now want (`None`: the object left), and settle every name this moves, including
    /// those of objects not in `changes` (the next holder of a name that was freed). Returns every object whose
    /// names are not what they were.
    pub fn update(&mut self, changes: impl IntoIterator<Item = (String, Option<Wanted>)>) -> Vec<Renamed> {
        if self.holders.is_empty() {
            return self.build(changes);
        }
        let mut before: Before = FxHashMap::default();
        let mut dirty_sam: BTreeSet<Rank> = BTreeSet::new();
        let mut dirty_dn: BTreeSet<Rank> = BTreeSet::new();
        for (id, want) in changes {
            let id: Arc<str> = id.into();
            let want = want.map(|w| Box::new(Holder::new(id.clone(), w)));
            if let (Some(old), Some(new)) = (self.holders.get(&id), &want) {
                if old.same_wish(new) {
                    continue;
                }
            }
            if let Some(mut old) = self.holders.remove(&id) {
                before.entry(id.clone()).or_insert_with(|| Some(old.names.clone()));
                unclaim(&mut self.sams, &mut old, Space::Sam, &mut dirty_sam);
                unclaim(&mut self.dns, &mut old, Space::Dn, &mut dirty_dn);
            } else {
                before.entry(id.clone()).or_insert(None);
            }
            if let Some(h) = want {
                dirty_sam.insert(h.rank.clone());
                dirty_dn.insert(h.rank.clone());
                self.holders.insert(id, h);
            }
        }
        // sAMAccountNames first: a CN's second candidate carries the sAMAccountName.
        for (id, old_sam) in self.settle(Space::Sam, dirty_sam, &mut before) {
            if let Some(h) = self.holders.get(&id) {
                if h.names.sam != old_sam {
                    dirty_dn.insert(h.rank.clone());
                }
            }
        }
        self.settle(Space::Dn, dirty_dn, &mut before);
        let mut out: Vec<Renamed> = before
            .into_iter()
            .filter_map(|(id, old)| {
                let now = self.get(&id);
                if now == old.as_ref() {
                    return None;
                }
                let dn_changed = match (&old, now) {
                    (Some(o), Some(n)) => o.cn != n.cn || o.container != n.container,
                    _ => true,
                };
                Some(Renamed {
                    id: id.to_string(),
                    dn_changed,
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// [`NameBook::update`] of an empty book (a start, a reload that re-projects everything): everyone is new,
    /// so names are settled in rank order and every object is reported, without comparing with what it had.
    fn build(&mut self, changes: impl IntoIterator<Item = (String, Option<Wanted>)>) -> Vec<Renamed> {
        for (id, want) in changes {
            if let Some(w) = want {
                let id: Arc<str> = id.into();
                self.holders.insert(id.clone(), Box::new(Holder::new(id, w)));
            }
        }
        let ranks: BTreeSet<Rank> = self.holders.values().map(|h| h.rank.clone()).collect();
        let mut scratch = Before::default();
        self.settle(Space::Sam, ranks.clone(), &mut scratch);
        self.settle(Space::Dn, ranks, &mut scratch);
        let mut out: Vec<Renamed> = self
            .holders
            .keys()
            .map(|id| Renamed {
                id: id.to_string(),
                dn_changed: true,
            })
            .collect();
        out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Re-decide the given objects' names in one space, in rank order, and whoever that displaces or frees a
    /// key for. Returns (id, name before) for every object whose claim was re-decided.
    fn settle(&mut self, space: Space, mut dirty: BTreeSet<Rank>, before: &mut Before) -> Vec<(Arc<str>, String)> {
        let NameBook { holders, sams, dns } = self;
        let keys = match space {
            Space::Sam => sams,
            Space::Dn => dns,
        };
        let mut touched = Vec::new();
        // Everything added to `dirty` while settling ranks after the object being settled (it was displaced by
        // it, or passed over a key it held), so each object is settled at most once and everyone ranked before
        // it is final when it chooses.
        while let Some(rank) = dirty.pop_first() {
            // A rank can be stale: the object left, or came back with another creation date, after it was woken.
            let Some(h) = holders.get_mut(&rank.id).filter(|h| h.rank == rank) else {
                pass_on(keys, &rank, &mut dirty);
                continue;
            };
            before.entry(rank.id.clone()).or_insert_with(|| Some(h.names.clone()));
            let old_name = h.name(space).to_string();
            let old_key = h.held_key(space);
            release_claim(keys, h, space);
            let mut passed = Vec::new();
            let mut i = 0usize;
            let displaced = loop {
                let name = h.candidate(space, i);
                let k = key(space, h, &name);
                match keys.owner.get(&k) {
                    Some(q) if *q < rank => {
                        keys.skipped.entry(k.clone()).or_default().insert(rank.clone());
                        passed.push(k);
                        i += 1;
                    }
                    held => {
                        // Someone ranked after may hold what this one should have: it chooses again.
                        let displaced = held.cloned();
                        let moved = old_key.as_ref().filter(|o| **o != k).cloned();
                        keys.owner.insert(k, rank.clone());
                        h.set(space, passed, name);
                        if let Some(o) = moved {
                            wake(keys, &o, &mut dirty);
                        }
                        break displaced;
                    }
                }
            };
            pass_on(keys, &rank, &mut dirty);
            touched.push((rank.id.clone(), old_name));
            if let Some(q) = displaced {
                if let Some(qh) = holders.get_mut(&q.id) {
                    before.entry(q.id.clone()).or_insert_with(|| Some(qh.names.clone()));
                    release_claim(keys, qh, space);
                }
                dirty.insert(q);
            }
        }
        touched
    }
}

/// Give up `h`'s claim in `space` (its key, unless someone else holds it by now, and the keys it passed over),
/// without waking anyone: the caller decides whether the key stays with `h`.
fn release_claim(keys: &mut Keys, h: &mut Holder, space: Space) {
    let Some(held) = h.held_key(space) else { return };
    if keys.owner.get(&held) == Some(&h.rank) {
        keys.owner.remove(&held);
    }
    for k in h.take_claim(space).unwrap_or_default() {
        if let Some(set) = keys.skipped.get_mut(&k) {
            set.remove(&h.rank);
            if set.is_empty() {
                keys.skipped.remove(&k);
            }
        }
    }
}

/// `h` leaves `space` (it left the directory or wants something else): its key is free for whoever passed it
/// over.
fn unclaim(keys: &mut Keys, h: &mut Holder, space: Space, dirty: &mut BTreeSet<Rank>) {
    let Some(k) = h.held_key(space) else { return };
    release_claim(keys, h, space);
    wake(keys, &k, dirty);
}

/// A key became free: the first in rank of those who passed it over may want it now.
fn wake(keys: &mut Keys, k: &str, dirty: &mut BTreeSet<Rank>) {
    if keys.owner.contains_key(k) {
        return;
    }
    if let Some(first) = keys.skipped.get(k).and_then(|set| set.first()).cloned() {
        keys.waking.entry(first.clone()).or_default().push(k.to_string());
        dirty.insert(first);
    }
}

/// `rank` has chosen (or is gone): keys it was offered and did not take go to the next who passed them over
/// (who ranks after it, so the settling order holds).
fn pass_on(keys: &mut Keys, rank: &Rank, dirty: &mut BTreeSet<Rank>) {
    if let Some(offered) = keys.waking.remove(rank) {
        for k in offered {
            wake(keys, &k, dirty);
        }
    }
}

/// The key a name occupies: sAMAccountNames compare without case across the domain, CNs without case within
/// their container.
fn key(space: Space, h: &Holder, name: &str) -> String {
    // One allocation: this runs for every object of a full projection.
    let container = match space {
        Space::Sam => None,
        Space::Dn => Some(h.names.container.as_str()),
    };
    let mut k = String::with_capacity(name.len() + container.map_or(0, |c| c.len() + 1));
    k.extend(name.chars().flat_map(char::to_lowercase));
    if let Some(c) = container {
        k.push('\u{0}');
        k.extend(c.chars().flat_map(char::to_lowercase));
    }
    k
}

impl Holder {
    fn new(id: Arc<str>, w: Wanted) -> Holder {
        let cn_base = if w.cn.trim().is_empty() {
            id.to_string()
        } else {
            w.cn.trim().to_string()
        };
        Holder {
            rank: Rank {
                created: w.created.unwrap_or(u64::MAX),
                id,
            },
            sam_base: sanitize_sam(&w.sam, w.computer),
            cn_base,
            computer: w.computer,
            names: Assigned {
                sam: String::new(),
                cn: String::new(),
                container: w.container,
            },
            sam_claim: None,
            cn_claim: None,
        }
    }

    fn same_wish(&self, other: &Holder) -> bool {
        self.rank == other.rank
            && self.sam_base == other.sam_base
            && self.cn_base == other.cn_base
            && self.computer == other.computer
            && self.names.container == other.names.container
    }

    /// The key of the name held in `space`, if any.
    fn held_key(&self, space: Space) -> Option<String> {
        let held = match space {
            Space::Sam => self.sam_claim.is_some(),
            Space::Dn => self.cn_claim.is_some(),
        };
        held.then(|| key(space, self, self.name(space)))
    }

    fn take_claim(&mut self, space: Space) -> Option<Vec<String>> {
        match space {
            Space::Sam => self.sam_claim.take(),
            Space::Dn => self.cn_claim.take(),
        }
    }

    fn name(&self, space: Space) -> &str {
        match space {
            Space::Sam => &self.names.sam,
            Space::Dn => &self.names.cn,
        }
    }

    fn set(&mut self, space: Space, passed: Vec<String>, name: String) {
        match space {
            Space::Sam => (self.sam_claim, self.names.sam) = (Some(passed), name),
            Space::Dn => (self.cn_claim, self.names.cn) = (Some(passed), name),
        }
    }

    /// The `i`-th name this object would take in `space`.
    fn candidate(&self, space: Space, i: usize) -> String {
        match space {
            Space::Sam => {
                let (stem, tail, max) = if self.computer {
                    (self.sam_base.trim_end_matches('$'), "$", NETBIOS_MAX)
                } else {
                    (self.sam_base.as_str(), "", SAM_MAX)
                };
                let suffix = if i == 0 {
                    String::new()
                } else {
                    // Four digits, and one more every 64 tries: a name wanted by thousands (every "iPhone")
                    // still finds a free number, and the search ends.
                    let digits = (4 + (i - 1) / 64).min(max);
                    own_number(&self.rank.id, i, digits as u32).to_string()
                };
                let room = max.saturating_sub(suffix.chars().count());
                let cut = stem.char_indices().nth(room).map_or(stem.len(), |(at, _)| at);
                let s = stem[..cut].trim_end_matches([' ', '.', '-']);
                let mut out = String::with_capacity(s.len() + suffix.len() + tail.len());
                out.push_str(s);
                out.push_str(&suffix);
                out.push_str(tail);
                out
            }
            Space::Dn => match i {
                0 => self.cn_base.clone(),
                1 => format!("{} ({})", self.cn_base, self.names.sam.trim_end_matches('$')),
                2 => format!("{} ({})", self.cn_base, self.rank.id),
                n => format!("{} ({} {n})", self.cn_base, self.rank.id),
            },
        }
    }
}

/// The `i`-th suffix number of an object, `digits` long (at most 19): a fixed function of its id, the same in
/// every process and release.
fn own_number(id: &str, i: usize, digits: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update((i as u64).to_be_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    let low = 10u64.pow(digits.clamp(1, 19) - 1);
    low + u64::from_be_bytes(first) % (low * 9)
}

/// Make a string a legal sAMAccountName stem: illegal and control characters dropped, no leading/trailing
/// spaces or dots, never empty.
pub fn sanitize_sam(raw: &str, computer: bool) -> String {
    let s: String = raw
        .chars()
        .filter(|c| !c.is_control() && !SAM_ILLEGAL.contains(c))
        .collect();
    let s = s.trim_matches([' ', '.']).to_string();
    if computer {
        return netbios_name(&s);
    }
    if s.is_empty() {
        "user".to_string()
    } else {
        s
    }
}

/// A computer account's name as Windows would have it (before the `$`): upper case letters, digits and
/// hyphens, at most 15 characters. Spaces and other separators become one hyphen ("iPhone von Mia" →
/// `IPHONE-VON-MIA`); common accented letters lose their accent; anything else is dropped.
pub fn netbios_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.trim_end_matches('$').chars() {
        let folded = fold_latin(c);
        if matches!(c, '\'' | '’') {
            // "Mia's iPhone": an apostrophe joins, it does not separate
        } else if !folded.is_empty() {
            out.extend(folded.chars().map(|c| c.to_ascii_uppercase()));
        } else if c.is_alphanumeric() {
            // a letter with no plain-ASCII form: dropped
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let name: String = out.trim_matches('-').chars().take(NETBIOS_MAX).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "COMPUTER".to_string()
    } else {
        name.to_string()
    }
}

/// NetBIOS's limit for a computer name, without the `$` of its account.
pub const NETBIOS_MAX: usize = 15;

/// `c` as plain ASCII letters or digits, for the Latin letters that names commonly carry; empty otherwise.
fn fold_latin(c: char) -> &'static str {
    const PLAIN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    if c.is_ascii_alphanumeric() {
        let i = PLAIN.find(c).unwrap_or(0);
        return &PLAIN[i..i + 1];
    }
    match c {
        'ä' | 'Ä' => "AE",
        'ö' | 'Ö' => "OE",
        'ü' | 'Ü' => "UE",
        'ß' => "SS",
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Å' | 'Ą' => "A",
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => "C",
        'è' | 'é' | 'ê' | 'ë' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ę' | 'Ě' => "E",
        'ì' | 'í' | 'î' | 'ï' | 'ı' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'İ' => "I",
        'ñ' | 'ń' | 'ň' | 'Ñ' | 'Ń' | 'Ň' => "N",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' => "O",
        'ù' | 'ú' | 'û' | 'ů' | 'Ù' | 'Ú' | 'Û' | 'Ů' => "U",
        'ý' | 'ÿ' | 'Ý' => "Y",
        'ś' | 'š' | 'ş' | 'Ś' | 'Š' | 'Ş' => "S",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "Z",
        'ł' | 'Ł' => "L",
        'đ' | 'Đ' => "D",
        'ğ' | 'Ğ' => "G",
        'ř' | 'Ř' => "R",
        'ť' | 'Ť' => "T",
        _ => "",
    }
}

/// A device name usable as a DNS host label (letters, digits, inner hyphens, at most 63), lower-cased; `None`
/// when it is not one, so `dNSHostName` is only published for names a resolver could hold.
pub fn host_label(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn want(sam: &str, cn: &str, created: u64) -> Wanted {
        Wanted {
            sam: sam.into(),
            cn: cn.into(),
            container: "CN=Users,DC=x".into(),
            computer: false,
            created: Some(created),
        }
    }

    fn all(b: &NameBook) -> BTreeMap<String, Assigned> {
        b.holders
            .iter()
            .map(|(id, h)| (id.to_string(), h.names.clone()))
            .collect()
    }

    fn sam(b: &NameBook, id: &str) -> String {
        b.get(id).map(|a| a.sam.clone()).unwrap_or_default()
    }

    #[test]
    fn the_earliest_created_holder_gets_the_bare_name_whatever_the_order_seen() {
        let objects = [("b", "jdoe", 300), ("c", "JDoe", 100), ("a", "jdoe", 200)];
        let mut one_go = NameBook::default();
        one_go.update(
            objects
                .iter()
                .map(|(id, s, t)| (id.to_string(), Some(want(s, "John Doe", *t)))),
        );
        let mut one_by_one = NameBook::default();
        for (id, s, t) in objects.iter().rev() {
            one_by_one.update([(id.to_string(), Some(want(s, "John Doe", *t)))]);
        }
        assert_eq!(all(&one_go), all(&one_by_one));
        assert_eq!(sam(&one_go, "c"), "JDoe");
        for id in ["a", "b"] {
            let s = sam(&one_go, id);
            assert!(
                s.starts_with("jdoe") && s.len() == 8 && s[4..].parse::<u32>().is_ok(),
                "{s}"
            );
        }
        assert_eq!(one_go.get("c").unwrap().cn, "John Doe");
        let a = one_go.get("a").unwrap();
        assert_eq!(a.cn, format!("John Doe ({})", a.sam));
    }

    #[test]
    fn arrivals_rename_nobody_and_only_the_first_holder_leaving_renames_one() {
        let mut b = NameBook::default();
        for (i, id) in ["p", "q", "r", "s"].iter().enumerate() {
            let changed = b.update([(id.to_string(), Some(want("jdoe", "John Doe", 10 + i as u64)))]);
            assert_eq!(changed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [*id]);
        }
        let before = all(&b);
        // A later holder leaves: nobody else moves.
        let changed = b.update([("r".to_string(), None)]);
        assert_eq!(
            changed,
            [Renamed {
                id: "r".into(),
                dn_changed: true
            }]
        );
        assert_eq!(before["q"], b.get("q").unwrap().clone());
        assert_eq!(before["s"], b.get("s").unwrap().clone());
        // The first leaves: the next in rank takes the bare names, the last keeps its own.
        let changed = b.update([("p".to_string(), None)]);
        let ids: Vec<&str> = changed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["p", "q"]);
        assert_eq!(
            b.get("q").unwrap(),
            &Assigned {
                sam: "jdoe".into(),
                cn: "John Doe".into(),
                container: "CN=Users,DC=x".into()
            }
        );
        assert_eq!(before["s"], b.get("s").unwrap().clone());
    }

    #[test]
    fn the_hard_case_agrees_with_a_replica_that_never_saw_the_first_holder() {
        let mut long_running = NameBook::default();
        long_running.update([("first".to_string(), Some(want("jdoe", "John Doe", 1)))]);
        long_running.update([("second".to_string(), Some(want("jdoe", "John Doe", 2)))]);
        assert_ne!(sam(&long_running, "second"), "jdoe");
        long_running.update([("first".to_string(), None)]);
        let mut started_later = NameBook::default();
        started_later.update([("second".to_string(), Some(want("jdoe", "John Doe", 2)))]);
        assert_eq!(all(&long_running), all(&started_later));
        assert_eq!(sam(&started_later, "second"), "jdoe");
    }

    #[test]
    fn a_clash_names_the_wish_that_was_not_granted_until_the_holder_leaves() {
        let mut b = NameBook::default();
        b.update([
            ("first".to_string(), Some(want("jdoe", "John Doe", 1))),
            ("second".to_string(), Some(want("jdoe", "John Doe", 2))),
        ]);
        assert_eq!(b.clash("first"), None);
        let c = b.clash("second").expect("the later object clashes");
        assert_eq!(c.wanted_sam.as_deref(), Some("jdoe"));
        assert_eq!(c.sam, sam(&b, "second"));
        assert_eq!(c.wanted_cn.as_deref(), Some("John Doe"));
        assert_ne!(c.cn, "John Doe");
        b.update([("first".to_string(), None)]);
        assert_eq!(b.clash("second"), None);
        assert_eq!(b.clash("first"), None);
    }

    #[test]
    fn names_are_legal_and_at_most_20_characters() {
        let mut b = NameBook::default();
        let long = "averyveryverylongname.withdots@x";
        b.update((0..15).map(|n| (n.to_string(), Some(want(long, "A", n)))));
        let sams: BTreeSet<String> = b.holders.values().map(|h| h.names.sam.to_lowercase()).collect();
        assert_eq!(sams.len(), 15, "{sams:?}");
        for s in &sams {
            assert!(s.chars().count() <= SAM_MAX, "{s}");
            assert!(!s.contains('@'));
        }
        let pc = |sam: &str| Wanted {
            sam: sam.into(),
            cn: "pc".into(),
            container: "c".into(),
            computer: true,
            created: None,
        };
        b.update([("pc".to_string(), Some(pc("DESKTOP-VERYLONGNAME01")))]);
        assert_eq!(sam(&b, "pc"), "DESKTOP-VERYLON$");
        b.update([("pc2".to_string(), Some(pc("DESKTOP-VERYLONGNAME01")))]);
        let s = sam(&b, "pc2");
        assert!(s.len() == 16 && s.starts_with("DESKTOP-VER") && s.ends_with('$'), "{s}");
    }

    #[test]
    fn computer_names_are_netbios_names() {
        for (display, want) in [
            ("iPhone von Mia", "IPHONE-VON-MIA"),
            ("Mia's iPhone", "MIAS-IPHONE"),
            ("DESKTOP-AB12CD", "DESKTOP-AB12CD"),
            ("Jürgens Laptop (neu)", "JUERGENS-LAPTOP"),
            ("srv:print/01*?", "SRV-PRINT-01"),
            ("  --  ", "COMPUTER"),
            ("東京", "COMPUTER"),
            ("Łukasz-PC", "LUKASZ-PC"),
        ] {
            let got = netbios_name(display);
            assert_eq!(got, want, "{display}");
            assert!(got.len() <= NETBIOS_MAX);
        }
        assert_eq!(host_label("DESKTOP-AB12CD").as_deref(), Some("desktop-ab12cd"));
        assert_eq!(host_label("iPhone von Mia"), None);
        assert_eq!(host_label("-x"), None);
    }

    #[test]
    fn thousands_wanting_one_computer_name_all_get_one() {
        let mut b = NameBook::default();
        let pc = |t: u64| Wanted {
            sam: "iPhone".into(),
            cn: "iPhone".into(),
            container: "CN=Computers".into(),
            computer: true,
            created: Some(t),
        };
        // More than the 9,000 four-digit numbers: later ones get five digits, still within NetBIOS's 15.
        b.update((0..9_200u64).map(|i| (format!("pc{i}"), Some(pc(i)))));
        let sams: BTreeSet<String> = b.holders.values().map(|h| h.names.sam.clone()).collect();
        assert_eq!(sams.len(), 9_200);
        assert!(sams.contains("IPHONE$"));
        assert!(
            sams.iter()
                .all(|s| s.len() <= NETBIOS_MAX + 1 && s.starts_with("IPHONE")),
            "{sams:?}"
        );
        // The first leaves: the next in rank takes the bare name, and its number goes to whoever passed it over
        // (in a space this crowded, a few), nobody else moves; the same as computed from scratch.
        let changed = b.update([("pc0".to_string(), None)]);
        assert_eq!(sam(&b, "pc1"), "IPHONE$");
        assert!((2..12).contains(&changed.len()), "{changed:?}");
        let mut fresh = NameBook::default();
        fresh.update((1..9_200u64).map(|i| (format!("pc{i}"), Some(pc(i)))));
        assert_eq!(all(&b), all(&fresh));
    }

    /// Whatever sequence of arrivals, departures, renames and wishes that hit someone's numbered name, the
    /// incrementally kept book equals one computed from scratch for the objects that are left.
    #[test]
    fn incremental_updates_equal_a_computation_from_scratch() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut book = NameBook::default();
            let mut wants: BTreeMap<String, Wanted> = BTreeMap::new();
            let pool = [
                "jdoe",
                "JDoe",
                "anna",
                "averyveryverylongnameA",
                "averyveryverylongnameB",
                "x",
            ];
            let cns = ["John Doe", "john doe", "Anna", "A"];
            let mut next_id = 0u32;
            for step in 0..120 {
                let mut batch: Vec<(String, Option<Wanted>)> = Vec::new();
                for _ in 0..rng.gen_range(1..5) {
                    let roll = rng.gen_range(0..10);
                    if roll < 4 || wants.is_empty() {
                        next_id += 1;
                        let w = Wanted {
                            sam: pool[rng.gen_range(0..pool.len())].into(),
                            cn: cns[rng.gen_range(0..cns.len())].into(),
                            container: if rng.gen_bool(0.8) {
                                "CN=Users".into()
                            } else {
                                "CN=Other".into()
                            },
                            computer: false,
                            created: if rng.gen_bool(0.9) {
                                Some(rng.gen_range(0..50))
                            } else {
                                None
                            },
                        };
                        batch.push((format!("id{next_id}"), Some(w)));
                    } else {
                        let ids: Vec<&String> = wants.keys().collect();
                        let id = ids[rng.gen_range(0..ids.len())].clone();
                        match roll {
                            4..=6 => batch.push((id, None)),
                            7 => {
                                // Someone renamed to exactly another's numbered name, or to another's
                                // `Name (sam)` CN.
                                let taken: Vec<Assigned> = book.holders.values().map(|h| h.names.clone()).collect();
                                let other = &taken[rng.gen_range(0..taken.len())];
                                let mut w = wants[&id].clone();
                                if rng.gen_bool(0.5) {
                                    w.sam = other.sam.clone();
                                } else {
                                    w.cn = other.cn.clone();
                                    w.container = other.container.clone();
                                }
                                batch.push((id, Some(w)));
                            }
                            8 => {
                                // Another creation date (a restore, or a date Graph fills in late), another
                                // container, or a user turned computer.
                                let mut w = wants[&id].clone();
                                match rng.gen_range(0..3) {
                                    0 => w.created = Some(rng.gen_range(0..50)),
                                    1 => w.container = "CN=Other".into(),
                                    _ => w.computer = !w.computer,
                                }
                                batch.push((id, Some(w)));
                            }
                            _ => {
                                let mut w = wants[&id].clone();
                                w.cn = cns[rng.gen_range(0..cns.len())].into();
                                batch.push((id, Some(w)));
                            }
                        }
                    }
                }
                for (id, w) in &batch {
                    match w {
                        Some(w) => wants.insert(id.clone(), w.clone()),
                        None => wants.remove(id),
                    };
                }
                let before = all(&book);
                let changed = book.update(batch);
                let mut fresh = NameBook::default();
                fresh.update(wants.iter().map(|(id, w)| (id.clone(), Some(w.clone()))));
                let now = all(&book);
                assert_eq!(now, all(&fresh), "seed {seed} step {step}");
                // The report names exactly the objects whose names moved.
                let moved: BTreeSet<&String> = before
                    .keys()
                    .chain(now.keys())
                    .filter(|id| before.get(*id) != now.get(*id))
                    .collect();
                let reported: BTreeSet<&String> = changed.iter().map(|r| &r.id).collect();
                assert_eq!(moved, reported, "seed {seed} step {step}");
                let unique: BTreeSet<String> = now.values().map(|a| a.sam.to_lowercase()).collect();
                assert_eq!(unique.len(), now.len());
            }
        }
    }
}
