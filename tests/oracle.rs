//! An oracle for the Graph → AD projection that shares none of its code: for a generated tenant (plus the awkward
//! cases a real one has), what a PBX relies on is worked out here from the simulator's own export, by the rules
//! as the README states them, and compared with the directory entradir serves:
//!
//! - `sAMAccountName`: from onPremisesSamAccountName, else mailNickname, else the UPN's local part; AD's illegal
//!   characters dropped, at most 20 characters, unique without regard to case; of the users that want one name,
//!   the earliest created (then the lowest id) keeps it, the others carry four digits within the 20
//!   (`jdoe4821`);
//! - `memberOf`: exactly the DNs of the groups that list the user as a direct member;
//! - `mobile` in E.164 (German mobiles in every spelling the generator uses); business numbers either in E.164
//!   with the digits the person typed, a national number read in the person's country (usageLocation), or kept
//!   as typed, never another number;
//! - `userAccountControl`: 512 enabled, 514 disabled; devices 4096 / 4098 with a `$` name of at most 16;
//! - guests are not published.

mod common;

use common::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// AD's illegal sAMAccountName characters.
const ILLEGAL: &str = "\"/\\[]:;|=,+*?<>@";

fn s<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str).filter(|v| !v.is_empty())
}

/// The name a user asks for, before collisions, by the documented rule.
fn wanted_sam(u: &Map<String, Value>) -> String {
    let raw = s(u, "onPremisesSamAccountName")
        .or_else(|| s(u, "mailNickname"))
        .or_else(|| {
            s(u, "userPrincipalName")
                .and_then(|p| p.split('@').next())
                .filter(|l| !l.is_empty())
        })
        .or_else(|| s(u, "id"))
        .unwrap_or_default();
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control() && !ILLEGAL.contains(*c))
        .collect();
    let kept = kept.trim_matches([' ', '.']);
    if kept.is_empty() {
        "user".into()
    } else {
        kept.into()
    }
}

/// The name with a collision suffix (empty: none), fitted into 20 characters.
fn numbered(base: &str, suffix: &str) -> String {
    let stem: String = base.chars().take(20 - suffix.chars().count()).collect();
    format!("{}{suffix}", stem.trim_end_matches([' ', '.', '-']))
}

/// Calling codes of the countries the generator puts offices in (written out here, not looked up).
fn calling_code(region: &str) -> Option<&'static str> {
    match region {
        "DE" => Some("49"),
        "AT" => Some("43"),
        "US" => Some("1"),
        _ => None,
    }
}

/// The E.164 form of a number written internationally (`+cc …`, `00cc …`, with an optional `(0)`), or
/// nationally in the person's country (`region`, Graph's usageLocation; Germany when unset): with the trunk
/// `0` in Germany and Austria (`0…`, `(0…)`), without one in the US (`(425) 555-0100`). `None` otherwise.
fn e164_of(raw: &str, region: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    let digits = |t: &str| {
        t.replace("(0)", "")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    };
    let region = region.unwrap_or("DE");
    if let Some(rest) = raw.strip_prefix('+') {
        Some(format!("+{}", digits(rest)))
    } else if let Some(rest) = raw.strip_prefix("00") {
        Some(format!("+{}", digits(rest)))
    } else if region == "US" {
        raw.starts_with(|c: char| c == '(' || c.is_ascii_digit())
            .then(|| format!("+1{}", digits(raw)))
    } else if let Some(rest) = raw.trim_start_matches('(').strip_prefix('0') {
        Some(format!("+{}{}", calling_code(region)?, digits(rest)))
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_pbx_relies_on_matches_rules_worked_out_from_the_tenant() {
    let sim = sim(2000, 60, 80, 23).await;
    let ctl = sim.control();
    // The awkward cases: names that collide (also by case and after cutting to 20), illegal characters, the
    // fallbacks, a guest, a disabled account.
    let awkward = [
        json!({"displayName": "Jo Doe", "mailNickname": "jdoe"}),
        json!({"displayName": "Jack Doe", "mailNickname": "JDoe"}),
        json!({"displayName": "Jill Doe", "mailNickname": "jdoe"}),
        json!({"displayName": "Max Long", "mailNickname": "maximilian.mustermann-long"}),
        json!({"displayName": "Max Longer", "mailNickname": "maximilian.mustermann-longer"}),
        json!({"displayName": "Max Longest", "mailNickname": "maximilian.mustermann-longest"}),
        json!({"displayName": "Odd Chars", "mailNickname": "a/b\\c[d]e:f;g|h=i,j+k*l?m<n>o@p"}),
        json!({"displayName": "Only Dots", "mailNickname": "..."}),
        json!({"displayName": "From AD", "onPremisesSamAccountName": "legacy01", "mailNickname": "ignored"}),
        json!({"displayName": "No Nick", "userPrincipalName": "no.nick@contoso.example"}),
        json!({"displayName": "A Guest", "mailNickname": "guest", "userType": "Guest",
               "userPrincipalName": "guest_fabrikam.example#EXT#@contoso.example"}),
        json!({"displayName": "Gone Quiet", "mailNickname": "quiet", "accountEnabled": false,
               "mobilePhone": "0171 2345678"}),
    ];
    for props in awkward {
        ctl.add_user(props.as_object().cloned().unwrap_or_default())
            .expect("add user");
    }
    let mut settings = settings();
    settings.include_disabled = true;
    let mut engine = engine(&sim, settings, None);
    engine.round().await.expect("full sync");
    let snap = engine.dir.published().load();
    let x = ctl.export();
    assert!(x.users.len() > 2000);

    // sAMAccountName
    let mut by_base: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new(); // lower(base) → (id, sam)
    let mut taken: HashMap<String, String> = HashMap::new();
    for u in &x.users {
        let id = s(u, "id").expect("id");
        let guest = s(u, "userType") == Some("Guest") || s(u, "userPrincipalName").is_some_and(|p| p.contains("#EXT#"));
        let entry = snap.entry(id);
        if guest {
            assert!(entry.is_none(), "guest {id} is not published");
            continue;
        }
        let e = entry.unwrap_or_else(|| panic!("user {id} is published"));
        let sam = e.first_str("sAMAccountName").expect("sAMAccountName").to_string();
        assert!(sam.chars().count() <= 20, "{sam:?} fits AD's 20 characters");
        assert!(
            !sam.chars().any(|c| ILLEGAL.contains(c) || c.is_control()),
            "{sam:?} has no illegal character"
        );
        if let Some(other) = taken.insert(sam.to_lowercase(), id.to_string()) {
            panic!("{sam:?} given to both {other} and {id}");
        }
        let base = numbered(&wanted_sam(u), "");
        by_base
            .entry(base.to_lowercase())
            .or_default()
            .push((id.to_string(), sam));

        // userAccountControl
        let enabled = u.get("accountEnabled").and_then(Value::as_bool) != Some(false);
        let uac = e.first_str("userAccountControl");
        assert_eq!(uac, Some(if enabled { "512" } else { "514" }), "{id}");
    }
    // Who ranks first among users that want one name: the earliest createdDateTime to the second (Graph's
    // UTC format sorts as text once the fraction is cut; none at all comes last), then the id.
    let rank = |id: &str| {
        let u = x.users.iter().find(|u| s(u, "id") == Some(id)).expect("user");
        let created = s(u, "createdDateTime").map_or("~", |t| t.get(..19).unwrap_or(t));
        (created.to_string(), id.to_string())
    };
    let mut collisions = 0;
    for (lower, holders) in &by_base {
        let base = wanted_sam(
            x.users
                .iter()
                .find(|u| s(u, "id") == Some(&holders[0].0))
                .expect("user"),
        );
        let plain = numbered(&base, "");
        let mut ranked = holders.clone();
        ranked.sort_by_key(|(id, _)| rank(id));
        let (first, first_sam) = &ranked[0];
        let plain_owner = taken.get(&plain.to_lowercase());
        let taken_before = plain_owner.is_some_and(|o| o != first && rank(o) < rank(first));
        assert!(
            first_sam.eq_ignore_ascii_case(&plain) || taken_before,
            "{first}: the earliest of {ranked:?} has {plain:?} ({lower})"
        );
        for (id, sam) in &ranked[1..] {
            collisions += 1;
            let digits: String = sam
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let numbered_ok = digits.parse::<u32>().is_ok_and(|n| (1000..=9999).contains(&n))
                && numbered(&base, &digits).eq_ignore_ascii_case(sam);
            assert!(numbered_ok, "{id}: {sam:?} is {base:?} with four digits ({ranked:?})");
        }
    }
    assert!(collisions >= 4, "the awkward users collide: {collisions}");
    let sam_of = |nick: &str| {
        let u = x
            .users
            .iter()
            .find(|u| s(u, "displayName") == Some(nick))
            .expect("added user");
        snap.entry(s(u, "id").expect("id"))
            .and_then(|e| e.first_str("sAMAccountName").map(str::to_string))
    };
    let jdoes: BTreeSet<String> = ["Jo Doe", "Jack Doe", "Jill Doe"]
        .iter()
        .filter_map(|n| sam_of(n))
        .map(|s| s.to_lowercase())
        .collect();
    assert_eq!(jdoes.len(), 3, "three jdoes, three names: {jdoes:?}");
    assert_eq!(sam_of("Odd Chars").as_deref(), Some("abcdefghijklmnop"));
    assert_eq!(sam_of("Only Dots").as_deref(), Some("user"));
    assert_eq!(sam_of("From AD").as_deref(), Some("legacy01"));
    assert_eq!(sam_of("No Nick").as_deref(), Some("no.nick"));
    for n in ["Max Long", "Max Longer", "Max Longest"] {
        let sam = sam_of(n).expect("published");
        assert!(sam.to_lowercase().starts_with("maximilian.mus"), "{sam}");
    }

    // memberOf: exactly the groups that list the user directly.
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for g in &x.groups {
        let gid = s(&g.props, "id").expect("group id");
        let dn = snap
            .entry(gid)
            .unwrap_or_else(|| panic!("group {gid} is published"))
            .dn
            .to_lowercase();
        for m in g.members.iter().filter(|m| m.odata_type == "user") {
            expected.entry(m.id.as_str()).or_default().insert(dn.clone());
        }
    }
    let mut checked = 0;
    for u in &x.users {
        let id = s(u, "id").expect("id");
        let Some(e) = snap.entry(id) else { continue };
        let actual: BTreeSet<String> = e.strs("memberOf").map(str::to_lowercase).collect();
        assert_eq!(actual, expected.remove(id).unwrap_or_default(), "memberOf of {id}");
        checked += usize::from(!actual.is_empty());
    }
    assert!(checked > 500, "only {checked} users in groups: the check says little");

    // Numbers
    let (mut mobiles, mut converted, mut kept) = (0, 0, 0);
    for u in &x.users {
        let Some(e) = snap.entry(s(u, "id").expect("id")) else {
            continue;
        };
        let region = s(u, "usageLocation");
        if let Some(raw) = s(u, "mobilePhone") {
            // German mobiles, whatever office: national ones are German only for people in Germany.
            let want = e164_of(raw, Some("DE")).unwrap_or_else(|| panic!("mobiles are written +, 00 or 0: {raw}"));
            if raw.starts_with('0') && !raw.starts_with("00") && region.is_some_and(|r| r != "DE") {
                continue;
            }
            assert_eq!(e.first_str("mobile"), Some(want.as_str()), "mobile {raw:?}");
            mobiles += 1;
        }
        let raw = u.get("businessPhones").and_then(|p| p.get(0)).and_then(Value::as_str);
        let (Some(raw), Some(served)) = (raw, e.first_str("telephoneNumber")) else {
            continue;
        };
        match e164_of(raw, region) {
            Some(want) if served == want => converted += 1,
            _ if served == raw.trim() => kept += 1,
            _ => panic!("{raw:?} became {served:?}: neither its E.164 form nor kept as typed"),
        }
    }
    assert!(
        mobiles > 500 && converted > 500,
        "{mobiles} mobiles, {converted} converted numbers"
    );
    assert!(kept > 0, "some numbers are not valid and must be kept as typed");

    // Devices: computer accounts.
    for d in &x.devices {
        let id = s(d, "id").expect("id");
        let e = snap.entry(id).unwrap_or_else(|| panic!("device {id} is published"));
        let sam = e.first_str("sAMAccountName").expect("sAMAccountName");
        let stem = sam.strip_suffix('$').unwrap_or_else(|| panic!("{sam:?} ends in $"));
        assert!(
            !stem.is_empty()
                && stem.chars().count() <= 15
                && stem
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'),
            "{sam:?} is a NetBIOS name"
        );
        let enabled = d.get("accountEnabled").and_then(Value::as_bool) != Some(false);
        assert_eq!(
            e.first_str("userAccountControl"),
            Some(if enabled { "4096" } else { "4098" })
        );
    }
    sim.shutdown().await;
}
