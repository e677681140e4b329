//! DICOM CT slices and series, as scanners export them (issue 14).
//!
//! Why here: a scanner never writes COVID-CTset's TIFF layout; it exports DICOM Part 10 files
//! to a USB stick or share, in any folder structure, with any file names, several series and
//! a scout in one folder. This module turns such a folder into the same [`Series`] the TIFF
//! layout gives, with slices in the paper's stored-value convention (HU + 1024), so selection
//! and classification cannot tell the two apart.
//!
//! - **Files**: only DICOM Part 10 (128-byte preamble, `DICM`); anything else in a DICOM folder
//!   is listed as ignored with its reason. Parsed by dicom-rs (`dicom-object`), pixels decoded by
//!   `dicom-pixeldata` with pure-Rust codecs.
//! - **Grouping**: by SeriesInstanceUID, never by folder. Slices are ordered by the position
//!   along the slice normal (ImagePositionPatient · (row × column of ImageOrientationPatient)),
//!   from the head down like COVID-CTset's numbering, else by InstanceNumber, else by name.
//! - **Candidates**: CT Image Storage, single frame, not a LOCALIZER. Scouts, dose reports,
//!   secondary captures, SR, other modalities and the DICOMDIR itself are *ignored* with a
//!   reason, never rejected and never silently dropped. A file that looks like DICOM but cannot
//!   be parsed, or a CT image without a SeriesInstanceUID, could belong to any series of the
//!   folder: every series found there is then incomplete (no verdict on part of a scan).
//! - **Values**: stored value masked to BitsStored and sign-extended when PixelRepresentation
//!   is 1, then HU = value × RescaleSlope + RescaleIntercept, then HU + 1024 rounded and clamped
//!   to 0..=65535 (air outside the reconstruction, often -2000 HU or lower, becomes 0).
//! - **Complete decode**: native pixel data must hold exactly rows × columns 16-bit samples;
//!   an encapsulated (JPEG) frame's own header must declare exactly rows × columns (the decoder
//!   would otherwise pad a smaller image with zeros, or overrun a larger one), and a JPEG
//!   stream that ends early is an error of the decoder.
//! - **Transfer syntaxes**: implicit / explicit VR little endian, deflated explicit VR little
//!   endian, JPEG Lossless (Process 14 and its SV1 selection, what CT scanners use). Refused
//!   with a clear error: big endian (retired), RLE (its decoder can panic on malformed input),
//!   JPEG-LS and JPEG 2000 (need C/C++ codecs we do not ship), lossy JPEG (not diagnostic CT).
//! - **Protocol**: `SeriesInfo::protocol` says when a series is outside the model's contract
//!   (not axial, pixel or slice spacing out of range, too few slices, mixed image sizes, not
//!   chest); such a series is `undetermined` with that reason, never classified.
//! - **Privacy**: patient identifiers are logged at `debug` only; reports carry the PatientID
//!   the user already sees on the scanner.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::{OddLengthStrategy, ReadPreamble};
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

use super::{natural_key, DecodeError, FileProblem, Series, SeriesInfo, MAX_SIDE, MIN_HEIGHT, MIN_WIDTH};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// Transfer syntaxes whose pixel data this appliance decodes, with their names.
const ACCEPTED_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)"),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless SV1 (Process 14, selection value 1)",
    ),
];
const JPEG_SYNTAXES: &[&str] = &["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"];

/// Names of well-known transfer syntaxes we refuse, for the error message.
fn refused_syntax_name(uid: &str) -> Option<&'static str> {
    Some(match uid {
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian (retired)",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline (lossy)",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended (lossy)",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        _ => return None,
    })
}

/// The model's acquisition contract (also stated in the model card's README section).
pub mod contract {
    /// Slice normal within this angle of the patient's head-foot axis.
    pub const MAX_TILT_DEG: f64 = 15.0;
    /// In-plane pixel spacing, mm (the training patients span 0.59 to 0.84 mm).
    pub const PIXEL_SPACING_MM: (f64, f64) = (0.4, 1.0);
    /// Rows and columns may differ by this fraction at most (square pixels).
    pub const MAX_ANISOTROPY: f64 = 0.01;
    /// Distance between neighbouring slices, mm (COVID-CTset: 2 mm slices; the shared series
    /// hold every third, 6 mm apart).
    pub const SLICE_SPACING_MM: (f64, f64) = (0.5, 10.0);
    /// Selection compares a slice with the series' extremes: it needs a spread of slices.
    pub const MIN_SLICES: usize = 10;
}

/// True when `path` starts like a DICOM file: Part 10 (`DICM` after the 128-byte preamble),
/// `DICM` without the preamble, or a bare data set (see `part10::sniff`).
pub fn is_dicom_file(path: &Path) -> bool {
    let mut head = Vec::with_capacity(132);
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && File::open(path)
            .and_then(|f| f.take(132).read_to_end(&mut head))
            .is_ok()
        && is_dicom_signature(&head)
}

pub(super) fn is_dicom_signature(head: &[u8]) -> bool {
    super::part10::sniff(head).is_some()
}

/// What discovery needs from a file's header (no pixel data is read).
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub sop_class: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub modality: String,
    pub image_type: Vec<String>,
    pub series_uid: String,
    pub series_description: String,
    pub patient_id: String,
    pub body_part: String,
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    pub pixel_spacing: Option<[f64; 2]>,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub thickness: Option<f64>,
    pub instance: Option<i64>,
    /// Patient and study attributes, copied into the DICOM results of the study.
    pub patient_study: PatientStudy,
}

/// The patient and study modules of a source image as it records them (empty where absent).
/// A result object in the study must carry the same values, or a PACS files it as a conflict
/// (or overwrites the study's with empty ones). Never logged: identifiers stay in DICOM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientStudy {
    pub patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession: String,
    pub referring_physician: String,
}

/// The bounds pre-scan of a bare implicit-VR little-endian data set (a DIMSE command set from a
/// peer): every declared length must fit in `bytes` before dicom-rs allocates from it.
pub fn check_implicit_dataset(bytes: &[u8]) -> Result<(), DecodeError> {
    super::dicom_prescan::check_dataset(bytes, false)
}

/// The same pre-scan of a bare data set in implicit (`explicit` false) or explicit VR.
pub fn check_dataset(bytes: &[u8], explicit: bool) -> Result<(), DecodeError> {
    super::dicom_prescan::check_dataset(bytes, explicit)
}

fn open(bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject, DecodeError> {
    // Files without preamble, meta group length or meta at all are read as pydicom and dcmtk
    // read them: made canonical first, the data set unchanged.
    let bytes = &*super::part10::canonical(bytes)?;
    // Every declared length must fit in the file before dicom-rs allocates from it.
    super::dicom_prescan::check(bytes)?;
    let mut o = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .odd_length_strategy(OddLengthStrategy::Accept);
    if header_only {
        o = o.read_until(tags::PIXEL_DATA);
    }
    o.from_reader(Cursor::new(&bytes[128..]))
        .map_err(|e| DecodeError::Dicom(format!("cannot parse: {}", one_line(&e))))
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn text(o: &DefaultDicomObject, tag: Tag) -> String {
    o.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').to_string())
        .unwrap_or_default()
}

fn floats<const N: usize>(o: &DefaultDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = o.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

fn float(o: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    o.get(tag)?.to_float64().ok().filter(|v| v.is_finite())
}

fn int(o: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    o.get(tag)?.to_int::<i64>().ok()
}

/// Read the header of the DICOM file whose first bytes are `head` (up to the pixel data).
pub fn read_header(path: &Path) -> Result<Header, DecodeError> {
    let mut f = File::open(path).map_err(|e| DecodeError::Dicom(format!("cannot open: {e}")))?;
    // Headers are small; pixel data is not read. Bounded like a slice file.
    let mut bytes = Vec::new();
    (&mut f)
        .take(super::MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| DecodeError::Dicom(format!("cannot read: {e}")))?;
    header_of(&bytes)
}

/// The SOP class a file's meta group names (see `part10::meta_sop_class`).
pub fn meta_sop_class_of(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(super::MAX_FILE_BYTES).read_to_end(&mut bytes))
        .ok()?;
    super::part10::meta_sop_class(&bytes)
}

/// [`read_header`] of a file already in memory (the receiver checks what it was sent).
pub fn header_of(bytes: &[u8]) -> Result<Header, DecodeError> {
    Ok(header_from(&open(bytes, true)?))
}

fn header_from(o: &DefaultDicomObject) -> Header {
    let mut sop_class = text(o, tags::SOP_CLASS_UID);
    if sop_class.is_empty() {
        sop_class = o
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string();
    }
    Header {
        sop_class,
        sop_instance_uid: text(o, tags::SOP_INSTANCE_UID),
        study_uid: text(o, tags::STUDY_INSTANCE_UID),
        modality: text(o, tags::MODALITY),
        image_type: o
            .get(tags::IMAGE_TYPE)
            .and_then(|e| e.to_multi_str().ok())
            .map(|v| v.iter().map(|s| s.trim().to_ascii_uppercase()).collect())
            .unwrap_or_default(),
        series_uid: text(o, tags::SERIES_INSTANCE_UID),
        series_description: text(o, tags::SERIES_DESCRIPTION),
        patient_id: text(o, tags::PATIENT_ID),
        body_part: text(o, tags::BODY_PART_EXAMINED).to_ascii_uppercase(),
        rows: int(o, tags::ROWS).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        columns: int(o, tags::COLUMNS).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        frames: int(o, tags::NUMBER_OF_FRAMES)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1),
        pixel_spacing: floats::<2>(o, tags::PIXEL_SPACING),
        position: floats::<3>(o, tags::IMAGE_POSITION_PATIENT),
        orientation: floats::<6>(o, tags::IMAGE_ORIENTATION_PATIENT),
        thickness: float(o, tags::SLICE_THICKNESS),
        instance: int(o, tags::INSTANCE_NUMBER),
        patient_study: PatientStudy {
            patient_id: text(o, tags::PATIENT_ID),
            patient_name: text(o, tags::PATIENT_NAME),
            birth_date: text(o, tags::PATIENT_BIRTH_DATE),
            sex: text(o, tags::PATIENT_SEX),
            study_date: text(o, tags::STUDY_DATE),
            study_time: text(o, tags::STUDY_TIME),
            study_id: text(o, tags::STUDY_ID),
            accession: text(o, tags::ACCESSION_NUMBER),
            referring_physician: text(o, tags::REFERRING_PHYSICIAN_NAME),
        },
    }
}

/// `None` when the file is an axial CT image slice candidate, else why it is not one.
pub fn not_a_candidate(h: &Header) -> Option<String> {
    if h.sop_class == MEDIA_STORAGE_DIRECTORY {
        return Some("DICOMDIR (media directory, not an image)".into());
    }
    if h.modality != "CT" {
        let m = if h.modality.is_empty() { "none" } else { &h.modality };
        return Some(format!("modality {m}, not CT"));
    }
    if h.image_type.iter().any(|t| t == "LOCALIZER") {
        return Some("localizer (scout) image".into());
    }
    if h.sop_class == ENHANCED_CT_IMAGE_STORAGE {
        return Some("Enhanced CT (multi-frame) image: not supported, export the series as CT Image Storage".into());
    }
    if h.sop_class != CT_IMAGE_STORAGE {
        return Some(format!(
            "SOP class {} is not CT Image Storage (dose report, secondary capture, SR, ...)",
            h.sop_class
        ));
    }
    if h.frames != 1 {
        return Some(format!("{} frames in one CT image: not supported", h.frames));
    }
    None
}

/// Why a candidate's declared image can never be decoded as a slice (forged or corrupt
/// dimensions), checked from the header so the file is named before any pixel is read.
fn size_problem(h: &Header) -> Option<String> {
    let (w, hgt) = (h.columns, h.rows);
    if w > MAX_SIDE || hgt > MAX_SIDE {
        return Some(DecodeError::TooLarge { width: w, height: hgt }.to_string());
    }
    if w < MIN_WIDTH || hgt < MIN_HEIGHT {
        return Some(DecodeError::TooSmall { width: w, height: hgt }.to_string());
    }
    None
}

mod pixels;
mod series;
pub(super) use pixels::decode_slice;
pub use series::MAX_GAP_RATIO;
pub(super) use series::{group, Found};

/// The files a DICOMDIR's IMAGE records list (ReferencedFileID), each as its path components
/// relative to the DICOMDIR's folder, in record order. A file ID that is not a plain relative
/// path (empty, `.`, `..`, a separator inside a component) makes the whole DICOMDIR invalid:
/// it could only point outside the medium.
pub fn dicomdir_image_ids(bytes: &[u8]) -> Result<Vec<Vec<String>>, DecodeError> {
    let o = open(bytes, false)?;
    let records = o
        .get(tags::DIRECTORY_RECORD_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    let mut ids = Vec::new();
    for rec in records {
        let kind = rec
            .get(tags::DIRECTORY_RECORD_TYPE)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if kind != "IMAGE" {
            continue;
        }
        let Some(parts) = rec.get(tags::REFERENCED_FILE_ID).and_then(|e| e.to_multi_str().ok()) else {
            continue;
        };
        let parts: Vec<String> = parts.iter().map(|p| p.trim().to_string()).collect();
        if parts.is_empty()
            || parts
                .iter()
                .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('/') || p.contains('\\'))
        {
            return Err(DecodeError::Dicom(format!(
                "DICOMDIR lists an invalid file ID {:?}",
                parts.join("/")
            )));
        }
        ids.push(parts);
    }
    Ok(ids)
}

/// Files a DICOMDIR lists that are not on the medium: the export is incomplete. Returns the
/// missing IDs as written in the DICOMDIR (`A/B/C`). A listed file is found under its exact
/// name or its lower-case name (FAT sticks mounted with lower-case short names).
pub(super) fn dicomdir_missing(dicomdir: &Path) -> Result<Vec<String>, DecodeError> {
    let mut bytes = Vec::new();
    File::open(dicomdir)
        .and_then(|f| f.take(super::MAX_FILE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| DecodeError::Dicom(format!("cannot read: {e}")))?;
    let base = dicomdir.parent().unwrap_or(Path::new("."));
    let mut missing = Vec::new();
    for parts in dicomdir_image_ids(&bytes)? {
        let exact = parts.iter().fold(base.to_path_buf(), |p, c| p.join(c));
        let lower = parts
            .iter()
            .fold(base.to_path_buf(), |p, c| p.join(c.to_ascii_lowercase()));
        if !exact.is_file() && !lower.is_file() {
            missing.push(parts.join("/"));
        }
    }
    Ok(missing)
}

/// A source instance a DICOM result (SR) references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class: String,
    pub sop_instance: String,
}

impl SourceRef {
    /// The reference to the instance whose header is `h`.
    pub fn of(h: Header) -> SourceRef {
        SourceRef {
            study_uid: h.study_uid,
            series_uid: h.series_uid,
            sop_class: h.sop_class,
            sop_instance: h.sop_instance_uid,
        }
    }
}

/// What a DICOM result rests on: the source instances and the patient/study modules they carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub refs: Vec<SourceRef>,
    /// Of the first source instance (by file order).
    pub patient: PatientStudy,
}

/// The instances among `files` (headers read again; files that are not DICOM CT slices with
/// UIDs are left out) and the patient/study modules of the first.
pub fn sources(files: &[PathBuf]) -> Sources {
    let mut out = Sources::default();
    for h in files
        .iter()
        .filter(|p| is_dicom_file(p))
        .filter_map(|p| read_header(p).ok())
        .filter(|h| not_a_candidate(h).is_none() && !h.sop_instance_uid.is_empty() && !h.study_uid.is_empty())
    {
        if out.refs.is_empty() {
            out.patient = h.patient_study.clone();
        }
        out.refs.push(SourceRef::of(h));
    }
    out
}
