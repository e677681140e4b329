"""Forward + backward (+ NAdam step) seconds per slice of a config's network on this machine:
`python -m training.bench --sizes 192 224 --freeze 0 2 --threads 1 --batch 16 --steps 4`
(one warm-up step, then the mean of --steps; random inputs: the cost does not depend on them)."""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from . import models
from .train import freeze_modules, set_train_mode


def step_seconds(arch: str, size: int, freeze: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    m = models.build(arch, size).to(memory_format=torch.channels_last)
    frozen = freeze_modules(m, freeze)
    opt = torch.optim.NAdam([p for p in m.parameters() if p.requires_grad], lr=1e-5)
    x = torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps + 1):
        set_train_mode(m, frozen, "train")
        t = time.perf_counter()
        loss = F.cross_entropy(m.logits(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return sum(times) / len(times) / batch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50v2_fpn")
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 224])
    ap.add_argument("--freeze", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for size in a.sizes:
        for fr in a.freeze:
            s = step_seconds(a.arch, size, fr, a.batch, a.steps)
            print(json.dumps({"arch": a.arch, "size": size, "freeze": fr, "threads": a.threads, "batch": a.batch,
                              "s_per_slice": round(s, 4)}), flush=True)


if __name__ == "__main__":
    main()
