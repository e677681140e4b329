"""Train one config end to end: `python -m training.train --config training/configs/fpn256.toml`.

Reads the data pack (built by `python -m training.pack`, or built here from ../shared/data
when --pack is missing), trains with the paper's recipe (flips, rotations, small zoom / shift /
shear, Nadam, class-balanced loss) plus window jitter, and writes to --out:
- metrics.json: held-out metrics (overall and per source), learning curves, config, splits
- heldout_predictions.csv, ct16_predictions.csv
- weights.pt (fp32 state dict) or weights_fp16.pt with --fp16-weights (transfer-friendly)
- checkpoint.pt after every epoch (atomic rename): model, optimizer, RNG states, epoch, history;
  `--resume` continues at the next epoch and gives the same result as an uninterrupted run
Augmentation runs on the accelerator on whole batches, so data loading never starves it.

CPU fine-tuning from the shipped weights (see training/README.md for the measured epoch times):
    python -m training.train --config training/configs/fpn192_lung.toml --threads 1 \
        --init-onnx models/ctsentinel-fpn256.fp32.onnx --resume
One progress line per epoch: epoch, train loss, held-out AUC (a fixed subsample,
train.heldout_eval slices), seconds, ETA.
"""
from __future__ import annotations

import argparse
import json
import math
import os
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


def augment(x: torch.Tensor, aug: dict, gen: torch.Generator, pad: float = 0.0) -> torch.Tensor:
    """Random affine (rotation, zoom, shift, shear, horizontal flip), window jitter and optional
    Gaussian noise (aug["noise"], std in [0, 1] units), per image. `pad` is the value that
    enters from outside the image (air for lung-framed input).

    Optional, for what differs between scanners and reconstructions (issue 33: the 16-bit series
    are thin and noisier than the 8-bit sources): `blur_max_px` blurs each image with a Gaussian
    of sigma drawn in [0, blur_max_px] px (thicker slices, softer kernels), `noise_max` adds
    Gaussian noise of a std drawn per image in [0, noise_max] (instead of the fixed `noise`)."""
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
    x = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    c = u(1 - aug["contrast"], 1 + aug["contrast"]).view(b, 1, 1, 1)
    d = u(-aug["brightness"], aug["brightness"]).view(b, 1, 1, 1)
    x = (x - 0.5) * c + 0.5 + d
    if aug.get("blur_max_px", 0.0) > 0:
        x = gaussian_blur(x, u(0.0, aug["blur_max_px"]))
    if aug.get("noise_max", 0.0) > 0:
        x = x + torch.randn(x.shape, generator=gen, device=dev) * u(0.0, aug["noise_max"]).view(b, 1, 1, 1)
    elif aug.get("noise", 0.0) > 0:
        x = x + torch.randn(x.shape, generator=gen, device=dev) * aug["noise"]
    return x.clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur of each image (b, 1, h, w) with its own sigma (px; 0 leaves the
    image as it is), borders replicated."""
    b = x.shape[0]
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # sigma -> 0: a delta
    y = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="replicate")  # (1, b, h+2r, w+2r)
    y = F.conv2d(y, k.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, k.view(b, 1, -1, 1), groups=b)
    return y.transpose(0, 1)


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


PATIENT_SOURCES = ("ct16", "dicom")  # whole in-domain patients; trained on only with data.use_ct16


def patient_of(name: str) -> str:
    """The shared patient a pack name belongs to: `ct16/<label>/<patient>/...` or
    `dicom/<label>/<patient>[_thin]/...` (the thin DICOM series is the same patient)."""
    parts = str(name).split("/")
    return parts[2].removesuffix("_thin") if len(parts) > 2 else ""


def trained_patient_mask(cfg: dict, src: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Pack rows of shared patients that training may use: none without data.use_ct16, else
    every patient but those in data.exclude_patients (a leave-patients-out fold)."""
    if not cfg["data"]["use_ct16"]:
        return np.zeros(len(src), bool)
    excluded = set(cfg["data"].get("exclude_patients", []))
    return np.isin(src, PATIENT_SOURCES) & np.array([patient_of(n) not in excluded for n in names], bool)


def freeze_modules(model: torch.nn.Module, k: int) -> list[torch.nn.Module]:
    """The first k backbone parts (stem, stage 1, stage 2, ...) of a ResNet50V2-based model
    (or of `freeze_parts()` where the model has it),
    with their parameters set to requires_grad=False (kept in eval mode while training)."""
    if k <= 0:
        return []
    if hasattr(model, "freeze_parts"):  # EfficientNet-Lite0: stem, then MBConv blocks
        parts = model.freeze_parts()[:k]
    else:
        bb = getattr(model, "backbone", None)
        if bb is None:
            raise ValueError("train.freeze needs a model with a ResNet50V2 backbone or freeze_parts()")
        parts = [bb.stem, *bb.stages][:k]
    for m in parts:
        for p in m.parameters():
            p.requires_grad_(False)
    return parts


def trainable_bns(model, frozen: list) -> list:
    """The BatchNorm layers outside the frozen parts (those whose running statistics training moves)."""
    fixed = {id(m) for part in frozen for m in part.modules()}
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and id(m) not in fixed]


@torch.no_grad()
def recalibrate_bn(model, frozen: list, images_u8: torch.Tensor, idx: np.ndarray, device, batch: int = 64) -> int:
    """Recompute the running statistics of the trainable BatchNorm layers over un-augmented
    training slices `idx` ("precise BN", Wu & Johnson 2021): the mean exactly, the variance as the
    slice-weighted average of the per-batch variances; everything else in eval
    mode. Why: during training those statistics follow augmented batches (noise, contrast,
    zoom), so eval mode normalises clean slices with the statistics of other inputs; in the
    body-frame fold this showed as a held-out accuracy of 0.48 at an AUC of 0.73 (every slice
    called COVID). Returns the number of layers recalibrated."""
    bns = trainable_bns(model, frozen)
    model.eval()
    saved = []
    for m in bns:
        saved.append(m.momentum)
        m.reset_running_stats()
        m.train()
    for i in range(0, len(idx), batch):
        part = idx[i:i + batch]
        for m in bns:              # weight each batch by its slices: the running mean is the exact mean
            m.momentum = len(part) / (i + len(part))
        x = images_u8[torch.as_tensor(part, device=images_u8.device)].to(device).float().div_(255.0).unsqueeze(1)
        model.logits(x.contiguous(memory_format=torch.channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom
        m.eval()
    return len(bns)


def set_train_mode(model, frozen: list, bn: str):
    model.train()
    for m in frozen:
        m.eval()
    if bn == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def pad_value(cfg: dict) -> float:
    """The input value of air (-1000 HU) for lung-framed or body-only input (what lies outside
    the frame or the body)."""
    pre = cfg["preprocessing"]
    if pre.get("frame", "none") not in ("lung", "body", "body_box") or pre["kind"] != "hu_window":
        return 0.0
    lo = pre["center"] - pre["width"] / 2.0
    return float(min(max((-1000.0 - lo) / pre["width"], 0.0), 1.0))


def save_atomic(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train(cfg: dict, pack: dict, out: Path, device: torch.device, fp16_weights: bool = False, log=print,
          init_onnx: str | Path | None = None, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train (or continue, with resume) one config. `stop_after`: return after that many epochs
    of this call (the checkpoint holds the state; a later resume continues)."""
    tr, aug = cfg["train"], cfg["augment"]
    seed_all(tr["seed"])
    out.mkdir(parents=True, exist_ok=True)
    labels = pack["label"]
    src, split = pack["source"], pack["split"]
    is_patient = np.isin(src, PATIENT_SOURCES)
    train_mask = (split == "train") & (~is_patient | trained_patient_mask(cfg, src, pack["name"]))
    train_idx, held_idx, ct16_idx = np.where(train_mask)[0], np.where(split == "heldout")[0], np.where(is_patient)[0]
    n_eval = int(tr.get("heldout_eval", 0))
    bn_mode = tr.get("bn", "train")
    if bn_mode not in ("train", "frozen", "recalibrate"):
        raise ValueError(f"train.bn must be 'train', 'frozen' or 'recalibrate', not {bn_mode!r}")
    # A fixed training subsample, drawn with the loss weights (source x label balanced): the
    # slices of the BN recalibration, and of the eval-mode training accuracy logged each epoch
    # (a train/eval gap there is the symptom recalibration treats).
    tw = sample_weights(src, labels, train_idx, tr["balance"])[train_idx]
    calib_idx = np.sort(np.random.default_rng(tr["seed"] + 3).choice(
        train_idx, min(int(tr.get("bn_calibration", 512)), len(train_idx)), replace=False, p=tw / tw.sum()))
    eval_idx = (np.sort(np.random.default_rng(tr["seed"] + 1).choice(held_idx, n_eval, replace=False))
                if 0 < n_eval < len(held_idx) else held_idx)
    images = torch.from_numpy(pack["images"]).to(device)
    y_all = torch.from_numpy(labels).to(device)
    counts = np.bincount(labels[train_idx], minlength=2)
    sample_w = torch.from_numpy(sample_weights(src, labels, train_idx, tr["balance"])).to(device)
    log(f"[{cfg['name']}] train {len(train_idx)} (covid {counts[1]}), held-out {len(held_idx)} "
        f"(per-epoch AUC on {len(eval_idx)}), patient slices {len(ct16_idx)} (trained on: {int((train_mask & is_patient).sum())}, "
        f"excluded patients {cfg['data'].get('exclude_patients', [])}); "
        f"device {device}, threads {torch.get_num_threads()}")

    model = models.build(cfg["arch"], cfg["input_size"], cfg["in_channels"]).to(device)
    ckpt_path = out / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=False) if resume and ckpt_path.exists() else None
    if ckpt is None and init_onnx:
        from . import onnx_init
        info = onnx_init.load_onnx_weights(model, init_onnx, cfg["input_size"], cfg["in_channels"])
        calib = np.random.default_rng(tr["seed"] + 2).choice(train_idx, min(64, len(train_idx)), replace=False)
        xc = images[torch.as_tensor(np.sort(calib), device=device)].float().div_(255.0).unsqueeze(1)
        onnx_init.calibrate_bn(model, xc)
        log(f"initialised from {init_onnx}: {json.dumps(info)}; fused BNs calibrated on {len(calib)} training slices")
    model = model.to(memory_format=torch.channels_last)
    frozen = freeze_modules(model, int(tr.get("freeze", 0)))
    if tr["optimizer"] != "nadam":
        raise ValueError("only nadam (the paper's optimizer) is wired")
    opt = torch.optim.NAdam([p for p in model.parameters() if p.requires_grad], lr=tr["lr"],
                            weight_decay=tr["weight_decay"], decoupled_weight_decay=True)
    gen = torch.Generator(device=device).manual_seed(tr["seed"])
    rng = np.random.default_rng(tr["seed"])
    steps = max(1, len(train_idx) // tr["batch"])
    history = []
    start_epoch, prior_s = 0, 0.0
    cfg_key = json.dumps(cfg, sort_keys=True)
    if ckpt is not None:
        if ckpt["config"] != cfg_key:
            raise ValueError(f"{ckpt_path} was written with another config; use a new --out or remove it")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        gen.set_state(ckpt["gen_rng"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        np.random.set_state(ckpt["numpy_global_rng"])
        start_epoch, history, prior_s = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        log(f"resumed from {ckpt_path} after epoch {start_epoch}")
    pad = pad_value(cfg)
    t0 = time.time()
    done_here = 0
    for epoch in range(start_epoch, tr["epochs"]):
        if stop_after is not None and done_here >= stop_after:
            return {"stopped_after_epoch": epoch, "history": history}
        te = time.time()
        set_train_mode(model, frozen, bn_mode)
        perm = rng.permutation(train_idx)
        tot, n = 0.0, 0
        for s in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch + s / steps, tr)
            bi = torch.as_tensor(perm[s * tr["batch"]:(s + 1) * tr["batch"]], device=device)
            x = images[bi].float().div_(255.0).unsqueeze(1)
            x = augment(x, aug, gen, pad).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model.logits(x)
            loss = (F.cross_entropy(logits.float(), y_all[bi], reduction="none") * sample_w[bi]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(bi)
            n += len(bi)
        rec = {"epoch": epoch + 1, "train_loss": round(tot / max(n, 1), 6), "lr": lr_at(epoch + 1, tr)}
        if bn_mode == "recalibrate":
            rec["bn_recalibrated"] = recalibrate_bn(model, frozen, images, calib_idx, device)
        p_tr = predict(model, images, calib_idx[:300], device)
        rec["train_eval_accuracy"] = metrics.summary(labels[calib_idx[:300]], p_tr)["accuracy"]
        if len(eval_idx):
            p = predict(model, images, eval_idx, device)
            m = metrics.summary(labels[eval_idx], p)
            rec.update({"heldout_auc": m["auc"], "heldout_accuracy": m["accuracy"], "heldout_n": int(len(eval_idx))})
        done_here += 1
        now = time.time()
        rec["epoch_seconds"] = round(now - te, 1)
        rec["seconds"] = round(prior_s + now - t0, 1)
        eta = (now - t0) / done_here * (tr["epochs"] - epoch - 1)
        history.append(rec)
        save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                     "gen_rng": gen.get_state(), "numpy_rng": rng.bit_generator.state,
                     "numpy_global_rng": np.random.get_state(), "epoch": epoch + 1, "history": history,
                     "seconds": rec["seconds"], "config": cfg_key}, ckpt_path)
        auc = f"{rec['heldout_auc']:.4f}" if "heldout_auc" in rec else "-"
        log(f"epoch {epoch + 1}/{tr['epochs']} loss {rec['train_loss']:.4f} heldout_auc {auc} "
            f"epoch_s {rec['epoch_seconds']:.0f} total_s {rec['seconds']:.0f} eta {_fmt_s(eta)} | {json.dumps(rec)}")

    p_held = predict(model, images, held_idx, device)
    p_ct16 = predict(model, images, ct16_idx, device)
    result = {
        "config": cfg,
        "train_images": int(len(train_idx)), "train_covid": int(counts[1]),
        "heldout": metrics.summary(labels[held_idx], p_held),
        "heldout_by_source": {s: metrics.summary(labels[held_idx][src[held_idx] == s], p_held[src[held_idx] == s])
                              for s in sorted(set(src[held_idx]))},
        "history": history, "train_seconds": history[-1]["seconds"] if history else 0.0, "device": str(device),
        "init_onnx": str(init_onnx) if init_onnx else None, "threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    with open(out / "heldout_predictions.csv", "w") as f:
        f.write("name,source,label,p_covid\n")
        for i, p in zip(held_idx, p_held):
            f.write(f"{pack['name'][i]},{src[i]},{labels[i]},{p:.6f}\n")
    with open(out / "ct16_predictions.csv", "w") as f:
        f.write("name,source,label,p_covid,trained_on\n")
        for i, p in zip(ct16_idx, p_ct16):
            f.write(f"{pack['name'][i]},{src[i]},{labels[i]},{p:.6f},{int(train_mask[i])}\n")
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
    ap.add_argument("--init-onnx", help="initialise from an exported fp32 ONNX file (the shipped model)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt when it exists")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--freeze", type=int, default=None, help="freeze the stem and the first N-1 stages (sets train.freeze)")
    ap.add_argument("--stop-after", type=int, default=None, help="return after N epochs of this call (resume later)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = config_mod.parse_overrides(a.set)
    if a.freeze is not None:
        overrides["train.freeze"] = str(a.freeze)
    cfg = config_mod.load(a.config, overrides)
    out = Path(a.out or f"training/runs/{cfg['name']}")
    if a.pack and Path(a.pack).exists():
        pack_path = Path(a.pack)
    else:
        pack_path = out / "pack.npz"
        out.mkdir(parents=True, exist_ok=True)
        if not (a.resume and pack_path.exists()):
            meta = data.build_pack(Path(a.data), cfg["preprocessing"], cfg["input_size"], cfg["data"]["seed"],
                                   cfg["data"]["holdout"], pack_path, cfg["data"]["jpeg_quality"])
            (out / "pack.json").write_text(json.dumps(meta, indent=1))
            print(json.dumps({k: meta[k] for k in ("images", "frame", "excluded", "counts")}), flush=True)
    pack = data.load_pack(pack_path)
    if pack["images"].shape[1] != cfg["input_size"]:
        raise ValueError(f"pack is {pack['images'].shape[1]} px, config wants {cfg['input_size']}")
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    r = train(cfg, pack, out, torch.device(a.device), a.fp16_weights, log=lambda m: print(m, flush=True),
              init_onnx=a.init_onnx, resume=a.resume, stop_after=a.stop_after)
    if "heldout" in r:
        print(json.dumps({"heldout": r["heldout"], "by_source": r["heldout_by_source"]}, indent=1))


if __name__ == "__main__":
    main()
