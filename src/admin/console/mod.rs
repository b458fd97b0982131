//! The admin console (`/console/` on the admin listener): a read-only web view of what the PBX sees.
//!
//! Four pages, server-rendered from askama templates (`templates/console/`), no script at all: the sync
//! timeline ([`pages::sync`]), data quality to fix at the source ([`quality`]), a lookup tester that runs a
//! number or name through the same code LDAP and `/lookup` use ([`lookup`]), and the LDAP clients seen
//! ([`crate::ldap::clients`]).
//!
//! Access is guarded twice. The caller's address must be in `admin.console_networks` (loopback by default),
//! and it must hold the admin token (`admin.token_file`, the one `POST /sync` takes): as `Authorization:
//! Bearer`, or typed once into the sign-in form, which sets a random session cookie (`HttpOnly`,
//! `SameSite=Strict`, path `/console`) valid for [`SESSION_TTL`] and only while the token stays the same. The
//! pages forbid scripts, frames and foreign resources by CSP and are never cached.

mod lookup;
mod pages;
mod quality;

use super::{AdminState, MAX_BODY};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; the oldest is dropped for a new one.
pub const MAX_SESSIONS: usize = 32;
/// A wrong token waits this long before the answer, so guessing is slow.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);
const COOKIE: &str = "entradir_console";
const STYLE: &str = include_str!("../../../templates/console/style.css");
const FAVICON: &str = include_str!("../../../templates/console/favicon.svg");
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The console's own state: sign-in sessions and the cached data-quality report.
#[derive(Default)]
pub(crate) struct Console {
    sessions: Mutex<Vec<Session>>,
    quality: quality::Cache,
}

struct Session {
    id: String,
    expires: u64,
    /// The token it was opened with (hashed): a changed token ends every session.
    token: [u8; 32],
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Console {
    fn open_session(&self, token: &str) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::time::unix_now();
        s.retain(|x| x.expires > now);
        if s.len() >= MAX_SESSIONS {
            s.remove(0);
        }
        s.push(Session {
            id: id.clone(),
            expires: now + SESSION_TTL.as_secs(),
            token: token_hash(token),
        });
        id
    }

    fn session_valid(&self, id: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let now = crate::time::unix_now();
        let want = token_hash(token);
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .any(|x| x.expires > now && bool::from(x.id.as_bytes().ct_eq(id.as_bytes())) && x.token == want)
    }

    fn close_session(&self, id: &str) {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.id != id);
    }
}

/// An HTML (or CSS) answer with the console's security headers.
pub(super) fn page(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

const HTML: &str = "text/html; charset=utf-8";

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = page(StatusCode::SEE_OTHER, HTML, "");
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn cookie_of(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Answer a request under `/console`.
pub(super) async fn handle(st: &AdminState, peer: IpAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // The two static parts every page loads, public: the sign-in and refusal pages are styled too.
    match req.uri().path() {
        "/console/style.css" => return page(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/console/favicon.svg" => return page(StatusCode::OK, "image/svg+xml", FAVICON),
        _ => {}
    }
    let settings = st.settings.load_full();
    let nav = |title: &'static str, signed_in: bool| pages::Nav::new(st, title, signed_in);
    if !settings.console_networks.iter().any(|n| n.contains(peer)) {
        tracing::info!(%peer, "admin console refused: address not in admin.console_networks");
        let msg = format!(
            "The console is open to admin.console_networks ({}); your address {peer} is not in them.",
            settings.console_networks_text()
        );
        return pages::refused(StatusCode::FORBIDDEN, nav("Not allowed", false), msg);
    }
    let Some(token) = settings.token.clone() else {
        return pages::refused(
            StatusCode::FORBIDDEN,
            nav("Not configured", false),
            "The console needs an admin token: set admin.token_file to a file holding one, then reload (SIGHUP)."
                .into(),
        );
    };
    let path = req.uri().path().to_string();
    if path == "/console/login" && req.method() == Method::POST {
        return login(st, &token, req, nav("Sign in", false)).await;
    }
    let bearer = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let cookie = cookie_of(&req);
    let signed_in =
        super::bearer_matches(bearer, &token) || cookie.is_some_and(|c| st.console.session_valid(c, &token));
    if path == "/console/logout" && req.method() == Method::POST {
        if let Some(c) = cookie {
            st.console.close_session(c);
        }
        let mut r = redirect("/console/");
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static("entradir_console=; Max-Age=0; Path=/console; HttpOnly; SameSite=Strict"),
        );
        return r;
    }
    if !signed_in {
        return pages::login(StatusCode::UNAUTHORIZED, nav("Sign in", false), None);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return pages::refused(
            StatusCode::METHOD_NOT_ALLOWED,
            nav("Not allowed", true),
            "The console is read-only: its pages answer GET.".into(),
        );
    }
    let query = req.uri().query().map(str::to_string);
    match path.as_str() {
        "/console/login" => redirect("/console/"),
        "/console" | "/console/" => pages::sync(st, nav("Sync", true)),
        "/console/quality" => quality::page(st, nav("Data quality", true)).await,
        "/console/lookup" => lookup::page(st, nav("Lookup tester", true), query.as_deref()).await,
        "/console/clients" => {
            // Up to 256 clients with their shapes and operations: rendered off the async workers.
            let nav = nav("Clients", true);
            match tokio::task::spawn_blocking(move || pages::clients(nav)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "admin console: the clients page failed (a bug: please report it)");
                    page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        "the page failed\n",
                    )
                }
            }
        }
        _ => pages::refused(
            StatusCode::NOT_FOUND,
            nav("Not found", true),
            format!("There is no console page {path}."),
        ),
    }
}

/// `POST /console/login` with `token=…` (a form): a session cookie when it is the admin token.
async fn login(st: &AdminState, token: &str, req: Request<Incoming>, nav: pages::Nav) -> Response<Full<Bytes>> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return pages::login(
                StatusCode::PAYLOAD_TOO_LARGE,
                nav,
                Some(format!("The sign-in form is larger than {MAX_BODY} bytes.")),
            )
        }
    };
    let form = String::from_utf8_lossy(&body);
    let given = crate::carddav::lookup::params(Some(&form))
        .into_iter()
        .find_map(|(k, v)| (k == "token").then_some(v))
        .unwrap_or_default();
    if !super::bearer_matches(Some(format!("Bearer {}", given.trim()).as_bytes()), token) {
        tracing::info!("admin console: sign-in with a wrong token");
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        return pages::login(
            StatusCode::UNAUTHORIZED,
            nav,
            Some("That is not the admin token. It is the content of the file admin.token_file names.".into()),
        );
    }
    let id = st.console.open_session(token);
    let mut r = redirect("/console/");
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
