//! PROPFIND (RFC 4918 §9.1) on the service root, principals, the home, books and cards.
//!
//! Depth 0 and 1 are answered; `Depth: infinity` is refused with `DAV:propfind-finite-depth` (RFC 4918 allows
//! it, and a book listing cards is the deepest useful level anyway). A request without Depth header is
//! treated as Depth 1, which is what clients that omit it expect and still bounded. Properties are computed
//! from the request's snapshot; card properties other than `getcontentlength` never render the card.

use crate::carddav::config::VCardVersion;
use crate::carddav::service::{forbidden, multistatus, text, Ctx, Resource, HOME, PRINCIPALS};
use crate::carddav::service::{Body, VCARD_CT};
use crate::carddav::xml::{esc, parse, Multistatus, PropName, CALSERVER, CARDDAV, DAV};
use crate::directory::Entry;
use hyper::{Response, StatusCode};
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
    if depth1 {
        match &res {
            Resource::Root => targets.extend([Resource::Principals, Resource::Home]),
            Resource::Principals => targets.push(Resource::Principal),
            Resource::Home => targets.extend((0..ctx.books.len()).map(Resource::Book)),
            Resource::Book(i) => {
                let view = ctx.book_view(*i);
                targets.extend(view.members.iter().map(|e| Resource::Card(*i, e.clone())));
            }
            Resource::Principal | Resource::Card(..) => {}
        }
    }
    let mut ms = Multistatus::with_capacity(targets.len() * 400);
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
    multistatus(ms.finish())
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
        (DAV | CALSERVER, "getetag") => Some(format!("&quot;{}&quot;", e.usn_changed)),
        (DAV, "getcontenttype") => Some(VCARD_CT.into()),
        (DAV, "getcontentlength") => Some(ctx.card(e).bytes(ctx.cfg.vcard_version).len().to_string()),
        (DAV, "resourcetype") => Some(String::new()),
        (DAV, "current-user-principal") => Some(href(&ctx.principal_href())),
        (DAV, "current-user-privilege-set") => Some("<D:privilege><D:read/></D:privilege>".into()),
        _ => None,
    }
}
