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
/// `DICM` without the preamble, or a bare data set (see [`super::part10::sniff`]).
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

/// The SOP class a file's meta group names (see [`super::part10::meta_sop_class`]).
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

/// Decode the slice in `bytes` (a whole DICOM file) into `out` as HU + 1024.
pub(super) fn decode_slice(bytes: &[u8], out: &mut Vec<u16>) -> Result<(usize, usize), DecodeError> {
    let o = open(bytes, false)?;
    let ts = o.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if !ACCEPTED_SYNTAXES.iter().any(|(u, _)| *u == ts) {
        let name = refused_syntax_name(&ts).unwrap_or("unknown");
        let accepted: Vec<&str> = ACCEPTED_SYNTAXES.iter().map(|(_, n)| *n).collect();
        return Err(DecodeError::Unsupported(format!(
            "transfer syntax {ts} ({name}); accepted: {}",
            accepted.join(", ")
        )));
    }
    let h = header_from(&o);
    if let Some(why) = not_a_candidate(&h) {
        return Err(DecodeError::Unsupported(why));
    }
    let (w, hgt) = (h.columns, h.rows);
    if w > MAX_SIDE || hgt > MAX_SIDE {
        return Err(DecodeError::TooLarge { width: w, height: hgt });
    }
    if w < MIN_WIDTH || hgt < MIN_HEIGHT {
        return Err(DecodeError::TooSmall { width: w, height: hgt });
    }
    let samples = int(&o, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = text(&o, tags::PHOTOMETRIC_INTERPRETATION);
    let allocated = int(&o, tags::BITS_ALLOCATED).unwrap_or(0);
    let stored = int(&o, tags::BITS_STORED).unwrap_or(0);
    let high = int(&o, tags::HIGH_BIT).unwrap_or(stored - 1);
    let signed = match int(&o, tags::PIXEL_REPRESENTATION).unwrap_or(0) {
        0 => false,
        1 => true,
        other => return Err(DecodeError::PixelFormat(format!("PixelRepresentation {other}"))),
    };
    if samples != 1 || photometric != "MONOCHROME2" {
        return Err(DecodeError::PixelFormat(format!(
            "{samples} samples per pixel, {photometric} (need one sample, MONOCHROME2)"
        )));
    }
    if allocated != 16 || !(1..=16).contains(&stored) || high != stored - 1 {
        return Err(DecodeError::PixelFormat(format!(
            "BitsAllocated {allocated}, BitsStored {stored}, HighBit {high} (need 16 allocated, up to 16 stored, high bit = stored - 1)"
        )));
    }
    let (Some(slope), Some(intercept)) = (float(&o, tags::RESCALE_SLOPE), float(&o, tags::RESCALE_INTERCEPT)) else {
        return Err(DecodeError::Unsupported(
            "no RescaleSlope / RescaleIntercept: Hounsfield units unknown".into(),
        ));
    };
    if slope <= 0.0 || slope > 16.0 || intercept.abs() > 32768.0 {
        return Err(DecodeError::Unsupported(format!(
            "implausible rescale (slope {slope}, intercept {intercept})"
        )));
    }
    let n = w as usize * hgt as usize;
    if JPEG_SYNTAXES.contains(&ts.as_str()) {
        check_jpeg_frame(&o, w, hgt)?;
    }
    let decoded = o
        .decode_pixel_data()
        .map_err(|e| DecodeError::Corrupt(format!("pixel data: {}", one_line(&e))))?;
    let data = decoded.data();
    if decoded.rows() != hgt || decoded.columns() != w || decoded.number_of_frames() != 1 {
        return Err(DecodeError::Corrupt(
            "decoded image size differs from the header".into(),
        ));
    }
    if data.len() != n * 2 {
        return Err(DecodeError::Corrupt(format!(
            "pixel data holds {} bytes, {w}x{hgt} 16-bit pixels need {}",
            data.len(),
            n * 2
        )));
    }
    let shift = 16 - stored as u32;
    out.clear();
    out.reserve(n);
    out.extend(data.chunks_exact(2).map(|c| {
        let v = u16::from_ne_bytes([c[0], c[1]]);
        let raw = if signed {
            i32::from(((v << shift) as i16) >> shift)
        } else {
            i32::from((v << shift) >> shift)
        };
        let hu = f64::from(raw) * slope + intercept;
        (hu + 1024.0).round().clamp(0.0, 65535.0) as u16
    }));
    Ok((w as usize, hgt as usize))
}

/// The JPEG stream of the one frame must itself declare exactly `w` x `h` pixels.
fn check_jpeg_frame(o: &DefaultDicomObject, w: u32, h: u32) -> Result<(), DecodeError> {
    let frags = o
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.fragments())
        .ok_or_else(|| DecodeError::Corrupt("encapsulated pixel data has no fragments".into()))?;
    let stream: Vec<u8> = frags.iter().flat_map(|f| f.iter().copied()).collect();
    // A stream cut short still decodes (the decoder fills what is missing): it must end at its
    // EOI marker, after at most the one pad byte that keeps a fragment's length even.
    let end = stream.len() - usize::from(stream.last() == Some(&0));
    if end < 2 || stream[end - 2..end] != [0xFF, 0xD9] {
        return Err(DecodeError::Corrupt(
            "JPEG stream does not end with its EOI marker (truncated frame)".into(),
        ));
    }
    let mut d = jpeg_decoder::Decoder::new(&stream[..]);
    d.read_info()
        .map_err(|e| DecodeError::Corrupt(format!("JPEG header: {e}")))?;
    let info = d
        .info()
        .ok_or_else(|| DecodeError::Corrupt("JPEG stream has no frame header".into()))?;
    if (u32::from(info.width), u32::from(info.height)) != (w, h) {
        return Err(DecodeError::Corrupt(format!(
            "JPEG frame is {}x{}, the header declares {w}x{h}",
            info.width, info.height
        )));
    }
    Ok(())
}

/// DICOM files found under a folder, before grouping.
#[derive(Default)]
pub(super) struct Found {
    pub headers: Vec<(PathBuf, Header)>,
    /// Looked like DICOM, but could not be parsed: could belong to any series.
    pub unreadable: Vec<FileProblem>,
    pub ignored: Vec<FileProblem>,
}

/// Group candidate slices into series, order them, and check each against the contract.
pub(super) fn group(root: &Path, found: Found) -> (Vec<Series>, Vec<FileProblem>) {
    let label = |p: &Path| super::label_under(root, p);
    let mut ignored = found.ignored;
    let mut unassigned = found.unreadable;
    let mut by_uid: BTreeMap<String, Vec<(PathBuf, Header)>> = BTreeMap::new();
    let mut refused_of: BTreeMap<String, Vec<FileProblem>> = BTreeMap::new();
    for (path, h) in found.headers {
        if let Some(why) = not_a_candidate(&h) {
            ignored.push(FileProblem {
                file: label(&path),
                reason: why,
            });
        } else if let Some(why) = size_problem(&h) {
            // A slice of its series that can never be decoded: the series is incomplete, and
            // the file is named.
            let uid = h.series_uid.clone();
            refused_of.entry(uid.clone()).or_default().push(FileProblem {
                file: label(&path),
                reason: why,
            });
            by_uid.entry(uid).or_default();
        } else if h.series_uid.is_empty() {
            unassigned.push(FileProblem {
                file: label(&path),
                reason: "CT image without SeriesInstanceUID: cannot tell which series it belongs to".into(),
            });
        } else {
            by_uid.entry(h.series_uid.clone()).or_default().push((path, h));
        }
    }
    let mut series: Vec<Series> = by_uid
        .into_iter()
        .map(|(uid, mut slices)| {
            let mut refused = refused_of.remove(&uid).unwrap_or_default();
            refused.extend(unassigned.iter().cloned());
            if slices.is_empty() {
                // Every file of this series declared an impossible image: named, no slices.
                return Series {
                    patient: "unknown patient".into(),
                    id: uid,
                    path: root.to_path_buf(),
                    files: Vec::new(),
                    refused,
                    info: None,
                };
            }
            let ordered_by = order(&mut slices);
            let info = info_of(&slices, ordered_by);
            let first = &slices[0].1;
            log::debug!("series {uid}: patient {:?}, {} slices", first.patient_id, slices.len());
            Series {
                patient: if first.patient_id.is_empty() {
                    "unknown patient".into()
                } else {
                    first.patient_id.clone()
                },
                id: uid,
                path: root.to_path_buf(),
                files: slices.iter().map(|(p, _)| p.clone()).collect(),
                refused,
                info: Some(info),
            }
        })
        .collect();
    if series.is_empty() && !unassigned.is_empty() {
        // Nothing could be grouped: report the unreadable files as one incomplete series.
        series.push(Series {
            patient: "unknown patient".into(),
            id: super::name_of(root),
            path: root.to_path_buf(),
            files: Vec::new(),
            refused: unassigned,
            info: None,
        });
    }
    ignored.sort_by(|a, b| a.file.cmp(&b.file));
    (series, ignored)
}

/// Sort slices head to foot; returns what the order rests on.
fn order(slices: &mut [(PathBuf, Header)]) -> &'static str {
    let along = |h: &Header| -> Option<f64> {
        let (p, o) = (h.position?, h.orientation?);
        let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
    };
    if slices.iter().all(|(_, h)| along(h).is_some()) {
        // Descending along the normal: for axial slices, superior (head) first. A total order
        // (`total_cmp`, then the name): `sort_by` may panic on an inconsistent comparator.
        slices.sort_by_cached_key(|(p, h)| {
            let key = along(h).map_or(f64::NAN, |z| -z);
            (TotalF64(key), natural_key(&super::name_of(p)))
        });
        "position"
    } else if slices.iter().all(|(_, h)| h.instance.is_some()) {
        slices.sort_by_cached_key(|(p, h)| (h.instance, natural_key(&super::name_of(p))));
        "instance number"
    } else {
        slices.sort_by_key(|(p, _)| natural_key(&super::name_of(p)));
        "file name"
    }
}

/// A series is incomplete when its largest step between neighbouring slices exceeds this many
/// times the median step (a slice missing doubles a step).
pub const MAX_GAP_RATIO: f64 = 1.5;

/// Why the slice positions say slices are missing: a step above [`MAX_GAP_RATIO`] x `median`.
fn position_gap(gaps: &[f64], median: f64) -> Option<String> {
    if gaps.len() < 2 || median <= 0.0 {
        return None;
    }
    let (at, max) = gaps.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1))?;
    (max > MAX_GAP_RATIO * median).then(|| {
        format!(
            "incomplete series: a {max:.2} mm gap after slice {} of {} (median step {median:.2} mm; more than {MAX_GAP_RATIO}x means slices are missing)",
            at + 1,
            gaps.len() + 1
        )
    })
}

/// Why the InstanceNumbers say slices are missing: with every slice numbered, a step between
/// neighbouring numbers larger than the series' usual (median) step.
fn instance_gap(slices: &[(PathBuf, Header)]) -> Option<String> {
    let mut n: Vec<i64> = slices.iter().map(|(_, h)| h.instance).collect::<Option<Vec<_>>>()?;
    if n.len() < 3 {
        return None;
    }
    n.sort_unstable();
    let steps: Vec<i64> = n.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    if median <= 0 {
        return None;
    }
    let i = steps.iter().position(|&d| d > median)?;
    Some(format!(
        "incomplete series: InstanceNumber jumps from {} to {} (step {median} elsewhere): slices are missing",
        n[i],
        n[i + 1]
    ))
}

/// An `f64` ordered by [`f64::total_cmp`] (a sort key that is a total order).
#[derive(Debug, Clone, Copy)]
struct TotalF64(f64);

impl PartialEq for TotalF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for TotalF64 {}
impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TotalF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Why `o` is not two orthogonal unit vectors (row and column direction), if it is not.
fn orientation_problem(o: &[f64; 6]) -> Option<String> {
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let dot = r[0] * c[0] + r[1] * c[1] + r[2] * c[2];
    const TOL: f64 = 0.01;
    if (norm(r) - 1.0).abs() > TOL || (norm(c) - 1.0).abs() > TOL || dot.abs() > TOL {
        return Some(format!(
            "ImageOrientationPatient is not two orthogonal unit vectors (lengths {:.3} and {:.3}, cosine {:.3})",
            norm(r),
            norm(c),
            dot
        ));
    }
    None
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn info_of(slices: &[(PathBuf, Header)], ordered_by: &'static str) -> SeriesInfo {
    let first = &slices[0].1;
    let positions: Vec<[f64; 3]> = slices.iter().filter_map(|(_, h)| h.position).collect();
    let gaps: Vec<f64> = positions
        .windows(2)
        .map(|w| ((w[0][0] - w[1][0]).powi(2) + (w[0][1] - w[1][1]).powi(2) + (w[0][2] - w[1][2]).powi(2)).sqrt())
        .collect();
    let slice_spacing_mm = (!gaps.is_empty() && positions.len() == slices.len()).then(|| {
        let mut g = gaps.clone();
        g.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        g[g.len() / 2]
    });
    let mut problems = Vec::new();
    if slices.len() < contract::MIN_SLICES {
        problems.push(format!(
            "{} slices, fewer than the {} selection needs",
            slices.len(),
            contract::MIN_SLICES
        ));
    }
    if slices
        .iter()
        .any(|(_, h)| (h.rows, h.columns) != (first.rows, first.columns))
    {
        problems.push("slices of different image sizes".into());
    }
    if let Some(why) = slices
        .iter()
        .find_map(|(_, h)| h.orientation.as_ref().and_then(orientation_problem))
    {
        problems.push(why);
    }
    match first.orientation {
        None => problems.push("no ImageOrientationPatient: cannot tell that the slices are axial".into()),
        Some(o) => {
            let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            let tilt = if len > 0.0 {
                (n[2].abs() / len).clamp(0.0, 1.0).acos().to_degrees()
            } else {
                90.0
            };
            if tilt > contract::MAX_TILT_DEG {
                problems.push(format!(
                    "not axial (slice normal {tilt:.0}° from the head-foot axis, at most {}° accepted)",
                    contract::MAX_TILT_DEG
                ));
            }
        }
    }
    if slices.iter().any(|(_, h)| {
        h.orientation
            .zip(first.orientation)
            .is_some_and(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3))
    }) {
        problems.push("slices with different orientations".into());
    }
    match first.pixel_spacing {
        None => problems.push("no PixelSpacing".into()),
        Some([r, c]) => {
            let (lo, hi) = contract::PIXEL_SPACING_MM;
            if (r - c).abs() > contract::MAX_ANISOTROPY * r.max(c) {
                problems.push(format!("non-square pixels ({r} x {c} mm)"));
            } else if !(lo..=hi).contains(&r) {
                problems.push(format!("pixel spacing {r:.3} mm outside {lo}..{hi} mm"));
            }
        }
    }
    match slice_spacing_mm {
        Some(s) => {
            let (lo, hi) = contract::SLICE_SPACING_MM;
            if !(lo..=hi).contains(&s) {
                problems.push(format!("slice spacing {s:.2} mm outside {lo}..{hi} mm"));
            }
            if gaps.iter().any(|g| *g < 1e-3) {
                problems.push("two or more slices at the same position (duplicates or mixed acquisitions)".into());
            } else if let Some(why) = position_gap(&gaps, s) {
                problems.push(why);
            }
        }
        None if slices.len() > 1 => {
            problems.push("no ImagePositionPatient on every slice: slice spacing unknown".into())
        }
        None => {}
    }
    if let Some(why) = instance_gap(slices) {
        problems.push(why);
    }
    let body = &first.body_part;
    if !body.is_empty() && !["CHEST", "LUNG", "THORAX", "TORSO"].iter().any(|b| body.contains(b)) {
        problems.push(format!("body part {body}, not chest"));
    }
    if let Some(id) = slices
        .iter()
        .map(|(_, h)| &h.patient_id)
        .find(|p| **p != first.patient_id)
    {
        problems.push(format!(
            "one series, two patients ({:?} and {:?})",
            first.patient_id, id
        ));
    }
    SeriesInfo {
        format: "dicom".into(),
        description: (!first.series_description.is_empty()).then(|| first.series_description.clone()),
        pixel_spacing_mm: first.pixel_spacing,
        slice_spacing_mm,
        slice_thickness_mm: first.thickness,
        ordered_by: ordered_by.into(),
        protocol: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

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
