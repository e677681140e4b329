//! Looking at a drop folder: patient and series folders, nested USB exports, refusals (links,
//! hidden names, depth), and each series' stat-level signature. Nothing is read but folder
//! entries and DICOMDIRs (through [`super::dicomdir::Index`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::dicomdir::{is_dicomdir, DicomdirGuard, Index};
use super::{entries, link_reason, lossy, open_dir_at, open_root, DropError, Entry, Kind};
use super::{DropListing, SeriesListing, SELF};
use crate::dicom_net::inbox::commit_marker_count;
use crate::ingest;
use crate::service::machine::Place;

/// Look at a drop folder: `<drop>/<patient>/<series>/`, where `<series>` may be nested (a USB
/// export's `DICOM/ST000/SE000/`: patient `DICOM`, series `ST000/SE000`; see `walk_series`).
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
pub(super) const HIDDEN_FOLDER: &str =
    "a folder whose name starts with '.' or ends with .part, .tmp or ~ is taken as hidden \
     or still being copied and is not read; rename it to have it processed";

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
pub(super) fn open_series(pfd: &OwnedFd, series: &OsStr) -> std::io::Result<OwnedFd> {
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
pub(super) fn stat_signature(files: &[Entry]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update((f.name.len() as u64).to_le_bytes());
        h.update(f.name.as_bytes());
        h.update(format!("{:?}\0{}\0{}\0{}\n", f.kind, f.size, f.ino, f.mtime_ns).as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
