"""Slice metrics shared by training, evaluation and the baseline (numpy only)."""
from __future__ import annotations

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sp = p[order]
    i = 0
    while i < len(sp):
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def summary(y, p, threshold: float = 0.5) -> dict:
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p) >= threshold).astype(int)
    pos, neg = y == 1, y == 0
    return {
        "n": int(len(y)), "covid": int(pos.sum()), "non_covid": int(neg.sum()),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "sensitivity_covid": float(pred[pos].mean()) if pos.any() else float("nan"),
        "specificity_non_covid": float((1 - pred[neg]).mean()) if neg.any() else float("nan"),
        "auc": auc(y, p),
    }


# --- calibration (temperature scaling; used by evaluate.py and oos_eval.py) ---
ECE_BINS = 10


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    return float(sum(r["n"] * abs(r["frac_covid"] - r["mean_p"]) for r in reliability(y, p, bins) if r["n"]) / len(y))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    b = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    rows = []
    for k in range(bins):
        m = b == k
        rows.append({"bin": f"{k / bins:.1f}-{(k + 1) / bins:.1f}", "n": int(m.sum()),
                     "mean_p": float(p[m].mean()) if m.any() else None,
                     "frac_covid": float(y[m].mean()) if m.any() else None})
    return rows


def nll(y: np.ndarray, z: np.ndarray, t: float) -> float:
    s = z / t
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar
    r = minimize_scalar(lambda lt: nll(y, z, float(np.exp(lt))), bounds=(np.log(0.02), np.log(50.0)), method="bounded",
                        options={"xatol": 1e-6})
    return float(np.exp(r.x))


def calibrated(probs, output: dict) -> float:
    """P(COVID) as the appliance reports it (src/classify/mod.rs `calibrated`): the logit
    difference divided by the card's temperature, when it has one."""
    c = output["covid_index"]
    pc, pn = float(probs[c]), float(probs[1 - c])
    t = output.get("temperature")
    if t is None or pc <= 0.0 or pn <= 0.0:
        return pc
    return float(1.0 / (1.0 + np.exp(-(np.log(pc) - np.log(pn)) / t)))
