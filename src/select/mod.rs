//! Open-lung slice selection, exactly as in COVID-CTset (Rahimzadeh et al. 2020).
//!
//! For each slice, count the *dark* pixels (stored value `< 300`, i.e. HU < -724: air in the
//! lungs) in the region of interest rows 240..340 × columns 120..370 (end-exclusive; 25,000
//! pixels). Over one series, with `min` and `max` the smallest and largest counts, keep a slice
//! iff `count > (max - min) / 1.5`. We compute that in integers as `3*count > 2*(max-min)` so
//! there is no rounding at all; a one-slice series or one whose counts are all equal has
//! threshold 0 (a slice is kept iff it has any dark pixel).
//!
//! Pure functions over pixel buffers and counts: no I/O here. The constants of the method live
//! here, named, once.

mod kernel;

use std::ops::Range;

pub use kernel::{count_below, count_below_naive};

/// Rows of the region of interest (end-exclusive).
pub const ROI_ROWS: Range<usize> = 240..340;
/// Columns of the region of interest (end-exclusive).
pub const ROI_COLS: Range<usize> = 120..370;
/// Number of pixels in the region of interest.
pub const ROI_PIXELS: u32 = ((ROI_ROWS.end - ROI_ROWS.start) * (ROI_COLS.end - ROI_COLS.start)) as u32;
/// A pixel is dark when its stored value is strictly below this (HU -724 at intercept -1024).
pub const DARK_BELOW: u16 = 300;

/// Dark pixels of one slice in the paper's ROI. `pixels` is row-major with `width` columns.
///
/// # Panics
/// If the image does not contain the ROI; `ingest` refuses such images before they get here.
pub fn dark_pixels(pixels: &[u16], width: usize) -> u32 {
    count_below(pixels, width, ROI_ROWS, ROI_COLS, DARK_BELOW)
}

/// The per-series threshold, kept as the exact integers it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub min: u32,
    pub max: u32,
}

impl Threshold {
    /// Threshold over a series' counts; `None` for an empty series.
    pub fn of(counts: &[u32]) -> Option<Self> {
        let min = *counts.iter().min()?;
        let max = *counts.iter().max()?;
        Some(Self { min, max })
    }

    /// `(max - min) / 1.5`, for display only; decisions use [`Threshold::keeps`].
    pub fn value(&self) -> f64 {
        f64::from(self.max - self.min) / 1.5
    }

    /// `count > (max - min) / 1.5`, exactly: `3*count > 2*(max-min)` in 64-bit integers.
    pub fn keeps(&self, count: u32) -> bool {
        3 * u64::from(count) > 2 * u64::from(self.max - self.min)
    }
}

/// The outcome of selection over one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub threshold: Threshold,
    /// One flag per slice, in slice order.
    pub keep: Vec<bool>,
}

impl Selection {
    pub fn selected(&self) -> usize {
        self.keep.iter().filter(|&&k| k).count()
    }
}

/// Apply the paper's rule to the dark-pixel counts of one series, in slice order.
pub fn select(counts: &[u32]) -> Option<Selection> {
    let threshold = Threshold::of(counts)?;
    Some(Selection {
        threshold,
        keep: counts.iter().map(|&c| threshold.keeps(c)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_is_25000_pixels() {
        assert_eq!(ROI_PIXELS, 25_000);
    }

    #[test]
    fn keeps_strictly_above_threshold() {
        // max-min = 300 → threshold 200: 200 is not kept, 201 is.
        let s = select(&[0, 200, 201, 300]).unwrap();
        assert_eq!(s.threshold.value(), 200.0);
        assert_eq!(s.keep, [false, false, true, true]);
    }

    #[test]
    fn threshold_is_integer_exact_where_float_would_round() {
        // max-min = 1 → threshold 0.666..: count 1 kept (3 > 2), count 0 not.
        assert_eq!(select(&[0, 1]).unwrap().keep, [false, true]);
        // max-min = 3 → threshold exactly 2.0: 2 not kept, 3 kept.
        assert_eq!(select(&[0, 2, 3]).unwrap().keep, [false, false, true]);
        // Near the top of the range the float form (x / 1.5) and the integer form agree on the
        // boundary only because we never compute the float for decisions.
        let s = select(&[0, 16_666, 16_667, 25_000]).unwrap();
        assert_eq!(s.keep, [false, false, true, true]);
    }

    #[test]
    fn threshold_is_relative_to_min() {
        // min 1000, max 1300 → threshold (300)/1.5 = 200, so every slice is kept: counts are
        // compared with (max - min)/1.5, not with a value offset by min (the paper's code).
        assert_eq!(select(&[1000, 1300]).unwrap().keep, [true, true]);
    }

    #[test]
    fn one_slice_has_threshold_zero() {
        let s = select(&[5]).unwrap();
        assert_eq!(s.threshold.value(), 0.0);
        assert_eq!(s.keep, [true]);
        assert_eq!(select(&[0]).unwrap().keep, [false]);
    }

    #[test]
    fn all_equal_counts_have_threshold_zero() {
        assert_eq!(select(&[7, 7, 7]).unwrap().keep, [true, true, true]);
        assert_eq!(select(&[0, 0]).unwrap().keep, [false, false]);
    }

    #[test]
    fn empty_series_has_no_selection() {
        assert_eq!(select(&[]), None);
    }

    #[test]
    fn dark_pixels_counts_only_inside_roi_and_strictly_below_300() {
        let (w, h) = (512, 512);
        let mut img = vec![1000u16; w * h];
        // Corners of the ROI are dark, the pixels just outside it too (must not count).
        for (r, c) in [(240, 120), (339, 369), (240, 369), (339, 120)] {
            img[r * w + c] = 0;
        }
        for (r, c) in [(239, 120), (340, 120), (240, 119), (240, 370)] {
            img[r * w + c] = 0;
        }
        img[300 * w + 200] = 299; // dark
        img[300 * w + 201] = 300; // not dark
        assert_eq!(dark_pixels(&img, w), 5);
        let _ = h;
    }

    #[test]
    fn dark_pixels_full_roi_on_wider_image() {
        let w = 600;
        let img = vec![0u16; w * 400];
        assert_eq!(dark_pixels(&img, w), ROI_PIXELS);
    }
}
