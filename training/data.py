"""Training data: map every source into the one documented representation, split, and pack.

The `train8/` sources were windowed to 8 bits by their publishers with unknown windows (MosMed
about -2200..+1000 HU, the others roughly lung windows). We estimate each source's effective
window from the histogram of all its images: the *air* peak (outside the body and in the lungs,
-1000 HU) and the *soft-tissue* peak (muscle and blood, about +40 HU) are two landmarks that
fix the linear map value8 = a * HU + b. With it, a 256-entry lookup table takes every 8-bit
value to HU and through the model's window (`hu_window`, see preprocess.py). The 16-bit slices
of `ct16/` go through the same window directly (HU = stored - 1024), so training and bedside
inputs match.

`[preprocessing] hu_calibration = "per_image"` replaces the one window per source by a fit per
image (training/hu_calibration.py: air, subcutaneous fat and muscle landmarks found in each
slice; the publishers' windows vary per image, so one map per source left the lungs of normal
slices anywhere from air to -780 HU, reports/hu_calibration.md). Images whose fit fails are left
out of the pack and counted per source and reason (meta["excluded"], "calibration_<reason>").
The default, "source", is the per-source window above, so existing configs build the same pack.

Splits are recorded in a file: MosMed has one slice per study, so a stratified random split is a
patient split; ucsd and sarscov2 carry no patient ids, and consecutive file numbers come from
the same patient, so they are split by blocks of consecutive indices (an approximation of a
patient split, stated in the card). ct16 patients are whole units.
"""
from __future__ import annotations

import csv
from collections import Counter
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import preprocess

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
# Landmark search ranges in 8-bit values; 0..9 and 250..255 hold padding and saturation.
AIR_RANGE = (10, 140)
TISSUE_RANGE = (140, 250)


def histogram_landmarks(hist: np.ndarray) -> tuple[float, float]:
    """Air and soft-tissue peak positions (8-bit values) of a 256-bin histogram."""
    sm = np.convolve(hist.astype(np.float64), np.ones(5) / 5, mode="same")
    air = AIR_RANGE[0] + int(np.argmax(sm[AIR_RANGE[0]:AIR_RANGE[1]]))
    tissue = TISSUE_RANGE[0] + int(np.argmax(sm[TISSUE_RANGE[0]:TISSUE_RANGE[1]]))
    return float(air), float(tissue)


@dataclass(frozen=True)
class SourceWindow:
    """The effective window of an 8-bit source: value8 = slope * HU + offset."""
    air_value: float
    tissue_value: float

    @property
    def slope(self) -> float:
        return (self.tissue_value - self.air_value) / (SOFT_TISSUE_HU - AIR_HU)

    @property
    def offset(self) -> float:
        return self.air_value - self.slope * AIR_HU

    def hu_range(self) -> tuple[float, float]:
        """HU of 8-bit values 0 and 255: the publisher's window."""
        return (-self.offset / self.slope, (255.0 - self.offset) / self.slope)

    def lut(self, pre: dict) -> np.ndarray:
        """256-entry table: 8-bit value -> the model's [0, 1] representation."""
        hu = (np.arange(256, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.slope)
        stored = hu - np.float32(preprocess.HU_INTERCEPT)
        lo = pre["center"] - pre["width"] / 2.0
        return np.clip((stored + preprocess.HU_INTERCEPT - lo) / pre["width"], 0.0, 1.0).astype(np.float32)


def read_labels(train8: Path) -> list[dict]:
    with open(train8 / "labels.csv") as f:
        return list(csv.DictReader(f))


def load_gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def estimate_windows(train8: Path, rows: list[dict] | None = None) -> dict[str, SourceWindow]:
    rows = rows or read_labels(train8)
    hists: dict[str, np.ndarray] = {}
    for r in rows:
        a = load_gray(train8 / r["path"])
        hists.setdefault(r["source"], np.zeros(256))
        hists[r["source"]] += np.bincount(a.ravel(), minlength=256)
    return {s: SourceWindow(*histogram_landmarks(h)) for s, h in sorted(hists.items())}


def is_covid(label: str) -> int:
    if label not in ("covid", "normal", "noncovid"):
        raise ValueError(f"unknown label {label!r}")
    return int(label == "covid")


def index_of(name: str) -> int:
    return int(re.findall(r"(\d+)\.\w+$", name)[0])


def split_train8(rows: list[dict], holdout: float, seed: int, block: int = 50) -> dict[str, str]:
    """path -> 'train' | 'heldout'. See the module doc for why blocks."""
    rng = np.random.default_rng(seed)
    out = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["label"]), []).append(r)
    for (source, _label), rs in sorted(groups.items()):
        if source == "mosmed":
            idx = rng.permutation(len(rs))
            n = int(round(holdout * len(rs)))
            held = {rs[i]["path"] for i in idx[:n]}
        else:
            blocks = sorted({index_of(r["path"]) // block for r in rs})
            n = max(1, int(round(holdout * len(blocks))))
            chosen = set(rng.choice(blocks, size=n, replace=False).tolist())
            held = {r["path"] for r in rs if index_of(r["path"]) // block in chosen}
        for r in rs:
            out[r["path"]] = "heldout" if r["path"] in held else "train"
    return out


def ct16_slices(ct16: Path) -> list[dict]:
    """Every ct16 slice with a binary label: COVID-patient slices use the radiologist's
    per-slice infection label; slices of the other patients are non-COVID."""
    manifest = json.loads((ct16 / "manifest.json").read_text())
    infection = manifest.get("slice_infection", {})
    out = []
    for s in manifest["series"]:
        d = ct16 / s["label"] / s["patient"] / s["series"]
        files = sorted(d.glob("*.tif"), key=lambda p: index_of(p.name))
        labels = infection.get(s["patient"])
        if s["label"] == "covid" and labels is None:
            raise ValueError(f"{d}: COVID series without radiologist slice labels")
        for f in files:
            y = int(labels[f"{s['series']}/{f.name}"]) if s["label"] == "covid" else 0
            out.append({"path": str(f.relative_to(ct16)), "patient": s["patient"], "label": y, "kind": s["label"]})
    return out


def encode_jpeg(plane01: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(plane01 * 255.0).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(plane01: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(plane01 * 255.0).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# How the pack stores the in-domain 16-bit planes (ct16 slices, the thin DICOM series): losslessly.
# The appliance feeds the model planes computed straight from the stored values; a JPEG round trip
# is a different input, and on lung-framed planes (a sharp lung/air edge) it moved P of the same
# in-sample slices by up to 0.8 (float vs JPEG columns of training/reports/
# effl0_lung_lopo_covid.jpeg.oos.md). The 8-bit sources stay JPEG: they were JPEG or PNG already.
PATIENT_CODEC = "png"


def pack_round_trip(plane01: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """What the pack does to a 16-bit plane (`codec` from pack.json, "jpeg" for packs made before
    PATIENT_CODEC): the plane as training reads it back."""
    blob = encode_png(plane01) if codec == "png" else encode_jpeg(plane01, quality)
    return np.asarray(Image.open(io.BytesIO(blob))).astype(np.float32) / 255.0


# 8-bit slices have no pixel spacing. lung.py assumes 0.7 mm/px for a slice of unknown spacing,
# i.e. a 358 mm field of view over 512 px; train8 slices are those fields of view downscaled
# to 256 px, so the same assumption gives 0.7 * 512 / width mm/px (1.4 mm at 256 px).
EIGHT_BIT_FOV_PX = 512


def eight_bit_spacing(width: int) -> float:
    from . import lung
    return lung.DEFAULT_SPACING_MM * EIGHT_BIT_FOV_PX / width


HU_CALIBRATIONS = ("source", "per_image")


def hu_calibration_mode(pre: dict) -> str:
    mode = pre.get("hu_calibration", "source")
    if mode not in HU_CALIBRATIONS:
        raise ValueError(f"preprocessing.hu_calibration must be one of {HU_CALIBRATIONS}, not {mode!r}")
    return mode


def linear_lut(slope: float, offset: float, pre: dict) -> np.ndarray:
    """256-entry table for the map value8 = slope * HU + offset: 8-bit value -> the model's [0, 1]
    representation (SourceWindow.lut for any linear map, e.g. a hu_calibration.FitResult)."""
    hu = (np.arange(256, dtype=np.float32) - np.float32(offset)) / np.float32(slope)
    lo = pre["center"] - pre["width"] / 2.0
    return np.clip((hu - lo) / pre["width"], 0.0, 1.0).astype(np.float32)


def eight_bit_map(gray: np.ndarray, source: str, windows: dict, mode: str):
    """(the linear map of this 8-bit image -- anything with .slope and .offset --, "ok") or
    (None, reason): the source's window, or the image's own landmark fit."""
    if mode == "source":
        return windows[source], "ok"
    from . import hu_calibration
    f = hu_calibration.calibrate(gray)
    return (f, "ok") if f.ok else (None, f.reason)


def eight_bit_stored(gray: np.ndarray, w) -> np.ndarray:
    """8-bit slice -> stored 16-bit values (HU + 1024) through a linear map value8 = slope * HU +
    offset (the source's estimated window, or a per-image hu_calibration.FitResult)."""
    hu = (np.arange(256, dtype=np.float64) - w.offset) / w.slope
    lut = np.clip(np.floor(hu - preprocess.HU_INTERCEPT + 0.5), 0, 65535).astype(np.uint16)
    return lut[gray]


def framed_plane(stored: np.ndarray, pre: dict, size: int, spacing_mm: float | None,
                 intercept: float = preprocess.HU_INTERCEPT) -> tuple[np.ndarray | None, str]:
    """Lung-framed model input of one stored slice (training/lung.py), or (None, verdict)."""
    from . import lung
    lf = lung.lung_frame(stored, intercept, spacing_mm)
    if lf["verdict"] != "ok":
        return None, lf["verdict"]
    return lung.framed_input(stored, lf, pre, size, intercept), "ok"


def dicom_series(folder: Path) -> list[tuple[str, np.ndarray, float, float]]:
    """(name, stored uint16, intercept, spacing mm) per slice, in ImagePositionPatient z order."""
    import pydicom
    out = []
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        z = float(ds.ImagePositionPatient[2]) if "ImagePositionPatient" in ds else float(ds.InstanceNumber)
        out.append((z, int(ds.InstanceNumber), f.name, ds.pixel_array.astype(np.uint16),
                    float(ds.RescaleIntercept), float(ds.PixelSpacing[0])))
    out.sort(key=lambda t: (-t[0], t[1]))  # superior first, like ct16
    return [(n, a, i, s) for _, _, n, a, i, s in out]


DICOM_THIN = "dicom/normal/ctmd_normal001_thin"


def build_pack(data_root: Path, pre: dict, size: int, seed: int, holdout: float, out: Path,
               quality: int = 90, use_ct16: bool = True, log=print) -> dict:
    """Map every image into the model representation at `size`, encode it (JPEG for the 8-bit
    sources, the GPU machine's transfer limit; PNG for the 16-bit planes, see PATIENT_CODEC), and
    write one .npz with images, labels, sources and splits.

    pre["frame"] == "lung": every slice is lung-framed (training/lung.py); a slice whose mask is
    implausible is left out of the pack and counted per source and verdict (meta["excluded"]).
    The thin DICOM series of the normal patient then joins the pack as source "dicom", split
    "patient" (never trained on: evaluation only). ct16 slices keep split "train"; whether
    training uses them is the config's data.use_ct16."""
    frame = pre.get("frame", "none")
    if frame not in ("none", "lung", "body", "body_box"):
        raise ValueError(f"preprocessing.frame must be 'none', 'lung', 'body' or 'body_box', not {frame!r}")
    calibration = hu_calibration_mode(pre)
    from . import lung
    body_plane = lung.BODY_FRAMES.get(frame)
    train8 = data_root / "train8"
    rows = read_labels(train8)
    windows = estimate_windows(train8, rows)
    split = split_train8(rows, holdout, seed)
    luts = {s: w.lut(pre) for s, w in windows.items()}
    blobs, labels, sources, splits, names = [], [], [], [], []
    excluded: Counter = Counter()
    fits: dict[str, list[float]] = {}
    for r in rows:
        gray = load_gray(train8 / r["path"])
        w, why = eight_bit_map(gray, r["source"], windows, calibration)
        if w is None:
            excluded[f"{r['source']}/calibration_{why}"] += 1
            continue
        if calibration == "per_image":
            fits[r["path"]] = [round(w.slope, 6), round(w.offset, 3)]
        if frame == "lung":
            plane, verdict = framed_plane(eight_bit_stored(gray, w), pre, size,
                                          eight_bit_spacing(gray.shape[1]))
            if plane is None:
                excluded[f"{r['source']}/{verdict}"] += 1
                continue
        elif body_plane:
            plane = body_plane(eight_bit_stored(gray, w), pre, size)
        elif calibration == "per_image":
            plane = preprocess.box_resize(linear_lut(w.slope, w.offset, pre)[gray], size, size)
        else:
            plane = preprocess.box_resize(luts[r["source"]][gray], size, size)
        blobs.append(encode_jpeg(plane, quality)); labels.append(is_covid(r["label"]))
        sources.append(r["source"]); splits.append(split[r["path"]]); names.append(r["path"])
    if use_ct16:
        import tifffile
        for r in ct16_slices(data_root / "ct16"):
            stored = tifffile.imread(data_root / "ct16" / r["path"])
            if frame == "lung":
                plane, verdict = framed_plane(stored, pre, size, None)  # TIFF: spacing unknown
                if plane is None:
                    excluded[f"ct16/{verdict}"] += 1
                    continue
            elif body_plane:
                plane = body_plane(stored, pre, size)
            else:
                plane = preprocess.preprocess_stored(stored, pre, size)
            blobs.append(encode_png(plane)); labels.append(r["label"])
            sources.append("ct16"); splits.append("train"); names.append("ct16/" + r["path"])
        thin = data_root / DICOM_THIN
        if frame != "none" and thin.is_dir():
            for name, stored, intercept, spacing in dicom_series(thin):
                if body_plane:
                    plane = body_plane(stored, pre, size, intercept)
                else:
                    plane, verdict = framed_plane(stored, pre, size, spacing, intercept)
                if plane is None:
                    excluded[f"dicom/{verdict}"] += 1
                    continue
                blobs.append(encode_png(plane)); labels.append(0)
                sources.append("dicom"); splits.append("patient"); names.append(f"{DICOM_THIN}/{name}")
    if excluded:
        log("excluded (failed per-image HU calibration or implausible lung mask): "
            + json.dumps(dict(sorted(excluded.items()))))
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    np.savez(out, blob=np.frombuffer(b"".join(blobs), dtype=np.uint8), lens=lens,
             label=np.array(labels, dtype=np.int64), source=np.array(sources), split=np.array(splits),
             name=np.array(names), patient_codec=np.array(PATIENT_CODEC))
    meta = {"windows": {s: {"air_value": w.air_value, "tissue_value": w.tissue_value,
                            "hu_range": [round(x, 1) for x in w.hu_range()]} for s, w in windows.items()},
            "counts": dict(sorted(Counter(f"{a}/{b}/{c}" for a, b, c in zip(sources, splits, labels)).items())),
            "images": len(blobs), "bytes": int(lens.sum()), "frame": frame, "patient_codec": PATIENT_CODEC,
            "excluded": dict(sorted(excluded.items())), "hu_calibration": calibration}
    if calibration == "per_image":
        meta["hu_calibration_fits"] = fits  # train8 path -> [slope, offset] of value8 = slope * HU + offset
    return meta


def load_pack(path: Path) -> dict:
    z = np.load(path)
    offs = np.concatenate([[0], np.cumsum(z["lens"])])
    blob = z["blob"].tobytes()
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(blob[offs[i]:offs[i + 1]]))) for i in range(len(z["lens"]))])
    # How the 16-bit planes were stored travels with the pack; packs made before it: JPEG.
    codec = str(z["patient_codec"]) if "patient_codec" in z.files else "jpeg"
    return {"images": imgs, "label": z["label"], "source": z["source"], "split": z["split"], "name": z["name"],
            "patient_codec": codec}


def halves(names: np.ndarray, src: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """0/1 half per held-out slice, by patient-like groups (MosMed: the slice; others: blocks of
    50 consecutive files, data.split_train8's unit), balanced within each source x label."""
    groups = np.array([f"{s}/{l}/{n}" if s == "mosmed" else f"{s}/{l}/{index_of(n) // 50}"
                       for n, s, l in zip(names, src, y)])
    rng = np.random.default_rng(seed)
    half = np.zeros(len(names), dtype=int)
    for key in sorted(set(f"{s}/{l}" for s, l in zip(src, y))):
        gs = sorted(set(g for g in groups if g.startswith(key + "/")))
        gs = [gs[i] for i in rng.permutation(len(gs))]
        # greedy: add each group to the half with fewer slices so far
        count = [0, 0]
        for g in gs:
            m = groups == g
            h = int(count[1] < count[0])
            half[m] = h
            count[h] += int(m.sum())
    return half
