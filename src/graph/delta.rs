//! Delta queries: reading one kind (`/users|groups|devices|contacts/delta`) to its end and turning Graph's delta
//! items into [`Change`]s.
//!
//! A kind is read either from its stored `@odata.deltaLink` (only what changed since) or from scratch (everything,
//! listed in `Round::full`). Reading from scratch happens on the first round, when the stored link is older than
//! Graph's 7-day limit or belongs to another Graph endpoint, and when Graph says the delta state expired (410 Gone,
//! `syncStateNotFound`, `resyncRequired`) — then the changes read so far for that kind are dropped and the kind is
//! restarted within the same round. Links from Graph are only ever followed on the configured Graph origin, so a
//! tampered state file or a confused server cannot make us send the access token elsewhere.

use serde_json::Value;
use url::Url;

use super::http::{Counters, GraphHttp};
use super::{GraphConfig, SyncError};
use crate::directory::change::{Change, DeltaLink, GraphKind, MemberRef, Updates};

/// User properties read by default. `manager` makes Graph send `manager@delta`.
pub const USER_SELECT: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "mailNickname",
    "onPremisesSamAccountName",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "securityIdentifier",
    "businessPhones",
    "mobilePhone",
    "faxNumber",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "usageLocation",
    "employeeId",
    "proxyAddresses",
    "accountEnabled",
    "userType",
    "onPremisesExtensionAttributes",
    "createdDateTime",
    "manager",
];

/// Group properties; `members` makes Graph send `members@delta`.
pub const GROUP_SELECT: &[&str] = &[
    "id",
    "displayName",
    "description",
    "mail",
    "mailNickname",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    "onPremisesSamAccountName",
    "securityIdentifier",
    "proxyAddresses",
    "createdDateTime",
    "members",
];

pub const DEVICE_SELECT: &[&str] = &[
    "id",
    "displayName",
    "deviceId",
    "operatingSystem",
    "operatingSystemVersion",
    "accountEnabled",
    "trustType",
    "isCompliant",
    "isManaged",
    "manufacturer",
    "model",
    "approximateLastSignInDateTime",
    "registrationDateTime",
];

pub const CONTACT_SELECT: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mailNickname",
    "companyName",
    "department",
    "jobTitle",
    "phones",
    "addresses",
    "proxyAddresses",
];

/// Graph keeps directory delta state for 7 days; links older than this (an hour of margin) are not tried.
pub const MAX_LINK_AGE_SECS: u64 = 7 * 86_400 - 3_600;

/// Pages one kind may take before we assume the server loops. A million users at Graph's ~200 per page, plus member
/// slices, stay far below it.
const MAX_PAGES: usize = 200_000;

/// The result of reading one kind to its delta link.
#[derive(Debug)]
pub(crate) struct KindOutcome {
    pub full: bool,
    pub changes: Vec<Change>,
    pub link: DeltaLink,
}

/// The `$select` list for a kind, with the configured extra user properties.
pub fn select(kind: GraphKind, extra_user: &[String]) -> Vec<String> {
    let base = match kind {
        GraphKind::User => USER_SELECT,
        GraphKind::Group => GROUP_SELECT,
        GraphKind::Device => DEVICE_SELECT,
        GraphKind::Contact => CONTACT_SELECT,
    };
    let mut fields: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    if kind == GraphKind::User {
        for extra in extra_user {
            // `$select` takes top-level properties; a mapping may name a nested one such as
            // `onPremisesExtensionAttributes.extensionAttribute1`.
            let top = extra.split(['.', '/']).next().unwrap_or(extra).to_string();
            if !top.is_empty() && !fields.contains(&top) {
                fields.push(top);
            }
        }
    }
    fields
}

/// The first request of a from-scratch read.
pub fn initial_url(graph_url: &str, kind: GraphKind, extra_user: &[String]) -> String {
    format!(
        "{graph_url}/v1.0/{}/delta?$select={}",
        kind.collection(),
        select(kind, extra_user).join(",")
    )
}

/// Reads one kind: from `stored` if it is usable, else (or if Graph says it expired) from scratch.
pub(crate) async fn sync_kind(
    http: &GraphHttp,
    cfg: &GraphConfig,
    kind: GraphKind,
    stored: Option<&DeltaLink>,
    now: u64,
    counters: &Counters,
) -> Result<KindOutcome, SyncError> {
    let selected = select(kind, &cfg.extra_user_select).join(",");
    let resume = match stored {
        Some(link) if link.select != selected => {
            tracing::info!(?kind, "the properties to read changed (mapping); reading from scratch");
            None
        }
        Some(link) if now.saturating_sub(link.obtained_at) >= MAX_LINK_AGE_SECS => {
            tracing::info!(
                ?kind,
                age_s = now.saturating_sub(link.obtained_at),
                "delta link too old; reading from scratch"
            );
            None
        }
        Some(link) if !same_origin(&link.url, &cfg.graph_url) => {
            tracing::warn!(
                ?kind,
                "stored delta link is not on graph_url {}; reading from scratch",
                cfg.graph_url
            );
            None
        }
        Some(link) => Some(link.url.clone()),
        None => None,
    };
    if let Some(url) = resume {
        match read_pages(http, cfg, kind, url, counters).await {
            Ok((changes, delta_link)) => {
                return Ok(KindOutcome {
                    full: false,
                    changes,
                    link: DeltaLink {
                        url: delta_link,
                        obtained_at: now,
                        select: selected,
                    },
                })
            }
            Err(SyncError::DeltaExpired { url, detail }) => {
                tracing::info!(?kind, %url, %detail, "delta state expired; reading from scratch");
            }
            Err(err) => return Err(err),
        }
    }
    let first = initial_url(&cfg.graph_url, kind, &cfg.extra_user_select);
    let (changes, delta_link) = read_pages(http, cfg, kind, first, counters).await?;
    Ok(KindOutcome {
        full: true,
        changes,
        link: DeltaLink {
            url: delta_link,
            obtained_at: now,
            select: selected,
        },
    })
}

/// Follows `@odata.nextLink` from `url` to the `@odata.deltaLink`, collecting changes.
async fn read_pages(
    http: &GraphHttp,
    cfg: &GraphConfig,
    kind: GraphKind,
    mut url: String,
    counters: &Counters,
) -> Result<(Vec<Change>, String), SyncError> {
    let prefer: Vec<(&'static str, String)> = cfg
        .page_size_hint
        .map(|n| vec![("Prefer", format!("odata.maxpagesize={n}"))])
        .unwrap_or_default();
    let mut changes = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = http.get_json(&url, &prefer, counters).await?;
        Counters::bump(&counters.pages);
        let bad = |detail: String| SyncError::BadResponse {
            url: url.clone(),
            detail,
        };
        let next = parse_page(kind, &page, &mut changes).map_err(bad)?;
        let link = match &next {
            Next::Page(link) | Next::Done(link) => link.clone(),
        };
        if !same_origin(&link, &cfg.graph_url) {
            return Err(bad(format!(
                "Graph sent a link to another host ({link}); refusing to follow it"
            )));
        }
        match next {
            Next::Done(delta_link) => return Ok((changes, delta_link)),
            Next::Page(next) if next == url => return Err(bad("@odata.nextLink points back to the same page".into())),
            Next::Page(next) => url = next,
        }
    }
    Err(SyncError::BadResponse {
        url,
        detail: format!("more than {MAX_PAGES} pages without an @odata.deltaLink; the server seems to loop"),
    })
}

/// Where a page says to go next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Page(String),
    Done(String),
}

/// Converts one delta page, appending its changes, and returns where to go next.
pub(crate) fn parse_page(kind: GraphKind, page: &Value, changes: &mut Vec<Change>) -> Result<Next, String> {
    let page = page.as_object().ok_or("the page is not a JSON object")?;
    let items = match page.get("value") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err("\"value\" is not an array".into()),
        None => return Err("the page has no \"value\"".into()),
    };
    for (index, item) in items.iter().enumerate() {
        item_changes(kind, item, changes).map_err(|e| format!("item {index} of \"value\": {e}"))?;
    }
    let link = |key: &str| match page.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("{key} is not a string")),
    };
    match (link("@odata.nextLink")?, link("@odata.deltaLink")?) {
        (Some(next), _) => Ok(Next::Page(next)),
        (None, Some(delta)) => Ok(Next::Done(delta)),
        (None, None) => Err("the page has neither @odata.nextLink nor @odata.deltaLink".into()),
    }
}

/// Converts one delta item: `@removed` → [`Change::Removed`]; otherwise [`Change::Upsert`] with the plain
/// properties (every key containing `@`, i.e. annotations and `*@delta`, left out; `id` kept), followed by
/// [`Change::Members`] for `members@delta` and [`Change::Manager`] for `manager@delta`.
pub fn item_changes(kind: GraphKind, item: &Value, changes: &mut Vec<Change>) -> Result<(), String> {
    let object = item.as_object().ok_or("not a JSON object")?;
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("no \"id\"")?
        .to_string();
    if let Some(removed) = object.get("@removed") {
        // Graph documents "changed" (soft delete, restorable) and "deleted" (permanent); anything else is treated
        // as the restorable kind, which removes the object just the same.
        let reason = removed.get("reason").and_then(Value::as_str).unwrap_or("changed");
        changes.push(Change::Removed {
            kind,
            id,
            permanent: reason.eq_ignore_ascii_case("deleted"),
        });
        return Ok(());
    }
    let props: Updates = object
        .iter()
        .filter(|(key, _)| !key.contains('@'))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    changes.push(Change::Upsert {
        kind,
        id: id.clone(),
        props,
    });
    if kind == GraphKind::Group {
        if let Some(members) = object.get("members@delta") {
            let (added, removed) = members_delta(members).map_err(|e| format!("members@delta: {e}"))?;
            if !added.is_empty() || !removed.is_empty() {
                changes.push(Change::Members {
                    group: id.clone(),
                    added,
                    removed,
                });
            }
        }
    }
    if kind == GraphKind::User {
        if let Some(manager) = object.get("manager@delta") {
            let manager = manager_delta(manager).map_err(|e| format!("manager@delta: {e}"))?;
            changes.push(Change::Manager { user: id, manager });
        }
    }
    Ok(())
}

/// One `{ "@odata.type", "id", "@removed"? }` reference.
fn reference(entry: &Value) -> Result<(MemberRef, bool), String> {
    let id = entry
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("an entry has no \"id\"")?;
    let odata_type = entry.get("@odata.type").and_then(Value::as_str).unwrap_or("");
    let odata_type = odata_type
        .strip_prefix("#microsoft.graph.")
        .unwrap_or(odata_type.trim_start_matches('#'));
    Ok((
        MemberRef {
            id: id.to_string(),
            odata_type: odata_type.to_string(),
        },
        entry.get("@removed").is_some(),
    ))
}

fn members_delta(value: &Value) -> Result<(Vec<MemberRef>, Vec<String>), String> {
    let entries = match value {
        Value::Array(entries) => entries.as_slice(),
        Value::Null => &[],
        _ => return Err("not an array".into()),
    };
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for entry in entries {
        let (member, gone) = reference(entry)?;
        if gone {
            removed.push(member.id);
        } else {
            added.push(member);
        }
    }
    Ok((added, removed))
}

/// `manager@delta` arrives as an array of references (Graph's documented form) or a single one; the manager is the
/// last reference not marked `@removed`, `None` if there is none.
fn manager_delta(value: &Value) -> Result<Option<String>, String> {
    let entries = match value {
        Value::Array(entries) => entries.as_slice(),
        Value::Object(_) => std::slice::from_ref(value),
        Value::Null => &[],
        _ => return Err("neither an array nor an object".into()),
    };
    let mut manager = None;
    for entry in entries {
        let (reference, gone) = reference(entry)?;
        if !gone {
            manager = Some(reference.id);
        }
    }
    Ok(manager)
}

/// Whether `link` is on the same scheme, host and port as `base`.
pub(crate) fn same_origin(link: &str, base: &str) -> bool {
    match (Url::parse(link), Url::parse(base)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(kind: GraphKind, page: Value) -> (Vec<Change>, Result<Next, String>) {
        let mut out = Vec::new();
        let next = parse_page(kind, &page, &mut out);
        (out, next)
    }

    /// The response sample of Microsoft's "user: delta" documentation, with a removal added as in the
    /// "Example 1" follow-up page.
    #[test]
    fn user_delta_page_from_the_docs() {
        let page = json!({
          "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(displayName,givenName,surname)",
          "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjsXoYQp_dpA3cNJWc",
          "value": [
            {
              "displayName": "Adele Vance",
              "givenName": "Adele",
              "jobTitle": null,
              "surname": "Vance",
              "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
              "manager@delta": [{ "@odata.type": "#microsoft.graph.user", "id": "5bde3e51-d13b-4db1-9948-fe4b109d11a7" }]
            },
            { "id": "5bde3e51-d13b-4db1-9948-fe4b109d11a7", "@removed": { "reason": "changed" } },
            { "id": "0b8b9b8a-1f37-4cd8-9f2b-2f2ab5f3b7c1", "@removed": { "reason": "deleted" } }
          ]
        });
        let (out, next) = changes(GraphKind::User, page);
        assert_eq!(
            next,
            Ok(Next::Page("https://graph.microsoft.com/v1.0/users/delta?$skiptoken=pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjsXoYQp_dpA3cNJWc".into()))
        );
        let expected_props = json!({
            "displayName": "Adele Vance", "givenName": "Adele", "jobTitle": null, "surname": "Vance",
            "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd"
        });
        assert_eq!(
            out,
            vec![
                Change::Upsert {
                    kind: GraphKind::User,
                    id: "87d349ed-44d7-43e1-9a83-5f2406dee5bd".into(),
                    props: expected_props.as_object().unwrap().clone().into(),
                },
                Change::Manager {
                    user: "87d349ed-44d7-43e1-9a83-5f2406dee5bd".into(),
                    manager: Some("5bde3e51-d13b-4db1-9948-fe4b109d11a7".into()),
                },
                Change::Removed {
                    kind: GraphKind::User,
                    id: "5bde3e51-d13b-4db1-9948-fe4b109d11a7".into(),
                    permanent: false
                },
                Change::Removed {
                    kind: GraphKind::User,
                    id: "0b8b9b8a-1f37-4cd8-9f2b-2f2ab5f3b7c1".into(),
                    permanent: true
                },
            ]
        );
    }

    /// The response sample of Microsoft's "group: delta" documentation (members@delta with a removed member).
    #[test]
    fn group_delta_page_from_the_docs() {
        let page = json!({
          "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
          "@odata.deltaLink": "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=mS5DuRZGjVL-abreviated",
          "value": [
            {
              "createdDateTime": "2021-03-12T10:36:14Z",
              "description": "This is the default group for everyone in the network",
              "displayName": "All Company",
              "groupTypes": ["Unified"],
              "id": "aa5ef2cc-a7c0-4d9b-9e9e-4b2a3a2b1c9d",
              "members@delta": [
                { "@odata.type": "#microsoft.graph.user", "id": "693acd06-2877-4339-8ade-b704261fe7a0" },
                { "@odata.type": "#microsoft.graph.group", "id": "1fe2c4a8-96c4-4e4a-8c8b-21b1d3bbd4a2" },
                { "@odata.type": "#microsoft.graph.servicePrincipal", "id": "c3b0b6a7-0000-4000-8000-000000000001" },
                { "@odata.type": "#microsoft.graph.user", "id": "49320844-be99-4164-8167-87ff5d047ace", "@removed": { "reason": "deleted" } }
              ]
            }
          ]
        });
        let (out, next) = changes(GraphKind::Group, page);
        assert_eq!(
            next,
            Ok(Next::Done(
                "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=mS5DuRZGjVL-abreviated".into()
            ))
        );
        assert_eq!(out.len(), 2);
        match &out[0] {
            Change::Upsert { props, id, .. } => {
                assert_eq!(id, "aa5ef2cc-a7c0-4d9b-9e9e-4b2a3a2b1c9d");
                let json = props.to_json();
                assert!(json.keys().all(|k| !k.contains('@')), "{props:?}");
                assert_eq!(json["displayName"], "All Company");
            }
            other => panic!("expected an upsert, got {other:?}"),
        }
        let member = |id: &str, t: &str| MemberRef {
            id: id.into(),
            odata_type: t.into(),
        };
        assert_eq!(
            out[1],
            Change::Members {
                group: "aa5ef2cc-a7c0-4d9b-9e9e-4b2a3a2b1c9d".into(),
                added: vec![
                    member("693acd06-2877-4339-8ade-b704261fe7a0", "user"),
                    member("1fe2c4a8-96c4-4e4a-8c8b-21b1d3bbd4a2", "group"),
                    member("c3b0b6a7-0000-4000-8000-000000000001", "servicePrincipal"),
                ],
                removed: vec!["49320844-be99-4164-8167-87ff5d047ace".into()],
            }
        );
    }

    #[test]
    fn member_slices_and_manager_removal() {
        // A later slice of a large group: only id and members@delta; still an upsert so a full round keeps it.
        let (out, _) = changes(
            GraphKind::Group,
            json!({"@odata.deltaLink": "https://g/x", "value": [
                {"id": "g1", "members@delta": [{"@odata.type": "#microsoft.graph.orgContact", "id": "c1"}]},
                {"id": "g2", "members@delta": []}
            ]}),
        );
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], Change::Upsert { props, .. } if props.len() == 1));
        assert!(matches!(&out[1], Change::Members { added, .. } if added[0].odata_type == "orgContact"));
        assert!(matches!(&out[2], Change::Upsert { id, .. } if id == "g2"));

        let (out, _) = changes(
            GraphKind::User,
            json!({"@odata.deltaLink": "https://g/x", "value": [
                {"id": "u1", "manager@delta": [{"@odata.type": "#microsoft.graph.user", "id": "m1", "@removed": {"reason": "deleted"}}]},
                {"id": "u2", "manager@delta": {"id": "m2"}}
            ]}),
        );
        assert_eq!(
            out[1],
            Change::Manager {
                user: "u1".into(),
                manager: None
            }
        );
        assert_eq!(
            out[3],
            Change::Manager {
                user: "u2".into(),
                manager: Some("m2".into())
            }
        );
    }

    #[test]
    fn empty_pages_are_fine_and_garbage_is_a_clear_error() {
        let (out, next) = changes(
            GraphKind::Device,
            json!({"value": [], "@odata.nextLink": "https://g/next"}),
        );
        assert!(out.is_empty());
        assert_eq!(next, Ok(Next::Page("https://g/next".into())));

        for (page, expected) in [
            (json!([]), "not a JSON object"),
            (json!({"@odata.deltaLink": "https://g/x"}), "no \"value\""),
            (json!({"value": {}, "@odata.deltaLink": "https://g/x"}), "not an array"),
            (json!({"value": []}), "neither"),
            (json!({"value": [], "@odata.nextLink": 5}), "not a string"),
            (
                json!({"value": [{"displayName": "x"}], "@odata.deltaLink": "https://g/x"}),
                "item 0",
            ),
            (
                json!({"value": [{"id": 7}], "@odata.deltaLink": "https://g/x"}),
                "no \"id\"",
            ),
            (
                json!({"value": ["x"], "@odata.deltaLink": "https://g/x"}),
                "not a JSON object",
            ),
            (
                json!({"value": [{"id": "g", "members@delta": "all"}], "@odata.deltaLink": "https://g/x"}),
                "members@delta",
            ),
            (
                json!({"value": [{"id": "g", "members@delta": [{}]}], "@odata.deltaLink": "https://g/x"}),
                "no \"id\"",
            ),
        ] {
            let (_, next) = changes(GraphKind::Group, page.clone());
            let err = next.expect_err(&page.to_string());
            assert!(err.contains(expected), "{page}: {err}");
        }
    }

    #[test]
    fn select_lists_and_urls() {
        let url = initial_url(
            "https://graph.microsoft.us",
            GraphKind::User,
            &["employeeType".to_string()],
        );
        assert!(
            url.starts_with("https://graph.microsoft.us/v1.0/users/delta?$select=id,displayName,"),
            "{url}"
        );
        assert!(url.ends_with(",manager,employeeType"), "{url}");
        assert!(initial_url("https://g", GraphKind::Group, &[]).contains("members"));
        assert!(
            initial_url("https://g", GraphKind::Contact, &[]).starts_with("https://g/v1.0/contacts/delta?$select=id,")
        );
        assert_eq!(select(GraphKind::User, &["mail".to_string()]).len(), USER_SELECT.len());
        let nested = select(
            GraphKind::User,
            &["onPremisesExtensionAttributes.extensionAttribute3".into(), "x/y".into()],
        );
        assert_eq!(nested.len(), USER_SELECT.len() + 1);
        assert_eq!(nested.last().map(String::as_str), Some("x"));
    }

    #[test]
    fn links_are_only_followed_on_the_graph_origin() {
        assert!(same_origin(
            "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x",
            "https://graph.microsoft.com"
        ));
        assert!(same_origin(
            "https://graph.microsoft.com:443/v1.0/x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin(
            "https://evil.example/v1.0/x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin(
            "http://graph.microsoft.com/v1.0/x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin("not a url", "https://graph.microsoft.com"));
    }
}
