//! Sync benchmark (by hand: `cargo bench --bench sync`; `-- --users 10000` for a smaller run).
//!
//! 1. A full sync of a simulated tenant (default 100k users, 10k groups, 20k devices): wall time, Graph
//!    requests, and peak RSS of the process (simulator included — it holds the tenant in the same process).
//! 2. A 100-change delta applied to a 10k and to a 100k directory: the round's wall time and the time the
//!    directory itself spends applying it. The two should be nearly equal: applying costs in proportion to the
//!    change, not to the directory.

use entradir::directory::phone::PhoneNormalizer;
use entradir::directory::{Directory, Naming, Settings};
use entradir::graph::{PhotoPlan, Syncer};
use graph_sim::GraphKind;
use graph_sim::{self as sim, SimOptions};
use serde_json::json;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(users: usize, groups: usize, devices: usize, photos: bool) {
    let sim = sim::start(SimOptions {
        users,
        groups,
        devices,
        contacts: 0,
        page_size: 999,
        photo_ratio: if photos { 0.1 } else { 0.0 },
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    let mut g = entradir::demo::graph_config(&sim);
    g.photos = photos;
    let mut syncer = Syncer::new(g).expect("syncer");
    let settings = Settings::new(
        Naming::new("DC=contoso,DC=example").unwrap(),
        PhoneNormalizer::new("DE").unwrap(),
    );
    let mut dir = Directory::new(settings, Default::default(), Default::default());

    let t = Instant::now();
    let round = syncer
        .round(&Default::default(), &PhotoPlan::default())
        .await
        .expect("full sync");
    let fetched = t.elapsed();
    let t2 = Instant::now();
    dir.apply(&round);
    let applied = t2.elapsed();
    println!(
        "full sync  {users:>6} users {groups:>5} groups {devices:>5} devices: {:>6.2} s total ({:.2} s Graph, {:.2} s apply), {} requests, peak RSS {:.0} MiB",
        (fetched + applied).as_secs_f64(),
        fetched.as_secs_f64(),
        applied.as_secs_f64(),
        round.stats.requests + round.stats.photo_requests,
        peak_rss_mib()
    );

    let ctl = sim.control();
    let ids = ctl.ids(GraphKind::User);
    for (n, id) in ids.iter().take(100).enumerate() {
        ctl.update_user(
            id,
            json!({"jobTitle": format!("Bench {n}")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .expect("update");
    }
    let plan = PhotoPlan {
        known: dir.photos_known(),
        recheck: Vec::new(),
    };
    let t = Instant::now();
    let round = syncer.round(dir.delta_links(), &plan).await.expect("delta");
    let fetched = t.elapsed();
    let t2 = Instant::now();
    let report = dir.apply(&round);
    let applied = t2.elapsed();
    println!(
        "100-change delta on {:>6} entries: {:>7.1} ms total ({:.1} ms Graph, {:.2} ms apply), {} entries changed",
        dir.snapshot().len(),
        (fetched + applied).as_secs_f64() * 1e3,
        fetched.as_secs_f64() * 1e3,
        applied.as_secs_f64() * 1e3,
        report.entries_changed
    );
    sim.shutdown().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too, so do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let users = arg("--users", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run(users / 10, users / 100, users / 50, false).await;
        run(users, users / 10, users / 5, std::env::args().any(|a| a == "--photos")).await;
    });
}
