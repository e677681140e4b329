//! Where a model input plane lies on its slice: what turns a model's evidence map (on the
//! plane) into a [`SliceEvidence`] on the slice, with the share inside the lung mask.

use crate::lung::LungFrame;
use crate::report::SliceEvidence;

/// Where a model input plane lies on its slice, and the slice's lung mask when kept: what
/// turns a model's evidence map into a [`SliceEvidence`].
pub(super) struct Placement {
    /// `[x0, y0, width, height]` in slice pixels.
    pub(super) view: [f64; 4],
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) mask: Option<Vec<bool>>,
}

impl Placement {
    pub(super) fn whole(width: usize, height: usize) -> Placement {
        Placement {
            view: [0.0, 0.0, width as f64, height as f64],
            width,
            height,
            mask: None,
        }
    }

    pub(super) fn framed(lungs: &LungFrame, keep_mask: bool) -> Placement {
        let view = match lungs.frame {
            Some(f) => [f.x0 as f64, f.y0 as f64, f.side as f64, f.side as f64],
            None => [0.0, 0.0, lungs.width as f64, lungs.height as f64],
        };
        Placement {
            view,
            width: lungs.width,
            height: lungs.height,
            mask: keep_mask.then(|| lungs.mask.clone()),
        }
    }

    /// Cell `(r, c)`'s centre in slice pixels.
    pub(super) fn centre(&self, e: &crate::classify::EvidenceMap, r: usize, c: usize) -> [f64; 2] {
        let [x0, y0, w, h] = self.view;
        [
            x0 + (c as f64 + 0.5) * w / e.cols as f64,
            y0 + (r as f64 + 0.5) * h / e.rows as f64,
        ]
    }

    /// Whether slice pixel `(x, y)` is in the kept lung mask (false without one).
    pub(super) fn in_lungs(&self, x: f64, y: f64) -> bool {
        self.mask.as_ref().is_some_and(|m| {
            x >= 0.0
                && y >= 0.0
                && (x as usize) < self.width
                && (y as usize) < self.height
                && m[y as usize * self.width + x as usize]
        })
    }

    pub(super) fn evidence(&self, e: &crate::classify::EvidenceMap) -> SliceEvidence {
        let mut peak = (0usize, f32::NEG_INFINITY);
        let (mut pos, mut inside) = (0f64, 0f64);
        for (k, &v) in e.values.iter().enumerate() {
            if v > peak.1 {
                peak = (k, v);
            }
            if v > 0.0 {
                pos += f64::from(v);
                let [x, y] = self.centre(e, k / e.cols, k % e.cols);
                if self.in_lungs(x, y) {
                    inside += f64::from(v);
                }
            }
        }
        let peak_at = self.centre(e, peak.0 / e.cols, peak.0 % e.cols);
        SliceEvidence {
            grid: [e.rows, e.cols],
            map: e.values.iter().map(|v| (v * 1e4).round() / 1e4).collect(),
            view: self.view,
            peak: peak_at,
            peak_in_lungs: self.mask.as_ref().map(|_| self.in_lungs(peak_at[0], peak_at[1])),
            in_lungs: match &self.mask {
                Some(_) if pos > 0.0 => Some((inside / pos) as f32),
                _ => None,
            },
        }
    }
}
