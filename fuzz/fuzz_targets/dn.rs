//! DNs from clients (search bases, bind names, `member` values): parsing never panics, and normalising is
//! idempotent (a normalised DN parses and normalises to itself).
#![no_main]

use entradir::directory::dn::{format_dn_norm, parse_dn};
use entradir::directory::entry::normalize_dn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_dn(text).map(|r| format_dn_norm(&r));
    if let Some(norm) = normalize_dn(text) {
        assert_eq!(
            normalize_dn(&norm).as_deref(),
            Some(norm.as_str()),
            "normalising {text:?} twice"
        );
    }
    let _ = entradir::directory::dn::escape_value(text);
});
