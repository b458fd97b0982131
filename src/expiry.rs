//! Dates when credentials stop working — TLS certificates of the listeners, the Graph client certificate and
//! (when the admin recorded it) the client secret — collected from the config, published as metrics and
//! warned about in the log ahead of time, so a certificate never lapses unnoticed on a server nobody looks at.

use crate::config::Config;
use std::path::Path;

/// Warn this long before a credential expires.
pub const WARN_AHEAD_SECS: u64 = 30 * 86_400;

/// One credential with a known end date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// What it is for, e.g. `ldap_tls_certificate`.
    pub what: String,
    /// The file it was read from (empty for a date from the config).
    pub file: String,
    /// Unix seconds.
    pub at: u64,
}

fn cert(what: &str, path: &Path) -> Option<Expiry> {
    let pem = std::fs::read_to_string(path).ok()?;
    let at = crate::tls::certificate_not_after(&pem)?;
    Some(Expiry {
        what: what.to_string(),
        file: path.display().to_string(),
        at,
    })
}

/// Every expiry date the config leads to. Files that cannot be read are skipped here: loading them is where
/// such errors are reported.
pub fn collect(cfg: &Config) -> Vec<Expiry> {
    let mut out = Vec::new();
    if let Some(l) = &cfg.ldap {
        out.extend(l.tls_cert.as_deref().and_then(|p| cert("ldap_tls_certificate", p)));
    }
    if let Some(c) = &cfg.carddav {
        out.extend(c.tls_cert.as_deref().and_then(|p| cert("carddav_tls_certificate", p)));
    }
    if let Some(t) = &cfg.tls {
        out.extend(cert("tls_certificate", &t.cert));
    }
    out.extend(
        cfg.entra
            .client_certificate
            .as_deref()
            .and_then(|p| cert("graph_client_certificate", p)),
    );
    if let Some(at) = cfg.entra.client_secret_expires {
        out.push(Expiry {
            what: "graph_client_secret".into(),
            file: cfg
                .entra
                .client_secret_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            at,
        });
    }
    out
}

/// Publish the dates as metrics (replacing the previous set).
pub fn publish(list: &[Expiry]) {
    crate::metrics::set_expiries(list.iter().map(|e| (e.what.clone(), e.file.clone(), e.at)).collect());
}

/// What to tell the admin about one credential at `now`, if anything.
pub fn warning(e: &Expiry, now: u64) -> Option<String> {
    let what = e.what.replace('_', " ");
    let fix = if e.what.starts_with("graph_") {
        "add a new one to the app registration (\"Certificates & secrets\") and update the config"
    } else {
        "replace the certificate file and send SIGHUP"
    };
    let when = crate::time::iso8601(e.at);
    if e.at <= now {
        Some(format!("the {what} expired at {when}: {fix}"))
    } else if e.at - now < WARN_AHEAD_SECS {
        let days = (e.at - now) / 86_400;
        Some(format!("the {what} expires in {days} days ({when}): {fix}"))
    } else {
        None
    }
}

/// Log a warning for each credential that expires within [`WARN_AHEAD_SECS`] or has expired.
pub fn warn_soon(list: &[Expiry], now: u64) {
    for e in list {
        if let Some(msg) = warning(e, now) {
            tracing::warn!(file = %e.file, expires = %crate::time::iso8601(e.at), "{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(what: &str, at: u64) -> Expiry {
        Expiry {
            what: what.into(),
            file: "/etc/entradir/x.pem".into(),
            at,
        }
    }

    #[test]
    fn warns_within_thirty_days_and_after_expiry_only() {
        let now = 1_800_000_000;
        assert_eq!(warning(&e("ldap_tls_certificate", now + 31 * 86_400), now), None);
        let soon = warning(&e("ldap_tls_certificate", now + 10 * 86_400 + 5), now).unwrap();
        assert!(
            soon.contains("ldap tls certificate expires in 10 days") && soon.contains("SIGHUP"),
            "{soon}"
        );
        let gone = warning(&e("graph_client_secret", now - 1), now).unwrap();
        assert!(
            gone.contains("graph client secret expired") && gone.contains("app registration"),
            "{gone}"
        );
    }
}
