#!/usr/bin/env python3
"""Write the self-test's known answers: models/<name>.kat.json.

Usage: .venv/bin/python scripts/make-kat.py [models/<name>.toml]   (default: the one card in models/)

Generates the phantom slices of src/service/selftest.rs (`phantom(k)`, the same integer
formulas), preprocesses them with training/preprocess.py per the card, and records ONNX
Runtime's P(COVID) for the card's int8 model, run as its exact u8 x u8 twin
(tests/reference/classify_ref.py: ONNX Runtime's u8 x s8 kernels saturate on x86-64 CPUs without
VNNI, so the shipped file as it is would give other answers there). Rerun whenever the model changes.
"""
import hashlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from training import preprocess  # noqa: E402
from training.metrics import calibrated  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "reference"))
from classify_ref import u8u8_twin  # noqa: E402

PHANTOMS = (0, 1, 2, 3)


def phantom(k: int) -> np.ndarray:
    n = 512
    y, x = np.mgrid[0:n, 0:n].astype(np.int64)
    dx, dy = x - 256, y - 256
    v = np.full((n, n), 24, np.int64)
    body = dx * dx + dy * dy * 2 < 230 * 230
    adx = np.abs(dx)
    lung = body & ((adx - 100) * (adx - 100) * 4 + dy * dy < 150 * 150)
    blob = np.zeros((n, n), bool)
    for i in range(k * 3):
        side = -1 if i % 2 == 0 else 1
        bx, by, r = 256 + side * (80 + (i * 37) % 40), 180 + (i * 53) % 150, 10 + (i * 7 + k * 5) % 14
        blob |= (x - bx) ** 2 + (y - by) ** 2 < r * r
    v[body] = 1064
    v[lung] = 174
    v[lung & blob] = 474
    return v.astype(np.uint16)


def main():
    if len(sys.argv) > 1:
        card_path = Path(sys.argv[1])
    else:
        (card_path,) = sorted((ROOT / "models").glob("*.toml"))  # the shipped card: exactly one

    card = tomllib.loads(card_path.read_text())
    model = card_path.parent / card["model"]["file"]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert sha == card["model"]["sha256"], "model does not match its card"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(u8u8_twin(str(model)), so, providers=["CPUExecutionProvider"])
    out = []
    for k in PHANTOMS:
        x = preprocess.preprocess_stored(phantom(k), card["preprocessing"], card["input"]["size"])[None, None]
        probs = sess.run(None, {card["input"]["name"]: x.astype(np.float32)})[0][0]
        out.append([k, calibrated(probs, card["output"])])
    kat = {"model_sha256": sha, "p_covid": out,
           "produced_by": f"scripts/make-kat.py with onnxruntime {ort.__version__} on {model.name} (u8 x u8 twin)"}
    dst = card_path.parent / f"{card['model']['name']}.kat.json"
    dst.write_text(json.dumps(kat, indent=1) + "\n")
    print(json.dumps(kat))


if __name__ == "__main__":
    main()
