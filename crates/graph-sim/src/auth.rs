//! The token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials grant) and access-token checks.
//!
//! Errors follow Entra's shape (`error`, `error_description` starting with an AADSTS code, `error_codes`) so the
//! client's error reporting can be tested against what operators will really see.

use crate::der::tlv as der;
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

/// Checks a client assertion's shape and claims. With a configured certificate, the thumbprint header
/// (`x5t#S256`, or the older SHA-1 `x5t`) must name it and the RS256/PS256 signature must verify against its key;
/// without one, any well-formed assertion naming some certificate passes.
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
    if let Some(der) = &shared.creds.certificate_der {
        let unregistered = || {
            aadsts(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application.",
            )
        };
        let (given, expected) = match (s256, sha1) {
            (Some(t), _) => (t, Sha256::digest(der).to_vec()),
            (None, Some(t)) => (
                t,
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                    .as_ref()
                    .to_vec(),
            ),
            (None, None) => return Err(unregistered()),
        };
        // Some libraries pad or use the standard alphabet; compare the decoded bytes.
        let given = URL_SAFE_NO_PAD
            .decode(given.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(given));
        if given.ok() != Some(expected) {
            return Err(unregistered());
        }
        let signature = URL_SAFE_NO_PAD
            .decode(parts[2].trim_end_matches('='))
            .unwrap_or_default();
        let signed = &assertion[..parts[0].len() + 1 + parts[1].len()];
        let algorithm: &dyn ring::signature::VerificationAlgorithm = if alg == "PS256" {
            &ring::signature::RSA_PSS_2048_8192_SHA256
        } else {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        };
        let valid = rsa_public_key(der).is_some_and(|key| {
            ring::signature::UnparsedPublicKey::new(algorithm, key)
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        });
        if !valid {
            return Err(aadsts(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
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

/// The PKCS#1 `RSAPublicKey` inside an X.509 certificate's SubjectPublicKeyInfo, if the key is RSA.
pub fn rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    let (0x30, certificate, _) = der(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = der(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xA0 {
        rest = after; // explicit version
    }
    // serial, signature algorithm, issuer, validity, subject
    for _ in 0..5 {
        rest = der(rest)?.2;
    }
    let (0x30, spki, _) = der(rest)? else {
        return None;
    };
    let (0x30, algorithm, key) = der(spki)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (0x03, bits, _) = der(key)? else {
        return None;
    };
    match bits.split_first() {
        Some((0, key)) => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Credentials;
    use crate::delta::Paging;
    use crate::tenant::Tenant;

    fn shared() -> Shared {
        let creds = Credentials {
            tenant_id: "t1".into(),
            client_id: "app".into(),
            client_secret: "s3cret".into(),
            certificate_der: None,
        };
        Shared::new(([127, 0, 0, 1], 0).into(), Tenant::default(), Paging::default(), creds)
    }

    fn ask(s: &Shared, tenant: &str, form: &str) -> (u16, u64) {
        let (status, v) = token(s, tenant, form.as_bytes(), "http://x/t1/oauth2/v2.0/token");
        (status, v["error_codes"][0].as_u64().unwrap_or(0))
    }

    #[test]
    fn token_errors_name_the_aadsts_code() {
        let s = shared();
        let ok = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=http%3A%2F%2Fx%2F.default";
        assert_eq!(ask(&s, "t1", ok), (200, 0));
        assert_eq!(ask(&s, "other", ok), (400, 90002));
        assert_eq!(
            ask(&s, "t1", &ok.replace("client_credentials", "password")),
            (400, 70003)
        );
        assert_eq!(
            ask(&s, "t1", &ok.replace("client_id=app", "client_id=nope")),
            (400, 700016)
        );
        assert_eq!(
            ask(&s, "t1", &ok.replace("%2F.default", "%2Fuser.read")),
            (400, 1002012)
        );
        assert_eq!(ask(&s, "t1", &ok.replace("s3cret", "guess")), (401, 7000215));
        assert_eq!(
            ask(
                &s,
                "t1",
                "grant_type=client_credentials&client_id=app&scope=a%2F.default"
            ),
            (401, 7000218)
        );
        assert_eq!(ask(&s, "t1", "client_id=app"), (400, 900144));
        let (status, _) = token(&s, "t1", b"\xff\x00&&==%zz", "http://x/t1/oauth2/v2.0/token");
        assert_eq!(status, 400);
        lock(&s.auth).secret_expired = true;
        assert_eq!(ask(&s, "t1", ok), (401, 7000222));
    }

    #[test]
    fn issued_tokens_are_accepted_until_expired() {
        let s = shared();
        let form = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=x%2F.default";
        let (_, v) = token(&s, "t1", form.as_bytes(), "http://x/t1/oauth2/v2.0/token");
        let t = v["access_token"].as_str().unwrap_or_default().to_string();
        assert_eq!(check_bearer(&s, Some(&format!("Bearer {t}"))), Ok(()));
        assert!(check_bearer(&s, None).is_err());
        assert!(check_bearer(&s, Some("Bearer forged")).is_err());
        assert!(check_bearer(&s, Some(&t)).is_err(), "scheme missing");
        for e in lock(&s.auth).issued.values_mut() {
            *e = Instant::now();
        }
        assert_eq!(
            check_bearer(&s, Some(&format!("Bearer {t}"))),
            Err("Lifetime validation failed, the token is expired.")
        );
    }

    #[test]
    fn certificate_parsing_finds_rsa_keys_and_never_panics() {
        let key_pem = include_str!("../../../src/graph/testdata/test-rsa-pkcs8.pem");
        let rsa = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
            .and_then(|k| rcgen::CertificateParams::new(vec!["x".into()])?.self_signed(&k));
        let Ok(rsa) = rsa else {
            panic!("test certificate");
        };
        let der = rsa.der().to_vec();
        let key = rsa_public_key(&der);
        assert!(key.is_some_and(|k| k.len() > 256 && k[0] == 0x30));
        let ec =
            rcgen::KeyPair::generate().and_then(|k| rcgen::CertificateParams::new(vec!["x".into()])?.self_signed(&k));
        let Ok(ec) = ec else {
            panic!("test certificate");
        };
        assert_eq!(rsa_public_key(ec.der()), None);
        for cut in 0..der.len() {
            let _ = rsa_public_key(&der[..cut]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xFF;
            let _ = rsa_public_key(&flipped);
            flipped[i] ^= 0xFF;
        }
        assert_eq!(rsa_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
