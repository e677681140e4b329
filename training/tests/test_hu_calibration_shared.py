"""The per-image HU calibration check on the shared real data (training/hu_calibration_check.py),
pinned to the committed report training/reports/hu_calibration.{md,json}: the figures must be
reproduced, and each source's status against the target (lung median within +-25 HU of the 16-bit
normal patient's) is asserted as measured -- the sources that miss it are strict xfails, so a
change that reaches the target (or loses it) has to update the report. About two minutes on
one core (every normal / non-COVID train8 slice, twice through the lung mask).

Skips, loudly, when the shared data are missing (../shared/data beside the repository, like
test_onnx_init.py, or /work/shared/data)."""
import json
import warnings
from pathlib import Path

import pytest

from training import hu_calibration_check as check

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = (ROOT.parent / "shared" / "data", Path("/work/shared/data"))
DATA = next((p for p in CANDIDATES if (p / "train8" / "labels.csv").exists()), None)
REPORT = ROOT / "training" / "reports" / "hu_calibration.json"
MISSING = ("SHARED DATA MISSING: neither of " + ", ".join(map(str, CANDIDATES)) + " holds train8/labels.csv; "
           "the per-image HU calibration check on real data (training/hu_calibration_check.py) DID NOT RUN")
if DATA is None:
    warnings.warn(MISSING)
pytestmark = pytest.mark.skipif(DATA is None, reason=MISSING)

# Measured (training/reports/hu_calibration.md): per-image medians minus the reference -836 HU.
MISSES = {"mosmed": "-874 HU, 38 below the reference", "sarscov2": "-879 HU, 43 below the reference"}


@pytest.fixture(scope="module")
def measured():
    return check.measure(DATA, log=lambda s: None, with_round_trip=False)


@pytest.fixture(scope="module")
def recorded():
    return json.loads(REPORT.read_text())


def test_reference_is_reproduced(measured, recorded):
    assert measured["reference"] == recorded["reference"]


@pytest.mark.parametrize("source", check.SOURCES)
def test_report_figures_are_reproduced(measured, recorded, source):
    got, want = measured["sources"][source], recorded["sources"][source]
    for key in ("slices", "calibrated", "excluded", "after", "after_lung_verdicts", "before", "before_same_slices",
                "after_minus_reference", "within_target"):
        assert got[key] == want[key], (source, key, got[key], want[key])


@pytest.mark.parametrize("source", [
    pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=f"target not reached: {MISSES[s]}")) if s in MISSES else s
    for s in check.SOURCES])
def test_lung_median_within_target_of_the_16bit_normal_patient(measured, source):
    s = measured["sources"][source]
    ref = measured["reference"][check.REFERENCE]["median"]
    assert abs(s["after"]["median"] - ref) <= check.TARGET_HU, (source, s["after"], ref)


@pytest.mark.parametrize("source", ["mosmed", "sarscov2"])
def test_calibration_moves_the_lungs_towards_the_reference(measured, source):
    """Where one window per source put the lungs at or near air (sarscov2 -979 HU), the per-image fit
    brings them to lung density; on the same slices, the gap to the reference shrinks."""
    s = measured["sources"][source]
    ref = measured["reference"][check.REFERENCE]["median"]
    assert abs(s["after"]["median"] - ref) < abs(s["before_same_slices"]["median"] - ref)
    assert s["after"]["q75"] - s["after"]["q25"] <= s["before_same_slices"]["q75"] - s["before_same_slices"]["q25"]


def test_every_slice_is_kept_or_excluded_with_a_known_reason(measured):
    from training import hu_calibration
    for src, s in measured["sources"].items():
        assert s["calibrated"] + sum(s["excluded"].values()) == s["slices"], src
        assert set(s["excluded"]) <= set(hu_calibration.REASONS), src
