//! The tests' XML reader: `roxmltree`, a strict, namespace-aware XML 1.0 parser that shares nothing with the
//! server (which parses requests with quick-xml and writes responses by hand), read into the server's plain
//! `Element` tree type.
#![allow(dead_code)]

/// The server's plain element tree type (a data holder; nothing of the server's parser is used). Its text is
/// the element's own text exactly as parsed, not trimmed: a card in `address-data` must keep its CRLFs.
pub use entradir::carddav::xml::Element;

/// Every element below `el` (depth first), `el` included.
pub fn descendants(el: &Element) -> Vec<&Element> {
    let mut out = vec![el];
    for c in &el.children {
        out.extend(descendants(c));
    }
    out
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
