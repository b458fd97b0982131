//! The TOML configuration file: typed sections, defaults, and validation that names the bad key and line.
//!
//! Parsing happens once (start-up, SIGHUP) into these structs; the rest of the program never sees TOML. Unknown
//! keys are errors so a typo (`sync_intervall`) is reported instead of silently ignored.

use crate::directory::collation::Collation;
use crate::directory::mapping::Mapping;
use crate::directory::phone::PhoneNormalizer;
use crate::directory::snapshot::Naming;
use crate::directory::upn_csv::UpnMap;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Csv(#[from] crate::directory::upn_csv::CsvError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub entra: Entra,
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub mapping: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub ldap: Option<LdapSection>,
    #[serde(default)]
    pub carddav: Option<CardDavSection>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub accounts: Vec<AccountSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entra {
    pub tenant_id: String,
    pub client_id: String,
    /// File holding the client secret (or set `ENTRADIR_CLIENT_SECRET`).
    pub client_secret_file: Option<PathBuf>,
    /// PEM certificate and key for certificate credentials (instead of a secret).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// When the client secret expires (Entra shows it next to the secret), e.g. `2027-05-31`: published as a
    /// metric and warned about 30 days ahead. Graph itself does not tell an app when its secret expires.
    #[serde(default, deserialize_with = "de_date")]
    pub client_secret_expires: Option<u64>,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    pub proxy: Option<String>,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub sync_interval: Duration,
    #[serde(default = "yes")]
    pub photos: bool,
    #[serde(default = "default_photo_size", deserialize_with = "de_photo_size")]
    pub photo_size: Option<String>,
    /// How often a known photo is checked again (photos are not tracked by delta).
    #[serde(default = "default_photo_recheck", deserialize_with = "de_duration")]
    pub photo_recheck: Duration,
    #[serde(default)]
    pub include_guests: bool,
    #[serde(default = "yes")]
    pub include_disabled: bool,
    #[serde(default)]
    pub scope_groups: Vec<String>,
    #[serde(default = "yes")]
    pub devices: bool,
    #[serde(default)]
    pub org_contacts: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    pub base_dn: String,
    pub state_dir: Option<PathBuf>,
    pub upn_matching_csv: Option<PathBuf>,
    /// A sync round removing more objects than this is held until confirmed.
    #[serde(default = "default_max_deletes")]
    pub max_deletes: usize,
    /// ... or removing more than this share (percent) of the directory.
    #[serde(default = "default_max_delete_percent")]
    pub max_delete_percent: u32,
    #[serde(default = "default_country")]
    pub default_country: String,
    /// The order of sorted LDAP results and phone books: a language tag (`und` = the Unicode root order).
    #[serde(default = "default_collation")]
    pub collation: String,
    #[serde(default = "default_users_container")]
    pub users_container: String,
    #[serde(default = "default_users_container")]
    pub groups_container: String,
    #[serde(default = "default_computers_container")]
    pub computers_container: String,
    #[serde(default = "default_contacts_container")]
    pub contacts_container: String,
    /// Members of these groups (transitively) are left out of address books, phone books and `/lookup`.
    #[serde(default)]
    pub exclude_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    #[serde(default = "default_ldap_listen")]
    pub listen: Option<SocketAddr>,
    pub ldaps_listen: Option<SocketAddr>,
    #[serde(default)]
    pub starttls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Load balancers (addresses or CIDRs) that send a PROXY protocol header first (HAProxy send-proxy-v2).
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    #[serde(default = "default_idle", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    #[serde(default = "default_write_timeout", deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    #[serde(default = "default_paged_search_ttl", deserialize_with = "de_duration")]
    pub paged_search_ttl: Duration,
    #[serde(default = "default_encoding_cache_mib")]
    pub encoding_cache_mib: u64,
    #[serde(default = "default_page")]
    pub max_page_size: usize,
    #[serde(default = "default_page")]
    pub size_limit: usize,
    #[serde(default = "default_time_limit", deserialize_with = "de_duration")]
    pub time_limit: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardDavSection {
    pub listen: Option<SocketAddr>,
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub books: Vec<BookSection>,
    #[serde(default = "default_vcard")]
    pub vcard_version: String,
    #[serde(default)]
    pub anonymous_networks: Vec<String>,
    /// Reverse proxies (addresses or CIDRs) whose X-Forwarded-For/-Proto/-Host headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_number_format")]
    pub phonebook_number_format: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_http_per_source")]
    pub max_connections_per_source: usize,
    #[serde(default = "default_lookup_last_digits")]
    pub lookup_last_digits: usize,
    /// Kinds of number in the XML phone books, in dial order: "work", "mobile", "home".
    #[serde(default = "default_phonebook_numbers")]
    pub phonebook_numbers: Vec<String>,
    /// Per vendor: most people in one XML document (larger books are paged); 0 = no cap.
    #[serde(default)]
    pub phonebook_max_entries: BTreeMap<String, usize>,
    /// A search-only directory for iOS and macOS Contacts (CardDAV directory gateway).
    pub directory: Option<DirectorySection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    #[serde(default = "default_directory_name")]
    pub display_name: String,
    /// Accounts offered the directory; empty = every account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Most cards one search returns.
    #[serde(default = "default_directory_max_results")]
    pub max_results: usize,
    /// The books those accounts still sync (by name); the others, `all` included, are not offered to them.
    #[serde(default)]
    pub books: Vec<String>,
}

fn default_directory_name() -> String {
    "Directory".into()
}
fn default_directory_max_results() -> usize {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookSection {
    pub name: String,
    pub display_name: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: Option<SocketAddr>,
    /// Bearer token file for `POST /sync`.
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_stale", deserialize_with = "de_duration")]
    pub stale_after: Duration,
    /// On SIGTERM, `/readyz` answers 503 this long while everything keeps serving, so a load balancer moves
    /// clients away before the listeners close.
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    pub drain_period: Duration,
    /// Source networks that may open the admin console (`/console/`); loopback by default.
    #[serde(default = "default_console_networks")]
    pub console_networks: Vec<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
            token_file: None,
            stale_after: default_stale(),
            drain_period: default_drain(),
            console_networks: default_console_networks(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_photo_size() -> Option<String> {
    Some("96x96".into())
}
fn default_photo_recheck() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_collation() -> String {
    "und".into()
}

fn default_country() -> String {
    "US".into()
}
fn default_users_container() -> String {
    "CN=Users".into()
}
fn default_computers_container() -> String {
    "CN=Computers".into()
}
fn default_contacts_container() -> String {
    "CN=Contacts".into()
}
fn default_ldap_listen() -> Option<SocketAddr> {
    "0.0.0.0:389".parse().ok()
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_deletes() -> usize {
    crate::sync::DeleteGuard::default().max_deletes
}
fn default_max_delete_percent() -> u32 {
    crate::sync::DeleteGuard::default().max_delete_percent
}
fn default_max_connections_per_source() -> usize {
    64
}
/// Higher than LDAP's: a branch office's desk phones often reach the server from one NAT address.
fn default_http_per_source() -> usize {
    256
}
fn default_phonebook_numbers() -> Vec<String> {
    crate::carddav::config::DEFAULT_NUMBER_ORDER
        .iter()
        .map(|k| k.as_str().to_string())
        .collect()
}
fn default_lookup_last_digits() -> usize {
    crate::carddav::config::DEFAULT_LOOKUP_LAST_DIGITS
}
/// Long enough for a load balancer checking every second or two to mark the replica down.
fn default_drain() -> Duration {
    Duration::from_secs(5)
}
/// AD's MaxQueryDuration.
fn default_time_limit() -> Duration {
    Duration::from_secs(120)
}
fn default_idle() -> Duration {
    Duration::from_secs(900)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_encoding_cache_mib() -> u64 {
    crate::ldap::encode::DEFAULT_CACHE_BYTES >> 20
}

fn default_paged_search_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_page() -> usize {
    1000
}
fn default_vcard() -> String {
    "3.0".into()
}
fn default_number_format() -> String {
    "e164".into()
}
fn default_console_networks() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

fn default_admin_listen() -> Option<SocketAddr> {
    "127.0.0.1:9180".parse().ok()
}
fn default_stale() -> Duration {
    Duration::from_secs(3600)
}
fn default_log_format() -> String {
    "human".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// Parse `"90s"`, `"5m"`, `"1h30m"`, `"2d"` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?}: expected e.g. \"30s\", \"5m\", \"1h\""))?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("bad duration {s:?}: unknown unit {c:?} (use s, m, h or d)")),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !num.is_empty() {
        return Err(format!("bad duration {s:?}: number without unit at the end"));
    }
    Ok(Duration::from_secs(total))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A date (TOML date or `"YYYY-MM-DD"` string) as Unix seconds at 00:00 UTC.
fn de_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = match toml::Value::deserialize(d)? {
        // A TOML date; a full date-time keeps only its date part.
        toml::Value::Datetime(t) => t.date.map(|d| d.to_string()).unwrap_or_else(|| t.to_string()),
        toml::Value::String(s) => s,
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a date like 2027-05-31, got {other}"
            )))
        }
    };
    parse_date(&text).map(Some).map_err(serde::de::Error::custom)
}

fn parse_date(text: &str) -> Result<u64, String> {
    let bad = || format!("bad date {text:?}: expected YYYY-MM-DD, e.g. 2027-05-31");
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&y) || !(1..=days_in_month).contains(&d) {
        return Err(bad());
    }
    Ok(crate::time::days_from_civil(y, m, d) * 86_400)
}

fn de_photo_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    const SIZES: &[&str] = &[
        "48x48", "64x64", "96x96", "120x120", "240x240", "360x360", "432x432", "504x504", "648x648",
    ];
    if s.is_empty() || s == "original" {
        return Ok(None);
    }
    if SIZES.contains(&s.as_str()) {
        Ok(Some(s))
    } else {
        Err(serde::de::Error::custom(format!(
            "photo_size {s:?} is not a size Graph serves; use one of {} or \"original\"",
            SIZES.join(", ")
        )))
    }
}

impl Config {
    /// The accidental-delete guard of `[directory]`.
    pub fn delete_guard(&self) -> crate::sync::DeleteGuard {
        crate::sync::DeleteGuard {
            max_deletes: self.directory.max_deletes,
            max_delete_percent: self.directory.max_delete_percent,
        }
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate(path, text)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key.rsplit('.').next().unwrap_or(key)))
                .map(|n| format!(" (line {})", n + 1))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: path.into(),
                key: format!("{key}{line}"),
                message,
            }
        };
        if self.entra.tenant_id.trim().is_empty() {
            return Err(invalid(
                "entra.tenant_id",
                "must be set to the Directory (tenant) ID".into(),
            ));
        }
        if self.entra.client_id.trim().is_empty() {
            return Err(invalid(
                "entra.client_id",
                "must be set to the Application (client) ID".into(),
            ));
        }
        if self.entra.client_certificate.is_some() != self.entra.client_key.is_some() {
            return Err(invalid(
                "entra.client_certificate",
                "client_certificate and client_key go together".into(),
            ));
        }
        for (key, url) in [
            ("entra.authority", &self.entra.authority),
            ("entra.graph_url", &self.entra.graph_url),
        ] {
            url::Url::parse(url).map_err(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
        }
        if let Some(p) = &self.entra.proxy {
            url::Url::parse(p).map_err(|e| invalid("entra.proxy", format!("{p:?} is not a URL: {e}")))?;
        }
        if self.entra.sync_interval < Duration::from_secs(30) {
            return Err(invalid(
                "entra.sync_interval",
                "must be at least 30s (Graph throttles aggressive polling)".into(),
            ));
        }
        self.naming().map_err(|m| invalid("directory.base_dn", m))?;
        if self.directory.max_delete_percent > 100 {
            return Err(invalid(
                "directory.max_delete_percent",
                "is a percentage: 0 to 100 (100 turns the share check off)".into(),
            ));
        }
        PhoneNormalizer::new(&self.directory.default_country)
            .map_err(|e| invalid("directory.default_country", e.to_string()))?;
        Collation::new(&self.directory.collation).map_err(|e| invalid("directory.collation", e.to_string()))?;
        Mapping::with_overrides(&self.mapping).map_err(|e| invalid("mapping", e.to_string()))?;
        for c in [
            &self.directory.users_container,
            &self.directory.groups_container,
            &self.directory.computers_container,
            &self.directory.contacts_container,
        ] {
            if !c.is_empty() && crate::directory::dn::parse_dn(c).is_none_or(|r| r.is_empty()) {
                return Err(invalid(
                    "directory.users_container",
                    format!("{c:?} is not a relative DN like \"CN=Users\""),
                ));
            }
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.name.trim().is_empty() {
                return Err(invalid(&format!("accounts[{i}].name"), "must not be empty".into()));
            }
            if argon2::PasswordHash::new(&a.password_hash).is_err() {
                return Err(invalid(
                    &format!("accounts[{i}].password_hash"),
                    format!(
                        "account {:?}: not a PHC hash string; make one with `entradir hash-password`",
                        a.name
                    ),
                ));
            }
        }
        match self.log.format.as_str() {
            "human" | "json" => {}
            other => return Err(invalid("log.format", format!("{other:?}: use \"human\" or \"json\""))),
        }
        if let Some(c) = &self.carddav {
            if c.vcard_version != "3.0" && c.vcard_version != "4.0" {
                return Err(invalid(
                    "carddav.vcard_version",
                    format!("{:?}: use \"3.0\" or \"4.0\"", c.vcard_version),
                ));
            }
        }
        Ok(())
    }

    pub fn naming(&self) -> Result<Naming, String> {
        Naming::new(&self.directory.base_dn)
            .ok_or_else(|| format!("{:?} is not a DN like \"DC=contoso,DC=com\"", self.directory.base_dn))
    }

    /// The projection settings (loads the UPN-matching CSV).
    pub fn directory_settings(&self) -> Result<crate::directory::Settings, ConfigError> {
        let naming = self.naming().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            key: "directory.base_dn".into(),
            message,
        })?;
        let phones = PhoneNormalizer::new(&self.directory.default_country).map_err(|e| ConfigError::Invalid {
            path: PathBuf::new(),
            key: "directory.default_country".into(),
            message: e.to_string(),
        })?;
        let mut s = crate::directory::Settings::new(naming, phones);
        s.collation = Arc::new(
            Collation::new(&self.directory.collation).map_err(|e| ConfigError::Invalid {
                path: PathBuf::new(),
                key: "directory.collation".into(),
                message: e.to_string(),
            })?,
        );
        s.mapping = Mapping::with_overrides(&self.mapping).map_err(|e| ConfigError::Invalid {
            path: PathBuf::new(),
            key: "mapping".into(),
            message: e.to_string(),
        })?;
        if let Some(csv) = &self.directory.upn_matching_csv {
            s.upn_map = UpnMap::load(csv)?;
        }
        s.users_container = self.directory.users_container.clone();
        s.groups_container = self.directory.groups_container.clone();
        s.computers_container = self.directory.computers_container.clone();
        s.contacts_container = self.directory.contacts_container.clone();
        s.include_guests = self.entra.include_guests;
        s.include_disabled = self.entra.include_disabled;
        s.scope_groups = self.entra.scope_groups.clone();
        Ok(s)
    }

    /// The service accounts, networks parsed; errors name the account entry.
    pub fn service_accounts(&self) -> Result<Vec<crate::accounts::Account>, ConfigError> {
        self.accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let networks = a
                    .networks
                    .iter()
                    .map(|n| n.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e: crate::accounts::CidrError| ConfigError::Invalid {
                        path: PathBuf::new(),
                        key: format!("accounts[{i}].networks"),
                        message: format!("account {:?}: {e}", a.name),
                    })?;
                Ok(crate::accounts::Account {
                    name: a.name.clone(),
                    password_hash: a.password_hash.clone(),
                    networks,
                })
            })
            .collect()
    }

    /// The client secret from `ENTRADIR_CLIENT_SECRET` or `client_secret_file`.
    pub fn client_secret(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(s) = std::env::var("ENTRADIR_CLIENT_SECRET") {
            if !s.trim().is_empty() {
                return Ok(Some(s.trim().to_string()));
            }
        }
        match &self.entra.client_secret_file {
            Some(p) => {
                let s = std::fs::read_to_string(p).map_err(|error| ConfigError::Invalid {
                    path: p.clone(),
                    key: "entra.client_secret_file".into(),
                    message: format!("cannot read the client secret: {error}"),
                })?;
                if s.trim().is_empty() {
                    return Err(ConfigError::Invalid {
                        path: p.clone(),
                        key: "entra.client_secret_file".into(),
                        message: "the file is empty; put the secret's Value (not its ID) in it".into(),
                    });
                }
                Ok(Some(s.trim().to_string()))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[entra]
tenant_id = "t"
client_id = "c"

[directory]
base_dn = "DC=contoso,DC=com"
default_country = "DE"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("entradir.toml"), s)
    }

    #[test]
    fn minimal_config_gets_sane_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.entra.sync_interval, Duration::from_secs(300));
        assert_eq!(c.entra.authority, "https://login.microsoftonline.com");
        assert!(c.entra.include_disabled && !c.entra.include_guests);
        assert_eq!(c.admin.listen, "127.0.0.1:9180".parse().ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_key_and_line() {
        let e = parse(&MINIMAL.replace("client_id = \"c\"", "client_id = \"c\"\nsync_intervall = \"5m\"")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("entradir.toml") && m.contains("line 5") && m.contains("sync_intervall"),
            "{m}"
        );
        let e = parse(&MINIMAL.replace("client_id = \"c\"", "client_id = \"c\"\nsync_interval = \"5 minutes\""))
            .unwrap_err();
        assert!(e.to_string().contains("line 5"), "{e}");
        let e = parse(&MINIMAL.replace("\"DE\"", "\"Germany\"")).unwrap_err();
        assert!(e.to_string().contains("directory.default_country (line 8)"), "{e}");
        let e = parse(&MINIMAL.replace("DC=contoso,DC=com", "contoso.com")).unwrap_err();
        assert!(e.to_string().contains("directory.base_dn"), "{e}");
        let e = parse(&MINIMAL.replace(
            "default_country = \"DE\"",
            "default_country = \"DE\"\ncollation = \"de_DE.UTF-8\"",
        ))
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("directory.collation (line 9)") && m.contains("\"de_DE.UTF-8\" is not a language tag"),
            "{m}"
        );
    }

    /// The shipped example must stay loadable, also with its optional lines switched on.
    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../entradir.example.toml");
        let path = Path::new("entradir.example.toml");
        Config::parse(path, text).unwrap_or_else(|e| panic!("{e}"));
        let dated = text.replace(
            "# client_secret_expires = 2027-05-31",
            "client_secret_expires = 2027-05-31",
        );
        let cfg = Config::parse(path, &dated).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.entra.client_secret_expires, Some(1_811_721_600));
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2027-05-31"), Ok(1_811_721_600));
        assert!(parse_date("2027-13-01").is_err());
        assert!(parse_date("31.05.2027").unwrap_err().contains("YYYY-MM-DD"));
        assert!(parse_date("2027").is_err());
        assert!(parse_date("2027-02-31").is_err(), "no 31st of February");
        assert!(parse_date("2028-02-29").is_ok() && parse_date("2027-02-29").is_err());
        assert!(parse_date("2027-05-31 junk").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 m").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }
}
