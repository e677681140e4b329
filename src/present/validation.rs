//! The site-validation page: one PNG a clinician reads (what was checked, how often the box was
//! right with its uncertainty, how often it gave no verdict, where its evidence lay, and every
//! patient), and the text summary. Renders a `validate::ValidationReport`; decides nothing.

use std::path::Path;

use embedded_graphics::pixelcolor::{Rgb565, RgbColor};

use super::display::{draw, fit, Canvas, DisplayError, Item};
use crate::validate::{Label, Proportion, ValidationReport};

const WIDTH: u32 = 1000;
const MARGIN: i32 = 24;
const LINE: i32 = 16;
const INK: Rgb565 = Rgb565::WHITE;
const DIM: Rgb565 = Rgb565::new(20, 40, 20);
const BACKGROUND: Rgb565 = Rgb565::new(2, 4, 3);
const BAR: Rgb565 = Rgb565::new(6, 36, 26);
const GOOD: Rgb565 = Rgb565::new(0, 44, 8);
const BAD: Rgb565 = Rgb565::new(31, 32, 0);

/// A proportion as people read it: `83% (5 of 6; 95% CI 44-97%)`.
pub fn pct(p: &Proportion) -> String {
    match p.value {
        Some(v) => format!(
            "{:.0}% ({} of {}; 95% CI {:.0}-{:.0}%)",
            v * 100.0,
            p.k,
            p.n,
            p.ci95[0] * 100.0,
            p.ci95[1] * 100.0
        ),
        None => "n/a (no patient with this label)".into(),
    }
}

/// The text summary `validate` prints without `--json`.
pub fn summary(r: &ValidationReport) -> String {
    let mut s = format!(
        "site validation of {} {} (sha256 {}) on {}\n",
        r.model.name, r.model.version, r.model.sha256, r.labels
    );
    for p in &r.patients {
        let verdict = p.verdict.map_or("error".to_string(), |v| v.to_string());
        let mark = match p.correct {
            Some(true) => "right",
            Some(false) => "WRONG",
            None => "-",
        };
        s.push_str(&format!(
            "  {:<40} label {:<6} verdict {:<12} {:<5} {}/{} COVID slices lung-driven{}\n",
            p.path,
            format!("{:?}", p.label).to_lowercase(),
            verdict,
            mark,
            p.lung_driven_covid_slices,
            p.covid_slices,
            p.reason
                .as_ref()
                .or(p.error.as_ref())
                .map_or(String::new(), |r| format!(" ({r})"))
        ));
    }
    s.push_str(&format!("sensitivity       {}\n", pct(&r.sensitivity)));
    s.push_str(&format!("specificity       {}\n", pct(&r.specificity)));
    s.push_str(&format!("undetermined      {}\n", pct(&r.undetermined)));
    s.push_str(&format!(
        "evidence in lungs {} of slices called COVID\n",
        pct(&r.evidence_in_lungs)
    ));
    if let Some(a) = &r.slices {
        s.push_str(&format!("slices: infected called COVID   {}\n", pct(&a.sensitivity)));
        s.push_str(&format!("slices: clear not called COVID  {}\n", pct(&a.specificity)));
        s.push_str("slices: reliability (P(COVID) bin: slices, mean P, share infected)\n");
        for b in a.reliability.iter().filter(|b| b.n > 0) {
            s.push_str(&format!(
                "  {:.1}-{:.1}: {:>4}  {:.2}  {:.2}\n",
                b.lo,
                b.hi,
                b.n,
                b.mean_p.unwrap_or_default(),
                b.observed.unwrap_or_default()
            ));
        }
        if let Some(e) = a.ece {
            s.push_str(&format!("slices: expected calibration error {e:.3}\n"));
        }
    }
    s.push_str("an undetermined verdict counts as a miss; `other` patients are in neither figure\n");
    s.push_str(&format!("{}\n", r.notice));
    s
}

fn text(items: &mut Vec<Item>, y: &mut i32, t: String, big: bool, color: Rgb565) {
    let (w, h) = if big { (10, 24) } else { (6, LINE) };
    items.push(Item::Text {
        x: MARGIN,
        y: *y,
        text: fit(&t, w, WIDTH - 2 * MARGIN as u32),
        big,
        scale: 1,
        color,
    });
    *y += h;
}

/// A 0..100% bar with the interval drawn over it; `judged`: green when its lower end is at
/// least 80%, orange otherwise (else neutral).
fn bar(items: &mut Vec<Item>, y: &mut i32, p: &Proportion, judged: bool) {
    let w = (WIDTH - 2 * MARGIN as u32) as f64;
    items.push(Item::Fill {
        x: MARGIN,
        y: *y,
        w: w as u32,
        h: 10,
        color: BAR,
    });
    if p.value.is_some() {
        let (lo, hi) = (p.ci95[0] * w, p.ci95[1] * w);
        items.push(Item::Fill {
            x: MARGIN + lo as i32,
            y: *y,
            w: ((hi - lo).max(2.0)) as u32,
            h: 10,
            color: match (judged, p.ci95[0] >= 0.8) {
                (false, _) => DIM,
                (true, true) => GOOD,
                (true, false) => BAD,
            },
        });
    }
    *y += 18;
}

/// The reliability diagram: per bin of P(COVID), a column as high as the share of its slices the
/// reference labels infected, beside a thin mark at the bin's mean P (where a calibrated model's
/// column would end); the slice count under each bin.
fn reliability(items: &mut Vec<Item>, y: &mut i32, a: &crate::validate::SliceAgreement) {
    const H: i32 = 120;
    const COL: i32 = 60;
    let ece = a.ece.map_or("n/a".into(), |e| format!("{e:.3}"));
    text(
        items,
        y,
        format!("Reliability of P(COVID) per slice (column: share infected; line: mean P; ECE {ece})"),
        false,
        INK,
    );
    let top = *y;
    for (i, b) in a.reliability.iter().enumerate() {
        let x = MARGIN + i as i32 * (COL + 8);
        items.push(Item::Fill {
            x,
            y: top,
            w: COL as u32,
            h: H as u32,
            color: BAR,
        });
        if let (Some(o), Some(m)) = (b.observed, b.mean_p) {
            let h = (o * f64::from(H)).round() as i32;
            items.push(Item::Fill {
                x,
                y: top + H - h,
                w: COL as u32,
                h: h.max(1) as u32,
                color: DIM,
            });
            let my = top + H - (m * f64::from(H)).round() as i32;
            items.push(Item::Fill {
                x,
                y: my.clamp(top, top + H - 2),
                w: COL as u32,
                h: 2,
                color: INK,
            });
        }
        items.push(Item::Text {
            x,
            y: top + H + 4,
            text: format!("{:.1}-{:.1} n{}", b.lo, b.hi, b.n),
            big: false,
            scale: 1,
            color: DIM,
        });
    }
    *y = top + H + 4 + LINE + 4;
}

/// Lay the page out and draw it.
pub fn render(r: &ValidationReport) -> Canvas {
    let mut items = Vec::new();
    let mut y = MARGIN;
    text(&mut items, &mut y, r.notice.to_uppercase(), false, BAD);
    text(&mut items, &mut y, "SITE VALIDATION".into(), true, INK);
    text(
        &mut items,
        &mut y,
        format!("model {} {}  sha256 {}", r.model.name, r.model.version, r.model.sha256),
        false,
        DIM,
    );
    text(&mut items, &mut y, format!("labels {}", r.labels), false, DIM);
    y += 8;
    for (name, p, judged) in [
        ("Sensitivity (COVID patients called COVID)", &r.sensitivity, true),
        ("Specificity (normal patients called normal)", &r.specificity, true),
        ("No verdict (undetermined or unreadable)", &r.undetermined, false),
        (
            "Evidence inside the lungs (slices called COVID)",
            &r.evidence_in_lungs,
            true,
        ),
    ] {
        text(&mut items, &mut y, format!("{name}: {}", pct(p)), false, INK);
        bar(&mut items, &mut y, p, judged);
    }
    text(
        &mut items,
        &mut y,
        "Bars: the 95% interval on 0-100%; green when its lower end is at least 80%, orange when not.".into(),
        false,
        DIM,
    );
    text(
        &mut items,
        &mut y,
        "An undetermined verdict counts as a miss; patients labelled other are in neither figure.".into(),
        false,
        DIM,
    );
    if let Some(a) = &r.slices {
        y += 8;
        for (name, p) in [
            (
                "Slices: infected slices called COVID (reference slice labels)",
                &a.sensitivity,
            ),
            ("Slices: clear slices not called COVID", &a.specificity),
        ] {
            text(&mut items, &mut y, format!("{name}: {}", pct(p)), false, INK);
            bar(&mut items, &mut y, p, true);
        }
        reliability(&mut items, &mut y, a);
    }
    y += 8;
    for p in &r.patients {
        let verdict = p.verdict.map_or("error".to_string(), |v| v.to_string());
        let (mark, color) = match p.correct {
            Some(true) => ("right", GOOD),
            Some(false) => ("WRONG", BAD),
            None => ("-", DIM),
        };
        let label = match p.label {
            Label::Covid => "covid",
            Label::Normal => "normal",
            Label::Other => "other",
        };
        text(
            &mut items,
            &mut y,
            format!(
                "{mark:<5} {label:<6} -> {verdict:<12} {}  ({}/{} COVID slices lung-driven)",
                p.path, p.lung_driven_covid_slices, p.covid_slices
            ),
            false,
            color,
        );
        if let Some(why) = p.reason.as_ref().or(p.error.as_ref()) {
            text(&mut items, &mut y, format!("        {why}"), false, DIM);
        }
    }
    let height = (y + MARGIN).max(480) as u32;
    let mut canvas = Canvas::new(WIDTH, height);
    let mut all = vec![Item::Fill {
        x: 0,
        y: 0,
        w: WIDTH,
        h: height,
        color: BACKGROUND,
    }];
    all.extend(items);
    let _ = draw(&all, &mut canvas); // drawing on a Canvas cannot fail
    canvas
}

/// Render the page and write it as a PNG, atomically.
pub fn write(path: &Path, r: &ValidationReport) -> Result<(), DisplayError> {
    super::display::save_png(&render(r), path)
}
