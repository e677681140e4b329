"""The FPN evidence graph (training/evidence.py): an exact split of the logit difference, added
without touching the probabilities, in fp32 and int8, and removable again."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training import evidence, export, models


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {export.INPUT: x})


@pytest.fixture(scope="module")
def fpn64(tmp_path_factory):
    """A randomly initialised paper network at 64 px (pyramid maps 4, 2, 2, 1, 1 cells a side),
    exported as the shipped model is, and its int8 twin."""
    torch.manual_seed(0)
    net = models.build("resnet50v2_fpn", 64).eval().requires_grad_(False)
    for mod in net.modules():  # distinct BatchNorm statistics, as trained ones are (identical
        if isinstance(mod, torch.nn.BatchNorm2d):  # folded biases would be exported deduplicated)
            for t in (mod.weight, mod.bias, mod.running_mean):
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if t is mod.weight else 0.0))
            mod.running_var.copy_(torch.rand_like(mod.running_var) + 0.5)
    cfg = {"in_channels": 1, "input_size": 64}
    d = tmp_path_factory.mktemp("fpn64")
    fp32 = export.export_fp32(net, cfg, d / "m.fp32.onnx")
    rng = np.random.default_rng(1)
    calib = rng.random((8, 64, 64), dtype=np.float32)
    int8 = export.quantize_int8(fp32, d / "m.int8.onnx", calib)
    x = rng.random((3, 1, 64, 64), dtype=np.float32)
    return onnx.load(str(fp32)), onnx.load(str(int8)), x


def test_fp32_evidence_sums_exactly_to_the_logit_difference_and_leaves_probs_untouched(fpn64):
    fp32, _, x = fpn64
    (before,) = _run(fp32, x)
    m = evidence.add_fpn_evidence(fp32)
    probs, ev = _run(m, x)
    np.testing.assert_array_equal(probs, before)
    assert ev.shape == (3, 4, 4), "the finest pyramid level's grid: input / 16"
    logit = np.log(probs[:, 1]) - np.log(probs[:, 0])
    np.testing.assert_allclose(ev.reshape(3, -1).sum(1) + evidence.evidence_bias(m), logit, atol=1e-4)
    assert len(fp32.graph.output) == 1, "the input model is not modified"


def test_int8_evidence_follows_the_int8_logits_up_to_rounding_and_the_fp32_map(fpn64):
    fp32, int8, x = fpn64
    m8, m32 = evidence.add_fpn_evidence(int8), evidence.add_fpn_evidence(fp32)
    (before,) = _run(int8, x)
    probs, ev = _run(m8, x)
    np.testing.assert_array_equal(probs, before)
    logit = np.log(probs[:, 1]) - np.log(probs[:, 0])
    spread = np.abs(ev).sum(axis=(1, 2))
    err = np.abs(ev.reshape(3, -1).sum(1) + evidence.evidence_bias(m8) - logit)
    assert (err <= 0.05 * spread + 0.05).all(), (err, spread)
    _, ev32 = _run(m32, x)
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ev, ev32)]
    assert min(r) > 0.8, r


def test_strip_gives_back_the_original_graph_and_other_graphs_are_refused(fpn64):
    fp32, int8, _ = fpn64
    for m in (fp32, int8):
        assert evidence.strip_fpn_evidence(evidence.add_fpn_evidence(m)).graph == m.graph
    with pytest.raises(ValueError, match="already has"):
        evidence.add_fpn_evidence(evidence.add_fpn_evidence(fp32))
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 2), torch.nn.Softmax(dim=1)).eval()
    import io
    buf = io.BytesIO()
    torch.onnx.export(plain, (torch.zeros(1, 1, 64, 64),), buf, input_names=[export.INPUT],
                      output_names=[export.OUTPUT], opset_version=13, dynamo=False)
    with pytest.raises(ValueError):
        evidence.add_fpn_evidence(onnx.load_from_string(buf.getvalue()))


def test_oos_eval_places_the_evidence_peak_on_the_slice_as_the_appliance_does():
    """oos_eval.evidence_peaks / peak_in_lungs (issue 33: the lung-driven share of a candidate's
    COVID calls): the first maximum's cell centre, through the lung frame, in the lung mask."""
    import numpy as np
    import torch
    from training import oos_eval

    class Fake(torch.nn.Module):
        def with_evidence(self, x):
            ev = torch.zeros(x.shape[0], 4, 4)
            ev[:, 1, 2] = 1.0  # peak: row 1, column 2
            return torch.softmax(torch.zeros(x.shape[0], 2), dim=1), ev

    peaks = oos_eval.evidence_peaks(Fake(), np.zeros((3, 8, 8), dtype=np.float32))
    assert peaks == [(0.625, 0.375)] * 3
    mask = np.zeros((100, 100), dtype=bool)
    lf = {"frame": [10, 20, 40], "mask": mask}
    # cell centre on the slice: x = 10 + 0.625 * 40 = 35, y = 20 + 0.375 * 40 = 35
    assert not oos_eval.peak_in_lungs(lf, peaks[0])
    mask[35, 35] = True
    assert oos_eval.peak_in_lungs(lf, peaks[0])
    assert not oos_eval.peak_in_lungs({"frame": [90, 90, 40], "mask": mask}, peaks[0]), "off the slice"
    assert oos_eval.evidence_peaks(torch.nn.Identity(), np.zeros((1, 8, 8), dtype=np.float32)) is None
