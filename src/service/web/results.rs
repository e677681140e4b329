//! The results the page shows: an index of `<state>/results/<drop>/<patient>/<series>.json`.
//!
//! Why an index, and why opaque ids: a URL never names a file. Each result gets an id (the first
//! 20 hex digits of the SHA-256 of a secret key of this box and its path under `results/`: a
//! shared link or a browser history does not let anyone test guesses of a patient's folder name
//! against it) and a request's id is looked up in the index the service's own listing built, so
//! no text from a URL (`../`, encoded slashes, NUL, a long name) ever reaches the file system.
//! The listing follows no links and reads only regular `*.json` files exactly three folders down
//! (never the writers' `.…tmp` files), opened with `O_NOFOLLOW`. A summary per result is kept
//! while the file's inode, size and modification time stay the same (the writers replace a
//! result by renaming, which always changes the inode), so a page polled every second re-reads
//! only the folder entries, not every result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::classify::sha256_hex;
use crate::classify::ModelIdentity;
use crate::decide::Verdict;
use crate::report::ServiceResult;

/// What the list shows of one result.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: String,
    pub json: PathBuf,
    pub written_at: u64,
    pub clock_synchronised: Option<bool>,
    pub patient: String,
    pub series: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub selected: usize,
    pub covid: usize,
    pub covid_fraction: Option<f64>,
    pub model: ModelIdentity,
}

impl Summary {
    /// The report sheet beside the result (`<series>.png`), when it was written.
    pub fn sheet(&self) -> Option<PathBuf> {
        let p = self.json.with_extension("png");
        std::fs::symlink_metadata(&p).ok().filter(|m| m.is_file()).map(|_| p)
    }

    /// The report sheet's bytes (a link in its place is not followed).
    pub fn read_sheet(&self) -> Option<Vec<u8>> {
        read_regular(&self.json.with_extension("png"), MAX_RESULT_BYTES).ok()
    }
}

/// The part of a result (`report::ServiceResult`, same field names) the list shows.
#[derive(serde::Deserialize)]
struct Head {
    verdict: Verdict,
    #[serde(default)]
    reason: Option<String>,
    selected_slices: usize,
    covid_slices: usize,
    #[serde(default)]
    covid_fraction: Option<f64>,
    model: ModelIdentity,
    source: HeadSource,
}

#[derive(serde::Deserialize)]
struct HeadSource {
    patient: String,
    series_folder: String,
    written_at: u64,
    #[serde(default)]
    clock_synchronised: Option<bool>,
}

/// A result file that could not be read as one: listed with its problem, never hidden.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: String,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub enum Listed {
    Result(Arc<Summary>),
    Unreadable(Unreadable),
}

pub struct Index {
    root: PathBuf,
    key: [u8; 32],
    cache: Mutex<HashMap<PathBuf, (Stamp, Listed)>>,
}

/// What tells a result file changed: inode, modification time, length.
type Stamp = (u64, SystemTime, u64);

/// The id of the result at `rel` (its path under `results/`) on a box whose id key is `key`.
pub fn id_of(key: &[u8; 32], rel: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = key.to_vec();
    bytes.extend_from_slice(rel.as_os_str().as_bytes());
    sha256_hex(&bytes)[..20].to_string()
}

/// The box's id key, `<state>/web/id-key` (32 random bytes, mode 0600), made on first use.
pub fn id_key(state: &Path) -> std::io::Result<[u8; 32]> {
    let path = super::auth::web_dir(state).join("id-key");
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => return Ok(b.try_into().expect("32 bytes")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    super::auth::create_private_dir(&super::auth::web_dir(state))?;
    crate::fsys::write_atomic_private(&path, &key)?;
    Ok(key)
}

/// Whether `s` has the shape of an id (checked before any lookup).
pub fn is_id(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Index {
    pub fn new(results: &Path, key: [u8; 32]) -> Index {
        Index {
            root: results.to_path_buf(),
            key,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Every result, newest first (unreadable ones last).
    pub fn list(&self) -> Vec<Listed> {
        let files = self.files();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::with_capacity(files.len());
        let mut out = Vec::with_capacity(files.len());
        for (rel, stamp) in files {
            let listed = match cache.remove(&rel) {
                Some((s, listed)) if s == stamp => listed,
                _ => self.summarise(&rel),
            };
            out.push(listed.clone());
            fresh.insert(rel, (stamp, listed));
        }
        *cache = fresh;
        out.sort_by(|a, b| match (a, b) {
            (Listed::Result(x), Listed::Result(y)) => y.written_at.cmp(&x.written_at).then(x.id.cmp(&y.id)),
            (Listed::Result(_), Listed::Unreadable(_)) => std::cmp::Ordering::Less,
            (Listed::Unreadable(_), Listed::Result(_)) => std::cmp::Ordering::Greater,
            (Listed::Unreadable(x), Listed::Unreadable(y)) => x.id.cmp(&y.id),
        });
        out
    }

    /// The result with this id, if the listing has it.
    pub fn find(&self, id: &str) -> Option<Arc<Summary>> {
        if !is_id(id) {
            return None;
        }
        self.list().into_iter().find_map(|l| match l {
            Listed::Result(s) if s.id == id => Some(s),
            _ => None,
        })
    }

    /// The whole result of a listed summary, read again (the index keeps only summaries).
    pub fn load(&self, s: &Summary) -> Result<ServiceResult, String> {
        read(&s.json)
    }

    fn summarise(&self, rel: &Path) -> Listed {
        let id = id_of(&self.key, rel);
        let json = self.root.join(rel);
        // Only the fields the list shows are kept (the slices, with their evidence maps, are
        // skipped while parsing): a long list costs little memory.
        let head = read_regular(&json, MAX_RESULT_BYTES)
            .and_then(|b| serde_json::from_slice::<Head>(&b).map_err(|e| format!("not a result: {e}")));
        match head {
            Ok(h) => Listed::Result(Arc::new(Summary {
                id,
                json,
                written_at: h.source.written_at,
                clock_synchronised: h.source.clock_synchronised,
                patient: h.source.patient,
                series: h.source.series_folder,
                verdict: h.verdict,
                reason: h.reason,
                selected: h.selected_slices,
                covid: h.covid_slices,
                covid_fraction: h.covid_fraction,
                model: h.model,
            })),
            Err(problem) => Listed::Unreadable(Unreadable { id, problem }),
        }
    }

    /// `(path under results/, stamp)` of every regular `*.json` three folders down.
    fn files(&self) -> Vec<(PathBuf, Stamp)> {
        use std::os::unix::fs::MetadataExt as _;
        let mut out = Vec::new();
        for drop in dirs(&self.root) {
            for patient in dirs(&self.root.join(&drop)) {
                let folder = self.root.join(&drop).join(&patient);
                let Ok(rd) = std::fs::read_dir(&folder) else { continue };
                for e in rd.flatten() {
                    let name = e.file_name();
                    let n = name.to_string_lossy();
                    if n.starts_with('.') || !n.ends_with(".json") {
                        continue;
                    }
                    // DirEntry::metadata does not follow a link.
                    let Ok(m) = e.metadata() else { continue };
                    if !m.is_file() {
                        continue;
                    }
                    let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((
                        Path::new(&drop).join(&patient).join(&name),
                        (m.ino(), modified, m.len()),
                    ));
                }
            }
        }
        out
    }
}

/// Sub-folders (not links) of `dir`, by name.
fn dirs(dir: &Path) -> Vec<std::ffi::OsString> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect()
}

/// Results larger than this are not read (a result of a 2,000-slice series is ~3 MB).
const MAX_RESULT_BYTES: u64 = 64 << 20;

/// The bytes of the regular file `path`, opened without following a link, at most `max`.
fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let m = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.len() > max {
        return Err(format!("{} bytes: larger than any result", m.len()));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

fn read(path: &Path) -> Result<ServiceResult, String> {
    let bytes = read_regular(path, MAX_RESULT_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not a result: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_lowercase_hex_digits_and_nothing_else_is_looked_up() {
        let id = id_of(&[7; 32], Path::new("d-1/p/SR_1.json"));
        assert!(is_id(&id), "{id}");
        assert_ne!(
            id,
            id_of(&[8; 32], Path::new("d-1/p/SR_1.json")),
            "the id depends on the box's key"
        );
        for bad in [
            "../../etc/passwd",
            "",
            &id.to_uppercase(),
            &format!("{id}0"),
            "..%2f..%2fjournal",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn only_regular_json_files_three_folders_down_are_listed_and_a_broken_one_is_shown_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = root.join("d-1/p");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("SR_1.json"), "{ not json").unwrap();
        std::fs::write(p.join(".SR_1.json.tmp-1-0"), "{}").unwrap();
        std::fs::write(root.join("d-1/top.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p.join("link.json")).unwrap();
        // A linked patient folder holding a readable "result" is not descended into.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.json"), "{}").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d-1/linked")).unwrap();
        let index = Index::new(root, [1; 32]);
        let listed = index.list();
        for rel in [
            "d-1/linked/x.json",
            "../outside/x.json",
            "d-1/p/link.json",
            "d-1/top.json",
        ] {
            assert!(index.find(&id_of(&[1; 32], Path::new(rel))).is_none(), "{rel}");
        }
        assert_eq!(listed.len(), 1, "{listed:?}");
        match &listed[0] {
            Listed::Unreadable(u) => assert!(u.problem.starts_with("not a result"), "{}", u.problem),
            other => panic!("{other:?}"),
        }
    }
}
