//! The drop-folder service loop, deterministic by construction: [`Service::tick`] takes the
//! time from its caller and the free space from an injected [`FreeSpace`] probe, so tests
//! drive it step by step (like smoltcp's simulated network) while `ctsentinel watch` calls it
//! from a real clock every poll interval.
//!
//! A series (`<drop>/<patient>/<series>/`) is processed once it has been *stable* — its list of
//! (name, size, mtime) unchanged — for the configured window, with no temporary names
//! (`*.part`, `*.tmp`, dot-files) in it. Polling works on every mount (NFS, SMB, vfat USB);
//! inotify would only shorten the wait, not change what is processed.
//!
//! Exactly once: the series' content fingerprint (names, sizes, SHA-256 of every file) is the
//! journal key. `processing` is journaled before work starts, `done`/`quarantined` only after
//! the result file is durably in place, so a crash at any point leads, on restart, to the series
//! being processed again and its single result file being replaced atomically — never to a
//! lost, duplicated or torn result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heapless::Deque;

use super::config::Config;
use super::journal::{Journal, Record, State};
use crate::classify::{sha256_hex, Classifier};
use crate::decide::Verdict;
use crate::ingest::{self, SliceDecoder};
use crate::pipeline;
use crate::present::display::Thumbnail;
use crate::present::write_atomic;

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

/// What the service tells the display and the log. Bounded queue: the display reads the
/// newest states; when it falls behind, the oldest events are dropped, never processing.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Receiving {
        series: String,
        files: usize,
    },
    /// Stable but holding temporary names (a copy in progress or interrupted).
    Incomplete {
        series: String,
        reason: String,
    },
    Processing {
        series: String,
    },
    Result {
        series: String,
        verdict: Verdict,
        covid_fraction: Option<f64>,
        selected: usize,
        file: PathBuf,
        /// The selected slice with the highest P(COVID), for the result screen.
        thumbnail: Option<Thumbnail>,
    },
    Quarantined {
        series: String,
        file: String,
        reason: String,
    },
    DiskLow {
        free_bytes: u64,
        floor_bytes: u64,
    },
    DiskOk,
    Fault {
        reason: String,
    },
}

/// Capacity of the service → display queue.
pub const EVENT_QUEUE: usize = 32;

/// A series whose processing was started this many times without finishing (the service died
/// each time) is moved to quarantine instead of being tried again.
pub const MAX_UNFINISHED_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    signature: Vec<(String, u64, u128)>,
    changed_at: Duration,
    /// The signature we last processed (or found done in the journal): unchanged means skip.
    handled: Option<Vec<(String, u64, u128)>>,
}

pub struct Service<F: FreeSpace> {
    config: Config,
    classifier: Classifier,
    journal: Journal,
    free: F,
    seen: BTreeMap<PathBuf, Seen>,
    disk_low: bool,
    events: Deque<Event, EVENT_QUEUE>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
    move |source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl<F: FreeSpace> Service<F> {
    /// Create the state folders and open the journal.
    pub fn new(config: Config, classifier: Classifier, free: F) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(config.results()).map_err(io(&config.results()))?;
        let journal = Journal::open(&config.journal()).map_err(io(&config.journal()))?;
        sweep_stale_temporaries(&config.results());
        Ok(Service {
            config,
            classifier,
            journal,
            free,
            seen: BTreeMap::new(),
            disk_low: false,
            events: Deque::new(),
        })
    }

    /// Take the events published since the last call (oldest first).
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.pop_front()).collect()
    }

    fn publish(&mut self, e: Event) {
        log_event(&e);
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    /// One look at the drop folders at time `now` (any monotonic origin); processes every
    /// series that became ready. Returns how many series were processed.
    pub fn tick(&mut self, now: Duration) -> usize {
        let mut ready = Vec::new();
        let drops = self.config.drop.clone();
        for drop in &drops {
            match series_dirs(drop) {
                Ok(dirs) => {
                    for (name, dir) in dirs {
                        if let Some(r) = self.observe(now, drop, &name, &dir) {
                            ready.push(r);
                        }
                    }
                }
                Err(e) => self.publish(Event::Fault {
                    reason: format!("drop folder {}: {e}", drop.display()),
                }),
            }
        }
        let mut processed = 0;
        for (name, dir, drop) in ready {
            if !self.disk_ok() {
                break;
            }
            match self.process(&name, &dir, &drop) {
                Ok(true) => processed += 1,
                Ok(false) => continue,
                Err(e) => self.publish(Event::Fault {
                    reason: format!("{name}: {e}"),
                }),
            }
            // A series was worked on and nothing large is alive now: give the freed pages back
            // (see heap).
            super::heap::release_free_memory();
        }
        processed
    }

    fn disk_ok(&mut self) -> bool {
        let floor = self.config.min_free_bytes;
        match self.free.free_bytes(&self.config.state) {
            Ok(free) if free < floor => {
                if !self.disk_low {
                    self.disk_low = true;
                    self.publish(Event::DiskLow {
                        free_bytes: free,
                        floor_bytes: floor,
                    });
                }
                false
            }
            Ok(_) => {
                if self.disk_low {
                    self.disk_low = false;
                    self.publish(Event::DiskOk);
                }
                true
            }
            Err(e) => {
                self.publish(Event::Fault {
                    reason: format!("cannot read free space of {}: {e}", self.config.state.display()),
                });
                false
            }
        }
    }

    /// Track a series' signature; return it when it is ready and not yet handled.
    fn observe(&mut self, now: Duration, drop: &Path, name: &str, dir: &Path) -> Option<(String, PathBuf, PathBuf)> {
        let (signature, transient) = match signature(dir) {
            Ok(s) => s,
            Err(e) => {
                self.publish(Event::Fault {
                    reason: format!("{name}: {e}"),
                });
                return None;
            }
        };
        let entry = self.seen.entry(dir.to_path_buf()).or_insert_with(|| Seen {
            signature: Vec::new(),
            changed_at: now,
            handled: None,
        });
        if entry.signature != signature {
            entry.signature = signature.clone();
            entry.changed_at = now;
            let files = signature.len();
            if entry.handled.as_ref() != Some(&signature) {
                self.publish(Event::Receiving {
                    series: name.to_string(),
                    files,
                });
            }
            return None;
        }
        if entry.handled.as_ref() == Some(&signature) || signature.is_empty() {
            return None;
        }
        if now.saturating_sub(entry.changed_at) < self.config.stability {
            return None;
        }
        if !transient.is_empty() {
            let reason = format!(
                "temporary files {} still present: copy in progress or interrupted",
                transient.join(", ")
            );
            entry.handled = Some(signature);
            self.publish(Event::Incomplete {
                series: name.to_string(),
                reason,
            });
            return None;
        }
        Some((name.to_string(), dir.to_path_buf(), drop.to_path_buf()))
    }

    /// Process one ready series exactly once. Ok(false) when the journal says it is done.
    fn process(&mut self, name: &str, dir: &Path, drop: &Path) -> Result<bool, ServiceError> {
        let (key, files) = fingerprint(name, dir).map_err(io(dir))?;
        let mark_handled = |seen: &mut BTreeMap<PathBuf, Seen>| {
            if let Some(s) = seen.get_mut(dir) {
                s.handled = Some(s.signature.clone());
            }
        };
        if matches!(self.journal.state(&key), Some(State::Done | State::Quarantined)) {
            log::debug!("{name}: already processed (journal), skipped");
            mark_handled(&mut self.seen);
            return Ok(false);
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let record = |state| Record {
            key: key.clone(),
            series: name.to_string(),
            state,
            at,
        };
        let tries = self.journal.unfinished_attempts(&key);
        if tries >= MAX_UNFINISHED_ATTEMPTS {
            // The service died this many times while processing this series (with panic=abort
            // a bug it triggers ends the process, and systemd restarts it): move the series
            // aside, so that it does not stop every series behind it.
            let reason = format!(
                "processing this series ended the service {tries} times without a result (a fault in \
                 ctsentinel: please report it with this series); moved aside so later series go on"
            );
            self.publish(Event::Fault {
                reason: format!("{name}: {reason}"),
            });
            for f in &files {
                if std::fs::symlink_metadata(f).is_ok() {
                    self.quarantine_file(name, f, reason.clone())?;
                }
            }
            self.journal
                .append(&record(State::Quarantined))
                .map_err(io(self.journal.path()))?;
            mark_handled(&mut self.seen);
            return Ok(true);
        }
        self.journal
            .append(&record(State::Processing))
            .map_err(io(self.journal.path()))?;
        self.publish(Event::Processing {
            series: name.to_string(),
        });

        // Refuse and quarantine what is not a slice before the pipeline sees the series.
        let quarantined = self.quarantine_bad_files(name, drop, &files)?;
        let (patient, series) = name.split_once('/').unwrap_or((name, name));
        let result = self.config.results().join(patient).join(format!("{series}.json"));
        std::fs::create_dir_all(result.parent().unwrap_or(Path::new("."))).map_err(io(&result))?;
        let report = match pipeline::scan_folder(dir, &mut self.classifier, &mut |_| {}) {
            Ok(r) => r,
            Err(e) => {
                // Nothing left to read (every file was quarantined): the reason is the result.
                self.publish(Event::Fault {
                    reason: format!("{name}: {e}"),
                });
                mark_handled(&mut self.seen);
                self.journal
                    .append(&record(State::Quarantined))
                    .map_err(io(self.journal.path()))?;
                return Ok(true);
            }
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| io(&result)(std::io::Error::other(e)))?;
        write_atomic(&result, format!("{text}\n").as_bytes()).map_err(io(&result))?;
        let state = if quarantined > 0 {
            State::Quarantined
        } else {
            State::Done
        };
        self.journal.append(&record(state)).map_err(io(self.journal.path()))?;
        mark_handled(&mut self.seen);
        log::info!(
            "RESULT {name}: {} (covid fraction {}, {} selected slices) model {} {} — {}",
            report.verdict,
            report.covid_fraction.map_or("n/a".into(), |f| format!("{f:.3}")),
            report.selected_slices,
            report.model.name,
            report.model.version,
            crate::NOTICE
        );
        self.publish(Event::Result {
            series: name.to_string(),
            verdict: report.verdict,
            covid_fraction: report.covid_fraction,
            selected: report.selected_slices,
            file: result,
            thumbnail: representative_thumbnail(dir, &report),
        });
        Ok(true)
    }

    /// Move every file of the series that is not an acceptable slice to
    /// `<results>/quarantine/<patient>/<series>/` with a `<file>.reason.txt`.
    fn quarantine_bad_files(&mut self, name: &str, drop: &Path, files: &[PathBuf]) -> Result<usize, ServiceError> {
        let mut decoder = SliceDecoder::new();
        let root = drop.canonicalize().map_err(io(drop))?;
        let mut n = 0;
        for f in files {
            let reason = match std::fs::symlink_metadata(f) {
                Ok(m) if m.file_type().is_symlink() => match f.canonicalize() {
                    Ok(target) if target.starts_with(&root) => decoder.decode(f).err().map(|e| e.to_string()),
                    Ok(target) => Some(format!(
                        "symbolic link leads outside the drop folder (to {})",
                        target.display()
                    )),
                    Err(e) => Some(format!("dangling symbolic link: {e}")),
                },
                Ok(_) => decoder.decode(f).err().map(|e| e.to_string()),
                Err(e) => Some(format!("cannot stat: {e}")),
            };
            let Some(reason) = reason else { continue };
            self.quarantine_file(name, f, reason)?;
            n += 1;
        }
        Ok(n)
    }

    /// Move one file of series `name` to `<state>/results/quarantine/<name>/`, beside a
    /// `.reason.txt` that says why.
    fn quarantine_file(&mut self, name: &str, f: &Path, reason: String) -> Result<(), ServiceError> {
        let qdir = self.config.quarantine().join(name);
        std::fs::create_dir_all(&qdir).map_err(io(&qdir))?;
        let file_name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = qdir.join(&file_name);
        move_file(f, &dest).map_err(io(f))?;
        write_atomic(
            &qdir.join(format!("{file_name}.reason.txt")),
            format!("{}: {reason}\n", f.display()).as_bytes(),
        )
        .map_err(io(&qdir))?;
        self.publish(Event::Quarantined {
            series: name.to_string(),
            file: file_name,
            reason,
        });
        Ok(())
    }
}

fn log_event(e: &Event) {
    match e {
        Event::Fault { reason } => log::error!("{reason}"),
        Event::Quarantined { series, file, reason } => log::warn!("{series}: quarantined {file}: {reason}"),
        Event::DiskLow {
            free_bytes,
            floor_bytes,
        } => {
            log::error!("disk low: {free_bytes} bytes free, floor {floor_bytes}: not accepting new series")
        }
        Event::Incomplete { series, reason } => log::warn!("{series}: incomplete, not processed: {reason}"),
        other => log::info!("{other:?}"),
    }
}

/// inotify wake-ups for the drop folders: a one-slot channel that gets a message whenever
/// something under them changes (the watcher must be kept alive). `None`, with the reason
/// logged, where inotify is not available; polling goes on regardless.
pub fn inotify_wakeups(drops: &[PathBuf]) -> Option<(std::sync::mpsc::Receiver<()>, notify::RecommendedWatcher)> {
    use notify::Watcher as _;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            log::warn!("inotify unavailable ({e}); polling only");
            return None;
        }
    };
    for d in drops {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::Recursive) {
            log::warn!("inotify cannot watch {} ({e}); polling only there", d.display());
        }
    }
    Some((rx, watcher))
}

/// Side of the result screen's thumbnail, before it is scaled to the panel.
const THUMBNAIL_SIDE: u32 = 128;

/// The selected slice with the highest P(COVID), lung-windowed (None if it cannot be read).
fn representative_thumbnail(dir: &Path, report: &crate::report::ScanReport) -> Option<Thumbnail> {
    let (series, slice) = report
        .series
        .iter()
        .flat_map(|s| s.slices.iter().map(move |sl| (s, sl)))
        .filter(|(_, sl)| sl.p_covid.is_some())
        .max_by(|a, b| {
            a.1.p_covid
                .partial_cmp(&b.1.p_covid)
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
    let path = Path::new(&series.path).join(&slice.file);
    let path = if path.exists() { path } else { dir.join(&slice.file) };
    let mut decoder = SliceDecoder::new();
    let s = decoder.decode(&path).ok()?;
    Some(Thumbnail::from_stored(s.pixels, s.width, s.height, THUMBNAIL_SIDE))
}

/// Remove the temporary files of result writes that a crash interrupted (`.<name>.tmp-<pid>`,
/// see `present::write_atomic`); they were never results.
fn sweep_stale_temporaries(results: &Path) {
    let Ok(patients) = sorted_entries(results) else { return };
    for dir in patients.into_iter().filter(|p| p.is_dir()) {
        for f in sorted_entries(&dir).unwrap_or_default() {
            let name = ingest::name_of(&f);
            if name.starts_with('.') && name.contains(".tmp-") {
                match std::fs::remove_file(&f) {
                    Ok(()) => log::warn!("{}: removed the temporary file of an interrupted write", f.display()),
                    Err(e) => log::error!("{}: cannot remove stale temporary file: {e}", f.display()),
                }
            }
        }
    }
}

/// Rename, or copy + fsync + remove when the quarantine is on another filesystem.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
    }
}

/// `(<patient>/<series>, path)` for every series folder of a drop folder.
fn series_dirs(drop: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for p in sorted_entries(drop)? {
        let pname = ingest::name_of(&p);
        if ingest::is_transient_name(&pname) || !p.is_dir() {
            continue;
        }
        for s in sorted_entries(&p)? {
            let sname = ingest::name_of(&s);
            if !ingest::is_transient_name(&sname) && s.is_dir() {
                out.push((format!("{pname}/{sname}"), s));
            }
        }
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

type Signature = Vec<(String, u64, u128)>;

/// (name, size, mtime) of every entry (links not followed), and the temporary names among them.
fn signature(dir: &Path) -> std::io::Result<(Signature, Vec<String>)> {
    let mut sig = Vec::new();
    let mut transient = Vec::new();
    for p in sorted_entries(dir)? {
        let name = ingest::name_of(&p);
        let m = std::fs::symlink_metadata(&p)?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        if ingest::is_transient_name(&name) {
            transient.push(name.clone());
        }
        sig.push((name, m.len(), mtime));
    }
    Ok((sig, transient))
}

/// Content fingerprint: SHA-256 over the series' place (`<patient>/<series>`, which names its
/// result file) and every slice file's name, size and content hash. Identical files copied in
/// under another patient folder are a different series with a result of their own. Returns the
/// key the journal records the series under, and its files.
pub fn fingerprint(series: &str, dir: &Path) -> std::io::Result<(String, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut acc = format!("{series}\n");
    for p in sorted_entries(dir)? {
        let name = ingest::name_of(&p);
        if ingest::is_transient_name(&name) {
            continue;
        }
        let m = std::fs::symlink_metadata(&p)?;
        let content = if m.is_file() && m.len() <= ingest::MAX_FILE_BYTES {
            sha256_hex(&std::fs::read(&p)?)
        } else {
            format!("not-read:{}", m.len())
        };
        acc.push_str(&format!("{name}\0{}\0{content}\n", m.len()));
        files.push(p);
    }
    Ok((sha256_hex(acc.as_bytes()), files))
}
