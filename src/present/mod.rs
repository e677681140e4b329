//! Presentation: renders pipeline results for people (terminal tables, later the bedside
//! display) and writes result files. It never decides anything.

pub mod canvas;
pub mod display;
pub mod sheet;
pub mod spi_panel;
pub mod sr;
pub mod validation;

/// The attached screen: backend and, for panels, wiring.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayProfile {
    /// `none`, `png`, `framebuffer` or `spi`.
    pub backend: String,
    pub width: u32,
    pub height: u32,
    /// `/dev/fb0` for a framebuffer, `/dev/spidev0.0` for a panel, a folder for `png`.
    #[serde(default)]
    pub device: Option<String>,
    /// SPI panels: controller (`st7789`, `ili9341`, `ili9486`) and GPIO lines.
    #[serde(default)]
    pub controller: Option<String>,
    #[serde(default)]
    pub gpio_chip: Option<String>,
    #[serde(default)]
    pub dc_line: Option<u32>,
    #[serde(default)]
    pub reset_line: Option<u32>,
}

use std::fmt::Write as _;

use crate::decide::Verdict;
use crate::report::{ClassifyReport, ScanReport, SelectReport};

/// `name version (sha256 <first 16 hex digits>)`.
fn model_line(m: &crate::classify::ModelIdentity) -> String {
    format!(
        "{} {} (sha256 {})",
        m.name,
        m.version,
        &m.sha256[..16.min(m.sha256.len())]
    )
}

/// A short human-readable table of a selection report.
pub fn select_table(r: &SelectReport) -> String {
    let mut out = String::new();
    for s in &r.series {
        let _ = writeln!(out, "series {}  (patient {})", s.path, s.patient);
        if let Some(info) = &s.info {
            let _ = writeln!(out, "  {}", info_line(&s.id, info));
        }
        if let Some(reason) = &s.rejected {
            let _ = writeln!(out, "  REJECTED: {reason}");
            continue;
        }
        if let Some(reason) = &s.excluded {
            let _ = writeln!(out, "  EXCLUDED (not classified): {reason}");
            continue;
        }
        let _ = writeln!(
            out,
            "  threshold {:.1} dark pixels; {} of {} slices selected",
            s.threshold.unwrap_or(0.0),
            s.selected,
            s.slices.len()
        );
        let _ = writeln!(out, "  {:<24} {:>11}  selected", "file", "dark pixels");
        for sl in &s.slices {
            let size = if (sl.width, sl.height) == (512, 512) {
                String::new()
            } else {
                format!("  ({}x{})", sl.width, sl.height)
            };
            let _ = writeln!(
                out,
                "  {:<24} {:>11}  {}{}",
                sl.file,
                sl.dark_pixels,
                if sl.selected { "yes" } else { "-" },
                size
            );
        }
    }
    ignored_lines(&mut out, &r.ignored);
    out
}

fn info_line(id: &str, i: &crate::report::SeriesInfo) -> String {
    let mm = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2} mm"));
    format!(
        "DICOM series {id} \"{}\": pixel {}, slices {} apart, ordered by {}",
        i.description.as_deref().unwrap_or(""),
        mm(i.pixel_spacing_mm.map(|p| p[0])),
        mm(i.slice_spacing_mm),
        i.ordered_by
    )
}

fn ignored_lines(out: &mut String, ignored: &[crate::report::FileProblem]) {
    if ignored.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "ignored   {} files that are not slices of any series:",
        ignored.len()
    );
    for i in ignored {
        let _ = writeln!(out, "  {}: {}", i.file, i.reason);
    }
}

/// One-screen summary of a scan, notice first and last so it cannot be missed.
pub fn scan_summary(r: &ScanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "*** {} ***", crate::NOTICE.to_uppercase());
    let _ = writeln!(out, "patient   {}", r.patient);
    let verdict = match r.verdict {
        Verdict::Covid => "COVID-19 PATTERN (covid)",
        Verdict::Normal => "NO COVID-19 PATTERN (normal)",
        Verdict::Undetermined => "UNDETERMINED",
    };
    let _ = writeln!(out, "verdict   {verdict}");
    match r.covid_fraction {
        Some(f) => {
            let _ = writeln!(
                out,
                "slices    {} of {} selected slices classified COVID ({:.1}%)",
                r.covid_slices,
                r.selected_slices,
                f * 100.0
            );
        }
        None => {
            let _ = writeln!(out, "reason    {}", r.reason.as_deref().unwrap_or("-"));
        }
    }
    let _ = writeln!(out, "rule      {}", r.rule);
    for s in &r.series {
        match (&s.rejected, &s.excluded) {
            (Some(reason), _) => {
                let _ = writeln!(out, "  series {:<10} REJECTED: {reason}", s.id);
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "  series {:<10} EXCLUDED (not classified): {reason}", s.id);
            }
            (None, None) => {
                let _ = writeln!(
                    out,
                    "  series {:<10} {:>3} of {:>3} slices selected, {:>3} COVID  -> {}",
                    s.id,
                    s.selected,
                    s.slices.len(),
                    s.covid,
                    s.verdict
                );
            }
        }
    }
    ignored_lines(&mut out, &r.ignored);
    let _ = writeln!(out, "model     {}", model_line(&r.model));
    let _ = writeln!(
        out,
        "time      {:.1} s (selection {:.1} s, classification {:.1} s)",
        r.timing_ms.total as f64 / 1e3,
        r.timing_ms.select as f64 / 1e3,
        r.timing_ms.classify as f64 / 1e3
    );
    let _ = writeln!(out, "*** {} ***", crate::NOTICE.to_uppercase());
    out
}

/// A table of classified images.
pub fn classify_table(r: &ClassifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "*** {} ***", crate::NOTICE.to_uppercase());
    for i in &r.images {
        match (&i.error, i.p_covid, &i.label) {
            (Some(e), _, _) => {
                let _ = writeln!(out, "{:<40} ERROR {e}", i.file);
            }
            (None, Some(p), Some(l)) => {
                let _ = writeln!(out, "{:<40} p_covid {p:.3}  {l}", i.file);
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "model {}", model_line(&r.model));
    out
}

/// Self-test result, one line per check.
pub fn selftest_summary(r: &crate::report::SelfTestReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "self-test {}",
        if r.passed {
            "PASSED"
        } else {
            "FAILED: do not use this box until fixed"
        }
    );
    for c in &r.checks {
        let _ = writeln!(
            out,
            "  [{}] {:<18} {} ({} ms)",
            if c.passed { " ok " } else { "FAIL" },
            c.name,
            c.detail,
            c.ms
        );
    }
    let _ = writeln!(out, "  cpu: {}", r.cpu);
    for k in &r.kernels {
        let _ = writeln!(out, "  matrix kernel: {k}");
    }
    let _ = writeln!(out, "{}", crate::NOTICE);
    out
}
