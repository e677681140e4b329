//! Site validation: run the appliance's own pipeline on a clinic's labelled patients and say
//! how often it is right, with honest uncertainty.
//!
//! Why: radiology AI governance asks a site to check a model on its own patients before
//! trusting it; a model that is right on its developers' data can be wrong on another
//! scanner's. `ctsentinel validate --labels FILE.csv` reads a CSV (`path,label`; paths relative
//! to the CSV, patient folders of TIFF or DICOM; labels `covid`, `normal`, `other`), scans each
//! folder exactly as `scan` and the service do (selection, classification, the 10% rule, the
//! evidence gate), and reports per patient and overall:
//! - **sensitivity** (COVID patients called `covid`) and **specificity** (normal patients
//!   called `normal`), each with its 95% Wilson interval; an `undetermined` verdict counts as a
//!   miss for both; `other` patients are listed and excluded from both;
//! - the **undetermined rate** over all patients, with its reason per patient;
//! - the **evidence-in-lungs share**: of all slices called COVID, the share whose evidence peak
//!   lies inside the lungs (what the evidence gate checks per patient).
//!
//! Every figure follows from the per-patient verdicts in the same report (tested).
//!
//! **The site gate.** `validate --record DIR` keeps the report as `DIR/<model SHA-256>.json`
//! (the service's `<state>/validation`). With `[validation] require = true` the service gives no
//! verdict ("not validated at this site") until a record for the *running* model exists whose
//! lower 95% bounds of sensitivity and specificity meet the configured floors ([`site_check`]):
//! a model is trusted on a site's own patients, with its uncertainty, or not at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::classify::{Classifier, ModelIdentity};
use crate::decide::Verdict;
use crate::report::ScanReport;

/// The reference label of a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Covid,
    Normal,
    Other,
}

/// One row of the labels CSV, its path resolved against the CSV's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The path as written in the CSV.
    pub written: String,
    pub path: PathBuf,
    pub label: Label,
    /// Per-slice reference labels (the optional third column: a `file,infected` CSV), each
    /// `(file, infected)`; `file` as `scan` names the slice, or `<series>/<file>`.
    pub slices: Option<Vec<(String, bool)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Csv { path: PathBuf, line: usize, reason: String },
}

/// The lines of a CSV file that carry something (trimmed; blank lines and `#` comments left out)
/// with their line numbers, and the error maker that names the file and the line.
#[allow(clippy::type_complexity)]
fn csv_lines(
    path: &Path,
) -> Result<(Vec<(usize, String)>, impl Fn(usize, String) -> ValidateError + '_), ValidateError> {
    let text = std::fs::read_to_string(path).map_err(|source| ValidateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| (n, l.to_string()))
        .collect();
    let err = move |line, reason| ValidateError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    Ok((lines, err))
}

/// Read a slice-labels CSV: header `file,infected`, then one slice a line, infected `0` or `1`.
fn read_slice_labels(path: &Path) -> Result<Vec<(String, bool)>, ValidateError> {
    let (lines, err) = csv_lines(path)?;
    let mut lines = lines.iter().map(|(n, l)| (*n, l.as_str()));
    match lines.next() {
        Some((_, h)) if h.replace(' ', "").eq_ignore_ascii_case("file,infected") => {}
        Some((n, h)) => return Err(err(n, format!("header {h:?}, expected \"file,infected\""))),
        None => return Err(err(1, "empty: expected a header \"file,infected\"".into())),
    }
    let mut out = Vec::new();
    for (n, l) in lines {
        let (f, v) = l
            .rsplit_once(',')
            .ok_or_else(|| err(n, format!("{l:?}: expected \"file,infected\"")))?;
        let infected = match v.trim() {
            "1" => true,
            "0" => false,
            other => return Err(err(n, format!("infected {other:?}: expected 0 or 1"))),
        };
        out.push((f.trim().trim_matches('"').to_string(), infected));
    }
    Ok(out)
}

/// Read `path,label` rows, or `path,label,slices` rows whose third column (may be empty) names
/// a slice-labels CSV relative to this one (a header first; blank lines and `#` comments
/// skipped).
pub fn read_labels(csv: &Path) -> Result<Vec<Row>, ValidateError> {
    let base = csv.parent().unwrap_or(Path::new("."));
    let (lines, err) = csv_lines(csv)?;
    let mut lines = lines.iter().map(|(n, l)| (*n, l.as_str()));
    let with_slices = match lines.next() {
        Some((_, h)) if h.replace(' ', "").eq_ignore_ascii_case("path,label") => false,
        Some((_, h)) if h.replace(' ', "").eq_ignore_ascii_case("path,label,slices") => true,
        Some((n, h)) => {
            return Err(err(
                n,
                format!("header {h:?}, expected \"path,label\" or \"path,label,slices\""),
            ))
        }
        None => {
            return Err(err(
                1,
                "empty: expected a header \"path,label\" and one row per patient".into(),
            ))
        }
    };
    let mut rows = Vec::new();
    for (n, l) in lines {
        let (l, slices) = if with_slices {
            let (rest, s) = l
                .rsplit_once(',')
                .ok_or_else(|| err(n, format!("{l:?}: expected \"path,label,slices\"")))?;
            let s = s.trim().trim_matches('"');
            let slices = if s.is_empty() {
                None
            } else {
                Some(read_slice_labels(&base.join(s))?)
            };
            (rest, slices)
        } else {
            (l, None)
        };
        let (p, label) = l
            .rsplit_once(',')
            .ok_or_else(|| err(n, format!("{l:?}: expected \"path,label\"")))?;
        let (p, label) = (p.trim().trim_matches('"'), label.trim().to_ascii_lowercase());
        let label = match label.as_str() {
            "covid" => Label::Covid,
            "normal" => Label::Normal,
            "other" => Label::Other,
            other => return Err(err(n, format!("label {other:?}: expected covid, normal or other"))),
        };
        if p.is_empty() {
            return Err(err(n, "empty path".into()));
        }
        rows.push(Row {
            written: p.to_string(),
            path: base.join(p),
            label,
            slices,
        });
    }
    if rows.is_empty() {
        return Err(err(1, "no patients listed".into()));
    }
    Ok(rows)
}

/// A proportion with its 95% Wilson score interval (`value` is `None` when `n` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    pub value: Option<f64>,
    pub ci95: [f64; 2],
    /// Successes and trials.
    pub k: usize,
    pub n: usize,
}

/// `k` of `n` with the Wilson score interval at 95% (z = 1.96): honest at small `n` and at 0
/// or 100%, where the normal approximation claims a zero-width interval.
pub fn wilson(k: usize, n: usize) -> Proportion {
    if n == 0 {
        return Proportion {
            value: None,
            ci95: [0.0, 1.0],
            k,
            n,
        };
    }
    let (kf, nf, z) = (k as f64, n as f64, 1.959_963_984_540_054);
    let p = kf / nf;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Proportion {
        value: Some(p),
        ci95: [(centre - half).max(0.0), (centre + half).min(1.0)],
        k,
        n,
    }
}

/// One patient of the validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientResult {
    /// The path as written in the CSV.
    pub path: String,
    pub label: Label,
    /// `None` when the folder could not be scanned at all (`error` says why): a miss.
    pub verdict: Option<Verdict>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub selected_slices: usize,
    pub covid_slices: usize,
    /// Slices called COVID whose evidence peak lies inside the lungs.
    pub lung_driven_covid_slices: usize,
    /// Whether the verdict agrees with the label (`None` for `other`).
    pub correct: Option<bool>,
    /// The classified slices that have a reference label (`slices` column), in scan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slice_calls: Vec<SliceCall>,
}

/// One classified slice against its reference label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceCall {
    /// `<series>/<file>` as `scan` names them.
    pub slice: String,
    pub p_covid: f32,
    /// Called COVID at the model's threshold.
    pub called: bool,
    pub infected: bool,
}

/// One bin of the reliability diagram: slices whose P(COVID) lies in `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    /// Mean P(COVID) of its slices (`None` when empty).
    pub mean_p: Option<f64>,
    /// Share of its slices the reference labels infected.
    pub observed: Option<f64>,
}

/// Slice-level agreement with the reference slice labels, over every patient that has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceAgreement {
    /// Infected slices called COVID.
    pub sensitivity: Proportion,
    /// Clear slices not called COVID.
    pub specificity: Proportion,
    /// Ten equal-width bins of P(COVID).
    pub reliability: Vec<ReliabilityBin>,
    /// Expected calibration error over those bins: sum of n_b / N x |observed - mean P|.
    pub ece: Option<f64>,
}

/// Agreement of `calls` with their labels (`None` without any labelled slice).
pub fn slice_agreement(calls: &[&SliceCall]) -> Option<SliceAgreement> {
    if calls.is_empty() {
        return None;
    }
    let infected: Vec<&&SliceCall> = calls.iter().filter(|c| c.infected).collect();
    let clear: Vec<&&SliceCall> = calls.iter().filter(|c| !c.infected).collect();
    const BINS: usize = 10;
    let mut reliability = Vec::with_capacity(BINS);
    let mut ece = 0.0;
    for b in 0..BINS {
        let (lo, hi) = (b as f64 / BINS as f64, (b + 1) as f64 / BINS as f64);
        let of: Vec<&&SliceCall> = calls
            .iter()
            .filter(|c| {
                let p = f64::from(c.p_covid);
                p >= lo && (p < hi || (b == BINS - 1 && p <= hi))
            })
            .collect();
        let n = of.len();
        let (mean_p, observed) = if n == 0 {
            (None, None)
        } else {
            let m = of.iter().map(|c| f64::from(c.p_covid)).sum::<f64>() / n as f64;
            let o = of.iter().filter(|c| c.infected).count() as f64 / n as f64;
            ece += n as f64 / calls.len() as f64 * (o - m).abs();
            (Some(m), Some(o))
        };
        reliability.push(ReliabilityBin {
            lo,
            hi,
            n,
            mean_p,
            observed,
        });
    }
    Some(SliceAgreement {
        sensitivity: wilson(infected.iter().filter(|c| c.called).count(), infected.len()),
        specificity: wilson(clear.iter().filter(|c| !c.called).count(), clear.len()),
        reliability,
        ece: Some(ece),
    })
}

/// `ctsentinel validate --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub labels: String,
    pub patients: Vec<PatientResult>,
    pub sensitivity: Proportion,
    pub specificity: Proportion,
    pub undetermined: Proportion,
    /// Of all slices called COVID, those whose evidence peak lies inside the lungs.
    pub evidence_in_lungs: Proportion,
    /// Slice-level agreement where the CSV gives slice labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<SliceAgreement>,
    pub model: ModelIdentity,
    pub notice: String,
}

/// The patient's record from its scan report.
pub fn patient_result(row: &Row, scan: Result<&ScanReport, String>, classifier: &Classifier) -> PatientResult {
    let (verdict, reason, error, selected, covid, lung) = match &scan {
        Ok(r) => {
            // The same count as the evidence gate's, over the series the verdict used.
            let (n, l) = r
                .series
                .iter()
                .filter(|s| s.rejected.is_none() && s.excluded.is_none())
                .map(|s| crate::pipeline::covid_calls(s, classifier))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (Some(r.verdict), r.reason.clone(), None, r.selected_slices, n, l)
        }
        Err(e) => (None, None, Some(e.clone()), 0, 0, 0),
    };
    let mut slice_calls = Vec::new();
    if let (Some(labels), Ok(r)) = (&row.slices, scan) {
        let label: std::collections::HashMap<&str, bool> = labels.iter().map(|(f, v)| (f.as_str(), *v)).collect();
        for s in r.series.iter().filter(|s| s.rejected.is_none() && s.excluded.is_none()) {
            for x in s.slices.iter().filter(|x| x.not_classified.is_none()) {
                let Some(p) = x.p_covid else { continue };
                let long = format!("{}/{}", s.id, x.file);
                if let Some(&infected) = label.get(long.as_str()).or_else(|| label.get(x.file.as_str())) {
                    slice_calls.push(SliceCall {
                        slice: long,
                        p_covid: p,
                        called: classifier.is_covid(p),
                        infected,
                    });
                }
            }
        }
    }
    let correct = match row.label {
        Label::Covid => Some(verdict == Some(Verdict::Covid)),
        Label::Normal => Some(verdict == Some(Verdict::Normal)),
        Label::Other => None,
    };
    PatientResult {
        path: row.written.clone(),
        label: row.label,
        verdict,
        reason,
        error,
        selected_slices: selected,
        covid_slices: covid,
        lung_driven_covid_slices: lung,
        correct,
        slice_calls,
    }
}

/// The overall figures from the per-patient records.
pub fn summarise(labels: &str, patients: Vec<PatientResult>, model: ModelIdentity) -> ValidationReport {
    let count = |label: Label| {
        let of: Vec<&PatientResult> = patients.iter().filter(|p| p.label == label).collect();
        wilson(of.iter().filter(|p| p.correct == Some(true)).count(), of.len())
    };
    let undetermined = wilson(
        patients
            .iter()
            .filter(|p| p.verdict != Some(Verdict::Covid) && p.verdict != Some(Verdict::Normal))
            .count(),
        patients.len(),
    );
    let evidence_in_lungs = wilson(
        patients.iter().map(|p| p.lung_driven_covid_slices).sum(),
        patients.iter().map(|p| p.covid_slices).sum(),
    );
    let calls: Vec<&SliceCall> = patients.iter().flat_map(|p| &p.slice_calls).collect();
    let slices = slice_agreement(&calls);
    ValidationReport {
        labels: labels.to_string(),
        slices,
        sensitivity: count(Label::Covid),
        specificity: count(Label::Normal),
        undetermined,
        evidence_in_lungs,
        patients,
        model,
        notice: crate::NOTICE.to_string(),
    }
}

/// Scan every listed patient with `classifier` (exactly the pipeline of `scan`) and summarise.
pub fn run(csv: &Path, rows: &[Row], classifier: &mut Classifier) -> ValidationReport {
    let mut patients = Vec::with_capacity(rows.len());
    for row in rows {
        let scan = crate::pipeline::scan_folder(&row.path, classifier, &mut |_| std::ops::ControlFlow::Continue(()))
            .map_err(|e| e.to_string());
        if let Err(e) = &scan {
            log::error!("{}: {e}", row.path.display());
        }
        patients.push(patient_result(row, scan.as_ref().map_err(|e| e.clone()), classifier));
    }
    summarise(&csv.display().to_string(), patients, classifier.identity())
}

/// Where the validation record of a model lives in a records folder.
pub fn record_path(dir: &Path, model: &ModelIdentity) -> PathBuf {
    dir.join(format!("{}.json", model.sha256))
}

/// Keep `report` as its model's validation record in `dir` (atomically).
pub fn write_record(dir: &Path, report: &ValidationReport) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = record_path(dir, &report.model);
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    crate::fsys::write_atomic(&path, format!("{text}\n").as_bytes())?;
    Ok(path)
}

/// The floors a site sets (`[validation]`): the lower 95% bounds that must be met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floors {
    pub min_sensitivity: f64,
    pub min_specificity: f64,
}

/// `Ok` when `dir` holds a validation record of `model` (same SHA-256) whose lower 95% bounds of
/// sensitivity and specificity meet `floors`; else why not, as an operator reads it.
pub fn site_check(dir: &Path, model: &ModelIdentity, floors: Floors) -> Result<(), String> {
    let path = record_path(dir, model);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
            "no site validation of model {} {} (sha256 {}): run `ctsentinel validate --labels FILE.csv --record {}`",
            model.name,
            model.version,
            &model.sha256[..model.sha256.len().min(12)],
            dir.display()
        ))
        }
        Err(e) => return Err(format!("{}: cannot read the validation record: {e}", path.display())),
    };
    let r: ValidationReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a validation record: {e}", path.display()))?;
    if r.model.sha256 != model.sha256 {
        return Err(format!(
            "{}: the record is of another model ({})",
            path.display(),
            r.model.sha256
        ));
    }
    let mut short = Vec::new();
    for (what, p, floor) in [
        ("sensitivity", r.sensitivity, floors.min_sensitivity),
        ("specificity", r.specificity, floors.min_specificity),
    ] {
        if p.ci95[0] < floor {
            short.push(format!(
                "{what} {}/{} has a lower 95% bound of {:.2}, below the site's floor {floor:.2}",
                p.k, p.n, p.ci95[0]
            ));
        }
    }
    if short.is_empty() {
        Ok(())
    } else {
        Err(format!("site validation not passed: {}", short.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_published_values_and_stay_honest_at_the_edges() {
        // Newcombe (1998), table I: 81/263 -> 0.2553..0.3662; 15/148 -> 0.0624..0.1605.
        let a = wilson(81, 263);
        assert!(
            (a.ci95[0] - 0.2553).abs() < 5e-4 && (a.ci95[1] - 0.3662).abs() < 5e-4,
            "{a:?}"
        );
        let b = wilson(15, 148);
        assert!(
            (b.ci95[0] - 0.0624).abs() < 5e-4 && (b.ci95[1] - 0.1605).abs() < 5e-4,
            "{b:?}"
        );
        // 5 of 5 is not certainty: the lower bound is about 0.57.
        let c = wilson(5, 5);
        assert_eq!(c.value, Some(1.0));
        assert!((c.ci95[0] - 0.5655).abs() < 5e-4 && c.ci95[1] == 1.0, "{c:?}");
        assert_eq!(wilson(0, 0).value, None);
    }

    #[test]
    fn labels_csv_is_strict_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(&p, "path,label\n# a comment\np1,covid\n\"p 2\",Normal\np3,other\n").unwrap();
        let rows = read_labels(&p).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].path, dir.path().join("p 2"));
        assert_eq!(rows[1].label, Label::Normal);
        std::fs::write(&p, "path,label\np1,pneumonia\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("pneumonia"), "{e}");
        std::fs::write(&p, "file,class\np1,covid\n").unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("header"));
    }

    fn patient(label: Label, verdict: Option<Verdict>, covid: usize, lung: usize) -> PatientResult {
        PatientResult {
            path: "p".into(),
            label,
            verdict,
            reason: None,
            error: None,
            selected_slices: 20,
            covid_slices: covid,
            lung_driven_covid_slices: lung,
            correct: match label {
                Label::Covid => Some(verdict == Some(Verdict::Covid)),
                Label::Normal => Some(verdict == Some(Verdict::Normal)),
                Label::Other => None,
            },
            slice_calls: Vec::new(),
        }
    }

    #[test]
    fn undetermined_is_a_miss_and_other_is_excluded_from_both() {
        let model = ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            sha256: "00".into(),
        };
        let r = summarise(
            "l.csv",
            vec![
                patient(Label::Covid, Some(Verdict::Covid), 10, 9),
                patient(Label::Covid, Some(Verdict::Undetermined), 5, 0),
                patient(Label::Normal, Some(Verdict::Normal), 0, 0),
                patient(Label::Normal, None, 0, 0),
                patient(Label::Other, Some(Verdict::Covid), 4, 4),
            ],
            model,
        );
        assert_eq!((r.sensitivity.k, r.sensitivity.n), (1, 2));
        assert_eq!((r.specificity.k, r.specificity.n), (1, 2));
        assert_eq!((r.undetermined.k, r.undetermined.n), (2, 5));
        assert_eq!((r.evidence_in_lungs.k, r.evidence_in_lungs.n), (13, 19));
    }

    #[test]
    fn the_site_gate_opens_only_for_a_record_of_the_running_model_whose_lower_bounds_meet_the_floors() {
        let dir = tempfile::tempdir().unwrap();
        let model = ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            sha256: "ab".repeat(32),
        };
        let floors = Floors {
            min_sensitivity: 0.8,
            min_specificity: 0.8,
        };
        let no = site_check(dir.path(), &model, floors).unwrap_err();
        assert!(no.contains("no site validation") && no.contains("--record"), "{no}");
        // 20 of 20 each way: lower bounds about 0.84.
        let mut all = Vec::new();
        for _ in 0..20 {
            all.push(patient(Label::Covid, Some(Verdict::Covid), 5, 5));
            all.push(patient(Label::Normal, Some(Verdict::Normal), 0, 0));
        }
        let good = summarise("l.csv", all.clone(), model.clone());
        write_record(dir.path(), &good).unwrap();
        assert_eq!(site_check(dir.path(), &model, floors), Ok(()));
        // 5 of 5 is right every time, and still not enough evidence: lower bound 0.57.
        let few = summarise("l.csv", all[..10].to_vec(), model.clone());
        write_record(dir.path(), &few).unwrap();
        let why = site_check(dir.path(), &model, floors).unwrap_err();
        assert!(why.contains("sensitivity 5/5") && why.contains("0.57"), "{why}");
        // A record of another model never opens the gate, even under the running model's name.
        let other = ModelIdentity {
            sha256: "cd".repeat(32),
            ..model.clone()
        };
        write_record(dir.path(), &summarise("l.csv", all, other.clone())).unwrap();
        std::fs::copy(record_path(dir.path(), &other), record_path(dir.path(), &model)).unwrap();
        assert!(site_check(dir.path(), &model, floors)
            .unwrap_err()
            .contains("another model"));
    }

    #[test]
    fn slice_agreement_follows_from_the_calls_and_the_reliability_bins_add_up() {
        let call = |p: f32, infected: bool| SliceCall {
            slice: "SR_1/IM1.tif".into(),
            p_covid: p,
            called: p >= 0.5,
            infected,
        };
        let calls = [
            call(0.95, true),
            call(0.91, true),
            call(0.15, true),
            call(0.05, false),
            call(0.62, false),
            call(1.0, true),
        ];
        let refs: Vec<&SliceCall> = calls.iter().collect();
        let a = slice_agreement(&refs).unwrap();
        assert_eq!((a.sensitivity.k, a.sensitivity.n), (3, 4));
        assert_eq!((a.specificity.k, a.specificity.n), (1, 2));
        assert_eq!(
            a.reliability.iter().map(|b| b.n).sum::<usize>(),
            6,
            "P = 1.0 lands in the last bin"
        );
        let top = a.reliability[9];
        assert_eq!(top.n, 3);
        assert_eq!(top.observed, Some(1.0));
        // ECE by hand: bins 0 (0.05, clear), 1 (0.15, infected), 6 (0.62, clear), 9 (0.95, 0.91, 1.0, all
        // infected: weight 3).
        let want = (0.05 + (1.0 - 0.15) + 0.62 + 3.0 * (1.0 - (0.95 + 0.91 + 1.0) / 3.0)) / 6.0;
        assert!((a.ece.unwrap() - want).abs() < 1e-6, "{:?} vs {want}", a.ece);
        assert!(slice_agreement(&[]).is_none());
    }

    #[test]
    fn a_slices_column_reads_each_patients_slice_labels_strictly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p1.csv"), "file,infected\nIM1.tif,1\nSR_1/IM2.tif,0\n").unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(&p, "path,label,slices\np1,covid,p1.csv\np2,normal,\n").unwrap();
        let rows = read_labels(&p).unwrap();
        assert_eq!(
            rows[0].slices.as_deref(),
            Some(&[("IM1.tif".to_string(), true), ("SR_1/IM2.tif".to_string(), false)][..])
        );
        assert_eq!(rows[1].slices, None);
        std::fs::write(dir.path().join("p1.csv"), "file,infected\nIM1.tif,yes\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("p1.csv:2") && e.contains("yes"), "{e}");
    }
}
