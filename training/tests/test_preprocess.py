import numpy as np

from training import preprocess

PRE = {"kind": "hu_window", "center": -500.0, "width": 1500.0}


def test_hu_window_maps_ends_and_clips():
    # stored 0 is -1024 HU (inside the window: (1250 - 1024) / 1500); -500 HU is the centre.
    stored = np.array([[0, 1024 - 500, 1024 + 250, 4000]], dtype=np.uint16)
    y = preprocess.window(stored, PRE)
    np.testing.assert_allclose(y, [[226 / 1500, 0.5, 1.0, 1.0]], atol=1e-6)
    y = preprocess.window(np.array([[0]], dtype=np.uint16), {"kind": "hu_window", "center": 0.0, "width": 100.0})
    assert y[0, 0] == 0.0  # -1024 HU below a soft-tissue window clips to 0


def test_raw_stored_is_the_stored_value():
    s = np.array([[0, 300, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(preprocess.window(s, {"kind": "raw_stored"}), s.astype(np.float32))


def test_box_resize_halving_is_2x2_mean():
    img = np.random.default_rng(1).random((512, 512)).astype(np.float32)
    out = preprocess.box_resize(img, 256, 256)
    ref = img.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_box_resize_non_integer_preserves_mean_and_constants():
    img = np.full((600, 400), 0.25, dtype=np.float32)
    np.testing.assert_allclose(preprocess.box_resize(img, 256, 256), 0.25, atol=1e-6)
    rnd = np.random.default_rng(2).random((600, 400)).astype(np.float32)
    assert abs(preprocess.box_resize(rnd, 256, 256).mean() - rnd.mean()) < 1e-4


def test_8bit_input_is_value_over_255():
    g = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    np.testing.assert_allclose(preprocess.preprocess_8bit(g, 2), [[0, 1], [0.2, 0.4]], atol=1e-6)
