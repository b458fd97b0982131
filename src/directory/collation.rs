//! The order names sort in: the Unicode Collation Algorithm with CLDR's data (ICU4X's `icu_collator`), used by
//! LDAP server-side sort and by the phone-book listings.
//!
//! AD sorts like Windows does: `Schäfer` with `Schafer`, `Đorđević` among the D's, case ignored; it does not
//! compare code points. The root collation (`und`) gives that order for most European names; a language tag
//! (`sv`, `da`, `de-u-co-phonebk`, …) selects a tailoring, e.g. Swedish puts `Å`, `Ä`, `Ö` after `Z`. As in
//! AD, the order does not depend on the machine's locale, so replicas sort alike.
//!
//! Sorting compares *sort keys*: byte strings whose plain byte order is the collation order. The projection
//! computes them once per changed entry for the names clients sort on ([`SORTED`]), so a sorted search compares
//! bytes instead of running the collation on every comparison.

use icu_collator::options::{CollatorOptions, Strength};
use icu_collator::{Collator, CollatorBorrowed, CollatorPreferences};
use std::sync::Arc;

/// The attributes whose sort keys each entry carries, in this order ([`crate::directory::Entry::sort_key`]).
/// Other attributes are keyed when a search sorts on them.
pub(crate) const SORTED: [&str; 4] = ["cn", "displayName", "sn", "givenName"];

#[derive(Debug, thiserror::Error)]
pub enum CollationError {
    #[error("{tag:?} is not a language tag (BCP 47, e.g. \"und\", \"de\", \"sv\" or \"de-u-co-phonebk\"): {message}")]
    BadTag { tag: String, message: String },
    #[error("no collation data for {tag:?}: {message}")]
    NoData { tag: String, message: String },
}

/// A collation: a language tag and its collator. Equal when the tags are equal.
pub struct Collation {
    tag: String,
    case_sensitive: bool,
    collator: CollatorBorrowed<'static>,
}

impl Collation {
    /// The case-insensitive collation of `tag`; languages without a tailoring sort by the root order.
    pub fn new(tag: &str) -> Result<Collation, CollationError> {
        Collation::with_case(tag, false)
    }

    /// `case_sensitive`: upper and lower case differ at the last level (LDAP's `caseExactOrderingMatch`);
    /// otherwise they are equal (AD's default, `caseIgnoreOrderingMatch`). Accents always count, but only
    /// after the letters: `Schafer` < `Schäfer` < `Schulz`.
    pub fn with_case(tag: &str, case_sensitive: bool) -> Result<Collation, CollationError> {
        // POSIX-style `de_DE` is what admins often know; BCP 47 spells it `de-DE`.
        let locale: icu_locale_core::Locale =
            tag.trim()
                .replace('_', "-")
                .parse()
                .map_err(|e| CollationError::BadTag {
                    tag: tag.to_string(),
                    message: format!("{e}"),
                })?;
        let mut options = CollatorOptions::default();
        options.strength = Some(if case_sensitive {
            Strength::Tertiary
        } else {
            Strength::Secondary
        });
        let collator =
            Collator::try_new(CollatorPreferences::from(&locale), options).map_err(|e| CollationError::NoData {
                tag: tag.to_string(),
                message: e.to_string(),
            })?;
        Ok(Collation {
            tag: locale.to_string(),
            case_sensitive,
            collator,
        })
    }

    /// The root order (CLDR's, close to what AD gives every locale).
    pub fn root() -> Collation {
        Collation::new("und").unwrap_or_else(|e| unreachable!("the root collation is compiled in: {e}"))
    }

    /// The language tag, normalised (`de-DE` for `de_de`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }

    /// The sort key of `s`: comparing keys as bytes orders strings by this collation.
    pub fn key(&self, s: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(s.len() * 2 + 4);
        self.key_into(s, &mut k);
        k
    }

    /// [`Collation::key`], appended to `out`.
    pub fn key_into(&self, s: &str, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = self.collator.write_sort_key_to(s, out);
    }
}

impl PartialEq for Collation {
    fn eq(&self, other: &Collation) -> bool {
        self.tag == other.tag && self.case_sensitive == other.case_sensitive
    }
}

impl Eq for Collation {}

impl std::fmt::Debug for Collation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collation")
            .field("tag", &self.tag)
            .field("case_sensitive", &self.case_sensitive)
            .finish()
    }
}

impl Default for Collation {
    fn default() -> Collation {
        Collation::root()
    }
}

/// AD's locale-specific ordering rules (`1.2.840.113556.1.4.1461` and on, one per Windows LCID, as
/// Microsoft's `LDAP_SERVER_SORT_OID` documentation lists them) for the languages a tenant's names come in,
/// as language tags. A client that sends one gets that language's order.
const AD_ORDERING_RULES: &[(&str, &str)] = &[
    ("1.2.840.113556.1.4.1486", "bg"),
    ("1.2.840.113556.1.4.1488", "ca"),
    ("1.2.840.113556.1.4.1494", "hr"),
    ("1.2.840.113556.1.4.1495", "cs"),
    ("1.2.840.113556.1.4.1496", "da"),
    ("1.2.840.113556.1.4.1497", "nl"),
    ("1.2.840.113556.1.4.1498", "nl-BE"),
    ("1.2.840.113556.1.4.1499", "en-US"),
    ("1.2.840.113556.1.4.1500", "en-GB"),
    ("1.2.840.113556.1.4.1512", "et"),
    ("1.2.840.113556.1.4.1515", "fi"),
    ("1.2.840.113556.1.4.1516", "fr"),
    ("1.2.840.113556.1.4.1523", "de"),
    ("1.2.840.113556.1.4.1524", "de-CH"),
    ("1.2.840.113556.1.4.1525", "de-AT"),
    ("1.2.840.113556.1.4.1528", "el"),
    ("1.2.840.113556.1.4.1532", "hu"),
    ("1.2.840.113556.1.4.1533", "is"),
    ("1.2.840.113556.1.4.1536", "it"),
    ("1.2.840.113556.1.4.1548", "lv"),
    ("1.2.840.113556.1.4.1549", "lt"),
    ("1.2.840.113556.1.4.1558", "nb"),
    ("1.2.840.113556.1.4.1559", "nn"),
    ("1.2.840.113556.1.4.1561", "pl"),
    ("1.2.840.113556.1.4.1562", "pt-BR"),
    ("1.2.840.113556.1.4.1563", "pt-PT"),
    ("1.2.840.113556.1.4.1565", "ro"),
    ("1.2.840.113556.1.4.1566", "ru"),
    ("1.2.840.113556.1.4.1569", "sr-Latn"),
    ("1.2.840.113556.1.4.1571", "sk"),
    ("1.2.840.113556.1.4.1572", "sl"),
    ("1.2.840.113556.1.4.1573", "es-u-co-trad"),
    ("1.2.840.113556.1.4.1575", "es"),
    ("1.2.840.113556.1.4.1594", "sv"),
    ("1.2.840.113556.1.4.1600", "tr"),
    ("1.2.840.113556.1.4.1601", "uk"),
    ("1.2.840.113556.1.4.1616", "de-u-co-phonebk"),
];

/// How a sort key's values compare, from the sort control's optional ordering rule.
#[derive(Debug, Clone)]
pub(crate) enum Ordering {
    /// By a collation (entries carry the keys of the directory's own).
    Collated(Arc<Collation>),
    /// As numbers (`integerOrderingMatch`, `numericStringOrderingMatch`); values that are not numbers last.
    Numeric,
    /// As bytes (`octetStringOrderingMatch`, and `generalizedTimeOrderingMatch`, whose AD form sorts as text).
    Octets,
}

impl Ordering {
    /// The ordering an RFC 2891 ordering rule (an OID or a name) asks for; `None` for a rule this server does
    /// not know (the client gets `inappropriateMatching`). Without a rule, `default` (the directory's).
    pub(crate) fn of_rule(rule: Option<&str>, default: &Arc<Collation>) -> Option<Ordering> {
        let Some(rule) = rule.map(str::trim) else {
            return Some(Ordering::Collated(default.clone()));
        };
        let is = |oid: &str, name: &str| rule == oid || rule.eq_ignore_ascii_case(name);
        if is("2.5.13.3", "caseIgnoreOrderingMatch") {
            return Some(Ordering::Collated(default.clone()));
        }
        if is("2.5.13.5", "caseExactOrderingMatch") {
            return cached(default.tag(), true).map(Ordering::Collated);
        }
        if is("2.5.13.9", "numericStringOrderingMatch") || is("2.5.13.15", "integerOrderingMatch") {
            return Some(Ordering::Numeric);
        }
        if is("2.5.13.18", "octetStringOrderingMatch") || is("2.5.13.28", "generalizedTimeOrderingMatch") {
            return Some(Ordering::Octets);
        }
        let Some(&(_, tag)) = AD_ORDERING_RULES.iter().find(|(oid, _)| *oid == rule) else {
            // AD's other per-language rules (1.2.840.113556.1.4.1461 to .1620): the directory's order is closer
            // to what the client wants than an error.
            let ad_locale = rule
                .strip_prefix("1.2.840.113556.1.4.")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| (1461..=1620).contains(&n));
            return ad_locale.then(|| Ordering::Collated(default.clone()));
        };
        if tag == default.tag() && !default.case_sensitive() {
            return Some(Ordering::Collated(default.clone()));
        }
        cached(tag, false).map(Ordering::Collated)
    }
}

/// Collators other than the directory's, made once per process (a few hundred KiB of tables each).
fn cached(tag: &str, case_sensitive: bool) -> Option<Arc<Collation>> {
    type Cache = std::sync::Mutex<Vec<Arc<Collation>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache
        .iter()
        .find(|c| c.tag() == tag && c.case_sensitive() == case_sensitive)
    {
        return Some(c.clone());
    }
    let c = Arc::new(Collation::with_case(tag, case_sensitive).ok()?);
    cache.push(c.clone());
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(c: &Collation, names: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        v.sort_by_cached_key(|s| c.key(s));
        v
    }

    /// The order AD gives these surnames (accented letters with their base letter, case ignored), which a
    /// code-point sort gets wrong: it puts `Schulz` before `Schäfer` and `Öztürk` after `Zimmermann`.
    #[test]
    fn the_root_order_sorts_accents_with_their_letter() {
        let ad = [
            "Abel",
            "Ábel",
            "Çelik",
            "Cem",
            "Đorđević",
            "Dorn",
            "Håkansson",
            "Horváth",
            "Łukasz",
            "Lutz",
            "Müller",
            "Myers",
            "Oberg",
            "Ørsted",
            "Öztürk",
            "Schäfer",
            "Schulz",
            "Šimić",
            "Simon",
            "Zimmermann",
        ];
        let mut shuffled = ad.to_vec();
        shuffled.reverse();
        assert_eq!(sorted(&Collation::root(), &shuffled), ad);
    }

    #[test]
    fn case_is_ignored_unless_asked_for() {
        let c = Collation::root();
        assert_eq!(c.key("schäfer"), c.key("SCHÄFER"));
        assert!(c.key("Schafer") < c.key("Schäfer"), "accents break ties");
        let exact = Collation::with_case("und", true).expect("root");
        assert_ne!(exact.key("schäfer"), exact.key("Schäfer"));
    }

    #[test]
    fn a_tailoring_changes_the_order() {
        let sv = Collation::new("sv").expect("Swedish data is compiled in");
        assert_eq!(
            sorted(&sv, &["Öberg", "Zander", "Åkesson", "Adler"]),
            ["Adler", "Zander", "Åkesson", "Öberg"]
        );
        let root = Collation::root();
        assert_eq!(
            sorted(&root, &["Öberg", "Zander", "Åkesson", "Adler"]),
            ["Adler", "Åkesson", "Öberg", "Zander"]
        );
    }

    #[test]
    fn bad_tags_are_named() {
        assert_eq!(Collation::new("de_DE").expect("POSIX spelling").tag(), "de-DE");
        let e = Collation::new("de_DE!").expect_err("not a tag");
        assert!(e.to_string().contains("\"de_DE!\""), "{e}");
    }

    #[test]
    fn ordering_rules() {
        let root = Arc::new(Collation::root());
        assert!(matches!(Ordering::of_rule(None, &root), Some(Ordering::Collated(c)) if Arc::ptr_eq(&c, &root)));
        assert!(matches!(
            Ordering::of_rule(Some("2.5.13.15"), &root),
            Some(Ordering::Numeric)
        ));
        assert!(matches!(
            Ordering::of_rule(Some("caseExactOrderingMatch"), &root),
            Some(Ordering::Collated(c)) if c.case_sensitive()
        ));
        match Ordering::of_rule(Some("1.2.840.113556.1.4.1594"), &root) {
            Some(Ordering::Collated(c)) => assert_eq!(c.tag(), "sv"),
            other => panic!("Swedish: {other:?}"),
        }
        assert!(
            matches!(
                Ordering::of_rule(Some("1.2.840.113556.1.4.1530"), &root),
                Some(Ordering::Collated(c)) if Arc::ptr_eq(&c, &root)
            ),
            "another of AD's languages: the directory's order"
        );
        assert!(Ordering::of_rule(Some("1.2.3.4"), &root).is_none());
        assert!(Ordering::of_rule(Some("1.2.840.113556.1.4.1700"), &root).is_none());
    }
}
