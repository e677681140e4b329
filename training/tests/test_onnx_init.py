"""The shipped fp32 ONNX -> PyTorch mapping (training/onnx_init.py) reproduces ONNX Runtime."""
from pathlib import Path

import numpy as np
import pytest
import torch

from training import models, onnx_init, preprocess

ROOT = Path(__file__).resolve().parents[2]
ONNX = ROOT / "models" / "ctsentinel-fpn256.fp32.onnx"
CT16 = ROOT.parent / "shared" / "data" / "ct16"
PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0}

needs = pytest.mark.skipif(not (ONNX.exists() and CT16.is_dir()), reason="needs models/ and ../shared/data/ct16")


def real_inputs(n_per_patient: int = 2) -> np.ndarray:
    import tifffile
    planes = []
    for d in sorted(p for p in CT16.glob("*/*/*") if p.is_dir()):
        files = sorted(d.glob("*.tif"))
        for f in files[len(files) // 3::max(1, len(files) // 4)][:n_per_patient]:
            planes.append(preprocess.preprocess_stored(tifffile.imread(f), PRE, 256))
    return np.stack(planes)[:, None].astype(np.float32)


@needs
def test_mapped_torch_model_reproduces_onnxruntime_on_real_slices():
    import onnxruntime as ort
    torch.set_num_threads(2)
    x = real_inputs()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    ref = ort.InferenceSession(str(ONNX), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    m = models.build("resnet50v2_fpn", 256)
    info = onnx_init.load_onnx_weights(m, ONNX, 256)
    assert info["convs"] == 61 and info["fused_bn"] == 32 and not info["resized_heads"]
    m.eval()
    with torch.no_grad():
        got = m(torch.from_numpy(x)).numpy()
        logit_gap = (m.logits(torch.from_numpy(x))[:, 1] - m.logits(torch.from_numpy(x))[:, 0]).numpy()
    assert np.abs(got - ref).max() < 1e-3
    # probabilities near 0/1 hide errors: compare the log-odds too
    ref_gap = np.log(ref[:, 1]) - np.log(ref[:, 0])
    assert np.abs(logit_gap - ref_gap).max() < 1e-2 * max(1.0, np.abs(ref_gap).max())
    # re-expressing the fused BNs with data statistics keeps the eval-mode function
    onnx_init.calibrate_bn(m, torch.from_numpy(x))
    with torch.no_grad():
        got2 = m(torch.from_numpy(x)).numpy()
    assert np.abs(got2 - ref).max() < 1e-3
    # and the BNs really changed (otherwise train-mode statistics would be wrong)
    assert not torch.all(m.backbone.stages[0][0].bn1.running_mean == 0)


@needs
def test_an_unmapped_model_differs_so_the_check_can_fail():
    import onnxruntime as ort
    x = real_inputs(1)
    ref = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    torch.manual_seed(0)
    m = models.build("resnet50v2_fpn", 256).eval()
    with torch.no_grad():
        assert np.abs(m(torch.from_numpy(x)).numpy() - ref).max() > 1e-3


def test_head_resampling_keeps_a_uniform_maps_logit():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4 * 8 * 8, 2)).astype(np.float32)
    w2 = onnx_init.resample_head(w, 4, 4 * 6 * 6)
    assert w2.shape == (4 * 6 * 6, 2)
    # a constant map per channel: logit = sum over positions, kept up to interpolation error
    f = np.repeat(np.arange(1, 5, dtype=np.float32), 64)
    f2 = np.repeat(np.arange(1, 5, dtype=np.float32), 36)
    np.testing.assert_allclose(f2 @ w2, f @ w, rtol=0.2, atol=2.0)
    smooth = np.tile(np.linspace(0, 1, 64, dtype=np.float32), 4)[:, None].repeat(2, 1)
    np.testing.assert_allclose((f2 @ onnx_init.resample_head(smooth, 4, 144)), f @ smooth, rtol=0.02)


def test_fused_bn_identity_is_exact_for_a_random_onnx(tmp_path):
    """Round trip on a small randomly initialised FPN: export (fuses conv+BN), map back."""
    torch.manual_seed(1)
    src = models.build("resnet50v2_fpn", 64).eval()
    for mod in src.modules():  # non-trivial BN statistics, so fusion changes the weights
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(2, 1, 64, 64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(src, (x,), str(path), input_names=["input"], output_names=["probs"], opset_version=13,
                      do_constant_folding=True, dynamo=False)
    dst = models.build("resnet50v2_fpn", 64)
    info = onnx_init.load_onnx_weights(dst, path, 64)
    assert info["fused_bn"] == 32
    dst.eval()
    with torch.no_grad():
        np.testing.assert_allclose(dst.logits(x).numpy(), src.logits(x).numpy(), rtol=1e-4, atol=1e-4)


@needs
def test_other_input_size_resamples_the_size_dependent_heads():
    m = models.build("resnet50v2_fpn", 192)
    info = onnx_init.load_onnx_weights(m, ONNX, 192)
    assert info["resized_heads"] == ["heads.0.weight", "heads.1.weight", "heads.2.weight", "heads.3.weight"]
    assert tuple(m.heads[0].weight.shape) == (256 * 12 * 12, 2)
