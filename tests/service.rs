//! The drop-folder service, driven step by step with an injected clock and free-space probe
//! (deterministic), on real temp folders with the real model. The end-to-end tests of the
//! real binary (kills, signals, links, full disk) are in `tests/service_binary.rs`; the state
//! machine's property tests in `tests/service_machine.rs`.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::present::display::Screen;
use ctsentinel::service::config::Config;
use ctsentinel::service::display_task::Display;
use ctsentinel::service::event::Event;
use ctsentinel::service::journal::{Journal, Record, State};
use ctsentinel::service::run::{FreeSpace, Service};
use ctsentinel::service::{dropfs, layout};

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
    display: Display,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_drops(&["drop"])
    }

    fn with_drops(drops: &[&str]) -> Rig {
        Rig::with_drops_and(drops, "")
    }

    /// A rig that also receives DICOM (`[dicom]` table; `state/received` is then a drop folder;
    /// the listener itself is not started by `Service`).
    fn with_dicom() -> Rig {
        Rig::with_drops_and(
            &["drop"],
            "\n[dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"CTSENTINEL\"\nallowed_callers = [\"CT\"]\nresend_wait_s = 100\n",
        )
    }

    fn with_drops_and(drops: &[&str], extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut list = Vec::new();
        for d in drops {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
            list.push(format!("\"{}/{d}\"", dir.path().display()));
        }
        let cfg = format!(
            "board = \"generic-x86_64\"\ndrop = [{}]\nstate = \"{d}/state\"\nmodels = \"{m}\"\nstability_s = 10\npoll_interval_s = 1\nmin_free_mb = 100\ndisplay = \"none\"\n{extra}",
            list.join(", "),
            d = dir.path().display(),
            m = common::models().display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Rig {
            dir,
            free: Rc::new(Cell::new(1 << 40)),
            display: Display::detached(),
        }
    }

    fn config(&self) -> Config {
        Config::load(
            &self.dir.path().join("config.toml"),
            Some(&common::repo().join("boards")),
        )
        .unwrap()
    }

    /// A fresh service on the same state folder (what a restart is).
    fn service(&self) -> Service<FakeFree> {
        let classifier = Classifier::load(&common::models(), Options { threads: 2 }).unwrap();
        Service::new(
            self.config(),
            classifier,
            FakeFree(self.free.clone()),
            self.display.clone(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap()
    }

    fn drop_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn series(&self, patient: &str, series: &str) -> PathBuf {
        self.series_in("drop", patient, series)
    }

    fn series_in(&self, drop: &str, patient: &str, series: &str) -> PathBuf {
        let p = self.drop_dir(drop).join(patient).join(series);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where the result of `<patient>/<series>` of drop folder `drop` goes.
    fn result_path(&self, drop: &str, patient: &str, series: &str) -> PathBuf {
        layout::Layout::new(&self.state()).result_file(
            &layout::drop_id(&self.drop_dir(drop)),
            patient.as_ref(),
            series.as_ref(),
        )
    }

    fn results(&self) -> Vec<PathBuf> {
        common::files_under(&self.state().join("results"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect()
    }

    fn journal_lines(&self) -> usize {
        std::fs::read_to_string(self.state().join("journal"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// Every entry under `dir` (links not followed): kind, size, mtime and content. Equal before
/// and after means the service did not touch the tree.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:?}", m.modified().unwrap())
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "file {} {:?} {}",
                    m.len(),
                    m.modified().unwrap(),
                    ctsentinel::classify::sha256_hex(&bytes)
                )
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), desc);
        }
    }
    out
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn synthetic_series(dir: &Path, n: usize) {
    for i in 1..=n {
        common::write_slice(&dir.join(format!("IM{i:05}.tif")), 1100, 2000 * i);
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("whole JSON")
}

#[test]
fn slow_copy_gives_one_result_after_the_copy_ends_and_restarts_do_not_reread_it() {
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
    assert_eq!(results, [rig.result_path("drop", "p1", "SR_2")]);
    let v = json(&results[0]);
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 6);
    assert_eq!(v["source"]["patient"], "p1");
    assert_eq!(v["source"]["series_folder"], "SR_2");
    assert_eq!(v["model"]["sha256"].as_str().unwrap().len(), 64);
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Result { series, .. } if series == "p1/SR_2")));
    assert!(
        matches!(rig.display.pending(), Some(Screen::Result { .. })),
        "the result is the screen left to show"
    );
    drop(svc);
    let lines = rig.journal_lines();
    let mut again = rig.service();
    assert_eq!(
        again.tick(secs(0)) + again.tick(secs(100)),
        0,
        "a restart does not repeat it"
    );
    assert_eq!(
        rig.journal_lines(),
        lines,
        "recognised from its stat signature, not re-read"
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
    std::fs::remove_file(dir.join("IM00004.tif.part")).unwrap();
    common::write_slice(&dir.join("IM00004.tif"), 1100, 8000);
    assert_eq!(svc.tick(secs(41)), 0);
    assert_eq!(svc.tick(secs(60)), 1);
    assert_eq!(
        json(&rig.results()[0])["series"][0]["slices"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn a_stop_after_the_result_was_written_recovers_it_without_computing_it_again() {
    let rig = Rig::new();
    let mut svc = rig.service();
    synthetic_series(&rig.series("p3", "SR_1"), 3);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1);
    drop(svc);
    let result = rig.result_path("drop", "p3", "SR_1");
    let written = json(&result)["source"]["written_at"].clone();
    // A power cut after the result was renamed into place but before `done` was journaled:
    // drop the journal's last line and tear a bit of it back on.
    let journal = rig.state().join("journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "processing + done");
    std::fs::write(&journal, format!("{}\n{}", lines[0], &lines[1][..20])).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a recomputation would change written_at
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1, "recovered");
    assert_eq!(json(&result)["source"]["written_at"], written, "not computed again");
    assert_eq!(rig.results().len(), 1);
    drop(svc);
    let mut svc = rig.service();
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)), 0, "now journaled as done");
}

#[test]
fn a_series_with_bad_files_is_undetermined_naming_them_and_the_drop_folder_is_untouched() {
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
    std::fs::create_dir(bad.join("thumbs")).unwrap();
    synthetic_series(&rig.series("p5", "SR_1"), 2);
    let before = tree(&rig.drop_dir("drop"));
    let outside_before = std::fs::read(&outside).unwrap();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 2, "both series get a result");
    assert_eq!(
        tree(&rig.drop_dir("drop")),
        before,
        "nothing in the drop folder moved or changed"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), outside_before);

    let v = json(&rig.result_path("drop", "p4", "SR_1"));
    assert_eq!(v["verdict"], "undetermined", "no verdict on part of a series");
    assert!(v["reason"].as_str().unwrap().contains("partial"), "{}", v["reason"]);
    let unreadable = v["series"][0]["unreadable"].as_array().unwrap();
    let names: Vec<&str> = unreadable.iter().map(|u| u["file"].as_str().unwrap()).collect();
    assert_eq!(names, ["IM00010.tif", "IM00011.tif", "IM00012.tif", "IM00013.tif"]);
    assert_eq!(v["source"]["ignored"][0]["file"], "thumbs");
    // The CLI gives the same answer on the same folder.
    let out = common::ctsentinel()
        .args(["scan", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["verdict"], "undetermined");

    let key = v["source"]["key"].as_str().unwrap();
    let q = layout::Layout::new(&rig.state()).quarantine_dir(
        &layout::drop_id(&rig.drop_dir("drop")),
        "p4".as_ref(),
        "SR_1".as_ref(),
        key,
    );
    for (file, why, copied) in [
        ("IM00010.tif", "empty file", true),
        ("IM00011.tif", "neither a TIFF nor a DICOM", true),
        ("IM00012.tif", "8-bit", true),
        ("IM00013.tif", "symbolic link", false),
    ] {
        assert_eq!(q.join(file).is_file(), copied, "{file} copy in quarantine");
        let reason = std::fs::read_to_string(q.join(format!("{file}.reason.txt"))).unwrap();
        assert!(reason.contains(why), "{file}: {reason}");
    }
    assert!(
        std::fs::symlink_metadata(q.join("IM00013.tif")).is_err(),
        "a link is never copied or followed"
    );
    assert_eq!(json(&rig.result_path("drop", "p5", "SR_1"))["verdict"], "normal");
}

#[test]
fn linked_series_and_patient_folders_are_refused_and_their_targets_untouched() {
    let rig = Rig::new();
    let decoy = rig.dir.path().join("outside");
    std::fs::create_dir_all(decoy.join("SR_1")).unwrap();
    std::fs::write(decoy.join("important.conf"), b"x").unwrap();
    synthetic_series(&decoy.join("SR_1"), 2);
    let decoy_before = tree(&decoy);
    std::fs::create_dir_all(rig.drop_dir("drop").join("p1")).unwrap();
    std::os::unix::fs::symlink(&decoy, rig.drop_dir("drop").join("p1/SR_1")).unwrap();
    std::os::unix::fs::symlink(&decoy, rig.drop_dir("drop").join("p2")).unwrap();
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)) + svc.tick(secs(40)), 0);
    assert_eq!(tree(&decoy), decoy_before, "the link targets are untouched");
    assert!(rig.results().is_empty());
    let events = svc.drain_events();
    let refused: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { path, reason } if reason.contains("symbolic link") => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["p1/SR_1", "p2"], "each reported once: {events:?}");
}

fn snapshot_key(rig: &Rig, patient: &str, series: &str) -> String {
    let drop = rig.drop_dir("drop");
    let l = dropfs::list(&drop, &layout::drop_id(&drop)).unwrap();
    let s = l
        .series
        .iter()
        .find(|s| s.place.patient == patient && s.place.series == series)
        .unwrap();
    let work = rig.dir.path().join("keywork");
    let snap = dropfs::snapshot(&drop, &s.place, &s.stat, &work).unwrap();
    snap.key.clone()
}

fn journal_records(rig: &Rig, key: &str, series: &str, states: &[State]) {
    let state = rig.state();
    std::fs::create_dir_all(&state).unwrap();
    let mut j = Journal::open(&state.join("journal")).unwrap();
    for s in states {
        j.append(&Record {
            key: key.into(),
            series: series.into(),
            state: *s,
            at: 1,
            place: None,
            stat: None,
        })
        .unwrap();
    }
}

#[test]
fn a_series_that_crashed_the_service_three_times_is_set_aside_and_later_series_go_on() {
    let rig = Rig::new();
    synthetic_series(&rig.series("p9", "SR_1"), 3);
    synthetic_series(&rig.series("p10", "SR_1"), 2);
    synthetic_series(&rig.series("p11", "SR_1"), 2);
    // What three runs that panicked on p9 leave behind (the hook's marker, journaled at the
    // next start), and three outside kills during p10 (processing lines only).
    use State::{Crashed, Processing};
    journal_records(
        &rig,
        &snapshot_key(&rig, "p9", "SR_1"),
        "p9/SR_1",
        &[Processing, Crashed, Processing, Crashed, Processing, Crashed],
    );
    journal_records(
        &rig,
        &snapshot_key(&rig, "p10", "SR_1"),
        "p10/SR_1",
        &[Processing, Processing, Processing],
    );
    let before = tree(&rig.drop_dir("drop"));
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 3, "all three series get a result");
    let v = json(&rig.result_path("drop", "p9", "SR_1"));
    assert_eq!(v["verdict"], "undetermined");
    assert!(
        v["reason"].as_str().unwrap().contains("ended the service 3 times"),
        "{}",
        v["reason"]
    );
    for p in ["p10", "p11"] {
        assert_ne!(
            json(&rig.result_path("drop", p, "SR_1"))["verdict"],
            "undetermined",
            "{p}: kills are not faults"
        );
    }
    let key = v["source"]["key"].as_str().unwrap();
    let q = layout::Layout::new(&rig.state()).quarantine_dir(
        &layout::drop_id(&rig.drop_dir("drop")),
        "p9".as_ref(),
        "SR_1".as_ref(),
        key,
    );
    assert!(
        q.join("IM00001.tif").is_file() && q.join("reason.txt").is_file(),
        "a copy for the report"
    );
    assert_eq!(
        tree(&rig.drop_dir("drop")),
        before,
        "the series stays in the drop folder"
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

/// Where the result of `received/<patient>/<series>` goes.
fn received_result(rig: &Rig, patient: &str, series: &str) -> PathBuf {
    layout::Layout::new(&rig.state()).result_file(
        &layout::drop_id(&rig.state().join("received")),
        patient.as_ref(),
        series.as_ref(),
    )
}

#[test]
fn a_received_series_with_a_push_marker_waits_for_the_resend_then_is_undetermined_then_the_resend_counts() {
    let rig = Rig::with_dicom();
    let mut svc = rig.service();
    let dir = rig.state().join("received/P1/S1");
    std::fs::create_dir_all(&dir).unwrap();
    synthetic_series(&dir, 3);
    // What dicom_net's inbox leaves when an association stored here and never released.
    std::fs::write(dir.join(".ctsentinel-push-123-abc-0"), b"association").unwrap();
    assert_eq!(
        svc.tick(secs(0)) + svc.tick(secs(20)) + svc.tick(secs(99)),
        0,
        "waits for the resend"
    );
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Incomplete { reason, .. } if reason.contains("A-RELEASE"))));
    assert_eq!(svc.tick(secs(101)), 1, "resend_wait_s (100) passed");
    let result = received_result(&rig, "P1", "S1");
    let v = json(&result);
    assert_eq!(v["verdict"], "undetermined");
    assert!(v["reason"].as_str().unwrap().contains("aborted"), "{v}");
    assert_eq!(svc.tick(secs(150)), 0, "once");
    // The scanner sends it again and releases: the marker goes, the same bytes are processed.
    std::fs::remove_file(dir.join(".ctsentinel-push-123-abc-0")).unwrap();
    assert_eq!(svc.tick(secs(151)) + svc.tick(secs(170)), 1);
    let v = json(&result);
    assert!(!v["reason"].as_str().unwrap_or("").contains("aborted"), "{v}");
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 3);
}

#[test]
fn a_received_series_whose_storage_commitment_covers_every_instance_is_classified_without_the_stability_wait() {
    let rig = Rig::with_dicom(); // stability_s = 10
    let mut svc = rig.service();
    let covered = rig.state().join("received/P1/S1");
    let partly = rig.state().join("received/P2/S1");
    for d in [&covered, &partly] {
        std::fs::create_dir_all(d).unwrap();
        synthetic_series(d, 3);
    }
    // What dicom_net's inbox writes after a commitment: the count of committed instance files.
    std::fs::write(covered.join(".ctsentinel-committed-3"), b"a\nb\nc\n").unwrap();
    std::fs::write(partly.join(".ctsentinel-committed-2"), b"a\nb\n").unwrap();
    assert_eq!(svc.tick(secs(0)), 1, "the covered series at once, the other waits");
    assert!(received_result(&rig, "P1", "S1").exists());
    assert!(
        !received_result(&rig, "P2", "S1").exists(),
        "2 of 3 committed: not covered"
    );
    assert_eq!(svc.tick(secs(5)), 0, "still inside the stability window");
    assert_eq!(svc.tick(secs(11)), 1, "then by stability, as any series");
    // A push marker still there (the association not released): the commitment does not skip it.
    let open = rig.state().join("received/P3/S1");
    std::fs::create_dir_all(&open).unwrap();
    synthetic_series(&open, 2);
    std::fs::write(open.join(".ctsentinel-committed-2"), b"a\nb\n").unwrap();
    std::fs::write(open.join(".ctsentinel-push-7-abc-0"), b"association").unwrap();
    assert_eq!(svc.tick(secs(12)) + svc.tick(secs(30)), 0, "waits for A-RELEASE");
    std::fs::remove_file(open.join(".ctsentinel-push-7-abc-0")).unwrap();
    assert_eq!(svc.tick(secs(31)), 1, "released and covered: at once");
}

#[test]
fn received_series_are_pruned_under_disk_pressure_only_once_they_have_their_result() {
    let rig = Rig::with_dicom();
    let mut svc = rig.service();
    let recv = rig.state().join("received");
    let done = recv.join("P1/S1");
    std::fs::create_dir_all(&done).unwrap();
    synthetic_series(&done, 3);
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)), 1);
    // A second series still arriving: never pruned.
    let pending = recv.join("P2/S2");
    std::fs::create_dir_all(&pending).unwrap();
    synthetic_series(&pending, 3);
    svc.tick(secs(21));
    rig.free.set(10 * 1024 * 1024);
    svc.tick(secs(22));
    svc.tick(secs(23));
    assert!(!done.exists(), "the processed series is pruned under pressure");
    assert!(!recv.join("P1").exists(), "and its empty patient folder");
    assert!(pending.exists(), "an unprocessed series is never pruned");
    assert!(received_result(&rig, "P1", "S1").exists(), "the result stays");
    // Plenty of space again: the pending series is processed, nothing else removed.
    rig.free.set(1 << 40);
    assert_eq!(svc.tick(secs(40)), 1);
    assert!(pending.exists());
}

/// Set a result's `written_at` and `clock_synchronised` as if it had been written then.
fn restamp(result: &Path, at: u64, synchronised: bool) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(result).unwrap()).unwrap();
    v["source"]["written_at"] = at.into();
    v["source"]["clock_synchronised"] = synchronised.into();
    std::fs::write(result, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_received_series_stamped_by_an_unsynchronised_clock_is_not_pruned_by_age() {
    // A Pi without a clock battery writes results stamped 1970 until NTP steps its clock; the
    // step must not make every received series "older than retention_days" at once.
    let rig = Rig::with_drops_and(
        &["drop"],
        "retention_days = 1\n\n[dicom]\nlisten = \"127.0.0.1:0\"\nae_title = \"CTSENTINEL\"\nallowed_callers = [\"CT\"]\n",
    );
    let recv = rig.state().join("received");
    for p in ["P1", "P2"] {
        std::fs::create_dir_all(recv.join(p).join("S1")).unwrap();
        synthetic_series(&recv.join(p).join("S1"), 3);
    }
    let mut svc = rig.service().with_clock_probe(|| Some(false));
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)), 2);
    let fresh = json(&received_result(&rig, "P1", "S1"));
    assert_eq!(
        fresh["source"]["clock_synchronised"],
        serde_json::json!(false),
        "every result says whether its stamp came from a synchronised clock"
    );
    restamp(&received_result(&rig, "P1", "S1"), 1_000, false);
    restamp(&received_result(&rig, "P2", "S1"), 1_000, true);
    drop(svc);
    // Pruning is looked at on the first tick after a start. Now unsynchronised: no age is trusted.
    rig.service().with_clock_probe(|| Some(false)).tick(secs(0));
    assert!(
        recv.join("P2/S1").exists(),
        "no age is trusted while the clock is unsynchronised"
    );
    // Now synchronised: the synchronised stamp older than retention is pruned, the other kept.
    rig.service().with_clock_probe(|| Some(true)).tick(secs(0));
    assert!(
        recv.join("P1/S1").exists(),
        "an unsynchronised stamp never decides a deletion"
    );
    assert!(
        !recv.join("P2/S1").exists(),
        "a synchronised stamp older than retention is pruned"
    );
    assert!(received_result(&rig, "P2", "S1").exists(), "the result stays");
}

#[test]
fn an_unwritable_result_folder_is_retried_with_backoff_never_set_aside() {
    let rig = Rig::new();
    let mut svc = rig.service();
    synthetic_series(&rig.series("p7", "SR_1"), 2);
    // A file where the patient's result folder must go: every write there fails.
    let result = rig.result_path("drop", "p7", "SR_1");
    std::fs::create_dir_all(result.parent().unwrap().parent().unwrap()).unwrap();
    std::fs::write(result.parent().unwrap(), b"in the way").unwrap();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 0);
    let events = svc.drain_events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Retry { in_s: 5, .. })),
        "{events:?}"
    );
    assert_eq!(svc.tick(secs(22)), 0, "not before its backoff");
    std::fs::remove_file(result.parent().unwrap()).unwrap();
    assert_eq!(svc.tick(secs(26)), 1, "retried after the backoff");
    assert_ne!(json(&result)["verdict"], "undetermined");
}

#[test]
fn identical_scans_under_two_patient_folders_and_two_drop_folders_each_get_a_result() {
    let rig = Rig::with_drops(&["usb", "share"]);
    for (drop, patient) in [("usb", "twin_a"), ("usb", "twin_b"), ("share", "twin_a")] {
        synthetic_series(&rig.series_in(drop, patient, "SR_1"), 2);
    }
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 3);
    for (drop, patient) in [("usb", "twin_a"), ("usb", "twin_b"), ("share", "twin_a")] {
        let v = json(&rig.result_path(drop, patient, "SR_1"));
        assert_eq!(v["source"]["drop"], rig.drop_dir(drop).display().to_string());
    }
    assert_eq!(rig.results().len(), 3);
}

#[test]
fn odd_long_and_reserved_names_get_safe_result_files_with_the_originals_inside() {
    use std::os::unix::ffi::OsStrExt;
    let rig = Rig::new();
    let long = "S".repeat(250);
    let odd = std::ffi::OsStr::from_bytes(b"Pat \xff\xfe %41 ..");
    for (patient, series) in [
        (std::ffi::OsStr::new("quarantine"), std::ffi::OsStr::new("SR_1")),
        (std::ffi::OsStr::new("p_long"), std::ffi::OsStr::new(&long)),
        (odd, std::ffi::OsStr::new("SR 1")),
    ] {
        let dir = rig.drop_dir("drop").join(patient).join(series);
        std::fs::create_dir_all(&dir).unwrap();
        synthetic_series(&dir, 2);
    }
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 3);
    let results = rig.results();
    assert_eq!(results.len(), 3, "{results:?}");
    for r in &results {
        assert!(!r.starts_with(rig.state().join("quarantine")));
        for c in r.strip_prefix(rig.state()).unwrap().components() {
            assert!(c.as_os_str().len() <= 85, "{}", r.display());
        }
    }
    let series: Vec<String> = results
        .iter()
        .map(|r| json(r)["source"]["series_folder"].as_str().unwrap().to_string())
        .collect();
    assert!(series.contains(&long), "the original name is in the JSON");
    assert!(rig.result_path("drop", "quarantine", "SR_1").is_file());
}

#[test]
fn a_read_only_drop_folder_is_processed_and_left_exactly_as_it_was() {
    let rig = Rig::new();
    let dir = rig.series("ro", "SR_1");
    synthetic_series(&dir, 3);
    std::fs::write(dir.join("IM00009.tif"), b"broken").unwrap();
    let set_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            dir.join("IM00001.tif"),
            dir.join("IM00009.tif"),
            dir.clone(),
            dir.parent().unwrap().to_path_buf(),
        ] {
            let m = if p.is_dir() { mode | 0o111 } else { mode };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
    };
    set_mode(0o444);
    let before = tree(&rig.drop_dir("drop"));
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1);
    assert_eq!(svc.tick(secs(40)), 0, "nothing is retried forever");
    assert_eq!(tree(&rig.drop_dir("drop")), before);
    set_mode(0o755);
    assert_eq!(json(&rig.result_path("drop", "ro", "SR_1"))["verdict"], "undetermined");
}

#[test]
fn series_that_vanish_are_forgotten_and_the_journal_is_compacted_at_start() {
    let rig = Rig::new();
    let mut svc = rig.service();
    for i in 0..5 {
        synthetic_series(&rig.series(&format!("v{i}"), "SR_1"), 1);
    }
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 5);
    assert_eq!(svc.tracked(), 5);
    std::fs::remove_dir_all(rig.drop_dir("drop")).unwrap();
    std::fs::create_dir(rig.drop_dir("drop")).unwrap();
    svc.tick(secs(30));
    assert_eq!(svc.tracked(), 0, "no memory kept for folders that are gone");
    drop(svc);
    // Many duplicate lines (e.g. months of touches) are compacted away at the next start.
    {
        let mut j = Journal::open(&rig.state().join("journal")).unwrap();
        for _ in 0..300 {
            j.append(&Record {
                key: "k".into(),
                series: "x/SR_1".into(),
                state: State::Processing,
                at: 1,
                place: None,
                stat: None,
            })
            .unwrap();
        }
    }
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert!(
        rig.journal_lines() <= 5,
        "{} lines after compaction",
        rig.journal_lines()
    );
}

#[test]
fn records_of_places_gone_longer_than_the_retention_are_compacted_away_though_the_journal_is_not_bloated() {
    let rig = Rig::with_drops_and(&["drop"], "retention_days = 30\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    {
        // One final line per key: nothing a line count would call bloated.
        std::fs::create_dir_all(rig.state()).unwrap();
        let mut j = Journal::open(&rig.state().join("journal")).unwrap();
        for i in 0..400u64 {
            j.append(&Record {
                key: format!("k{i}"),
                series: format!("gone{i}/SR_1"),
                state: State::Done,
                at: if i < 390 { now - 86_400 * 60 } else { now - 3600 },
                place: Some(ctsentinel::service::machine::Place::new(
                    &layout::drop_id(&rig.drop_dir("drop")),
                    format!("gone{i}").as_ref(),
                    "SR_1".as_ref(),
                )),
                stat: Some("s".into()),
            })
            .unwrap();
        }
    }
    let mut svc = rig.service();
    svc.tick(secs(0));
    assert_eq!(
        rig.journal_lines(),
        10,
        "the 390 expired records go, the 10 recent stay"
    );
}

#[test]
fn after_a_kill_stale_temporaries_in_results_are_swept_and_a_clean_stop_lets_the_next_start_skip_that_sweep() {
    let rig = Rig::new();
    let results = rig.state().join("results/x");
    std::fs::create_dir_all(&results).unwrap();
    let stale = results.join(".series.json.tmp-77-0");
    std::fs::write(&stale, b"half").unwrap();
    // The same anywhere the service writes atomically: quarantine and the state folder itself
    // (the journal's compaction); a quarantined file that merely looks odd is kept.
    let quarantine = rig.state().join("quarantine/x/p/s/k");
    std::fs::create_dir_all(&quarantine).unwrap();
    let stale_q = quarantine.join(".reason.txt.tmp-77-1");
    std::fs::write(&stale_q, b"half").unwrap();
    let kept_q = quarantine.join("IM1.tif");
    std::fs::write(&kept_q, b"a copy").unwrap();
    let stale_root = rig.state().join(".journal.tmp-77-2");
    std::fs::write(&stale_root, b"half").unwrap();
    let svc = rig.service(); // no clean-stop marker: the state of an unclean end
    assert!(!stale.exists(), "swept at a start after an unclean end");
    assert!(
        !stale_q.exists() && !stale_root.exists(),
        "in quarantine and the state folder too"
    );
    assert!(kept_q.exists(), "nothing else is touched");
    // A clean stop (the appliance loop left on SIGTERM) records itself ...
    ctsentinel::service::run::run(svc, Arc::new(AtomicBool::new(true)));
    assert!(rig.state().join("clean-stop").exists());
    std::fs::write(&stale, b"planted").unwrap();
    let svc = rig.service();
    assert!(stale.exists(), "after a clean stop the result folders are not read");
    assert!(!rig.state().join("clean-stop").exists(), "the marker is consumed");
    drop(svc); // as a kill: no marker
    let _svc = rig.service();
    assert!(!stale.exists(), "the next unclean end sweeps again");
}

#[test]
fn with_validation_required_no_verdict_is_given_until_the_running_model_has_a_passing_site_record() {
    let rig = Rig::with_drops_and(
        &["drop"],
        "[validation]\nrequire = true\nmin_sensitivity = 0.8\nmin_specificity = 0.8\n",
    );
    let mut svc = rig.service();
    synthetic_series(&rig.series("p1", "SR_1"), 12);
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)), 1);
    let v = json(&rig.result_path("drop", "p1", "SR_1"));
    assert_eq!(v["verdict"], "undetermined", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("not validated at this site") && reason.contains("--record"),
        "{reason}"
    );
    assert!(
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["verdict"] == "undetermined"),
        "{v}"
    );
    // A passing record of the running model (what `validate --record` keeps), while running.
    use ctsentinel::validate::{summarise, write_record, Label, PatientResult};
    let model = Classifier::load(&common::models(), Options { threads: 1 })
        .unwrap()
        .identity();
    let right = |label: Label, verdict| PatientResult {
        path: "p".into(),
        label,
        verdict: Some(verdict),
        reason: None,
        error: None,
        selected_slices: 20,
        covid_slices: 0,
        lung_driven_covid_slices: 0,
        correct: Some(true),
        slice_calls: Vec::new(),
    };
    let patients: Vec<PatientResult> = (0..20)
        .flat_map(|_| {
            [
                right(Label::Covid, ctsentinel::decide::Verdict::Covid),
                right(Label::Normal, ctsentinel::decide::Verdict::Normal),
            ]
        })
        .collect();
    write_record(&rig.state().join("validation"), &summarise("site.csv", patients, model)).unwrap();
    synthetic_series(&rig.series("p2", "SR_1"), 12);
    assert_eq!(svc.tick(secs(30)) + svc.tick(secs(50)), 1);
    let v = json(&rig.result_path("drop", "p2", "SR_1"));
    assert!(
        !v["reason"].as_str().unwrap_or("").contains("not validated"),
        "validated now: the pipeline's own verdict stands: {v}"
    );
}

#[test]
fn config_errors_name_the_key() {
    let rig = Rig::new();
    let p = rig.dir.path().join("config.toml");
    let good = std::fs::read_to_string(&p).unwrap();
    let drop_line = good.lines().find(|l| l.starts_with("drop =")).unwrap().to_string();
    let dup = drop_line.replace("\"]", "\", \"/x\", \"/x/y\"]");
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
        (
            "min_free_mb = 100",
            "min_free_mb = 100\nretention_days = 0",
            "retention_days",
        ),
        (drop_line.as_str(), dup.as_str(), "inside another drop folder"),
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
    assert_eq!(c.retention, secs(365 * 86_400));
    assert_eq!(c.dicom, None, "no [dicom] table: no listener");
}

#[test]
fn the_dicom_table_is_validated_and_adds_the_receiver_folder_as_a_drop_folder() {
    let rig = Rig::new();
    let base = std::fs::read_to_string(rig.dir.path().join("config.toml")).unwrap();
    let with = |table: &str| {
        std::fs::write(
            rig.dir.path().join("config.toml"),
            format!("{base}\n[dicom]\n{table}\n"),
        )
        .unwrap();
        Config::load(
            &rig.dir.path().join("config.toml"),
            Some(&common::repo().join("boards")),
        )
    };
    let ok = with("listen = \"127.0.0.1:11112\"\nallowed_callers = [\"CT_SCANNER\"]").unwrap();
    let d = ok.dicom.clone().expect("listen set: a receiver");
    assert_eq!(
        (d.ae_title.as_str(), d.max_instance_bytes, d.max_associations),
        ("CTSENTINEL", 64 << 20, 4)
    );
    assert_eq!(ok.drop.last().unwrap(), &rig.state().join("received"));
    assert_eq!(with("ae_title = \"X\"").unwrap().dicom, None, "no listen: no listener");
    for (table, says) in [
        ("listen = \"localhost\"\nallowed_callers = [\"A\"]", "not an address"),
        ("listen = \"127.0.0.1:1\"", "allowed_callers is empty"),
        (
            "listen = \"127.0.0.1:1\"\nallowed_callers = [\"A\\\\B\"]",
            "not a DICOM AE title",
        ),
        (
            "listen = \"127.0.0.1:1\"\nallowed_callers = [\"A\"]\nae_title = \"SEVENTEEN_CHARS_X\"",
            "ae_title",
        ),
        (
            "listen = \"127.0.0.1:1\"\nallowed_callers = [\"A\"]\nmax_instance_mb = 0",
            "max_instance_mb",
        ),
        (
            "listen = \"127.0.0.1:1\"\nallowed_callers = [\"A\"]\nport = 4",
            "unknown field",
        ),
    ] {
        let e = with(table).expect_err(table).to_string();
        assert!(e.contains(says), "{table}: {e}");
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Soak: several hundred small series through the service with bounded memory. Slow (about a
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
    // state is a stat signature and a journal entry, not pixels.
    assert!(
        rss[5] < rss[0] + 64 * 1024,
        "RSS grew from {} to {} KiB",
        rss[0],
        rss[5]
    );
}

#[test]
fn a_flat_dicom_export_dropped_at_the_top_is_its_own_series_and_gets_one_result() {
    let rig = Rig::new();
    let mut svc = rig.service();
    // What a scanner's export to a share looks like: one folder, DICOM files, no sub-folders,
    // names that do not sort in slice order.
    let export = rig.drop_dir("drop").join("EXPORT_0412");
    std::fs::create_dir_all(&export).unwrap();
    for i in 1..=12 {
        common::dicom_gen::Slice::ct("1.2.840.99.77", -50.0 - 6.0 * f64::from(i), i)
            .write(&export.join(format!("99C-{}", (i * 7) % 13)));
    }
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1);
    let v = json(&rig.result_path("drop", "EXPORT_0412", "."));
    assert!(rig
        .result_path("drop", "EXPORT_0412", ".")
        .ends_with("EXPORT_0412/series.json"));
    assert_eq!(v["series"][0]["id"], "1.2.840.99.77", "{v}");
    assert_eq!(v["patient"], "PAT-1");
    let sel = ctsentinel::pipeline::select_folder(&export).unwrap();
    assert_eq!(v["selected_slices"].as_u64().unwrap() as usize, sel.series[0].selected);
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 12);
    // The report sheet beside the result: the laid-out sheet of this very report.
    let png = rig.result_path("drop", "EXPORT_0412", ".").with_extension("png");
    let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    let report: ctsentinel::report::ScanReport = serde_json::from_value(v.clone()).unwrap();
    let input = ctsentinel::present::sheet::SheetInput {
        report: &report,
        threshold: 0.5,
        time: "",
    };
    let (_, height) = ctsentinel::present::sheet::layout(&input, &mut |_, _| None);
    assert_eq!(
        (img.width(), img.height()),
        (ctsentinel::present::sheet::SHEET_WIDTH, height)
    );
    assert_eq!(svc.tick(secs(40)), 0, "exactly once");
}

#[test]
fn a_usb_export_with_dicomdir_and_nested_study_and_series_folders_gets_one_result_per_series() {
    let rig = Rig::new();
    let mut svc = rig.service();
    // A viewer's or scanner's export to a stick: DICOMDIR at the top, DICOM/<study>/<series>/.
    let drop = rig.drop_dir("drop");
    std::fs::write(drop.join("DICOMDIR"), b"not read by the watcher").unwrap();
    for (series, uid) in [("SE000", "1.2.840.99.81"), ("SE001", "1.2.840.99.82")] {
        let dir = drop.join("DICOM").join("ST000").join(series);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=12 {
            common::dicom_gen::Slice::ct(uid, -50.0 - 6.0 * f64::from(i), i).write(&dir.join(format!("IM{i:06}")));
        }
    }
    let before = tree(&drop);
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 2, "both nested series, once each");
    for (series, uid) in [("ST000/SE000", "1.2.840.99.81"), ("ST000/SE001", "1.2.840.99.82")] {
        let path = rig.result_path("drop", "DICOM", series);
        let v = json(&path);
        assert_eq!(v["series"][0]["id"], uid, "{v}");
        assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 12);
    }
    assert_eq!(svc.tick(secs(40)), 0, "exactly once");
    assert_eq!(tree(&drop), before, "the stick is only read");
}

#[test]
fn a_usb_export_missing_files_its_dicomdir_lists_gets_no_verdict_until_they_arrive() {
    let rig = Rig::new();
    let mut svc = rig.service();
    // A stick pulled (or a copy stopped) after 10 of 12 slices: every folder is stable, only the
    // DICOMDIR knows the series is not whole. A second series it lists never arrived at all.
    let drop = rig.drop_dir("drop");
    let dir = drop.join("DICOM").join("ST000").join("SE000");
    std::fs::create_dir_all(&dir).unwrap();
    let slice = |i: i32| common::dicom_gen::Slice::ct("1.2.840.99.91", -50.0 - 6.0 * f64::from(i), i);
    for i in 1..=10 {
        slice(i).write(&dir.join(format!("IM{i:06}")));
    }
    let names: Vec<String> = (1..=12).map(|i| format!("IM{i:06}")).collect();
    let mut ids: Vec<Vec<&str>> = names
        .iter()
        .map(|n| vec!["DICOM", "ST000", "SE000", n.as_str()])
        .collect();
    ids.extend(names.iter().map(|n| vec!["DICOM", "ST000", "SE001", n.as_str()]));
    common::dicom_gen::write_dicomdir(&drop.join("DICOMDIR"), &ids);
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)) + svc.tick(secs(40)), 0);
    assert!(rig.results().is_empty(), "no verdict on 10 of 12 slices");
    let events = svc.drain_events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Incomplete { reason, .. }
            if reason.contains("DICOMDIR lists 2 file(s)") && reason.contains("IM000011, IM000012"))),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Refused { path, reason }
            if path == "DICOM/ST000/SE001" && reason.contains("listed in DICOMDIR (12 files) but not in the drop folder"))),
        "{events:?}"
    );
    // The stick comes back whole (FAT short names shown in lower case are the same files).
    slice(11).write(&dir.join("IM000011"));
    slice(12).write(&dir.join("im000012"));
    assert_eq!(svc.tick(secs(41)), 0, "settling again");
    assert_eq!(svc.tick(secs(60)), 1);
    let v = json(&rig.result_path("drop", "DICOM", "ST000/SE000"));
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 12, "{v}");
    assert_eq!(svc.tick(secs(80)), 0, "exactly once");
}

#[test]
fn a_flat_export_with_its_own_dicomdir_waits_for_a_file_it_lists() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let dir = rig.drop_dir("drop").join("scan1");
    std::fs::create_dir_all(&dir).unwrap();
    let slice = |i: i32| common::dicom_gen::Slice::ct("1.2.840.99.93", -50.0 - 6.0 * f64::from(i), i);
    for i in 1..=11 {
        slice(i).write(&dir.join(format!("IM{i:06}")));
    }
    let names: Vec<String> = (1..=12).map(|i| format!("IM{i:06}")).collect();
    let ids: Vec<Vec<&str>> = names.iter().map(|n| vec![n.as_str()]).collect();
    common::dicom_gen::write_dicomdir(&dir.join("DICOMDIR"), &ids);
    assert_eq!(svc.tick(secs(0)) + svc.tick(secs(20)) + svc.tick(secs(40)), 0);
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Incomplete { reason, .. }
        if reason.contains("lists 1 file(s)") && reason.contains("IM000012"))));
    slice(12).write(&dir.join("IM000012"));
    svc.tick(secs(41));
    assert_eq!(svc.tick(secs(60)), 1);
    let v = json(&rig.result_path("drop", "scan1", "."));
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 12, "{v}");
}

#[test]
fn an_unreadable_dicomdir_is_said_and_the_series_beside_it_are_judged_by_their_folders() {
    let rig = Rig::new();
    let mut svc = rig.service();
    let drop = rig.drop_dir("drop");
    std::fs::write(drop.join("DICOMDIR"), b"DICM cut short by a pulled stick").unwrap();
    let dir = drop.join("DICOM").join("ST000").join("SE000");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=12 {
        common::dicom_gen::Slice::ct("1.2.840.99.92", -50.0 - 6.0 * f64::from(i), i)
            .write(&dir.join(format!("IM{i:06}")));
    }
    svc.tick(secs(0));
    assert_eq!(svc.tick(secs(20)), 1);
    assert!(svc
        .drain_events()
        .iter()
        .any(|e| matches!(e, Event::Refused { path, reason }
        if path == "DICOMDIR" && reason.contains("not usable"))));
}
