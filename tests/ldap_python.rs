//! LDAP through a second, independent client library: Python `ldap3` (the venv `scripts/test` creates, found via
//! `ENTRADIR_VENV` or `./.venv`), against a synced simulator tenant. Checks what CTI tools built on ldap3 do:
//! UPN bind, paged search generator, binary attribute round trip, escaped binary filters, compare, and a refused
//! write.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;

const PASSWORD: &str = "py-secret";

const SCRIPT: &str = r#"
import json, sys
from ldap3 import Server, Connection, SUBTREE, BASE
from ldap3.utils.conv import escape_bytes
port, base, password, jane_dn = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
out = {}
c = Connection(Server('127.0.0.1', port=port, get_info='ALL'), user='pbx@contoso.example', password=password, auto_bind=True)
out['naming'] = str(c.server.info.other.get('defaultNamingContext', [''])[0])
gen = c.extend.standard.paged_search(base, '(&(objectCategory=person)(objectClass=user))', SUBTREE,
                                     attributes=['sAMAccountName'], paged_size=7, generator=True)
out['paged'] = sorted(str(e['attributes']['sAMAccountName']) for e in gen if e.get('type') == 'searchResEntry')
c.search(base, '(telephoneNumber=*1234567)', SUBTREE, attributes=['thumbnailPhoto', 'objectGUID', 'displayName'])
e = c.entries[0]
out['display'] = str(e.displayName)
out['photo_hex'] = bytes(e.thumbnailPhoto.raw_values[0]).hex()
guid = bytes(e.objectGUID.raw_values[0])
c.search(base, '(objectGUID=%s)' % escape_bytes(guid), SUBTREE, attributes=['sAMAccountName'])
out['by_guid'] = [str(x.sAMAccountName) for x in c.entries]
out['compare_true'] = c.compare(jane_dn, 'sAMAccountName', 'JDOE')
out['compare_false'] = c.compare(jane_dn, 'sAMAccountName', 'nobody')
c.modify(jane_dn, {'title': [('MODIFY_REPLACE', ['Boss'])]})
out['modify_result'] = c.result['result']
bad = Connection(Server('127.0.0.1', port=port), user='pbx@contoso.example', password='wrong')
out['bad_bind'] = bad.bind()
out['bad_result'] = bad.result['result']
print(json.dumps(out))
"#;

fn python() -> PathBuf {
    venv_bin("python")
}

/// Run a script with the venv's Python and parse what it prints as JSON.
async fn run_script(script: &'static str, args: Vec<String>) -> Value {
    let py = python();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ldap3_client_works() {
    let sim = sim(20, 2, 2, 11).await;
    let ctl = sim.control();
    let jane = "00112233-4455-6677-8899-aabbccddeeff";
    ctl.add_user(props(json!({
        "id": jane, "displayName": "Doe, Jane", "givenName": "Jane", "surname": "Doe",
        "userPrincipalName": "jane.doe@contoso.example", "mailNickname": "jdoe", "accountEnabled": true,
        "userType": "Member", "businessPhones": ["030 1234567"]
    })))
    .unwrap();
    let photo = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x00, 0x80, 0x81, 0xfe, 0xff, 0xd9];
    ctl.set_photo(jane, Some(photo.clone())).unwrap();
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let published = engine.dir.published();
    let snap = published.load();
    let jane_dn = snap.entry(jane).unwrap().dn.to_string();
    let people: Vec<String> = snap
        .entries()
        .filter(|e| e.has_class("user") && !e.has_class("computer"))
        .filter(|e| {
            e.first_str("objectCategory")
                .is_some_and(|c| c.starts_with("CN=Person,"))
        })
        .filter_map(|e| e.first_str("sAMAccountName").map(String::from))
        .collect();

    let (port, stop) = ldap_server(published.clone(), PASSWORD, false).await;

    let args = vec![port.to_string(), BASE_DN.into(), PASSWORD.into(), jane_dn];
    let v = run_script(SCRIPT, args).await;
    assert_eq!(v["naming"], BASE_DN);
    let mut paged: Vec<String> = serde_json::from_value(v["paged"].clone()).unwrap();
    let mut expected = people.clone();
    paged.sort();
    expected.sort();
    assert!(expected.len() > 7, "more than one page");
    assert_eq!(paged, expected);
    assert_eq!(v["display"], "Doe, Jane");
    let hex: String = photo.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["photo_hex"], hex);
    assert_eq!(v["by_guid"], json!(["jdoe"]));
    assert_eq!(v["compare_true"], true);
    assert_eq!(v["compare_false"], false);
    assert_eq!(v["modify_result"], 53, "the directory is read-only");
    assert_eq!(v["bad_bind"], false);
    assert_eq!(v["bad_result"], 49);
    stop.cancel();
}

const PAGING_SCRIPT: &str = r#"
import json, sys, time
from ldap3 import Server, Connection, SUBTREE
port, base, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = Connection(Server('127.0.0.1', port=port), user='pbx@contoso.example', password=password, auto_bind=True)
out = {}
def page(cookie):
    c.search(base, '(objectCategory=person)', SUBTREE, attributes=['cn'], paged_size=3, paged_cookie=cookie)
    ctl = c.result.get('controls', {}).get('1.2.840.113556.1.4.319', {}).get('value', {})
    return c.result['result'], c.result['message'], len(c.entries), ctl.get('cookie', b'')
code, _, n, cookie = page(None)
out['first'] = [code, n, len(cookie)]
code, _, n, cookie = page(cookie)
out['continued'] = [code, n]
time.sleep(1.5)
code, message, n, _ = page(cookie)
out['stale'] = [code, message, n]
print(json.dumps(out))
"#;

/// A paged search not continued within `ldap.paged_search_ttl` is forgotten: its cookie is refused the way AD
/// refuses an unknown one (unwillingToPerform), while a prompt next page works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_paged_search_expires() {
    let sim = sim(20, 2, 0, 5).await;
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let (port, stop) = ldap_server_with(engine.dir.published(), PASSWORD, |c| {
        c.paged_search_ttl = std::time::Duration::from_secs(1)
    })
    .await;
    let v = run_script(PAGING_SCRIPT, vec![port.to_string(), BASE_DN.into(), PASSWORD.into()]).await;
    assert_eq!(v["first"], json!([0, 3, 16]), "a page and a cookie");
    assert_eq!(v["continued"], json!([0, 3]));
    assert_eq!(v["stale"][0], 53, "{v}");
    assert!(
        v["stale"][1].as_str().unwrap().contains("invalid paged results cookie"),
        "{v}"
    );
    stop.cancel();
}
