"""Initialise a PyTorch model from an exported fp32 ONNX file (the shipped model's weights live
only there): `load_onnx_weights(model, "models/ctsentinel-fpn256.fp32.onnx")`.

What the export did to the weights, and how each is undone:
- Parameters that survive export unchanged (pre-activation BatchNorms, convolutions without a
  following BN, dense layers) keep their state-dict names as ONNX initializer names.
- A convolution followed by a BatchNorm (the bottlenecks' conv1/bn1 and conv2/bn2) was fused by
  the eval-mode export into one convolution with bias: W' = W * g / sqrt(v + eps),
  b' = beta - m * g / sqrt(v + eps), stored under a generated name. The split back is not
  unique; we load W' into the convolution and make the BN reproduce `y + b'` exactly in eval
  mode: running_mean = mu, running_var = sigma^2, weight = sqrt(sigma^2 + eps), bias = mu + b',
  where mu, sigma^2 are the per-channel statistics of W' * x on real inputs (`calibrate_bn`).
  With them, train-mode BN (batch statistics) also starts close to the exported function.
  Before calibration the BN is set to mean 0, var 1 - eps, weight 1, bias b' (exact in eval).
- Large initializers were stored as fp16 behind a Cast to float (`export.store_weights_fp16`);
  they are read through the Cast.
- The five dense heads flatten C x H x W maps, so their weights depend on the input size. For a
  different size they are resampled over H x W (bilinear) and scaled by (H W) / (H' W'), so each
  head's logit keeps its scale on a uniform map.
Convolutions, kept BatchNorms and dense layers are matched to ONNX Conv, BatchNormalization and
MatMul(+Add) nodes in execution order (forward hooks vs graph order), with shapes checked;
every state-dict entry must be assigned, or this raises.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _onnx_tensors(path: Path):
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:  # Cast(fp16 initializer) -> float tensor; Constant nodes
        if n.op_type == "Cast" and n.input[0] in init:
            init[n.output[0]] = init[n.input[0]].astype(np.float32)
        elif n.op_type == "Identity" and n.input[0] in init:  # the exporter's shared initializers
            init[n.output[0]] = init[n.input[0]]
        elif n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    init[n.output[0]] = numpy_helper.to_array(a.t)
    convs = [(n.input[1], n.input[2] if len(n.input) > 2 and n.input[2] else None)
             for n in g.node if n.op_type == "Conv"]
    bns = [list(n.input[1:5]) for n in g.node if n.op_type == "BatchNormalization"]
    adds = {}
    for n in g.node:
        if n.op_type == "Add":
            for a, b in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
                adds[a] = b
    dense = [(n.input[1], adds.get(n.output[0])) for n in g.node if n.op_type == "MatMul"]
    return init, convs, bns, dense


def _order(model: nn.Module, input_size: int, in_channels: int, types) -> list[str]:
    """Module names of the given types in forward execution order."""
    names = {mod: name for name, mod in model.named_modules()}
    order: list[str] = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: order.append(names[mod]))
             for mod in model.modules() if isinstance(mod, types)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, input_size, input_size))
    model.train(was)
    for h in hooks:
        h.remove()
    return order


def _fused_bn(model: nn.Module) -> dict[str, str]:
    """conv module name -> the BN module name that follows it (fused by export)."""
    out = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "conv1") and hasattr(mod, "bn1") and hasattr(mod, "conv2") and hasattr(mod, "bn2"):
            p = name + "." if name else ""
            out[p + "conv1"] = p + "bn1"
            out[p + "conv2"] = p + "bn2"
    return out


def resample_head(w: np.ndarray, channels: int, new_rows: int) -> np.ndarray:
    """(C*H*W, k) dense weight over a flattened C x H x W map -> (C*H'*W', k)."""
    n_in, k = w.shape
    hw = n_in // channels
    h = int(round(hw ** 0.5))
    h2 = int(round((new_rows // channels) ** 0.5))
    if h * h * channels != n_in or h2 * h2 * channels != new_rows:
        raise ValueError(f"head weight {w.shape} is not over square {channels}-channel maps")
    t = torch.from_numpy(w.astype(np.float32)).reshape(channels, h, h, k).permute(3, 0, 1, 2)
    t = F.interpolate(t, size=(h2, h2), mode="bilinear", align_corners=False) * (h * h) / (h2 * h2)
    return t.permute(1, 2, 3, 0).reshape(channels * h2 * h2, k).numpy()


def load_onnx_weights(model: nn.Module, onnx_path: str | Path, input_size: int, in_channels: int = 1) -> dict:
    """Assign every parameter and buffer of `model` from the ONNX file. Returns a summary."""
    from .models import Dense
    init, convs, bns, dense = _onnx_tensors(Path(onnx_path))
    sd = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    resized: list[str] = []
    fused = _fused_bn(model)
    order = _order(model, input_size, in_channels, nn.Conv2d)
    # BatchNorms the export kept (not fused into a conv) and dense layers, in execution order;
    # matched to BatchNormalization / MatMul(+Add) nodes in graph order (names are not enough:
    # the exporter shares identical initializers, e.g. all-zero biases, under one name).
    bn_order = [b for b in _order(model, input_size, in_channels, nn.BatchNorm2d) if b not in fused.values()]
    dense_order = _order(model, input_size, in_channels, Dense)
    if len(bn_order) != len(bns) or len(dense_order) != len(dense):
        raise ValueError(f"model runs {len(bn_order)} BNs / {len(dense_order)} dense layers, "
                         f"ONNX has {len(bns)} / {len(dense)}")
    for bn, (sc, b, mean, var) in zip(bn_order, bns):
        for key, t in (("weight", sc), ("bias", b), ("running_mean", mean), ("running_var", var)):
            a = init[t].astype(np.float32)
            if a.shape != tuple(sd[f"{bn}.{key}"].shape):
                raise ValueError(f"{bn}.{key}: ONNX {t} has shape {a.shape}")
            new[f"{bn}.{key}"] = torch.from_numpy(a.copy())
    for dn, (w, b) in zip(dense_order, dense):
        if b is None or b not in init:
            raise ValueError(f"{dn}: ONNX MatMul without a bias Add")
        a = init[w].astype(np.float32)
        if a.shape != tuple(sd[dn + ".weight"].shape):
            if dn.startswith("heads."):
                a = resample_head(a, model.lat3.out_channels, sd[dn + ".weight"].shape[0])
                resized.append(dn + ".weight")
            else:
                raise ValueError(f"{dn}: ONNX shape {a.shape}, model {tuple(sd[dn + '.weight'].shape)}")
        new[dn + ".weight"] = torch.from_numpy(np.ascontiguousarray(a))
        new[dn + ".bias"] = torch.from_numpy(init[b].astype(np.float32).reshape(-1).copy())
    if len(order) != len(convs):
        raise ValueError(f"model runs {len(order)} convolutions, ONNX has {len(convs)}")
    mods = dict(model.named_modules())
    n_fused = 0
    for cname, (wname, bname) in zip(order, convs):
        w = init[wname]
        if tuple(w.shape) != tuple(sd[cname + ".weight"].shape):
            raise ValueError(f"{cname}: ONNX conv {wname} has shape {w.shape}, model {tuple(sd[cname + '.weight'].shape)}")
        new[cname + ".weight"] = torch.from_numpy(np.array(w, dtype=np.float32))
        b = init[bname].astype(np.float32) if bname else None
        if cname in fused:
            bn = fused[cname]
            eps = mods[bn].eps
            c = w.shape[0]
            b = np.zeros(c, np.float32) if b is None else b
            new[bn + ".running_mean"] = torch.zeros(c)
            new[bn + ".running_var"] = torch.full((c,), 1.0 - eps)
            new[bn + ".weight"] = torch.ones(c)
            new[bn + ".bias"] = torch.from_numpy(b.copy())
            n_fused += 1
        elif cname + ".bias" in sd:
            if b is None:
                raise ValueError(f"{cname}: model conv has a bias, ONNX conv has none")
            new[cname + ".bias"] = torch.from_numpy(b.copy())
        elif b is not None and np.any(b != 0):
            raise ValueError(f"{cname}: ONNX conv has a bias the model cannot hold")
    for k, v in sd.items():
        if k in new:
            continue
        if k.endswith("num_batches_tracked"):
            new[k] = torch.zeros((), dtype=torch.long)
    missing = [k for k in sd if k not in new]
    if missing:
        raise ValueError(f"not found in {onnx_path}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    model.load_state_dict(new)
    return {"convs": len(order), "fused_bn": n_fused, "resized_heads": resized, "tensors": len(new)}


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor, batch: int = 16) -> int:
    """Re-express every fused BN (see the module doc) with per-channel statistics of its input
    over `x`, keeping the eval-mode function unchanged. Returns how many BNs were updated."""
    fused = _fused_bn(model)
    mods = dict(model.named_modules())
    sums: dict[str, list] = {bn: [0.0, 0.0, 0] for bn in fused.values()}
    hooks = []
    for conv, bn in fused.items():
        def hook(mod, inp, out, bn=bn):
            o = out.double()
            s = sums[bn]
            s[0] = s[0] + o.sum(dim=(0, 2, 3))
            s[1] = s[1] + (o * o).sum(dim=(0, 2, 3))
            s[2] += o.shape[0] * o.shape[2] * o.shape[3]
        hooks.append(mods[conv].register_forward_hook(hook))
    was = model.training
    model.eval()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    for h in hooks:
        h.remove()
    model.train(was)
    for bn, (s1, s2, n) in sums.items():
        m = mods[bn]
        # only BNs still in the identity form written by load_onnx_weights
        if not (torch.all(m.running_mean == 0) and torch.all(m.weight == 1)):
            continue
        mu = (s1 / n).float()
        var = (s2 / n - (s1 / n) ** 2).clamp_min(0).float() + 1e-4
        b = m.bias.clone()
        m.running_mean.copy_(mu)
        m.running_var.copy_(var)
        m.weight.copy_(torch.sqrt(var + m.eps))
        m.bias.copy_(mu + b)
    return len(sums)
