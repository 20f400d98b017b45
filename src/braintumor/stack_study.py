"""Cross-validated study of the learned whole tumour (:mod:`braintumor.stacking`).

Run as a module after :mod:`braintumor.hybrid_study` (it reuses that study's held-out
choices, ``experiments/hybrid/cv_params.json`` and ``fusion_cv.json``)::

    OMP_NUM_THREADS=2 python -m braintumor.stack_study --probs cache/cv_probs_mix

For every case with held-out CNN probabilities it builds the trees' features from those
probabilities and from the watershed run with the parameters its own CV chose without
the case. Then, leaving one case out at a time, trees trained on the other cases'
voxels give the held-out case its learned whole tumour, which replaces the whole tumour
of that case's held-out combined hybrid (its core kept, the whole tumour grown to hold
it). Both are scored in native space with :func:`braintumor.metrics.score_case`.

Results go to ``experiments/stacking/`` (``stack_cv.md``, ``stack_cv.csv``,
``summary.json``); the trees trained on every case go to ``--model`` (the packaged
:data:`braintumor.stacking.MODEL` by default). Training needs scikit-learn (the
``dev`` extra); using the trees does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.errors import guarded
from braintumor.hybrid_study import DATA, METRICS, PROBS, ROOT
from braintumor.hybrid_study import OUT as HYBRID_OUT

OUT = ROOT / "experiments" / "stacking"
CACHE = ROOT / "cache" / "stacking"
#: voxels drawn per training case, and the trees' settings
SAMPLES = 20000
TREES = {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
         "l2_regularization": 1.0}
SEED = 0


def case_features(case_id: str, sources: dict[str, Any], probs_dir: Path,
                  ws_params: dict[str, Any] | None, cache: Path | None = CACHE
                  ) -> dict[str, Any]:
    """Features ``X``, WT targets ``y`` (the reference on the working grid), and what is
    needed to map a prediction back (``grid``, ``cand``), for one case."""
    from braintumor.cases import load_case
    from braintumor.stacking import features
    from braintumor.watershed import lr_axis, params_from, to_work, watershed_grid

    p = params_from(ws_params)
    case = load_case(sources[case_id])
    assert case.label is not None, f"{case_id}: no reference label"
    ws = watershed_grid(case, p)
    key = json.dumps({"probs_mtime": (probs_dir / f"{case_id}.npz").stat().st_mtime,
                      "probs": str(probs_dir), "watershed": ws_params}, sort_keys=True)
    path = cache / probs_dir.name / f"{case_id}.npz" if cache is not None else None
    if path is not None and path.exists():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return {"X": z["X"], "y": z["y"], "cand": z["cand"], "grid": ws.grid,
                        "brain": ws.brain_native, "case": case}
    with np.load(probs_dir / f"{case_id}.npz") as z:
        probs = z["probs"].astype(np.float32)
    x, cand = features(ws.z, ws.brain, to_work(ws.grid, probs), ws.work,
                       lr_axis(case.affine))
    y = to_work(ws.grid, (case.label > 0).astype(np.float32))[cand] >= 0.5
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, key=np.array(key), X=x, y=y, cand=cand)
    return {"X": x, "y": y, "cand": cand, "grid": ws.grid, "brain": ws.brain_native,
            "case": case}


def train_trees(rows: Sequence[dict[str, Any]], seed: int = SEED) -> Any:
    """Trees trained on up to :data:`SAMPLES` voxels of each case in ``rows``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from braintumor.stacking import TreeEnsemble

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for r in rows:
        n = len(r["X"])
        idx = rng.choice(n, min(SAMPLES, n), replace=False)
        xs.append(r["X"][idx])
        ys.append(r["y"][idx])
    clf = HistGradientBoostingClassifier(random_state=seed, **TREES)  # type: ignore[arg-type]
    clf.fit(np.concatenate(xs), np.concatenate(ys))
    return TreeEnsemble.from_sklearn(clf)


def learned_wt(trees: Any, row: dict[str, Any]) -> np.ndarray:
    """The trees' whole tumour of one case, native bool."""
    from braintumor.watershed import from_work

    prob = np.zeros(row["cand"].shape, dtype=np.float32)
    if len(row["X"]):
        prob[row["cand"]] = trees.predict_proba(row["X"])
    return from_work(row["grid"], prob) & row["brain"]


def _held_out_choices(hybrid_out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """case -> the hybrid parameters and the combination rule chosen without it."""
    hyb, rule = {}, {}
    for fold in json.loads((hybrid_out / "cv_params.json").read_text()).values():
        for c in fold["test"]:
            hyb[c] = fold["params"]
    for fold in json.loads((hybrid_out / "fusion_cv.json").read_text()).values():
        for c in fold["test"]:
            rule[c] = fold["rule"]
    return hyb, rule


def run(probs_dir: Path = PROBS, data: Path = DATA, out: Path = OUT,
        hybrid_out: Path = HYBRID_OUT, maps_cache: Path | None = None,
        model: Path | None = None, train_probs: Path | None = None) -> dict[str, Any]:
    """The whole study; writes ``out`` (and the all-case trees to ``model``).

    ``train_probs`` (default ``probs_dir``): the held-out maps the trees learn from, so
    that trees trained as the packaged ones are can be judged on another mode's maps
    (the fast mode's, the mirrored ones)."""
    from braintumor.cases import discover
    from braintumor.hybrid_study import _fused, _score, _watershed_params, case_maps
    from braintumor.preprocess import uncrop
    from braintumor.stacking import MODEL, with_whole_tumour
    from braintumor.watershed import cnn_postprocess

    ids = sorted(p.stem for p in probs_dir.glob("*.npz"))
    if not ids:
        raise SystemExit(f"no CNN probability maps in {probs_dir}")
    sources = {s.case_id: s for s in discover(data)}
    ws_cv = _watershed_params()
    hyb, rule = _held_out_choices(hybrid_out)
    missing = [c for c in ids if c not in sources or c not in hyb or c not in rule]
    if missing:
        raise SystemExit(f"cases without data or held-out hybrid choices: {missing}")
    post = cnn_postprocess()
    rows, train = {}, {}
    for c in ids:
        t0 = time.perf_counter()
        rows[c] = case_features(c, sources, probs_dir, ws_cv.get(c))
        train[c] = rows[c] if train_probs in (None, probs_dir) else \
            case_features(c, sources, train_probs, ws_cv.get(c))  # type: ignore[arg-type]
        print(f"{c}: {len(rows[c]['X'])} candidate voxels, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    cases: dict[str, Any] = {}
    for c in ids:
        t0 = time.perf_counter()
        trees = train_trees([train[k] for k in ids if k != c])
        t1 = time.perf_counter()
        wt = learned_wt(trees, rows[c])
        predict_s = time.perf_counter() - t1
        maps = case_maps(c, sources, probs_dir, post, hyb[c], ws_cv.get(c), maps_cache)
        box = tuple(slice(int(a), int(b)) for a, b in maps["box"])
        shape = tuple(int(v) for v in maps["shape"])
        combined = uncrop(_fused(maps, rule[c]), box, shape)  # type: ignore[arg-type]
        ref = uncrop(maps["ref"], box, shape)  # type: ignore[arg-type]
        learned = with_whole_tumour(combined, wt)
        spacing = tuple(float(v) for v in maps["spacing"])
        cases[c] = {"combined": _score(combined, ref, spacing),
                    "learned": _score(learned, ref, spacing),
                    "train_seconds": t1 - t0, "predict_seconds": predict_s}
        print(f"{c}: combined " + "/".join(
            f"{cases[c]['combined'][r]['dice']:.3f}" for r in L.REGIONS) + ", learned WT "
            + "/".join(f"{cases[c]['learned'][r]['dice']:.3f}" for r in L.REGIONS), flush=True)
    summary = write_results(cases, out)
    trees = train_trees([train[k] for k in ids])
    dest = trees.save(model or MODEL)
    print(f"trees trained on all {len(ids)} cases: {dest}", flush=True)
    return summary


def write_results(cases: dict[str, Any], out: Path) -> dict[str, Any]:
    """``stack_cv.csv`` (per case), ``summary.json`` and ``stack_cv.md``."""
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted(cases)
    methods = ("combined", "learned")
    with (out / "stack_cv.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "method", "region", *METRICS])
        for c in ids:
            for m in methods:
                for r in L.REGIONS:
                    w.writerow([c, m, r, *(round(cases[c][m][r][k], 5) for k in METRICS)])
    summary: dict[str, Any] = {"cases": len(ids), "methods": {}}
    for m in methods:
        summary["methods"][m] = {
            r: {k: float(np.nanmean([cases[c][m][r][k] for c in ids])) for k in METRICS}
            | {"median_dice": float(np.median([cases[c][m][r]["dice"] for c in ids]))}
            for r in L.REGIONS}
    diff = {r: summary["methods"]["learned"][r]["dice"] - summary["methods"]["combined"][r]["dice"]
            for r in L.REGIONS}
    summary["learned_minus_combined_dice"] = diff
    summary["wins_wt"] = int(sum(cases[c]["learned"]["WT"]["dice"] >
                                 cases[c]["combined"]["WT"]["dice"] for c in ids))
    summary["predict_seconds"] = float(np.mean([cases[c]["predict_seconds"] for c in ids]))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    names = {"combined": "combined hybrid (rule-based WT)", "learned": "learned WT"}
    lines = [f"### Learned whole tumour: {len(ids)} cases, each held out (trees trained on "
             "the other cases)", "",
             "| method | region | Dice | median Dice | sensitivity | specificity | HD95 mm |",
             "|---|---|---|---|---|---|---|"]
    for m in methods:
        for r in L.REGIONS:
            s = summary["methods"][m][r]
            lines.append(f"| {names[m]} | {r} | {s['dice']:.3f} | {s['median_dice']:.3f} | "
                         f"{s['sensitivity']:.3f} | {s['specificity']:.4f} | "
                         f"{s['hd95']:.1f} |")
    lines += ["", "Learned minus combined, mean Dice: " + ", ".join(
        f"{r} {d:+.4f}" for r, d in diff.items())
        + f"; WT better on {summary['wins_wt']} of {len(ids)} cases.",
        f"Trees' prediction per case on this CPU: {summary['predict_seconds']:.2f} s.",
        "", "| case | combined (WT / TC / ET) | learned WT (WT / TC / ET) |", "|---|---|---|"]
    for c in ids:
        lines.append(f"| {c} | " + " | ".join(
            " / ".join(f"{cases[c][m][r]['dice']:.3f}" for r in L.REGIONS) for m in methods)
            + " |")
    (out / "stack_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return summary


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry."""
    ap = argparse.ArgumentParser(
        prog="python -m braintumor.stack_study", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probs", type=Path, default=PROBS,
                    help="folder of <case>.npz held-out CNN probabilities (default: the "
                    "shipped model's, %(default)s)")
    ap.add_argument("--data", type=Path, default=DATA, help="the BraTS cases")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--hybrid", type=Path, default=HYBRID_OUT,
                    help="the hybrid study's results on the same maps")
    ap.add_argument("--maps-cache", type=Path, default=ROOT / "cache" / "hybrid_study",
                    help="the hybrid study's cache of held-out label maps")
    ap.add_argument("--model", type=Path, default=None,
                    help="where the all-case trees go (default: the packaged model)")
    ap.add_argument("--train-probs", type=Path, default=None,
                    help="held-out maps the trees learn from (default: --probs)")
    args = ap.parse_args(argv)
    run(args.probs, args.data, args.out, args.hybrid, args.maps_cache, args.model,
        args.train_probs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
