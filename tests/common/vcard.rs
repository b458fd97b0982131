//! A reader of the vCards we serve that shares no code with the writer (calcard): written from RFC 2425/2426
//! and RFC 6350 for the tests, and strict where a client would be. Every 4.0 card is also handed to the
//! `vcard4` crate, whose parser refuses anything RFC 6350 does not allow; every 3.0 card in the vdirsyncer test
//! goes through Python's vobject as well.
//!
//! Also compiled into the library's unit tests (`src/carddav/vcard.rs`), so it uses nothing from `tests/common`.
#![allow(dead_code)]

use base64::Engine;

/// One content line: upper-case name (group prefix dropped), parameters, and the value as written (escaped).
#[derive(Debug, Clone)]
pub struct Prop {
    pub name: String,
    pub params: Vec<(String, String)>,
    pub raw: String,
}

impl Prop {
    /// The value with text escapes undone; `;` and `,` separators stay in place.
    pub fn text(&self) -> String {
        unescape(&self.raw)
    }

    /// The value split at unescaped `;` and `,` (components and list items), each unescaped.
    pub fn parts(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = self.raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    cur.push('\\');
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ';' | ',' => out.push(unescape(&std::mem::take(&mut cur))),
                c => cur.push(c),
            }
        }
        out.push(unescape(&cur));
        out
    }

    /// The values of a parameter, upper-cased, comma lists split.
    pub fn param(&self, name: &str) -> Vec<String> {
        self.params
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim_matches('"').to_ascii_uppercase())
            .collect()
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A parsed card.
#[derive(Debug, Clone)]
pub struct Card {
    pub version: String,
    pub props: Vec<Prop>,
}

impl Card {
    /// Parse a whole card: [`Card::read`], then one `FN` (and one `N` in 3.0) and a `UID`; 4.0 cards must also
    /// pass `vcard4`.
    pub fn parse(text: &str) -> Result<Card, String> {
        let card = Card::read(text)?;
        let count = |n: &str| card.props.iter().filter(|p| p.name == n).count();
        if count("FN") != 1 {
            return Err(format!("{} FN properties", count("FN")));
        }
        if card.version == "3.0" && count("N") != 1 {
            return Err("a 3.0 card needs exactly one N".into());
        }
        if count("UID") != 1 {
            return Err("no UID".into());
        }
        if card.version == "4.0" {
            let parsed = vcard4::parse(text).map_err(|e| format!("vcard4 rejects the card: {e}"))?;
            let [one] = parsed.as_slice() else {
                return Err(format!("vcard4 reads {} cards", parsed.len()));
            };
            let fns: Vec<&str> = one.formatted_name.iter().map(|p| p.value.as_str()).collect();
            if fns != [card.texts("FN")[0].as_str()] {
                return Err(format!("vcard4 reads FN {fns:?}, we read {:?}", card.texts("FN")));
            }
        }
        Ok(card)
    }

    /// Parse a card that may be partial (`address-data` naming properties), checking only the framing a client
    /// relies on: CRLF line ends, lines of at most 75 octets, `BEGIN` and `VERSION` first, `END` last.
    pub fn read(text: &str) -> Result<Card, String> {
        let body = text
            .strip_suffix("\r\n")
            .ok_or_else(|| "card does not end with CRLF".to_string())?;
        if body.split("\r\n").any(|l| l.contains('\n') || l.contains('\r')) {
            return Err("bare LF or CR inside the card".into());
        }
        let mut logical: Vec<String> = Vec::new();
        for line in body.split("\r\n") {
            if line.len() > 75 {
                return Err(format!("line of {} octets: {line:?}", line.len()));
            }
            match line.strip_prefix(' ').or_else(|| line.strip_prefix('\t')) {
                Some(cont) => logical
                    .last_mut()
                    .ok_or_else(|| "continuation before any line".to_string())?
                    .push_str(cont),
                None if line.is_empty() => return Err("empty line".into()),
                None => logical.push(line.to_string()),
            }
        }
        let mut props = Vec::new();
        for l in &logical {
            props.push(parse_line(l)?);
        }
        let first = |i: usize| props.get(i).map(|p: &Prop| (p.name.as_str(), p.raw.as_str()));
        if first(0) != Some(("BEGIN", "VCARD"))
            || props.last().map(|p| (p.name.as_str(), p.raw.as_str())) != Some(("END", "VCARD"))
        {
            return Err("not framed by BEGIN:VCARD … END:VCARD".into());
        }
        let version = match first(1) {
            Some(("VERSION", v)) if v == "3.0" || v == "4.0" => v.to_string(),
            other => return Err(format!("VERSION is not the second line: {other:?}")),
        };
        Ok(Card { version, props })
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Prop> + 'a {
        self.props.iter().filter(move |p| p.name.eq_ignore_ascii_case(name))
    }

    /// Each property's unescaped value.
    pub fn texts(&self, name: &str) -> Vec<String> {
        self.all(name).map(Prop::text).collect()
    }

    /// Every component and list item of every property of that name.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.all(name).flat_map(|p| p.parts()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }

    /// The photo's bytes: `ENCODING=b` (3.0) or a `data:…;base64,` URI (4.0).
    pub fn photo(&self) -> Option<Result<Vec<u8>, String>> {
        let p = self.all("PHOTO").next()?;
        let b64 = if p.param("ENCODING").iter().any(|e| e == "B") {
            p.raw.as_str()
        } else if let Some(uri) = p.raw.strip_prefix("data:") {
            match uri.split_once(',') {
                Some((head, data)) if head.ends_with(";base64") => data,
                _ => {
                    return Some(Err(format!(
                        "photo URI is not base64 data: {}",
                        &p.raw[..p.raw.len().min(40)]
                    )))
                }
            }
        } else {
            return Some(Err("photo is neither ENCODING=b nor a data: URI".into()));
        };
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("photo is not base64: {e}")),
        )
    }
}

/// `[group.]name *(;param[=value]) : value`, with quoted parameter values.
fn parse_line(line: &str) -> Result<Prop, String> {
    let mut in_quotes = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon.ok_or_else(|| format!("no ':' in {line:?}"))?;
    let (head, raw) = (&line[..colon], &line[colon + 1..]);
    let mut segs = head.split(';');
    let name = segs.next().unwrap_or_default();
    let name = name.rsplit('.').next().unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("bad property name in {line:?}"));
    }
    let params = segs
        .map(|s| match s.split_once('=') {
            Some((n, v)) => (n.to_ascii_uppercase(), v.to_string()),
            None => ("TYPE".to_string(), s.to_string()),
        })
        .collect();
    Ok(Prop {
        name: name.to_ascii_uppercase(),
        params,
        raw: raw.to_string(),
    })
}
