//! REPORTs on a book: `addressbook-multiget` and `addressbook-query` (RFC 6352 §8.6/§8.7) and `sync-collection`
//! (RFC 6578, sync-level 1).
//!
//! Sync tokens are `urn:entradir:sync:<instance>.<n>` with `instance` random per process (a token from another
//! replica, or from before a restart, is refused even when its number would fit) and `n` = epoch + the book's
//! change version
//! ([`BookView::changed`](crate::carddav::cache::BookView::changed)): the directory version the client's copy of
//! the book is current at, offset by the service's epoch
//! ([`epoch_at_start`](crate::carddav::service::epoch_at_start)) so that a token from before a restart or a
//! content-changing reload is refused instead of misread. `n` changes only when the book does (getctag is `n`
//! hashed with the instance id); a token at or past the book's change version gets an empty answer without consulting the
//! history. A page cut short by `DAV:limit` ends with a 507 for the book and a continuation token
//! `urn:entradir:sync:<instance>.<base>:<usn>:<id>` (`<base>` offset like `<n>`): the client's state is every member up to
//! position (`usn`, `id`) in change order, and, when the position is written `+<usn>` (an incremental sync's
//! page), the book as of `<base>` too. The next page reports members after that position (from the current
//! snapshot, so changes in between are not lost) and again every removal since `<base>`;
//! re-reporting a removal the client already applied is harmless, skipping one would not be. A token the
//! snapshot history cannot answer (too old, from the future, malformed) gets 403 `DAV:valid-sync-token`, and the
//! client starts over.

use crate::carddav::config::VCardVersion;
use crate::carddav::filter::{Filter, FilterError};
use crate::carddav::partial::Selection;
use crate::carddav::propfind::card_value;
use crate::carddav::service::{forbidden, multistatus, percent_decode, text, Body, Ctx, Resource};
use crate::carddav::vcard;
use crate::carddav::xml::{esc, parse, Element, Multistatus, PropName, CARDDAV, DAV};
use crate::directory::{Entry, EntryKind, Query};
use hyper::{Response, StatusCode};
use std::borrow::Cow;
use std::sync::Arc;

pub const TOKEN_PREFIX: &str = "urn:entradir:sync:";

/// What a REPORT asks to see of each card.
struct Wanted {
    props: Vec<PropName>,
    /// Some when address-data was requested, with the version to render.
    data: Option<VCardVersion>,
    /// Some when address-data names properties: the cards are cut down to them.
    select: Option<Selection>,
}

fn wanted(ctx: &Ctx<'_>, root: &Element) -> Result<Wanted, Box<Response<Body>>> {
    let Some(prop) = root.child(DAV, "prop") else {
        return Ok(Wanted {
            props: vec![PropName::new(DAV, "getetag")],
            data: None,
            select: None,
        });
    };
    let mut w = Wanted {
        props: Vec::new(),
        data: None,
        select: None,
    };
    for c in &prop.children {
        if c.is(CARDDAV, "address-data") {
            let ct = c.attr("content-type").unwrap_or("text/vcard");
            let version = match c.attr("version") {
                None => Some(ctx.cfg.vcard_version),
                Some(v) => VCardVersion::parse(v),
            };
            match version {
                Some(v) if ct.eq_ignore_ascii_case("text/vcard") => {
                    w.data = Some(v);
                    w.select = Selection::from_address_data(c);
                }
                _ => return Err(Box::new(forbidden("<C:supported-address-data/>"))),
            }
        }
        w.props.push(c.prop_name());
    }
    Ok(w)
}

fn card_response(ms: &mut Multistatus, ctx: &Ctx<'_>, href: &str, e: &Arc<Entry>, w: &Wanted) {
    let card = w.data.map(|_| ctx.card(e));
    let mut found: Vec<(&PropName, Cow<'_, str>)> = Vec::with_capacity(w.props.len());
    let mut missing: Vec<&PropName> = Vec::new();
    for p in &w.props {
        if p.is(CARDDAV, "address-data") {
            if let (Some(card), Some(v)) = (&card, w.data) {
                let text = match &w.select {
                    // The precomputed, already escaped whole card.
                    None => Cow::Borrowed(card.xml_text(v)),
                    Some(sel) => {
                        let full = std::str::from_utf8(card.bytes(v)).unwrap_or_default();
                        Cow::Owned(esc(&sel.apply(full)).into_owned())
                    }
                };
                found.push((p, text));
            }
        } else {
            match card_value(ctx, e, p) {
                Some(v) => found.push((p, Cow::Owned(v))),
                None => missing.push(p),
            }
        }
    }
    ms.props(href, &found, &missing);
}

/// Output buffer estimate: about 300 bytes of XML per response, plus the card when address-data is asked for.
fn estimate(members: &[Arc<Entry>], w: &Wanted) -> usize {
    let per = if w.data.is_some() { 1200 } else { 300 };
    members.len().saturating_mul(per).min(64 << 20)
}

fn nresults(root: &Element) -> Result<Option<usize>, String> {
    let limit = root.child(CARDDAV, "limit").or_else(|| root.child(DAV, "limit"));
    let Some(n) = limit.and_then(|l| l.child(CARDDAV, "nresults").or_else(|| l.child(DAV, "nresults"))) else {
        return Ok(None);
    };
    n.text
        .trim()
        .parse::<usize>()
        .map(|n| Some(n.max(1)))
        .map_err(|_| format!("invalid nresults {:?}", n.text))
}

pub fn handle(ctx: &Ctx<'_>, res: Resource, req_path: &str, body: &[u8]) -> Response<Body> {
    let root = match parse(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let known = root.is(CARDDAV, "addressbook-multiget")
        || root.is(CARDDAV, "addressbook-query")
        || root.is(DAV, "sync-collection");
    if !known {
        return forbidden("<D:supported-report/>");
    }
    let i = match res {
        Resource::Book(i) => i,
        Resource::Card(i, _) if root.is(CARDDAV, "addressbook-multiget") => i,
        _ => return forbidden("<D:supported-report/>"),
    };
    let w = match wanted(ctx, &root) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if ctx.is_directory(i) && root.is(DAV, "sync-collection") {
        // A directory is searched, not copied.
        return forbidden("<D:supported-report/>");
    }
    if root.is(CARDDAV, "addressbook-multiget") {
        multiget(ctx, i, req_path, &root, &w)
    } else if root.is(CARDDAV, "addressbook-query") {
        query(ctx, i, &root, &w)
    } else {
        sync_collection(ctx, i, &root, &w)
    }
}

/// Turn an href (absolute URL, absolute path, or relative to the request URI as Linphone sends) into a path.
fn href_path(href: &str, req_path: &str) -> Option<String> {
    let h = href.trim();
    let h = match h.find("://") {
        Some(p) => &h[h[p + 3..].find('/').map(|q| p + 3 + q)?..],
        None => h,
    };
    let h = percent_decode(h)?;
    if h.starts_with('/') {
        return Some(h);
    }
    let base = match req_path.rfind('/') {
        Some(p) if req_path.ends_with('/') || !req_path[p..].contains('.') => {
            if req_path.ends_with('/') {
                req_path.to_string()
            } else {
                format!("{req_path}/")
            }
        }
        Some(p) => req_path[..=p].to_string(),
        None => "/".to_string(),
    };
    Some(format!("{base}{}", h.trim_start_matches("./")))
}

fn multiget(ctx: &Ctx<'_>, i: usize, req_path: &str, root: &Element, w: &Wanted) -> Response<Body> {
    let mut ms = Multistatus::new();
    for h in root.children_named(DAV, "href") {
        let target = href_path(&h.text, req_path).and_then(|p| ctx.resolve(&p));
        match target {
            Some(Resource::Card(j, e)) if j == i => card_response(&mut ms, ctx, h.text.trim(), &e, w),
            _ => ms.status(h.text.trim(), 404),
        }
    }
    multistatus(ms.finish())
}

fn query(ctx: &Ctx<'_>, i: usize, root: &Element, w: &Wanted) -> Response<Body> {
    let filter = match Filter::parse(root.child(CARDDAV, "filter")) {
        Ok(f) => f,
        Err(FilterError::Collation(_)) => return forbidden("<C:supported-collation/>"),
        Err(e @ FilterError::Invalid(_)) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let limit = match nresults(root) {
        Ok(l) => l,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    // A directory answers a bounded number of matches whatever the client asks (RFC 6352 §8.6.1: a 507 for
    // the collection says there were more).
    let limit = match ctx.cfg.directory.as_ref().filter(|_| ctx.is_directory(i)) {
        Some(d) => Some(limit.map_or(d.max_results, |l| l.min(d.max_results))),
        None => limit,
    };
    let view = ctx.book_view(i);
    let candidates: Vec<Arc<Entry>> = match filter.phone_candidates() {
        Some(q) => {
            let mut v: Vec<Arc<Entry>> = ctx
                .snap
                .find_phone(q)
                .iter()
                .filter(|id| view.contains(id))
                .filter_map(|id| ctx.snap.entry(id).cloned())
                .collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        }
        None => match filter.text_candidates() {
            // A name or mail search (the directory's): the entries the trigram index finds, in the book's order.
            Some(words) => {
                let q = Query::Or(words.into_iter().map(Query::Text).collect());
                let found = ctx.snap.query(&q);
                let mut v: Vec<Arc<Entry>> = found
                    .iter_after(&ctx.snap, None)
                    .filter_map(|id| ctx.snap.get(id))
                    .filter(|e| view.contains(&e.id))
                    .cloned()
                    .collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                v
            }
            None => view.members.clone(),
        },
    };
    let mut ms = Multistatus::new();
    let mut n = 0usize;
    let mut truncated = false;
    for e in &candidates {
        let card = ctx.card(e);
        if !filter.matches(&card.card, &ctx.snap.phones) {
            continue;
        }
        if limit.is_some_and(|l| n >= l) {
            truncated = true;
            break;
        }
        card_response(&mut ms, ctx, &ctx.card_href(i, e), e, w);
        n += 1;
    }
    if truncated {
        ms.status(&ctx.book_href(i), 507);
    }
    multistatus(ms.finish())
}

/// A parsed sync token: the version the client is up to date with, and for continuation tokens the position
/// in change order up to which it has the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The process that handed the token out ([`crate::carddav::service::State::instance`]).
    pub instance: String,
    pub base: u64,
    pub position: Option<(u64, String)>,
    /// A continuation of an incremental sync (`<base>:+<usn>:<id>`): the client has every card as of `<base>`,
    /// so a member whose card did not change since is not sent. An initial sync's continuation (`+` absent)
    /// has nothing beyond the position.
    pub incremental: bool,
}

impl Token {
    pub fn parse(s: &str) -> Option<Token> {
        let rest = s.trim().strip_prefix(TOKEN_PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let (instance, base) = parts.next()?.split_once('.')?;
        if instance.is_empty() || !instance.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let instance = instance.to_string();
        let base = base.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Token {
                instance,
                base,
                position: None,
                incremental: true,
            }),
            (Some(u), Some(id)) if !id.is_empty() => {
                let (incremental, u) = match u.strip_prefix('+') {
                    Some(u) => (true, u),
                    None => (false, u),
                };
                Some(Token {
                    instance,
                    base,
                    position: Some((u.parse().ok()?, id.into())),
                    incremental,
                })
            }
            _ => None,
        }
    }

    pub fn format(&self) -> String {
        let (i, b) = (&self.instance, self.base);
        match &self.position {
            None => format!("{TOKEN_PREFIX}{i}.{b}"),
            Some((u, id)) if self.incremental => format!("{TOKEN_PREFIX}{i}.{b}:+{u}:{id}"),
            Some((u, id)) => format!("{TOKEN_PREFIX}{i}.{b}:{u}:{id}"),
        }
    }
}

/// RFC 6578 §3.2: 403 with `DAV:valid-sync-token`, or 400 with the same body for Thunderbird (see [`Ctx`]).
fn stale_token(ctx: &Ctx<'_>) -> Response<Body> {
    let mut r = forbidden("<D:valid-sync-token/>");
    if ctx.stale_token_400 {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r
}

fn sync_collection(ctx: &Ctx<'_>, i: usize, root: &Element, w: &Wanted) -> Response<Body> {
    let level = root.child(DAV, "sync-level").map(|l| l.text.trim().to_string());
    if !matches!(level.as_deref(), None | Some("1") | Some("infinite")) {
        return text(StatusCode::BAD_REQUEST, "sync-level must be 1 or infinite");
    }
    let limit = match nresults(root) {
        Ok(l) => l,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let raw = root.child(DAV, "sync-token").map(|t| t.text.trim()).unwrap_or("");
    let view = ctx.book_view(i);
    let epoch = ctx.epoch();
    let mut gone: Vec<Arc<str>> = Vec::new();
    // Members to send although their entries are older than the token (they joined through a nested group).
    let mut joined: Vec<Arc<Entry>> = Vec::new();
    let mut incremental = false;
    let (base, present): (u64, Cow<'_, [Arc<Entry>]>) = if raw.is_empty() {
        (view.changed, Cow::Borrowed(&view.by_change[..]))
    } else {
        let Some(token) = Token::parse(raw).filter(|t| t.instance == ctx.state.instance) else {
            return stale_token(ctx);
        };
        incremental = token.incremental;
        // Token numbers are epoch + version; a smaller one is from an earlier instance or configuration.
        let Some(base) = token.base.checked_sub(epoch).filter(|b| *b <= ctx.snap.version) else {
            return stale_token(ctx);
        };
        if token.position.is_none() && base >= view.changed {
            // Nothing in this book changed since the token: no need for the history, which may no longer reach
            // back to the token of a book that has been quiet for long.
            (base, Cow::Borrowed(&[][..]))
        } else {
            let Some(changes) = ctx.snap.changes_since(base) else {
                return stale_token(ctx);
            };
            for e in &changes.changed {
                if vcard::is_person(e) && !view.contains(&e.id) {
                    gone.push(e.id.clone());
                }
            }
            for (id, kind) in &changes.removed {
                if matches!(kind, EntryKind::User | EntryKind::Contact) {
                    gone.push(id.clone());
                }
            }
            let after = match &token.position {
                None => view.changed_after(base, None),
                Some((u, id)) => view.changed_after(*u, Some(id)),
            };
            // Members changed since the token whose card did not (a manager whose report left) are not news to
            // a client that has the book as of `base`.
            let present: Vec<Arc<Entry>> = if token.incremental {
                after.iter().filter(|e| ctx.card(e).changed > base).cloned().collect()
            } else {
                after.to_vec()
            };
            // People who joined or left with their own entry unchanged (a nested group added or taken out).
            let Some(moved) = view.moved_after(base) else {
                return stale_token(ctx);
            };
            for id in moved {
                if !view.contains(id) {
                    gone.push(id.clone());
                } else if !present.iter().any(|e| e.id == *id) {
                    if let Some(e) = ctx.snap.entry(id) {
                        joined.push(e.clone());
                    }
                }
            }
            gone.sort();
            gone.dedup();
            (base, Cow::Owned(present))
        }
    };
    let take = match limit {
        Some(l) if gone.len() + present.len() > l => Some(l.saturating_sub(gone.len()).max(1).min(present.len())),
        _ => None,
    };
    let present: &[Arc<Entry>] = &present;
    let mut ms = Multistatus::with_capacity(estimate(present, w) + gone.len() * 200);
    for id in &gone {
        ms.status(
            &format!(
                "{}{}.vcf",
                ctx.book_href(i),
                crate::carddav::service::encode_segment(id)
            ),
            404,
        );
    }
    // Sent on every page of a truncated answer, since the continuation position only covers `present`; a card
    // sent twice is just an update to the client.
    for e in &joined {
        card_response(&mut ms, ctx, &ctx.card_href(i, e), e, w);
    }
    let shown = take.unwrap_or(present.len());
    for e in &present[..shown] {
        card_response(&mut ms, ctx, &ctx.card_href(i, e), e, w);
    }
    let next = match (take, present[..shown].last()) {
        (Some(_), Some(last)) if shown < present.len() => {
            ms.status(&ctx.book_href(i), 507);
            Token {
                instance: ctx.state.instance.clone(),
                base: epoch + base,
                position: Some((last.usn_changed, last.id.to_string())),
                incremental,
            }
        }
        _ => Token {
            instance: ctx.state.instance.clone(),
            base: epoch + view.changed,
            position: None,
            incremental: true,
        },
    };
    ms.sync_token(&next.format());
    multistatus(ms.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::config::CardDavConfig;
    use crate::carddav::service::State;
    use crate::carddav::vcard::tests::{person, phones};
    use crate::directory::{Naming, Published, Snapshot};
    use http_body_util::BodyExt;

    async fn sync(snap: Snapshot, token: &str, limit: Option<usize>) -> (u16, Vec<(String, u16)>, String) {
        let cfg = Arc::new(arc_swap::ArcSwap::from_pointee(CardDavConfig::default()));
        let mut state = State::new(cfg.clone(), Published::new(snap));
        // Token numbers below are plain versions, from instance `t`.
        state.epoch.store(0, std::sync::atomic::Ordering::SeqCst);
        state.instance = "t".into();
        let ctx = Ctx::for_test(&state, token.ends_with("thunderbird"));
        let limit = limit
            .map(|n| format!("<D:limit><D:nresults>{n}</D:nresults></D:limit>"))
            .unwrap_or_default();
        let body = format!(
            r#"<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>{limit}<D:prop><D:getetag/></D:prop></D:sync-collection>"#
        );
        let resp = handle(&ctx, Resource::Book(0), "/dav/books/all/", body.as_bytes());
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let Ok(root) = parse(&bytes) else {
            return (status, vec![], String::new());
        };
        let items = root
            .children_named(DAV, "response")
            .map(|r| {
                let href = r
                    .child(DAV, "href")
                    .unwrap()
                    .text
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
                let code = r
                    .child(DAV, "status")
                    .or_else(|| r.child(DAV, "propstat").and_then(|p| p.child(DAV, "status")))
                    .map(|s| s.text.split(' ').nth(1).unwrap().parse().unwrap())
                    .unwrap();
                (href, code)
            })
            .collect();
        let token = root
            .child(DAV, "sync-token")
            .map(|t| t.text.clone())
            .unwrap_or_default();
        (status, items, token)
    }

    /// Version 5 holds a(3) b(4) c(5) d(5); version 6 removes b, disables c, adds e.
    fn two_versions() -> Snapshot {
        let naming = Naming::new("DC=contoso,DC=example").unwrap();
        let v5 = Snapshot::from_entries(
            naming,
            phones(),
            5,
            vec![
                person("a", 3, &[("cn", "A")]),
                person("b", 4, &[("cn", "B")]),
                person("c", 5, &[("cn", "C")]),
                person("d", 5, &[("cn", "D")]),
            ],
        );
        let mut v6 = v5.next();
        v6.remove("b");
        v6.upsert(Arc::new(person("c", 6, &[("cn", "C"), ("userAccountControl", "514")])));
        v6.upsert(Arc::new(person("e", 6, &[("cn", "E")])));
        v6
    }

    #[tokio::test]
    async fn incremental_sync_reports_removed_and_disabled_people_as_gone() {
        let (status, items, token) = sync(two_versions(), "urn:entradir:sync:t.5", None).await;
        assert_eq!(status, 207);
        let mut items = items;
        items.sort();
        assert_eq!(
            items,
            [("b.vcf".into(), 404), ("c.vcf".into(), 404), ("e.vcf".into(), 200)]
        );
        assert_eq!(token, "urn:entradir:sync:t.6");

        let (_, items, _) = sync(two_versions(), "", None).await;
        let hrefs: Vec<&str> = items.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            hrefs,
            ["a.vcf", "d.vcf", "e.vcf"],
            "initial sync in change order, only current members"
        );

        let (status, _, _) = sync(two_versions(), "urn:entradir:sync:t.7", None).await;
        assert_eq!(status, 403, "a token from the future is refused");
        let (status, _, _) = sync(two_versions(), "urn:entradir:sync:u.5", None).await;
        assert_eq!(
            status, 403,
            "a token of another replica is refused, though its number fits"
        );
        let (status, _, _) = sync(two_versions(), "urn:entradir:sync:5", None).await;
        assert_eq!(
            status, 403,
            "a token of an earlier release is refused: the client starts over"
        );
        let (status, _, _) = sync(two_versions(), "urn:entradir:sync:t.7:x:thunderbird", None).await;
        assert_eq!(status, 400, "Thunderbird only starts over on 400");
    }

    #[tokio::test]
    async fn truncated_sync_continues_without_losing_changes() {
        let (_, first, token) = sync(two_versions(), "urn:entradir:sync:t.4", Some(1)).await;
        assert!(
            first.contains(&("d.vcf".into(), 200)) && first.contains(&("".into(), 507)),
            "{first:?}"
        );
        assert!(!first.iter().any(|(h, _)| h == "e.vcf"));
        assert_eq!(
            token, "urn:entradir:sync:t.4:+5:d",
            "an incremental sync's continuation"
        );
        let (_, second, token) = sync(two_versions(), &token, Some(1)).await;
        assert!(second.contains(&("e.vcf".into(), 200)), "{second:?}");
        assert!(!second.iter().any(|(_, c)| *c == 507));
        assert_eq!(token, "urn:entradir:sync:t.6");
    }

    #[test]
    fn tokens_round_trip_and_reject_junk() {
        let t = Token {
            instance: "1a2b".into(),
            base: 42,
            position: None,
            incremental: true,
        };
        assert_eq!(Token::parse(&t.format()), Some(t));
        for incremental in [false, true] {
            let c = Token {
                instance: "1a2b".into(),
                base: 7,
                position: Some((5, "id:with:colons".into())),
                incremental,
            };
            assert_eq!(Token::parse(&c.format()), Some(c));
        }
        for bad in [
            "",
            "42",
            "urn:entradir:sync:",
            "urn:entradir:sync:x",
            "urn:entradir:sync:1:2",
            "urn:entradir:sync:42",
            "urn:entradir:sync:.42",
            "urn:entradir:sync:a-b.42",
            "urn:entradir:sync:t.1:2",
            "urn:other:1",
        ] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
        assert_eq!(Token::parse("urn:entradir:sync:t.1:x:y"), None);
    }

    #[test]
    fn hrefs_resolve_like_clients_send_them() {
        let book = "/dav/books/all/";
        assert_eq!(href_path("x.vcf", book).as_deref(), Some("/dav/books/all/x.vcf"));
        assert_eq!(
            href_path("./x.vcf", "/dav/books/all").as_deref(),
            Some("/dav/books/all/x.vcf")
        );
        assert_eq!(
            href_path("/dav/books/all/x.vcf", book).as_deref(),
            Some("/dav/books/all/x.vcf")
        );
        assert_eq!(
            href_path("https://h:8443/dav/books/all/a%20b.vcf", book).as_deref(),
            Some("/dav/books/all/a b.vcf")
        );
        assert_eq!(
            href_path("y.vcf", "/dav/books/all/x.vcf").as_deref(),
            Some("/dav/books/all/y.vcf")
        );
        assert_eq!(href_path("%zz", book), None);
        assert_eq!(href_path("http://hostonly", book), None);
    }

    /// A name or mail search found through the trigram index answers exactly what reading every card did, for
    /// the filters Contacts and others send (anyof, allof, several texts, match types, case), and filters the
    /// index cannot bound still read every card.
    #[tokio::test]
    async fn indexed_name_searches_answer_what_a_full_scan_does() {
        let snap = crate::carddav::sample::snapshot(3, crate::carddav::sample::people(300, 3));
        let cfg = Arc::new(arc_swap::ArcSwap::from_pointee(CardDavConfig::default()));
        let state = State::new(cfg, Published::new(snap));
        let ctx = Ctx::for_test(&state, false);
        let tm = |t: &str, m: &str| {
            format!(r#"<C:text-match collation="i;unicode-casemap" match-type="{m}">{t}</C:text-match>"#)
        };
        let pf = |name: &str, inner: &str| format!(r#"<C:prop-filter name="{name}">{inner}</C:prop-filter>"#);
        let filters = [
            format!(
                r#"<C:filter test="anyof">{}{}</C:filter>"#,
                pf("FN", &tm("mül", "contains")),
                pf("EMAIL", &tm("mül", "contains"))
            ),
            format!(
                r#"<C:filter test="anyof">{}{}</C:filter>"#,
                pf("FN", &tm("SCH", "contains")),
                pf("EMAIL", &tm("sch", "contains"))
            ),
            format!(r#"<C:filter>{}</C:filter>"#, pf("FN", &tm("anna", "starts-with"))),
            format!(r#"<C:filter>{}</C:filter>"#, pf("EMAIL", &tm("user1", "contains"))),
            format!(
                r#"<C:filter>{}</C:filter>"#,
                pf("EMAIL", &tm("contoso.example", "ends-with"))
            ),
            format!(
                r#"<C:filter test="allof">{}{}</C:filter>"#,
                pf("FN", &tm("ann", "contains")),
                pf("TEL", "")
            ),
            format!(
                r#"<C:filter>{}</C:filter>"#,
                pf(
                    "FN",
                    r#"<C:text-match match-type="contains" negate-condition="yes">anna</C:text-match>"#
                )
            ),
            format!(r#"<C:filter>{}</C:filter>"#, pf("FN", &tm("a m", "contains"))),
            format!(
                r#"<C:filter test="anyof">{}{}</C:filter>"#,
                pf("FN", &tm("zzzq", "contains")),
                pf("NICKNAME", &tm("x", "contains"))
            ),
            format!(r#"<C:filter>{}</C:filter>"#, pf("FN", &tm("nobody-at-all", "contains"))),
        ];
        let (mut indexed, mut found) = (0, 0);
        for f in &filters {
            let body = format!(
                r#"<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/></D:prop>{f}</C:addressbook-query>"#
            );
            let root = parse(body.as_bytes()).unwrap();
            let filter = Filter::parse(root.child(CARDDAV, "filter")).unwrap();
            indexed += usize::from(filter.text_candidates().is_some());
            let view = ctx.book_view(0);
            let want: Vec<String> = view
                .members
                .iter()
                .filter(|e| filter.matches(&ctx.card(e).card, &ctx.snap.phones))
                .map(|e| ctx.card_href(0, e))
                .collect();
            let resp = handle(&ctx, Resource::Book(0), "/dav/books/all/", body.as_bytes());
            assert_eq!(resp.status(), 207, "{f}");
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let got: Vec<String> = parse(&bytes)
                .unwrap()
                .children_named(DAV, "response")
                .map(|r| r.child(DAV, "href").unwrap().text.clone())
                .collect();
            assert_eq!(got, want, "{f}");
            found += usize::from(!want.is_empty());
        }
        assert_eq!(indexed, 6, "six of the filters use the index");
        assert!(found >= 6, "most filters find someone: {found}");
    }
}
