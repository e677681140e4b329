//! The JSON contracts other tools depend on: one `serde` struct per contract, field names
//! defined here and nowhere else.

use serde::{Deserialize, Serialize};

/// `ctsentinel select <DIR> --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectReport {
    pub series: Vec<SeriesSelection>,
}

/// Selection over one series folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSelection {
    pub patient: String,
    pub path: String,
    /// `(max - min) / 1.5` over the series' dark-pixel counts; `null` when rejected.
    pub threshold: Option<f64>,
    pub slices: Vec<SliceSelection>,
    /// Number of kept slices.
    pub selected: usize,
    /// Why the series could not be read (every failing file with its reason), else `null`.
    pub rejected: Option<String>,
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
