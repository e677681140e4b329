"""Export a trained config to ONNX fp32 and int8 and write its model card.

`python -m training.export --config C --weights W --pack P --out models/`

The fp32 file is kept as the reference for int8 agreement and the benchmarks; its large
weights are stored as fp16 behind Cast nodes (see `store_weights_fp16`).

int8 form: ONNX Runtime `quantize_static` in **QOperator** format with only Conv and MatMul
quantized (QLinearConv / QLinearMatMul, standard ONNX ops that tract executes with integer
kernels), uint8 activations, int8 weights, **per-tensor** scales, Softmax left in float.
Measured reasons (see models/README.md and the Rust test tests/model_int8.rs): tract 0.23 keeps
QDQ-format convolutions in float (slower than fp32); contrib ops (QLinearAdd, QLinearConcat,
QGemm) do not load in tract; a quantized Softmax becomes a lookup table that returns ~1.0
everywhere; per-channel weights ran 2-3x slower in tract than per-tensor.
Calibration: min/max over a fixed random sample of *training* slices of the pack.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from . import config as config_mod
from . import data, models

INPUT, OUTPUT = "input", "probs"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(cfg: dict, weights: Path) -> torch.nn.Module:
    model = models.build(cfg["arch"], cfg["input_size"], cfg["in_channels"])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return model.eval()


EVIDENCE = "evidence"


def export_fp32(model: torch.nn.Module, cfg: dict, out: Path) -> Path:
    """fp32 ONNX; a model with `with_evidence` (EfficientNetLite0) gets a second output,
    `evidence` (N x h x w, the exact per-position split of the logit difference), computed in the
    same pass: the appliance shows it without a second model or gradients. `probs` stays the
    first output, which is all a reader of the first output needs. (The FPN network gets its
    evidence output after quantization, from `training/evidence.py`.)"""
    x = torch.zeros(1, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    if hasattr(model, "with_evidence"):
        torch.onnx.export(models.WithEvidence(model).eval(), (x,), str(out), input_names=[INPUT],
                          output_names=[OUTPUT, EVIDENCE],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}, EVIDENCE: {0: "batch"}},
                          opset_version=13, do_constant_folding=True, dynamo=False)
        return out
    torch.onnx.export(model, (x,), str(out), input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=13,
                      do_constant_folding=True, dynamo=False)
    return out


class _Reader:
    def __init__(self, planes: np.ndarray):
        self.it = iter(planes[:, None, :, :].astype(np.float32)[:, None])

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {INPUT: x}


def quantize_int8(fp32: Path, out: Path, calib: np.ndarray, per_channel: bool = False) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = out.with_suffix(".prep.onnx")
    # skip_optimization: ORT would fuse MatMul+Add into Gemm, which quantizes to the QGemm contrib op.
    quant_pre_process(str(fp32), str(prep), skip_optimization=True, skip_symbolic_shape=True)
    quantize_static(str(prep), str(out), _Reader(calib), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv", "MatMul"], per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    prep.unlink()
    return out


def store_weights_fp16(src: Path, dst: Path, min_elements: int = 1024) -> Path:
    """Rewrite an fp32 ONNX file with its large float initializers stored as fp16, each behind a
    Cast back to float: compute stays fp32, the file halves (115 -> 58 MB, under the 100 MB a
    git host accepts per file). The trained weights came off the GPU in fp16, so only the
    BatchNorm-folded convolution weights are rounded again (relative error <= 2^-11)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    casts, keep = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elements:
            keep.append(numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_cast"))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return dst


def calibration_planes(pack: dict, n: int, seed: int, use_patients: bool = True) -> tuple[np.ndarray, list[str]]:
    """A fixed random sample of training slices. `use_patients=False` (a config with
    data.use_ct16 = false) leaves out the whole in-domain patients (ct16, thin DICOM), so even the
    int8 ranges owe nothing to the patients the out-of-sample table reports."""
    train = pack["split"] == "train"
    if not use_patients:
        train &= ~np.isin(pack["source"], ("ct16", "dicom"))
    idx = np.where(train)[0]
    pick = np.sort(np.random.default_rng(seed).choice(idx, size=min(n, len(idx)), replace=False))
    return pack["images"][pick].astype(np.float32) / 255.0, [str(pack["name"][i]) for i in pick]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--out", default="models")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--per-channel", action="store_true",
                    help="per-channel int8 weights (depthwise networks lose much to per-tensor; tract runs them slower)")
    a = ap.parse_args(argv)
    cfg = config_mod.load(a.config)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg, Path(a.weights))
    fp32 = export_fp32(model, cfg, out / f"{cfg['name']}.fp32.onnx")
    pack = data.load_pack(Path(a.pack))
    calib, names = calibration_planes(pack, a.calibration, cfg["data"]["seed"], bool(cfg["data"]["use_ct16"]))
    int8 = quantize_int8(fp32, out / f"{cfg['name']}.int8.onnx", calib, a.per_channel)
    store_weights_fp16(fp32, fp32)  # the int8 file was quantized from the full-precision one
    if cfg["arch"] == "resnet50v2_fpn":  # after quantization, so the map stays in float
        from . import evidence
        evidence.rewrite(int8)  # the fp32 reference gets its map in memory (evidence.add_fpn_evidence)
    (out / f"{cfg['name']}.calibration.json").write_text(json.dumps({"count": len(names), "slices": names}, indent=0))
    print(json.dumps({"fp32": str(fp32), "fp32_sha256": sha256(fp32), "int8": str(int8), "int8_sha256": sha256(int8)}))


if __name__ == "__main__":
    main()
