#!/usr/bin/env python3
"""Float reference for the evidence maps (tests/model_int8.rs): the card's fp32 reference model
with the same evidence graph added in memory (training/evidence.py), in ONNX Runtime.

Usage: evidence_ref.py CARD.toml IMAGE.tif...  -> JSON
  {"int8_bias": b, "fp32_bias": b, "maps": {image: {"grid": [r, c], "map": [...], "logit": l}}}
where l = ln p_covid - ln p_normal of the fp32 model, and b the evidence graph's constant
(l = b + sum(map)); int8_bias is read from the card's int8 file.
"""
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training import evidence, preprocess  # noqa: E402


def main():
    card_path = Path(sys.argv[1])
    card = tomllib.loads(card_path.read_text())
    fp32 = evidence.add_fpn_evidence(onnx.load(str(card_path.parent / card["model"]["reference_fp32_file"])))
    int8 = onnx.load(str(card_path.parent / card["model"]["file"]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(fp32.SerializeToString(), so, providers=["CPUExecutionProvider"])
    k = card["output"]["covid_index"]
    maps = {}
    for p in sys.argv[2:]:
        x = preprocess.preprocess_stored(tifffile.imread(p), card["preprocessing"], card["input"]["size"])
        probs, ev = sess.run(None, {card["input"]["name"]: x[None, None].astype(np.float32)})
        maps[p] = {"grid": list(ev.shape[1:]), "map": ev[0].ravel().tolist(),
                   "logit": float(np.log(probs[0, k]) - np.log(probs[0, 1 - k]))}
    print(json.dumps({"int8_bias": evidence.evidence_bias(int8), "fp32_bias": evidence.evidence_bias(fp32),
                      "maps": maps}))


if __name__ == "__main__":
    main()
