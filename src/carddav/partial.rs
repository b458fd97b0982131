//! `address-data` restricted to named properties (RFC 6352 §10.4): `<C:address-data><C:prop name="FN"/>
//! <C:prop name="TEL"/></C:address-data>` returns cards with only those properties.
//!
//! Clients ask for this to keep listings small (a name and numbers without the photo). The filter works on the
//! already rendered card, so the whole-card path keeps its precomputed text and only these requests pay: content
//! lines are grouped with their folded continuations, a line is kept when its name (without a group prefix such
//! as `item1.`, compared case-insensitively) is selected, and kept lines are copied as rendered, folds included.
//! `BEGIN`, `VERSION`, `UID` and `END` are always kept: without them the result is not a card a parser accepts
//! (or one a client can match to the full card), and the RFC's own example keeps them as well.

use crate::carddav::xml::{Element, CARDDAV};

/// Properties every partial card keeps.
const ALWAYS: &[&str] = &["BEGIN", "VERSION", "UID", "END"];

/// Distinct property names a request may select; a card has a dozen, so more can only be an attempt to make
/// every card cost a long list scan.
const MAX_PROPS: usize = 64;

/// The properties an `address-data` element selects. Empty selections are represented as "whole card" by the
/// caller ([`Selection::from_address_data`] returns `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// (name, novalue): `novalue="yes"` asks for the property's name and parameters without its value.
    props: Vec<(String, bool)>,
}

impl Selection {
    /// The selection of a `CARDDAV:address-data` element: `None` when it names no property or has
    /// `CARDDAV:allprop`, which both mean the whole card.
    pub fn from_address_data(el: &Element) -> Option<Selection> {
        if el.child(CARDDAV, "allprop").is_some() {
            return None;
        }
        let mut props: Vec<(String, bool)> = Vec::new();
        for p in el.children_named(CARDDAV, "prop") {
            let Some(name) = p.attr("name").map(str::trim).filter(|n| !n.is_empty()) else {
                continue;
            };
            let novalue = p.attr("novalue").is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
            if !props.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) && props.len() < MAX_PROPS {
                props.push((name.to_string(), novalue));
            }
        }
        (!props.is_empty()).then_some(Selection { props })
    }

    /// `Some(novalue)` when a property of this name is selected.
    fn wants(&self, name: &str) -> Option<bool> {
        if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return Some(false);
        }
        self.props
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, novalue)| *novalue)
    }

    /// The card with only the selected content lines.
    pub fn apply(&self, card: &str) -> String {
        let mut out = String::with_capacity(card.len().min(1024));
        for line in logical_lines(card) {
            let unfolded = unfold(line);
            let Some(novalue) = self.wants(prop_name(&unfolded)) else {
                continue;
            };
            if novalue {
                push_without_value(&mut out, &unfolded);
            } else {
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push_str("\r\n");
                }
            }
        }
        out
    }
}

/// Content lines with their folded continuation lines (which start with a space or tab), each including its
/// line breaks.
fn logical_lines(card: &str) -> impl Iterator<Item = &str> {
    let mut rest = card;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].find('\n') {
                Some(nl) => {
                    end += nl + 1;
                    if !rest[end..].starts_with([' ', '\t']) {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// One logical line without folds and without its final line break.
fn unfold(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for (i, part) in line.split('\n').enumerate() {
        let part = part.strip_suffix('\r').unwrap_or(part);
        if i == 0 {
            out.push_str(part);
        } else if let Some(cont) = part.strip_prefix([' ', '\t']) {
            out.push_str(cont);
        }
    }
    out
}

/// The property name of an unfolded content line: up to the first `;` or `:`, without a `group.` prefix.
fn prop_name(line: &str) -> &str {
    let end = line.find([';', ':']).unwrap_or(line.len());
    let name = &line[..end];
    name.rsplit_once('.').map_or(name, |(_, n)| n)
}

/// `NAME;PARAMS:` of a content line (the value dropped), folded again. The value starts at the first `:` outside
/// a quoted parameter value.
fn push_without_value(out: &mut String, line: &str) {
    let mut quoted = false;
    let mut cut = line.len();
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                cut = i;
                break;
            }
            _ => {}
        }
    }
    let head = format!("{}:", &line[..cut]);
    crate::carddav::vcard::push_folded(out, &head);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::xml::parse;

    fn selection(xml: &str) -> Option<Selection> {
        let el = parse(xml.as_bytes()).unwrap();
        Selection::from_address_data(&el)
    }

    const CARD: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//x//EN\r\nUID:1234\r\nFN:Anna\r\n  Schmidt\r\n\
        item1.TEL;TYPE=\"work,voice\":+49 30 1\r\nNOTE:a: b\r\ntel;TYPE=CELL:+49 170 2\r\nEND:VCARD\r\n";

    #[test]
    fn keeps_selected_lines_with_their_folds_and_groups() {
        let s = selection(
            r#"<C:address-data xmlns:C="urn:ietf:params:xml:ns:carddav"><C:prop name="fn"/><C:prop name="TEL"/></C:address-data>"#,
        )
        .unwrap();
        assert_eq!(
            s.apply(CARD),
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:1234\r\nFN:Anna\r\n  Schmidt\r\n\
             item1.TEL;TYPE=\"work,voice\":+49 30 1\r\ntel;TYPE=CELL:+49 170 2\r\nEND:VCARD\r\n"
        );
    }

    #[test]
    fn novalue_keeps_name_and_parameters_only() {
        let s = selection(
            r#"<C:address-data xmlns:C="urn:ietf:params:xml:ns:carddav"><C:prop name="TEL" novalue="yes"/></C:address-data>"#,
        )
        .unwrap();
        let out = s.apply(CARD);
        assert!(out.contains("\r\nitem1.TEL;TYPE=\"work,voice\":\r\n"), "{out}");
        assert!(out.contains("\r\ntel;TYPE=CELL:\r\n"), "{out}");
        assert!(!out.contains("+49"), "{out}");
    }

    #[test]
    fn no_names_or_allprop_mean_the_whole_card() {
        let ns = r#"xmlns:C="urn:ietf:params:xml:ns:carddav""#;
        assert_eq!(selection(&format!("<C:address-data {ns}/>")), None);
        assert_eq!(
            selection(&format!(
                r#"<C:address-data {ns}><C:allprop/><C:prop name="FN"/></C:address-data>"#
            )),
            None
        );
        assert_eq!(
            selection(&format!(r#"<C:address-data {ns}><C:prop name=" "/></C:address-data>"#)),
            None
        );
    }

    #[test]
    fn a_card_without_final_line_break_stays_well_formed() {
        let s = Selection {
            props: vec![("FN".into(), false)],
        };
        assert_eq!(
            s.apply("BEGIN:VCARD\r\nFN:A\r\nEND:VCARD"),
            "BEGIN:VCARD\r\nFN:A\r\nEND:VCARD\r\n"
        );
    }
}
