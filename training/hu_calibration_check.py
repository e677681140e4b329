"""The check of the per-image HU calibration (training/hu_calibration.py), with a number.

    python -m training.hu_calibration_check [--data ../shared/data] [--out training/reports/hu_calibration.md]

Per 8-bit source, on its normal / non-COVID slices: the lung parenchyma's HU (the median inside
`lung.lung_frame`'s mask, per slice, slices whose mask verdict is "ok") through

- `source`: the one window per source of `data.estimate_windows` (the old map), all slices;
- `source, same slices`: the old map on exactly the slices the per-image fit kept;
- `per-image`: the per-image landmark fit, excluded slices left out (counted by reason);

and the 16-bit reference measured the same way (ct16 normal patient, value = HU + 1024; its thin
DICOM series beside it). Target: each source's per-image median within TARGET_HU of the reference.

A round trip estimates the method's own error where the truth is known: every second slice of
every ct16 series is windowed to 8 bits through fixed windows, box-resized to 256 px and JPEG
encoded (q 92) like the train8 images, calibrated, and its lung median compared with the 16-bit
slice's. The lung HU never enters the calibration (hu_calibration.py's doc), and no constant of
it was chosen by looking at the reference patient's lungs.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from . import data, hu_calibration, lung, preprocess

TARGET_HU = 25.0
SOURCES = ("mosmed", "ucsd", "sarscov2")
REFERENCE = "ct16/normal/ctmd_normal001/SR_1"
# Round-trip windows (HU of 8-bit 0 and 255): a common lung window and a MosMed-like wide one.
ROUND_TRIP_WINDOWS = {"lung -1350..150": (-1350.0, 150.0), "wide -2250..1050": (-2250.0, 1050.0)}
# The other 16-bit series (not normal: COVID, pneumonia, lung cancer), measured the same way for
# context only -- how far apart 16-bit patients' lungs are -- never the target.
CONTEXT_SERIES = ("ct16/covid/ctmd_P001/SR_1", "ct16/cap/ctmd_cap001/SR_1",
                  "ct16/lungcancer/ldx_A0001/SR_2", "ct16/lungcancer/ldx_A0001/SR_3")
ROUND_TRIP_SERIES = ("ct16/covid/ctmd_P001/SR_1", "ct16/normal/ctmd_normal001/SR_1",
                     "ct16/cap/ctmd_cap001/SR_1", "ct16/lungcancer/ldx_A0001/SR_2")


def lung_median(stored: np.ndarray, intercept: float, spacing_mm: float | None) -> tuple[float | None, str]:
    """(median HU inside the lung mask, verdict); None unless the verdict is ok."""
    lf = lung.lung_frame(stored, intercept, spacing_mm)
    if lf["verdict"] != "ok":
        return None, lf["verdict"]
    return float(np.median(stored[lf["mask"]].astype(np.float64) + intercept)), "ok"


def stats(xs) -> dict:
    x = np.asarray([v for v in xs if v is not None], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "median": None, "q25": None, "q75": None}
    q25, med, q75 = np.percentile(x, [25, 50, 75])
    return {"n": int(x.size), "median": round(float(med), 1), "q25": round(float(q25), 1), "q75": round(float(q75), 1)}


def series_stats(root: Path, series: str) -> dict:
    import tifffile
    return stats([lung_median(tifffile.imread(f), -1024.0, None)[0]
                  for f in sorted((root / series).glob("*.tif"), key=lambda p: data.index_of(p.name))])


def reference(root: Path) -> dict:
    out = {REFERENCE: series_stats(root, REFERENCE)}
    thin = root / data.DICOM_THIN
    if thin.is_dir():
        out[data.DICOM_THIN] = stats([lung_median(st, ic, sp)[0] for _, st, ic, sp in data.dicom_series(thin)])
    return out


def to_eight_bit(hu: np.ndarray, lo: float, hi: float, size: int = 256, quality: int = 92) -> np.ndarray:
    v = np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255).astype(np.float32)
    v = preprocess.box_resize(v, size, size)
    buf = io.BytesIO()
    Image.fromarray(np.round(v).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def round_trip(root: Path, step: int = 2) -> dict:
    import tifffile
    out = {}
    for series in ROUND_TRIP_SERIES:
        files = sorted((root / series).glob("*.tif"), key=lambda p: data.index_of(p.name))[::step]
        for wname, (lo, hi) in ROUND_TRIP_WINDOWS.items():
            errs, excl = [], Counter()
            for f in files:
                st = tifffile.imread(f)
                truth, verdict = lung_median(st, -1024.0, None)
                if truth is None:
                    continue
                g = to_eight_bit(st.astype(np.float64) - 1024.0, lo, hi)
                fr = hu_calibration.calibrate(g)
                if not fr.ok:
                    excl[fr.reason] += 1
                    continue
                m, v = lung_median(fr.stored(g), -1024.0, data.eight_bit_spacing(g.shape[1]))
                if m is None:
                    excl[f"lung_{v}"] += 1
                    continue
                errs.append(m - truth)
            out[f"{series} | {wname}"] = {**stats(errs), "excluded": dict(sorted(excl.items()))}
    return out


def measure(root: Path, log=print, with_round_trip: bool = True) -> dict:
    train8 = root / "train8"
    rows = data.read_labels(train8)
    windows = data.estimate_windows(train8, rows)
    res = {"sources": {}, "reference": reference(root), "target_hu": TARGET_HU,
           "context_16bit": {s: series_stats(root, s) for s in CONTEXT_SERIES if (root / s).is_dir()}}
    for src in SOURCES:
        rs = [r for r in rows if r["source"] == src and not data.is_covid(r["label"])]
        before, before_same, after = [], [], []
        excl, lung_excl_after, lung_excl_before = Counter(), Counter(), Counter()
        resid = []
        for r in rs:
            g = data.load_gray(train8 / r["path"])
            spacing = data.eight_bit_spacing(g.shape[1])
            mb, vb = lung_median(data.eight_bit_stored(g, windows[src]), -1024.0, spacing)
            before.append(mb)
            if mb is None:
                lung_excl_before[vb] += 1
            fr = hu_calibration.calibrate(g)
            if not fr.ok:
                excl[fr.reason] += 1
                continue
            resid.append(max(abs(v) for v in fr.residuals_hu.values()))
            ma, va = lung_median(fr.stored(g), -1024.0, spacing)
            if ma is None:
                lung_excl_after[va] += 1
                continue
            after.append(ma)
            before_same.append(mb)
        res["sources"][src] = {
            "slices": len(rs), "window": [round(x, 1) for x in windows[src].hu_range()],
            "before": stats(before), "before_lung_verdicts": dict(sorted(lung_excl_before.items())),
            "calibrated": len(rs) - sum(excl.values()), "excluded": dict(sorted(excl.items())),
            "max_residual_hu": stats(resid), "after_lung_verdicts": dict(sorted(lung_excl_after.items())),
            "before_same_slices": stats(before_same), "after": stats(after),
        }
        log(f"{src}: {json.dumps(res['sources'][src])}")
    ref = res["reference"][REFERENCE]["median"]
    for src, s in res["sources"].items():
        s["after_minus_reference"] = None if s["after"]["median"] is None else round(s["after"]["median"] - ref, 1)
        s["before_minus_reference"] = None if s["before"]["median"] is None else round(s["before"]["median"] - ref, 1)
        s["within_target"] = s["after_minus_reference"] is not None and abs(s["after_minus_reference"]) <= TARGET_HU
    if with_round_trip:
        res["round_trip"] = round_trip(root)
    return res


def fmt(s: dict) -> str:
    if not s["n"]:
        return "—"
    return f"{s['median']:.0f} ({s['q25']:.0f}..{s['q75']:.0f})"


def verdict(s: dict, target: float) -> str:
    if not s["within_target"]:
        return "**no**"
    return "yes, at the limit" if abs(s["after_minus_reference"]) > 0.8 * target else "yes"


def report(res: dict, command: str) -> str:
    ref = res["reference"][REFERENCE]
    L = ["# Per-image HU calibration of the 8-bit sources: the check", "",
         f"Command: `{command}` (from the repository root; `training/hu_calibration_check.py` says "
         "what each column is). Figures are HU: median over slices of each slice's median inside the "
         "lung mask (`training/lung.py`, verdict ok), IQR in brackets; normal / non-COVID slices only.", "",
         f"Reference, 16-bit, same measure: `{REFERENCE}` {fmt(ref)}, n = {ref['n']} slices"]
    if data.DICOM_THIN in res["reference"]:
        t = res["reference"][data.DICOM_THIN]
        L[-1] += f"; its thin DICOM series `{data.DICOM_THIN}` {fmt(t)}, n = {t['n']}"
    L[-1] += f". Target: each source's per-image median within ±{res['target_hu']:.0f} HU of {ref['median']:.0f}."
    L += ["", "| source | slices | old window (HU of 0..255) | old map: lung HU | fit kept | excluded by the fit (reason: n) "
          "| lung mask not ok after the fit | old map, same slices | **per-image fit: lung HU** | per-image − reference | within ±25? |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for src, s in res["sources"].items():
        ex = ", ".join(f"{k} {v}" for k, v in s["excluded"].items()) or "none"
        lv = ", ".join(f"{k} {v}" for k, v in s["after_lung_verdicts"].items()) or "none"
        L.append(f"| {src} | {s['slices']} | {s['window'][0]:.0f}..{s['window'][1]:.0f} | {fmt(s['before'])}, n {s['before']['n']} "
                 f"| {s['calibrated']} | {ex} | {lv} | {fmt(s['before_same_slices'])} | **{fmt(s['after'])}**, n {s['after']['n']} "
                 f"| {s['after_minus_reference']:+.0f} | {verdict(s, res['target_hu'])} |")
    L += ["", "Largest |landmark residual| of the kept fits, HU (median (IQR)): " +
          "; ".join(f"{src} {fmt(s['max_residual_hu'])}" for src, s in res["sources"].items()) + ".", "",
          "For context only (not the target; these patients are not normal): the other 16-bit series, "
          "same measure: " + "; ".join(f"`{k}` {fmt(v)}" for k, v in res.get("context_16bit", {}).items()) + ".", "",
          "Exclusion reasons: " + "; ".join(f"`{k}`: {v}" for k, v in hu_calibration.REASONS.items()) + ".", "",
          "## Round trip: the method's own error where the truth is known", "",
          "Every second slice of each 16-bit series, windowed to 8 bits, box-resized to 256 px, JPEG q 92, "
          "calibrated; error = calibrated lung median − the 16-bit slice's lung median (HU).", "",
          "| series | window | n | error median (IQR) | excluded |", "|---|---|---|---|---|"]
    for k, v in res.get("round_trip", {}).items():
        series, wname = k.split(" | ")
        ex = ", ".join(f"{a} {b}" for a, b in v["excluded"].items()) or "none"
        L.append(f"| {series} | {wname} | {v['n']} | {fmt(v)} | {ex} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("training/reports/hu_calibration.md"))
    a = ap.parse_args(argv)
    if not (a.data / "train8" / "labels.csv").exists():
        sys.exit(f"{a.data}: no train8/labels.csv (shared data missing)")
    res = measure(a.data, log=lambda s: print(s, file=sys.stderr, flush=True))
    command = "python -m training.hu_calibration_check" + (f" --data {a.data}" if str(a.data) != "../shared/data" else "")
    md = report(res, command)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
