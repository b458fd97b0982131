//! Caller-ID and name lookups over HTTP, for PBXs and CTI tools that ask a URL rather than an LDAP server
//! (Asterisk's `CURL()`, FreePBX CallerID Superfecta, 3CX's CRM templates, scripts), and photos by URL:
//!
//! - `GET /lookup/number?n=<number in any spelling>`: the person a caller's number belongs to, as JSON, or with
//!   `format=text` the bare display name (what `CURL()` puts into `CALLERID(name)`); 404 when nobody has it.
//! - `GET /lookup/search?q=<name or digits>&limit=<n>`: people as a phone book's search finds them.
//! - `GET /photo/<objectGUID>.jpg?size=<pixels>`: see [`crate::carddav::photo`].
//! - `GET /lookup/openapi.json`: the OpenAPI 3.0 description of all three.
//!
//! Served on the CardDAV listener, behind its accounts and `anonymous_networks`, from the book views CardDAV
//! serves (`book=<name>`, the first book by default): whoever a book leaves out (disabled accounts, people
//! outside the book's group) is not found here either. Numbers match as in LDAP: both sides reduced to the
//! phone index's digit key, so E.164, national, `00` and any punctuation find the same person. When no number
//! matches whole, two fallbacks follow, in this order: a trunk that appends an extension to the company number
//! (`+49301234567` + `89`) finds the person stored with `ext. 89`; then the last
//! [`lookup_last_digits`](crate::carddav::CardDavConfig::lookup_last_digits) digits, only when exactly one
//! person has them. When several people share a number, the answer says who wins by [`rank`] and lists them.
//!
//! A number lookup is a few index probes, answered on the async worker (it is what a ringing phone waits for)
//! from a per-snapshot answer cache, once the book's member list of the snapshot exists ([`is_quick`]);
//! building that list, searches and photo scaling run on the blocking threads.

use crate::carddav::cache::BookView;
use crate::carddav::phonebook::one_line;
use crate::carddav::photo;
use crate::carddav::service::{percent_decode, response, Body, Ctx};
use crate::carddav::vcard::display_name;
use crate::directory::phone::{digits, PhoneNormalizer};
use crate::directory::{Entry, EntryKind, Query, Snapshot};
use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const JSON_CT: &str = "application/json; charset=utf-8";
const TEXT_CT: &str = "text/plain; charset=utf-8";
const OPENAPI: &str = include_str!("lookup_openapi.json");
/// Longest `n` or `q` accepted, in characters: numbers with punctuation and extension fit, and a name search
/// longer than this is no phone user typing.
pub(crate) const MAX_QUERY_CHARS: usize = 64;
pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const MAX_LIMIT: usize = 100;
/// People listed in a number answer besides the winner's own fields (a shared switchboard number can belong to
/// hundreds).
const MAX_LISTED: usize = 20;
/// Entries with the number looked at, at most: ranking hundreds of sharers is plenty, and the work a ringing
/// call waits for stays bounded.
const MAX_EXAMINED: usize = 1000;
/// Digits a number keeps when an extension is cut off, or a tail compared: fewer identify nobody.
const MIN_DIGITS: usize = 6;
/// The longest extension a trunk is taken to append to a company number.
const MAX_EXTENSION_DIGITS: usize = 5;
/// Number answers kept per snapshot (every spelling of every caller that rang since the last sync round).
const CACHED_ANSWERS: usize = 4096;

/// Phone attributes in the order a shared number is given to: own lines first, fax last. Each with the type
/// the answer names.
const NUMBER_TYPES: &[(&str, &str, u8)] = &[
    ("telephoneNumber", "business", 0),
    ("mobile", "mobile", 0),
    ("ipPhone", "ipPhone", 0),
    ("otherTelephone", "business", 1),
    ("otherMobile", "mobile", 1),
    ("otherIpPhone", "ipPhone", 1),
    ("homePhone", "home", 2),
    ("otherHomePhone", "home", 2),
    ("pager", "pager", 3),
    ("facsimileTelephoneNumber", "fax", 4),
    ("otherFacsimileTelephoneNumber", "fax", 4),
];

/// Whether `path` is one this module answers.
pub(crate) fn owns(path: &str) -> bool {
    path == "/lookup" || path.starts_with("/lookup/") || path.starts_with("/photo/")
}

/// What a lookup URL asks for, parsed on the async worker.
pub(crate) enum Request {
    Number { book: usize, n: String, text: bool },
    Search { book: usize, q: String, limit: usize },
    Photo { id: String, size: Option<u32> },
}

/// Parse a request to a path [`owns`] says is ours; answers that need no directory work come back as `Err`.
pub(crate) fn parse(ctx: &Ctx<'_>, path: &str, query: Option<&str>) -> Result<Request, Box<Response<Body>>> {
    let params = params(query);
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let text = get("format").is_some_and(|f| f.eq_ignore_ascii_case("text"));
    let fail = |status: StatusCode, msg: String| Box::new(error(status, &msg, text));
    if let Some(f) = get("format").filter(|f| !f.eq_ignore_ascii_case("text") && !f.eq_ignore_ascii_case("json")) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("format={f:?}: use \"json\" (the default) or \"text\""),
        ));
    }
    let book = match get("book") {
        None => 0,
        Some(name) => ctx
            .books
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no address book named {name:?}")))?,
    };
    match path.trim_end_matches('/') {
        "/lookup" => Err(Box::new(help())),
        "/lookup/openapi.json" => Err(Box::new(with_header(
            response(StatusCode::OK, JSON_CT, OPENAPI),
            header::CACHE_CONTROL,
            "max-age=3600",
        ))),
        "/lookup/number" => {
            let n = bounded(get("n").or_else(|| get("number")), "n").map_err(|m| fail(StatusCode::BAD_REQUEST, m))?;
            if !n.chars().any(|c| c.is_ascii_digit()) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("n={n:?} has no digits: pass the caller's number in any spelling, e.g. n=%2B4930123456"),
                ));
            }
            Ok(Request::Number { book, n, text })
        }
        "/lookup/search" => {
            let q = bounded(get("q"), "q").map_err(|m| fail(StatusCode::BAD_REQUEST, m))?;
            let limit = match get("limit") {
                None => DEFAULT_LIMIT,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        fail(
                            StatusCode::BAD_REQUEST,
                            format!("limit={l:?}: a number from 1 to {MAX_LIMIT}"),
                        )
                    })?,
            };
            Ok(Request::Search { book, q, limit })
        }
        p => match p.strip_prefix("/photo/") {
            Some(file) => photo_request(file, get("size")),
            None => Err(fail(
                StatusCode::NOT_FOUND,
                format!("no such lookup: {p}; see /lookup/ for what there is"),
            )),
        },
    }
}

/// The value of a required text parameter, trimmed and at most [`MAX_QUERY_CHARS`] long.
fn bounded(v: Option<&str>, name: &str) -> Result<String, String> {
    let v = v.map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return Err(format!("the {name} parameter is missing or empty"));
    }
    if v.chars().count() > MAX_QUERY_CHARS {
        return Err(format!("{name} is longer than {MAX_QUERY_CHARS} characters"));
    }
    Ok(v.to_string())
}

fn photo_request(file: &str, size: Option<&str>) -> Result<Request, Box<Response<Body>>> {
    let Some(guid) = file.strip_suffix(".jpg").and_then(|g| uuid::Uuid::try_parse(g).ok()) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "photos are at /photo/<objectGUID>.jpg, e.g. /photo/4b6f0c5e-2f1a-4c3d-9e8f-0a1b2c3d4e5f.jpg",
            false,
        )));
    };
    let size = match size {
        None => None,
        Some(s) => Some(
            s.parse::<u32>()
                .ok()
                .filter(|s| (photo::MIN_SIZE..=photo::MAX_SIZE).contains(s))
                .ok_or_else(|| {
                    Box::new(error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "size={s:?}: pixels from {} to {}, e.g. size=96",
                            photo::MIN_SIZE,
                            photo::MAX_SIZE
                        ),
                        false,
                    ))
                })?,
        ),
    };
    Ok(Request::Photo {
        id: guid.hyphenated().to_string(),
        size,
    })
}

/// Query parameters, form-decoded (`+` is a space: `n=+4930…` unencoded arrives as ` 4930…`, which reads the
/// same as a number).
pub(crate) fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let spaced = s.replace('+', " ");
                percent_decode(&spaced).unwrap_or(spaced)
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether a request is answered on the async worker (a number: what a ringing call waits for) rather than
/// handed to a blocking thread (a search, a photo that may need decoding). A number is a few index probes once
/// its book's member list of this snapshot exists; the first request after a change builds that list (every
/// member of the book), which is work for a blocking thread too.
pub(crate) fn is_quick(ctx: &Ctx<'_>, r: &Request) -> bool {
    match r {
        Request::Number { book, .. } => ctx.book_view_ready(*book),
        _ => false,
    }
}

/// The answer to `r`. `base` is `scheme://host` for photo URLs (empty: relative URLs); `if_none_match` the
/// request's header, for photos.
pub(crate) fn answer(ctx: &Ctx<'_>, r: &Request, base: &str, if_none_match: Option<&str>) -> Response<Body> {
    match r {
        Request::Number { book, n, text } => cached_number(ctx, *book, n, *text, base),
        Request::Search { book, q, limit } => search(ctx, *book, q, *limit, base),
        Request::Photo { id, size } => photo_answer(ctx, id, *size, if_none_match),
    }
}

fn help() -> Response<Body> {
    let body = "entradir lookups (JSON unless stated):\n\
        GET /lookup/number?n=<number in any spelling>[&format=text][&book=<name>]  who has this number\n\
        GET /lookup/search?q=<name or digits>[&limit=1..100][&book=<name>]       people, phone-book style\n\
        GET /photo/<objectGUID>.jpg[?size=16..1024]                             a person's photo\n\
        GET /lookup/openapi.json                                                 the OpenAPI description\n";
    response(StatusCode::OK, TEXT_CT, body)
}

/// An error: JSON `{"error": …}`, or for `format=text` an empty body (a dialplan would otherwise show the
/// message as the caller's name).
fn error(status: StatusCode, msg: &str, text: bool) -> Response<Body> {
    if text {
        return no_cache(response(status, TEXT_CT, Bytes::new()));
    }
    no_cache(response(status, JSON_CT, json!({ "error": msg }).to_string()))
}

fn with_header(mut r: Response<Body>, name: header::HeaderName, value: &'static str) -> Response<Body> {
    r.headers_mut().insert(name, HeaderValue::from_static(value));
    r
}

/// Lookups answer from the current snapshot: a proxy or client must not keep yesterday's answer.
fn no_cache(r: Response<Body>) -> Response<Body> {
    with_header(r, header::CACHE_CONTROL, "no-cache")
}

fn json_ok(v: &Value) -> Response<Body> {
    no_cache(response(StatusCode::OK, JSON_CT, v.to_string()))
}

/// Number answers of one snapshot and configuration, by request; emptied when either changes.
#[derive(Default)]
pub(crate) struct AnswerCache {
    inner: Mutex<Answers>,
}

#[derive(Default)]
struct Answers {
    version: u64,
    cfg: usize,
    map: HashMap<String, (StatusCode, &'static str, Bytes)>,
}

impl AnswerCache {
    fn get(&self, version: u64, cfg: usize, key: &str) -> Option<(StatusCode, &'static str, Bytes)> {
        let a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if a.version != version || a.cfg != cfg {
            return None;
        }
        a.map.get(key).cloned()
    }

    fn put(&self, version: u64, cfg: usize, key: String, v: (StatusCode, &'static str, Bytes)) {
        let dropped = {
            let mut a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            // A request that loaded an older snapshot finishes late: keep the newer answers.
            if version < a.version {
                return;
            }
            // Answers of an older snapshot are never asked for again; a full map starts over.
            let stale = a.version != version || a.cfg != cfg || a.map.len() >= CACHED_ANSWERS;
            let dropped = stale.then(|| std::mem::take(&mut a.map));
            (a.version, a.cfg) = (version, cfg);
            a.map.insert(key, v);
            dropped
        };
        // Freed after the lock is released.
        drop(dropped);
    }
}

fn cached_number(ctx: &Ctx<'_>, book: usize, n: &str, text: bool, base: &str) -> Response<Body> {
    let cfg = Arc::as_ptr(&ctx.cfg) as usize;
    let key = format!("{book}\u{1}{text}\u{1}{base}\u{1}{n}");
    let (status, ct, body) = match ctx.state.lookups.get(ctx.snap.version, cfg, &key) {
        Some(hit) => hit,
        None => {
            let r = number(ctx, book, n, text, base);
            ctx.state.lookups.put(ctx.snap.version, cfg, key, r.clone());
            r
        }
    };
    no_cache(response(status, ct, body))
}

/// How a number answer found its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The whole number (E.164 digits) is one of the person's.
    Number,
    /// The number is one of the person's with its extension appended.
    Extension,
    /// Only the last digits match, and nobody else in the book has them.
    LastDigits,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Number => "number",
            Via::Extension => "extension",
            Via::LastDigits => "lastDigits",
        }
    }
}

/// One person with the number asked for.
struct Hit {
    entry: Arc<Entry>,
    /// The attribute the number is in, its type and its rank in [`NUMBER_TYPES`].
    attr: &'static str,
    kind: &'static str,
    order: u8,
    /// The number as stored.
    value: String,
    /// The person's number has the extension the caller's has, or like it none: dialling the switchboard
    /// finds the switchboard before the people reached through it (`… ext. 42`).
    same_extension: bool,
}

/// Who wins a shared number: the person whose number has the extension dialled (or none, when none was), then
/// users before org
/// contacts, then own lines (`telephoneNumber`, `mobile`, `ipPhone`) before `other…`, home, pager and fax, then
/// by name in the directory's collation, then by objectGUID, so every replica picks the same.
fn rank(h: &Hit, snap: &Snapshot) -> (bool, u8, u8, Vec<u8>, Arc<str>) {
    let kind = match h.entry.kind {
        EntryKind::User => 0,
        EntryKind::Contact => 1,
        _ => 2,
    };
    (
        !h.same_extension,
        kind,
        h.order,
        snap.collation.key(&display_name(&h.entry)),
        h.entry.id.clone(),
    )
}

/// The extension's digits of a number, if it parses and has one.
fn extension(phones: &PhoneNormalizer, raw: &str) -> Option<String> {
    phones
        .to_e164(raw)
        .and_then(|e| e.split_once(" ext. ").map(|(_, x)| x.to_string()))
}

/// People of `view` with a number whose digit key satisfies `matches`, among the index's candidates `ids`: for
/// each, its best-ranked such number. `want_ext` keeps only numbers with that extension; otherwise
/// `dialled_ext` (the caller's extension, or none) marks the numbers with the same.
fn hits(
    snap: &Snapshot,
    view: &BookView,
    ids: Option<roaring::RoaringBitmap>,
    matches: impl Fn(&str) -> bool,
    want_ext: Option<&str>,
    dialled_ext: Option<&str>,
) -> Vec<Hit> {
    let phones = &snap.phones;
    let mut out = Vec::new();
    for id in ids.unwrap_or_default().iter().take(MAX_EXAMINED) {
        let Some(e) = snap.get(id).filter(|e| view.contains(&e.id)) else {
            continue;
        };
        let mut best: Option<Hit> = None;
        for &(attr, kind, order) in NUMBER_TYPES {
            for v in e.strs(attr) {
                if !matches(&phones.key(v)) {
                    continue;
                }
                let ext = extension(phones, v);
                if want_ext.is_some() && ext.as_deref() != want_ext {
                    continue;
                }
                let same_extension = want_ext.is_some() || ext.as_deref() == dialled_ext;
                let better = best
                    .as_ref()
                    .is_none_or(|b| (!same_extension, order) < (!b.same_extension, b.order));
                if better {
                    best = Some(Hit {
                        entry: e.clone(),
                        attr,
                        kind,
                        order,
                        value: v.to_string(),
                        same_extension,
                    });
                }
            }
        }
        out.extend(best);
    }
    out
}

/// The people of a book with number `n`, and how they were found; `Err` with why nobody was chosen.
fn find(ctx: &Ctx<'_>, view: &BookView, n: &str) -> Result<(Vec<Hit>, Via), String> {
    let snap = &ctx.snap;
    let phones = &snap.phones;
    let key = phones.key(n);
    let probe = |k: &str| snap.query(&Query::PhoneKey(k.to_string())).ids;
    let dialled_ext = extension(phones, n);
    let found = hits(snap, view, probe(&key), |k| k == key, None, dialled_ext.as_deref());
    if !found.is_empty() {
        return Ok((found, Via::Number));
    }
    for cut in 1..=MAX_EXTENSION_DIGITS {
        if key.len() < cut + MIN_DIGITS {
            break;
        }
        let (main, ext) = key.split_at(key.len() - cut);
        let found = hits(snap, view, probe(main), |k| k == main, Some(ext), None);
        if !found.is_empty() {
            return Ok((found, Via::Extension));
        }
    }
    // The digits as dialled: a local number without its area code (`891400`) parses as some national number
    // whose key ends differently; only a number written with an extension needs its key (the digits without it).
    let dialled = if dialled_ext.is_some() { key.clone() } else { digits(n) };
    let last = ctx.cfg.lookup_last_digits.min(dialled.len());
    if ctx.cfg.lookup_last_digits == 0 || last < MIN_DIGITS {
        return Err("nobody in the book has this number".into());
    }
    let tail = &dialled[dialled.len() - last..];
    let ids = snap.query(&Query::PhoneSuffix(tail.to_string())).ids;
    let found = hits(snap, view, ids, |k| k.ends_with(tail), None, None);
    match found.len() {
        0 => Err("nobody in the book has this number".into()),
        1 => Ok((found, Via::LastDigits)),
        more => Err(format!(
            "nobody has this number; {more} people have numbers ending in {tail}, so none is chosen"
        )),
    }
}

fn number(ctx: &Ctx<'_>, book: usize, n: &str, text: bool, base: &str) -> (StatusCode, &'static str, Bytes) {
    let view = ctx.book_view(book);
    let (mut found, via) = match find(ctx, &view, n) {
        Ok(f) => f,
        Err(_) if text => return (StatusCode::NOT_FOUND, TEXT_CT, Bytes::new()),
        Err(why) => {
            let body = json!({ "error": why, "number": e164_or_digits(&ctx.snap.phones, n) });
            return (StatusCode::NOT_FOUND, JSON_CT, Bytes::from(body.to_string()));
        }
    };
    found.sort_by_cached_key(|h| rank(h, &ctx.snap));
    let winner = &found[0];
    if text {
        return (
            StatusCode::OK,
            TEXT_CT,
            Bytes::from(one_line(&display_name(&winner.entry))),
        );
    }
    let phones = &ctx.snap.phones;
    let mut out = person(&winner.entry, phones, base);
    out.insert("matchedNumber".into(), json!(e164_or_as_typed(phones, &winner.value)));
    out.insert("matchedType".into(), json!(winner.kind));
    out.insert("matchedAttribute".into(), json!(winner.attr));
    out.insert("matchedBy".into(), json!(via.name()));
    out.insert("ambiguous".into(), json!(found.len() > 1));
    out.insert("matchCount".into(), json!(found.len()));
    let listed: Vec<Value> = found
        .iter()
        .take(MAX_LISTED)
        .map(|h| {
            json!({
                "objectGUID": &*h.entry.id,
                "displayName": one_line(&display_name(&h.entry)),
                "matchedNumber": e164_or_as_typed(phones, &h.value),
                "matchedType": h.kind,
            })
        })
        .collect();
    out.insert("matches".into(), Value::Array(listed));
    (StatusCode::OK, JSON_CT, Bytes::from(Value::Object(out).to_string()))
}

fn e164_or_as_typed(phones: &PhoneNormalizer, raw: &str) -> String {
    phones.to_e164(raw).unwrap_or_else(|| one_line(raw))
}

/// The number asked for in E.164 when it parses, else its digits.
fn e164_or_digits(phones: &PhoneNormalizer, raw: &str) -> String {
    phones.to_e164(raw).unwrap_or_else(|| digits(raw))
}

/// A person's fields as every answer gives them (absent ones as `null`, so the shape never changes).
fn person(e: &Entry, phones: &PhoneNormalizer, base: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("objectGUID".into(), json!(&*e.id));
    m.insert("displayName".into(), json!(one_line(&display_name(e))));
    for (field, attr) in [
        ("givenName", "givenName"),
        ("sn", "sn"),
        ("company", "company"),
        ("department", "department"),
        ("title", "title"),
        ("mail", "mail"),
    ] {
        let v = e.first_str(attr).map(one_line).filter(|v| !v.is_empty());
        m.insert(field.into(), json!(v));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut numbers = Vec::new();
    for &(attr, kind, _) in NUMBER_TYPES {
        for raw in e.strs(attr).filter(|r| r.chars().any(|c| c.is_ascii_digit())) {
            let key = phones.key(raw);
            if !seen.contains(&key) {
                seen.push(key);
                numbers.push(json!({ "type": kind, "number": e164_or_as_typed(phones, raw) }));
            }
        }
    }
    m.insert("numbers".into(), Value::Array(numbers));
    let photo = stored_photo(e).map(|_| format!("{base}/photo/{}.jpg", e.id));
    m.insert("photo".into(), json!(photo));
    m
}

fn stored_photo(e: &Entry) -> Option<Bytes> {
    ["thumbnailPhoto", "jpegPhoto"]
        .iter()
        .find_map(|a| e.values(a).bytes(0).filter(|v| !v.is_empty()))
}

/// The lower-cased names a search compares: display name, given name, surname.
fn names(e: &Entry) -> [String; 3] {
    [
        display_name(e),
        e.first_str("givenName").unwrap_or_default().to_string(),
        e.first_str("sn").unwrap_or_default().to_string(),
    ]
    .map(|s| s.to_lowercase())
}

/// Phone-book search, as the vendor phone books' `?q=` and the LDAP phone-book filters match: with digits
/// only (and `+ -/().`), numbers containing them or starting with them in any spelling; otherwise every word
/// must occur in the display name, given name or surname, a word of one or two letters at the start of one
/// of their words. Names starting with the first word come first, the rest by name.
/// A search match: (no name starts with the first word, the display name's collation key, the entry).
type Found<'a> = (bool, std::borrow::Cow<'a, [u8]>, &'a Arc<Entry>);

fn search(ctx: &Ctx<'_>, book: usize, q: &str, limit: usize, base: &str) -> Response<Body> {
    json_ok(&search_json(ctx, book, q, limit, base))
}

fn search_json(ctx: &Ctx<'_>, book: usize, q: &str, limit: usize, base: &str) -> Value {
    let snap = &ctx.snap;
    let phones = &snap.phones;
    let view = ctx.book_view(book);
    let qd = digits(q);
    let numeric = qd.len() >= 2 && q.chars().all(|c| c.is_ascii_digit() || " +-/().".contains(c));
    let words: Vec<String> = q.to_lowercase().split_whitespace().map(str::to_string).collect();
    let (query, prefix) = if numeric {
        let prefix = phones.prefix_key(q);
        let query = Query::Or(vec![
            Query::PhonePrefix(q.to_string()),
            Query::PhoneContains(qd.clone()),
        ]);
        (query, prefix)
    } else {
        let long: Vec<Query> = words
            .iter()
            .filter(|w| w.chars().count() >= 3)
            .map(|w| Query::Text(w.clone()))
            .collect();
        let query = if long.is_empty() {
            Query::And(
                words
                    .iter()
                    .map(|w| {
                        Query::Or(
                            ["displayName", "givenName", "sn"]
                                .iter()
                                .map(|a| Query::Prefix((*a).to_string(), w.clone()))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        } else {
            Query::And(long)
        };
        (query, String::new())
    };
    let candidates = snap.query(&query);
    let mut found: Vec<Found<'_>> = Vec::new();
    for id in candidates.iter_after(snap, None) {
        let Some(e) = snap.get(id).filter(|e| view.contains(&e.id)) else {
            continue;
        };
        // (matches, whether a name starts with the first word)
        let (hit, starts) = if numeric {
            let hit = crate::directory::phone::PHONE_ATTRS
                .iter()
                .flat_map(|a| e.strs(a))
                .map(|raw| phones.key(raw))
                .any(|k| k.contains(&qd) || (!prefix.is_empty() && k.starts_with(&prefix)));
            (hit, true)
        } else {
            let names = names(e);
            let hit = words.iter().all(|w| word_matches(&names, w));
            let starts = words
                .first()
                .is_some_and(|w| names.iter().any(|n| n.starts_with(w.as_str())));
            (hit, starts)
        };
        if hit {
            found.push((!starts, name_key(snap, e), e));
        }
    }
    let total = found.len();
    // Only the first `limit` in order are returned: pick them, then sort those.
    let order = |a: &Found<'_>, b: &Found<'_>| (a.0, &a.1, &a.2.id).cmp(&(b.0, &b.1, &b.2.id));
    if limit > 0 && found.len() > limit {
        found.select_nth_unstable_by(limit - 1, order);
        found.truncate(limit);
    }
    found.sort_unstable_by(order);
    let results: Vec<Value> = found
        .iter()
        .take(limit)
        .map(|(_, _, e)| Value::Object(person(e, phones, base)))
        .collect();
    json!({
        "query": q,
        "count": total,
        "truncated": total > limit,
        "results": results,
    })
}

/// What `/lookup` answers an anonymous caller of the first book, and which books hold an entry: the admin
/// console's lookup tester asks here rather than over HTTP, so it sees the CardDAV listener's own caches and
/// configuration (a reload included).
pub(crate) struct Inspector(pub(crate) Arc<crate::carddav::service::State>);

impl Inspector {
    fn ctx(&self) -> Ctx<'_> {
        let cfg = self.0.cfg.load_full();
        Ctx {
            state: &self.0,
            books: cfg.effective_books(),
            cfg,
            snap: self.0.dir.load(),
            principal: crate::carddav::auth::Principal::Anonymous,
            stale_token_400: false,
        }
    }

    /// The first book's name (what `/lookup` searches when no `book=` is given).
    pub(crate) fn first_book(&self) -> String {
        self.ctx().books.first().map(|b| b.name.clone()).unwrap_or_default()
    }

    /// `GET /lookup/number?n=…`: the status and the JSON body.
    pub(crate) fn number(&self, n: &str) -> (u16, Value) {
        let ctx = self.ctx();
        if ctx.books.is_empty() {
            return (404, json!({"error": "no phone book is configured"}));
        }
        let (code, _, body) = number(&ctx, 0, n, false, "");
        (code.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `GET /lookup/search?q=…&limit=…`.
    pub(crate) fn search(&self, q: &str, limit: usize) -> Value {
        let ctx = self.ctx();
        if ctx.books.is_empty() {
            return json!({"error": "no phone book is configured"});
        }
        search_json(&ctx, 0, q, limit, "")
    }

    /// For each of `ids`, the books whose cards include it (each book's view fetched once).
    pub(crate) fn books_of(&self, ids: &[&str]) -> Vec<Vec<String>> {
        let ctx = self.ctx();
        let views: Vec<_> = (0..ctx.books.len())
            .map(|i| (ctx.books[i].name.clone(), ctx.book_view(i)))
            .collect();
        ids.iter()
            .map(|id| {
                views
                    .iter()
                    .filter(|(_, v)| v.contains(id))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .collect()
    }
}

/// The collation key of an entry's display name: the one projected into the entry when the name is its
/// `displayName` or `cn`, so a search that matches thousands does not key them again per request.
fn name_key<'a>(snap: &Snapshot, e: &'a Entry) -> std::borrow::Cow<'a, [u8]> {
    use crate::directory::collation::SORTED;
    let name = display_name(e);
    for attr in ["displayName", "cn"] {
        if e.first_str(attr) == Some(name.as_str()) {
            if let Some(k) = SORTED
                .iter()
                .position(|s| *s == attr)
                .and_then(|slot| e.sort_keys.get(slot))
            {
                return std::borrow::Cow::Borrowed(k);
            }
        }
    }
    std::borrow::Cow::Owned(snap.collation.key(&name))
}

/// Whether a search word occurs in one of the names: anywhere for three letters or more, at the start of a
/// name's word for one or two.
fn word_matches(names: &[String; 3], w: &str) -> bool {
    if w.chars().count() >= 3 {
        return names.iter().any(|n| n.contains(w));
    }
    names
        .iter()
        .any(|n| n.split(|c: char| !c.is_alphanumeric()).any(|part| part.starts_with(w)))
}

fn photo_answer(ctx: &Ctx<'_>, id: &str, size: Option<u32>, if_none_match: Option<&str>) -> Response<Body> {
    let shown = ctx
        .snap
        .entry(id)
        .filter(|e| (0..ctx.books.len()).any(|i| ctx.book_view(i).contains(&e.id)));
    let Some(e) = shown else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("nobody in the address books has objectGUID {id}"),
            false,
        );
    };
    let Some(stored) = stored_photo(e) else {
        return error(StatusCode::NOT_FOUND, &format!("{id} has no photo"), false);
    };
    let tag = photo::content_tag(&stored);
    let etag = photo::etag(tag, size);
    let tagged = |mut r: Response<Body>| {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        with_header(r, header::CACHE_CONTROL, "no-cache")
    };
    if crate::carddav::service::none_match(if_none_match, &etag) {
        let mut r = response(StatusCode::NOT_MODIFIED, "image/jpeg", Bytes::new());
        r.headers_mut().remove(header::CONTENT_TYPE);
        return tagged(r);
    }
    let body = match ctx.state.photos.jpeg(&stored, tag, size) {
        Ok(b) => b,
        Err(err) => {
            tracing::debug!(%id, error = %err, "photo lookup: cannot serve the stored photo");
            return error(StatusCode::NOT_FOUND, &format!("{id}: {err}"), false);
        }
    };
    tagged(response(StatusCode::OK, "image/jpeg", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phone_attribute_has_a_type() {
        for a in crate::directory::phone::PHONE_ATTRS {
            assert!(NUMBER_TYPES.iter().any(|(n, _, _)| n == a), "{a}");
        }
        assert_eq!(NUMBER_TYPES.len(), crate::directory::phone::PHONE_ATTRS.len());
    }

    #[test]
    fn parameters_are_form_decoded() {
        let p = params(Some("n=%2B49+30+123&format=text&&x"));
        assert_eq!(p[0], ("n".to_string(), "+49 30 123".to_string()));
        assert_eq!(p[1], ("format".to_string(), "text".to_string()));
        assert_eq!(p[2], ("x".to_string(), String::new()));
        // A broken escape is kept as typed rather than refused: it is still a number.
        assert_eq!(params(Some("n=030%zz1"))[0].1, "030%zz1");
    }

    #[test]
    fn short_words_match_the_start_of_a_name_word() {
        let names = ["anna-lena schmidt".to_string(), "anna-lena".into(), "schmidt".into()];
        assert!(word_matches(&names, "le"));
        assert!(word_matches(&names, "mid"));
        assert!(!word_matches(&names, "mi"));
        assert!(word_matches(&names, "schm"));
    }

    #[test]
    fn a_number_waits_on_a_blocking_thread_only_while_its_book_is_being_built() {
        use crate::carddav::{sample, service::State, CardDavConfig};
        use crate::directory::Published;
        let dir = Published::new(sample::snapshot(3, sample::people(50, 3)));
        let state = State::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(CardDavConfig::default())),
            dir.clone(),
        );
        let number = Request::Number {
            book: 0,
            n: "+49301234".into(),
            text: false,
        };
        let ctx = Ctx::for_test(&state, false);
        assert!(
            !is_quick(&ctx, &number),
            "the first lookup of a snapshot builds the book"
        );
        let _ = answer(&ctx, &number, "", None);
        assert!(is_quick(&ctx, &number), "then a lookup is a few probes");
        dir.publish(sample::snapshot(4, sample::people(50, 4)));
        let ctx = Ctx::for_test(&state, false);
        assert!(!is_quick(&ctx, &number), "a new snapshot needs its own book");
        let search = Request::Search {
            book: 0,
            q: "Anna".into(),
            limit: 10,
        };
        assert!(!is_quick(&ctx, &search));
    }

    #[test]
    fn answers_are_kept_per_snapshot() {
        let c = AnswerCache::default();
        let v = (StatusCode::OK, JSON_CT, Bytes::from_static(b"{}"));
        c.put(3, 1, "a".into(), v.clone());
        assert!(c.get(3, 1, "a").is_some());
        assert!(c.get(4, 1, "a").is_none(), "another snapshot");
        assert!(c.get(3, 2, "a").is_none(), "another configuration");
        c.put(4, 1, "b".into(), v.clone());
        assert!(c.get(4, 1, "a").is_none() && c.get(4, 1, "b").is_some());
        c.put(3, 1, "late".into(), v.clone());
        assert!(c.get(3, 1, "late").is_none());
        assert!(
            c.get(4, 1, "b").is_some(),
            "a request of an older snapshot does not evict the newer"
        );
        for i in 0..CACHED_ANSWERS + 1 {
            c.put(4, 1, format!("k{i}"), v.clone());
        }
        assert!(c.inner.lock().unwrap().map.len() <= CACHED_ANSWERS);
    }
}
