#!/usr/bin/env python3
"""Independent reference for the COVID-CTset slice selection rule (numpy + tifffile).

Written from the paper's description, sharing no code with the Rust implementation:
dark pixels = stored value < 300 in rows 240..339, cols 120..369; keep a slice iff
count > (max - min) / 1.5 over its series (evaluated exactly with fractions).

Usage: select_ref.py SERIES_DIR...   -> JSON {series_dir: [[file, count, kept], ...]}
"""
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile


def slice_files(series_dir):
    files = [p for p in Path(series_dir).iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: int(re.findall(r"\d+", p.name)[-1]))


def dark_count(path):
    img = tifffile.imread(path)
    assert img.dtype == np.uint16 and img.ndim == 2, (path, img.dtype, img.shape)
    return int(np.count_nonzero(img[240:340, 120:370] < 300))


def select(series_dir):
    files = slice_files(series_dir)
    counts = [dark_count(p) for p in files]
    thr = Fraction(max(counts) - min(counts)) / Fraction(3, 2)
    return [[p.name, c, c > thr] for p, c in zip(files, counts)]


if __name__ == "__main__":
    print(json.dumps({d: select(d) for d in sys.argv[1:]}))
