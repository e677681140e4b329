#!/usr/bin/env python3
"""Reference classifier for the Rust/tract parity test: the training side's preprocessing
(training/preprocess.py) and ONNX Runtime on the same model file, per the model card.

Usage: classify_ref.py CARD.toml MODEL.onnx IMAGE... [--as-shipped]  -> JSON {image: p_covid}
P(COVID) is the calibrated one the appliance reports (the card's temperature, if any).
16-bit TIFFs go through the card's window; 8-bit PNG/JPEG are value/255.

Exact integer products on every CPU: ONNX Runtime's u8 x s8 kernels on x86-64 without VNNI
(AVX2 only, e.g. AMD Zen 1-3) sum pairs of products with `vpmaddubsw`, which saturates at
int16, so on those CPUs its int8 results drift from the exact ones (measured on an AMD EPYC
Zen 1: P 0.80 -> 0.93 on a P001 slice while tract and fp32 gave 0.80 and 0.87; ONNX Runtime's
own `reduce_range` option exists for this). The reference therefore runs an exact twin of the
model: every int8 weight of a QLinearConv / QLinearMatMul (and its zero point) shifted by +128
to uint8, which leaves each `w - zero_point`, and so every exact result, unchanged, and sends
ONNX Runtime through its u8 x u8 kernels, which widen to int16 before multiplying (no
saturation). `--as-shipped` runs the file as it is.
"""
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
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


def u8u8_twin(path: str) -> bytes:
    """The model with every int8 weight (and zero point) of its integer products moved to
    uint8 by +128: the same exact results, computed by ONNX Runtime's non-saturating kernels.
    New initializers per node, so any other consumer of the int8 tensors is left as it was."""
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    moved = 0
    for node in m.graph.node:
        if node.op_type not in ("QLinearConv", "QLinearMatMul"):
            continue
        for slot in (3, 5):  # weight, weight zero point (same slot in both ops)
            t = inits.get(node.input[slot])
            if t is None:
                raise SystemExit(f"{node.name}: input {slot} is not a constant")
            a = numpy_helper.to_array(t)
            if a.dtype == np.uint8:
                continue
            if a.dtype != np.int8:
                raise SystemExit(f"{node.name}: input {slot} is {a.dtype}, expected int8")
            u = numpy_helper.from_array((a.astype(np.int16) + 128).astype(np.uint8),
                                        f"{node.input[slot]}__u8__{node.name}")
            m.graph.initializer.append(u)
            node.input[slot] = u.name
            moved += 1
    if moved == 0:
        raise SystemExit(f"{path}: no int8 weight found to move (not the int8 model?)")
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    keep = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m.SerializeToString()


def main():
    args = sys.argv[1:]
    as_shipped = "--as-shipped" in args
    args = [a for a in args if a != "--as-shipped"]
    card = tomllib.loads(Path(args[0]).read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    model = args[1] if as_shipped else u8u8_twin(args[1])
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    out = {}
    for p in args[2:]:
        x = plane(p, card)[None, None].astype(np.float32)
        out[p] = calibrated(sess.run(None, {card["input"]["name"]: x})[0][0], card["output"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
