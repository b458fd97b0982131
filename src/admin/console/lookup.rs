//! The lookup tester: a number in any spelling or the first letters of a name (or an LDAP filter as a PBX
//! sends it), run through the code that answers LDAP and `/lookup`, with the reason each entry matched.
//!
//! Nothing here is a second implementation: the LDAP part compiles the filter with the LDAP planner and reads
//! the candidates the indexes give, the HTTP part asks the CardDAV front end's own `/lookup` code, and book
//! membership comes from the book views the phones are served from.

use super::pages::{render, Nav};
use crate::admin::AdminState;
use crate::directory::phone::{digits, is_phone_attr};
use crate::directory::Snapshot;
use crate::ldap::filter::{Compiled, Filter, Substrings};
use askama::Template;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// LDAP entries listed (all are counted).
const SHOWN: usize = 50;
/// Matches counted at most, so a filter that matches everything stays cheap.
const COUNTED: usize = 100_000;
/// Longest input accepted, in characters.
const MAX_INPUT: usize = 512;

pub(super) struct Number {
    key: String,
    e164: Option<String>,
}

pub(super) struct Match {
    name: String,
    dn: String,
    why: String,
    books: String,
}

pub(super) enum HttpAnswer {
    Off,
    /// Only a filter was given: nothing to ask `/lookup`.
    NoInput,
    Number(u16, String, String),
    Search(u64, String),
}

pub(super) struct Outcome {
    number: Option<Number>,
    filter: String,
    filter_is_default: bool,
    filter_form: &'static str,
    plan: String,
    ldap: Vec<Match>,
    ldap_total: usize,
    /// More than [`COUNTED`] matched; counting stopped there.
    ldap_more: bool,
    http_request: String,
    http: HttpAnswer,
}

#[derive(Template)]
#[template(path = "console/lookup.html")]
struct LookupPage {
    nav: Nav,
    q: String,
    filter: String,
    error: Option<String>,
    result: Option<Outcome>,
}

/// Whether the input is a number rather than a name (digits and the punctuation people write numbers with).
fn is_number(q: &str) -> bool {
    digits(q).len() >= 3
        && q.chars()
            .all(|c| c.is_ascii_digit() || " +-/().".contains(c) || c.is_whitespace())
}

/// The filter a PBX would send for `q`, and which PBXs send that form.
fn default_filter(q: &str, number: bool) -> (Filter, &'static str) {
    let v = || Bytes::from(q.trim().to_string());
    if number {
        let f = Filter::Or(
            ["telephoneNumber", "mobile", "homePhone"]
                .iter()
                .map(|a| Filter::Eq((*a).to_string(), v()))
                .collect(),
        );
        (f, "caller-ID lookups (3CX, Asterisk, FreePBX)")
    } else {
        let sub = || Substrings {
            initial: Some(v()),
            any: Vec::new(),
            final_: None,
        };
        let f = Filter::Or(vec![Filter::Sub("cn".into(), sub()), Filter::Sub("sn".into(), sub())]);
        (f, "Yealink phone books")
    }
}

/// The attribute names a filter mentions, in order, once each.
fn attrs_of(f: &Filter, out: &mut Vec<String>) {
    let mut add = |a: &str| {
        if !out.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            out.push(a.to_string());
        }
    };
    match f {
        Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| attrs_of(f, out)),
        Filter::Not(f) => attrs_of(f, out),
        Filter::Eq(a, _) | Filter::Sub(a, _) | Filter::Ge(a, _) | Filter::Le(a, _) | Filter::Approx(a, _) => add(a),
        Filter::Present(a) => add(a),
        Filter::Ext { attr: Some(a), .. } => add(a),
        Filter::Ext { attr: None, .. } => {}
    }
}

fn run(
    snap: &Snapshot,
    insp: Option<&crate::carddav::lookup::Inspector>,
    q: &str,
    filter: &str,
) -> Result<Outcome, String> {
    let number = is_number(q);
    let (parsed, filter_is_default, filter_form) = if filter.trim().is_empty() {
        let (f, form) = default_filter(q, number);
        (f, true, form)
    } else {
        let f = Filter::parse(filter).map_err(|e| format!("The LDAP filter {filter:?} cannot be read: {e}."))?;
        (f, false, "")
    };
    let mut text = String::new();
    crate::ldap::clients::write_filter(&mut text, &parsed, true);
    let compiled = Compiled::new(&parsed, snap);
    let plan = compiled.query(snap);
    let candidates = snap.query(&plan);
    let mut attrs = Vec::new();
    attrs_of(&parsed, &mut attrs);
    let mut ldap = Vec::new();
    let mut matched = Vec::new();
    let mut total = 0;
    for id in candidates.iter_after(snap, None) {
        let Some(e) = snap.get(id) else { continue };
        if !candidates.exact && !compiled.matches(e, snap) {
            continue;
        }
        total += 1;
        if total > COUNTED {
            break;
        }
        if ldap.len() >= SHOWN {
            continue;
        }
        let why: Vec<String> = attrs
            .iter()
            .flat_map(|a| {
                e.strs(a).take(3).map(move |v| {
                    if is_phone_attr(a) {
                        format!("{a}: {v} (digit key {})", snap.phones.key(v))
                    } else {
                        format!("{a}: {v}")
                    }
                })
            })
            .collect();
        matched.push(e);
        ldap.push(Match {
            name: e
                .first_str("displayName")
                .or_else(|| e.first_str("cn"))
                .unwrap_or(&e.id)
                .to_string(),
            dn: e.dn.to_string(),
            why: why.join("; "),
            books: String::new(),
        });
    }
    // Which books hold each listed entry, asked once for all of them.
    match insp {
        Some(i) => {
            let ids: Vec<&str> = matched.iter().map(|e| &*e.id).collect();
            for (m, books) in ldap.iter_mut().zip(i.books_of(&ids)) {
                m.books = if books.is_empty() {
                    "in no phone book (disabled, or outside every book's group)".to_string()
                } else {
                    books.join(", ")
                };
            }
        }
        None => ldap.iter_mut().for_each(|m| m.books = "CardDAV is off".to_string()),
    }
    let (http_request, http) = match insp {
        None => (String::new(), HttpAnswer::Off),
        Some(_) if q.trim().is_empty() => (String::new(), HttpAnswer::NoInput),
        Some(i) if number => {
            let (status, v) = i.number(q);
            let winner = v["displayName"].as_str().unwrap_or("nobody").to_string();
            let detail = if status == 200 {
                let others: Vec<&str> = v["matches"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x["displayName"].as_str()).collect())
                    .unwrap_or_default();
                format!(
                    "Matched by {} on {} {}{}",
                    v["matchedBy"].as_str().unwrap_or("?"),
                    v["matchedAttribute"].as_str().unwrap_or("?"),
                    v["matchedNumber"].as_str().unwrap_or("?"),
                    if others.len() > 1 {
                        format!(
                            "; {} entries share it ({}), the first wins",
                            others.len(),
                            others.join(", ")
                        )
                    } else {
                        String::new()
                    }
                )
            } else {
                v["error"].as_str().unwrap_or("no answer").to_string()
            };
            (
                format!("GET /lookup/number?n={} (book {})", q.trim(), i.first_book()),
                HttpAnswer::Number(status, winner, detail),
            )
        }
        Some(i) => {
            let v = i.search(q, 20);
            let names: Vec<&str> = v["results"]
                .as_array()
                .map(|m| m.iter().filter_map(|x| x["displayName"].as_str()).collect())
                .unwrap_or_default();
            (
                format!("GET /lookup/search?q={} (book {})", q.trim(), i.first_book()),
                HttpAnswer::Search(v["count"].as_u64().unwrap_or(0), names.join(", ")),
            )
        }
    };
    Ok(Outcome {
        number: number.then(|| Number {
            key: snap.phones.key(q),
            e164: snap.phones.to_e164(q),
        }),
        filter: text,
        filter_is_default,
        filter_form,
        plan: format!("{plan:?}"),
        ldap,
        ldap_total: total.min(COUNTED),
        ldap_more: total > COUNTED,
        http_request,
        http,
    })
}

/// The page at `/console/lookup[?q=…&filter=…]`.
pub(super) async fn page(st: &AdminState, nav: Nav, query: Option<&str>) -> Response<Full<Bytes>> {
    let params = crate::carddav::lookup::params(query);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (q, filter) = (get("q"), get("filter"));
    let mut page = LookupPage {
        nav,
        q: q.clone(),
        filter: filter.clone(),
        error: None,
        result: None,
    };
    if q.chars().count() > MAX_INPUT || filter.chars().count() > MAX_INPUT {
        page.error = Some(format!("The input is longer than {MAX_INPUT} characters."));
        return render(StatusCode::BAD_REQUEST, &page);
    }
    if q.trim().is_empty() && filter.trim().is_empty() {
        return render(StatusCode::OK, &page);
    }
    let snap = st.dir.load();
    let insp = st.carddav.load_full();
    let ran = tokio::task::spawn_blocking(move || run(&snap, insp.as_deref(), &q, &filter)).await;
    match ran {
        Ok(Ok(r)) => page.result = Some(r),
        Ok(Err(e)) => {
            page.error = Some(e);
            return render(StatusCode::BAD_REQUEST, &page);
        }
        Err(e) => {
            tracing::error!(error = %e, "admin console: the lookup tester failed (a bug: please report it)");
            page.error = Some("The lookup failed; the log says why.".into());
            return render(StatusCode::INTERNAL_SERVER_ERROR, &page);
        }
    }
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_told_apart() {
        assert!(is_number("+49 (30) 123-456"));
        assert!(is_number("030/1234567"));
        assert!(!is_number("Schm"));
        assert!(!is_number("12"));
        assert!(!is_number("Room 101"));
    }

    #[test]
    fn the_default_filters_are_what_pbxs_send() {
        let mut s = String::new();
        crate::ldap::clients::write_filter(&mut s, &default_filter("Schm", false).0, true);
        assert_eq!(s, "(|(cn=Schm*)(sn=Schm*))");
        let mut s = String::new();
        crate::ldap::clients::write_filter(&mut s, &default_filter("+49 30 1", true).0, true);
        assert_eq!(s, "(|(telephoneNumber=+49 30 1)(mobile=+49 30 1)(homePhone=+49 30 1))");
    }
}
