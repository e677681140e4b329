import numpy as np

from training import data

PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0}


def test_landmarks_found_in_synthetic_histogram():
    h = np.zeros(256)
    h[0:3] = 1e6          # padding: ignored
    h[95:100] = [1, 5, 9, 5, 1]
    h[175:180] = [1, 4, 8, 4, 1]
    h[255] = 1e6          # saturation: ignored
    assert data.histogram_landmarks(h) == (97.0, 177.0)


def test_source_window_maps_landmarks_to_their_hu():
    w = data.SourceWindow(air_value=98.0, tissue_value=177.0)
    lut = w.lut(PRE)
    # air (-1000 HU) -> (-1000 + 1250) / 1500
    assert abs(lut[98] - 250 / 1500) < 1e-6
    assert abs(lut[177] - 1290 / 1500) < 1e-6
    lo, hi = w.hu_range()
    assert lo < -2000 and hi > 900  # a MosMed-like wide window


def test_split_is_deterministic_disjoint_and_blocks_keep_neighbours_together():
    rows = [{"path": f"sarscov2/covid/sarscov2_covid_{i:04d}.jpg", "source": "sarscov2", "label": "covid"} for i in range(400)]
    rows += [{"path": f"mosmed/normal/mosmed_CT0_normal_{i:04d}.jpg", "source": "mosmed", "label": "normal"} for i in range(100)]
    a = data.split_train8(rows, 0.2, seed=3)
    assert a == data.split_train8(rows, 0.2, seed=3)
    assert set(a.values()) == {"train", "heldout"}
    for blk in range(8):
        members = {a[f"sarscov2/covid/sarscov2_covid_{i:04d}.jpg"] for i in range(blk * 50, blk * 50 + 50)}
        assert len(members) == 1, "a block of consecutive indices must stay on one side"
    held_mosmed = sum(a[r["path"]] == "heldout" for r in rows[400:])
    assert held_mosmed == 20


def test_labels_are_binary_and_strict():
    assert data.is_covid("covid") == 1 and data.is_covid("normal") == 0 and data.is_covid("noncovid") == 0
    import pytest
    with pytest.raises(ValueError):
        data.is_covid("cap")


def test_pack_roundtrip(tiny_pack):
    p = data.load_pack(tiny_pack)
    assert p["images"].shape == (48, 64, 64) and p["images"].dtype == np.uint8
    assert set(p["split"]) == {"train", "heldout"}


def test_source_label_balance_equalises_groups_with_cap():
    from training.train import WEIGHT_CAP, sample_weights
    src = np.array(["mosmed"] * 80 + ["sarscov2"] * 100 + ["ct16"] * 20)
    lab = np.array([1] * 60 + [0] * 20 + [1] * 50 + [0] * 50 + [1] * 2 + [0] * 18)
    idx = np.arange(200)
    w = sample_weights(src, lab, idx, "source_label")
    # uncapped groups carry equal total weight
    assert abs(w[:60].sum() - w[60:80].sum()) < 1e-3 and abs(w[80:130].sum() - w[:60].sum()) < 1e-3
    assert w[180:182].max() == WEIGHT_CAP[1], "tiny group capped"
    wc = sample_weights(src, lab, idx, "class")
    assert abs(wc[lab == 1].sum() - wc[lab == 0].sum()) < 1e-3


def test_halves_keep_each_patient_like_group_whole_and_balance_every_source_and_label():
    """data.halves (the two-fold calibration split of evaluate.py and oos_eval.py): a MosMed slice
    or a block of 50 consecutive files of another source never straddles the halves."""
    import numpy as np
    from training import data
    names = np.array([f"ucsd/covid/img{i}.png" for i in range(200)] + [f"mosmed/study_{i}.png" for i in range(40)])
    src = np.array(["ucsd"] * 200 + ["mosmed"] * 40)
    y = np.array([1] * 200 + [0] * 40)
    half = data.halves(names, src, y, seed=7)
    for b in range(4):
        assert len(set(half[b * 50:(b + 1) * 50])) == 1, "a block of 50 stays in one half"
    assert (half[:200] == 0).sum() == 100 and (half[200:] == 0).sum() == 20, "balanced per source x label"
