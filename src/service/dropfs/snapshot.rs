//! Copying a series out of its drop folder into the state folder (the snapshot the scan reads),
//! with its content key; refusals (links, oversized, unreadable) named per file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::dicomdir::{dicomdir_source, is_dicomdir, DicomdirGuard};
use super::walk::{hex, open_series, stat_signature};
use super::{entries, link_reason, lossy, open_dir_at, open_root, DropError, Entry, Kind, SELF};
use crate::ingest::{self, MAX_FILE_BYTES};
use crate::service::machine::Place;

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
    let dir = work.join(crate::service::layout::short_key(&key));
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
