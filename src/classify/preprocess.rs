//! Slice → model input plane, exactly as the card says, in one place shared by the CLI, the
//! service and the self-test (and mirrored by `training/preprocess.py`, checked by a parity
//! test against committed Python outputs).
//!
//! 1. Window at native resolution: `hu_window`: HU = stored + intercept (-1024), then
//!    `clip((HU - (center - width/2)) / width, 0, 1)`; `raw_stored`: the stored value as f32.
//!    8-bit images are taken as already windowed: value / 255.
//! 2. Box (area-average) resize to the input size, rows first then columns, with fractional
//!    coverage at the edges; for 512 → 256 it is the exact mean of each 2x2 block.

use serde::Deserialize;

/// The card's `[preprocessing]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocessing {
    HuWindow {
        center: f32,
        width: f32,
        #[serde(default = "default_intercept")]
        stored_intercept: f32,
        /// `lung`: the model was trained on lung-framed slices (`crate::lung`; applied by the
        /// pipeline before the window). Absent: the whole slice, box-resized.
        #[serde(default)]
        frame: Frame,
        /// With `frame = "lung"`: what the frame shows outside the lung mask (`air`, the
        /// default, or `keep`: the tissue as it is; see [`Outside`]).
        #[serde(default)]
        outside: Outside,
        /// How 8-bit inputs relate to the window, in words: descriptive.
        #[serde(default)]
        eight_bit: Option<String>,
    },
    RawStored {},
}

/// What a lung frame shows outside the lung mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outside {
    /// Air (-1000 HU): the model sees the lungs only.
    #[default]
    Air,
    /// The slice as it is (only what lies past the image's edge is air). The threshold mask
    /// leaves out dense subpleural consolidation touching the chest wall, the typical COVID-19
    /// finding; keeping the tissue keeps that evidence while the frame still fixes the scale.
    Keep,
}

/// What part of the slice the model sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    #[default]
    Whole,
    /// A 320 mm square around the lung mask, everything outside the lungs set to air.
    Lung,
}

fn default_intercept() -> f32 {
    -1024.0
}

impl Preprocessing {
    /// The framing the card asks for.
    pub fn frame(&self) -> Frame {
        match self {
            Preprocessing::HuWindow { frame, .. } => *frame,
            Preprocessing::RawStored {} => Frame::Whole,
        }
    }

    /// What a lung frame shows outside the mask.
    pub fn outside(&self) -> Outside {
        match self {
            Preprocessing::HuWindow { outside, .. } => *outside,
            Preprocessing::RawStored {} => Outside::Air,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Preprocessing::HuWindow {
                center,
                width,
                stored_intercept,
                ..
            } => {
                if !(width.is_finite() && *width > 0.0 && center.is_finite() && stored_intercept.is_finite()) {
                    return Err(format!("preprocessing: hu_window needs a finite center and a positive width (center {center}, width {width})"));
                }
                Ok(())
            }
            Preprocessing::RawStored {} => Ok(()),
        }
    }

    /// Window stored 16-bit values into `out` (same length), at native resolution.
    pub fn window_stored(&self, stored: &[u16], out: &mut Vec<f32>) {
        out.clear();
        match *self {
            Preprocessing::HuWindow {
                center,
                width,
                stored_intercept,
                ..
            } => {
                let lo = center - width / 2.0;
                out.extend(
                    stored
                        .iter()
                        .map(|&v| ((v as f32 + stored_intercept - lo) / width).clamp(0.0, 1.0)),
                );
            }
            Preprocessing::RawStored {} => out.extend(stored.iter().map(|&v| v as f32)),
        }
    }
}

/// 8-bit image already in the card's representation → [0, 1].
pub fn window_8bit(gray: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(gray.iter().map(|&v| v as f32 / 255.0));
}

/// `(n_out, n_in)` box weights, row-major: output `i` averages input cells `[i*s, (i+1)*s)`,
/// `s = n_in / n_out`, with fractional coverage at the edges. Computed in f64, stored as f32,
/// like the Python side. Also used by `crate::lung` for the lung frame.
pub(crate) fn box_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            let (a, b) = (i as f64 * s, (i + 1) as f64 * s);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(n_in);
            let w: Vec<f64> = (first..last).map(|j| b.min(j as f64 + 1.0) - a.max(j as f64)).collect();
            let sum: f64 = w.iter().sum();
            (first, w.iter().map(|x| (x / sum) as f32).collect())
        })
        .collect()
}

/// Area-average resize of a row-major `h x w` plane to `out_h x out_w`.
pub fn box_resize(img: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    debug_assert_eq!(img.len(), h * w);
    if (h, w) == (out_h, out_w) {
        return img.to_vec();
    }
    let rw = box_weights(h, out_h);
    let mut rows = vec![0f32; out_h * w];
    for (i, (first, ws)) in rw.iter().enumerate() {
        let dst = &mut rows[i * w..(i + 1) * w];
        for (k, &wt) in ws.iter().enumerate() {
            let src = &img[(first + k) * w..(first + k + 1) * w];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += wt * s);
        }
    }
    let cw = box_weights(w, out_w);
    let mut out = vec![0f32; out_h * out_w];
    for r in 0..out_h {
        let src = &rows[r * w..(r + 1) * w];
        for (c, (first, ws)) in cw.iter().enumerate() {
            out[r * out_w + c] = ws.iter().zip(&src[*first..]).map(|(wt, s)| wt * s).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hu_window_maps_the_window_edges_to_0_and_1() {
        let p = Preprocessing::HuWindow {
            center: -500.0,
            width: 1500.0,
            stored_intercept: -1024.0,
            frame: Frame::Whole,
            outside: Outside::Air,
            eight_bit: None,
        };
        let mut out = Vec::new();
        // Window -1250..+250 HU. Stored 0 = -1024 HU (inside: 226/1500); HU 0 (stored 1024)
        // = 1250/1500; +250 HU = 1; -500 HU = 0.5; above the window clips to 1.
        p.window_stored(&[0, 1024, 1024 + 250, 1024 - 500, 4000], &mut out);
        assert!((out[0] - 226.0 / 1500.0).abs() < 1e-6);
        assert!((out[1] - 1250.0 / 1500.0).abs() < 1e-6);
        assert_eq!(out[2], 1.0);
        assert!((out[3] - 0.5).abs() < 1e-6);
        assert_eq!(out[4], 1.0);
    }

    #[test]
    fn box_resize_halving_is_the_2x2_mean() {
        let img: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = box_resize(&img, 4, 4, 2, 2);
        assert_eq!(out, vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn box_resize_non_integer_ratio_keeps_a_constant_image_constant() {
        let img = vec![0.7f32; 5 * 7];
        let out = box_resize(&img, 5, 7, 3, 2);
        assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn box_resize_identity_when_sizes_match() {
        let img: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(box_resize(&img, 2, 3, 2, 3), img);
    }
}
