//! The service's decisions, with no I/O: what is stable, what is ready, what was already
//! done, what crashed us, what waits for a retry.
//!
//! Why a state machine: the promises of the service (exactly one result per snapshot, none
//! lost, none on a partial copy, outside kills are not faults, nothing outside the drop
//! folders touched) are properties of *decisions*, and decisions without I/O can be driven
//! through every event order and crash point by a property test (`tests/service_machine.rs`)
//! — which timed end-to-end tests never do. The executor (`run.rs`) lists folders, copies
//! snapshots, scans, writes and journals, and tells the machine what happened.
//!
//! The ledger, per series folder ([`Place`]):
//! - **stability**: the folder's stat signature (names, sizes, inodes, mtimes; no reads) must
//!   stay the same for `stability`, with no temporary names and no file its DICOMDIR lists
//!   missing, before it is *ready*;
//! - **aliases**: `place → (stat, key)` of the last snapshot with a final result, replayed
//!   from the journal, so a restart recognises every processed series from one `lstat` per
//!   file, whatever the history;
//! - **keys**: a snapshot's key is computed once, over the bytes copied into the state folder
//!   (`dropfs::snapshot`); the journal knows which keys are final;
//! - **crashes**: counted only from `crashed` journal records, which only our own panic hook
//!   causes. A kill, a power cut or `systemctl stop` leaves no crash record: the series is
//!   simply redone.
//! - **backoff**: a failed attempt (state folder unwritable, drop folder gone mid-copy) is
//!   retried after 5 s, 10 s, 20 s … at most 10 min; it never becomes a fault of the series.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::Event;

/// One series folder as listed: enough to tell whether it changed, nothing read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesListing {
    pub place: Place,
    /// Stat-level signature of the folder's entries (see `dropfs::stat_signature`).
    pub stat: String,
    /// Entries that are not temporary names.
    pub files: usize,
    /// Temporary names present (`*.part`, `*.tmp`, dot-files): a copy in progress.
    pub transient: Vec<String>,
    /// Files the export's DICOMDIR lists in this folder that are not here (see `dropfs::Index`).
    pub missing: Vec<String>,
    /// Instances a DICOM peer's storage commitment covers (the receiver's commit marker,
    /// `dicom_net::inbox::COMMIT_MARKER_PREFIX`); not counted in `files` or `transient`.
    pub committed: Option<usize>,
}

/// What one look at a drop folder found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropListing {
    pub series: Vec<SeriesListing>,
    /// Entries above the series level that are not followed or not part of a series, with the
    /// reason (`<patient>` or `<patient>/<entry>`).
    pub refused: Vec<(String, String)>,
    /// Patient folders that could not be listed this time (the others go on).
    pub errors: Vec<(String, String)>,
}

/// A series folder: `<drop>/<patient>/<series>`. Names are kept exactly, as strings in which
/// `%` and bytes that are not UTF-8 are written `%XX` (so any name round-trips).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Place {
    /// The drop folder's id (`layout::drop_id`).
    pub drop: String,
    pub patient: String,
    pub series: String,
}

impl Place {
    pub fn new(drop: &str, patient: &OsStr, series: &OsStr) -> Place {
        Place {
            drop: drop.to_string(),
            patient: encode_name(patient),
            series: encode_name(series),
        }
    }

    pub fn patient_os(&self) -> OsString {
        decode_name(&self.patient)
    }

    pub fn series_os(&self) -> OsString {
        decode_name(&self.series)
    }

    /// `<patient>/<series>` as people read it (invalid bytes shown as U+FFFD).
    pub fn label(&self) -> String {
        format!(
            "{}/{}",
            self.patient_os().to_string_lossy(),
            self.series_os().to_string_lossy()
        )
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.drop, self.patient, self.series)
    }
}

/// `%` → `%25`, every byte of an invalid UTF-8 sequence → `%XX`; everything else verbatim.
pub fn encode_name(name: &OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('%', "%25"));
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_name`].
pub fn decode_name(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Timing of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a series folder must stay unchanged before it is processed.
    pub stability: Duration,
    /// Crashes of the service (our own panics) on one snapshot before it is set aside.
    pub max_crashes: u32,
    /// First retry delay after a failed attempt; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a series whose DICOM push did not end with A-RELEASE (a push marker is left,
    /// see `dicom_net::inbox`) waits for a resend before it gets an `undetermined` result.
    pub resend_wait: Duration,
}

impl Settings {
    pub fn new(stability: Duration) -> Settings {
        Settings {
            stability,
            max_crashes: 3,
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            resend_wait: Duration::from_secs(600),
        }
    }
}

/// What the journal says, replayed at start (see `journal::Journal::replay`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Keys with a final result (done or set aside).
    pub finished: HashSet<String>,
    /// The last finished snapshot of each place: its stat signature and key.
    pub aliases: HashMap<Place, (String, String)>,
    /// Crashes of the service while processing a key (only our own panics), for unfinished keys.
    pub crashes: HashMap<String, u32>,
}

/// What to do with a snapshot whose key is now known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// This exact snapshot already has its result: nothing to do (the alias is updated).
    AlreadyDone,
    /// Scan it and write its result.
    Process,
    /// It crashed the service this many times: write an `undetermined` result that says so
    /// and asks for a report, so the series behind it go on.
    SetAside { crashes: u32 },
    /// Its DICOM push was aborted and not sent again within `resend_wait`: write an
    /// `undetermined` result saying so, under [`abandoned_key`] (a resend of the same bytes is
    /// then processed, not taken as already done).
    Abandoned,
}

/// One durable effect of handling a snapshot. The machine decides which effects a [`Plan`]
/// has and in which order ([`Plan::effects`]); the executor (`service::run`) performs them in
/// exactly that order and decides nothing. The order is what makes a kill or power cut at any
/// point safe: a result is computed at most once per snapshot once written, never lost, and a
/// result of record (the JSON) always had its sheet and DICOM results attempted
/// (`tests/service_executor.rs` kills the real executor before every effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// If the result file already holds this snapshot's result (written before a kill), take
    /// it and go on with [`Plan::RECOVERED`] instead of the rest.
    Recover,
    /// Journal `processing` (a crash from here to `JournalDone` counts against the series).
    JournalProcessing,
    /// Run the pipeline (selection, network, decision): the report.
    Compute,
    /// Keep copies of the files the report says could not be read.
    QuarantineUnreadable,
    /// Keep copies of every file of a series set aside, with the reason.
    QuarantineAll,
    /// The report sheet beside the result.
    Sheet,
    /// The DICOM SR / SC beside the result, and their place in the PACS outbox.
    Dicom,
    /// The result of record (JSON), atomically.
    Result,
    /// Journal `done`.
    JournalDone,
    /// Journal `set_aside`.
    JournalSetAside,
    /// Tell the machine the snapshot has its result.
    Finish,
}

impl Plan {
    /// A `Process` whose result was found already written ([`Effect::Recover`]).
    pub const RECOVERED: &'static [Effect] = &[Effect::JournalDone, Effect::Finish];

    /// The effects of this plan, in the order they must happen.
    pub fn effects(self) -> &'static [Effect] {
        use Effect::*;
        match self {
            // Same bytes under a new stat signature: remember the signature, nothing else.
            Plan::AlreadyDone => &[JournalDone],
            // Sheet and DICOM before the JSON: a kill before the JSON redoes them (recomputing
            // the report), one after it finds them done (`Recover`). The journal's `done` after
            // the JSON: a `done` with no result would lose the result for good.
            Plan::Process => &[
                Recover,
                JournalProcessing,
                Compute,
                QuarantineUnreadable,
                Sheet,
                Dicom,
                Result,
                JournalDone,
                Finish,
            ],
            Plan::SetAside { .. } => &[QuarantineAll, Result, JournalSetAside, Finish],
            Plan::Abandoned => &[Result, JournalDone, Finish],
        }
    }
}

/// The key under which an abandoned (incomplete push) snapshot's result is recorded.
pub fn abandoned_key(key: &str) -> String {
    format!("{key}+push-incomplete")
}

/// True for the push markers the DICOM receiver leaves in a series folder until A-RELEASE.
pub fn is_push_marker(name: &str) -> bool {
    name.starts_with(crate::dicom_net::inbox::PUSH_MARKER_PREFIX)
}

fn only_push_markers(transient: &[String]) -> bool {
    !transient.is_empty() && transient.iter().all(|n| is_push_marker(n))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Changed recently (or never examined).
    Settling,
    /// Stable with temporary names; reported once.
    Waiting,
    /// Its current stat signature has a final result.
    Handled,
    /// The last attempt failed; not before `until`.
    Backoff { until: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Track {
    stat: String,
    since: Duration,
    files: usize,
    transient: Vec<String>,
    /// Files its export's DICOMDIR lists that are not there.
    missing: Vec<String>,
    /// Instances a DICOM peer's storage commitment covers.
    committed: Option<usize>,
    phase: Phase,
    /// Failed attempts on this stat signature, kept across a return to settling.
    failures: u32,
}

/// The decision-maker. See the module docs.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    tracks: BTreeMap<Place, Track>,
    aliases: HashMap<Place, (String, String)>,
    finished: HashSet<String>,
    crashes: HashMap<String, u32>,
    /// Refused entries already reported, per drop folder (reported again only after they
    /// disappear and come back).
    reported: HashMap<String, HashSet<(String, String)>>,
    /// Listing failures already reported, per drop folder.
    failing: HashMap<String, String>,
    disk_low: bool,
}

impl Machine {
    pub fn new(settings: Settings, replay: Replay) -> Machine {
        Machine {
            settings,
            tracks: BTreeMap::new(),
            aliases: replay.aliases,
            finished: replay.finished,
            crashes: replay.crashes,
            reported: HashMap::new(),
            failing: HashMap::new(),
            disk_low: false,
        }
    }

    /// Number of series folders tracked (bounded by what the drop folders hold now).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Every drop folder could be listed at its last look (so `present` is complete).
    pub fn all_listed(&self) -> bool {
        self.failing.is_empty()
    }

    /// The places currently present in the drop folders (for journal pruning).
    pub fn present(&self) -> HashSet<Place> {
        self.tracks.keys().cloned().collect()
    }

    /// Series folders of drop folder `drop` whose current content has its final result (and no
    /// push or copy under way): the only ones that may be pruned. Never an unprocessed series.
    pub fn handled(&self, drop: &str) -> Vec<Place> {
        self.tracks
            .iter()
            .filter(|(p, t)| p.drop == drop && t.phase == Phase::Handled && t.transient.is_empty())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// A successful look at drop folder `drop` at time `now`.
    pub fn listed(&mut self, now: Duration, drop: &str, listing: &DropListing) -> Vec<Event> {
        let mut events = Vec::new();
        if self.failing.remove(drop).is_some() {
            events.push(Event::DropReadable { drop: drop.to_string() });
        }
        // Refused entries: once while present.
        let now_refused: HashSet<(String, String)> = listing.refused.iter().cloned().collect();
        let reported = self.reported.entry(drop.to_string()).or_default();
        for r in &listing.refused {
            if !reported.contains(r) {
                events.push(Event::Refused {
                    path: r.0.clone(),
                    reason: r.1.clone(),
                });
            }
        }
        *reported = now_refused;
        for (what, reason) in &listing.errors {
            events.push(Event::Retry {
                what: what.clone(),
                reason: format!("cannot list: {reason}"),
                in_s: 0,
            });
        }
        // Forget places that are gone (bounded memory), unless their patient folder failed
        // to list this time.
        let listed: HashSet<&Place> = listing.series.iter().map(|s| &s.place).collect();
        let failed_patients: HashSet<String> = listing
            .errors
            .iter()
            .map(|(w, _)| w.split('/').next().unwrap_or_default().to_string())
            .collect();
        self.tracks.retain(|p, _| {
            p.drop != drop
                || listed.contains(p)
                || failed_patients.contains(&decode_name(&p.patient).to_string_lossy().into_owned())
        });
        for s in &listing.series {
            let alias_stat = self.aliases.get(&s.place).map(|(stat, _)| stat.clone());
            let handled = alias_stat.as_deref() == Some(s.stat.as_str());
            let existed = match self.tracks.get(&s.place) {
                Some(t) if t.stat == s.stat => continue,
                Some(_) => true,
                None => false,
            };
            // New, or changed: a fresh track (failures start again with the new content).
            self.tracks.insert(
                s.place.clone(),
                Track {
                    stat: s.stat.clone(),
                    since: now,
                    files: s.files,
                    transient: s.transient.clone(),
                    missing: s.missing.clone(),
                    committed: s.committed,
                    phase: if handled { Phase::Handled } else { Phase::Settling },
                    failures: 0,
                },
            );
            // An empty folder that just appeared is not news; a change to a known one is.
            if !handled && (existed || s.files > 0) {
                events.push(Event::Receiving {
                    series: s.place.label(),
                    files: s.files,
                });
            }
        }
        // Stable series with temporary names, or missing files their DICOMDIR lists: say so
        // once.
        for (place, t) in self.tracks.iter_mut().filter(|(p, _)| p.drop == drop) {
            if t.phase == Phase::Settling
                && (!t.transient.is_empty() || !t.missing.is_empty())
                && now.saturating_sub(t.since) >= self.settings.stability
            {
                t.phase = Phase::Waiting;
                let reason = if only_push_markers(&t.transient) {
                    format!(
                        "the DICOM push of this series did not end with A-RELEASE (aborted, or the sender still connected): waiting up to {} s for it to be sent again",
                        self.settings.resend_wait.as_secs()
                    )
                } else if t.transient.is_empty() {
                    const SHOWN: usize = 5;
                    let more = t.missing.len().saturating_sub(SHOWN);
                    format!(
                        "the export's DICOMDIR lists {} file(s) of this series that are not here ({}{}): copy incomplete; waiting for them",
                        t.missing.len(),
                        t.missing[..t.missing.len().min(SHOWN)].join(", "),
                        if more > 0 { format!(" and {more} more") } else { String::new() }
                    )
                } else {
                    format!(
                        "temporary files {} still present: copy in progress or interrupted",
                        t.transient.join(", ")
                    )
                };
                events.push(Event::Incomplete {
                    series: place.label(),
                    reason,
                });
            }
        }
        events
    }

    /// A failed look at drop folder `drop` (stick pulled, share down): reported once until it
    /// comes back; its series stay tracked.
    pub fn listing_failed(&mut self, drop: &str, reason: &str) -> Option<Event> {
        let first = self.failing.insert(drop.to_string(), reason.to_string()).as_deref() != Some(reason);
        first.then(|| Event::Retry {
            what: format!("drop folder {drop}"),
            reason: reason.to_string(),
            in_s: 0,
        })
    }

    /// The free-space reading of the state folder; an event when it crosses the floor.
    pub fn disk(&mut self, free: u64, floor: u64) -> Option<Event> {
        let low = free < floor;
        if low == self.disk_low {
            return None;
        }
        self.disk_low = low;
        Some(if low {
            Event::DiskLow {
                free_bytes: free,
                floor_bytes: floor,
            }
        } else {
            Event::DiskOk
        })
    }

    pub fn disk_low(&self) -> bool {
        self.disk_low
    }

    /// The next series to snapshot at `now`: stable for the window (or every instance covered
    /// by a storage commitment), no temporary names and no listed file missing, not handled, not waiting for a retry, not in `skip` (already tried
    /// in this look).
    /// Oldest-stable first. `None` while the disk is low.
    pub fn next(&self, now: Duration, skip: &HashSet<Place>) -> Option<(Place, String)> {
        if self.disk_low {
            return None;
        }
        self.tracks
            .iter()
            .filter(|(p, t)| {
                let age = now.saturating_sub(t.since);
                // The sender's storage commitment covers every instance here: it has said the
                // push is whole, so no need to wait for the folder to stay unchanged.
                let committed = t.committed == Some(t.files);
                let complete = t.transient.is_empty() && (committed || age >= self.settings.stability);
                // A push that was never completed: given up on after the resend wait.
                let abandoned =
                    only_push_markers(&t.transient) && age >= self.settings.stability.max(self.settings.resend_wait);
                !skip.contains(*p)
                    && t.files > 0
                    && t.missing.is_empty()
                    && (complete || abandoned)
                    && match t.phase {
                        Phase::Settling => true,
                        Phase::Waiting => abandoned,
                        Phase::Backoff { until, .. } => now >= until,
                        Phase::Handled => false,
                    }
            })
            .min_by_key(|(p, t)| (t.since, (*p).clone()))
            .map(|(p, t)| (p.clone(), t.stat.clone()))
    }

    /// The snapshot of `place` at `stat` has key `key`: what to do with it.
    pub fn snapshotted(&mut self, place: &Place, stat: &str, key: &str) -> Plan {
        if self.tracks.get(place).is_some_and(|t| only_push_markers(&t.transient)) {
            let k = abandoned_key(key);
            if self.finished.contains(&k) {
                self.mark_handled(place, stat, &k);
                return Plan::AlreadyDone;
            }
            return Plan::Abandoned;
        }
        if self.finished.contains(key) {
            self.mark_handled(place, stat, key);
            return Plan::AlreadyDone;
        }
        let crashes = self.crashes.get(key).copied().unwrap_or(0);
        if crashes >= self.settings.max_crashes {
            return Plan::SetAside { crashes };
        }
        Plan::Process
    }

    /// The result of `key` is durable and journaled as final.
    pub fn finished(&mut self, place: &Place, stat: &str, key: &str) {
        self.finished.insert(key.to_string());
        self.crashes.remove(key);
        self.mark_handled(place, stat, key);
    }

    fn mark_handled(&mut self, place: &Place, stat: &str, key: &str) {
        self.aliases.insert(place.clone(), (stat.to_string(), key.to_string()));
        if let Some(t) = self.tracks.get_mut(place) {
            if t.stat == stat {
                t.phase = Phase::Handled;
                t.failures = 0;
            }
        }
    }

    /// The folder changed while it was being copied: it must settle again.
    pub fn changed(&mut self, now: Duration, place: &Place) {
        if let Some(t) = self.tracks.get_mut(place) {
            t.since = now;
            t.phase = Phase::Settling;
        }
    }

    /// An attempt on `place` failed for a reason outside the series (state folder, drop
    /// folder gone mid-way): retried with exponential backoff, never counted against it.
    pub fn failed(&mut self, now: Duration, place: &Place, reason: &str) -> Event {
        let s = self.settings;
        let mut delay = s.backoff_min;
        if let Some(t) = self.tracks.get_mut(place) {
            t.failures = t.failures.saturating_add(1);
            let factor = 1u32 << (t.failures - 1).min(16);
            delay = s.backoff_min.saturating_mul(factor).min(s.backoff_max);
            t.phase = Phase::Backoff { until: now + delay };
        }
        Event::Retry {
            what: place.label(),
            reason: reason.to_string(),
            in_s: delay.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_round_trips_through_the_encoding() {
        for raw in [
            b"SR_1".to_vec(),
            b"100%".to_vec(),
            b"%41".to_vec(),
            vec![0xff, b'%', 0x80, b'a'],
            "Müller".as_bytes().to_vec(),
            b"%".to_vec(),
            b"%4".to_vec(),
        ] {
            let os = OsString::from_vec(raw.clone());
            let enc = encode_name(&os);
            assert_eq!(decode_name(&enc).into_vec(), raw, "{enc}");
        }
        assert_eq!(encode_name(OsStr::new("SR_1")), "SR_1");
    }

    #[test]
    fn a_drop_folder_that_failed_and_lists_again_says_so_once_for_the_screen_to_clear() {
        let mut m = Machine::new(Settings::new(Duration::from_secs(10)), Replay::default());
        let fail = m.listing_failed("usb", "No such device");
        assert!(matches!(fail, Some(Event::Retry { .. })));
        assert!(m.listing_failed("usb", "No such device").is_none(), "once per reason");
        let events = m.listed(Duration::from_secs(1), "usb", &DropListing::default());
        assert_eq!(events, vec![Event::DropReadable { drop: "usb".into() }]);
        assert!(m
            .listed(Duration::from_secs(2), "usb", &DropListing::default())
            .is_empty());
    }
}
