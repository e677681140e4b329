"""Input representations, as data (the model card's `[preprocessing]` table), not code paths.

Two kinds:
- `hu_window` (the shipped model): HU = stored - 1024; y = clip((HU - (center - width/2)) / width, 0, 1).
- `raw_stored` (the paper): y = float(stored value), no scaling.

Then a *box* (area-average) resize to the model's input size, separable, with fractional
coverage weights at the edges; it equals an exact 2x2 mean for 512 -> 256. The Rust appliance
implements the same arithmetic (src/classify/preprocess.rs); parity is tested on both sides.
"""
from __future__ import annotations

import numpy as np

HU_INTERCEPT = -1024.0  # COVID-CTset / our ct16 data: stored value = HU + 1024


def window(stored: np.ndarray, pre: dict) -> np.ndarray:
    """Map stored 16-bit values to the model's float representation at native resolution."""
    kind = pre["kind"]
    if kind == "raw_stored":
        return stored.astype(np.float32)
    if kind == "hu_window":
        hu = stored.astype(np.float32) + np.float32(HU_INTERCEPT)
        lo = np.float32(pre["center"] - pre["width"] / 2.0)
        return np.clip((hu - lo) / np.float32(pre["width"]), 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown preprocessing kind {kind!r}")


def box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: row i averages input cells [i*s, (i+1)*s), s = n_in / n_out."""
    s = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
            w[i, j] = min(b, j + 1) - max(a, j)
        w[i] /= w[i].sum()
    return w.astype(np.float32)


def box_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area-average resize of a 2-D float image (rows first, then columns, in float32)."""
    h, w = img.shape
    if (h, w) == (out_h, out_w):
        return img.astype(np.float32)
    rows = box_weights(h, out_h) @ img.astype(np.float32)
    return (rows @ box_weights(w, out_w).T).astype(np.float32)


def preprocess_stored(stored: np.ndarray, pre: dict, size: int) -> np.ndarray:
    """Stored 16-bit slice -> model input plane (size x size float32)."""
    return box_resize(window(stored, pre), size, size)


def preprocess_8bit(gray: np.ndarray, size: int) -> np.ndarray:
    """An 8-bit image already in the card's 8-bit representation (value/255 of the window)."""
    return box_resize(gray.astype(np.float32) / np.float32(255.0), size, size)
