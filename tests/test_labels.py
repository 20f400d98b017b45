"""Label conventions, regions and convention detection (braintumor.labels)."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor import labels as L
from braintumor.errors import InputError


def _internal(seed: int = 0, shape: tuple[int, ...] = (9, 8, 7)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)


# value meanings per convention, written out by hand (not read from the module)
MEANING = {
    "brats2021": {0: "bg", 1: "ncr", 2: "ed", 4: "et"},
    "brats2023": {0: "bg", 1: "ncr", 2: "ed", 3: "et"},
    "msd": {0: "bg", 1: "ed", 2: "ncr", 3: "et"},
}
INTERNAL = {"bg": 0, "ncr": L.NCR, "ed": L.ED, "et": L.ET}


def test_internal_values_are_brats2023() -> None:
    assert (L.BACKGROUND, L.NCR, L.ED, L.ET) == (0, 1, 2, 3)


@pytest.mark.parametrize("conv", sorted(MEANING))
def test_to_internal_maps_every_value_by_meaning(conv: str) -> None:
    values = np.array(sorted(MEANING[conv]), dtype=np.uint8)
    got = L.to_internal(values, conv)
    want = [INTERNAL[MEANING[conv][int(v)]] for v in values]
    assert got.tolist() == want
    assert got.dtype == np.uint8


@pytest.mark.parametrize("conv", sorted(MEANING))
def test_round_trip_both_ways(conv: str) -> None:
    lab = _internal(1)
    ext = L.from_internal(lab, conv)
    assert set(np.unique(ext).tolist()) <= set(MEANING[conv])
    np.testing.assert_array_equal(L.to_internal(ext, conv), lab)


def test_brats2021_enhancing_is_four_and_msd_swaps_core_and_edema() -> None:
    lab = np.array([0, L.NCR, L.ED, L.ET], dtype=np.uint8)
    assert L.from_internal(lab, "brats2021").tolist() == [0, 1, 2, 4]
    assert L.from_internal(lab, "brats2023").tolist() == [0, 1, 2, 3]
    assert L.from_internal(lab, "msd").tolist() == [0, 2, 1, 3]
    assert L.convert(np.array([4, 1, 2]), "brats2021", "msd").tolist() == [3, 2, 1]


@pytest.mark.parametrize("conv,bad", [("brats2021", 3), ("brats2023", 4), ("msd", 4),
                                      ("brats2021", 7), ("brats2023", 255)])
def test_value_outside_convention_is_one_sentence(conv: str, bad: int) -> None:
    lab = np.array([0, 1, bad], dtype=np.uint8)
    with pytest.raises(InputError) as err:
        L.to_internal(lab, conv, what="label map x_seg.nii.gz")
    msg = str(err.value)
    assert str(bad) in msg and "x_seg.nii.gz" in msg
    assert msg.endswith(".") and "\n" not in msg


def test_non_integer_and_unknown_convention_refused() -> None:
    with pytest.raises(InputError):
        L.to_internal(np.array([0.0, 1.5]), "brats2023")
    with pytest.raises(InputError, match="Unknown label convention"):
        L.to_internal(np.zeros(3, np.uint8), "brats2019")
    with pytest.raises(InputError):
        L.from_internal(np.array([0, 4], np.uint8), "brats2021")  # 4 is no internal value


def test_check_internal_refuses_fractions_and_nan_but_takes_whole_floats() -> None:
    """A map of 2.55 or 2.7 is no label map: read as integers it would lose its ET or
    turn it into edema, so it is refused in one sentence, as is a NaN."""
    y = np.zeros((6, 6, 6))
    y[2:4, 2:4, 2:4] = 3
    L.check_internal(y, "map", "f takes")  # whole numbers stored as floats are fine
    L.check_internal(y.astype(bool), "map", "f takes")
    for bad, shown in ((y * 0.85, "2.55"), (y * 0.9, "2.7"), (y * 0.5, "1.5")):
        with pytest.raises(InputError, match=f"holds {shown}, not a whole number") as err:
            L.check_internal(bad, "map", "f takes")
        assert str(err.value).endswith(".") and str(err.value).count(".") == 2  # "0-3 (ET = 3)."
    nan = np.where(y > 0, y, np.nan)
    with pytest.raises(InputError, match="The map holds NaN; f takes internal labels"):
        L.check_internal(nan, "map", "f takes")
    with pytest.raises(InputError, match="holds label 4;"):
        L.check_internal(y + 1.0, "map", "f takes")
    with pytest.raises(InputError, match="holds label inf;"):
        L.check_internal(np.where(y > 0, np.inf, 0), "map", "f takes")


@pytest.mark.parametrize("name,conv", [
    ("BraTS-GLI-00000-000-seg.nii.gz", "brats2023"),
    ("BraTS-GLI-00000-000-seg.nii", "brats2023"),
    ("Brats18_2013_2_1_seg.nii.gz", "brats2021"),
    # a case named for its time point or sequence: no hint from the name
    ("pat01_t1.nii.gz", None),
    ("pat01-t2w.nii.gz", None),
    ("BraTS2021_00000_flair.nii", None),
    ("BRATS_001.nii.gz", None),
    ("case_seg.png", None),
])
def test_convention_from_name(name: str, conv: str | None) -> None:
    assert L.convention_from_name(name) == conv


def test_detect_convention_checks_values_against_the_name() -> None:
    assert L.detect_convention(np.array([0, 1, 2, 4])) == "brats2021"
    assert L.detect_convention(np.array([0, 1, 3])) == "brats2023"
    assert L.detect_convention(np.array([0, 2])) == "brats2021"  # ambiguous -> 2021 set
    assert L.detect_convention(np.array([0, 1, 3]), hint="msd") == "msd"
    with pytest.raises(InputError, match="brats2023"):
        L.detect_convention(np.array([0, 1, 4]), hint="brats2023", what="label map a-seg.nii")
    with pytest.raises(InputError, match="fit no known convention"):
        L.detect_convention(np.array([0, 3, 4]))
    with pytest.raises(InputError):
        L.detect_convention(np.array([0, 5]))


def test_region_masks_follow_brats_definitions() -> None:
    lab = np.array([0, L.NCR, L.ED, L.ET], dtype=np.uint8)
    m = L.region_masks(lab)
    assert m["WT"].tolist() == [False, True, True, True]
    assert m["TC"].tolist() == [False, True, False, True]
    assert m["ET"].tolist() == [False, False, False, True]


def test_regions_channels_round_trip_and_nesting() -> None:
    lab = _internal(2)
    ch = L.regions_to_channels(lab)
    assert ch.shape == (3, *lab.shape) and ch.dtype == np.uint8
    np.testing.assert_array_equal(L.channels_to_labels(ch), lab)
    # a voxel marked ET only still counts as tumour core and whole tumour
    only_et = np.zeros((3, 2), bool)
    only_et[2, 0] = True
    only_tc = np.zeros((3, 2), bool)
    only_tc[1, 1] = True
    assert L.channels_to_labels(only_et).tolist() == [L.ET, 0]
    assert L.channels_to_labels(only_tc).tolist() == [0, L.NCR]
    assert L.names([0, 1, 2, 3]) == ["background", "necrotic core", "edema", "enhancing tumour"]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_present_values_matches_unique(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for hi in (1, 5, 40, 300):
        lab = rng.choice([0, 1, hi], size=(20, 20, 5), p=[0.9, 0.05, 0.05]).astype(dtype)
        np.testing.assert_array_equal(L.present_values(lab), np.unique(lab))
    assert L.present_values(np.full((3, 3), -2, np.int16)).tolist() == [-2]
    assert L.present_values(np.array([], np.uint8)).size == 0
