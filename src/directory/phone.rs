//! Phone numbers: E.164 normalisation with a default country, and the digit keys the phone index uses.
//!
//! PBXs look callers up by whatever the trunk delivered (`+4930…`, `004930…`, `030…`, or just the last digits),
//! while Entra holds numbers in whatever format people typed. Both sides are reduced to the same key — the
//! E.164 digits without `+` — so any spelling finds the same person.

use phonenumber::country::Id as Country;
use std::str::FromStr;

/// Attributes that hold phone numbers; filters on these match regardless of formatting.
pub const PHONE_ATTRS: &[&str] = &[
    "telephoneNumber",
    "mobile",
    "otherTelephone",
    "otherMobile",
    "homePhone",
    "otherHomePhone",
    "ipPhone",
    "otherIpPhone",
    "facsimileTelephoneNumber",
    "otherFacsimileTelephoneNumber",
    "pager",
];

/// Whether `attr` (any case) is one of [`PHONE_ATTRS`].
pub fn is_phone_attr(attr: &str) -> bool {
    PHONE_ATTRS.iter().any(|a| a.eq_ignore_ascii_case(attr))
}

/// Error for a `default_country` that is not an ISO 3166 alpha-2 code phonenumber knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown country code {0:?}: expected an ISO 3166 alpha-2 code such as \"DE\" or \"US\"")]
pub struct UnknownCountry(pub String);

#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    country: Country,
    /// The default country's calling code as digits, e.g. "49", for national-prefix queries.
    calling_code: String,
    /// Parsing with libphonenumber's metadata costs tens of microseconds; the same raw numbers come back in
    /// every re-projection, so results are remembered (bounded by the number of distinct raw numbers seen).
    memo: std::sync::Arc<dashmap::DashMap<String, Option<Normal>>>,
}

/// A valid number: E.164, and the extension's digits if it has one.
#[derive(Debug, Clone)]
struct Normal {
    e164: Box<str>,
    extension: Option<Box<str>>,
}

/// Two normalisers are the same when they use the same default country (the memo is only a cache).
impl PartialEq for PhoneNormalizer {
    fn eq(&self, other: &Self) -> bool {
        self.country == other.country
    }
}

/// The most distinct raw numbers remembered before the memo starts over.
const MEMO_MAX: usize = 1_000_000;

/// `+` followed only by digits and visual separators: already international, so E.164 is the digits.
fn plain_international(raw: &str) -> Option<String> {
    let rest = raw.strip_prefix('+')?;
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '/'))
    {
        return None;
    }
    let d = digits(rest);
    // E.164 allows at most 15 digits; very short ones are service codes, left to the real parser.
    (8..=15).contains(&d.len()).then(|| format!("+{d}"))
}

impl PhoneNormalizer {
    pub fn new(country: &str) -> Result<Self, UnknownCountry> {
        let id = Country::from_str(&country.to_ascii_uppercase()).map_err(|_| UnknownCountry(country.to_string()))?;
        let calling_code = phonenumber::metadata::DATABASE
            .by_id(id.as_ref())
            .map(|m| m.country_code().to_string())
            .ok_or_else(|| UnknownCountry(country.to_string()))?;
        Ok(PhoneNormalizer {
            country: id,
            calling_code,
            memo: Default::default(),
        })
    }

    /// The number in E.164 (`+49301234567`), with an extension as ` ext. 89` (`+49301234567 ext. 89`), or
    /// `None` when it is not a valid number for its country (or the default country): such values are kept as
    /// typed rather than rewritten into a number that belongs to nobody (`ext. 1234` is not `+491234`).
    pub fn to_e164(&self, raw: &str) -> Option<String> {
        self.to_e164_in(raw, None)
    }

    /// Like [`PhoneNormalizer::to_e164`], with a number written nationally read as one of `region` (an ISO 3166
    /// alpha-2 code: a user's `usageLocation`) rather than of the default country, so that `(425) 555-0100`
    /// typed by someone in the Redmond office is +14255550100 and not a German number. A missing or unknown
    /// region means the default country, and so does a number that is no valid one of the region.
    pub fn to_e164_in(&self, raw: &str, region: Option<&str>) -> Option<String> {
        let region = region
            .and_then(|r| Country::from_str(&r.trim().to_ascii_uppercase()).ok())
            .unwrap_or(self.country);
        self.normal(raw, region).map(|n| match &n.extension {
            Some(ext) => format!("{} ext. {ext}", n.e164),
            None => n.e164.to_string(),
        })
    }

    fn normal(&self, raw: &str, region: Country) -> Option<Normal> {
        let raw = raw.trim();
        if let Some(e) = plain_international(raw) {
            return Some(Normal {
                e164: e.into(),
                extension: None,
            });
        }
        // The memo is keyed by the raw text, and by the region too when it is not the default one.
        let key = if region == self.country {
            std::borrow::Cow::Borrowed(raw)
        } else {
            std::borrow::Cow::Owned(format!("{}\u{1}{raw}", region.as_ref()))
        };
        if let Some(hit) = self.memo.get(key.as_ref()) {
            return hit.clone();
        }
        // What does not read as a number of the person's country may still read as one of the default country
        // (`0049 151 …` typed in the US office).
        let result = self.parse(raw, region).or_else(|| {
            (region != self.country)
                .then(|| self.parse(raw, self.country))
                .flatten()
        });
        if self.memo.len() >= MEMO_MAX {
            self.memo.clear();
        }
        self.memo.insert(key.into_owned(), result.clone());
        result
    }

    fn parse(&self, raw: &str, region: Country) -> Option<Normal> {
        if raw.is_empty() || raw.chars().filter(|c| c.is_ascii_digit()).count() < 3 {
            return None;
        }
        let parsed = phonenumber::parse(Some(region), raw).ok()?;
        if parsed.national().value() == 0 || !parsed.is_valid() {
            return None;
        }
        Some(Normal {
            e164: parsed.format().mode(phonenumber::Mode::E164).to_string().into(),
            extension: parsed
                .extension()
                .map(|e| digits(e))
                .filter(|e| !e.is_empty())
                .map(Into::into),
        })
    }

    /// The index key for a stored or queried number: the E.164 digits without `+` and without an extension
    /// (so `+49 30 1234567 x89` is found by a call from `+49301234567`), or the bare digits when the value is
    /// not a valid number.
    pub fn key(&self, raw: &str) -> String {
        match self.normal(raw, self.country) {
            Some(n) => n.e164.trim_start_matches('+').to_string(),
            None => digits(raw),
        }
    }

    /// Turn the leading part of a partially typed number (a prefix search such as `+4930*`, `004930*` or
    /// `030*`) into E.164 digits: international prefixes are dropped and a national trunk `0` becomes the
    /// default country's calling code.
    pub fn prefix_key(&self, raw: &str) -> String {
        let t = raw.trim_start();
        let d = digits(t);
        if t.starts_with('+') {
            d
        } else if let Some(rest) = d.strip_prefix("00") {
            rest.to_string()
        } else if let Some(rest) = d.strip_prefix('0') {
            format!("{}{}", self.calling_code, rest)
        } else {
            d
        }
    }
}

/// Only the ASCII digits of `s`.
pub fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// A digit string packed into a `u64` for the phone index: up to [`DigitKey::DIGITS`] digits as 4-bit nibbles
/// (digit + 1) from the top, zero nibbles after the last. Numeric order is then the digit strings'
/// lexicographic order (a shorter string sorts before its extensions), so a number prefix is one contiguous
/// range of keys, and a lookup compares integers instead of strings sharing long country and area prefixes.
/// Digits beyond the sixteenth are dropped: E.164 numbers have at most fifteen, and the index only answers
/// candidates that the caller checks against the stored value, so two longer strings sharing a key cost a
/// check, never a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DigitKey(u64);

impl DigitKey {
    pub(crate) const DIGITS: usize = 16;

    /// The key of the ASCII digits of `s` in order (other characters are skipped); `None` when it has none.
    pub(crate) fn of(s: &str) -> Option<DigitKey> {
        Self::pack(s.bytes().filter(u8::is_ascii_digit))
    }

    /// The key of the digits of `s` read backwards: the suffix index's key.
    pub(crate) fn reversed(s: &str) -> Option<DigitKey> {
        Self::pack(s.bytes().rev().filter(u8::is_ascii_digit))
    }

    fn pack(digits: impl Iterator<Item = u8>) -> Option<DigitKey> {
        let mut k = 0u64;
        let mut n = 0;
        for d in digits.take(Self::DIGITS) {
            k |= u64::from(d - b'0' + 1) << (60 - 4 * n);
            n += 1;
        }
        (n > 0).then_some(DigitKey(k))
    }

    /// How many digits the key holds.
    fn len(self) -> usize {
        Self::DIGITS - (self.0.trailing_zeros() as usize / 4)
    }

    /// Every key that starts with this one's digits, as an inclusive range.
    pub(crate) fn extensions(self) -> std::ops::RangeInclusive<DigitKey> {
        let free = 4 * (Self::DIGITS - self.len());
        let low_bits = match free {
            0 => 0,
            64.. => u64::MAX,
            n => (1u64 << n) - 1,
        };
        self..=DigitKey(self.0 | low_bits)
    }

    /// The ASCII digits again, on the stack, and how many there are.
    fn digit_bytes(self) -> ([u8; Self::DIGITS], usize) {
        let mut out = [0u8; Self::DIGITS];
        let len = self.len();
        for (i, d) in out.iter_mut().enumerate().take(len) {
            // Every nibble up to `len` is a digit + 1, never 0.
            *d = b'0' + (((self.0 >> (60 - 4 * i)) & 0xF) as u8).saturating_sub(1);
        }
        (out, len)
    }

    /// The digits again.
    pub(crate) fn digits(self) -> String {
        let (d, len) = self.digit_bytes();
        d[..len].iter().map(|&b| char::from(b)).collect()
    }

    /// Whether a number with this key may hold `needle` (ASCII digits) anywhere: a key of sixteen digits may
    /// have lost more, so it always may.
    pub(crate) fn may_contain(self, needle: &[u8]) -> bool {
        let (d, len) = self.digit_bytes();
        len == Self::DIGITS || needle.is_empty() || d[..len].windows(needle.len()).any(|w| w == needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_gives_the_same_key() {
        let n = PhoneNormalizer::new("DE").unwrap();
        for s in [
            "+49 30 1234567",
            "004930 1234567",
            "030 1234567",
            "+49 (0)30 123-4567",
            "030/1234567",
        ] {
            assert_eq!(n.key(s), "49301234567", "{s}");
        }
        assert_eq!(n.to_e164("030 1234567").as_deref(), Some("+49301234567"));
    }

    /// A number written nationally is read in the person's country (usageLocation); what is no number there is
    /// read in the default country; no region, an unknown one or a malformed one means the default.
    #[test]
    fn national_numbers_are_read_in_the_persons_country() {
        let n = PhoneNormalizer::new("DE").unwrap();
        assert_eq!(
            n.to_e164_in("(425) 555-0100", Some("US")).as_deref(),
            Some("+14255550100")
        );
        assert_eq!(
            n.to_e164_in("0664 1234567", Some("at")).as_deref(),
            Some("+436641234567")
        );
        assert_eq!(n.to_e164_in("030 1234567", Some("DE")).as_deref(), Some("+49301234567"));
        assert_eq!(
            n.to_e164_in("0049 151 12345678", Some("US")).as_deref(),
            Some("+4915112345678"),
            "not dialable from the US, but plainly German"
        );
        for region in [None, Some(""), Some("XX"), Some("Germany")] {
            assert_eq!(
                n.to_e164_in("030 1234567", region).as_deref(),
                Some("+49301234567"),
                "{region:?}"
            );
        }
        // The memo keeps the two readings apart.
        assert_ne!(
            n.to_e164_in("0664 1234567", None),
            n.to_e164_in("0664 1234567", Some("AT"))
        );
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        let n = PhoneNormalizer::new("de").unwrap();
        assert_eq!(n.key("+1 (425) 555-0100"), "14255550100");
        assert_eq!(n.key("0041 44 668 18 00"), "41446681800");
    }

    #[test]
    fn garbage_is_kept_as_digits() {
        let n = PhoneNormalizer::new("DE").unwrap();
        assert_eq!(n.to_e164("ask reception"), None);
        assert_eq!(n.key("ext. 12"), "12");
    }

    /// Values as people type them into Entra: only real numbers are rewritten, nothing is invented.
    #[test]
    fn only_valid_numbers_are_rewritten() {
        let n = PhoneNormalizer::new("DE").unwrap();
        for (raw, e164, key) in [
            ("n/a", None, ""),
            ("-", None, ""),
            ("ext. 1234", None, "1234"),
            ("1234", None, "1234"),
            ("110", None, "110"),
            ("030 1234567", Some("+49301234567"), "49301234567"),
            ("+49 (0)30 1234567", Some("+49301234567"), "49301234567"),
            ("0800 3301000", Some("+498003301000"), "498003301000"),
            ("+1 (425) 555-0100 x12", Some("+14255550100 ext. 12"), "14255550100"),
            ("+49 30 1234567 ext. 89", Some("+49301234567 ext. 89"), "49301234567"),
            ("0044 20 7946 0958", Some("+442079460958"), "442079460958"),
            ("+49 30 12", None, "493012"),
        ] {
            assert_eq!(n.to_e164(raw).as_deref(), e164, "{raw}");
            assert_eq!(n.key(raw), key, "{raw}");
            if let Some(written) = e164 {
                assert_eq!(n.to_e164(written).as_deref(), Some(written), "{written} is stable");
                assert_eq!(n.key(written), key, "{written} keeps its key");
            }
        }
    }

    #[test]
    fn prefix_queries_become_international() {
        let n = PhoneNormalizer::new("DE").unwrap();
        assert_eq!(n.prefix_key("030 12"), "493012");
        assert_eq!(n.prefix_key("+4930"), "4930");
        assert_eq!(n.prefix_key("004930"), "4930");
        assert!(PhoneNormalizer::new("XX").is_err());
    }

    #[test]
    fn digit_keys_keep_the_order_of_their_digits() {
        let words = [
            "",
            "0",
            "00",
            "01",
            "1",
            "10",
            "4930",
            "49301",
            "493012345678901",
            "9",
            "99999999999999999",
        ];
        let keys: Vec<Option<DigitKey>> = words.iter().map(|w| DigitKey::of(w)).collect();
        assert_eq!(keys[0], None);
        for (i, w) in words.iter().enumerate().skip(1) {
            let k = keys[i].unwrap();
            assert_eq!(k.digits(), w.chars().take(DigitKey::DIGITS).collect::<String>(), "{w}");
            for (j, v) in words.iter().enumerate().skip(1) {
                assert_eq!(k.cmp(&keys[j].unwrap()), w.cmp(v), "{w} against {v}");
                let starts = v.starts_with(w);
                assert_eq!(
                    k.extensions().contains(&keys[j].unwrap()),
                    starts,
                    "{v} starts with {w}"
                );
            }
        }
        assert_eq!(
            DigitKey::of("+49 (30) 12-34").map(DigitKey::digits).as_deref(),
            Some("49301234")
        );
        assert_eq!(
            DigitKey::reversed("+49 30 1234").map(DigitKey::digits).as_deref(),
            Some("43210394")
        );
        // Sixteen digits and more share the first sixteen's key, which then may contain anything.
        assert_eq!(DigitKey::of("12345678901234567"), DigitKey::of("12345678901234568"));
        let short = DigitKey::of("4930123456").unwrap();
        assert!(short.may_contain(b"0123") && short.may_contain(b"4930123456"));
        assert!(!short.may_contain(b"3210") && !short.may_contain(b"49301234567"));
        let long = DigitKey::of("12345678901234567890").unwrap();
        assert!(
            long.may_contain(b"7890"),
            "digits past the sixteenth are not known, so they may match"
        );
    }
}
