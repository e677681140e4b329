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
//!   until the file is there ([`Index`]).
//!
//! The drop root itself is opened normally (the administrator configured it; it may be a
//! mount point or a link to one).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::crashkey::{InProgress, Scope};
use super::machine::Place;
use crate::dicom_net::inbox::commit_marker_count;
use crate::ingest::{self, MAX_FILE_BYTES};

pub use super::layout::SELF;
pub use super::machine::{DropListing, SeriesListing};

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
    fn key(drop_id: &str, source: &str, e: &Entry) -> String {
        format!("{}{drop_id}/{source}@{}:{}", Self::PREFIX, e.size, e.mtime_ns)
    }
}

/// Look at a drop folder: `<drop>/<patient>/<series>/`, where `<series>` may be nested (a USB
/// export's `DICOM/ST000/SE000/`: patient `DICOM`, series `ST000/SE000`; see [`walk_series`]).
/// Nothing is read but folder entries and DICOMDIRs.
pub fn list(root: &Path, drop_id: &str) -> Result<DropListing, DropError> {
    list_guarded(root, drop_id, &DicomdirGuard::default())
}

/// [`list`], with the service's [`DicomdirGuard`].
pub fn list_guarded(root: &Path, drop_id: &str, guard: &DicomdirGuard) -> Result<DropListing, DropError> {
    let rootfd = open_root(root)?;
    let top = entries(&rootfd).map_err(|source| DropError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut out = DropListing::default();
    // DICOMDIRs first: the series folders are compared with them as they are listed.
    let mut index = Index {
        drop_id,
        guard,
        series: BTreeMap::new(),
    };
    // Patient folders, lower-cased.
    let folders: std::collections::HashSet<String> = top
        .iter()
        .filter(|p| matches!(p.kind, Kind::Dir))
        .map(|p| lossy(&p.name).to_ascii_lowercase())
        .collect();
    for p in &top {
        if is_dicomdir(p) {
            if let Err(reason) = index.read(&rootfd, p, None) {
                out.refused.push((lossy(&p.name), reason));
            }
        } else if matches!(p.kind, Kind::Dir) && !ingest::is_transient_name(&lossy(&p.name)) {
            if let Ok(pfd) = open_dir_at(&rootfd, &p.name) {
                if let Ok(inside) = entries(&pfd) {
                    // A flat folder is its own series (below): its DICOMDIR lists files beside it.
                    let flat = !inside.iter().any(|e| matches!(e.kind, Kind::Dir));
                    for e in inside.iter().filter(|e| is_dicomdir(e)) {
                        if let Err(reason) = index.read(&pfd, e, Some((&p.name, flat))) {
                            out.refused
                                .push((format!("{}/{}", lossy(&p.name), lossy(&e.name)), reason));
                        }
                    }
                }
            }
        }
    }
    for p in top {
        let pname = lossy(&p.name);
        if ingest::is_transient_name(&pname) {
            if matches!(p.kind, Kind::Dir) {
                out.refused.push((pname, HIDDEN_FOLDER.into()));
            }
            continue;
        }
        match p.kind {
            Kind::Dir => {}
            Kind::Link => {
                out.refused.push((pname, link_reason()));
                continue;
            }
            // Read above (a broken one is refused there, with its reason).
            _ if is_dicomdir(&p) => continue,
            _ => {
                out.refused.push((
                    pname,
                    "not a patient folder (the layout is <patient>/<series>/<slices>)".into(),
                ));
                continue;
            }
        }
        let listed = open_dir_at(&rootfd, &p.name).and_then(|fd| Ok((entries(&fd)?, fd)));
        let (series, pfd) = match listed {
            Ok(x) => x,
            Err(e) => {
                out.errors.push((pname, e.to_string()));
                continue;
            }
        };
        // A folder holding slice files and no folders is a series folder dropped at the top
        // (a scanner's flat DICOM export, one TIFF series): it is its own series, `<name>/.`.
        let has_dirs = series.iter().any(|s| matches!(s.kind, Kind::Dir));
        // A DICOMDIR alone is no slice: a folder holding only it is an export still arriving.
        let has_files = series.iter().any(|s| {
            !ingest::is_transient_name(&lossy(&s.name)) && !is_dicomdir(s) && !matches!(s.kind, Kind::Dir | Kind::Link)
        });
        if has_files && !has_dirs {
            out.series
                .push(listing(Place::new(drop_id, &p.name, OsStr::new(SELF)), &series, &index));
            continue;
        }
        for s in series {
            let sname = lossy(&s.name);
            let at = format!("{pname}/{sname}");
            if ingest::is_transient_name(&sname) {
                if matches!(s.kind, Kind::Dir) {
                    out.refused.push((at, HIDDEN_FOLDER.into()));
                }
                continue;
            }
            match s.kind {
                Kind::Dir => {}
                Kind::Link => {
                    out.refused.push((at, link_reason()));
                    continue;
                }
                // Read above (a broken one is refused there, with its reason).
                _ if is_dicomdir(&s) => continue,
                _ => {
                    out.refused
                        .push((at, "a file in a patient folder is not part of any series".into()));
                    continue;
                }
            }
            match open_dir_at(&pfd, &s.name) {
                Ok(fd) => walk_series(&mut out, &index, drop_id, &p.name, &mut vec![s.name], &fd),
                Err(e) => out.errors.push((at, e.to_string())),
            }
        }
    }
    // Series folders a DICOMDIR lists that are not here at all: said, once while so. (Files a
    // root DICOMDIR lists directly in a patient folder that has sub-folders are never read, and
    // are refused one by one above.)
    let present: std::collections::HashSet<(String, String)> =
        out.series.iter().map(|s| Index::key_of(&s.place)).collect();
    for (key, listed) in &index.series {
        if key.1 == SELF && folders.contains(&key.0) {
            continue;
        }
        if !present.contains(key) {
            out.refused.push((
                listed.shown.clone(),
                format!(
                    "listed in {} ({} files) but not in the drop folder: the export is incomplete",
                    listed.source,
                    listed.files.len()
                ),
            ));
        }
    }
    Ok(out)
}

/// Why a folder with a hidden or temporary name is not read (said once while it is there, never
/// skipped silently: a `.scan` folder dropped by hand would otherwise just never get a result).
const HIDDEN_FOLDER: &str = "a folder whose name starts with '.' or ends with .part, .tmp or ~ is taken as hidden \
     or still being copied and is not read; rename it to have it processed";

/// The largest DICOMDIR read (a 2,000-slice export's is about 1 MB).
const MAX_DICOMDIR_BYTES: u64 = 16 << 20;

/// How a DICOMDIR is named in messages and in its crash key: `DICOMDIR` at the drop root,
/// `<patient>/DICOMDIR` in a patient folder. One function, so the listing and the snapshot
/// compute the same key.
fn dicomdir_source(patient: Option<&OsStr>, e: &Entry) -> String {
    match patient {
        Some(p) => format!("{}/{}", lossy(p), lossy(&e.name)),
        None => lossy(&e.name),
    }
}

fn is_dicomdir(e: &Entry) -> bool {
    matches!(e.kind, Kind::File) && e.name.as_bytes().eq_ignore_ascii_case(b"DICOMDIR")
}

/// What the DICOMDIRs of a drop folder say its series folders hold. A DICOMDIR at the drop root
/// lists `PATIENT/…/SERIES/FILE` (a stick mounted as the drop folder); one in a patient folder
/// lists `…/SERIES/FILE` below it. Names are compared ASCII case-insensitively, as DICOM file
/// IDs are upper case and a FAT stick may show them in lower case.
struct Index<'a> {
    drop_id: &'a str,
    guard: &'a DicomdirGuard,
    /// (patient, series), lower-cased → what is listed there.
    series: BTreeMap<(String, String), Listed>,
}

#[derive(Debug, Default)]
struct Listed {
    /// `patient/series` as the DICOMDIR writes it (control characters replaced).
    shown: String,
    /// The DICOMDIR that lists it (`DICOMDIR` or `<patient>/DICOMDIR`).
    source: String,
    files: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Index<'_> {
    fn key_of(place: &Place) -> (String, String) {
        (
            lossy(&place.patient_os()).to_ascii_lowercase(),
            lossy(&place.series_os()).to_ascii_lowercase(),
        )
    }

    /// Read DICOMDIR entry `e` of folder `dir` and add what it lists: `dir` is the drop root
    /// when `patient` is `None`, else that patient folder (and whether it is flat, i.e. its own
    /// series). `Err` is the reason it could not be used: the series beside it are then judged
    /// by their folders alone, as without a DICOMDIR.
    fn read(&mut self, dir: &OwnedFd, e: &Entry, patient: Option<(&OsStr, bool)>) -> Result<(), String> {
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
    fn missing(&self, place: &Place, files: &[Entry]) -> Vec<String> {
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
fn read_small(dir: &OwnedFd, e: &Entry, limit: u64) -> std::io::Result<Vec<u8>> {
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

/// How deep below a patient folder series folders are looked for: a scanner's or a PACS
/// viewer's USB export nests them (`DICOM/<study>/<series>/`, `PAT1/ST1/SE1/`), never this deep.
pub const MAX_SERIES_DEPTH: usize = 6;

/// The series folders at and below `dir` (`rel`: its path below the patient folder). A folder
/// holding any file is a series folder — exactly as at the first level, so `<patient>/<series>/`
/// means what it always meant, and folders inside a series folder stay "not read". A folder
/// holding only folders (and links, refused) is an intermediate level of an export: descended,
/// up to [`MAX_SERIES_DEPTH`]. The series' name is its path below the patient
/// (`ST000/SE000`); [`snapshot`] opens it again one component at a time, without following links.
fn walk_series(
    out: &mut DropListing,
    index: &Index,
    drop_id: &str,
    patient: &OsStr,
    rel: &mut Vec<OsString>,
    dir: &OwnedFd,
) {
    fn at(patient: &OsStr, rel: &[OsString]) -> String {
        let mut a = lossy(patient);
        for c in rel {
            a.push('/');
            a.push_str(&lossy(c));
        }
        a
    }
    let files = match entries(dir) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push((at(patient, rel), e.to_string()));
            return;
        }
    };
    // A DICOMDIR at an intermediate level (`EXPORT/STUDY/DICOMDIR`) does not make it a series.
    let only_dirs = !files.is_empty()
        && files
            .iter()
            .filter(|f| !ingest::is_transient_name(&lossy(&f.name)) && !is_dicomdir(f))
            .all(|f| matches!(f.kind, Kind::Dir | Kind::Link));
    let has_dirs = files.iter().any(|f| matches!(f.kind, Kind::Dir));
    if !(only_dirs && has_dirs) {
        let series = rel.join(OsStr::new("/"));
        out.series
            .push(listing(Place::new(drop_id, patient, &series), &files, index));
        return;
    }
    if rel.len() >= MAX_SERIES_DEPTH {
        out.refused.push((
            at(patient, rel),
            format!("folders nested more than {MAX_SERIES_DEPTH} levels below the patient folder; not read"),
        ));
        return;
    }
    for f in files {
        if ingest::is_transient_name(&lossy(&f.name)) {
            if matches!(f.kind, Kind::Dir) {
                rel.push(f.name.clone());
                out.refused.push((at(patient, rel), HIDDEN_FOLDER.into()));
                rel.pop();
            }
            continue;
        }
        rel.push(f.name.clone());
        match f.kind {
            Kind::Dir => match open_dir_at(dir, &f.name) {
                Ok(fd) => walk_series(out, index, drop_id, patient, rel, &fd),
                Err(e) => out.errors.push((at(patient, rel), e.to_string())),
            },
            _ => out.refused.push((at(patient, rel), link_reason())),
        }
        rel.pop();
    }
}

/// Open a series folder below the patient folder, one component of its name at a time, each
/// with `O_NOFOLLOW`. A name that is not a plain relative path (`..`, empty components, the
/// `SELF` marker anywhere but alone) is refused: it cannot have come from [`list`].
fn open_series(pfd: &OwnedFd, series: &OsStr) -> std::io::Result<OwnedFd> {
    if series == OsStr::new(SELF) {
        return open_dir_at(pfd, series);
    }
    let mut fd: Option<OwnedFd> = None;
    for c in series.as_bytes().split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a series path below the patient folder",
            ));
        }
        let next = match &fd {
            None => open_dir_at(pfd, OsStr::from_bytes(c))?,
            Some(d) => open_dir_at(d, OsStr::from_bytes(c))?,
        };
        fd = Some(next);
    }
    fd.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty series name"))
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

fn listing(place: Place, files: &[Entry], index: &Index) -> SeriesListing {
    let committed = files.iter().filter_map(|f| commit_marker_count(&lossy(&f.name))).max();
    let markers = files
        .iter()
        .filter(|f| commit_marker_count(&lossy(&f.name)).is_some())
        .count();
    let transient: Vec<String> = files
        .iter()
        .map(|f| lossy(&f.name))
        .filter(|n| ingest::is_transient_name(n) && commit_marker_count(n).is_none())
        .collect();
    let missing = index.missing(&place, files);
    let mut stat = stat_signature(files);
    if !missing.is_empty() {
        // A DICOMDIR rewritten to list other files changes what the series waits for.
        let mut h = Sha256::new();
        for m in &missing {
            h.update(m.as_bytes());
            h.update(b"\0");
        }
        stat = format!("{stat}-{}", &hex(&h.finalize())[..8]);
    }
    SeriesListing {
        place,
        stat,
        files: files.len() - transient.len() - markers - files.iter().filter(|f| is_dicomdir(f)).count(),
        transient,
        missing,
        committed,
    }
}

/// SHA-256 (16 hex digits) over every entry's name, type, size, inode and mtime: any copy,
/// replacement or touch changes it, and comparing it costs no file reads. This is what lets a
/// restart recognise the series it already processed without reading them again.
fn stat_signature(files: &[Entry]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update((f.name.len() as u64).to_le_bytes());
        h.update(f.name.as_bytes());
        h.update(format!("{:?}\0{}\0{}\0{}\n", f.kind, f.size, f.ino, f.mtime_ns).as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file of the series that is not in the snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub file: String,
    pub reason: String,
}

/// A series copied into the state folder: what the scan, the key and quarantine copies use.
#[derive(Debug)]
pub struct Snapshot {
    /// SHA-256 over the place and every entry's name, size and content hash (or refusal).
    pub key: String,
    /// The copy, `<state>/work/<key>/`, holding the readable slice files under their names.
    pub dir: PathBuf,
    /// The copied files, in slice order (natural order of their names).
    pub files: Vec<PathBuf>,
    /// Entries that could not be copied as slice files (links, special files, too large).
    pub refused: Vec<Refused>,
    /// Sub-folders inside the series folder: not slices, listed so nothing goes unmentioned.
    pub ignored: Vec<Refused>,
}

/// Copy the series at `place` under `root` into a fresh folder below `work` and compute its
/// key. The snapshot is valid only if the folder's stat signature still equals `stat` after
/// the copy (otherwise [`DropError::Changed`]): the series is then exactly what was stable.
pub fn snapshot(root: &Path, place: &Place, stat: &str, work: &Path) -> Result<Snapshot, DropError> {
    snapshot_guarded(root, place, stat, work, &DicomdirGuard::default())
}

/// [`snapshot`], with the service's [`DicomdirGuard`]: a flat export folder's own DICOMDIR that
/// crashed its parser is not copied (ingest would parse it again while the series is processed)
/// but listed under `ignored` with the reason.
pub fn snapshot_guarded(
    root: &Path,
    place: &Place,
    stat: &str,
    work: &Path,
    guard: &DicomdirGuard,
) -> Result<Snapshot, DropError> {
    let gone = || DropError::Gone {
        place: place.to_string(),
    };
    let read = |source: std::io::Error| DropError::Read {
        place: place.to_string(),
        source,
    };
    let rootfd = open_root(root)?;
    let pfd = open_dir_at(&rootfd, &place.patient_os()).map_err(|_| gone())?;
    let sfd = open_series(&pfd, &place.series_os()).map_err(|_| gone())?;
    let listed = entries(&sfd).map_err(read)?;
    if stat_signature(&listed) != stat {
        return Err(DropError::Changed {
            place: place.to_string(),
        });
    }
    let tmp = work.join(".incoming");
    let state = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DropError::State { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(state(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(state(&tmp))?;
    let mut key = Sha256::new();
    key.update(b"ctsentinel-snapshot-v1\n");
    key.update(place.to_string().as_bytes());
    key.update(b"\n");
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut ignored = Vec::new();
    for e in &listed {
        let name = lossy(&e.name);
        if ingest::is_transient_name(&name) {
            continue;
        }
        key.update((e.name.len() as u64).to_le_bytes());
        key.update(e.name.as_bytes());
        if is_dicomdir(e) && place.series == SELF {
            let source = dicomdir_source(Some(&place.patient_os()), e);
            if guard.poisoned.contains(&DicomdirGuard::key(&place.drop, &source, e)) {
                key.update(b"\0poisoned-dicomdir\n");
                ignored.push(Refused {
                    file: name,
                    reason: "the index of a DICOM export whose reading crashed the service before; not read".into(),
                });
                continue;
            }
        }
        let refuse = match e.kind {
            Kind::File if e.size > MAX_FILE_BYTES => Some(format!(
                "{} bytes, larger than the {MAX_FILE_BYTES}-byte limit for a slice; not read",
                e.size
            )),
            Kind::File => None,
            Kind::Link => Some(link_reason()),
            Kind::Dir => {
                key.update(b"\0dir\n");
                ignored.push(Refused {
                    file: name,
                    reason: "folder inside a series folder: not a slice, not read".into(),
                });
                continue;
            }
            Kind::Other(what) => Some(format!("not a regular file ({what}); not read")),
        };
        if let Some(reason) = refuse {
            key.update(format!("\0refused\0{reason}\n").as_bytes());
            refused.push(Refused { file: name, reason });
            continue;
        }
        let dest = tmp.join(&e.name);
        let digest = copy_file(&sfd, e, &dest).map_err(|err| match err {
            CopyError::Drop(source) => read(source),
            CopyError::State(source) => DropError::State {
                path: dest.clone(),
                source,
            },
            CopyError::Changed => DropError::Changed {
                place: place.to_string(),
            },
        })?;
        key.update(format!("\0{}\0{digest}\n", e.size).as_bytes());
        files.push(dest);
    }
    // The series must not have changed while it was copied.
    let after = entries(&sfd).map_err(read)?;
    if stat_signature(&after) != stat {
        return Err(DropError::Changed {
            place: place.to_string(),
        });
    }
    let key = hex(&key.finalize());
    let dir = work.join(super::layout::short_key(&key));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(state(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(state(&dir))?;
    let mut files: Vec<PathBuf> = files
        .iter()
        .map(|f| dir.join(f.file_name().unwrap_or_default()))
        .collect();
    files.sort_by_key(|p| ingest::natural_key(&ingest::name_of(p)));
    Ok(Snapshot {
        key,
        dir,
        files,
        refused,
        ignored,
    })
}

enum CopyError {
    Drop(std::io::Error),
    State(std::io::Error),
    Changed,
}

/// Copy one regular file (opened without following links, non-blocking so a FIFO swapped in
/// cannot hang us) to `dest`, hashing it; it must still be the same inode and size.
fn copy_file(dir: &OwnedFd, e: &Entry, dest: &Path) -> Result<String, CopyError> {
    let fd = rustix::fs::openat(
        dir,
        e.name.as_os_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| {
        if err == rustix::io::Errno::LOOP || err == rustix::io::Errno::NOENT {
            CopyError::Changed
        } else {
            CopyError::Drop(err.into())
        }
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|err| CopyError::Drop(err.into()))?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile || st.st_ino as u64 != e.ino {
        return Err(CopyError::Changed);
    }
    let mut src = File::from(fd).take(MAX_FILE_BYTES + 1);
    let mut out = File::create(dest).map_err(CopyError::State)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(CopyError::Drop)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::State)?;
    }
    if total != e.size {
        return Err(CopyError::Changed);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
