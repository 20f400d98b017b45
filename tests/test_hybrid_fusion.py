"""Per-region combination of the hybrid and the classical watershed, on small volumes
with known answers, and the study's leave-fold-out choice of the combination rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor.errors import InputError
from braintumor.hybrid_study import NO_FUSION, fusion_candidates, fusion_folds, select_fusion
from braintumor.metrics import dice
from braintumor.watershed import cnn_postprocess, fuse_labels, hybrid_params, segment_hybrid

SHAPE = (40, 40, 40)


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    g = np.mgrid[:40, :40, :40]
    return ((g - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius ** 2


def _labels(wt: np.ndarray, tc: np.ndarray | None = None, et: np.ndarray | None = None
            ) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    out[wt] = L.ED
    if tc is not None:
        out[tc] = L.NCR
    if et is not None:
        out[et] = L.ET
    return out


@pytest.fixture()
def scene() -> dict[str, np.ndarray]:
    """A true lesion at (20, 20, 20): the watershed finds it a little smaller plus a
    false lesion at (6, 6, 30) the CNN gives no probability; the hybrid finds it a
    little larger plus a distant false blob at (33, 33, 8), and its core sticks out of
    the watershed's whole tumour on one side."""
    true = _ball((20, 20, 20), 8)
    ws_false = _ball((6, 6, 30), 3)
    cnn_false = _ball((33, 33, 8), 3)
    ws = _labels(_ball((20, 20, 20), 7) | ws_false)
    core = _ball((20, 24, 20), 4.5)  # reaches y = 28.5, past the watershed's 27
    hyb = _labels(_ball((20, 20, 20), 9) | cnn_false, core, _ball((20, 24, 20), 2))
    prob = ndi.gaussian_filter(((hyb > 0) | true).astype(np.float32), 1.0)
    prob[ws_false] = 0.0
    return {"true": true, "ws_false": ws_false, "cnn_false": cnn_false, "ws": ws,
            "hyb": hyb, "prob": prob, "core": core}


def _nested(labels: np.ndarray) -> bool:
    m = L.region_masks(labels)
    return bool((m["ET"] <= m["TC"]).all() and (m["TC"] <= m["WT"]).all())


def test_hybrid_alone_is_unchanged(scene) -> None:
    out = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], **NO_FUSION)
    assert np.array_equal(out, scene["hyb"])


def test_veto_drops_the_lesion_the_cnn_gives_no_probability(scene) -> None:
    kept = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "watershed", 0.0, "clip")
    vetoed = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "watershed", 0.3, "clip")
    assert kept[scene["ws_false"]].all()
    assert not vetoed[scene["ws_false"]].any()
    # the real lesion has high probability: untouched by the veto
    assert np.array_equal(vetoed > 0, (scene["ws"] > 0) & ~scene["ws_false"])


def test_veto_counts_the_share_of_the_lesion_the_cnn_supports(scene) -> None:
    # a watershed lesion that grazes the CNN's tumour: its peak probability is high, but
    # only a sliver of it is CNN tumour
    graze = _ball((20, 33, 20), 5) & ~_ball((20, 20, 20), 9)
    sliver = graze & _ball((20, 20, 20), 10.5)
    ws = scene["ws"].copy()
    ws[graze] = L.ED
    prob = np.where(graze & ~sliver, 0.0, scene["prob"]).astype(np.float32)
    prob[sliver] = 0.99
    assert 0 < sliver.sum() < 0.3 * graze.sum()
    out = fuse_labels(scene["hyb"], ws, prob, "watershed", 0.3, "clip")
    assert not (out > 0)[graze & ~sliver].any()
    assert (out > 0)[_ball((20, 20, 20), 7)].all()  # the real lesion stays


def test_touching_keeps_the_cnn_extension_and_drops_its_isolated_blob(scene) -> None:
    out = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "touching", 0.3, "clip")
    wt = out > 0
    assert wt[_ball((20, 20, 20), 9)].all()  # the hybrid's larger lesion touches
    assert not wt[scene["cnn_false"]].any()
    assert not wt[scene["ws_false"]].any()
    assert dice(wt, scene["true"]) > dice(scene["ws"] > 0, scene["true"])
    assert dice(wt, scene["true"]) > dice(scene["hyb"] > 0, scene["true"])
    assert _nested(out)


def test_total_disagreement_falls_back_to_the_hybrid(scene) -> None:
    only_false = _labels(scene["ws_false"])  # the watershed missed the real lesion
    for ws in (np.zeros(SHAPE, np.uint8), only_false):
        out = fuse_labels(scene["hyb"], ws, scene["prob"], "touching", 0.3, "clip")
        assert np.array_equal(out, scene["hyb"])
    # with nothing found by the CNN either, nothing is the answer
    empty = np.zeros(SHAPE, np.uint8)
    assert not fuse_labels(empty, only_false, np.zeros(SHAPE, np.float32), "touching",
                           0.3, "clip").any()


def test_union_and_intersection(scene) -> None:
    ws, hyb = scene["ws"] > 0, scene["hyb"] > 0
    union = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "union", 0.0, "clip") > 0
    inter = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "intersection", 0.0,
                        "clip") > 0
    assert np.array_equal(union, ws | hyb)
    assert np.array_equal(inter, ws & hyb)


def test_core_rules_fit_the_core_into_the_whole_tumour(scene) -> None:
    core = scene["core"]
    ws_wt = scene["ws"] > 0
    outside = core & ~ws_wt
    assert outside.any()
    clip = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "watershed", 0.3, "clip")
    ext = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "watershed", 0.3, "extend")
    keep = fuse_labels(scene["hyb"], scene["ws"], scene["prob"], "watershed", 0.3, "keep")
    tc = {k: L.region_masks(v)["TC"] for k, v in (("clip", clip), ("ext", ext),
                                                    ("keep", keep))}
    assert np.array_equal(tc["clip"], core & ws_wt)
    assert np.array_equal(tc["ext"], core) and np.array_equal(tc["keep"], core)
    assert (ext[outside] > 0).all()  # the whole tumour grew to hold the core
    # edema is the whole tumour minus the core; ET stays the hybrid's, inside the core
    assert np.array_equal(clip == L.ED, ws_wt & ~(scene["ws_false"]) & ~tc["clip"])
    assert np.array_equal(ext == L.ET, scene["hyb"] == L.ET)
    for out in (clip, ext, keep):
        assert _nested(out)


def test_extend_drops_a_core_lesion_away_from_the_whole_tumour(scene) -> None:
    far = _ball((33, 6, 33), 2.5)
    hyb = scene["hyb"].copy()
    hyb[far] = L.NCR
    ext = fuse_labels(hyb, scene["ws"], scene["prob"], "watershed", 0.0, "extend")
    keep = fuse_labels(hyb, scene["ws"], scene["prob"], "watershed", 0.0, "keep")
    assert not ext[far].any()
    assert (keep[far] == L.NCR).all()


def test_adoption_takes_the_watershed_core_lesion_the_cnn_supports(scene) -> None:
    # the watershed outlines two core lesions inside the whole tumour; the CNN's core is
    # small. The CNN gives one of them a weak probability over half of it (adopted), the
    # other almost none (the watershed reading edema as necrosis: left out)
    supported = _ball((16, 16, 20), 3.5)
    unsupported = _ball((24, 16, 20), 2.5)
    ws = scene["ws"].copy()
    ws[supported | unsupported] = L.NCR
    ws[_ball((16, 16, 20), 1.5)] = L.ET
    hyb = _labels(scene["hyb"] > 0, _ball((20, 24, 20), 2.5), _ball((20, 24, 20), 1))
    tc_prob = np.zeros(SHAPE, np.float32)
    tc_prob[supported & (np.mgrid[:40, :40, :40][0] >= 15)] = 0.3  # most of it, weakly
    tc_prob[unsupported & (np.mgrid[:40, :40, :40][0] >= 26)] = 0.3  # a sliver
    et_prob = np.zeros(SHAPE, np.float32)
    et_prob[_ball((16, 16, 20), 1.5)] = 0.1
    args = (hyb, ws, scene["prob"], "touching", 0.3, "clip")
    plain = fuse_labels(*args)
    adopted = fuse_labels(*args, core_adopt=0.5, tc_prob=tc_prob)
    both = fuse_labels(*args, core_adopt=0.5, et_adopt=0.05, tc_prob=tc_prob,
                       et_prob=et_prob)
    tc = {k: L.region_masks(v)["TC"] for k, v in (("plain", plain), ("adopted", adopted))}
    assert not tc["plain"][supported].any()
    assert tc["adopted"][supported].all()  # joins whole, as the watershed outlines it
    assert not tc["adopted"][unsupported].any()
    assert np.array_equal(tc["adopted"] & ~supported, tc["plain"])  # nothing else moves
    assert not (adopted == L.ET)[_ball((16, 16, 20), 1.5)].any()
    assert (both == L.ET)[_ball((16, 16, 20), 1.5)].all()  # the supported ET joins too
    assert np.array_equal(adopted > 0, plain > 0)  # the whole tumour is unchanged
    for out in (adopted, both):
        assert _nested(out)
    # a lesion the CNN's core already covers mostly is its to outline: not adopted
    covered = _ball((20, 24, 20), 3.5)
    ws2 = ws.copy()
    ws2[covered] = L.NCR
    tc_prob2 = tc_prob.copy()
    tc_prob2[covered] = 0.3
    share = float(L.region_masks(plain)["TC"][covered].mean())
    assert 0.3 < share < 0.9
    loose = fuse_labels(hyb, ws2, scene["prob"], "touching", 0.3, "clip", core_adopt=0.5,
                        tc_prob=tc_prob2)
    strict = fuse_labels(hyb, ws2, scene["prob"], "touching", 0.3, "clip", core_adopt=0.5,
                         tc_prob=tc_prob2, core_cover=0.3)
    assert L.region_masks(loose)["TC"][covered].all()
    assert not L.region_masks(strict)["TC"][covered & ~L.region_masks(plain)["TC"]].any()
    assert L.region_masks(strict)["TC"][supported].all()  # the uncovered one still joins
    with pytest.raises(InputError):
        fuse_labels(*args, core_adopt=0.5)  # no TC probability to judge support by
    hp = hybrid_params(wt_from="hybrid", core="keep", core_adopt=0.3)
    assert hp.fused
    with pytest.raises(InputError):
        hybrid_params(et_adopt=2.0)


def test_empty_maps_and_bad_rules() -> None:
    z = np.zeros(SHAPE, np.uint8)
    assert not fuse_labels(z, z, np.zeros(SHAPE, np.float32), "union", 0.5, "extend").any()
    with pytest.raises(InputError):
        fuse_labels(z, z, np.zeros(SHAPE, np.float32), "vote", 0.0, "keep")
    for bad in ({"wt_from": "vote"}, {"core": "grow"}, {"wt_veto": 1.5}):
        with pytest.raises(InputError):
            hybrid_params(**bad)
    hp = hybrid_params(wt_from="touching", wt_veto="0.3", core="extend")
    assert hp.fused and hp.wt_veto == 0.3
    assert not hybrid_params(**NO_FUSION).fused


# --- through segment_hybrid, on the synthetic case of test_watershed


@pytest.fixture(scope="module")
def hgg():
    from test_watershed import synthetic_case  # the same 64^3 case, known truth

    return synthetic_case()


def test_segment_hybrid_fuses_with_the_watershed(hgg) -> None:
    ch = L.regions_to_channels(hgg.label).astype(np.float32)
    probs = np.stack([ndi.gaussian_filter(c, 1.0) for c in ch]).clip(0, 1)
    blob = np.zeros(hgg.shape, bool)
    blob[8:16, 42:50, 26:34] = True
    blob &= (hgg.label == 0) & (hgg.image[3] > 0)
    probs[0][blob] = 0.95  # a confident false positive far from the tumour
    alone = segment_hybrid(hgg, probabilities=probs, post={}, **NO_FUSION)
    assert alone.labels[blob].all()
    fused = segment_hybrid(hgg, probabilities=probs, post={}, wt_from="touching",
                           wt_veto=0.3, core="extend")
    assert not fused.labels[blob].any()
    assert fused.info["watershed_seconds"] > 0 and fused.info["params"]["core"] == "extend"
    truth = hgg.label > 0
    assert dice(fused.labels > 0, truth) > dice(alone.labels > 0, truth)
    assert _nested(fused.labels)
    # the two methods' agreement comes with the fused result, not with the refinement alone
    from braintumor.watershed import method_agreement, segment_watershed

    assert "agreement" not in alone.info
    # the watershed as the hybrid fuses it: without the FLAIR edema growing (its rule was
    # chosen on the watershed before that step), which does change this phantom; nor
    # with the bias-field correction, were that switched on
    ws = segment_watershed(hgg, flair_grow=99.0, n4=0).labels
    assert not np.array_equal(ws, segment_watershed(hgg).labels)
    cnn = cnn_postprocess({}).apply(probs)
    assert fused.info["agreement"] == method_agreement(cnn, ws)
    assert all(0.0 <= v <= 1.0 for v in fused.info["agreement"].values())


def test_agreement_and_its_note() -> None:
    from braintumor.watershed import AGREEMENT_CHECK, agreement_note, method_agreement

    a = np.zeros((10, 10, 10), np.uint8)
    a[2:6, 2:6, 2:6] = L.ED
    a[3:5, 3:5, 3:5] = L.ET
    b = a.copy()
    b[b == L.ET] = L.NCR  # same core, no enhancement
    agree = method_agreement(a, b)
    assert agree == {"WT": 1.0, "TC": 1.0, "ET": 0.0}
    assert method_agreement(np.zeros_like(a), np.zeros_like(a)) == {"WT": 1.0, "TC": 1.0,
                                                                    "ET": 1.0}
    note = agreement_note(agree)
    assert note is not None and "disagree on ET (0.00)" in note and "that region" in note
    assert agreement_note({"WT": 0.9, "TC": AGREEMENT_CHECK, "ET": 0.7}) is None
    two = agreement_note({"WT": 0.2, "TC": 0.3, "ET": 0.9})
    assert two is not None and "WT (0.20), TC (0.30)" in two and "those regions" in two


def test_agreement_summary_relates_agreement_to_held_out_dice() -> None:
    from braintumor.hybrid_study import agreement_summary

    agree = {f"c{i}": {"WT": 0.9, "TC": 0.2 + 0.1 * i, "ET": 0.1 * i} for i in range(6)}
    true = {f"c{i}": {"WT": 0.8 + 0.01 * i, "TC": 0.3 + 0.1 * i, "ET": 0.9 - 0.1 * i}
            for i in range(6)}
    s = agreement_summary(agree, true)
    assert s["TC"]["spearman"] == pytest.approx(1.0) and s["ET"]["pearson"] < -0.99
    assert np.isnan(s["WT"]["spearman"])  # agreement constant: no correlation to speak of
    assert s["TC"]["flagged_cases"] == ["c0", "c1", "c2"]  # 0.2, 0.3, 0.4 < 0.5
    assert s["TC"]["flagged_dice"] == pytest.approx(0.4)
    assert s["TC"]["other_dice"] == pytest.approx(0.7)


# --- the study's choice of rule (bookkeeping only)


def test_select_fusion_looks_only_at_the_training_cases() -> None:
    n = len(fusion_candidates())
    assert fusion_candidates()[0] == NO_FUSION

    def case(best: int, gain: float) -> list[dict[str, float]]:
        return [dict.fromkeys(L.REGIONS, 0.7 + (gain if k == best else 0.0))
                for k in range(n)]

    dices = {f"c{i}": case(5, 0.05) for i in range(4)}
    dices["t"] = case(9, 0.9)  # held out: rule 9 would win there, it must not count
    sel = select_fusion(dices, [f"c{i}" for i in range(4)])
    assert sel["index"] == 5 and sel["rule"] == fusion_candidates()[5]
    assert np.isclose(sel["gain"], 0.05)
    # a gain under the minimum keeps the hybrid alone
    small = {f"c{i}": case(5, 0.0005) for i in range(4)}
    assert select_fusion(small, list(small))["rule"] == NO_FUSION


def test_fusion_folds_cover_every_case_once() -> None:
    ids = [f"Brats18_TCIA10_{i}_1" for i in range(3)] + [f"Brats18_X_{i}" for i in range(8)]
    folds = fusion_folds(ids)
    flat = [c for f in folds for c in f]
    assert sorted(flat) == sorted(ids)


def test_the_combined_hybrid_keeps_no_speck_under_the_smallest_lesion(hgg,
                                                                      monkeypatch) -> None:
    # the learned whole tumour comes back from the working grid and may leave a speck of
    # a few voxels away from the tumour (as the core kept outside it may): it goes
    from braintumor import stacking

    ch = L.regions_to_channels(hgg.label).astype(np.float32)
    probs = np.stack([ndi.gaussian_filter(c, 1.0) for c in ch]).clip(0, 1)
    speck = np.zeros(hgg.shape, bool)
    speck[10:12, 44:46, 28:30] = True  # 8 voxels, far from the tumour
    plain = stacking.with_whole_tumour

    def with_speck(labels: np.ndarray, wt: np.ndarray) -> np.ndarray:
        out = plain(labels, wt)
        out[speck] = L.ET
        return out

    monkeypatch.setattr(stacking, "shipped_model", lambda: object())
    monkeypatch.setattr(stacking, "whole_tumour_probability",
                        lambda trees, z, brain, p, work, lr: p[0])
    monkeypatch.setattr(stacking, "with_whole_tumour", with_speck)
    res = segment_hybrid(hgg, probabilities=probs, post={})
    assert res.info["learned_wt"]
    assert not res.labels[speck].any()
    assert res.labels.any() and _nested(res.labels)


def test_small_lesions_are_dropped_as_on_the_whole_volume() -> None:
    """The hybrid's last step drops detached lesions under its smallest volume, found in
    the box around the lesions: the same label map as the components of the whole
    volume give, lesions at the volume's faces included."""
    from braintumor.watershed import _components, _without_small_lesions

    rng = np.random.default_rng(4)
    for _ in range(20):
        m = ndi.gaussian_filter(rng.random((50, 40, 30)), 1.5)
        lab = np.zeros(m.shape, np.uint8)
        lab[m > np.quantile(m, 0.97)] = L.ED
        lab[m > np.quantile(m, 0.99)] = L.ET
        min_ml = float(rng.random() * 0.05)
        comp, _ = _components(lab > 0)
        small = np.bincount(comp.ravel()) * 0.001 < min_ml
        small[0] = False
        whole = np.where(small[comp], 0, lab)
        assert np.array_equal(_without_small_lesions(lab, min_ml, 0.001), whole)
    empty = np.zeros((6, 6, 6), np.uint8)
    assert not _without_small_lesions(empty, 1.0, 1.0).any()
