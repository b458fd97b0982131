//! Distinguished names: RFC 4514 parsing, escaping and normalisation.
//!
//! AD compares DNs case-insensitively and ignores spaces around separators; everything that looks entries up by
//! DN goes through [`format_dn_norm`] so `cn=Doe\, Jane,cn=users,dc=example,dc=com` finds the entry presented as
//! `CN=Doe\, Jane,CN=Users,DC=example,DC=com`.

/// One RDN component: attribute type and unescaped value. Multi-valued RDNs (`+`) are kept as separate pairs of
/// the same RDN.
pub type Rdn = Vec<(String, String)>;

/// Escape an attribute value for use in a DN string (RFC 4514 section 2.4).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Parse a DN into RDNs (leftmost first). Returns `None` when the string is not a valid DN.
pub fn parse_dn(dn: &str) -> Option<Vec<Rdn>> {
    let mut rdns = Vec::new();
    if dn.trim().is_empty() {
        return Some(rdns);
    }
    let bytes = dn.as_bytes();
    let mut i = 0;
    let mut rdn: Rdn = Vec::new();
    loop {
        // attribute type
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b',' | b'+' | b'\\') {
                return None;
            }
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let ty = dn[start..i].trim();
        if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return None;
        }
        i += 1; // '='
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        // value
        let mut val: Vec<u8> = Vec::new();
        let mut trailing_unescaped_spaces = 0usize;
        if i < bytes.len() && bytes[i] == b'#' {
            // hex-encoded BER value: keep as the literal string
            let s = i;
            while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'+' {
                i += 1;
            }
            val.extend_from_slice(dn[s..i].trim_end().as_bytes());
        } else {
            while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'+' && bytes[i] != b';' {
                if bytes[i] == b'\\' {
                    i += 1;
                    if i >= bytes.len() {
                        return None;
                    }
                    if bytes[i].is_ascii_hexdigit() && i + 1 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() {
                        let h = u8::from_str_radix(&dn[i..i + 2], 16).ok()?;
                        val.push(h);
                        i += 2;
                    } else {
                        val.push(bytes[i]);
                        i += 1;
                    }
                    trailing_unescaped_spaces = 0;
                } else {
                    if bytes[i] == b' ' {
                        trailing_unescaped_spaces += 1;
                    } else {
                        trailing_unescaped_spaces = 0;
                    }
                    val.push(bytes[i]);
                    i += 1;
                }
            }
            val.truncate(val.len() - trailing_unescaped_spaces);
        }
        let val = String::from_utf8(val).ok()?;
        rdn.push((ty.to_string(), val));
        if i >= bytes.len() {
            rdns.push(std::mem::take(&mut rdn));
            break;
        }
        let sep = bytes[i];
        i += 1;
        if sep != b'+' {
            rdns.push(std::mem::take(&mut rdn));
        }
        if i >= bytes.len() {
            return None; // trailing separator
        }
    }
    Some(rdns)
}

/// Canonical comparison form: types lower-case, values lower-case and escaped, no optional spaces.
pub fn format_dn_norm(rdns: &[Rdn]) -> String {
    let mut out = String::new();
    for (n, rdn) in rdns.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let mut parts: Vec<String> = rdn
            .iter()
            .map(|(t, v)| format!("{}={}", t.to_ascii_lowercase(), escape_value(&v.to_lowercase())))
            .collect();
        parts.sort();
        out.push_str(&parts.join("+"));
    }
    out
}

/// The parent of a normalised DN (`cn=a,cn=users,dc=x` → `cn=users,dc=x`), or `None` for a single RDN.
/// Works on the normalised form, where every `,` that separates RDNs is unescaped.
pub fn parent_norm(dn_norm: &str) -> Option<&str> {
    let b = dn_norm.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b',' => return Some(&dn_norm[i + 1..]),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape_value("Doe, Jane"), "Doe\\, Jane");
        assert_eq!(escape_value("#1 Fan "), "\\#1 Fan\\ ");
        assert_eq!(escape_value("a+b=c\"<>;\\"), "a\\+b\\=c\\\"\\<\\>\\;\\\\");
        assert_eq!(escape_value("Müller"), "Müller");
    }

    #[test]
    fn normalises_case_spaces_and_escapes() {
        let a = format_dn_norm(&parse_dn("CN=Doe\\, Jane,CN=Users,DC=Example,DC=com").unwrap());
        let b = format_dn_norm(&parse_dn("cn = doe\\2C jane , cn=users,dc=example,dc=COM").unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "cn=doe\\, jane,cn=users,dc=example,dc=com");
    }

    #[test]
    fn rejects_broken_dns() {
        for bad in ["CN", "CN=a,", "=a", "CN=a\\", "C N=a"] {
            assert!(parse_dn(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_dn("").unwrap().len(), 0);
    }

    #[test]
    fn parent_skips_escaped_commas() {
        assert_eq!(parent_norm("cn=doe\\, jane,cn=users,dc=x"), Some("cn=users,dc=x"));
        assert_eq!(parent_norm("dc=x"), None);
    }
}
