//! Selection on the real DICOM exports in ../shared/data/dicom (issue 14), in-process, compared
//! with an independent pydicom implementation of the paper's rule and of the DICOM reading
//! (tests/reference/dicom_select_ref.py: grouping by SeriesInstanceUID, head-to-foot order by
//! position along the slice normal, rescale to HU + 1024, JPEG Lossless via pylibjpeg-libjpeg).
//! Each test is named after what it guards; both need ../shared/data and the repository's venv
//! (scripts/setup-venv.sh), and skip loudly without them unless CI requires them.

mod common;

use std::process::Command;

use ctsentinel::pipeline;
use ctsentinel::report::{SelectReport, SeriesSelection};
use serde_json::Value;

/// What the reference needs: numpy, pydicom, and pylibjpeg with its libjpeg plugin.
const REFERENCE_MODULES: &str = "numpy, pydicom, pylibjpeg, libjpeg";

/// Run the reference and `select_folder` on `../shared/data/<rel>` and require the same series,
/// the same slice order, the same count and decision on every slice, and the same threshold.
fn assert_selection_equals_pydicom_reference(test: &str, rel: &str) {
    let Some(shared) = common::shared_or_skip(test) else {
        return;
    };
    let dir = shared.join(rel);
    assert!(dir.is_dir(), "{test}: {} is missing from ../shared/data", dir.display());
    let Some(py) = common::reference_python_with(test, REFERENCE_MODULES) else {
        return;
    };
    let out = Command::new(py)
        .arg(common::repo().join("tests/reference/dicom_select_ref.py"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{test}: reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{test}: bad reference JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let mut want: Vec<&Value> = reference["series"].as_array().unwrap().iter().collect();
    want.sort_by_key(|s| s["id"].as_str().unwrap().to_owned());

    let report: SelectReport = pipeline::select_folder(&dir).unwrap();
    let mut got: Vec<&SeriesSelection> = report.series.iter().collect();
    got.sort_by(|a, b| a.id.cmp(&b.id));

    let got_ids: Vec<String> = got.iter().map(|s| s.id.clone()).collect();
    let want_ids: Vec<String> = want.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got_ids, want_ids, "{rel}: series (SeriesInstanceUID)");
    assert!(!got.is_empty(), "{rel}: no series");

    for (g, w) in got.iter().zip(&want) {
        let id = &g.id;
        assert!(g.rejected.is_none(), "{rel}: series {id} rejected: {:?}", g.rejected);
        assert!(g.excluded.is_none(), "{rel}: series {id} excluded: {:?}", g.excluded);
        let w_slices = w["slices"].as_array().unwrap();
        let got_files: Vec<&str> = g.slices.iter().map(|s| s.file.as_str()).collect();
        let want_files: Vec<&str> = w_slices.iter().map(|s| s["file"].as_str().unwrap()).collect();
        assert_eq!(got_files, want_files, "{rel}: series {id}: slice order (head to foot)");
        for (gs, ws) in g.slices.iter().zip(w_slices) {
            let want_dark = ws["dark_pixels"].as_u64().unwrap();
            assert_eq!(u64::from(gs.dark_pixels), want_dark, "{rel}: {}: dark pixels", gs.file);
            let want_selected = ws["selected"].as_bool().unwrap();
            assert_eq!(gs.selected, want_selected, "{rel}: {}: selected", gs.file);
        }
        let want_threshold = w["threshold"].as_f64().unwrap();
        let got_threshold = g
            .threshold
            .unwrap_or_else(|| panic!("{rel}: series {id}: no threshold"));
        assert!(
            (got_threshold - want_threshold).abs() < 1e-9,
            "{rel}: series {id}: threshold {got_threshold} vs reference {want_threshold}"
        );
        let want_kept = w_slices.iter().filter(|s| s["selected"].as_bool().unwrap()).count();
        assert_eq!(g.selected, want_kept, "{rel}: series {id}: number of kept slices");
        assert!(want_kept > 0, "{rel}: series {id}: the reference kept nothing");
    }
}

#[test]
fn dicom_selection_equals_pydicom_reference_on_the_thin_export() {
    // 154 JPEG Lossless slices, 2 mm apart, whose file names are in no useful order.
    assert_selection_equals_pydicom_reference(
        "dicom_selection_equals_pydicom_reference_on_the_thin_export",
        "dicom/normal/ctmd_normal001_thin",
    );
}

#[test]
fn dicom_selection_equals_pydicom_reference_on_the_covid_series() {
    // P001's 50 JPEG Lossless slices (the same slices as ct16/covid/ctmd_P001/SR_1).
    assert_selection_equals_pydicom_reference(
        "dicom_selection_equals_pydicom_reference_on_the_covid_series",
        "dicom/covid/ctmd_P001/SR_1",
    );
}
