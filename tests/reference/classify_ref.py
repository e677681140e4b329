#!/usr/bin/env python3
"""Reference classifier for the Rust/tract parity test: the training side's preprocessing
(training/preprocess.py) and ONNX Runtime on the same model file, per the model card.

Usage: classify_ref.py CARD.toml MODEL.onnx IMAGE...  -> JSON {image: p_covid}
P(COVID) is the calibrated one the appliance reports (the card's temperature, if any).
16-bit TIFFs go through the card's window; 8-bit PNG/JPEG are value/255.
"""
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training import preprocess  # noqa: E402
from training.metrics import calibrated  # noqa: E402


def plane(path: str, card: dict) -> np.ndarray:
    size = card["input"]["size"]
    if path.lower().endswith((".tif", ".tiff")):
        return preprocess.preprocess_stored(tifffile.imread(path), card["preprocessing"], size)
    return preprocess.preprocess_8bit(np.asarray(Image.open(path).convert("L")), size)


def main():
    card = tomllib.loads(Path(sys.argv[1]).read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[2], so, providers=["CPUExecutionProvider"])
    out = {}
    for p in sys.argv[3:]:
        x = plane(p, card)[None, None].astype(np.float32)
        out[p] = calibrated(sess.run(None, {card["input"]["name"]: x})[0][0], card["output"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
