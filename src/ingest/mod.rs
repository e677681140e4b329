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
//! DICOM (see [`dicom`]): a folder holding DICOM Part 10 files anywhere below it (a scanner's
//! export, a USB stick with a DICOMDIR) is read by header instead: series are grouped by
//! SeriesInstanceUID, ordered by slice position, and every file that is not an axial CT slice
//! is listed as ignored with its reason.
//!
//! Decoding is streaming: [`SliceDecoder`] owns one reusable pixel buffer, so walking a series
//! never holds more than one decoded slice.

pub mod dicom;
mod dicom_prescan;
mod image8;
mod part10;
mod strict;
mod tiff;

use std::fs;
use std::path::{Path, PathBuf};

pub use self::image8::{decode_gray8, decode_gray8_bytes, Gray8, MAX_SIDE_8BIT};
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
#[derive(Debug, Clone, PartialEq)]
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
    /// What the file headers say about the series (DICOM); `None` for TIFF series.
    pub info: Option<SeriesInfo>,
}

impl Series {
    /// A slice file as the user knows it: its path relative to the folder given.
    pub fn label(&self, file: &Path) -> String {
        label_under(&self.path, file)
    }
}

/// Series facts from DICOM headers, and whether the series is inside the model's contract.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesInfo {
    pub format: String,
    pub description: Option<String>,
    pub pixel_spacing_mm: Option<[f64; 2]>,
    pub slice_spacing_mm: Option<f64>,
    pub slice_thickness_mm: Option<f64>,
    /// What the slice order rests on: `position`, `instance number` or `file name`.
    pub ordered_by: String,
    /// Why the series is outside the model's acquisition contract, else `None`.
    pub protocol: Option<String>,
}

/// Series found under a folder, and the files that are not slices of any (with the reason).
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub series: Vec<Series>,
    pub ignored: Vec<FileProblem>,
}

/// `file` relative to `root` (its name when it is not below `root`).
pub fn label_under(root: &Path, file: &Path) -> String {
    match file.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
        _ => name_of(file),
    }
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
    #[error("neither a TIFF nor a DICOM file (no TIFF signature, no DICM after a 128-byte preamble)")]
    NotTiff,
    #[error("malformed DICOM: {0}")]
    Dicom(String),
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

/// Find the series under `dir` (a patient folder or a series folder) and log what is ignored.
pub fn discover(dir: &Path) -> Result<Vec<Series>, IngestError> {
    let found = find(dir)?;
    for i in &found.ignored {
        log::info!("{}: {}: ignored: {}", dir.display(), i.file, i.reason);
    }
    Ok(found.series)
}

/// Find the series under `dir`: DICOM when any DICOM file lies below it, else the TIFF layout.
///
/// TIFF layout: series folders are returned in natural order (`SR_2` before `SR_10`), slices
/// likewise. Hidden files and the temporary names of copies in progress (`*.tmp`, `*.part`)
/// are not slices and are left alone; every other entry of a series folder is a slice
/// candidate and must decode, so nothing is skipped silently.
pub fn find(dir: &Path) -> Result<Discovery, IngestError> {
    let meta = fs::metadata(dir).map_err(|e| io(dir, e))?;
    if !meta.is_dir() {
        return Err(IngestError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut all = Vec::new();
    walk(dir, 0, &mut all)?;
    if all.iter().any(|p| dicom::is_dicom_file(p)) {
        return Ok(dicom_discovery(dir, all));
    }
    Ok(Discovery {
        series: discover_tiff(dir)?,
        ignored: Vec::new(),
    })
}

/// Series from files already chosen (the service's snapshot of one folder): DICOM grouping
/// when any of them is DICOM, else one TIFF series of all of them.
pub fn series_of_files(patient: String, dir: &Path, files: Vec<PathBuf>, refused: Vec<FileProblem>) -> Discovery {
    if files.iter().any(|p| dicom::is_dicom_file(p)) {
        let mut d = dicom_discovery(dir, files);
        for s in &mut d.series {
            s.refused.extend(refused.iter().cloned());
        }
        return d;
    }
    let mut s = series(patient, dir, files);
    s.refused = refused;
    Discovery {
        series: vec![s],
        ignored: Vec::new(),
    }
}

/// Deepest folder level read below a DICOM root (USB exports: DICOM/ST/SE/IM = 3).
const MAX_DEPTH: usize = 8;
/// Most files looked at under one folder.
const MAX_FILES: usize = 20_000;

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    let (files, dirs) = list(dir)?;
    out.extend(files);
    if out.len() > MAX_FILES {
        return Err(IngestError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!("more than {MAX_FILES} files below this folder")),
        });
    }
    if depth < MAX_DEPTH {
        for d in dirs {
            walk(&d, depth + 1, out)?;
        }
    }
    Ok(())
}

fn dicom_discovery(root: &Path, files: Vec<PathBuf>) -> Discovery {
    let mut found = dicom::Found::default();
    // A DICOMDIR lists what the export holds: a file it lists that is not there makes the
    // export incomplete (it could be a slice of any series found).
    for dd in files
        .iter()
        .filter(|p| name_of(p).eq_ignore_ascii_case("DICOMDIR") && dicom::is_dicom_file(p))
    {
        match dicom::dicomdir_missing(dd) {
            Ok(missing) => found.unreadable.extend(missing.into_iter().map(|id| FileProblem {
                file: id,
                reason: format!("listed in {} but missing", label_under(root, dd)),
            })),
            Err(e) => found.unreadable.push(FileProblem {
                file: label_under(root, dd),
                reason: e.to_string(),
            }),
        }
    }
    for path in files {
        let label = label_under(root, &path);
        if !dicom::is_dicom_file(&path) {
            let reason = if name_of(&path).eq_ignore_ascii_case("DICOMDIR") {
                "DICOMDIR that is not a DICOM file".to_string()
            } else {
                "not a DICOM file (a DICOM folder is read by its DICOM files only)".to_string()
            };
            found.ignored.push(FileProblem { file: label, reason });
            continue;
        }
        match dicom::read_header(&path) {
            Ok(h) => found.headers.push((path, h)),
            Err(e) => match dicom::meta_sop_class_of(&path) {
                // Its own meta group says it is no CT slice: whatever is wrong inside it cannot
                // make a series incomplete.
                Some(class) if class != dicom::CT_IMAGE_STORAGE => found.ignored.push(FileProblem {
                    file: label,
                    reason: format!("SOP class {class} (not a CT slice) and unreadable: {e}"),
                }),
                _ => found.unreadable.push(FileProblem {
                    file: label,
                    reason: e.to_string(),
                }),
            },
        }
    }
    let (series, ignored) = dicom::group(root, found);
    Discovery { series, ignored }
}

fn discover_tiff(dir: &Path) -> Result<Vec<Series>, IngestError> {
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
        info: None,
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
