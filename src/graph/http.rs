//! The HTTP side of talking to Graph: one client (proxy, timeouts, user agent), GET with retries, and the request
//! counters of a round.
//!
//! Graph throttles per app and tenant and has transient failures; the rules here follow Microsoft's guidance:
//! 429/503/504 wait for `Retry-After` when Graph gives one, everything transient (other 5xx, network errors, a body
//! cut short, a body that is not JSON) backs off exponentially with full jitter, and everything else fails at once
//! with Graph's own `error.code`/`error.message`. 401 renews the token once. Nothing Graph sends can make this code
//! panic; at worst it is an error naming the URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use super::auth::{AccessToken, TokenSource};
use super::{GraphConfig, SyncError};
use crate::directory::change::RoundStats;

/// Largest JSON page we accept; real delta pages are a few hundred kilobytes.
const MAX_JSON_BYTES: usize = 64 << 20;

/// Largest photo we accept. Graph's largest size (648x648) is far below this.
pub(crate) const MAX_PHOTO_BYTES: usize = 4 << 20;

/// How hard to retry. The defaults suit production; tests shrink the delays so they run in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included; a token renewal after a 401 does not count.
    pub max_attempts: u32,
    /// Backoff before the n-th retry is uniformly random in `[0, min(max_delay, base_delay * 2^n)]` (full jitter).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// `Retry-After` is honoured up to this long; a longer demand is cut to it.
    pub max_retry_after: Duration,
    /// Whole-request timeout, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Request counters of one round, shared by concurrent requests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub pages: AtomicU64,
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub photo_requests: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RoundStats {
        RoundStats {
            requests: self.requests.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            photo_requests: self.photo_requests.load(Ordering::Relaxed),
        }
    }
}

/// A photo as Graph sent it: the raw bytes and the `ETag` header if there was one.
pub(crate) struct PhotoBody {
    pub etag: Option<String>,
    pub bytes: Bytes,
}

/// The shared HTTP client plus the token source; cheap to share by reference across concurrent requests.
pub(crate) struct GraphHttp {
    client: reqwest::Client,
    auth: TokenSource,
    retry: RetryPolicy,
}

impl std::fmt::Debug for GraphHttp {
    // By hand: the client's own Debug would print the proxy URL, credentials included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphHttp")
            .field("auth", &self.auth)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    NotFound,
    /// Transient: try again after `wait` (from `Retry-After`) or after backoff.
    Retry {
        why: String,
        wait: Option<Duration>,
        throttled: bool,
    },
    /// 401 with this token: renew it and try again (once).
    Renew(String, AccessToken),
    Fail(SyncError),
}

impl GraphHttp {
    pub(crate) fn new(cfg: &GraphConfig) -> Result<GraphHttp, SyncError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("entradir/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.retry.timeout)
            .connect_timeout(cfg.retry.connect_timeout);
        if let Some(proxy) = &cfg.proxy {
            let proxy = reqwest::Proxy::all(proxy).map_err(|e| {
                SyncError::Config(format!(
                    "proxy {:?} is not usable: {e}",
                    super::redact_url_userinfo(proxy)
                ))
            })?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| SyncError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = TokenSource::new(cfg, client.clone())?;
        Ok(GraphHttp {
            client,
            auth,
            retry: cfg.retry.clone(),
        })
    }

    pub(crate) fn auth(&self) -> &TokenSource {
        &self.auth
    }

    /// GETs a Graph JSON document, retrying as described in the module docs.
    pub(crate) async fn get_json(
        &self,
        url: &str,
        extra: &[(&'static str, String)],
        counters: &Counters,
    ) -> Result<Value, SyncError> {
        let got = self
            .get(
                url,
                extra,
                &counters.requests,
                counters,
                MAX_JSON_BYTES,
                false,
                |_, body| serde_json::from_slice::<Value>(&body).map_err(|e| format!("the body is not JSON ({e})")),
            )
            .await?;
        // 404 is only passed through for photos.
        got.ok_or_else(|| SyncError::Graph {
            url: url.to_string(),
            status: 404,
            code: "NotFound".into(),
            message: "not found".into(),
        })
    }

    /// GETs a photo's bytes; `Ok(None)` when Graph says 404 (the user has no photo).
    pub(crate) async fn get_photo(&self, url: &str, counters: &Counters) -> Result<Option<PhotoBody>, SyncError> {
        self.get(
            url,
            &[],
            &counters.photo_requests,
            counters,
            MAX_PHOTO_BYTES,
            true,
            |headers, bytes| {
                let etag = headers
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(PhotoBody { etag, bytes })
            },
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn get<T>(
        &self,
        url: &str,
        extra: &[(&'static str, String)],
        request_counter: &AtomicU64,
        counters: &Counters,
        limit: usize,
        allow_404: bool,
        accept: impl Fn(&HeaderMap, Bytes) -> Result<T, String>,
    ) -> Result<Option<T>, SyncError> {
        let mut attempts = 0u32;
        let mut renewed = false;
        loop {
            attempts += 1;
            Counters::bump(request_counter);
            let outcome = self.attempt(url, extra, limit, allow_404, &accept).await;
            let (why, wait, throttled) = match outcome {
                Attempt::Done(value) => return Ok(Some(value)),
                Attempt::NotFound => return Ok(None),
                Attempt::Fail(err) => return Err(err),
                Attempt::Renew(message, stale) => {
                    if renewed {
                        return Err(SyncError::Unauthorized {
                            url: url.to_string(),
                            message,
                        });
                    }
                    renewed = true;
                    attempts -= 1;
                    Counters::bump(&counters.retries);
                    tracing::info!(url, "Graph answered 401; renewing the access token");
                    self.auth.invalidate(&stale).await;
                    continue;
                }
                Attempt::Retry { why, wait, throttled } => (why, wait, throttled),
            };
            if attempts >= self.retry.max_attempts {
                return Err(SyncError::Exhausted {
                    url: url.to_string(),
                    attempts,
                    last: why,
                });
            }
            let delay = match wait {
                Some(wait) => wait.min(self.retry.max_retry_after),
                None => self.retry.backoff(attempts - 1),
            };
            if throttled {
                Counters::bump(&counters.throttled);
            }
            Counters::bump(&counters.retries);
            tracing::warn!(
                url,
                attempt = attempts,
                wait_ms = delay.as_millis() as u64,
                "retrying Graph request: {why}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T>(
        &self,
        url: &str,
        extra: &[(&'static str, String)],
        limit: usize,
        allow_404: bool,
        accept: &impl Fn(&HeaderMap, Bytes) -> Result<T, String>,
    ) -> Attempt<T> {
        let token = match self.auth.token().await {
            Ok(token) => token,
            Err(err) => return Attempt::Fail(err),
        };
        // Graph logs this id with the request; quoting it makes a support case answerable.
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .client
            .get(url)
            .bearer_auth(token.as_str())
            .header(ACCEPT, "application/json")
            .header("client-request-id", &request_id);
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        let endpoint = crate::metrics::graph_endpoint(url);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                crate::metrics::graph_request(endpoint, 0);
                return Attempt::Retry {
                    why: format!("request failed: {}", error_chain(&e)),
                    wait: None,
                    throttled: false,
                };
            }
        };
        let status = response.status();
        crate::metrics::graph_request(endpoint, status.as_u16());
        let headers = response.headers().clone();
        let body = match read_limited(response, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Attempt::Fail(SyncError::BadResponse {
                    url: url.to_string(),
                    detail: format!("the body is larger than {limit} bytes"),
                })
            }
            Err(BodyError::Read(why)) => {
                return Attempt::Retry {
                    why: format!("HTTP {status}, body cut short: {why}"),
                    wait: None,
                    throttled: false,
                }
            }
        };
        if status.is_success() {
            return match accept(&headers, body) {
                Ok(value) => Attempt::Done(value),
                Err(why) => Attempt::Retry {
                    why,
                    wait: None,
                    throttled: false,
                },
            };
        }
        let (code, message) = graph_error(&body);
        let message = format!("{message} (client-request-id {request_id})");
        match status {
            StatusCode::UNAUTHORIZED => Attempt::Renew(format!("{code}: {message}"), token),
            StatusCode::NOT_FOUND if allow_404 => Attempt::NotFound,
            StatusCode::GONE => Attempt::Fail(SyncError::DeltaExpired {
                url: url.to_string(),
                detail: "410 Gone".into(),
            }),
            StatusCode::BAD_REQUEST if is_expired_state_code(&code) => Attempt::Fail(SyncError::DeltaExpired {
                url: url.to_string(),
                detail: format!("{code}: {message}"),
            }),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                Attempt::Retry {
                    why: format!("HTTP {status} ({code})"),
                    wait: retry_after(&headers, SystemTime::now()),
                    throttled: true,
                }
            }
            StatusCode::FORBIDDEN => Attempt::Fail(SyncError::Forbidden {
                url: url.to_string(),
                code,
                message,
            }),
            s if s.is_server_error() => Attempt::Retry {
                why: format!("HTTP {status} ({code}: {message})"),
                wait: retry_after(&headers, SystemTime::now()),
                throttled: false,
            },
            _ => Attempt::Fail(SyncError::Graph {
                url: url.to_string(),
                status: status.as_u16(),
                code,
                message,
            }),
        }
    }
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads a body, refusing more than `limit` bytes, so a misbehaving server cannot exhaust memory.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => return Err(BodyError::Read(error_chain(&e))),
        }
    }
}

/// An error with its causes, because reqwest's top-level message ("error sending request") hides the reason.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Codes with which Graph says "your delta/skip token is no longer valid, start over".
fn is_expired_state_code(code: &str) -> bool {
    [
        "syncStateNotFound",
        "resyncRequired",
        "syncStateInvalid",
        "Directory_ExpiredPageToken",
    ]
    .iter()
    .any(|known| code.eq_ignore_ascii_case(known))
}

/// `error.code` and `error.message` from a Graph error body, or a short excerpt of whatever came instead.
pub(crate) fn graph_error(body: &[u8]) -> (String, String) {
    if let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) {
        if let Some(Value::Object(error)) = doc.get("error") {
            let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or("").to_string();
            return (text("code"), text("message"));
        }
    }
    (String::new(), excerpt(body))
}

/// The start of a body for error messages, lossily decoded and cut at 200 characters.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".into();
    }
    let mut cut: String = trimmed.chars().take(200).collect();
    if cut.len() < trimmed.len() {
        cut.push('…');
    }
    cut
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP date. `None` if absent or unparsable.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    // A date in the past means "now".
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form servers may send (RFC 9110
/// section 5.6.7), into Unix seconds.
fn parse_http_date(value: &str) -> Option<u64> {
    let (_, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour: u64 = clock.next()?.parse().ok()?;
    let minute: u64 = clock.next()?.parse().ok()?;
    let second: u64 = clock.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(crate::time::days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(951_782_400))
        );
        for garbage in [
            "",
            "-5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "1.5",
        ] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(policy.backoff_ceiling(0), Duration::from_millis(100));
        assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(800));
        assert_eq!(policy.backoff_ceiling(5), Duration::from_secs(2));
        assert_eq!(policy.backoff_ceiling(1000), Duration::from_secs(2));
        let mut seen_small = false;
        let mut seen_large = false;
        for retry in 0..40 {
            for _ in 0..50 {
                let wait = policy.backoff(retry);
                assert!(wait <= policy.backoff_ceiling(retry), "retry {retry}: {wait:?}");
                seen_small |= retry >= 5 && wait < Duration::from_millis(500);
                seen_large |= retry >= 5 && wait > Duration::from_millis(1500);
            }
        }
        assert!(
            seen_small && seen_large,
            "full jitter should spread waits over the whole range"
        );
    }

    #[test]
    fn graph_errors_are_read_from_odata_error_bodies() {
        let body = br#"{"error":{"code":"Request_BadRequest","message":"Invalid filter","innerError":{}}}"#;
        assert_eq!(
            graph_error(body),
            ("Request_BadRequest".into(), "Invalid filter".into())
        );
        assert_eq!(graph_error(b"<html>Bad Gateway</html>").1, "<html>Bad Gateway</html>");
        assert_eq!(graph_error(br#"{"error":"x"}"#).0, "");
        assert_eq!(graph_error(b"").1, "(empty body)");
        assert!(is_expired_state_code("syncStateNotFound") && is_expired_state_code("RESYNCREQUIRED"));
        assert!(!is_expired_state_code("Request_BadRequest"));
    }
}
