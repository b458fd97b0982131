//! A whole LDAP request as a client sends it: BER decoding, then (for a search) the filter, controls, paging
//! and sorting against a sample directory (with its domain and container, and entries with collation keys),
//! then the response, which must decode as LDAP again; a paged search is continued with the cookie it got.
#![no_main]

use bytes::{Bytes, BytesMut};
use entradir::carddav::sample;
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{Naming, Snapshot};
use entradir::ldap::ber;
use entradir::ldap::encode::EntryCache;
use entradir::ldap::paging::Pages;
use entradir::ldap::proto::{self, Op};
use entradir::ldap::search::{search, Limits, SearchEnv};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

fn directory() -> &'static Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let people: Vec<_> = (0..24).map(|i| sample::person(i, 1 + i as u64 % 3)).collect();
        let refs: Vec<_> = people.iter().take(8).collect();
        let naming = Naming::new("DC=contoso,DC=example").expect("base DN");
        let mut entries = vec![sample::group("Sales", &refs, 2)];
        entries.extend(people.iter().cloned());
        for dn in ["DC=contoso,DC=example", "CN=Users,DC=contoso,DC=example"] {
            entries.extend(entradir::directory::project::structural(dn, &naming, 1));
        }
        Arc::new(Snapshot::from_entries(
            naming,
            PhoneNormalizer::new("DE").expect("country"),
            5,
            entries,
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = proto::decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let Op::Search(s) = &req.op else { return };
    let cache = EntryCache::new();
    let pages = Mutex::new(Pages::default());
    let abandoned = AtomicBool::new(false);
    let host = || "entradir.contoso.example".to_string();
    let env = SearchEnv {
        snap: directory(),
        cache: &cache,
        pages: &pages,
        limits: Limits {
            size_limit: 1000,
            max_page_size: 1000,
            time_limit: std::time::Duration::from_secs(10),
        },
        host: &host,
        abandoned: &abandoned,
        stream: None,
    };
    let mut out = BytesMut::new();
    search(&env, req.id, s, &req.controls, &mut out);
    let cookie = check(out);
    // A page with a cookie: ask for the next one as a client would, with the same request.
    if let Some(cookie) = cookie.filter(|c| !c.is_empty()) {
        let mut controls = req.controls.clone();
        controls.retain(|c| c.oid != proto::OID_PAGED);
        controls.push(proto::Control {
            oid: proto::OID_PAGED.into(),
            critical: false,
            value: Some(proto::paged_value(2, &cookie)),
        });
        let mut out = BytesMut::new();
        search(&env, req.id + 1, s, &controls, &mut out);
        check(out);
    }
});

/// Every message written is well-formed LDAP; returns the paged-results cookie of the SearchResultDone.
fn check(mut out: BytesMut) -> Option<Vec<u8>> {
    let mut cookie = None;
    while !out.is_empty() {
        let Some((_, hl, len)) = ber::peek_header(&out).ok().flatten() else {
            panic!("the server wrote a response that does not decode");
        };
        let Some(frame) = out.get(..hl + len).map(<[u8]>::to_vec) else {
            panic!("the server wrote a truncated response");
        };
        match proto::take_response(&mut out) {
            Ok(Some(r)) if r.tag == 0x65 => cookie = paged_cookie(&frame),
            Ok(Some(_)) => {}
            other => panic!("the server wrote a response that does not decode: {other:?}"),
        }
    }
    cookie
}

fn paged_cookie(frame: &[u8]) -> Option<Vec<u8>> {
    let mut msg = ber::Reader::new(Bytes::copy_from_slice(frame))
        .expect(0x30)
        .ok()?
        .reader();
    msg.next_tlv().ok()?; // message id
    msg.next_tlv().ok()?; // SearchResultDone
    let mut controls = msg.expect(0xa0).ok()?.reader();
    while !controls.is_empty() {
        let mut c = controls.expect(0x30).ok()?.reader();
        let oid = c.string(0x04).ok()?;
        let _ = c.optional(0x01);
        let value = c.octets(0x04).ok()?;
        if oid == proto::OID_PAGED {
            return proto::decode_paged(&value).ok().map(|(_, cookie)| cookie.to_vec());
        }
    }
    None
}
