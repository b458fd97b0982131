//! LDAP over the real pipeline: a simulated Entra tenant, synced with delta queries and projected to AD
//! entries, served over LDAP and queried with `ldapsearch` the way PBXs and Jabber do. Needs `ldapsearch`.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;
use std::process::Command;

const PASSWORD: &str = "synced-secret";

fn ldapsearch(port: u16, extra: &[&str]) -> (i32, String, String) {
    let o = Command::new("ldapsearch")
        .args([
            "-LLL",
            "-x",
            "-o",
            "ldif-wrap=no",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
        ])
        .args(["-D", "pbx@contoso.example", "-w", PASSWORD, "-b", BASE_DN])
        .args(extra)
        .env("LDAPCONF", "/dev/null")
        .env("LDAPRC", "entradir-test-no-ldaprc")
        .output()
        .expect("ldapsearch must be installed (apt-get install ldap-utils)");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn values(ldif: &str, attr: &str) -> Vec<String> {
    let plain = format!("{attr}: ");
    let b64 = format!("{attr}:: ");
    ldif.lines()
        .filter_map(|l| {
            if let Some(v) = l.strip_prefix(&plain) {
                return Some(v.to_string());
            }
            l.strip_prefix(&b64).map(String::from)
        })
        .collect()
}

async fn run(port: u16, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || ldapsearch(port, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_tenant_answers_pbx_queries_and_follows_new_rounds() {
    let sim = sim(40, 4, 5, 7).await;
    let ctl = sim.control();
    let jane = JANE;
    add_jane(&ctl, json!({}));
    let photo = TINY_JPEG.to_vec();
    ctl.set_photo(jane, Some(photo.clone())).unwrap();
    let phone = ctl
        .add_device(props(json!({"displayName": "iPhone von Mia", "accountEnabled": true,
            "operatingSystem": "iOS", "registrationDateTime": "2022-05-04T09:10:11Z"})))
        .unwrap();
    let pc = ctl
        .add_device(props(json!({"displayName": "DESKTOP-4F2K9", "accountEnabled": true,
            "operatingSystem": "Windows"})))
        .unwrap();
    let max = ctl
        .add_user(props(
            json!({"displayName": "Max Nebenstelle", "givenName": "Max", "surname": "Nebenstelle",
            "userPrincipalName": "max@contoso.example", "mailNickname": "max", "accountEnabled": true,
            "businessPhones": ["+1 (425) 555-0100 x12"], "mobilePhone": "ext. 1234"}),
        ))
        .unwrap();
    let inner = add_security_group(&ctl, "Hotline");
    let outer = add_security_group(&ctl, "Support");
    ctl.add_member(&inner, jane).unwrap();
    ctl.add_member(&outer, &inner).unwrap();

    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let published = engine.dir.published();
    let (port, stop) = ldap_server(published.clone(), PASSWORD, false).await;

    // Caller-ID lookups in the spellings trunks deliver.
    for f in [
        "(telephoneNumber=+49301234567)",
        "(telephoneNumber=004930 1234567)",
        "(telephoneNumber=*1234567)",
        "(mobile=01712345678)",
    ] {
        let (code, out, err) = run(port, &[f, "displayName"]).await;
        assert_eq!(code, 0, "{f}: {err}");
        assert_eq!(values(&out, "displayName"), vec!["Doe, Jane"], "{f}");
    }
    // Numbers are rewritten only when they are real ones: an extension stays with its number, which still
    // matches a call from it; a bare extension is kept as typed and is not the German number +491234.
    let (code, out, err) = run(
        port,
        &["(telephoneNumber=+1 425 555 0100)", "telephoneNumber", "mobile"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(values(&out, "telephoneNumber"), vec!["+14255550100 ext. 12"]);
    assert_eq!(values(&out, "mobile"), vec!["ext. 1234"]);
    let (_, out, _) = run(port, &["(mobile=+491234)", "sAMAccountName"]).await;
    assert!(values(&out, "sAMAccountName").is_empty(), "{out}");
    assert!(published.load().entry(&max).is_some());
    // Computers carry NetBIOS account names, a host name only when the device name is one, and Graph's
    // registration date.
    for (id, sam, host) in [
        (&phone, "IPHONE-VON-MIA$", None),
        (&pc, "DESKTOP-4F2K9$", Some("desktop-4f2k9.contoso.example")),
    ] {
        let guid: String = published.load().entry(id).unwrap().values("objectGUID")[0]
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect();
        let (code, out, err) = run(
            port,
            &[
                &format!("(&(objectClass=computer)(objectGUID={guid}))"),
                "sAMAccountName",
                "dNSHostName",
                "whenCreated",
            ],
        )
        .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(values(&out, "sAMAccountName"), vec![sam.to_string()]);
        assert_eq!(
            values(&out, "dNSHostName"),
            host.map(str::to_string).into_iter().collect::<Vec<_>>()
        );
        if id == &phone {
            assert_eq!(values(&out, "whenCreated"), vec!["20220504091011.0Z".to_string()]);
        }
    }
    // Jabber: photo bytes as synced from Graph.
    let (_, out, _) = run(port, &["(sAMAccountName=jdoe)", "thumbnailPhoto"]).await;
    assert_eq!(
        values(&out, "thumbnailPhoto"),
        vec![base64::engine::general_purpose::STANDARD.encode(&photo)]
    );
    // objectGUID from the Graph id, as a binary filter.
    let snap = published.load();
    let guid: String = snap.entry(jane).unwrap().values("objectGUID")[0]
        .iter()
        .map(|b| format!("\\{b:02x}"))
        .collect();
    let (code, out, err) = run(port, &[&format!("(objectGUID={guid})"), "sAMAccountName"]).await;
    assert_eq!(
        (code, values(&out, "sAMAccountName")),
        (0, vec!["jdoe".to_string()]),
        "{err}"
    );
    // Nested groups in chain.
    let outer_dn = snap.entry(&outer).unwrap().dn.to_string();
    let (_, out, _) = run(
        port,
        &[
            &format!("(&(objectCategory=person)(memberOf:1.2.840.113556.1.4.1941:={outer_dn}))"),
            "sAMAccountName",
        ],
    )
    .await;
    assert_eq!(values(&out, "sAMAccountName"), vec!["jdoe"]);
    // CUCM full sync with paging returns every enabled user.
    let cucm = "(&(objectclass=user)(!(objectclass=Computer))(!(UserAccountControl:1.2.840.113556.1.4.803:=2)))";
    let (code, out, err) = run(port, &["-E", "pr=10/noprompt", cucm, "1.1"]).await;
    assert_eq!(code, 0, "{err}");
    let expected = snap
        .entries()
        .filter(|e| e.has_class("user") && !e.has_class("computer"))
        .filter(|e| {
            e.first_str("userAccountControl")
                .and_then(|u| u.parse::<u32>().ok())
                .is_some_and(|u| u & 2 == 0)
        })
        .count();
    assert!(expected > 10);
    assert_eq!(values(&out, "dn").len(), expected);

    // A new sync round is visible to the next query without restarting anything.
    let max = ctl
        .add_user(props(
            json!({"displayName": "Max Mustermann", "givenName": "Max", "surname": "Mustermann",
            "userPrincipalName": "max@contoso.example", "mailNickname": "mmustermann", "accountEnabled": true,
            "userType": "Member", "businessPhones": ["+49 89 9876543"]}),
        ))
        .unwrap();
    engine.round().await.unwrap();
    let (_, out, _) = run(port, &["(telephoneNumber=089 9876543)", "sAMAccountName"]).await;
    assert_eq!(
        values(&out, "sAMAccountName"),
        vec!["mmustermann"],
        "new user {max} visible after the round"
    );
    let (_, out, _) = run(
        port,
        &["-b", "", "-s", "base", "(objectClass=*)", "highestCommittedUSN"],
    )
    .await;
    assert_eq!(
        values(&out, "highestCommittedUSN"),
        vec![published.load().version.to_string()]
    );
    stop.cancel();
}

/// Server-side sort (`ldapsearch -E sss=…`) in the order AD gives these surnames, not by code point (which puts
/// `Schulz` before `Schäfer` and `Öztürk` after `Zimmermann`); AD's Swedish ordering rule; the collation
/// changed by a reload; an ordering rule nobody knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_results_follow_ads_collation() {
    // In the order AD (and the Unicode root collation) sorts them.
    const AD_ORDER: [&str; 14] = [
        "Åberg",
        "Çelik",
        "Cem",
        "Đorđević",
        "Dorn",
        "Håkansson",
        "Horváth",
        "müller",
        "Myers",
        "Ørsted",
        "Öztürk",
        "Schäfer",
        "Schulz",
        "Zimmermann",
    ];
    let sim = sim(5, 1, 0, 3).await;
    let ctl = sim.control();
    // Added in an order that is neither sorted nor reversed.
    for (i, sn) in AD_ORDER
        .iter()
        .enumerate()
        .rev()
        .step_by(2)
        .chain(AD_ORDER.iter().enumerate().step_by(2))
    {
        ctl.add_user(props(
            json!({"displayName": format!("Test {sn}"), "givenName": "Test", "surname": sn,
            "userPrincipalName": format!("sort{i}@contoso.example"), "mailNickname": format!("sort{i}"),
            "department": "Sortierung", "accountEnabled": true}),
        ))
        .unwrap();
    }
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let (port, stop) = ldap_server(engine.dir.published(), PASSWORD, false).await;
    let sorted = |control: &'static str| async move {
        let (code, out, err) = run(port, &["-E", control, "(department=Sortierung)", "sn"]).await;
        (code, texts(&out, "sn"), err)
    };

    let (code, sns, err) = sorted("!sss=sn").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sns, AD_ORDER);
    let (code, sns, err) = sorted("!sss=-sn").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sns, AD_ORDER.iter().rev().copied().collect::<Vec<_>>());
    // displayName sorts alike (its keys are precomputed too); `mail` is keyed per request.
    let (code, out, err) = run(
        port,
        &["-E", "!sss=displayName", "(department=Sortierung)", "displayName"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let want: Vec<String> = AD_ORDER.iter().map(|s| format!("Test {s}")).collect();
    assert_eq!(texts(&out, "displayName"), want);

    // AD's ordering rule for Swedish: Å, Ä, Ö and Ø after Z (so Schulz before Schäfer), ü as y.
    let swedish = [
        "Çelik",
        "Cem",
        "Đorđević",
        "Dorn",
        "Horváth",
        "Håkansson",
        "Myers",
        "müller",
        "Schulz",
        "Schäfer",
        "Zimmermann",
        "Åberg",
        "Ørsted",
        "Öztürk",
    ];
    let (code, sns, err) = sorted("!sss=sn:1.2.840.113556.1.4.1594").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sns, swedish);

    // An unknown ordering rule: a critical control fails the search (unavailableCriticalExtension), a
    // non-critical one returns the entries unsorted.
    let (code, _, err) = sorted("!sss=sn:1.2.3.4").await;
    assert_eq!(code, 12, "critical sort with an unknown rule: {err}");
    let (code, mut sns, err) = sorted("sss=sn:1.2.3.4").await;
    assert_eq!(code, 0, "{err}");
    sns.sort();
    let mut all: Vec<String> = AD_ORDER.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(sns, all);

    // A reload that switches the directory to Swedish order re-keys the entries but changes no entry.
    let before = engine.dir.snapshot().version;
    let mut sv = settings();
    sv.collation = std::sync::Arc::new(entradir::directory::collation::Collation::new("sv").unwrap());
    engine.dir.reconfigure(sv);
    assert_eq!(
        engine.dir.snapshot().version,
        before,
        "re-sorting is not a change of data"
    );
    let (code, sns, err) = sorted("!sss=sn").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sns, swedish);
    stop.cancel();
}

/// Values as text: `ldapsearch` prints non-ASCII values base64-encoded (`sn:: w4ViZXJn`).
fn texts(ldif: &str, attr: &str) -> Vec<String> {
    let b64 = format!("{attr}:: ");
    ldif.lines()
        .filter_map(|l| match l.strip_prefix(&b64) {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .and_then(|b| String::from_utf8(b).ok()),
            None => l.strip_prefix(&format!("{attr}: ")).map(String::from),
        })
        .collect()
}
