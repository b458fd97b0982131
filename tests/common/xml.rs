//! The tests' XML reader: `roxmltree`, a strict, namespace-aware XML 1.0 parser that shares nothing with the
//! server (which parses requests with quick-xml and writes responses by hand), turned into a small owned tree.
#![allow(dead_code)]

/// One element: namespace URI (empty when none), local name, attributes by local name, children, and its own
/// text exactly as parsed (not trimmed: a card in `address-data` must keep its CRLFs).
#[derive(Debug, Clone, Default)]
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

    /// Every element below this one (depth first), this one included.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.descendants());
        }
        out
    }
}

/// Parse a whole document; anything that is not well-formed XML (or declares a DTD) is an error.
pub fn parse(body: &[u8]) -> Result<Element, String> {
    parse_with(body, false)
}

/// [`parse`] for documents that carry a `<!DOCTYPE>` (Gigaset's phone book format does).
pub fn parse_allowing_doctype(body: &[u8]) -> Result<Element, String> {
    parse_with(body, true)
}

fn parse_with(body: &[u8], allow_dtd: bool) -> Result<Element, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let opt = roxmltree::ParsingOptions {
        allow_dtd,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opt).map_err(|e| e.to_string())?;
    Ok(convert(doc.root_element()))
}

fn convert(node: roxmltree::Node<'_, '_>) -> Element {
    let mut el = Element {
        ns: node.tag_name().namespace().unwrap_or_default().to_string(),
        name: node.tag_name().name().to_string(),
        attrs: node
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect(),
        ..Default::default()
    };
    for child in node.children() {
        if child.is_element() {
            el.children.push(convert(child));
        } else if child.is_text() {
            el.text.push_str(child.text().unwrap_or_default());
        }
    }
    if !el.children.is_empty() && el.text.trim().is_empty() {
        // Indentation between child elements.
        el.text.clear();
    }
    el
}
