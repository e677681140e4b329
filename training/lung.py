"""Lung-framed model input: a classical lung mask in HU and the crop around it (issue 13).

The Python twin of `src/lung/mod.rs`; that module's docs define the algorithm and say why each
constant is what it is. Both sides implement the same *set operations* (thresholds, 4-connected
components, a 3x3 closing with defined border handling, hole filling, integer box arithmetic),
so any correct implementation gives the same mask bit for bit; `tests/lung_parity.rs` compares
this file with the Rust module on real slices, and `tests/fixtures/lung/phantoms.json`
(written by `scripts/make-lung-fixture.py` from this file) lets the Rust side check itself
against it without Python.

scipy is used only for two operations whose results are defined as sets, not by the library:
`ndimage.label` with an explicit 4-connected structure (the partition into 4-connected
components; label numbering is NOT relied on: sizes come from `bincount`, the tie-break from
the first raster index of each label) and `ndimage.binary_fill_holes` with the same structure
(background pixels not 4-connected to the border become foreground). `training/tests/test_lung.py`
checks both against plain breadth-first searches on random images.

CLI (the parity test's reference):
    python training/lung.py --out DIR [--size 256] FILE.tif[@SPACING_MM] ...
writes DIR/<k>.mask (uint8 0/1, row-major) and DIR/<k>.input (float32 little-endian,
size x size, only for slices with a non-empty mask) and prints one JSON list with a summary
per file.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training import preprocess  # noqa: E402

# --- the constants (src/lung/mod.rs says why) ---
AIR_BELOW_HU = -400.0
DEFAULT_INTERCEPT = -1024.0
DEFAULT_SPACING_MM = 0.7
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 5.0
MIN_COMPONENT_MM2 = 500.0
MARGIN_MM = 10.0
FRAME_MM = 320.0
OUTSIDE_HU = -1000.0
# Plausibility, as exact rationals (num, den).
BODY_BORDER_MAX = (1, 2)
SIDE_MIN = (1, 5)
LUNG_BODY_MIN = (1, 20)
LUNG_BODY_MAX = (4, 5)

FOUR = ndimage.generate_binary_structure(2, 1)


def effective_spacing(spacing_mm: float | None) -> float:
    if spacing_mm is None:
        return DEFAULT_SPACING_MM
    s = float(spacing_mm)
    if not (math.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM):
        raise ValueError(f"pixel spacing {s} mm outside {MIN_SPACING_MM}..{MAX_SPACING_MM}")
    return s


def min_component_px(s: float) -> int:
    return int(math.ceil(MIN_COMPONENT_MM2 / (s * s)))


def margin_px(s: float) -> int:
    return int(math.ceil(MARGIN_MM / s))


def frame_px(s: float) -> int:
    return int(math.ceil(FRAME_MM / s))


def air_stored(intercept: float) -> int:
    """The stored value of OUTSIDE_HU (round half up, clamped to uint16)."""
    return int(min(max(math.floor(OUTSIDE_HU - intercept + 0.5), 0), 65535))


def close3x3(m: np.ndarray) -> np.ndarray:
    """Closing with the 3x3 square: dilation then erosion, each over the in-image part of the
    3x3 neighbourhood only (outside pixels are ignored: 0 for the dilation, 1 for the erosion)."""
    h, w = m.shape
    p = np.pad(m, 1, constant_values=False)
    d = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            d |= p[dy:dy + h, dx:dx + w]
    p = np.pad(d, 1, constant_values=True)
    e = np.ones_like(m)
    for dy in range(3):
        for dx in range(3):
            e &= p[dy:dy + h, dx:dx + w]
    return e


def fill_holes(m: np.ndarray) -> np.ndarray:
    """Non-mask pixels not 4-connected through non-mask pixels to the image border become mask."""
    return ndimage.binary_fill_holes(m, structure=FOUR)


def border_connected(a: np.ndarray) -> np.ndarray:
    """Pixels of `a` 4-connected within `a` to a pixel of `a` on the image border."""
    lab, _ = ndimage.label(a, structure=FOUR)
    edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    seeds = np.unique(edge[edge > 0])
    return np.isin(lab, seeds)


def kept_components(inside_air: np.ndarray, min_px: int) -> tuple[np.ndarray, list[int]]:
    """Mask of the (at most) two largest 4-connected components with >= min_px pixels; ties by
    the lowest raster index of a component's first pixel. Also returns the kept sizes."""
    lab, n = ndimage.label(inside_air, structure=FOUR)
    if n == 0:
        return np.zeros_like(inside_air), []
    flat = lab.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    values, first = np.unique(flat, return_index=True)
    first_of = dict(zip(values.tolist(), first.tolist()))
    order = sorted(range(1, n + 1), key=lambda k: (-int(sizes[k]), first_of[k]))
    kept = [k for k in order[:2] if sizes[k] >= min_px]
    return np.isin(lab, kept), [int(sizes[k]) for k in kept]


def lung_frame(stored: np.ndarray, intercept: float = DEFAULT_INTERCEPT, spacing_mm: float | None = None) -> dict:
    """The lung mask of one slice of stored values, its boxes and the plausibility verdict."""
    stored = np.asarray(stored)
    if stored.ndim != 2 or stored.size == 0 or stored.dtype != np.uint16:
        raise ValueError(f"need a non-empty 2-D uint16 slice, got {stored.dtype} {stored.shape}")
    if not math.isfinite(intercept):
        raise ValueError("intercept must be finite")
    h, w = stored.shape
    s = effective_spacing(spacing_mm)
    air = stored.astype(np.float64) + np.float64(intercept) < AIR_BELOW_HU
    outside = border_connected(air)
    body = ~outside
    comp, sizes = kept_components(air & body, min_component_px(s))
    mask = fill_holes(close3x3(comp))

    border = np.concatenate([body[0], body[-1], body[1:-1, 0], body[1:-1, -1]]) if h > 1 and w > 1 else body.ravel()
    perimeter = int(border.size)
    body_border = int(border.sum())
    body_area = int(body.sum())
    lung_area = int(mask.sum())
    cols = np.flatnonzero(body.any(axis=0))
    mid = (int(cols[0]) + int(cols[-1]) + 1) // 2 if cols.size else w // 2
    left = int(mask[:, :mid].sum())
    right = lung_area - left

    bbox = frame = None
    if lung_area:
        ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        x0, x1, y0, y1 = int(xs[0]), int(xs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1
        bbox = [x0, y0, x1, y1]
        m = margin_px(s)
        side = max(x1 - x0 + 2 * m, y1 - y0 + 2 * m, frame_px(s))
        frame = [x0 - (side - (x1 - x0)) // 2, y0 - (side - (y1 - y0)) // 2, side]

    verdict = "ok"
    if body_border * BODY_BORDER_MAX[1] > perimeter * BODY_BORDER_MAX[0]:
        verdict = "field_of_view_cuts_body"
    elif lung_area == 0:
        verdict = "no_lungs"
    elif min(left, right) * SIDE_MIN[1] < max(left, right) * SIDE_MIN[0]:
        verdict = "one_lung"
    elif lung_area * LUNG_BODY_MIN[1] < body_area * LUNG_BODY_MIN[0]:
        verdict = "lungs_too_small"
    elif lung_area * LUNG_BODY_MAX[1] > body_area * LUNG_BODY_MAX[0]:
        verdict = "lungs_too_large"
    return {
        "width": w, "height": h, "spacing_mm": s, "mask": mask, "body": body, "bbox": bbox, "frame": frame,
        "verdict": verdict, "lung_area": lung_area, "body_area": body_area, "body_border": body_border,
        "perimeter": perimeter, "left": left, "right": right, "components": sizes,
    }


def framed_input(stored: np.ndarray, lf: dict, pre: dict, size: int, intercept: float = DEFAULT_INTERCEPT) -> np.ndarray:
    """The frame (a square, possibly reaching past the image) of the slice with every pixel
    outside the lung mask (or outside the image) set to OUTSIDE_HU, windowed, box-resized.

    `pre["outside"] = "keep"`: only what lies outside the image is set to air; the tissue
    around the lungs inside the frame is kept. Why: the threshold mask (air < -400 HU) leaves out
    dense subpleural consolidation and ground glass that touches the chest wall -- the typical
    COVID-19 pattern -- and "air" outside the mask would erase exactly that evidence.

    `pre["outside"] = "margin"`: the lungs plus a margin of `pre["margin_mm"]` (default
    LUNG_MARGIN_MM) around them, within the body, are kept; the rest (the chest wall beyond the
    margin, the table, anything outside the body) is set to air. Why (issue 33): "keep" leaves the
    model the body wall and, at the frame's edge, the table to decide on; "air" cuts off the
    subpleural findings; a margin keeps those and nothing far from the lungs."""
    if lf["frame"] is None:
        raise ValueError("empty lung mask: nothing to frame")
    outside = pre.get("outside", "air")
    if outside not in ("air", "keep", "margin"):
        raise ValueError(f"preprocessing.outside must be 'air', 'keep' or 'margin', not {outside!r}")
    if outside == "margin":
        keep_all = lung_margin(lf, float(pre.get("margin_mm", LUNG_MARGIN_MM)))
    x0, y0, side = lf["frame"]
    h, w = stored.shape
    v = np.full((side, side), air_stored(intercept), dtype=np.uint16)
    ys, ye = max(y0, 0), min(y0 + side, h)
    xs, xe = max(x0, 0), min(x0 + side, w)
    if ys < ye and xs < xe:
        src = stored[ys:ye, xs:xe]
        if outside == "air":
            keep = lf["mask"][ys:ye, xs:xe]
        elif outside == "margin":
            keep = keep_all[ys:ye, xs:xe]
        else:
            keep = np.ones_like(src, dtype=bool)
        v[ys - y0:ye - y0, xs - x0:xe - x0] = np.where(keep, src, v[ys - y0:ye - y0, xs - x0:xe - x0])
    return preprocess.box_resize(preprocess.window(v, pre), size, size)


# The margin kept around the lungs by `outside = "margin"`: subpleural consolidation and ground
# glass lie within the outer 1-2 cm of the lung; 10 mm around a mask that stops at -400 HU keeps
# a lesion touching the pleura and its edge, but not the ribs' outer half, the muscles or the table.
LUNG_MARGIN_MM = 10.0


def lung_margin(lf: dict, margin_mm: float) -> np.ndarray:
    """The lung mask dilated by a disc of margin_mm (Euclidean, at the slice's spacing), within
    the body (pixels not joined to the border by air)."""
    if not (math.isfinite(margin_mm) and 0.0 <= margin_mm <= 50.0):
        raise ValueError(f"margin_mm {margin_mm} outside 0..50")
    mask = lf["mask"]
    r = margin_mm / lf["spacing_mm"]
    if r < 1.0 or not mask.any():
        return mask & lf["body"]
    dist = ndimage.distance_transform_edt(~mask)
    return (dist <= r) & lf["body"]


def body_mask(stored: np.ndarray, intercept: float = DEFAULT_INTERCEPT) -> np.ndarray:
    """The patient's body: the largest 4-connected component of pixels at or above
    AIR_BELOW_HU (ties: the first in raster order), holes filled (the lungs are inside). What it
    leaves out is what a body-only input sets to air: the scanner table (a separate component
    below the back), padding, borders and burnt-in text of exported 8-bit images. Issue 16's
    evidence maps showed the shipped model deciding on the table."""
    stored = np.asarray(stored)
    tissue = stored.astype(np.float64) + np.float64(intercept) >= AIR_BELOW_HU
    lab, n = ndimage.label(tissue, structure=FOUR)
    if n == 0:
        return np.zeros_like(tissue)
    sizes = np.bincount(lab.ravel())[1:]
    return fill_holes(lab == int(np.argmax(sizes)) + 1)


def body_input(stored: np.ndarray, pre: dict, size: int, intercept: float = DEFAULT_INTERCEPT) -> np.ndarray:
    """The whole slice with everything outside `body_mask` set to air, windowed, box-resized
    (`[preprocessing] frame = "body"`). Stored values with another intercept are first re-based
    to HU + 1024, the convention `preprocess.window` reads."""
    v, _ = body_only(stored, intercept)
    return preprocess.box_resize(preprocess.window(v, pre), size, size)


def body_only(stored: np.ndarray, intercept: float = DEFAULT_INTERCEPT) -> tuple[np.ndarray, np.ndarray]:
    """(the slice re-based to HU + 1024 with everything outside `body_mask` set to air, the
    mask): what `body_input` and `body_box_input` share."""
    shift = int(round(intercept - DEFAULT_INTERCEPT))
    if shift:
        stored = np.clip(np.asarray(stored).astype(np.int64) + shift, 0, 65535).astype(np.uint16)
        intercept = DEFAULT_INTERCEPT
    mask = body_mask(stored, intercept)
    return np.where(mask, stored, air_stored(intercept)).astype(np.uint16), mask


BODY_BOX_MARGIN = 0.04  # of the body's larger side, on each side of the square


def body_box(mask: np.ndarray) -> list[int] | None:
    """The square [x0, y0, side] centred on the body mask's bounding box, its side the box's
    larger side plus BODY_BOX_MARGIN on each side (it may reach past the image); None for an
    empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    big = max(x1 - x0, y1 - y0)
    side = big + 2 * int(round(BODY_BOX_MARGIN * big))
    return [x0 - (side - (x1 - x0)) // 2, y0 - (side - (y1 - y0)) // 2, side]


def body_box_input(stored: np.ndarray, pre: dict, size: int, intercept: float = DEFAULT_INTERCEPT) -> np.ndarray:
    """`body_input`, but cropped to the square around the body (`body_box`) before the resize
    (`[preprocessing] frame = "body_box"`): the body fills the frame whatever the field of view,
    the pixel spacing or the padding of an exported image, so the physical scale the network
    sees is the patient's width, not the scanner's reconstruction field. Pixels of the square
    outside the image are air. An empty body mask gives the whole slice as `body_input` does."""
    v, mask = body_only(stored, intercept)
    box = body_box(mask)
    if box is not None:
        x0, y0, side = box
        h, w = v.shape
        square = np.full((side, side), air_stored(DEFAULT_INTERCEPT), dtype=np.uint16)
        ys, ye, xs, xe = max(y0, 0), min(y0 + side, h), max(x0, 0), min(x0 + side, w)
        square[ys - y0:ye - y0, xs - x0:xe - x0] = v[ys:ye, xs:xe]
        v = square
    return preprocess.box_resize(preprocess.window(v, pre), size, size)


# `[preprocessing] frame` values whose input is the body only, and the function that makes it.
BODY_FRAMES = {"body": body_input, "body_box": body_box_input}


def rle(mask: np.ndarray) -> list[int]:
    """Run lengths of the row-major mask, alternating, starting with a (possibly empty) 0-run."""
    flat = mask.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


# --- generated phantoms (never patient data), mirrored by src/lung/phantom.rs ---

def render(shapes: list[dict], width: int, height: int, spacing_mm: float, intercept: float = DEFAULT_INTERCEPT) -> np.ndarray:
    """Ellipses in mm (centre relative to the image centre, +y down), painted in order over
    air (-1000 HU); a pixel takes the HU of the last ellipse whose interior holds its centre."""
    s = float(spacing_mm)
    x = (np.arange(width, dtype=np.float64) + 0.5 - width / 2.0) * s
    y = (np.arange(height, dtype=np.float64) + 0.5 - height / 2.0) * s
    xx, yy = np.meshgrid(x, y)
    hu = np.full((height, width), -1000, dtype=np.int64)
    for e in shapes:
        dx = (xx - e["cx"]) / e["rx"]
        dy = (yy - e["cy"]) / e["ry"]
        hu[dx * dx + dy * dy < 1.0] = int(e["hu"])
    return np.clip(hu - int(intercept), 0, 65535).astype(np.uint16)


def chest() -> list[dict]:
    """The standard chest phantom (mm): body, a table below it with air pockets, two lungs,
    a trachea (an air disc too small to be a lung), a solid nodule and a ground-glass patch."""
    E = lambda cx, cy, rx, ry, hu: {"cx": cx, "cy": cy, "rx": rx, "ry": ry, "hu": hu}  # noqa: E731
    return [
        E(0.0, 0.0, 160.0, 115.0, 40),       # body, soft tissue
        E(0.0, 135.0, 200.0, 8.0, 100),      # table
        E(-60.0, 135.0, 20.0, 3.0, -1000),   # table air pocket
        E(60.0, 135.0, 20.0, 3.0, -1000),    # table air pocket
        E(-70.0, -5.0, 55.0, 80.0, -850),    # right lung (image left)
        E(70.0, -5.0, 50.0, 78.0, -850),     # left lung
        E(0.0, -70.0, 9.0, 9.0, -1000),      # trachea
        E(-70.0, 10.0, 8.0, 8.0, 40),        # solid nodule in the right lung
        E(70.0, 20.0, 15.0, 12.0, -550),     # ground glass in the left lung
    ]


def _main(argv: list[str]) -> int:
    import argparse
    import json

    import tifffile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--center", type=float, default=-500.0)
    ap.add_argument("--width", type=float, default=1500.0)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    pre = {"kind": "hu_window", "center": a.center, "width": a.width}
    a.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for k, arg in enumerate(a.files):
        path, _, sp = arg.partition("@")
        img = tifffile.imread(path)
        lf = lung_frame(img, DEFAULT_INTERCEPT, float(sp) if sp else None)
        lf["mask"].astype(np.uint8).tofile(a.out / f"{k}.mask")
        if lf["frame"] is not None:
            framed_input(img, lf, pre, a.size).astype("<f4").tofile(a.out / f"{k}.input")
            framed_input(img, lf, {**pre, "outside": "keep"}, a.size).astype("<f4").tofile(a.out / f"{k}.keep")
        summary.append({"file": path, **{key: v for key, v in lf.items() if key not in ("mask", "body")}})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
