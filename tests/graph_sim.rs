//! The Graph simulator as a client sees it: over HTTP, with tokens, paging, faults and photos.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use graph_sim::{self as sim, Endpoint, Fault, FaultScope, GraphKind, SimHandle, SimOptions};
use serde_json::{json, Map, Value};

async fn small_sim() -> SimHandle {
    let opts = SimOptions {
        users: 450,
        groups: 12,
        devices: 30,
        contacts: 6,
        seed: 7,
        page_size: 100,
        member_slice: 60,
        ..SimOptions::default()
    };
    match sim::start(opts).await {
        Ok(s) => s,
        Err(e) => panic!("simulator did not start: {e}"),
    }
}

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn token_with(sim: &SimHandle, http: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
    let url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), sim.tenant_id());
    match http.post(url).form(form).send().await {
        Ok(r) => r,
        Err(e) => panic!("token request failed: {e}"),
    }
}

async fn token(sim: &SimHandle, http: &reqwest::Client) -> String {
    let scope = format!("{}/.default", sim.base_url());
    let r = token_with(
        sim,
        http,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            ("client_secret", sim.client_secret()),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    v["access_token"].as_str().unwrap_or_default().to_string()
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    match http.get(url).bearer_auth(token).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {url} failed: {e}"),
    }
}

/// Follows nextLinks to the deltaLink; returns the items, the number of pages and the delta link.
async fn walk(http: &reqwest::Client, first: &str, token: &str) -> (Vec<Value>, usize, String) {
    let mut url = first.to_string();
    let mut items = Vec::new();
    for pages in 1..10_000 {
        let r = get(http, &url, token).await;
        assert_eq!(r.status(), 200, "GET {url}");
        let page: Value = r.json().await.unwrap_or_default();
        items.extend(page["value"].as_array().cloned().unwrap_or_default());
        if let Some(next) = page["@odata.nextLink"].as_str() {
            url = next.to_string();
        } else {
            let delta = page["@odata.deltaLink"].as_str().unwrap_or_default().to_string();
            assert!(
                delta.contains("$deltatoken="),
                "page without next or delta link: {page}"
            );
            return (items, pages, delta);
        }
    }
    panic!("delta walk never ended");
}

#[tokio::test]
async fn token_endpoint_checks_credentials() {
    let sim = small_sim().await;
    let http = reqwest::Client::new();
    let scope = format!("{}/.default", sim.base_url());
    let r = token_with(
        &sim,
        &http,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            ("client_secret", "wrong"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("AADSTS7000215"));

    sim.control().fault(Fault::ExpireSecret { expired: true });
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", sim.client_id()),
        ("client_secret", sim.client_secret()),
        ("scope", &scope),
    ];
    let r = token_with(&sim, &http, &form).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error_codes"][0], 7000222);
    sim.control().fault(Fault::ExpireSecret { expired: false });

    // A certificate credential: a JWT naming the token URL, issued by the client, with a thumbprint header.
    let token_url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), sim.tenant_id());
    let jwt = |aud: &str| {
        let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode([7u8; 32])});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = json!({"aud": aud, "iss": sim.client_id(), "sub": sim.client_id(), "jti": "1",
            "nbf": now, "exp": now + 600});
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([1u8; 64])
        )
    };
    let assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    for (aud, status) in [(token_url.as_str(), 200), ("https://elsewhere.example/token", 401)] {
        let a = jwt(aud);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            ("client_assertion_type", assertion_type),
            ("client_assertion", &a),
            ("scope", &scope),
        ];
        assert_eq!(token_with(&sim, &http, &form).await.status(), status, "aud {aud}");
    }
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", sim.client_id()),
        ("client_assertion_type", assertion_type),
        ("client_assertion", "not-a-jwt"),
        ("scope", &scope),
    ];
    assert_eq!(token_with(&sim, &http, &form).await.status(), 400);

    // Graph refuses requests without a valid token, and tokens can be expired to test renewal.
    let users = format!("{}/v1.0/users/delta", sim.base_url());
    let r = get(&http, &users, "made-up").await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");
    let t = token(&sim, &http).await;
    assert_eq!(get(&http, &users, &t).await.status(), 200);
    sim.control().fault(Fault::ExpireAccessTokens);
    assert_eq!(get(&http, &users, &t).await.status(), 401);
    let t = token(&sim, &http).await;
    assert_eq!(get(&http, &users, &t).await.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn delta_walk_then_incremental_round() {
    let sim = small_sim().await;
    let http = reqwest::Client::new();
    let control = sim.control();
    let t = token(&sim, &http).await;
    let first = format!(
        "{}/v1.0/users/delta?$select=displayName,jobTitle,businessPhones,manager",
        sim.base_url()
    );
    let (items, pages, delta) = walk(&http, &first, &t).await;
    assert!(
        pages >= 5,
        "450 users at 100 per page, plus an empty first page: {pages} pages"
    );
    let seen: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = control.ids(GraphKind::User).into_iter().collect();
    assert_eq!(seen, expected);
    assert!(items.iter().all(|i| i.get("mail").is_none()), "$select honoured");
    let managers: BTreeMap<String, String> = items
        .iter()
        .filter_map(|i| {
            Some((
                i["id"].as_str()?.to_string(),
                i["manager@delta"][0]["id"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(managers, control.export().managers);

    // Three changes; the next round returns exactly those three.
    let ids = control.ids(GraphKind::User);
    assert_eq!(
        control.update_user(&ids[0], props(json!({"jobTitle": "Chief Tester"}))),
        Ok(true)
    );
    assert_eq!(control.delete(GraphKind::User, &ids[1], false), Ok(()));
    let new_id = control
        .add_user(props(
            json!({"displayName": "Zoë Ørsted", "userPrincipalName": "zoe.orsted@contoso.example"}),
        ))
        .unwrap_or_default();
    control.clear_request_log();
    let (items, pages, delta) = walk(&http, &delta, &t).await;
    assert_eq!(pages, 1);
    assert_eq!(control.request_count(Endpoint::Delta(GraphKind::User)), 1);
    let by_id: BTreeMap<&str, &Value> = items.iter().filter_map(|i| Some((i["id"].as_str()?, i))).collect();
    assert_eq!(by_id.len(), 3, "{items:?}");
    assert_eq!(by_id[ids[0].as_str()]["jobTitle"], "Chief Tester");
    assert_eq!(by_id[ids[1].as_str()]["@removed"]["reason"], "changed");
    assert_eq!(by_id[new_id.as_str()]["displayName"], "Zoë Ørsted");

    // Throttling: 429 with Retry-After, then the same request succeeds.
    control.fault(Fault::Throttle {
        requests: 1,
        retry_after_secs: 2,
        scope: FaultScope::Delta,
    });
    let r = get(&http, &delta, &t).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("2"));
    let r = get(&http, &delta, &t).await;
    assert_eq!(r.status(), 200);
    let log = control.request_log();
    let statuses: Vec<u16> = log.iter().rev().take(2).map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 429]);

    // 503, then a cut page, then expired tokens.
    control.fault(Fault::Unavailable {
        requests: 1,
        status: 503,
        scope: FaultScope::Graph,
    });
    assert_eq!(get(&http, &delta, &t).await.status(), 503);
    control.fault(Fault::CutConnection { requests: 1 });
    let r = get(&http, &first, &t).await;
    assert!(r.bytes().await.is_err(), "the body should be cut off");
    control.fault(Fault::ExpireDeltaTokens {
        style: sim::ExpiryStyle::Gone,
    });
    let r = get(&http, &delta, &t).await;
    assert_eq!(r.status(), 410);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["code"], "syncStateNotFound");
    let location = location.unwrap_or_default();
    assert!(location.contains("/v1.0/users/delta"));
    let (items, _, _) = walk(&http, &location, &t).await;
    let seen: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let mut expected: BTreeSet<String> = control.ids(GraphKind::User).into_iter().collect();
    expected.insert(ids[1].clone());
    assert_eq!(
        seen, expected,
        "a full resync, including the soft-deleted user as @removed"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn group_members_arrive_in_slices_and_match_the_export() {
    let sim = small_sim().await;
    let http = reqwest::Client::new();
    let t = token(&sim, &http).await;
    let first = format!("{}/v1.0/groups/delta?$select=displayName,members", sim.base_url());
    let (items, _, delta) = walk(&http, &first, &t).await;
    let mut members: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut appearances: BTreeMap<String, usize> = BTreeMap::new();
    for g in &items {
        let id = g["id"].as_str().unwrap_or_default().to_string();
        *appearances.entry(id.clone()).or_default() += 1;
        let set = members.entry(id).or_default();
        for m in g["members@delta"].as_array().into_iter().flatten() {
            let ty = m["@odata.type"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("#microsoft.graph.");
            set.insert((m["id"].as_str().unwrap_or_default().to_string(), ty.to_string()));
        }
    }
    assert!(
        appearances.values().any(|n| *n > 1),
        "a large group repeats across pages"
    );
    let export = sim.control().export();
    let expected: BTreeMap<String, BTreeSet<(String, String)>> = export
        .groups
        .iter()
        .map(|g| {
            let id = g.props["id"].as_str().unwrap_or_default().to_string();
            (
                id,
                g.members.iter().map(|m| (m.id.clone(), m.odata_type.clone())).collect(),
            )
        })
        .collect();
    assert_eq!(members, expected);

    // Removing a member shows up as @removed in the next round.
    let (gid, member) = export
        .groups
        .iter()
        .find_map(|g| Some((g.props["id"].as_str()?.to_string(), g.members.first()?.id.clone())))
        .unwrap_or_default();
    assert_eq!(sim.control().remove_member(&gid, &member), Ok(true));
    let (items, _, _) = walk(&http, &delta, &t).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["members@delta"][0]["id"], member.as_str());
    assert_eq!(items[0]["members@delta"][0]["@removed"]["reason"], "deleted");
    sim.shutdown().await;
}

#[tokio::test]
async fn photos_have_etags_and_404s() {
    let sim = small_sim().await;
    let http = reqwest::Client::new();
    let t = token(&sim, &http).await;
    let export = sim.control().export();
    let (with, (etag, jpeg)) = export
        .photos
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_default();
    let without = export
        .users
        .iter()
        .filter_map(|u| u["id"].as_str())
        .find(|id| !export.photos.contains_key(*id))
        .unwrap_or_default()
        .to_string();

    let r = get(
        &http,
        &format!("{}/v1.0/users/{with}/photos/96x96/$value", sim.base_url()),
        &t,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/jpeg")
    );
    assert_eq!(
        r.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
    assert_eq!(r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(), jpeg);

    // By UPN, percent-encoded, as some clients send it.
    let upn = export
        .users
        .iter()
        .find(|u| u["id"] == with.as_str())
        .and_then(|u| u["userPrincipalName"].as_str())
        .unwrap_or_default()
        .replace('@', "%40");
    let r = get(
        &http,
        &format!("{}/v1.0/users/{upn}/photos/48x48/%24value", sim.base_url()),
        &t,
    )
    .await;
    assert_eq!(r.status(), 200);

    let r = get(&http, &format!("{}/v1.0/users/{with}/photo", sim.base_url()), &t).await;
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["@odata.mediaEtag"], etag.as_str());

    let r = get(
        &http,
        &format!("{}/v1.0/users/{without}/photos/96x96/$value", sim.base_url()),
        &t,
    )
    .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["code"], "ImageNotFound");

    // Setting a photo over the HTTP control API changes what Graph serves.
    let r = http
        .put(format!("{}/_sim/users/{without}/photo", sim.base_url()))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(r.ok(), Some(204));
    let r = get(
        &http,
        &format!("{}/v1.0/users/{without}/photo/$value", sim.base_url()),
        &t,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.control().request_count(Endpoint::Photo), 5);

    // Concurrency is observable, so a client's cap on parallel photo requests can be checked.
    sim.control().fault(Fault::Delay {
        millis: 200,
        scope: FaultScope::Photos,
    });
    sim.control().clear_request_log();
    let url = format!("{}/v1.0/users/{with}/photo/$value", sim.base_url());
    let requests = (0..6).map(|_| get(&http, &url, &t));
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, vec![200; 6]);
    assert_eq!(sim.control().peak_concurrency(Endpoint::Photo), 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn http_control_api_mutates_and_injects_faults() {
    let sim = small_sim().await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let r = http
        .post(format!("{base}/_sim/users"))
        .json(&json!({"displayName": "Łukasz Nowak", "userPrincipalName": "lukasz.nowak@contoso.example"}))
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap_or_default();
    let id = v["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        sim.control()
            .get(GraphKind::User, &id)
            .map(|p| p["displayName"].clone()),
        Some(json!("Łukasz Nowak"))
    );
    let r = http
        .delete(format!("{base}/_sim/users/nope"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(r.ok(), Some(404));

    // Groups, members of every kind, managers, soft and permanent deletes, restores.
    let send = |req: reqwest::RequestBuilder| async move {
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let (status, v) = send(
        http.post(format!("{base}/_sim/groups"))
            .json(&json!({"displayName": "Team + Co"})),
    )
    .await;
    assert_eq!(status, 201);
    let gid = v["id"].as_str().unwrap_or_default().to_string();
    let members = format!("{base}/_sim/groups/{gid}/members");
    let (_, v) = send(http.post(&members).json(&json!({"id": id}))).await;
    assert_eq!(v["added"], true);
    let sp = json!({"id": "5p-1", "@odata.type": "#microsoft.graph.servicePrincipal"});
    assert_eq!(send(http.post(&members).json(&sp)).await.1["added"], true);
    assert_eq!(send(http.post(&members).json(&json!({"id": "unknown"}))).await.0, 400);
    assert_eq!(send(http.delete(format!("{members}/5p-1"))).await.1["removed"], true);
    let boss = sim
        .control()
        .ids(GraphKind::User)
        .into_iter()
        .find(|u| *u != id)
        .unwrap_or_default();
    let (_, v) = send(
        http.put(format!("{base}/_sim/users/{id}/manager"))
            .json(&json!({"id": boss})),
    )
    .await;
    assert_eq!(v["changed"], true);
    assert_eq!(sim.control().export().managers.get(&id), Some(&boss));
    let group = |export: &sim::TenantExport| export.groups.iter().find(|g| g.props["id"] == gid.as_str()).cloned();
    assert_eq!(group(&sim.control().export()).map(|g| g.members.len()), Some(1));
    assert_eq!(send(http.delete(format!("{base}/_sim/users/{id}"))).await.0, 204);
    assert_eq!(
        group(&sim.control().export()).map(|g| g.members.len()),
        Some(0),
        "deleted users leave groups"
    );
    assert_eq!(send(http.post(format!("{base}/_sim/users/{id}/restore"))).await.0, 204);
    assert!(sim.control().get(GraphKind::User, &id).is_some());
    assert_eq!(
        send(http.delete(format!("{base}/_sim/users/{id}?permanent=true")))
            .await
            .0,
        204
    );
    assert_eq!(send(http.post(format!("{base}/_sim/users/{id}/restore"))).await.0, 404);
    assert_eq!(
        send(http.patch(format!("{base}/_sim/groups/{gid}")).body("{not json"))
            .await
            .0,
        400
    );
    let r = http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"type": "delay", "millis": 300}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(r.ok(), Some(204));
    let t = token(&sim, &http).await;
    let started = std::time::Instant::now();
    get(&http, &format!("{base}/v1.0/devices/delta"), &t).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = http.get(format!("{base}/_sim/requests")).send().await;
    let log: Value = match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => panic!("{e}"),
    };
    assert!(log
        .as_array()
        .is_some_and(|l| l.iter().any(|r| r["endpoint"]["delta"] == "device")));
    sim.shutdown().await;
}

#[tokio::test]
async fn certificate_assertions_are_verified_against_the_configured_certificate() {
    let key_pem = include_str!("../src/graph/testdata/test-rsa-pkcs8.pem");
    let key = match rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256) {
        Ok(k) => k,
        Err(e) => panic!("test key: {e}"),
    };
    let cert = rcgen::CertificateParams::new(vec!["entradir-sim-test".to_string()]).and_then(|p| p.self_signed(&key));
    let cert = match cert {
        Ok(c) => c,
        Err(e) => panic!("test certificate: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let cert_path = dir.path().join("client.pem");
    assert!(std::fs::write(&cert_path, cert.pem()).is_ok());
    let sim = match sim::start(SimOptions {
        users: 3,
        groups: 1,
        devices: 1,
        contacts: 1,
        client_certificate: Some(cert_path),
        ..SimOptions::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let pkcs8 = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).ok()
    };
    let signer = match pkcs8.map(|k| ring::signature::RsaKeyPair::from_pkcs8(k.secret_der())) {
        Some(Ok(k)) => k,
        _ => panic!("test key does not load"),
    };
    let thumb = {
        use sha2::Digest;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert.der()))
    };
    let token_url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), sim.tenant_id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sign = |alg: &str, thumb: &str| -> String {
        let header = json!({"alg": alg, "typ": "JWT", "x5t#S256": thumb});
        let claims = json!({"aud": token_url, "iss": sim.client_id(), "sub": sim.client_id(), "jti": "x",
            "nbf": now, "exp": now + 600});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let padding: &dyn ring::signature::RsaEncoding = if alg == "PS256" {
            &ring::signature::RSA_PSS_SHA256
        } else {
            &ring::signature::RSA_PKCS1_SHA256
        };
        let mut sig = vec![0u8; signer.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        assert!(signer.sign(padding, &rng, signed.as_bytes(), &mut sig).is_ok());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let http = reqwest::Client::new();
    let scope = format!("{}/.default", sim.base_url());
    let other_thumb = URL_SAFE_NO_PAD.encode([9u8; 32]);
    let tampered = {
        let good = sign("PS256", &thumb);
        let (head, _) = good.rsplit_once('.').unwrap_or_default();
        format!("{head}.{}", URL_SAFE_NO_PAD.encode([1u8; 256]))
    };
    let cases = [
        (sign("PS256", &thumb), 200),
        (sign("RS256", &thumb), 200),
        (sign("PS256", &other_thumb), 401),
        (tampered, 401),
    ];
    for (i, (assertion, status)) in cases.iter().enumerate() {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", &scope),
        ];
        assert_eq!(token_with(&sim, &http, &form).await.status(), *status, "case {i}");
    }
    sim.shutdown().await;
}
