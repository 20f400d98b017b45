"""The learned whole tumour: the flat tree ensemble against scikit-learn, the features,
and the hybrid's use of the trees on the synthetic case with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor import stacking
from braintumor.errors import InputError
from braintumor.metrics import dice
from braintumor.stacking import (
    FEATURES,
    TreeEnsemble,
    candidates,
    feature_maps,
    features,
    with_whole_tumour,
)
from braintumor.watershed import (
    lr_axis,
    params_from,
    segment_hybrid,
    to_work,
    watershed_grid,
)

sklearn = pytest.importorskip("sklearn.ensemble")


def _fit(x: np.ndarray, y: np.ndarray, iters: int = 60):
    return sklearn.HistGradientBoostingClassifier(max_iter=iters, random_state=0).fit(x, y)


def test_flat_trees_equal_scikit_learn_with_missing_values(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 4))
    y = x[:, 0] + x[:, 1] ** 2 + rng.normal(scale=0.5, size=5000) > 1
    x[rng.random(x.shape) < 0.02] = np.nan
    clf = _fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf, names=("a", "b", "c", "d"))
    test = rng.normal(size=(3000, 4))
    test[rng.random(test.shape) < 0.05] = np.nan
    expected = clf.predict_proba(test)[:, 1]
    assert np.abs(trees.predict_proba(test) - expected).max() < 1e-9
    # a model made for other features is refused when loaded
    path = trees.save(tmp_path / "t.npz")
    with pytest.raises(InputError):
        TreeEnsemble.load(path)
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(InputError):
        TreeEnsemble.load(tmp_path / "bad.npz")


def test_save_and_load_keep_the_predictions(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = x[:, 3] > 0.2
    trees = TreeEnsemble.from_sklearn(_fit(x, y, 20))
    back = TreeEnsemble.load(trees.save(tmp_path / "wt.npz"))
    assert np.array_equal(back.predict_proba(x), trees.predict_proba(x))


@pytest.fixture(scope="module")
def hgg():
    from test_watershed import synthetic_case  # 64^3, known truth

    return synthetic_case()


def _soft_probs(label: np.ndarray) -> np.ndarray:
    ch = L.regions_to_channels(label).astype(np.float32)
    return np.stack([ndi.gaussian_filter(c, 1.5) for c in ch]).clip(0, 1)


def test_features_cover_both_methods_and_nothing_far(hgg) -> None:
    ws = watershed_grid(hgg, params_from(None))
    probs = to_work(ws.grid, _soft_probs(hgg.label))
    x, cand = features(ws.z, ws.brain, probs, ws.work, lr_axis(hgg.affine))
    assert set(feature_maps(ws.z, ws.brain, probs, ws.work, 0)) == set(FEATURES)
    assert x.shape == (int(cand.sum()), len(FEATURES)) and np.isfinite(x).all()
    assert cand[(ws.work > 0) & ws.brain].all() and cand[(probs[0] > 0.5) & ws.brain].all()
    far = ~ndi.binary_dilation((probs[0] > 0.2) | (ws.work > 0), iterations=4)
    assert not (cand & far).any()
    assert np.array_equal(cand, candidates(ws.brain, probs, ws.work))


def test_with_whole_tumour_keeps_the_core() -> None:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = L.ED
    labels[8:12, 8:12, 8:12] = L.NCR
    labels[9:11, 9:11, 9:11] = L.ET
    wt = np.zeros(labels.shape, bool)
    wt[6:13, 6:13, 6:13] = True
    wt[9:12, 9:12, 9:12] = False  # a hole where the core is: the core stays
    out = with_whole_tumour(labels, wt)
    m, o = L.region_masks(labels), L.region_masks(out)
    assert np.array_equal(o["TC"], m["TC"]) and np.array_equal(o["ET"], m["ET"])
    assert np.array_equal(o["WT"], wt | m["TC"])
    assert np.array_equal(with_whole_tumour(labels, np.zeros_like(wt)), labels)


def test_segment_hybrid_uses_the_trees_when_the_package_has_them(hgg, monkeypatch) -> None:
    probs = _soft_probs(hgg.label)
    # a CNN that misses the edema's outer part: the rule-based hybrid keeps a WT too small
    probs[0] = ndi.gaussian_filter((ndi.binary_erosion(hgg.label > 0, iterations=2))
                                   .astype(np.float32), 1.0)
    ws = watershed_grid(hgg, params_from(None))
    pw = to_work(ws.grid, probs)
    x, cand = features(ws.z, ws.brain, pw, ws.work, lr_axis(hgg.affine))
    y = to_work(ws.grid, (hgg.label > 0).astype(np.float32))[cand] >= 0.5
    trees = TreeEnsemble.from_sklearn(_fit(x, y, 40))
    monkeypatch.setattr(stacking, "shipped_model", lambda: trees)
    learned = segment_hybrid(hgg, probabilities=probs, post={})
    rules = segment_hybrid(hgg, probabilities=probs, post={}, wt_learned=False)
    assert learned.info["learned_wt"] and not rules.info["learned_wt"]
    truth = hgg.label > 0
    assert dice(learned.labels > 0, truth) > dice(rules.labels > 0, truth)
    lm, rm = L.region_masks(learned.labels), L.region_masks(rules.labels)
    assert np.array_equal(lm["TC"], rm["TC"]) and np.array_equal(lm["ET"], rm["ET"])
    monkeypatch.setattr(stacking, "shipped_model", lambda: None)
    none = segment_hybrid(hgg, probabilities=probs, post={})
    assert not none.info["learned_wt"] and np.array_equal(none.labels, rules.labels)


def test_the_packaged_trees_load_when_present() -> None:
    if not stacking.MODEL.exists():
        pytest.skip("no packaged whole-tumour trees")
    trees = stacking.shipped_model()
    assert trees is not None and trees.names == FEATURES and len(trees.roots) > 0
