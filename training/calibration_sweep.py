"""Compare int8 quantization settings by held-out agreement with the fp32 model (ONNX Runtime).

`python -m training.calibration_sweep --config training/configs/fpn256.toml NAME:COUNT:METHOD[:pc] ...`
e.g. `mm200:200:MinMax ent64:64:Entropy pct64:64:Percentile pc200:200:MinMax:pc` (pc = per-channel
weights). Calibration slices are drawn from the training split; each setting prints one JSON
line (label agreement with fp32, AUC, mean |dp|). Histogram methods (Entropy, Percentile) keep
every calibration activation in memory: more than about 100 slices exhausts 24 GB.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from . import config as config_mod
from . import evaluate, export, metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--fp32", default="models/ctsentinel-fpn256.fp32.onnx")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("settings", nargs="+")
    a = ap.parse_args(argv)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = config_mod.load(a.config)
    planes, y, _src, split, _ = evaluate.train8_planes(Path(a.data), cfg)
    held = split == "heldout"
    p_fp32 = evaluate.Runner(Path(a.fp32), 2).p_covid(planes[held])
    train_idx = np.where(~held)[0]
    with tempfile.TemporaryDirectory() as d:
        prep = Path(d) / "prep.onnx"
        quant_pre_process(a.fp32, str(prep), skip_optimization=True, skip_symbolic_shape=True)
        for setting in a.settings:
            name, count, method, *flags = setting.split(":")
            pick = np.sort(np.random.default_rng(cfg["data"]["seed"]).choice(train_idx, size=int(count), replace=False))
            t = time.time()
            out = Path(d) / f"{name}.onnx"
            quantize_static(str(prep), str(out), export._Reader(planes[pick]), quant_format=QuantFormat.QOperator,
                            op_types_to_quantize=["Conv", "MatMul"], per_channel="pc" in flags,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method))
            p8 = evaluate.Runner(out, 2).p_covid(planes[held])
            print(json.dumps({"name": name, "label_agreement": float(((p8 >= .5) == (p_fp32 >= .5)).mean()),
                              "auc": metrics.auc(y[held], p8), "mean_abs_dp": float(np.abs(p8 - p_fp32).mean()),
                              "seconds": round(time.time() - t)}), flush=True)


if __name__ == "__main__":
    main()
