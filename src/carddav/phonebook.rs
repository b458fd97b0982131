//! Vendor XML phone books for desk phones that do not speak CardDAV: Yealink, Snom (tbook v2), Cisco, Grandstream,
//! Fanvil and Gigaset, at `/phonebook/<vendor>.xml` (the first book) or `/phonebook/<book>/<vendor>.xml`.
//!
//! All formats come from one list of people per book (sorted by display name, people without a dialable
//! number left out, fax numbers left out because a phone cannot call them) with numbers in the configured
//! format. `?q=` filters by name (case-insensitive substring of display, given or family name) or, when it
//! contains digits, by number in any spelling. Cisco phones take at most 32 entries per object, so Cisco output
//! is paged (`?page=`, 1-based) with Next/Previous soft keys, and `cisco-search.xml` offers a search input.
//! Everything is UTF-8 and escaped; Fanvil firmware mis-parses even an escaped `&` in names, so there it becomes
//! `+`. Snom's tbook v2 carries a base64 `<photo>` per contact (Snom's local-directory XML documentation; the
//! phone shows it on calls), so Snom output includes the directory photo unless `?photos=0` asks to keep the
//! download small; the other formats have no photo field.

use crate::carddav::config::NumberFormat;
use crate::carddav::service::{encode_segment, response, text, Body, Ctx};
use crate::carddav::vcard::display_name;
use crate::carddav::xml::esc;
use crate::directory::phone::{digits, PhoneNormalizer};
use crate::directory::Entry;
use base64::Engine as _;
use hyper::{Response, StatusCode};
use std::fmt::Write as _;

const XML_CT: &str = "text/xml; charset=utf-8";
const CISCO_PAGE: usize = 32;
const VENDORS: &[&str] = &["yealink", "snom", "cisco", "grandstream", "fanvil", "gigaset"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Work,
    Mobile,
    Home,
}

/// One person as phone books show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub first: String,
    pub last: String,
    pub org: String,
    pub title: String,
    pub email: String,
    pub numbers: Vec<(Kind, String)>,
    /// The directory photo (JPEG as stored), for the formats that carry one.
    pub photo: Option<bytes::Bytes>,
}

impl Person {
    /// Given and family name for formats with separate fields; entries without them (shared mailboxes,
    /// devices) put the display name in the family-name field, where phones show it.
    fn first_last(&self) -> (&str, &str) {
        if self.first.is_empty() && self.last.is_empty() {
            ("", self.name.as_str())
        } else {
            (self.first.as_str(), self.last.as_str())
        }
    }
}

const NUMBER_ATTRS: &[(&str, Kind)] = &[
    ("telephoneNumber", Kind::Work),
    ("otherTelephone", Kind::Work),
    ("ipPhone", Kind::Work),
    ("mobile", Kind::Mobile),
    ("otherMobile", Kind::Mobile),
    ("homePhone", Kind::Home),
];

/// A number as configured: E.164, or dialable from inside the default country (foreign numbers stay E.164,
/// unparsable ones such as extensions stay as typed).
pub fn format_number(raw: &str, phones: &PhoneNormalizer, fmt: NumberFormat) -> String {
    let Some(e164) = phones.to_e164(raw) else {
        return raw.trim().to_string();
    };
    if fmt == NumberFormat::E164 {
        return e164;
    }
    // `prefix_key("0")` is the default country's calling code (a national trunk 0 becomes it).
    let cc = phones.prefix_key("0");
    if cc.is_empty() || !e164[1..].starts_with(&cc) {
        return e164;
    }
    match phonenumber::parse(None, &e164) {
        Ok(n) => {
            let national = n.format().mode(phonenumber::Mode::National).to_string();
            let d = digits(&national);
            if d.is_empty() {
                e164
            } else {
                d
            }
        }
        Err(_) => e164,
    }
}

/// One line of text for a phone's display: line breaks, tabs and other control characters become spaces (a
/// directory field can hold them; a phone list entry cannot show them, and some firmware mishandles the
/// `&#13;` XML escaping would produce).
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn person(e: &Entry, phones: &PhoneNormalizer, fmt: NumberFormat) -> Person {
    let s = |a: &str| one_line(e.first_str(a).unwrap_or_default());
    let mut numbers: Vec<(Kind, String)> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (attr, kind) in NUMBER_ATTRS {
        // A desk phone can only dial digits: free text in a number field ("ask reception") is left out.
        for raw in e
            .strs(attr)
            .map(str::trim)
            .filter(|r| r.chars().any(|c| c.is_ascii_digit()))
        {
            let key = phones.key(raw);
            if !keys.contains(&key) {
                keys.push(key);
                numbers.push((*kind, format_number(raw, phones, fmt)));
            }
        }
    }
    Person {
        name: one_line(&display_name(e)),
        first: s("givenName"),
        last: s("sn"),
        org: s("company"),
        title: s("title"),
        email: s("mail"),
        numbers,
        photo: ["thumbnailPhoto", "jpegPhoto"]
            .iter()
            .find_map(|a| e.values(a).first().filter(|v| !v.is_empty()).cloned()),
    }
}

/// Query parameters we understand.
#[derive(Debug, Default)]
struct Params {
    q: Option<String>,
    page: usize,
    /// Photos in the formats that carry them (`photos=0` leaves them out).
    photos: bool,
}

fn form_decode(s: &str) -> String {
    crate::carddav::service::percent_decode(&s.replace('+', " ")).unwrap_or_else(|| s.to_string())
}

fn params(query: Option<&str>) -> Params {
    let mut p = Params {
        q: None,
        page: 1,
        photos: true,
    };
    for pair in query.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "q" | "search" | "name" => {
                let v = form_decode(v).trim().to_string();
                if !v.is_empty() {
                    p.q = Some(v);
                }
            }
            "page" => p.page = v.parse::<usize>().unwrap_or(1).max(1),
            "photos" => p.photos = !matches!(v, "0" | "false" | "no" | "off"),
            _ => {}
        }
    }
    p
}

fn matches(p: &Person, e: &Entry, q: &str, phones: &PhoneNormalizer) -> bool {
    let d = digits(q);
    if d.len() >= 2 && q.chars().all(|c| c.is_ascii_digit() || " +-/().".contains(c)) {
        let prefix = phones.prefix_key(q);
        return crate::directory::phone::PHONE_ATTRS
            .iter()
            .flat_map(|a| e.strs(a))
            .map(|raw| phones.key(raw))
            .any(|k| k.contains(&d) || (!prefix.is_empty() && k.starts_with(&prefix)));
    }
    let q = q.to_lowercase();
    [&p.name, &p.first, &p.last]
        .iter()
        .any(|s| s.to_lowercase().contains(&q))
}

pub fn handle(ctx: &Ctx<'_>, path: &str, query: Option<&str>, base_url: &str) -> Response<Body> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (book, file) = match segs.as_slice() {
        ["phonebook"] => return index(ctx),
        ["phonebook", file] => (0, *file),
        ["phonebook", book, file] => match ctx.books.iter().position(|b| b.name == *book) {
            Some(i) => (i, *file),
            None => return text(StatusCode::NOT_FOUND, format!("no address book named {book:?}")),
        },
        _ => return text(StatusCode::NOT_FOUND, "no such phone book"),
    };
    let Some(vendor) = file.strip_suffix(".xml") else {
        return text(StatusCode::NOT_FOUND, "phone books end in .xml");
    };
    let p = params(query);
    let book_url = format!("{base_url}/phonebook/{}", encode_segment(&ctx.books[book].name));
    if vendor == "cisco-search" {
        return xml(cisco_search(&ctx.books[book].display_name, &book_url));
    }
    if !VENDORS.contains(&vendor) {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown phone book format {vendor:?}; known: {}", VENDORS.join(", ")),
        );
    }
    let view = ctx.book_view(book);
    let (phones, fmt) = (&ctx.snap.phones, ctx.cfg.phonebook_number_format);
    let mut people: Vec<Person> = view
        .members
        .iter()
        .filter_map(|e| {
            let person = person(e, phones, fmt);
            let keep = !person.numbers.is_empty() && p.q.as_deref().is_none_or(|q| matches(&person, e, q, phones));
            keep.then_some(person)
        })
        .collect();
    people.sort_by_cached_key(|p| (p.name.to_lowercase(), p.name.clone()));
    let title = &ctx.books[book].display_name;
    xml(match vendor {
        "yealink" => yealink(&people),
        "snom" => snom(&people, p.photos),
        "cisco" => cisco(&people, title, p.page, p.q.as_deref(), &book_url),
        "grandstream" => grandstream(&people),
        "fanvil" => fanvil(&people, title),
        _ => gigaset(&people),
    })
}

fn xml(body: String) -> Response<Body> {
    response(StatusCode::OK, XML_CT, body)
}

fn index(ctx: &Ctx<'_>) -> Response<Body> {
    let mut out = String::from("entradir phone books:\n");
    for b in &ctx.books {
        for v in VENDORS {
            let _ = writeln!(
                out,
                "/phonebook/{}/{v}.xml  ({})",
                encode_segment(&b.name),
                b.display_name
            );
        }
    }
    text(StatusCode::OK, out)
}

const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

pub fn yealink(people: &[Person]) -> String {
    let mut o = String::from(DECL);
    o.push_str("<YealinkIPPhoneDirectory>\n");
    for p in people {
        let _ = write!(o, "<DirectoryEntry><Name>{}</Name>", esc(&p.name));
        for (_, n) in &p.numbers {
            let _ = write!(o, "<Telephone>{}</Telephone>", esc(n));
        }
        o.push_str("</DirectoryEntry>\n");
    }
    o.push_str("</YealinkIPPhoneDirectory>\n");
    o
}

pub fn snom(people: &[Person], photos: bool) -> String {
    let mut o = String::from(DECL);
    o.push_str("<tbook e='2' version='2.0' complete='true'>\n");
    for p in people {
        let (first, last) = p.first_last();
        let _ = write!(
            o,
            "<contact fav=\"false\" vip=\"false\" blocked=\"false\"><first_name>{}</first_name><last_name>{}</last_name>\
             <organization>{}</organization><title>{}</title><email>{}</email>",
            esc(first),
            esc(last),
            esc(&p.org),
            esc(&p.title),
            esc(&p.email)
        );
        // Snom's example puts <photo> right before <numbers>; base64 needs no escaping.
        if let Some(photo) = p.photo.as_ref().filter(|_| photos) {
            o.push_str("<photo>");
            base64::engine::general_purpose::STANDARD.encode_string(photo, &mut o);
            o.push_str("</photo>");
        }
        o.push_str("<numbers>");
        for (k, n) in &p.numbers {
            let ty = match k {
                Kind::Work => "business",
                Kind::Mobile => "mobile",
                Kind::Home => "home",
            };
            let _ = write!(o, "<number no=\"{}\" type=\"{ty}\" outgoing_id=\"0\"/>", esc(n));
        }
        o.push_str("</numbers></contact>\n");
    }
    o.push_str("</tbook>\n");
    o
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub fn cisco(people: &[Person], title: &str, page: usize, q: Option<&str>, book_url: &str) -> String {
    // One DirectoryEntry per number (Cisco entries hold one Telephone); mobile numbers are marked.
    let rows: Vec<(String, &str)> = people
        .iter()
        .flat_map(|p| {
            p.numbers.iter().map(move |(k, n)| {
                let name = match k {
                    Kind::Work => p.name.clone(),
                    Kind::Mobile => format!("{} (M)", p.name),
                    Kind::Home => format!("{} (H)", p.name),
                };
                (name, n.as_str())
            })
        })
        .collect();
    let pages = rows.len().div_ceil(CISCO_PAGE).max(1);
    let page = page.min(pages);
    let mut o = String::from(DECL);
    o.push_str("<CiscoIPPhoneDirectory>\n");
    let _ = writeln!(o, "<Title>{}</Title>", esc(&truncate(title, 32)));
    let _ = writeln!(o, "<Prompt>Page {page} of {pages}</Prompt>");
    for (name, number) in rows.iter().skip((page - 1) * CISCO_PAGE).take(CISCO_PAGE) {
        let _ = writeln!(
            o,
            "<DirectoryEntry><Name>{}</Name><Telephone>{}</Telephone></DirectoryEntry>",
            esc(&truncate(name, 32)),
            esc(&truncate(number, 32))
        );
    }
    let qs = q.map(|q| format!("&q={}", encode_segment(q))).unwrap_or_default();
    let keys: Vec<(&str, String)> = [
        Some(("Dial", "SoftKey:Dial".to_string())),
        Some(("EditDial", "SoftKey:EditDial".to_string())),
        (page < pages).then(|| ("Next", format!("{book_url}/cisco.xml?page={}{qs}", page + 1))),
        (page > 1).then(|| ("Prev", format!("{book_url}/cisco.xml?page={}{qs}", page - 1))),
        Some(("Search", format!("{book_url}/cisco-search.xml"))),
        Some(("Exit", "SoftKey:Exit".to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (pos, (name, url)) in keys.iter().enumerate() {
        let _ = writeln!(
            o,
            "<SoftKeyItem><Name>{name}</Name><URL>{}</URL><Position>{}</Position></SoftKeyItem>",
            esc(url),
            pos + 1
        );
    }
    o.push_str("</CiscoIPPhoneDirectory>\n");
    o
}

fn cisco_search(title: &str, book_url: &str) -> String {
    format!(
        "{DECL}<CiscoIPPhoneInput>\n<Title>{}</Title>\n<Prompt>Name or number</Prompt>\n<URL>{}/cisco.xml</URL>\n\
         <InputItem><DisplayName>Name or number</DisplayName><QueryStringParam>q</QueryStringParam>\
         <DefaultValue></DefaultValue><InputFlags>A</InputFlags></InputItem>\n</CiscoIPPhoneInput>\n",
        esc(&truncate(title, 32)),
        esc(book_url)
    )
}

pub fn grandstream(people: &[Person]) -> String {
    let mut o = String::from(DECL);
    o.push_str("<AddressBook>\n");
    for p in people {
        let (first, last) = p.first_last();
        let _ = write!(
            o,
            "<Contact><LastName>{}</LastName><FirstName>{}</FirstName>",
            esc(last),
            esc(first)
        );
        for (k, n) in &p.numbers {
            let ty = match k {
                Kind::Work => "Work",
                Kind::Mobile => "Cell",
                Kind::Home => "Home",
            };
            let _ = write!(
                o,
                "<Phone type=\"{ty}\"><phonenumber>{}</phonenumber><accountindex>1</accountindex></Phone>",
                esc(n)
            );
        }
        let _ = writeln!(
            o,
            "<Company>{}</Company><Job>{}</Job><Mail>{}</Mail></Contact>",
            esc(&p.org),
            esc(&p.title),
            esc(&p.email)
        );
    }
    o.push_str("</AddressBook>\n");
    o
}

pub fn fanvil(people: &[Person], title: &str) -> String {
    let mut o = String::from(DECL);
    o.push_str("<FanvilIPPhoneDirectory clearlight=\"true\">\n");
    let _ = writeln!(
        o,
        "<Title>{}</Title>\n<Prompt>Prompt</Prompt>",
        esc(&title.replace('&', "+"))
    );
    for p in people {
        let _ = write!(o, "<DirectoryEntry><Name>{}</Name>", esc(&p.name.replace('&', "+")));
        let work = p.numbers.iter().filter(|(k, _)| *k == Kind::Work).map(|(_, n)| n);
        let mobile = p.numbers.iter().filter(|(k, _)| *k == Kind::Mobile).map(|(_, n)| n);
        let other = p.numbers.iter().filter(|(k, _)| *k == Kind::Home).map(|(_, n)| n);
        for (tag, mut it) in [
            ("Telephone", Box::new(work) as Box<dyn Iterator<Item = &String>>),
            ("Mobile", Box::new(mobile)),
            ("Other", Box::new(other)),
        ] {
            if let Some(n) = it.next() {
                let _ = write!(o, "<{tag}>{}</{tag}>", esc(n));
            }
        }
        o.push_str("</DirectoryEntry>\n");
    }
    o.push_str("</FanvilIPPhoneDirectory>\n");
    o
}

pub fn gigaset(people: &[Person]) -> String {
    let mut o = String::from(DECL);
    o.push_str("<!DOCTYPE LocalDirectory>\n<list>\n");
    for p in people {
        let (first, last) = p.first_last();
        let pick = |kind: Kind, n: usize| {
            p.numbers
                .iter()
                .filter(|(k, _)| *k == kind)
                .nth(n)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let _ = writeln!(
            o,
            "<entry surname=\"{}\" name=\"{}\" office1=\"{}\" office2=\"{}\" mobile1=\"{}\" mobile2=\"{}\" home1=\"{}\" home2=\"{}\"/>",
            esc(last),
            esc(first),
            esc(pick(Kind::Work, 0)),
            esc(pick(Kind::Work, 1)),
            esc(pick(Kind::Mobile, 0)),
            esc(pick(Kind::Mobile, 1)),
            esc(pick(Kind::Home, 0)),
            esc(pick(Kind::Home, 1)),
        );
    }
    o.push_str("</list>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::xml::parse;

    fn people() -> Vec<Person> {
        vec![Person {
            name: "Smith & Sons <\"Q\"> 'X'".into(),
            first: String::new(),
            last: String::new(),
            org: "A&B".into(),
            title: String::new(),
            email: String::new(),
            numbers: vec![
                (Kind::Work, "+49301234567".into()),
                (Kind::Mobile, "+491711234567".into()),
            ],
            photo: Some(bytes::Bytes::from_static(b"\xff\xd8jpeg\xff\xd9")),
        }]
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(one_line(" Doe,\r\nJane\t X\u{7} "), "Doe, Jane X");
        assert_eq!(one_line("Plain Name"), "Plain Name");
    }

    #[test]
    fn numbers_in_national_or_e164() {
        let p = PhoneNormalizer::new("DE").unwrap();
        assert_eq!(format_number("030 1234567", &p, NumberFormat::E164), "+49301234567");
        assert_eq!(
            format_number("+49 30 1234567", &p, NumberFormat::National),
            "0301234567"
        );
        assert_eq!(
            format_number("+1 425 555 0100", &p, NumberFormat::National),
            "+14255550100"
        );
        assert_eq!(format_number("ext. 12", &p, NumberFormat::National), "ext. 12");
    }

    #[test]
    fn every_format_escapes_names() {
        // Our strict parser takes all but Gigaset (which carries a DOCTYPE line by format definition).
        for doc in [
            yealink(&people()),
            snom(&people(), true),
            grandstream(&people()),
            fanvil(&people(), "A&B"),
        ] {
            let root = parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}: {doc}"));
            assert!(!root.name.is_empty());
        }
        assert!(yealink(&people()).contains("<Name>Smith &amp; Sons &lt;&quot;Q&quot;&gt; &apos;X&apos;</Name>"));
        let f = fanvil(&people(), "A&B");
        assert!(f.contains("<Name>Smith + Sons") && !f.contains("&amp;"), "{f}");
        let g = gigaset(&people());
        let body = g.split_once("<!DOCTYPE LocalDirectory>\n").map(|(_, b)| b).unwrap();
        let root = parse(body.as_bytes()).unwrap();
        let entry = root.child("", "entry").unwrap();
        assert_eq!(entry.attr("surname"), Some("Smith & Sons <\"Q\"> 'X'"));
        assert_eq!(entry.attr("mobile1"), Some("+491711234567"));
        let sn = parse(snom(&people(), true).as_bytes()).unwrap();
        let contact = sn.child("", "contact").unwrap();
        let photo = &contact.child("", "photo").unwrap().text;
        let decoded = base64::engine::general_purpose::STANDARD.decode(photo).unwrap();
        assert_eq!(decoded, b"\xff\xd8jpeg\xff\xd9");
        let names: Vec<&str> = contact.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "first_name",
                "last_name",
                "organization",
                "title",
                "email",
                "photo",
                "numbers"
            ]
        );
        assert!(!snom(&people(), false).contains("<photo>"));
        let c = cisco(&people(), "Book", 9, Some("a&b"), "http://h");
        let root = parse(c.as_bytes()).unwrap();
        assert_eq!(root.child("", "Prompt").unwrap().text, "Page 1 of 1");
        assert_eq!(root.children_named("", "DirectoryEntry").count(), 2);
    }
}
