//! The scan pipeline's two threads (a preparing thread decodes, masks and preprocesses the
//! selected slices while the classifying one runs the network): every way out of the middle
//! of a series ends the scan, never hangs, and the results are those of slices classified in
//! order. Real model, real slices (synthetic TIFF series: what is checked is the plumbing).

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::pipeline::{self, Progress, ScanError};

fn series(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=n {
        // Dark-pixel counts 0..: the paper's rule keeps the upper two thirds of the range.
        common::write_slice(&dir.join(format!("IM{i:05}.tif")), 1100, 1000 * i);
    }
}

fn classifier(threads: usize) -> Classifier {
    Classifier::load(&common::models(), Options { threads }).unwrap()
}

#[test]
fn a_scan_stopped_after_the_first_classified_slices_returns_cancelled_and_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    series(&dir.path().join("SR_1"), 30);
    for threads in [1, 2] {
        let mut c = classifier(threads);
        let mut classified = 0;
        let got = pipeline::scan_folder(dir.path(), &mut c, &mut |p| match p {
            Progress::Classified { done, .. } => {
                classified = done;
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        });
        assert!(matches!(got, Err(ScanError::Cancelled)), "{threads} thread(s): {got:?}");
        assert!(
            classified > 0 && classified <= 2 * threads,
            "stopped at the first batch: {classified}"
        );
    }
}

#[test]
fn a_selected_slice_that_stops_decoding_after_selection_rejects_the_series_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let sr = dir.path().join("SR_1");
    series(&sr, 30);
    let mut c = classifier(2);
    let report = pipeline::scan_folder(dir.path(), &mut c, &mut |p| {
        if let Progress::Selected { .. } = p {
            // Between the two passes: the last slice (selected: the most dark pixels) is
            // replaced by something that is no TIFF.
            std::fs::write(sr.join("IM00030.tif"), b"not a slice any more").unwrap();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(report.verdict.to_string(), "undetermined", "{:?}", report.reason);
    let s = &report.series[0];
    let rejected = s.rejected.as_deref().unwrap_or_default();
    assert!(
        rejected.contains("IM00030.tif") && rejected.contains("changed during the scan"),
        "{rejected}"
    );
    assert!(s.slices.is_empty(), "no partial slice results are kept");
}

#[test]
fn threads_do_not_change_a_single_result() {
    let dir = tempfile::tempdir().unwrap();
    series(&dir.path().join("SR_1"), 36);
    let scan = |threads| {
        let mut c = classifier(threads);
        let r = pipeline::scan_folder(dir.path(), &mut c, &mut |_| ControlFlow::Continue(())).unwrap();
        r.series[0]
            .slices
            .iter()
            .map(|s| (s.file.clone(), s.selected, s.p_covid.map(f32::to_bits)))
            .collect::<Vec<_>>()
    };
    let one = scan(1);
    assert!(one.iter().filter(|s| s.2.is_some()).count() >= 10, "{one:?}");
    assert_eq!(one, scan(2));
}
