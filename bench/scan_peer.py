#!/usr/bin/env python3
"""Benchmark peer of bench/scan_thin.sh: the same scan in Python on the same machine and model.

pydicom (+ pylibjpeg for JPEG Lossless) or tifffile decoding, slices ordered head to foot
(ImagePositionPatient z; file name for TIFF), stored values as HU + 1024, the paper's selection
in numpy, the card's preprocessing (training/preprocess.py) and ONNX Runtime on the card's int8
file for the selected slices, one slice per run, then the 10% rule. What it leaves out of the
appliance's work: the lung masks placing the evidence maps, the report, the checks.

Usage: scan_peer.py CARD DIR THREADS -> one JSON line
  {"slices": N, "selected": S, "covid": C, "verdict": "...", "seconds": wall without imports}
"""
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training import preprocess  # noqa: E402
from training.metrics import calibrated  # noqa: E402

ROI = (slice(240, 340), slice(120, 370))


def read_series(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if files and all(p.suffix.lower() in (".tif", ".tiff") for p in files):
        import tifffile
        return [tifffile.imread(p) for p in files]
    import pydicom
    slices = []
    for p in files:
        ds = pydicom.dcmread(p)
        if getattr(ds, "Modality", "") != "CT" or "PixelData" not in ds:
            continue
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append((float(ds.ImagePositionPatient[2]), np.clip(np.rint(hu + 1024), 0, 65535).astype(np.uint16)))
    slices.sort(key=lambda s: -s[0])
    return [s for _, s in slices]


def main():
    card_path, folder, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    t0 = time.perf_counter()
    card = tomllib.loads(card_path.read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(card_path.parent / card["model"]["file"]), so, providers=["CPUExecutionProvider"])
    stored = read_series(folder)
    counts = np.array([np.count_nonzero(s[ROI] < 300) for s in stored])
    keep = 3 * counts > 2 * (counts.max() - counts.min())
    name = card["input"]["name"]
    covid = 0
    for s in (s for s, k in zip(stored, keep) if k):
        x = preprocess.preprocess_stored(s, card["preprocessing"], card["input"]["size"])[None, None].astype(np.float32)
        p = calibrated(sess.run(None, {name: x})[0][0], card["output"])
        covid += p >= card["output"]["threshold"]
    selected = int(keep.sum())
    frac = covid / selected if selected else None
    verdict = "undetermined" if frac is None else ("covid" if frac >= card["decision"]["patient_covid_fraction"] else "normal")
    print(json.dumps({"slices": len(stored), "selected": selected, "covid": int(covid), "verdict": verdict,
                      "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
