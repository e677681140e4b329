//! The result screen's picture of a slice: lung-windowed grayscale with the evidence overlay
//! (tint and outline), drawn by the layout above.

use super::*;

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
pub(super) const OUTLINE: Rgb565 = Rgb565::WHITE;

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

    pub(super) fn at(&self, x: u32, y: u32, side: u32) -> Rgb565 {
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
