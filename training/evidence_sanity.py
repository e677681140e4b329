"""Sanity of the evidence maps, measured (issue 16): where they point, and whether they depend on
the weights at all.

`python -m training.evidence_sanity --models models --data ../shared/data --binary target/debug/ctsentinel`

1. **Localisation, from the appliance itself**: `ctsentinel scan --json` on the radiologist-
   labelled COVID patient; of the selected slices the radiologist marked infected and the model
   calls COVID, the share whose evidence peak (`evidence.peak_in_lungs`, the appliance's lung mask)
   lies inside the lungs. The paper's maps light infection regions; a map whose peak is outside the
   lungs shows the model deciding on something else.
2. **Float reference**: the same slices through the fp32 reference with the same evidence graph
   (`evidence.add_fpn_evidence`, in memory) in ONNX Runtime: Pearson r between tract's int8 map and
   the fp32 map, and the same peak-in-lungs figure from `training/lung.py` (the Rust mask's twin).
3. **Randomised weights** (Adebayo et al. 2018, "Sanity checks for saliency maps"): the fp32 model
   with (a) the five heads and the final layer, (b) every convolution and dense weight replaced by
   Gaussian noise of the same per-tensor mean and spread (seeded). A map that barely changes
   (Spearman rank correlation near 1 with the trained map) explains the image, not the model.

Writes `<models>/<name>.evidence.json` and re-renders the model report (`training/evaluate.py`
reads that file). Every figure is about the committed files; nothing is tuned here.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
import subprocess
import tomllib
from pathlib import Path

import numpy as np

from . import evidence, preprocess

PATIENT = ("covid", "ctmd_P001", "SR_1")
SEED = 20261203


def _sessions(model_bytes: bytes, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def randomised(model, which: str, seed: int):
    """A copy of the fp32 model with weights replaced by noise of the same mean and spread:
    `which` = "top" (heads and final layer) or "all" (every Conv and MatMul weight)."""
    import copy
    from onnx import numpy_helper
    m = copy.deepcopy(model)
    g = m.graph
    weight_names = set()
    for n in g.node:
        if n.op_type in ("Conv", "MatMul"):
            weight_names.add(n.input[1])
    # the fp32 file keeps large weights as <name>_fp16 behind a Cast (export.store_weights_fp16)
    weight_names |= {w + "_fp16" for w in weight_names}
    rng = np.random.default_rng(seed)
    for i, init in enumerate(g.initializer):
        if init.name not in weight_names:
            continue
        if which == "top" and not init.name.startswith(("heads.", "final.")):
            continue
        a = numpy_helper.to_array(init)
        noise = rng.normal(float(a.astype(np.float64).mean()), float(a.astype(np.float64).std()) or 1e-3, a.shape)
        g.initializer[i].CopyFrom(numpy_helper.from_array(noise.astype(a.dtype), init.name))
    return m


def peak_cell(m: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(r), int(c)


def peak_in_mask(m: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the centre of the map's highest cell (whole-slice view) is a lung pixel."""
    r, c = peak_cell(m)
    h, w = mask.shape
    y, x = int((r + 0.5) * h / m.shape[0]), int((c + 0.5) * w / m.shape[1])
    return bool(mask[y, x])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--binary", default="target/debug/ctsentinel")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import onnx
    import tifffile
    from . import lung

    mdir, root = Path(a.models), Path(a.data)
    (card_path,) = sorted(mdir.glob("*.toml"))
    card = tomllib.loads(card_path.read_text())
    name, pre, size = card["model"]["name"], card["preprocessing"], card["input"]["size"]
    if card["output"].get("evidence") != evidence.OUTPUT:
        raise SystemExit(f"{card_path}: the card names no evidence output")
    label, patient, series = PATIENT
    folder = root / "ct16" / label / patient
    scan = json.loads(subprocess.run([a.binary, "scan", "--model", str(mdir), "--json", "--threads", str(a.threads),
                                      str(folder)], check=True, capture_output=True, text=True).stdout)
    infection = json.loads((root / "ct16" / "manifest.json").read_text())["slice_infection"][patient]
    rows = [s for s in scan["series"][0]["slices"] if s.get("p_covid") is not None]
    if not rows or any("evidence" not in s for s in rows):
        raise SystemExit("the appliance gave no evidence for the classified slices")

    fp32 = onnx.load(str(mdir / card["model"]["reference_fp32_file"]))
    variants = {"trained": evidence.add_fpn_evidence(fp32)}
    for which in ("top", "all"):
        variants[f"random_{which}"] = evidence.add_fpn_evidence(randomised(fp32, which, SEED))
    sessions = {k: _sessions(m.SerializeToString(), a.threads) for k, m in variants.items()}

    per_slice = []
    for s in rows:
        stored = tifffile.imread(folder / series / s["file"])
        x = preprocess.preprocess_stored(stored, pre, size)[None, None].astype(np.float32)
        maps = {k: sess.run(None, {card["input"]["name"]: x})[1][0] for k, sess in sessions.items()}
        tract = np.asarray(s["evidence"]["map"], np.float64).reshape(s["evidence"]["grid"])
        mask = lung.lung_frame(stored)["mask"]
        per_slice.append({
            "file": s["file"], "infected": bool(infection[f"{series}/{s['file']}"]), "p_covid": s["p_covid"],
            "called_covid": s["p_covid"] >= card["output"]["threshold"],
            "tract_peak_in_lungs": s["evidence"].get("peak_in_lungs"), "tract_in_lungs": s["evidence"].get("in_lungs"),
            "tract_peak": s["evidence"]["peak"],
            "pearson_tract_fp32": float(np.corrcoef(tract.ravel(), maps["trained"].ravel())[0, 1]),
            "same_peak_tract_fp32": peak_cell(tract) == peak_cell(maps["trained"]),
            **{f"peak_in_lungs_{k}": peak_in_mask(m, mask) for k, m in maps.items()},
            **{f"spearman_trained_{k}": spearman(maps["trained"], m) for k, m in maps.items() if k != "trained"},
        })

    def share(rows_, key):
        v = [bool(r[key]) for r in rows_ if r[key] is not None]
        return {"n": len(v), "share": (sum(v) / len(v)) if v else None}

    target = [r for r in per_slice if r["infected"] and r["called_covid"]]
    called = [r for r in per_slice if r["called_covid"]]
    out = {
        "model": {"name": name, "version": card["model"]["version"], "sha256": card["model"]["sha256"]},
        "command": "python -m training.evidence_sanity --models models --data ../shared/data --binary target/debug/ctsentinel",
        "patient": f"{label}/{patient}/{series}", "selected_classified": len(per_slice),
        "infected_and_called_covid": len(target),
        "localisation": {
            "tract_int8_peak_in_lungs_infected_called": share(target, "tract_peak_in_lungs"),
            "tract_int8_peak_in_lungs_all_called": share(called, "tract_peak_in_lungs"),
            "tract_int8_mean_positive_share_in_lungs_infected_called":
                float(np.mean([r["tract_in_lungs"] for r in target])) if target else None,
            "fp32_peak_in_lungs_infected_called": share(target, "peak_in_lungs_trained"),
            "tract_int8_peaks_infected_called": [
                {"x": xy[0], "y": xy[1], "slices": n}
                for xy, n in Counter(tuple(r["tract_peak"]) for r in target).most_common()],
        },
        "float_reference": {
            "pearson_tract_int8_vs_fp32_mean": float(np.mean([r["pearson_tract_fp32"] for r in per_slice])),
            "pearson_tract_int8_vs_fp32_min": float(np.min([r["pearson_tract_fp32"] for r in per_slice])),
            "same_peak_cell": share(per_slice, "same_peak_tract_fp32"),
        },
        "randomised": {k: {"spearman_with_trained_mean": float(np.mean([r[f"spearman_trained_{k}"] for r in per_slice])),
                           "peak_in_lungs_infected_called": share(target, f"peak_in_lungs_{k}")}
                       for k in ("random_top", "random_all")},
        "seed": SEED,
        "slices": per_slice,
    }
    (mdir / f"{name}.evidence.json").write_text(json.dumps(out, indent=1) + "\n")
    from . import evaluate
    evaluate.rerender(mdir, name)
    print(json.dumps({k: v for k, v in out.items() if k != "slices"}, indent=1))


if __name__ == "__main__":
    main()
