//! PROPFIND (RFC 4918 §9.1) on the service root, principals, the home, books and cards.
//!
//! Depth 0 and 1 are answered; `Depth: infinity` is refused with `DAV:propfind-finite-depth` (RFC 4918 allows
//! it, and a book listing cards is the deepest useful level anyway). A request without Depth header is
//! treated as Depth 1, which is what clients that omit it expect and still bounded. Properties are computed
//! from the request's snapshot; card properties other than `getcontentlength` never render the card.

use crate::carddav::cache::CardTag;
use crate::carddav::config::VCardVersion;
use crate::carddav::service::{encode_segment_into, Body, VCARD_CT};
use crate::carddav::service::{forbidden, multistatus, text, Ctx, Resource, HOME, PRINCIPALS};
use crate::carddav::xml::{esc, parse, Multistatus, PropName, CALSERVER, CARDDAV, DAV};
use crate::directory::Entry;
use hyper::{Response, StatusCode};
use std::fmt::Write as _;
use std::sync::Arc;

enum Wanted {
    All,
    Names,
    Props(Vec<PropName>),
}

fn parse_request(body: &[u8]) -> Result<Wanted, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Wanted::All);
    }
    let root = parse(body).map_err(|e| e.to_string())?;
    if !root.is(DAV, "propfind") {
        return Err(format!("expected DAV:propfind, got {{{}}}{}", root.ns, root.name));
    }
    if let Some(prop) = root.child(DAV, "prop") {
        return Ok(Wanted::Props(prop.children.iter().map(|c| c.prop_name()).collect()));
    }
    if root.child(DAV, "propname").is_some() {
        return Ok(Wanted::Names);
    }
    if root.child(DAV, "allprop").is_some() {
        return Ok(Wanted::All);
    }
    Err("DAV:propfind needs prop, propname or allprop".into())
}

pub fn handle(ctx: &Ctx<'_>, res: Resource, depth: Option<&[u8]>, body: &[u8]) -> Response<Body> {
    let depth1 = match depth.map(|d| d.trim_ascii()) {
        Some(b"0") => false,
        Some(b"1") | None => true,
        Some(d) if d.eq_ignore_ascii_case(b"infinity") => {
            return forbidden("<D:propfind-finite-depth/>");
        }
        Some(_) => return text(StatusCode::BAD_REQUEST, "Depth must be 0 or 1"),
    };
    let wanted = match parse_request(body) {
        Ok(w) => w,
        Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
    };
    let mut targets = vec![res.clone()];
    // A book's cards asked for by property name (the common listing) are written by `card_listing`.
    let mut listing = None;
    if depth1 {
        match &res {
            Resource::Root => targets.extend([Resource::Principals, Resource::Home]),
            Resource::Principals => targets.push(Resource::Principal),
            // The directory is found through the principal's directory-gateway, not by listing the home (a
            // client would sync it as a book).
            Resource::Home => targets.extend(
                (0..ctx.books.len())
                    .filter(|i| !ctx.is_directory(*i))
                    .map(Resource::Book),
            ),
            // Its members are searched, never listed.
            Resource::Book(i) if ctx.is_directory(*i) => {}
            Resource::Book(i) => {
                let view = ctx.book_view(*i);
                if matches!(wanted, Wanted::Props(_)) {
                    listing = Some((*i, view));
                } else {
                    targets.extend(view.members.iter().map(|e| Resource::Card(*i, e.clone())));
                }
            }
            Resource::Principal | Resource::Card(..) => {}
        }
    }
    let cards = listing.as_ref().map_or(0, |(_, v)| v.members.len());
    let mut ms = Multistatus::with_capacity(targets.len() * 400 + cards * 250);
    for t in &targets {
        let href = ctx.href(t);
        match &wanted {
            Wanted::All => {
                let found: Vec<(PropName, String)> = live(t)
                    .into_iter()
                    .filter_map(|p| value(ctx, t, &p).map(|v| (p, v)))
                    .collect();
                ms.props(&href, &found, &[] as &[PropName]);
            }
            Wanted::Names => {
                let found: Vec<(PropName, &str)> = live(t).into_iter().map(|p| (p, "")).collect();
                ms.props(&href, &found, &[] as &[PropName]);
            }
            Wanted::Props(names) => {
                let (found, missing) = split(ctx, t, names);
                ms.props(&href, &found, &missing);
            }
        }
    }
    if let (Some((i, view)), Wanted::Props(names)) = (&listing, &wanted) {
        card_listing(&mut ms, ctx, *i, &view.members, names);
    }
    multistatus(ms.finish())
}

/// The `<D:response>` of every card of a book, written straight into the output: a 10k-card etag listing is
/// what every client polls, so the common properties (etag, content type, resource type) cost no allocation per
/// card and everything else goes through [`value`] as for single resources.
fn card_listing(ms: &mut Multistatus, ctx: &Ctx<'_>, i: usize, members: &[Arc<Entry>], names: &[PropName]) {
    let prefix = ctx.book_href(i);
    let mut value_buf = String::with_capacity(32);
    let mut missing: Vec<&PropName> = Vec::new();
    for e in members {
        let out = ms.buf();
        out.push_str("<D:response><D:href>");
        // Both parts are percent-encoded, so there is nothing to escape for XML.
        out.push_str(&prefix);
        encode_segment_into(out, &e.id);
        out.push_str(".vcf</D:href>");
        missing.clear();
        let mut found_any = false;
        for n in names {
            value_buf.clear();
            let found = match (n.ns.as_str(), n.name.as_str()) {
                // Thunderbird 102's ctag path asks for getetag in the CalendarServer namespace.
                (DAV | CALSERVER, "getetag") => {
                    let _ = write!(value_buf, "&quot;{}&quot;", CardTag(ctx.card(e).tag));
                    true
                }
                (DAV, "getcontenttype") => {
                    value_buf.push_str(VCARD_CT);
                    true
                }
                (DAV, "resourcetype") => true,
                _ => match value(ctx, &Resource::Card(i, e.clone()), n) {
                    Some(v) => {
                        value_buf.push_str(&v);
                        true
                    }
                    None => false,
                },
            };
            if !found {
                missing.push(n);
                continue;
            }
            if !found_any {
                out.push_str("<D:propstat><D:prop>");
                found_any = true;
            }
            n.write(out, &value_buf);
        }
        if found_any {
            out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
        }
        if !missing.is_empty() {
            out.push_str("<D:propstat><D:prop>");
            for n in &missing {
                n.write(out, "");
            }
            out.push_str("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
        }
        if names.is_empty() {
            out.push_str("<D:status>HTTP/1.1 200 OK</D:status>");
        }
        out.push_str("</D:response>");
    }
}

type Split<'a> = (Vec<(&'a PropName, String)>, Vec<&'a PropName>);

fn split<'a>(ctx: &Ctx<'_>, t: &Resource, names: &'a [PropName]) -> Split<'a> {
    let mut found = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for n in names {
        match value(ctx, t, n) {
            Some(v) => found.push((n, v)),
            None => missing.push(n),
        }
    }
    (found, missing)
}

/// The properties `allprop`/`propname` list for a resource.
fn live(t: &Resource) -> Vec<PropName> {
    let d = |n: &str| PropName::new(DAV, n);
    let c = |n: &str| PropName::new(CARDDAV, n);
    let mut v = vec![
        d("resourcetype"),
        d("current-user-principal"),
        d("current-user-privilege-set"),
    ];
    match t {
        Resource::Root | Resource::Principals | Resource::Home => {
            v.extend([d("displayname"), d("principal-URL"), c("addressbook-home-set")]);
        }
        Resource::Principal => {
            v.extend([
                d("displayname"),
                d("principal-URL"),
                d("principal-collection-set"),
                c("addressbook-home-set"),
            ]);
        }
        Resource::Book(_) => v.extend([
            d("displayname"),
            d("owner"),
            d("supported-report-set"),
            d("sync-token"),
            d("getetag"),
            c("supported-address-data"),
            c("addressbook-description"),
            PropName::new(CALSERVER, "getctag"),
        ]),
        Resource::Card(..) => v.extend([d("getetag"), d("getcontenttype"), d("getcontentlength")]),
    }
    v
}

fn href(h: &str) -> String {
    format!("<D:href>{}</D:href>", esc(h))
}

/// The inner XML of a property on a resource, or `None` when the resource does not have it (→ 404 propstat).
fn value(ctx: &Ctx<'_>, t: &Resource, p: &PropName) -> Option<String> {
    let is_collection = !matches!(t, Resource::Card(..) | Resource::Principal);
    match (p.ns.as_str(), p.name.as_str()) {
        (DAV, "resourcetype") => Some(match t {
            Resource::Book(i) if ctx.is_directory(*i) => "<D:collection/><C:addressbook/><C:directory/>".into(),
            Resource::Book(_) => "<D:collection/><C:addressbook/>".into(),
            Resource::Principal => "<D:principal/>".into(),
            Resource::Card(..) => String::new(),
            _ => "<D:collection/>".into(),
        }),
        (DAV, "current-user-principal") => Some(href(&ctx.principal_href())),
        (DAV, "current-user-privilege-set") => Some("<D:privilege><D:read/></D:privilege>".into()),
        (DAV, "principal-URL") if !matches!(t, Resource::Book(_) | Resource::Card(..)) => {
            Some(href(&ctx.principal_href()))
        }
        (DAV, "owner") if matches!(t, Resource::Book(_) | Resource::Home) => Some(href(&ctx.principal_href())),
        (DAV, "principal-collection-set") => Some(href(PRINCIPALS)),
        (CARDDAV, "directory-gateway") if matches!(t, Resource::Principal) => {
            ctx.directory().map(|i| href(&ctx.book_href(i)))
        }
        (CARDDAV, "addressbook-home-set") if !matches!(t, Resource::Book(_) | Resource::Card(..)) => Some(href(HOME)),
        (DAV, "displayname") if is_collection || matches!(t, Resource::Principal) => Some(
            esc(&match t {
                Resource::Root => "entradir".to_string(),
                Resource::Principals => "Principals".to_string(),
                Resource::Principal => ctx.principal.segment().to_string(),
                Resource::Home => "Address books".to_string(),
                Resource::Book(i) => ctx.books[*i].display_name.clone(),
                Resource::Card(..) => String::new(),
            })
            .into_owned(),
        ),
        _ => match t {
            Resource::Book(i) => book_value(ctx, *i, p),
            Resource::Card(_, e) => card_value(ctx, e, p),
            _ => None,
        },
    }
}

fn book_value(ctx: &Ctx<'_>, i: usize, p: &PropName) -> Option<String> {
    match (p.ns.as_str(), p.name.as_str()) {
        (CALSERVER, "getctag") => Some(ctx.ctag(i).to_string()),
        (DAV, "sync-token") => Some(esc(&ctx.sync_token(i)).into_owned()),
        (DAV, "getetag") => Some(format!("&quot;{}&quot;", ctx.ctag(i))),
        (DAV, "supported-report-set") => Some(
            [
                "<C:addressbook-multiget/>",
                "<C:addressbook-query/>",
                "<D:sync-collection/>",
            ]
            .iter()
            .take(if ctx.is_directory(i) { 2 } else { 3 })
            .map(|r| format!("<D:supported-report><D:report>{r}</D:report></D:supported-report>"))
            .collect(),
        ),
        (CARDDAV, "supported-address-data") => Some(
            [VCardVersion::V3, VCardVersion::V4]
                .iter()
                .map(|v| {
                    format!(
                        "<C:address-data-type content-type=\"text/vcard\" version=\"{}\"/>",
                        v.as_str()
                    )
                })
                .collect(),
        ),
        (CARDDAV, "addressbook-description") => Some(esc(&ctx.books[i].display_name).into_owned()),
        (CARDDAV, "max-resource-size") => Some((ctx.cfg.max_body_bytes).to_string()),
        _ => None,
    }
}

/// Card properties shared with REPORT responses (address-data is handled there).
pub fn card_value(ctx: &Ctx<'_>, e: &Arc<Entry>, p: &PropName) -> Option<String> {
    match (p.ns.as_str(), p.name.as_str()) {
        // Thunderbird 102's ctag path asks for getetag in the CalendarServer namespace.
        (DAV | CALSERVER, "getetag") => Some(format!("&quot;{}&quot;", CardTag(ctx.card(e).tag))),
        (DAV, "getcontenttype") => Some(VCARD_CT.into()),
        (DAV, "getcontentlength") => Some(ctx.card(e).bytes(ctx.cfg.vcard_version).len().to_string()),
        (DAV, "resourcetype") => Some(String::new()),
        (DAV, "current-user-principal") => Some(href(&ctx.principal_href())),
        (DAV, "current-user-privilege-set") => Some("<D:privilege><D:read/></D:privilege>".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carddav::config::CardDavConfig;
    use crate::carddav::service::State;
    use crate::carddav::vcard::tests::{person, phones};
    use crate::directory::{Naming, Published, Snapshot};

    /// The in-place card listing must write exactly what the per-resource path writes, for the properties it
    /// handles itself and for the ones it hands on (found or missing), with ids that need percent-encoding.
    #[test]
    fn card_listing_matches_the_generic_writer() {
        let snap = Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").unwrap(),
            phones(),
            5,
            vec![
                person("a b", 3, &[("cn", "A")]),
                person("c&d", 4, &[("cn", "C")]),
                person("e", 5, &[("cn", "E")]),
            ],
        );
        let cfg = Arc::new(arc_swap::ArcSwap::from_pointee(CardDavConfig::default()));
        let state = State::new(cfg.clone(), Published::new(snap));
        let ctx = Ctx::for_test(&state, false);
        let view = ctx.book_view(0);
        let d = |n: &str| PropName::new(DAV, n);
        let all = vec![
            d("getetag"),
            PropName::new(CALSERVER, "getetag"),
            d("getcontenttype"),
            d("resourcetype"),
            d("getcontentlength"),
            d("principal-collection-set"),
            d("displayname"),
            PropName::new("urn:example:x", "unknown"),
        ];
        for names in [vec![d("getetag")], all.clone(), vec![d("displayname")], vec![]] {
            let mut fast = Multistatus::new();
            card_listing(&mut fast, &ctx, 0, &view.members, &names);
            let mut slow = Multistatus::new();
            for e in &view.members {
                let t = Resource::Card(0, e.clone());
                let (found, missing) = split(&ctx, &t, &names);
                slow.props(&ctx.href(&t), &found, &missing);
            }
            let fast = fast.finish();
            assert_eq!(fast, slow.finish(), "{names:?}");
            assert_eq!(fast.matches("<D:response>").count(), 3);
        }
    }
}
