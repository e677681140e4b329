"""Where the lung parenchyma and the air sit in each source's model input, from a data pack:
per source / shared patient and label, the peaks of the pooled histogram (in HU of the card's
window) and the share of pixels below -950 HU. A check for an intensity shift between the
8-bit training sources and the 16-bit patients (issue 13).

    python -m training.pack_histograms training/runs/effl0_frame/pack.npz --center -500 --width 1500
"""
from __future__ import annotations

import argparse

import numpy as np

from . import data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pack")
    ap.add_argument("--center", type=float, default=-500.0)
    ap.add_argument("--width", type=float, default=1500.0)
    a = ap.parse_args(argv)
    p = data.load_pack(a.pack)
    lo = a.center - a.width / 2
    hu = lambda v: int(round(v / 255 * a.width + lo))
    groups: dict[tuple[str, int], np.ndarray] = {}
    for img, src, lab, name in zip(p["images"], p["source"], p["label"], p["name"]):
        s = str(src)
        if s in ("ct16", "dicom"):
            s = "/".join(str(name).split("/")[1:3])
        h = groups.setdefault((s, int(lab)), np.zeros(256))
        h += np.bincount(img.ravel(), minlength=256)
    below = int(round((-950 - lo) / a.width * 255))
    print("| source / patient | label | histogram peaks, HU (% of pixels in a 5-bin window) | pixels < -950 HU |")
    print("|---|---|---|---|")
    for (s, lab), h in sorted(groups.items()):
        h = h / h.sum()
        sm = np.convolve(h, np.ones(5) / 5, mode="same")
        peaks = [v for v in range(8, 130) if sm[v] == sm[v - 6:v + 7].max() and sm[v] > 0.002]
        txt = ", ".join(f"{hu(v)} ({sm[v] * 500:.1f})" for v in peaks)
        print(f"| {s} | {'covid' if lab else 'not covid'} | {txt} | {h[:below].sum():.3f} |")


if __name__ == "__main__":
    main()
