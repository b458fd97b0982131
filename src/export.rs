//! Writing a snapshot out as LDIF (RFC 2849) or JSON: for `entradir export`, for loading the same data into
//! OpenLDAP in the benchmark, and for admins who want to see what the PBX will see.

use crate::directory::snapshot::is_binary_attr;
use crate::directory::{Entry, Snapshot};
use base64::Engine;
use std::io::{self, Write};

/// RFC 2849 SAFE-STRING: ASCII without NUL, LF, CR; not starting with space, `:` or `<`; not ending in space.
fn ldif_safe(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    if matches!(v[0], b' ' | b':' | b'<') || v[v.len() - 1] == b' ' {
        return false;
    }
    v.iter().all(|b| *b != 0 && *b != b'\n' && *b != b'\r' && b.is_ascii())
}

/// Write `name: value` (or `name:: base64`) folded at 76 columns.
fn write_line(w: &mut impl Write, name: &str, value: &[u8], binary: bool) -> io::Result<()> {
    let line = if !binary && ldif_safe(value) {
        format!("{name}: {}", String::from_utf8_lossy(value))
    } else {
        format!("{name}:: {}", base64::engine::general_purpose::STANDARD.encode(value))
    };
    let bytes = line.as_bytes();
    let mut start = 0;
    let mut width = 76;
    while start < bytes.len() {
        let mut end = (start + width).min(bytes.len());
        while end < bytes.len() && !line.is_char_boundary(end) {
            end -= 1;
        }
        if start > 0 {
            w.write_all(b" ")?;
        }
        w.write_all(&bytes[start..end])?;
        w.write_all(b"\n")?;
        start = end;
        width = 75;
    }
    Ok(())
}

pub fn write_ldif_entry(w: &mut impl Write, e: &Entry) -> io::Result<()> {
    write_line(w, "dn", e.dn.as_bytes(), false)?;
    for a in &e.attrs {
        let binary = is_binary_attr(a.name);
        for v in a.values {
            write_line(w, a.name, v, binary)?;
        }
    }
    w.write_all(b"\n")
}

/// The whole snapshot as LDIF, parents before children (sorted by DN depth) so it can be loaded with ldapadd.
pub fn write_ldif(w: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    // RFC 2849: the version line, then records separated by blank lines. (slapadd does not take the version
    // line; benches/slapd_compare.sh strips this header block for it.)
    writeln!(w, "version: 1")?;
    writeln!(w, "# entradir export of {} at version {}", s.naming.base_dn, s.version)?;
    writeln!(w)?;
    let mut entries: Vec<&std::sync::Arc<Entry>> = s.entries().collect();
    entries.sort_by_key(|e| {
        (
            crate::directory::dn::parse_dn(&e.dn).map(|r| r.len()).unwrap_or(0),
            e.dn_norm.clone(),
        )
    });
    for e in entries {
        write_ldif_entry(w, e)?;
    }
    Ok(())
}

/// The snapshot as JSON: `{"version", "base_dn", "entries": [{"dn", "attributes": {name: [values]}}]}`, binary
/// values as `{"base64": "..."}`.
pub fn write_json(w: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    use serde_json::{json, Map, Value};
    let entries: Vec<Value> = s
        .entries()
        .map(|e| {
            let mut attrs = Map::new();
            for a in &e.attrs {
                let binary = is_binary_attr(a.name);
                let vals: Vec<Value> = a
                    .values
                    .iter()
                    .map(|v| match std::str::from_utf8(v) {
                        Ok(s) if !binary => Value::String(s.to_string()),
                        _ => json!({"base64": base64::engine::general_purpose::STANDARD.encode(v)}),
                    })
                    .collect();
                attrs.insert(a.name.to_string(), Value::Array(vals));
            }
            json!({"dn": &*e.dn, "kind": e.kind, "attributes": attrs})
        })
        .collect();
    let doc = json!({"version": s.version, "base_dn": &*s.naming.base_dn, "entries": entries});
    serde_json::to_writer_pretty(&mut *w, &doc).map_err(io::Error::other)?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldif_lines_are_folded_and_unsafe_values_base64() {
        let mut out = Vec::new();
        write_line(&mut out, "cn", "Müller".as_bytes(), false).unwrap();
        write_line(&mut out, "description", &[b'x'; 100], false).unwrap();
        write_line(&mut out, "sn", b" lead", false).unwrap();
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "cn:: TcO8bGxlcg==");
        assert_eq!(lines[1].len(), 76);
        assert!(lines[2].starts_with(' ') && lines[2].len() == 1 + 100 + 13 - 76);
        assert_eq!(lines[3], "sn:: IGxlYWQ=");
    }
}
