//! Reading a drop folder without ever leaving it and without ever writing to it.
//!
//! Why: a drop folder is a USB stick or a share that anyone with access to the scanner room can
//! fill. A directory link in it must not lead the service to read — let alone move — files
//! elsewhere (`/etc`, another patient's share), and a stick may be read-only. So:
//! - every path is walked from the drop root with `openat(…, O_NOFOLLOW)` relative to the
//!   already-opened parent, so a link swapped in between listing and reading is refused by
//!   the kernel, not by a check that can race ([`list`], [`snapshot`]);
//! - symbolic links are never followed, wherever they point (a link inside the drop folder
//!   would make a second copy of a series anyway); they are reported with a reason;
//! - the drop folder is only ever read. What the service processes is a *snapshot*: every
//!   slice file copied into `<state>/work/<key>/` while its SHA-256 is computed, so the key,
//!   the scan and any quarantine copy all come from the same bytes, whatever happens to the
//!   drop folder meanwhile.
//!
//! - a USB export's DICOMDIR (at the drop root or in a patient folder) is read the same way and
//!   its list of files compared with the folders: a series folder missing a file the DICOMDIR
//!   lists is incomplete (a copy still running, or a stick pulled mid-copy) and is not processed
//!   until the file is there (`dicomdir::Index`).
//!
//! The drop root itself is opened normally (the administrator configured it; it may be a
//! mount point or a link to one).
//!
//! Rooms: `walk` (a look at the folder: patients, series, refusals, stat signatures),
//! `dicomdir` (an export's index and the guard against a DICOMDIR that crashes its parser),
//! `snapshot` (the copy a scan reads, with its key); this file holds the `openat` helpers they
//! share and the errors.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

pub use super::layout::SELF;
pub use super::machine::{DropListing, SeriesListing};

mod dicomdir;
mod snapshot;
mod walk;

pub use dicomdir::DicomdirGuard;
pub use snapshot::{snapshot, snapshot_guarded, Refused, Snapshot};
pub use walk::{list, list_guarded, MAX_SERIES_DEPTH};

/// Why a drop folder or a series could not be read this time. Every one is transient: the
/// folder may come back (a stick re-inserted, a share reconnected).
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("{path}: cannot open the drop folder: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{place}: cannot read: {source}")]
    Read {
        place: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{place}: is no longer a folder of the drop folder (removed, or replaced by a link)")]
    Gone { place: String },
    #[error("{place}: changed while it was being copied; waiting for it to settle again")]
    Changed { place: String },
    #[error("{path}: cannot write the snapshot: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn open_root(root: &Path) -> Result<OwnedFd, DropError> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DropError::Root {
        path: root.to_path_buf(),
        source: e.into(),
    })
}

/// A sub-folder, refusing links (`O_NOFOLLOW` makes `openat` fail on one).
fn open_dir_at(parent: impl AsFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Link,
    Other(&'static str),
}

struct Entry {
    name: OsString,
    kind: Kind,
    size: u64,
    ino: u64,
    mtime_ns: i128,
}

/// Every entry of an open folder with `lstat`-level facts, sorted by name bytes.
fn entries(dir: &OwnedFd) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in Dir::read_from(dir)? {
        let e = e?;
        let name = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
        if name == "." || name == ".." {
            continue;
        }
        let st = match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed between readdir and stat: it is simply not there.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Link,
            FileType::Fifo => Kind::Other("a named pipe"),
            FileType::Socket => Kind::Other("a socket"),
            FileType::CharacterDevice => Kind::Other("a character device"),
            FileType::BlockDevice => Kind::Other("a block device"),
            _ => Kind::Other("of an unknown type"),
        };
        out.push(Entry {
            name,
            kind,
            size: st.st_size as u64,
            ino: st.st_ino as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

fn lossy(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

fn link_reason() -> String {
    "symbolic link: links are never followed in a drop folder".to_string()
}

#[cfg(test)]
mod tests {
    use super::dicomdir::*;
    use super::walk::*;
    use super::*;
    use crate::ingest;
    use crate::service::machine::Place;

    fn place(p: &str, s: &str) -> Place {
        Place::new("d-1", OsStr::new(p), OsStr::new(s))
    }

    #[test]
    fn links_at_every_level_are_refused_and_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("SR_9")).unwrap();
        std::fs::write(outside.join("SR_9/IM1.tif"), b"x").unwrap();
        std::fs::create_dir_all(drop.join("p1/SR_1")).unwrap();
        std::fs::write(drop.join("p1/SR_1/IM1.tif"), b"slice").unwrap();
        std::os::unix::fs::symlink(&outside, drop.join("p1/SR_2")).unwrap();
        std::os::unix::fs::symlink(&outside, drop.join("p2")).unwrap();
        std::os::unix::fs::symlink(outside.join("SR_9/IM1.tif"), drop.join("p1/SR_1/IM2.tif")).unwrap();
        let l = list(&drop, "d-1").unwrap();
        assert_eq!(l.series.len(), 1, "{l:?}");
        assert_eq!(l.series[0].place, place("p1", "SR_1"));
        let refused: Vec<&str> = l.refused.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(refused, ["p1/SR_2", "p2"]);
        let work = t.path().join("work");
        let s = snapshot(&drop, &l.series[0].place, &l.series[0].stat, &work).unwrap();
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.refused.len(), 1);
        assert_eq!(s.refused[0].file, "IM2.tif");
        assert!(s.refused[0].reason.contains("symbolic link"));
        assert_eq!(std::fs::read(&s.files[0]).unwrap(), b"slice");
    }

    #[test]
    fn folders_with_hidden_or_temporary_names_are_named_not_skipped_silently() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        for d in [
            ".scan/SR_1",
            "..x/SR_1",
            "p1/SR_1",
            "p1/.hidden",
            "p1/SR_2.part",
            "p2/SR_1/.thumbs",
        ] {
            std::fs::create_dir_all(drop.join(d)).unwrap();
        }
        for f in ["p1/SR_1/IM1.tif", "p2/SR_1/IM1.tif", "p1/.DS_Store", ".Trash-note"] {
            std::fs::write(drop.join(f), b"x").unwrap();
        }
        let l = list(&drop, "d-1").unwrap();
        let mut refused: Vec<&str> = l
            .refused
            .iter()
            .filter(|r| r.1 == HIDDEN_FOLDER)
            .map(|r| r.0.as_str())
            .collect();
        refused.sort_unstable();
        assert_eq!(refused, ["..x", ".scan", "p1/.hidden", "p1/SR_2.part"], "{l:?}");
        let places: Vec<&Place> = l.series.iter().map(|s| &s.place).collect();
        assert_eq!(
            places,
            [&place("p1", "SR_1"), &place("p2", "SR_1")],
            "hidden files stay quiet"
        );
        // Inside a series folder such a name means a copy in progress (reported as waiting).
        assert_eq!(l.series[1].transient, [".thumbs"]);
    }

    #[test]
    fn a_change_after_listing_invalidates_the_snapshot() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        std::fs::create_dir_all(drop.join("p/S")).unwrap();
        std::fs::write(drop.join("p/S/IM1.tif"), b"a").unwrap();
        let l = list(&drop, "d-1").unwrap();
        std::fs::write(drop.join("p/S/IM2.tif"), b"b").unwrap();
        let e = snapshot(&drop, &l.series[0].place, &l.series[0].stat, &t.path().join("w")).unwrap_err();
        assert!(matches!(e, DropError::Changed { .. }), "{e}");
    }

    #[test]
    fn the_key_depends_on_place_and_content_not_on_timestamps() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        for p in ["a", "b"] {
            std::fs::create_dir_all(drop.join(p).join("S")).unwrap();
            std::fs::write(drop.join(p).join("S/IM1.tif"), b"same").unwrap();
        }
        let work = t.path().join("w");
        let key = |p: &str| {
            let l = list(&drop, "d-1").unwrap();
            let s = l.series.iter().find(|s| s.place == place(p, "S")).unwrap();
            snapshot(&drop, &s.place, &s.stat, &work).unwrap().key
        };
        let a1 = key("a");
        assert_ne!(a1, key("b"), "identical files under another patient are another series");
        std::fs::write(drop.join("a/S/IM1.tif"), b"same").unwrap(); // rewritten, new mtime
        assert_eq!(a1, key("a"));
        std::fs::write(drop.join("a/S/IM1.tif"), b"diff").unwrap();
        assert_ne!(a1, key("a"));
    }

    #[test]
    fn a_flat_exports_dicomdir_that_crashed_its_parser_is_left_out_of_the_snapshot() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        std::fs::create_dir_all(drop.join("SCAN1")).unwrap();
        std::fs::write(drop.join("SCAN1/DICOMDIR"), b"DICM index").unwrap();
        std::fs::write(drop.join("SCAN1/IM1"), b"slice").unwrap();
        let l = list(&drop, "d-1").unwrap();
        let s = &l.series[0];
        assert_eq!(s.place, place("SCAN1", SELF));
        let work = t.path().join("work");
        let plain = snapshot(&drop, &s.place, &s.stat, &work).unwrap();
        assert_eq!(
            plain.files.len(),
            2,
            "without a crash the DICOMDIR travels with the series"
        );
        let pfd = open_dir_at(&open_root(&drop).unwrap(), OsStr::new("SCAN1")).unwrap();
        let e = entries(&pfd).unwrap().into_iter().find(is_dicomdir).unwrap();
        let guard = DicomdirGuard {
            marker: None,
            poisoned: [DicomdirGuard::key("d-1", "SCAN1/DICOMDIR", &e)].into(),
        };
        let g = snapshot_guarded(&drop, &s.place, &s.stat, &work, &guard).unwrap();
        assert_eq!(g.files.len(), 1, "{g:?}");
        assert_eq!(ingest::name_of(&g.files[0]), "IM1");
        assert_eq!(g.ignored.len(), 1);
        assert!(g.ignored[0].reason.contains("crashed the service"), "{:?}", g.ignored);
        assert_ne!(g.key, plain.key);
        // The listing refuses it too, with the same cause.
        let l = list_guarded(&drop, "d-1", &guard).unwrap();
        assert!(l
            .refused
            .iter()
            .any(|(p, r)| p == "SCAN1/DICOMDIR" && r.contains("crashed the service")));
    }

    #[test]
    fn a_dicomdir_rewritten_after_it_was_listed_is_not_parsed_under_the_old_crash_key() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("PAT");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("DICOMDIR"), b"DICM first version").unwrap();
        let fd = open_root(&dir).unwrap();
        let listed = entries(&fd).unwrap().into_iter().find(is_dicomdir).unwrap();
        assert_eq!(read_small(&fd, &listed, 1024).unwrap(), b"DICM first version");
        // Rewritten in place between the listing and the read (same inode, new size).
        std::fs::write(dir.join("DICOMDIR"), b"DICM second, longer version").unwrap();
        let err = read_small(&fd, &listed, 1024).unwrap_err();
        assert!(err.to_string().contains("changed while it was read"), "{err}");
        // Replaced by another file of the same size: another inode.
        std::fs::write(dir.join("new"), b"DICM first versioX").unwrap();
        std::fs::rename(dir.join("new"), dir.join("DICOMDIR")).unwrap();
        let relisted = entries(&fd).unwrap().into_iter().find(is_dicomdir).unwrap();
        assert_eq!(relisted.size, listed.size);
        assert!(read_small(&fd, &listed, 1024).is_err(), "the listed inode is gone");
        assert_eq!(read_small(&fd, &relisted, 1024).unwrap(), b"DICM first versioX");
    }

    #[test]
    fn a_dicomdir_alone_is_no_series_and_does_not_stop_the_walk_into_an_export() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        // A copy that has just begun: the patient folder holds only its DICOMDIR.
        std::fs::create_dir_all(drop.join("PAT")).unwrap();
        std::fs::write(drop.join("PAT/DICOMDIR"), b"DICM?").unwrap();
        // A DICOMDIR at an intermediate level of an export.
        std::fs::create_dir_all(drop.join("EXPORT/STUDY/SE1")).unwrap();
        std::fs::write(drop.join("EXPORT/STUDY/DICOMDIR"), b"index").unwrap();
        std::fs::write(drop.join("EXPORT/STUDY/SE1/IM1"), b"slice").unwrap();
        let l = list(&drop, "d-1").unwrap();
        let places: Vec<&Place> = l.series.iter().map(|s| &s.place).collect();
        assert_eq!(places, [&place("EXPORT", "STUDY/SE1")], "{l:?}");
        assert_eq!(l.series[0].files, 1);
    }

    #[test]
    fn nested_usb_export_folders_are_series_and_links_inside_them_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("SE9")).unwrap();
        std::fs::write(outside.join("SE9/IM1"), b"x").unwrap();
        std::fs::create_dir_all(drop.join("DICOM/ST000/SE000")).unwrap();
        std::fs::create_dir_all(drop.join("DICOM/ST000/SE001")).unwrap();
        std::fs::write(drop.join("DICOMDIR"), b"index").unwrap();
        std::fs::write(drop.join("DICOM/ST000/SE000/IM000000"), b"slice0").unwrap();
        std::fs::write(drop.join("DICOM/ST000/SE001/IM000000"), b"slice1").unwrap();
        std::os::unix::fs::symlink(&outside, drop.join("DICOM/ST000/SE002")).unwrap();
        // Deeper than the limit: refused with the reason, not walked.
        let mut deep = drop.join("deep");
        for i in 0..=MAX_SERIES_DEPTH {
            deep = deep.join(format!("L{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("IM1"), b"far").unwrap();
        let l = list(&drop, "d-1").unwrap();
        let places: Vec<&Place> = l.series.iter().map(|s| &s.place).collect();
        assert_eq!(
            places,
            [&place("DICOM", "ST000/SE000"), &place("DICOM", "ST000/SE001")],
            "{l:?}"
        );
        let refused: Vec<&str> = l.refused.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            refused,
            ["DICOMDIR", "DICOM/ST000/SE002", "deep/L0/L1/L2/L3/L4/L5"],
            "{l:?}"
        );
        // Not a DICOM file: said, and the series are judged by their folders alone.
        assert!(l.refused[0].1.contains("index of a DICOM export, not usable"), "{l:?}");
        assert!(l.refused[1].1.contains("symbolic link"));
        assert!(l.refused[2].1.contains("nested more than"));
        assert!(l.series.iter().all(|s| s.missing.is_empty()));
        let work = t.path().join("work");
        let s = snapshot(&drop, &l.series[1].place, &l.series[1].stat, &work).unwrap();
        assert_eq!(s.files.len(), 1);
        assert_eq!(std::fs::read(&s.files[0]).unwrap(), b"slice1");
        // An intermediate folder swapped for a link after listing: the snapshot refuses it.
        std::fs::rename(drop.join("DICOM/ST000"), t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(t.path().join("moved"), drop.join("DICOM/ST000")).unwrap();
        let e = snapshot(&drop, &l.series[0].place, &l.series[0].stat, &work).unwrap_err();
        assert!(matches!(e, DropError::Gone { .. }), "{e}");
        // A series name that list() cannot produce is refused, not resolved.
        let bad = Place::new("d-1", OsStr::new("DICOM"), OsStr::new("../../outside/SE9"));
        let e = snapshot(&drop, &bad, &l.series[0].stat, &work).unwrap_err();
        assert!(matches!(e, DropError::Gone { .. }), "{e}");
    }
}
