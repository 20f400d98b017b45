"""The classical watershed and the CNN-guided hybrid on synthetic cases with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor.cases import case_from_arrays
from braintumor.errors import InputError
from braintumor.metrics import dice
from braintumor.phantom import make_case
from braintumor.segment import segment
from braintumor.watershed import (
    WatershedParams,
    from_work,
    grid_params,
    make_grid,
    params_from,
    robust_z,
    segment_hybrid,
    segment_watershed,
    to_work,
)

SHAPE = (64, 64, 64)


def synthetic_case(low_grade: bool = False, tumour: bool = True, seed: int = 0):
    """A 64^3 brain with a known tumour: edema ball (radius 14) around a core (radius 8)
    that is an enhancing rim around necrosis, or, low-grade, a dark non-enhancing core.
    Normal tissue is a smooth two-class texture with noise; intensities mimic the
    contrasts of T1, T1ce, T2, FLAIR (in units of the normal tissue's spread)."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:64, :64, :64].astype(np.float32)
    brain = (((g[0] - 32) / 28) ** 2 + ((g[1] - 32) / 29) ** 2 + ((g[2] - 32) / 26) ** 2) <= 1
    tissue = ndi.gaussian_filter(rng.normal(size=SHAPE), 3) > 0  # "grey" vs "white"
    base = np.array([100.0, 100.0, 100.0, 100.0])
    contrast = np.array([-8.0, -3.0, 8.0, 6.0])  # grey vs white matter (weak on T1ce)
    img = np.zeros((4, *SHAPE), np.float32)
    for c in range(4):
        img[c] = base[c] + contrast[c] * tissue + rng.normal(0, 3, SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    if tumour:
        r = np.sqrt((g[0] - 36) ** 2 + (g[1] - 30) ** 2 + (g[2] - 32) ** 2)
        ed, core = (r <= 14) & brain, r <= 8
        img[:, ed] += np.array([-4.0, 0.0, 20.0, 30.0])[:, None]
        label[ed] = L.ED
        if low_grade:
            img[:, core] += np.array([-20.0, -25.0, 15.0, -10.0])[:, None]
            label[core] = L.NCR
        else:
            rim, nec = core & (r > 5), r <= 5
            img[:, rim] += np.array([4.0, 45.0, -5.0, 0.0])[:, None]
            img[:, nec] += np.array([-20.0, -25.0, 25.0, -15.0])[:, None]
            label[rim], label[nec] = L.ET, L.NCR
    img[:, ~brain] = 0
    label[~brain] = 0
    return case_from_arrays(f"synthetic{seed}", img, label=label)


@pytest.fixture(scope="module")
def hgg():
    return synthetic_case()


def _dices(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    pm, rm = L.region_masks(pred), L.region_masks(ref)
    return {r: dice(pm[r], rm[r]) for r in L.REGIONS}


def test_finds_all_three_regions(hgg) -> None:
    res = segment_watershed(hgg)
    assert res.labels.shape == hgg.shape and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    d = _dices(res.labels, hgg.label)
    assert d["WT"] > 0.85, d
    # the defaults are tuned on real cases, where a core-marker threshold nearer normal
    # T1ce pays; here it lets a few noisy edema voxels join the core (TC 0.73)
    assert d["TC"] > 0.7, d
    assert d["ET"] > 0.6, d
    assert res.info["method"] == "watershed" and res.info["seconds"] > 0


def test_low_grade_core_does_not_collapse() -> None:
    case = synthetic_case(low_grade=True, seed=1)
    labels = segment_watershed(case).labels
    d = _dices(labels, case.label)
    assert d["WT"] > 0.85, d
    assert d["TC"] > 0.6, d
    assert (labels == L.ET).sum() < 0.05 * (labels > 0).sum()


def _tumour_radius() -> np.ndarray:
    g = np.mgrid[:64, :64, :64]
    return np.sqrt((g[0] - 36) ** 2 + (g[1] - 30) ** 2 + (g[2] - 32) ** 2)


def test_growing_reaches_a_faint_edema_rim() -> None:
    # a 2-voxel shell of faint FLAIR/T2 signal around the edema, too faint for a marker
    case = synthetic_case(seed=3)
    r = _tumour_radius()
    shell = (r > 14) & (r <= 16) & (case.image[3] > 0)
    img = case.image.copy()
    img[:, shell] += np.array([0.0, 0.0, 5.0, 7.0], np.float32)[:, None]
    label = case.label.copy()
    label[shell] = L.ED
    faint = case_from_arrays("faint_rim", img, label=label)
    # (the FLAIR edema growing, which would reach the shell too, off: this is the
    # abnormality map's growing)
    still = segment_watershed(faint, grow_reach=0, flair_grow=99.0).labels
    grown = segment_watershed(faint, grow_reach=2, flair_grow=99.0).labels
    assert _dices(grown, label)["WT"] > _dices(still, label)["WT"] + 0.03
    assert ((grown > 0) & shell).sum() > 2 * ((still > 0) & shell).sum()
    # it stops within its reach of the lesion: nothing beyond the shell's outer edge + 2
    assert not ((grown > 0) & (r > 18)).any()


def test_enhancing_rim_bounds_the_core() -> None:
    # edema dark on T1ce (as it often is) must not join the core of an enhancing tumour
    case = synthetic_case(seed=4)
    img = case.image.copy()
    ed = case.label == L.ED
    img[1, ed] -= 15.0
    img[0, ed] -= 7.5
    dark = case_from_arrays("dark_edema", img, label=case.label)
    rim = segment_watershed(dark, rim_core_ml=1.0).labels
    markers = segment_watershed(dark, rim_core_ml=1e9).labels
    assert _dices(rim, case.label)["TC"] > 0.85
    assert _dices(rim, case.label)["TC"] > _dices(markers, case.label)["TC"] + 0.3
    assert not (np.isin(rim, [L.NCR, L.ET]) & (_tumour_radius() > 10)).any()


def test_free_water_is_not_tumour() -> None:
    # a one-sided T2-bright, FLAIR-dark, T1-dark blob (a cyst or a widened ventricle):
    # bright enough on T2 to seed the abnormality map, but not edema
    case = synthetic_case(tumour=False, seed=5)
    g = np.mgrid[:64, :64, :64]
    blob = ((g[0] - 20) ** 2 + (g[1] - 34) ** 2 + (g[2] - 30) ** 2) <= 8 ** 2
    img = case.image.copy()
    img[:, blob] += np.array([-25.0, -25.0, 60.0, -3.0], np.float32)[:, None]
    water = case_from_arrays("free_water", img, label=case.label)
    assert not segment_watershed(water).labels.any()
    # the same blob as a lesion only when FLAIR-dark lesions are allowed
    assert segment_watershed(water, lesion_flair=-99.0).labels[blob].mean() > 0.5


def test_spurious_enhancement_does_not_cut_a_low_grade_core() -> None:
    # a low-grade tumour with a small enhancing blob in its edema: a few percent of the
    # lesion, so the core stays the T1ce-dark markers' instead of "rim and interior"
    case = synthetic_case(low_grade=True, seed=6)
    g = np.mgrid[:64, :64, :64]
    blob = ((g[0] - 47) ** 2 + (g[1] - 30) ** 2 + (g[2] - 32) ** 2) <= 4 ** 2
    img = case.image.copy()
    img[1, blob] += 60.0
    spur = case_from_arrays("spurious_et", img, label=case.label)
    kept = segment_watershed(spur, rim_core_ml=0.01).labels
    cut = segment_watershed(spur, rim_core_ml=0.01, rim_core_frac=0.0).labels
    assert (kept == L.ET).any()
    assert _dices(kept, case.label)["TC"] > 0.6
    assert _dices(cut, case.label)["TC"] < 0.1


def test_a_large_faint_tumour_is_kept() -> None:
    """The demo's phantom of seed 5 (and low-grade seeds 4, 5, 7, 8, 9) holds a 190 mL
    tumour whose abnormality peaks under ``wt_peak``: it was dropped whole, an empty
    outline on a large tumour. A lesion of ``big_lesion_ml`` or more is kept."""
    from braintumor.watershed import DEFAULT_PARAMS

    case = make_case(seed=5)
    truth = case.label > 0
    found = segment_watershed(case).labels > 0
    assert dice(found, truth) > 0.9
    old = segment_watershed(case, params=DEFAULT_PARAMS.replace(big_lesion_ml=1e9))
    assert not old.labels.any()


def test_synthetic_tumour_free_brain_stays_empty() -> None:
    assert not segment_watershed(synthetic_case(tumour=False, seed=2)).labels.any()


def test_symmetric_bright_anatomy_is_not_tumour() -> None:
    # FLAIR/T2-bright patches mirrored about the midline (coil brightness, normal
    # anatomy) are not tumour; the same patch on one side only is
    base = synthetic_case(tumour=False, seed=3)
    g = np.mgrid[:64, :64, :64]
    patches = [((g[0] - x) ** 2 + (g[1] - 34) ** 2 + (g[2] - 30) ** 2) <= 49 for x in (18, 46)]
    both, one = base.image.copy(), base.image.copy()
    for m in patches:
        both[:, m] += np.array([-4.0, 0.0, 20.0, 30.0])[:, None]
    one[:, patches[0]] += np.array([-4.0, 0.0, 20.0, 30.0])[:, None]
    sym = case_from_arrays("sym", both)
    assert not segment_watershed(sym).labels.any()
    assert segment_watershed(sym, sym_fg=-99.0).labels.any()  # the rule is what holds
    found = segment_watershed(case_from_arrays("one", one)).labels > 0
    assert dice(found, patches[0]) > 0.6


def test_asymmetry_cancels_a_mirrored_pair() -> None:
    from braintumor.watershed import asymmetry

    brain = np.zeros((20, 8, 8), bool)
    brain[2:18] = True
    a = np.zeros(brain.shape, np.float32)
    a[4, 4, 4] = a[15, 4, 4] = 5.0  # mirror pair about the brain's middle (x = 9.5)
    a[6, 2, 2] = 5.0  # alone
    asym = asymmetry(a, brain, axis=0, reach=0)
    assert asym[4, 4, 4] == 0 and asym[15, 4, 4] == 0
    assert asym[6, 2, 2] == 5.0


def test_phantom_tumour_is_found() -> None:
    case = make_case(SHAPE, seed=1)
    pred = segment_watershed(case).labels
    assert dice(pred > 0, case.label > 0) > 0.7


def test_goes_through_the_segment_door(hgg) -> None:
    a = segment(hgg, method="watershed").labels
    b = segment_watershed(hgg).labels
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tumour_free_phantom_stays_empty(seed: int) -> None:
    case = make_case(SHAPE, seed=seed, tumour=False)
    assert not segment_watershed(case).labels.any()


def test_two_lesions_both_found() -> None:
    case = make_case(SHAPE, seed=1, second_lesion=True)
    pred = segment_watershed(case).labels > 0
    ref_lab, n = ndi.label(case.label > 0, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(ref_lab.ravel())
    big = [k for k in range(1, n + 1) if sizes[k] * case.voxel_volume_ml >= 2.0]
    assert big  # lesions above twice the documented minimum volume must be found
    for k in big:
        assert (pred & (ref_lab == k)).any(), f"lesion {k} ({sizes[k]} voxels) missed"


def test_smoothing_keeps_its_scale_on_a_finer_grid() -> None:
    p = WatershedParams(factor=2, sigma=0.3)
    assert grid_params(p, 2) is p
    fine = grid_params(p, 1)
    # 0.6 native voxels for the same mm, plus the 2-voxel block mean's blur (sd 0.5)
    assert fine.sigma == pytest.approx(np.sqrt(0.6 ** 2 + 0.25))
    assert fine.replace(sigma=0.3) == p


def test_params_are_frozen_and_checked() -> None:
    p = WatershedParams()
    with pytest.raises(AttributeError):
        p.wt_hi = 9.0  # type: ignore[misc]
    assert params_from(None, wt_hi=9.0).wt_hi == 9.0
    with pytest.raises(InputError, match="Unknown watershed parameter"):
        params_from(None, no_such=1)


def test_bad_image_is_one_input_error() -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match="T1ce"):  # refused where the case is made
        case_from_arrays("bad", np.zeros((3, 16, 16, 16), np.float32))
    good = case_from_arrays("bad", np.zeros((4, 16, 16, 16), np.float32))
    with pytest.raises(InputError, match="T1ce"):  # and by the method, for a case made else
        segment_watershed(replace(good, image=np.zeros((3, 16, 16, 16), np.float32)))
    empty = case_from_arrays("empty", np.zeros((4, 16, 16, 16), np.float32))
    with pytest.raises(InputError, match="no brain"):
        segment_watershed(empty)


def test_working_grid_round_trip_keeps_a_ball() -> None:
    shape = (50, 47, 41)
    g = np.mgrid[:50, :47, :41]
    ball = ((g[0] - 25) ** 2 + (g[1] - 22) ** 2 + (g[2] - 20) ** 2) <= 12 ** 2
    brain = np.zeros(shape, bool)
    brain[3:47, 2:45, 2:39] = True
    grid = make_grid(brain, (1.0, 1.0, 1.0), factor=2)
    back = from_work(grid, to_work(grid, ball.astype(np.float32)))
    assert back.shape == shape
    assert dice(back, ball) > 0.97


def test_robust_z_levels_an_axial_intensity_drift() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (1, 30, 30, 40)).astype(np.float32)
    img *= np.linspace(0.8, 1.25, 40, dtype=np.float32)[None, None, None, :]
    brain = np.ones((30, 30, 40), bool)
    flat = robust_z(img, brain, erode=0, slab=3)[0]
    raw = robust_z(img, brain, erode=0, slab=0)[0]
    assert abs(flat[..., -3:].mean()) < 0.5 < abs(raw[..., -3:].mean())


# --- hybrid

#: the refinement alone, without the combination with the classical watershed
ALONE = {"wt_from": "hybrid", "core": "keep", "core_adopt": 0.0, "et_adopt": 0.0}


def _soft_truth(label: np.ndarray, sigma: float, shift: int = 0) -> np.ndarray:
    """CNN-like region probabilities: blurred (and shifted) truth."""
    ch = L.regions_to_channels(label).astype(np.float32)
    if shift:
        ch = np.roll(ch, shift, axis=1)
    return np.stack([ndi.gaussian_filter(c, sigma) for c in ch]).clip(0, 1)


def test_hybrid_keeps_a_good_cnn_and_stays_nested(hgg) -> None:
    probs = _soft_truth(hgg.label, 1.0)
    res = segment_hybrid(hgg, probabilities=probs)
    d = _dices(res.labels, hgg.label)
    cnn = _dices(L.channels_to_labels(probs > 0.5), hgg.label)
    for r in L.REGIONS:
        assert d[r] > cnn[r] - 0.05, (r, d, cnn)
    assert res.probabilities is not None and res.probabilities.shape == (3, *hgg.shape)


def test_hybrid_band_moves_to_image_edges(hgg) -> None:
    # a CNN that is blurred and off by 2 voxels: the watershed pulls WT back to the edge
    probs = _soft_truth(hgg.label, 2.5, shift=2)
    cnn = dice(probs[0] > 0.5, hgg.label > 0)
    hyb = dice(segment_hybrid(hgg, probabilities=probs, sure_in=0.9, sure_out=0.1,
                              regions="WT,TC,ET", **ALONE).labels > 0, hgg.label > 0)
    assert hyb > cnn, (hyb, cnn)


def test_hybrid_drops_an_unsure_blob(hgg) -> None:
    probs = _soft_truth(hgg.label, 1.0)
    blob = np.zeros(hgg.shape, bool)
    blob[10:14, 40:44, 30:34] = True
    blob &= hgg.label == 0
    probs[0][blob] = 0.6  # unsure everywhere: never an inside marker
    labels = segment_hybrid(hgg, probabilities=probs, regions="WT", sure_in=0.8, sure_out=0.2,
                            post={}, **ALONE).labels
    assert not labels[blob].any()


def test_hybrid_with_no_region_refined_is_the_cnn_alone(hgg) -> None:
    from braintumor.inference import PostProcess

    probs = _soft_truth(hgg.label, 2.0, shift=2)
    speck = np.zeros(hgg.shape, bool)
    speck[8:10, 30:32, 30:32] = True
    probs[0][speck] = 0.95  # a small confident false positive the postprocessing drops
    post = PostProcess(et_min_voxels=0, wt_min_voxels=50)
    cnn = post.apply(probs)
    assert not cnn[speck].any()
    same = segment_hybrid(hgg, probabilities=probs, post=post, regions=(), **ALONE).labels
    assert np.array_equal(same, cnn)
    # refining WT only moves WT voxels inside the uncertain band, and keeps the rules
    hyb = segment_hybrid(hgg, probabilities=probs, post=post, regions="WT", sure_out=0.2,
                         sure_in=0.8, **ALONE).labels
    band = (probs[0] >= 0.2) & (probs[0] <= 0.8)
    assert np.array_equal((hyb > 0)[~band], (cnn > 0)[~band])
    assert not hyb[speck].any()
    assert not np.array_equal(hyb, cnn)


def test_hybrid_per_region_bands_and_checks(hgg) -> None:
    from braintumor.watershed import hybrid_params

    hp = hybrid_params(sure_out=[0.1, 0.3, 0.4], sure_in=(0.9, 0.7, 0.6), regions="et, wt")
    assert hp.regions == ("WT", "ET")
    assert hp.band("TC") == (0.3, 0.7)
    for bad in ({"regions": "WT,XX"}, {"sure_out": 0.9, "sure_in": 0.1},
                {"sure_in": (0.9, 0.8)}, {"band": 0.3}):
        with pytest.raises(InputError):
            hybrid_params(**bad)


def test_every_method_takes_the_predict_options(hgg) -> None:
    # `braintumor predict` passes the same options whatever the method
    opts = {"device": "cpu", "model": None, "tta": False, "uncertainty": True,
            "backend": "auto"}
    assert segment(hgg, "watershed", **opts).labels.shape == hgg.shape
    res = segment_hybrid(hgg, probabilities=_soft_truth(hgg.label, 1.0), **opts)
    assert res.uncertainty is not None and res.uncertainty.shape == hgg.shape


def test_hybrid_rejects_wrong_probabilities(hgg) -> None:
    with pytest.raises(InputError, match=r"\(3, 64, 64, 64\)"):
        segment_hybrid(hgg, probabilities=np.zeros((3, 8, 8, 8), np.float32))


def test_hybrid_without_a_model_says_so(hgg, monkeypatch) -> None:
    import braintumor.inference as inf

    monkeypatch.setattr(inf, "shipped_model_available", lambda *a, **k: False)
    with pytest.raises(InputError, match="needs a CNN model"):
        segment_hybrid(hgg)


def test_hybrid_mode_says_the_mirroring_its_cnn_ran(hgg, monkeypatch) -> None:
    # an uncertainty map mirrors the CNN's input: the hybrid's mode says so, as the CNN's
    import braintumor.inference as inf

    seen = {}

    def fake(case, model, device, tta=False, backend="auto", fast=False, progress=None):
        seen["tta"] = tta
        lm = type("LM", (), {"version": "fake", "post": inf.PostProcess()})()
        return _soft_truth(hgg.label, 1.0), lm, {"members": 1}

    monkeypatch.setattr(inf, "predict_probabilities", fake)
    monkeypatch.setattr(inf, "shipped_model_available", lambda *a, **k: True)
    monkeypatch.setattr(inf, "runtime_info", lambda *a, **k: {})
    alone = {"wt_from": "hybrid", "core": "keep", "core_adopt": 0.0, "et_adopt": 0.0}
    res = segment_hybrid(hgg, fast=True, uncertainty=True, params=alone)
    assert seen["tta"] and res.info["mode"] == "fast + mirroring"
    assert segment_hybrid(hgg, fast=True, params=alone).info["mode"] == "fast"
    assert segment_hybrid(hgg, params=alone).info["mode"] == "accurate"


@pytest.mark.realdata
@pytest.mark.slow
def test_real_low_grade_case(brats_dir) -> None:
    from braintumor.cases import load_case

    case = load_case(brats_dir / "Brats18_TCIA10_639_1")
    res = segment_watershed(case)
    d = _dices(res.labels, case.label)
    assert d["WT"] > 0.75, d
    assert d["TC"] > 0.5, d


# --- the enhancing tumour redrawn on the native grid

def _rim_case(seed: int = 0):
    """T1 and T1ce of a 60^3 head: a 2-voxel enhancing rim (radius 7-9) around dark
    necrosis, T1ce-dark edema out to radius 14; and the labels a 2 mm grid would give,
    whose ET is the rim blurred to radius 5.5-10.5."""
    rng = np.random.default_rng(seed)
    shape = (60, 60, 60)
    g = np.mgrid[:60, :60, :60]
    r = np.sqrt((g[0] - 30) ** 2 + (g[1] - 30) ** 2 + (g[2] - 30) ** 2)
    brain = np.zeros(shape, bool)
    brain[4:56, 4:56, 4:56] = True
    img = rng.normal(100, 5, (4, *shape)).astype(np.float32)
    rim = (r > 7) & (r <= 9)
    img[1, rim] += 30.0
    img[1, r <= 7] -= 20.0
    img[1, (r > 9) & (r <= 14)] -= 5.0
    img[:, ~brain] = 0
    coarse = np.zeros(shape, np.uint8)
    coarse[r <= 14] = L.ED
    coarse[r <= 10.5] = L.ET
    coarse[r <= 5.5] = L.NCR
    return img, brain, coarse, rim, r


def test_native_z_is_robust_z_without_a_drift() -> None:
    from braintumor.watershed import native_z

    img, brain, *_ = _rim_case()
    ours = native_z(img, brain, slice(0, 60), erode=2, slab=0)
    ref = robust_z(img[:2], brain, erode=2, slab=0)
    assert ours.shape == ref.shape and np.allclose(ours, ref, atol=1e-4)
    part = native_z(img, brain, slice(20, 30), erode=2, slab=0)
    assert np.allclose(part, ref[..., 20:30], atol=1e-4)
    # an axial drift is levelled, as the working grid's z maps are
    drift = img * np.linspace(0.8, 1.25, 60, dtype=np.float32)[None, None, None, :]
    flat = native_z(drift, brain, slice(0, 60), erode=2, slab=5)[1]
    raw = native_z(drift, brain, slice(0, 60), erode=2, slab=0)[1]
    top = brain[..., 50:56] & (_rim_case()[4][..., 50:56] > 14)
    assert abs(flat[..., 50:56][top].mean()) < 0.5 < abs(raw[..., 50:56][top].mean())


def test_native_step_redraws_a_blurred_rim() -> None:
    from braintumor.watershed import DEFAULT_PARAMS, refine_et_native

    img, brain, coarse, rim, r = _rim_case()
    out = refine_et_native(coarse, img, brain, DEFAULT_PARAMS)
    before, after = dice(coarse == L.ET, rim), dice(out == L.ET, rim)
    assert before < 0.7 and after > 0.9, (before, after)
    # what leaves the ET becomes necrosis: the core stays (at most one voxel wider)
    core_in, core_out = np.isin(coarse, [L.NCR, L.ET]), np.isin(out, [L.NCR, L.ET])
    assert (core_in & ~core_out).sum() == 0 and dice(core_in, core_out) > 0.98
    assert (out[r > 14] == 0).all()
    # switched off, or with nothing enhancing, the labels stay as they came
    off = refine_et_native(coarse, img, brain, DEFAULT_PARAMS.replace(et_native=99))
    assert np.array_equal(off, coarse)
    flat = img.copy()
    flat[1] = np.where(brain, 100.0, 0.0)
    assert np.array_equal(refine_et_native(coarse, flat, brain, DEFAULT_PARAMS), coarse)


def test_native_step_adds_no_enhancement_apart_from_the_rim() -> None:
    from braintumor.watershed import DEFAULT_PARAMS, refine_et_native

    img, brain, coarse, rim, r = _rim_case(seed=1)
    spot = (np.abs(np.mgrid[:60, :60, :60] - 30).max(axis=0) <= 1)  # inside the necrosis
    img[1, spot] += 60.0
    out = refine_et_native(coarse, img, brain, DEFAULT_PARAMS)
    assert (out[spot] == L.NCR).all()
    assert dice(out == L.ET, rim) > 0.9


@pytest.mark.parametrize("step", ["native_et", "flair_edema"])
def test_step_defaults_are_the_cross_validation_choice(step: str) -> None:
    """The native enhancing-tumour step's and the FLAIR edema growing's defaults are
    their CV's all-case choice; held out, neither may cost any region more than 0.005
    Dice on average, and the tumour-free brains stay empty."""
    import json
    from pathlib import Path

    from braintumor.watershed import DEFAULT_PARAMS

    folder = Path(__file__).resolve().parents[1] / "experiments" / "watershed" / step
    chosen = json.loads((folder / "params.json").read_text())
    assert {k: getattr(DEFAULT_PARAMS, k) for k in chosen} == pytest.approx(chosen)
    summary = json.loads((folder / "summary.json").read_text())
    for r in ("WT", "TC", "ET"):
        assert summary["with"][r]["dice"] >= summary["without"][r]["dice"] - 0.005
    assert summary["healthy_predicted_voxels"] and \
        not any(summary["healthy_predicted_voxels"].values())


# --- edema grown through FLAIR-only signal


def _flair_grow_setup():
    """A 40x40x40 brain, a lesion (core + ET + edema) left of the midline, a FLAIR-bright
    shell (z 2.5) around it, and z(FLAIR) 0 elsewhere."""
    g = np.mgrid[:40, :40, :40]
    r = np.sqrt((g[0] - 9) ** 2 + (g[1] - 14) ** 2 + (g[2] - 20) ** 2)
    brain = np.zeros((40, 40, 40), bool)
    brain[1:39, 1:39, 1:39] = True
    labels = np.zeros(brain.shape, np.uint8)
    labels[r <= 6] = L.ED
    labels[r <= 4] = L.NCR
    labels[(r > 3) & (r <= 4)] = L.ET
    flair = np.zeros(brain.shape, np.float32)
    shell = (r > 6) & (r <= 9) & brain
    flair[shell] = 2.5
    return brain, labels, flair, shell, r


def test_flair_growing_adds_one_sided_faint_edema_only() -> None:
    from braintumor.watershed import DEFAULT_PARAMS, grow_edema

    brain, labels, flair, shell, r = _flair_grow_setup()
    p = DEFAULT_PARAMS.replace(flair_grow=1.0, flair_asym=1.0, flair_reach=2)
    out = grow_edema(labels, flair, brain, 0, p)
    grown = (out > 0) & (labels == 0)
    # within its reach of the lesion, all of it edema; the lesion itself untouched
    assert grown.any() and (out[grown] == L.ED).all()
    assert np.array_equal(out[labels > 0], labels[labels > 0])
    # two steps of 6-connected growth: the shell within city-block distance 2
    steps = ndi.distance_transform_cdt(labels == 0, metric="taxicab")
    assert np.array_equal(grown, shell & (steps <= 2))
    # a longer reach takes the whole shell, and never anything FLAIR-normal
    out = grow_edema(labels, flair, brain, 0, p.replace(flair_reach=8))
    grown = (out > 0) & (labels == 0)
    assert np.array_equal(grown, shell)
    # off, or no lesion to grow from: the labels come back as they were
    assert grow_edema(labels, flair, brain, 0, p.replace(flair_grow=99.0)) is labels
    empty = np.zeros_like(labels)
    assert not grow_edema(empty, flair, brain, 0, p).any()


def test_flair_growing_skips_signal_mirrored_across_the_midline() -> None:
    from braintumor.watershed import DEFAULT_PARAMS, grow_edema

    brain, labels, flair, shell, _ = _flair_grow_setup()
    both = flair + np.flip(flair, axis=0)  # the same bright shell in the other hemisphere
    p = DEFAULT_PARAMS.replace(flair_grow=1.0, flair_asym=1.0, flair_reach=8)
    assert np.array_equal(grow_edema(labels, both, brain, 0, p), labels)
    # measured along another axis the same image is one-sided again
    assert (grow_edema(labels, both, brain, 1, p) > 0).sum() > (labels > 0).sum()



def test_a_z_scored_scan_gets_the_raw_scans_outline() -> None:
    """Images z-scored before they came (the brain around 0, the background at 0):
    the slice levelling needs a physical zero, so each modality is shifted back to one
    (its brain's 1st percentile at 0) and the outline stays the raw scan's, to within
    a few percent of the tumour's voxels (a third of them changed before)."""
    from dataclasses import replace

    from braintumor.preprocess import brain_mask

    case = make_case((96, 96, 80), seed=1)
    brain = brain_mask(case.image)
    z = case.image.copy()
    for c in range(4):
        v = z[c][brain]
        z[c] = np.where(brain, (z[c] - v.mean()) / v.std(), 0)
    scored = replace(case, image=z.astype(np.float32))
    assert (scored.image[:, brain] < 0).any()
    raw = segment(case, "watershed").labels
    got = segment(scored, "watershed").labels
    assert (raw > 0).sum() > 10_000
    assert (got != raw).sum() < 0.03 * (raw > 0).sum()
    # a scan already on its own scale is left as it is
    from braintumor.watershed import with_zero_floor

    assert with_zero_floor(case) is case


def test_the_step_back_to_the_native_grid_leaves_no_detached_speck() -> None:
    # the linear interpolation back from a 2x working grid can cut a lesion's corner off
    # as a speck of a few voxels: it goes, the lesion itself and a second lesion of the
    # working grid (however small natively) stay
    from braintumor.watershed import make_grid, without_specks

    brain = np.ones((40, 40, 40), dtype=bool)
    grid = make_grid(brain, (1.0, 1.0, 1.0), 2, margin=0)
    work = np.zeros(grid.padded, np.uint8)
    work = work[::2, ::2, ::2].copy()
    work[4:9, 4:9, 4:9] = L.ED      # one lesion: blocks 4-8, native voxels 8-17
    work[15, 15, 15] = L.ED         # a second, one block (8 native voxels)
    native = np.zeros(grid.native, np.uint8)
    native[8:18, 8:18, 8:18] = L.ED
    native[8:10, 8:10, 8:10] = 0    # its corner ...
    native[8, 8, 8] = L.ET          # ... and a speck of it cut off there
    native[30:32, 30:32, 30:32] = L.ED
    out = without_specks(native, grid, work, 0.001, 1.0)
    assert out[8, 8, 8] == 0
    assert np.array_equal(out[10:18, 10:18, 10:18], native[10:18, 10:18, 10:18])
    assert (out[30:32, 30:32, 30:32] == L.ED).all()
    assert int((out != native).sum()) == 1
    # a speck of the minimum's size or more stays
    assert without_specks(native, grid, work, 0.001, 0.001)[8, 8, 8] == L.ET


@pytest.mark.parametrize("channel", [0, 2, 3])
def test_a_nan_voxel_is_refused_not_an_empty_outline(channel: int) -> None:
    c = make_case(shape=(48, 48, 40), seed=1)
    img = c.image.copy()
    img[channel, 24, 24, 20] = np.nan
    case = case_from_arrays("nan", img, c.affine)
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        segment_watershed(case)
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        segment_hybrid(case, probabilities=np.zeros((3, *case.shape), np.float32))


def test_the_method_s_own_warning_is_kept_apart_from_the_scan_s(monkeypatch) -> None:
    """``info["method_warning"]`` holds what the method said of its own outline (the web
    page marks it as said before the corrections once the outline is corrected);
    ``info["warning"]`` holds it with what is said of the scan (here its 5 mm slices)."""
    import braintumor.segment as S

    case = make_case((48, 48, 12), spacing=(1.0, 1.0, 5.0), seed=0)

    def said(c, progress=None, **_):
        return S.SegmentationResult(np.zeros(c.shape, np.uint8),
                                    info={"warning": "the method found 3 mL."})

    monkeypatch.setattr(S, "get_method", lambda name: said)
    res = segment(case, "watershed", resample=False)
    assert res.info["method_warning"] == "the method found 3 mL."
    assert res.info["warning"].startswith("the method found 3 mL; ")
    assert "5.0 mm" in res.info["warning"]
    monkeypatch.undo()
    quiet = segment(case, "watershed", resample=False)
    assert "method_warning" not in quiet.info and "5.0 mm" in quiet.info["warning"]
