"""A learned whole tumour: gradient-boosted trees over the CNN and the watershed.

The combined hybrid (:func:`braintumor.watershed.segment_hybrid`) takes its whole tumour
from rules (the watershed's lesions plus the CNN's that touch them). This module learns
it instead, voxel by voxel, on the watershed's working grid, from

* the CNN's region probabilities, raw and smoothed, and signed distances to its WT and
  TC masks;
* the robust z maps of the four modalities (raw, smoothed, relative to the median of
  the CNN's whole tumour), the enhancement ``z(T1ce) - z(T1)``, the left-right FLAIR
  asymmetry and the distance to the brain's edge;
* the classical watershed's regions and signed distances to its WT and TC.

Only voxels near either method's tumour are candidates (the CNN's WT probability over
0.2 or the watershed's WT, dilated by 3 voxels); the rest is background. The trees are
scikit-learn's ``HistGradientBoostingClassifier``, trained by
``python -m braintumor.stack_study`` on held-out CNN maps and held-out watershed labels
(stacking), and stored as plain arrays (:class:`TreeEnsemble`), so predicting needs
numpy alone. The hybrid's core (TC, ET) is kept as it is; the whole tumour grows to
hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor.errors import InputError

#: the shipped trees (absent: the hybrid keeps its rule-based whole tumour)
MODEL = Path(__file__).resolve().parent / "models" / "stacking" / "wt_trees.npz"
#: candidate voxels: CNN WT probability above this, or watershed WT, dilated
CAND_P = 0.2
CAND_DILATE = 3
#: signed distances are clipped to +-this many working voxels
DIST_CLIP = 15.0
_MODS = ("t1", "t1c", "t2", "fl")


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(mask.shape, -DIST_CLIP, np.float32)
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    return np.clip(inside - outside, -DIST_CLIP, DIST_CLIP).astype(np.float32)


def feature_maps(z: np.ndarray, brain: np.ndarray, probs: np.ndarray, ws_labels: np.ndarray,
                 lr: int) -> dict[str, np.ndarray]:
    """Every feature as a working-grid map. ``z``: robust z ``(4, x, y, z)`` (T1, T1ce,
    T2, FLAIR); ``brain``: bool; ``probs``: CNN WT, TC, ET ``(3, x, y, z)``;
    ``ws_labels``: the watershed's internal labels; ``lr``: the left-right axis."""
    from braintumor.watershed import asymmetry

    z = np.asarray(z, dtype=np.float32)
    probs = np.asarray(probs, dtype=np.float32)
    f: dict[str, np.ndarray] = {}
    for i, n in enumerate(_MODS):
        f[n] = z[i]
        f[n + "_s"] = ndi.gaussian_filter(z[i], 1.5)
    f["enh"] = z[1] - z[0]
    for i, r in enumerate(L.REGIONS):
        f["p" + r] = probs[i]
        f["p" + r + "_s"] = ndi.gaussian_filter(probs[i], 2.0)
    wm = L.region_masks(ws_labels)
    for r in L.REGIONS:
        f["ws" + r] = wm[r].astype(np.float32)
    f["d_cWT"] = _signed_distance(probs[0] > 0.5)
    f["d_cTC"] = _signed_distance(probs[1] > 0.5)
    f["d_wWT"] = _signed_distance(wm["WT"])
    f["d_wTC"] = _signed_distance(wm["TC"])
    ref = probs[0] > 0.5
    if ref.sum() < 20:
        ref = wm["WT"] if wm["WT"].sum() >= 20 else brain
    for i, n in enumerate(_MODS):
        f[n + "_rel"] = z[i] - float(np.median(z[i][ref]))
    core = probs[1] > 0.5
    f["t1c_relc"] = z[1] - (float(np.median(z[1][core])) if core.sum() >= 20 else 0.0)
    f["asym"] = asymmetry(ndi.gaussian_filter(z[3], 1.0), brain, lr, 1)
    f["edge"] = np.clip(ndi.distance_transform_edt(brain), 0, 20).astype(np.float32)
    return f


FEATURES = tuple(sorted(
    [*_MODS, *(m + "_s" for m in _MODS), *(m + "_rel" for m in _MODS), "enh", "t1c_relc",
     *("p" + r for r in L.REGIONS), *("p" + r + "_s" for r in L.REGIONS),
     *("ws" + r for r in L.REGIONS), "d_cWT", "d_cTC", "d_wWT", "d_wTC", "asym", "edge"]))


def candidates(brain: np.ndarray, probs: np.ndarray, ws_labels: np.ndarray) -> np.ndarray:
    """The voxels the trees judge (working grid, bool)."""
    near = (np.asarray(probs[0]) > CAND_P) | (np.asarray(ws_labels) > 0)
    return ndi.binary_dilation(near, iterations=CAND_DILATE) & brain


def features(z: np.ndarray, brain: np.ndarray, probs: np.ndarray, ws_labels: np.ndarray,
             lr: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X, cand)``: the feature rows ``(n, len(FEATURES))`` of the candidate voxels
    ``cand`` (see :func:`feature_maps`)."""
    cand = candidates(brain, probs, ws_labels)
    maps = feature_maps(z, brain, probs, ws_labels, lr)
    return np.stack([maps[n][cand] for n in FEATURES], axis=1).astype(np.float32), cand


@dataclass
class TreeEnsemble:
    """A binary gradient-boosted tree ensemble as flat arrays (all trees' nodes one after
    another; ``roots`` holds each tree's first node): a node splits on ``feature`` at
    ``threshold`` (``x <= threshold`` goes ``left``; a missing value goes left where
    ``missing_left``), and a leaf adds ``value`` to the raw score, which starts at
    ``baseline``. The probability is the logistic of the score."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    leaf: np.ndarray
    missing_left: np.ndarray
    roots: np.ndarray
    baseline: float
    names: tuple[str, ...]

    @classmethod
    def from_sklearn(cls, clf: Any, names: tuple[str, ...] = FEATURES) -> TreeEnsemble:
        """From a fitted binary ``HistGradientBoostingClassifier`` (numerical features)."""
        parts, roots, offset = [], [], 0
        for (pred,) in clf._predictors:
            nodes = pred.nodes
            roots.append(offset)
            parts.append((nodes, offset))
            offset += len(nodes)

        def cat(field: str, shift: bool = False) -> np.ndarray:
            # child indices are per tree: shift them to the flat arrays
            return np.concatenate([n[field].astype(np.int64) + o if shift else n[field]
                                   for n, o in parts])

        return cls(
            feature=cat("feature_idx").astype(np.int32),
            threshold=cat("num_threshold").astype(np.float64),
            left=cat("left", True).astype(np.int64), right=cat("right", True).astype(np.int64),
            value=cat("value").astype(np.float64), leaf=cat("is_leaf").astype(bool),
            missing_left=cat("missing_go_to_left").astype(bool),
            roots=np.asarray(roots, dtype=np.int64),
            baseline=float(np.ravel(clf._baseline_prediction)[0]), names=tuple(names))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores of the rows of ``x`` ``(n, features)``.

        Each tree walks only the rows still inside it: a row leaves the work list at its
        leaf, so a level costs what is left of it, not every row (half the time of
        rescanning all rows per level, the same scores bit for bit)."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        score = np.full(n, self.baseline)
        columns = np.ascontiguousarray(x.T)  # one feature's values side by side
        for root in self.roots:
            idx: np.ndarray = np.arange(n)
            node: np.ndarray = np.full(n, root, dtype=np.int64)
            if self.leaf[root]:
                score += self.value[root]
                continue
            while len(idx):
                v = columns[self.feature[node], idx]
                go_left = v <= self.threshold[node]
                missing = np.isnan(v)
                if missing.any():
                    go_left = np.where(missing, self.missing_left[node], go_left)
                node = np.where(go_left, self.left[node], self.right[node])
                done = self.leaf[node]
                if done.any():
                    score[idx[done]] += self.value[node[done]]
                    idx, node = idx[~done], node[~done]
        return score

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of ``x``."""
        return 1.0 / (1.0 + np.exp(-self.raw(x)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, feature=self.feature, threshold=self.threshold, left=self.left,
            right=self.right, value=self.value, leaf=self.leaf,
            missing_left=self.missing_left, roots=self.roots,
            baseline=np.array(self.baseline), names=np.array(self.names))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TreeEnsemble:
        try:
            with np.load(path) as z:
                names = tuple(str(n) for n in z["names"])
                if names != FEATURES:
                    raise InputError(f"{path}: trees made for other features than this "
                                     "version computes; retrain them.")
                return cls(feature=z["feature"], threshold=z["threshold"], left=z["left"],
                           right=z["right"], value=z["value"], leaf=z["leaf"],
                           missing_left=z["missing_left"], roots=z["roots"],
                           baseline=float(z["baseline"]), names=names)
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{path}: not a whole-tumour tree model ({e}).") from e


_LOADED: dict[str, TreeEnsemble] = {}


def shipped_model() -> TreeEnsemble | None:
    """The packaged trees, or None when the package holds none."""
    if not MODEL.exists():
        return None
    key = str(MODEL)
    if key not in _LOADED:
        _LOADED[key] = TreeEnsemble.load(MODEL)
    return _LOADED[key]


def whole_tumour_probability(trees: TreeEnsemble, z: np.ndarray, brain: np.ndarray,
                             probs: np.ndarray, ws_labels: np.ndarray, lr: int
                             ) -> np.ndarray:
    """The trees' whole-tumour probability on the working grid (0 off the candidates)."""
    x, cand = features(z, brain, probs, ws_labels, lr)
    out = np.zeros(brain.shape, dtype=np.float32)
    if len(x):
        out[cand] = trees.predict_proba(x)
    return out


def with_whole_tumour(labels: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``labels`` (internal, nested) with the whole tumour ``wt`` (native bool): the core
    is kept, the whole tumour grows to hold it, edema is the rest. An empty ``wt``
    leaves ``labels`` as they are."""
    if not wt.any():
        return np.asarray(labels, dtype=np.uint8).copy()
    m = L.region_masks(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[wt | m["TC"]] = L.ED
    out[m["TC"]] = L.NCR
    out[m["ET"]] = L.ET
    return out
