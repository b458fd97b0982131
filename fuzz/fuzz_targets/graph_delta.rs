//! Garbage from Graph: a delta page's items applied to the store and projected, as a sync round would. Never a
//! panic, whatever the JSON holds.
#![no_main]

use entradir::directory::change::{GraphKind, Round};
use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{Directory, Naming, Settings};
use entradir::graph::delta::item_changes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let items = match page.get("value").and_then(|v| v.as_array()) {
        Some(items) => items.clone(),
        None => vec![page],
    };
    // One item per object id: a page that changes an object twice is applied as Graph orders it, and applying
    // it again would then really be a change (of `whenChanged`), which the check below must not mistake.
    let mut seen = std::collections::HashSet::new();
    let items: Vec<_> = items
        .into_iter()
        .filter(|item| seen.insert(item.get("id").map(|v| v.to_string())))
        .collect();
    let mut round = Round::default();
    for (i, item) in items.iter().enumerate() {
        let kind = GraphKind::ALL[i % GraphKind::ALL.len()];
        let _ = item_changes(kind, item, &mut round.changes);
    }
    let settings = Settings::new(
        Naming::new("DC=contoso,DC=example").expect("base DN"),
        PhoneNormalizer::new("DE").expect("country"),
    );
    let mut dir = Directory::new(settings, Default::default(), Default::default());
    dir.apply(&round);
    // The same round again changes nothing.
    let v = dir.snapshot().version;
    dir.apply(&round);
    assert_eq!(dir.snapshot().version, v, "a repeated round is no change");
});
