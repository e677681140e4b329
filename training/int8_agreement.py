"""How well an exported int8 ONNX model agrees with its fp32 twin on the held-out train8 slices
(ONNX Runtime, same planes): AUC of each, slice-call agreement at 0.5, MosMed int8 AUC.

    python -m training.int8_agreement --config training/configs/effl0.toml \
        --stage per_tensor=/tmp/stage_effl0 --stage per_channel=/tmp/stage_effl0_pc

Each --stage NAME=DIR names a folder written by `python -m training.export` (with or without
--per-channel) holding `<name>.fp32.onnx` and `<name>.int8.onnx`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import config as C, evaluate as E, metrics as M


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--stage", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    a = ap.parse_args(argv)
    cfg = C.load(a.config)
    planes, y, src, split, _ = E.train8_planes(a.data, cfg)
    h = split == "heldout"
    mm = src[h] == "mosmed"
    for spec in a.stage:
        name, d = spec.split("=", 1)
        f = E.Runner(Path(d) / f"{cfg['name']}.fp32.onnx", 1).p_covid(planes[h])
        q = E.Runner(Path(d) / f"{cfg['name']}.int8.onnx", 1).p_covid(planes[h])
        print(f"{name}: fp32 AUC {M.auc(y[h], f):.4f}  int8 AUC {M.auc(y[h], q):.4f}  "
              f"agreement {((f >= .5) == (q >= .5)).mean():.4f}  MosMed int8 AUC {M.auc(y[h][mm], q[mm]):.4f}",
              flush=True)


if __name__ == "__main__":
    main()
