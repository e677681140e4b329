//! The bedside screen: what the radiographer sees. Screens are laid out as a list of items
//! ([`layout`], pure, testable for overflow) and drawn with `embedded-graphics` onto a
//! [`Canvas`]; a backend then shows the canvas (PNG file, Linux framebuffer, or nothing).
//!
//! Every layout adapts to the panel (240x240 up to 1024x600): fonts and the verdict's scale
//! are chosen from the width, and every string is shortened with "..." to fit, so nothing is
//! clipped. The verdict is written in words as well as coloured, so it reads without colour.

use std::path::{Path, PathBuf};

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::{Rgb565, RgbColor};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

pub use super::canvas::Canvas;
use crate::decide::Verdict;

/// The panel sizes the layouts are made and tested for.
pub const PANEL_SIZES: [(u32, u32); 5] = [(240, 240), (320, 240), (480, 320), (800, 480), (1024, 600)];

/// What the screen shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    Booting,
    SelfTestFailed {
        reason: String,
    },
    Idle {
        drop: String,
        model: String,
        last_result: Option<String>,
        /// The results page's certificate, as the operator compares it with the browser's
        /// (`service::web`): the first 16 bytes of its SHA-256, colon-separated, shown on two
        /// lines of 8; `None` without a page.
        web: Option<String>,
    },
    Receiving {
        patient: String,
        files: usize,
    },
    Processing {
        patient: String,
        series: String,
        done: usize,
        of: usize,
        elapsed_s: u64,
    },
    Result {
        patient: String,
        verdict: Verdict,
        covid_fraction: Option<f64>,
        selected: usize,
        model: String,
        time: String,
        /// The selected slice with the highest P(COVID), lung-windowed.
        thumbnail: Option<Thumbnail>,
    },
    Fault {
        reason: String,
    },
}

impl Screen {
    /// A short file-name-friendly name.
    pub fn name(&self) -> &'static str {
        match self {
            Screen::Booting => "booting",
            Screen::SelfTestFailed { .. } => "selftest-failed",
            Screen::Idle { .. } => "idle",
            Screen::Receiving { .. } => "receiving",
            Screen::Processing { .. } => "processing",
            Screen::Result { .. } => "result",
            Screen::Fault { .. } => "fault",
        }
    }
}

/// One laid-out element.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Fill {
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        color: Rgb565,
    },
    Text {
        x: i32,
        y: i32,
        text: String,
        big: bool,
        scale: u32,
        color: Rgb565,
    },
    /// A grayscale thumbnail drawn as a `side` x `side` square.
    Image {
        x: i32,
        y: i32,
        side: u32,
        thumbnail: Thumbnail,
    },
}

pub use backend::{save_png, Backend, DisplayError, Framebuffer};
pub use thumbnail::{Thumbnail, EVIDENCE_LEGEND, HEAT_FLOOR};

mod backend;
mod thumbnail;

impl Item {
    /// Right edge in pixels (for the overflow checks).
    pub fn right(&self) -> i32 {
        match self {
            Item::Fill { x, w, .. } => x + *w as i32,
            Item::Image { x, side, .. } => x + *side as i32,
            Item::Text {
                x, text, big, scale, ..
            } => x + (text.chars().count() as u32 * font(*big).character_size.width * scale) as i32,
        }
    }
}

fn font(big: bool) -> &'static MonoFont<'static> {
    if big {
        &FONT_10X20
    } else {
        &FONT_6X10
    }
}

/// Shorten `text` with "..." so that `chars * char_w <= max_px`.
pub fn fit(text: &str, char_w: u32, max_px: u32) -> String {
    let max = (max_px / char_w.max(1)) as usize;
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    if max <= 3 {
        return ".".repeat(max);
    }
    let mut s: String = text.chars().take(max - 3).collect();
    s.push_str("...");
    s
}

const NOTICE_LINE: &str = "RESEARCH USE ONLY - NOT A DIAGNOSIS";

/// Lay out `screen` for a `w` x `h` panel.
pub fn layout(screen: &Screen, w: u32, h: u32) -> Vec<Item> {
    let big_body = w >= 480;
    let body = font(big_body);
    let (cw, ch) = (body.character_size.width, body.character_size.height + 4);
    let margin = if w >= 480 { 16 } else { 6 };
    let text_w = w - 2 * margin as u32;
    let (title, color) = match screen {
        Screen::Booting => ("STARTING - SELF-TEST", Rgb565::new(8, 16, 20)),
        Screen::SelfTestFailed { .. } => ("SELF-TEST FAILED - DO NOT USE", Rgb565::RED),
        Screen::Idle { .. } => ("READY", Rgb565::new(0, 40, 0)),
        Screen::Receiving { .. } => ("RECEIVING", Rgb565::new(8, 16, 20)),
        Screen::Processing { .. } => ("PROCESSING", Rgb565::new(8, 16, 20)),
        Screen::Result { .. } => ("RESULT", Rgb565::new(8, 16, 20)),
        Screen::Fault { .. } => ("FAULT", Rgb565::new(31, 32, 0)),
    };
    let mut items = vec![
        Item::Fill {
            x: 0,
            y: 0,
            w,
            h,
            color: Rgb565::BLACK,
        },
        Item::Fill {
            x: 0,
            y: 0,
            w,
            h: ch + 8,
            color,
        },
        Item::Text {
            x: margin,
            y: 4,
            text: fit(title, cw, text_w),
            big: big_body,
            scale: 1,
            color: Rgb565::WHITE,
        },
    ];
    let mut y = (ch + 16) as i32;
    let line = |items: &mut Vec<Item>, y: &mut i32, text: String| {
        items.push(Item::Text {
            x: margin,
            y: *y,
            text: fit(&text, cw, text_w),
            big: big_body,
            scale: 1,
            color: Rgb565::WHITE,
        });
        *y += ch as i32;
    };
    match screen {
        Screen::Booting => line(&mut items, &mut y, "Checking model and hardware...".into()),
        Screen::SelfTestFailed { reason } | Screen::Fault { reason } => {
            for chunk in wrap(reason, (text_w / cw) as usize, 4) {
                line(&mut items, &mut y, chunk);
            }
        }
        Screen::Idle {
            drop,
            model,
            last_result,
            web,
        } => {
            line(&mut items, &mut y, format!("Drop: {drop}"));
            line(&mut items, &mut y, format!("Model: {model}"));
            line(
                &mut items,
                &mut y,
                format!("Last result: {}", last_result.as_deref().unwrap_or("none yet")),
            );
            if let Some(w) = web {
                let pairs: Vec<&str> = w.split(':').collect();
                for (i, chunk) in pairs.chunks(8).enumerate() {
                    let head = if i == 0 { "Web cert:" } else { "         " };
                    line(&mut items, &mut y, format!("{head} {}", chunk.join(":")));
                }
            }
        }
        Screen::Receiving { patient, files } => {
            line(&mut items, &mut y, format!("Patient: {patient}"));
            line(&mut items, &mut y, format!("Files so far: {files}"));
        }
        Screen::Processing {
            patient,
            series,
            done,
            of,
            elapsed_s,
        } => {
            line(&mut items, &mut y, format!("Patient: {patient}"));
            line(&mut items, &mut y, format!("Series: {series}"));
            line(
                &mut items,
                &mut y,
                format!("Classified {done} of {of} selected slices, {elapsed_s} s"),
            );
            let bar_w = text_w;
            let filled = if *of == 0 {
                0
            } else {
                (bar_w as u64 * (*done).min(*of) as u64 / *of as u64) as u32
            };
            items.push(Item::Fill {
                x: margin,
                y,
                w: bar_w,
                h: ch,
                color: Rgb565::new(6, 12, 6),
            });
            items.push(Item::Fill {
                x: margin,
                y,
                w: filled,
                h: ch,
                color: Rgb565::new(8, 40, 28),
            });
        }
        Screen::Result {
            patient,
            verdict,
            covid_fraction,
            selected,
            model,
            time,
            thumbnail,
        } => {
            line(&mut items, &mut y, format!("Patient: {patient}"));
            let (word, vcolor) = match verdict {
                Verdict::Covid => ("COVID-19 PATTERN", Rgb565::new(31, 20, 0)),
                Verdict::Normal => ("NO COVID-19 PATTERN", Rgb565::new(0, 50, 8)),
                Verdict::Undetermined => ("UNDETERMINED", Rgb565::new(24, 48, 24)),
            };
            let big_w = FONT_10X20.character_size.width;
            let scale = (text_w / (word.len() as u32 * big_w)).clamp(1, 3);
            let fitted = fit(word, big_w * scale, text_w);
            items.push(Item::Text {
                x: margin,
                y,
                text: fitted,
                big: true,
                scale,
                color: vcolor,
            });
            y += (FONT_10X20.character_size.height * scale + 6) as i32;
            // The thumbnail sits bottom-right, below the verdict and above the notice; the
            // lines beside it are shortened to leave it room.
            let notice_y = h as i32 - body.character_size.height as i32 - 6;
            let room = (notice_y - 6 - y).max(0) as u32;
            let side = thumbnail.as_ref().map_or(0, |_| room.min(w * 2 / 5));
            let lines_w = if side >= 32 {
                text_w - side - margin as u32
            } else {
                text_w
            };
            let frac = covid_fraction.map_or("n/a".to_string(), |f| format!("{:.0}%", f * 100.0));
            let legend = thumbnail
                .as_ref()
                .filter(|t| side >= 32 && t.heat.iter().any(|&h| h >= HEAT_FLOOR))
                .map(|_| EVIDENCE_LEGEND.to_string());
            for text in [
                format!("COVID {frac} of {selected} slices"),
                format!("Model: {model}"),
                format!("Time: {time}"),
            ]
            .into_iter()
            .chain(legend)
            {
                items.push(Item::Text {
                    x: margin,
                    y,
                    text: fit(&text, cw, lines_w),
                    big: big_body,
                    scale: 1,
                    color: Rgb565::WHITE,
                });
                y += ch as i32;
            }
            if let (Some(t), true) = (thumbnail, side >= 32) {
                let (x, ty) = (w as i32 - margin - side as i32, notice_y - 6 - side as i32);
                items.push(Item::Image {
                    x,
                    y: ty,
                    side,
                    thumbnail: t.clone(),
                });
            }
        }
    }
    // The notice on every screen, at the bottom, in the body font (shortened only on panels
    // too narrow for it, which the shipped sizes are not).
    items.push(Item::Text {
        x: margin,
        y: h as i32 - body.character_size.height as i32 - 6,
        text: fit(NOTICE_LINE, cw, text_w),
        big: big_body,
        scale: 1,
        color: Rgb565::YELLOW,
    });
    items
}

/// Split `text` into at most `lines` lines of `width` characters (the last one shortened).
fn wrap(text: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    if out.len() > lines {
        let rest = out[lines - 1..].join(" ");
        out.truncate(lines - 1);
        out.push(rest);
    }
    out
}

/// Draws through to a target with every pixel as a `scale` x `scale` block (large type).
struct Scaled<'a, D> {
    target: &'a mut D,
    scale: i32,
    origin: Point,
}

impl<D: DrawTarget<Color = Rgb565>> OriginDimensions for Scaled<'_, D> {
    fn size(&self) -> Size {
        self.target.bounding_box().size
    }
}

impl<D: DrawTarget<Color = Rgb565>> DrawTarget for Scaled<'_, D> {
    type Color = Rgb565;
    type Error = D::Error;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(&mut self, pixels: I) -> Result<(), D::Error> {
        let (s, o) = (self.scale, self.origin);
        for Pixel(p, c) in pixels {
            let top_left = o + Point::new((p.x - o.x) * s, (p.y - o.y) * s);
            self.target
                .fill_solid(&Rectangle::new(top_left, Size::new(s as u32, s as u32)), c)?;
        }
        Ok(())
    }
}

/// Render laid-out items onto any RGB565 target.
pub fn draw<D: DrawTarget<Color = Rgb565>>(items: &[Item], target: &mut D) -> Result<(), D::Error> {
    for item in items {
        match item {
            Item::Image { x, y, side, thumbnail } => {
                let area = Rectangle::new(Point::new(*x, *y), Size::new(*side, *side));
                let colors = (0..*side)
                    .flat_map(|py| (0..*side).map(move |px| (px, py)))
                    .map(|(px, py)| thumbnail.at(px, py, *side));
                target.fill_contiguous(&area, colors)?;
            }
            Item::Fill { x, y, w, h, color } => {
                Rectangle::new(Point::new(*x, *y), Size::new(*w, *h))
                    .into_styled(PrimitiveStyle::with_fill(*color))
                    .draw(target)?;
            }
            Item::Text {
                x,
                y,
                text,
                big,
                scale,
                color,
            } => {
                let style = MonoTextStyle::new(font(*big), *color);
                let at = Point::new(*x, *y);
                if *scale > 1 {
                    let mut scaled = Scaled {
                        target,
                        scale: *scale as i32,
                        origin: at,
                    };
                    Text::with_baseline(text, at, style, Baseline::Top).draw(&mut scaled)?;
                } else {
                    Text::with_baseline(text, at, style, Baseline::Top).draw(target)?;
                }
            }
        }
    }
    Ok(())
}

/// Lay out and render a screen into a new canvas.
pub fn render(screen: &Screen, width: u32, height: u32) -> Canvas {
    let mut c = Canvas::new(width, height);
    let _ = draw(&layout(screen, width, height), &mut c); // Canvas drawing cannot fail
    c
}

/// Every screen with sample data (for `display-demo` and the golden tests).
pub fn sample_screens() -> Vec<Screen> {
    vec![
        Screen::Booting,
        Screen::SelfTestFailed {
            reason: "known_answers: phantom 3: P(COVID) 0.1200, expected 0.8410 (log-odds off by 3.6)".into(),
        },
        Screen::Idle {
            drop: "/srv/ctsentinel/drop".into(),
            model: "ctsentinel-fpn256 1.0.0".into(),
            last_result: Some("2026-11-28 10:42".into()),
            web: None,
        },
        Screen::Receiving {
            patient: "ctmd_P001".into(),
            files: 37,
        },
        Screen::Processing {
            patient: "ctmd_P001".into(),
            series: "SR_1".into(),
            done: 12,
            of: 30,
            elapsed_s: 4,
        },
        Screen::Result {
            patient: "ctmd_P001".into(),
            verdict: Verdict::Covid,
            covid_fraction: Some(0.867),
            selected: 30,
            model: "ctsentinel-fpn256 1.0.0".into(),
            time: "2026-11-28 10:43".into(),
            // The phantom with an illustrative evidence map on its first ground-glass blob
            // (x 176, y 180): what the overlay looks like, not a model's output.
            thumbnail: Some(
                Thumbnail::from_stored(&crate::classify::phantom::phantom(2), 512, 512, 128).with_evidence(
                    &crate::report::SliceEvidence {
                        grid: [8, 8],
                        map: (0..64)
                            .map(|k| match (k / 8, k % 8) {
                                (2, 2) => 1.0,
                                (2, 3) | (3, 2) => 0.6,
                                (r, _) if r > 5 => -0.5,
                                _ => 0.1,
                            })
                            .collect(),
                        view: [0.0, 0.0, 512.0, 512.0],
                        peak: [160.0, 160.0],
                        in_lungs: Some(1.0),
                        peak_in_lungs: Some(true),
                    },
                    512,
                    512,
                ),
            ),
        },
        Screen::Fault {
            reason: "disk low: 80 MiB free, floor 512 MiB: not accepting new series".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::thumbnail::OUTLINE;
    use super::*;

    #[test]
    fn evidence_region_is_outlined_so_it_reads_without_colour() {
        let mut t = Thumbnail {
            side: 8,
            gray: vec![60; 64],
            heat: vec![0; 64],
        };
        for y in 2..6 {
            for x in 2..6 {
                t.heat[y * 8 + x] = 255;
            }
        }
        let plain = t.at(0, 0, 8);
        assert_eq!(t.at(2, 2, 8), OUTLINE, "the region's corner");
        assert_eq!(t.at(5, 3, 8), OUTLINE, "its right edge");
        let inner = t.at(3, 3, 8);
        assert!(inner != OUTLINE && inner != plain, "inside: tinted, not outline");
        assert_eq!(t.at(1, 3, 8), plain, "outside: plain gray");
        // Drawn larger than the thumbnail, the outline scales with it.
        assert_eq!(t.at(4, 4, 16), OUTLINE);
        assert_eq!(t.at(6, 6, 16), inner);
        // A region reaching the picture's edge is outlined along it.
        t.heat[0] = 255;
        assert_eq!(t.at(0, 0, 8), OUTLINE);
    }
}
