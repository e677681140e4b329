//! The service's state machine driven through random event orders and crash points, with the
//! real journal on a temp file and a model executor (snapshot → recovered? → processing →
//! result → done). Fast, so it runs many orders, panics and failures; the real executor, killed
//! before each of the effects the machine orders, is tested in `tests/service_executor.rs`. Checks the promises:
//! exactly one result computation per snapshot, none lost, none on a series that was not
//! stable, outside stops never counted against a series, own panics counted and set aside.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::time::Duration;

use proptest::prelude::*;

use ctsentinel::service::dropfs::{DropListing, SeriesListing};
use ctsentinel::service::journal::{Journal, Record, State};
use ctsentinel::service::machine::{Machine, Place, Plan, Settings};

const PLACES: usize = 3;
const STABILITY: u64 = 10;

#[derive(Debug, Clone)]
enum Step {
    /// A file of the series changes (new content, new stat).
    Write(usize),
    /// Only the stat changes (touch, copy with new mtimes), content identical.
    Touch(usize),
    /// A temporary name appears / disappears.
    Partial(usize, bool),
    /// Time passes and the service looks.
    Tick(u64),
    /// The next processing is interrupted from outside (kill -9, power cut) at a crash point.
    Kill(u8),
    /// The next processing panics (our own fault): the hook records it, the process ends.
    Panic,
    /// The next attempt fails for a reason outside the series (state folder unwritable).
    Fail,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..PLACES).prop_map(Step::Write),
        1 => (0..PLACES).prop_map(Step::Touch),
        1 => (0..PLACES, any::<bool>()).prop_map(|(p, b)| Step::Partial(p, b)),
        6 => (1..15u64).prop_map(Step::Tick),
        2 => (0..3u8).prop_map(Step::Kill),
        1 => Just(Step::Panic),
        1 => Just(Step::Fail),
    ]
}

#[derive(Debug, Clone, Default)]
struct Series {
    exists: bool,
    version: u32,
    touches: u32,
    partial: bool,
    changed_at: u64,
}

impl Series {
    fn stat(&self) -> String {
        format!("v{}t{}p{}", self.version, self.touches, self.partial)
    }
}

struct World {
    dir: tempfile::TempDir,
    series: Vec<Series>,
    now: u64,
    /// Place index → key of the result file there.
    result_file: HashMap<usize, String>,
    /// Result computations per key.
    computed: HashMap<String, u32>,
    set_aside: HashSet<String>,
    kill_at: Option<u8>,
    panic_next: bool,
    fail_next: bool,
    /// Own panics per key (what the hook would have journaled).
    panics: HashMap<String, u32>,
    machine: Machine,
    journal: Journal,
    /// Per place: the stat the machine last observed and since when it has observed it
    /// without interruption (reset by a restart: a fresh machine has seen nothing).
    observed: HashMap<usize, (String, u64)>,
}

fn place(i: usize) -> Place {
    Place::new("drop-1", OsStr::new(&format!("p{i}")), OsStr::new("SR_1"))
}

fn key(i: usize, version: u32) -> String {
    format!("key-p{i}-v{version}")
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let machine = Machine::new(Settings::new(Duration::from_secs(STABILITY)), journal.replay());
        World {
            dir,
            series: vec![Series::default(); PLACES],
            now: 0,
            result_file: HashMap::new(),
            computed: HashMap::new(),
            set_aside: HashSet::new(),
            kill_at: None,
            panic_next: false,
            fail_next: false,
            panics: HashMap::new(),
            machine,
            journal,
            observed: HashMap::new(),
        }
    }

    /// What a restart does: reopen and replay the journal into a fresh machine.
    fn restart(&mut self) {
        self.journal = Journal::open(&self.dir.path().join("journal")).unwrap();
        self.machine = Machine::new(Settings::new(Duration::from_secs(STABILITY)), self.journal.replay());
        self.observed.clear();
    }

    fn record(&self, i: usize, k: &str, state: State) -> Record {
        Record {
            key: k.to_string(),
            series: format!("p{i}/SR_1"),
            state,
            at: self.now,
            place: Some(place(i)),
            stat: Some(self.series[i].stat()),
        }
    }

    fn apply(&mut self, s: &Step) {
        match *s {
            Step::Write(i) => {
                let sr = &mut self.series[i];
                sr.exists = true;
                sr.version += 1;
                sr.changed_at = self.now;
            }
            Step::Touch(i) if self.series[i].exists => {
                self.series[i].touches += 1;
                self.series[i].changed_at = self.now;
            }
            Step::Touch(_) => {}
            Step::Partial(i, on) if self.series[i].exists => {
                self.series[i].partial = on;
                self.series[i].changed_at = self.now;
            }
            Step::Partial(..) => {}
            Step::Tick(dt) => {
                self.now += dt;
                self.tick();
            }
            Step::Kill(at) => self.kill_at = Some(at),
            Step::Panic => self.panic_next = true,
            Step::Fail => self.fail_next = true,
        }
    }

    fn listing(&self) -> DropListing {
        DropListing {
            series: (0..PLACES)
                .filter(|&i| self.series[i].exists)
                .map(|i| SeriesListing {
                    place: place(i),
                    stat: self.series[i].stat(),
                    files: 1,
                    transient: if self.series[i].partial {
                        vec!["IM2.tif.part".into()]
                    } else {
                        vec![]
                    },
                    missing: vec![],
                    committed: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn tick(&mut self) {
        let now = Duration::from_secs(self.now);
        let listing = self.listing();
        for i in 0..PLACES {
            if !self.series[i].exists {
                continue;
            }
            let stat = self.series[i].stat();
            let seen = self.observed.entry(i).or_insert((stat.clone(), self.now));
            if seen.0 != stat {
                *seen = (stat, self.now);
            }
        }
        self.machine.listed(now, "drop-1", &listing);
        let mut tried = HashSet::new();
        while let Some((p, stat)) = self.machine.next(now, &tried) {
            tried.insert(p.clone());
            let i: usize = p.patient[1..].parse().unwrap();
            let sr = self.series[i].clone();
            assert_eq!(stat, sr.stat(), "the machine asks for the current folder");
            assert!(!sr.partial, "never a series holding temporary names");
            let since = self.observed[&i].1;
            assert!(
                self.now - since >= STABILITY,
                "p{i} snapshotted {}s after the machine saw it change",
                self.now - since
            );
            if std::mem::take(&mut self.fail_next) {
                self.machine.failed(now, &p, "state folder not writable");
                continue;
            }
            let k = key(i, sr.version);
            match self.machine.snapshotted(&p, &stat, &k) {
                // This model's partial copies are `.part` names, never DICOM push markers.
                Plan::Abandoned => panic!("abandoned without a push marker"),
                Plan::AlreadyDone => {
                    self.journal.append(&self.record(i, &k, State::Done)).unwrap();
                }
                Plan::SetAside { crashes } => {
                    assert!(crashes >= 3);
                    assert!(
                        self.panics.get(&k).copied().unwrap_or(0) >= 3,
                        "set aside without 3 own panics"
                    );
                    self.result_file.insert(i, k.clone());
                    self.set_aside.insert(k.clone());
                    self.journal.append(&self.record(i, &k, State::SetAside)).unwrap();
                    self.machine.finished(&p, &stat, &k);
                }
                Plan::Process => {
                    if self.result_file.get(&i) == Some(&k) {
                        // Recovered: the result was written before the last stop.
                        self.journal.append(&self.record(i, &k, State::Done)).unwrap();
                        self.machine.finished(&p, &stat, &k);
                        continue;
                    }
                    if self.kill_at == Some(0) {
                        self.kill_at = None;
                        return self.restart();
                    }
                    self.journal.append(&self.record(i, &k, State::Processing)).unwrap();
                    if std::mem::take(&mut self.panic_next) {
                        *self.panics.entry(k.clone()).or_default() += 1;
                        let crash = Record {
                            place: None,
                            stat: None,
                            ..self.record(i, &k, State::Crashed)
                        };
                        self.restart();
                        // The next start journals the hook's marker.
                        self.journal.append(&crash).unwrap();
                        return self.restart();
                    }
                    if self.kill_at == Some(1) {
                        self.kill_at = None;
                        return self.restart();
                    }
                    *self.computed.entry(k.clone()).or_default() += 1;
                    self.result_file.insert(i, k.clone());
                    if self.kill_at == Some(2) {
                        self.kill_at = None;
                        return self.restart();
                    }
                    self.journal.append(&self.record(i, &k, State::Done)).unwrap();
                    self.machine.finished(&p, &stat, &k);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn exactly_one_result_per_snapshot_through_any_order_of_events_and_crashes(steps in proptest::collection::vec(step(), 1..60)) {
        let mut w = World::new();
        for s in &steps {
            w.apply(s);
        }
        // Quiet at the end: copies finish, no more faults; everything settles.
        for i in 0..PLACES {
            if w.series[i].partial {
                w.series[i].partial = false;
                w.series[i].changed_at = w.now;
            }
        }
        w.kill_at = None;
        w.panic_next = false;
        w.fail_next = false;
        for _ in 0..12 {
            w.now += 60;
            w.tick();
        }
        for (k, n) in &w.computed {
            prop_assert_eq!(*n, 1, "key {} computed {} times", k, n);
        }
        for i in 0..PLACES {
            if !w.series[i].exists {
                continue;
            }
            let want = key(i, w.series[i].version);
            prop_assert_eq!(w.result_file.get(&i), Some(&want), "p{}: final content has no result", i);
        }
        for k in &w.set_aside {
            prop_assert!(w.panics.get(k).copied().unwrap_or(0) >= 3);
        }
        // A restart now does nothing: every current folder is recognised from its stat alone.
        let lines = std::fs::read_to_string(w.dir.path().join("journal")).unwrap().lines().count();
        w.restart();
        w.now += 60;
        w.tick();
        w.now += 60;
        w.tick();
        let after = std::fs::read_to_string(w.dir.path().join("journal")).unwrap().lines().count();
        prop_assert_eq!(lines, after, "a restart re-read a series it had already finished");
    }
}

#[test]
fn kills_during_processing_are_never_counted_against_the_series() {
    let mut w = World::new();
    w.apply(&Step::Write(0));
    w.apply(&Step::Tick(1)); // first look
    for _ in 0..5 {
        w.apply(&Step::Kill(1));
        w.apply(&Step::Tick(1)); // a restarted service looks first
        w.apply(&Step::Tick(STABILITY + 1));
    }
    w.apply(&Step::Tick(1));
    w.apply(&Step::Tick(STABILITY + 1));
    assert!(w.set_aside.is_empty());
    assert_eq!(w.computed.get(&key(0, 1)), Some(&1));
}

#[test]
fn three_own_panics_set_the_series_aside_and_the_others_go_on() {
    let mut w = World::new();
    w.apply(&Step::Write(0));
    w.apply(&Step::Tick(1));
    w.apply(&Step::Tick(STABILITY + 1));
    assert_eq!(w.result_file.get(&0), Some(&key(0, 1)));
    // p0 done. Now p1 panics the service three times; p2 waits behind it.
    w.apply(&Step::Write(1));
    w.apply(&Step::Write(2));
    w.apply(&Step::Tick(1));
    for _ in 0..3 {
        // Each panic restarts the machine, which must see the folders again first.
        w.apply(&Step::Tick(1));
        w.apply(&Step::Panic);
        w.apply(&Step::Tick(STABILITY + 1));
    }
    w.apply(&Step::Tick(1));
    w.apply(&Step::Tick(STABILITY + 1));
    assert!(w.set_aside.contains(&key(1, 1)), "{:?}", w.set_aside);
    assert_eq!(w.result_file.get(&2), Some(&key(2, 1)));
    assert_eq!(w.computed.get(&key(1, 1)), None);
}

#[test]
fn a_transient_failure_is_retried_with_backoff_not_set_aside() {
    let mut w = World::new();
    w.apply(&Step::Write(0));
    w.apply(&Step::Tick(1));
    w.apply(&Step::Fail);
    w.apply(&Step::Tick(STABILITY + 1)); // fails: retry in 5 s
    w.apply(&Step::Tick(1));
    assert!(w.result_file.is_empty(), "retried before its backoff");
    w.apply(&Step::Tick(5));
    assert_eq!(w.result_file.get(&0), Some(&key(0, 1)));
    assert!(w.set_aside.is_empty());
}

#[test]
fn vanished_series_are_forgotten_by_the_machine() {
    let mut w = World::new();
    for i in 0..PLACES {
        w.apply(&Step::Write(i));
    }
    w.apply(&Step::Tick(1));
    w.apply(&Step::Tick(STABILITY + 1));
    assert_eq!(w.machine.tracked(), PLACES);
    assert_eq!(w.result_file.len(), PLACES);
    for i in 0..PLACES {
        w.series[i].exists = false;
    }
    w.apply(&Step::Tick(1));
    assert_eq!(w.machine.tracked(), 0);
}
