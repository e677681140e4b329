#!/usr/bin/env python3
"""Independent reference for the COVID-CTset slice selection rule on DICOM input.

pydicom + numpy (+ pylibjpeg with pylibjpeg-libjpeg for JPEG Lossless), written from the
paper's description and the DICOM standard, sharing no code with the Rust implementation:

- walk DIR recursively, read every DICOM file (non-DICOM files are skipped);
- keep CT Image Storage (1.2.840.10008.5.1.4.1.1.2) images whose ImageType has no LOCALIZER;
- group by SeriesInstanceUID; order each series head to foot: ImagePositionPatient projected
  on the slice normal (row cosines x column cosines of ImageOrientationPatient), descending;
- stored-value convention: HU = pixel_array * RescaleSlope + RescaleIntercept (pixel_array is
  sign-extended per PixelRepresentation), value = clip(round(HU + 1024), 0, 65535);
- dark pixels = value < 300 in rows 240..339, cols 120..369; keep a slice iff
  count > (max - min) / 1.5 over its series, evaluated exactly as 3 * count > 2 * (max - min).

Compressed pixel data is decoded by pylibjpeg only (pydicom's decoding_plugin="pylibjpeg",
which for JPEG Lossless is pylibjpeg-libjpeg); the script fails rather than fall back to
another decoder.

Usage: dicom_select_ref.py DIR
  -> JSON {"series": [{"id": uid, "slices": [{"file": path relative to DIR,
           "dark_pixels": n, "selected": bool}], "threshold": (max - min) / 1.5}]}
     series sorted by SeriesInstanceUID.
"""
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def require_libjpeg():
    """pylibjpeg's JPEG Lossless decoder comes from the libjpeg plugin: make its absence loud."""
    import libjpeg  # noqa: F401  (pylibjpeg-libjpeg)
    import pylibjpeg  # noqa: F401


def dicom_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                continue
            yield path, ds


def is_candidate(ds):
    if str(ds.get("SOPClassUID", "")) != CT_IMAGE_STORAGE:
        return False
    image_type = ds.get("ImageType", [])
    if isinstance(image_type, str):
        image_type = [image_type]
    return "LOCALIZER" not in [str(t).strip().upper() for t in image_type]


def along_normal(ds):
    o = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(o[:3], o[3:])
    return float(np.dot(np.array([float(v) for v in ds.ImagePositionPatient]), normal))


def name_key(path):
    digits = re.findall(r"\d+", path.name)
    return (0, int(digits[-1]), path.name) if digits else (1, 0, path.name)


def stored_values(path):
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        arr = pixel_array(ds, decoding_plugin="pylibjpeg")
    else:
        arr = pixel_array(ds)
    assert arr.ndim == 2, (path, arr.shape)
    hu = arr.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.clip(np.round(hu + 1024.0), 0, 65535).astype(np.uint16)


def dark_count(path):
    img = stored_values(path)
    return int(np.count_nonzero(img[240:340, 120:370] < 300))


def select(root):
    root = Path(root)
    by_uid = {}
    for path, ds in dicom_files(root):
        if is_candidate(ds):
            by_uid.setdefault(str(ds.SeriesInstanceUID), []).append((along_normal(ds), path))
    out = []
    for uid in sorted(by_uid):
        members = sorted(by_uid[uid], key=lambda m: (-m[0], name_key(m[1])))
        files = [p for _, p in members]
        counts = [dark_count(p) for p in files]
        spread = max(counts) - min(counts)
        out.append(
            {
                "id": uid,
                "slices": [
                    {"file": p.relative_to(root).as_posix(), "dark_pixels": c, "selected": 3 * c > 2 * spread}
                    for p, c in zip(files, counts)
                ],
                "threshold": spread / 1.5,
            }
        )
    return {"series": out}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: dicom_select_ref.py DIR")
    require_libjpeg()
    print(json.dumps(select(sys.argv[1])))
