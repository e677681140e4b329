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


def test_fp16_weight_storage_keeps_fp32_compute_and_outputs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 2),
                              torch.nn.Softmax(dim=1)).eval()
    x = torch.rand(2, 1, 16, 16)
    src = tmp_path / "a.onnx"
    torch.onnx.export(net, (x,), str(src), input_names=["input"], output_names=["probs"], opset_version=13, dynamo=False)
    dst = export.store_weights_fp16(src, tmp_path / "b.onnx", min_elements=64)
    m = onnx.load(str(dst))
    assert any(n.op_type == "Cast" for n in m.graph.node)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "input stays fp32"
    a = ort.InferenceSession(str(src)).run(None, {"input": x.numpy()})[0]
    b = ort.InferenceSession(str(dst)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert dst.stat().st_size < 0.6 * src.stat().st_size


def test_model_card_is_valid_toml_with_what_the_appliance_reads(tiny_config, tmp_path):
    import tomllib
    from training import evaluate
    cfg = config.load(tiny_config)
    m = {"n": 10, "auc": 0.8, "accuracy": 0.7, "sensitivity_covid": 0.6, "specificity_non_covid": 0.8}
    ev = {"model": {"int8_sha256": "a" * 64, "fp32_sha256": "b" * 64}, "command": "x",
          "heldout": {"int8": m, "fp32": m, "histogram_baseline": m}, "int8_vs_fp32": {"label_agreement": 0.99},
          "ct16_in_training": True}
    files = {"int8": tmp_path / "n.int8.onnx", "fp32": tmp_path / "n.fp32.onnx"}
    # Whether the card names an evidence output is read from the int8 file's outputs.
    from onnx import TensorProto, helper
    def write_model(outputs):
        nodes = [helper.make_node("Identity", ["input"], [o]) for o in outputs]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1]) for o in outputs])
        onnx.save(helper.make_model(g), str(files["int8"]))
    write_model(["probs"])
    assert "evidence" not in tomllib.loads(evaluate.card(ev, cfg, files))["output"]
    write_model(["probs", "evidence"])
    card = tomllib.loads(evaluate.card(ev, cfg, files))
    assert card["output"]["evidence"] == "evidence"
    assert card["notice"] == "research use only, not a diagnosis"
    assert card["model"]["sha256"] == "a" * 64 and card["model"]["file"] == "n.int8.onnx"
    assert card["output"]["classes"][card["output"]["covid_index"]] == "covid"
    assert card["decision"]["patient_covid_fraction"] == 0.10
    assert card["preprocessing"] == {**{k: cfg["preprocessing"][k] for k in ("kind", "center", "width")},
                                     "stored_intercept": -1024.0, "eight_bit": card["preprocessing"]["eight_bit"]}
    assert card["input"]["size"] == 64
