//! Selection on the real 16-bit CT series in ../shared/data/ct16, through the binary, compared
//! with an independent numpy implementation of the paper's rule (run live when the repo's venv
//! exists, and through the expected lists it produced, tests/expected/selection.json).

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn select_json(dir: &Path) -> (i32, Value) {
    let out = common::ctsentinel()
        .arg("select")
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), v)
}

fn kept(series: &Value) -> Vec<String> {
    series["slices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["selected"].as_bool().unwrap())
        .map(|s| s["file"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn select_matches_independent_reference_on_every_shared_series() {
    let Some(data) = common::shared_or_skip("select_matches_independent_reference_on_every_shared_series") else {
        return;
    };
    let ct16 = data.join("ct16");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/selection.json")).unwrap(),
    )
    .unwrap();
    let expected = expected["series"].as_object().unwrap();
    assert_eq!(expected.len(), 5, "five shared series");

    let live = common::reference_python("select_matches_independent_reference").map(|py| {
        let dirs: Vec<_> = expected.keys().map(|k| ct16.join(k)).collect();
        let out = Command::new(py)
            .arg("tests/reference/select_ref.py")
            .args(&dirs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    });

    // Run per patient folder, as a user would: lung cancer has two series, selected separately.
    let mut seen = 0;
    for patient in [
        "covid/ctmd_P001",
        "normal/ctmd_normal001",
        "cap/ctmd_cap001",
        "lungcancer/ldx_A0001",
    ] {
        let (code, v) = select_json(&ct16.join(patient));
        assert_eq!(code, 0, "{patient}: {v}");
        for s in v["series"].as_array().unwrap() {
            assert!(s["rejected"].is_null());
            let path = Path::new(s["path"].as_str().unwrap());
            let key = format!("{patient}/{}", path.file_name().unwrap().to_str().unwrap());
            let exp = &expected[&key];
            let counts: Vec<u64> = s["slices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["dark_pixels"].as_u64().unwrap())
                .collect();
            let exp_counts: Vec<u64> = exp["dark_pixels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            assert_eq!(counts, exp_counts, "{key}: dark-pixel counts");
            let exp_kept: Vec<String> = exp["selected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(kept(s), exp_kept, "{key}: kept slices");
            assert_eq!(s["selected"].as_u64().unwrap() as usize, exp_kept.len());
            if let Some(live) = &live {
                let rows = live[ct16.join(&key).to_str().unwrap()].as_array().unwrap();
                let live_kept: Vec<String> = rows
                    .iter()
                    .filter(|r| r[2].as_bool().unwrap())
                    .map(|r| r[0].as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(kept(s), live_kept, "{key}: kept slices vs live numpy reference");
            }
            // The method keeps roughly the middle of the chest (data README: 40-60%, wider
            // for the thick 5 mm series): a sanity bound, independent of the reference.
            let frac = exp_kept.len() as f64 / counts.len() as f64;
            assert!((0.3..0.65).contains(&frac), "{key}: kept fraction {frac}");
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn select_json_contract_on_covid_patient() {
    let Some(data) = common::shared_or_skip("select_json_contract_on_covid_patient") else {
        return;
    };
    let (code, v) = select_json(&data.join("ct16/covid/ctmd_P001"));
    assert_eq!(code, 0);
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    let s = &series[0];
    for key in ["path", "threshold", "slices", "selected", "rejected"] {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    assert!(s["threshold"].as_f64().unwrap() > 0.0);
    let first = &s["slices"][0];
    assert_eq!(first["file"], "IM00001.tif");
    assert!(first["dark_pixels"].is_u64() && first["selected"].is_boolean());
    assert_eq!(s["slices"].as_array().unwrap().len(), 50);
}

#[test]
fn series_folder_and_deflate_series_are_accepted() {
    let Some(data) = common::shared_or_skip("series_folder_and_deflate_series_are_accepted") else {
        return;
    };
    // A series folder directly (Deflate + predictor compressed), and its patient is reported.
    let (code, v) = select_json(&data.join("ct16/normal/ctmd_normal001/SR_1"));
    assert_eq!(code, 0);
    assert_eq!(v["series"][0]["patient"], "ctmd_normal001");
    assert_eq!(v["series"][0]["slices"].as_array().unwrap().len(), 52);
}

#[test]
fn human_table_names_threshold_and_selection() {
    let Some(data) = common::shared_or_skip("human_table_names_threshold_and_selection") else {
        return;
    };
    let out = common::ctsentinel()
        .arg("select")
        .arg(data.join("ct16/covid/ctmd_P001"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("30 of 50 slices selected"), "{text}");
    assert!(text.contains("IM00001.tif"));
}
