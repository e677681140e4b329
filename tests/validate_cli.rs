//! `ctsentinel validate` on the shared patients, TIFF and DICOM: its figures follow from its
//! per-patient verdicts, which are those of `scan`.

mod common;

use serde_json::Value;

fn wilson_contains(p: &Value) {
    let (k, n) = (p["k"].as_u64().unwrap(), p["n"].as_u64().unwrap());
    if n == 0 {
        assert!(p["value"].is_null());
        return;
    }
    let v = p["value"].as_f64().unwrap();
    assert!((v - k as f64 / n as f64).abs() < 1e-12, "{p}");
    let (lo, hi) = (p["ci95"][0].as_f64().unwrap(), p["ci95"][1].as_f64().unwrap());
    assert!(0.0 <= lo && lo <= v && v <= hi && hi <= 1.0, "{p}");
    assert!(hi - lo > 0.0, "never a zero-width interval: {p}");
}

#[test]
fn validate_on_the_shared_patients_reports_figures_that_follow_from_its_verdicts() {
    let Some(shared) =
        common::shared_or_skip("validate_on_the_shared_patients_reports_figures_that_follow_from_its_verdicts")
    else {
        return;
    };
    // Paths relative to the CSV (links beside it to the shared folders).
    let dir = tempfile::tempdir().unwrap();
    let link =
        |name: &str, target: &str| std::os::unix::fs::symlink(shared.join(target), dir.path().join(name)).unwrap();
    link("p001_tiff", "ct16/covid/ctmd_P001");
    link("normal_tiff", "ct16/normal/ctmd_normal001");
    link("cap_tiff", "ct16/cap/ctmd_cap001");
    link("p001_dicom", "dicom/covid/ctmd_P001");
    link("normal_thin_dicom", "dicom/normal/ctmd_normal001_thin");
    // The radiologist's slice labels of the COVID patient (manifest.json), as a site writes them.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(shared.join("ct16/manifest.json")).unwrap()).unwrap();
    let mut slices = String::from("file,infected\n");
    for (file, infected) in manifest["slice_infection"]["ctmd_P001"].as_object().unwrap() {
        slices.push_str(&format!("{file},{infected}\n"));
    }
    std::fs::write(dir.path().join("p001_slices.csv"), slices).unwrap();
    let csv = dir.path().join("labels.csv");
    std::fs::write(
        &csv,
        "path,label,slices\np001_tiff,covid,p001_slices.csv\nnormal_tiff,normal,\ncap_tiff,other,\np001_dicom,covid,\nnormal_thin_dicom,normal,\n",
    )
    .unwrap();
    let png = dir.path().join("validation.png");
    let records = dir.path().join("state/validation");
    let out = common::ctsentinel()
        .args(["validate", "--json", "--labels"])
        .arg(&csv)
        .arg("--report")
        .arg(&png)
        .arg("--record")
        .arg(&records)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The record the service's site gate reads is the same report, under the model's SHA-256.
    let kept = records.join(format!("{}.json", v["model"]["sha256"].as_str().unwrap()));
    let k: Value = serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    assert_eq!(k, v);
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    assert_eq!(v["model"]["sha256"].as_str().unwrap().len(), 64);
    let patients = v["patients"].as_array().unwrap();
    assert_eq!(patients.len(), 5);
    // Each patient's verdict is the one `scan` gives.
    for p in patients {
        let scan = common::ctsentinel()
            .args(["scan", "--json"])
            .arg(dir.path().join(p["path"].as_str().unwrap()))
            .output()
            .unwrap();
        let s: Value = serde_json::from_slice(&scan.stdout).unwrap();
        assert_eq!(p["verdict"], s["verdict"], "{p}");
        assert_eq!(p["selected_slices"], s["selected_slices"], "{p}");
    }
    // The figures from the verdicts: undetermined is a miss, other is in neither.
    let count = |label: &str| {
        let of: Vec<&Value> = patients.iter().filter(|p| p["label"] == label).collect();
        let right = of
            .iter()
            .filter(|p| p["verdict"] == if label == "covid" { "covid" } else { "normal" })
            .count();
        (right as u64, of.len() as u64)
    };
    let (k, n) = count("covid");
    assert_eq!(
        (
            v["sensitivity"]["k"].as_u64().unwrap(),
            v["sensitivity"]["n"].as_u64().unwrap()
        ),
        (k, n)
    );
    let (k, n) = count("normal");
    assert_eq!(
        (
            v["specificity"]["k"].as_u64().unwrap(),
            v["specificity"]["n"].as_u64().unwrap()
        ),
        (k, n)
    );
    let undetermined = patients
        .iter()
        .filter(|p| p["verdict"] != "covid" && p["verdict"] != "normal")
        .count();
    assert_eq!(v["undetermined"]["k"].as_u64().unwrap() as usize, undetermined);
    let (called, lung): (u64, u64) = patients.iter().fold((0, 0), |a, p| {
        (
            a.0 + p["covid_slices"].as_u64().unwrap(),
            a.1 + p["lung_driven_covid_slices"].as_u64().unwrap(),
        )
    });
    assert_eq!(v["evidence_in_lungs"]["n"].as_u64().unwrap(), called);
    assert_eq!(v["evidence_in_lungs"]["k"].as_u64().unwrap(), lung);
    for key in ["sensitivity", "specificity", "undetermined", "evidence_in_lungs"] {
        wilson_contains(&v[key]);
    }
    // Slice-level agreement from the labelled patient's classified slices, and nothing else.
    let calls = patients[0]["slice_calls"].as_array().unwrap();
    assert!(
        !calls.is_empty(),
        "P001's selected slices carry the radiologist's labels"
    );
    assert!(patients[1..].iter().all(|p| p.get("slice_calls").is_none()));
    let tally = |infected: bool, called: bool| {
        calls
            .iter()
            .filter(|c| c["infected"] == infected && c["called"] == called)
            .count() as u64
    };
    let s = &v["slices"];
    assert_eq!(s["sensitivity"]["k"].as_u64().unwrap(), tally(true, true));
    assert_eq!(
        s["sensitivity"]["n"].as_u64().unwrap(),
        tally(true, true) + tally(true, false)
    );
    assert_eq!(s["specificity"]["k"].as_u64().unwrap(), tally(false, false));
    assert_eq!(
        s["specificity"]["n"].as_u64().unwrap(),
        tally(false, false) + tally(false, true)
    );
    let binned: u64 = s["reliability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["n"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, calls.len() as u64);
    wilson_contains(&s["sensitivity"]);
    // The one-page report a clinician reads.
    let img = image::open(&png).unwrap();
    assert!(
        img.width() >= 640 && img.height() >= 480,
        "{}x{}",
        img.width(),
        img.height()
    );
}

#[test]
fn validate_refuses_a_labels_file_with_an_unknown_label_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("labels.csv");
    std::fs::write(&csv, "path,label\np1,covid\np2,maybe\n").unwrap();
    let out = common::ctsentinel()
        .args(["validate", "--labels"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("labels.csv:3") && err.contains("maybe"), "{err}");
}
