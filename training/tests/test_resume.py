"""A run stopped after an epoch and resumed equals an uninterrupted run, bit for bit."""
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
