"""Out-of-sample evaluation of one trained run (lung-framed or whole-slice input), with a peer comparison.

`python -m training.oos_eval --run training/runs/fpn192_lung [--threads 1]`

Reads RUN/metrics.json (the config train.py used), RUN/pack.npz, RUN/weights.pt (or
weights_fp16.pt; --weights may name a checkpoint.pt) and writes RUN/oos_report.json and
RUN/oos_report.md:

1. Patients (every ct16 series found on disk, not only the manifest's, plus the thin DICOM
   series as its own row): the paper's selection per series (computed by the independent
   references tests/reference/select_ref.py and dicom_select_ref.py, run with --ref-python,
   and cross-checked with evaluate.select_mask); selected slices whose lung mask is
   implausible are not classified (the appliance's rule) and are counted per verdict; the
   others go through training/lung.py's frame (float planes, as the appliance would feed
   them; the JPEG round trip the pack uses is reported alongside) and the trained weights;
   the 10% rule (integer basis points, as src/decide.rs) over all series of a patient.
   Radiologist slice agreement for the COVID patient (manifest slice_infection).
2. Held-out slices (the pack's split, lung exclusions applied) by source: the new model, the
   histogram baseline as evaluate.py defines it (32-bin histogram of the model's input plane,
   standardised logistic regression, class-balanced, fit on the training split) on the framed
   planes and on the unframed 256 px planes, and the shipped fp32 ONNX model (ONNX Runtime)
   on its own unframed 256 px input (evaluate.train8_planes, its card's window) of the same
   slices. Stratified bootstrap 95% intervals; paired bootstrap for the differences.
3. Temperature scaling of the new model's logit (l1 - l0): fitted on all held-out slices
   (optimistic: fitted and reported on the same slices) and two-fold (held-out halves by
   patient-like groups: MosMed slice, else blocks of 50 files; fit on one half, report on
   the other). ECE with 10 equal-width bins of P(COVID); reliability table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from . import config as config_mod
from . import data, evaluate, lung, metrics, models, preprocess
from .export import sha256

PATIENT_FRACTION_BP = 1000  # 10% in basis points, compared in integers like src/decide.rs
SELECT_REF = "tests/reference/select_ref.py"
DICOM_SELECT_REF = "tests/reference/dicom_select_ref.py"


# --- the trained model ---
def load_model(cfg: dict, weights: Path):
    import torch
    m = models.build(cfg["arch"], cfg["input_size"], cfg["in_channels"])
    state = torch.load(weights, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:  # a checkpoint.pt
        state = state["model"]
    m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return m.eval()


def model_logits(model, planes: np.ndarray, batch: int = 32) -> np.ndarray:
    """(n, 2) float64 logits of float planes in [0, 1] (n, H, W)."""
    import torch
    out = []
    with torch.no_grad():
        for i in range(0, len(planes), batch):
            x = torch.from_numpy(np.ascontiguousarray(planes[i:i + batch], dtype=np.float32)).unsqueeze(1)
            out.append(model.logits(x).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def evidence_peaks(model, planes: np.ndarray, batch: int = 32) -> list[tuple[float, float]] | None:
    """Per plane, the evidence map's peak cell centre as a fraction (x, y) of the plane (the first
    maximum in raster order, as `pipeline::placement` takes it), from the model's own map
    (`with_evidence`, exact for a pooled linear head); None when the model has no map."""
    import torch
    if not hasattr(model, "with_evidence"):
        return None
    out = []
    with torch.no_grad():
        for i in range(0, len(planes), batch):
            x = torch.from_numpy(np.ascontiguousarray(planes[i:i + batch], dtype=np.float32)).unsqueeze(1)
            _, ev = model.with_evidence(x)
            n, h, w = ev.shape
            flat = ev.reshape(n, h * w).argmax(dim=1).tolist()
            out += [((k % w + 0.5) / w, (k // w + 0.5) / h) for k in flat]
    return out


def peak_in_lungs(lf: dict, peak: tuple[float, float]) -> bool:
    """The appliance's `peak_in_lungs` (`pipeline::placement::Placement::in_lungs`): the peak
    cell's centre, placed on the slice through the lung frame, lies in the lung mask."""
    x0, y0, side = lf["frame"]
    x, y = x0 + peak[0] * side, y0 + peak[1] * side
    h, w = lf["mask"].shape
    return 0 <= x < w and 0 <= y < h and bool(lf["mask"][int(y), int(x)])


def p_of(logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = (logits[:, 1] - logits[:, 0]) / t
    return 1.0 / (1.0 + np.exp(-z))




# --- statistics ---
from .metrics import ECE_BINS, ece, fit_temperature, nll, reliability  # noqa: E402  (calibration)


def bootstrap_auc(y: np.ndarray, preds: dict, n_boot: int, seed: int, pairs: list[tuple[str, str]]) -> dict:
    """Stratified (by label) bootstrap: 95% percentile intervals per model and for paired differences."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        return {}
    samples = {k: [] for k in preds}
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for k, p in preds.items():
            samples[k].append(metrics.auc(y[idx], p[idx]))
    out = {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}
    for a, b in pairs:
        d = np.array(samples[a]) - np.array(samples[b])
        out[f"{a}-{b}"] = {"diff": metrics.auc(y, preds[a]) - metrics.auc(y, preds[b]),
                          "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
                          "p_boot_le0": float((d <= 0).mean())}
    return out


# --- selection ---
def ref_select_tiff(ref_python: str, dirs: list[Path]) -> dict[str, dict[str, bool]]:
    out = subprocess.run([ref_python, SELECT_REF, *map(str, dirs)], check=True, capture_output=True, text=True).stdout
    return {d: {f: bool(k) for f, _c, k in rows} for d, rows in json.loads(out).items()}


def ref_select_dicom(ref_python: str, folder: Path) -> dict[str, bool]:
    out = json.loads(subprocess.run([ref_python, DICOM_SELECT_REF, str(folder)], check=True, capture_output=True,
                                    text=True).stdout)
    if len(out["series"]) != 1:
        raise ValueError(f"{folder}: expected one series, found {len(out['series'])}")
    return {s["file"]: bool(s["selected"]) for s in out["series"][0]["slices"]}


def decide(classified: int, covid: int) -> tuple[str, float | None]:
    if classified == 0:
        return "undetermined", None
    return ("covid" if covid * 10_000 >= PATIENT_FRACTION_BP * classified else "normal"), covid / classified


# --- the patient part ---
def patient_series(root: Path, ref_python: str, cfg: dict, model, round_trip, log) -> list[dict]:
    import tifffile
    pre, size = cfg["preprocessing"], cfg["input_size"]
    ct16 = root / "ct16"
    manifest = json.loads((ct16 / "manifest.json").read_text())
    listed = {(s["label"], s["patient"], s["series"]) for s in manifest["series"]}
    series = sorted({(d.parts[-3], d.parts[-2], d.parts[-1]) for d in ct16.glob("*/*/*") if d.is_dir()})
    dirs = [ct16 / a / b / c for a, b, c in series]
    ref = ref_select_tiff(ref_python, dirs)
    infection = manifest.get("slice_infection", {})
    out = []
    for (label, patient, ser), d in zip(series, dirs):
        files = sorted(d.glob("*.tif"), key=lambda p: data.index_of(p.name))
        stored = [tifffile.imread(f) for f in files]
        own = evaluate.select_mask(stored)
        r = ref[str(d)]
        sel = [r[f.name] for f in files]
        if sel != own:
            raise AssertionError(f"{d}: select_ref.py and evaluate.select_mask disagree")
        slices = [{"file": f.name, "stored": a, "selected": s, "intercept": lung.DEFAULT_INTERCEPT, "spacing": None,
                   "radiologist": (int(infection[patient][f"{ser}/{f.name}"]) if label == "covid" else None)}
                  for f, a, s in zip(files, stored, sel)]
        out.append(_classify_series(label, patient, ser, "tiff", slices, pre, size, model, round_trip,
                                    in_manifest=(label, patient, ser) in listed,
                                    pack_prefix=f"ct16/{label}/{patient}/{ser}/"))
        log(f"  {patient}/{ser}: {out[-1]['summary']}")
    thin = root / data.DICOM_THIN
    if thin.is_dir():
        ref_d = ref_select_dicom(ref_python, thin)
        slices = [{"file": n, "stored": a, "selected": ref_d[n], "intercept": ic, "spacing": sp, "radiologist": None}
                  for n, a, ic, sp in data.dicom_series(thin)]
        out.append(_classify_series("normal", "ctmd_normal001", "thin DICOM (all 154 2 mm slices)", "dicom", slices,
                                    pre, size, model, round_trip, in_manifest=False, pack_prefix=f"{data.DICOM_THIN}/"))
        log(f"  thin DICOM: {out[-1]['summary']}")
    return out


def _classify_series(label, patient, ser, kind, slices, pre, size, model, round_trip, in_manifest, pack_prefix) -> dict:
    planes, planes_jpeg, idx, frames = [], [], [], []
    framed = pre.get("frame", "none") == "lung"
    for i, s in enumerate(slices):
        if not framed:
            # The whole slice, as the appliance feeds a model without a lung frame: stored values
            # re-based to HU + 1024 (the card's stored_intercept) first.
            shift = int(round(s["intercept"] - lung.DEFAULT_INTERCEPT))
            stored = np.clip(s["stored"].astype(np.int64) + shift, 0, 65535).astype(np.uint16)
            s["lung_verdict"] = "ok"
            body_plane = lung.BODY_FRAMES.get(pre.get("frame"))
            pl = (body_plane(stored, pre, size) if body_plane
                  else preprocess.preprocess_stored(stored, pre, size))
            planes.append(pl)
            planes_jpeg.append(round_trip(pl))
            idx.append(i)
            continue
        lf = lung.lung_frame(s["stored"], s["intercept"], s["spacing"])
        s["lung_verdict"] = lf["verdict"]
        if lf["verdict"] == "ok":
            pl = lung.framed_input(s["stored"], lf, pre, size, s["intercept"])
            planes.append(pl)
            planes_jpeg.append(round_trip(pl))
            idx.append(i)
            frames.append(lf)
    peaks = evidence_peaks(model, np.stack(planes)) if planes and framed else None
    if peaks is not None:
        for k, i in enumerate(idx):
            slices[i]["peak_in_lungs"] = peak_in_lungs(frames[k], peaks[k])
    lg = model_logits(model, np.stack(planes)) if planes else np.zeros((0, 2))
    lgj = model_logits(model, np.stack(planes_jpeg)) if planes else np.zeros((0, 2))
    for k, i in enumerate(idx):
        slices[i]["logits"] = lg[k].tolist()
        slices[i]["p"] = float(p_of(lg[k:k + 1])[0])
        slices[i]["p_jpeg"] = float(p_of(lgj[k:k + 1])[0])
    sel = [s for s in slices if s["selected"]]
    cls = [s for s in sel if s["lung_verdict"] == "ok"]
    dropped = Counter(s["lung_verdict"] for s in sel if s["lung_verdict"] != "ok")
    row = {"label": label, "patient": patient, "series": ser, "kind": kind, "in_manifest": in_manifest,
           "slices": len(slices), "selected": len(sel), "dropped_implausible": sum(dropped.values()),
           "dropped_by_verdict": dict(sorted(dropped.items())), "classified": len(cls),
           "covid": sum(s["p"] >= 0.5 for s in cls), "covid_jpeg": sum(s["p_jpeg"] >= 0.5 for s in cls),
           # COVID calls whose evidence peak lies in the lungs (None: the model has no evidence map)
           "covid_lung_driven": (sum(s["p"] >= 0.5 and s["peak_in_lungs"] for s in cls)
                                 if framed and hasattr(model, "with_evidence") else None),
           "implausible_all_slices": dict(sorted(Counter(s["lung_verdict"] for s in slices if s["lung_verdict"] != "ok").items())),
           "mean_p_classified": float(np.mean([s["p"] for s in cls])) if cls else None,
           "slices_detail": [{k: s[k] for k in ("file", "selected", "lung_verdict", "radiologist")}
                             | {"p": s.get("p"), "p_jpeg": s.get("p_jpeg"), "peak_in_lungs": s.get("peak_in_lungs"),
                                "pack_name": pack_prefix + s["file"]}
                             for s in slices]}
    row["summary"] = (f"{row['slices']} slices, {row['selected']} selected, {row['dropped_implausible']} dropped "
                      f"{row['dropped_by_verdict']}, {row['covid']}/{row['classified']} COVID")
    return row


def pool_patients(series: list[dict]) -> list[dict]:
    out = {}
    for s in series:
        key = (s["patient"], s["kind"])
        a = out.setdefault(key, {"patient": s["patient"], "truth": s["label"], "kind": s["kind"], "series": [],
                                 "slices": 0, "selected": 0, "dropped_implausible": 0, "dropped_by_verdict": Counter(),
                                 "classified": 0, "covid": 0, "covid_jpeg": 0, "covid_lung_driven": 0})
        a["series"].append(s["series"])
        for k in ("slices", "selected", "dropped_implausible", "classified", "covid", "covid_jpeg"):
            a[k] += s[k]
        a["covid_lung_driven"] = (None if a["covid_lung_driven"] is None or s["covid_lung_driven"] is None
                                  else a["covid_lung_driven"] + s["covid_lung_driven"])
        a["dropped_by_verdict"].update(s["dropped_by_verdict"])
    rows = []
    for a in out.values():
        a["dropped_by_verdict"] = dict(sorted(a["dropped_by_verdict"].items()))
        a["verdict"], a["covid_fraction"] = decide(a["classified"], a["covid"])
        a["verdict_jpeg"], a["covid_fraction_jpeg"] = decide(a["classified"], a["covid_jpeg"])
        want = "covid" if a["truth"] == "covid" else "normal"
        a["correct"] = a["verdict"] == want
        # The appliance's evidence gate (decide::evidence_gate): with any COVID-called slice, fewer
        # than 90% of them lung-driven makes the verdict undetermined.
        a["verdict_gated"] = (None if a["covid_lung_driven"] is None
                              else "undetermined" if a["covid"] and a["covid_lung_driven"] < 0.9 * a["covid"]
                              else a["verdict"])
        rows.append(a)
    return rows


def radiologist(series: list[dict]) -> dict | None:
    sl = [d for s in series if s["label"] == "covid" for d in s["slices_detail"]]
    if not sl:
        return None
    def summ(rows):
        y = np.array([r["radiologist"] for r in rows])
        p = np.array([r["p"] for r in rows])
        m = metrics.summary(y, p)
        pred = p >= 0.5
        m["confusion"] = {"tp": int((pred & (y == 1)).sum()), "fn": int((~pred & (y == 1)).sum()),
                          "fp": int((pred & (y == 0)).sum()), "tn": int((~pred & (y == 0)).sum())}
        return m
    ok = [r for r in sl if r["lung_verdict"] == "ok"]
    return {"all_slices": len(sl), "infection_slices": int(sum(r["radiologist"] for r in sl)),
            "implausible_slices": len(sl) - len(ok),
            "implausible_infection_slices": int(sum(r["radiologist"] for r in sl if r["lung_verdict"] != "ok")),
            "classified_all": summ(ok),
            "classified_selected": summ([r for r in ok if r["selected"]])}


# --- main ---
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--weights", type=Path, default=None, help="default RUN/weights.pt (or weights_fp16.pt)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--shipped", type=Path, default=Path("models/ctsentinel-fpn256.fp32.onnx"))
    ap.add_argument("--shipped-config", type=Path, default=Path("training/configs/fpn256.toml"))
    ap.add_argument("--ref-python", default=".venv/bin/python", help="interpreter for tests/reference/*_ref.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20201)
    ap.add_argument("--out", type=Path, default=None, help="report folder (default RUN)")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: only N held-out slices (report not for use)")
    ap.add_argument("--render-only", action="store_true", help="rewrite oos_report.md from an existing oos_report.json")
    a = ap.parse_args(argv)
    if a.render_only:
        d = a.out or a.run
        (d / "oos_report.md").write_text(report_md(json.loads((d / "oos_report.json").read_text())))
        return
    # The patient section (last, after ~15 min of held-out work) runs the independent selection
    # references with this interpreter: refuse at once rather than fail at the end.
    if not Path(a.ref_python).exists():
        sys.exit(f"--ref-python {a.ref_python} not found: create it with ./scripts/setup-venv.sh")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch
    torch.set_num_threads(a.threads)
    t_all = time.time()
    timings = {}
    log = lambda m: print(m, flush=True)  # noqa: E731

    run = a.run
    mjson = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else None
    cfg = mjson["config"] if mjson else json.loads(torch.load(run / "checkpoint.pt", weights_only=False)["config"])
    weights = a.weights or next((run / w for w in ("weights.pt", "weights_fp16.pt") if (run / w).exists()), None)
    if weights is None:
        sys.exit(f"{run}: no weights.pt / weights_fp16.pt (has training finished?); --weights names another file")
    quality = cfg["data"]["jpeg_quality"]
    model = load_model(cfg, weights)
    cfg_ship = config_mod.load(a.shipped_config)

    # 1. held-out slices of the pack: new model
    t = time.time()
    pack = data.load_pack(run / "pack.npz")
    codec = pack["patient_codec"]  # what training saw of the 16-bit planes (data.PATIENT_CODEC)
    round_trip = lambda pl: data.pack_round_trip(pl, codec, quality)  # noqa: E731
    held = np.flatnonzero(pack["split"] == "heldout")
    if a.limit:
        held = np.sort(np.random.default_rng(0).choice(held, a.limit, replace=False))
    names, src_h, y_h = pack["name"][held], pack["source"][held], pack["label"][held]
    lg_h = model_logits(model, pack["images"][held].astype(np.float32) / 255.0)
    p_new = p_of(lg_h)
    csv_check = None
    if (run / "heldout_predictions.csv").exists():
        import csv
        with open(run / "heldout_predictions.csv") as f:
            ref = {r["name"]: float(r["p_covid"]) for r in csv.DictReader(f)}
        d = np.array([abs(ref[n] - p) for n, p in zip(names, p_new)])
        csv_check = {"max_abs_p_diff": float(d.max()), "label_agreement": float(np.mean(
            [(ref[n] >= 0.5) == (p >= 0.5) for n, p in zip(names, p_new)]))}
    timings["heldout_new_model_s"] = round(time.time() - t, 1)
    log(f"held-out: {len(held)} slices, new model AUC {metrics.auc(y_h, p_new):.4f} ({timings['heldout_new_model_s']} s); "
        f"vs heldout_predictions.csv {csv_check}")

    # 2. histogram baselines and the shipped model on the same slices
    t = time.time()
    is_patient = np.isin(pack["source"], ("ct16", "dicom"))
    tr = np.flatnonzero((pack["split"] == "train") & ~is_patient)
    p_hist_framed = evaluate.histogram_baseline(pack["images"][tr].astype(np.float32) / 255.0, pack["label"][tr],
                                                pack["images"][held].astype(np.float32) / 255.0)
    planes256, y256, src256, split256, _w = evaluate.train8_planes(a.data, cfg_ship)
    rows = data.read_labels(a.data / "train8")
    pos = {r["path"]: i for i, r in enumerate(rows)}
    split_new = data.split_train8(rows, cfg["data"]["holdout"], cfg["data"]["seed"])
    if any(split_new[r["path"]] != s for r, s in zip(rows, split256)):
        raise AssertionError("the run's split differs from the shipped config's split")
    if any(split256[pos[n]] != "heldout" for n in names):
        raise AssertionError("a held-out slice of the pack is not held out in the shipped split")
    hi = np.array([pos[n] for n in names])
    if not np.array_equal(y256[hi], y_h):
        raise AssertionError("labels differ between pack and train8")
    tr256 = split256 == "train"
    held256_all = np.flatnonzero(split256 == "heldout") if not a.limit else np.sort(hi)
    p_hist256_all = evaluate.histogram_baseline(planes256[tr256], y256[tr256], planes256[held256_all])
    at = {j: k for k, j in enumerate(held256_all)}
    p_hist_unframed = p_hist256_all[[at[j] for j in hi]]
    timings["histogram_baselines_s"] = round(time.time() - t, 1)
    t = time.time()
    runner = evaluate.Runner(a.shipped, a.threads)
    p_ship_all = runner.p_covid(planes256[held256_all]).astype(np.float64)
    p_ship = p_ship_all[[at[j] for j in hi]]
    timings["shipped_model_heldout_s"] = round(time.time() - t, 1)
    log(f"shipped on {len(held256_all)} held-out (all) AUC {metrics.auc(y256[held256_all], p_ship_all):.4f}, "
        f"on the {len(hi)} framed-plausible ones {metrics.auc(y_h, p_ship):.4f} ({timings['shipped_model_heldout_s']} s)")

    t = time.time()
    preds = {"new": p_new, "histogram_framed": p_hist_framed, "histogram_unframed256": p_hist_unframed,
             "shipped_fp32": p_ship}
    pairs = [("new", "histogram_framed"), ("new", "histogram_unframed256"), ("new", "shipped_fp32")]
    by_src = {}
    for s in ["all"] + sorted(set(src_h.tolist())):
        m = np.ones(len(y_h), bool) if s == "all" else src_h == s
        by_src[s] = {k: metrics.summary(y_h[m], p[m]) for k, p in preds.items()}
        by_src[s]["bootstrap"] = bootstrap_auc(y_h[m], {k: p[m] for k, p in preds.items()}, a.bootstrap,
                                               a.seed, pairs)
    ship_full = {"n": int(len(held256_all)), "auc": metrics.auc(y256[held256_all], p_ship_all),
                 "accuracy": metrics.summary(y256[held256_all], p_ship_all)["accuracy"],
                 "histogram_unframed256_auc": metrics.auc(y256[held256_all], p_hist256_all),
                 "by_source": {s: metrics.auc(y256[held256_all][src256[held256_all] == s],
                                              p_ship_all[src256[held256_all] == s]) for s in sorted(set(src256.tolist()))}}
    timings["bootstrap_s"] = round(time.time() - t, 1)

    # 3. temperature scaling
    t = time.time()
    z = lg_h[:, 1] - lg_h[:, 0]
    t_all_fit = fit_temperature(y_h, z)
    half = data.halves(names, src_h, y_h, a.seed)
    t_h = [fit_temperature(y_h[half == h], z[half == h]) for h in (0, 1)]
    p_oof = np.empty(len(z))
    for h in (0, 1):
        p_oof[half == h] = 1.0 / (1.0 + np.exp(-z[half == h] / t_h[1 - h]))
    p_same = 1.0 / (1.0 + np.exp(-z / t_all_fit))
    calib = {
        "ece_definition": "10 equal-width bins of P(COVID); sum over bins of n_b/N * |fraction COVID - mean P|",
        "logit": "l1 - l0 of the network (P(COVID) = sigmoid(logit / T))",
        "before": {"ece": ece(y_h, p_new), "nll": nll(y_h, z, 1.0)},
        "same_split": {"T": t_all_fit, "ece": ece(y_h, p_same), "nll": nll(y_h, z, t_all_fit),
                       "note": "fitted and reported on the same held-out slices: optimistic"},
        "two_fold": {"halves_n": [int((half == 0).sum()), int((half == 1).sum())],
                     "halves_covid": [int(y_h[half == 0].sum()), int(y_h[half == 1].sum())],
                     "T_fit_on_half": t_h,
                     "ece_half_before": [ece(y_h[half == h], p_new[half == h]) for h in (0, 1)],
                     "ece_half_after_T_from_other_half": [ece(y_h[half == h], p_oof[half == h]) for h in (0, 1)],
                     "ece_pooled_out_of_fold": ece(y_h, p_oof),
                     "nll_pooled_out_of_fold": float(np.mean([nll(y_h[half == h], z[half == h], t_h[1 - h]) * (half == h).sum()
                                                              for h in (0, 1)]) * 2 / len(z))},
        "by_source_ece": {s: {"before": ece(y_h[src_h == s], p_new[src_h == s]),
                              "after_out_of_fold": ece(y_h[src_h == s], p_oof[src_h == s])} for s in sorted(set(src_h.tolist()))},
        "reliability_before": reliability(y_h, p_new),
        "reliability_after_out_of_fold": reliability(y_h, p_oof),
        "reliability_after_same_split": reliability(y_h, p_same),
        "shipped_fp32_ece_same_slices": ece(y_h, p_ship),
        "note": "A positive temperature keeps the sign of the logit: AUC, the 0.5 threshold and every verdict are unchanged",
    }
    timings["temperature_s"] = round(time.time() - t, 1)

    # 4. patients
    t = time.time()
    log("patients:")
    series = patient_series(a.data, a.ref_python, cfg, model, round_trip, log)
    pats = pool_patients(series)
    # Which shared patients this model trained on (train.trained_patient_mask): all of them with
    # data.use_ct16 except data.exclude_patients (a leave-patients-out fold), none without.
    excluded = set(cfg["data"].get("exclude_patients", []))
    for p in pats:
        p["out_of_sample"] = not cfg["data"]["use_ct16"] or p["patient"] in excluded
    trained_on = sorted({p["patient"] for p in pats if not p["out_of_sample"]})
    rad = radiologist(series)
    pack_check = None
    if (run / "ct16_predictions.csv").exists():
        import csv
        with open(run / "ct16_predictions.csv") as f:
            ref = {r["name"]: float(r["p_covid"]) for r in csv.DictReader(f)}
        det = [d for s in series for d in s["slices_detail"] if d["p"] is not None]
        inpack = [d for d in det if d["pack_name"] in ref]
        notpack = [d for d in det if d["pack_name"] not in ref]
        pack_names_ok = {d["pack_name"] for d in det}
        pack_check = {"classified_slices": len(det), "in_ct16_predictions_csv": len(inpack),
                      "not_in_csv": len(notpack), "not_in_csv_series": sorted({d["pack_name"].rsplit("/", 1)[0] for d in notpack}),
                      "csv_rows_not_classified_here": len(set(ref) - pack_names_ok),
                      "max_abs_p_diff_jpeg_vs_csv": float(max(abs(d["p_jpeg"] - ref[d["pack_name"]]) for d in inpack)) if inpack else None,
                      "max_abs_p_diff_float_vs_csv": float(max(abs(d["p"] - ref[d["pack_name"]]) for d in inpack)) if inpack else None,
                      "label_agreement_float_vs_csv": float(np.mean([(d["p"] >= .5) == (ref[d["pack_name"]] >= .5) for d in inpack])) if inpack else None}
    timings["patients_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t_all, 1)

    import shlex
    cmd = (f"OMP_NUM_THREADS={a.threads} .venv-train/bin/python -m training.oos_eval "
           + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv)))
    rep = {
        "notice": evaluate.NOTICE, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": cmd, "argv": sys.argv[1:],
        "run": str(run), "weights": str(weights), "weights_sha256": sha256(weights),
        "config_name": cfg["name"], "input_size": cfg["input_size"], "frame": cfg["preprocessing"].get("frame"),
        "trained_on_patients": trained_on,
        "patient_codec": codec,
        "train_metrics_json_heldout": mjson["heldout"] if mjson else None,
        "shipped": {"file": str(a.shipped), "sha256": sha256(a.shipped), "config": str(a.shipped_config),
                    "input": f"{cfg_ship['input_size']} px, unframed, {cfg_ship['preprocessing']}",
                    "heldout_all_770_check": ship_full},
        "heldout": {"n": int(len(held)), "by_source": by_src, "csv_check": csv_check},
        "calibration": calib,
        "patients": pats, "series": [{k: v for k, v in s.items() if k not in ("slices_detail",)} for s in series],
        "slices": {f"{s['patient']}/{s['series']}": s["slices_detail"] for s in series},
        "radiologist": rad, "pack_check": pack_check, "timings": timings,
    }
    out = a.out or run
    out.mkdir(parents=True, exist_ok=True)
    if a.limit:
        rep["smoke_test_limit"] = a.limit
    (out / "oos_report.json").write_text(json.dumps(rep, indent=1, default=float) + "\n")
    (out / "oos_report.md").write_text(report_md(rep))
    log(json.dumps({"patients": [{k: p[k] for k in ("patient", "kind", "selected", "dropped_implausible", "classified",
                                                     "covid", "verdict", "correct")} for p in pats],
                    "timings": timings}, indent=1))


def _f(x, nd=3):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def report_md(r: dict) -> str:
    codec = r.get("patient_codec", "jpeg").upper()
    view = {"lung": "lung-framed", "body": "body-only whole-slice", "body_box": "body-only, cropped to the body"}.get(r.get("frame"), "whole-slice")
    L = [f"# {r['config_name']}: out-of-sample evaluation", "",
         f"**{r['notice'].capitalize()}.** Written by `{r['command']}` ({r['date']}); weights `{r['weights']}` "
         f"(sha256 `{r['weights_sha256'][:16]}…`), input {r['input_size']} px, frame `{r['frame']}`. "
         + (f"Trained on the shared patients: **{', '.join(r['trained_on_patients'])}** — their rows below are "
            "**in-sample and are not evidence**; only the rows marked out-of-sample are."
            if r["trained_on_patients"] else
            "Trained on none of the shared patients: every patient below is out-of-sample."), ""]
    # patients
    L += ["## 1. Shared 16-bit patients (paper selection, lung plausibility, 10% rule)", "",
          "Selection per series by `tests/reference/select_ref.py` / `dicom_select_ref.py` (checked equal to "
          "`evaluate.select_mask`). Selected slices with an implausible lung mask are **not classified** (the "
          "appliance's rule) and leave the denominator; the verdict is the 10% rule on the rest. "
          f"P from float {view} planes (as the appliance would feed them); *{codec}* = the same planes through the "
          f"pack's {codec} round trip (what train.py's ct16_predictions.csv saw).", "",
          "*Lung-driven*: COVID-called slices whose evidence peak lies in the lung mask (the appliance's "
          "`peak_in_lungs`, from the model's own map; n/a: the model has no map); *gated*: the verdict after the "
          "appliance's evidence gate (undetermined when fewer than 90% of the COVID calls are lung-driven).", "",
          "| patient | out-of-sample? | truth | series | selected | dropped (implausible) | classified | COVID slices | "
          f"COVID fraction | verdict | right? | lung-driven | gated | verdict ({codec}) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["patients"]:
        drop = f"{p['dropped_implausible']}" + (f" ({', '.join(f'{k} {v}' for k, v in p['dropped_by_verdict'].items())})"
                                                if p["dropped_by_verdict"] else "")
        name = p["patient"] + (" **[thin DICOM series, separate row]**" if p["kind"] == "dicom" else "")
        oos = "yes" if p.get("out_of_sample", True) else "**no (trained on)**"
        L.append(f"| {name} | {oos} | {p['truth']} | {' + '.join(p['series'])} | {p['selected']} | {drop} | {p['classified']} | "
                 f"{p['covid']} | {_f(p['covid_fraction'])} | **{p['verdict']}** | {'yes' if p['correct'] else 'NO'} | "
                 f"{'n/a' if p['covid_lung_driven'] is None else str(p['covid_lung_driven']) + ' of ' + str(p['covid'])} | "
                 f"{p['verdict_gated'] or 'n/a'} | "
                 f"{p['verdict_jpeg']} ({_f(p['covid_fraction_jpeg'])}) |")
    L += ["", "Per series:", "", "| patient | series | in manifest / pack | slices | selected | dropped | classified | COVID | mean P (classified) | implausible among all slices |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["series"]:
        L.append(f"| {s['patient']} | {s['series']} | {'yes' if s['in_manifest'] or s['kind'] == 'dicom' else 'no (computed here)'} | "
                 f"{s['slices']} | {s['selected']} | {s['dropped_implausible']} | {s['classified']} | {s['covid']} | "
                 f"{_f(s['mean_p_classified'])} | {s['implausible_all_slices']} |")
    pc = r.get("pack_check")
    if pc:
        L += ["", f"Cross-check with train.py's `ct16_predictions.csv`: {pc['in_ct16_predictions_csv']} of the "
              f"{pc['classified_slices']} slices classified here are in it (not in it: {pc['not_in_csv']}, series "
              f"{pc['not_in_csv_series']}); max |ΔP| {codec}-here vs csv {_f(pc['max_abs_p_diff_jpeg_vs_csv'], 5)}, "
              f"float vs csv {_f(pc['max_abs_p_diff_float_vs_csv'], 4)} (label agreement "
              f"{_f(pc['label_agreement_float_vs_csv'], 4)})."]
    rad = r.get("radiologist")
    if rad:
        L += ["", f"**Radiologist slice labels (ctmd_P001, {rad['all_slices']} slices, {rad['infection_slices']} with "
              f"infection):** {rad['implausible_slices']} slices have an implausible mask ({rad['implausible_infection_slices']} "
              "of them infected) and are not classified."
              + (" **In-sample: this model trained on ctmd_P001; not evidence.**" if "ctmd_P001" in r["trained_on_patients"] else ""), "",
              "| slices | n | infected | accuracy | sensitivity | specificity | AUC | TP / FN / FP / TN |", "|---|---|---|---|---|---|---|---|"]
        for k, lab in (("classified_all", "all classified"), ("classified_selected", "selected and classified")):
            m = rad[k]
            c = m["confusion"]
            L.append(f"| {lab} | {m['n']} | {m['covid']} | {_f(m['accuracy'])} | {_f(m['sensitivity_covid'])} | "
                     f"{_f(m['specificity_non_covid'])} | {_f(m['auc'])} | {c['tp']} / {c['fn']} / {c['fp']} / {c['tn']} |")
    # held-out
    h = r["heldout"]
    L += ["", "## 2. Held-out slices (the pack's split; slices with an implausible lung mask excluded), same slices for every model", "",
          f"`new` = this run on its {view} {r['input_size']} px pack planes; `histogram_framed` = evaluate.py's baseline (32-bin "
          "histogram + logistic regression, fit on the training split) on those planes; `histogram_unframed256` = the "
          "same baseline on the shipped model's unframed 256 px planes; `shipped_fp32` = "
          f"`{r['shipped']['file']}` in ONNX Runtime on its own input ({r['shipped']['input']}). AUC with stratified "
          "bootstrap 95% interval.", "",
          "| source | n (COVID) | new AUC | new acc | histogram framed AUC | histogram unframed AUC | shipped AUC | shipped acc |",
          "|---|---|---|---|---|---|---|---|"]
    for s, d in h["by_source"].items():
        b = d["bootstrap"]
        ci = lambda k: f"{_f(d[k]['auc'])} [{_f(b[k][0])}, {_f(b[k][1])}]" if k in b else _f(d[k]["auc"])  # noqa: E731
        L.append(f"| {s} | {d['new']['n']} ({d['new']['covid']}) | {ci('new')} | {_f(d['new']['accuracy'])} | "
                 f"{ci('histogram_framed')} | {ci('histogram_unframed256')} | {ci('shipped_fp32')} | {_f(d['shipped_fp32']['accuracy'])} |")
    L += ["", "Paired bootstrap of AUC differences (same resampled slices):", "", "| source | new − histogram framed | new − histogram unframed | new − shipped |", "|---|---|---|---|"]
    for s, d in h["by_source"].items():
        b = d["bootstrap"]
        cell = lambda k: f"{b[k]['diff']:+.3f} [{b[k]['ci95'][0]:+.3f}, {b[k]['ci95'][1]:+.3f}]" if k in b else "n/a"  # noqa: E731
        L.append(f"| {s} | {cell('new-histogram_framed')} | {cell('new-histogram_unframed256')} | {cell('new-shipped_fp32')} |")
    L += ["", "Sensitivity / specificity at 0.5 (overall):", "", "| model | accuracy | sensitivity | specificity |", "|---|---|---|---|"]
    for k, m in h["by_source"]["all"].items():
        if k != "bootstrap":
            L.append(f"| {k} | {_f(m['accuracy'])} | {_f(m['sensitivity_covid'])} | {_f(m['specificity_non_covid'])} |")
    sf = r["shipped"]["heldout_all_770_check"]
    L += ["", f"Check: the shipped fp32 model on all {sf['n']} held-out slices (no lung exclusion) gives AUC {_f(sf['auc'], 4)} "
          f"(its card: 0.8619), histogram unframed {_f(sf['histogram_unframed256_auc'], 4)} (card: 0.7799); by source "
          + ", ".join(f"{k} {_f(v)}" for k, v in sf["by_source"].items()) + "."]
    if h.get("csv_check"):
        L.append(f"The new model's held-out P recomputed here vs train.py's heldout_predictions.csv: max |ΔP| "
                 f"{h['csv_check']['max_abs_p_diff']:.2e}, label agreement {h['csv_check']['label_agreement']:.4f}.")
    # calibration
    c = r["calibration"]
    tf = c["two_fold"]
    L += ["", "## 3. Calibration (temperature scaling of the new model)", "",
          f"ECE: {c['ece_definition']}. {c['note']}.", "",
          "| | T | ECE | NLL |", "|---|---|---|---|",
          f"| before (T = 1) | 1 | {_f(c['before']['ece'], 4)} | {_f(c['before']['nll'], 4)} |",
          f"| fitted on all held-out, reported on the same slices (**optimistic**) | {_f(c['same_split']['T'])} | "
          f"{_f(c['same_split']['ece'], 4)} | {_f(c['same_split']['nll'], 4)} |",
          f"| two-fold: fit on one half, report on the other (pooled) | {_f(tf['T_fit_on_half'][0])} / {_f(tf['T_fit_on_half'][1])} | "
          f"{_f(tf['ece_pooled_out_of_fold'], 4)} | {_f(tf['nll_pooled_out_of_fold'], 4)} |", "",
          f"Halves (by MosMed slice / blocks of 50 files, balanced per source x label): n {tf['halves_n']}, COVID "
          f"{tf['halves_covid']}; ECE per half before {[round(x, 4) for x in tf['ece_half_before']]}, after (T from the "
          f"other half) {[round(x, 4) for x in tf['ece_half_after_T_from_other_half']]}. Shipped fp32 on the same slices: ECE "
          f"{_f(c['shipped_fp32_ece_same_slices'], 4)} (uncalibrated).", "",
          "ECE by source: " + ", ".join(f"{s} {v['before']:.3f} → {v['after_out_of_fold']:.3f}" for s, v in c["by_source_ece"].items()) + "", "",
          "Reliability (P(COVID) bins; after = two-fold out-of-fold):", "",
          "| bin | n before | mean P before | COVID fraction before | n after | mean P after | COVID fraction after |",
          "|---|---|---|---|---|---|---|"]
    for b0, b1 in zip(c["reliability_before"], c["reliability_after_out_of_fold"]):
        L.append(f"| {b0['bin']} | {b0['n']} | {_f(b0['mean_p'])} | {_f(b0['frac_covid'])} | {b1['n']} | {_f(b1['mean_p'])} | {_f(b1['frac_covid'])} |")
    # the issue's bar
    al = h["by_source"]["all"]
    mos = h["by_source"].get("mosmed", {}).get("new", {}).get("auc")
    # Only rows of patients the model never trained on count (older reports have no flag: all
    # their patients were out-of-sample); no such row means the criterion is not met.
    need = [p for p in r["patients"] if p["truth"] in ("covid", "normal") and p.get("out_of_sample", True)]
    checks = [
        ("held-out MosMed AUC >= 0.85", mos is not None and mos >= 0.85, f"{_f(mos)}"),
        ("overall held-out AUC >= histogram (framed, same input) + 0.10",
         al["new"]["auc"] >= al["histogram_framed"]["auc"] + 0.10,
         f"{_f(al['new']['auc'])} vs {_f(al['histogram_framed']['auc'])} + 0.10"),
        ("overall held-out AUC >= histogram (unframed 256) + 0.10",
         al["new"]["auc"] >= al["histogram_unframed256"]["auc"] + 0.10,
         f"{_f(al['new']['auc'])} vs {_f(al['histogram_unframed256']['auc'])} + 0.10"),
        ("every COVID and normal patient right out-of-sample (TIFF and thin DICOM rows)", bool(need) and all(p["correct"] for p in need),
         ", ".join(f"{p['patient']}{' (DICOM)' if p['kind'] == 'dicom' else ''} {p['verdict']}" for p in need) or "no out-of-sample row"),
        ("(peer) overall held-out AUC >= shipped model's on the same slices", al["new"]["auc"] >= al["shipped_fp32"]["auc"],
         f"{_f(al['new']['auc'])} vs {_f(al['shipped_fp32']['auc'])}"),
    ]
    L += ["", "## The issue's bar", "", "| criterion | met? | value |", "|---|---|---|"]
    L += [f"| {c} | {'yes' if ok else '**no**'} | {v} |" for c, ok, v in checks]
    L += ["", "## Timings (seconds)", "", "| step | s |", "|---|---|"] + [f"| {k} | {v} |" for k, v in r["timings"].items()]
    L += ["", "## Commands", "", "```sh", r["command"], "```", "",
          "Selection references: `.venv/bin/python tests/reference/select_ref.py SERIES_DIR...` and "
          "`.venv/bin/python tests/reference/dicom_select_ref.py ../shared/data/dicom/normal/ctmd_normal001_thin` (run by the script). "
          "This file can be re-rendered from oos_report.json with `--render-only`.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
