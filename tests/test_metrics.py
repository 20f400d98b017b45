"""Unit tests of braintumor.metrics on small hand-checked arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest

from braintumor import metrics as M
from braintumor.errors import InputError

METHODS = M.HD95_METHODS


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


# ------------------------------------------------------------- overlap metrics


def test_dice_sensitivity_specificity_hand_checked():
    ref = box((10, 10, 10), (2, 2, 2), (6, 6, 6))  # 64 voxels
    pred = box((10, 10, 10), (3, 2, 2), (7, 6, 6))  # shifted by one: 48 overlap
    assert M.confusion(pred, ref) == (48, 16, 16, 1000 - 80)
    assert M.dice(pred, ref) == pytest.approx(96 / 128)
    assert M.sensitivity(pred, ref) == pytest.approx(48 / 64)
    assert M.specificity(pred, ref) == pytest.approx(920 / 936)


def test_dice_is_symmetric_and_one_on_identity():
    rng = np.random.default_rng(1)
    a = rng.random((8, 9, 7)) > 0.6
    b = rng.random((8, 9, 7)) > 0.5
    assert M.dice(a, b) == pytest.approx(M.dice(b, a))
    assert M.dice(a, a) == 1.0
    assert M.sensitivity(a, a) == 1.0 and M.specificity(a, a) == 1.0


def test_empty_rules():
    empty = np.zeros((6, 6, 6), dtype=bool)
    full = box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    # both empty: perfect
    assert M.dice(empty, empty) == 1.0
    assert M.sensitivity(empty, empty) == 1.0
    for m in METHODS:
        assert M.hd95(empty, empty, method=m) == 0.0
    # one side empty: Dice 0, HD95 374 (either side)
    assert M.dice(full, empty) == 0.0 and M.dice(empty, full) == 0.0
    assert M.sensitivity(full, empty) == 0.0  # false positives on an empty reference
    assert M.sensitivity(empty, full) == 0.0  # everything missed
    for m in METHODS:
        assert M.hd95(full, empty, method=m) == M.EMPTY_HD95 == 374.0
        assert M.hd95(empty, full, method=m) == 374.0
    # a reference filling the array has no negatives: specificity 1 by rule
    whole = np.ones((3, 3, 3), dtype=bool)
    assert M.specificity(whole, whole) == 1.0


def test_shape_mismatch_is_one_sentence():
    with pytest.raises(InputError, match=r"shape \(4, 4, 4\) differs from the reference's"):
        M.dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(InputError):
        M.score_case(np.zeros((4, 4, 4), np.uint8), np.zeros((5, 4, 4), np.uint8))
    with pytest.raises(InputError, match="HD95 method"):
        M.hd95(np.ones((2, 2)), np.ones((2, 2)), method="nope")


def test_masks_of_other_dimensions_are_one_sentence():
    """A one-hot (3, X, Y, Z) map or a 1D/4D mask raised 'too many values to unpack'
    deep in the surface code; Dice of any shape still works."""
    y = np.zeros((6, 6, 6), np.uint8)
    y[2:4, 2:4, 2:4] = 3
    onehot = np.stack([y == 1, y == 2, y == 3]).astype(np.uint8)
    with pytest.raises(InputError, match=r"label map must be 3D \(X, Y, Z\) or 2D \(H, W\), "
                       r"not of shape \(3, 6, 6, 6\): a one-hot"):
        M.score_case(onehot, onehot)
    for m in (np.ones(5, bool), np.ones((2, 3, 3, 3), bool)):
        for f in (M.hd95, M.score_masks, M.lesion_wise, M.surface_distances):
            shape = re.escape(str(m.shape))
            with pytest.raises(InputError, match=f"mask must be 3D .* shape {shape}"):
                f(m, m)
        with pytest.raises(InputError, match="mask must be 3D"):
            M.surface_of(m)
        assert M.dice(m, m) == 1.0


@pytest.mark.parametrize("spacing", [(1, 1, 0), (1, -1, 1), -1.0, 0.0, (1, 1, float("nan")),
                                     float("inf"), (1, "a", 1)])
def test_spacing_must_be_finite_sizes_above_zero(spacing):
    """A zero size gave HD95 0.0 (a perfect match), a negative one negative volumes and
    a NaN scipy's own error."""
    a = np.zeros((5, 5, 8), bool)
    b = a.copy()
    a[2, 2, 1] = True
    b[2, 2, 4] = True
    y = np.zeros((6, 6, 6), np.uint8)
    y[2:4, 2:4, 2:4] = 3
    for f in (lambda: M.hd95(a, b, spacing), lambda: M.score_masks(a, b, spacing),
              lambda: M.score_case(y, y, spacing), lambda: M.lesion_wise(a, b, spacing)):
        with pytest.raises(InputError, match="Voxel spacing .* (must hold finite sizes above "
                           "0 mm|must be sizes in mm)"):
            f()
    assert M.hd95(a, b, (1, 1, 2.5)) == 7.5 and M.hd95(a, b, 2) == 6.0


# ------------------------------------------------------------------------ HD95


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axis,spacing", [(0, (1.0, 1.0, 1.0)), (2, (0.9, 1.1, 2.5)),
                                          (1, (1.0, 3.0, 1.0))])
def test_hd95_of_a_translated_box_is_the_shift_in_mm(method, axis, spacing):
    # a third of the surface moves by exactly `shift` voxels and nothing moves further,
    # so every definition gives shift * spacing[axis]
    shift = 3
    ref = box((24, 24, 24), (5, 5, 5), (15, 15, 15))
    pred = np.roll(ref, shift, axis=axis)
    assert M.hd95(pred, ref, spacing, method) == pytest.approx(shift * spacing[axis])
    assert M.hd95(ref, pred, spacing, method) == pytest.approx(shift * spacing[axis])


@pytest.mark.parametrize("method", METHODS)
def test_hd95_single_voxels_anisotropic(method):
    # voxels 3 slices apart on a 2.5 mm axis: far corners / centres are 7.5 mm apart
    a = np.zeros((5, 5, 9), dtype=bool)
    b = a.copy()
    a[2, 2, 2] = True
    b[2, 2, 5] = True
    assert M.hd95(a, b, (1.0, 1.0, 2.5), method) == pytest.approx(7.5)


def test_hd95_identical_masks_is_zero_and_within_array_edges():
    m = box((12, 12, 12), (0, 0, 0), (7, 12, 5))  # touches the array's faces
    for method in METHODS:
        assert M.hd95(m, m, (1.0, 2.0, 3.0), method) == 0.0


def test_hd95_2d():
    ref = box((20, 20), (4, 4), (12, 12))
    pred = np.roll(ref, 2, axis=1)
    for method in METHODS:
        assert M.hd95(pred, ref, (0.5, 0.5), method) == pytest.approx(1.0)


def test_surfel_area_table_hand_values():
    t = M.surfel_area_table((1.0, 1.0, 1.0))
    # one corner inside: one triangle of side sqrt(2)/2 -> sqrt(3)/8
    assert t[1] == pytest.approx(np.sqrt(3) / 8)
    # four corners on a face: a unit square
    assert t[0b00001111] == pytest.approx(1.0)
    assert t[0] == 0.0 and t[255] == 0.0
    # complement symmetry
    assert np.allclose(t, t[::-1])
    # a square face of voxels scales with the two in-plane spacings
    assert M.surfel_area_table((2.0, 3.0, 5.0))[0b00001111] == pytest.approx(15.0)
    # 2D: one corner -> half a diagonal; one row -> the spacing across it
    t2 = M.surfel_area_table((1.0, 2.0))
    assert t2[1] == pytest.approx(0.5 * np.hypot(1, 2))
    assert t2[0b0011] == pytest.approx(2.0)


# ----------------------------------------------------------------- lesion-wise


def two_cubes(gap: int, shape=(40, 20, 20)) -> tuple[np.ndarray, np.ndarray]:
    """Two 5^3 reference cubes ``gap`` voxels apart along x, and the first alone."""
    ref = box(shape, (5, 8, 8), (10, 13, 13))
    first = ref.copy()
    ref |= box(shape, (10 + gap, 8, 8), (15 + gap, 13, 13))
    return ref, first


def test_lesion_wise_miss_counts_zero_and_374():
    ref, first = two_cubes(gap=12)
    ls = M.lesion_wise(first, ref)
    assert (ls.tp, ls.fn, ls.fp) == (1, 1, 0)
    assert ls.dice == pytest.approx((1.0 + 0.0) / 2)
    assert ls.hd95 == pytest.approx((0.0 + 374.0) / 2)


def test_lesion_wise_false_positive_counts_zero_and_374():
    ref, first = two_cubes(gap=12)
    pred = ref | box(ref.shape, (34, 2, 2), (37, 5, 5))  # far from both lesions
    ls = M.lesion_wise(pred, ref)
    assert (ls.tp, ls.fn, ls.fp) == (2, 0, 1)
    assert ls.dice == pytest.approx(2 / 3)
    assert ls.hd95 == pytest.approx(374 / 3)


@pytest.mark.parametrize("gap,n_lesions", [(6, 1), (7, 2)])
def test_lesion_wise_dilation_merges_fragments_within_reach(gap, n_lesions):
    # 3 dilations on each side close a gap of up to 6 voxels (26-connected after)
    ref, first = two_cubes(gap=gap)
    ls = M.lesion_wise(first, ref)
    assert len(ls.lesions) == n_lesions
    if n_lesions == 1:  # one lesion of 250 voxels, found with 125 of them
        assert ls.dice == pytest.approx(2 * 125 / (250 + 125))
        assert (ls.tp, ls.fn) == (1, 0)
    else:
        assert ls.dice == pytest.approx(0.5)
    # without dilation the fragments are always two lesions
    assert len(M.lesion_wise(first, ref, dilation=0).lesions) == 2


def test_lesion_wise_prediction_near_a_lesion_is_a_match_not_a_false_positive():
    ref = box((30, 30, 30), (10, 10, 10), (16, 16, 16))
    pred = box((30, 30, 30), (18, 10, 10), (22, 16, 16))  # 2 voxels off, no overlap
    ls = M.lesion_wise(pred, ref)
    assert (ls.tp, ls.fp, ls.fn) == (1, 0, 0)
    assert ls.dice == 0.0
    assert ls.hd95 == pytest.approx(M.hd95(pred, ref))
    far = np.roll(pred, 4, axis=0)  # 6 voxels off: outside the 3-voxel catchment
    ls = M.lesion_wise(far, ref)
    assert (ls.tp, ls.fp, ls.fn) == (0, 1, 1)


def test_lesion_wise_small_lesions_are_left_out_in_mm3():
    ref = box((30, 30, 30), (5, 5, 5), (11, 11, 11))  # 216 voxels
    small = box((30, 30, 30), (20, 20, 20), (23, 23, 23))  # 27 voxels
    pred = ref.copy()  # finds the big lesion, misses the small one
    ls = M.lesion_wise(pred, ref | small)
    assert (ls.tp, ls.fn, ls.fp) == (1, 0, 0) and ls.dice == 1.0
    # at 2 mm voxels the small lesion is 216 mm^3: it counts, and is missed
    ls = M.lesion_wise(pred, ref | small, spacing=(2.0, 2.0, 2.0))
    assert (ls.tp, ls.fn) == (1, 1) and ls.dice == pytest.approx(0.5)
    # only small lesions, all missed: nothing left to average -> perfect by rule
    ls = M.lesion_wise(np.zeros_like(small), small)
    assert (ls.dice, ls.hd95) == (1.0, 0.0)


def test_lesion_wise_26_connectivity():
    pred = np.zeros((12, 12, 12), dtype=bool)
    pred[2:4, 2:4, 2:4] = True
    pred[4:6, 4:6, 4:6] = True  # touches the first at one corner only
    ls = M.lesion_wise(pred, np.zeros_like(pred))
    assert ls.fp == 1  # one component, not two
    assert (ls.dice, ls.hd95) == (0.0, 374.0)


def test_lesion_wise_empty_rules():
    e = np.zeros((8, 8, 8), dtype=bool)
    ls = M.lesion_wise(e, e)
    assert (ls.dice, ls.hd95, ls.tp, ls.fp, ls.fn) == (1.0, 0.0, 0, 0, 0)
    big = box((8, 8, 8), (1, 1, 1), (7, 7, 7))
    ls = M.lesion_wise(e, big)
    assert (ls.dice, ls.hd95, ls.fn) == (0.0, 374.0, 1)


# ------------------------------------------------------------------ score_case


def small_labels(shift: int = 0) -> np.ndarray:
    lab = np.zeros((32, 32, 32), dtype=np.uint8)
    lab[8:24, 8:24, 8:24] = 2  # edema
    lab[11:21, 11:21, 11:21] = 3  # enhancing rim
    lab[13:19, 13:19, 13:19] = 1  # necrotic core
    return np.roll(lab, shift, axis=0)


def test_score_case_regions_and_keys():
    ref = small_labels()
    pred = small_labels(shift=2)
    s = M.score_case(pred, ref, (1.0, 1.0, 1.0))
    assert list(s) == ["WT", "TC", "ET"]
    for region, scores in s.items():
        assert set(M.SCORE_KEYS) <= set(scores), region
    # WT is a 16^3 box moved by 2: Dice 14/16, HD95 2 mm
    assert s["WT"]["dice"] == pytest.approx(14 / 16)
    assert s["WT"]["hd95"] == pytest.approx(2.0)
    assert s["WT"]["ref_volume_ml"] == pytest.approx(16**3 / 1000)
    # one lesion per region, no false positive: lesion-wise equals global
    for r in ("WT", "TC"):
        assert s[r]["lesion_dice"] == pytest.approx(s[r]["dice"])
        assert s[r]["lesion_hd95"] == pytest.approx(s[r]["hd95"])
    # the crop inside score_case changes nothing: compare with whole-array masks
    from braintumor.labels import region_masks

    pm, rm = region_masks(pred), region_masks(ref)
    for r in ("WT", "TC", "ET"):
        full = M.score_masks(pm[r], rm[r], (1.0, 1.0, 1.0))
        for k in M.SCORE_KEYS:
            assert s[r][k] == pytest.approx(full[k]), (r, k)


def test_score_case_dropped_et_and_empty_case():
    ref = small_labels()
    pred = ref.copy()
    pred[pred == 3] = 1  # enhancing called necrotic: ET gone, TC intact
    s = M.score_case(pred, ref)
    assert s["TC"]["dice"] == 1.0 and s["WT"]["dice"] == 1.0
    assert s["ET"]["dice"] == 0.0 and s["ET"]["hd95"] == 374.0
    assert s["ET"]["lesion_dice"] == 0.0 and s["ET"]["lesion_fn"] == 1
    empty = np.zeros_like(ref)
    s = M.score_case(empty, empty)
    for r in ("WT", "TC", "ET"):
        assert s[r]["dice"] == 1.0 and s[r]["hd95"] == 0.0
        assert s[r]["lesion_dice"] == 1.0 and s[r]["lesion_hd95"] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_lesion_scores_equal_isolated_computations(method):
    """Per-lesion numbers come from subsets of the whole surfaces; they must equal the
    metrics of each lesion and its matched components computed on their own."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    field = ndimage.gaussian_filter(rng.standard_normal((40, 36, 30)), 2.5)
    ref = field > 0.08  # several irregular lesions
    pred = np.roll(ref, 1, axis=0) & (ndimage.gaussian_filter(
        rng.standard_normal(ref.shape), 2) > -0.3)
    spacing = (1.0, 1.2, 2.0)
    ls = M.lesion_wise(pred, ref, spacing, hd95_method=method)
    assert len(ls.lesions) >= 3
    dil = ndimage.binary_dilation(ref, ndimage.generate_binary_structure(3, 2), iterations=3)
    dil_cc, n = ndimage.label(dil, np.ones((3, 3, 3)))
    pred_cc, _ = ndimage.label(pred, np.ones((3, 3, 3)))
    for k in range(1, n + 1):
        gt_k = ref & (dil_cc == k)
        hits = np.setdiff1d(np.unique(pred_cc[dil_cc == k]), [0])
        pr_k = np.isin(pred_cc, hits) & (pred_cc > 0)
        les = ls.lesions[k - 1]
        assert les["volume_mm3"] == pytest.approx(gt_k.sum() * 2.4)
        assert les["dice"] == pytest.approx(M.dice(pr_k, gt_k))
        assert les["hd95"] == pytest.approx(M.hd95(pr_k, gt_k, spacing, method))


def test_score_case_refuses_brats_file_labels() -> None:
    """ET is 3 inside; a map still holding BraTS 2017-21's 4 would score its ET as
    nothing at all, so it is refused in one sentence."""
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[3:6, 3:6, 3:6] = 4
    with pytest.raises(InputError, match="holds label 4; score_case takes internal labels"):
        M.score_case(lab, lab)


def test_score_case_refuses_fractional_and_nan_labels() -> None:
    """A map of 2.55 (ET scaled by mistake) scored ET Dice 0 and a NaN raised numpy's own
    error; both are one sentence now."""
    y = np.zeros((6, 6, 6))
    y[2:4, 2:4, 2:4] = 3
    assert M.score_case(y, y.astype(np.uint8))["ET"]["dice"] == 1.0
    with pytest.raises(InputError, match="prediction holds 2.55, not a whole number"):
        M.score_case(y * 0.85, y)
    with pytest.raises(InputError, match="reference holds NaN"):
        M.score_case(y, np.where(y > 0, y, np.nan))


@pytest.mark.parametrize("method", M.HD95_METHODS)
def test_hd95_beyond_the_empty_penalty_is_not_capped(method):
    # two 3-voxel cubes 88 slices apart at 5 mm slices: 440 mm between them, as
    # surface-distance, MONAI and medpy all measure; 374 is only the empty-side penalty
    ref = np.zeros((8, 8, 100), bool)
    pred = ref.copy()
    ref[2:5, 2:5, 2:5] = True
    pred[2:5, 2:5, 90:93] = True
    assert M.hd95(pred, ref, (1.0, 1.0, 5.0), method=method) == pytest.approx(440.0)
    lab_p, lab_r = pred.astype(np.uint8) * 2, ref.astype(np.uint8) * 2
    wt = M.score_case(lab_p, lab_r, (1.0, 1.0, 5.0), hd95_method=method)["WT"]
    assert wt["hd95"] == pytest.approx(440.0)
    # the far prediction touches no dilated lesion: a miss plus a false positive
    assert (wt["lesion_fn"], wt["lesion_fp"], wt["lesion_hd95"]) == (1, 1, 374.0)
