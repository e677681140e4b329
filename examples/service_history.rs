//! How the service's restart time, poll cost and memory follow its history (issue 32): a state
//! folder whose receiver has delivered `N` series, all processed, of which the newest
//! `PRESENT` are still in `received/` and the rest were pruned after `retention_days` (their
//! results stay under `results/`, their journal records are older than the retention).
//!
//! One history per process, so the peak RSS is this history's alone; `bench/service_history.sh`
//! runs it for a small and a large `N` in the same run and prints the ratios.
//!
//! ```sh
//! cargo run --release --example service_history -- N PRESENT
//! ```
//! prints one JSON line: restart (Service::new: journal replay, sweeps), the first look (journal
//! compaction happens there), the median of later looks, VmRSS / VmHWM, journal lines.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::service::config::Config;
use ctsentinel::service::display_task::Display;
use ctsentinel::service::journal::{Journal, Record, State};
use ctsentinel::service::machine::Place;
use ctsentinel::service::run::{FreeSpace, Service};
use ctsentinel::service::{dropfs, layout};

struct Plenty;

impl FreeSpace for Plenty {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(1 << 40)
    }
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N PRESENT"))
        .collect();
    let (n, present) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(20),
    );
    let present = present.min(n);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(dir.path().join("drop")).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "board = \"generic-x86_64\"\ndrop = [\"{d}/drop\"]\nstate = \"{s}\"\nmodels = \"{m}\"\n\
             stability_s = 10\npoll_interval_s = 1\nmin_free_mb = 100\nretention_days = 30\ndisplay = \"none\"\n\
             [dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"CTSENTINEL\"\nallowed_callers = [\"CT\"]\n",
            d = dir.path().display(),
            s = state.display(),
            m = repo.join("models").display()
        ),
    )
    .unwrap();
    let lay = layout::Layout::new(&state);
    let received = lay.received();
    let drop_id = layout::drop_id(&received);
    // The series still held: one study folder each, 3 instance files (never read: handled).
    for i in n - present..n {
        let d = received.join(format!("PAT{i:06}~{i:012x}"));
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..3 {
            std::fs::write(d.join(format!("aaaaaaaaaa_1.2.3.{i}.{k}.dcm")), [0u8; 512]).unwrap();
        }
    }
    let listing = dropfs::list(&received, &drop_id).unwrap();
    assert_eq!(listing.series.len(), present, "{:?}", listing.refused);
    let stats: std::collections::HashMap<Place, String> =
        listing.series.into_iter().map(|s| (s.place, s.stat)).collect();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut journal = Journal::open(&lay.journal()).unwrap();
    for i in 0..n {
        let patient = format!("PAT{i:06}~{i:012x}");
        let place = Place::new(&drop_id, OsStr::new(&patient), OsStr::new(dropfs::SELF));
        let held = i >= n - present;
        // What each processed series left: its result files (JSON, sheet, SR, SC).
        let result = lay.result_file(&drop_id, OsStr::new(&patient), OsStr::new(dropfs::SELF));
        std::fs::create_dir_all(result.parent().unwrap()).unwrap();
        for ext in ["json", "png", "sr.dcm", "sc.dcm"] {
            std::fs::write(result.with_extension(ext), [b'x'; 256]).unwrap();
        }
        // Pruned ones finished long ago (beyond the retention); held ones recently.
        let at = if held { wall - 3600 } else { wall - 86_400 * 60 };
        journal
            .append(&Record {
                key: format!("{i:064x}"),
                series: format!("{patient}/."),
                state: State::Done,
                at,
                place: Some(place.clone()),
                stat: if held {
                    stats.get(&place).cloned()
                } else {
                    Some("gone".into())
                },
            })
            .unwrap();
    }
    drop(journal);
    let rss_before = status_kb("VmRSS:");
    let classifier = Classifier::load(&repo.join("models"), Options { threads: 1 }).unwrap();

    // The first start after this history (no clean-stop marker: as after a power cut) sweeps
    // every result folder and looks at the journal once (compaction); what a restart after a
    // clean stop costs is the second start's.
    let start = |c: Classifier| {
        let config = Config::load(&dir.path().join("config.toml"), Some(&repo.join("boards"))).unwrap();
        Service::new(config, c, Plenty, Display::detached(), Arc::new(AtomicBool::new(false))).unwrap()
    };
    let t = Instant::now();
    let mut svc = start(classifier);
    let first_start = t.elapsed();
    let t = Instant::now();
    assert_eq!(
        svc.tick(Duration::ZERO),
        0,
        "every held series is recognised as processed"
    );
    let first_look_after_history = t.elapsed();
    // Stopped as systemd stops it (SIGTERM): the loop leaves and records the clean stop.
    ctsentinel::service::run::run(svc, Arc::new(AtomicBool::new(true)));
    let classifier = Classifier::load(&repo.join("models"), Options { threads: 1 }).unwrap();
    let t = Instant::now();
    let mut svc = start(classifier);
    let restart = t.elapsed();
    let rss_model = status_kb("VmRSS:");
    let t = Instant::now();
    let done = svc.tick(Duration::ZERO);
    let first = t.elapsed();
    assert_eq!(done, 0, "every held series is recognised as processed");
    let mut looks = Vec::new();
    for k in 1..=40u64 {
        let t = Instant::now();
        let done = svc.tick(Duration::from_secs(k));
        looks.push(t.elapsed());
        assert_eq!(done, 0);
    }
    looks.sort();
    let lines = std::fs::read_to_string(lay.journal()).unwrap().lines().count();
    println!(
        "{{\"history\": {n}, \"held\": {present}, \"first_start_ms\": {:.2}, \"first_look_after_history_ms\": {:.2}, \"restart_ms\": {:.2}, \"first_look_ms\": {:.2}, \"look_median_ms\": {:.3}, \
         \"rss_kb\": {}, \"rss_growth_during_looks_kb\": {}, \"hwm_kb\": {}, \"rss_at_start_kb\": {rss_before}, \"journal_lines_after\": {lines}, \"tracked\": {}}}",
        first_start.as_secs_f64() * 1e3,
        first_look_after_history.as_secs_f64() * 1e3,
        restart.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
        looks[looks.len() / 2].as_secs_f64() * 1e3,
        status_kb("VmRSS:"),
        status_kb("VmRSS:").saturating_sub(rss_model),
        status_kb("VmHWM:"),
        svc.tracked(),
    );
}
