//! The drop-folder service, driven step by step with an injected clock and free-space probe
//! (deterministic), plus one end-to-end run of `ctsentinel watch` on temp folders.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::service::config::Config;
use ctsentinel::service::watch::{Event, FreeSpace, Service};

#[derive(Clone)]
struct FakeFree(Rc<Cell<u64>>);

impl FreeSpace for FakeFree {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(self.0.get())
    }
}

struct Rig {
    dir: tempfile::TempDir,
    free: Rc<Cell<u64>>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        let cfg = format!(
            "board = \"generic-x86_64\"\ndrop = [\"{d}/drop\"]\nstate = \"{d}/state\"\nmodels = \"{m}\"\nstability_s = 10\npoll_interval_s = 1\nmin_free_mb = 100\ndisplay = \"none\"\n",
            d = dir.path().display(),
            m = common::models().display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Rig {
            dir,
            free: Rc::new(Cell::new(1 << 40)),
        }
    }

    fn config(&self) -> Config {
        Config::load(
            &self.dir.path().join("config.toml"),
            Some(&common::repo().join("boards")),
        )
        .unwrap()
    }

    /// Rewrite the rig's config.toml, each `(from, to)` exactly once; returns its path.
    fn edit_config(&self, edits: &[(&str, &str)]) -> PathBuf {
        let p = self.dir.path().join("config.toml");
        let mut text = std::fs::read_to_string(&p).unwrap();
        for (from, to) in edits {
            assert_eq!(text.matches(from).count(), 1, "config line {from:?}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A fresh service on the same state folder (what a restart is).
    fn service(&self) -> Service<FakeFree> {
        let classifier = Classifier::load(&common::models(), Options { threads: 2 }).unwrap();
        Service::new(self.config(), classifier, FakeFree(self.free.clone())).unwrap()
    }

    fn series(&self, patient: &str, series: &str) -> PathBuf {
        let p = self.dir.path().join("drop").join(patient).join(series);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn results(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.dir.path().join("state/results");
        for p in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if p.file_name() == "quarantine" {
                continue;
            }
            for f in std::fs::read_dir(p.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }
}

/// `ctsentinel watch --config CONFIG` with the repository's board profiles.
fn spawn_watch(config: &Path) -> std::process::Child {
    common::ctsentinel()
        .args(["watch", "--config"])
        .arg(config)
        .arg("--boards")
        .arg(common::repo().join("boards"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn synthetic_series(dir: &Path, n: usize) {
    for i in 1..=n {
        common::write_slice(&dir.join(format!("IM{i:05}.tif")), 1100, 2000 * i);
    }
}

#[test]
fn slow_copy_gives_one_result_after_the_copy_ends_and_restarts_do_not_repeat_it() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let dir = rig.series("p1", "SR_2");
    let mut t = 0;
    for i in 1..=6 {
        // One slice every 2 s, shorter than the 10 s stability window.
        common::write_slice(&dir.join(format!("IM{i:05}.tif")), 1100, 2000 * i);
        assert_eq!(svc.tick(secs(t)), 0, "processed during the copy (t={t})");
        t += 2;
    }
    assert_eq!(svc.tick(secs(t + 5)), 0, "not yet stable");
    assert_eq!(svc.tick(secs(t + 11)), 1);
    assert_eq!(svc.tick(secs(t + 30)), 0, "exactly once");
    let results = rig.results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].ends_with("p1/SR_2.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&results[0]).unwrap()).unwrap();
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 6);
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Result { series, .. } if series == "p1/SR_2")));
    drop(svc);
    let mut again = rig.service();
    assert_eq!(
        again.tick(secs(0)) + again.tick(secs(100)),
        0,
        "a restart does not repeat a done series"
    );
    assert_eq!(rig.results().len(), 1);
}

#[test]
fn interrupted_copy_is_not_processed_until_it_is_complete() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let dir = rig.series("p2", "SR_1");
    synthetic_series(&dir, 3);
    std::fs::write(dir.join("IM00004.tif.part"), b"II*\0half a file").unwrap();
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)) + svc.tick(secs(40)), 0);
    assert!(rig.results().is_empty());
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Incomplete { reason, .. } if reason.contains("IM00004.tif.part"))));
    // The copy resumes and completes.
    std::fs::remove_file(dir.join("IM00004.tif.part")).unwrap();
    common::write_slice(&dir.join("IM00004.tif"), 1100, 8000);
    assert_eq!(svc.tick(secs(41)), 0);
    assert_eq!(svc.tick(secs(60)), 1);
    assert_eq!(rig.results().len(), 1);
}

#[test]
fn crash_before_done_is_journaled_reprocesses_into_the_same_single_result() {
    let rig = Rig::new();
    let mut svc = rig.service();
    synthetic_series(&rig.series("p3", "SR_1"), 3);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1);
    drop(svc);
    // Simulate a power cut after the result was renamed into place but before `done` was
    // journaled: drop the journal's last line and tear a bit of it back on.
    let journal = rig.dir.path().join("state/journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "processing + done");
    std::fs::write(&journal, format!("{}\n{}", lines[0], &lines[1][..20])).unwrap();
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1, "processed again after the crash");
    let results = rig.results();
    assert_eq!(results.len(), 1, "still exactly one result: {results:?}");
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&results[0]).unwrap()).expect("whole JSON");
    drop(svc);
    let mut svc = rig.service();
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)), 0, "now journaled as done");
}

#[test]
fn malformed_files_are_quarantined_with_reasons_and_the_service_goes_on() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let bad = rig.series("p4", "SR_1");
    synthetic_series(&bad, 3);
    std::fs::write(bad.join("IM00010.tif"), b"").unwrap();
    std::fs::write(bad.join("IM00011.tif"), b"random bytes, not an image").unwrap();
    let eight_bit = common::TiffSpec {
        bits: 8,
        data: vec![0; 512 * 512],
        ..common::TiffSpec::gray16(512, 512, &[])
    };
    std::fs::write(bad.join("IM00012.tif"), eight_bit.bytes()).unwrap();
    let outside = rig.dir.path().join("secret.tif");
    common::write_slice(&outside, 1100, 100);
    std::os::unix::fs::symlink(&outside, bad.join("IM00013.tif")).unwrap();
    synthetic_series(&rig.series("p5", "SR_1"), 2);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 2, "both series processed");
    let q = rig.dir.path().join("state/results/quarantine/p4/SR_1");
    for (file, why) in [
        ("IM00010.tif", "empty file"),
        ("IM00011.tif", "not a TIFF"),
        ("IM00012.tif", "8-bit"),
        ("IM00013.tif", "outside the drop folder"),
    ] {
        assert!(
            q.join(file).exists() || q.join(file).symlink_metadata().is_ok(),
            "{file} moved to quarantine"
        );
        assert!(
            !bad.join(file).exists() && bad.join(file).symlink_metadata().is_err(),
            "{file} left the drop folder"
        );
        let reason = std::fs::read_to_string(q.join(format!("{file}.reason.txt"))).unwrap();
        assert!(reason.contains(why), "{file}: {reason}");
    }
    assert!(outside.exists(), "the link's target is never touched");
    assert_eq!(rig.results().len(), 2);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rig.dir.path().join("state/results/p4/SR_1.json")).unwrap())
            .unwrap();
    assert_eq!(
        v["series"][0]["slices"].as_array().unwrap().len(),
        3,
        "the good slices were used"
    );
}

#[test]
fn a_series_that_ended_the_service_three_times_is_moved_aside_and_later_series_go_on() {
    use ctsentinel::service::journal::{Journal, Record, State};
    use ctsentinel::service::watch::{fingerprint, MAX_UNFINISHED_ATTEMPTS};
    let rig = Rig::new();
    let poison = rig.series("p9", "SR_1");
    synthetic_series(&poison, 3);
    let retried = rig.series("p10", "SR_1");
    synthetic_series(&retried, 2);
    synthetic_series(&rig.series("p11", "SR_1"), 2);
    // The journal as earlier runs left it: each started the series and died before finishing
    // (what a panic with panic=abort, or a crash, leaves behind). p9 three times, p10 twice.
    let cfg = rig.config();
    std::fs::create_dir_all(&cfg.state).unwrap();
    let mut j = Journal::open(&cfg.journal()).unwrap();
    for (name, dir, times) in [("p9/SR_1", &poison, MAX_UNFINISHED_ATTEMPTS), ("p10/SR_1", &retried, 2)] {
        let (key, _) = fingerprint(name, dir).unwrap();
        for _ in 0..times {
            let r = Record {
                key: key.clone(),
                series: name.into(),
                state: State::Processing,
                at: 1,
            };
            j.append(&r).unwrap();
        }
    }
    drop(j);

    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 3, "all three series handled");
    let q = rig.dir.path().join("state/results/quarantine/p9/SR_1");
    for i in 1..=3 {
        let f = format!("IM{i:05}.tif");
        assert!(
            q.join(&f).is_file() && !poison.join(&f).exists(),
            "{f} moved aside, not lost"
        );
        let reason = std::fs::read_to_string(q.join(format!("{f}.reason.txt"))).unwrap();
        assert!(reason.contains("ended the service 3 times"), "{reason}");
    }
    let mut results: Vec<_> = rig
        .results()
        .iter()
        .map(|p| p.strip_prefix(rig.dir.path()).unwrap().to_owned())
        .collect();
    results.sort();
    assert_eq!(
        results,
        [
            Path::new("state/results/p10/SR_1.json"),
            Path::new("state/results/p11/SR_1.json")
        ],
        "two attempts are retried; the series behind the poisoned one are processed"
    );
    drop(svc);
    let mut svc = rig.service();
    assert_eq!(
        svc.tick(secs(0)) + svc.tick(secs(20)),
        0,
        "a restart does not try it again"
    );
}

#[test]
fn low_disk_stops_new_work_and_resumes_by_itself() {
    let rig = Rig::new();
    let mut svc = rig.service();
    synthetic_series(&rig.series("p6", "SR_1"), 2);
    rig.free.set(10 * 1024 * 1024);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 0);
    assert!(svc.drain_events().iter().any(|e| matches!(e, Event::DiskLow { .. })));
    rig.free.set(1 << 40);
    assert_eq!(svc.tick(secs(21)), 1);
    assert!(svc.drain_events().iter().any(|e| matches!(e, Event::DiskOk)));
}

#[test]
fn config_errors_name_the_key() {
    let rig = Rig::new();
    let p = rig.dir.path().join("config.toml");
    let good = std::fs::read_to_string(&p).unwrap();
    for (from, to, why) in [
        ("stability_s = 10", "stability_s = -1", "stability_s"),
        ("display = \"none\"", "display = \"hologram\"", "display"),
        ("board = \"generic-x86_64\"", "board = \"../../etc/passwd\"", "board"),
        (
            "board = \"generic-x86_64\"",
            "board = \"nosuchboard\"",
            "nosuchboard.toml",
        ),
        (
            "min_free_mb = 100",
            "min_free_mb = 100\ncolour = \"red\"",
            "unknown field",
        ),
    ] {
        std::fs::write(&p, good.replace(from, to)).unwrap();
        let err = Config::load(&p, Some(&common::repo().join("boards")))
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn every_shipped_board_profile_and_the_example_config_load() {
    let boards = common::repo().join("boards");
    for b in ["rpi4", "rpi5", "jetson-orin-nano", "generic-x86_64"] {
        let board = ctsentinel::service::config::load_board(&boards.join(format!("{b}.toml"))).unwrap();
        assert_eq!(board.name, b);
    }
    let c = Config::load(&boards.join("ctsentinel.example.toml"), Some(&boards)).unwrap();
    assert_eq!(c.stability, secs(60));
}

#[test]
fn watch_end_to_end_writes_a_result_for_a_copied_series() {
    let rig = Rig::new();
    let p = rig.edit_config(&[
        ("stability_s = 10", "stability_s = 1"),
        ("poll_interval_s = 1", "poll_interval_s = 0.2"),
        ("display = \"none\"", "display = \"png\"\ninotify = false"), // the polling path
    ]);
    let mut child = spawn_watch(&p);
    let source = common::shared_data().map(|d| d.join("ct16/normal/ctmd_normal001/SR_1"));
    let dest = rig.series("ctmd_normal001", "SR_1");
    match &source {
        Some(src) => {
            for f in std::fs::read_dir(src).unwrap().flatten() {
                std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
            }
        }
        None => synthetic_series(&dest, 4),
    }
    let result = rig.dir.path().join("state/results/ctmd_normal001/SR_1.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !result.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(600)); // the display task shows the result
    let _ = child.kill();
    let _ = child.wait();
    // The service drove the display: the PNG backend holds the result screen.
    let shown = image::open(rig.dir.path().join("state/display/screen.png"))
        .expect("a screen was shown")
        .into_rgb8();
    assert_eq!(
        (shown.width(), shown.height()),
        (800, 480),
        "generic-x86_64 board panel size"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).expect("a result within 120 s")).unwrap();
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    if source.is_some() {
        assert_eq!(v["selected_slices"], 24);
        assert_eq!(
            v["verdict"], "normal",
            "in-sample shared patient, see models/ctsentinel-fpn256.md"
        );
    }
}

#[test]
fn kill_9_at_many_points_loses_nothing_duplicates_nothing_tears_nothing() {
    let rig = Rig::new();
    let p = rig.edit_config(&[
        ("stability_s = 10", "stability_s = 0.3"),
        ("poll_interval_s = 1", "poll_interval_s = 0.05"),
    ]);
    for i in 0..10 {
        synthetic_series(&rig.series(&format!("k{i}"), "SR_1"), 3);
    }
    let spawn = || spawn_watch(&p);
    // SIGKILL at spread-out moments: during start-up and self-test, between series, mid-series.
    for ms in [300u64, 900, 1500, 1800, 2100, 2400, 2700, 3300] {
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut child = spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rig
        .results()
        .iter()
        .filter(|r| r.extension().is_some_and(|e| e == "json"))
        .count()
        < 10
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500)); // let any stale-temporary sweep finish
    child.kill().unwrap();
    child.wait().unwrap();
    let results = rig.results();
    assert_eq!(
        results.len(),
        10,
        "exactly one file per series, no leftovers: {results:?}"
    );
    for r in &results {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(r).unwrap()).expect("whole JSON");
        assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 3, "{}", r.display());
    }
    let journal = std::fs::read_to_string(rig.dir.path().join("state/journal")).unwrap();
    let done = journal.lines().filter(|l| l.contains("\"state\":\"done\"")).count();
    assert!(done >= 10, "every series journaled done ({done})");
}

#[test]
fn identical_scans_under_two_patient_folders_each_get_a_result() {
    let rig = Rig::new();
    let mut svc = rig.service();
    synthetic_series(&rig.series("twin_a", "SR_1"), 2);
    synthetic_series(&rig.series("twin_b", "SR_1"), 2);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 2);
    assert_eq!(rig.results().len(), 2);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Soak: several hundred small series through the watcher with bounded memory. Slow (about a
/// minute): `cargo test --test service -- --ignored`, run by .ci/run.
#[test]
#[ignore]
fn soak_300_series_with_bounded_memory() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let mut t = 0;
    let mut rss = Vec::new();
    for batch in 0..6 {
        for i in 0..50 {
            let dir = rig.series(&format!("s{batch}_{i}"), "SR_1");
            common::write_slice(&dir.join("IM1.tif"), 1100, 1000 + i);
        }
        svc.tick(secs(t));
        t += 20;
        assert_eq!(svc.tick(secs(t)), 50, "batch {batch}");
        svc.drain_events();
        rss.push(rss_kib());
    }
    assert_eq!(rig.results().len(), 300);
    eprintln!("soak: RSS after each 50 series (KiB): {rss:?}");
    // Growth after the first batch (model, plan and allocator warm) stays small: per-series
    // state is a signature and a journal entry, not pixels.
    assert!(
        rss[5] < rss[0] + 64 * 1024,
        "RSS grew from {} to {} KiB",
        rss[0],
        rss[5]
    );
}

#[test]
fn watch_with_inotify_sees_a_copy_long_before_the_next_poll() {
    let rig = Rig::new();
    // One poll every 10 minutes: only inotify can make this quick.
    let p = rig.edit_config(&[
        ("stability_s = 10", "stability_s = 1"),
        ("poll_interval_s = 1", "poll_interval_s = 600\ninotify = true"),
    ]);
    let mut child = spawn_watch(&p);
    std::thread::sleep(Duration::from_secs(4)); // self-test and first (empty) look
    synthetic_series(&rig.series("ino", "SR_1"), 3);
    let result = rig.dir.path().join("state/results/ino/SR_1.json");
    let t = std::time::Instant::now();
    while !result.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        result.exists(),
        "no result within 60 s although the poll interval is 600 s"
    );
}
