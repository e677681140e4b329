//! The paper's open-lung selection over one series: every slice decoded (on up to four threads)
//! and its dark pixels counted, then the series rule. No slice is kept decoded.

use std::path::Path;

use crate::ingest::{self, FileProblem, IngestError, Series, SliceDecoder};
use crate::report::{SelectReport, SeriesSelection, SliceSelection};
use crate::select;

/// Run selection on every series under `dir` (a patient or series folder).
///
/// A series whose slices cannot all be decoded is reported as rejected, naming every failing
/// file; the other series are still selected. The error is only for a `dir` that cannot be
/// read as a patient or series folder at all.
pub fn select_folder(dir: &Path) -> Result<SelectReport, IngestError> {
    let mut decoder = SliceDecoder::new();
    let found = ingest::find(dir)?;
    Ok(SelectReport {
        series: found.series.iter().map(|s| select_series(s, &mut decoder)).collect(),
        ignored: found.ignored,
    })
}

/// Decode and count every slice of one series, then apply the paper's rule. A series with any
/// file that cannot be used (refused before decoding, or failing to decode) is rejected,
/// naming every such file: no selection is made on part of a series.
pub fn select_series(series: &Series, decoder: &mut SliceDecoder) -> SeriesSelection {
    let mut out = SeriesSelection {
        patient: series.patient.clone(),
        path: series.path.display().to_string(),
        id: series.id.clone(),
        info: series.info.clone(),
        threshold: None,
        slices: Vec::new(),
        selected: 0,
        rejected: None,
        excluded: None,
        unreadable: Vec::new(),
    };
    if let Some(why) = series.info.as_ref().and_then(|i| i.protocol.as_ref()) {
        log::warn!(
            "{}: series {}: outside the model's acquisition contract: {why}",
            series.path.display(),
            series.id
        );
        out.excluded = Some(format!("outside the model's acquisition contract: {why}"));
        out.unreadable = series.refused.clone();
        if !out.unreadable.is_empty() {
            let list: Vec<String> = out
                .unreadable
                .iter()
                .map(|p| format!("{}: {}", p.file, p.reason))
                .collect();
            out.rejected = Some(format!(
                "{} files unreadable: {}",
                out.unreadable.len(),
                list.join("; ")
            ));
        }
        return out;
    }
    let mut slices = Vec::with_capacity(series.files.len());
    let mut problems: Vec<FileProblem> = series.refused.clone();
    for (path, counted) in series.files.iter().zip(count_all(&series.files, decoder)) {
        match counted {
            Ok((dark_pixels, width, height)) => slices.push(SliceSelection {
                file: series.label(path),
                dark_pixels,
                selected: false,
                width,
                height,
            }),
            Err(e) => {
                log::error!("{}: {}: {}", series.path.display(), series.label(path), e.reason());
                problems.push(FileProblem {
                    file: series.label(path),
                    reason: e.reason(),
                });
            }
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| ingest::natural_key(&p.file));
        let total = series.files.len() + series.refused.len();
        let list: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.file, p.reason)).collect();
        out.rejected = Some(format!(
            "{} of {} files unreadable: {}",
            problems.len(),
            total,
            list.join("; ")
        ));
        out.unreadable = problems;
        return out;
    }
    let counts: Vec<u32> = slices.iter().map(|s| s.dark_pixels).collect();
    let Some(selection) = select::select(&counts) else {
        out.rejected = Some(format!(
            "{}: no slice files in this series folder",
            series.path.display()
        ));
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

/// Decode every file and count its dark pixels (the selection's only input), on up to four
/// threads (each with its own decoder), in file order. A slice is held only while it is
/// counted.
pub(super) fn count_all(
    files: &[std::path::PathBuf],
    decoder: &mut SliceDecoder,
) -> Vec<Result<(u32, usize, usize), IngestError>> {
    let count = |d: &mut SliceDecoder, p: &std::path::PathBuf| {
        d.decode(p)
            .map(|s| (select::dark_pixels(s.pixels, s.width), s.width, s.height))
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(files.len() / 8)
        .max(1);
    if workers == 1 {
        return files.iter().map(|p| count(decoder, p)).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let mut chunks = files.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|c| {
                scope.spawn(move || {
                    let mut d = SliceDecoder::new();
                    c.iter().map(|p| count(&mut d, p)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out: Vec<_> = first.iter().map(|p| count(decoder, p)).collect();
        for h in others {
            // A decoder panic is the series' (see service::crashkey): passed on as is.
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}
