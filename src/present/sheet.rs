//! The per-patient report sheet: one PNG a radiologist can read in ten seconds.
//!
//! Why: the JSON is the result of record, and the bedside screen shows one slice; the person
//! who reads the result later needs to see *which* slices drove the verdict. The sheet shows,
//! top to bottom: the notice "research use only, not a diagnosis", the patient, the verdict in
//! words and colour, the counts and the rule, the model's identity (name, version, full
//! SHA-256), the time; then every series with its selection and verdict, and a montage of its
//! selected slices in slice order, each with its file name and P(COVID), framed orange when the
//! model called it COVID, green when not, grey when it was not classified (with the reason's
//! first words). Series that were excluded or rejected are listed with their reason, no montage.
//!
//! Like the screens ([`super::display`]), the sheet is laid out as a list of items first
//! ([`layout`], pure, testable for overflow and content) and drawn onto a [`Canvas`] after.
//! Verdict and P values come from the [`ScanReport`] alone; the thumbnails are the caller's (it
//! has the slices: the CLI its discovery, the service its snapshot), lung-windowed with
//! [`Thumbnail::from_stored`]. The montage is capped at [`MAX_TILES`] slices so that a thin
//! series cannot make an unbounded picture; the sheet says how many were left out.

use std::path::Path;

use embedded_graphics::pixelcolor::{Rgb565, RgbColor};

use super::display::{draw, fit, Canvas, DisplayError, Item, Thumbnail};
use crate::decide::Verdict;
use crate::report::{ScanReport, SeriesScan};

/// Width of the sheet in pixels (fits a screen and an A4 page at about 140 dpi).
pub const SHEET_WIDTH: u32 = 1200;
/// Side of one slice's thumbnail in the montage.
pub const TILE_SIDE: u32 = 120;
/// Most slices drawn per sheet (all series together).
pub const MAX_TILES: usize = 240;

const MARGIN: i32 = 24;
const FRAME: u32 = 4;
const CELL_W: u32 = TILE_SIDE + 2 * FRAME + 12;
const CELL_H: u32 = TILE_SIDE + 2 * FRAME + 46;
const SMALL: (u32, u32) = (6, 14); // FONT_6X10 advance and line height
const BIG: (u32, u32) = (10, 24); // FONT_10X20

pub const COVID_FRAME: Rgb565 = Rgb565::new(31, 32, 0);
pub const NORMAL_FRAME: Rgb565 = Rgb565::new(0, 44, 8);
pub const NOT_CLASSIFIED_FRAME: Rgb565 = Rgb565::new(14, 28, 14);
const INK: Rgb565 = Rgb565::WHITE;
const BACKGROUND: Rgb565 = Rgb565::new(2, 4, 3);

/// What the montage needs besides the report.
pub struct SheetInput<'a> {
    pub report: &'a ScanReport,
    /// The card's slice threshold: P(COVID) at or above it is a COVID slice.
    pub threshold: f32,
    /// When the result was made, as people read it.
    pub time: &'a str,
}

fn verdict_words(v: Verdict) -> (&'static str, Rgb565) {
    match v {
        Verdict::Covid => ("COVID-19 PATTERN", COVID_FRAME),
        Verdict::Normal => ("NO COVID-19 PATTERN", NORMAL_FRAME),
        Verdict::Undetermined => ("UNDETERMINED", NOT_CLASSIFIED_FRAME),
    }
}

/// Break `text` into lines of at most `max` characters at spaces (a longer word is cut).
fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: String = word.to_string();
        while word.chars().count() > max {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(max).collect();
            word = word.chars().skip(max).collect();
            lines.push(head);
        }
        let need = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if need > max && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

struct Cursor {
    items: Vec<Item>,
    y: i32,
}

impl Cursor {
    fn text(&mut self, text: &str, big: bool, color: Rgb565) {
        let (cw, lh) = if big { BIG } else { SMALL };
        let max = ((SHEET_WIDTH as i32 - 2 * MARGIN) as u32 / cw) as usize;
        for line in wrap(text, max) {
            self.items.push(Item::Text {
                x: MARGIN,
                y: self.y,
                text: line,
                big,
                scale: 1,
                color,
            });
            self.y += lh as i32;
        }
    }

    fn gap(&mut self, px: i32) {
        self.y += px;
    }
}

fn series_line(s: &SeriesScan) -> String {
    let classified = s.selected.saturating_sub(s.not_classified);
    let mut line = format!(
        "Series {} - {} slices, {} selected, {} classified, {} called COVID - {}",
        s.id,
        s.slices.len(),
        s.selected,
        classified,
        s.covid,
        s.verdict
    );
    if let Some(f) = s.covid_fraction {
        line.push_str(&format!(" ({:.1}%)", f * 100.0));
    }
    line
}

/// The tile of slice `k` of `report.series[si]` from its decoded pixels: lung-windowed, with
/// the model's evidence tinted on it when the slice was called COVID and the model has evidence.
pub fn tile(
    report: &ScanReport,
    si: usize,
    k: usize,
    threshold: f32,
    pixels: &[u16],
    width: usize,
    height: usize,
) -> Thumbnail {
    let t = Thumbnail::from_stored(pixels, width, height, TILE_SIDE);
    let slice = report.series.get(si).and_then(|s| s.slices.get(k));
    match slice {
        Some(sl) if sl.p_covid.is_some_and(|p| p >= threshold) => match &sl.evidence {
            Some(e) => t.with_evidence(e, width, height),
            None => t,
        },
        _ => t,
    }
}

/// The current time as the sheet prints it: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn now_text() -> String {
    utc_text(crate::clock::unix_secs())
}

/// Unix seconds as the sheet (and the results page) print them: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_text(secs: u64) -> String {
    let (da, tm) = super::sr::da_tm(secs);
    format!(
        "{}-{}-{} {}:{}:{} UTC",
        &da[..4],
        &da[4..6],
        &da[6..],
        &tm[..2],
        &tm[2..4],
        &tm[4..]
    )
}

/// Lay out the sheet: the items and the sheet's height. `thumbnail(series, slice)` gives the
/// picture of a selected slice (indices into `report.series` and its `slices`), or None when it
/// cannot be had (the tile is then drawn empty with its P value).
pub fn layout(
    input: &SheetInput<'_>,
    thumbnail: &mut dyn FnMut(usize, usize) -> Option<Thumbnail>,
) -> (Vec<Item>, u32) {
    let r = input.report;
    let mut c = Cursor {
        items: Vec::new(),
        y: MARGIN,
    };
    let (words, color) = verdict_words(r.verdict);
    c.text(
        "CTSENTINEL PATIENT REPORT - RESEARCH USE ONLY, NOT A DIAGNOSIS",
        true,
        INK,
    );
    c.gap(6);
    c.text(&format!("Patient: {}", r.patient), true, INK);
    c.gap(6);
    let verdict_y = c.y;
    let verdict_w = (words.chars().count() as u32 * BIG.0 * 2 + 24).min(SHEET_WIDTH - 2 * MARGIN as u32);
    c.items.push(Item::Fill {
        x: MARGIN,
        y: verdict_y,
        w: verdict_w,
        h: 2 * 20 + 16,
        color,
    });
    c.items.push(Item::Text {
        x: MARGIN + 12,
        y: verdict_y + 8,
        text: words.to_string(),
        big: true,
        scale: 2,
        color: Rgb565::BLACK,
    });
    c.y = verdict_y + 2 * 20 + 16 + 10;
    let classified: usize = r
        .series
        .iter()
        .map(|s| s.selected.saturating_sub(s.not_classified))
        .sum();
    let counts = match r.covid_fraction {
        Some(f) => format!(
            "{} of {} classified selected slices called COVID ({:.1}%); {} slices selected in all.",
            r.covid_slices,
            classified,
            f * 100.0,
            r.selected_slices
        ),
        None => format!("{} slices selected; no verdict.", r.selected_slices),
    };
    c.text(&counts, true, INK);
    if let Some(reason) = &r.reason {
        c.text(&format!("Why undetermined: {reason}"), false, INK);
    }
    c.text(&format!("Rule: {}", r.rule), false, INK);
    c.text(
        &format!("Model: {} {}, sha256 {}", r.model.name, r.model.version, r.model.sha256),
        false,
        INK,
    );
    c.text(&format!("Made: {}. {}.", input.time, r.notice), false, INK);
    c.text(
        &format!(
            "Frames: orange = slice called COVID (P(COVID) >= {:.2}), green = not, grey = not classified. \
             Orange tint, outlined in white, on a COVID slice: where the model's evidence towards COVID is strongest (its evidence map).",
            input.threshold
        ),
        false,
        INK,
    );
    c.gap(12);
    let cols = ((SHEET_WIDTH - 2 * MARGIN as u32) / CELL_W).max(1) as usize;
    let label_chars = (CELL_W as usize - 6) / SMALL.0 as usize;
    let mut drawn = 0usize;
    let mut left_out = 0usize;
    for (si, s) in r.series.iter().enumerate() {
        c.text(&series_line(s), false, INK);
        if let Some(why) = s.excluded.as_ref().or(s.rejected.as_ref()) {
            c.text(&format!("Not used: {why}"), false, INK);
            c.gap(10);
            continue;
        }
        c.gap(4);
        let mut col = 0usize;
        for (k, sl) in s.slices.iter().enumerate() {
            if !sl.selected {
                continue;
            }
            if drawn >= MAX_TILES {
                left_out += 1;
                continue;
            }
            drawn += 1;
            let x = MARGIN + (col as u32 * CELL_W) as i32;
            let (frame, p_text) = match (sl.p_covid, &sl.not_classified) {
                (Some(p), _) if p >= input.threshold => (COVID_FRAME, format!("P {p:.2} COVID")),
                (Some(p), _) => (NORMAL_FRAME, format!("P {p:.2}")),
                (None, Some(why)) => (NOT_CLASSIFIED_FRAME, format!("n/c: {why}")),
                (None, None) => (NOT_CLASSIFIED_FRAME, "not classified".to_string()),
            };
            c.items.push(Item::Fill {
                x,
                y: c.y,
                w: TILE_SIDE + 2 * FRAME,
                h: TILE_SIDE + 2 * FRAME,
                color: frame,
            });
            match thumbnail(si, k) {
                Some(t) => c.items.push(Item::Image {
                    x: x + FRAME as i32,
                    y: c.y + FRAME as i32,
                    side: TILE_SIDE,
                    thumbnail: t,
                }),
                None => c.items.push(Item::Fill {
                    x: x + FRAME as i32,
                    y: c.y + FRAME as i32,
                    w: TILE_SIDE,
                    h: TILE_SIDE,
                    color: Rgb565::BLACK,
                }),
            }
            let label_y = c.y + (TILE_SIDE + 2 * FRAME) as i32 + 3;
            let lungs = match sl.evidence.as_ref().and_then(|e| e.in_lungs) {
                Some(f) => format!("evidence in lungs {:.0}%", f * 100.0),
                None => String::new(),
            };
            let px = label_chars as u32 * SMALL.0;
            for (i, line) in [
                fit(&sl.file, SMALL.0, px),
                fit(&p_text, SMALL.0, px),
                fit(&lungs, SMALL.0, px),
            ]
            .into_iter()
            .enumerate()
            {
                c.items.push(Item::Text {
                    x,
                    y: label_y + i as i32 * 12,
                    text: line,
                    big: false,
                    scale: 1,
                    color: INK,
                });
            }
            col += 1;
            if col == cols {
                col = 0;
                c.y += CELL_H as i32;
            }
        }
        if col > 0 {
            c.y += CELL_H as i32;
        }
        c.gap(10);
    }
    if left_out > 0 {
        c.text(
            &format!("{left_out} more selected slices are not drawn (at most {MAX_TILES} per sheet); the JSON lists them all."),
            false,
            INK,
        );
    }
    c.text("RESEARCH USE ONLY - NOT A DIAGNOSIS", true, INK);
    let height = (c.y + MARGIN) as u32;
    let mut items = vec![Item::Fill {
        x: 0,
        y: 0,
        w: SHEET_WIDTH,
        h: height,
        color: BACKGROUND,
    }];
    items.extend(c.items);
    (items, height)
}

/// Lay out and draw the sheet.
pub fn render(input: &SheetInput<'_>, thumbnail: &mut dyn FnMut(usize, usize) -> Option<Thumbnail>) -> Canvas {
    let (items, height) = layout(input, thumbnail);
    let mut canvas = Canvas::new(SHEET_WIDTH, height);
    let _ = draw(&items, &mut canvas); // drawing on a Canvas cannot fail
    canvas
}

/// Render the sheet and write it as a PNG file, atomically.
pub fn write(
    path: &Path,
    input: &SheetInput<'_>,
    thumbnail: &mut dyn FnMut(usize, usize) -> Option<Thumbnail>,
) -> Result<(), DisplayError> {
    super::display::save_png(&render(input, thumbnail), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_tints_only_where_it_is_strong_and_only_positive_evidence() {
        use crate::report::SliceEvidence;
        let gray = vec![100u16 + 1024; 64 * 64];
        let t = Thumbnail::from_stored(&gray, 64, 64, 8);
        let e = SliceEvidence {
            grid: [2, 2],
            map: vec![2.0, 0.1, -3.0, 1.0],
            view: [0.0, 0.0, 64.0, 64.0],
            peak: [16.0, 16.0],
            in_lungs: None,
            peak_in_lungs: None,
        };
        let h = t.clone().with_evidence(&e, 64, 64).heat;
        assert_eq!(h.len(), 64);
        assert_eq!(h[0], 255, "the strongest cell");
        assert_eq!(h[7 * 8], 0, "negative evidence is not shown");
        assert_eq!(h[7 * 8 + 7], 128, "half the strongest");
        assert!(
            h[7] < super::super::display::HEAT_FLOOR,
            "weak evidence below the floor"
        );
        let none = SliceEvidence {
            map: vec![-1.0; 4],
            ..e
        };
        assert!(
            t.with_evidence(&none, 64, 64).heat.is_empty(),
            "no positive evidence: no overlay"
        );
    }

    #[test]
    fn wrap_keeps_words_and_cuts_only_words_longer_than_a_line() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), Vec::<String>::new());
        for line in wrap(
            "the patient is COVID iff at least this fraction of the selected slices",
            12,
        ) {
            assert!(line.chars().count() <= 12, "{line}");
        }
    }
}
