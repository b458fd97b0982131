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
//!
//! Parsing and formatting every number is what a phone book costs (tens of milliseconds for a few thousand
//! people), and a fleet of phones asks for the same few books of the same snapshot over and over, a Cisco phone
//! once per page of 32. So each book is prepared once per configuration and snapshot version ([`Prepared`]:
//! people with formatted numbers, sorted, with their search keys) and each format rendered once from that, with
//! the position of every entry; a request slices (a Cisco page) or filters (`?q=`) the rendered entries. A
//! bounded [`Cache`] keeps them, and drops those of older snapshots.

use crate::carddav::config::{CardDavConfig, NumberFormat};
use crate::carddav::service::{encode_segment, response, text, Body, Ctx};
use crate::carddav::vcard::display_name;
use crate::carddav::xml::esc;
use crate::directory::phone::{digits, PhoneNormalizer};
use crate::directory::Entry;
use base64::Engine as _;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

const XML_CT: &str = "text/xml; charset=utf-8";
const CISCO_PAGE: usize = 32;
pub(crate) const VENDORS: &[&str] = &["yealink", "snom", "cisco", "grandstream", "fanvil", "gigaset"];

/// What a number is, as phone books label it (and as `carddav.phonebook_numbers` orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Work,
    Mobile,
    Home,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Work => "work",
            Kind::Mobile => "mobile",
            Kind::Home => "home",
        }
    }

    /// `"work"`, `"mobile"`, `"home"` (any case).
    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Work, Kind::Mobile, Kind::Home]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The kind of a directory phone attribute, `None` for those phone books never list (pager, fax).
    fn of_attr(attr: &str) -> Option<Kind> {
        NUMBER_ATTRS
            .iter()
            .chain(&[("otherHomePhone", Kind::Home), ("otherIpPhone", Kind::Work)])
            .find(|(a, _)| a.eq_ignore_ascii_case(attr))
            .map(|(_, k)| *k)
    }
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
    let Some(number) = phones.to_e164(raw) else {
        return raw.trim().to_string();
    };
    // An extension stays in the form the directory writes it (` ext. 89`), after the base number as formatted.
    match number.split_once(" ext. ") {
        Some((base, ext)) => format!("{} ext. {ext}", format_valid(base.to_string(), phones, fmt)),
        None => format_valid(number, phones, fmt),
    }
}

fn format_valid(e164: String, phones: &PhoneNormalizer, fmt: NumberFormat) -> String {
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
pub(crate) fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A person with the numbers of the kinds in `order`, in that order; a number listed twice (the same work and
/// mobile number, or two spellings of one) is listed once, under its first kind.
fn person(e: &Entry, phones: &PhoneNormalizer, fmt: NumberFormat, order: &[Kind]) -> Person {
    let s = |a: &str| one_line(e.first_str(a).unwrap_or_default());
    let mut numbers: Vec<(Kind, String)> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let attrs = order
        .iter()
        .flat_map(|want| NUMBER_ATTRS.iter().filter(move |(_, k)| k == want));
    for (attr, kind) in attrs {
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
            .find_map(|a| e.values(a).bytes(0).filter(|v| !v.is_empty())),
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

/// What a phone-book URL asks for, parsed on the async side so that a request that needs work can be handed to
/// a blocking thread whole.
pub(crate) struct BookRequest {
    book: usize,
    variant: Variant,
    params: Params,
    /// `scheme://host/phonebook/<book>`, for Cisco's soft keys.
    book_url: String,
}

/// Parse a `/phonebook/…` request. Answers that need no book (the index, Cisco's search form, unknown names)
/// come back as `Err` and are sent as they are.
pub(crate) fn request(
    ctx: &Ctx<'_>,
    path: &str,
    query: Option<&str>,
    base_url: &str,
) -> Result<BookRequest, Box<Response<Body>>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (book, file) = match segs.as_slice() {
        ["phonebook"] => return Err(Box::new(index(ctx))),
        ["phonebook", file] => (0, *file),
        ["phonebook", book, file] => match ctx.books.iter().position(|b| b.name == *book) {
            Some(i) => (i, *file),
            None => {
                return Err(Box::new(text(
                    StatusCode::NOT_FOUND,
                    format!("no address book named {book:?}"),
                )))
            }
        },
        _ => return Err(Box::new(text(StatusCode::NOT_FOUND, "no such phone book"))),
    };
    let Some(vendor) = file.strip_suffix(".xml") else {
        return Err(Box::new(text(StatusCode::NOT_FOUND, "phone books end in .xml")));
    };
    let params = params(query);
    let book_url = format!("{base_url}/phonebook/{}", encode_segment(&ctx.books[book].name));
    if vendor == "cisco-search" {
        return Err(Box::new(xml(cisco_search(&ctx.books[book].display_name, &book_url))));
    }
    let variant = match vendor {
        "yealink" => Variant::Yealink,
        "snom" if params.photos => Variant::Snom,
        "snom" => Variant::SnomNoPhotos,
        "cisco" => Variant::Cisco,
        "grandstream" => Variant::Grandstream,
        "fanvil" => Variant::Fanvil,
        "gigaset" => Variant::Gigaset,
        _ => {
            return Err(Box::new(text(
                StatusCode::NOT_FOUND,
                format!("unknown phone book format {vendor:?}; known: {}", VENDORS.join(", ")),
            )))
        }
    };
    Ok(BookRequest {
        book,
        variant,
        params,
        book_url,
    })
}

/// The answer when it is a slice of what is already prepared: the whole book or a Cisco page, without a
/// search (a search scans every person). `None` when the book or the format is not prepared yet.
pub(crate) fn answer_prepared(ctx: &Ctx<'_>, r: &BookRequest) -> Option<Response<Body>> {
    if r.params.q.is_some() {
        return None;
    }
    let slot = ctx.state.phonebooks.ready(&key(ctx, r.book))?;
    let prepared = slot.get()?;
    let rendered = prepared.rendered[r.variant as usize].get()?;
    Some(slice(ctx, r, prepared, rendered))
}

/// The answer, preparing the book and rendering the format first where needed (on a blocking thread: parsing
/// every number of a large book takes tens of milliseconds).
pub(crate) fn answer(ctx: &Ctx<'_>, r: &BookRequest) -> Response<Body> {
    #[cfg(test)]
    gate::pass(&ctx.books[r.book].name);
    let slot = ctx.state.phonebooks.slot(key(ctx, r.book));
    let prepared = slot.get_or_init(|| prepare(ctx, r.book));
    let title = &ctx.books[r.book].display_name;
    let rendered = prepared.rendered[r.variant as usize].get_or_init(|| render(r.variant, &prepared.people, title));
    slice(ctx, r, prepared, rendered)
}

fn key(ctx: &Ctx<'_>, book: usize) -> Key {
    Key {
        cfg: ctx.cfg.clone(),
        book,
        version: ctx.snap.version,
        collation: ctx.snap.collation.clone(),
    }
}

fn prepare(ctx: &Ctx<'_>, book: usize) -> Prepared {
    let view = ctx.book_view(book);
    let (phones, fmt) = (&ctx.snap.phones, ctx.cfg.phonebook_number_format);
    let order = &ctx.cfg.phonebook_numbers;
    let mut people: Vec<(Person, Keys)> = view
        .members
        .iter()
        .filter_map(|e| {
            let person = person(e, phones, fmt, order);
            (!person.numbers.is_empty()).then(|| {
                let keys = Keys::of(&person, e, phones, order);
                (person, keys)
            })
        })
        .collect();
    // In the directory's collation, as sorted LDAP results; a stable sort: a search's subset keeps the order
    // the whole book has.
    let collation = &ctx.snap.collation;
    people.sort_by_cached_key(|(p, _)| (collation.key(&p.name), p.name.clone()));
    let (people, keys) = people.into_iter().unzip();
    Prepared {
        people,
        keys,
        rendered: Default::default(),
    }
}

/// A book's people as phone books show them, in one configuration and snapshot: numbers formatted, sorted by
/// name, with what a search compares, and each format's document rendered on first use.
pub(crate) struct Prepared {
    people: Vec<Person>,
    keys: Vec<Keys>,
    rendered: [OnceLock<Rendered>; Variant::COUNT],
}

/// What `?q=` compares for one person: names in lower case, and every number (fax too) as a digit key, except
/// those of a kind the phone books do not list (a home number left out must not be found either).
struct Keys {
    names: [String; 3],
    numbers: Vec<String>,
}

impl Keys {
    fn of(p: &Person, e: &Entry, phones: &PhoneNormalizer, order: &[Kind]) -> Keys {
        Keys {
            names: [&p.name, &p.first, &p.last].map(|s| s.to_lowercase()),
            numbers: crate::directory::phone::PHONE_ATTRS
                .iter()
                .filter(|a| Kind::of_attr(a).is_none_or(|k| order.contains(&k)))
                .flat_map(|a| e.strs(a))
                .map(|raw| phones.key(raw))
                .collect(),
        }
    }

    fn matches(&self, q: &str, phones: &PhoneNormalizer) -> bool {
        let d = digits(q);
        if d.len() >= 2 && q.chars().all(|c| c.is_ascii_digit() || " +-/().".contains(c)) {
            let prefix = phones.prefix_key(q);
            return self
                .numbers
                .iter()
                .any(|k| k.contains(&d) || (!prefix.is_empty() && k.starts_with(&prefix)));
        }
        let q = q.to_lowercase();
        self.names.iter().any(|s| s.contains(&q))
    }
}

/// The formats, each rendered once per prepared book (Snom twice: with and without photos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Yealink,
    Snom,
    SnomNoPhotos,
    Cisco,
    Grandstream,
    Fanvil,
    Gigaset,
}

impl Variant {
    const COUNT: usize = 7;

    /// The name in URLs and in `carddav.phonebook_max_entries`.
    fn vendor(self) -> &'static str {
        match self {
            Variant::Yealink => "yealink",
            Variant::Snom | Variant::SnomNoPhotos => "snom",
            Variant::Cisco => "cisco",
            Variant::Grandstream => "grandstream",
            Variant::Fanvil => "fanvil",
            Variant::Gigaset => "gigaset",
        }
    }
}

/// One format's rendering of a whole book.
///
/// `doc` is the complete document, except for Cisco, where it holds only the entry rows (title, page prompt
/// and soft keys depend on the request). Row `r` is `doc[rows[r]..rows[r + 1]]`; person `i` owns rows
/// `first_row[i]..first_row[i + 1]` (one per person, except Cisco's one per number). Before the first row is
/// the header, after the last the footer.
struct Rendered {
    doc: Bytes,
    rows: Vec<usize>,
    first_row: Vec<usize>,
}

impl Rendered {
    fn header(&self) -> &[u8] {
        &self.doc[..self.rows[0]]
    }

    fn footer(&self) -> &[u8] {
        &self.doc[self.rows[self.rows.len() - 1]..]
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.doc[self.rows[r]..self.rows[r + 1]]
    }

    fn person_rows(&self, i: usize) -> std::ops::Range<usize> {
        self.first_row[i]..self.first_row[i + 1]
    }

    fn row_count(&self) -> usize {
        self.rows.len() - 1
    }
}

fn render(variant: Variant, people: &[Person], title: &str) -> Rendered {
    let mut o = String::new();
    if variant != Variant::Cisco {
        o.push_str(DECL);
    }
    match variant {
        Variant::Yealink => o.push_str("<YealinkIPPhoneDirectory>\n"),
        Variant::Snom | Variant::SnomNoPhotos => o.push_str("<tbook e='2' version='2.0' complete='true'>\n"),
        Variant::Cisco => {}
        Variant::Grandstream => o.push_str("<AddressBook>\n"),
        Variant::Fanvil => {
            o.push_str("<FanvilIPPhoneDirectory clearlight=\"true\">\n");
            let _ = writeln!(
                o,
                "<Title>{}</Title>\n<Prompt>Prompt</Prompt>",
                esc(&title.replace('&', "+"))
            );
        }
        Variant::Gigaset => o.push_str("<!DOCTYPE LocalDirectory>\n<list>\n"),
    }
    let mut rows = Vec::with_capacity(people.len() + 1);
    let mut first_row = Vec::with_capacity(people.len() + 1);
    for p in people {
        first_row.push(rows.len());
        if variant == Variant::Cisco {
            for row in cisco_rows(p) {
                rows.push(o.len());
                let _ = writeln!(
                    o,
                    "<DirectoryEntry><Name>{}</Name><Telephone>{}</Telephone></DirectoryEntry>",
                    esc(&truncate(&row.0, 32)),
                    esc(&truncate(row.1, 32))
                );
            }
            continue;
        }
        rows.push(o.len());
        match variant {
            Variant::Yealink => yealink_entry(&mut o, p),
            Variant::Snom => snom_entry(&mut o, p, true),
            Variant::SnomNoPhotos => snom_entry(&mut o, p, false),
            Variant::Cisco => {}
            Variant::Grandstream => grandstream_entry(&mut o, p),
            Variant::Fanvil => fanvil_entry(&mut o, p),
            Variant::Gigaset => gigaset_entry(&mut o, p),
        }
    }
    first_row.push(rows.len());
    rows.push(o.len());
    o.push_str(match variant {
        Variant::Yealink => "</YealinkIPPhoneDirectory>\n",
        Variant::Snom | Variant::SnomNoPhotos => "</tbook>\n",
        Variant::Cisco => "",
        Variant::Grandstream => "</AddressBook>\n",
        Variant::Fanvil => "</FanvilIPPhoneDirectory>\n",
        Variant::Gigaset => "</list>\n",
    });
    Rendered {
        doc: Bytes::from(o),
        rows,
        first_row,
    }
}

/// Cut the request's answer out of a rendered book.
fn slice(ctx: &Ctx<'_>, r: &BookRequest, prepared: &Prepared, rendered: &Rendered) -> Response<Body> {
    let phones = &ctx.snap.phones;
    let wanted: Option<Vec<usize>> = r.params.q.as_deref().map(|q| {
        (0..prepared.people.len())
            .filter(|&i| prepared.keys[i].matches(q, phones))
            .collect()
    });
    if r.variant == Variant::Cisco {
        let rows: Vec<usize> = match &wanted {
            Some(people) => people.iter().flat_map(|&i| rendered.person_rows(i)).collect(),
            None => (0..rendered.row_count()).collect(),
        };
        let title = &ctx.books[r.book].display_name;
        return xml(cisco_page(rendered, &rows, title, &r.params, &r.book_url));
    }
    // A phone with a limit gets the book in pages of that many people (`?page=`, from 1); without `?page` the
    // first. A page past the end is an empty list: the book shrank since the phone was set up.
    let cap = ctx.cfg.max_entries(r.variant.vendor());
    let total = wanted.as_ref().map_or(prepared.people.len(), Vec::len);
    if cap > 0 && total > cap && wanted.is_none() {
        ctx.state
            .phonebooks
            .warn_capped(&ctx.books[r.book].name, r.variant.vendor(), total, cap);
    }
    let paged = cap > 0 && (total > cap || r.params.page > 1);
    let range = if paged {
        let start = (r.params.page - 1).saturating_mul(cap).min(total);
        start..(start + cap).min(total)
    } else {
        0..total
    };
    if wanted.is_none() && range == (0..prepared.people.len()) {
        return xml(rendered.doc.clone());
    }
    let people: Vec<usize> = match wanted {
        Some(w) => w[range].to_vec(),
        None => range.collect(),
    };
    let mut o = Vec::with_capacity(rendered.header().len() + rendered.footer().len() + people.len() * 128);
    o.extend_from_slice(rendered.header());
    for i in people {
        for row in rendered.person_rows(i) {
            o.extend_from_slice(rendered.row(row));
        }
    }
    o.extend_from_slice(rendered.footer());
    xml(o)
}

/// Prepared books, a few per snapshot: a fleet of phones asks for the same handful of books and formats.
#[derive(Default)]
pub(crate) struct Cache {
    slots: Mutex<Vec<(Key, Arc<OnceLock<Prepared>>)>>,
    /// (book, vendor, pages) already reported as over the vendor's cap: said when it changes, not per request.
    capped: Mutex<HashSet<(String, &'static str, usize)>>,
}

/// What a prepared book depends on: the configuration (books, number format and order, who is listed), the book,
/// the snapshot and its collation (a reload that changes only the order keeps the version). The configuration
/// and collation are held, so their addresses cannot be reused by others while cached.
struct Key {
    cfg: Arc<CardDavConfig>,
    book: usize,
    version: u64,
    collation: Arc<crate::directory::collation::Collation>,
}

impl PartialEq for Key {
    fn eq(&self, o: &Key) -> bool {
        Arc::ptr_eq(&self.cfg, &o.cfg)
            && self.book == o.book
            && self.version == o.version
            && Arc::ptr_eq(&self.collation, &o.collation)
    }
}

const CACHE_SLOTS: usize = 16;

type Slots = Vec<(Key, Arc<OnceLock<Prepared>>)>;

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The prepared book, if it is complete.
    fn ready(&self, k: &Key) -> Option<Arc<OnceLock<Prepared>>> {
        let slots = self.lock();
        slots
            .iter()
            .find(|(key, slot)| key == k && slot.get().is_some())
            .map(|(_, slot)| slot.clone())
    }

    /// The book's slot, new and empty if it is not cached. One request prepares it; others asking for the
    /// same book meanwhile wait for that one (`OnceLock`) instead of preparing it again.
    fn slot(&self, k: Key) -> Arc<OnceLock<Prepared>> {
        let dropped;
        let slot = {
            let mut slots = self.lock();
            if let Some(i) = slots.iter().position(|(key, _)| *key == k) {
                let hit = slots.remove(i);
                let slot = hit.1.clone();
                slots.insert(0, hit);
                return slot;
            }
            // Books of older snapshots are never asked for again.
            let version = k.version;
            let (mut old, keep): (Slots, Slots) = std::mem::take(&mut *slots)
                .into_iter()
                .partition(|(key, _)| key.version < version);
            *slots = keep;
            let slot = Arc::new(OnceLock::new());
            slots.insert(0, (k, slot.clone()));
            if slots.len() > CACHE_SLOTS {
                old.extend(slots.drain(CACHE_SLOTS..));
            }
            dropped = old;
            slot
        };
        // Freed outside the lock: a prepared book with photos is megabytes.
        drop(dropped);
        slot
    }

    /// Forget books of snapshots older than `version` (the warm-up after a new snapshot calls this).
    pub(crate) fn evict_older(&self, version: u64) {
        let dropped: Slots = {
            let mut slots = self.lock();
            let (old, keep) = std::mem::take(&mut *slots)
                .into_iter()
                .partition(|(key, _)| key.version < version);
            *slots = keep;
            old
        };
        drop(dropped);
    }

    /// Forget everything (after a configuration change).
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        drop(dropped);
        self.capped.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Tell the admin, once per book, vendor and page count, that phones of this vendor get the book in pages.
    fn warn_capped(&self, book: &str, vendor: &'static str, people: usize, cap: usize) {
        let pages = people.div_ceil(cap);
        let mut seen = self.capped.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 256 {
            seen.clear();
        }
        if seen.insert((book.to_string(), vendor, pages)) {
            tracing::warn!(
                book,
                vendor,
                people,
                cap,
                pages,
                "phone book is larger than this vendor's phones hold: served in pages of {cap} (…/{vendor}.xml is \
                 page 1, add ?page=2 … as further directory URLs), or use a smaller group book or a search"
            );
        }
    }
}

fn xml(body: impl Into<Bytes>) -> Response<Body> {
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

fn yealink_entry(o: &mut String, p: &Person) {
    let _ = write!(o, "<DirectoryEntry><Name>{}</Name>", esc(&p.name));
    for (_, n) in &p.numbers {
        let _ = write!(o, "<Telephone>{}</Telephone>", esc(n));
    }
    o.push_str("</DirectoryEntry>\n");
}

fn snom_entry(o: &mut String, p: &Person, photos: bool) {
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
        base64::engine::general_purpose::STANDARD.encode_string(photo, o);
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

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Cisco's entries hold one Telephone each: one row per number, mobile and home numbers marked.
fn cisco_rows(p: &Person) -> impl Iterator<Item = (String, &str)> {
    p.numbers.iter().map(move |(k, n)| {
        let name = match k {
            Kind::Work => p.name.clone(),
            Kind::Mobile => format!("{} (M)", p.name),
            Kind::Home => format!("{} (H)", p.name),
        };
        (name, n.as_str())
    })
}

/// One page of Cisco rows (`rows` indexes `rendered`'s rows), with the soft keys that page on.
fn cisco_page(rendered: &Rendered, rows: &[usize], title: &str, p: &Params, book_url: &str) -> String {
    let pages = rows.len().div_ceil(CISCO_PAGE).max(1);
    let page = p.page.min(pages);
    let mut o = String::from(DECL);
    o.push_str("<CiscoIPPhoneDirectory>\n");
    let _ = writeln!(o, "<Title>{}</Title>", esc(&truncate(title, 32)));
    let _ = writeln!(o, "<Prompt>Page {page} of {pages}</Prompt>");
    for &r in rows.iter().skip((page - 1) * CISCO_PAGE).take(CISCO_PAGE) {
        // Rows are rendered from `str`s.
        o.push_str(std::str::from_utf8(rendered.row(r)).unwrap_or_default());
    }
    let qs =
        p.q.as_deref()
            .map(|q| format!("&q={}", encode_segment(q)))
            .unwrap_or_default();
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

fn grandstream_entry(o: &mut String, p: &Person) {
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

fn fanvil_entry(o: &mut String, p: &Person) {
    let _ = write!(o, "<DirectoryEntry><Name>{}</Name>", esc(&p.name.replace('&', "+")));
    // One field per kind, in the configured order (the first number of each kind).
    let mut done: Vec<Kind> = Vec::with_capacity(3);
    for (kind, n) in &p.numbers {
        if done.contains(kind) {
            continue;
        }
        done.push(*kind);
        let tag = match kind {
            Kind::Work => "Telephone",
            Kind::Mobile => "Mobile",
            Kind::Home => "Other",
        };
        let _ = write!(o, "<{tag}>{}</{tag}>", esc(n));
    }
    o.push_str("</DirectoryEntry>\n");
}

fn gigaset_entry(o: &mut String, p: &Person) {
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

/// Holds requests for the book named [`gate::BOOK`] until a test opens it: work that is "in flight" for as
/// long as the test needs, without timing.
#[cfg(test)]
pub(crate) mod gate {
    use std::sync::{Condvar, Mutex};

    pub(crate) const BOOK: &str = "gated";
    static OPEN: Mutex<bool> = Mutex::new(false);
    static OPENED: Condvar = Condvar::new();

    pub(crate) fn pass(book: &str) {
        if book != BOOK {
            return;
        }
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = OPENED.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn open() {
        *OPEN.lock().unwrap_or_else(|p| p.into_inner()) = true;
        OPENED.notify_all();
    }
}

/// The phone books answered the way they were before books were prepared and cached: every request builds
/// and filters the people anew and writes a whole document for just them. The vendor formats themselves are
/// production's (`render`, `cisco_page`), written once; what this holds the prepared path to, byte for byte, is
/// what preparation changed: cutting rows out of a rendered book, the prepared search keys, paging.
#[cfg(test)]
mod reference {
    use super::{cisco_page, cisco_search, params, person, render, Person, Variant, VENDORS, XML_CT};
    use crate::carddav::service::{encode_segment, response, text, Body, Ctx};
    use crate::directory::phone::{digits, PhoneNormalizer};
    use crate::directory::Entry;
    use hyper::{Response, StatusCode};
    use std::fmt::Write as _;

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

    pub(super) fn handle(ctx: &Ctx<'_>, path: &str, query: Option<&str>, base_url: &str) -> Response<Body> {
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
                let person = person(e, phones, fmt, &ctx.cfg.phonebook_numbers);
                let keep = !person.numbers.is_empty() && p.q.as_deref().is_none_or(|q| matches(&person, e, q, phones));
                keep.then_some(person)
            })
            .collect();
        let collation = &ctx.snap.collation;
        people.sort_by_cached_key(|p| (collation.key(&p.name), p.name.clone()));
        let title = &ctx.books[book].display_name;
        let variant = match vendor {
            "yealink" => Variant::Yealink,
            "snom" if p.photos => Variant::Snom,
            "snom" => Variant::SnomNoPhotos,
            "cisco" => Variant::Cisco,
            "grandstream" => Variant::Grandstream,
            "fanvil" => Variant::Fanvil,
            _ => Variant::Gigaset,
        };
        let doc = render(variant, &people, title);
        if variant == Variant::Cisco {
            let rows: Vec<usize> = (0..doc.row_count()).collect();
            return xml(cisco_page(&doc, &rows, title, &p, &book_url));
        }
        response(StatusCode::OK, XML_CT, doc.doc)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::config::BookConfig;
    use crate::carddav::sample;
    use crate::carddav::service::State;
    use crate::carddav::xml::parse;
    use crate::directory::{Attribute, Published};

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

    /// A whole book in one format, as `answer` sends it without a query.
    fn whole(v: Variant, people: &[Person], title: &str) -> String {
        let r = render(v, people, title);
        let doc = String::from_utf8(r.doc.to_vec()).unwrap();
        if v != Variant::Cisco {
            return doc;
        }
        let rows: Vec<usize> = (0..r.row_count()).collect();
        let p = Params {
            q: Some("a&b".into()),
            page: 9,
            photos: true,
        };
        cisco_page(&r, &rows, title, &p, "http://h")
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(one_line(" Doe,\r\nJane\t X\u{7} "), "Doe, Jane X");
        assert_eq!(one_line("Plain Name"), "Plain Name");
    }

    #[test]
    fn numbers_in_national_or_e164() {
        let p = PhoneNormalizer::new("DE").unwrap();
        for (raw, fmt, want) in [
            ("030 1234567", NumberFormat::E164, "+49301234567"),
            ("+49 30 1234567", NumberFormat::National, "0301234567"),
            ("+1 425 555 0100", NumberFormat::National, "+14255550100"),
            ("ext. 12", NumberFormat::National, "ext. 12"),
            // Not a number: kept, not invented as +491234.
            ("1234", NumberFormat::E164, "1234"),
            ("030 1234567 x89", NumberFormat::National, "0301234567 ext. 89"),
            ("+1 (425) 555-0100 x12", NumberFormat::National, "+14255550100 ext. 12"),
        ] {
            assert_eq!(format_number(raw, &p, fmt), want, "{raw}");
        }
    }

    #[test]
    fn every_format_escapes_names() {
        let ps = people();
        // Our strict parser takes all but Gigaset (which carries a DOCTYPE line by format definition).
        for doc in [
            whole(Variant::Yealink, &ps, "A&B"),
            whole(Variant::Snom, &ps, "A&B"),
            whole(Variant::Grandstream, &ps, "A&B"),
            whole(Variant::Fanvil, &ps, "A&B"),
        ] {
            let root = parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}: {doc}"));
            assert!(!root.name.is_empty());
        }
        assert!(whole(Variant::Yealink, &ps, "A&B")
            .contains("<Name>Smith &amp; Sons &lt;&quot;Q&quot;&gt; &apos;X&apos;</Name>"));
        let f = whole(Variant::Fanvil, &ps, "A&B");
        assert!(f.contains("<Name>Smith + Sons") && !f.contains("&amp;"), "{f}");
        let g = whole(Variant::Gigaset, &ps, "A&B");
        let body = g.split_once("<!DOCTYPE LocalDirectory>\n").map(|(_, b)| b).unwrap();
        let root = parse(body.as_bytes()).unwrap();
        let entry = root.child("", "entry").unwrap();
        assert_eq!(entry.attr("surname"), Some("Smith & Sons <\"Q\"> 'X'"));
        assert_eq!(entry.attr("mobile1"), Some("+491711234567"));
        let sn = parse(whole(Variant::Snom, &ps, "A&B").as_bytes()).unwrap();
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
        assert!(!whole(Variant::SnomNoPhotos, &ps, "A&B").contains("<photo>"));
        let c = whole(Variant::Cisco, &ps, "Book");
        let root = parse(c.as_bytes()).unwrap();
        assert_eq!(root.child("", "Prompt").unwrap().text, "Page 1 of 1");
        assert_eq!(root.children_named("", "DirectoryEntry").count(), 2);
    }

    fn attr(name: &str, v: &str) -> Attribute {
        Attribute {
            name: name.into(),
            values: vec![bytes::Bytes::from(v.as_bytes().to_vec())],
        }
    }

    /// Sample people plus the awkward cases: twins by name (order must stay stable), free text and an
    /// extension in number fields, no number at all, a home phone, a name that sorts by case only.
    fn directory() -> Vec<Entry> {
        let mut people = sample::people(150, 3);
        let mut twin = sample::person(1000, 3);
        twin.attrs.retain(|a| !matches!(a.name.as_ref(), "displayName" | "cn"));
        twin.attrs.push(attr("displayName", "Anna Müller 0"));
        twin.attrs.push(attr("homePhone", "0221 998877"));
        twin.attrs.push(attr("otherTelephone", "ext. 12"));
        people.push(twin);
        let mut text_only = sample::person(1001, 3);
        text_only
            .attrs
            .retain(|a| !matches!(a.name.as_ref(), "telephoneNumber" | "mobile"));
        text_only.attrs.push(attr("telephoneNumber", "ask reception"));
        people.push(text_only);
        let mut lower = sample::person(1002, 3);
        lower.attrs.retain(|a| !matches!(a.name.as_ref(), "displayName" | "cn"));
        lower.attrs.push(attr("displayName", "anna müller 0"));
        people.push(lower);
        people
    }

    /// Every vendor, page and search answered from the prepared book is what the code before preparation sent,
    /// byte for byte, in both number formats, for the all-people book and a group book.
    #[test]
    fn prepared_books_answer_what_rendering_per_request_did() {
        let mut entries = directory();
        let members: Vec<Entry> = entries.iter().step_by(3).cloned().collect();
        let refs: Vec<&Entry> = members.iter().collect();
        entries.push(sample::group("Sales & Co", &refs, 3));
        for fmt in [NumberFormat::E164, NumberFormat::National] {
            let cfg = CardDavConfig {
                phonebook_number_format: fmt,
                books: vec![BookConfig {
                    name: "sales".into(),
                    display_name: "Sales & Co <all of them, with a long title>".into(),
                    group: Some("Sales & Co".into()),
                }],
                // The reference pages only Cisco; caps have their own test.
                phonebook_max_entries: Vec::new(),
                ..Default::default()
            };
            let state = State::new(
                Arc::new(arc_swap::ArcSwap::from_pointee(cfg)),
                Published::new(sample::snapshot(3, entries.clone())),
            );
            let ctx = Ctx::for_test(&state, false);
            let queries = [
                None,
                Some("photos=0"),
                Some("q=anna"),
                Some("q=M%C3%BCller"),
                Some("q=1000017"),
                Some("q=%2B49+171"),
                Some("q=0221"),
                Some("q=nobody"),
                Some("page=2"),
                Some("page=3&q=a"),
                Some("page=99"),
                Some("page=0"),
                Some("q=a&page=2&photos=no"),
            ];
            let mut compared = 0;
            for book in ["", "all/", "sales/", "nobook/"] {
                for vendor in VENDORS.iter().chain(&["cisco-search", "unknown"]) {
                    for q in queries {
                        let path = format!("/phonebook/{book}{vendor}.xml");
                        let want = reference::handle(&ctx, &path, q, "http://pbx:8080");
                        let (want_status, want) = (want.status(), body(want));
                        // Twice: the second answer comes from the prepared book.
                        for _ in 0..2 {
                            let got = served(&ctx, &path, q);
                            assert_eq!(got.status(), want_status, "{path}?{q:?}");
                            let got = body(got);
                            assert!(
                                got == want,
                                "{path}?{q:?} ({fmt:?}):\n{}\n---\n{}",
                                String::from_utf8_lossy(&got),
                                String::from_utf8_lossy(&want)
                            );
                            compared += 1;
                        }
                    }
                }
            }
            assert!(compared > 300);
        }
    }

    fn body(r: Response<Body>) -> Bytes {
        crate::carddav::service::full_bytes(r.into_body())
    }

    fn served(ctx: &Ctx<'_>, path: &str, q: Option<&str>) -> Response<Body> {
        match request(ctx, path, q, "http://pbx:8080") {
            Ok(r) => answer_prepared(ctx, &r).unwrap_or_else(|| answer(ctx, &r)),
            Err(resp) => *resp,
        }
    }

    #[test]
    fn a_new_snapshot_gets_a_new_book_and_the_old_one_is_dropped() {
        let mut entries = directory();
        let dir = Published::new(sample::snapshot(3, entries.clone()));
        let state = State::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(CardDavConfig::default())),
            dir.clone(),
        );
        let ctx = Ctx::for_test(&state, false);
        let Ok(r) = request(&ctx, "/phonebook/yealink.xml", None, "") else {
            panic!("a book request")
        };
        assert!(
            answer_prepared(&ctx, &r).is_none(),
            "nothing is prepared before the first request"
        );
        let before = body(answer(&ctx, &r));
        assert!(answer_prepared(&ctx, &r).is_some(), "then the book is ready");
        assert!(String::from_utf8_lossy(&before).contains("<Name>Anna Müller 0</Name>"));

        entries[0].attrs.retain(|a| a.name.as_ref() != "displayName");
        entries[0].attrs.push(attr("displayName", "Renamed Person"));
        entries[0].usn_changed = 4;
        dir.publish(sample::snapshot(4, entries));
        let ctx = Ctx::for_test(&state, false);
        assert!(answer_prepared(&ctx, &r).is_none(), "snapshot 4 has its own book");
        let after = body(answer(&ctx, &r));
        assert_eq!(after, body(reference::handle(&ctx, "/phonebook/yealink.xml", None, "")));
        assert!(String::from_utf8_lossy(&after).contains("<Name>Renamed Person</Name>"));
        assert_eq!(state.phonebooks.lock().len(), 1, "the book of snapshot 3 was dropped");
        state.phonebooks.evict_older(5);
        assert!(state.phonebooks.lock().is_empty());
    }

    fn numbers_of(doc: &[u8], name: &str) -> Vec<String> {
        let root = parse(doc).unwrap();
        let entry = root
            .children_named("", "DirectoryEntry")
            .find(|e| e.child("", "Name").is_some_and(|n| n.text == name))
            .unwrap_or_else(|| panic!("{name} is listed"));
        entry.children_named("", "Telephone").map(|t| t.text.clone()).collect()
    }

    /// The configured order is the order in the document (a phone dials the first), kinds left out are neither
    /// listed nor found by `?q=`, and a number held twice is listed once.
    #[test]
    fn numbers_follow_the_configured_order_and_kinds() {
        let mut entries = directory();
        let mut same = sample::person(1003, 3);
        same.attrs
            .retain(|a| !matches!(a.name.as_ref(), "displayName" | "cn" | "mobile"));
        same.attrs.push(attr("displayName", "Same Number"));
        same.attrs.push(attr("mobile", "+49 30 1001003"));
        entries.push(same);
        let mut three = sample::person(1004, 3);
        three.attrs.retain(|a| !matches!(a.name.as_ref(), "displayName" | "cn"));
        three.attrs.push(attr("displayName", "Three Numbers"));
        three.attrs.push(attr("mobile", "0171 2001004"));
        three.attrs.push(attr("homePhone", "0221 998866"));
        entries.push(three);
        let serve = |order: Vec<Kind>, path: &str, q: Option<&str>| {
            let cfg = CardDavConfig {
                phonebook_numbers: order,
                ..Default::default()
            };
            let state = State::new(
                Arc::new(arc_swap::ArcSwap::from_pointee(cfg)),
                Published::new(sample::snapshot(3, entries.clone())),
            );
            let ctx = Ctx::for_test(&state, false);
            body(served(&ctx, path, q))
        };
        let default = serve(
            crate::carddav::config::DEFAULT_NUMBER_ORDER.to_vec(),
            "/phonebook/yealink.xml",
            None,
        );
        assert_eq!(
            numbers_of(&default, "Three Numbers"),
            ["+49301001004", "+491712001004", "+49221998866"]
        );
        let mobile_first = serve(vec![Kind::Mobile, Kind::Work], "/phonebook/yealink.xml", None);
        assert_eq!(
            numbers_of(&mobile_first, "Three Numbers"),
            ["+491712001004", "+49301001004"]
        );
        // Work and mobile the same number: once, as work.
        assert_eq!(numbers_of(&default, "Same Number"), ["+49301001003"]);
        // Home numbers hidden: not listed, and not found by a search for them either.
        let found = serve(
            vec![Kind::Work, Kind::Mobile],
            "/phonebook/yealink.xml",
            Some("q=0221998866"),
        );
        assert!(
            !String::from_utf8_lossy(&found).contains("Three"),
            "{}",
            String::from_utf8_lossy(&found)
        );
        let found = serve(
            crate::carddav::config::DEFAULT_NUMBER_ORDER.to_vec(),
            "/phonebook/yealink.xml",
            Some("q=0221998866"),
        );
        assert!(String::from_utf8_lossy(&found).contains("Three Numbers"));
        // Only mobiles: people without one drop out of the book.
        let mobiles = serve(vec![Kind::Mobile], "/phonebook/yealink.xml", None);
        assert_eq!(numbers_of(&mobiles, "Three Numbers"), ["+491712001004"]);
        let count = |doc: &[u8]| parse(doc).unwrap().children_named("", "DirectoryEntry").count();
        assert!(
            count(&mobiles) < count(&default),
            "people without a mobile are left out"
        );
        let root = parse(&mobiles).unwrap();
        for t in root
            .children_named("", "DirectoryEntry")
            .flat_map(|e| e.children_named("", "Telephone"))
        {
            // Same Number's mobile field holds a Berlin number.
            assert!(
                t.text.starts_with("+49171") || t.text == "+49301001003",
                "only mobiles: {}",
                t.text
            );
        }
    }

    /// A vendor with a cap gets the book in pages of that many people, in book order, nobody lost or twice;
    /// a page past the end is an empty book, and a search is paged the same way.
    #[test]
    fn capped_vendors_get_the_book_in_pages() {
        let cfg = CardDavConfig {
            phonebook_max_entries: vec![("snom".into(), 40), ("yealink".into(), 0)],
            ..Default::default()
        };
        let state = State::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(cfg)),
            Published::new(sample::snapshot(3, directory())),
        );
        let ctx = Ctx::for_test(&state, false);
        let names = |doc: &[u8]| -> Vec<String> {
            let root = parse(doc).unwrap();
            root.children_named("", "contact")
                .map(|c| {
                    let f = &c.child("", "first_name").unwrap().text;
                    let l = &c.child("", "last_name").unwrap().text;
                    format!("{f} {l}")
                })
                .collect()
        };
        let whole = body(served(&ctx, "/phonebook/yealink.xml", None));
        let everyone = parse(&whole).unwrap().children_named("", "DirectoryEntry").count();
        assert!(everyone > 100, "yealink has no cap: {everyone}");
        let mut paged = Vec::new();
        let mut page = 1;
        loop {
            let q = format!("page={page}");
            let doc = body(served(&ctx, "/phonebook/snom.xml", Some(&q)));
            let got = names(&doc);
            assert!(got.len() <= 40, "page {page} holds {}", got.len());
            if got.is_empty() {
                break;
            }
            paged.extend(got);
            page += 1;
        }
        assert_eq!(paged.len(), everyone, "every person on exactly one page");
        assert_eq!(page - 1, everyone.div_ceil(40));
        let first = body(served(&ctx, "/phonebook/snom.xml", None));
        assert_eq!(names(&first), paged[..40], "no ?page is page 1");
        // A search is paged too.
        let hits = names(&body(served(&ctx, "/phonebook/snom.xml", Some("q=a"))));
        assert_eq!(hits.len(), 40);
        let second = names(&body(served(&ctx, "/phonebook/snom.xml", Some("q=a&page=2"))));
        assert!(second.iter().all(|n| !hits.contains(n)));
    }
}
