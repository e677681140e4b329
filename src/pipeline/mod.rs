//! Drives the pipeline over one folder: ingest → select → classify → decide. Shared by the
//! CLI and the service so both run exactly the same steps.
//!
//! Memory stays bounded: each decoding thread holds one slice at a time. Selection needs every
//! slice's count before it can keep any, so a scan walks each series twice: once to count (only
//! counts are kept; `selection`, on up to four threads), once to classify the selected slices
//! (decoded, masked and preprocessed on a preparing thread while the network runs, at most a
//! few planes ahead). Decoding is a few milliseconds against a model run of tens, so a thin
//! series of 500 slices never sits decoded in memory. Rooms: `selection`, `placement` (the
//! evidence map on the slice), this file (the scan and the classification of a series).

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::classify::preprocess::Frame;
use crate::classify::Classifier;
use crate::decide::{self, Verdict};
use crate::ingest::{self, FileProblem, IngestError, Series, SliceDecoder};
use crate::lung::{LungFrame, LungInput, LungMasker};
use crate::report::{ClassifyReport, ImageClass, ScanReport, SeriesScan, SeriesSelection, SliceScan, Timing};

mod placement;
mod selection;

use placement::Placement;
pub use selection::{select_folder, select_series};

/// What a scan reports while it runs (for the display and the log); never blocks the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A series' slices were counted and selected.
    Selected {
        series: &'a str,
        selected: usize,
        slices: usize,
    },
    /// One more selected slice was classified.
    Classified { series: &'a str, done: usize, of: usize },
}

/// Why a scan gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder is not a patient or series folder at all.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The progress callback asked to stop (the service is shutting down).
    #[error("stopped before the scan finished")]
    Cancelled,
}

/// Scan a patient or series folder: select, classify the selected slices, decide.
///
/// A series that cannot be read completely is reported as rejected and makes the patient
/// verdict `undetermined` (a verdict on part of a patient's scan is not given as if it were
/// the whole). The error is only for a `dir` that is not a patient or series folder, or a
/// stop asked for by `progress`.
pub fn scan_folder(
    dir: &Path,
    classifier: &mut Classifier,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let found = ingest::find(dir)?;
    scan_discovery(&found, &ingest::name_of(dir), classifier, progress)
}

/// [`scan_folder`] over a folder already discovered (the caller keeps the series' files,
/// e.g. to reference them in a DICOM SR).
pub fn scan_discovery(
    found: &ingest::Discovery,
    patient: &str,
    classifier: &mut Classifier,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let selected = select_all(&found.series, progress)?;
    classify_discovery(found, selected, patient, classifier, progress)
}

/// [`classify_selected`] over a folder already discovered: its ignored files go in the report.
pub fn classify_discovery(
    found: &ingest::Discovery,
    selected: Selected,
    patient: &str,
    classifier: &mut Classifier,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let mut report = classify_selected(&found.series, selected, patient, classifier, progress)?;
    report.ignored = found.ignored.clone();
    Ok(report)
}

/// [`scan_folder`] over series already found (the service builds them from its snapshot).
/// `patient` names the patient when there is no series to take it from.
pub fn scan_series(
    series: &[Series],
    patient: &str,
    classifier: &mut Classifier,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let selected = select_all(series, progress)?;
    classify_selected(series, selected, patient, classifier, progress)
}

/// The first half of a scan, [`select_all`]'s result: every series' selection, before any
/// model is needed.
pub struct Selected {
    selections: Vec<SeriesSelection>,
    decoder: SliceDecoder,
    timing: Timing,
    started: Instant,
}

/// The first half of [`scan_series`]: the paper's selection over every series. It needs no
/// model, so a caller that has yet to load one can load it meanwhile (`ctsentinel scan` does:
/// the model's load and the selection then share the machine instead of following each other).
pub fn select_all(
    series: &[Series],
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<Selected, ScanError> {
    let started = Instant::now();
    let mut decoder = SliceDecoder::new();
    let mut timing = Timing::default();
    let patients = patients_of(series).len();
    let mut selections = Vec::with_capacity(series.len());
    for s in series {
        let t = Instant::now();
        let mut sel = select_series(s, &mut decoder);
        if patients > 1 && sel.excluded.is_none() {
            // Never pool two patients' slices: no series of such a folder is classified.
            sel.excluded = Some(format!("one of {patients} patients' series in one folder"));
        }
        timing.select += t.elapsed().as_millis() as u64;
        let step = progress(Progress::Selected {
            series: &s.id,
            selected: sel.selected,
            slices: sel.slices.len(),
        });
        if step.is_break() {
            return Err(ScanError::Cancelled);
        }
        selections.push(sel);
    }
    Ok(Selected {
        selections,
        decoder,
        timing,
        started,
    })
}

fn patients_of(series: &[Series]) -> Vec<&str> {
    let mut patients: Vec<&str> = series.iter().map(|s| s.patient.as_str()).collect();
    patients.sort_unstable();
    patients.dedup();
    patients
}

/// The second half of [`scan_series`]: classify what [`select_all`] selected in `series` (the
/// same series, in the same order) and decide.
pub fn classify_selected(
    series: &[Series],
    selected: Selected,
    patient: &str,
    classifier: &mut Classifier,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, ScanError> {
    let Selected {
        selections,
        mut decoder,
        mut timing,
        started: start,
    } = selected;
    debug_assert_eq!(
        selections.len(),
        series.len(),
        "classify_selected: the series select_all was given"
    );
    let fraction = classifier.card().decision.patient_covid_fraction;
    let mut stages = Stages::default();
    let mut out = Vec::with_capacity(series.len());
    let patients = patients_of(series);
    for (s, sel) in series.iter().zip(selections) {
        let t = Instant::now();
        out.push(classify_series(
            s,
            sel,
            &mut decoder,
            classifier,
            fraction,
            &mut stages,
            progress,
        )?);
        timing.classify += t.elapsed().as_millis() as u64;
    }
    timing.stages = Some(stages.timing());
    let patient = series
        .first()
        .map(|s| s.patient.clone())
        .unwrap_or_else(|| patient.to_string());
    let used = |s: &&SeriesScan| s.rejected.is_none() && s.excluded.is_none();
    let selected: usize = out.iter().filter(used).map(|s| s.selected - s.not_classified).sum();
    let covid: usize = out.iter().filter(used).map(|s| s.covid).sum();
    let rejected: Vec<String> = out
        .iter()
        .filter(|s| s.rejected.is_some())
        .map(|s| s.id.clone())
        .collect();
    let decision = if patients.len() > 1 {
        decide::undetermined(format!(
            "the folder holds series of {} patients; a verdict pools one patient's slices: scan one patient at a time",
            patients.len()
        ))
    } else if !rejected.is_empty() {
        decide::undetermined(format!(
            "series {} could not be read completely; no verdict on a partial scan",
            rejected.join(", ")
        ))
    } else if !out.is_empty() && out.iter().all(|s| s.excluded.is_some()) {
        let why: Vec<String> = out
            .iter()
            .map(|s| format!("{}: {}", s.id, s.excluded.as_deref().unwrap_or_default()))
            .collect();
        decide::undetermined(format!(
            "no series inside the model's acquisition contract ({})",
            why.join("; ")
        ))
    } else {
        let (called, lung_driven) = out
            .iter()
            .filter(used)
            .map(|s| covid_calls(s, classifier))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        decide::evidence_gate(decide::decide(selected, covid, fraction), called, lung_driven)
    };
    timing.total = start.elapsed().as_millis() as u64;
    Ok(ScanReport {
        patient,
        verdict: decision.verdict,
        covid_fraction: decision.covid_fraction,
        selected_slices: selected,
        covid_slices: covid,
        reason: decision.reason,
        rule: rule_text(classifier),
        series: out,
        ignored: Vec::new(),
        model: classifier.identity(),
        notice: crate::NOTICE.to_string(),
        timing_ms: timing,
    })
}

/// One selected slice as the preparing thread hands it to the classifying one.
enum Prepared {
    Plane {
        index: usize,
        plane: Vec<f32>,
        place: Placement,
    },
    /// Its lung mask is not plausible (lung-framed models): reported, not classified.
    NotClassified { index: usize, reason: String },
    /// It no longer decodes: the file changed during the scan; the series is rejected.
    Changed { file: String, reason: String },
}

/// Time spent per stage of classifying selected slices (each stage's own work, summed; the
/// first three run on the preparing thread, beside the network).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    pub decode: Duration,
    pub lung_mask: Duration,
    pub preprocess: Duration,
    pub network: Duration,
    pub evidence: Duration,
}

impl Stages {
    /// Add `o`'s time to each stage (the preparing thread's has no network or evidence time).
    fn add(&mut self, o: &Stages) {
        self.decode += o.decode;
        self.lung_mask += o.lung_mask;
        self.preprocess += o.preprocess;
        self.network += o.network;
        self.evidence += o.evidence;
    }

    /// As the report states it: milliseconds, one decimal.
    pub fn timing(&self) -> crate::report::StageTiming {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        crate::report::StageTiming {
            decode: ms(self.decode),
            lung_mask: ms(self.lung_mask),
            preprocess: ms(self.preprocess),
            network: ms(self.network),
            evidence: ms(self.evidence),
        }
    }
}

/// Replace every verdict of `report` (the patient's and each series') by `undetermined` with
/// `reason`, keeping the counts and slice results: what the site gate does before a model is
/// validated at the site (the work is kept; no verdict is shown).
pub fn withhold_verdicts(report: &mut ScanReport, reason: &str) {
    let d = decide::undetermined(reason.to_string());
    report.verdict = d.verdict;
    report.covid_fraction = d.covid_fraction;
    report.reason = d.reason;
    for s in &mut report.series {
        s.verdict = Verdict::Undetermined;
        s.covid_fraction = None;
    }
}

/// Slices of `s` called COVID, and how many of them are lung-driven (their evidence peak
/// inside the lung mask). A slice without an evidence map or lung mask cannot show that it is.
/// What the evidence gate counts, and what site validation reports.
pub fn covid_calls(s: &SeriesScan, classifier: &Classifier) -> (usize, usize) {
    covid_calls_at(s, classifier.card().output.threshold)
}

/// [`covid_calls`] for a model known only by its threshold (a result read back from disk).
pub fn covid_calls_at(s: &SeriesScan, threshold: f32) -> (usize, usize) {
    s.slices
        .iter()
        .filter(|x| x.not_classified.is_none() && x.p_covid.is_some_and(|p| p >= threshold))
        .fold((0, 0), |(n, l), x| {
            let lung = x.evidence.as_ref().and_then(|e| e.peak_in_lungs) == Some(true);
            (n + 1, l + usize::from(lung))
        })
}

fn rule_text(c: &Classifier) -> String {
    let card = c.card();
    format!(
        "COVID iff at least {:.0}% of the selected slices (all series together) have P(COVID) >= {}",
        card.decision.patient_covid_fraction * 100.0,
        card.output.threshold
    )
}

/// Classify the selected slices of one selected series (second, streaming pass).
fn classify_series(
    s: &Series,
    sel: SeriesSelection,
    decoder: &mut SliceDecoder,
    classifier: &mut Classifier,
    fraction: f64,
    stages: &mut Stages,
    progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
) -> Result<SeriesScan, ScanError> {
    let mut out = SeriesScan {
        path: sel.path,
        id: s.id.clone(),
        info: sel.info,
        excluded: sel.excluded,
        not_classified: 0,
        threshold: sel.threshold,
        selected: sel.selected,
        covid: 0,
        verdict: Verdict::Undetermined,
        covid_fraction: None,
        rejected: sel.rejected,
        unreadable: sel.unreadable,
        slices: Vec::with_capacity(sel.slices.len()),
    };
    if let Some(reason) = out.rejected.as_ref().or(out.excluded.as_ref()) {
        out.selected = 0;
        let d = decide::undetermined(reason.clone());
        out.covid_fraction = d.covid_fraction;
        return Ok(out);
    }
    // Selected slices are decoded, masked and preprocessed in order on a second thread while
    // this one runs the network on the ones before (`Prepared`, through a channel of `batch`
    // slots), and classified a few at a time across the classifier's workers: at most about
    // 2 x `batch` input planes (256 KiB each) are held.
    let batch = 2 * classifier.parallel_slices();
    // A lung-framed model sees only plausible lungs (crate::lung); the other selected slices
    // are reported with the reason and not classified.
    let pre = classifier.card().preprocessing.clone();
    let framed = pre.frame() == Frame::Lung;
    let size = classifier.input_size();
    let spacing = s.info.as_ref().and_then(|i| i.pixel_spacing_mm).map(|p| p[0]);
    // With an evidence output, each slice's lung mask is kept beside its plane, to place the
    // map on the slice (`SliceEvidence`).
    let evidence = classifier.card().output.evidence.is_some();
    let mut jobs = Vec::with_capacity(out.selected);
    for (path, slice) in s.files.iter().zip(sel.slices) {
        if slice.selected {
            jobs.push((out.slices.len(), path));
        }
        out.slices.push(SliceScan {
            file: slice.file,
            dark_pixels: slice.dark_pixels,
            selected: slice.selected,
            p_covid: None,
            not_classified: None,
            evidence: None,
        });
    }
    let mut maker = classifier.plane_maker();
    let mut not_classified = 0usize;
    let mut done = 0;
    let of = out.selected;
    let mut cancelled = false;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Prepared>(batch);
    let prepare = move || {
        let (mut masker, mut lungs) = (LungMasker::new(), LungFrame::default());
        let mut spent = Stages::default();
        for (index, path) in jobs {
            let t = Instant::now();
            let decoded = decoder.decode(path);
            spent.decode += t.elapsed();
            let item = match decoded {
                Ok(px) if framed => {
                    let input = LungInput::new(px.pixels, px.width, px.height).with_spacing(spacing);
                    let t = Instant::now();
                    let mask = masker.compute(&input, &mut lungs);
                    spent.lung_mask += t.elapsed();
                    let t = Instant::now();
                    let mut plane = Vec::new();
                    let made = match mask {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => match lungs.plausible {
                            Ok(()) => masker
                                .framed_input(&input, &lungs, &pre, size, &mut plane)
                                .map_err(|e| e.to_string()),
                            Err(why) => Err(why.to_string()),
                        },
                    };
                    spent.preprocess += t.elapsed();
                    match made {
                        Ok(()) => Prepared::Plane {
                            index,
                            plane,
                            place: Placement::framed(&lungs, evidence),
                        },
                        Err(e) => Prepared::NotClassified {
                            index,
                            reason: format!("lung mask: {e}"),
                        },
                    }
                }
                Ok(px) => {
                    let mut place = Placement::whole(px.width, px.height);
                    if evidence {
                        let input = LungInput::new(px.pixels, px.width, px.height).with_spacing(spacing);
                        let t = Instant::now();
                        if masker.compute(&input, &mut lungs).is_ok() {
                            place.mask = Some(lungs.mask.clone());
                        }
                        spent.lung_mask += t.elapsed();
                    }
                    let t = Instant::now();
                    let plane = maker.plane(px.pixels, px.width, px.height);
                    spent.preprocess += t.elapsed();
                    Prepared::Plane { index, plane, place }
                }
                // Decoded in the first pass, not now: the file changed under us.
                Err(e) => Prepared::Changed {
                    file: s.label(path),
                    reason: e.reason(),
                },
            };
            let last = matches!(item, Prepared::Changed { .. });
            // A closed channel: the classifying side stopped (cancelled, or the model failed).
            if tx.send(item).is_err() || last {
                break;
            }
        }
        spent
    };
    let mut pending: Vec<(usize, Vec<f32>, Placement)> = Vec::with_capacity(batch);
    // Continue(()): go on; Break(true): stop asked for; Break(false): the model failed.
    let mut flush = |pending: &mut Vec<(usize, Vec<f32>, Placement)>,
                     out: &mut SeriesScan,
                     spent: &mut Stages,
                     classifier: &Classifier| {
        let mut idx = Vec::with_capacity(pending.len());
        let mut planes = Vec::with_capacity(pending.len());
        let mut places = Vec::with_capacity(pending.len());
        for (i, plane, place) in pending.drain(..) {
            idx.push(i);
            planes.push(plane);
            places.push(place);
        }
        let t = Instant::now();
        let scored = classifier.score_planes(planes);
        spent.network += t.elapsed();
        match scored {
            Ok(scores) => {
                let t = Instant::now();
                for ((i, score), place) in idx.into_iter().zip(scores).zip(places) {
                    out.slices[i].p_covid = Some(score.p_covid);
                    out.slices[i].evidence = score.evidence.as_ref().map(|e| place.evidence(e));
                    out.covid += usize::from(classifier.is_covid(score.p_covid));
                    done += 1;
                }
                spent.evidence += t.elapsed();
                match progress(Progress::Classified {
                    series: &s.id,
                    done,
                    of,
                }) {
                    ControlFlow::Continue(()) => ControlFlow::Continue(()),
                    ControlFlow::Break(()) => ControlFlow::Break(true),
                }
            }
            Err(e) => {
                out.rejected = Some(format!("{}: {e}", s.path.display()));
                ControlFlow::Break(false)
            }
        }
    };
    let mut spent = Stages::default();
    let prepared = std::thread::scope(|scope| {
        let preparing = scope.spawn(prepare);
        for item in rx.iter() {
            match item {
                Prepared::Plane { index, plane, place } => pending.push((index, plane, place)),
                Prepared::NotClassified { index, reason } => {
                    out.slices[index].not_classified = Some(reason);
                    not_classified += 1;
                }
                Prepared::Changed { file, reason } => {
                    out.rejected = Some(format!("{file}: {reason} (the file changed during the scan)"));
                    out.unreadable.push(FileProblem {
                        file,
                        reason: format!("{reason} (the file changed during the scan)"),
                    });
                    break;
                }
            }
            if pending.len() == batch {
                if let ControlFlow::Break(stop) = flush(&mut pending, &mut out, &mut spent, classifier) {
                    cancelled = stop;
                    break;
                }
            }
        }
        // Closing the channel ends the preparing thread at its next slice.
        drop(rx);
        preparing.join()
    });
    match prepared {
        Ok(p) => spent.add(&p),
        // A panic while preparing (a decoder bug) is the service's to count: passed on as is.
        Err(panic) => std::panic::resume_unwind(panic),
    }
    if out.rejected.is_none() && !pending.is_empty() && !cancelled {
        if let ControlFlow::Break(stop) = flush(&mut pending, &mut out, &mut spent, classifier) {
            cancelled = stop;
        }
    }
    stages.add(&spent);
    if cancelled {
        return Err(ScanError::Cancelled);
    }
    if out.rejected.is_some() {
        out.slices.clear();
        out.selected = 0;
        out.covid = 0;
        return Ok(out);
    }
    let classified = out.selected - not_classified;
    if framed && (classified == 0 || 2 * classified < out.selected) {
        // Too few slices the model can see: no verdict is guessed from them.
        let reason = format!(
            "only {classified} of {} selected slices have a plausible lung mask; no verdict from so few",
            out.selected
        );
        out.excluded = Some(reason.clone());
        out.covid_fraction = decide::undetermined(reason).covid_fraction;
        return Ok(out);
    }
    let (called, lung_driven) = covid_calls(&out, classifier);
    let d = decide::evidence_gate(decide::decide(classified, out.covid, fraction), called, lung_driven);
    out.verdict = d.verdict;
    out.covid_fraction = d.covid_fraction;
    out.not_classified = not_classified;
    Ok(out)
}

/// Classify single images with no selection: 16-bit TIFF slices (preprocessed per the card)
/// and 8-bit grayscale PNG/JPEG (taken as already in the card's 8-bit window). A file that
/// cannot be read gets its error in the report; the others are still classified.
pub fn classify_images(paths: &[std::path::PathBuf], classifier: &mut Classifier) -> ClassifyReport {
    let mut decoder = SliceDecoder::new();
    let images = paths
        .iter()
        .map(|path| {
            let file = path.display().to_string();
            match classify_image(path, &mut decoder, classifier) {
                Ok(p) => ImageClass {
                    file,
                    p_covid: Some(p),
                    label: Some(if classifier.is_covid(p) { "covid" } else { "normal" }.to_string()),
                    error: None,
                },
                Err(e) => {
                    log::error!("{e}");
                    ImageClass {
                        file,
                        p_covid: None,
                        label: None,
                        error: Some(e),
                    }
                }
            }
        })
        .collect();
    ClassifyReport {
        images,
        model: classifier.identity(),
        notice: crate::NOTICE.to_string(),
    }
}

fn classify_image(path: &Path, decoder: &mut SliceDecoder, classifier: &mut Classifier) -> Result<f32, String> {
    if ingest::is_tiff_file(path) || ingest::dicom::is_dicom_file(path) {
        let s = decoder.decode(path).map_err(|e| e.to_string())?;
        classifier
            .p_covid_stored(s.pixels, s.width, s.height)
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        let g = ingest::decode_gray8(path).map_err(|e| e.to_string())?;
        let plane = classifier.plane_from_8bit(&g.pixels, g.width, g.height);
        classifier
            .p_covid_plane(plane)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The report of a scan that was not run, with its reason: verdict `undetermined`, no series.
/// The service writes it for a series it sets aside, so that every snapshot has a result.
pub fn undetermined_report(patient: &str, reason: String, classifier: &Classifier) -> ScanReport {
    let d = decide::undetermined(reason);
    ScanReport {
        patient: patient.to_string(),
        verdict: d.verdict,
        covid_fraction: d.covid_fraction,
        selected_slices: 0,
        covid_slices: 0,
        reason: d.reason,
        rule: rule_text(classifier),
        series: Vec::new(),
        ignored: Vec::new(),
        model: classifier.identity(),
        notice: crate::NOTICE.to_string(),
        timing_ms: Timing::default(),
    }
}

/// The file of slice `k` of `report.series[si]`, among the `series` that `report` was scanned
/// from (its series are in their order; the slice is found by the label it carries, so a
/// report from other series gives None rather than another slice).
pub fn slice_path<'a>(series: &'a [Series], report: &ScanReport, si: usize, k: usize) -> Option<&'a Path> {
    let s = series.get(si)?;
    let r = report.series.get(si)?;
    if r.path != s.path.display().to_string() {
        return None;
    }
    let label = &r.slices.get(k)?.file;
    s.files.iter().find(|f| &s.label(f) == label).map(|p| p.as_path())
}

#[cfg(test)]
mod tests;
