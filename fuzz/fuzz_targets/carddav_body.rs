//! CardDAV request bodies: the XML parser and the REPORT filters (addressbook-query with its text matches and
//! collations), as a PROPFIND or REPORT body from a client or a scanner.
#![no_main]

use entradir::carddav::filter::Filter;
use entradir::carddav::xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = xml::parse(data) else { return };
    if let Ok(f) = Filter::parse(root.child(xml::CARDDAV, "filter")) {
        // A filter that parsed is applied to a card.
        let phones = entradir::directory::phone::PhoneNormalizer::new("DE").expect("country");
        let card = entradir::carddav::vcard::build(&entradir::carddav::sample::person(3, 1), &phones);
        let _ = f.matches(&card, &phones);
    }
});
