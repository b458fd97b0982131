//! The token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials grant) and access-token checks.
//!
//! Errors follow Entra's shape (`error`, `error_description` starting with an AADSTS code, `error_codes`) so the
//! client's error reporting can be tested against what operators will really see.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::control::{lock, unix_now, Shared};
use super::gen::iso8601;

/// Lifetime of issued access tokens, as Entra reports it.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An answer of the token endpoint: status and JSON body.
pub type TokenReply = (u16, Value);

fn aadsts(status: u16, error: &str, code: u32, text: &str) -> TokenReply {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let ts = iso8601(unix_now()).replace('T', " ");
    (
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
        }),
    )
}

/// Handles a token request for `tenant` (the path segment) with the url-encoded form `body`; `token_url` is the
/// URL the request was sent to, which a client assertion's `aud` must name.
pub fn token(shared: &Shared, tenant: &str, body: &[u8], token_url: &str) -> TokenReply {
    let creds = &shared.creds;
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let missing = |name: &str| {
        aadsts(
            400,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };

    if tenant != creds.tenant_id {
        return aadsts(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."),
        );
    }
    match field("grant_type") {
        None => return missing("grant_type"),
        Some("client_credentials") => {}
        Some(other) => {
            return aadsts(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            )
        }
    }
    let Some(client_id) = field("client_id") else {
        return missing("client_id");
    };
    if client_id != creds.client_id {
        return aadsts(
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    match field("scope") {
        None => return missing("scope"),
        Some(scope) if !scope.ends_with("/.default") => {
            return aadsts(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope \
                     value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )
        }
        Some(_) => {}
    }
    let secret_expired = lock(&shared.auth).secret_expired;
    if let Some(secret) = field("client_secret") {
        if secret != creds.client_secret {
            return aadsts(
                401,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                     secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        if secret_expired {
            return aadsts(
                401,
                "invalid_client",
                7000222,
                &format!("The provided client secret keys for app '{client_id}' are expired."),
            );
        }
    } else if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return aadsts(
                400,
                "invalid_request",
                700023,
                "Invalid client assertion type: client_assertion_type must be urn:ietf:params:oauth:\
                 client-assertion-type:jwt-bearer.",
            );
        }
        if let Err(reply) = check_assertion(shared, assertion, client_id, tenant, token_url) {
            return reply;
        }
    } else {
        return aadsts(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }

    let token = format!(
        "sim.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    lock(&shared.auth)
        .issued
        .insert(token.clone(), Instant::now() + TOKEN_LIFETIME);
    (
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "ext_expires_in": TOKEN_LIFETIME.as_secs(),
            "access_token": token,
        }),
    )
}

/// Checks a client assertion's shape and claims. The signature is not verified (no X.509 parser here); a
/// configured certificate's SHA-256 thumbprint must match `x5t#S256` when that header is present.
fn check_assertion(
    shared: &Shared,
    assertion: &str,
    client_id: &str,
    tenant: &str,
    token_url: &str,
) -> Result<(), TokenReply> {
    let malformed = || aadsts(400, "invalid_request", 50027, "JWT token is invalid or malformed.");
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(malformed());
    }
    let decode = |s: &str| -> Option<Value> {
        let raw = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&raw).ok()
    };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Err(malformed());
    };
    if URL_SAFE_NO_PAD.decode(parts[2].trim_end_matches('=')).is_err() {
        return Err(malformed());
    }
    let alg = header["alg"].as_str().unwrap_or_default();
    if !matches!(alg, "RS256" | "PS256") {
        return Err(aadsts(
            401,
            "invalid_client",
            5002738,
            &format!("Invalid JWT token. '{alg}' is not a supported signature algorithm."),
        ));
    }
    let s256 = header["x5t#S256"].as_str();
    let sha1 = header["x5t"].as_str();
    if s256.is_none() && sha1.is_none() {
        return Err(aadsts(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation: the header names no certificate (x5t#S256 or x5t).",
        ));
    }
    if let (Some(der), Some(thumb)) = (&shared.creds.certificate_der, s256) {
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(der));
        // Some libraries pad or use the standard alphabet; compare the decoded bytes.
        let given = URL_SAFE_NO_PAD
            .decode(thumb.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(thumb));
        if given.ok().map(|g| URL_SAFE_NO_PAD.encode(g)) != Some(expected) {
            return Err(aadsts(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application.",
            ));
        }
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    let aud_path = url::Url::parse(aud).map(|u| u.path().to_string()).unwrap_or_default();
    let expected_path = format!("/{tenant}/oauth2/v2.0/token");
    if aud != token_url && aud_path != expected_path {
        return Err(aadsts(
            401,
            "invalid_client",
            700016,
            &format!("Client assertion audience claim '{aud}' does not match the token endpoint {token_url}."),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(aadsts(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let now = unix_now();
    let exp = claims["exp"].as_u64();
    let nbf = claims["nbf"].as_u64().unwrap_or(0);
    if exp.is_none_or(|e| e + 300 < now) || nbf > now + 300 {
        return Err(aadsts(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

/// Why an access token was refused.
pub fn check_bearer(shared: &Shared, authorization: Option<&str>) -> Result<(), &'static str> {
    let Some(value) = authorization else {
        return Err("Access token is empty.");
    };
    let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
        return Err("Access token validation failure. Invalid audience.");
    };
    match lock(&shared.auth).issued.get(token.trim()) {
        Some(expiry) if *expiry > Instant::now() => Ok(()),
        Some(_) => Err("Lifetime validation failed, the token is expired."),
        None => Err("IDX14100: JWT is not well formed, there are no dots (.) or the token is invalid."),
    }
}
