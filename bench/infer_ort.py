#!/usr/bin/env python3
"""Inference benchmark, ONNX Runtime side (see bench/compare_infer.sh).

Usage: infer_ort.py CARD THREADS ITERS -> one JSON line, median ms per slice for the card's int8
model and its fp32 reference, same phantom input as examples/bench_infer.rs, one slice per run.
Also `ort_int8_exact`: the int8 model's exact u8 x u8 twin (tests/reference/classify_ref.py). On
x86-64 CPUs without VNNI, ONNX Runtime's u8 x s8 kernels (`ort_int8`) saturate and give other
answers than the exact ones; the twin is the peer that computes what tract computes there.
"""
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
from classify_ref import u8u8_twin  # noqa: E402


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
    int8 = str(card_path.parent / card["model"]["file"])
    for name, model in (
        ("ort_int8", int8),
        ("ort_int8_exact", u8u8_twin(int8)),
        ("ort_fp32", str(card_path.parent / card["model"]["reference_fp32_file"])),
    ):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
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
