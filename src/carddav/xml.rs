//! XML in and out: a strict, small request parser and the multistatus writer.
//!
//! Requests are parsed with quick-xml into a namespace-resolved element tree. Anything that could make parsing
//! expensive or surprising is refused instead of interpreted: a `<!DOCTYPE` (and with it every `<!ENTITY`), entity
//! references other than the five predefined ones, nesting deeper than `MAX_DEPTH`, more than
//! `MAX_ELEMENTS` elements. Every refusal carries a reason that goes back to the client in a 400.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::borrow::Cow;
use std::fmt::Write as _;

pub const DAV: &str = "DAV:";
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub const CALSERVER: &str = "http://calendarserver.org/ns/";

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("document type declarations (DOCTYPE/ENTITY) are not accepted")]
    Doctype,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("XML nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("XML has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("empty request body where XML was expected")]
    Empty,
}

/// One element with its resolved namespace (empty when none), attributes by local name, and text content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn prop_name(&self) -> PropName {
        PropName {
            ns: self.ns.clone(),
            name: self.name.clone(),
        }
    }
}

/// Parse a request body. Whitespace-only text is dropped; text is trimmed.
pub fn parse(body: &[u8]) -> Result<Element, XmlError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(XmlError::Empty);
    }
    let mut reader = NsReader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let malformed = |e: &dyn std::fmt::Display, pos: u64| XmlError::Malformed(format!("{e} (at byte {pos})"));
    loop {
        let pos = reader.buffer_position();
        let (ns, ev) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| malformed(&e, pos))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(p) => {
                return Err(XmlError::Malformed(format!(
                    "undeclared namespace prefix {:?}",
                    String::from_utf8_lossy(&p)
                )))
            }
        };
        match ev {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(ref s) | Event::Empty(ref s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if root.is_some() && stack.is_empty() {
                    return Err(XmlError::Malformed("more than one root element".into()));
                }
                let mut el = Element {
                    ns,
                    name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    ..Default::default()
                };
                for a in s.attributes() {
                    let a = a.map_err(|e| malformed(&e, pos))?;
                    if a.key.as_ref().starts_with(b"xmlns") {
                        continue;
                    }
                    let v = a.unescape_value().map_err(|e| malformed(&e, pos))?;
                    el.attrs.push((
                        String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                        v.into_owned(),
                    ));
                }
                if matches!(ev, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| malformed(&e, pos))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None => return Err(XmlError::Malformed("text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let text = String::from_utf8(c.into_inner().into_owned())
                    .map_err(|_| XmlError::Malformed("CDATA is not UTF-8".into()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(format!(
            "element <{}> is not closed",
            stack[stack.len() - 1].name
        )));
    }
    root.ok_or_else(|| XmlError::Malformed("no root element".into()))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Escape for XML text and attribute values (both quote kinds, so it fits either delimiter). Characters XML 1.0
/// cannot carry at all (most C0 controls) are dropped rather than producing a document clients reject.
///
/// CR is written as `&#13;`: an XML parser turns a literal CRLF into LF (XML 1.0 §2.11), so a vCard in
/// `address-data` would reach the client without the CRLF line ends RFC 6350 requires. Other servers do the
/// same (Posteo's answers in vdirsyncer issue #703 carry `BEGIN:VCARD&#13;`).
pub fn esc(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'' | '\r') || is_forbidden(c))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if is_forbidden(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_forbidden(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
}

/// A property name: namespace URI and local name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropName {
    pub ns: String,
    pub name: String,
}

impl PropName {
    pub fn new(ns: &str, name: &str) -> PropName {
        PropName {
            ns: ns.into(),
            name: name.into(),
        }
    }

    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// Write `<p:name>inner</p:name>` (or the empty form), declaring unknown namespaces inline. Written piece by
    /// piece: this runs once per property per card of a listing.
    pub fn write(&self, out: &mut String, inner: &str) {
        let prefix = match self.ns.as_str() {
            DAV => "D:",
            CARDDAV => "C:",
            CALSERVER => "CS:",
            "" => "",
            _ => "X:",
        };
        out.push('<');
        out.push_str(prefix);
        out.push_str(&self.name);
        match self.ns.as_str() {
            DAV | CARDDAV | CALSERVER => {}
            "" => out.push_str(" xmlns=\"\""),
            ns => {
                out.push_str(" xmlns:X=\"");
                out.push_str(&esc(ns));
                out.push('"');
            }
        }
        if inner.is_empty() {
            out.push_str("/>");
        } else {
            out.push('>');
            out.push_str(inner);
            out.push_str("</");
            out.push_str(prefix);
            out.push_str(&self.name);
            out.push('>');
        }
    }
}

pub fn status_line(code: u16) -> Cow<'static, str> {
    match code {
        // The ones every listing repeats per card, without formatting each time.
        200 => Cow::Borrowed("HTTP/1.1 200 OK"),
        404 => Cow::Borrowed("HTTP/1.1 404 Not Found"),
        _ => {
            let reason = hyper::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            Cow::Owned(format!("HTTP/1.1 {code} {reason}"))
        }
    }
}

/// Builds a `DAV:multistatus` document.
pub struct Multistatus {
    buf: String,
}

impl Default for Multistatus {
    fn default() -> Self {
        Self::new()
    }
}

impl Multistatus {
    pub fn new() -> Multistatus {
        Self::with_capacity(4096)
    }

    /// Start with room for about `bytes` of output (large REPORTs avoid re-growing a multi-megabyte buffer).
    pub fn with_capacity(bytes: usize) -> Multistatus {
        let mut buf = String::with_capacity(bytes.max(256));
        buf.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        let _ = write!(
            buf,
            "<D:multistatus xmlns:D=\"{DAV}\" xmlns:C=\"{CARDDAV}\" xmlns:CS=\"{CALSERVER}\">"
        );
        Multistatus { buf }
    }

    /// A response carrying only a status (404 for an unknown href, 507 for truncation).
    pub fn status(&mut self, href: &str, code: u16) {
        let _ = write!(
            self.buf,
            "<D:response><D:href>{}</D:href><D:status>{}</D:status></D:response>",
            esc(href),
            status_line(code)
        );
    }

    /// A response with found properties (name, inner XML) in a 200 propstat and missing ones in a 404 propstat.
    pub fn props<P, S, M>(&mut self, href: &str, found: &[(P, S)], missing: &[M])
    where
        P: std::borrow::Borrow<PropName>,
        S: AsRef<str>,
        M: std::borrow::Borrow<PropName>,
    {
        self.buf.push_str("<D:response><D:href>");
        self.buf.push_str(&esc(href));
        self.buf.push_str("</D:href>");
        if !found.is_empty() {
            self.buf.push_str("<D:propstat><D:prop>");
            for (p, inner) in found {
                p.borrow().write(&mut self.buf, inner.as_ref());
            }
            self.buf
                .push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
        }
        if !missing.is_empty() {
            self.buf.push_str("<D:propstat><D:prop>");
            for p in missing {
                p.borrow().write(&mut self.buf, "");
            }
            self.buf
                .push_str("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
        }
        if found.is_empty() && missing.is_empty() {
            self.buf.push_str("<D:status>HTTP/1.1 200 OK</D:status>");
        }
        self.buf.push_str("</D:response>");
    }

    /// The output buffer, for writers that build many responses in place (card listings). What they append must
    /// be complete, well-formed `<D:response>` elements.
    pub fn buf(&mut self) -> &mut String {
        &mut self.buf
    }

    pub fn sync_token(&mut self, token: &str) {
        let _ = write!(self.buf, "<D:sync-token>{}</D:sync-token>", esc(token));
    }

    pub fn finish(mut self) -> String {
        self.buf.push_str("</D:multistatus>\n");
        self.buf
    }
}

/// A `DAV:error` body with one precondition element, e.g. `D:valid-sync-token` or a `need-privileges` tree.
pub fn error_body(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"{DAV}\" xmlns:C=\"{CARDDAV}\">{inner}</D:error>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_text() {
        let body = br#"<?xml version="1.0"?>
            <d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/">
              <d:prop><d:displayname/><cs:getctag/><x xmlns="urn:other">a &amp; b</x></d:prop>
            </d:propfind>"#;
        let root = parse(body).unwrap();
        assert!(root.is(DAV, "propfind"));
        let prop = root.child(DAV, "prop").unwrap();
        let names: Vec<_> = prop.children.iter().map(|c| (c.ns.as_str(), c.name.as_str())).collect();
        assert_eq!(
            names,
            [(DAV, "displayname"), (CALSERVER, "getctag"), ("urn:other", "x")]
        );
        assert_eq!(prop.children[2].text, "a & b");
    }

    #[test]
    fn refuses_dtd_entities_and_garbage() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
            <D:propfind xmlns:D="DAV:"><D:prop>&xxe;</D:prop></D:propfind>"#;
        assert_eq!(parse(xxe), Err(XmlError::Doctype));
        let bomb = br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        // An entity reference without a DTD is not expanded either.
        assert!(matches!(parse(b"<a>&custom;</a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a><b></a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a/><b/>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<p:a/>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"just text"), Err(XmlError::Malformed(_))));
        assert_eq!(parse(b"  \n"), Err(XmlError::Empty));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse(wide.as_bytes()), Err(XmlError::TooManyElements));
    }

    #[test]
    fn escaping_and_writer() {
        assert_eq!(esc("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&apos;");
        assert_eq!(esc("bell\u{7}"), "bell");
        assert_eq!(esc("FN:a\r\nEND"), "FN:a&#13;\nEND");
        let mut m = Multistatus::new();
        m.props(
            "/dav/books/all/",
            &[(PropName::new(DAV, "displayname"), "A &amp; B")],
            &[PropName::new("urn:x", "nope"), PropName::new("", "bare")],
        );
        m.status("/dav/books/all/x.vcf", 404);
        m.sync_token("urn:entradir:sync:t.5");
        let doc = m.finish();
        let root = parse(doc.as_bytes()).unwrap();
        assert!(root.is(DAV, "multistatus"));
        let r = root.children_named(DAV, "response").collect::<Vec<_>>();
        assert_eq!(r.len(), 2);
        let stats: Vec<_> = r[0].children_named(DAV, "propstat").collect();
        assert_eq!(stats[0].child(DAV, "prop").unwrap().children[0].text, "A & B");
        assert_eq!(stats[1].child(DAV, "status").unwrap().text, "HTTP/1.1 404 Not Found");
        assert!(stats[1].child(DAV, "prop").unwrap().child("urn:x", "nope").is_some());
        assert!(stats[1].child(DAV, "prop").unwrap().child("", "bare").is_some());
        assert_eq!(root.child(DAV, "sync-token").unwrap().text, "urn:entradir:sync:t.5");
    }
}
