#!/usr/bin/env python3
"""Benchmark peer: the paper's selection rule in numpy (tifffile decoding), on the same five
shared series as `cargo bench --bench select` (select_series/all_shared).

Prints one JSON line: {"series_per_s": ..., "median_s_per_pass": ..., "passes": N}.
Single-threaded, like the Rust benchmark. Usage: select_numpy.py CT16_DIR [PASSES]
"""
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

SERIES = ["covid/ctmd_P001/SR_1", "normal/ctmd_normal001/SR_1", "cap/ctmd_cap001/SR_1",
          "lungcancer/ldx_A0001/SR_2", "lungcancer/ldx_A0001/SR_3"]


def select(series_dir):
    files = sorted(p for p in series_dir.iterdir() if p.suffix == ".tif")
    counts = np.array([np.count_nonzero(tifffile.imread(p)[240:340, 120:370] < 300) for p in files])
    return 3 * counts > 2 * (counts.max() - counts.min())


def main():
    root = Path(sys.argv[1])
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    dirs = [root / s for s in SERIES]
    select(dirs[0])  # warm the page cache and imports
    times = []
    for _ in range(passes):
        t = time.perf_counter()
        for d in dirs:
            select(d)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({"series_per_s": len(dirs) / med, "median_s_per_pass": med, "passes": passes}))


if __name__ == "__main__":
    main()
