//! OAuth2 client credentials for Graph: the token request, the certificate client assertion, and the token cache.
//!
//! The token is requested from `{authority}/{tenant}/oauth2/v2.0/token` with scope `{graph_url}/.default`, using
//! either a client secret or a JWT client assertion signed with the app's certificate key (PS256 with the
//! `x5t#S256` thumbprint, Microsoft's current documented form). It is cached and renewed shortly before it expires
//! or when Graph answers 401. Secrets, assertions and tokens never reach a log: every type holding one implements
//! `Debug` by hand. Credential failures become [`CredentialProblem`]s that say what to fix, because an expired
//! secret is the most likely reason a long-running installation stops syncing.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PSS_SHA256};
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{error_chain, excerpt, retry_after, RetryPolicy};
use super::{unix_now, Credential, GraphConfig, SyncError};

/// How long a client assertion is valid; Entra accepts up to 10 minutes of lifetime.
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// Renew this long before the token expires (or halfway through its life, if that is shorter).
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// What is wrong with the app's credentials, phrased as what the operator has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialProblem {
    SecretInvalid,
    SecretExpired,
    CertificateRejected,
    UnknownApplication,
    UnknownTenant,
    ApplicationDisabled,
    ClientCredentialsNotAllowed,
    WrongScope,
    /// `invalid_client` without a more specific code.
    ClientRejected,
}

impl fmt::Display for CredentialProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialProblem::SecretInvalid => {
                "the client secret is wrong: copy the secret's Value (not its Secret ID) from the app registration's \
                 \"Certificates & secrets\" page into client_secret_file or ENTRADIR_CLIENT_SECRET"
            }
            CredentialProblem::SecretExpired => {
                "the client secret has expired: create a new one in the app registration (\"Certificates & secrets\") \
                 and put its value into client_secret_file or ENTRADIR_CLIENT_SECRET; a certificate credential avoids \
                 this in future"
            }
            CredentialProblem::CertificateRejected => {
                "the certificate client assertion was rejected: upload this certificate (public part) to the app \
                 registration (\"Certificates & secrets\"), check that it has not expired, and that this machine's \
                 clock is correct"
            }
            CredentialProblem::UnknownApplication => {
                "no application with this client_id exists in the tenant: check client_id (the app registration's \
                 Application (client) ID) and tenant_id"
            }
            CredentialProblem::UnknownTenant => {
                "the tenant was not found: check tenant_id (the Directory (tenant) ID or a verified domain) and that \
                 authority matches the tenant's cloud"
            }
            CredentialProblem::ApplicationDisabled => {
                "the application is disabled in the tenant: enable it under Enterprise applications > Properties"
            }
            CredentialProblem::ClientCredentialsNotAllowed => {
                "the application may not use the client credentials flow: register it as a confidential client with \
                 application permissions and grant admin consent"
            }
            CredentialProblem::WrongScope => {
                "the Graph scope was rejected: check that graph_url belongs to the same cloud as authority"
            }
            CredentialProblem::ClientRejected => {
                "the client credentials were rejected: check client_id, tenant_id and the secret or certificate"
            }
        })
    }
}

/// An access token; `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct AccessToken(Arc<str>);

impl AccessToken {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The app's proof of identity, parsed once at start-up so a bad key fails `Syncer::new`, not the first round.
enum Proof {
    Secret(String),
    Certificate { key: Box<RsaKeyPair>, x5t_s256: String },
}

struct Cached {
    token: AccessToken,
    renew_at: Instant,
}

/// Gets and caches access tokens. Concurrent callers share one token request.
pub(crate) struct TokenSource {
    client: reqwest::Client,
    token_url: String,
    scope: String,
    client_id: String,
    proof: Proof,
    retry: RetryPolicy,
    cache: tokio::sync::Mutex<Option<Cached>>,
    rng: SystemRandom,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proof = match self.proof {
            Proof::Secret(_) => "secret <redacted>",
            Proof::Certificate { .. } => "certificate <redacted>",
        };
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .field("client_id", &self.client_id)
            .field("proof", &proof)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(cfg: &GraphConfig, client: reqwest::Client) -> Result<TokenSource, SyncError> {
        let proof = match &cfg.credential {
            Credential::Secret(secret) => {
                let secret = secret.trim();
                if secret.is_empty() {
                    return Err(SyncError::Config("the client secret is empty".into()));
                }
                Proof::Secret(secret.to_string())
            }
            Credential::Certificate { cert_pem, key_pem } => {
                let (key, x5t_s256) = load_certificate(cert_pem, key_pem)?;
                Proof::Certificate {
                    key: Box::new(key),
                    x5t_s256,
                }
            }
        };
        Ok(TokenSource {
            client,
            token_url: format!("{}/{}/oauth2/v2.0/token", cfg.authority, cfg.tenant_id),
            scope: format!("{}/.default", cfg.graph_url),
            client_id: cfg.client_id.clone(),
            proof,
            retry: cfg.retry.clone(),
            cache: tokio::sync::Mutex::new(None),
            rng: SystemRandom::new(),
        })
    }

    /// A valid token, from the cache or freshly requested.
    pub(crate) async fn token(&self) -> Result<AccessToken, SyncError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if Instant::now() < cached.renew_at {
                return Ok(cached.token.clone());
            }
        }
        let (token, lifetime) = self.request().await?;
        *cache = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + use_for(lifetime),
        });
        tracing::debug!(lifetime_s = lifetime.as_secs(), "obtained a Graph access token");
        Ok(token)
    }

    /// Forgets the cached token, so the next call requests a new one.
    pub(crate) async fn invalidate_all(&self) {
        *self.cache.lock().await = None;
    }

    /// Forgets `stale` (Graph answered 401 to it) unless it was already replaced: concurrent requests that all saw
    /// the same 401 cause one renewal, not one each.
    pub(crate) async fn invalidate(&self, stale: &AccessToken) {
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(&cached.token.0, &stale.0))
        {
            *cache = None;
        }
    }

    /// One token request, retried on network errors, 429 and 5xx.
    async fn request(&self) -> Result<(AccessToken, Duration), SyncError> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut form: Vec<(&str, String)> = vec![
                ("client_id", self.client_id.clone()),
                ("scope", self.scope.clone()),
                ("grant_type", "client_credentials".into()),
            ];
            match &self.proof {
                Proof::Secret(secret) => form.push(("client_secret", secret.clone())),
                Proof::Certificate { key, x5t_s256 } => {
                    let jti = uuid::Uuid::new_v4().to_string();
                    let assertion = client_assertion(
                        key,
                        x5t_s256,
                        &self.client_id,
                        &self.token_url,
                        unix_now(),
                        &jti,
                        &self.rng,
                    )?;
                    form.push((
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                    ));
                    form.push(("client_assertion", assertion));
                }
            }
            let (why, wait) = match self.client.post(&self.token_url).form(&form).send().await {
                Err(e) => {
                    crate::metrics::graph_request("token", 0);
                    (format!("request failed: {}", error_chain(&e)), None)
                }
                Ok(response) => {
                    let status = response.status();
                    crate::metrics::graph_request("token", status.as_u16());
                    let wait = retry_after(response.headers(), SystemTime::now());
                    match response.bytes().await {
                        Err(e) => (format!("HTTP {status}, body cut short: {}", error_chain(&e)), None),
                        Ok(body) if status.is_success() => {
                            return parse_token(&body).map_err(|detail| self.error(detail))
                        }
                        Ok(body) if status.as_u16() == 429 || status.is_server_error() => {
                            (format!("HTTP {status}: {}", excerpt(&body)), wait)
                        }
                        Ok(body) => return Err(self.classify(status.as_u16(), &body)),
                    }
                }
            };
            if attempts >= self.retry.max_attempts {
                return Err(self.error(format!("gave up after {attempts} attempts; last problem: {why}")));
            }
            let delay = wait.map_or_else(
                || self.retry.backoff(attempts - 1),
                |w| w.min(self.retry.max_retry_after),
            );
            tracing::warn!(url = %self.token_url, attempt = attempts, wait_ms = delay.as_millis() as u64, "retrying token request: {why}");
            tokio::time::sleep(delay).await;
        }
    }

    fn error(&self, detail: String) -> SyncError {
        SyncError::Token {
            url: self.token_url.clone(),
            detail,
        }
    }

    /// Turns a 4xx from the token endpoint into what the operator must fix.
    fn classify(&self, status: u16, body: &[u8]) -> SyncError {
        let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let error = doc.get("error").and_then(Value::as_str).unwrap_or("");
        let description = doc.get("error_description").and_then(Value::as_str).unwrap_or("");
        let mut codes: Vec<u64> = doc
            .get("error_codes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        // Older endpoints only put the AADSTS code into the description.
        if let Some(code) = description
            .strip_prefix("AADSTS")
            .and_then(|rest| rest.split(':').next())
        {
            codes.extend(code.parse::<u64>().ok());
        }
        let problem = codes.iter().find_map(|code| match code {
            7_000_215 => Some(CredentialProblem::SecretInvalid),
            7_000_222 => Some(CredentialProblem::SecretExpired),
            700_027 | 700_024 | 700_023 | 7_000_274 | 7_000_277 => Some(CredentialProblem::CertificateRejected),
            700_016 => Some(CredentialProblem::UnknownApplication),
            90_002 | 900_023 | 90_023 => Some(CredentialProblem::UnknownTenant),
            7_000_112 => Some(CredentialProblem::ApplicationDisabled),
            1_002_012 | 70_011 => Some(CredentialProblem::WrongScope),
            700_021 | 7_000_218 => Some(CredentialProblem::ClientRejected),
            _ => None,
        });
        let problem = problem.or(match error {
            "invalid_client" => Some(CredentialProblem::ClientRejected),
            "unauthorized_client" => Some(CredentialProblem::ClientCredentialsNotAllowed),
            "invalid_scope" => Some(CredentialProblem::WrongScope),
            _ => None,
        });
        // The first line of the description has the AADSTS code and reason; the rest is trace ids.
        let first_line = description.lines().next().unwrap_or("").trim();
        let detail = match (first_line.is_empty(), error.is_empty()) {
            (false, _) => first_line.to_string(),
            (true, false) => error.to_string(),
            (true, true) => format!("HTTP {status}: {}", excerpt(body)),
        };
        match problem {
            Some(problem) => SyncError::Credential { problem, detail },
            None => self.error(format!("HTTP {status}: {detail}")),
        }
    }
}

/// How long a token with this lifetime is used before it is renewed: until 5 minutes before it expires, or half
/// its life for short-lived tokens, so a request never starts with a token about to expire.
fn use_for(lifetime: Duration) -> Duration {
    lifetime - RENEW_MARGIN.min(lifetime / 2)
}

/// Reads `access_token` and `expires_in` from a token response.
fn parse_token(body: &[u8]) -> Result<(AccessToken, Duration), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("the token response is not JSON ({e})"))?;
    let token = doc
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    // v2.0 sends a number; some proxies and older endpoints send a string.
    let expires_in = match doc.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("the token response has no usable expires_in")?;
    Ok((AccessToken(Arc::from(token)), Duration::from_secs(expires_in.max(1))))
}

/// Parses the certificate and its RSA private key and returns the key plus the certificate's `x5t#S256`
/// thumbprint (base64url of the SHA-256 of the DER certificate).
pub(crate) fn load_certificate(cert_pem: &str, key_pem: &str) -> Result<(RsaKeyPair, String), SyncError> {
    let bad = |what: String| SyncError::Config(format!("client certificate: {what}"));
    let cert = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no \"BEGIN CERTIFICATE\" block in the certificate PEM".into()))?
        .map_err(|e| bad(format!("the certificate PEM is unreadable: {e}")))?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        PemError::NoItemsFound => bad("no private key block in the key PEM".into()),
        e => bad(format!("the key PEM is unreadable: {e}")),
    })?;
    let not_rsa = || bad("the private key is not an RSA key (client assertions are signed with RSA, PS256)".into());
    let key = match &key_der {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => return Err(not_rsa()),
    }
    .map_err(|e| match e.to_string().as_str() {
        "WrongAlgorithm" => not_rsa(),
        _ => bad(format!(
            "the RSA private key was rejected ({e}); it must be an RSA key of 2048 bits or more"
        )),
    })?;
    // The certificate's SubjectPublicKeyInfo embeds the RSAPublicKey DER verbatim, so a byte search tells whether
    // the key belongs to the certificate without an X.509 parser.
    let public = key.public().as_ref();
    if !cert.as_ref().windows(public.len()).any(|w| w == public) {
        return Err(bad("the private key does not belong to the certificate".into()));
    }
    Ok((key, URL_SAFE_NO_PAD.encode(Sha256::digest(cert.as_ref()))))
}

/// Builds and signs a client assertion JWT (RFC 7523) as Entra expects it.
pub(crate) fn client_assertion(
    key: &RsaKeyPair,
    x5t_s256: &str,
    client_id: &str,
    token_url: &str,
    now: u64,
    jti: &str,
    rng: &SystemRandom,
) -> Result<String, SyncError> {
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": x5t_s256});
    let claims = json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        // A little slack for clocks that run ahead of Entra's.
        "nbf": now.saturating_sub(60),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PSS_SHA256, rng, signing_input.as_bytes(), &mut signature)
        .map_err(|_| SyncError::Config("client certificate: signing the client assertion failed".into()))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA256};

    const KEY_PKCS8: &str = include_str!("testdata/test-rsa-pkcs8.pem");
    const KEY_PKCS1: &str = include_str!("testdata/test-rsa-pkcs1.pem");

    /// A self-signed certificate for the test key, made at test time.
    fn certificate() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(KEY_PKCS8, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["entradir-test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn client_assertion_is_a_ps256_jwt_signed_by_the_certificate_key() {
        let (cert_pem, cert_der) = certificate();
        let (key, x5t) = load_certificate(&cert_pem, KEY_PKCS8).unwrap();
        let url = "https://login.example/tenant/oauth2/v2.0/token";
        let jwt = client_assertion(
            &key,
            &x5t,
            "client-1",
            url,
            1_700_000_000,
            "jti-1",
            &SystemRandom::new(),
        )
        .unwrap();

        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(Sha256::digest(&cert_der)));
        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], url);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["jti"], "jti-1");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert!(claims["nbf"].as_u64().unwrap() <= 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_600u64);

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, key.public().as_ref().to_vec());
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(signed.as_bytes(), &signature)
            .expect("signature verifies with the certificate's key");
        assert!(public.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn pkcs1_keys_work_and_wrong_keys_are_refused() {
        let (cert_pem, _) = certificate();
        assert!(load_certificate(&cert_pem, KEY_PKCS1).is_ok());

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = load_certificate(&cert_pem, &other.serialize_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an RSA key"), "{err}");

        let other_cert = rcgen::CertificateParams::new(vec!["other".to_string()])
            .unwrap()
            .self_signed(&other)
            .unwrap()
            .pem();
        let err = load_certificate(&other_cert, KEY_PKCS8).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");

        let err = load_certificate("garbage", KEY_PKCS8).unwrap_err().to_string();
        assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
        let err = load_certificate(&cert_pem, "garbage").unwrap_err().to_string();
        assert!(err.contains("no private key"), "{err}");
    }

    fn source() -> TokenSource {
        let cfg = GraphConfig::new("tenant", "client", Credential::Secret("top-secret".into()));
        TokenSource::new(&cfg, reqwest::Client::new()).unwrap()
    }

    #[test]
    fn token_endpoint_errors_say_what_to_fix() {
        let ts = source();
        let expired = br#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app 'x' are expired.\r\nTrace ID: 1","error_codes":[7000222]}"#;
        match ts.classify(401, expired) {
            SyncError::Credential {
                problem: CredentialProblem::SecretExpired,
                detail,
            } => {
                assert!(
                    detail.starts_with("AADSTS7000222") && !detail.contains("Trace ID"),
                    "{detail}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = ts.classify(401, expired).to_string();
        assert!(msg.contains("has expired") && msg.contains("create a new one"), "{msg}");

        let wrong =
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;
        assert!(matches!(
            ts.classify(401, wrong),
            SyncError::Credential {
                problem: CredentialProblem::SecretInvalid,
                ..
            }
        ));
        let generic = br#"{"error":"unauthorized_client","error_description":"nope"}"#;
        assert!(matches!(
            ts.classify(400, generic),
            SyncError::Credential {
                problem: CredentialProblem::ClientCredentialsNotAllowed,
                ..
            }
        ));
        let other = ts.classify(400, b"<html>proxy says no</html>").to_string();
        assert!(
            other.contains("proxy says no") && other.contains("oauth2/v2.0/token"),
            "{other}"
        );
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(use_for(Duration::from_secs(3599)), Duration::from_secs(3299));
        assert_eq!(use_for(Duration::from_secs(300)), Duration::from_secs(150));
        assert_eq!(use_for(Duration::from_secs(1)), Duration::from_millis(500));
    }

    #[test]
    fn token_responses_are_validated() {
        let (token, lifetime) =
            parse_token(br#"{"token_type":"Bearer","expires_in":3599,"access_token":"abc"}"#).unwrap();
        assert_eq!((token.as_str(), lifetime), ("abc", Duration::from_secs(3599)));
        assert_eq!(
            parse_token(br#"{"expires_in":"60","access_token":"a"}"#).unwrap().1,
            Duration::from_secs(60)
        );
        assert!(parse_token(b"not json").is_err());
        assert!(parse_token(br#"{"expires_in":60}"#).is_err());
        assert!(parse_token(br#"{"access_token":"a","expires_in":[]}"#).is_err());
    }

    #[test]
    fn debug_output_hides_secrets_and_tokens() {
        let shown = format!("{:?} {:?}", source(), AccessToken(Arc::from("eyJ-token")));
        assert!(!shown.contains("top-secret") && !shown.contains("eyJ-token"), "{shown}");
    }
}
