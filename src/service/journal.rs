//! The service's journal: an append-only text file, one record per line, each line carrying a
//! checksum of its own JSON, fsynced after every append. Replaying it gives the state machine
//! its [`Replay`]: which snapshot keys are final, the last finished snapshot of each place,
//! and how often our own panics ended the service on an unfinished key.
//!
//! Safety of replay: a state is only advanced *after* its effect is durable (the result file
//! is renamed into place before `done` is appended), and a torn line (power cut mid-write)
//! fails its checksum and is ignored. A failed append cuts the file back to its last whole
//! line, so a torn write is never glued to the next record.
//!
//! Bounded over months: [`Journal::compact`] rewrites the file atomically (temporary file,
//! fsync, rename, fsync of the folder) keeping one final record per key, the crash records of
//! unfinished keys, and nothing about places that are gone and older than the retention.
//!
//! Why not redb/sled: a few hundred records a day, one writer, and a format a hospital's IT
//! person can read with `less`; a line-oriented file with checksums is all that is needed.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::{Place, Replay};
use crate::classify::sha256_hex;

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Work started. Informational: an unfinished key is simply done again.
    Processing,
    /// Result written (journals of earlier versions wrote `quarantined` for a result whose
    /// series had unreadable files).
    #[serde(alias = "quarantined")]
    Done,
    /// It crashed the service too often; an `undetermined` result saying so was written.
    #[serde(rename = "set_aside")]
    SetAside,
    /// Our own panic hook ended the service while this key was being processed.
    Crashed,
}

/// One journal line's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The snapshot's key (place, names, sizes and SHA-256 of its files).
    pub key: String,
    /// `<patient>/<series>` as people read it.
    pub series: String,
    pub state: State,
    /// Seconds since the Unix epoch (from the service's clock).
    pub at: u64,
    /// The series folder (absent in journals of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    /// The folder's stat signature when it was snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Length of the file up to its last whole line.
    len: u64,
    /// Lines in the file (whole ones).
    lines: usize,
    /// Final record of each finished key, with its sequence number (replay order).
    finals: HashMap<String, (u64, Record)>,
    /// Crash records of each unfinished key.
    crashes: HashMap<String, Vec<(u64, Record)>>,
    seq: u64,
    /// Lines that failed their checksum or did not parse at open (torn writes).
    pub ignored_lines: usize,
}

fn checksum(json: &str) -> String {
    sha256_hex(json.as_bytes())[..16].to_string()
}

fn line_of(record: &Record) -> std::io::Result<String> {
    let json = serde_json::to_string(record).map_err(std::io::Error::other)?;
    Ok(format!("{} {json}\n", checksum(&json)))
}

/// A final record replay no longer needs: its place is gone and it is older than the retention.
fn is_expired(r: &Record, present: &HashSet<Place>, now_s: u64, retention_s: u64) -> bool {
    now_s.saturating_sub(r.at) > retention_s && !matches!(&r.place, Some(p) if present.contains(p))
}

fn parse(line: &[u8]) -> Option<Record> {
    let l = std::str::from_utf8(line).ok()?;
    let (sum, json) = l.split_once(' ')?;
    (sum == checksum(json)).then_some(())?;
    serde_json::from_str::<Record>(json).ok()
}

impl Journal {
    /// Open (creating) the journal and replay it.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let err = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut j = Journal {
            path: path.to_path_buf(),
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?,
            len: 0,
            lines: 0,
            finals: HashMap::new(),
            crashes: HashMap::new(),
            seq: 0,
            ignored_lines: 0,
        };
        let f = std::fs::File::open(path).map_err(err)?;
        let mut reader = std::io::BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            let whole = buf.last() == Some(&b'\n');
            let body = if whole { &buf[..buf.len() - 1] } else { &buf[..] };
            match parse(body) {
                Some(r) if whole => {
                    j.lines += 1;
                    j.apply(r);
                }
                _ if body.is_empty() => {}
                _ => j.ignored_lines += 1,
            }
            if whole {
                j.len += n as u64;
            }
        }
        if j.ignored_lines > 0 {
            log::warn!(
                "{}: {} damaged journal line(s) ignored (torn write?)",
                path.display(),
                j.ignored_lines
            );
        }
        // A torn last line has no newline: cut it off, so our records start on a fresh line.
        let on_disk = std::fs::metadata(path).map_err(err)?.len();
        if on_disk != j.len {
            j.file.set_len(j.len).map_err(err)?;
            j.file.sync_data().map_err(err)?;
        }
        Ok(j)
    }

    fn apply(&mut self, r: Record) {
        self.seq += 1;
        match r.state {
            State::Processing => {}
            State::Crashed => {
                if !self.finals.contains_key(&r.key) {
                    self.crashes.entry(r.key.clone()).or_default().push((self.seq, r));
                }
            }
            State::Done | State::SetAside => {
                self.crashes.remove(&r.key);
                self.finals.insert(r.key.clone(), (self.seq, r));
            }
        }
    }

    /// What the state machine needs to know (see [`Replay`]).
    pub fn replay(&self) -> Replay {
        let mut order: Vec<&(u64, Record)> = self.finals.values().collect();
        order.sort_by_key(|(seq, _)| *seq);
        let mut aliases = HashMap::new();
        for (_, r) in order {
            if let (Some(place), Some(stat)) = (&r.place, &r.stat) {
                aliases.insert(place.clone(), (stat.clone(), r.key.clone()));
            }
        }
        Replay {
            finished: self.finals.keys().cloned().collect(),
            aliases,
            crashes: self.crashes.iter().map(|(k, v)| (k.clone(), v.len() as u32)).collect(),
        }
    }

    /// The last state recorded for `key` that matters on replay (final or crashed).
    #[cfg(test)]
    pub fn state(&self, key: &str) -> Option<State> {
        if let Some((_, r)) = self.finals.get(key) {
            return Some(r.state);
        }
        self.crashes.get(key).map(|_| State::Crashed)
    }

    /// Append a record durably (write + fsync) before returning. On failure the file is cut
    /// back to its last whole line.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let err = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let line = line_of(record).map_err(err)?;
        let written = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(err(e));
        }
        self.len += line.len() as u64;
        self.lines += 1;
        self.apply(record.clone());
        Ok(())
    }

    /// Whole lines in the file, and how many a compaction would keep.
    pub fn size(&self) -> (usize, usize) {
        (
            self.lines,
            self.finals.len() + self.crashes.values().map(Vec::len).sum::<usize>(),
        )
    }

    /// Final records a compaction at `now_s` would drop: places not in `present` whose result
    /// is older than `retention_s`. Costs one pass over the final records.
    pub fn expired(&self, present: &HashSet<Place>, now_s: u64, retention_s: u64) -> usize {
        self.finals
            .values()
            .filter(|(_, r)| is_expired(r, present, now_s, retention_s))
            .count()
    }

    /// Rewrite the journal atomically with only what replay needs: one final record per key
    /// (dropping those whose place is not in `present` and older than `retention_s` at
    /// `now_s`), and the crash records of unfinished keys. Returns the number of lines removed.
    pub fn compact(&mut self, present: &HashSet<Place>, now_s: u64, retention_s: u64) -> Result<usize, JournalError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        self.finals
            .retain(|_, (_, r)| !is_expired(r, present, now_s, retention_s));
        let mut keep: Vec<&(u64, Record)> = self.finals.values().chain(self.crashes.values().flatten()).collect();
        keep.sort_by_key(|(seq, _)| *seq);
        let mut text = String::new();
        for (_, r) in &keep {
            text.push_str(&line_of(r).map_err(err(&self.path))?);
        }
        crate::fsys::write_atomic(&self.path, text.as_bytes()).map_err(err(&self.path))?;
        let removed = self.lines - keep.len();
        self.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err(&self.path))?;
        self.len = text.len() as u64;
        self.lines = keep.len();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn rec(key: &str, state: State) -> Record {
        Record {
            key: key.into(),
            series: "p/SR_1".into(),
            state,
            at: 1,
            place: Some(Place::new("d", OsStr::new("p"), OsStr::new(key))),
            stat: Some(format!("stat-{key}")),
        }
    }

    #[test]
    fn replay_gives_final_keys_aliases_and_crash_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let mut j = Journal::open(&p).unwrap();
        j.append(&rec("a", State::Processing)).unwrap();
        j.append(&rec("b", State::Processing)).unwrap();
        j.append(&rec("b", State::Crashed)).unwrap();
        j.append(&rec("a", State::Done)).unwrap();
        drop(j);
        let j = Journal::open(&p).unwrap();
        let r = j.replay();
        assert!(r.finished.contains("a") && !r.finished.contains("b"));
        assert_eq!(r.crashes.get("b"), Some(&1));
        let place = Place::new("d", OsStr::new("p"), OsStr::new("a"));
        assert_eq!(r.aliases.get(&place), Some(&("stat-a".to_string(), "a".to_string())));
        assert_eq!(j.ignored_lines, 0);
    }

    #[test]
    fn processing_records_alone_are_not_crashes() {
        // Three kills while processing: no crash was recorded, so nothing counts against it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        for _ in 0..3 {
            let mut j = Journal::open(&p).unwrap();
            j.append(&rec("a", State::Processing)).unwrap();
        }
        assert!(Journal::open(&p).unwrap().replay().crashes.is_empty());
    }

    #[test]
    fn torn_last_line_is_cut_off_and_the_next_append_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let mut j = Journal::open(&p).unwrap();
        j.append(&rec("a", State::Processing)).unwrap();
        drop(j);
        let full = std::fs::read(&p).unwrap();
        let line = line_of(&rec("a", State::Done)).unwrap();
        let mut torn = full.clone();
        torn.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
        std::fs::write(&p, &torn).unwrap();
        let mut j = Journal::open(&p).unwrap();
        assert_eq!(j.ignored_lines, 1);
        assert_eq!(j.state("a"), None, "the torn 'done' does not count");
        assert_eq!(std::fs::read(&p).unwrap(), full, "cut back to the last whole line");
        j.append(&rec("a", State::Done)).unwrap();
        drop(j);
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.state("a"), Some(State::Done));
        assert_eq!(j.ignored_lines, 0);
    }

    #[test]
    fn a_line_with_a_wrong_checksum_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let json = serde_json::to_string(&rec("a", State::Done)).unwrap();
        std::fs::write(&p, format!("0000000000000000 {json}\n")).unwrap();
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.state("a"), None);
        assert_eq!(j.ignored_lines, 1);
    }

    #[test]
    fn a_journal_of_the_previous_version_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let json = r#"{"key":"k1","series":"p/SR_1","state":"quarantined","at":5}"#;
        std::fs::write(&p, format!("{} {json}\n", checksum(json))).unwrap();
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.state("k1"), Some(State::Done));
        assert!(j.replay().aliases.is_empty());
    }

    #[test]
    fn compaction_keeps_what_replay_needs_and_drops_old_absent_places() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let mut j = Journal::open(&p).unwrap();
        for k in ["a", "b", "c"] {
            j.append(&rec(k, State::Processing)).unwrap();
        }
        j.append(&rec("a", State::Done)).unwrap();
        j.append(&rec("b", State::Done)).unwrap();
        j.append(&rec("c", State::Crashed)).unwrap();
        let before = j.replay();
        let present: HashSet<Place> = [Place::new("d", OsStr::new("p"), OsStr::new("a"))].into();
        // Nothing is old enough: everything replay needs survives, Processing lines go.
        assert_eq!(j.compact(&present, 2, 1000).unwrap(), 3);
        drop(j);
        let mut j = Journal::open(&p).unwrap();
        assert_eq!(j.replay(), before);
        assert_eq!(j.size(), (3, 3));
        // Long after: b's place is gone and its record expires; a is still present.
        j.compact(&present, 10_000, 1000).unwrap();
        let r = Journal::open(&p).unwrap().replay();
        assert!(r.finished.contains("a") && !r.finished.contains("b"));
        assert_eq!(r.crashes.get("c"), Some(&1));
    }
}
