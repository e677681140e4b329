//! A scan's result as DICOM (issue 14, step 4), for a PACS or viewer: a Comprehensive SR
//! ([`build`]) and a Secondary Capture of the bedside result screen ([`build_sc`]).
//!
//! Why: the hospital's systems speak DICOM; a result that only exists as JSON on the box is
//! invisible to the radiologist's workstation. The SR holds what the JSON holds that a reader
//! needs — verdict, COVID fraction, selected and COVID slice counts, the rule, the model's
//! name, version and SHA-256, the notice "research use only, not a diagnosis" — and references
//! every source instance it rests on (Current Requested Procedure Evidence), in the source
//! study, as a new series. Its UIDs are derived (`2.25.` + 128 bits of SHA-256) from the source
//! series and the model, so writing the same result twice gives the same SR, never a second one;
//! any change of content gives a new instance UID, and the SR it replaces (the one written
//! before at the same path) is named in its Predecessor Documents Sequence, so a PACS that holds
//! both shows which is current. The patient and study modules are copied from the source images
//! (a PACS must not see the study's patient name or dates blanked by a result in it).
//! Codes are from this project's local scheme `99CTSNTL`, as DICOM allows for private
//! concepts. The document is `UNVERIFIED` and `PARTIAL`: no person has signed it.

use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

use crate::report::ScanReport;

pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const SCHEME: &str = "99CTSNTL";

pub use crate::ingest::dicom::{PatientStudy, SourceRef, Sources};

#[derive(Debug, thiserror::Error)]
pub enum SrError {
    #[error("no DICOM source instances: an SR needs the study it belongs to")]
    NoSources,
    #[error("the source instances belong to {0} studies; one SR covers one study")]
    SeveralStudies(usize),
    #[error("cannot encode the SR: {0}")]
    Encode(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `2.25.<decimal of 128 bits of SHA-256 over the parts>`: a valid, stable UID.
pub fn derived_uid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b))
}

fn code(value: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    c.put(DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)));
    c.put(DataElement::new(
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PrimitiveValue::from(SCHEME),
    ));
    c.put(DataElement::new(
        tags::CODE_MEANING,
        VR::LO,
        PrimitiveValue::from(meaning),
    ));
    c
}

fn seq(tag: dicom_core::Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(value_type: &str, concept: (&str, &str)) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    i.put(DataElement::new(
        tags::RELATIONSHIP_TYPE,
        VR::CS,
        PrimitiveValue::from("CONTAINS"),
    ));
    i.put(DataElement::new(
        tags::VALUE_TYPE,
        VR::CS,
        PrimitiveValue::from(value_type),
    ));
    i.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(concept.0, concept.1)]));
    i
}

fn text_item(concept: (&str, &str), text: &str) -> InMemDicomObject {
    let mut i = item("TEXT", concept);
    i.put(DataElement::new(tags::TEXT_VALUE, VR::UT, PrimitiveValue::from(text)));
    i
}

fn num_item(concept: (&str, &str), value: f64, unit: (&str, &str)) -> InMemDicomObject {
    let mut i = item("NUM", concept);
    let mut m = InMemDicomObject::new_empty();
    // DS: at most 16 characters.
    let mut v = format!("{value:.6}");
    v.truncate(16);
    m.put(DataElement::new(
        tags::NUMERIC_VALUE,
        VR::DS,
        PrimitiveValue::from(v.as_str()),
    ));
    let mut u = InMemDicomObject::new_empty();
    u.put(DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(unit.0)));
    u.put(DataElement::new(
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PrimitiveValue::from("UCUM"),
    ));
    u.put(DataElement::new(
        tags::CODE_MEANING,
        VR::LO,
        PrimitiveValue::from(unit.1),
    ));
    m.put(seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![u]));
    i.put(seq(tags::MEASURED_VALUE_SEQUENCE, vec![m]));
    i
}

/// What every DICOM result of one scan shares: its one source study, the source series, and
/// the result series' UID (derived from them and the model).
struct ResultIdentity<'a> {
    study_uid: &'a str,
    series: Vec<&'a str>,
    key: String,
    series_uid: String,
    /// Every source instance UID, sorted and joined: part of each result instance's UID.
    instances: String,
}

impl<'a> ResultIdentity<'a> {
    fn of(report: &ScanReport, sources: &'a [SourceRef]) -> Result<Self, SrError> {
        let first = sources.first().ok_or(SrError::NoSources)?;
        let mut studies: Vec<&str> = sources.iter().map(|s| s.study_uid.as_str()).collect();
        studies.sort_unstable();
        studies.dedup();
        if studies.len() != 1 {
            return Err(SrError::SeveralStudies(studies.len()));
        }
        let mut series: Vec<&str> = sources.iter().map(|s| s.series_uid.as_str()).collect();
        series.sort_unstable();
        series.dedup();
        let key = series.join(",");
        let series_uid = derived_uid(&["sr-series", &key, &report.model.sha256]);
        let mut instances: Vec<&str> = sources.iter().map(|s| s.sop_instance.as_str()).collect();
        instances.sort_unstable();
        Ok(ResultIdentity {
            study_uid: &first.study_uid,
            series,
            key,
            series_uid,
            instances: instances.join(","),
        })
    }

    /// A result instance's UID: derived from everything the document says (source instances,
    /// model, verdict, reason, counts), so rewriting the same result gives the same UID and any
    /// change of content gives a new one (a PACS never holds two contents under one UID).
    fn instance_uid(&self, kind: &str, report: &ScanReport) -> String {
        derived_uid(&[
            kind,
            &self.key,
            &self.instances,
            &report.model.sha256,
            report.verdict.to_string().as_str(),
            report.reason.as_deref().unwrap_or(""),
            &report.selected_slices.to_string(),
            &report.covid_slices.to_string(),
            &report.covid_fraction.map_or(String::new(), |f| format!("{f:.6}")),
        ])
    }
}

/// The patient, study, series, equipment and instance modules every result object carries.
#[allow(clippy::too_many_arguments)]
fn document(
    sop_class: &str,
    instance: &str,
    modality: &str,
    number: &str,
    report: &ScanReport,
    id: &ResultIdentity<'_>,
    patient: &PatientStudy,
    now: &(String, String),
) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    let s = |o: &mut InMemDicomObject, tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    s(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, instance);
    s(&mut o, tags::MODALITY, VR::CS, modality);
    // The images' own PatientID when they have one (the report's is the folder's name).
    let patient_id = if patient.patient_id.is_empty() {
        &report.patient
    } else {
        &patient.patient_id
    };
    s(&mut o, tags::PATIENT_ID, VR::LO, patient_id);
    s(&mut o, tags::PATIENT_NAME, VR::PN, &patient.patient_name);
    s(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, &patient.birth_date);
    s(&mut o, tags::PATIENT_SEX, VR::CS, &patient.sex);
    s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, id.study_uid);
    s(&mut o, tags::STUDY_DATE, VR::DA, &patient.study_date);
    s(&mut o, tags::STUDY_TIME, VR::TM, &patient.study_time);
    s(&mut o, tags::STUDY_ID, VR::SH, &patient.study_id);
    s(&mut o, tags::ACCESSION_NUMBER, VR::SH, &patient.accession);
    s(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &patient.referring_physician,
    );
    s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &id.series_uid);
    s(&mut o, tags::SERIES_NUMBER, VR::IS, "9901");
    s(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "ctsentinel result - research use only",
    );
    s(&mut o, tags::MANUFACTURER, VR::LO, "ctsentinel");
    s(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    s(&mut o, tags::INSTANCE_NUMBER, VR::IS, number);
    s(&mut o, tags::CONTENT_DATE, VR::DA, &now.0);
    s(&mut o, tags::CONTENT_TIME, VR::TM, &now.1);
    o
}

/// A Part 10 file (explicit VR little endian) of `o`.
fn encode(o: InMemDicomObject, sop_class: &str, instance: &str) -> Result<Vec<u8>, SrError> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_LE)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(instance);
    let file = o.with_meta(meta).map_err(|e| SrError::Encode(e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| SrError::Encode(e.to_string()))?;
    Ok(out)
}

/// The SR of `report`, referencing `sources`; `now` = (YYYYMMDD, HHMMSS), see [`now`].
/// `replaces`: the SR this one supersedes (named as its predecessor when it is another instance
/// of the same study).
pub fn build(
    report: &ScanReport,
    sources: &Sources,
    replaces: Option<&SourceRef>,
    now: &(String, String),
) -> Result<Vec<u8>, SrError> {
    let id = ResultIdentity::of(report, &sources.refs)?;
    let sr_instance = id.instance_uid("sr-instance", report);
    let mut o = document(
        COMPREHENSIVE_SR,
        &sr_instance,
        "SR",
        "1",
        report,
        &id,
        &sources.patient,
        now,
    );
    let s = |o: &mut InMemDicomObject, tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    s(&mut o, tags::COMPLETION_FLAG, VR::CS, "PARTIAL");
    s(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    s(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    s(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    o.put(seq(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("CTS-0001", "COVID-19 CT pattern assessment (research use only)")],
    ));
    let mut content = vec![
        text_item(("CTS-0010", "Notice"), crate::NOTICE),
        text_item(("CTS-0011", "Verdict"), &report.verdict.to_string()),
    ];
    if let Some(f) = report.covid_fraction {
        content.push(num_item(("CTS-0012", "COVID slice fraction"), f, ("1", "no units")));
    }
    if let Some(r) = &report.reason {
        content.push(text_item(("CTS-0013", "Reason"), r));
    }
    content.push(num_item(
        ("CTS-0014", "Selected slices"),
        report.selected_slices as f64,
        ("{slices}", "slices"),
    ));
    content.push(num_item(
        ("CTS-0015", "COVID slices"),
        report.covid_slices as f64,
        ("{slices}", "slices"),
    ));
    content.push(text_item(("CTS-0016", "Rule"), &report.rule));
    content.push(text_item(
        ("CTS-0017", "Model"),
        &format!(
            "{} {} sha256 {}",
            report.model.name, report.model.version, report.model.sha256
        ),
    ));
    o.put(seq(tags::CONTENT_SEQUENCE, content));
    // Current Requested Procedure Evidence: every source instance, by series.
    let mut by_series = Vec::new();
    for uid in &id.series {
        let refs: Vec<InMemDicomObject> = sources
            .refs
            .iter()
            .filter(|r| r.series_uid == *uid)
            .map(|r| {
                let mut i = InMemDicomObject::new_empty();
                s(&mut i, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class);
                s(&mut i, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance);
                i
            })
            .collect();
        let mut si = InMemDicomObject::new_empty();
        s(&mut si, tags::SERIES_INSTANCE_UID, VR::UI, uid);
        si.put(seq(tags::REFERENCED_SOP_SEQUENCE, refs));
        by_series.push(si);
    }
    let mut study = InMemDicomObject::new_empty();
    s(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, id.study_uid);
    study.put(seq(tags::REFERENCED_SERIES_SEQUENCE, by_series));
    o.put(seq(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, vec![study]));
    if let Some(old) = replaces.filter(|r| r.study_uid == id.study_uid && r.sop_instance != sr_instance) {
        let mut i = InMemDicomObject::new_empty();
        s(&mut i, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &old.sop_class);
        s(&mut i, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &old.sop_instance);
        let mut series = InMemDicomObject::new_empty();
        s(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &old.series_uid);
        series.put(seq(tags::REFERENCED_SOP_SEQUENCE, vec![i]));
        let mut study = InMemDicomObject::new_empty();
        s(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, &old.study_uid);
        study.put(seq(tags::REFERENCED_SERIES_SEQUENCE, vec![series]));
        o.put(seq(tags::PREDECESSOR_DOCUMENTS_SEQUENCE, vec![study]));
    }
    encode(o, COMPREHENSIVE_SR, &sr_instance)
}

/// A Secondary Capture of the bedside result screen (`screen`, as rendered for the display) in
/// the same study and SR series: what the radiographer saw, for the PACS. The screen carries
/// the PatientID, verdict and notice as burned-in text (BurnedInAnnotation YES).
pub fn build_sc(
    report: &ScanReport,
    sources: &Sources,
    screen: &super::display::Canvas,
    now: &(String, String),
) -> Result<Vec<u8>, SrError> {
    let id = ResultIdentity::of(report, &sources.refs)?;
    let instance = id.instance_uid("sc-instance", report);
    let mut o = document(
        SECONDARY_CAPTURE,
        &instance,
        "OT",
        "2",
        report,
        &id,
        &sources.patient,
        now,
    );
    let s = |o: &mut InMemDicomObject, tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    s(&mut o, tags::CONVERSION_TYPE, VR::CS, "SYN");
    s(&mut o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    s(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    s(&mut o, tags::IMAGE_COMMENTS, VR::LT, crate::NOTICE);
    s(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    let us = |o: &mut InMemDicomObject, tag, v: u16| o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    let (w, h) = (u16::try_from(screen.width), u16::try_from(screen.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(SrError::Encode("screen too large for DICOM".into()));
    };
    us(&mut o, tags::SAMPLES_PER_PIXEL, 3);
    us(&mut o, tags::PLANAR_CONFIGURATION, 0);
    us(&mut o, tags::ROWS, h);
    us(&mut o, tags::COLUMNS, w);
    us(&mut o, tags::BITS_ALLOCATED, 8);
    us(&mut o, tags::BITS_STORED, 8);
    us(&mut o, tags::HIGH_BIT, 7);
    us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(screen.rgb8()),
    ));
    encode(o, SECONDARY_CAPTURE, &instance)
}

/// [`build`] and write it atomically to `path`; an SR already there (an earlier result of the
/// same series) is named as the one this replaces.
pub fn write(path: &Path, report: &ScanReport, sources: &Sources, now: &(String, String)) -> Result<(), SrError> {
    let replaces = previous_sr(path);
    let bytes = build(report, sources, replaces.as_ref(), now)?;
    crate::fsys::write_atomic(path, &bytes).map_err(|source| SrError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The SR at `path`, if one is there and readable.
fn previous_sr(path: &Path) -> Option<SourceRef> {
    let h = crate::ingest::dicom::read_header(path).ok()?;
    (h.sop_class == COMPREHENSIVE_SR && !h.sop_instance_uid.is_empty()).then(|| SourceRef::of(h))
}

/// The current UTC date and time as DICOM DA and TM (YYYYMMDD, HHMMSS).
pub fn now() -> (String, String) {
    da_tm(crate::clock::unix_secs())
}

/// Unix seconds to (YYYYMMDD, HHMMSS), UTC (days to civil date: H. Hinnant's algorithm).
pub fn da_tm(secs: u64) -> (String, String) {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_dates_and_uids_are_well_formed() {
        assert_eq!(da_tm(0), ("19700101".into(), "000000".into()));
        assert_eq!(da_tm(1_796_169_600 + 3_723), ("20261202".into(), "010203".into()));
        assert_eq!(da_tm(951_782_400), ("20000229".into(), "000000".into()));
        let u = derived_uid(&["a", "b"]);
        assert!(u.starts_with("2.25.") && u.len() <= 64, "{u}");
        assert_eq!(u, derived_uid(&["a", "b"]));
        assert_ne!(u, derived_uid(&["ab", ""]));
    }

    #[test]
    fn a_result_whose_content_changes_gets_a_new_instance_uid_and_a_rewrite_keeps_it() {
        let report: ScanReport = serde_json::from_value(serde_json::json!({
            "patient": "P1", "verdict": "normal", "covid_fraction": 0.0, "selected_slices": 20,
            "covid_slices": 0, "reason": null, "rule": "r", "series": [],
            "model": {"name": "m", "version": "1", "sha256": "00"}, "notice": crate::NOTICE,
            "timing_ms": {"select": 0, "classify": 0, "total": 0}
        }))
        .unwrap();
        let src = |n: u32| SourceRef {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance: format!("1.2.3.4.{n}"),
        };
        let sources: Vec<SourceRef> = (1..=20).map(src).collect();
        let uid = |r: &ScanReport, s: &[SourceRef]| ResultIdentity::of(r, s).unwrap().instance_uid("sr-instance", r);
        let first = uid(&report, &sources);
        assert_eq!(first, uid(&report, &sources), "rewriting the same result keeps its UID");
        let mut counts = report.clone();
        counts.selected_slices = 19;
        assert_ne!(first, uid(&counts, &sources), "changed counts, same verdict: a new UID");
        let mut more = sources.clone();
        more.push(src(21));
        assert_ne!(first, uid(&report, &more), "another set of source instances: a new UID");
    }

    fn element(file: &Path, tag: dicom_core::Tag) -> String {
        let o = dicom_object::open_file(file).unwrap();
        o.element(tag).unwrap().to_str().unwrap().trim().to_string()
    }

    #[test]
    fn an_sr_copies_the_images_patient_module_and_names_the_sr_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.sr.dcm");
        let mut report: ScanReport = serde_json::from_value(serde_json::json!({
            "patient": "folder-name", "verdict": "normal", "covid_fraction": 0.0, "selected_slices": 20,
            "covid_slices": 0, "reason": null, "rule": "r", "series": [],
            "model": {"name": "m", "version": "1", "sha256": "00"}, "notice": crate::NOTICE,
            "timing_ms": {"select": 0, "classify": 0, "total": 0}
        }))
        .unwrap();
        let sources = Sources {
            refs: (1..=20)
                .map(|n| SourceRef {
                    study_uid: "1.2.3".into(),
                    series_uid: "1.2.3.4".into(),
                    sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
                    sop_instance: format!("1.2.3.4.{n}"),
                })
                .collect(),
            patient: PatientStudy {
                patient_id: "MRN-77".into(),
                patient_name: "Doe^Jane".into(),
                birth_date: "19600102".into(),
                sex: "F".into(),
                study_date: "20261201".into(),
                study_time: "101500".into(),
                study_id: "S9".into(),
                accession: "ACC42".into(),
                referring_physician: "Who^Dr".into(),
            },
        };
        let now = da_tm(0);
        write(&path, &report, &sources, &now).unwrap();
        for (tag, want) in [
            (tags::PATIENT_ID, "MRN-77"),
            (tags::PATIENT_NAME, "Doe^Jane"),
            (tags::PATIENT_BIRTH_DATE, "19600102"),
            (tags::PATIENT_SEX, "F"),
            (tags::STUDY_DATE, "20261201"),
            (tags::STUDY_TIME, "101500"),
            (tags::STUDY_ID, "S9"),
            (tags::ACCESSION_NUMBER, "ACC42"),
            (tags::REFERRING_PHYSICIAN_NAME, "Who^Dr"),
        ] {
            assert_eq!(element(&path, tag), want, "{tag}");
        }
        let first = element(&path, tags::SOP_INSTANCE_UID);
        let has_predecessor = |p: &Path| {
            dicom_object::open_file(p)
                .unwrap()
                .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
                .is_ok()
        };
        assert!(!has_predecessor(&path), "the first SR replaces nothing");
        // The same result again: same instance, still no predecessor (it would name itself).
        write(&path, &report, &sources, &now).unwrap();
        assert_eq!(element(&path, tags::SOP_INSTANCE_UID), first);
        assert!(!has_predecessor(&path));
        // Changed content: a new instance that names the first.
        report.verdict = crate::decide::Verdict::Undetermined;
        report.reason = Some("aborted".into());
        write(&path, &report, &sources, &now).unwrap();
        let second = element(&path, tags::SOP_INSTANCE_UID);
        assert_ne!(second, first);
        let o = dicom_object::open_file(&path).unwrap();
        let study = &o
            .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let series = &study
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let inst = &series.element(tags::REFERENCED_SOP_SEQUENCE).unwrap().items().unwrap()[0];
        let text = |o: &InMemDicomObject, t| o.element(t).unwrap().to_str().unwrap().trim().to_string();
        assert_eq!(text(study, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(inst, tags::REFERENCED_SOP_INSTANCE_UID), first);
        assert_eq!(text(inst, tags::REFERENCED_SOP_CLASS_UID), COMPREHENSIVE_SR);
        // Images without a PatientID: the report's patient stands in.
        let bare = Sources {
            patient: PatientStudy::default(),
            ..sources.clone()
        };
        write(&path, &report, &bare, &now).unwrap();
        assert_eq!(element(&path, tags::PATIENT_ID), "folder-name");
    }
}
