//! The state folder's layout and the names the service gives things in it.
//!
//! Why a module: every path the service writes is derived here and nowhere else, from names
//! that arrive on a USB stick or a share and may be anything a file system allows (250 bytes,
//! spaces, control characters, invalid UTF-8, `quarantine`, `..`-lookalikes). [`safe_name`]
//! turns any of them into a short, portable, collision-free file name; the original is kept in
//! the result's JSON. Each drop folder gets its own subtree ([`drop_id`]), so two drop folders
//! holding the same `<patient>/<series>` never meet.
//!
//! ```text
//! <state>/journal                                   append-only, checksummed (journal.rs)
//! <state>/crash                                     written only by our own panic hook
//! <state>/work/<key>/                               the snapshot being processed (ours)
//! <state>/results/<drop>/<patient>/<series>.json    one result per snapshot
//! <state>/quarantine/<drop>/<patient>/<series>/<key>/<file>(.reason.txt)   copies of bad files
//! <state>/display/screen.png                        headless display backend
//! <state>/received/<patient>~<study>/<series>_<uid>.dcm   instances received by C-STORE (dicom_net::inbox)
//! <state>/outbox/<time>-<series>.{sr,sc}.dcm        DICOM results waiting for the PACS
//! <state>/web/{password,id-key,tls/}               the results page's secrets (service::web), 0700
//! ```
//! Quarantine is a sibling of `results/`, not inside it, so a patient folder named
//! `quarantine` is just a patient.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::classify::sha256_hex;

pub use crate::names::{safe_name, MAX_NAME};

/// The series name of a top-level folder that holds slice files itself (opened as `.`).
pub const SELF: &str = ".";

/// A series' file name: [`safe_name`], and `series` for the folder itself (`.`); no real
/// series folder can be called that beside it, since such a folder holds no sub-folders.
fn series_name(series: &OsStr) -> String {
    if series == OsStr::new(SELF) {
        "series".into()
    } else {
        safe_name(series)
    }
}

/// The subtree name of a drop folder: its last component made safe, a `-`, and 8 hex digits
/// of the SHA-256 of its whole configured path (two folders both called `drop` differ).
pub fn drop_id(drop: &Path) -> String {
    let base = drop.file_name().unwrap_or(drop.as_os_str());
    let mut name = safe_name(base);
    name.truncate(40);
    format!("{name}-{}", &sha256_hex(drop.as_os_str().as_bytes())[..8])
}

/// Paths of the state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub state: PathBuf,
}

impl Layout {
    pub fn new(state: &Path) -> Layout {
        Layout {
            state: state.to_path_buf(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.state.join("journal")
    }

    /// Written when the service stops cleanly (SIGTERM), consumed at the next start: then no
    /// write can have been interrupted, and the sweep of `results/` for stale temporaries
    /// (which reads every result folder) is skipped, so a restart does not grow with history.
    pub fn clean_stop(&self) -> PathBuf {
        self.state.join("clean-stop")
    }

    /// Site validation records, `<model sha256>.json` (`ctsentinel validate --record`).
    pub fn validation(&self) -> PathBuf {
        self.state.join("validation")
    }

    pub fn crash_marker(&self) -> PathBuf {
        self.state.join("crash")
    }

    pub fn results(&self) -> PathBuf {
        self.state.join("results")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.state.join("quarantine")
    }

    pub fn work(&self) -> PathBuf {
        self.state.join("work")
    }

    /// Instances received by C-STORE: `received/<patient>~<study>/<series>_<instance>.dcm`, watched
    /// like a drop folder (see `dicom_net::inbox`).
    pub fn received(&self) -> PathBuf {
        self.state.join("received")
    }

    /// DICOM results waiting to be sent to the PACS (see `service::sender`).
    pub fn outbox(&self) -> PathBuf {
        self.state.join("outbox")
    }

    /// `<state>/work/<key>`: where one snapshot is copied to be processed.
    pub fn snapshot_dir(&self, key: &str) -> PathBuf {
        self.work().join(short_key(key))
    }

    /// `<state>/results/<drop>/<patient>/<series>.json` (`<folder>/series.json` for a
    /// top-level folder that holds its slices itself, see [`SELF`]).
    pub fn result_file(&self, drop_id: &str, patient: &OsStr, series: &OsStr) -> PathBuf {
        self.results()
            .join(drop_id)
            .join(safe_name(patient))
            .join(format!("{}.json", series_name(series)))
    }

    /// `<state>/quarantine/<drop>/<patient>/<series>/<key>/`.
    pub fn quarantine_dir(&self, drop_id: &str, patient: &OsStr, series: &OsStr, key: &str) -> PathBuf {
        self.quarantine()
            .join(drop_id)
            .join(safe_name(patient))
            .join(series_name(series))
            .join(short_key(key))
    }
}

/// The first 16 hex digits of a snapshot key: enough to tell snapshots apart in a folder name.
pub fn short_key(key: &str) -> &str {
    &key[..key.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn ordinary_names_are_kept_verbatim() {
        for n in ["SR_1", "ctmd_P001", "IM00001.tif", "a-b.c"] {
            assert_eq!(safe_name(OsStr::new(n)), n);
        }
    }

    #[test]
    fn long_odd_and_invalid_names_become_short_distinct_safe_names() {
        let long = "x".repeat(250);
        let names: Vec<OsString> = vec![
            long.clone().into(),
            format!("{long}y").into(),
            "..".into(),
            ".".into(),
            "".into(),
            "SR 1".into(),
            "SR_1~".into(),
            "pa/../x".into(),
            OsString::from_vec(vec![0xff, 0xfe, b'a']),
            OsString::from_vec(vec![0xff, 0xfd, b'a']),
            "Müller".into(),
        ];
        let safe: Vec<String> = names.iter().map(|n| safe_name(n)).collect();
        for s in &safe {
            assert!(s.len() <= MAX_NAME, "{s}");
            assert!(!s.starts_with('.') && !s.is_empty(), "{s}");
            assert!(
                s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b)),
                "{s}"
            );
        }
        let mut uniq = safe.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), safe.len(), "collision among {safe:?}");
        assert_ne!(safe_name(OsStr::new("SR_1~")), "SR_1~");
    }

    #[test]
    fn two_drop_folders_with_the_same_name_get_different_ids() {
        let a = drop_id(Path::new("/mnt/usb/drop"));
        let b = drop_id(Path::new("/srv/share/drop"));
        assert_ne!(a, b);
        assert!(a.starts_with("drop-") && b.starts_with("drop-"));
    }

    #[test]
    fn a_patient_named_quarantine_is_not_in_the_quarantine_tree() {
        let l = Layout::new(Path::new("/s"));
        let r = l.result_file("d-1", OsStr::new("quarantine"), OsStr::new("SR_1"));
        assert!(!r.starts_with(l.quarantine()), "{}", r.display());
        assert_eq!(r, Path::new("/s/results/d-1/quarantine/SR_1.json"));
    }
}
