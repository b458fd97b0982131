//! Stable, unique names: `sAMAccountName` and the RDN (`CN=`) of every published object.
//!
//! PBXs store sAMAccountNames and DNs in their own user tables, so a name once given must not move to another
//! object or change behind the admin's back. Assignments are persisted in the state file; collisions get a
//! deterministic suffix, and a name is only recomputed when what it is derived from changes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Characters AD does not allow in a sAMAccountName.
const SAM_ILLEGAL: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
];

/// AD's limit for user and group sAMAccountNames.
pub const SAM_MAX: usize = 20;

/// One object's assigned names, with what they were derived from (so a rename can be detected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// The wanted sAMAccountName before collision handling.
    pub sam_base: String,
    pub sam: String,
    /// The wanted CN before collision handling (normally the displayName) and the container DN.
    pub cn_base: String,
    pub cn: String,
    pub container: String,
}

/// All assignments; the uniqueness maps are rebuilt from `by_id` on load.
#[derive(Debug, Clone, Default)]
pub struct NameBook {
    by_id: BTreeMap<String, Assigned>,
    sam_owner: HashMap<String, String>,
    dn_owner: HashMap<String, String>,
}

/// What an object would like to be called.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub sam: &'a str,
    pub cn: &'a str,
    pub container: &'a str,
    /// Computer accounts end in `$` and have a 15-character NetBIOS limit before it.
    pub computer: bool,
}

impl NameBook {
    pub fn from_persisted(by_id: BTreeMap<String, Assigned>) -> NameBook {
        let mut book = NameBook::default();
        for (id, a) in by_id {
            let sam_key = a.sam.to_lowercase();
            let dn_key = dn_key(&a.cn, &a.container);
            // A corrupt or hand-edited state file must not make two objects share a name: first come, first kept.
            if book.sam_owner.contains_key(&sam_key) || book.dn_owner.contains_key(&dn_key) {
                continue;
            }
            book.sam_owner.insert(sam_key, id.clone());
            book.dn_owner.insert(dn_key, id.clone());
            book.by_id.insert(id, a);
        }
        book
    }

    pub fn persisted(&self) -> &BTreeMap<String, Assigned> {
        &self.by_id
    }

    pub fn get(&self, id: &str) -> Option<&Assigned> {
        self.by_id.get(id)
    }

    /// Drop an object's names (it left the directory); they become free for others.
    pub fn release(&mut self, id: &str) {
        if let Some(a) = self.by_id.remove(id) {
            self.sam_owner.remove(&a.sam.to_lowercase());
            self.dn_owner.remove(&dn_key(&a.cn, &a.container));
        }
    }

    /// Give `id` names for what it wants, keeping its current names where the wish did not change. Returns the
    /// assignment and whether the DN changed.
    pub fn assign(&mut self, id: &str, want: &Wanted<'_>) -> (&Assigned, bool) {
        let sam_base = sanitize_sam(want.sam, want.computer);
        let cn_base = if want.cn.trim().is_empty() {
            id.to_string()
        } else {
            want.cn.trim().to_string()
        };
        let old = self.by_id.get(id).cloned();
        let keep_sam = old.as_ref().is_some_and(|o| o.sam_base == sam_base);
        let keep_cn = old
            .as_ref()
            .is_some_and(|o| o.cn_base == cn_base && o.container == want.container);
        if old.is_some() {
            if keep_sam && keep_cn {
                return (&self.by_id[id], false);
            }
            self.release(id);
        }
        let sam = match (&old, keep_sam) {
            (Some(o), true) => o.sam.clone(),
            _ => self.free_sam(&sam_base, want.computer),
        };
        let cn = match (&old, keep_cn) {
            (Some(o), true) => o.cn.clone(),
            _ => self.free_cn(&cn_base, &sam, want.container, id),
        };
        let dn_changed = old.as_ref().is_none_or(|o| o.cn != cn || o.container != want.container);
        self.sam_owner.insert(sam.to_lowercase(), id.to_string());
        self.dn_owner.insert(dn_key(&cn, want.container), id.to_string());
        self.by_id.insert(
            id.to_string(),
            Assigned {
                sam_base,
                sam,
                cn_base,
                cn,
                container: want.container.to_string(),
            },
        );
        (&self.by_id[id], dn_changed)
    }

    fn free_sam(&self, base: &str, computer: bool) -> String {
        let (stem, tail, max) = if computer {
            (base.trim_end_matches('$'), "$", NETBIOS_MAX)
        } else {
            (base, "", SAM_MAX)
        };
        let candidate = |suffix: &str| -> String {
            let room = max.saturating_sub(suffix.chars().count());
            let s: String = stem.chars().take(room).collect();
            format!("{}{}{}", s.trim_end_matches([' ', '.', '-']), suffix, tail)
        };
        let first = candidate("");
        if !self.sam_owner.contains_key(&first.to_lowercase()) {
            return first;
        }
        (1u64..)
            .map(|n| candidate(&n.to_string()))
            .find(|c| !self.sam_owner.contains_key(&c.to_lowercase()))
            .unwrap_or(first)
    }

    fn free_cn(&self, base: &str, sam: &str, container: &str, id: &str) -> String {
        let first = base.to_string();
        if !self.dn_owner.contains_key(&dn_key(&first, container)) {
            return first;
        }
        let with_sam = format!("{base} ({})", sam.trim_end_matches('$'));
        if !self.dn_owner.contains_key(&dn_key(&with_sam, container)) {
            return with_sam;
        }
        format!("{base} ({id})")
    }
}

fn dn_key(cn: &str, container: &str) -> String {
    format!("{}\u{0}{}", cn.to_lowercase(), container.to_lowercase())
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

    fn want<'a>(sam: &'a str, cn: &'a str) -> Wanted<'a> {
        Wanted {
            sam,
            cn,
            container: "CN=Users,DC=x",
            computer: false,
        }
    }

    #[test]
    fn collisions_get_deterministic_suffixes() {
        let mut b = NameBook::default();
        assert_eq!(b.assign("1", &want("jdoe", "John Doe")).0.sam, "jdoe");
        assert_eq!(b.assign("2", &want("JDoe", "John Doe")).0.sam, "JDoe1");
        let a3 = b.assign("3", &want("jdoe", "John Doe")).0.clone();
        assert_eq!(a3.sam, "jdoe2");
        assert_eq!(b.get("2").unwrap().cn, "John Doe (JDoe1)");
        assert_eq!(a3.cn, "John Doe (jdoe2)");
    }

    #[test]
    fn names_are_legal_and_at_most_20_characters() {
        let mut b = NameBook::default();
        let a = b.assign("1", &want("averyveryverylongname.withdots@x", "A")).0.clone();
        assert!(a.sam.chars().count() <= 20, "{}", a.sam);
        assert!(!a.sam.contains('@'));
        for n in 2..15 {
            let a = b
                .assign(&n.to_string(), &want("averyveryverylongname.withdots@x", "A"))
                .0
                .clone();
            assert!(a.sam.chars().count() <= 20, "{}", a.sam);
        }
        let c = b.assign(
            "pc",
            &Wanted {
                sam: "DESKTOP-VERYLONGNAME01",
                cn: "pc",
                container: "c",
                computer: true,
            },
        );
        assert_eq!(c.0.sam, "DESKTOP-VERYLON$");
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
        let mut b = NameBook::default();
        let pc = |sam| Wanted {
            sam,
            cn: "iPhone",
            container: "CN=Computers,DC=x",
            computer: true,
        };
        assert_eq!(b.assign("1", &pc("iPhone von Mia")).0.sam, "IPHONE-VON-MIA$");
        assert_eq!(b.assign("2", &pc("iPhone von Mia")).0.sam, "IPHONE-VON-MIA1$");
        assert_eq!(b.assign("3", &pc("iPhone von Maximilian")).0.sam, "IPHONE-VON-MAXI$");
        assert_eq!(b.assign("4", &pc("iPhone von Maximiliane")).0.sam, "IPHONE-VON-MAX1$");
        assert_eq!(host_label("DESKTOP-AB12CD").as_deref(), Some("desktop-ab12cd"));
        assert_eq!(host_label("iPhone von Mia"), None);
        assert_eq!(host_label("-x"), None);
    }

    #[test]
    fn a_name_stays_while_its_source_is_unchanged() {
        let mut b = NameBook::default();
        b.assign("1", &want("jdoe", "John Doe"));
        b.assign("2", &want("jdoe", "John Doe"));
        // The first owner leaves; the second keeps its suffixed name rather than taking the free one.
        b.release("1");
        let (a, dn_changed) = b.assign("2", &want("jdoe", "John Doe"));
        assert_eq!(a.sam, "jdoe1");
        assert!(!dn_changed);
        // A rename changes the CN but not the sAMAccountName.
        let (a, dn_changed) = b.assign("2", &want("jdoe", "John Q. Doe"));
        assert_eq!(
            (a.sam.as_str(), a.cn.as_str(), dn_changed),
            ("jdoe1", "John Q. Doe", true)
        );
        // Persisted and reloaded, nothing moves.
        let reloaded = NameBook::from_persisted(b.persisted().clone());
        assert_eq!(reloaded.get("2"), b.get("2"));
    }
}
