import numpy as np

from training import metrics


def test_auc_perfect_inverse_and_ties():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 1)
    pos, neg = p[y == 1], p[y == 0]
    ref = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert abs(metrics.auc(y, p) - ref) < 1e-12


def test_summary_counts():
    s = metrics.summary([1, 1, 0, 0], [0.9, 0.4, 0.1, 0.6])
    assert s["accuracy"] == 0.5 and s["sensitivity_covid"] == 0.5 and s["specificity_non_covid"] == 0.5
