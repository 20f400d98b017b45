"""Time of the hybrid's whole-tumour trees, evaluated by ``stacking.TreeEnsemble`` (flat
NumPy arrays, no scikit-learn at prediction time; each tree walks only the rows not yet
at a leaf), against two references on the same trees and rows in one process: the plain
NumPy walk that moves every row one level per step (the previous evaluator) and
scikit-learn's compiled predictor (OpenMP threads).

The trees are fitted here to synthetic rows of the shipped model's size: 200 trees of up
to 31 leaves on 29 features, scored on about as many candidate voxels as a full BraTS
case gives (37,493 on Brats18_CBICA_AQN_1). Prints the best of ``--repeat`` for each and
the ratio, and checks that both give the same scores.

    python benchmarks/bench_trees.py [--rows 37500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def rescan_raw(trees, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The reference walk: every row is looked at on every level of every tree."""
    score = np.full(len(x), trees.baseline)
    rows = np.arange(len(x))
    for root in trees.roots:
        node = np.full(len(x), root, dtype=np.int64)
        active = ~trees.leaf[node]
        while active.any():
            idx = rows[active]
            nd = node[idx]
            v = x[idx, trees.feature[nd]]
            go_left = np.where(np.isnan(v), trees.missing_left[nd], v <= trees.threshold[nd])
            node[idx] = np.where(go_left, trees.left[nd], trees.right[nd])
            active[idx] = ~trees.leaf[node[idx]]
        score += trees.value[node]
    return score


def main() -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from braintumor.stacking import TreeEnsemble

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=37500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 29))
    y = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.7, size=args.rows) > 0.3
    clf = HistGradientBoostingClassifier(max_iter=200, max_leaf_nodes=31,
                                         early_stopping=False, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf, names=tuple(f"f{i}" for i in range(29)))
    test = rng.normal(size=(args.rows, 29))

    def best(fn) -> float:  # type: ignore[no-untyped-def]
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: trees.raw(test))
    rescan = best(lambda: rescan_raw(trees, test))
    ref = best(lambda: clf.decision_function(test))
    score = trees.raw(test)
    diff = float(np.abs(score - clf.decision_function(test)).max())
    same = bool(np.array_equal(score, rescan_raw(trees, test)))
    print(f"{len(trees.roots)} trees, {len(trees.feature)} nodes, {args.rows} rows")
    print(f"{'':34s}{'seconds':>10s}")
    print(f"{'TreeEnsemble.raw':34s}{ours:10.3f}")
    print(f"{'every row on every level (NumPy)':34s}{rescan:10.3f}")
    print(f"{'scikit-learn decision_function':34s}{ref:10.3f}")
    print(f"time ratio TreeEnsemble / every-row walk: {ours / rescan:.2f}")
    print(f"time ratio TreeEnsemble / scikit-learn: {ours / ref:.2f}")
    print(f"same scores as the every-row walk: {same}; largest difference from "
          f"scikit-learn: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
