//! HTTP front of the simulator: the token endpoint, the Graph v1.0 routes and the `/_sim` control API, plus the
//! request log and fault injection that wrap them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use super::control::{lock, unix_now, Control, Shared};
use super::delta::{self, DeltaRequest, DeltaResponse};
use super::faults::{Endpoint, ExpiryStyle, Fault, Injected, RequestRecord};
use super::gen::iso8601;
use super::tenant::SimError;
use super::{auth, jpeg};
use crate::model::{GraphKind, MemberRef};

type Body = BoxBody<Bytes, std::io::Error>;

/// Largest request body accepted (photo uploads through the control API are the big ones).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Request log entries kept; the older half is dropped when full.
const MAX_LOG: usize = 200_000;

/// Photo sizes Graph serves under `/photos/{size}`.
const PHOTO_SIZES: &[u32] = &[48, 64, 96, 120, 240, 360, 432, 504, 648];

const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;\
                          charset=utf-8";

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                // Accept errors (e.g. too many open files) are transient for a test server; keep going.
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while conns.try_join_next().is_some() {}
            }
        }
    }
    conns.abort_all();
}

/// A response before it is turned into hyper's type: lets the fault layer cut the body.
struct Reply {
    status: StatusCode,
    headers: Vec<(hyper::header::HeaderName, String)>,
    body: Bytes,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![(CONTENT_TYPE, "application/json; charset=utf-8".into())],
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        }
    }

    fn graph(status: u16, v: &Value) -> Reply {
        let mut r = Reply::json(status, v);
        r.headers = vec![(CONTENT_TYPE, GRAPH_JSON.into())];
        r
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    fn text(status: u16, s: String) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: vec![(CONTENT_TYPE, "text/plain; charset=utf-8".into())],
            body: Bytes::from(s),
        }
    }

    fn header(mut self, name: hyper::header::HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Graph's error body: `{"error":{"code","message","innerError":{...}}}`.
fn graph_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::graph(
        status,
        &json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": iso8601(unix_now()),
                    "request-id": uuid::Uuid::new_v4().to_string(),
                    "client-request-id": uuid::Uuid::new_v4().to_string(),
                }
            }
        }),
    )
}

fn classify(method: &Method, segs: &[&str]) -> Endpoint {
    match segs {
        ["_sim", ..] => Endpoint::Control,
        [_, "oauth2", "v2.0", "token"] if method == Method::POST => Endpoint::Token,
        ["v1.0", coll, "delta"] => match kind_of_collection(coll) {
            Some(k) => Endpoint::Delta(k),
            None => Endpoint::Other,
        },
        ["v1.0", "users", _, "photo" | "photos", ..] => Endpoint::Photo,
        _ => Endpoint::Other,
    }
}

/// Decodes `%XX` escapes; malformed escapes and invalid UTF-8 are kept as they are / replaced.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kind_of_collection(coll: &str) -> Option<GraphKind> {
    GraphKind::ALL.into_iter().find(|k| k.collection() == coll)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let at = Instant::now();
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    // Clients may percent-encode segments (`%24value`, a UPN's `%40`); route on the decoded form.
    let decoded: Vec<String> = path.trim_matches('/').split('/').map(percent_decode).collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let endpoint = classify(&method, &segs);
    let client_request_id = req
        .headers()
        .get("client-request-id")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let base = match req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", shared.addr),
    };

    let mut cut = false;
    let reply = if endpoint == Endpoint::Control {
        control(&shared, req, &segs).await
    } else {
        let _in_flight = InFlight::enter(&shared, endpoint);
        let delay = lock(&shared.faults).delay_for(endpoint);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let injected = lock(&shared.faults).take(endpoint);
        match injected {
            Some(Injected::Throttle(secs)) => graph_error(
                429,
                "TooManyRequests",
                "Too many requests have been sent in a short period of time. Retry after the time in Retry-After.",
            )
            .header(RETRY_AFTER, secs.to_string()),
            Some(Injected::Unavailable(status)) => graph_error(
                status,
                if status == 504 {
                    "gatewayTimeout"
                } else {
                    "serviceNotAvailable"
                },
                "The service is temporarily unavailable.",
            ),
            other => {
                cut = other == Some(Injected::Cut);
                route(&shared, req, &segs, endpoint, &base).await
            }
        }
    };
    // Graph tags every answer with ids that support cases quote; clients log them.
    let reply = if matches!(endpoint, Endpoint::Delta(_) | Endpoint::Photo | Endpoint::Other) {
        let request_id = uuid::Uuid::new_v4().to_string();
        reply
            .header(hyper::header::HeaderName::from_static("request-id"), request_id.clone())
            .header(
                hyper::header::HeaderName::from_static("client-request-id"),
                client_request_id.unwrap_or(request_id),
            )
    } else {
        reply
    };
    let status = reply.status.as_u16();
    // Only successful pages are cut: that is where a client would otherwise take half a page for a whole one.
    let cut = cut && status == 200;
    let record = RequestRecord {
        method: method.to_string(),
        path: path_and_query,
        endpoint,
        status,
        cut,
        at,
        at_ms: at.duration_since(shared.started).as_millis() as u64,
    };
    let mut log = lock(&shared.log);
    // A long-running `graph-sim` must not grow without bound; tests clear the log long before this.
    if log.len() >= MAX_LOG {
        log.drain(..MAX_LOG / 2);
    }
    log.push(record);
    drop(log);
    Ok(into_response(reply, cut))
}

/// Counts a request as in flight until dropped, recording the peak per endpoint.
struct InFlight<'a> {
    shared: &'a Shared,
    endpoint: Endpoint,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, endpoint: Endpoint) -> InFlight<'a> {
        let mut c = lock(&shared.concurrency);
        let e = c.entry(endpoint).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        InFlight { shared, endpoint }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.shared.concurrency).get_mut(&self.endpoint) {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

fn into_response(reply: Reply, cut: bool) -> Response<Body> {
    let len = reply.body.len();
    let body: Body = if cut {
        use futures_util::StreamExt;
        let half = reply.body.slice(..len / 2);
        // The pause lets hyper flush the headers and the first half, so the client sees a response that breaks
        // off, not a connection that never answered.
        let head = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(half))]);
        let tail = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "cut by fault injection",
            ))
        });
        BodyExt::boxed(StreamBody::new(head.chain(tail)))
    } else {
        Full::new(reply.body).map_err(|never| match never {}).boxed()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        headers.insert(CONTENT_LENGTH, v);
    }
    resp
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(Reply::json(
            400,
            &json!({"error": format!("cannot read request body: {e}")}),
        )),
    }
}

async fn route(shared: &Shared, req: Request<Incoming>, segs: &[&str], endpoint: Endpoint, base: &str) -> Reply {
    match endpoint {
        Endpoint::Token => {
            let tenant = segs.first().copied().unwrap_or_default().to_string();
            let token_url = format!("{base}/{tenant}/oauth2/v2.0/token");
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let (status, v) = auth::token(shared, &tenant, &body, &token_url);
            Reply::json(status, &v)
        }
        Endpoint::Delta(kind) => {
            if req.method() != Method::GET {
                return graph_error(405, "Request_BadRequest", "Only GET is supported on delta.");
            }
            if let Some(r) = bearer(shared, &req) {
                return r;
            }
            delta_page(shared, &req, kind, base)
        }
        Endpoint::Photo => {
            if req.method() != Method::GET {
                return graph_error(405, "Request_BadRequest", "Only GET is supported on photos.");
            }
            if let Some(r) = bearer(shared, &req) {
                return r;
            }
            photo(shared, &req, segs, base)
        }
        Endpoint::Control | Endpoint::Other => graph_error(
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segs.last().copied().unwrap_or_default()
            ),
        ),
    }
}

fn bearer(shared: &Shared, req: &Request<Incoming>) -> Option<Reply> {
    let authz = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    auth::check_bearer(shared, authz).err().map(|msg| {
        graph_error(401, "InvalidAuthenticationToken", msg).header(
            hyper::header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\"",
        )
    })
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn delta_page(shared: &Shared, req: &Request<Incoming>, kind: GraphKind, base: &str) -> Reply {
    let q = query_pairs(req);
    let param = |name: &str| {
        q.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let request = if let Some(t) = param("$skiptoken") {
        DeltaRequest::Skip(t)
    } else if let Some(t) = param("$deltatoken") {
        if t.eq_ignore_ascii_case("latest") {
            DeltaRequest::Start {
                select: param("$select").map(|s| delta::parse_select(&s)),
                latest: true,
            }
        } else {
            DeltaRequest::Delta(t)
        }
    } else {
        DeltaRequest::Start {
            select: param("$select").map(|s| delta::parse_select(&s)),
            latest: false,
        }
    };
    let minimal = req
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("return=minimal"));
    let paging = *lock(&shared.paging);
    let ctx = delta::Context {
        paging: &paging,
        policy: *lock(&shared.tokens),
        minimal,
        base,
        now: unix_now(),
    };
    let answer = delta::serve(&lock(&shared.tenant), &ctx, kind, request);
    match answer {
        DeltaResponse::Page(v) => {
            let r = Reply::graph(200, &v);
            if minimal {
                r.header(
                    hyper::header::HeaderName::from_static("preference-applied"),
                    "return=minimal",
                )
            } else {
                r
            }
        }
        DeltaResponse::Expired { style, location } => match style {
            ExpiryStyle::Gone => graph_error(
                410,
                "syncStateNotFound",
                "Resync required. The delta token has expired or is invalid; restart the delta query without a \
                 token (see the Location header).",
            )
            .header(LOCATION, location),
            ExpiryStyle::BadRequest => graph_error(
                400,
                "syncStateNotFound",
                "The sync state cannot be found: the delta token has expired. Restart the delta query.",
            ),
        },
        DeltaResponse::BadToken(msg) => graph_error(400, "BadRequest", &msg),
    }
}

fn photo(shared: &Shared, req: &Request<Incoming>, segs: &[&str], base: &str) -> Reply {
    // segs: v1.0 users {id} photo [$value] | v1.0 users {id} photos {size} [$value]
    let user = segs.get(2).copied().unwrap_or_default();
    let (size, rest) = match segs.get(3).copied() {
        Some("photo") => (None, &segs[4..]),
        Some("photos") if segs.len() >= 5 => (Some(segs[4]), &segs[5..]),
        _ => return graph_error(400, "BadRequest", "Unsupported photo request."),
    };
    let value = match rest {
        [] => false,
        ["$value"] => true,
        _ => return graph_error(400, "BadRequest", "Unsupported photo request."),
    };
    let px = match size {
        None => 240,
        Some(s) => {
            let parsed = s.to_ascii_lowercase().split_once('x').and_then(|(w, h)| {
                let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
                (w == h && PHOTO_SIZES.contains(&w)).then_some(w)
            });
            match parsed {
                Some(px) => px,
                None => return image_not_found(),
            }
        }
    };
    let tenant = lock(&shared.tenant);
    let found = tenant.live(GraphKind::User, user).ok().or_else(|| {
        // Graph also addresses users by UPN.
        tenant.objects(GraphKind::User).values().find(|o| {
            o.is_live()
                && o.props
                    .get("userPrincipalName")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.eq_ignore_ascii_case(user))
        })
    });
    let Some(u) = found else {
        return graph_error(
            404,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let Some(p) = &u.photo else {
        return image_not_found();
    };
    if value {
        let not_modified = req
            .headers()
            .get(hyper::header::IF_NONE_MATCH)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|v| v == p.etag);
        if not_modified {
            return Reply::empty(304).header(ETAG, p.etag.clone());
        }
        Reply {
            status: StatusCode::OK,
            headers: vec![(CONTENT_TYPE, "image/jpeg".into()), (ETAG, p.etag.clone())],
            body: p.jpeg.clone(),
        }
    } else {
        let id = format!("{px}X{px}");
        let what = if size.is_some() {
            format!("photos('{id}')")
        } else {
            "photo".into()
        };
        Reply::graph(
            200,
            &json!({
                "@odata.context": format!("{base}/v1.0/$metadata#users('{user}')/{what}/$entity"),
                "@odata.mediaContentType": "image/jpeg",
                "@odata.mediaEtag": p.etag,
                "id": id,
                "height": px,
                "width": px,
            }),
        )
    }
}

fn image_not_found() -> Reply {
    graph_error(
        404,
        "ImageNotFound",
        "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.",
    )
}

// ---- control API -------------------------------------------------------------------------------------------

fn sim_error(e: SimError) -> Reply {
    let status = match e {
        SimError::NotFound { .. } => 404,
        SimError::Duplicate(_) => 409,
        SimError::Invalid(_) => 400,
    };
    Reply::json(status, &json!({"error": e.to_string()}))
}

fn bad(msg: impl std::fmt::Display) -> Reply {
    Reply::json(400, &json!({"error": msg.to_string()}))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

async fn control(shared: &Arc<Shared>, req: Request<Incoming>, segs: &[&str]) -> Reply {
    let c = Control::new(shared.clone());
    let method = req.method().clone();
    let permanent = query_pairs(&req)
        .iter()
        .any(|(k, v)| k == "permanent" && (v == "true" || v == "1"));
    let base = format!("http://{}", shared.addr);
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r = control_route(&c, &method, &segs[1..], &body, permanent, &base);
    r.unwrap_or_else(|reply| reply)
}

fn control_route(
    c: &Control,
    method: &Method,
    segs: &[&str],
    body: &[u8],
    permanent: bool,
    base: &str,
) -> Result<Reply, Reply> {
    let ok = |v: Value| Ok(Reply::json(200, &v));
    match (method, segs) {
        (&Method::GET, [] | [""]) => Ok(Reply::text(200, control_help(base))),
        (&Method::GET, ["export"]) => ok(serde_json::to_value(c.export()).unwrap_or_default()),
        (&Method::GET, ["requests"]) => ok(serde_json::to_value(c.request_log()).unwrap_or_default()),
        (&Method::GET, ["concurrency"]) => {
            let list: Vec<Value> = lock(&c.shared.concurrency)
                .iter()
                .map(|(e, (now, peak))| json!({"endpoint": e, "inFlight": now, "peak": peak}))
                .collect();
            ok(Value::Array(list))
        }
        (&Method::DELETE, ["requests"]) => {
            c.clear_request_log();
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["faults"]) => {
            let f: Fault = parse_json(body)?;
            c.fault(f);
            Ok(Reply::empty(204))
        }
        (&Method::DELETE, ["faults"]) => {
            c.clear_faults();
            Ok(Reply::empty(204))
        }
        (&Method::GET, ["paging"]) => ok(serde_json::to_value(c.paging()).unwrap_or_default()),
        (&Method::PUT, ["paging"]) => {
            let p: delta::Paging = parse_json(body)?;
            if p.page_size == 0 || p.member_slice == 0 {
                return Err(bad("pageSize and memberSlice must be at least 1"));
            }
            c.set_paging(p);
            Ok(Reply::empty(204))
        }
        (_, [coll, rest @ ..]) => {
            let kind = kind_of_collection(coll).ok_or_else(|| bad(format!("unknown collection {coll}")))?;
            object_route(c, method, kind, rest, body, permanent)
        }
        _ => Err(bad("unknown control request; GET /_sim/ lists them")),
    }
}

fn object_route(
    c: &Control,
    method: &Method,
    kind: GraphKind,
    segs: &[&str],
    body: &[u8],
    permanent: bool,
) -> Result<Reply, Reply> {
    let ok = |v: Value| Ok(Reply::json(200, &v));
    match (method, segs) {
        (&Method::GET, []) => ok(json!(c.ids(kind))),
        (&Method::POST, []) => {
            let props: Map<String, Value> = parse_json(body)?;
            let id = c.add(kind, props).map_err(sim_error)?;
            Ok(Reply::json(201, &json!({ "id": id })))
        }
        (&Method::GET, [id]) => c
            .get(kind, id)
            .map(|p| Reply::json(200, &Value::Object(p)))
            .ok_or_else(|| {
                sim_error(SimError::NotFound {
                    kind,
                    id: id.to_string(),
                })
            }),
        (&Method::PATCH, [id]) => {
            let props: Map<String, Value> = parse_json(body)?;
            let changed = c.update(kind, id, props).map_err(sim_error)?;
            ok(json!({ "changed": changed }))
        }
        (&Method::DELETE, [id]) => {
            c.delete(kind, id, permanent).map_err(sim_error)?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, [id, "restore"]) => {
            c.restore(kind, id).map_err(sim_error)?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, [id, "members"]) if kind == GraphKind::Group => {
            let v: Value = parse_json(body)?;
            let member = v["id"].as_str().ok_or_else(|| bad("body needs \"id\""))?;
            let odata_type = v["@odata.type"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("#microsoft.graph.")
                .to_string();
            let added = c
                .add_member_ref(
                    id,
                    MemberRef {
                        id: member.to_string(),
                        odata_type,
                    },
                )
                .map_err(sim_error)?;
            ok(json!({ "added": added }))
        }
        (&Method::DELETE, [id, "members", member]) if kind == GraphKind::Group => {
            let removed = c.remove_member(id, member).map_err(sim_error)?;
            ok(json!({ "removed": removed }))
        }
        (&Method::PUT, [id, "manager"]) if kind == GraphKind::User => {
            let v: Value = parse_json(body)?;
            let manager = v["id"].as_str().ok_or_else(|| bad("body needs \"id\""))?;
            let changed = c.set_manager(id, Some(manager)).map_err(sim_error)?;
            ok(json!({ "changed": changed }))
        }
        (&Method::DELETE, [id, "manager"]) if kind == GraphKind::User => {
            let changed = c.set_manager(id, None).map_err(sim_error)?;
            ok(json!({ "changed": changed }))
        }
        (&Method::PUT, [id, "photo"]) if kind == GraphKind::User => {
            let jpeg = if body.is_empty() {
                jpeg::photo(unix_now() ^ (id.len() as u64) ^ u64::from(fnv(id)))
            } else if body.starts_with(&[0xFF, 0xD8]) {
                body.to_vec()
            } else {
                return Err(bad("photo body must be a JPEG (or empty for a generated one)"));
            };
            c.set_photo(id, Some(jpeg)).map_err(sim_error)?;
            Ok(Reply::empty(204))
        }
        (&Method::DELETE, [id, "photo"]) if kind == GraphKind::User => {
            c.set_photo(id, None).map_err(sim_error)?;
            Ok(Reply::empty(204))
        }
        _ => Err(bad("unknown control request; GET /_sim/ lists them")),
    }
}

fn fnv(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The control API, as printed by `entradir graph-sim` and served at `GET /_sim/`.
pub fn control_help(base: &str) -> String {
    format!(
        "Control API (JSON, no auth) at {base}/_sim/ — collections: users, groups, devices, contacts
  GET    /_sim/export                         live tenant as Graph JSON (groups with members, photos base64)
  GET    /_sim/{{coll}}                         ids;  GET /_sim/{{coll}}/{{id}}  properties
  POST   /_sim/{{coll}}            {{props}}      add an object (optional \"id\") -> {{\"id\"}}
  PATCH  /_sim/{{coll}}/{{id}}       {{props}}      update properties
  DELETE /_sim/{{coll}}/{{id}}[?permanent=true]   soft (restorable) or permanent delete
  POST   /_sim/{{coll}}/{{id}}/restore            restore a soft-deleted object
  POST   /_sim/groups/{{id}}/members {{\"id\",\"@odata.type\"?}}   add a member
  DELETE /_sim/groups/{{id}}/members/{{member}}     remove a member
  PUT    /_sim/users/{{id}}/manager {{\"id\"}};  DELETE /_sim/users/{{id}}/manager
  PUT    /_sim/users/{{id}}/photo  <jpeg bytes or empty for a generated one>;  DELETE /_sim/users/{{id}}/photo
  POST   /_sim/faults  {{\"type\":\"throttle\",\"requests\":2,\"retryAfterSecs\":1[,\"scope\":\"delta\"]}}
                       {{\"type\":\"unavailable\",\"requests\":1,\"status\":503}}  {{\"type\":\"cutConnection\",\"requests\":1}}
                       {{\"type\":\"expireDeltaTokens\"[,\"style\":\"badRequest\"]}}  {{\"type\":\"delay\",\"millis\":500}}
                       {{\"type\":\"expireSecret\",\"expired\":true}}  {{\"type\":\"expireAccessTokens\"}}
  DELETE /_sim/faults                         disarm all faults
  GET    /_sim/requests;  DELETE /_sim/requests   request log (method, path, endpoint, status, atMs, cut)
  GET    /_sim/concurrency                    peak requests in flight per endpoint (since the log was cleared)
  GET    /_sim/paging;  PUT /_sim/paging {{\"pageSize\",\"memberSlice\",\"replayEvery\",\"emptyFirstPage\",\
\"tokenLifetime\"}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_decoded_leniently() {
        assert_eq!(percent_decode("%24value"), "$value");
        assert_eq!(percent_decode("anna%40contoso.example"), "anna@contoso.example");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn routes_are_classified() {
        let c = |p: &str| classify(&Method::GET, &p.split('/').collect::<Vec<_>>());
        assert_eq!(c("v1.0/users/delta"), Endpoint::Delta(GraphKind::User));
        assert_eq!(c("v1.0/contacts/delta"), Endpoint::Delta(GraphKind::Contact));
        assert_eq!(c("v1.0/users/x/photos/96x96/$value"), Endpoint::Photo);
        assert_eq!(c("v1.0/servicePrincipals/delta"), Endpoint::Other);
        assert_eq!(c("_sim/export"), Endpoint::Control);
        assert_eq!(
            classify(&Method::POST, &["t", "oauth2", "v2.0", "token"]),
            Endpoint::Token
        );
    }
}
