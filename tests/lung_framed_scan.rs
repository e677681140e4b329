//! A model card with `[preprocessing] frame = "lung"` (issue 13): the pipeline frames each
//! selected slice on its lung mask (crate::lung) before the model sees it; a selected slice
//! whose mask is implausible is reported with the reason and not classified, and a series left
//! with too few classifiable slices gets no verdict. The card here is the shipped one with the
//! frame added (same int8 model file): it tests the appliance's path, not a model's accuracy.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use ctsentinel::classify::{Classifier, Options};
use ctsentinel::decide::Verdict;
use ctsentinel::pipeline;

fn lung_card(dir: &Path) -> Classifier {
    let shipped = common::shipped();
    let card = std::fs::read_to_string(common::card_path()).unwrap();
    assert!(card.contains("stored_intercept = -1024.0\n"));
    let card = card.replacen(
        "stored_intercept = -1024.0\n",
        "stored_intercept = -1024.0\nframe = \"lung\"\n",
        1,
    );
    std::fs::write(dir.join(&shipped.card), card).unwrap();
    std::os::unix::fs::symlink(common::models().join(&shipped.model), dir.join(&shipped.model)).unwrap();
    Classifier::load(dir, Options { threads: 2 }).unwrap()
}

#[test]
fn lung_framed_card_classifies_plausible_slices_and_names_the_others() {
    let Some(shared) = common::shared_or_skip("lung_framed_card_classifies_plausible_slices_and_names_the_others")
    else {
        return;
    };
    let models = tempfile::tempdir().unwrap();
    let mut c = lung_card(models.path());
    let r = pipeline::scan_folder(&shared.join("ct16/covid/ctmd_P001/SR_1"), &mut c, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let s = &r.series[0];
    let selected: Vec<_> = s.slices.iter().filter(|sl| sl.selected).collect();
    assert_eq!(selected.len(), s.selected);
    for sl in &selected {
        assert!(
            sl.p_covid.is_some() != sl.not_classified.is_some(),
            "{}: exactly one of a probability or a reason",
            sl.file
        );
    }
    let skipped = selected.iter().filter(|sl| sl.not_classified.is_some()).count();
    assert_eq!(s.not_classified, skipped);
    assert_eq!(
        r.selected_slices,
        s.selected - skipped,
        "the verdict rests on the classified slices"
    );
    assert!(
        skipped * 2 < s.selected,
        "open-lung slices of a real patient have plausible masks"
    );
    // The framed input differs from the whole-slice input: the probabilities are not the
    // shipped card's (same model file).
    let mut whole = Classifier::load(&common::models(), Options { threads: 2 }).unwrap();
    let w = pipeline::scan_folder(&shared.join("ct16/covid/ctmd_P001/SR_1"), &mut whole, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let differs = s
        .slices
        .iter()
        .zip(&w.series[0].slices)
        .any(|(a, b)| match (a.p_covid, b.p_covid) {
            (Some(x), Some(y)) => (x - y).abs() > 1e-3,
            _ => false,
        });
    assert!(differs, "frame = \"lung\" must change what the model sees");
}

#[test]
fn series_without_plausible_lungs_gets_no_verdict_under_a_lung_framed_card() {
    let models = tempfile::tempdir().unwrap();
    let mut c = lung_card(models.path());
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("p/SR_1");
    std::fs::create_dir_all(&series).unwrap();
    // Soft tissue everywhere with a dark ROI block of varying size: the selection keeps the
    // darker slices, but the dark block touches no body air and the "lungs" are one square in
    // the middle, which the lung mask calls implausible (one lung / too small).
    for i in 0..12 {
        common::write_slice(&series.join(format!("IM{i:05}.tif")), 1064, 2000 * i);
    }
    let r = pipeline::scan_folder(&series, &mut c, &mut |_| ControlFlow::Continue(())).unwrap();
    let s = &r.series[0];
    assert!(s.selected > 0);
    assert!(
        s.slices
            .iter()
            .filter(|sl| sl.selected)
            .all(|sl| sl.not_classified.is_some() && sl.p_covid.is_none()),
        "{s:?}"
    );
    assert!(
        s.excluded.as_deref().unwrap_or("").contains("plausible lung mask"),
        "{s:?}"
    );
    assert_eq!(r.verdict, Verdict::Undetermined, "never guessed");
}
