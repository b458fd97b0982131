//! What CardDAV clients send back: sync tokens (a parsed token formats to the same text) and percent-encoded
//! hrefs (decoding what was encoded gives the original).
#![no_main]

use entradir::carddav::report::Token;
use entradir::carddav::service::{encode_segment, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(t) = Token::parse(text) {
        assert_eq!(Token::parse(&t.format()), Some(t));
    }
    let _ = percent_decode(text);
    assert_eq!(percent_decode(&encode_segment(text)).as_deref(), Some(text));
});
