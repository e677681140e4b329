"""training/hu_calibration.py on generated phantoms (never patient data): a known linear map is
recovered, padding is never taken for air, images without landmarks are excluded with a reason;
and data.build_pack's per-image mode. The check on the shared data is test_hu_calibration_shared.py."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from training import data, hu_calibration as hc, lung
from training.hu_calibration_check import to_eight_bit

LUNG_HU = -850


def E(cx, cy, rx, ry, hu):
    return {"cx": cx, "cy": cy, "rx": rx, "ry": ry, "hu": hu}


def chest(fat_mm: float = 15.0, trachea: bool = True) -> list[dict]:
    """A chest section (mm): subcutaneous fat around a muscle / mediastinum body, two lungs, a
    trachea, a table below."""
    shapes = [E(0, 0, 160, 115, -100),                                # skin + subcutaneous fat
              E(0, 0, 160 - fat_mm, 115 - fat_mm, 40),                # muscle, mediastinum
              E(0, 135, 200, 8, 100),                                  # table
              E(-70, -5, 55, 80, LUNG_HU), E(70, -5, 50, 78, LUNG_HU)]
    if trachea:
        shapes.append(E(0, -40, 9, 9, -1000))                         # a third of the way back
    return shapes


def phantom_hu(shapes, noise_hu=12.0, seed=0, size=512, spacing=0.7) -> np.ndarray:
    hu = lung.render(shapes, size, size, spacing).astype(np.float64) - 1024.0
    return hu + np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape)


def lung_hu_after(fit: hc.FitResult, g: np.ndarray) -> float:
    st = fit.stored(g)
    lf = lung.lung_frame(st, -1024.0, data.eight_bit_spacing(g.shape[1]))
    assert lf["verdict"] == "ok", lf["verdict"]
    return float(np.median(st[lf["mask"]].astype(np.float64) - 1024.0))


@pytest.mark.parametrize("lo,hi", [(-1350.0, 150.0), (-1200.0, 300.0), (-2250.0, 1050.0)])
def test_known_linear_map_is_recovered(lo, hi):
    g = to_eight_bit(phantom_hu(chest()), lo, hi)   # box-resized to 256 px, JPEG q 92
    f = hc.calibrate(g)
    assert f.ok, (f.reason, f.notes, f.landmarks)
    assert {"air_outside", "air_inside", "fat", "muscle"} <= set(f.landmarks)
    slope, offset = 255.0 / (hi - lo), -lo * 255.0 / (hi - lo)
    assert abs(f.slope / slope - 1) < 0.05, (f.slope, slope)
    # HU of the landmarks' levels through the true map: each within one 8-bit level.
    level_hu = (hi - lo) / 255.0
    for hu in (-1000.0, -100.0, 40.0):
        assert abs(float(f.hu(slope * hu + offset)) - hu) <= max(15.0, 1.5 * level_hu)
    # The lungs were never a landmark, yet they come out where they were drawn.
    assert abs(lung_hu_after(f, g) - LUNG_HU) <= max(15.0, 1.5 * level_hu)
    assert max(abs(v) for v in f.residuals_hu.values()) < 20


def test_outside_air_alone_is_enough_without_a_trachea():
    g = to_eight_bit(phantom_hu(chest(trachea=False)), -1350.0, 150.0)
    f = hc.calibrate(g)
    assert f.ok and "air_inside" not in f.landmarks and "air_outside" in f.landmarks


def circle_fov(g: np.ndarray, value: int, radius_frac: float = 0.47) -> np.ndarray:
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = g.copy()
    out[(yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 > (radius_frac * w) ** 2] = value
    return out


def jpeg(g: np.ndarray, q: int = 92) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize("pad_value,fov", [(0, True), (30, True), (255, False)])
def test_padding_is_not_taken_for_air(pad_value, fov):
    """Letterbox bars and the corners outside a circular field of view, black or painted grey
    (darker than the air), or white bars: the air landmark is the air inside the field of view.
    (White corners are not padding: hu_calibration keeps white runs joined to the border, which
    are as often saturated chest wall cut by a crop; they are never a landmark either.)"""
    lo, hi = -1350.0, 150.0
    air8 = -lo * 255.0 / (hi - lo) - 1000.0 * 255.0 / (hi - lo)    # 59.5
    hu = phantom_hu(chest(trachea=False))
    g = to_eight_bit(hu, lo, hi).copy()
    if fov:
        g = circle_fov(g, pad_value)
    g[:40], g[-40:] = pad_value, pad_value                         # letterbox bars
    g = jpeg(g)
    L = hc.find_landmarks(g)
    assert L.masks["padding"][:40].all() and L.masks["padding"][-40:].all()
    if fov:
        assert L.masks["padding"][45, 0] and L.masks["padding"][128, 0], "outside the field of view is padding"
    assert abs(L.values["air_outside"] - air8) <= 1.5, L.values
    f = hc.fit(L)
    assert f.ok, (f.reason, f.notes)
    slope, offset = 255.0 / (hi - lo), -lo * 255.0 / (hi - lo)
    # The lungs through the fit: where the true map puts them, within 15 HU. (lung.lung_frame is
    # not used here: it takes grey or white padding for body, "field_of_view_cuts_body".)
    assert abs(float(f.hu(slope * LUNG_HU + offset)) - LUNG_HU) <= 15


def test_clipped_air_is_excluded_with_its_reason():
    """A window that maps air (and the trachea) to black: the black surround is padding and the
    image has no air landmark: excluded as air_clipped, not fitted to the padding."""
    g = to_eight_bit(phantom_hu(chest()), -950.0, 550.0)
    f = hc.calibrate(g)
    assert not f.ok and f.reason == "air_clipped", (f.reason, f.notes, f.landmarks)


@pytest.mark.parametrize("name,img,reason", [
    ("blank", np.full((256, 256), 120, np.uint8), "no_body"),
    ("noise", np.random.default_rng(1).integers(0, 256, (256, 256)).astype(np.uint8), "no_body"),
])
def test_image_without_landmarks_is_excluded_with_a_reason(name, img, reason):
    f = hc.calibrate(img)
    assert not f.ok and f.reason == reason, (name, f.reason, f.notes)
    assert f.reason in hc.REASONS
    with pytest.raises(AssertionError):
        assert np.isfinite(f.slope)


def test_body_without_fat_is_excluded():
    g = to_eight_bit(phantom_hu(chest(fat_mm=0.0)), -1350.0, 150.0)
    f = hc.calibrate(g)
    assert not f.ok and f.reason == "no_fat_muscle", (f.reason, f.notes)


def test_fit_checks_reject_inconsistent_landmarks():
    good = {"air_outside": 59.5, "fat": 212.5, "muscle": 236.3}
    body = np.ones((4, 4), bool)
    ok = hc.fit(hc.Landmarks(values=dict(good), masks={"body": body}))
    assert ok.ok and abs(ok.slope - 0.17) < 1e-3 and abs(ok.offset - 229.5) < 0.2
    # A bent (non-linear) display curve: muscle far above where air and fat put it.
    bent = hc.fit(hc.Landmarks(values={**good, "fat": 195.0}, masks={"body": body}))
    assert not bent.ok and bent.reason == "residual"
    # Trachea 100 HU brighter than the air beside the body: not the same air.
    two = hc.fit(hc.Landmarks(values={**good, "air_inside": 59.5 + 0.17 * 100}, masks={"body": body}))
    assert not two.ok and two.reason == "air_disagrees"
    assert hc.fit(hc.Landmarks(values={"fat": 212.5, "muscle": 236.3}, masks={"body": body})).reason == "no_air"
    assert hc.fit(hc.Landmarks(values={"air_outside": 59.5}, masks={"body": body})).reason == "no_fat_muscle"


def test_build_pack_per_image_calibration_excludes_and_counts(tmp_path):
    """data.build_pack with preprocessing.hu_calibration = "per_image": calibrated images are
    packed, a landmark-free image is left out and counted; the default mode is untouched."""
    train8 = tmp_path / "train8"
    rows = []
    for i, (lo, hi) in enumerate([(-1350.0, 150.0), (-1200.0, 300.0), (-1300.0, 200.0)]):
        g = to_eight_bit(phantom_hu(chest(), seed=i), lo, hi)
        p = train8 / "mosmed" / "normal" / f"mosmed_normal_{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g).save(p, quality=92)
        rows.append({"path": str(p.relative_to(train8)), "source": "mosmed", "label": "normal"})
    p = train8 / "mosmed" / "covid" / "mosmed_covid_0003.jpg"
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((256, 256), 120, np.uint8)).save(p, quality=92)
    rows.append({"path": str(p.relative_to(train8)), "source": "mosmed", "label": "covid"})
    with open(train8 / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "source", "label"])
        w.writeheader()
        w.writerows(rows)
    pre = {"kind": "hu_window", "center": -500.0, "width": 1500.0, "hu_calibration": "per_image"}
    meta = data.build_pack(tmp_path, pre, 64, 0, 0.25, tmp_path / "pack.npz", use_ct16=False, log=lambda s: None)
    assert meta["images"] == 3 and meta["excluded"] == {"mosmed/calibration_no_body": 1}
    assert meta["hu_calibration"] == "per_image" and len(meta["hu_calibration_fits"]) == 3
    pk = data.load_pack(tmp_path / "pack.npz")
    # Air outside the body lands at -1000 HU in the model's window: (-1000 + 1250) / 1500 * 255.
    corner = pk["images"][:, :4, :4].astype(np.float64)
    assert np.all(np.abs(corner - 42.5) <= 4), corner.mean(axis=(1, 2))
    json.dumps(meta)
    old = data.build_pack(tmp_path, {k: v for k, v in pre.items() if k != "hu_calibration"}, 64, 0, 0.25,
                          tmp_path / "pack_old.npz", use_ct16=False, log=lambda s: None)
    assert old["images"] == 4 and old["hu_calibration"] == "source" and "hu_calibration_fits" not in old
    with pytest.raises(ValueError):
        data.hu_calibration_mode({"hu_calibration": "per_source"})
