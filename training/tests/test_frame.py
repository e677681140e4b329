"""Lung-framed pack input (data.framed_plane / eight_bit_stored) on generated images."""
import numpy as np

from training import data, lung

PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0, "frame": "lung"}


def test_eight_bit_values_map_back_to_their_hu():
    w = data.SourceWindow(air_value=98.0, tissue_value=177.0)
    gray = np.array([[98, 177]], dtype=np.uint8)
    stored = data.eight_bit_stored(gray, w)
    assert stored.dtype == np.uint16
    assert abs(int(stored[0, 0]) - 1024 - data.AIR_HU) <= 1 and abs(int(stored[0, 1]) - 1024 - data.SOFT_TISSUE_HU) <= 1


def test_eight_bit_spacing_is_lungpy_default_over_a_512_px_field():
    assert data.eight_bit_spacing(512) == lung.DEFAULT_SPACING_MM
    assert abs(data.eight_bit_spacing(256) - 1.4) < 1e-12


def test_phantom_is_framed_and_an_empty_slice_is_refused():
    img = lung.render(lung.chest(), 512, 512, 0.7)
    plane, verdict = data.framed_plane(img, PRE, 64, 0.7)
    assert verdict == "ok" and plane.shape == (64, 64)
    air = (-1000 - (PRE["center"] - PRE["width"] / 2)) / PRE["width"]
    assert abs(plane[0, 0] - air) < 1e-6, "outside the lungs is air"
    assert plane.max() > air + 0.05 or plane.min() < air - 0.01, "the lungs are in the frame"
    empty = np.full((128, 128), 24, dtype=np.uint16)  # all air
    plane, verdict = data.framed_plane(empty, PRE, 64, 0.7)
    assert plane is None and verdict != "ok"


def test_margin_keeps_the_lungs_and_a_rim_around_them_and_nothing_far_from_them():
    """outside = "margin" (issue 33): subpleural tissue within margin_mm of the lung mask is kept;
    tissue farther away and everything outside the body become air."""
    img = lung.render(lung.chest(), 512, 512, 0.7)
    lf = lung.lung_frame(img, lung.DEFAULT_INTERCEPT, 0.7)
    assert lf["verdict"] == "ok"
    keep = lung.lung_margin(lf, 10.0)
    mask, body = lf["mask"], lf["body"]
    assert (keep & ~body).sum() == 0, "nothing outside the body is kept"
    assert (mask & ~keep).sum() == 0, "the lungs are kept"
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(~mask) * 0.7
    rim = body & (dist > 0) & (dist <= 9.0)
    far = body & (dist > 11.0)
    assert rim.sum() > 0 and far.sum() > 0
    assert keep[rim].all(), "the tissue within the margin is kept"
    assert not keep[far].any(), "tissue beyond the margin is not"
    pre = {**PRE, "outside": "margin", "margin_mm": 10.0}
    plane_margin = lung.framed_input(img, lf, pre, 128)
    plane_air = lung.framed_input(img, lf, PRE, 128)
    plane_keep = lung.framed_input(img, lf, {**PRE, "outside": "keep"}, 128)
    # The margin input lies between the two others: more tissue than lungs-only, less than all.
    assert plane_air.sum() < plane_margin.sum() < plane_keep.sum()


def test_an_unknown_outside_mode_or_margin_is_refused():
    import pytest
    img = lung.render(lung.chest(), 512, 512, 0.7)
    lf = lung.lung_frame(img, lung.DEFAULT_INTERCEPT, 0.7)
    with pytest.raises(ValueError):
        lung.framed_input(img, lf, {**PRE, "outside": "table"}, 64)
    with pytest.raises(ValueError):
        lung.framed_input(img, lf, {**PRE, "outside": "margin", "margin_mm": float("nan")}, 64)


def test_gaussian_blur_keeps_a_flat_image_and_spreads_an_impulse_per_image_sigma():
    import torch
    from training.train import gaussian_blur
    x = torch.zeros(2, 1, 15, 15)
    x[:, 0, 7, 7] = 1.0
    y = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.allclose(y[0], x[0], atol=1e-6), "sigma 0 leaves the image as it is"
    assert abs(float(y[1].sum()) - 1.0) < 1e-5 and float(y[1, 0, 7, 7]) < 0.2 and float(y[1, 0, 7, 8]) > 0.05
    flat = torch.full((1, 1, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.5])), flat, atol=1e-6)
