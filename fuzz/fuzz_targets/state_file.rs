//! A state file that parses (a truncated or edited one, or one from another version) is served as a directory
//! without a panic.
#![no_main]

use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::state::State;
use entradir::directory::{Directory, Naming, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = serde_json::from_slice::<State>(data) else {
        return;
    };
    let settings = Settings::new(
        Naming::new("DC=contoso,DC=example").expect("base DN"),
        PhoneNormalizer::new("DE").expect("country"),
    );
    let _ = Directory::resume(settings, state.store, state.delta_links, state.version);
});
