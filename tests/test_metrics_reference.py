"""braintumor.metrics against independent implementations.

References:

* the official ``brats-evaluation`` package (``panoptica`` with its bundled glioma
  config; it expects BraTS 2023 labels, so ET 4 -> 3 first): global Dice, global HD95
  (its "voxel" definition), lesion counts and lesion-wise means;
* DeepMind's ``surface-distance`` (what the BraTS 2023 challenge code calls): HD95 by
  the "surface" definition, our default, and Dice;
* MONAI: Dice, sensitivity, specificity, HD95 by its per-direction ("voxel-directed")
  definition.

Agreement: 1e-6 for Dice / sensitivity / specificity, 0.01 mm for HD95. Where a
reference defines a case differently (empty masks, false positives in lesion-wise
means, merging nearby fragments), the test asserts the documented difference.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from braintumor import labels as L
from braintumor import metrics as M

REGIONS = {"WT": "wt", "TC": "tc", "ET": "et"}
SPACINGS = [(1.0, 1.0, 1.0), (0.9, 1.2, 2.0)]
DICE_TOL = 1e-6
HD_TOL = 0.01


# ----------------------------------------------------------------- test pairs


def blob_labels(shape=(44, 44, 36), seed: int = 0, second: bool = True) -> np.ndarray:
    """An irregular BraTS 2017-2021 label map (values 0, 1, 2, 4): edema around an
    enhancing rim around a necrotic core, plus an optional small second lesion."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape) * np.array([0.42, 0.5, 0.5])
    r = np.sqrt((((grid - centre[:, None, None, None]) / np.array([12, 10, 9])[:, None, None,
                                                                                None]) ** 2)
                .sum(0))
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    wobble /= np.abs(wobble).max()
    r = r * (1 + 0.35 * wobble)
    lab = np.zeros(shape, dtype=np.uint8)
    lab[r < 1.0] = 2
    lab[r < 0.6] = 4
    lab[r < 0.35] = 1
    if second:
        c2 = np.array(shape) * np.array([0.82, 0.3, 0.5])
        r2 = np.sqrt(((grid - c2[:, None, None, None]) ** 2).sum(0)) / 4.0
        lab[r2 < 1.0] = 2
        lab[r2 < 0.5] = 4
    return lab


def perturbations(ref: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Predictions (same convention as ``ref``) that a segmenter might make."""
    rng = np.random.default_rng(seed)
    out = {
        "shifted": np.roll(ref, (2, -1, 1), axis=(0, 1, 2)),
        "eroded": np.where(ndimage.binary_erosion(ref > 0, iterations=2), ref, 0),
        "dilated": ndimage.grey_dilation(ref, size=(3, 3, 3)),
        "et_dropped": np.where(ref == 4, 1, ref).astype(ref.dtype),
    }
    noisy = ref.copy()
    flip = (rng.random(ref.shape) < 0.04) & ndimage.binary_dilation(ref > 0, iterations=2)
    noisy[flip] = rng.choice(np.array([0, 1, 2, 4], dtype=ref.dtype), size=int(flip.sum()))
    noisy[2:5, 2:5, 2:5] = 4  # a false-positive blob far from the tumour
    out["noisy_fp"] = noisy
    out["empty"] = np.zeros_like(ref)
    return out


def synthetic_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    ref = blob_labels(seed=0)
    pairs = [(name, pred, ref) for name, pred in perturbations(ref).items()]
    pairs.append(("empty_ref", blob_labels(seed=1), np.zeros_like(ref)))
    pairs.append(("both_empty", np.zeros_like(ref), np.zeros_like(ref)))
    return pairs


PAIRS = synthetic_pairs()
PAIR_IDS = [p[0] for p in PAIRS]


def masks(lab2021: np.ndarray) -> dict[str, np.ndarray]:
    return L.region_masks(L.to_internal(lab2021, "brats2021"))


# ------------------------------------------------------------------ references


@pytest.fixture(autouse=True)
def _numpy2_inf(monkeypatch):
    # surface-distance 0.1 predates NumPy 2 and spells np.Inf / np.NaN on empty masks
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)


@pytest.fixture(scope="module")
def panoptica_eval():
    pytest.importorskip("brats_evaluation")
    from brats_evaluation import config_path
    from panoptica import Panoptica_Evaluator

    return Panoptica_Evaluator.load_from_config(str(config_path("gli")))


def official(evaluator, pred2021: np.ndarray, ref2021: np.ndarray, spacing) -> dict:
    """The official package's per-region results (2023 labels, as it expects)."""
    pred = L.convert(pred2021, "brats2021", "brats2023")
    ref = L.convert(ref2021, "brats2021", "brats2023")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluator.evaluate(pred, ref, voxelspacing=tuple(spacing), verbose=False,
                                 skip_groups=["snfh", "netc", "rc"])
    return {ours: res[theirs].to_dict(True) for ours, theirs in REGIONS.items()}


def check_against_official(off: dict, pred_m: dict, ref_m: dict, spacing) -> None:
    for region in REGIONS:
        p, r = pred_m[region], ref_m[region]
        o = off[region]
        # documented difference: the official package's *global* HD95 ignores the voxel
        # spacing (panoptica calls the metric without it) and so is in voxels, not mm;
        # on BraTS data (1 mm isotropic) the two are the same. Compare at unit spacing.
        d, h = M.dice(p, r), M.hd95(p, r, (1.0, 1.0, 1.0), method="voxel")
        if not p.any() and not r.any():
            # documented difference: the official package gives NaN for empty-empty;
            # we score a correct "nothing there" as perfect (Dice 1, HD95 0)
            assert math.isnan(o["global_bin_dsc"]) and math.isnan(o["global_bin_hd95"])
            assert (d, h) == (1.0, 0.0)
        elif not p.any() or not r.any():
            # documented difference: it gives HD95 = inf (its report writes 373); we 374
            assert o["global_bin_dsc"] == 0.0 == d
            assert math.isinf(o["global_bin_hd95"]) and h == 374.0
        else:
            assert d == pytest.approx(o["global_bin_dsc"], abs=DICE_TOL), region
            assert h == pytest.approx(o["global_bin_hd95"], abs=HD_TOL), region


def check_against_surface_distance(pred_m: dict, ref_m: dict, spacing) -> None:
    sd = pytest.importorskip("surface_distance")
    for region in REGIONS:
        p, r = pred_m[region], ref_m[region]
        theirs = sd.compute_robust_hausdorff(sd.compute_surface_distances(r, p, spacing), 95)
        ours = M.hd95(p, r, spacing)  # default: the "surface" definition
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            their_dice = sd.compute_dice_coefficient(r, p)
        if p.any() and r.any():
            assert ours == pytest.approx(theirs, abs=HD_TOL), region
            assert M.dice(p, r) == pytest.approx(their_dice, abs=DICE_TOL), region
        elif p.any() or r.any():
            # documented: surface-distance gives inf, which BraTS 2023 replaces by 374
            assert math.isinf(theirs) and ours == 374.0
        else:
            # documented: surface-distance gives inf and NaN; BraTS 2023 special-cases
            # empty-empty to HD95 0 and Dice 1, as we do
            assert math.isinf(theirs) and math.isnan(their_dice)
            assert ours == 0.0 and M.dice(p, r) == 1.0


def check_against_monai(pred_m: dict, ref_m: dict, spacing) -> None:
    pytest.importorskip("monai")
    import torch
    from monai.metrics import (
        compute_confusion_matrix_metric,
        compute_dice,
        compute_hausdorff_distance,
        get_confusion_matrix,
    )

    for region in REGIONS:
        p, r = pred_m[region], ref_m[region]
        if not (p.any() and r.any()):
            continue  # MONAI returns NaN / inf with warnings here; see the other checks
        yp = torch.from_numpy(p[None, None].astype(np.float32))
        yt = torch.from_numpy(r[None, None].astype(np.float32))
        dice = float(compute_dice(yp, yt, include_background=True)[0, 0])
        cm = get_confusion_matrix(yp, yt, include_background=True)
        sens = float(compute_confusion_matrix_metric("sensitivity", cm)[0, 0])
        spec = float(compute_confusion_matrix_metric("specificity", cm)[0, 0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = float(compute_hausdorff_distance(yp, yt, include_background=True,
                                                  percentile=95, spacing=list(spacing))[0, 0])
        assert M.dice(p, r) == pytest.approx(dice, abs=DICE_TOL), region
        assert M.sensitivity(p, r) == pytest.approx(sens, abs=DICE_TOL), region
        assert M.specificity(p, r) == pytest.approx(spec, abs=DICE_TOL), region
        ours = M.hd95(p, r, spacing, method="voxel-directed")
        assert ours == pytest.approx(hd, abs=HD_TOL), region


# ---------------------------------------------------------------------- tests


def test_surfel_table_equals_surface_distance_lookup():
    lt = pytest.importorskip("surface_distance.lookup_tables")
    for sp in [(1.0, 1.0, 1.0), (0.7, 1.3, 2.5), (1.0, 1.0, 3.0)]:
        assert np.allclose(M.surfel_area_table(sp),
                           lt.create_table_neighbour_code_to_surface_area(sp), atol=1e-12)
    assert np.allclose(M.surfel_area_table((0.8, 1.7)),
                       lt.create_table_neighbour_code_to_contour_length((0.8, 1.7)))


@pytest.mark.parametrize("spacing", SPACINGS, ids=["iso", "aniso"])
@pytest.mark.parametrize("name,pred,ref", PAIRS, ids=PAIR_IDS)
def test_against_official_package(panoptica_eval, name, pred, ref, spacing):
    check_against_official(official(panoptica_eval, pred, ref, spacing), masks(pred),
                           masks(ref), spacing)


@pytest.mark.parametrize("spacing", SPACINGS, ids=["iso", "aniso"])
@pytest.mark.parametrize("name,pred,ref", PAIRS, ids=PAIR_IDS)
def test_against_surface_distance(name, pred, ref, spacing):
    check_against_surface_distance(masks(pred), masks(ref), spacing)


@pytest.mark.parametrize("spacing", SPACINGS, ids=["iso", "aniso"])
@pytest.mark.parametrize("name,pred,ref", PAIRS, ids=PAIR_IDS)
def test_against_monai(name, pred, ref, spacing):
    check_against_monai(masks(pred), masks(ref), spacing)


def test_hd95_definitions_differ_as_documented():
    """The default (surface) HD95 is not the official package's voxel HD95: corner-grid
    surfels weighted by area versus border-voxel centres pooled over both directions."""
    diffs = []
    for _, pred, ref in PAIRS:
        pm, rm = masks(pred), masks(ref)
        for region in REGIONS:
            if pm[region].any() and rm[region].any():
                diffs.append(abs(M.hd95(pm[region], rm[region], method="surface")
                                 - M.hd95(pm[region], rm[region], method="voxel")))
    assert max(diffs) > 0.1  # really different definitions...
    assert max(diffs) < 3.0  # ...of the same quantity (well under a few voxels here)


def official_et(evaluator, pred2023: np.ndarray, ref2023: np.ndarray, spacing) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluator.evaluate(pred2023, ref2023, voxelspacing=spacing, verbose=False,
                                 skip_groups=["snfh", "netc", "rc", "tc", "wt"])
    return res["et"].to_dict(True)


def lesion_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two separate reference lesions (2023 labels, single region) and a prediction that
    finds both imperfectly and adds one false positive."""
    shape = (48, 32, 32)
    ref = np.zeros(shape, dtype=np.uint8)
    ref[6:16, 8:18, 8:18] = 3
    ref[28:36, 10:20, 12:20] = 3
    pred = np.zeros_like(ref)
    pred[7:17, 8:18, 9:19] = 3  # lesion 1, shifted
    pred[29:35, 11:19, 13:19] = 3  # lesion 2, eroded
    pred[42:45, 26:29, 26:29] = 3  # a false positive far away
    return pred, ref


def test_lesion_wise_against_official_package(panoptica_eval):
    """Where the definitions coincide (one-to-one matches) the per-lesion numbers agree;
    they differ by definition in how false positives and misses enter the mean: the
    official package's lesion-wise mean (panoptica's sq_dsc / sq_hd95) averages the
    matched lesions only, BraTS 2023 adds every false positive and miss as 0 / 374."""
    pred, ref = lesion_pair()
    spacing = (1.0, 1.0, 1.5)
    o = official_et(panoptica_eval, pred, ref, spacing)
    ls = M.lesion_wise(pred == 3, ref == 3, spacing, hd95_method="voxel")
    assert (ls.tp, ls.fp, ls.fn) == (o["tp"], o["fp"], o["fn"]) == (2, 1, 0)
    n = ls.tp + ls.fp + ls.fn
    assert ls.dice == pytest.approx(o["sq_dsc"] * ls.tp / n, abs=DICE_TOL)
    assert ls.hd95 == pytest.approx((o["sq_hd95"] * ls.tp + 374.0 * (ls.fp + ls.fn)) / n,
                                    abs=HD_TOL)
    # a miss: drop the second predicted lesion
    pred2 = pred.copy()
    pred2[25:40] = 0
    o = official_et(panoptica_eval, pred2, ref, spacing)
    ls = M.lesion_wise(pred2 == 3, ref == 3, spacing, hd95_method="voxel")
    assert (ls.tp, ls.fp, ls.fn) == (o["tp"], o["fp"], o["fn"]) == (1, 1, 1)
    assert ls.dice == pytest.approx(o["sq_dsc"] * 1 / 3, abs=DICE_TOL)


def test_lesion_wise_merging_differs_from_official_package(panoptica_eval):
    """BraTS 2023 merges reference fragments within the dilation reach into one lesion;
    the official package's one-to-one matching leaves one fragment unmatched."""
    ref = np.zeros((40, 24, 24), dtype=np.uint8)
    ref[5:12, 8:16, 8:16] = 3
    ref[16:23, 8:16, 8:16] = 3  # 4 voxels away: merged by the 3-voxel dilation
    pred = np.zeros_like(ref)
    pred[5:23, 8:16, 8:16] = 3  # one component bridging both fragments
    o = official_et(panoptica_eval, pred, ref, (1.0, 1.0, 1.0))
    ls = M.lesion_wise(pred == 3, ref == 3)
    assert (o["tp"], o["fn"]) == (1, 1)
    assert (ls.tp, ls.fn, ls.fp) == (1, 0, 0)
    assert ls.dice == pytest.approx(M.dice(pred == 3, ref == 3))


# ------------------------------------------------------------------- real data


def _real_cases(brats_dir: Path, n: int = 2) -> list[Path]:
    segs = sorted(brats_dir.glob("*/*_seg.nii.gz"))
    if not segs:
        pytest.skip("no BraTS label maps in the shared data")
    return segs[:n]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_cases_against_references(brats_dir, panoptica_eval):
    from braintumor.io import load_label_nifti

    # two cases; three perturbations on the first, one on the second (time)
    plan = [("shifted", "eroded", "et_dropped"), ("noisy_fp",)]
    for seg, names in zip(_real_cases(brats_dir), plan, strict=False):
        vol = load_label_nifti(seg)
        ref = vol.data
        spacing = vol.spacing
        # the references are slow on the full 240x240x155 grid; crop to the tumour with a
        # margin (no metric here depends on voxels far from both masks)
        box = M.bounding_box(ref > 0, margin=12)
        assert box is not None
        ref = ref[box]
        perts = perturbations(ref, seed=3)
        for name in names:
            pred = perts[name]
            pm, rm = masks(pred), masks(ref)
            check_against_official(official(panoptica_eval, pred, ref, spacing), pm, rm,
                                   spacing)
            check_against_surface_distance(pm, rm, spacing)
            check_against_monai(pm, rm, spacing)
