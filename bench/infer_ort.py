#!/usr/bin/env python3
"""Inference benchmark, ONNX Runtime side (see bench/compare_infer.sh).

Usage: infer_ort.py CARD THREADS ITERS -> one JSON line, median ms per slice for the card's int8
model and its fp32 reference, same phantom input as examples/bench_infer.rs, one slice per run.
"""
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort


def phantom(n):
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) - n / 2
    p = np.full((n, n), 0.75, np.float32)
    p[np.abs(np.abs(x) - 0.2 * n) < 0.12 * n] = 0.2
    p[np.sqrt(x * x + y * y) > 0.43 * n] = 0.15
    return p[None, None]


def main():
    card_path, threads, iters = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    card = tomllib.loads(card_path.read_text())
    x = phantom(card["input"]["size"])
    out = {}
    for name, f in (("ort_int8", card["model"]["file"]), ("ort_fp32", card["model"]["reference_fp32_file"])):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(str(card_path.parent / f), so, providers=["CPUExecutionProvider"])
        s.run(None, {card["input"]["name"]: x})
        ms = []
        for _ in range(iters):
            t = time.perf_counter()
            s.run(None, {card["input"]["name"]: x})
            ms.append((time.perf_counter() - t) * 1e3)
        out[name] = float(np.median(ms))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
