//! The data-quality report: what to fix at the source (in Entra ID or the UPN mapping file) so that phones
//! show names. Computed from one snapshot on a blocking thread (it walks every entry) and kept until the
//! directory changes, so reloading the page costs nothing.

use super::pages::{render, Nav};
use crate::admin::AdminState;
use crate::directory::phone::PHONE_ATTRS;
use crate::directory::{Entry, EntryKind, Snapshot};
use askama::Template;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use std::sync::{Arc, Mutex};

/// Rows shown per list (the totals count all).
pub const LIST_MAX: usize = 200;

pub(super) struct Unparsable {
    who: String,
    attr: String,
    value: String,
}

pub(super) struct SharedNumber {
    number: String,
    holders: String,
}

pub(super) struct ClashRow {
    who: String,
    wanted: String,
    got: String,
    holder: String,
}

/// The report for one directory version (and one configuration of the facts it depends on).
pub(super) struct Report {
    version: u64,
    /// What it was computed with: the UPN-CSV rows from the last round, and whether photos are synced.
    inputs: (Vec<(String, usize)>, bool, bool),
    unparsable: Vec<Unparsable>,
    unparsable_total: usize,
    shared: Vec<SharedNumber>,
    shared_total: usize,
    csv_configured: bool,
    csv_unmatched: Vec<(String, usize)>,
    clashes: Vec<ClashRow>,
    clashes_total: usize,
    photos_synced: bool,
    no_number: Vec<String>,
    no_number_total: usize,
    no_photo: Vec<String>,
    no_photo_total: usize,
}

/// The last report, reused while the snapshot version and its inputs are the same.
#[derive(Default)]
pub(super) struct Cache(Mutex<Option<Arc<Report>>>);

/// A person as the lists name them: display name and account.
fn who(e: &Entry) -> String {
    let name = e
        .first_str("displayName")
        .or_else(|| e.first_str("cn"))
        .unwrap_or(&e.id);
    match e.first_str("sAMAccountName") {
        Some(sam) => format!("{name} ({sam})"),
        None => name.to_string(),
    }
}

fn enabled_user(e: &Entry) -> bool {
    e.kind == EntryKind::User
        && e.first_str("userAccountControl")
            .and_then(|v| crate::directory::snapshot::parse_uac(v.as_bytes()))
            .is_none_or(|uac| uac & 2 == 0)
}

/// Whether a published number is E.164 (the projection writes those it understood so, the rest as typed).
fn is_e164(v: &str) -> bool {
    v.strip_prefix('+')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn build(snap: &Snapshot, inputs: (Vec<(String, usize)>, bool, bool)) -> Report {
    let (csv_unmatched, csv_configured, photos_synced) = inputs.clone();
    let mut r = Report {
        version: snap.version,
        inputs,
        unparsable: Vec::new(),
        unparsable_total: 0,
        shared: Vec::new(),
        shared_total: 0,
        csv_configured,
        csv_unmatched,
        clashes: Vec::new(),
        clashes_total: 0,
        photos_synced,
        no_number: Vec::new(),
        no_number_total: 0,
        no_photo: Vec::new(),
        no_photo_total: 0,
    };
    let mut people: Vec<&Arc<Entry>> = snap
        .entries()
        .filter(|e| matches!(e.kind, EntryKind::User | EntryKind::Contact))
        .collect();
    people.sort_by_cached_key(|e| (who(e).to_lowercase(), e.id.clone()));
    for e in people {
        let mut numbers = 0;
        for attr in PHONE_ATTRS {
            for v in e.strs(attr) {
                numbers += 1;
                if !is_e164(v) {
                    r.unparsable_total += 1;
                    if r.unparsable.len() < LIST_MAX {
                        r.unparsable.push(Unparsable {
                            who: who(e),
                            attr: (*attr).to_string(),
                            value: v.to_string(),
                        });
                    }
                }
            }
        }
        if !enabled_user(e) {
            continue;
        }
        if numbers == 0 {
            r.no_number_total += 1;
            if r.no_number.len() < LIST_MAX {
                r.no_number.push(who(e));
            }
        }
        if photos_synced && e.get("thumbnailPhoto").is_none() {
            r.no_photo_total += 1;
            if r.no_photo.len() < LIST_MAX {
                r.no_photo.push(who(e));
            }
        }
    }
    for (key, ids) in snap.shared_numbers() {
        r.shared_total += 1;
        if r.shared.len() < LIST_MAX {
            let holders: Vec<&Arc<Entry>> = ids.iter().filter_map(|id| snap.get(*id)).collect();
            // The number as published (E.164, or as typed when it was not understood), not the digit key.
            let number = holders
                .iter()
                .flat_map(|e| PHONE_ATTRS.iter().flat_map(move |a| e.strs(a)))
                .find(|v| snap.phones.key(v).starts_with(&key))
                .map_or_else(|| key.to_string(), str::to_string);
            r.shared.push(SharedNumber {
                number,
                holders: holders.iter().map(|e| who(e)).collect::<Vec<_>>().join(", "),
            });
        }
    }
    for (id, c) in snap.name_clashes() {
        r.clashes_total += 1;
        if r.clashes.len() >= LIST_MAX {
            continue;
        }
        let Some(e) = snap.entry(id) else { continue };
        let holder_of = |attr: &str, v: &str| -> String {
            snap.find_eq(attr, v.as_bytes())
                .unwrap_or_default()
                .iter()
                .filter(|h| ***h != *id)
                .filter_map(|h| snap.entry(h))
                .map(|h| who(h))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(w) = &c.wanted_sam {
            r.clashes.push(ClashRow {
                who: who(e),
                wanted: format!("sAMAccountName {w}"),
                got: c.sam.clone(),
                holder: holder_of("sAMAccountName", w),
            });
        }
        if let Some(w) = &c.wanted_cn {
            let parent = e.dn.split_once(',').map_or("", |(_, p)| p);
            r.clashes.push(ClashRow {
                who: who(e),
                wanted: format!("CN={w},{parent}"),
                got: format!("CN={}", c.cn),
                holder: snap
                    .by_dn(&crate::directory::entry::normalize_dn(&format!("CN={w},{parent}")).unwrap_or_default())
                    .map(|h| who(h))
                    .unwrap_or_default(),
            });
        }
    }
    r
}

#[derive(Template)]
#[template(path = "console/quality.html")]
struct QualityPage {
    nav: Nav,
    list_max: usize,
    r: Arc<Report>,
}

/// The page at `/console/quality`.
pub(super) async fn page(st: &AdminState, nav: Nav) -> Response<Full<Bytes>> {
    let snap = st.dir.load();
    let settings = st.settings.load_full();
    let csv = st
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last_report
        .as_ref()
        .map(|r| r.unmatched_csv_rows.clone())
        .unwrap_or_default();
    let inputs = (csv, settings.upn_csv, settings.photos);
    let cached = st.console.quality.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = match cached.filter(|r| r.version == snap.version && r.inputs == inputs) {
        Some(r) => r,
        None => match tokio::task::spawn_blocking(move || Arc::new(build(&snap, inputs))).await {
            Ok(r) => {
                *st.console.quality.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "admin console: the data-quality report failed (a bug: please report it)");
                return super::pages::refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    nav,
                    "The report could not be computed; the log says why.".into(),
                );
            }
        },
    };
    render(
        StatusCode::OK,
        &QualityPage {
            nav,
            list_max: LIST_MAX,
            r: report,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_international_numbers_count_as_parsed() {
        assert!(is_e164("+4930123456"));
        assert!(!is_e164("030 123456"));
        assert!(!is_e164("+49 30 123456"));
        assert!(!is_e164("+"));
        assert!(!is_e164("ext. 12"));
    }
}
