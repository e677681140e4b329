//! The service's journal: an append-only text file, one record per line, each line carrying a
//! checksum of its own JSON, fsynced after every append. Replaying it gives each series'
//! last state; a torn last line (power cut mid-write) fails its checksum and is ignored,
//! which is safe because a state is only ever advanced *after* its effect is durable (the
//! result file is renamed into place before `done` is appended).
//!
//! Why not redb/sled: a few hundred records a day, one writer, and a format a hospital's IT
//! person can read with `less`; a line-oriented file with checksums is all that is needed.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::classify::sha256_hex;

/// Where a series is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Work started; on restart it is done again (its result is written atomically).
    Processing,
    /// Result written.
    Done,
    /// Result written, and unreadable files moved to quarantine.
    Quarantined,
}

/// One journal line's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Content fingerprint of the series (names, sizes and SHA-256 of its files).
    pub key: String,
    /// `<patient>/<series>` inside its drop folder.
    pub series: String,
    pub state: State,
    /// Seconds since the Unix epoch (from the service's clock).
    pub at: u64,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    states: HashMap<String, State>,
    /// `Processing` records of a series since its last finished one: attempts that ended with
    /// the service dying (crash, power cut, kill), which is how a series that crashes the
    /// service every time is recognised across restarts.
    attempts: HashMap<String, u32>,
    /// Lines that failed their checksum or did not parse at open (torn writes).
    pub ignored_lines: usize,
}

fn checksum(json: &str) -> String {
    sha256_hex(json.as_bytes())[..16].to_string()
}

impl Journal {
    /// Open (creating) the journal and replay it.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let mut states = HashMap::new();
        let mut attempts = HashMap::new();
        let mut ignored = 0;
        if path.exists() {
            let f = std::fs::File::open(path)?;
            for line in std::io::BufReader::new(f).split(b'\n') {
                let line = line?;
                let parsed = std::str::from_utf8(&line).ok().and_then(|l| {
                    let (sum, json) = l.split_once(' ')?;
                    (sum == checksum(json)).then_some(())?;
                    serde_json::from_str::<Record>(json).ok()
                });
                match parsed {
                    Some(r) => {
                        count_attempt(&mut attempts, &r);
                        states.insert(r.key, r.state);
                    }
                    None if line.is_empty() => {}
                    None => ignored += 1,
                }
            }
        }
        if ignored > 0 {
            log::warn!(
                "{}: {ignored} damaged journal line(s) ignored (torn write?)",
                path.display()
            );
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        // A torn last line has no newline: start ours on a fresh line.
        if std::fs::metadata(path)?.len() > 0 && !ends_with_newline(path)? {
            file.write_all(b"\n")?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            states,
            attempts,
            ignored_lines: ignored,
        })
    }

    /// The last recorded state of a fingerprint.
    pub fn state(&self, key: &str) -> Option<State> {
        self.states.get(key).copied()
    }

    /// How many times processing of this series started without finishing (see `attempts`).
    pub fn unfinished_attempts(&self, key: &str) -> u32 {
        self.attempts.get(key).copied().unwrap_or(0)
    }

    /// Append a record durably (write + fsync) before returning.
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let json = serde_json::to_string(record).map_err(std::io::Error::other)?;
        let line = format!("{} {json}\n", checksum(&json));
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        count_attempt(&mut self.attempts, record);
        self.states.insert(record.key.clone(), record.state);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn count_attempt(attempts: &mut HashMap<String, u32>, r: &Record) {
    match r.state {
        State::Processing => *attempts.entry(r.key.clone()).or_insert(0) += 1,
        State::Done | State::Quarantined => {
            attempts.remove(&r.key);
        }
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, state: State) -> Record {
        Record {
            key: key.into(),
            series: "p/SR_1".into(),
            state,
            at: 1,
        }
    }

    #[test]
    fn replay_gives_the_last_state_of_each_series() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let mut j = Journal::open(&p).unwrap();
        j.append(&rec("a", State::Processing)).unwrap();
        j.append(&rec("b", State::Processing)).unwrap();
        j.append(&rec("a", State::Done)).unwrap();
        drop(j);
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.state("a"), Some(State::Done));
        assert_eq!(j.state("b"), Some(State::Processing));
        assert_eq!(j.state("c"), None);
        assert_eq!(j.ignored_lines, 0);
    }

    #[test]
    fn unfinished_attempts_survive_restarts_and_reset_when_a_series_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        for _ in 0..3 {
            // Each "run" starts the series and dies before finishing it.
            let mut j = Journal::open(&p).unwrap();
            j.append(&rec("a", State::Processing)).unwrap();
        }
        let mut j = Journal::open(&p).unwrap();
        assert_eq!(j.unfinished_attempts("a"), 3);
        assert_eq!(j.unfinished_attempts("b"), 0);
        j.append(&rec("a", State::Quarantined)).unwrap();
        assert_eq!(j.unfinished_attempts("a"), 0);
        drop(j);
        assert_eq!(Journal::open(&p).unwrap().unfinished_attempts("a"), 0);
    }

    #[test]
    fn torn_last_line_is_ignored_and_the_next_append_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        let mut j = Journal::open(&p).unwrap();
        j.append(&rec("a", State::Processing)).unwrap();
        drop(j);
        // A power cut in the middle of appending `a -> done`.
        let full = std::fs::read(&p).unwrap();
        let json = serde_json::to_string(&rec("a", State::Done)).unwrap();
        let line = format!("{} {json}\n", checksum(&json));
        let mut torn = full.clone();
        torn.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
        std::fs::write(&p, &torn).unwrap();
        let mut j = Journal::open(&p).unwrap();
        assert_eq!(j.ignored_lines, 1);
        assert_eq!(j.state("a"), Some(State::Processing), "the torn 'done' does not count");
        j.append(&rec("a", State::Done)).unwrap();
        drop(j);
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.state("a"), Some(State::Done));
        assert_eq!(j.ignored_lines, 1);
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
}
