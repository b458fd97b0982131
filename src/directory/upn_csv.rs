//! The UPN-matching CSV: `EntraUPN,LocalUsername` rows that make an Entra user appear under the name the local
//! systems know (ProCall's `usermatching.csv` convention).
//!
//! Matching is case-sensitive, as in the products this file comes from. The whole file is validated before it
//! is used: one bad line rejects the file and the previous mapping stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}:{line}: {reason} (expected `EntraUPN,LocalUsername`, got {text:?})")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
        text: String,
    },
}

/// A validated mapping, Entra UPN → local user name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpnMap {
    rows: BTreeMap<String, Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    local: String,
    line: usize,
}

impl UpnMap {
    pub fn load(path: &Path) -> Result<UpnMap, CsvError> {
        let text = std::fs::read(path).map_err(|error| CsvError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let text = String::from_utf8(text).map_err(|e| CsvError::Line {
            path: path.to_path_buf(),
            line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            reason: "not valid UTF-8 (save the file as UTF-8)".into(),
            text: String::new(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<UpnMap, CsvError> {
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        let mut locals: BTreeMap<String, usize> = BTreeMap::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Excel writes a BOM
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let err = |reason: &str| CsvError::Line {
                path: path.to_path_buf(),
                line,
                reason: reason.to_string(),
                text: raw.to_string(),
            };
            let fields: Vec<&str> = trimmed
                .split([',', ';'])
                .map(|f| f.trim().trim_matches('"').trim())
                .collect();
            if rows.is_empty() && locals.is_empty() && fields.len() == 2 && fields[0].eq_ignore_ascii_case("EntraUPN") {
                continue; // header
            }
            if fields.len() != 2 {
                return Err(err(&format!("{} fields, need exactly 2", fields.len())));
            }
            let (upn, local) = (fields[0], fields[1]);
            if upn.is_empty() || local.is_empty() {
                return Err(err("empty field"));
            }
            if !upn.contains('@') || upn.contains(char::is_whitespace) {
                return Err(err("the first field is not a UPN (name@domain)"));
            }
            if local.contains(char::is_whitespace) || local.chars().any(char::is_control) {
                return Err(err("the local user name contains spaces or control characters"));
            }
            if let Some(prev) = rows.get(upn) {
                return Err(err(&format!("UPN {upn} is already mapped on line {}", prev.line)));
            }
            if let Some(prev) = locals.get(local) {
                return Err(err(&format!("local name {local} is already used on line {prev}")));
            }
            locals.insert(local.to_string(), line);
            rows.insert(
                upn.to_string(),
                Row {
                    local: local.to_string(),
                    line,
                },
            );
        }
        Ok(UpnMap { rows })
    }

    /// The local name for an Entra UPN (exact, case-sensitive match).
    pub fn local_for(&self, upn: &str) -> Option<&str> {
        self.rows.get(upn).map(|r| r.local.as_str())
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The line of `upn`'s row, if the file has one.
    pub fn line_of(&self, upn: &str) -> Option<usize> {
        self.rows.get(upn).map(|r| r.line)
    }

    /// Rows whose UPN is not in `known`, with their line numbers: worth a warning, since they usually mean a
    /// typo or a case mismatch.
    pub fn unmatched<'a>(&'a self, known: impl Fn(&str) -> bool + 'a) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.rows
            .iter()
            .filter(move |(upn, _)| !known(upn))
            .map(|(upn, r)| (upn.as_str(), r.line))
    }
}

/// The sAMAccountName a local user name implies: `DOMAIN\user` → `user`, `user@domain` → `user`.
pub fn sam_from_local(local: &str) -> &str {
    let after_backslash = local.rsplit('\\').next().unwrap_or(local);
    after_backslash.split('@').next().unwrap_or(after_backslash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<UpnMap, CsvError> {
        UpnMap::parse(Path::new("usermatching.csv"), s)
    }

    #[test]
    fn parses_header_comments_and_rows() {
        let m = parse("EntraUPN,LocalUsername\n# comment\n\nmmu@domain.de,max.mustermann@domain.local\r\nlfr@domain.de, lena.frisch@domain.local\n")
            .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.local_for("mmu@domain.de"), Some("max.mustermann@domain.local"));
        assert_eq!(m.local_for("MMU@domain.de"), None, "matching is case-sensitive");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e = parse("a@x,b\nthis line is wrong\n").unwrap_err().to_string();
        assert!(e.starts_with("usermatching.csv:2:"), "{e}");
        let e = parse("a@x,b\na@x,c\n").unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("already mapped on line 1"), "{e}");
        let e = parse("a@x,b\nc@x,b\n").unwrap_err().to_string();
        assert!(e.contains("already used on line 1"), "{e}");
        assert!(parse("a@x,b,c\n").is_err());
        assert!(parse("a@x,\n").is_err());
        assert!(parse("nouser,b\n").is_err());
    }

    #[test]
    fn local_names_give_sam_account_names() {
        assert_eq!(sam_from_local("max.mustermann@domain.local"), "max.mustermann");
        assert_eq!(sam_from_local("DOMAIN\\lena"), "lena");
        assert_eq!(sam_from_local("plain"), "plain");
    }
}
