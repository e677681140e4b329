"""Train one config end to end: `python -m training.train --config training/configs/fpn256.toml`.

Reads the data pack (built by `python -m training.pack`, or built here from ../shared/data
when --pack is missing), trains with the paper's recipe (flips, rotations, small zoom / shift /
shear, Nadam, class-balanced loss) plus window jitter, and writes to --out:
- metrics.json: held-out metrics (overall and per source), learning curves, config, splits
- heldout_predictions.csv, ct16_predictions.csv
- weights.pt (fp32 state dict) or weights_fp16.pt with --fp16-weights (transfer-friendly)
Augmentation runs on the accelerator on whole batches, so data loading never starves it.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import config as config_mod
from . import data, metrics, models


def seed_all(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)


def augment(x: torch.Tensor, aug: dict, gen: torch.Generator) -> torch.Tensor:
    """Random affine (rotation, zoom, shift, shear, horizontal flip) and window jitter, per image."""
    b = x.shape[0]
    dev = x.device
    u = lambda lo, hi: torch.rand(b, generator=gen, device=dev) * (hi - lo) + lo
    ang = u(-aug["rotate_deg"], aug["rotate_deg"]) * math.pi / 180
    shear = u(-aug["shear_deg"], aug["shear_deg"]) * math.pi / 180
    zoom = u(1 - aug["zoom"], 1 + aug["zoom"])
    tx, ty = u(-aug["shift"], aug["shift"]) * 2, u(-aug["shift"], aug["shift"]) * 2
    flip = torch.where(torch.rand(b, generator=gen, device=dev) < 0.5, -1.0, 1.0) if aug["hflip"] else torch.ones(b, device=dev)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = cos / zoom * flip
    theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / zoom
    theta[:, 1, 0] = sin / zoom * flip
    theta[:, 1, 1] = (cos + torch.tan(shear) * sin) / zoom
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    c = u(1 - aug["contrast"], 1 + aug["contrast"]).view(b, 1, 1, 1)
    d = u(-aug["brightness"], aug["brightness"]).view(b, 1, 1, 1)
    return ((x - 0.5) * c + 0.5 + d).clamp(0.0, 1.0)


@torch.no_grad()
def predict(model, images_u8: torch.Tensor, idx: np.ndarray, device, batch: int = 128) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(idx), batch):
        x = images_u8[torch.as_tensor(idx[i:i + batch], device=images_u8.device)].to(device).float().div_(255.0).unsqueeze(1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            p = model(x.contiguous(memory_format=torch.channels_last))
        out.append(p[:, 1].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# Group weights are capped so that a tiny group (26 labelled COVID slices of one ct16 patient)
# cannot dominate the loss.
WEIGHT_CAP = (0.25, 4.0)


def sample_weights(source: np.ndarray, label: np.ndarray, train_idx: np.ndarray, balance: str) -> np.ndarray:
    """Per-sample loss weights (over the whole pack; only train_idx entries are used).
    'class': the paper's class balance. 'source_label': every (source, label) group weighs the
    same, so that a source's COVID prevalence (MosMed: 76%) is no shortcut for the label."""
    w = np.zeros(len(label), dtype=np.float32)
    if balance == "class":
        keys = label.astype(str)
    elif balance == "source_label":
        keys = np.char.add(np.char.add(source.astype(str), "/"), label.astype(str))
    else:
        raise ValueError(f"unknown balance {balance!r}")
    groups, inv, n = np.unique(keys[train_idx], return_inverse=True, return_counts=True)
    gw = np.clip(len(train_idx) / (len(groups) * n), *WEIGHT_CAP) if balance == "source_label" else len(train_idx) / (len(groups) * n)
    w[train_idx] = gw[inv]
    return w


def lr_at(epoch_f: float, tr: dict) -> float:
    if epoch_f < tr["warmup_epochs"]:
        return tr["lr"] * (epoch_f + 1e-3) / tr["warmup_epochs"]
    if tr["schedule"] == "constant":
        return tr["lr"]
    t = (epoch_f - tr["warmup_epochs"]) / max(1e-9, tr["epochs"] - tr["warmup_epochs"])
    return tr["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train(cfg: dict, pack: dict, out: Path, device: torch.device, fp16_weights: bool = False, log=print) -> dict:
    tr, aug = cfg["train"], cfg["augment"]
    seed_all(tr["seed"])
    out.mkdir(parents=True, exist_ok=True)
    labels = pack["label"]
    src, split = pack["source"], pack["split"]
    is_ct16 = src == "ct16"
    train_mask = (split == "train") & (~is_ct16 | cfg["data"]["use_ct16"])
    train_idx, held_idx, ct16_idx = np.where(train_mask)[0], np.where(split == "heldout")[0], np.where(is_ct16)[0]
    images = torch.from_numpy(pack["images"]).to(device)
    y_all = torch.from_numpy(labels).to(device)
    counts = np.bincount(labels[train_idx], minlength=2)
    sample_w = torch.from_numpy(sample_weights(src, labels, train_idx, tr["balance"])).to(device)
    log(f"[{cfg['name']}] train {len(train_idx)} (covid {counts[1]}), held-out {len(held_idx)}, ct16 {len(ct16_idx)}; device {device}")

    model = models.build(cfg["arch"], cfg["input_size"], cfg["in_channels"]).to(device).to(memory_format=torch.channels_last)
    if tr["optimizer"] != "nadam":
        raise ValueError("only nadam (the paper's optimizer) is wired")
    opt = torch.optim.NAdam(model.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"], decoupled_weight_decay=True)
    gen = torch.Generator(device=device).manual_seed(tr["seed"])
    rng = np.random.default_rng(tr["seed"])
    steps = max(1, len(train_idx) // tr["batch"])
    history = []
    t0 = time.time()
    for epoch in range(tr["epochs"]):
        model.train()
        perm = rng.permutation(train_idx)
        tot, n = 0.0, 0
        for s in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch + s / steps, tr)
            bi = torch.as_tensor(perm[s * tr["batch"]:(s + 1) * tr["batch"]], device=device)
            x = images[bi].float().div_(255.0).unsqueeze(1)
            x = augment(x, aug, gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model.logits(x)
            loss = (F.cross_entropy(logits.float(), y_all[bi], reduction="none") * sample_w[bi]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(bi)
            n += len(bi)
        rec = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "lr": lr_at(epoch + 1, tr), "seconds": round(time.time() - t0, 1)}
        if len(held_idx) and ((epoch + 1) % 5 == 0 or epoch + 1 == tr["epochs"]):
            p = predict(model, images, held_idx, device)
            m = metrics.summary(labels[held_idx], p)
            rec.update({"heldout_auc": m["auc"], "heldout_accuracy": m["accuracy"]})
        history.append(rec)
        log(json.dumps(rec))

    p_held = predict(model, images, held_idx, device)
    p_ct16 = predict(model, images, ct16_idx, device)
    result = {
        "config": cfg,
        "train_images": int(len(train_idx)), "train_covid": int(counts[1]),
        "heldout": metrics.summary(labels[held_idx], p_held),
        "heldout_by_source": {s: metrics.summary(labels[held_idx][src[held_idx] == s], p_held[src[held_idx] == s])
                              for s in sorted(set(src[held_idx]))},
        "history": history, "train_seconds": round(time.time() - t0, 1), "device": str(device),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    with open(out / "heldout_predictions.csv", "w") as f:
        f.write("name,source,label,p_covid\n")
        for i, p in zip(held_idx, p_held):
            f.write(f"{pack['name'][i]},{src[i]},{labels[i]},{p:.6f}\n")
    with open(out / "ct16_predictions.csv", "w") as f:
        f.write("name,label,p_covid,trained_on\n")
        for i, p in zip(ct16_idx, p_ct16):
            f.write(f"{pack['name'][i]},{labels[i]},{p:.6f},{int(cfg['data']['use_ct16'])}\n")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fp16_weights:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        torch.save(state, out / "weights_fp16.pt")
    else:
        torch.save(state, out / "weights.pt")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], help="override a config key, e.g. train.epochs=3")
    ap.add_argument("--pack", help="data pack (.npz) from training.pack; built from --data when absent")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--fp16-weights", action="store_true")
    a = ap.parse_args(argv)
    cfg = config_mod.load(a.config, config_mod.parse_overrides(a.set))
    out = Path(a.out or f"training/runs/{cfg['name']}")
    if a.pack and Path(a.pack).exists():
        pack_path = Path(a.pack)
    else:
        pack_path = out / "pack.npz"
        out.mkdir(parents=True, exist_ok=True)
        data.build_pack(Path(a.data), cfg["preprocessing"], cfg["input_size"], cfg["data"]["seed"],
                        cfg["data"]["holdout"], pack_path, cfg["data"]["jpeg_quality"])
    pack = data.load_pack(pack_path)
    if pack["images"].shape[1] != cfg["input_size"]:
        raise ValueError(f"pack is {pack['images'].shape[1]} px, config wants {cfg['input_size']}")
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    r = train(cfg, pack, out, torch.device(a.device), a.fp16_weights)
    print(json.dumps({"heldout": r["heldout"], "by_source": r["heldout_by_source"]}, indent=1))


if __name__ == "__main__":
    main()
