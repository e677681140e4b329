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

/// A lung-windowed grayscale picture of a slice (the result screen's representative slice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub side: u32,
    pub gray: Vec<u8>,
    /// Evidence overlay, one value per pixel (0 = none, 255 = the slice's strongest evidence
    /// towards COVID); empty when there is none. Drawn as an orange tint over the gray where it
    /// is at least [`HEAT_FLOOR`], outlined in white so the region reads without colour too
    /// (a monochrome panel, a black-and-white print of the report).
    pub heat: Vec<u8>,
}

/// Evidence below this share of the slice's strongest is not tinted (the map's weak cells
/// would otherwise tint the whole lung field).
pub const HEAT_FLOOR: u8 = 96;

/// The evidence region's outline: white, the brightest a panel shows, so the region reads in
/// black-and-white terms as well as by its orange tint.
const OUTLINE: Rgb565 = Rgb565::WHITE;

/// The result screen's legend line when its thumbnail carries evidence.
pub const EVIDENCE_LEGEND: &str = "Outlined: COVID evidence";

/// Lung window for the thumbnail: -1350..+150 HU (center -600, width 1500).
const THUMB_WINDOW: (f32, f32) = (-600.0, 1500.0);

impl Thumbnail {
    /// From a slice's stored values (HU + 1024), lung-windowed, box-resized to `side`.
    pub fn from_stored(pixels: &[u16], width: usize, height: usize, side: u32) -> Thumbnail {
        let pre = crate::classify::Preprocessing::HuWindow {
            center: THUMB_WINDOW.0,
            width: THUMB_WINDOW.1,
            stored_intercept: -1024.0,
            frame: crate::classify::preprocess::Frame::Whole,
            outside: crate::classify::preprocess::Outside::Air,
            eight_bit: None,
        };
        let mut plane = Vec::new();
        pre.window_stored(pixels, &mut plane);
        let small = crate::classify::preprocess::box_resize(&plane, height, width, side as usize, side as usize);
        Thumbnail {
            side,
            heat: Vec::new(),
            gray: small
                .iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }

    /// The evidence of `e` (placed on a `width` x `height` slice) as this thumbnail's overlay:
    /// positive evidence only, scaled to the slice's strongest cell.
    pub fn with_evidence(mut self, e: &crate::report::SliceEvidence, width: usize, height: usize) -> Thumbnail {
        let top = e.map.iter().copied().fold(0f32, f32::max);
        if top <= 0.0 {
            return self;
        }
        let n = self.side as usize;
        self.heat = (0..n * n)
            .map(|k| {
                let (tx, ty) = (k % n, k / n);
                let x = (tx as f64 + 0.5) * width as f64 / n as f64;
                let y = (ty as f64 + 0.5) * height as f64 / n as f64;
                let v = e.at(x, y).unwrap_or(0.0).max(0.0) / top;
                (v * 255.0).round().clamp(0.0, 255.0) as u8
            })
            .collect();
        self
    }

    fn at(&self, x: u32, y: u32, side: u32) -> Rgb565 {
        // Nearest neighbour from the thumbnail's own size to the drawn square.
        let (tx, ty) = (x * self.side / side.max(1), y * self.side / side.max(1));
        let n = self.side as usize;
        let (tx, ty) = (tx as usize, ty as usize);
        let i = ty * n + tx;
        let g = u32::from(self.gray[i]);
        let hot = |k: usize| self.heat.get(k).is_some_and(|&h| h >= HEAT_FLOOR);
        // A tinted pixel with an untinted 4-neighbour (or on the picture's edge) is outline.
        let edge = || {
            tx == 0 || ty == 0 || tx + 1 == n || ty + 1 == n || !(hot(i - 1) && hot(i + 1) && hot(i - n) && hot(i + n))
        };
        match self.heat.get(i) {
            Some(_) if hot(i) && edge() => OUTLINE,
            Some(&h) if h >= HEAT_FLOOR => {
                // Orange (255, 128, 0) over the gray, up to 60 % at the strongest evidence.
                let a = u32::from(h) * 60 / 100;
                let mix = |c: u32| ((g * (255 - a) + c * a) / 255) as u8;
                let (r, gg, b) = (mix(255), mix(128), mix(0));
                Rgb565::new(r >> 3, gg >> 2, b >> 3)
            }
            _ => {
                let g = g as u8;
                Rgb565::new(g >> 3, g >> 2, g >> 3)
            }
        }
    }
}

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
        } => {
            line(&mut items, &mut y, format!("Drop: {drop}"));
            line(&mut items, &mut y, format!("Model: {model}"));
            line(
                &mut items,
                &mut y,
                format!("Last result: {}", last_result.as_deref().unwrap_or("none yet")),
            );
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

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("{path}: {reason}")]
    Device { path: PathBuf, reason: String },
}

/// Where a rendered canvas goes.
pub enum Backend {
    None,
    /// Writes `<dir>/screen.png` (atomically) on every update; headless boxes and tests.
    Png {
        dir: PathBuf,
    },
    Framebuffer(Framebuffer),
    /// An SPI TFT panel on the box.
    Spi(Box<super::spi_panel::LinuxPanel>),
}

impl Backend {
    pub fn show(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        match self {
            Backend::None => Ok(()),
            Backend::Png { dir } => save_png(canvas, &dir.join("screen.png")),
            Backend::Framebuffer(fb) => fb.show(canvas),
            Backend::Spi(panel) => panel.show(canvas).map_err(|reason| DisplayError::Device {
                path: "spi".into(),
                reason,
            }),
        }
    }
}

/// Write a canvas as a PNG file, atomically.
pub fn save_png(canvas: &Canvas, path: &Path) -> Result<(), DisplayError> {
    let err = |reason: String| DisplayError::Device {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    image::RgbImage::from_raw(canvas.width, canvas.height, canvas.rgb8())
        .ok_or_else(|| err("canvas size mismatch".into()))?
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))?;
    super::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// A Linux framebuffer (`/dev/fbN`), pixel format and geometry read from sysfs
/// (`/sys/class/graphics/fbN/{bits_per_pixel,virtual_size,stride}`): 16 bpp RGB565 or
/// 32 bpp XRGB8888. No X server needed.
pub struct Framebuffer {
    device: PathBuf,
    pub bits_per_pixel: u32,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

impl Framebuffer {
    /// Open `device` with its sysfs folder (e.g. `/dev/fb0` and `/sys/class/graphics/fb0`).
    pub fn open(device: &Path, sysfs: &Path) -> Result<Framebuffer, DisplayError> {
        let err = |reason: String| DisplayError::Device {
            path: device.to_path_buf(),
            reason,
        };
        let read = |name: &str| {
            std::fs::read_to_string(sysfs.join(name))
                .map(|s| s.trim().to_string())
                .map_err(|e| err(format!("{}: {e}", sysfs.join(name).display())))
        };
        let bits_per_pixel: u32 = read("bits_per_pixel")?
            .parse()
            .map_err(|e| err(format!("bits_per_pixel: {e}")))?;
        let size = read("virtual_size")?;
        let (w, h) = size
            .split_once(',')
            .ok_or_else(|| err(format!("virtual_size {size:?}")))?;
        let width: u32 = w.parse().map_err(|e| err(format!("virtual_size: {e}")))?;
        let height: u32 = h.parse().map_err(|e| err(format!("virtual_size: {e}")))?;
        let stride: u32 = read("stride")?.parse().map_err(|e| err(format!("stride: {e}")))?;
        if !matches!(bits_per_pixel, 16 | 32) {
            return Err(err(format!(
                "{bits_per_pixel} bits per pixel is not supported (RGB565 or XRGB8888)"
            )));
        }
        if stride < width * bits_per_pixel / 8 {
            return Err(err(format!("stride {stride} is shorter than a row of {width} pixels")));
        }
        Ok(Framebuffer {
            device: device.to_path_buf(),
            bits_per_pixel,
            width,
            height,
            stride,
        })
    }

    /// Copy the canvas to the top-left of the framebuffer in its pixel format.
    pub fn show(&mut self, canvas: &Canvas) -> Result<(), DisplayError> {
        use std::io::{Seek, SeekFrom, Write};
        let err = |reason: String| DisplayError::Device {
            path: self.device.clone(),
            reason,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .map_err(|e| err(e.to_string()))?;
        let (w, h) = (canvas.width.min(self.width), canvas.height.min(self.height));
        let mut row = Vec::with_capacity((w * 4) as usize);
        for y in 0..h {
            row.clear();
            for x in 0..w {
                let p = canvas.pixels[(y * canvas.width + x) as usize];
                if self.bits_per_pixel == 16 {
                    row.extend_from_slice(&p.into_storage().to_le_bytes());
                } else {
                    let r = (p.r() << 3) | (p.r() >> 2);
                    let g = (p.g() << 2) | (p.g() >> 4);
                    let b = (p.b() << 3) | (p.b() >> 2);
                    row.extend_from_slice(&[b, g, r, 0]);
                }
            }
            f.seek(SeekFrom::Start(y as u64 * self.stride as u64))
                .map_err(|e| err(e.to_string()))?;
            f.write_all(&row).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
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
