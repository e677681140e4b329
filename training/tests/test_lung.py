"""training/lung.py: the lung mask on generated phantoms, its set operations against plain
breadth-first searches, and agreement with the committed fixture the Rust side also checks."""
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from training import lung, preprocess

ROOT = Path(__file__).resolve().parents[2]
PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0}


def frame(shapes, w=512, h=512, s=0.7, spacing="same"):
    px = lung.render(shapes, w, h, s)
    return px, lung.lung_frame(px, spacing_mm=s if spacing == "same" else spacing)


def px_at(mm, n, s):
    return int(round(mm / s + n / 2 - 0.5))


def test_chest_phantom_two_plausible_lungs_and_the_drawn_box():
    s = 0.7
    _, lf = frame(lung.chest(), s=s)
    assert lf["verdict"] == "ok"
    assert len(lf["components"]) == 2
    x0, y0, x1, y1 = lf["bbox"]
    for got, mm in ((x0, -125), (x1, 120), (y0, -85), (y1, 75)):
        assert abs(got - (mm / s + 256)) <= 1.0, lf["bbox"]
    drawn = np.pi * (55 * 80 + 50 * 78) / s**2
    assert abs(lf["lung_area"] / drawn - 1) < 0.01


def test_nodule_filled_and_trachea_table_and_outside_air_excluded():
    s = 0.7
    px, lf = frame(lung.chest(), s=s)
    m = lf["mask"]
    assert px[px_at(10, 512, s), px_at(-70, 512, s)] == 1064  # nodule is tissue
    assert m[px_at(10, 512, s), px_at(-70, 512, s)]
    assert not m[px_at(-70, 512, s), px_at(0, 512, s)]  # trachea
    assert not m[px_at(135, 512, s), px_at(-60, 512, s)]  # table pocket
    assert not m[0, 0] and not m[-1, -1]


@pytest.mark.parametrize("name, edit, want", [
    ("no lungs", lambda sh: [e for e in sh if e["hu"] not in (-850, -550)], "no_lungs"),
    ("one lung", lambda sh: [e for i, e in enumerate(sh) if i not in (5, 8)], "one_lung"),
    ("tiny second lung", lambda sh: [e if i != 5 else {**e, "rx": 12.0, "ry": 16.0} for i, e in enumerate(sh) if i != 8],
     "one_lung"),
    ("small lungs", lambda sh: [e if i not in (4, 5) else {**e, "rx": 14.0, "ry": 14.0} for i, e in enumerate(sh) if i != 8],
     "lungs_too_small"),
    ("huge lung", lambda sh: [sh[0], {"cx": 0.0, "cy": 0.0, "rx": 152.0, "ry": 108.0, "hu": -850}], "lungs_too_large"),
])
def test_implausible_masks_get_their_reason(name, edit, want):
    _, lf = frame(edit(lung.chest()))
    assert lf["verdict"] == want, (name, lf["verdict"], lf["components"])


def test_narrow_field_of_view_and_uniform_slices():
    px, lf = frame(lung.chest(), s=0.35)
    assert px[256, 0] < 624 and px[256, -1] < 624  # lung air reaches both side edges
    assert lf["verdict"] == "field_of_view_cuts_body"
    assert lung.lung_frame(np.full((64, 80), 1064, np.uint16))["verdict"] == "field_of_view_cuts_body"
    air = lung.lung_frame(np.full((64, 80), 24, np.uint16))
    assert air["verdict"] == "no_lungs" and air["body_area"] == 0 and air["frame"] is None


def test_joined_lungs_are_a_pair():
    sh = lung.chest() + [{"cx": 0.0, "cy": 30.0, "rx": 40.0, "ry": 6.0, "hu": -850}]
    _, lf = frame(sh)
    assert len(lf["components"]) == 1 and lf["verdict"] == "ok"


def test_equal_components_keep_raster_order():
    s = 0.625
    sh = [{"cx": 0.0, "cy": 0.0, "rx": 150.0, "ry": 100.0, "hu": 40}]
    sh += [{"cx": cx, "cy": 0.0, "rx": 30.0, "ry": 30.0, "hu": -850} for cx in (-100.0, 0.0, 100.0)]
    _, lf = frame(sh, s=s)
    assert lf["components"][0] == lf["components"][1]
    y = px_at(0, 512, s)
    assert lf["mask"][y, px_at(-100, 512, s)] and lf["mask"][y, px_at(0, 512, s)]
    assert not lf["mask"][y, px_at(100, 512, s)]


def test_frame_side_is_fixed_in_mm_and_inputs_match_across_fields_of_view():
    def inp(s, spacing):
        px, lf = frame(lung.chest(), s=s, spacing=spacing)
        return lung.framed_input(px, lf, PRE, 128), lf

    a, la = inp(0.6, 0.6)
    b, lb = inp(0.8, 0.8)
    assert la["frame"][2] == int(np.ceil(lung.FRAME_MM / 0.6)) and lb["frame"][2] == int(np.ceil(lung.FRAME_MM / 0.8))
    same = np.abs(a - b).mean()
    unknown = np.abs(inp(0.6, None)[0] - inp(0.8, None)[0]).mean()
    assert same < 0.002 and unknown > 10 * same, (same, unknown)


def test_framed_input_is_air_outside_the_mask():
    s = 0.7
    px, lf = frame(lung.chest(), s=s)
    x0, y0, side = lf["frame"]
    out = lung.framed_input(px, lf, PRE, side)  # one model pixel per frame pixel
    air, lungv = 250 / 1500, 400 / 1500
    at = lambda xm, ym: out[px_at(ym, 512, s) - y0, px_at(xm, 512, s) - x0]  # noqa: E731
    assert abs(at(-70, -40) - lungv) < 1e-6
    assert abs(at(0, 0) - air) < 1e-6 and abs(at(-150, 0) - air) < 1e-6 and abs(out[0, 0] - air) < 1e-6


def test_closing_border_handling():
    m = np.zeros((5, 7), bool)
    m[2, [0, 1, 2, 4, 5, 6]] = True
    m[0, 0] = True
    want = np.zeros_like(m)
    want[2, :] = True
    want[0, 0] = want[1, 0] = True
    np.testing.assert_array_equal(lung.close3x3(m), want)


def test_fill_holes_pattern():
    rows = ["#####.", "#..#..", "#####.", "......", "#.#...", "###..."]
    m = np.array([[c == "#" for c in r] for r in rows])
    f = lung.fill_holes(m)
    assert f[1, 1] and f[1, 2] and not f[4, 1] and not f[1, 4]


def _bfs_components(a):
    """Plain 4-connected BFS labelling in raster order of first pixels."""
    h, w = a.shape
    lab = np.zeros((h, w), int)
    k = 0
    for y in range(h):
        for x in range(w):
            if a[y, x] and not lab[y, x]:
                k += 1
                lab[y, x] = k
                q = deque([(y, x)])
                while q:
                    cy, cx = q.popleft()
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < h and 0 <= nx < w and a[ny, nx] and not lab[ny, nx]:
                            lab[ny, nx] = k
                            q.append((ny, nx))
    return lab


def _canonical(lab):
    """Relabel by raster order of first pixel (0 stays background)."""
    flat = lab.ravel()
    out = np.zeros_like(flat)
    seen = {}
    for i, v in enumerate(flat):
        if v:
            out[i] = seen.setdefault(v, len(seen) + 1)
    return out.reshape(lab.shape)


@pytest.mark.parametrize("seed", range(6))
def test_scipy_label_and_fill_holes_equal_plain_searches(seed):
    from scipy import ndimage

    a = np.random.default_rng(seed).random((37, 53)) < 0.5
    lab, _ = ndimage.label(a, structure=lung.FOUR)
    np.testing.assert_array_equal(_canonical(lab), _bfs_components(a))
    # Holes: background components (4-connected) that do not touch the border.
    bg = _bfs_components(~a)
    edge = set(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]).tolist())
    want = a | ((bg > 0) & ~np.isin(bg, list(edge)))
    np.testing.assert_array_equal(lung.fill_holes(a), want)
    # Border-connected air: components touching the border.
    fg = _bfs_components(a)
    edge = set(np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]]).tolist()) - {0}
    np.testing.assert_array_equal(lung.border_connected(a), np.isin(fg, list(edge)))


def test_rle_round_trip():
    m = np.array([[1, 1, 0], [0, 1, 1]], bool)
    r = lung.rle(m)
    assert r == [0, 2, 2, 2] and sum(r) == m.size
    assert lung.rle(np.zeros((2, 2), bool)) == [4]


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        lung.lung_frame(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError):
        lung.lung_frame(np.zeros((4, 4), np.uint16), spacing_mm=0.0)
    with pytest.raises(ValueError):
        lung.framed_input(np.zeros((4, 4), np.uint16), lung.lung_frame(np.zeros((4, 4), np.uint16)), PRE, 8)


def test_agrees_with_the_committed_fixture():
    fx = json.loads((ROOT / "tests/fixtures/lung/phantoms.json").read_text())
    assert fx["constants"]["frame_mm"] == lung.FRAME_MM and fx["constants"]["air_below_hu"] == lung.AIR_BELOW_HU
    assert len(fx["cases"]) >= 6
    for c in fx["cases"]:
        px = lung.render(c["shapes"], c["width"], c["height"], c["render_spacing_mm"], c["intercept"])
        lf = lung.lung_frame(px, c["intercept"], c["spacing_mm"])
        assert lf["verdict"] == c["verdict"], c["name"]
        assert lung.rle(lf["mask"]) == c["mask_rle"], c["name"]
        assert lf["bbox"] == c["bbox"] and lf["frame"] == c["frame"], c["name"]
        for k, v in c["stats"].items():
            assert lf[k] == v, (c["name"], k)
        if c["input"] is None:
            assert lf["frame"] is None
            continue
        want = c["input"]
        x = lung.framed_input(px, lf, fx["preprocessing"], want["size"]).astype(np.float64)
        assert abs(x.sum() - want["sum"]) < 1e-6 * x.size, c["name"]
        for i, v in want["samples"]:
            assert abs(x.ravel()[i] - v) < 1e-6, (c["name"], i)
        n = want["size"] // 8
        thumb = x.reshape(8, n, 8, n).mean(axis=(1, 3)).ravel()
        np.testing.assert_allclose(thumb, want["thumb8"], atol=1e-6)


def test_body_mask_keeps_the_body_with_its_lungs_and_drops_the_table():
    s = 0.7
    px = lung.render(lung.chest(), 512, 512, s)
    m = lung.body_mask(px)
    assert m[px_at(0, 512, s), px_at(0, 512, s)], "body"
    assert m[px_at(-5, 512, s), px_at(-70, 512, s)], "lung: inside the body, a filled hole"
    assert m[px_at(-70, 512, s), px_at(0, 512, s)], "trachea"
    assert not m[px_at(135, 512, s), px_at(0, 512, s)], "the table is another component"
    assert not m[0, 0] and not m[-1, -1]
    pre = {"kind": "hu_window", "center": -500.0, "width": 1500.0}
    x = lung.body_input(px, pre, 512)
    air = (-1000.0 - (-1250.0)) / 1500.0
    assert abs(x[px_at(135, 512, s), px_at(0, 512, s)] - air) < 1e-6, "table set to air"
    inside = np.zeros_like(m)
    inside[px_at(-30, 512, s):px_at(30, 512, s), px_at(-30, 512, s):px_at(30, 512, s)] = True
    np.testing.assert_allclose(x[inside & m], preprocess.preprocess_stored(px, pre, 512)[inside & m])
    assert not lung.body_mask(np.zeros((8, 8), np.uint16)).any(), "all air: no body"


def test_body_input_reads_stored_values_of_any_intercept_as_hu():
    px = lung.render(lung.chest(), 256, 256, 1.4)  # HU + 1024
    pre = {"kind": "hu_window", "center": -500.0, "width": 1500.0}
    shifted = (px.astype(np.int64) + 24).astype(np.uint16)  # the same HU stored with intercept -1048
    np.testing.assert_array_equal(lung.body_input(shifted, pre, 128, intercept=-1048.0),
                                  lung.body_input(px, pre, 128))


def test_body_box_input_is_the_same_body_whatever_the_field_of_view():
    """The point of frame = "body_box": one chest reconstructed at 0.7 and at 0.9 mm/px (a
    smaller and a larger field of view; both hold the whole body) gives the network nearly the
    same input, while the whole-slice body input shows it at two scales."""
    pre = {"kind": "hu_window", "center": -500.0, "width": 1500.0}
    near, far = (lung.render(lung.chest(), 512, 512, s) for s in (0.7, 0.9))
    a, b = lung.body_box_input(near, pre, 128), lung.body_box_input(far, pre, 128)
    assert np.abs(a - b).mean() < 0.01, np.abs(a - b).mean()
    whole = np.abs(lung.body_input(near, pre, 128) - lung.body_input(far, pre, 128)).mean()
    assert whole > 5 * np.abs(a - b).mean(), whole
    air = (-1000.0 - (-1250.0)) / 1500.0
    m = lung.body_mask(far)
    box = lung.body_box(m)
    ys, xs = np.nonzero(m)
    big = max(np.ptp(xs) + 1, np.ptp(ys) + 1)
    assert box[2] == big + 2 * round(lung.BODY_BOX_MARGIN * big)
    assert np.allclose(b[0, :], air) and np.allclose(b[:, 0], air), "the margin is air"
    assert (np.abs(b[64, :] - air) > 0.05).sum() > 100, "the body spans the frame's width"


def test_body_box_input_of_an_all_air_slice_is_the_whole_slice():
    pre = {"kind": "hu_window", "center": -500.0, "width": 1500.0}
    px = np.full((64, 64), 24, np.uint16)  # -1000 HU everywhere
    assert lung.body_box(lung.body_mask(px)) is None
    np.testing.assert_array_equal(lung.body_box_input(px, pre, 32), lung.body_input(px, pre, 32))
