//! `ctsentinel scan` and `ctsentinel classify` through the binary: the JSON contracts, the
//! patient rule on real series, and the refusals (partial series, tampered model, bad images).

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn run(args: &[&std::ffi::OsStr]) -> (i32, Value, String) {
    let out = common::ctsentinel()
        .args(args)
        .env("CTSENTINEL_MODELS", common::models())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), v, stderr)
}

fn scan(dir: &Path) -> (i32, Value, String) {
    run(&[
        "scan".as_ref(),
        dir.as_os_str(),
        "--json".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
    ])
}

fn card_sha256() -> String {
    let card: toml::Table = toml::from_str(&std::fs::read_to_string(common::card_path()).unwrap()).unwrap();
    card["model"]["sha256"].as_str().unwrap().to_owned()
}

/// Every invariant of the scan contract that does not depend on what the model says.
fn check_contract(v: &Value) {
    for key in [
        "patient",
        "verdict",
        "covid_fraction",
        "selected_slices",
        "series",
        "model",
        "notice",
        "timing_ms",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    assert_eq!(v["model"]["sha256"], card_sha256());
    assert!(v["model"]["name"].is_string() && v["model"]["version"].is_string());
    let (mut selected, mut covid, mut lung_driven) = (0, 0, 0);
    for s in v["series"].as_array().unwrap() {
        let slices = s["slices"].as_array().unwrap();
        let mut s_sel = 0;
        for sl in slices {
            if sl["selected"].as_bool().unwrap() {
                s_sel += 1;
                let p = sl["p_covid"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&p));
                covid += (p >= 0.5) as u64;
                lung_driven += (p >= 0.5 && sl["evidence"]["peak_in_lungs"] == true) as u64;
            } else {
                assert!(sl["p_covid"].is_null(), "unselected slices are not classified");
            }
        }
        assert_eq!(s["selected"].as_u64().unwrap(), s_sel);
        selected += s_sel;
    }
    assert_eq!(v["selected_slices"].as_u64().unwrap(), selected);
    if selected > 0 {
        let f = v["covid_fraction"].as_f64().unwrap();
        assert!((f - covid as f64 / selected as f64).abs() < 1e-9);
        // The evidence gate: fewer than 90% of the COVID calls with their evidence peak in the
        // lungs makes the verdict undetermined, saying why; otherwise the 10% rule decides.
        if covid > 0 && 10 * lung_driven < 9 * covid {
            assert_eq!(
                v["verdict"], "undetermined",
                "evidence gate ({lung_driven} of {covid}): {v}"
            );
            let why = v["reason"].as_str().unwrap();
            assert!(
                why.contains("outside the lungs")
                    && why.contains(&format!("of {covid} slices called COVID, {lung_driven}")),
                "{why}"
            );
        } else {
            assert_eq!(v["verdict"] == "covid", 10 * covid >= selected, "10% rule: {v}");
        }
    }
}

#[test]
fn scan_of_real_patients_follows_the_contract_and_the_10_percent_rule() {
    let Some(data) = common::shared_or_skip("scan_of_real_patients_follows_the_contract_and_the_10_percent_rule")
    else {
        return;
    };
    // In-sample for the shipped model (see models/ctsentinel-fpn256.md): this guards the chain
    // end to end (selection → preprocessing → tract → rule), not the model's generalisation.
    // The CAP and lung-cancer patients are checked for structure only: the paper's binary
    // COVID/non-COVID rule has no claim on them beyond "non-COVID", which the report tracks.
    // The verdict itself follows from the slices through check_contract (10% rule and evidence
    // gate); an undetermined verdict here may only come from the gate.
    for (dir, selected, series) in [
        ("covid/ctmd_P001", 30, 1),
        ("normal/ctmd_normal001", 24, 1),
        ("cap/ctmd_cap001", 19, 1),
        ("lungcancer/ldx_A0001", 72, 2),
    ] {
        let (code, v, err) = scan(&data.join("ct16").join(dir));
        assert_eq!(code, 0, "{dir}: {err}");
        check_contract(&v);
        assert_eq!(v["selected_slices"], selected, "{dir}: same selection as `select`");
        assert_eq!(v["series"].as_array().unwrap().len(), series, "{dir}");
        if v["verdict"] == "undetermined" {
            assert!(
                v["reason"].as_str().unwrap().contains("outside the lungs"),
                "{dir}: {v}"
            );
        }
        eprintln!("{dir}: {} ({})", v["verdict"], v["reason"]);
    }
}

fn slice(dir: &Path, name: &str, value: u16, dark: usize) -> PathBuf {
    let p = dir.join(name);
    common::write_slice(&p, value, dark);
    p
}

#[test]
fn series_with_an_unreadable_slice_gives_no_verdict_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("patient7/SR_2");
    std::fs::create_dir_all(&series).unwrap();
    for i in 1..=4 {
        slice(&series, &format!("IM{i:05}.tif"), 1024, 1000 * i);
    }
    let bad = slice(&series, "IM00005.tif", 1024, 9000);
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let (code, v, _) = scan(&dir.path().join("patient7"));
    assert_eq!(code, 2);
    assert_eq!(v["verdict"], "undetermined");
    assert_eq!(v["patient"], "patient7");
    assert!(v["reason"].as_str().unwrap().contains("SR_2"));
    assert!(v["series"][0]["rejected"].as_str().unwrap().contains("IM00005.tif"));
    assert_eq!(v["selected_slices"], 0, "nothing of a partial series is used");
}

#[test]
fn series_where_no_slice_is_selected_is_undetermined_not_covid() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&series).unwrap();
    for i in 1..=3 {
        slice(&series, &format!("IM{i}.tif"), 1100, 0); // no air in the ROI anywhere
    }
    let (code, v, _) = scan(&series);
    assert_eq!(code, 0);
    check_contract(&v);
    assert_eq!(v["verdict"], "undetermined");
    assert!(v["covid_fraction"].is_null());
    assert!(v["reason"].as_str().unwrap().contains("selection"));
}

#[test]
fn scan_refuses_a_model_that_does_not_match_its_card() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shipped = common::shipped();
    std::fs::copy(common::card_path(), models.join(&shipped.card)).unwrap();
    let mut bytes = std::fs::read(common::models().join(&shipped.model)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(models.join(&shipped.model), bytes).unwrap();
    let series = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&series).unwrap();
    slice(&series, "IM1.tif", 1024, 5000);
    let (code, v, err) = run(&[
        "scan".as_ref(),
        series.as_os_str(),
        "--json".as_ref(),
        "--model".as_ref(),
        models.as_os_str(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(v.is_null(), "no result from a refused model");
    assert!(err.contains("SHA-256") && err.contains("does not match"), "{err}");
}

#[test]
fn classify_takes_16_bit_tiff_and_8_bit_gray_png_and_refuses_colour() {
    let dir = tempfile::tempdir().unwrap();
    let tif = slice(dir.path(), "a.tif", 1024, 8000);
    let gray = dir.path().join("b.png");
    image::GrayImage::from_fn(256, 256, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]))
        .save(&gray)
        .unwrap();
    let rgb = dir.path().join("c.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([10, 20, 30]))
        .save(&rgb)
        .unwrap();
    let (code, v, _) = run(&[
        "classify".as_ref(),
        tif.as_os_str(),
        gray.as_os_str(),
        rgb.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 2, "one image failed");
    assert_eq!(v["notice"], "research use only, not a diagnosis");
    assert_eq!(v["model"]["sha256"], card_sha256());
    let imgs = v["images"].as_array().unwrap();
    for ok in &imgs[..2] {
        let p = ok["p_covid"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert_eq!(ok["label"], if p >= 0.5 { "covid" } else { "normal" });
    }
    assert!(imgs[2]["p_covid"].is_null());
    assert!(imgs[2]["error"].as_str().unwrap().contains("grayscale"), "{}", imgs[2]);
}

#[test]
fn scan_out_writes_the_same_json_contract_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&series).unwrap();
    for i in 1..=3 {
        slice(&series, &format!("IM{i}.tif"), 1100, 4000 * i);
    }
    let out = dir.path().join("result.json");
    let (code, v, err) = run(&[
        "scan".as_ref(),
        series.as_os_str(),
        "--json".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written, v);
    check_contract(&written);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "only p/ and result.json: {leftovers:?}");
}

#[test]
fn output_to_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&series).unwrap();
    for i in 1..=3 {
        slice(&series, &format!("IM{i}.tif"), 1100, 4000 * i);
    }
    let mut child = common::ctsentinel()
        .args(["select".as_ref(), series.as_os_str(), "--json".as_ref()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written (`| head -0`)
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
