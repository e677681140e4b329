//! Ingest: find the series in a patient folder and decode their slices.
//!
//! Why a module of its own: everything that touches the file system layout and image formats
//! lives here, so `select` and `classify` can stay pure functions over pixel buffers. It knows
//! nothing about models.
//!
//! Layout (COVID-CTset): `<patient>/<series>/IMnnnnn.tif`. A folder given to [`discover`] is
//! either a *series folder* (it holds slice files and no sub-folders) or a *patient folder*
//! (it holds series folders). Slices are ordered by the last number in their file name, so
//! `IM2` comes before `IM10`.
//!
//! Decoding is streaming: [`SliceDecoder`] owns one reusable pixel buffer, so walking a series
//! never holds more than one decoded slice.

mod image8;
mod tiff;

use std::fs;
use std::path::{Path, PathBuf};

pub use self::image8::{decode_gray8, Gray8, MAX_SIDE_8BIT};
pub use self::tiff::{is_tiff_file, SliceDecoder, MAX_FILE_BYTES, MAX_SIDE, MIN_HEIGHT, MIN_WIDTH};

/// One decoded slice, borrowed from the decoder's reusable buffer.
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a> {
    pub width: usize,
    pub height: usize,
    /// Row-major stored values (HU + 1024 for the COVID-CTset convention).
    pub pixels: &'a [u16],
}

/// A series folder and its slice files, in slice order. No pixels are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Name of the patient folder (the parent of the series folder).
    pub patient: String,
    /// Name of the series folder, e.g. `SR_2`.
    pub id: String,
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    /// Entries of the series folder that are not in `files` because they could not be read
    /// as slices at all (the service's snapshot refuses links and special files): each makes
    /// the series incomplete, exactly like a file that fails to decode.
    pub refused: Vec<FileProblem>,
}

/// A file of a series that could not be used, and why (file name relative to the series).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileProblem {
    pub file: String,
    pub reason: String,
}

/// Why a file was not read as a slice, or a folder not as a series.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a folder")]
    NotADirectory { path: PathBuf },
    #[error("{path}: holds no slice files and no series folders")]
    EmptyFolder { path: PathBuf },
    #[error("{path}: not a regular file ({kind}); refusing to read it as a slice")]
    NotARegularFile { path: PathBuf, kind: &'static str },
    #[error("{path}: {reason}")]
    Decode { path: PathBuf, reason: DecodeError },
}

impl IngestError {
    /// The reason without the path (the caller names the file as the user knows it).
    pub fn reason(&self) -> String {
        match self {
            IngestError::Io { source, .. } => format!("cannot read: {source}"),
            IngestError::NotADirectory { .. } => "not a folder".into(),
            IngestError::EmptyFolder { .. } => "holds no slice files and no series folders".into(),
            IngestError::NotARegularFile { kind, .. } => {
                format!("not a regular file ({kind}); refusing to read it as a slice")
            }
            IngestError::Decode { reason, .. } => reason.to_string(),
        }
    }
}

/// The specific reason a file is not an acceptable slice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file (0 bytes)")]
    EmptyFile,
    #[error("not a TIFF file (no TIFF signature)")]
    NotTiff,
    #[error("unsupported pixel format: {0} (need one 16-bit unsigned grayscale sample per pixel)")]
    PixelFormat(String),
    #[error("image is {width}x{height}, smaller than the {min_w}x{min_h} needed for the lung ROI", min_w = MIN_WIDTH, min_h = MIN_HEIGHT)]
    TooSmall { width: u32, height: u32 },
    #[error("image declares {width}x{height}, larger than the {max}x{max} limit", max = MAX_SIDE)]
    TooLarge { width: u32, height: u32 },
    #[error("unsupported TIFF feature: {0}")]
    Unsupported(String),
    #[error("truncated or corrupt TIFF: {0}")]
    Corrupt(String),
    #[error("decoder limit exceeded (forged or oversized header): {0}")]
    Limits(String),
}

/// Find the series under `dir` (a patient folder or a series folder).
///
/// Series folders are returned in natural order (`SR_2` before `SR_10`), slices likewise.
/// Hidden files and the temporary names of copies in progress (`*.tmp`, `*.part`) are not
/// slices and are left alone; every other entry of a series folder is a slice candidate and
/// must decode, so nothing is skipped silently.
pub fn discover(dir: &Path) -> Result<Vec<Series>, IngestError> {
    let meta = fs::metadata(dir).map_err(|e| io(dir, e))?;
    if !meta.is_dir() {
        return Err(IngestError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let (files, dirs) = list(dir)?;
    if dirs.is_empty() {
        if files.is_empty() {
            return Err(IngestError::EmptyFolder {
                path: dir.to_path_buf(),
            });
        }
        let patient = dir
            .canonicalize()
            .ok()
            .and_then(|p| {
                p.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        return Ok(vec![series(patient, dir, files)]);
    }
    for stray in &files {
        log::warn!(
            "{}: file in a patient folder is not part of any series; ignored",
            stray.display()
        );
    }
    let patient = name_of(&dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()));
    let mut out = Vec::with_capacity(dirs.len());
    for d in dirs {
        let (files, sub) = list(&d)?;
        for s in &sub {
            log::warn!("{}: nested folder inside a series folder; ignored", s.display());
        }
        // An empty series folder is still a series the user put there: report it (it will be
        // rejected downstream with a clear reason) rather than dropping it.
        out.push(series(patient.clone(), &d, files));
    }
    Ok(out)
}

fn series(patient: String, dir: &Path, mut files: Vec<PathBuf>) -> Series {
    files.sort_by_key(|p| natural_key(&name_of(p)));
    Series {
        patient,
        id: name_of(dir),
        path: dir.to_path_buf(),
        files,
        refused: Vec::new(),
    }
}

/// Regular-ish files (slice candidates) and sub-folders of `dir`, each unsorted.
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), IngestError> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_transient_name(&name) {
            log::debug!("{}: hidden or temporary name, not a slice", path.display());
            continue;
        }
        // Follow symlinks for the type: a link to a folder is a folder, a link to a file a
        // file. Special files are kept so that reading them fails with a clear error.
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => dirs.push(path),
            Ok(_) => files.push(path),
            Err(e) => return Err(io(&path, e)),
        }
    }
    dirs.sort_by_key(|p| natural_key(&name_of(p)));
    Ok((files, dirs))
}

/// Hidden files and names used by copies in progress are never slices.
pub fn is_transient_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.') || lower.ends_with(".tmp") || lower.ends_with(".part") || name.ends_with('~')
}

/// Sort key: the last run of ASCII digits in the name as a number, then the name itself.
/// Names without digits sort after numbered ones.
pub fn natural_key(name: &str) -> (u8, u128, String) {
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit);
    match end {
        Some(end) => {
            let start = bytes[..=end]
                .iter()
                .rposition(|b| !b.is_ascii_digit())
                .map_or(0, |i| i + 1);
            // Absurdly long digit runs saturate instead of overflowing.
            let n = name[start..=end].parse::<u128>().unwrap_or(u128::MAX);
            (0, n, name.to_owned())
        }
        None => (1, 0, name.to_owned()),
    }
}

pub fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> IngestError {
    IngestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_im2_before_im10() {
        let mut v = vec!["IM10.tif", "IM2.tif", "IM00001.tif", "notes", "IM100.tif"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["IM00001.tif", "IM2.tif", "IM10.tif", "IM100.tif", "notes"]);
    }

    #[test]
    fn natural_order_of_series_folders() {
        let mut v = vec!["SR_10", "SR_3", "SR_2"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["SR_2", "SR_3", "SR_10"]);
    }

    #[test]
    fn transient_names_are_not_slices() {
        for n in [".DS_Store", "IM1.tif.part", "IM1.TMP", "IM1.tif~"] {
            assert!(is_transient_name(n), "{n}");
        }
        assert!(!is_transient_name("IM00001.tif"));
    }

    #[test]
    fn discover_series_folder_and_patient_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pat1");
        for s in ["SR_10", "SR_2"] {
            fs::create_dir_all(p.join(s)).unwrap();
            for f in ["IM10.tif", "IM2.tif", ".hidden", "IM3.tif.part"] {
                fs::write(p.join(s).join(f), b"x").unwrap();
            }
        }
        let all = discover(&p).unwrap();
        assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["SR_2", "SR_10"]);
        assert!(all.iter().all(|s| s.patient == "pat1"));
        let names: Vec<_> = all[0].files.iter().map(|f| name_of(f)).collect();
        assert_eq!(names, ["IM2.tif", "IM10.tif"]);

        let one = discover(&p.join("SR_2")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].patient, "pat1");
        assert_eq!(one[0].id, "SR_2");
    }

    #[test]
    fn discover_refuses_empty_folder_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(discover(tmp.path()), Err(IngestError::EmptyFolder { .. })));
        let f = tmp.path().join("a.tif");
        fs::write(&f, b"x").unwrap();
        assert!(matches!(discover(&f), Err(IngestError::NotADirectory { .. })));
        assert!(matches!(
            discover(&tmp.path().join("missing")),
            Err(IngestError::Io { .. })
        ));
    }
}
