//! Files an admin edits: the UPN-matching CSV and the TOML config. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = entradir::directory::upn_csv::UpnMap::parse(Path::new("usermatching.csv"), text);
    if let Ok(cfg) = entradir::config::Config::parse(Path::new("entradir.toml"), text) {
        let _ = cfg.directory_settings();
    }
});
