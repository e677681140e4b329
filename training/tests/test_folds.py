"""Leave-patients-out folds: a shared patient named in data.exclude_patients is never trained
on, in either of its forms (TIFF series or the thin DICOM series of the same patient)."""
import numpy as np

from training import train


def cfg(use_ct16, exclude=()):
    return {"data": {"use_ct16": use_ct16, "exclude_patients": list(exclude)}}


NAMES = np.array([
    "mosmed/covid/a.jpg",
    "ct16/covid/ctmd_P001/SR_1/IM00001.tif",
    "ct16/normal/ctmd_normal001/SR_1/IM00001.tif",
    "dicom/normal/ctmd_normal001_thin/99C628-ASAD_3.dcm",
    "ct16/cap/ctmd_cap001/SR_1/IM00002.tif",
])
SRC = np.array(["mosmed", "ct16", "ct16", "dicom", "ct16"])


def test_patient_of_names_the_patient_of_tiff_and_thin_dicom_rows():
    assert [train.patient_of(n) for n in NAMES[1:]] == ["ctmd_P001", "ctmd_normal001", "ctmd_normal001", "ctmd_cap001"]


def test_an_excluded_patient_is_not_trained_on_in_any_of_its_series():
    m = train.trained_patient_mask(cfg(True, ["ctmd_normal001"]), SRC, NAMES)
    assert m.tolist() == [False, True, False, False, True]


def test_without_use_ct16_no_patient_is_trained_on():
    assert not train.trained_patient_mask(cfg(False), SRC, NAMES).any()
