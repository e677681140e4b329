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
