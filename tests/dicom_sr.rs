//! `scan --sr FILE` (issue 14, step 4): the result as a DICOM Comprehensive SR, read back by an
//! independent reader (pydicom) where the test venv is there.

mod common;

use std::process::Command;

#[test]
fn scan_writes_an_sr_that_pydicom_reads_with_verdict_model_notice_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("export");
    std::fs::create_dir_all(&series).unwrap();
    for i in 1..=12 {
        common::dicom_gen::Slice::ct("1.2.840.99.88", -50.0 - 6.0 * f64::from(i), i)
            .write(&series.join(format!("I{i}")));
    }
    let sr = dir.path().join("result.sr.dcm");
    let json = dir.path().join("result.json");
    let out = common::ctsentinel()
        .args(["scan", "--json"])
        .arg(&series)
        .arg("--out")
        .arg(&json)
        .arg("--sr")
        .arg(&sr)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Our own reader first.
    let o = dicom_object::open_file(&sr).unwrap();
    assert_eq!(
        o.meta().media_storage_sop_class_uid(),
        ctsentinel::present::sr::COMPREHENSIVE_SR
    );
    // Then pydicom, which knows nothing of this code.
    let Some(py) = common::reference_python_with("scan_writes_an_sr_that_pydicom_reads", "pydicom") else {
        return;
    };
    let script = r#"
import json, sys, pydicom
d = pydicom.dcmread(sys.argv[1])
items = {i.ConceptNameCodeSequence[0].CodeMeaning: (i.TextValue if i.ValueType == "TEXT" else float(i.MeasuredValueSequence[0].NumericValue)) for i in d.ContentSequence}
refs = [r.ReferencedSOPInstanceUID for s in d.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence for r in s.ReferencedSOPSequence]
print(json.dumps({"sop_class": d.SOPClassUID, "modality": d.Modality, "patient": d.PatientID, "study": d.StudyInstanceUID,
  "verification": d.VerificationFlag, "items": items, "refs": len(refs), "series": d.SeriesInstanceUID}))
"#;
    let r = Command::new(py).arg("-c").arg(script).arg(&sr).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let p: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(p["sop_class"], ctsentinel::present::sr::COMPREHENSIVE_SR);
    assert_eq!(p["modality"], "SR");
    assert_eq!(p["patient"], "PAT-1");
    assert_eq!(p["verification"], "UNVERIFIED");
    assert_eq!(p["refs"], 12);
    assert_eq!(p["items"]["Verdict"], v["verdict"]);
    assert_eq!(p["items"]["Notice"], "research use only, not a diagnosis");
    assert_eq!(
        p["items"]["Selected slices"].as_f64().unwrap() as u64,
        v["selected_slices"].as_u64().unwrap()
    );
    let model = p["items"]["Model"].as_str().unwrap();
    assert!(model.contains(v["model"]["sha256"].as_str().unwrap()), "{model}");
    assert_ne!(p["series"], "1.2.840.99.88", "the SR is a series of its own");
}

#[test]
fn scan_refuses_an_sr_for_tiff_input_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&s).unwrap();
    for i in 0..3 {
        common::write_slice(&s.join(format!("IM{i:05}.tif")), 1100, 100 * i);
    }
    let out = common::ctsentinel()
        .arg("scan")
        .arg(&s)
        .arg("--sr")
        .arg(dir.path().join("x.sr.dcm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no DICOM source instances"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("x.sr.dcm").exists());
}
