//! Drives the pipeline over one folder: ingest → select (→ classify → decide). Shared by the
//! CLI and the service so both run exactly the same steps.
//!
//! Memory stays bounded: slices are decoded one at a time into one reused buffer and only their
//! counts are kept.

use std::path::Path;

use crate::ingest::{self, IngestError, Series, SliceDecoder};
use crate::report::{SelectReport, SeriesSelection, SliceSelection};
use crate::select;

/// Run selection on every series under `dir` (a patient or series folder).
///
/// A series whose slices cannot all be decoded is reported as rejected, naming every failing
/// file; the other series are still selected. The error is only for a `dir` that cannot be
/// read as a patient or series folder at all.
pub fn select_folder(dir: &Path) -> Result<SelectReport, IngestError> {
    let mut decoder = SliceDecoder::new();
    let series = ingest::discover(dir)?;
    Ok(SelectReport { series: series.iter().map(|s| select_series(s, &mut decoder)).collect() })
}

/// Decode and count every slice of one series, then apply the paper's rule.
pub fn select_series(series: &Series, decoder: &mut SliceDecoder) -> SeriesSelection {
    let mut slices = Vec::with_capacity(series.files.len());
    let mut errors = Vec::new();
    for path in &series.files {
        match decoder.decode(path) {
            Ok(slice) => slices.push(SliceSelection {
                file: ingest::name_of(path),
                dark_pixels: select::dark_pixels(slice.pixels, slice.width),
                selected: false,
                width: slice.width,
                height: slice.height,
            }),
            Err(e) => {
                log::error!("{e}");
                errors.push(e.to_string());
            }
        }
    }
    let mut out = SeriesSelection {
        patient: series.patient.clone(),
        path: series.path.display().to_string(),
        threshold: None,
        slices: Vec::new(),
        selected: 0,
        rejected: None,
    };
    if !errors.is_empty() {
        out.rejected = Some(format!("{} of {} files unreadable: {}", errors.len(), series.files.len(), errors.join("; ")));
        return out;
    }
    let counts: Vec<u32> = slices.iter().map(|s| s.dark_pixels).collect();
    let Some(selection) = select::select(&counts) else {
        out.rejected = Some(format!("{}: no slice files in this series folder", series.path.display()));
        return out;
    };
    for (s, keep) in slices.iter_mut().zip(&selection.keep) {
        s.selected = *keep;
    }
    out.threshold = Some(selection.threshold.value());
    out.selected = selection.selected();
    out.slices = slices;
    out
}
