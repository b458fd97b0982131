//! A whole LDAP request as a client sends it: BER decoding, then (for a search) the filter, controls, paging
//! and sorting against a sample directory, then the response, which must decode as LDAP again.
#![no_main]

use bytes::{Bytes, BytesMut};
use entradir::carddav::sample;
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{Naming, Snapshot};
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
        let mut entries = vec![sample::group("Sales", &refs, 2)];
        entries.extend(people.iter().cloned());
        Arc::new(Snapshot::from_entries(
            Naming::new("DC=contoso,DC=example").expect("base DN"),
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
        },
        host: &host,
        abandoned: &abandoned,
    };
    let mut out = BytesMut::new();
    search(&env, req.id, s, &req.controls, &mut out);
    // Everything written is well-formed LDAP.
    while !out.is_empty() {
        match proto::take_response(&mut out) {
            Ok(Some(_)) => {}
            other => panic!("the server wrote a response that does not decode: {other:?}"),
        }
    }
});
