//! What a PBX admin checks on a synced user: AD attributes derived from known Graph data.

mod common;

use common::*;
use entradir::directory::entry::normalize_dn;
use entradir::directory::snapshot::PhoneQuery;
use graph_sim::GraphKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_user_looks_like_an_ad_user() {
    let sim = sim(5, 1, 1, 3).await;
    let ctl = sim.control();
    let id = "00112233-4455-6677-8899-aabbccddeeff";
    ctl.add_user(props(json!({
        "id": id, "displayName": "Doe, Jane", "givenName": "Jane", "surname": "Doe",
        "userPrincipalName": "jane.doe@contoso.example", "mail": "jane.doe@contoso.example",
        "mailNickname": "jdoe", "accountEnabled": false, "userType": "Member",
        "businessPhones": ["030 1234567", "+1 425 555 0100"], "mobilePhone": "0171 2345678",
        "faxNumber": "ask reception", "jobTitle": "Buyer", "department": "Purchasing", "companyName": "Contoso",
        "securityIdentifier": "S-1-12-1-1-2-3-4", "createdDateTime": "2021-03-12T10:36:14Z",
        "onPremisesExtensionAttributes": {"extensionAttribute3": "ext3"}
    })))
    .unwrap();
    let group = ctl
        .add_group(props(json!({"displayName": "Telephony", "securityEnabled": true,
        "mailEnabled": false, "groupTypes": [], "createdDateTime": "2019-07-01T08:00:00.5Z"})))
        .unwrap();
    ctl.add_member(&group, id).unwrap();
    let mut engine = engine(&sim, settings(), None);
    engine.round().await.unwrap();
    let snap = engine.dir.published().load();
    let e = snap.entry(id).expect("the user is published");

    assert_eq!(
        &*e.dn, "CN=Doe\\, Jane,CN=Users,DC=contoso,DC=example",
        "RDN value escaped per RFC 4514"
    );
    assert!(snap
        .by_dn(&normalize_dn("cn=doe\\, jane,cn=users,dc=contoso,dc=example").unwrap())
        .is_some());
    let objectclasses: Vec<&str> = e.strs("objectClass").collect();
    assert_eq!(objectclasses, ["top", "person", "organizationalPerson", "user"]);
    assert_eq!(
        e.first_str("objectCategory"),
        Some("CN=Person,CN=Schema,CN=Configuration,DC=contoso,DC=example")
    );
    assert_eq!(e.first_str("sAMAccountName"), Some("jdoe"), "from mailNickname");
    assert_eq!(
        e.first_str("userAccountControl"),
        Some("514"),
        "disabled accounts are flagged, not hidden"
    );
    assert_eq!(
        e.values("objectGUID")[0].as_ref(),
        [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
    );
    assert_eq!(e.values("objectSid")[0].len(), 8 + 4 * 5);
    assert_eq!(e.first_str("telephoneNumber"), Some("+49301234567"));
    assert_eq!(e.first_str("otherTelephone"), Some("+14255550100"));
    assert_eq!(e.first_str("mobile"), Some("+491712345678"));
    assert_eq!(
        e.first_str("facsimileTelephoneNumber"),
        Some("ask reception"),
        "unparsable numbers are kept"
    );
    assert_eq!(e.first_str("extensionAttribute3"), Some("ext3"));
    assert_eq!(e.first_str("company"), Some("Contoso"));
    assert_eq!(
        e.first_str("memberOf"),
        Some("CN=Telephony,CN=Users,DC=contoso,DC=example")
    );
    assert_eq!(
        e.first_str("whenCreated"),
        Some("20210312103614.0Z"),
        "Graph's createdDateTime, the same in every replica"
    );
    let g = snap.entry(&group).unwrap();
    assert_eq!(g.first_str("whenCreated"), Some("20190701080000.0Z"));
    assert_eq!(g.first_str("member"), Some(&*e.dn));
    assert_eq!(g.first_str("groupType"), Some("-2147483646"), "global security group");

    // Every spelling of the number finds her.
    for q in ["+49 30 1234567", "004930 1234567", "030 1234567"] {
        assert_eq!(snap.find_phone(PhoneQuery::Exact(q)), vec![e.id.clone()], "{q}");
    }
    assert!(snap.find_phone(PhoneQuery::Suffix("1234567")).contains(&e.id));
    assert_eq!(snap.find_eq("samaccountname", b"JDOE").unwrap(), vec![e.id.clone()]);
    let doe = snap.query(&entradir::directory::Query::Text("doe".into()));
    assert!(doe
        .ids
        .is_some_and(|ids| snap.id_of(&e.id).is_some_and(|id| ids.contains(id))));
    assert!(
        engine
            .status
            .lock()
            .unwrap()
            .last_report
            .as_ref()
            .unwrap()
            .unparsable_phones
            >= 1
    );

    // A rename moves the DN, and the group's member value follows.
    ctl.update(GraphKind::User, id, props(json!({"displayName": "Jane Roe"})))
        .unwrap();
    engine.round().await.unwrap();
    let snap = engine.dir.published().load();
    assert_eq!(
        &*snap.entry(id).unwrap().dn,
        "CN=Jane Roe,CN=Users,DC=contoso,DC=example"
    );
    assert_eq!(
        snap.entry(&group).unwrap().first_str("member"),
        Some("CN=Jane Roe,CN=Users,DC=contoso,DC=example")
    );
    assert_eq!(
        snap.entry(id).unwrap().first_str("sAMAccountName"),
        Some("jdoe"),
        "sAMAccountName is stable"
    );
    let renamed = snap.entry(id).unwrap();
    assert_eq!(renamed.first_str("whenCreated"), Some("20210312103614.0Z"));
    let changed = renamed.first_str("whenChanged").unwrap_or_default();
    assert!(
        changed > "2026",
        "whenChanged is the change, not the creation: {changed}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upn_csv_guests_and_scope() {
    let sim = sim(30, 3, 0, 5).await;
    let ctl = sim.control();
    let u = ctl
        .add_user(props(
            json!({"displayName": "Max Mustermann", "userPrincipalName": "mmu@domain.de",
            "mailNickname": "mmu", "accountEnabled": true, "userType": "Member"}),
        ))
        .unwrap();
    let guest = ctl
        .add_user(props(
            json!({"displayName": "Gast", "userPrincipalName": "gast_x.com#EXT#@contoso.example",
            "accountEnabled": true, "userType": "Guest"}),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("usermatching.csv");
    std::fs::write(
        &csv,
        "EntraUPN,LocalUsername\nmmu@domain.de,max.mustermann@domain.local\nnobody@x.de,nobody\n",
    )
    .unwrap();
    let mut s = settings();
    s.upn_map = entradir::directory::upn_csv::UpnMap::load(&csv).unwrap();
    let mut engine = engine(&sim, s, None);
    let report = engine.round().await.unwrap();
    let snap = engine.dir.published().load();
    let e = snap.entry(&u).unwrap();
    assert_eq!(e.first_str("userPrincipalName"), Some("max.mustermann@domain.local"));
    assert_eq!(e.first_str("sAMAccountName"), Some("max.mustermann"));
    assert_eq!(report.unmatched_csv_rows, vec![("nobody@x.de".to_string(), 3)]);
    assert!(snap.entry(&guest).is_none(), "guests are not published by default");
    // The unmatched rows follow users arriving and leaving, round by round (delta rounds, no rebuild).
    let late = ctl
        .add_user(props(
            json!({"displayName": "No Body", "userPrincipalName": "nobody@x.de",
            "mailNickname": "nobody", "accountEnabled": true, "userType": "Member"}),
        ))
        .unwrap();
    let report = engine.round().await.unwrap();
    assert_eq!(
        report.unmatched_csv_rows,
        Vec::<(String, usize)>::new(),
        "the row matches now"
    );
    ctl.update_user(&u, props(json!({"userPrincipalName": "mmu2@domain.de"})))
        .unwrap();
    ctl.delete(GraphKind::User, &late, true).unwrap();
    let report = engine.round().await.unwrap();
    assert_eq!(
        report.unmatched_csv_rows,
        vec![("mmu@domain.de".to_string(), 2), ("nobody@x.de".to_string(), 3)],
        "a renamed UPN and a deleted user leave their rows unmatched, in file order"
    );
    ctl.update_user(&u, props(json!({"userPrincipalName": "mmu@domain.de"})))
        .unwrap();
    let report = engine.round().await.unwrap();
    assert_eq!(report.unmatched_csv_rows, vec![("nobody@x.de".to_string(), 3)]);

    // Scope to one group: only its (transitive) members stay; a reload re-projects without Graph.
    let x = ctl.export();
    let g = x
        .groups
        .iter()
        .find(|g| !g.members.is_empty())
        .expect("a group with members");
    let gid = g.props["id"].as_str().unwrap().to_string();
    let mut s = engine.dir.settings().clone();
    s.scope_groups = vec![gid.clone()];
    s.include_guests = true;
    let requests_before = ctl.request_log().len();
    engine.dir.reconfigure(s);
    assert_eq!(
        ctl.request_log().len(),
        requests_before,
        "re-projection does not ask Graph"
    );
    let snap = engine.dir.published().load();
    let transitive = |id: &str| -> bool {
        let mut stack = vec![gid.clone()];
        let mut seen = std::collections::HashSet::new();
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            for grp in x.groups.iter().filter(|e| e.props["id"] == g.as_str()) {
                for m in &grp.members {
                    if m.id == id {
                        return true;
                    }
                    stack.push(m.id.clone());
                }
            }
        }
        false
    };
    for user in &x.users {
        let id = user["id"].as_str().unwrap();
        assert_eq!(
            snap.entry(id).is_some(),
            transitive(id),
            "user {id} in scope iff transitive member"
        );
    }

    // A new base DN moves every entry; versions keep growing (LDAP and CardDAV clients compare them).
    let before = snap.version;
    let mut s = engine.dir.settings().clone();
    s.naming = entradir::directory::Naming::new("DC=example,DC=org").unwrap();
    engine.dir.reconfigure(s);
    let moved = engine.dir.published().load();
    assert!(moved.version > before, "version {} after {before}", moved.version);
    assert!(!moved.is_empty() && moved.entries().all(|e| e.dn.ends_with("DC=example,DC=org")));
    sim.shutdown().await;
}
