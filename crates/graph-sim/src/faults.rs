//! Fault injection and the request log: what the simulator does wrong on purpose, and what it was asked.
//!
//! Faults are armed through [`super::Control::fault`] (or `POST /_sim/faults`) and consumed by the next matching
//! requests, so a test can say "the next 2 delta pages get 429 with Retry-After 1" and then check in the log that
//! the client waited.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::GraphKind;

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultScope {
    /// Delta and photo endpoints (everything under `/v1.0`).
    #[default]
    Graph,
    Delta,
    Photos,
    Token,
    /// Every request except the control API.
    Any,
}

/// How expired delta tokens are reported; Graph does both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExpiryStyle {
    /// 410 Gone with a `Location` header pointing at a fresh delta query.
    #[default]
    Gone,
    /// 400 Bad Request with error code `syncStateNotFound`.
    BadRequest,
}

/// A fault to inject. JSON form (HTTP control API): `{"type":"throttle","requests":2,"retryAfterSecs":1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Fault {
    /// The next `requests` matching requests get 429 with `Retry-After: retry_after_secs`.
    Throttle {
        requests: u32,
        retry_after_secs: u64,
        #[serde(default)]
        scope: FaultScope,
    },
    /// The next `requests` matching requests get `status` (503 or 504), without `Retry-After`.
    Unavailable {
        requests: u32,
        #[serde(default = "default_unavailable")]
        status: u16,
        #[serde(default)]
        scope: FaultScope,
    },
    /// Every delta/skip token issued so far becomes invalid; the next use gets 410 (or 400 syncStateNotFound).
    ExpireDeltaTokens {
        #[serde(default)]
        style: ExpiryStyle,
    },
    /// The next `requests` delta page responses are cut off mid-body (the connection is dropped).
    CutConnection { requests: u32 },
    /// Every matching response is delayed by `millis` (0 removes the delay).
    Delay {
        millis: u64,
        #[serde(default)]
        scope: FaultScope,
    },
    /// The client secret counts as expired: the token endpoint answers AADSTS7000222 (false undoes it).
    ExpireSecret { expired: bool },
    /// All issued access tokens become invalid: Graph answers 401 InvalidAuthenticationToken until renewal.
    ExpireAccessTokens,
    /// Disarms every pending fault and removes the delay (does not un-expire tokens).
    Clear,
}

fn default_unavailable() -> u16 {
    503
}

/// Endpoint classes, for fault scopes and the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    Token,
    Delta(GraphKind),
    Photo,
    Control,
    Other,
}

impl Endpoint {
    fn in_scope(self, scope: FaultScope) -> bool {
        match scope {
            FaultScope::Any => self != Endpoint::Control,
            FaultScope::Graph => matches!(self, Endpoint::Delta(_) | Endpoint::Photo),
            FaultScope::Delta => matches!(self, Endpoint::Delta(_)),
            FaultScope::Photos => self == Endpoint::Photo,
            FaultScope::Token => self == Endpoint::Token,
        }
    }
}

/// One request the simulator answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    /// Path and query as requested.
    pub path: String,
    pub endpoint: Endpoint,
    pub status: u16,
    /// True when the response body was cut off on purpose.
    pub cut: bool,
    /// When the request arrived.
    #[serde(skip)]
    pub at: Instant,
    /// Milliseconds between simulator start and the request.
    pub at_ms: u64,
}

/// What a request must suffer before (or instead of) its normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Throttle(u64),
    Unavailable(u16),
    Cut,
}

#[derive(Debug, Clone)]
enum Armed {
    Throttle { left: u32, secs: u64, scope: FaultScope },
    Unavailable { left: u32, status: u16, scope: FaultScope },
    Cut { left: u32 },
}

/// Armed faults, consumed in the order they were armed.
#[derive(Debug, Default)]
pub struct FaultState {
    armed: Vec<Armed>,
    delay: Option<(Duration, FaultScope)>,
}

impl FaultState {
    pub fn arm(&mut self, fault: &Fault) {
        match *fault {
            Fault::Throttle {
                requests,
                retry_after_secs,
                scope,
            } => self.armed.push(Armed::Throttle {
                left: requests,
                secs: retry_after_secs,
                scope,
            }),
            Fault::Unavailable {
                requests,
                status,
                scope,
            } => self.armed.push(Armed::Unavailable {
                left: requests,
                status,
                scope,
            }),
            Fault::CutConnection { requests } => self.armed.push(Armed::Cut { left: requests }),
            Fault::Delay { millis, scope } => {
                self.delay = (millis > 0).then(|| (Duration::from_millis(millis), scope));
            }
            Fault::Clear => *self = FaultState::default(),
            Fault::ExpireDeltaTokens { .. } | Fault::ExpireSecret { .. } | Fault::ExpireAccessTokens => {}
        }
    }

    pub fn delay_for(&self, endpoint: Endpoint) -> Option<Duration> {
        self.delay.filter(|(_, s)| endpoint.in_scope(*s)).map(|(d, _)| d)
    }

    /// Consumes the first armed fault that applies to this request.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<Injected> {
        let pos = self.armed.iter().position(|a| match a {
            Armed::Throttle { scope, .. } | Armed::Unavailable { scope, .. } => endpoint.in_scope(*scope),
            Armed::Cut { .. } => matches!(endpoint, Endpoint::Delta(_)),
        })?;
        let (injected, left) = match &mut self.armed[pos] {
            Armed::Throttle { left, secs, .. } => (Injected::Throttle(*secs), left),
            Armed::Unavailable { left, status, .. } => (Injected::Unavailable(*status), left),
            Armed::Cut { left } => (Injected::Cut, left),
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.armed.remove(pos);
        }
        Some(injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_scope_and_order() {
        let mut f = FaultState::default();
        f.arm(&Fault::Throttle {
            requests: 2,
            retry_after_secs: 3,
            scope: FaultScope::Delta,
        });
        f.arm(&Fault::Unavailable {
            requests: 1,
            status: 504,
            scope: FaultScope::Graph,
        });
        assert_eq!(f.take(Endpoint::Token), None);
        assert_eq!(f.take(Endpoint::Photo), Some(Injected::Unavailable(504)));
        assert_eq!(f.take(Endpoint::Delta(GraphKind::User)), Some(Injected::Throttle(3)));
        assert_eq!(f.take(Endpoint::Delta(GraphKind::Group)), Some(Injected::Throttle(3)));
        assert_eq!(f.take(Endpoint::Delta(GraphKind::Group)), None);
    }

    #[test]
    fn fault_json_round_trips() {
        let f: Result<Fault, _> = serde_json::from_str(r#"{"type":"throttle","requests":2,"retryAfterSecs":1}"#);
        assert!(matches!(
            f,
            Ok(Fault::Throttle {
                requests: 2,
                retry_after_secs: 1,
                scope: FaultScope::Graph
            })
        ));
        let f: Result<Fault, _> = serde_json::from_str(r#"{"type":"expireDeltaTokens","style":"badRequest"}"#);
        assert!(matches!(
            f,
            Ok(Fault::ExpireDeltaTokens {
                style: ExpiryStyle::BadRequest
            })
        ));
    }
}
