//! Delta queries: page walks, `$skiptoken`/`$deltatoken`, `$select`, `@removed`, `members@delta` slices,
//! `manager@delta`, replays and token expiry, the way Graph v1.0 behaves for directory objects.
//!
//! A walk returns every object whose change sequence is newer than the token it started from, in id order. The
//! skip token records where the walk stands (after which id, or inside which group's member list); the delta
//! token records the sequence the walk started at, so anything changed while it ran comes again next round
//! (Graph replays too). Tokens are base64url JSON: opaque to clients, easy to debug.

use std::ops::Bound;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::faults::ExpiryStyle;
use super::tenant::{Deletion, Object, Tenant};
use crate::model::GraphKind;

/// Paging behaviour, fixed at start but adjustable through the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    /// Objects per page (Graph: about 200 users).
    pub page_size: usize,
    /// Members per `members@delta` slice; a group with more members repeats on following pages.
    pub member_slice: usize,
    /// Every n-th page starts by repeating the previous page's last object (0: never).
    pub replay_every: u32,
    /// An initial walk starts with an empty page, as Graph often does.
    pub empty_first_page: bool,
    /// Delta tokens older than this are expired (Graph: 7 days).
    #[serde(with = "secs")]
    pub token_lifetime: Duration,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page_size: 200,
            member_slice: 150,
            replay_every: 3,
            empty_first_page: true,
            token_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Which tokens are still honoured.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenPolicy {
    /// Tokens from an older epoch are expired (bumped by the `expireDeltaTokens` fault).
    pub epoch: u64,
    pub style: ExpiryStyle,
}

/// Where a walk stands. Serialised into `$skiptoken` (and, reduced, `$deltatoken`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    k: GraphKind,
    /// Objects changed after this sequence are returned (0: initial sync).
    s: u64,
    /// Tenant sequence when the walk started; becomes the next delta token's `s`.
    u: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sel: Option<Vec<String>>,
    /// Token epoch at issue.
    e: u64,
    /// Unix seconds at issue.
    t: u64,
    /// Continue after this object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    /// Continue inside this group's member list, after this member id. Ids, not offsets, so members added or
    /// removed while the walk runs cannot make it skip an unchanged member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<(String, String)>,
    /// Page number within the walk.
    p: u32,
    /// Repeat this object first (a replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    /// Delta token (true) or skip token (false).
    d: bool,
}

fn encode(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode(token: &str) -> Option<Cursor> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// Where the next page resumes: `(after object id, (group id, after member id))`.
type Resume = (Option<String>, Option<(String, String)>);

/// What the client asked for.
#[derive(Debug, Clone)]
pub enum DeltaRequest {
    /// A fresh delta query; `latest` is `$deltaToken=latest` (skip to now without data).
    Start {
        select: Option<Vec<String>>,
        latest: bool,
    },
    Skip(String),
    Delta(String),
}

/// The answer to one delta request.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaResponse {
    Page(Value),
    /// The token is too old or was invalidated; `location` restarts the query.
    Expired {
        style: ExpiryStyle,
        location: String,
    },
    BadToken(String),
}

/// Properties Graph returns for users without `$select`.
const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Parses a `$select` value: comma separated, blanks ignored.
pub fn parse_select(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn selects(sel: &Option<Vec<String>>, name: &str, default: bool) -> bool {
    match sel {
        None => default,
        Some(list) => list.iter().any(|s| s.eq_ignore_ascii_case(name)),
    }
}

/// Everything about one request besides the tenant and the token.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub paging: &'a Paging,
    pub policy: TokenPolicy,
    /// `Prefer: return=minimal`: later rounds send only changed properties.
    pub minimal: bool,
    /// URL prefix for links (`http://host:port`).
    pub base: &'a str,
    /// Unix seconds.
    pub now: u64,
}

/// One page of a delta walk.
pub fn serve(tenant: &Tenant, ctx: &Context<'_>, kind: GraphKind, req: DeltaRequest) -> DeltaResponse {
    let Context {
        paging,
        policy,
        minimal,
        base,
        now,
    } = *ctx;
    let coll = kind.collection();
    let mut cur = match req {
        DeltaRequest::Start { select, latest } => {
            let c = Cursor {
                k: kind,
                s: 0,
                u: tenant.seq,
                sel: select,
                e: policy.epoch,
                t: now,
                a: None,
                m: None,
                p: 0,
                r: None,
                d: false,
            };
            if latest {
                let link = delta_link(&c, now);
                return DeltaResponse::Page(page(base, kind, &c.sel, Vec::new(), None, Some(link)));
            }
            c
        }
        DeltaRequest::Skip(tok) | DeltaRequest::Delta(tok) => {
            let Some(c) = decode(&tok).filter(|c| c.k == kind) else {
                return DeltaResponse::BadToken(format!("The {coll} delta token is not valid."));
            };
            let too_old = now.saturating_sub(c.t) > paging.token_lifetime.as_secs();
            if c.e < policy.epoch || too_old {
                let mut location = format!("{base}/v1.0/{coll}/delta");
                if let Some(sel) = &c.sel {
                    location.push_str("?$select=");
                    location.push_str(&sel.join(","));
                }
                return DeltaResponse::Expired {
                    style: policy.style,
                    location,
                };
            }
            if c.d {
                // A delta link starts a new walk from the sequence it recorded.
                Cursor {
                    s: c.u,
                    u: tenant.seq,
                    t: now,
                    a: None,
                    m: None,
                    p: 0,
                    r: None,
                    d: false,
                    ..c
                }
            } else {
                c
            }
        }
    };

    if cur.s == 0 && cur.p == 0 && paging.empty_first_page {
        cur.p = 1;
        let next = skip_link(&cur);
        return DeltaResponse::Page(page(base, kind, &cur.sel, Vec::new(), Some(next), None));
    }

    let objects = tenant.objects(kind);
    let mut value = Vec::new();
    if let Some(rid) = &cur.r {
        if let Some(o) = objects.get(rid).filter(|o| included(o, cur.s)) {
            value.push(render(kind, o, &cur, minimal, None, paging.member_slice).0);
        }
    }
    let mid = cur.m.clone();
    let range = match (&mid, &cur.a) {
        (Some((id, _)), _) => objects.range::<str, _>((Bound::Included(id.as_str()), Bound::Unbounded)),
        (None, Some(a)) => objects.range::<str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
        (None, None) => objects.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
    };
    let mut count = 0;
    // Where the next page resumes: after an id, or inside a group's member list.
    let mut next: Option<Resume> = None;
    for (id, o) in range {
        if !included(o, cur.s) {
            continue;
        }
        let after_member = match &mid {
            Some((mid_id, last)) if mid_id == id => Some(last.as_str()),
            _ => None,
        };
        let (item, more) = render(kind, o, &cur, minimal, Some(after_member), paging.member_slice);
        value.push(item);
        count += 1;
        if let Some(last) = more {
            next = Some((None, Some((id.clone(), last))));
            break;
        }
        if count >= paging.page_size.max(1) {
            next = Some((Some(id.clone()), None));
            break;
        }
    }
    match next {
        Some((a, m)) => {
            let last = value
                .last()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            cur.p += 1;
            cur.r = if paging.replay_every > 0 && cur.p % paging.replay_every == 0 {
                last
            } else {
                None
            };
            cur.a = a;
            cur.m = m;
            let link = skip_link(&cur);
            DeltaResponse::Page(page(base, kind, &cur.sel, value, Some(link), None))
        }
        None => DeltaResponse::Page(page(base, kind, &cur.sel, value, None, Some(delta_link(&cur, now)))),
    }
}

fn skip_link(c: &Cursor) -> String {
    format!("/v1.0/{}/delta?$skiptoken={}", c.k.collection(), encode(c))
}

fn delta_link(c: &Cursor, now: u64) -> String {
    let d = Cursor {
        k: c.k,
        s: c.u,
        u: c.u,
        sel: c.sel.clone(),
        e: c.e,
        t: now,
        a: None,
        m: None,
        p: 0,
        r: None,
        d: true,
    };
    format!("/v1.0/{}/delta?$deltatoken={}", c.k.collection(), encode(&d))
}

fn page(
    base: &str,
    kind: GraphKind,
    sel: &Option<Vec<String>>,
    value: Vec<Value>,
    next: Option<String>,
    delta: Option<String>,
) -> Value {
    let coll = kind.collection();
    let context = match sel {
        Some(s) => format!("{base}/v1.0/$metadata#{coll}({})", s.join(",")),
        None => format!("{base}/v1.0/$metadata#{coll}"),
    };
    let mut m = Map::new();
    m.insert("@odata.context".into(), Value::String(context));
    if let Some(n) = next {
        m.insert("@odata.nextLink".into(), Value::String(format!("{base}{n}")));
    }
    if let Some(d) = delta {
        m.insert("@odata.deltaLink".into(), Value::String(format!("{base}{d}")));
    }
    m.insert("value".into(), Value::Array(value));
    Value::Object(m)
}

/// Whether a walk from sequence `since` reports this object. An initial walk reports live and soft-deleted
/// objects (the latter as `@removed`, as Graph does); later walks report whatever changed.
fn included(o: &Object, since: u64) -> bool {
    if since == 0 {
        o.deleted != Some(Deletion::Permanent)
    } else {
        o.seq > since
    }
}

/// Renders one object. `members_from` says where its member slice starts: `None` for no members (replays),
/// `Some(None)` at the first member, `Some(Some(id))` after that member. Returns the JSON and, when more member
/// slices follow, the last member id in this one.
fn render(
    kind: GraphKind,
    o: &Object,
    cur: &Cursor,
    minimal: bool,
    members_from: Option<Option<&str>>,
    slice: usize,
) -> (Value, Option<String>) {
    let id = o.props.get("id").cloned().unwrap_or(Value::Null);
    let mut m = Map::new();
    if let Some(d) = o.deleted {
        m.insert("id".into(), id);
        let reason = if d == Deletion::Permanent { "deleted" } else { "changed" };
        m.insert("@removed".into(), json!({ "reason": reason }));
        return (Value::Object(m), None);
    }
    let fresh = |key: &str| !minimal || cur.s == 0 || o.prop_changed(key) > cur.s;
    match &cur.sel {
        Some(sel) => {
            for s in sel {
                if s.eq_ignore_ascii_case("members") || s.eq_ignore_ascii_case("manager") {
                    continue;
                }
                let found = o.props.iter().find(|(k, _)| k.eq_ignore_ascii_case(s));
                match found {
                    Some((k, v)) if fresh(k) => {
                        m.insert(k.clone(), v.clone());
                    }
                    Some(_) => {}
                    None if !minimal || cur.s == 0 => {
                        m.insert(s.clone(), Value::Null);
                    }
                    None => {}
                }
            }
        }
        None if kind == GraphKind::User => {
            for s in USER_DEFAULT {
                match o.props.get(*s) {
                    Some(v) if fresh(s) => {
                        m.insert((*s).to_string(), v.clone());
                    }
                    Some(_) => {}
                    None if !minimal || cur.s == 0 => {
                        m.insert((*s).to_string(), Value::Null);
                    }
                    None => {}
                }
            }
        }
        None => {
            for (k, v) in &o.props {
                if fresh(k) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    m.insert("id".into(), id);

    if kind == GraphKind::User && selects(&cur.sel, "manager", false) {
        let entry = if cur.s == 0 {
            o.manager
                .as_ref()
                .map(|mgr| json!({"@odata.type": "#microsoft.graph.user", "id": mgr}))
        } else if o.manager_seq > cur.s {
            match (&o.manager, &o.manager_prev) {
                (Some(mgr), _) => Some(json!({"@odata.type": "#microsoft.graph.user", "id": mgr})),
                (None, Some(prev)) => Some(json!({
                    "@odata.type": "#microsoft.graph.user", "id": prev, "@removed": {"reason": "deleted"}
                })),
                (None, None) => None,
            }
        } else {
            None
        };
        if let Some(e) = entry {
            m.insert("manager@delta".into(), Value::Array(vec![e]));
        }
    }

    let mut more = None;
    if let (GraphKind::Group, Some(from)) = (kind, members_from) {
        if selects(&cur.sel, "members", true) {
            let range = match from {
                Some(last) => o.members.range::<str, _>((Bound::Excluded(last), Bound::Unbounded)),
                None => o.members.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
            };
            let changed: Vec<Value> = range
                .filter(|(_, ms)| if cur.s == 0 { ms.present } else { ms.seq > cur.s })
                .take(slice.max(1) + 1)
                .map(|(mid, ms)| {
                    let mut e = Map::new();
                    e.insert(
                        "@odata.type".into(),
                        Value::String(format!("#microsoft.graph.{}", ms.odata_type)),
                    );
                    e.insert("id".into(), Value::String(mid.clone()));
                    if !ms.present {
                        e.insert("@removed".into(), json!({"reason": "deleted"}));
                    }
                    Value::Object(e)
                })
                .collect();
            let mut changed = changed;
            if changed.len() > slice.max(1) {
                changed.truncate(slice.max(1));
                more = changed
                    .last()
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            if !changed.is_empty() {
                m.insert("members@delta".into(), Value::Array(changed));
            }
        }
    }
    (Value::Object(m), more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemberRef;
    use std::collections::{BTreeMap, BTreeSet};

    const BASE: &str = "http://sim";

    fn ctx<'a>(paging: &'a Paging, pol: &TokenPolicy, minimal: bool, now: u64) -> Context<'a> {
        Context {
            paging,
            policy: *pol,
            minimal,
            base: BASE,
            now,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// Walks a delta query to its delta link; returns all items and the delta token.
    fn walk(t: &Tenant, p: &Paging, pol: &TokenPolicy, kind: GraphKind, mut req: DeltaRequest) -> (Vec<Value>, String) {
        let mut items = Vec::new();
        for _ in 0..10_000 {
            let DeltaResponse::Page(page) = serve(t, &ctx(p, pol, false, 1000), kind, req.clone()) else {
                panic!("walk failed");
            };
            if let Some(v) = page["value"].as_array() {
                items.extend(v.iter().cloned());
            }
            if let Some(n) = page["@odata.nextLink"].as_str() {
                let tok = n.split("$skiptoken=").nth(1).unwrap_or_default();
                req = DeltaRequest::Skip(tok.to_string());
            } else {
                let d = page["@odata.deltaLink"].as_str().unwrap_or_default();
                return (items, d.split("$deltatoken=").nth(1).unwrap_or_default().to_string());
            }
        }
        panic!("walk did not end");
    }

    fn tenant(users: usize) -> (Tenant, Vec<String>) {
        let mut t = Tenant::default();
        let ids = (0..users)
            .map(|i| {
                t.add(
                    GraphKind::User,
                    obj(json!({"displayName": format!("User {i}"), "jobTitle": "x"})),
                )
                .unwrap_or_default()
            })
            .collect();
        (t, ids)
    }

    fn start(select: &str) -> DeltaRequest {
        DeltaRequest::Start {
            select: Some(parse_select(select)),
            latest: false,
        }
    }

    #[test]
    fn initial_walk_returns_everything_once_modulo_replays() {
        let (t, ids) = tenant(45);
        let paging = Paging {
            page_size: 10,
            replay_every: 2,
            ..Paging::default()
        };
        let (items, _) = walk(
            &t,
            &paging,
            &TokenPolicy::default(),
            GraphKind::User,
            start("displayName"),
        );
        let mut seen = BTreeMap::new();
        for i in &items {
            *seen
                .entry(i["id"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
            assert!(i.get("displayName").is_some());
            assert!(i.get("jobTitle").is_none(), "$select not honoured: {i}");
        }
        assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids.into_iter().collect());
        assert!(seen.values().any(|n| *n > 1), "expected a replay");
        assert!(seen.values().all(|n| *n <= 2));
    }

    #[test]
    fn later_rounds_return_only_changes() {
        let (mut t, ids) = tenant(30);
        let paging = Paging {
            page_size: 7,
            ..Paging::default()
        };
        let pol = TokenPolicy::default();
        let (_, token) = walk(&t, &paging, &pol, GraphKind::User, start("displayName,jobTitle"));
        let (items, token) = walk(&t, &paging, &pol, GraphKind::User, DeltaRequest::Delta(token.clone()));
        assert!(items.is_empty());

        assert_eq!(
            t.update(GraphKind::User, &ids[3], obj(json!({"jobTitle": "boss"}))),
            Ok(true)
        );
        assert_eq!(t.delete(GraphKind::User, &ids[4], false), Ok(()));
        assert_eq!(t.delete(GraphKind::User, &ids[5], true), Ok(()));
        let (items, token) = walk(&t, &paging, &pol, GraphKind::User, DeltaRequest::Delta(token));
        assert_eq!(items.len(), 3, "{items:?}");
        let by_id: BTreeMap<_, _> = items
            .iter()
            .map(|i| (i["id"].as_str().unwrap_or_default(), i))
            .collect();
        assert_eq!(by_id[ids[3].as_str()]["jobTitle"], "boss");
        assert_eq!(by_id[ids[3].as_str()]["displayName"], "User 3");
        assert_eq!(by_id[ids[4].as_str()]["@removed"]["reason"], "changed");
        assert_eq!(by_id[ids[5].as_str()]["@removed"]["reason"], "deleted");

        // return=minimal: only the changed property (and id).
        assert_eq!(
            t.update(GraphKind::User, &ids[6], obj(json!({"jobTitle": "cto"}))),
            Ok(true)
        );
        let DeltaResponse::Page(p) = serve(
            &t,
            &ctx(&paging, &pol, true, 1000),
            GraphKind::User,
            DeltaRequest::Delta(token),
        ) else {
            panic!("no page");
        };
        assert_eq!(p["value"][0], json!({"id": ids[6], "jobTitle": "cto"}));
    }

    #[test]
    fn soft_deleted_objects_appear_as_removed_in_initial_sync() {
        let (mut t, ids) = tenant(3);
        assert_eq!(t.delete(GraphKind::User, &ids[0], false), Ok(()));
        assert_eq!(t.delete(GraphKind::User, &ids[1], true), Ok(()));
        let (items, _) = walk(
            &t,
            &Paging::default(),
            &TokenPolicy::default(),
            GraphKind::User,
            start("id"),
        );
        assert_eq!(items.len(), 2);
        assert!(items
            .iter()
            .any(|i| i["id"] == ids[0] && i["@removed"]["reason"] == "changed"));
    }

    #[test]
    fn large_groups_arrive_in_member_slices() {
        let (mut t, ids) = tenant(25);
        let g = t
            .add(GraphKind::Group, obj(json!({"displayName": "All"})))
            .unwrap_or_default();
        for id in &ids {
            let m = MemberRef {
                id: id.clone(),
                odata_type: String::new(),
            };
            assert_eq!(t.add_member(&g, m), Ok(true));
        }
        let sp = MemberRef {
            id: "sp".into(),
            odata_type: "servicePrincipal".into(),
        };
        assert_eq!(t.add_member(&g, sp), Ok(true));
        let paging = Paging {
            member_slice: 10,
            replay_every: 0,
            ..Paging::default()
        };
        let pol = TokenPolicy::default();
        let (items, token) = walk(&t, &paging, &pol, GraphKind::Group, start("displayName,members"));
        assert_eq!(items.len(), 3, "26 members in slices of 10");
        let mut members = BTreeSet::new();
        for i in &items {
            assert_eq!(i["id"], g.as_str());
            for m in i["members@delta"].as_array().into_iter().flatten() {
                assert!(members.insert(m["id"].as_str().unwrap_or_default().to_string()));
            }
        }
        assert_eq!(members.len(), 26);
        assert!(items.iter().any(|i| i["members@delta"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["@odata.type"] == "#microsoft.graph.servicePrincipal")));

        assert_eq!(t.remove_member(&g, &ids[2]), Ok(true));
        let (items, _) = walk(&t, &paging, &pol, GraphKind::Group, DeltaRequest::Delta(token));
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]["members@delta"],
            json!([{"@odata.type": "#microsoft.graph.user", "id": ids[2], "@removed": {"reason": "deleted"}}])
        );
    }

    #[test]
    fn manager_changes_come_as_manager_delta() {
        let (mut t, ids) = tenant(3);
        assert_eq!(t.set_manager(&ids[1], Some(&ids[0])), Ok(true));
        let (p, pol) = (Paging::default(), TokenPolicy::default());
        let (items, token) = walk(&t, &p, &pol, GraphKind::User, start("displayName,manager"));
        let u1 = items.iter().find(|i| i["id"] == ids[1]).cloned().unwrap_or_default();
        assert_eq!(u1["manager@delta"][0]["id"], ids[0].as_str());
        assert_eq!(t.set_manager(&ids[1], None), Ok(true));
        let (items, _) = walk(&t, &p, &pol, GraphKind::User, DeltaRequest::Delta(token));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["manager@delta"][0]["@removed"]["reason"], "deleted");
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused() {
        let (t, _) = tenant(3);
        let p = Paging::default();
        let (_, token) = walk(&t, &p, &TokenPolicy::default(), GraphKind::User, start("id"));
        let newer = TokenPolicy {
            epoch: 1,
            style: ExpiryStyle::Gone,
        };
        let r = serve(
            &t,
            &ctx(&p, &newer, false, 1000),
            GraphKind::User,
            DeltaRequest::Delta(token.clone()),
        );
        assert!(
            matches!(r, DeltaResponse::Expired { style: ExpiryStyle::Gone, ref location }
            if location == "http://sim/v1.0/users/delta?$select=id")
        );
        let late = 1000 + p.token_lifetime.as_secs() + 1;
        let pol = TokenPolicy::default();
        let r = serve(
            &t,
            &ctx(&p, &pol, false, late),
            GraphKind::User,
            DeltaRequest::Delta(token.clone()),
        );
        assert!(matches!(r, DeltaResponse::Expired { .. }));
        let r = serve(
            &t,
            &ctx(&p, &pol, false, 1000),
            GraphKind::Group,
            DeltaRequest::Delta(token),
        );
        assert!(matches!(r, DeltaResponse::BadToken(_)));
        let r = serve(
            &t,
            &ctx(&p, &pol, false, 1000),
            GraphKind::User,
            DeltaRequest::Skip("%%".into()),
        );
        assert!(matches!(r, DeltaResponse::BadToken(_)));
    }

    /// What a delta client keeps: objects' selected properties, group members, managers.
    #[derive(Debug, Default, PartialEq)]
    struct Model {
        objects: BTreeMap<String, Map<String, Value>>,
        members: BTreeMap<String, BTreeSet<String>>,
        managers: BTreeMap<String, String>,
    }

    impl Model {
        fn apply(&mut self, item: &Value) {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            if item.get("@removed").is_some() {
                self.objects.remove(&id);
                self.members.remove(&id);
                self.managers.remove(&id);
                return;
            }
            let entry = self.objects.entry(id.clone()).or_default();
            for (k, v) in item.as_object().into_iter().flatten() {
                if !k.contains('@') {
                    entry.insert(k.clone(), v.clone());
                }
            }
            for m in item["members@delta"].as_array().into_iter().flatten() {
                let mid = m["id"].as_str().unwrap_or_default().to_string();
                let set = self.members.entry(id.clone()).or_default();
                if m.get("@removed").is_some() {
                    set.remove(&mid);
                } else {
                    set.insert(mid);
                }
            }
            for m in item["manager@delta"].as_array().into_iter().flatten() {
                if m.get("@removed").is_some() {
                    self.managers.remove(&id);
                } else {
                    self.managers
                        .insert(id.clone(), m["id"].as_str().unwrap_or_default().to_string());
                }
            }
        }

        fn truth(t: &Tenant, kind: GraphKind, keys: &[&str]) -> Model {
            let mut m = Model::default();
            for (id, o) in t.objects(kind).iter().filter(|(_, o)| o.is_live()) {
                let mut props = Map::new();
                props.insert("id".into(), Value::String(id.clone()));
                for k in keys {
                    props.insert((*k).to_string(), o.props.get(*k).cloned().unwrap_or(Value::Null));
                }
                m.objects.insert(id.clone(), props);
                let members: BTreeSet<String> = o.live_members().map(|(mid, _)| mid.clone()).collect();
                if kind == GraphKind::Group {
                    m.members.insert(id.clone(), members);
                }
                if let Some(mgr) = &o.manager {
                    m.managers.insert(id.clone(), mgr.clone());
                }
            }
            m
        }

        /// Groups without members are the same as groups never given a member list.
        fn normalised(mut self) -> Model {
            self.members.retain(|_, v| !v.is_empty());
            self
        }
    }

    fn random_op(t: &mut Tenant, rng: &mut rand::rngs::SmallRng, n: &mut u32) {
        use rand::seq::SliceRandom;
        use rand::Rng;
        *n += 1;
        let users = t.live_ids(GraphKind::User);
        let groups = t.live_ids(GraphKind::Group);
        let soft: Vec<String> = t
            .objects(GraphKind::User)
            .iter()
            .filter(|(_, o)| o.deleted == Some(Deletion::Soft))
            .map(|(id, _)| id.clone())
            .collect();
        let user = users.choose(rng).cloned().unwrap_or_default();
        let other = users.choose(rng).cloned().unwrap_or_default();
        let group = groups.choose(rng).cloned().unwrap_or_default();
        let _ = match rng.gen_range(0..12) {
            0 | 1 => t
                .add(
                    GraphKind::User,
                    obj(json!({"displayName": format!("new {n}"), "jobTitle": "x"})),
                )
                .map(|_| ()),
            2 | 3 => t
                .update(GraphKind::User, &user, obj(json!({"jobTitle": format!("t{n}")})))
                .map(|_| ()),
            4 => t.delete(GraphKind::User, &user, rng.gen_bool(0.5)),
            5 => match soft.choose(rng) {
                Some(id) => t.restore(GraphKind::User, id),
                None => Ok(()),
            },
            6 | 7 => {
                let member = if rng.gen_bool(0.8) {
                    user
                } else {
                    groups.choose(rng).cloned().unwrap_or_default()
                };
                let m = MemberRef {
                    id: member,
                    odata_type: String::new(),
                };
                t.add_member(&group, m).map(|_| ())
            }
            8 => {
                let members: Vec<String> = t
                    .get(GraphKind::Group, &group)
                    .map(|g| g.live_members().map(|(id, _)| id.clone()).collect())
                    .unwrap_or_default();
                match members.choose(rng) {
                    Some(m) => t.remove_member(&group, m).map(|_| ()),
                    None => Ok(()),
                }
            }
            9 => t
                .set_manager(&user, if user == other { None } else { Some(&other) })
                .map(|_| ()),
            10 => t
                .add(GraphKind::Group, obj(json!({"displayName": format!("g{n}")})))
                .map(|_| ()),
            _ => t.delete(GraphKind::Group, &group, false),
        };
    }

    /// One round; with `churn`, the tenant changes between pages, as it does while a real client pages.
    fn round(
        t: &mut Tenant,
        p: &Paging,
        kind: GraphKind,
        model: &mut Model,
        req: DeltaRequest,
        churn: Option<(&mut rand::rngs::SmallRng, &mut u32)>,
        minimal: bool,
    ) -> String {
        let mut req = req;
        let mut churn = churn;
        let pol = TokenPolicy::default();
        for _ in 0..100_000 {
            let DeltaResponse::Page(page) = serve(t, &ctx(p, &pol, minimal, 1000), kind, req.clone()) else {
                panic!("round failed");
            };
            for item in page["value"].as_array().into_iter().flatten() {
                model.apply(item);
            }
            if let Some(next) = page["@odata.nextLink"].as_str() {
                req = DeltaRequest::Skip(next.split("$skiptoken=").nth(1).unwrap_or_default().to_string());
                if let Some((rng, n)) = churn.as_mut() {
                    use rand::Rng;
                    for _ in 0..rng.gen_range(0..4) {
                        random_op(t, rng, n);
                    }
                }
            } else {
                let d = page["@odata.deltaLink"].as_str().unwrap_or_default();
                return d.split("$deltatoken=").nth(1).unwrap_or_default().to_string();
            }
        }
        panic!("round did not end");
    }

    #[test]
    fn a_client_converges_despite_changes_during_walks() {
        use rand::SeedableRng;
        for seed in 0..30u64 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut n = 0;
            let mut t = Tenant::default();
            for _ in 0..150 {
                random_op(&mut t, &mut rng, &mut n);
            }
            assert!(
                t.live_ids(GraphKind::User).len() > 3,
                "seed {seed}: tenant too small to test much"
            );
            let paging = Paging {
                page_size: 1 + (seed as usize % 5),
                member_slice: 1 + (seed as usize % 3),
                replay_every: (seed % 3) as u32,
                ..Paging::default()
            };
            for (kind, select, keys) in [
                (
                    GraphKind::User,
                    "displayName,jobTitle,manager",
                    &["displayName", "jobTitle"][..],
                ),
                (GraphKind::Group, "displayName,members", &["displayName"][..]),
            ] {
                let mut model = Model::default();
                let start = DeltaRequest::Start {
                    select: Some(parse_select(select)),
                    latest: false,
                };
                // Odd seeds ask for `Prefer: return=minimal`: only changed properties in later rounds.
                let minimal = seed % 2 == 1;
                let mut token = round(
                    &mut t,
                    &paging,
                    kind,
                    &mut model,
                    start,
                    Some((&mut rng, &mut n)),
                    minimal,
                );
                for r in 0..6 {
                    for _ in 0..rand::Rng::gen_range(&mut rng, 0..8) {
                        random_op(&mut t, &mut rng, &mut n);
                    }
                    let churn = if r % 2 == 0 { Some((&mut rng, &mut n)) } else { None };
                    token = round(
                        &mut t,
                        &paging,
                        kind,
                        &mut model,
                        DeltaRequest::Delta(token),
                        churn,
                        minimal,
                    );
                }
                // A quiet round must bring the client exactly to the truth.
                token = round(
                    &mut t,
                    &paging,
                    kind,
                    &mut model,
                    DeltaRequest::Delta(token),
                    None,
                    minimal,
                );
                let truth = Model::truth(&t, kind, keys).normalised();
                let model = model.normalised();
                for (id, o) in &truth.objects {
                    assert_eq!(model.objects.get(id), Some(o), "seed {seed}, {kind:?}: object {id}");
                }
                for id in model.objects.keys() {
                    assert!(
                        truth.objects.contains_key(id),
                        "seed {seed}, {kind:?}: {id} should be gone"
                    );
                }
                assert_eq!(model.members, truth.members, "seed {seed}, {kind:?}: members");
                assert_eq!(model.managers, truth.managers, "seed {seed}, {kind:?}: managers");
                let _ = token;
            }
        }
    }
}
