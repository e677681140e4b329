#!/usr/bin/env python3
"""Writes tests/fixtures/lung/phantoms.json: generated chest phantoms (never patient data) and
what training/lung.py computes for them, so the Rust side (tests/lung_parity.rs) checks itself
against the Python definition without a venv, and training/tests/test_lung.py checks that the
Python side still agrees with what was committed.

Run after changing the algorithm on both sides: .venv/bin/python scripts/make-lung-fixture.py
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from training import lung  # noqa: E402

OUT = ROOT / "tests/fixtures/lung/phantoms.json"
PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0}
SIZE = 128
# Fixed pixel indices of the framed input to record exactly (row-major in SIZE x SIZE).
SAMPLES = [0, 1000, 4000, 6000, 7000, 8128, 8200, 9000, 10000, 12000, 14000, 16383]


def cases():
    chest = lung.chest()
    no_left = [e for i, e in enumerate(chest) if i not in (5, 8)]  # left lung and its ground glass
    joined = chest + [{"cx": 0.0, "cy": 30.0, "rx": 40.0, "ry": 6.0, "hu": -850}]
    small = [e for i, e in enumerate(chest) if i != 8]
    small[4] = {"cx": -70.0, "cy": -5.0, "rx": 14.0, "ry": 14.0, "hu": -850}
    small[5] = {"cx": 70.0, "cy": -5.0, "rx": 14.0, "ry": 14.0, "hu": -850}
    return [
        ("chest_512_0.7mm", chest, 512, 512, 0.7, 0.7),
        ("chest_300x220_1.2mm", chest, 300, 220, 1.2, 1.2),
        ("chest_512_unknown_spacing", chest, 512, 512, 0.634765625, None),
        ("one_lung", no_left, 512, 512, 0.7, 0.7),
        ("narrow_field_of_view", chest, 512, 512, 0.35, 0.35),
        ("joined_lungs_400x360", joined, 400, 360, 0.9, 0.9),
        ("lungs_too_small", small, 512, 512, 0.7, 0.7),
    ]


def summary(x: np.ndarray) -> dict:
    flat = x.ravel().astype(np.float64)
    thumb = x.reshape(8, SIZE // 8, 8, SIZE // 8).astype(np.float64).mean(axis=(1, 3))
    return {
        "size": SIZE,
        "sum": float(flat.sum()),
        "sum_sq": float((flat * flat).sum()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "samples": [[i, float(flat[i])] for i in SAMPLES],
        "thumb8": [round(float(v), 7) for v in thumb.ravel()],
    }


def main():
    out = {
        "produced_by": "scripts/make-lung-fixture.py from training/lung.py",
        "preprocessing": PRE,
        "constants": {
            "air_below_hu": lung.AIR_BELOW_HU, "default_spacing_mm": lung.DEFAULT_SPACING_MM,
            "min_component_mm2": lung.MIN_COMPONENT_MM2, "margin_mm": lung.MARGIN_MM,
            "frame_mm": lung.FRAME_MM, "outside_hu": lung.OUTSIDE_HU,
        },
        "cases": [],
    }
    for name, shapes, w, h, s, spacing in cases():
        px = lung.render(shapes, w, h, s)
        lf = lung.lung_frame(px, lung.DEFAULT_INTERCEPT, spacing)
        case = {
            "name": name, "width": w, "height": h, "render_spacing_mm": s, "spacing_mm": spacing,
            "intercept": lung.DEFAULT_INTERCEPT, "shapes": shapes,
            "verdict": lf["verdict"], "bbox": lf["bbox"], "frame": lf["frame"],
            "stats": {k: lf[k] for k in ("lung_area", "body_area", "body_border", "perimeter", "left", "right", "components")},
            "mask_rle": lung.rle(lf["mask"]),
            "input": summary(lung.framed_input(px, lf, PRE, SIZE)) if lf["frame"] is not None else None,
        }
        out["cases"].append(case)
        print(f"{name}: {lf['verdict']}, lung {lf['lung_area']} px, bbox {lf['bbox']}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
