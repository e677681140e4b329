//! The lung mask and the lung-framed model input (issue 13), between `select` and `classify`.
//!
//! **Why.** The shipped network learned the framing and physical scale of the few patients it
//! was trained on (body outline, table, field of view 0.59–0.84 mm/px) rather than what the lung
//! shows, and got unseen patients wrong. The remedy is to show it the lungs only, always at the
//! same physical scale: mask the lungs with a classical HU rule (no learned model, so it
//! cannot overfit either), crop a fixed-size square in millimetres around them and set
//! everything else to air. The same mask says when a slice cannot be framed (no lungs, one lung,
//! a field of view that cuts the body), so the appliance can refuse to classify it instead of
//! guessing. `training/lung.py` implements the same algorithm for training; `tests/lung_parity.rs`
//! keeps the two equal on real slices, and on a committed phantom fixture without Python.
//!
//! Not wired into classification yet: the shipped model was not trained on framed input.
//!
//! # The algorithm
//! Every step is a set operation on the pixel grid or integer arithmetic, so any correct
//! implementation gives the same mask bit for bit. "Connected" is always **4-connected**
//! (edge neighbours), for air, components and holes alike. The *border* is the set of pixels in
//! the first or last row or column. `s` is the pixel spacing in mm (square pixels), or
//! [`DEFAULT_SPACING_MM`] when unknown; it must lie in [`MIN_SPACING_MM`]..=[`MAX_SPACING_MM`].
//!
//! 1. **Air**: `HU = stored + intercept` (in f64; intercept default -1024, the COVID-CTset
//!    convention); a pixel is air iff `HU < AIR_BELOW_HU` (-400).
//! 2. **Outside**: the air pixels connected through air to an air pixel on the border. *Body* is
//!    everything else (tissue, and air enclosed by tissue), including the table and the arms.
//! 3. **Components**: the connected components of the air that is not outside. Order them by
//!    pixel count, descending, ties by the lowest raster index (`y * width + x`) of their first
//!    pixel; keep the first two whose count is `>= ceil(MIN_COMPONENT_MM2 / s²)` (f64).
//! 4. **Closing** of the kept components with the 3x3 square: dilation then erosion, each taken
//!    over the part of the 3x3 neighbourhood inside the image (outside pixels are ignored: they
//!    never add to the dilation nor veto the erosion; the closing therefore never removes a pixel).
//! 5. **Holes**: a non-mask pixel not connected through non-mask pixels to a non-mask border
//!    pixel becomes mask. Closing before filling means the final mask has no holes at all
//!    (vessels, nodules, consolidation enclosed by aerated lung are inside it).
//! 6. **Boxes**: `bbox` = the tight box of the mask, `[x0, x1) x [y0, y1)`. The *frame* is the
//!    square of side `S = max(x1-x0 + 2m, y1-y0 + 2m, ceil(FRAME_MM / s))`, `m =
//!    ceil(MARGIN_MM / s)`, placed at `x = x0 - floor((S - (x1-x0)) / 2)` and likewise in y
//!    (centred on the lungs). It is *not* clamped to the image: pixels of the frame outside the
//!    image are treated as outside the lungs, which they are, so the lungs stay centred and the
//!    scale stays fixed.
//! 7. **Plausibility**, the first that applies, with exact integer comparisons:
//!    [`Implausible::FieldOfViewCutsBody`] if `2 * body_border > perimeter` (more than half of
//!    the border pixels are body); [`Implausible::NoLungs`] if the mask is empty;
//!    [`Implausible::OneLung`] if `5 * min(left, right) < max(left, right)`, where `left` counts
//!    mask pixels with `x < mid`, `right` the rest, `mid = (bx0 + bx1) / 2` (floor) from the
//!    columns `[bx0, bx1)` that hold body pixels; [`Implausible::LungsTooSmall`] if `20 * lung <
//!    body`; [`Implausible::LungsTooLarge`] if `5 * lung > 4 * body` (areas in pixels).
//! 8. **Framed input** ([`LungMasker::framed_input`]): the frame's pixels, with every pixel outside
//!    the mask or outside the image replaced by the stored value of [`OUTSIDE_HU`] (air,
//!    `floor(-1000 - intercept + 0.5)` clamped to u16), windowed as the card says
//!    ([`Preprocessing::window_stored`]) and box-resized from `S x S` to the model size (the
//!    weights of `classify::preprocess`). Computed without materialising the frame: the
//!    constant air value plus the resized difference inside the mask, so memory depends on the
//!    image and model sizes only.
//!
//! # Why these constants
//! - `AIR_BELOW_HU = -400`: aerated lung is -950..-700 HU, soft tissue and fluid 0..+100, ground
//!   glass -750..-300; -400 sits between lung and tissue with room for partial-volume pixels at
//!   the pleura and keeps most ground glass inside directly (the rest is enclosed and filled).
//! - 4-connectivity: the stricter choice; a diagonal-only contact (a one-pixel chink in the skin
//!   or pleura) does not join two air regions.
//! - `MIN_COMPONENT_MM2 = 500`: larger than the adult tracheal lumen (at most about 25 mm across,
//!   under 500 mm²) and the main bronchi, so the airway alone never counts as a lung; a lung in
//!   any slice worth classifying is far larger. Gas in the bowel or stomach can exceed it: such
//!   basal slices usually fail `OneLung` (both pieces on one side) or are legitimately framed.
//! - `DEFAULT_SPACING_MM = 0.7`: the middle of the usual adult chest field of view (300–420 mm
//!   over 512 px); it only sets the minimum area, margin and frame size when spacing is unknown.
//! - `MARGIN_MM = 10`: the pleura and a centimetre of chest wall, where subpleural disease lies.
//! - `FRAME_MM = 320`: the inner thoracic width of nearly every adult is under 300 mm, so the
//!   lungs plus margin fit in 320 mm and every patient is seen at `320 / size` mm per model pixel
//!   (1.25 mm at 256); lungs larger than that grow the frame rather than being cut.
//! - `OUTSIDE_HU = -1000`: what is not lung becomes air, the value air has anyway, so framing
//!   adds no new intensity (and a window whose floor is air maps it to 0).
//! - Plausibility: a whole-chest reconstruction includes the skin, so the body reaches the border
//!   only where the table and arms do (at most a third of the border in the shared series);
//!   more than half means the field of view cuts the chest and lungs touching the border were
//!   removed as outside air. The left lung is about 45% of lung volume, and in a healthy chest
//!   neither side's cross-section falls below about half of the other's inside the open-lung
//!   range; consolidation or effusion on one side lowers that (to a third in one shared
//!   pneumonia slice), so only under one fifth counts as one lung (or one lung's apex/base). The
//!   side split uses the body's middle column, not components, because the two lungs often
//!   touch at the anterior junction and form one component. Lungs fill roughly 20–60% of the
//!   body cross-section in the chest; under 5% is above the apices or below the bases; over 80%
//!   leaves no room for the chest wall and mediastinum. These are anatomical bounds, not fitted
//!   to any patient; slices at the very top or bottom of the chest are expected to fail them.
//!
//! Limitations (classical threshold masks): dense consolidation or effusion touching the chest
//! wall is not enclosed by aerated lung and stays outside the mask; when both the anterior and
//! posterior junction lines are thinner than a pixel, the mediastinum between them is enclosed
//! and filled. A lung cut by the image border cannot be told from outside air and is removed
//! with it: a field of view through the lungs that leaves most of the border to air ends as
//! `NoLungs` or `OneLung` rather than `FieldOfViewCutsBody` (still implausible, so never framed
//! as if whole). Gas in the stomach or bowel at the bases can be taken for a lung.

mod morph;
pub mod phantom;

use morph::{border_indices, flood};
pub(crate) use morph::{close3x3, fill_holes};

use serde::Serialize;

use crate::classify::preprocess::{box_weights, Preprocessing};
use crate::ingest::Slice;

/// Air is `HU < AIR_BELOW_HU`.
pub const AIR_BELOW_HU: f64 = -400.0;
/// `HU = stored + intercept` when the format does not say otherwise (COVID-CTset, our ct16).
pub const DEFAULT_INTERCEPT: f64 = -1024.0;
/// Pixel spacing assumed when it is unknown (TIFF).
pub const DEFAULT_SPACING_MM: f64 = 0.7;
/// Smallest accepted pixel spacing.
pub const MIN_SPACING_MM: f64 = 0.1;
/// Largest accepted pixel spacing.
pub const MAX_SPACING_MM: f64 = 5.0;
/// A component smaller than this is not a lung (the trachea is smaller).
pub const MIN_COMPONENT_MM2: f64 = 500.0;
/// Margin around the lungs' box.
pub const MARGIN_MM: f64 = 10.0;
/// Side of the framed square, unless the lungs plus margin are larger.
pub const FRAME_MM: f64 = 320.0;
/// What every pixel outside the lungs becomes in the framed input.
pub const OUTSIDE_HU: f64 = -1000.0;
/// [`Implausible::FieldOfViewCutsBody`] when `body_border / perimeter > 1/2`.
pub const BODY_BORDER_MAX: (u64, u64) = (1, 2);
/// [`Implausible::OneLung`] when `smaller side / larger side < 1/5`.
pub const SIDE_MIN: (u64, u64) = (1, 5);
/// [`Implausible::LungsTooSmall`] when `lung / body < 1/20`.
pub const LUNG_BODY_MIN: (u64, u64) = (1, 20);
/// [`Implausible::LungsTooLarge`] when `lung / body > 4/5`.
pub const LUNG_BODY_MAX: (u64, u64) = (4, 5);

/// Why a slice's input or request cannot be processed at all (an implausible mask is not an
/// error: it is a verdict, [`Implausible`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LungError {
    #[error("slice is {width}x{height} but holds {len} pixels")]
    Shape { width: usize, height: usize, len: usize },
    #[error("empty slice ({width}x{height})")]
    Empty { width: usize, height: usize },
    #[error("rescale intercept {0} is not finite")]
    Intercept(f64),
    #[error("pixel spacing {0} mm is outside {MIN_SPACING_MM}..={MAX_SPACING_MM} mm")]
    Spacing(f64),
    #[error("lung frame is for a {frame_w}x{frame_h} slice, this slice is {width}x{height}")]
    Mismatch {
        frame_w: usize,
        frame_h: usize,
        width: usize,
        height: usize,
    },
    #[error("the lung mask is empty: nothing to frame")]
    NoMask,
    #[error("model input size must be positive")]
    Size,
}

/// Why a mask is not a plausible pair of lungs (checked in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Implausible {
    /// More than half of the image border is body: the field of view cuts the chest.
    FieldOfViewCutsBody { body_border: u64, perimeter: u64 },
    /// No air component large enough to be a lung.
    NoLungs,
    /// One side of the body holds under a fifth of the other side's lung.
    OneLung { smaller: u64, larger: u64 },
    /// Lungs under 1/20 of the body cross-section.
    LungsTooSmall { lung: u64, body: u64 },
    /// Lungs over 4/5 of the body cross-section.
    LungsTooLarge { lung: u64, body: u64 },
}

impl Implausible {
    /// The reason's name, as in JSON and in `training/lung.py`.
    pub fn code(&self) -> &'static str {
        match self {
            Implausible::FieldOfViewCutsBody { .. } => "field_of_view_cuts_body",
            Implausible::NoLungs => "no_lungs",
            Implausible::OneLung { .. } => "one_lung",
            Implausible::LungsTooSmall { .. } => "lungs_too_small",
            Implausible::LungsTooLarge { .. } => "lungs_too_large",
        }
    }
}

impl std::fmt::Display for Implausible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Implausible::FieldOfViewCutsBody { body_border, perimeter } => write!(
                f,
                "field of view cuts the body ({body_border} of {perimeter} border pixels are body)"
            ),
            Implausible::NoLungs => write!(f, "no lungs found"),
            Implausible::OneLung { smaller, larger } => {
                write!(f, "one lung only ({smaller} vs {larger} lung pixels per side)")
            }
            Implausible::LungsTooSmall { lung, body } => {
                write!(f, "lungs too small ({lung} of {body} body pixels)")
            }
            Implausible::LungsTooLarge { lung, body } => {
                write!(f, "lungs too large ({lung} of {body} body pixels)")
            }
        }
    }
}

/// One slice as the mask needs it: stored values, size, intercept and spacing.
#[derive(Debug, Clone, Copy)]
pub struct LungInput<'a> {
    pub pixels: &'a [u16],
    pub width: usize,
    pub height: usize,
    /// `HU = stored + intercept`.
    pub intercept: f64,
    /// Square pixel spacing in mm, when the format has it.
    pub spacing_mm: Option<f64>,
}

impl<'a> LungInput<'a> {
    /// Default intercept (-1024), unknown spacing.
    pub fn new(pixels: &'a [u16], width: usize, height: usize) -> Self {
        LungInput {
            pixels,
            width,
            height,
            intercept: DEFAULT_INTERCEPT,
            spacing_mm: None,
        }
    }

    /// A decoded slice (stored values, default intercept, unknown spacing).
    pub fn from_slice(slice: &Slice<'a>) -> Self {
        Self::new(slice.pixels, slice.width, slice.height)
    }

    pub fn with_spacing(mut self, spacing_mm: Option<f64>) -> Self {
        self.spacing_mm = spacing_mm;
        self
    }

    pub fn with_intercept(mut self, intercept: f64) -> Self {
        self.intercept = intercept;
        self
    }

    fn validate(&self) -> Result<f64, LungError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 {
            return Err(LungError::Empty { width, height });
        }
        if width.checked_mul(height) != Some(self.pixels.len()) || width * height > u32::MAX as usize / 2 {
            return Err(LungError::Shape {
                width,
                height,
                len: self.pixels.len(),
            });
        }
        if !self.intercept.is_finite() {
            return Err(LungError::Intercept(self.intercept));
        }
        effective_spacing(self.spacing_mm)
    }
}

/// The spacing the algorithm uses: the given one (validated) or [`DEFAULT_SPACING_MM`].
pub fn effective_spacing(spacing_mm: Option<f64>) -> Result<f64, LungError> {
    match spacing_mm {
        None => Ok(DEFAULT_SPACING_MM),
        Some(s) if s.is_finite() && (MIN_SPACING_MM..=MAX_SPACING_MM).contains(&s) => Ok(s),
        Some(s) => Err(LungError::Spacing(s)),
    }
}

/// `ceil(MIN_COMPONENT_MM2 / s²)`.
pub fn min_component_px(s: f64) -> usize {
    (MIN_COMPONENT_MM2 / (s * s)).ceil() as usize
}

/// `ceil(MARGIN_MM / s)`.
pub fn margin_px(s: f64) -> usize {
    (MARGIN_MM / s).ceil() as usize
}

/// `ceil(FRAME_MM / s)`.
pub fn frame_px(s: f64) -> usize {
    (FRAME_MM / s).ceil() as usize
}

/// The stored value of [`OUTSIDE_HU`] under `intercept` (round half up, clamped to u16).
pub fn air_stored(intercept: f64) -> u16 {
    (OUTSIDE_HU - intercept + 0.5).floor().clamp(0.0, 65535.0) as u16
}

/// The tight box of the mask, `[x0, x1) x [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl BBox {
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// The square crop, `[x0, x0 + side) x [y0, y0 + side)`; may reach past the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameBox {
    pub x0: i64,
    pub y0: i64,
    pub side: usize,
}

/// The counts the verdict is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LungStats {
    /// The spacing used (given or default), mm.
    pub spacing_mm: f64,
    pub lung_area: u64,
    pub body_area: u64,
    /// Border pixels that are body.
    pub body_border: u64,
    /// Border pixels.
    pub perimeter: u64,
    /// Mask pixels left of the body's middle column, and the rest.
    pub left: u64,
    pub right: u64,
    /// Pixel counts of the kept components (0 where fewer than two were kept).
    pub components: [u64; 2],
}

/// The lung mask of one slice, its boxes and whether it is a plausible pair of lungs.
#[derive(Debug, Clone, PartialEq)]
pub struct LungFrame {
    pub width: usize,
    pub height: usize,
    /// Row-major, `width * height`.
    pub mask: Vec<bool>,
    /// `None` iff the mask is empty.
    pub bbox: Option<BBox>,
    /// `None` iff the mask is empty.
    pub frame: Option<FrameBox>,
    pub stats: LungStats,
    pub plausible: Result<(), Implausible>,
}

impl Default for LungFrame {
    fn default() -> Self {
        LungFrame {
            width: 0,
            height: 0,
            mask: Vec::new(),
            bbox: None,
            frame: None,
            stats: LungStats::default(),
            plausible: Err(Implausible::NoLungs),
        }
    }
}

impl LungFrame {
    /// The verdict as `training/lung.py` writes it: `ok` or the reason's code.
    pub fn verdict_code(&self) -> &'static str {
        match &self.plausible {
            Ok(()) => "ok",
            Err(r) => r.code(),
        }
    }
}

const NONE: u32 = 0;
const UNSEEN: u32 = u32::MAX - 1;
const OUTSIDE: u32 = u32::MAX;

/// Computes lung frames, reusing its scratch buffers across slices: after the first slice of a
/// given size nothing is allocated. The buffers grow to `width * height` (labels, flood stack,
/// closing scratch, windowed plane, component sizes), `model size * width` (the row pass) and
/// the frame's resize weights (`frame side + model size` entries, recomputed only when the
/// frame side or model size changes); nothing else.
#[derive(Debug, Default)]
pub struct LungMasker {
    lab: Vec<u32>,
    stack: Vec<u32>,
    sizes: Vec<u32>,
    tmp: Vec<bool>,
    win: Vec<f32>,
    one: Vec<f32>,
    rows: Vec<f32>,
    weights: Option<(usize, usize, Vec<(usize, Vec<f32>)>)>,
}

impl LungMasker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lung frame of `input` (allocates the mask; see [`LungMasker::compute`] to reuse one).
    pub fn frame(&mut self, input: &LungInput<'_>) -> Result<LungFrame, LungError> {
        let mut out = LungFrame::default();
        self.compute(input, &mut out)?;
        Ok(out)
    }

    /// The lung frame of `input` into `out`, reusing `out.mask`.
    pub fn compute(&mut self, input: &LungInput<'_>, out: &mut LungFrame) -> Result<(), LungError> {
        let s = input.validate()?;
        let (w, h) = (input.width, input.height);
        let n = w * h;
        let lab = &mut self.lab;
        let stack = &mut self.stack;

        // 1. air
        lab.clear();
        lab.extend(input.pixels.iter().map(|&v| {
            if (v as f64) + input.intercept < AIR_BELOW_HU {
                UNSEEN
            } else {
                NONE
            }
        }));
        // 2. outside: air connected to the border
        let mut outside = 0u64;
        for i in border_indices(w, h) {
            if lab[i] == UNSEEN {
                outside += flood(lab, stack, w, h, i, UNSEEN, OUTSIDE);
            }
        }
        let body_area = n as u64 - outside;
        let perimeter = border_indices(w, h).count() as u64;
        let body_border = border_indices(w, h).filter(|&i| lab[i] != OUTSIDE).count() as u64;
        let (mut bx0, mut bx1) = (w, 0);
        for row in lab.chunks_exact(w) {
            if let Some(first) = row.iter().position(|&l| l != OUTSIDE) {
                let last = row.iter().rposition(|&l| l != OUTSIDE).unwrap_or(first);
                bx0 = bx0.min(first);
                bx1 = bx1.max(last + 1);
            }
        }
        let mid = if bx0 < bx1 { (bx0 + bx1) / 2 } else { w / 2 };

        // 3. components of the inside air, the two largest that are big enough
        self.sizes.clear();
        for i in 0..n {
            if lab[i] == UNSEEN {
                let label = self.sizes.len() as u32 + 1;
                let c = flood(lab, stack, w, h, i, UNSEEN, label);
                self.sizes.push(c as u32);
            }
        }
        let min_px = min_component_px(s);
        let mut kept: [Option<(u32, u32)>; 2] = [None, None]; // (size, label)
        for (k, &size) in self.sizes.iter().enumerate() {
            let cand = (size, k as u32 + 1);
            // Labels are assigned in raster order of first pixels: a later label with the same
            // size never displaces an earlier one.
            if kept[0].map_or(true, |(s0, _)| size > s0) {
                kept[1] = kept[0];
                kept[0] = Some(cand);
            } else if kept[1].map_or(true, |(s1, _)| size > s1) {
                kept[1] = Some(cand);
            }
        }
        let kept = kept.map(|c| c.filter(|&(size, _)| size as usize >= min_px));
        let (k0, k1) = (kept[0].map_or(0, |c| c.1), kept[1].map_or(0, |c| c.1));
        let mask = &mut out.mask;
        mask.clear();
        mask.extend(lab.iter().map(|&l| l != NONE && (l == k0 || l == k1)));

        // 4. closing, 5. holes
        close3x3(mask, &mut self.tmp, w, h);
        fill_holes(mask, lab, stack, w, h);

        // 6. boxes, 7. verdict
        let (mut lung_area, mut left) = (0u64, 0u64);
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for (y, row) in mask.chunks_exact(w).enumerate() {
            let Some(first) = row.iter().position(|&m| m) else {
                continue;
            };
            let last = row.iter().rposition(|&m| m).unwrap_or(first);
            let count = row.iter().filter(|&&m| m).count() as u64;
            lung_area += count;
            left += row[..mid].iter().filter(|&&m| m).count() as u64;
            x0 = x0.min(first);
            x1 = x1.max(last + 1);
            y0 = y0.min(y);
            y1 = y1.max(y + 1);
        }
        let right = lung_area - left;
        let (bbox, frame) = if lung_area > 0 {
            let b = BBox { x0, y0, x1, y1 };
            let m = margin_px(s);
            let side = (b.width() + 2 * m).max(b.height() + 2 * m).max(frame_px(s));
            let f = FrameBox {
                x0: x0 as i64 - ((side - b.width()) / 2) as i64,
                y0: y0 as i64 - ((side - b.height()) / 2) as i64,
                side,
            };
            (Some(b), Some(f))
        } else {
            (None, None)
        };
        let (smaller, larger) = (left.min(right), left.max(right));
        let plausible = if body_border * BODY_BORDER_MAX.1 > perimeter * BODY_BORDER_MAX.0 {
            Err(Implausible::FieldOfViewCutsBody { body_border, perimeter })
        } else if lung_area == 0 {
            Err(Implausible::NoLungs)
        } else if smaller * SIDE_MIN.1 < larger * SIDE_MIN.0 {
            Err(Implausible::OneLung { smaller, larger })
        } else if lung_area * LUNG_BODY_MIN.1 < body_area * LUNG_BODY_MIN.0 {
            Err(Implausible::LungsTooSmall {
                lung: lung_area,
                body: body_area,
            })
        } else if lung_area * LUNG_BODY_MAX.1 > body_area * LUNG_BODY_MAX.0 {
            Err(Implausible::LungsTooLarge {
                lung: lung_area,
                body: body_area,
            })
        } else {
            Ok(())
        };
        out.width = w;
        out.height = h;
        out.bbox = bbox;
        out.frame = frame;
        out.plausible = plausible;
        out.stats = LungStats {
            spacing_mm: s,
            lung_area,
            body_area,
            body_border,
            perimeter,
            left,
            right,
            components: kept.map(|c| c.map_or(0, |c| c.0 as u64)),
        };
        Ok(())
    }

    /// The lung-framed model input of `input` (`size x size`, row-major) into `out`: step 8 of
    /// the module docs. `frame` must have been computed from the same slice.
    pub fn framed_input(
        &mut self,
        input: &LungInput<'_>,
        frame: &LungFrame,
        pre: &Preprocessing,
        size: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), LungError> {
        input.validate()?;
        let (w, h) = (input.width, input.height);
        if (frame.width, frame.height) != (w, h) || frame.mask.len() != w * h {
            return Err(LungError::Mismatch {
                frame_w: frame.width,
                frame_h: frame.height,
                width: w,
                height: h,
            });
        }
        if size == 0 {
            return Err(LungError::Size);
        }
        let f = frame.frame.ok_or(LungError::NoMask)?;
        if !matches!(&self.weights, Some((a, b, _)) if (*a, *b) == (f.side, size)) {
            self.weights = Some((f.side, size, box_weights(f.side, size)));
        }
        let Some((_, _, weights)) = &self.weights else {
            unreachable!("set just above")
        };
        self.one.clear();
        pre.window_stored(&[air_stored(input.intercept)], &mut self.one);
        let air = self.one[0];
        // Inside the mask (everywhere in the image with `outside = "keep"`): window - air;
        // elsewhere 0 (the frame is air + the resize of this).
        pre.window_stored(input.pixels, &mut self.win);
        let keep = pre.outside() == crate::classify::preprocess::Outside::Keep;
        for (v, &m) in self.win.iter_mut().zip(&frame.mask) {
            *v = if m || keep { *v - air } else { 0.0 };
        }
        // Rows of the frame → size rows, over the image's columns.
        self.rows.clear();
        self.rows.resize(size * w, 0.0);
        for (i, (first, ws)) in weights.iter().enumerate() {
            let dst = &mut self.rows[i * w..(i + 1) * w];
            for (k, &wt) in ws.iter().enumerate() {
                let y = f.y0 + (first + k) as i64;
                if (0..h as i64).contains(&y) {
                    let src = &self.win[y as usize * w..(y as usize + 1) * w];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += wt * s);
                }
            }
        }
        // Columns of the frame → size columns.
        out.clear();
        out.resize(size * size, 0.0);
        for r in 0..size {
            let src = &self.rows[r * w..(r + 1) * w];
            for (c, (first, ws)) in weights.iter().enumerate() {
                let mut acc = 0.0f32;
                for (k, &wt) in ws.iter().enumerate() {
                    let x = f.x0 + (first + k) as i64;
                    if (0..w as i64).contains(&x) {
                        acc += wt * src[x as usize];
                    }
                }
                out[r * size + c] = air + acc;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
