//! The JSON contracts other tools depend on: one `serde` struct per contract, field names
//! defined here and nowhere else.

use serde::{Deserialize, Serialize};

use crate::classify::ModelIdentity;
use crate::decide::Verdict;
pub use crate::ingest::{FileProblem, SeriesInfo};

/// `ctsentinel select <DIR> --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectReport {
    pub series: Vec<SeriesSelection>,
    /// Files under the folder that are not slices of any series (DICOM scouts, dose reports,
    /// other modalities, non-DICOM files), each with the reason; never read as slices.
    #[serde(default)]
    pub ignored: Vec<FileProblem>,
}

/// Selection over one series folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSelection {
    pub patient: String,
    pub path: String,
    /// The series folder's name (TIFF) or the SeriesInstanceUID (DICOM).
    #[serde(default)]
    pub id: String,
    /// What the DICOM headers say (description, spacings, slice order); absent for TIFF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<SeriesInfo>,
    /// Why the series is outside the model's acquisition contract (not classified), else
    /// absent. Not an input error: the other series of the patient still count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// `(max - min) / 1.5` over the series' dark-pixel counts; `null` when rejected.
    pub threshold: Option<f64>,
    pub slices: Vec<SliceSelection>,
    /// Number of kept slices.
    pub selected: usize,
    /// Why the series could not be read (every failing file with its reason), else `null`.
    pub rejected: Option<String>,
    /// Every file that could not be used, with its reason (empty when none).
    #[serde(default)]
    pub unreadable: Vec<FileProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSelection {
    pub file: String,
    pub dark_pixels: u32,
    pub selected: bool,
    pub width: usize,
    pub height: usize,
}

impl SelectReport {
    /// True when any series was rejected (the CLI then exits with the input-error code).
    pub fn any_rejected(&self) -> bool {
        self.series.iter().any(|s| s.rejected.is_some())
    }
}

/// `ctsentinel scan <DIR> --json`: the patient verdict and everything it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub patient: String,
    pub verdict: Verdict,
    /// COVID slices / selected slices over all series; `null` when undetermined.
    pub covid_fraction: Option<f64>,
    pub selected_slices: usize,
    pub covid_slices: usize,
    /// Why the verdict is `undetermined`, else `null`.
    pub reason: Option<String>,
    /// The rule that turned slices into the verdict, from the model card.
    pub rule: String,
    pub series: Vec<SeriesScan>,
    /// Files that are not slices of any series, with the reason (see [`SelectReport`]).
    #[serde(default)]
    pub ignored: Vec<FileProblem>,
    pub model: ModelIdentity,
    pub notice: String,
    pub timing_ms: Timing,
}

/// One series of a scan: its selection, its classified slices and its own verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesScan {
    pub path: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<SeriesInfo>,
    /// Why the series is outside the model's acquisition contract (not classified, not
    /// counted in the patient verdict), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// `(max - min) / 1.5` over the series' dark-pixel counts; `null` when rejected.
    pub threshold: Option<f64>,
    pub selected: usize,
    /// Selected slices not classified (see [`SliceScan::not_classified`]); the verdict rests
    /// on the others.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_classified: usize,
    pub covid: usize,
    pub verdict: Verdict,
    pub covid_fraction: Option<f64>,
    /// Why the series could not be used (every failing file with its reason), else `null`.
    pub rejected: Option<String>,
    /// Every file that could not be used, with its reason (empty when none).
    #[serde(default)]
    pub unreadable: Vec<FileProblem>,
    pub slices: Vec<SliceScan>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One slice: selection count, and the model's P(COVID) when it was selected (else `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceScan {
    pub file: String,
    pub dark_pixels: u32,
    pub selected: bool,
    pub p_covid: Option<f32>,
    /// Why a selected slice was not classified (a lung-framed model and an implausible lung
    /// mask), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_classified: Option<String>,
    /// Where the model saw COVID evidence in this slice (a model with an evidence output,
    /// see `classify::EvidenceMap`), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<SliceEvidence>,
}

/// The evidence map of one classified slice, placed on the slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceEvidence {
    /// `[rows, cols]` of the map.
    pub grid: [usize; 2],
    /// The map, row-major, over the part of the slice the model saw (`view`); positive pushes
    /// towards COVID. Rounded to 4 decimals.
    pub map: Vec<f32>,
    /// The part of the slice the model's input covers, in slice pixels: `[x0, y0, width,
    /// height]` (the whole slice, or the lung frame, which may reach past the slice's edge).
    pub view: [f64; 4],
    /// Centre of the map's highest cell, in slice pixels `[x, y]`.
    pub peak: [f64; 2],
    /// Of the positive evidence, the share in cells whose centre lies inside the lung mask;
    /// absent when the slice has no lung mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_lungs: Option<f32>,
    /// Whether `peak` lies inside the lung mask; absent when the slice has no lung mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_in_lungs: Option<bool>,
}

impl SliceEvidence {
    /// The map value at a slice pixel (`None` outside the view).
    pub fn at(&self, x: f64, y: f64) -> Option<f32> {
        let [x0, y0, w, h] = self.view;
        let (u, v) = ((x - x0) / w, (y - y0) / h);
        if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
            return None;
        }
        let [rows, cols] = self.grid;
        let (r, c) = ((v * rows as f64) as usize, (u * cols as f64) as usize);
        self.map.get(r * cols + c).copied()
    }
}

/// Wall-clock milliseconds spent in each stage of a scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub select: u64,
    pub classify: u64,
    pub total: u64,
    /// Where `classify` went, per stage (`bench/scan_profile.sh` reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageTiming>,
}

/// Milliseconds of each stage's own work while classifying selected slices, summed over the
/// scan. Decoding, lung masks and preprocessing run on a second thread beside the network, so
/// these add up to more than `classify` when they overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub decode: f64,
    pub lung_mask: f64,
    pub preprocess: f64,
    pub network: f64,
    pub evidence: f64,
}

/// `ctsentinel classify <IMAGE>... --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyReport {
    pub images: Vec<ImageClass>,
    pub model: ModelIdentity,
    pub notice: String,
}

/// One classified image; `error` instead of a probability when it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageClass {
    pub file: String,
    pub p_covid: Option<f32>,
    pub label: Option<String>,
    pub error: Option<String>,
}

impl ClassifyReport {
    pub fn any_failed(&self) -> bool {
        self.images.iter().any(|i| i.error.is_some())
    }
}

/// A result the service writes: `<state>/results/<drop>/<patient>/<series>.json`. The `scan
/// --json` contract, plus where the series came from and what the snapshot held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceResult {
    #[serde(flatten)]
    pub scan: ScanReport,
    pub source: ResultSource,
}

/// Where a service result's series was, exactly as named there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSource {
    /// The drop folder as configured.
    pub drop: String,
    /// Patient and series folder names (invalid UTF-8 shown as U+FFFD).
    pub patient: String,
    pub series_folder: String,
    /// The snapshot's key (SHA-256 over place, names, sizes and contents): the journal's key.
    pub key: String,
    /// Slice files in the snapshot.
    pub files: usize,
    /// Entries that are not slices and were not read (sub-folders), for completeness.
    pub ignored: Vec<FileProblem>,
    /// Seconds since the Unix epoch when the result was written.
    pub written_at: u64,
    /// Whether the kernel considered the wall clock synchronised when `written_at` was taken
    /// (`crate::clock`); null where it cannot tell. Retention never deletes on a stamp taken
    /// with an unsynchronised clock.
    #[serde(default)]
    pub clock_synchronised: Option<bool>,
}

/// One check of the power-up self-test (`service::selftest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub ms: u64,
}

/// `ctsentinel selftest --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestReport {
    pub passed: bool,
    pub checks: Vec<Check>,
    pub model: Option<ModelIdentity>,
    /// The CPU features tract's kernels use on this box ([`crate::classify::cpu_kernels`]).
    #[serde(default)]
    pub cpu: String,
    /// The matrix kernels tract chose for the model on this box, with how many products use each
    /// ([`crate::classify::Classifier::matmul_kernels`]); empty when the model did not load.
    #[serde(default)]
    pub kernels: Vec<String>,
    pub notice: String,
}
