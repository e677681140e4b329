//! Presentation: renders pipeline results for people (terminal tables, later the bedside
//! display) and writes result files. It never decides anything.

use std::fmt::Write as _;

use crate::report::SelectReport;

/// A short human-readable table of a selection report.
pub fn select_table(r: &SelectReport) -> String {
    let mut out = String::new();
    for s in &r.series {
        let _ = writeln!(out, "series {}  (patient {})", s.path, s.patient);
        if let Some(reason) = &s.rejected {
            let _ = writeln!(out, "  REJECTED: {reason}");
            continue;
        }
        let _ = writeln!(
            out,
            "  threshold {:.1} dark pixels; {} of {} slices selected",
            s.threshold.unwrap_or(0.0),
            s.selected,
            s.slices.len()
        );
        let _ = writeln!(out, "  {:<24} {:>11}  {}", "file", "dark pixels", "selected");
        for sl in &s.slices {
            let size = if (sl.width, sl.height) == (512, 512) { String::new() } else { format!("  ({}x{})", sl.width, sl.height) };
            let _ = writeln!(out, "  {:<24} {:>11}  {}{}", sl.file, sl.dark_pixels, if sl.selected { "yes" } else { "-" }, size);
        }
    }
    out
}
