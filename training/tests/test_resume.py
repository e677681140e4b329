"""A run stopped after an epoch and resumed equals an uninterrupted run, bit for bit."""
import numpy as np
import torch

from training import config, data, train


def _run(cfg, pack, out, **kw):
    lines = []
    res = train.train(cfg, pack, out, torch.device("cpu"), log=lines.append, **kw)
    return res, lines


def test_resume_equals_uninterrupted(tiny_pack, tiny_config, tmp_path):
    torch.set_num_threads(1)
    cfg = config.load(tiny_config, {"train.epochs": "3"})
    cfg["train"]["heldout_eval"] = 4
    cfg["augment"]["noise"] = 0.02
    pack = data.load_pack(tiny_pack)
    full, _ = _run(cfg, pack, tmp_path / "a")
    part, _ = _run(cfg, pack, tmp_path / "b", stop_after=1)
    assert part == {"stopped_after_epoch": 1, "history": part["history"]} and len(part["history"]) == 1
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 1
    rest, lines = _run(cfg, pack, tmp_path / "b", resume=True)
    assert any("resumed from" in s for s in lines)
    assert sum(s.startswith("epoch ") for s in lines) == 2, "the resumed call trains only epochs 2 and 3"
    assert [h["train_loss"] for h in rest["history"]] == [h["train_loss"] for h in full["history"]]
    assert [h["heldout_auc"] for h in rest["history"]] == [h["heldout_auc"] for h in full["history"]]
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rest["heldout"] == full["heldout"]


def test_resume_without_state_would_differ(tiny_pack, tiny_config, tmp_path):
    """The check above can fail: a second run that restarts from scratch at epoch 2 (fresh RNG
    and optimizer) ends with different weights."""
    torch.set_num_threads(1)
    cfg = config.load(tiny_config, {"train.epochs": "2"})
    pack = data.load_pack(tiny_pack)
    _run(cfg, pack, tmp_path / "a")
    _run(cfg, pack, tmp_path / "b", stop_after=1)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    ck["torch_rng"] = torch.manual_seed(123).get_state()  # lose the RNG state
    ck["numpy_rng"]["state"]["state"] += 1
    torch.save(ck, tmp_path / "b" / "checkpoint.pt")
    _run(cfg, pack, tmp_path / "b", resume=True)
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_config(tiny_pack, tiny_config, tmp_path):
    import pytest
    cfg = config.load(tiny_config)
    pack = data.load_pack(tiny_pack)
    _run(cfg, pack, tmp_path / "a", stop_after=1)
    with pytest.raises(ValueError, match="another config"):
        _run(config.load(tiny_config, {"train.lr": "0.5"}), pack, tmp_path / "a", resume=True)


def test_freeze_stops_gradients_and_keeps_bn_statistics(tiny_pack, tiny_config, tmp_path):
    cfg = config.load(tiny_config, {"train.epochs": "1"})
    cfg["train"]["freeze"] = 2
    pack = data.load_pack(tiny_pack)
    torch.manual_seed(cfg["train"]["seed"])
    from training import models
    ref = models.build(cfg["arch"], cfg["input_size"]).state_dict()
    _run(cfg, pack, tmp_path / "f")
    got = torch.load(tmp_path / "f" / "weights.pt", weights_only=True)
    frozen = [k for k in got if k.startswith(("backbone.stem.", "backbone.stages.0."))]
    assert frozen and all(torch.equal(got[k], ref[k]) for k in frozen)
    assert not torch.equal(got["backbone.stages.1.0.conv1.weight"], ref["backbone.stages.1.0.conv1.weight"])


def test_bn_recalibration_sets_running_stats_to_the_exact_mean_of_clean_slices():
    """Guards train.recalibrate_bn: after it, a trainable BatchNorm's running mean is the mean of
    the calibration slices' features and its variance the slice-weighted per-batch variance (not
    a momentum blend of earlier augmented batches), frozen parts keep theirs, momentum is restored."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
            self.b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

        def logits(self, x):
            return self.b(self.a(x)).mean((2, 3))

    net = Net()
    frozen = [net.a]
    a_before = net.a[1].running_mean.clone()
    net.b[1].running_mean.fill_(7.0)          # stale statistics from "augmented" training
    imgs = torch.randint(0, 256, (10, 16, 16), dtype=torch.uint8)
    idx = np.arange(10)
    n = train.recalibrate_bn(net, frozen, imgs, idx, torch.device("cpu"), batch=3)
    assert n == 1
    with torch.no_grad():
        x = imgs.float().div(255.0).unsqueeze(1)
        feat = net.b[0](net.a(x))                 # net.a in eval mode, as during recalibration
        mean = feat.mean((0, 2, 3))
        parts = [feat[i:i + 3] for i in range(0, 10, 3)]      # batches of 3, 3, 3, 1
        var = sum(len(p) * p.var((0, 2, 3), unbiased=True) for p in parts) / 10
    assert torch.allclose(net.b[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net.b[1].running_var, var, rtol=1e-3)
    assert torch.equal(net.a[1].running_mean, a_before)
    assert net.b[1].momentum == 0.1 and not net.b[1].training
