import json

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training import config, data, export, train


def test_train_then_export_int8_in_tract_friendly_form(tiny_pack, tiny_config, tmp_path):
    cfg = config.load(tiny_config)
    pack = data.load_pack(tiny_pack)
    res = train.train(cfg, pack, tmp_path / "run", torch.device("cpu"), fp16_weights=True, log=lambda *_: None)
    assert len(res["history"]) == 2 and res["heldout"]["n"] == 8
    assert (tmp_path / "run" / "weights_fp16.pt").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["input_size"] == 64

    model = export.load_model(cfg, tmp_path / "run" / "weights_fp16.pt")
    fp32 = export.export_fp32(model, cfg, tmp_path / "m.fp32.onnx")
    x = pack["images"][:4].astype(np.float32)[:, None] / 255.0
    ref = model(torch.from_numpy(x)).detach().numpy()
    got = ort.InferenceSession(str(fp32)).run(None, {export.INPUT: x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)

    calib, names = export.calibration_planes(pack, 8, 0)
    assert all(n in set(pack["name"][pack["split"] == "train"]) for n in names), "calibrate on training slices only"
    int8 = export.quantize_int8(fp32, tmp_path / "m.int8.onnx", calib)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "QLinearConv" in ops and "QLinearMatMul" in ops
    assert "Conv" not in ops and "MatMul" not in ops, "every conv / matmul quantized"
    assert "Softmax" in ops, "softmax stays float"
    assert not any(o.startswith("QLinear") and o not in ("QLinearConv", "QLinearMatMul") for o in ops), "no contrib ops"
    p8 = ort.InferenceSession(str(int8)).run(None, {export.INPUT: x})[0]
    np.testing.assert_allclose(p8.sum(1), 1.0, atol=1e-5)
