//! DICOMDIRs in a drop folder: the index of an export (which files each series should have,
//! so a copy still arriving waits), read bounded, and the guard that keeps one that crashes its
//! parser from crashing the service at every look.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{FileType, Mode, OFlags};

use super::{lossy, Entry, Kind, SELF};
use crate::ingest;
use crate::service::crashkey::{InProgress, Scope};
use crate::service::machine::Place;

/// What keeps a DICOMDIR that crashes its parser from crashing the service at every look: the
/// crash marker our panic hook writes while one is parsed (`super::crashkey`), and the keys of
/// those that already crashed it once (from the journal), which are not parsed again. The
/// default (no marker, nothing poisoned) is for callers outside the service.
#[derive(Debug, Default, Clone)]
pub struct DicomdirGuard {
    pub marker: Option<PathBuf>,
    pub poisoned: std::collections::HashSet<String>,
}

impl DicomdirGuard {
    /// Prefix of a DICOMDIR's crash key in the journal.
    pub const PREFIX: &'static str = "dicomdir:";

    /// The key of DICOMDIR `source` (as `Index::read` names it) of drop `drop_id` with this size
    /// and modification time: a new or rewritten file gets a new key, hence a new chance.
    pub(super) fn key(drop_id: &str, source: &str, e: &Entry) -> String {
        format!("{}{drop_id}/{source}@{}:{}", Self::PREFIX, e.size, e.mtime_ns)
    }
}

/// The largest DICOMDIR read (a 2,000-slice export's is about 1 MB).
const MAX_DICOMDIR_BYTES: u64 = 16 << 20;

/// How a DICOMDIR is named in messages and in its crash key: `DICOMDIR` at the drop root,
/// `<patient>/DICOMDIR` in a patient folder. One function, so the listing and the snapshot
/// compute the same key.
pub(super) fn dicomdir_source(patient: Option<&OsStr>, e: &Entry) -> String {
    match patient {
        Some(p) => format!("{}/{}", lossy(p), lossy(&e.name)),
        None => lossy(&e.name),
    }
}

pub(super) fn is_dicomdir(e: &Entry) -> bool {
    matches!(e.kind, Kind::File) && e.name.as_bytes().eq_ignore_ascii_case(b"DICOMDIR")
}

/// What the DICOMDIRs of a drop folder say its series folders hold. A DICOMDIR at the drop root
/// lists `PATIENT/…/SERIES/FILE` (a stick mounted as the drop folder); one in a patient folder
/// lists `…/SERIES/FILE` below it. Names are compared ASCII case-insensitively, as DICOM file
/// IDs are upper case and a FAT stick may show them in lower case.
pub(super) struct Index<'a> {
    pub(super) drop_id: &'a str,
    pub(super) guard: &'a DicomdirGuard,
    /// (patient, series), lower-cased → what is listed there.
    pub(super) series: BTreeMap<(String, String), Listed>,
}

#[derive(Debug, Default)]
pub(super) struct Listed {
    /// `patient/series` as the DICOMDIR writes it (control characters replaced).
    pub(super) shown: String,
    /// The DICOMDIR that lists it (`DICOMDIR` or `<patient>/DICOMDIR`).
    pub(super) source: String,
    pub(super) files: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Index<'_> {
    pub(super) fn key_of(place: &Place) -> (String, String) {
        (
            lossy(&place.patient_os()).to_ascii_lowercase(),
            lossy(&place.series_os()).to_ascii_lowercase(),
        )
    }

    /// Read DICOMDIR entry `e` of folder `dir` and add what it lists: `dir` is the drop root
    /// when `patient` is `None`, else that patient folder (and whether it is flat, i.e. its own
    /// series). `Err` is the reason it could not be used: the series beside it are then judged
    /// by their folders alone, as without a DICOMDIR.
    pub(super) fn read(&mut self, dir: &OwnedFd, e: &Entry, patient: Option<(&OsStr, bool)>) -> Result<(), String> {
        let unusable = |why: String| {
            format!("the index of a DICOM export, not usable ({why}); the series beside it are read without its list of files")
        };
        if e.size > MAX_DICOMDIR_BYTES {
            return Err(unusable(format!(
                "{} bytes, over the {MAX_DICOMDIR_BYTES}-byte limit",
                e.size
            )));
        }
        let source = dicomdir_source(patient.map(|(p, _)| p), e);
        let crash_key = DicomdirGuard::key(self.drop_id, &source, e);
        if self.guard.poisoned.contains(&crash_key) {
            return Err(unusable(
                "reading it crashed the service before, a fault in ctsentinel to report; it is not read again".into(),
            ));
        }
        let bytes = read_small(dir, e, MAX_DICOMDIR_BYTES).map_err(|err| unusable(err.to_string()))?;
        // While it is parsed, a panic records this key (the next start stops parsing it).
        let _parsing = self
            .guard
            .marker
            .as_ref()
            .map(|m| InProgress::new(m.clone(), &crash_key, &format!("DICOMDIR {source}"), Scope::ThisThread));
        dicomdir_fault_injection(&source);
        // Without byte positions, so a DICOMDIR still being copied is reported once, not at
        // every look.
        let ids = ingest::dicom::dicomdir_image_ids(&bytes).map_err(|err| {
            let msg = err.to_string();
            let cut = [" (at byte ", " at position "]
                .iter()
                .filter_map(|m| msg.find(m))
                .min()
                .unwrap_or(msg.len());
            unusable(msg[..cut].to_string())
        })?;
        let clean = |s: &str| -> String { s.chars().map(|c| if c.is_control() { '?' } else { c }).collect() };
        let flat = patient.is_some_and(|(_, flat)| flat);
        for id in ids {
            let (p, rest) = match patient {
                Some((p, _)) => (lossy(p), &id[..]),
                // A file listed at the root itself is never read (not a patient folder).
                None if id.len() < 2 => continue,
                None => (id[0].clone(), &id[1..]),
            };
            let Some((file, folders)) = rest.split_last() else {
                continue;
            };
            // A file beside a patient folder's DICOMDIR is a series file only when that folder
            // is flat; otherwise it is never read.
            if folders.is_empty() && patient.is_some() && !flat {
                continue;
            }
            let series = if folders.is_empty() {
                SELF.to_string()
            } else {
                folders.join("/")
            };
            let key = (p.to_ascii_lowercase(), series.to_ascii_lowercase());
            let listed = self.series.entry(key).or_insert_with(|| Listed {
                shown: clean(&format!("{p}/{series}")),
                source: source.clone(),
                ..Listed::default()
            });
            // Listed by both the root's and the patient's DICOMDIR: once.
            if listed.seen.insert(file.to_ascii_lowercase()) {
                listed.files.push(clean(file));
            }
        }
        Ok(())
    }

    /// The files listed for `place` that are not among `files`.
    pub(super) fn missing(&self, place: &Place, files: &[Entry]) -> Vec<String> {
        let Some(listed) = self.series.get(&Self::key_of(place)) else {
            return Vec::new();
        };
        let here: std::collections::HashSet<String> =
            files.iter().map(|f| lossy(&f.name).to_ascii_lowercase()).collect();
        listed
            .files
            .iter()
            .filter(|n| !here.contains(&n.to_ascii_lowercase()))
            .cloned()
            .collect()
    }
}

/// A small regular file of `dir`, opened like a slice (no links, no blocking on a FIFO), read
/// up to `limit` bytes.
/// The whole of file `e` (as listed) of folder `dir`, up to `limit` bytes: only if the file
/// opened is the one listed (same inode, size and modification time) and stayed so while it was
/// read, so the bytes parsed are the bytes the listing's facts name. Why: a DICOMDIR's crash key
/// is built from those facts; bytes of a later version parsed under an earlier key would record
/// a crash against a file that is no longer there, and the new one would crash the service again.
pub(super) fn read_small(dir: &OwnedFd, e: &Entry, limit: u64) -> std::io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(
        dir,
        e.name.as_os_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    let same = |st: &rustix::fs::Stat| {
        st.st_ino as u64 == e.ino
            && st.st_size as u64 == e.size
            && st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128 == e.mtime_ns
    };
    let changed = || std::io::Error::other("it changed while it was read (still being written?)");
    if !same(&st) {
        return Err(changed());
    }
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    (&mut file).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    if bytes.len() as u64 != e.size || !same(&rustix::fs::fstat(&file)?) {
        return Err(changed());
    }
    Ok(bytes)
}

/// Test builds only: `CTSENTINEL_TEST_PANIC_ON_DICOMDIR=<source>` (e.g. `DICOMDIR`,
/// `<patient>/DICOMDIR`) makes parsing that DICOMDIR panic, the way a parser bug would, so the
/// crash guard can be tested on the real binary.
#[cfg(debug_assertions)]
fn dicomdir_fault_injection(source: &str) {
    if std::env::var_os("CTSENTINEL_TEST_PANIC_ON_DICOMDIR").is_some_and(|t| t.to_string_lossy() == source) {
        panic!("fault injected by CTSENTINEL_TEST_PANIC_ON_DICOMDIR for {source}");
    }
}

#[cfg(not(debug_assertions))]
fn dicomdir_fault_injection(_: &str) {}
