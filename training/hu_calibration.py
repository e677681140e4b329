"""Per-image HU calibration of 8-bit slices from anatomical landmarks.

Why: `data.estimate_windows` fits ONE linear map 8-bit -> HU per source from the pooled
histogram. The publishers of the 8-bit sources windowed every image differently (ucsd: figures
from papers; sarscov2: PACS screenshots; even MosMed varies), so one map per source leaves the
lungs of normal slices anywhere from air to -780 HU (`reports/hu_calibration.md`).

What: in each image, find landmarks whose HU is known from anatomy and physics, not from the
lungs, and fit value8 = slope * HU + offset to them (least squares; the two air landmarks share
one weight, so air weighs as much as fat or muscle):

| landmark | HU | where |
|---|---|---|
| `air_outside` | -1000 | a ring just outside the body's convex hull (and outside the hull of all tissue), minus padding: letterbox rows / columns, black (clipped) or painted grey regions joined to the border, clipped values. Read as the median around the ring's histogram mode |
| `air_inside` | -1000 | the trachea or a main bronchus: a small, round, homogeneous dark component near the body's midline, a quarter to three quarters of the way back, read at its core (>= 3 px from its wall) |
| `fat` | -100 | subcutaneous fat: the lower of the two strongest tissue peaks in the body's outer band |
| `muscle` | +40 | chest-wall muscle: the upper of those two peaks |

The body is the largest component at or above Otsu's level of the unpadded pixels, holes
filled. The lung parenchyma is never a landmark (the check in `hu_calibration_check.py`
measures it, so using it here would make that check circular) and never decides whether a
landmark is accepted. The fit needs an air landmark (the lungs lie next to air on the HU scale;
extrapolating from fat and muscle alone would multiply their errors by about 7) and both tissue
landmarks, so it always has one degree of freedom left: the residuals are the check. An image
is excluded, with the reason (`REASONS`), when a landmark is missing or the fit is implausible.
Air clipped to black by the publisher's window (air_clipped) is the commonest reason: such an
image carries no information on where -1000 HU sits.

All values below are in 8-bit levels unless named `_HU`; the slices are 256 px wide at about
1.4 mm/px (`data.eight_bit_spacing`), but sizes are taken relative to the body so other widths
work too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 40.0
LANDMARK_HU = {"air_outside": AIR_HU, "air_inside": AIR_HU, "fat": FAT_HU, "muscle": MUSCLE_HU}

# 8-bit values at or beyond these are clipped by the publisher's window (or are padding): the
# true value of such a pixel is unknown, so no landmark may sit there.
CLIP_LO = 6
CLIP_HI = 249
# A border row / column whose values span at most this many levels, or that is clipped black or
# white all along, is a painted bar (letterboxing): exported figures paint exact values, CT air
# has noise.
FLAT_RANGE = 1
# Padding joined to the border: clipped black (a black surround, the corners outside a scanner's
# circular field of view), widened by PAD_FRINGE px over the JPEG / resampling fringe;
# and regions of one painted grey value (within PAD_TOL of it) whose 3x3 neighbourhoods are
# exactly flat for at least PAD_FLAT_SHARE of their pixels. Air in a wide window can be as flat
# as 47% (measured on a 16-bit slice windowed -2250..1050 HU, box-resized and JPEG-encoded), so
# flatness alone must not decide.
PAD_FRINGE = 2
PAD_TOL = 1
PAD_FLAT_SHARE = 0.9
PAD_CANDIDATES = 3
PAD_MIN_EDGE_PX = 8
PAD_MIN_PX = 64
# Rings / bands relative to the body's equivalent radius r = sqrt(area / pi).
AIR_RING = (0.02, 0.15)        # outside air: distance from the body, x r (at least 2 px)
BAND = (0.03, 0.16)            # fat / muscle band: depth below the skin, x r (at least 2 px)
TISSUE_MIN_PX = 16             # tissue specks smaller than this do not shape the tissue hull
MIN_LANDMARK_PX = 40           # pixels a landmark's peak must hold
AIR_PEAK_SHARE = 0.3           # the outside-air peak must hold this share of the (unpadded) ring
AIR_CLIPPED_SHARE = 0.9        # this share of black padding against the skin: air clipped, whatever
                               # else the ring holds (a scanner's field of view cutting the body's
                               # sides also puts black against the skin, so less than this is allowed
                               # when the rest of the ring has a clear air peak)
PEAK_HALF = 4                  # a peak is its mode +- this many levels
# Inside air (trachea, main bronchi): a dark component of the hull, INSIDE_AREA x body area
# (a normal trachea, ~2.5 cm2, is ~0.4% of a ~600 cm2 chest section; lungs are far larger),
# its centroid within INSIDE_MAX_OFFCENTRE x body width of the body's middle (lung fragments at
# the apex or the bases lie lateral) and between INSIDE_DEPTH of the body's front-to-back extent
# (the anterior junction of the two lungs lies in front of it), round (pi x (largest inner
# distance)^2 >= INSIDE_MIN_ROUNDNESS x area: a disc gives 1, a wedge of lung much less), read at
# its core (pixels >= INSIDE_CORE_DEPTH px from its edge, away from the wall and the JPEG /
# resampling blur), and homogeneous: the core's 10th-90th percentile spread at most
# INSIDE_MAX_SPREAD x (body tissue median - core median) (air has no vessels; lung has).
INSIDE_AREA = (0.0005, 0.025)
INSIDE_MAX_OFFCENTRE = 0.2
INSIDE_DEPTH = (0.25, 0.75)
INSIDE_MIN_ROUNDNESS = 0.5
INSIDE_MAX_SPREAD = 0.12
INSIDE_CORE_DEPTH = 3.0
INSIDE_MIN_CORE = 6
# Fit checks.
MAX_RESIDUAL_HU = 40.0         # largest |fitted HU - landmark HU|
AIR_AGREE_HU = 60.0            # outside and inside air, when both are found
WINDOW_WIDTH_HU = (300.0, 5000.0)  # HU spanned by 0..255: a plausible display window
MIN_FAT_MUSCLE_LEVELS = 3.0    # fat and muscle must be separable


@dataclass
class FitResult:
    """One image's calibration: value8 = slope * HU + offset, or a reason why not."""
    ok: bool
    reason: str = ""
    slope: float = float("nan")
    offset: float = float("nan")
    landmarks: dict = field(default_factory=dict)     # name -> 8-bit value (median of its pixels)
    counts: dict = field(default_factory=dict)        # name -> pixels behind it
    residuals_hu: dict = field(default_factory=dict)  # name -> fitted HU - landmark HU
    notes: list = field(default_factory=list)         # landmarks looked for and not used, why

    def hu(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.offset) / self.slope

    def stored(self, gray: np.ndarray, intercept: float = -1024.0) -> np.ndarray:
        """8-bit slice -> stored uint16 values (HU - intercept), like data.eight_bit_stored."""
        lut = np.clip(np.floor(self.hu(np.arange(256)) - intercept + 0.5), 0, 65535).astype(np.uint16)
        return lut[np.asarray(gray)]

    def hu_range(self) -> tuple[float, float]:
        return float(self.hu(0)), float(self.hu(255))

    def summary(self) -> dict:
        d = {"ok": self.ok, "reason": self.reason, "landmarks": {k: round(v, 2) for k, v in self.landmarks.items()},
             "counts": dict(self.counts), "notes": list(self.notes)}
        if self.ok:
            d.update(slope=round(self.slope, 5), offset=round(self.offset, 2),
                     hu_range=[round(x, 1) for x in self.hu_range()],
                     residuals_hu={k: round(v, 1) for k, v in self.residuals_hu.items()})
        return d


FOUR = ndimage.generate_binary_structure(2, 1)


def letterbox(g: np.ndarray) -> np.ndarray:
    """Mask of painted border rows / columns (flat, or clipped all along), peeled from each side."""
    h, w = g.shape
    y0, y1, x0, x1 = 0, h, 0, w
    changed = True
    while changed and y0 < y1 and x0 < x1:
        changed = False
        for side in ("top", "bottom", "left", "right"):
            if y0 >= y1 or x0 >= x1:
                break
            line = {"top": g[y0, x0:x1], "bottom": g[y1 - 1, x0:x1],
                    "left": g[y0:y1, x0], "right": g[y0:y1, x1 - 1]}[side]
            if (int(line.max()) - int(line.min()) <= FLAT_RANGE or int(line.max()) < CLIP_LO
                    or int(line.min()) > CLIP_HI):
                changed = True
                if side == "top":
                    y0 += 1
                elif side == "bottom":
                    y1 -= 1
                elif side == "left":
                    x0 += 1
                else:
                    x1 -= 1
    m = np.ones_like(g, dtype=bool)
    m[y0:y1, x0:x1] = False
    return m


def border_joined(m: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Components of `m` (4-connected) that hold a pixel of `seeds`."""
    lab, n = ndimage.label(m, structure=FOUR)
    if n == 0:
        return np.zeros_like(m)
    hit = np.unique(lab[seeds & m])
    return np.isin(lab, hit[hit > 0])


def padding(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(letterboxing, surround): the surround is clipped values joined to the border (plus their
    fringe) and painted grey joined to the border. Air inside the field of view is none of these
    unless the publisher's window clipped it, and then it is no landmark anyway."""
    lb = letterbox(g)
    inner = ~lb
    if not inner.any():
        return lb, np.zeros_like(lb)
    # Seeds: the image edge and the pixels just inside the letterbox.
    edge = inner & ~ndimage.binary_erosion(inner, structure=FOUR, border_value=0)
    # Only black: a white run joined to the border is as often saturated chest wall cut by a
    # screenshot's crop as a figure's background, and the body must keep its chest wall (clipped
    # values are never landmarks anyway).
    pad = border_joined(inner & (g < CLIP_LO), edge)
    if pad.any():
        pad = ndimage.binary_dilation(pad, structure=np.ones((3, 3), bool), iterations=PAD_FRINGE) & inner
    # Painted grey: try the most common values on the edge (a value must hold PAD_MIN_EDGE_PX).
    vals = g[edge & ~pad].astype(np.int64)
    counts = np.bincount(vals, minlength=256)
    flat = (ndimage.maximum_filter(g, size=3).astype(np.int64) - ndimage.minimum_filter(g, size=3)) == 0
    for p in np.argsort(-counts)[:PAD_CANDIDATES]:
        if counts[p] < PAD_MIN_EDGE_PX:
            break
        near = inner & ~pad & (np.abs(g.astype(np.int64) - int(p)) <= PAD_TOL)
        lab, _ = ndimage.label(near, structure=FOUR)
        for k in np.unique(lab[edge & near]):
            if k == 0:
                continue
            comp = lab == k
            if comp.sum() >= PAD_MIN_PX and flat[comp].mean() >= PAD_FLAT_SHARE:
                pad |= comp
    return lb, pad


def convex_hull_mask(m: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie in the convex hull of the centres of `m`'s pixels."""
    from scipy.spatial import ConvexHull, QhullError
    ys, xs = np.nonzero(m)
    if ys.size < 3:
        return m.copy()
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return m.copy()
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    inside = np.ones(m.shape, dtype=bool)
    for a, b, c in hull.equations:  # a*x + b*y + c <= 0 inside
        inside &= a * xx + b * yy + c <= 1e-9
    return inside | m


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of 8-bit values (the level t: classes < t and >= t)."""
    h = np.bincount(values.astype(np.int64).ravel(), minlength=256).astype(np.float64)
    p = h / max(1.0, h.sum())
    w0 = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    mt = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = 0
    return float(np.argmax(between) + 1)


def largest_component(m: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(m, structure=FOUR)
    if n == 0:
        return np.zeros_like(m)
    sizes = np.bincount(lab.ravel())[1:]
    return lab == int(np.argmax(sizes)) + 1


def peak(values: np.ndarray, lo: int = CLIP_LO, hi: int = CLIP_HI) -> tuple[float, int, int]:
    """(median of the pixels within PEAK_HALF of the smoothed histogram's mode, pixels there,
    mode) among values in [lo, hi]."""
    v = values[(values >= lo) & (values <= hi)].astype(np.int64)
    if v.size == 0:
        return float("nan"), 0, -1
    h = np.bincount(v, minlength=256).astype(np.float64)
    sm = np.convolve(h, np.ones(3) / 3, mode="same")
    mode = int(np.argmax(sm))
    sel = v[np.abs(v - mode) <= PEAK_HALF]
    return float(np.median(sel)), int(sel.size), mode


def tissue_peaks(values: np.ndarray, lo: int) -> list[tuple[int, float]]:
    """Local maxima (level, smoothed count) of the histogram of values in [lo, CLIP_HI], each the
    highest within +-PEAK_HALF levels, strongest first."""
    v = values[(values >= lo) & (values <= CLIP_HI)].astype(np.int64)
    if v.size == 0:
        return []
    h = np.bincount(v, minlength=256).astype(np.float64)
    sm = np.convolve(h, np.ones(3) / 3, mode="same")
    out = []
    for k in range(lo, CLIP_HI + 1):
        win = sm[max(lo, k - PEAK_HALF):min(CLIP_HI, k + PEAK_HALF) + 1]
        if sm[k] > 0 and sm[k] == win.max() and (not out or k - out[-1][0] > PEAK_HALF):
            out.append((k, float(sm[k])))
    return sorted(out, key=lambda t: -t[1])


@dataclass
class Landmarks:
    """What `find_landmarks` found in one slice (values in 8-bit levels)."""
    values: dict = field(default_factory=dict)   # name -> median 8-bit value of its pixels
    counts: dict = field(default_factory=dict)   # name -> pixels behind it
    notes: list = field(default_factory=list)    # what was looked for and not found, why
    air_clipped: bool = False                    # air was there but at the window's clip level
    masks: dict = field(default_factory=dict)    # for inspection: padding, body, air_ring, air_inside, band


def find_landmarks(gray: np.ndarray) -> Landmarks:
    """Landmarks of one 8-bit slice (see the module doc). Never looks at the lungs' values."""
    g = np.asarray(gray)
    if g.ndim != 2 or g.dtype != np.uint8:
        raise ValueError(f"need a 2-D uint8 image, got {g.dtype} {g.shape}")
    L = Landmarks()
    lb, surround = padding(g)
    pad = lb | surround
    usable = ~pad & (g >= CLIP_LO) & (g <= CLIP_HI)
    L.masks["padding"] = pad
    if usable.sum() < 0.05 * g.size:
        L.notes.append("image: too few unpadded, unclipped pixels")
        return L
    # Body: the largest 4-connected component at or above Otsu's level of the unpadded pixels
    # (between the dark class -- air, lungs -- and the tissue class), holes filled.
    t = otsu(g[~pad])
    body = ndimage.binary_fill_holes(largest_component((g >= t) & ~pad), structure=FOUR)
    L.masks["body"] = body
    area = int(body.sum())
    if area < 0.05 * g.size:
        L.notes.append("body: no body found")
        return L
    r = math.sqrt(area / math.pi)
    # The body's convex hull: a lung that touches the edge of a cropped screenshot is outside the
    # body mask (not a hole) but inside the hull, so neither ring nor band may use it as "outside".
    hull = convex_hull_mask(body)

    # Outside air: a ring just outside the hull, within the image proper (no letterbox), outside
    # the hull of *all* tissue too (a lung that a crop left between the body and a cut-off piece
    # of chest wall is not outside air).
    lab_t, _ = ndimage.label((g >= t) & ~pad, structure=FOUR)
    sizes_t = np.bincount(lab_t.ravel())
    sizes_t[0] = 0
    all_hull = convex_hull_mask(np.isin(lab_t, np.flatnonzero(sizes_t >= TISSUE_MIN_PX)) | body)
    dist_out = ndimage.distance_transform_edt(~hull)
    near = ~all_hull & ~lb & (dist_out <= max(6.0, AIR_RING[1] * r))
    # Air clipped to black by the window: black padding right against the skin (the black corners
    # outside a scanner's field of view are separated from the body by unclipped air).
    shell = near & (dist_out <= max(2.0, AIR_RING[0] * r) + 1.0)
    black_share = float((shell & surround).sum()) / max(1, int(shell.sum()))
    ring = near & ~surround & (dist_out >= max(2.0, AIR_RING[0] * r))
    L.masks["air_ring"] = ring
    n_ring = int(ring.sum())
    cand = g[ring & usable & (g < t)]
    v, n, _ = peak(cand) if cand.size else (float("nan"), 0, -1)
    if n >= MIN_LANDMARK_PX and n >= AIR_PEAK_SHARE * n_ring and black_share < AIR_CLIPPED_SHARE:
        L.values["air_outside"], L.counts["air_outside"] = v, n
        if black_share > 0.3:
            L.notes.append(f"air_outside: {black_share:.0%} of the skin's outer shell is black padding")
    elif shell.any() and black_share >= AIR_PEAK_SHARE:
        L.air_clipped = True
        L.notes.append(f"air_outside: clipped ({black_share:.0%} of the skin's outer shell is black padding)")
    else:
        L.notes.append(f"air_outside: no clear peak ({n} of {n_ring} ring pixels)")

    # Inside air: the trachea or a main bronchus (see INSIDE_*).
    dark = hull & ~pad & (g < t)
    lab, n_lab = ndimage.label(dark, structure=FOUR)
    cols = np.flatnonzero(body.any(axis=0))
    cx, width = (cols[0] + cols[-1]) / 2.0, float(cols[-1] - cols[0] + 1)
    rows_ = np.flatnonzero(body.any(axis=1))
    top, height = float(rows_[0]), float(rows_[-1] - rows_[0] + 1)
    tissue_med = float(np.median(g[body & (g >= t)]))
    best, clipped_core = None, False
    if n_lab:
        sizes = np.bincount(lab.ravel())
        objs = ndimage.find_objects(lab)
        for k in range(1, n_lab + 1):
            s = int(sizes[k])
            if not (INSIDE_AREA[0] * area <= s <= INSIDE_AREA[1] * area):
                continue
            sl = objs[k - 1]
            comp = lab[sl] == k
            xs = np.nonzero(comp)[1] + sl[1].start
            if abs(xs.mean() - cx) > INSIDE_MAX_OFFCENTRE * width:
                continue
            d = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
            if math.pi * float(d.max()) ** 2 < INSIDE_MIN_ROUNDNESS * s:
                continue
            ys = np.nonzero(comp)[0] + sl[0].start
            if not (INSIDE_DEPTH[0] <= (ys.mean() - top) / height <= INSIDE_DEPTH[1]):
                continue
            cv = g[sl][d >= INSIDE_CORE_DEPTH]
            if cv.size < INSIDE_MIN_CORE:
                continue
            q10, med, q90 = (float(x) for x in np.percentile(cv, [10, 50, 90]))
            if med < CLIP_LO:
                clipped_core = True
                continue
            if q90 - q10 > INSIDE_MAX_SPREAD * (tissue_med - med):
                continue
            if best is None or med < best[0]:
                best = (med, int(cv.size), k)
    if best is not None:
        L.values["air_inside"], L.counts["air_inside"] = best[0], best[1]
        L.masks["air_inside"] = lab == best[2]
    elif clipped_core:
        L.air_clipped = True
        L.notes.append(f"air_inside: clipped (trachea / bronchus core below {CLIP_LO})")
    else:
        L.notes.append("air_inside: no trachea / main bronchus found")

    # Fat and muscle: the two strongest tissue peaks (>= t, 1 px away from darker pixels) in the
    # body's outer band. Depth = distance to the nearest pixel outside the hull, a letterbox bar
    # or the image edge: where a crop cuts the body, what lies next to the cut is still chest wall
    # (fat and muscle; a cut lung is dark and never in the band).
    depth = ndimage.distance_transform_edt(np.pad(hull & ~lb, 1, constant_values=False))[1:-1, 1:-1]
    band = body & (depth >= max(2.0, BAND[0] * r)) & (depth <= max(6.0, BAND[1] * r))
    tissue = band & ndimage.binary_erosion(g >= t, structure=np.ones((3, 3), bool))
    L.masks["band"] = tissue
    tv = g[tissue].astype(np.int64)
    peaks = tissue_peaks(tv, int(t))
    if tv.size < 2 * MIN_LANDMARK_PX or len(peaks) < 2:
        L.notes.append(f"fat/muscle: {len(peaks)} tissue peak(s) in {tv.size} band pixels")
        return L
    (a, _), (b, _) = peaks[0], peaks[1]
    f, m = min(a, b), max(a, b)
    if m - f < MIN_FAT_MUSCLE_LEVELS:
        L.notes.append("fat/muscle: peaks not separable")
        return L
    mid = (f + m) / 2.0
    fv = tv[(tv <= mid) & (np.abs(tv - f) <= PEAK_HALF)]
    mv = tv[(tv > mid) & (np.abs(tv - m) <= PEAK_HALF)]
    if fv.size < MIN_LANDMARK_PX or mv.size < MIN_LANDMARK_PX:
        L.notes.append(f"fat/muscle: peaks too small ({fv.size}, {mv.size} px)")
        return L
    L.values["fat"], L.counts["fat"] = float(np.median(fv)), int(fv.size)
    L.values["muscle"], L.counts["muscle"] = float(np.median(mv)), int(mv.size)
    return L


# Why an image is excluded (FitResult.reason), in the order the checks run.
REASONS = {
    "no_body": "no body found: almost everything padded or clipped (e.g. all soft tissue saturated white)",
    "air_clipped": "no air landmark: the publisher's window clipped air to black",
    "no_air": "no air landmark (no air beside the body in the image, no trachea / main bronchus)",
    "no_fat_muscle": "subcutaneous fat and muscle not both found in the body's outer band",
    "not_increasing": "fitted map not increasing",
    "implausible_window": f"fitted map spans outside {WINDOW_WIDTH_HU[0]:.0f}..{WINDOW_WIDTH_HU[1]:.0f} HU over 0..255",
    "air_disagrees": f"outside and inside air more than {AIR_AGREE_HU:.0f} HU apart",
    "residual": f"a landmark more than {MAX_RESIDUAL_HU:.0f} HU off the fitted line",
}


def fit(L: Landmarks) -> FitResult:
    """Least squares value8 = slope * HU + offset over the landmarks, then the checks."""
    values = L.values
    res = FitResult(ok=False, landmarks=dict(values), counts=dict(L.counts), notes=list(L.notes))
    air = [k for k in ("air_outside", "air_inside") if k in values]
    if "body" not in L.masks or not L.masks["body"].any() or any(n.startswith(("body:", "image:")) for n in L.notes):
        res.reason = "no_body"
        return res
    if not air:
        res.reason = "air_clipped" if L.air_clipped else "no_air"
        return res
    if "fat" not in values or "muscle" not in values:
        res.reason = "no_fat_muscle"
        return res
    names = air + ["fat", "muscle"]
    x = np.array([LANDMARK_HU[k] for k in names])
    y = np.array([values[k] for k in names])
    # Air counts once however many air landmarks there are: it has the same weight as fat + muscle.
    w = np.array([1.0 / len(air)] * len(air) + [1.0, 1.0])
    A = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
    slope, offset = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)[0]
    res.slope, res.offset = float(slope), float(offset)
    if not slope > 0:
        res.reason = "not_increasing"
        return res
    res.residuals_hu = {k: float((values[k] - offset) / slope - LANDMARK_HU[k]) for k in names}
    lo, hi = res.hu_range()
    if not (WINDOW_WIDTH_HU[0] <= hi - lo <= WINDOW_WIDTH_HU[1]):
        res.reason = "implausible_window"
        return res
    if len(air) == 2 and abs(values["air_outside"] - values["air_inside"]) / slope > AIR_AGREE_HU:
        res.reason = "air_disagrees"
        return res
    if max(abs(v) for v in res.residuals_hu.values()) > MAX_RESIDUAL_HU:
        res.reason = "residual"
        return res
    res.ok = True
    return res


def calibrate(gray: np.ndarray) -> FitResult:
    """Landmarks and fit of one 8-bit slice."""
    return fit(find_landmarks(gray))
