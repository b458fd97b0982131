//! Request routing: URL layout, authentication gate, method dispatch and the small responses (OPTIONS, GET,
//! redirects, refusals of writes).
//!
//! Routing, authentication and reading the body happen on the async workers; the work of an answer
//! (PROPFIND, REPORT, a whole book as vCards, phone books) runs on blocking threads through [`Offload`], so that
//! it never holds up the LDAP lookups served by the same workers. Answers that are ready (a whole-book
//! multistatus in the response cache, a prepared phone book without a search) are sent from the worker: they
//! cost a lookup and a reference count, less than the hand-over to another thread.
//!
//! URL layout (all collections end in `/`):
//! - `/.well-known/carddav` → 301 to `/dav/` (RFC 6764)
//! - `/dav/` service root; `/dav/principals/<account>/` the caller's principal (`anonymous` without credentials)
//! - `/dav/books/` the address-book home; `/dav/books/<book>/` a book; `/dav/books/<book>/<id>.vcf` a card
//! - `/phonebook/<vendor>.xml` and `/phonebook/<book>/<vendor>.xml`: vendor XML directories
//! - `/lookup/…` and `/photo/<objectGUID>.jpg`: caller-ID and search answers, photos ([`lookup`])

use crate::carddav::auth::{AuthFailure, Authenticator, Principal};
use crate::carddav::cache::{BookView, Caches, CardData};
use crate::carddav::config::{BookConfig, CardDavConfig, VCardVersion, DIRECTORY_BOOK};
use crate::carddav::forwarded::Origin;
use crate::carddav::offload::{Offload, OffloadError};
use crate::carddav::xml::{error_body, esc};
use crate::carddav::{lookup, phonebook, photo, propfind, report};
use crate::directory::{Entry, Published, Snapshot};
use crate::metrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub type Body = Full<Bytes>;

pub const ROOT: &str = "/dav/";
pub const HOME: &str = "/dav/books/";
pub const PRINCIPALS: &str = "/dav/principals/";
const DAV_HEADER: &str = "1, 3, addressbook";
const ALLOW: &str = "OPTIONS, GET, HEAD, PROPFIND, REPORT";
pub const XML_CT: &str = "application/xml; charset=utf-8";
pub const VCARD_CT: &str = "text/vcard; charset=utf-8";

/// What a cached whole-book answer depends on: configuration, snapshot, caller, and the exact request.
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseKey {
    cfg: usize,
    version: u64,
    principal: String,
    quirk: bool,
    method: String,
    path: String,
    depth: Option<Vec<u8>>,
    body: Bytes,
}

/// A handful of recent multistatus answers (a fleet of phones repeats the same few requests per snapshot).
#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<Vec<(ResponseKey, Bytes)>>,
}

const RESPONSE_CACHE_SLOTS: usize = 8;

impl ResponseCache {
    fn get(&self, k: &ResponseKey) -> Option<Bytes> {
        let mut e = self.lock();
        let i = e.iter().position(|(key, _)| key == k)?;
        let hit = e.remove(i);
        let bytes = hit.1.clone();
        e.insert(0, hit);
        Some(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ResponseKey, Bytes)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear(&self) {
        // Bound first, so the answers are freed after the lock is released (see `take_where`).
        let dropped = take_where(&mut self.lock(), |_| true);
        drop(dropped);
    }

    fn put(&self, k: ResponseKey, v: Bytes) {
        let dropped = {
            let mut e = self.lock();
            // Answers for older snapshots are never asked for again.
            let mut dropped = take_where(&mut e, |key| key.version < k.version || *key == k);
            e.insert(0, (k, v));
            if e.len() > RESPONSE_CACHE_SLOTS {
                dropped.extend(e.drain(RESPONSE_CACHE_SLOTS..));
            }
            dropped
        };
        drop(dropped);
    }

    /// Forget answers for snapshots older than `version`. Called by the warm-up after a new snapshot, so that
    /// the first request of the new version does not pay for freeing the old answers.
    pub(crate) fn evict_older(&self, version: u64) {
        let dropped = take_where(&mut self.lock(), |key| key.version < version);
        drop(dropped);
    }
}

/// Take out the answers `gone` selects. The caller drops them once the lock is released: freeing a whole-book
/// answer returns megabytes to the OS, which should not hold up other requests.
fn take_where(
    entries: &mut Vec<(ResponseKey, Bytes)>,
    gone: impl Fn(&ResponseKey) -> bool,
) -> Vec<(ResponseKey, Bytes)> {
    let (old, keep) = std::mem::take(entries).into_iter().partition(|(k, _)| gone(k));
    *entries = keep;
    old
}

/// The bytes of a `Full` body (it holds at most one chunk).
pub(crate) fn full_bytes(body: Body) -> Bytes {
    use hyper::body::Body as _;
    let mut body = body;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

fn multistatus_bytes(body: Bytes) -> Response<Body> {
    response(StatusCode::MULTI_STATUS, XML_CT, body)
}

/// Shared by all connections of one service instance.
pub struct State {
    pub cfg: Arc<ArcSwap<CardDavConfig>>,
    pub dir: Published,
    pub caches: Caches,
    pub auth: Authenticator,
    pub responses: ResponseCache,
    pub(crate) phonebooks: phonebook::Cache,
    /// Caller-ID answers of the current snapshot (`/lookup/number`).
    pub(crate) lookups: lookup::AnswerCache,
    /// Photos scaled for `/photo/…?size=`.
    pub(crate) photos: photo::Cache,
    /// The blocking threads answers are computed on.
    pub(crate) offload: Offload,
    /// Added to directory versions in sync tokens, and so in getctag (see [`epoch_at_start`]); raised when a
    /// configuration change alters what the books contain.
    pub epoch: AtomicU64,
    /// Random per process, in every sync token: replicas started in the same second share an epoch, and a token
    /// from another replica must be refused rather than read against this one's history. getctag hashes it in
    /// (Linphone reads ctags into a 32-bit int, too small to carry it).
    pub instance: String,
    /// The configuration the caches were built for; a swap that changes book content clears them.
    cfg_seen: Mutex<Option<Arc<CardDavConfig>>>,
}

/// 2025-01-01T00:00:00Z: keeps sync-token numbers small (this lasts until 2093 in 31 bits).
const EPOCH_ORIGIN: u64 = 1_735_689_600;

/// The offset a new service instance puts on sync tokens (and so on ctags): seconds since 2025-01-01 UTC
/// (`EPOCH_ORIGIN`).
///
/// Why an offset: the book views (and the membership-move record sync-collection needs) start empty with every
/// process, so tokens handed out by an earlier one must be refused, and without a state directory versions even
/// start again at 1. The next instance's offset exceeds the previous one's by its uptime in seconds, and an
/// instance publishes far fewer versions than that (one per sync round, rounds are 30 s apart at least), so its
/// numbers start above every number handed out before: an old token maps below the new instance's first version
/// and is refused with `valid-sync-token`. With a state directory versions continue across restarts (see
/// [`crate::directory::Directory::resume`]); they were only lost, and could be handed out twice, if state writes
/// failed for about as many versions as the old instance ran seconds.
pub fn epoch_at_start() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(EPOCH_ORIGIN))
        .unwrap_or(0)
}

/// Whether two configurations can give a book different content (and so must not share ctags).
fn same_content(a: &CardDavConfig, b: &CardDavConfig) -> bool {
    a.effective_books() == b.effective_books() && a.listing == b.listing && a.vcard_version == b.vcard_version
}

impl State {
    pub fn new(cfg: Arc<ArcSwap<CardDavConfig>>, dir: Published) -> State {
        State {
            cfg,
            dir,
            caches: Caches::default(),
            auth: Authenticator::default(),
            responses: ResponseCache::default(),
            phonebooks: phonebook::Cache::default(),
            lookups: lookup::AnswerCache::default(),
            photos: photo::Cache::default(),
            offload: Offload::for_this_machine(),
            epoch: AtomicU64::new(epoch_at_start()),
            instance: format!("{:08x}", rand::random::<u32>()),
            cfg_seen: Mutex::new(None),
        }
    }

    /// Build every book's member list and render every card in the default version for the current snapshot,
    /// so the first client after a start or a sync round does not pay for it. Unchanged entries are cache hits.
    pub fn prewarm(&self) {
        let cfg = self.config();
        let snap = self.dir.load();
        self.responses.evict_older(snap.version);
        self.phonebooks.evict_older(snap.version);
        for book in cfg.effective_books() {
            let view = self.caches.book(&book, &cfg.listing, &snap);
            for e in &view.members {
                let _ = self.caches.card(e, &snap).xml_text(cfg.vcard_version);
            }
        }
    }

    pub(crate) fn config(&self) -> Arc<CardDavConfig> {
        let cfg = self.cfg.load_full();
        let mut seen = self.cfg_seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &cfg)) {
            if let Some(old) = seen.as_ref() {
                self.responses.clear();
                self.phonebooks.clear();
                // Book views (and their record of membership moves, which sync-collection answers need) stay
                // across reloads that cannot change what a book holds, such as a daily certificate reload.
                if !same_content(old, &cfg) {
                    self.caches.clear();
                    // Every token handed out so far is below epoch + current version: all are refused now, as
                    // the new views have no history (and every ctag, which hashes that number, changes).
                    let bump = self.dir.load().version + 1;
                    self.epoch.fetch_add(bump, Ordering::SeqCst);
                }
            }
            *seen = Some(cfg.clone());
        }
        cfg
    }
}

/// Everything one request is answered from: one configuration and one snapshot.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub cfg: Arc<CardDavConfig>,
    pub books: Vec<BookConfig>,
    pub snap: Arc<Snapshot>,
    pub principal: Principal,
    /// Thunderbird re-fetches a book only when a stale sync token gets 400; with RFC 6578's 403 it stops
    /// syncing for good. Set from the User-Agent so it alone gets 400 (with the same precondition body).
    pub stale_token_400: bool,
}

#[cfg(test)]
impl<'a> Ctx<'a> {
    /// An anonymous request on the state's current configuration and snapshot (unit tests).
    pub(crate) fn for_test(state: &'a State, stale_token_400: bool) -> Ctx<'a> {
        let cfg = state.cfg.load_full();
        Ctx {
            state,
            books: cfg.effective_books(),
            cfg,
            snap: state.dir.load(),
            principal: Principal::Anonymous,
            stale_token_400,
        }
    }
}

/// A resolved URL.
#[derive(Clone)]
pub enum Resource {
    Root,
    Principals,
    Principal,
    Home,
    Book(usize),
    Card(usize, Arc<Entry>),
}

impl Ctx<'_> {
    /// Whether book `i`'s view of this snapshot is built already ([`Ctx::book_view`] then costs a lookup).
    pub fn book_view_ready(&self, i: usize) -> bool {
        self.state
            .caches
            .has_book(&self.books[i], &self.cfg.listing, &self.snap)
    }

    pub fn book_view(&self, i: usize) -> Arc<BookView> {
        self.state.caches.book(&self.books[i], &self.cfg.listing, &self.snap)
    }

    pub fn card(&self, e: &Arc<Entry>) -> Arc<CardData> {
        self.state.caches.card(e, &self.snap)
    }

    pub fn principal_href(&self) -> String {
        format!("{PRINCIPALS}{}/", encode_segment(self.principal.segment()))
    }

    /// Whether book `i` is the directory gateway collection (searched, never listed or synced).
    pub fn is_directory(&self, i: usize) -> bool {
        self.cfg.directory.is_some() && self.books.get(i).is_some_and(|b| b.name == DIRECTORY_BOOK)
    }

    /// The directory collection's index, when this principal is offered it.
    pub fn directory(&self) -> Option<usize> {
        (0..self.books.len()).find(|i| self.is_directory(*i))
    }

    pub fn book_href(&self, i: usize) -> String {
        format!("{HOME}{}/", encode_segment(&self.books[i].name))
    }

    pub fn card_href(&self, i: usize, e: &Entry) -> String {
        format!(
            "{HOME}{}/{}.vcf",
            encode_segment(&self.books[i].name),
            encode_segment(&e.id)
        )
    }

    pub fn href(&self, r: &Resource) -> String {
        match r {
            Resource::Root => ROOT.to_string(),
            Resource::Principals => PRINCIPALS.to_string(),
            Resource::Principal => self.principal_href(),
            Resource::Home => HOME.to_string(),
            Resource::Book(i) => self.book_href(*i),
            Resource::Card(i, e) => self.card_href(*i, e),
        }
    }

    /// The offset between directory versions and the numbers clients see (see [`epoch_at_start`]).
    pub fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::SeqCst)
    }

    /// The number in a book's sync token: its change version plus the epoch, so it changes exactly when the
    /// book does and grows across restarts.
    pub fn token_base(&self, i: usize) -> u64 {
        self.epoch() + self.book_view(i).changed
    }

    /// A book's getctag, also its collection ETag: the sync-token number hashed with this process's instance
    /// id into 31 bits (Linphone reads getctag into a C int). Clients only compare ctags for equality; a
    /// replica's ctags are its own, so a client moved to another replica by a load balancer sees a new ctag and
    /// syncs (its token is refused there anyway) instead of trusting a number that another history gave a
    /// different book. Two replicas (or two books, or two instances) coincide with a chance of 2⁻³¹.
    pub fn ctag(&self, i: usize) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.state.instance.hash(&mut h);
        self.token_base(i).hash(&mut h);
        h.finish() & 0x7fff_ffff
    }

    pub fn sync_token(&self, i: usize) -> String {
        report::Token {
            instance: self.state.instance.clone(),
            base: self.token_base(i),
            position: None,
            incremental: true,
        }
        .format()
    }

    /// Resolve a decoded absolute path.
    pub fn resolve(&self, path: &str) -> Option<Resource> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            [] | ["dav"] => Some(Resource::Root),
            ["dav", "principals"] => Some(Resource::Principals),
            ["dav", "principals", who] if who.eq_ignore_ascii_case(self.principal.segment()) => {
                Some(Resource::Principal)
            }
            ["dav", "books"] => Some(Resource::Home),
            ["dav", "books", book] => self.book_index(book).map(Resource::Book),
            ["dav", "books", book, file] => {
                let i = self.book_index(book)?;
                let id = file.strip_suffix(".vcf")?;
                let e = self.snap.entry(id)?;
                self.book_view(i).contains(id).then(|| Resource::Card(i, e.clone()))
            }
            _ => None,
        }
    }

    /// The book a path names as a collection (`/dav/books/<book>/`), without building its member list.
    pub fn collection(&self, path: &str) -> Option<usize> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["dav", "books", book] => self.book_index(book),
            _ => None,
        }
    }

    fn book_index(&self, name: &str) -> Option<usize> {
        self.books.iter().position(|b| b.name == name)
    }
}

/// Percent-encode a path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_segment_into(&mut out, s);
    out
}

/// [`encode_segment`] appending to `out` (card listings write thousands of hrefs into one buffer). The result
/// never needs XML escaping: it is ASCII letters, digits, `-._~` and `%XX`.
pub fn encode_segment_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        out.push_str(s);
        return;
    }
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Decode `%XX` escapes; `None` for broken escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert("DAV", HeaderValue::from_static(DAV_HEADER));
    r
}

pub fn xml_response(status: StatusCode, body: String) -> Response<Body> {
    response(status, XML_CT, body)
}

pub fn multistatus(body: String) -> Response<Body> {
    xml_response(StatusCode::MULTI_STATUS, body)
}

pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    response(status, "text/plain; charset=utf-8", m)
}

/// 403 with a `DAV:error` precondition body.
pub fn forbidden(inner: &str) -> Response<Body> {
    xml_response(StatusCode::FORBIDDEN, error_body(inner))
}

fn unauthorized() -> Response<Body> {
    let mut r = text(StatusCode::UNAUTHORIZED, "authentication required");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"entradir\", charset=\"UTF-8\""),
    );
    r
}

fn privilege_for(method: &Method) -> &'static str {
    match method.as_str() {
        "DELETE" | "MOVE" => "unbind",
        "MKCOL" | "POST" | "COPY" | "MKCALENDAR" => "bind",
        "PROPPATCH" => "write-properties",
        "ACL" => "write-acl",
        _ => "write-content",
    }
}

/// Read a request body up to the configured limit.
pub enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn body_error(e: BodyError, max: usize) -> Response<Body> {
    match e {
        BodyError::TooLarge => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes"),
        ),
        BodyError::Broken => text(StatusCode::BAD_REQUEST, "request body could not be read"),
    }
}

/// The hyper service function.
pub async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    secure: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let mut resp = route(&state, peer, secure, req).await;
    metrics::http_request(
        metrics::HttpArea::of_path(&raw_path),
        resp.status().as_u16(),
        started.elapsed(),
    );
    if method == Method::HEAD {
        let (parts, body) = resp.into_parts();
        let size = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
        resp = Response::from_parts(parts, Full::new(Bytes::new()));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    tracing::debug!(%peer, %method, path = %raw_path, status = resp.status().as_u16(), "carddav request");
    Ok(resp)
}

async fn route(state: &Arc<State>, peer: SocketAddr, secure: bool, req: Request<Incoming>) -> Response<Body> {
    let Some(path) = percent_decode(req.uri().path()) else {
        return text(StatusCode::BAD_REQUEST, "invalid percent-encoding in the request path");
    };
    let method = req.method().clone();
    if path.trim_end_matches('/').eq_ignore_ascii_case("/.well-known/carddav") {
        let mut r = text(StatusCode::MOVED_PERMANENTLY, format!("CardDAV service: {ROOT}"));
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(ROOT));
        return r;
    }
    if method == Method::OPTIONS {
        let mut r = response(StatusCode::OK, "text/plain; charset=utf-8", Bytes::new());
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return r;
    }
    let cfg = state.config();
    // Behind a trusted reverse proxy: the client's address and the URL it asked for, from its headers.
    let origin = Origin::of(req.headers(), peer.ip(), secure, &cfg.trusted_proxies);
    let authz = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let principal = match state
        .auth
        .authenticate(&cfg.accounts, &cfg.anonymous_networks, authz.as_deref(), origin.ip)
        .await
    {
        Ok(p) => p,
        Err(AuthFailure::Missing) => return unauthorized(),
        Err(AuthFailure::Invalid) => {
            tracing::info!(%peer, client = %origin.ip, "carddav: authentication failed");
            return unauthorized();
        }
    };
    let mut ctx = Ctx {
        state: state.as_ref(),
        books: cfg.effective_books(),
        cfg: cfg.clone(),
        snap: state.dir.load(),
        principal,
        stale_token_400: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.contains("Thunderbird")),
    };

    if lookup::owns(&path) {
        if !matches!(method, Method::GET | Method::HEAD) {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "lookups answer GET");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let request = match lookup::parse(&ctx, &path, req.uri().query()) {
            Ok(r) => r,
            Err(answered) => return *answered,
        };
        let (base, tags) = (origin.base_url(), if_none_match(&req));
        if lookup::is_quick(&ctx, &request) {
            return lookup::answer(&ctx, &request, &base, tags.as_deref());
        }
        return offload(state, &ctx, move |ctx| {
            lookup::answer(ctx, &request, &base, tags.as_deref())
        })
        .await;
    }
    if path == "/phonebook" || path.starts_with("/phonebook/") {
        if !matches!(method, Method::GET | Method::HEAD | Method::POST) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "phone books answer GET and POST");
        }
        let query = req.uri().query().map(str::to_string);
        let base = origin.base_url();
        if method == Method::POST {
            // Snom posts its search form; the body (if any) is form data with the same fields as the query.
            let body = match read_body(req, cfg.max_body_bytes).await {
                Ok(b) => b,
                Err(e) => return body_error(e, cfg.max_body_bytes),
            };
            let merged = merge_query(query.as_deref(), &body);
            return phone_book(state, &ctx, &path, merged.as_deref(), &base).await;
        }
        return phone_book(state, &ctx, &path, query.as_deref(), &base).await;
    }

    // The directory is a CardDAV collection only (phone books and lookups have their own books).
    // Its accounts sync only the books named for them and search the rest.
    if let Some(d) = cfg.directory.as_ref().filter(|d| d.offered_to(&ctx.principal)) {
        ctx.books.retain(|b| d.books.contains(&b.name));
        ctx.books.push(d.book());
    }
    match method.as_str() {
        "GET" | "HEAD" => {
            let (version, tags) = (accepted_version(&req), if_none_match(&req));
            if ctx.collection(&path).is_none() {
                return get(&ctx, &path, version, tags.as_deref());
            }
            // A whole book as vCards: megabytes to copy together.
            offload(state, &ctx, move |ctx| get(ctx, &path, version, tags.as_deref())).await
        }
        "PROPFIND" | "REPORT" => {
            let depth = req.headers().get("Depth").map(|v| v.as_bytes().to_vec());
            let body = match read_body(req, cfg.max_body_bytes).await {
                Ok(b) => b,
                Err(e) => return body_error(e, cfg.max_body_bytes),
            };
            // Whole-book answers (etag listings, initial syncs) are the expensive ones and every phone of a fleet
            // asks the same question of the same snapshot: remember a few complete answers per snapshot.
            let key = ctx.collection(&path).map(|_| ResponseKey {
                cfg: Arc::as_ptr(&ctx.cfg) as usize,
                version: ctx.snap.version,
                principal: ctx.principal.segment().to_string(),
                quirk: ctx.stale_token_400,
                method: method.as_str().to_string(),
                path: path.clone(),
                depth: depth.clone(),
                body: body.clone(),
            });
            if let Some(hit) = key.as_ref().and_then(|k| state.responses.get(k)) {
                return multistatus_bytes(hit);
            }
            offload(state, &ctx, move |ctx| {
                dav_method(ctx, &method, &path, depth, &body, key)
            })
            .await
        }
        "PUT" | "DELETE" | "MKCOL" | "PROPPATCH" | "MOVE" | "COPY" | "LOCK" | "UNLOCK" | "POST" | "ACL"
        | "MKCALENDAR" => {
            let inner = format!(
                "<D:need-privileges><D:resource><D:href>{}</D:href><D:privilege><D:{}/></D:privilege></D:resource></D:need-privileges>",
                esc(req.uri().path()),
                privilege_for(&method)
            );
            forbidden(&inner)
        }
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not supported (read-only)"),
            );
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            r
        }
    }
}

/// PROPFIND or REPORT, on a blocking thread; a whole-book answer goes into the response cache under `key`.
fn dav_method(
    ctx: &Ctx<'_>,
    method: &Method,
    path: &str,
    depth: Option<Vec<u8>>,
    body: &Bytes,
    key: Option<ResponseKey>,
) -> Response<Body> {
    let Some(res) = ctx.resolve(path) else {
        return text(StatusCode::NOT_FOUND, format!("no such resource: {path}"));
    };
    let resp = if method.as_str() == "PROPFIND" {
        propfind::handle(ctx, res, depth.as_deref(), body)
    } else {
        report::handle(ctx, res, path, body)
    };
    match key {
        Some(k) if resp.status() == StatusCode::MULTI_STATUS => {
            let (parts, full) = resp.into_parts();
            let bytes = full_bytes(full);
            ctx.state.responses.put(k, bytes.clone());
            Response::from_parts(parts, Full::new(bytes))
        }
        _ => resp,
    }
}

/// A phone book: from the worker when the answer is a slice of a prepared book, else on a blocking thread.
async fn phone_book(state: &Arc<State>, ctx: &Ctx<'_>, path: &str, query: Option<&str>, base: &str) -> Response<Body> {
    let r = match phonebook::request(ctx, path, query, base) {
        Ok(r) => r,
        Err(answered) => return *answered,
    };
    if let Some(ready) = phonebook::answer_prepared(ctx, &r) {
        return ready;
    }
    offload(state, ctx, move |ctx| phonebook::answer(ctx, &r)).await
}

/// How long a refused client should wait: the queue is a few requests of a few milliseconds each.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Answer with `work` on a blocking thread, from the same configuration, snapshot and caller as `ctx`; 503 with
/// `Retry-After` when too many requests are running and waiting already.
async fn offload(
    state: &Arc<State>,
    ctx: &Ctx<'_>,
    work: impl FnOnce(&Ctx<'_>) -> Response<Body> + Send + 'static,
) -> Response<Body> {
    let owned = state.clone();
    let (cfg, books, snap, principal, stale_token_400) = (
        ctx.cfg.clone(),
        ctx.books.clone(),
        ctx.snap.clone(),
        ctx.principal.clone(),
        ctx.stale_token_400,
    );
    let ran = state
        .offload
        .run(move || {
            let ctx = Ctx {
                state: &owned,
                cfg,
                books,
                snap,
                principal,
                stale_token_400,
            };
            work(&ctx)
        })
        .await;
    match ran {
        Ok(resp) => resp,
        Err(e @ OffloadError::Busy(_)) => {
            tracing::debug!(error = %e, "CardDAV: busy; answering 503");
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "busy, please retry");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            r
        }
        Err(e @ (OffloadError::Failed(_) | OffloadError::Panicked(_))) => {
            tracing::error!(error = %e, "CardDAV: request failed; answered 500");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn merge_query(query: Option<&str>, body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body)
        .ok()
        .map(str::trim)
        .filter(|b| !b.is_empty() && !b.starts_with('<'));
    match (query, body) {
        (Some(q), Some(b)) => Some(format!("{q}&{b}")),
        (Some(q), None) => Some(q.to_string()),
        (None, Some(b)) => Some(b.to_string()),
        (None, None) => None,
    }
}

/// The vCard version an `Accept` header asks for (`text/vcard; version=4.0`), if any.
fn accepted_version(req: &Request<Incoming>) -> Option<VCardVersion> {
    let accept = req.headers().get(header::ACCEPT)?.to_str().ok()?;
    accept.split(',').find_map(|item| {
        let mut parts = item.split(';').map(str::trim);
        let ty = parts.next()?;
        if !ty.eq_ignore_ascii_case("text/vcard") {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("version="))
            .and_then(|v| VCardVersion::parse(v.trim_matches('"')))
    })
}

fn if_none_match(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// If-None-Match (`tags`): `*` or a list of (possibly weak) tags compared weakly, as RFC 9110 §13.1.2 specifies.
pub(crate) fn none_match(tags: Option<&str>, etag: &str) -> bool {
    let Some(v) = tags else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn get(ctx: &Ctx<'_>, path: &str, accepted: Option<VCardVersion>, tags: Option<&str>) -> Response<Body> {
    match ctx.resolve(path) {
        Some(Resource::Card(_, e)) => {
            let card = ctx.card(&e);
            let etag = card.etag();
            let version = accepted.unwrap_or(ctx.cfg.vcard_version);
            if none_match(tags, &etag) {
                let mut r = response(StatusCode::NOT_MODIFIED, VCARD_CT, Bytes::new());
                r.headers_mut().remove(header::CONTENT_TYPE);
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                return r;
            }
            let mut r = response(StatusCode::OK, VCARD_CT, card.bytes(version).clone());
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Some(Resource::Book(i)) => {
            // The whole book as one vCard stream: handy for exports and for clients that import a URL.
            let version = accepted.unwrap_or(ctx.cfg.vcard_version);
            let view = ctx.book_view(i);
            let mut out = Vec::with_capacity(view.members.len() * 512);
            for e in &view.members {
                out.extend_from_slice(ctx.card(e).bytes(version));
            }
            response(StatusCode::OK, VCARD_CT, out)
        }
        Some(_) => text(
            StatusCode::OK,
            format!(
                "entradir CardDAV: address books under {HOME}, principal {}",
                ctx.principal_href()
            ),
        ),
        None => text(StatusCode::NOT_FOUND, format!("no such resource: {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u64, body: &'static str) -> ResponseKey {
        ResponseKey {
            cfg: 1,
            version,
            principal: "p".into(),
            quirk: false,
            method: "REPORT".into(),
            path: "/dav/books/all/".into(),
            depth: Some(b"1".to_vec()),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn response_cache_keeps_recent_answers_of_the_newest_snapshot() {
        let c = ResponseCache::default();
        c.put(key(5, "a"), Bytes::from_static(b"A5"));
        assert_eq!(c.get(&key(5, "a")).as_deref(), Some(&b"A5"[..]));
        assert_eq!(c.get(&key(5, "b")), None);
        assert_eq!(c.get(&key(6, "a")), None, "another snapshot is another answer");
        c.put(key(6, "b"), Bytes::from_static(b"B6"));
        assert_eq!(c.get(&key(5, "a")), None, "answers for older snapshots are dropped");
        for i in 0..20u8 {
            let body: &'static str = Box::leak(format!("q{i}").into_boxed_str());
            c.put(key(6, body), Bytes::from(vec![i]));
        }
        assert_eq!(c.get(&key(6, "q19")).as_deref(), Some(&[19u8][..]));
        assert_eq!(c.get(&key(6, "q0")), None, "bounded");
        let full = Full::new(Bytes::from_static(b"xyz"));
        assert_eq!(full_bytes(full), Bytes::from_static(b"xyz"));
        c.put(key(6, "a"), Bytes::from_static(b"A6"));
        c.evict_older(7);
        assert_eq!(
            c.get(&key(6, "a")),
            None,
            "the warm-up of snapshot 7 forgets snapshot 6's answers"
        );
        c.put(key(7, "a"), Bytes::from_static(b"A7"));
        c.evict_older(7);
        assert_eq!(c.get(&key(7, "a")).as_deref(), Some(&b"A7"[..]), "but not its own");
    }

    #[test]
    fn percent_coding() {
        assert_eq!(
            percent_decode("/dav/books/a%20b/x%C3%BC.vcf").as_deref(),
            Some("/dav/books/a b/xü.vcf")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(encode_segment("1b6f0c5e-0000-4000"), "1b6f0c5e-0000-4000");
    }

    #[test]
    fn snom_post_bodies_merge_with_the_query() {
        assert_eq!(merge_query(Some("q=a"), b"page=2").as_deref(), Some("q=a&page=2"));
        assert_eq!(merge_query(None, b"  ").as_deref(), None);
        assert_eq!(merge_query(None, b"<xml/>").as_deref(), None);
    }
}
