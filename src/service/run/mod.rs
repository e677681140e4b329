//! The executor: carries out what the state machine ([`super::machine`]) decides — lists the
//! drop folders, copies snapshots, scans, writes results and quarantine copies, journals — and
//! tells the machine what happened. [`Service::tick`] takes the time from its caller, so tests
//! drive it step by step; [`run`] is the appliance's loop around it (real clock, inotify
//! wake-ups, SIGTERM/SIGINT).
//!
//! Order of effects for one snapshot (each step durable before the next; the machine gives the
//! order as data, `machine::Effect` and `Plan::effects`, and [`Service`] performs it):
//! 1. copy the series into `<state>/work/<key>/` (key = SHA-256 over place, names, contents);
//! 2. if `<state>/results/…/<series>.json` already holds this key (we were stopped after
//!    writing it), journal `done` and stop here — the result is never computed twice;
//! 3. journal `processing`; scan the copy; put copies of unusable files in quarantine; write the
//!    sheet and the DICOM results beside the result;
//! 4. write the result atomically; journal `done`; remove the copy.
//!
//! A stop anywhere (kill -9, power cut, SIGTERM) leaves at worst a `processing` line and a
//! copy: on restart the copy is swept and the series, still in the drop folder, is done again
//! from step 1, into the same single result file. Only our own panic hook writes
//! `<state>/crash`, which the next start journals as `crashed` against the key: outside stops
//! are never counted against a series.
//!
//! Rooms: this file (the service, a tick, one attempt), `appliance` (the loop around it), `outputs` (what a
//! finished scan leaves: result, sheet, SR/SC, quarantine copies, the result event),
//! `housekeeping` (pruning, journal compaction, start-up sweeps).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heapless::Deque;

use super::config::Config;
use super::crashkey::{install_crash_hook, InProgress, Scope};
use super::display_task::{self, Display};
use super::dropfs::{self, DropError, Snapshot};
use super::event::Event;
use super::journal::{Journal, JournalError, Record, State};
use super::layout::{self, Layout};
use super::machine::{Effect, Machine, Place, Plan, Settings};
use crate::classify::Classifier;
use crate::fsys::write_atomic;
use crate::ingest::{self, FileProblem, SliceDecoder};
use crate::pipeline::{self, Progress, ScanError};
use crate::present::display::{Screen, Thumbnail};
use crate::report::{ResultSource, ScanReport, ServiceResult};

mod appliance;
mod housekeeping;
mod outputs;

pub use appliance::{inotify_wakeups, run, stop_on_signals};
use housekeeping::{consume_clean_stop, sweep_stale_temporaries, sweep_work};

/// Free bytes available under a path (injected so the disk guard can be tested).
pub trait FreeSpace {
    fn free_bytes(&self, path: &Path) -> std::io::Result<u64>;
}

/// The real probe: `statvfs`.
pub struct StatVfs;

impl FreeSpace for StatVfs {
    fn free_bytes(&self, path: &Path) -> std::io::Result<u64> {
        let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{path}: cannot create the state folder: {source}")]
    StateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{path}: cannot read the crash marker: {source}")]
    CrashMarker {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why one attempt at a series did not finish (each is retried; none is the series' fault).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Drop(#[from] DropError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped")]
    Stopped,
    /// A test's simulated kill before this effect (`Service::with_kill_hook`).
    #[error("killed before {0:?} (test)")]
    Killed(Effect),
}

/// Capacity of the queue of events kept for [`Service::drain_events`] (oldest dropped).
pub const EVENT_QUEUE: usize = 64;

/// The service: the journal, the machine and the classifier, driven by [`Service::tick`].
pub struct Service<F: FreeSpace> {
    config: Config,
    layout: Layout,
    classifier: Classifier,
    journal: Journal,
    machine: Machine,
    free: F,
    display: Display,
    idle: Screen,
    stop: Arc<AtomicBool>,
    /// (configured path, id) of each drop folder.
    drops: Vec<(PathBuf, String)>,
    events: Deque<Event, EVENT_QUEUE>,
    compacted: bool,
    /// The crash guard of the DICOMDIRs in the drop folders (see `crashkey`).
    dicomdirs: dropfs::DicomdirGuard,
    /// When `received/` was last pruned (monotonic).
    pruned_at: Option<Duration>,
    /// When the journal was last looked at for expired records (see `maybe_compact`).
    expiry_looked_at: Option<Duration>,
    /// Whether the wall clock is synchronised now (`crate::clock::synchronised`; replaced in tests).
    clock_synchronised: fn() -> Option<bool>,
    /// Asked before each effect; true: stop there as a kill would (tests only; never in `run`).
    kill_before: KillHook,
    /// A simulated kill happened: this service is dead, every tick returns at once.
    killed: bool,
}

/// See [`Service::with_kill_hook`].
type KillHook = Box<dyn FnMut(Effect, &Place) -> bool>;

/// The report an effect after `Compute` (or a plan that brings its own) works on.
fn computed(report: &Option<ScanReport>) -> &ScanReport {
    report
        .as_ref()
        .expect("the machine orders Compute (or a plan's own report) before any effect that uses it")
}

impl<F: FreeSpace> Service<F> {
    /// Create the state folders, sweep what an interrupted run left in `work/`, open and
    /// replay the journal, and journal a crash our panic hook recorded.
    pub fn new(
        config: Config,
        classifier: Classifier,
        free: F,
        display: Display,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, ServiceError> {
        install_crash_hook();
        let layout = config.layout();
        for dir in [layout.results(), layout.quarantine(), layout.work()] {
            std::fs::create_dir_all(&dir).map_err(|source| ServiceError::StateFolder { path: dir, source })?;
        }
        sweep_work(&layout.work());
        // After a clean stop no write was interrupted: the sweep of every result folder is
        // only needed after a kill, crash or power cut (no marker).
        if !consume_clean_stop(&layout) {
            sweep_stale_temporaries(&layout);
        }
        let mut journal = Journal::open(&layout.journal())?;
        record_crash(&layout, &mut journal)?;
        let replay = journal.replay();
        // A DICOMDIR that crashed its parser once is not parsed again (see crashkey).
        let dicomdirs = dropfs::DicomdirGuard {
            marker: Some(layout.crash_marker()),
            poisoned: replay
                .crashes
                .keys()
                .filter(|k| k.starts_with(dropfs::DicomdirGuard::PREFIX))
                .cloned()
                .collect(),
        };
        let mut settings = Settings::new(config.stability);
        if let Some(d) = &config.dicom {
            settings.resend_wait = d.resend_wait;
        }
        let machine = Machine::new(settings, replay);
        let drops = config.drop.iter().map(|d| (d.clone(), layout::drop_id(d))).collect();
        let model = classifier.identity();
        let idle = Screen::Idle {
            drop: config
                .drop
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            model: format!("{} {}", model.name, model.version),
            last_result: None,
            web: None,
        };
        display.show(idle.clone());
        Ok(Service {
            config,
            layout,
            classifier,
            journal,
            machine,
            free,
            display,
            idle,
            stop,
            drops,
            events: Deque::new(),
            compacted: false,
            dicomdirs,
            pruned_at: None,
            expiry_looked_at: None,
            clock_synchronised: crate::clock::synchronised,
            kill_before: Box::new(|_, _| false),
            killed: false,
        })
    }

    /// Ask `hook` before every effect of every snapshot; when it answers true, the service stops
    /// right there as a kill -9 would (nothing after it happens, no clean stop is recorded) and
    /// is dead from then on: a test then starts a new one on the same state folder. For the
    /// crash property test (`tests/service_executor.rs`); the appliance never sets one.
    pub fn with_kill_hook(mut self, hook: impl FnMut(Effect, &Place) -> bool + 'static) -> Self {
        self.kill_before = Box::new(hook);
        self
    }

    /// The idle screen also shows the results page's certificate (`fingerprint`: colon-separated
    /// hex, as browsers show it; the screen takes its first 16 bytes, 128 bits).
    pub fn with_web_fingerprint(mut self, fingerprint: &str) -> Self {
        if let Screen::Idle { web, .. } = &mut self.idle {
            *web = Some(fingerprint.split(':').take(16).collect::<Vec<_>>().join(":"));
        }
        self.display.show(self.idle.clone());
        self
    }

    /// Ask `probe` instead of the kernel whether the wall clock is synchronised (tests: both
    /// answers on any host).
    pub fn with_clock_probe(mut self, probe: fn() -> Option<bool>) -> Self {
        self.clock_synchronised = probe;
        self
    }

    /// Take the events published since the last call (oldest first; at most [`EVENT_QUEUE`]).
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.pop_front()).collect()
    }

    /// Series folders tracked in memory (bounded by what the drop folders hold now).
    pub fn tracked(&self) -> usize {
        self.machine.tracked()
    }

    fn publish(&mut self, e: Event) {
        e.log();
        if let Some(screen) = display_task::screen_for(&e, &self.idle) {
            self.display.show(screen);
        }
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// One look at the drop folders at time `now` (any monotonic origin), then every series
    /// that became ready is processed, until a stop is asked for. Returns how many snapshots
    /// got their result in this tick.
    pub fn tick(&mut self, now: Duration) -> usize {
        if self.killed {
            return 0;
        }
        for i in 0..self.drops.len() {
            let (path, id) = self.drops[i].clone();
            match dropfs::list_guarded(&path, &id, &self.dicomdirs) {
                Ok(listing) => {
                    for e in self.machine.listed(now, &id, &listing) {
                        self.publish(e);
                    }
                }
                Err(e) => {
                    if let Some(ev) = self.machine.listing_failed(&id, &e.to_string()) {
                        self.publish(ev);
                    }
                }
            }
        }
        self.maybe_compact(now);
        self.maybe_prune_received(now);
        let mut done = 0;
        let mut tried = HashSet::new();
        while !self.stopping() {
            self.check_disk();
            let Some((place, stat)) = self.machine.next(now, &tried) else {
                break;
            };
            tried.insert(place.clone());
            match self.attempt(&place, &stat) {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(AttemptError::Stopped) => break,
                Err(AttemptError::Killed(effect)) => {
                    log::warn!("{place}: killed before {effect:?} (test)");
                    self.killed = true;
                    return done;
                }
                Err(AttemptError::Drop(e @ (DropError::Changed { .. } | DropError::Gone { .. }))) => {
                    log::info!("{e}");
                    self.machine.changed(now, &place);
                }
                Err(e) => {
                    let ev = self.machine.failed(now, &place, &e.to_string());
                    self.publish(ev);
                }
            }
            // A series was worked on and nothing large is alive now: give the freed pages back
            // (see heap).
            super::heap::release_free_memory();
        }
        done
    }

    fn check_disk(&mut self) {
        match self.free.free_bytes(&self.config.state) {
            Ok(free) => {
                if let Some(e) = self.machine.disk(free, self.config.min_free_bytes) {
                    self.publish(e);
                }
            }
            Err(e) => {
                // Unknown free space counts as low: better to wait than to fill the disk.
                if let Some(ev) = self.machine.disk(0, self.config.min_free_bytes) {
                    self.publish(ev);
                }
                log::error!("cannot read free space of {}: {e}", self.config.state.display());
            }
        }
    }

    fn drop_path(&self, place: &Place) -> PathBuf {
        self.drops
            .iter()
            .find(|(_, id)| *id == place.drop)
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }

    fn record(&self, place: &Place, stat: &str, key: &str, state: State) -> Record {
        Record {
            key: key.to_string(),
            series: place.label(),
            state,
            at: crate::clock::unix_secs(),
            place: Some(place.clone()),
            stat: Some(stat.to_string()),
        }
    }

    /// Snapshot and, if needed, process one ready series. Ok(true): a result was written (or
    /// recovered); Ok(false): this snapshot already had its result.
    fn attempt(&mut self, place: &Place, stat: &str) -> Result<bool, AttemptError> {
        let root = self.drop_path(place);
        let snap = dropfs::snapshot_guarded(&root, place, stat, &self.layout.work(), &self.dicomdirs)?;
        let outcome = self.with_snapshot(place, stat, &root, &snap);
        if matches!(outcome, Err(AttemptError::Killed(_))) {
            return outcome; // as a kill leaves it: the next start sweeps the copy
        }
        if let Err(e) = std::fs::remove_dir_all(&snap.dir) {
            log::warn!("{}: cannot remove the snapshot copy: {e}", snap.dir.display());
        }
        outcome
    }

    /// Perform the effects the machine gives for this snapshot, in its order (see
    /// [`Effect`]): this function decides nothing about what happens or when.
    fn with_snapshot(&mut self, place: &Place, stat: &str, root: &Path, snap: &Snapshot) -> Result<bool, AttemptError> {
        let key = snap.key.as_str();
        let result_path = self
            .layout
            .result_file(&place.drop, &place.patient_os(), &place.series_os());
        let plan = self.machine.snapshotted(place, stat, key);
        // What the effects work on: the key the result is recorded under, and the report.
        let mut aside_reason = String::new();
        let (result_key, mut report) = match plan {
            Plan::AlreadyDone | Plan::Process => (key.to_string(), None),
            Plan::SetAside { crashes } => {
                let reason = format!(
                    "processing this series ended the service {crashes} times (a fault in ctsentinel: \
                     please report it with the copy in quarantine); set aside so later series go on"
                );
                self.publish(Event::Fault {
                    reason: format!("{}: {reason}", place.label()),
                });
                aside_reason.clone_from(&reason);
                (
                    key.to_string(),
                    Some(pipeline::undetermined_report(&place.label(), reason, &self.classifier)),
                )
            }
            Plan::Abandoned => {
                let reason = "incomplete: the scanner's DICOM push of this series was aborted (no A-RELEASE) and \
                              not sent again within resend_wait_s; send the series again"
                    .to_string();
                (
                    crate::service::machine::abandoned_key(key),
                    Some(pipeline::undetermined_report(&place.label(), reason, &self.classifier)),
                )
            }
        };
        let mut effects = plan.effects().iter();
        let mut marker = None;
        let mut recovered_from_disk = false;
        while let Some(&effect) = effects.next() {
            if (self.kill_before)(effect, place) {
                return Err(AttemptError::Killed(effect));
            }
            match effect {
                Effect::Recover => {
                    if let Some(done) = recovered(&result_path, key) {
                        log::info!(
                            "{}: result already written before the last stop; not computed again",
                            place.label()
                        );
                        report = Some(done.scan);
                        recovered_from_disk = true;
                        effects = Plan::RECOVERED.iter();
                    }
                }
                Effect::JournalProcessing => {
                    self.journal.append(&self.record(place, stat, key, State::Processing))?;
                }
                Effect::Compute => {
                    marker = Some(InProgress::new(
                        self.layout.crash_marker(),
                        key,
                        &place.label(),
                        Scope::AnyThread,
                    ));
                    self.publish(Event::Processing { series: place.label() });
                    fault_injection(place);
                    report = Some(self.scan(place, root, snap)?);
                }
                Effect::QuarantineUnreadable => {
                    self.quarantine_copies(place, key, snap, computed(&report))?;
                }
                Effect::QuarantineAll => {
                    let qdir = self
                        .layout
                        .quarantine_dir(&place.drop, &place.patient_os(), &place.series_os(), key);
                    for f in &snap.files {
                        let dest = qdir.join(layout::safe_name(f.file_name().unwrap_or_default()));
                        copy_into(f, &dest)?;
                    }
                    write_file(&qdir.join("reason.txt"), format!("{aside_reason}\n").as_bytes())?;
                }
                Effect::Sheet => self.write_sheet_beside(&result_path, computed(&report), snap),
                Effect::Dicom => self.write_dicom_beside(place, &result_path, computed(&report), snap),
                Effect::Result => {
                    self.write_result(&result_path, root, place, snap, &result_key, computed(&report).clone())?;
                }
                Effect::JournalDone => {
                    self.journal
                        .append(&self.record(place, stat, &result_key, State::Done))?;
                    marker = None;
                }
                Effect::JournalSetAside => {
                    self.journal
                        .append(&self.record(place, stat, &result_key, State::SetAside))?;
                }
                Effect::Finish => self.machine.finished(place, stat, &result_key),
            }
        }
        drop(marker);
        let Some(report) = report else {
            log::debug!("{place}: unchanged content, already has its result");
            return Ok(false);
        };
        match plan {
            Plan::Process if !recovered_from_disk => log::info!(
                "RESULT {}: {} (covid fraction {}, {} selected slices) model {} {} sha256 {} — {}",
                place.label(),
                report.verdict,
                report.covid_fraction.map_or("n/a".into(), |f| format!("{f:.3}")),
                report.selected_slices,
                report.model.name,
                report.model.version,
                report.model.sha256,
                crate::NOTICE
            ),
            Plan::Abandoned => log::warn!("RESULT {}: {} — {}", place.label(), report.verdict, crate::NOTICE),
            _ => {}
        }
        if !matches!(plan, Plan::SetAside { .. }) {
            self.publish_result(place, &result_path, &report, snap);
        }
        Ok(true)
    }

    fn scan(&mut self, place: &Place, root: &Path, snap: &Snapshot) -> Result<ScanReport, AttemptError> {
        let found = ingest::series_of_files(
            place.patient_os().to_string_lossy().into_owned(),
            &root.join(place.patient_os()).join(place.series_os()),
            snap.files.clone(),
            snap.refused
                .iter()
                .map(|r| FileProblem {
                    file: r.file.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
        );
        let started = Instant::now();
        let label = place.label();
        let stop = self.stop.clone();
        let display = self.display.clone();
        let mut progress = |p: Progress<'_>| {
            if let Progress::Classified { done, of, .. } = p {
                let e = Event::Progress {
                    series: label.clone(),
                    done,
                    of,
                    elapsed_s: started.elapsed().as_secs(),
                };
                e.log();
                if let Some(s) = display_task::screen_for(&e, &Screen::Booting) {
                    display.show(s);
                }
            }
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let patient = place.patient_os().to_string_lossy().into_owned();
        match pipeline::scan_series(&found.series, &patient, &mut self.classifier, &mut progress) {
            Ok(mut r) => {
                r.ignored = found.ignored;
                if let Some(floors) = self.config.validation {
                    // Read at every result: a validation recorded while running counts at once.
                    if let Err(why) = crate::validate::site_check(&self.layout.validation(), &r.model, floors) {
                        pipeline::withhold_verdicts(&mut r, &format!("not validated at this site: {why}"));
                    }
                }
                Ok(r)
            }
            Err(ScanError::Cancelled) => Err(AttemptError::Stopped),
            // Not reachable from scan_series (no folder is discovered), kept total.
            Err(ScanError::Ingest(e)) => Err(AttemptError::Drop(DropError::Read {
                place: place.to_string(),
                source: std::io::Error::other(e.to_string()),
            })),
        }
    }
}

/// The result already at `path` if it is for snapshot `key` (a stop came after the write).
fn recovered(path: &Path, key: &str) -> Option<ServiceResult> {
    let text = std::fs::read_to_string(path).ok()?;
    let r: ServiceResult = serde_json::from_str(&text).ok()?;
    (r.source.key == key).then_some(r)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AttemptError> {
    let err = |source| AttemptError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    write_atomic(path, bytes).map_err(err)
}

fn copy_into(src: &Path, dest: &Path) -> Result<(), AttemptError> {
    let bytes = std::fs::read(src).map_err(|source| AttemptError::Write {
        path: src.to_path_buf(),
        source,
    })?;
    write_file(dest, &bytes)
}

/// Turn a crash marker left by our panic hook into a `crashed` journal record.
fn record_crash(layout: &Layout, journal: &mut Journal) -> Result<(), ServiceError> {
    let marker = layout.crash_marker();
    let text = match std::fs::read_to_string(&marker) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ServiceError::CrashMarker { path: marker, source }),
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let key = v["key"].as_str().unwrap_or_default().to_string();
    let series = v["series"].as_str().unwrap_or_default().to_string();
    log::error!(
        "the service crashed while processing {series}: {} (a fault in ctsentinel; please report it)",
        v["panic"].as_str().unwrap_or("unknown panic")
    );
    if !key.is_empty() {
        journal.append(&Record {
            key,
            series,
            state: State::Crashed,
            at: crate::clock::unix_secs(),
            place: None,
            stat: None,
        })?;
    }
    std::fs::remove_file(&marker).map_err(|source| ServiceError::CrashMarker { path: marker, source })
}

/// Test builds only: `CTSENTINEL_TEST_PANIC_ON=<patient>/<series>` makes processing of that
/// series panic, the way a bug would, so the crash accounting can be tested on the real binary.
#[cfg(debug_assertions)]
fn fault_injection(place: &Place) {
    if let Some(target) = std::env::var_os("CTSENTINEL_TEST_PANIC_ON") {
        if target.to_string_lossy() == place.label() {
            panic!("fault injected by CTSENTINEL_TEST_PANIC_ON for {}", place.label());
        }
    }
}

#[cfg(not(debug_assertions))]
fn fault_injection(_: &Place) {}
