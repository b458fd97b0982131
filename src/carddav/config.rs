//! What the operator configures for the CardDAV/phone-book service. The lead's TOML layer maps `[carddav]` onto
//! [`CardDavConfig`]; everything except the listen addresses can be swapped at runtime (SIGHUP) through
//! [`crate::carddav::serve_reloadable`].

use crate::carddav::auth::{Account, Cidr};
use crate::carddav::cache::Listing;
use crate::carddav::phonebook::{Kind, VENDORS};
use crate::carddav::CardDavError;
use std::net::SocketAddr;
use std::sync::Arc;

/// The vCard version a card is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VCardVersion {
    /// RFC 2426: what macOS/iOS Contacts and most phones accept.
    #[default]
    V3,
    /// RFC 6350, for clients that ask for it (DAVx5, Linphone).
    V4,
}

impl VCardVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            VCardVersion::V3 => "3.0",
            VCardVersion::V4 => "4.0",
        }
    }

    /// `"3.0"`/`"4.0"` (also `"3"`/`"4"`); anything else is not a version we write.
    pub fn parse(s: &str) -> Option<VCardVersion> {
        match s.trim() {
            "3.0" | "3" => Some(VCardVersion::V3),
            "4.0" | "4" => Some(VCardVersion::V4),
            _ => None,
        }
    }
}

/// How numbers appear in the vendor XML phone books (vCards always carry E.164 where the number parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumberFormat {
    /// `+49301234567`
    #[default]
    E164,
    /// Dialable from inside the default country: `0301234567`; foreign numbers keep their `+` form.
    National,
}

/// One address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookConfig {
    /// URL segment (`/dav/books/<name>/`, `/phonebook/<name>/yealink.xml`): letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub display_name: String,
    /// Members of this group (a DN or a Graph object id), transitively; `None` = all users and contacts.
    pub group: Option<String>,
}

/// The CardDAV directory gateway (draft-daboo-carddav-directory-gateway): a collection of every person that
/// clients search (`addressbook-query`) but never list or sync, advertised on the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub display_name: String,
    /// Accounts it is offered to; empty = every account (never anonymous clients).
    pub accounts: Vec<String>,
    /// Most cards one search returns; a search that matches more says so (507 for the collection).
    pub max_results: usize,
    /// The books these accounts still sync (a small team book); the others are searched through the directory.
    pub books: Vec<String>,
}

/// The URL segment of the directory collection (`/dav/books/directory/`).
pub const DIRECTORY_BOOK: &str = "directory";

impl DirectoryConfig {
    /// Whether `principal` gets the directory.
    pub fn offered_to(&self, principal: &crate::carddav::auth::Principal) -> bool {
        match principal {
            crate::carddav::auth::Principal::User(name) => {
                self.accounts.is_empty() || self.accounts.iter().any(|a| a == name)
            }
            crate::carddav::auth::Principal::Anonymous => false,
        }
    }

    pub fn book(&self) -> BookConfig {
        BookConfig {
            name: DIRECTORY_BOOK.into(),
            display_name: self.display_name.clone(),
            group: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CardDavConfig {
    /// Plain HTTP listener.
    pub listen: Option<SocketAddr>,
    /// HTTPS listener; needs `tls`.
    pub tls_listen: Option<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Books besides the "all users" book, which always exists (named `all` unless a group-less book is listed).
    pub books: Vec<BookConfig>,
    /// Version served when a client does not ask for one.
    pub vcard_version: VCardVersion,
    /// Service accounts (shared with LDAP): Basic auth against their PHC argon2 hashes.
    pub accounts: Vec<Account>,
    /// Clients from these networks may read without credentials.
    pub anonymous_networks: Vec<Cidr>,
    /// Reverse proxies whose `X-Forwarded-For`, `-Proto` and `-Host` are believed (see `forwarded.rs`).
    pub trusted_proxies: Vec<Cidr>,
    pub phonebook_number_format: NumberFormat,
    /// The kinds of number the XML phone books list, in this order (the first is what a phone dials when a
    /// contact is picked); a kind left out is not listed.
    pub phonebook_numbers: Vec<Kind>,
    /// Most people in one vendor XML document, per vendor (the phone's limit); a larger book is served in pages
    /// (`?page=2`, …). Vendors not listed have no cap. Cisco's 32 rows per page are fixed by the phone.
    pub phonebook_max_entries: Vec<(String, usize)>,
    /// The search-only directory offered to iOS/macOS (`[carddav.directory]`), if configured.
    pub directory: Option<DirectoryConfig>,
    /// Who books (and so phone books and `/lookup`) list: disabled accounts, `directory.exclude_groups`.
    pub listing: Listing,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Open connections at most, HTTP and HTTPS together (fixed at start).
    pub max_connections: usize,
    /// Open connections at most from one address (IPv6: one /64); 0 = no limit.
    pub max_connections_per_source: usize,
    /// `/lookup/number` falls back to the last this many digits when no number matches whole (and only one
    /// person has them); 0 = no fallback.
    pub lookup_last_digits: usize,
}

/// Work numbers first, as phones dial the first number of a contact.
pub const DEFAULT_NUMBER_ORDER: &[Kind] = &[Kind::Work, Kind::Mobile, Kind::Home];

/// Snom phones copy a `tbook` document into their local directory, which holds a fixed number of contacts per
/// model and drops the rest. 2,000 is a conservative guess for current models, not a figure Snom publishes for
/// all of them: admins set their model's own (see the README).
pub const DEFAULT_MAX_ENTRIES: &[(&str, usize)] = &[("snom", 2000)];

/// See [`CardDavConfig::lookup_last_digits`]: eight digits tell apart the numbers of one area code, and a
/// number delivered without its area code (seven or eight digits in most of Europe) still has them.
pub const DEFAULT_LOOKUP_LAST_DIGITS: usize = 8;

impl Default for CardDavConfig {
    fn default() -> Self {
        CardDavConfig {
            listen: None,
            tls_listen: None,
            tls: None,
            books: Vec::new(),
            vcard_version: VCardVersion::V3,
            accounts: Vec::new(),
            anonymous_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            phonebook_number_format: NumberFormat::E164,
            phonebook_numbers: DEFAULT_NUMBER_ORDER.to_vec(),
            phonebook_max_entries: DEFAULT_MAX_ENTRIES.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            listing: Listing::default(),
            directory: None,
            max_body_bytes: 1 << 20,
            max_connections: 4096,
            max_connections_per_source: 256,
            lookup_last_digits: DEFAULT_LOOKUP_LAST_DIGITS,
        }
    }
}

impl CardDavConfig {
    /// The books as served: the "all users" book first (added when none of the configured books is group-less).
    pub fn effective_books(&self) -> Vec<BookConfig> {
        let mut out = Vec::with_capacity(self.books.len() + 1);
        if !self.books.iter().any(|b| b.group.is_none()) {
            out.push(BookConfig {
                name: "all".into(),
                display_name: "All users".into(),
                group: None,
            });
        }
        out.extend(self.books.iter().cloned());
        out
    }

    /// The most people one `vendor` document holds; 0 = no cap.
    pub fn max_entries(&self, vendor: &str) -> usize {
        self.phonebook_max_entries
            .iter()
            .find(|(v, _)| v == vendor)
            .map_or(0, |(_, n)| *n)
    }

    /// Reject what would make URLs ambiguous or unusable.
    pub fn validate(&self) -> Result<(), CardDavError> {
        if self.listen.is_none() && self.tls_listen.is_none() {
            return Err(CardDavError::NoListener);
        }
        if let (Some(addr), None) = (self.tls_listen, &self.tls) {
            return Err(CardDavError::TlsWithoutCert(addr));
        }
        if self.lookup_last_digits != 0 && !(6..=15).contains(&self.lookup_last_digits) {
            return Err(CardDavError::Config(format!(
                "carddav.lookup_last_digits = {}: use 0 (no fallback) or 6 to 15 digits",
                self.lookup_last_digits
            )));
        }
        if self.phonebook_numbers.is_empty() {
            return Err(CardDavError::Config(
                "carddav.phonebook_numbers is empty: list at least one of \"work\", \"mobile\", \"home\"".into(),
            ));
        }
        for (i, k) in self.phonebook_numbers.iter().enumerate() {
            if self.phonebook_numbers[..i].contains(k) {
                return Err(CardDavError::Config(format!(
                    "carddav.phonebook_numbers lists {:?} twice",
                    k.as_str()
                )));
            }
        }
        for (vendor, _) in &self.phonebook_max_entries {
            if vendor == "cisco" {
                return Err(CardDavError::Config(
                    "carddav.phonebook_max_entries: cisco pages hold 32 entries (the phone's limit) and cannot be \
                     changed; leave cisco out"
                        .into(),
                ));
            }
            if !VENDORS.contains(&vendor.as_str()) {
                return Err(CardDavError::Config(format!(
                    "carddav.phonebook_max_entries: unknown phone book format {vendor:?}; known: {}",
                    VENDORS.join(", ")
                )));
            }
        }
        if let Some(d) = &self.directory {
            if self.books.iter().any(|b| b.name == DIRECTORY_BOOK) {
                return Err(CardDavError::Config(format!(
                    "carddav.books: the name {DIRECTORY_BOOK:?} is the [carddav.directory] collection's; rename the book"
                )));
            }
            if d.max_results == 0 {
                return Err(CardDavError::Config(
                    "carddav.directory.max_results is 0: a search must return something (50 is usual)".into(),
                ));
            }
            let names: Vec<String> = self.effective_books().into_iter().map(|b| b.name).collect();
            if let Some(b) = d.books.iter().find(|b| !names.contains(b)) {
                return Err(CardDavError::Config(format!(
                    "carddav.directory.books: no book named {b:?} (books: {})",
                    names.join(", ")
                )));
            }
            let known: Vec<&str> = self.accounts.iter().map(|a| a.name.as_str()).collect();
            if let Some(a) = d.accounts.iter().find(|a| !known.contains(&a.as_str())) {
                return Err(CardDavError::Config(format!(
                    "carddav.directory.accounts: no [[accounts]] entry named {a:?}"
                )));
            }
        }
        let books = self.effective_books();
        for (i, b) in books.iter().enumerate() {
            let ok = !b.name.is_empty()
                && b.name != "."
                && b.name != ".."
                && b.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(CardDavError::Config(format!(
                    "book name {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                    b.name
                )));
            }
            if books[..i].iter().any(|o| o.name == b.name) {
                return Err(CardDavError::Config(format!("book name {:?} is used twice", b.name)));
            }
        }
        Ok(())
    }
}

impl CardDavConfig {
    /// Build from the file config: `[carddav]`, its TLS files (or the shared `[tls]`), and `[[accounts]]`.
    /// `Ok(None)` when there is no `[carddav]` section. Disabled accounts are hidden from books even when
    /// `[entra] include_disabled` publishes them over LDAP (phones should not offer people who left); members of
    /// `[directory] exclude_groups` are hidden too.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Option<CardDavConfig>, CardDavError> {
        let Some(c) = &cfg.carddav else { return Ok(None) };
        let paths = match (&c.tls_cert, &c.tls_key, &cfg.tls) {
            (Some(cert), Some(key), _) => Some((cert.clone(), key.clone())),
            (None, None, Some(t)) => Some((t.cert.clone(), t.key.clone())),
            (None, None, None) => None,
            _ => return Err(CardDavError::Config("[carddav] needs both tls_cert and tls_key".into())),
        };
        let tls = match (paths, c.tls_listen) {
            (Some((cert, key)), Some(_)) => Some(load_tls(&cert, &key)?),
            _ => None,
        };
        let accounts = cfg
            .service_accounts()
            .map_err(|e| CardDavError::Config(e.to_string()))?;
        let anonymous_networks = c
            .anonymous_networks
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CardDavError::Config(format!("carddav.anonymous_networks: {e}")))?;
        let trusted_proxies = c
            .trusted_proxies
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CardDavError::Config(format!("carddav.trusted_proxies: {e}")))?;
        let vcard_version = VCardVersion::parse(&c.vcard_version).ok_or_else(|| {
            CardDavError::Config(format!(
                "carddav.vcard_version {:?}: use \"3.0\" or \"4.0\"",
                c.vcard_version
            ))
        })?;
        let phonebook_number_format = match c.phonebook_number_format.to_ascii_lowercase().as_str() {
            "e164" | "e.164" => NumberFormat::E164,
            "national" => NumberFormat::National,
            other => {
                return Err(CardDavError::Config(format!(
                    "carddav.phonebook_number_format {other:?}: use \"e164\" or \"national\""
                )))
            }
        };
        let phonebook_numbers = c
            .phonebook_numbers
            .iter()
            .map(|k| {
                Kind::parse(k).ok_or_else(|| {
                    CardDavError::Config(format!(
                        "carddav.phonebook_numbers: unknown kind {k:?}; use \"work\", \"mobile\" and \"home\""
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The configured caps replace the defaults vendor by vendor; 0 lifts a default cap.
        let mut phonebook_max_entries = CardDavConfig::default().phonebook_max_entries;
        for (vendor, n) in &c.phonebook_max_entries {
            phonebook_max_entries.retain(|(v, _)| v != vendor);
            phonebook_max_entries.push((vendor.clone(), *n));
        }
        let listing = Listing {
            include_disabled: false,
            exclude_groups: cfg.directory.exclude_groups.clone(),
        };
        let books = c
            .books
            .iter()
            .map(|b| BookConfig {
                name: b.name.clone(),
                display_name: b.display_name.clone().unwrap_or_else(|| b.name.clone()),
                group: b.group.clone(),
            })
            .collect();
        let out = CardDavConfig {
            listen: c.listen,
            tls_listen: c.tls_listen,
            tls,
            books,
            vcard_version,
            accounts,
            anonymous_networks,
            trusted_proxies,
            phonebook_number_format,
            max_connections: c.max_connections.max(1),
            max_connections_per_source: c.max_connections_per_source,
            lookup_last_digits: c.lookup_last_digits,
            phonebook_numbers,
            phonebook_max_entries,
            listing,
            directory: c.directory.as_ref().map(|d| DirectoryConfig {
                display_name: d.display_name.clone(),
                accounts: d.accounts.clone(),
                max_results: d.max_results,
                books: d.books.clone(),
            }),
            ..CardDavConfig::default()
        };
        out.validate()?;
        Ok(Some(out))
    }
}

/// A rustls server config (ring provider, HTTP/1.1 ALPN) from PEM certificate chain and key files.
pub fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, CardDavError> {
    let mut sc = crate::tls::load(cert, key).map_err(|e| CardDavError::Config(format!("TLS: {e}")))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_book_is_added_and_names_are_checked() {
        let mut cfg = CardDavConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        cfg.books.push(BookConfig {
            name: "sales".into(),
            display_name: "Sales".into(),
            group: Some("g".into()),
        });
        let names: Vec<String> = cfg.effective_books().into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["all", "sales"]);
        assert!(cfg.validate().is_ok());
        cfg.books.push(BookConfig {
            name: "a/b".into(),
            display_name: "x".into(),
            group: None,
        });
        assert!(matches!(cfg.validate(), Err(CardDavError::Config(_))));
        cfg.books.pop();
        cfg.books.push(BookConfig {
            name: "sales".into(),
            display_name: "x".into(),
            group: None,
        });
        assert!(cfg.validate().is_err());
        let none = CardDavConfig::default();
        assert!(matches!(none.validate(), Err(CardDavError::NoListener)));
    }

    #[test]
    fn from_the_config_file() {
        let hash = crate::accounts::hash_password("pw").unwrap();
        let text = format!(
            r#"
[entra]
tenant_id = "t"
client_id = "c"
[directory]
base_dn = "DC=contoso,DC=example"
[carddav]
listen = "127.0.0.1:8080"
vcard_version = "4.0"
phonebook_number_format = "national"
anonymous_networks = ["10.20.0.0/16"]
[[carddav.books]]
name = "sales"
group = "Sales Team"
[[accounts]]
name = "pbx"
password_hash = "{hash}"
networks = ["192.0.2.0/24"]
"#
        );
        let cfg = crate::config::Config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let c = CardDavConfig::from_config(&cfg).unwrap().unwrap();
        assert_eq!(c.vcard_version, VCardVersion::V4);
        assert_eq!(c.phonebook_number_format, NumberFormat::National);
        assert!(c.anonymous_networks[0].contains("10.20.1.1".parse().unwrap()));
        assert_eq!(c.accounts[0].name, "pbx");
        assert!(c.accounts[0].networks[0].contains("192.0.2.9".parse().unwrap()));
        let names: Vec<(String, String)> = c
            .effective_books()
            .into_iter()
            .map(|b| (b.name, b.display_name))
            .collect();
        assert_eq!(
            names,
            [("all".into(), "All users".into()), ("sales".into(), "sales".into())]
        );
        let bad = text.replace("\"national\"", "\"weird\"");
        let cfg = crate::config::Config::parse(std::path::Path::new("test.toml"), &bad).unwrap();
        assert!(matches!(CardDavConfig::from_config(&cfg), Err(CardDavError::Config(_))));
    }
}
