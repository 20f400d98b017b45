r"""Cross-validated tuning and evaluation of the watershed segmenters.

Run as a module::

    nice -n 10 python -m braintumor.watershed_tune cache --data ../shared/data/brats2018
    OMP_NUM_THREADS=1 python -m braintumor.watershed_tune tune --config configs/watershed.yaml
    OMP_NUM_THREADS=1 python -m braintumor.watershed_tune native
    OMP_NUM_THREADS=1 python -m braintumor.watershed_tune flair

``--config`` reads the settings of a YAML file (``configs/watershed.yaml``: the published
run's, ``--trials 400 --local 3 --minutes 25 --study shared_v5_rimfrac``); flags given as
well override it. Every step reads and writes ``experiments/watershed`` (the committed
results) unless ``--root`` names another folder: for a rerun beside the committed
results, copy the folder and name the copy.

* ``cache``: loads each BraTS case once, crops it to the brain (plus a margin) and stores
  ``image`` (int16/float16 ``(4, x, y, z)``), ``label`` (internal, ``(x, y, z)``), the
  crop box and the native shape as ``cache/watershed/<case>.npz`` (an ignored folder).
  Running the segmenter on the cropped case gives the same labels as on the full case,
  since the segmenter crops to the brain itself.
* ``tune``: one shared score-blind search (:func:`run_cv_shared`; ``--per-fold``: a
  TPE study per fold), SQLite storage under ``cache/`` so it resumes; each fold picks
  the candidate best on its training cases and the held-out fold is scored with it
  only. Results go to ``experiments/watershed/``.

The hybrid method is compared with the CNN alone by :mod:`braintumor.hybrid_study`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "cache" / "watershed"
EXPERIMENTS = ROOT / "experiments" / "watershed"

# ---------------------------------------------------------------------------------------
# cache


def cache_cases(data: Path, out: Path = CACHE, margin: int = 2) -> list[Path]:
    """Crop every case under ``data`` to its brain and save it as ``out/<case>.npz``."""
    from braintumor.cases import discover, load_case
    from braintumor.preprocess import bounding_box, brain_mask

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in discover(data):
        path = out / f"{src.case_id}.npz"
        if path.exists():
            written.append(path)
            continue
        case = load_case(src)
        box = bounding_box(brain_mask(case.image), margin=margin)
        img = case.image[(slice(None),) + tuple(box)]
        img_store = img.astype(np.int16) if np.allclose(img, np.round(img)) and \
            np.abs(img).max() < 32000 else img.astype(np.float32)
        lab = case.label[box] if case.label is not None else np.zeros(img.shape[1:], np.uint8)
        np.savez_compressed(
            path, image=img_store, label=lab.astype(np.uint8),
            box=np.array([[s.start, s.stop] for s in box]), shape=np.array(case.shape),
            affine=case.affine, spacing=np.array(case.spacing),
        )
        written.append(path)
        print(f"cached {src.case_id} {img.shape}", flush=True)
    return written


def load_cached(path: Path) -> dict[str, Any]:
    """One cached case: ``case`` (cropped :class:`Case` with label), ``box``, ``shape``."""
    from braintumor.cases import case_from_arrays

    z = np.load(path)
    case = case_from_arrays(path.stem, z["image"].astype(np.float32), z["affine"],
                            z["label"])
    box = tuple(slice(int(a), int(b)) for a, b in z["box"])
    return {"case": case, "box": box, "shape": tuple(int(s) for s in z["shape"])}


HEALTHY_SUFFIX = "_healthy"


def healthy_id(case_id: str) -> str:
    """Id of the tumour-free brain made from ``case_id``'s healthy hemisphere."""
    return case_id + HEALTHY_SUFFIX


def _midline(image: np.ndarray) -> int:
    brain = np.any(image != 0, axis=0)
    xs = np.where(brain.any(axis=(1, 2)))[0]
    return int(xs[0] + xs[-1]) // 2


def mirrored_healthy(case: Any) -> Any:
    """A tumour-free brain from a case whose tumour lies in one hemisphere: the healthy
    half (first axis split at the middle of the brain) and its mirror image, with an
    empty label. Raises ValueError when the tumour crosses the middle."""
    from braintumor.cases import case_from_arrays

    img, lab = case.image, case.label
    mid = _midline(img)
    left, right = int((lab[:mid] > 0).sum()), int((lab[mid:] > 0).sum())
    if left and right:
        raise ValueError(f"{case.case_id}: tumour on both sides")
    half = img[:, mid:] if left else img[:, :mid]
    new = np.concatenate([half[:, ::-1], half] if left else [half, half[:, ::-1]], axis=1)
    return case_from_arrays(healthy_id(case.case_id), new, case.affine,
                            np.zeros(new.shape[1:], dtype=np.uint8))


def healthy_sources(ids: Sequence[str], cache: Path = CACHE) -> list[str]:
    """Cases whose tumour lies in one hemisphere (so a tumour-free brain can be made)."""
    out = []
    for c in ids:
        z = np.load(cache / f"{c}.npz")
        lab = z["label"]
        mid = _midline(z["image"])
        if not ((lab[:mid] > 0).any() and (lab[mid:] > 0).any()):
            out.append(c)
    return out


def case_ids(cache: Path = CACHE) -> list[str]:
    """Cached case ids, sorted."""
    return sorted(p.stem for p in cache.glob("*.npz"))


def folds_for(ids: Sequence[str], k: int) -> list[list[str]]:
    """Deterministic folds: low-grade cases spread across folds first, then the rest."""
    lgg = [c for c in ids if "TCIA10" in c or "TCIA13" in c]
    hgg = [c for c in ids if c not in lgg]
    order = lgg + hgg
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, c in enumerate(order):
        folds[i % k].append(c)
    return folds


# ---------------------------------------------------------------------------------------
# scoring


def _local_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                  total_voxels: int) -> dict[str, float]:
    """Dice, sensitivity, specificity and HD95 (mm) of two boolean masks.

    The rules of :mod:`braintumor.metrics` (both empty: Dice 1, HD95 0; one empty:
    Dice 0, HD95 374). ``total_voxels`` is the native volume's voxel count, so the
    specificity counts the true negatives outside the crop too.
    """
    from scipy import ndimage as ndi

    tp = float(np.logical_and(pred, ref).sum())
    ps, rs = float(pred.sum()), float(ref.sum())
    fp, fn = ps - tp, rs - tp
    tn = total_voxels - tp - fp - fn
    if ps == 0 and rs == 0:
        return {"dice": 1.0, "sensitivity": 1.0, "specificity": 1.0, "hd95": 0.0}
    dice = 2 * tp / (ps + rs)
    sens = tp / rs if rs else 1.0
    spec = tn / (tn + fp) if tn + fp else 1.0
    if ps == 0 or rs == 0:
        return {"dice": dice, "sensitivity": sens, "specificity": spec, "hd95": 374.0}
    st = ndi.generate_binary_structure(3, 1)
    bp = pred & ~ndi.binary_erosion(pred, st)
    br = ref & ~ndi.binary_erosion(ref, st)
    dr = ndi.distance_transform_edt(~br, sampling=spacing)
    dp = ndi.distance_transform_edt(~bp, sampling=spacing)
    d = np.concatenate([dr[bp], dp[br]])
    return {"dice": dice, "sensitivity": sens, "specificity": spec,
            "hd95": float(np.percentile(d, 95))}


def score_labels(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                 total_voxels: int, hd: bool = True) -> dict[str, dict[str, float]]:
    """Per-region scores of internal label maps (cropped grids, same shape)."""
    pm, rm = L.region_masks(pred), L.region_masks(ref)
    out = {}
    for r in L.REGIONS:
        if hd:
            out[r] = _local_scores(pm[r], rm[r], spacing, total_voxels)
        else:
            a, b = pm[r], rm[r]
            s = float(a.sum() + b.sum())
            out[r] = {"dice": 1.0 if s == 0 else 2 * float((a & b).sum()) / s}
    return out


# ---------------------------------------------------------------------------------------
# fast evaluation on prepared working grids


class Prepared:
    """A cached case reduced to what :func:`watershed_work` needs for one ``factor``."""

    def __init__(self, path: Path, factor: int, healthy: bool = False,
                 missing: Sequence[str] = ()) -> None:
        from braintumor.preprocess import brain_mask
        from braintumor.watershed import lr_axis, make_grid, to_work

        d = load_cached(path)
        case = d["case"]
        self.case_id = path.stem
        if healthy:
            case = mirrored_healthy(case)
            self.case_id = healthy_id(path.stem)
        self.label = case.label
        self.spacing = case.spacing
        self.total = int(np.prod(d["shape"]))
        image = case.image
        if missing:  # as load_case fills them in, so the brain mask is the one a user's gets
            from braintumor.cases import MODALITIES, STAND_IN

            image = image.copy()
            for m in missing:
                image[MODALITIES.index(m)] = image[MODALITIES.index(STAND_IN[m])]
            case = replace(case, image=image)
        bn = brain_mask(case.image)
        self.grid = make_grid(bn, case.spacing, factor)
        self.brain_native = bn
        self.brain = to_work(self.grid, bn) >= 0.5
        self.lr = lr_axis(case.affine)
        self.missing = tuple(missing)
        self._raw = case.image
        # n4 -> (working-grid image, native T1 and T1ce for the native ET step)
        self._inputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._z: dict[tuple[int, int, int], np.ndarray] = {}
        self._zn: dict[tuple[int, int, int], np.ndarray] = {}
        self._flair: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    def inputs(self, n4: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The working-grid image and the native T1 and T1ce, with the first ``n4``
        modalities divided by their N4 bias field (``WatershedParams.n4``)."""
        from braintumor.watershed import n4_image, to_work

        if n4 not in self._inputs:
            image = n4_image(self._raw, self.brain_native, self.spacing, n4)
            self._inputs[n4] = (to_work(self.grid, image), np.ascontiguousarray(image[:2]))
        return self._inputs[n4]

    def native_z(self, erode: int, slab: int, n4: int = 0) -> np.ndarray:
        """:func:`braintumor.watershed.native_z` of T1 and T1ce over every slice."""
        from braintumor.watershed import native_z

        if (erode, slab, n4) not in self._zn:
            self._zn[(erode, slab, n4)] = native_z(self.inputs(n4)[1], self.brain_native,
                                                   slice(0, self.brain_native.shape[2]),
                                                   erode, slab)
        return self._zn[(erode, slab, n4)]

    def z(self, erode: int, slab: int, n4: int = 0) -> np.ndarray:
        from braintumor.watershed import robust_z

        if (erode, slab, n4) not in self._z:
            self._z[(erode, slab, n4)] = robust_z(self.inputs(n4)[0], self.brain, erode, slab)
        return self._z[(erode, slab, n4)]

    def run(self, p: Any) -> np.ndarray:
        """Native-cropped-grid labels for parameters ``p``."""
        return self.native_et(self.run_grid(p), p)

    def run_grid(self, p: Any) -> np.ndarray:
        """:meth:`run` without the native enhancing-tumour step."""
        return self.to_native(self.run_work(p), p.min_lesion_ml)

    def run_work(self, p: Any) -> np.ndarray:
        """:func:`braintumor.watershed.watershed_work`'s labels on the working grid."""
        from braintumor.watershed import watershed_work

        return watershed_work(self.z(p.stats_erode, p.slab, p.n4), self.brain,
                              self.grid.voxel_ml,
                              float(np.mean(self.grid.spacing)), p, self.lr, self.missing)

    def to_native(self, work: np.ndarray, min_lesion_ml: float = 1.0) -> np.ndarray:
        """Working-grid labels back on the native cropped grid, inside the brain, without
        the specks the step back makes, as :meth:`WatershedWork.native_labels`."""
        from braintumor.watershed import labels_from_work, without_specks

        lab = labels_from_work(self.grid, work)
        lab[~self.brain_native] = 0
        vox = float(np.prod(self.grid.spacing)) / self.grid.factor ** 3 / 1000.0
        return without_specks(lab, self.grid, work, vox, min_lesion_ml)

    def grow_edema(self, work: np.ndarray, p: Any) -> np.ndarray:
        """:func:`braintumor.watershed.grow_edema` of ``p`` on working-grid ``work``
        (labels computed with the step off), as :meth:`run_work` would apply it."""
        from braintumor.watershed import FLAIR, _smooth, brain_interior, grow_edema

        key = (p.stats_erode, p.slab, p.sigma, p.rim_mm, p.n4)
        if key not in self._flair:
            self._flair = {key: (
                _smooth(self.z(p.stats_erode, p.slab, p.n4)[FLAIR], p.sigma),
                brain_interior(self.brain, float(np.mean(self.grid.spacing)), p))}
        flair, interior = self._flair[key]
        return grow_edema(work, flair, interior, self.lr, p)

    def native_et(self, lab: np.ndarray, p: Any) -> np.ndarray:
        """The native enhancing-tumour step of ``p`` on :meth:`run_grid`'s labels."""
        from braintumor.watershed import ET_NATIVE_OFF, refine_et_native, without_modalities

        if self.grid.factor == 1 or p.et_native >= ET_NATIVE_OFF:
            return lab
        return refine_et_native(lab, self.inputs(p.n4)[1], self.brain_native,
                                without_modalities(p, self.missing),
                                z=self.native_z(p.stats_erode * p.factor, p.slab * p.factor,
                                                p.n4))


def evaluate_params(prepared: Sequence[Prepared], p: Any, hd: bool = True
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """case id -> region -> metric for parameters ``p``."""
    out = {}
    for c in prepared:
        t0 = time.perf_counter()
        pred = c.run(p)
        sc = score_labels(pred, c.label, c.spacing, c.total, hd=hd)
        sc["time"] = {"seconds": time.perf_counter() - t0}
        out[c.case_id] = sc
    return out


def mean_dice(scores: dict[str, dict[str, dict[str, float]]], ids: Sequence[str]) -> float:
    """Mean over cases and the three regions of the Dice."""
    return float(np.mean([scores[c][r]["dice"] for c in ids for r in L.REGIONS]))


# ---------------------------------------------------------------------------------------
# tuning

#: parameter -> ("float", lo, hi) | ("int", lo, hi) | ("cat", choices); the rest stay fixed
SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "sigma": ("float", 0.0, 1.5),
    "slab": ("cat", (0, 3, 5, 8)),
    "rim_mm": ("float", 0.0, 8.0),
    "w_t2": ("float", 0.0, 1.5),
    "w_t1": ("float", 0.0, 1.5),
    "csf_flair": ("float", -3.0, 0.0),
    "wt_hi": ("float", 1.0, 4.0),
    "wt_lo": ("float", -0.5, 2.0),
    "wt_compactness": ("cat", (0.0, 0.001, 0.01, 0.1)),
    "grad_sigma": ("float", 0.5, 2.0),
    "wt_peak": ("float", 2.0, 6.0),
    "rel_lesion": ("float", 0.01, 0.3),
    "et_k": ("float", 0.0, 1.0),
    "et_hi": ("float", 0.5, 4.0),
    "et_t1c": ("float", 0.0, 3.0),
    "et_lo": ("float", 0.0, 2.0),
    "ncr_t1c": ("float", -3.0, 0.0),
    "ed_t1c": ("float", -2.0, 1.0),
    "ed_edge": ("int", 0, 2),
    "core_compactness": ("cat", (0.0, 0.001, 0.01, 0.1)),
    "rim_close": ("int", 0, 3),
    "min_et_ml": ("float", 0.01, 0.5),
    "min_core_ml": ("float", 0.1, 3.0),
    "sym_fg": ("float", -0.5, 2.5),
    "grow_alpha": ("float", 0.0, 0.8),
    "grow_reach": ("int", 0, 4),
    "grow_min": ("float", 0.0, 1.0),
    "rim_core_ml": ("cat", (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 1e9)),
    "rim_core_close": ("int", 2, 7),
    "lesion_flair": ("float", -1.0, 1.5),
    "rim_core_frac": ("cat", (0.0, 0.03, 0.05, 0.08, 0.12)),
}


def _suggest(trial: Any, space: dict[str, tuple[Any, ...]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in (SEARCH_SPACE if space is None else space).items():
        if spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2])
        elif spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            out[name] = trial.suggest_categorical(name, list(spec[1]))
    return out


def tune_study(prepared: Sequence[Prepared], name: str, n_trials: int, storage: str,
               seed: int = 0, start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Maximise the mean Dice (cases x regions) of ``prepared`` with Optuna TPE.

    The study lives in ``storage`` under ``name`` and resumes where it stopped. Returns
    the best parameters (changes from the defaults).
    """
    import optuna

    from braintumor.watershed import params_from

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=15),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done and start:
        study.enqueue_trial({k: v for k, v in start.items() if k in SEARCH_SPACE})
    ids = [c.case_id for c in prepared]

    def objective(trial: Any) -> float:
        p = params_from(_suggest(trial))
        if p.wt_lo >= p.wt_hi:
            raise optuna.TrialPruned()
        sc = evaluate_params(prepared, p, hd=False)
        return mean_dice(sc, ids)

    remaining = n_trials - len(done)
    t0 = time.perf_counter()
    for i in range(max(0, remaining)):
        study.optimize(objective, n_trials=1)
        print(f"[{name}] trial {len(done) + i + 1}/{n_trials} best {study.best_value:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return dict(study.best_params)


def _params_json(params: dict[str, Any]) -> dict[str, Any]:
    from braintumor.watershed import params_from

    return asdict(params_from(params))


def search_space(missing: Sequence[str] = ()) -> dict[str, tuple[Any, ...]]:
    """:data:`SEARCH_SPACE` less the weights of ``missing`` modalities (always 0)."""
    from braintumor.watershed import DEFAULT_PARAMS, without_modalities

    fixed = without_modalities(DEFAULT_PARAMS, missing)
    return {n: s for n, s in SEARCH_SPACE.items()
            if getattr(fixed, n) == getattr(DEFAULT_PARAMS, n)}


def _prepare_all(factor: int, missing: Sequence[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """Every cached case on the work grid, plus the tumour-free brains made from the
    healthy hemisphere of one-sided cases (they belong to their source case's fold, and
    only an empty prediction scores Dice 1)."""
    ids = case_ids()
    if not ids:
        raise SystemExit("no cached cases: run `python -m braintumor.watershed_tune cache` first")
    print(f"preparing {len(ids)} cases", flush=True)
    prep: dict[str, Any] = {c: Prepared(CACHE / f"{c}.npz", factor, missing=missing)
                            for c in ids}
    for c in healthy_sources(ids):
        prep[healthy_id(c)] = Prepared(CACHE / f"{c}.npz", factor, healthy=True,
                                       missing=missing)
    return ids, prep


def run_cv(k: int, n_trials: int, factor: int = 2, out: Path = EXPERIMENTS,
           storage: str | None = None, final_trials: int | None = None) -> None:
    """K-fold CV: tune on the training folds, score the held-out fold (with HD95)."""
    from braintumor.watershed import DEFAULT_PARAMS, params_from

    storage = storage or f"sqlite:///{ROOT / 'cache' / 'watershed_optuna.db'}"
    out.mkdir(parents=True, exist_ok=True)
    ids, prep = _prepare_all(factor)
    start = {k_: v for k_, v in asdict(DEFAULT_PARAMS).items()}
    folds = [[*t, *(healthy_id(c) for c in t if healthy_id(c) in prep)]
             for t in folds_for(ids, k)]
    fold_params: dict[str, Any] = {}
    held: dict[str, Any] = {}
    for f, test in enumerate(folds):
        train = [prep[c] for c in prep if c not in test]
        best = tune_study(train, f"cv{k}_fold{f}_f{factor}", n_trials, storage, seed=f,
                          start=start)
        fold_params[str(f)] = {"test": test, "params": _params_json(best)}
        sc = evaluate_params([prep[c] for c in test], params_from(best), hd=True)
        for c in test:
            sc[c]["fold"] = {"fold": f}
        held.update(sc)
        (out / "cv_params.json").write_text(json.dumps(fold_params, indent=1))
        (out / "cv_heldout.json").write_text(json.dumps(held, indent=1))
        print(f"fold {f} held-out " + " ".join(
            f"{c}: " + ",".join(f"{sc[c][r]['dice']:.3f}" for r in L.REGIONS) for c in test),
            flush=True)
    write_table({c: v for c, v in held.items() if not c.endswith(HEALTHY_SUFFIX)},
                out / "cv_watershed", "watershed (CV held-out)")
    healthy = {c: v for c, v in held.items() if c.endswith(HEALTHY_SUFFIX)}
    (out / "cv_healthy.json").write_text(json.dumps(healthy, indent=1))
    best_all = tune_study(list(prep.values()), f"all_f{factor}", final_trials or n_trials,
                          storage, seed=100, start=start)
    (out / "params.json").write_text(json.dumps(_params_json(best_all), indent=1))
    print("tuned parameters for shipping:", json.dumps(_params_json(best_all)), flush=True)


def write_table(scores: dict[str, Any], stem: Path, label: str) -> None:
    """Per-case CSV and a Markdown summary (mean, median) of held-out scores."""
    rows = []
    for c, sc in sorted(scores.items()):
        row: dict[str, Any] = {"case": c, "fold": sc.get("fold", {}).get("fold", "")}
        for r in L.REGIONS:
            for m in ("dice", "sensitivity", "specificity", "hd95"):
                row[f"{r}_{m}"] = round(float(sc[r].get(m, math.nan)), 4)
        row["seconds"] = round(float(sc["time"]["seconds"]), 2)
        rows.append(row)
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"### {label}: {len(rows)} cases", "",
             "| region | Dice | sensitivity | specificity | HD95 (mm) | median Dice |",
             "|---|---|---|---|---|---|"]
    for r in L.REGIONS:
        d = [x[f"{r}_dice"] for x in rows]
        lines.append(
            f"| {r} | {np.mean(d):.3f} | {np.mean([x[f'{r}_sensitivity'] for x in rows]):.3f}"
            f" | {np.mean([x[f'{r}_specificity'] for x in rows]):.4f}"
            f" | {np.mean([x[f'{r}_hd95'] for x in rows]):.1f} | {np.median(d):.3f} |")
    lines += ["", "seconds per case (segmentation and scoring from the cache, HD95 included): "
              f"{np.mean([x['seconds'] for x in rows]):.2f}", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))


#: the native enhancing-tumour step's candidates: off, then thresholds x T1 weights x
#: T1ce floors x reaches (:data:`NATIVE_GRID`)
NATIVE_GRID: dict[str, tuple[Any, ...]] = {
    "et_native": (0.6, 0.8, 1.0, 1.2, 1.6),
    "et_native_k": (0.3, 0.5, 0.7),
    "et_native_t1c": (0.3, 0.6, 1.0),
    "et_native_reach": (0, 1, 2),
}
NATIVE_OUT = EXPERIMENTS / "native_et"


def native_candidates() -> list[dict[str, Any]]:
    """Off first (a tie goes to the watershed as it was), then the grid."""
    import itertools

    out: list[dict[str, Any]] = [{"et_native": 99.0}]
    for vals in itertools.product(*NATIVE_GRID.values()):
        out.append(dict(zip(NATIVE_GRID, vals, strict=True)))
    return out


def round_trip(prep: dict[str, Any], ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """case id -> region -> Dice of the expert outline itself after a round trip through
    the working grid (one-hot block mean, the most likely label, back as the watershed's
    labels come back): the best any working-grid segmentation could score."""
    from braintumor.watershed import labels_from_work, to_work

    out = {}
    for c in ids:
        pc = prep[c]
        onehot = np.stack([(pc.label == k).astype(np.float32) for k in range(4)])
        work = to_work(pc.grid, onehot).argmax(0).astype(np.uint8)
        back = labels_from_work(pc.grid, work)
        back[~pc.brain_native] = 0
        sc = score_labels(back, pc.label, pc.spacing, pc.total, hd=False)
        out[c] = {r: sc[r]["dice"] for r in L.REGIONS}
    return out


def reference_enhancement(factor: int = 2, out: Path = NATIVE_OUT) -> dict[str, Any]:
    """How bright the expert outline's enhancing tumour is on each case's own images:
    per case, its volume, the median native z(T1ce) and enhancement (z(T1ce) -
    ``et_native_k`` z(T1), the shipped step's map) of its voxels, and the share of them
    that pass the shipped step's thresholds. An ET that does not enhance cannot be found
    from the images by any rule; ``reference_et.json`` and ``reference_et.md``."""
    from braintumor.watershed import DEFAULT_PARAMS as P

    ids, prep = _prepare_all(factor)
    rows = {}
    for c in ids:
        pc = prep[c]
        z = pc.native_z(P.stats_erode * P.factor, P.slab * P.factor)
        et = pc.label == L.ET
        enh = z[1] - P.et_native_k * z[0]
        passing = (enh > P.et_native) & (z[1] > P.et_native_t1c)
        rows[c] = {"et_ml": float(et.sum() * np.prod(pc.spacing) / 1000),
                   "t1c_z_median": float(np.median(z[1][et])) if et.any() else math.nan,
                   "enhancement_median": float(np.median(enh[et])) if et.any() else math.nan,
                   "passing": float(passing[et].mean()) if et.any() else math.nan}
    out.mkdir(parents=True, exist_ok=True)
    (out / "reference_et.json").write_text(json.dumps(rows, indent=1))
    lines = ["| case | reference ET (mL) | median z(T1ce) | median enhancement | share "
             "passing the step's thresholds |", "|---|---|---|---|---|"]
    for c, r in rows.items():
        lines.append(f"| {c} | {r['et_ml']:.1f} | {r['t1c_z_median']:+.2f} | "
                     f"{r['enhancement_median']:+.2f} | {r['passing']:.2f} |")
    (out / "reference_et.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return rows


def run_native_cv(factor: int = 2, missing: Sequence[str] = (),
                  experiments: Path | None = None) -> dict[str, Any]:
    """Cross-validate the native enhancing-tumour step on top of the watershed's own CV.

    Each fold of the watershed CV (``experiments/watershed[/without_*]/cv_params.json``
    for scans with all four modalities or without ``missing``) keeps the parameters its
    search chose without its held-out cases and picks, on its training cases only, the
    candidate of :func:`native_candidates` with the best mean Dice (three regions); the
    held-out cases are scored with it, and without the step (which reproduces the
    watershed's published held-out rows). The candidate best on all cases over the
    shipped parameters is the shipped setting (``params.json``). Results go to
    ``native_et/`` beside that CV's own.
    """
    from braintumor.watershed import params_from, params_without, saved_params

    experiments = EXPERIMENTS if experiments is None else experiments
    root = experiments / ("without_" + "_".join(missing)) if missing else experiments
    ids, prep = _prepare_all(factor, missing)
    folds = json.loads((root / "cv_params.json").read_text())
    summary = _step_cv(
        prep, folds, lambda fp: params_from(saved_params(fp["params"])),
        params_without(missing).replace(et_native=99.0),
        lambda pc, p: pc.run_grid(p), lambda pc, grid, p: pc.native_et(grid, p),
        native_candidates(), NATIVE_GRID, root / "native_et", "native", "ET",
        ("watershed with the native enhancing-tumour step (CV held-out)",
         "the same folds' watershed without the step (CV held-out)"))
    real = [c for c in ids if c in prep]
    summary["round_trip"] = round_trip(prep, real)
    (root / "native_et" / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


#: the FLAIR edema growing's candidates (:class:`braintumor.watershed.WatershedParams`)
FLAIR_GRID: dict[str, tuple[Any, ...]] = {
    "flair_grow": (1.0, 1.4, 1.8, 2.2),
    "flair_asym": (0.25, 0.5, 1.0),
    "flair_reach": (8, 12, 16, 24),
}


def flair_candidates() -> list[dict[str, Any]]:
    """Off first (a tie keeps the watershed as it was), then the grid."""
    import itertools

    out: list[dict[str, Any]] = [{"flair_grow": 99.0}]
    for vals in itertools.product(*FLAIR_GRID.values()):
        out.append(dict(zip(FLAIR_GRID, vals, strict=True)))
    return out


def run_flair_cv(factor: int = 2, missing: Sequence[str] = (),
                 experiments: Path | None = None) -> dict[str, Any]:
    """Cross-validate the FLAIR edema growing on top of the native step's CV.

    Each fold keeps the parameters it had with the native enhancing-tumour step
    (``native_et/cv_params.json`` of the CV for all four modalities or without
    ``missing``) and picks, on its training cases only, the candidate of
    :func:`flair_candidates` with the best mean Dice; its held-out cases are scored with
    it, and without (which reproduces ``native_et/cv_watershed``). Results go to
    ``flair_edema/`` beside that CV's own.
    """
    from braintumor.watershed import params_from, params_without

    experiments = EXPERIMENTS if experiments is None else experiments
    root = experiments / ("without_" + "_".join(missing)) if missing else experiments
    _, prep = _prepare_all(factor, missing)
    folds = json.loads((root / "native_et" / "cv_params.json").read_text())

    def finish(pc: Prepared, work: np.ndarray, p: Any) -> np.ndarray:
        return pc.native_et(pc.to_native(pc.grow_edema(work, p), p.min_lesion_ml), p)

    return _step_cv(
        prep, folds, lambda fp: params_from(fp["params"]).replace(flair_grow=99.0),
        params_without(missing).replace(flair_grow=99.0),
        lambda pc, p: pc.run_work(p), finish, flair_candidates(), FLAIR_GRID,
        root / "flair_edema", "flair", "WT",
        ("watershed with the FLAIR edema growing (CV held-out)",
         "the same folds' watershed without it (CV held-out)"))


#: the bias-field correction's candidates (:class:`braintumor.watershed.WatershedParams`
#: ``n4``): none, T1 and T1ce, all four modalities
N4_GRID: dict[str, tuple[Any, ...]] = {"n4": (2, 4)}


def run_n4_cv(factor: int = 2, missing: Sequence[str] = (),
              experiments: Path | None = None) -> dict[str, Any]:
    """Cross-validate the N4 bias-field correction on top of the FLAIR edema growing's CV.

    Each fold keeps the parameters it had there (``flair_edema/cv_params.json`` of the CV
    for all four modalities or without ``missing``) and picks, on its training cases
    only, whether to correct none, T1 and T1ce, or all four modalities first (best mean
    Dice; ties go to none); its held-out cases are scored with it, and without (which
    reproduces ``flair_edema/cv_watershed``). Results go to ``n4/`` beside that CV's own.
    """
    from braintumor.watershed import params_from, params_without

    experiments = EXPERIMENTS if experiments is None else experiments
    root = experiments / ("without_" + "_".join(missing)) if missing else experiments
    _, prep = _prepare_all(factor, missing)
    folds = json.loads((root / "flair_edema" / "cv_params.json").read_text())
    cands: list[dict[str, Any]] = [{"n4": 0}] + [{"n4": n} for n in N4_GRID["n4"]]
    return _step_cv(
        prep, folds, lambda fp: params_from(fp["params"]).replace(n4=0),
        params_without(missing).replace(n4=0), lambda pc, p: None,
        lambda pc, start, p: pc.run(p), cands, N4_GRID, root / "n4", "n4", "ET",
        ("watershed with the bias-field correction chosen on the training folds "
         "(CV held-out)", "the same folds' watershed without it (CV held-out)"))


def _step_cv(prep: dict[str, Any], folds: dict[str, Any], base_of: Any, all_base: Any,
             precompute: Any, apply: Any, cands: list[dict[str, Any]],
             grid: dict[str, Any], out: Path, key: str, region: str,
             titles: tuple[str, str]) -> dict[str, Any]:
    """One added step chosen fold by fold on the training cases and scored held out.

    ``folds``: fold -> {"test": ids, "params": ...}; ``base_of(fold)``: that fold's
    parameters with the step off; ``precompute(case, p)``: what the step starts from;
    ``apply(case, start, p)``: native labels with the step of ``p``; ``cands``: the step's
    settings, off first. Writes ``cv_watershed.*`` (with), ``cv_without_step.*``,
    ``cv_params.json``, ``cv_heldout.json``, ``summary.json`` and ``params.json`` (the
    setting best on all cases over ``all_base``) under ``out``; ``region`` is the one
    the progress lines quote.
    """
    from braintumor.metrics import score_case
    from braintumor.watershed import params_from

    out.mkdir(parents=True, exist_ok=True)

    def choose(base: Any, cases: Sequence[str]) -> tuple[int, list[float]]:
        starts = {c: precompute(prep[c], base) for c in cases}
        means = []
        for cand in cands:
            p = base.replace(**cand)
            sc = {c: score_labels(apply(prep[c], starts[c], p), prep[c].label,
                                  prep[c].spacing, prep[c].total, hd=False) for c in cases}
            means.append(mean_dice(sc, list(cases)))
        return int(np.argmax(means)), means

    fold_params: dict[str, Any] = {}
    held: dict[str, Any] = {}
    before: dict[str, Any] = {}
    t0 = time.perf_counter()
    for f, fold in sorted(folds.items(), key=lambda kv: int(kv[0])):
        test = [c for c in fold["test"] if c in prep]
        train = [c for c in prep if c not in test]
        base = base_of(fold)
        best, means = choose(base, train)
        params = base.replace(**cands[best])
        fold_params[f] = {"test": test, key: cands[best],
                          "train_gain": means[best] - means[0], "params": asdict(params)}
        sc = evaluate_params([prep[c] for c in test], params, hd=True)
        old = evaluate_params([prep[c] for c in test], base, hd=True)
        for c in test:
            sc[c]["fold"] = old[c]["fold"] = {"fold": int(f)}
        held.update(sc)
        before.update(old)
        print(f"fold {f}: {cands[best]} (training gain {means[best] - means[0]:+.4f}); "
              + " ".join(f"{c}: {region} {old[c][region]['dice']:.3f} -> "
                         f"{sc[c][region]['dice']:.3f}"
                         for c in test if not c.endswith(HEALTHY_SUFFIX))
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    real = [c for c in held if not c.endswith(HEALTHY_SUFFIX)]
    write_table({c: held[c] for c in real}, out / "cv_watershed", titles[0])
    write_table({c: before[c] for c in real}, out / "cv_without_step", titles[1])
    best_all, means_all = choose(all_base, list(prep))
    shipped = cands[best_all]
    summary: dict[str, Any] = {
        "candidates": len(cands), "grid": grid, "all_cases": shipped,
        "all_cases_gain": means_all[best_all] - means_all[0],
        "healthy_predicted_voxels": {
            c: int(round((1 - held[c]["WT"]["specificity"]) * prep[c].total))
            for c in held if c.endswith(HEALTHY_SUFFIX)}}
    for name, res in (("with", held), ("without", before)):
        summary[name] = {r: {m: float(np.mean([res[c][r][m] for c in real]))
                             for m in ("dice", "hd95")} for r in L.REGIONS}
    # the HD95 of the results tables (BraTS 2023 surface definition, braintumor.metrics)
    by_case = {c: f for f, fp in fold_params.items() for c in fp["test"]}
    for name in ("with", "without"):
        vals: dict[str, list[float]] = {r: [] for r in L.REGIONS}
        for c in real:
            fp = fold_params[by_case[c]]
            p = params_from(fp["params"])
            p = p if name == "with" else base_of(folds[by_case[c]])
            got = score_case(prep[c].run(p), prep[c].label, prep[c].spacing, lesions=False)
            for r in L.REGIONS:
                vals[r].append(got[r]["hd95"])
        for r in L.REGIONS:
            summary[name][r]["hd95_surface"] = float(np.mean(vals[r]))
    (out / "cv_params.json").write_text(json.dumps(fold_params, indent=1))
    (out / "cv_heldout.json").write_text(json.dumps(held, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "params.json").write_text(json.dumps(shipped, indent=1))
    print("all cases choose", shipped, flush=True)
    return summary


def _missing(ap: argparse.ArgumentParser, without: str) -> tuple[str, ...]:
    """``--without``'s modalities (t1, t2 or both), or a usage error."""
    missing = tuple(m for m in without.lower().split(",") if m)
    if set(missing) - {"t1", "t2"}:
        ap.error("--without takes t1, t2 or t1,t2")
    return missing


#: ``tune`` settings a ``--config`` YAML may hold (flags given on the command line win),
#: with the defaults used when neither says; ``data`` is ``cache``'s
TUNE_DEFAULTS: dict[str, Any] = {"folds": 7, "trials": 50, "final_trials": None, "factor": 2,
                                 "search": "shared-random", "local": 0, "minutes": None,
                                 "study": None, "without": ""}
CONFIG_KEYS = ("data", *TUNE_DEFAULTS)


def read_tune_config(path: Path) -> dict[str, Any]:
    """The settings of a ``--config`` YAML (``configs/watershed.yaml``), checked: an
    unknown key or a value of the wrong kind is one sentence."""
    from braintumor.config import read_yaml_mapping
    from braintumor.errors import InputError

    raw = read_yaml_mapping(path)
    unknown = sorted(str(k) for k in raw if k not in CONFIG_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown keys {', '.join(unknown)} (known: "
                         f"{', '.join(CONFIG_KEYS)}).")
    kinds: dict[str, tuple[tuple[type, ...], str]] = {
        "folds": ((int,), "a whole number"), "trials": ((int,), "a whole number"),
        "final_trials": ((int,), "a whole number"), "factor": ((int,), "a whole number"),
        "local": ((int,), "a whole number"), "minutes": ((int, float), "a number"),
        "data": ((str,), "a path"), "study": ((str,), "a name"),
        "without": ((str,), "t1, t2 or t1,t2"), "search": ((str,), "a text")}
    for k, v in raw.items():
        if v is None and k in ("final_trials", "minutes", "study"):
            continue
        if isinstance(v, bool) or not isinstance(v, kinds[k][0]):
            raise InputError(f"{path}: {k} is {v!r}; it should be {kinds[k][1]}.")
    if raw.get("search", "shared-random") not in ("shared-random", "per-fold"):
        raise InputError(f"{path}: search is {raw['search']!r}; use shared-random or "
                         "per-fold.")
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``cache``, ``tune``, ``native``, ``flair``, ``n4``,
    ``reference``."""
    from braintumor.errors import run_guarded

    ap = argparse.ArgumentParser(prog="python -m braintumor.watershed_tune",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="crop the BraTS cases into cache/watershed")
    c.add_argument("--data", type=Path, default=None,
                   help="the BraTS cases (default: the config's data, else "
                        "../shared/data/brats2018 beside the repository)")
    c.add_argument("--config", type=Path, default=None,
                   help="read data from this YAML (configs/watershed.yaml)")
    t = sub.add_parser("tune", help="k-fold CV tuning; writes experiments/watershed")
    t.add_argument("--config", type=Path, default=None,
                   help="settings from this YAML (configs/watershed.yaml: the published "
                        "run's); flags given here override it")
    t.add_argument("--folds", type=int, default=None, help="default 7")
    t.add_argument("--trials", type=int, default=None, help="default 50")
    t.add_argument("--final-trials", type=int, default=None)
    t.add_argument("--factor", type=int, default=None, help="default 2")
    t.add_argument("--per-fold", action="store_true", default=None,
                   help="a separate TPE search per fold instead of one shared random search")
    t.add_argument("--local", type=int, default=None,
                   help="draw candidates as the defaults with this many parameters redrawn")
    t.add_argument("--minutes", type=float, default=None,
                   help="stop drawing candidates after this many minutes")
    t.add_argument("--study", default=None, help="Optuna study name (resumes)")
    t.add_argument("--without", default=None,
                   help="tune for scans lacking these modalities: t1, t2 or t1,t2; "
                        "results go to experiments/watershed/without_<...>/")
    steps = {"native": ("the native enhancing-tumour step on the watershed CV's folds",
                        "native_et", ""),
             "flair": ("the FLAIR edema growing on the native step's folds", "flair_edema",
                       "/native_et"),
             "n4": ("the N4 bias-field correction on the FLAIR edema growing's folds", "n4",
                    "/flair_edema")}
    steps_parsers = []
    for name, (what, folder, base) in steps.items():
        s = sub.add_parser(name, help=f"cross-validate {what}; writes "
                           f"experiments/watershed/{folder}")
        s.add_argument("--factor", type=int, default=2)
        s.add_argument("--without", default="",
                       help="for scans lacking these modalities (t1, t2 or t1,t2), on the "
                            f"folds of experiments/watershed/without_<...>{base}/")
        steps_parsers.append(s)
    r = sub.add_parser("reference", help="how bright each case's expert ET is on its own "
                       "images; writes experiments/watershed/native_et/reference_et.*")
    for s in (t, r, *steps_parsers):
        s.add_argument("--root", type=Path, default=EXPERIMENTS,
                       help="the results folder the steps read and write (default "
                            "experiments/watershed, the committed results: for a rerun "
                            "beside them, copy it and name the copy)")
    args = ap.parse_args(argv)
    return run_guarded(lambda: _run(ap, args))


def tune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``tune``'s settings: the defaults, then the config's, then the flags given."""
    conf = read_tune_config(args.config) if args.config is not None else {}
    out = {**TUNE_DEFAULTS, **{k: v for k, v in conf.items() if k != "data"}}
    if args.per_fold:
        out["search"] = "per-fold"
    for k in ("folds", "trials", "final_trials", "factor", "local", "minutes", "study",
              "without"):
        if getattr(args, k) is not None:
            out[k] = getattr(args, k)
    return out


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.cmd == "cache":
        data = args.data
        if data is None and args.config is not None:
            data = read_tune_config(args.config).get("data")
        cache_cases(Path(data) if data else ROOT.parent / "shared" / "data" / "brats2018")
    elif args.cmd == "native":
        run_native_cv(args.factor, _missing(ap, args.without), args.root)
    elif args.cmd == "reference":
        reference_enhancement(out=args.root / "native_et")
    elif args.cmd == "flair":
        run_flair_cv(args.factor, _missing(ap, args.without), args.root)
    elif args.cmd == "n4":
        run_n4_cv(args.factor, _missing(ap, args.without), args.root)
    elif args.cmd == "tune":
        st = tune_settings(args)
        if st["search"] == "per-fold":
            run_cv(st["folds"], st["trials"], st["factor"], out=args.root,
                   final_trials=st["final_trials"])
        else:
            missing = _missing(ap, st["without"])
            out = args.root / ("without_" + "_".join(missing)) if missing else args.root
            run_cv_shared(st["folds"], st["trials"], st["factor"], out=out, local=st["local"],
                          minutes=st["minutes"], study_name=st["study"], missing=missing)
    return 0


def local_draw(rng: np.random.Generator, k: int,
               space: dict[str, tuple[Any, ...]] | None = None) -> dict[str, Any]:
    """The shipped defaults with ``k`` search-space parameters redrawn uniformly."""
    from braintumor.watershed import DEFAULT_PARAMS

    space = SEARCH_SPACE if space is None else space
    out = {n: getattr(DEFAULT_PARAMS, n) for n in space}
    for name in rng.choice(sorted(space), size=k, replace=False):
        spec = space[str(name)]
        if spec[0] == "float":
            out[str(name)] = float(rng.uniform(spec[1], spec[2]))
        elif spec[0] == "int":
            out[str(name)] = int(rng.integers(spec[1], spec[2] + 1))
        else:
            out[str(name)] = spec[1][int(rng.integers(len(spec[1])))]
    return out


def run_cv_shared(k: int, n_trials: int, factor: int = 2, out: Path = EXPERIMENTS,
                  storage: str | None = None, seed: int = 0, local: int = 0,
                  minutes: float | None = None, study_name: str | None = None,
                  missing: Sequence[str] = ()) -> None:
    """K-fold CV with one shared random search.

    Every candidate parameter set is drawn at random (independently of any score) and
    scored on every case once; each fold then picks the candidate with the best mean
    Dice on its *training* cases and is scored on its held-out cases with those. Since
    the drawing never looks at a score, this is exact cross-validation of "random search
    + pick the best", at a seventh of the cost of a separate search per fold. The
    shipped defaults are the candidate best on all cases.

    ``local`` > 0 draws each candidate as the shipped defaults with ``local`` parameters
    redrawn (still blind to scores; in 24 dimensions a uniform draw almost never beats
    hand-set values); ``minutes`` stops drawing after that long and scores what exists.
    ``missing`` (``"t1"``, ``"t2"``): tune the watershed for scans without them.
    """
    import optuna

    from braintumor.watershed import DEFAULT_PARAMS, without_modalities
    from braintumor.watershed import params_from as base_params

    def params_from(params: dict[str, Any]) -> Any:
        return without_modalities(base_params(params), missing)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or f"sqlite:///{ROOT / 'cache' / 'watershed_optuna.db'}"
    out.mkdir(parents=True, exist_ok=True)
    ids, prep = _prepare_all(factor, missing)
    space = search_space(missing)
    name = study_name or f"shared_random_f{factor}_s{seed}" + (f"_local{local}" if local else "")
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize",
        load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=seed))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        study.enqueue_trial({n: v for n, v in asdict(DEFAULT_PARAMS).items()
                             if n in space})
    rng = np.random.default_rng(seed + 1000 * len(study.trials))

    def objective(trial: Any) -> float:
        p = params_from(_suggest(trial, space))
        if p.wt_lo >= p.wt_hi:
            raise optuna.TrialPruned()
        sc = evaluate_params(list(prep.values()), p, hd=False)
        per_case = {c: float(np.mean([sc[c][r]["dice"] for r in L.REGIONS])) for c in sc}
        trial.set_user_attr("per_case", per_case)
        return float(np.mean(list(per_case.values())))

    t0 = time.perf_counter()
    for i in range(max(0, n_trials - len(done))):
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            print(f"time budget of {minutes} min spent", flush=True)
            break
        if local and (done or i > 0):
            study.enqueue_trial(local_draw(rng, local, space))
        study.optimize(objective, n_trials=1)
        print(f"trial {len(done) + i + 1}/{n_trials} best {study.best_value:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"{len(trials)} candidates scored; cross-validating the choice", flush=True)
    folds = [[*t, *(healthy_id(c) for c in t if healthy_id(c) in prep)]
             for t in folds_for(ids, k)]
    fold_params: dict[str, Any] = {}
    held: dict[str, Any] = {}
    for f, test in enumerate(folds):
        train = [c for c in prep if c not in test]
        best = max(trials, key=lambda t: np.mean([t.user_attrs["per_case"][c] for c in train]))
        params = params_from(best.params)
        fold_params[str(f)] = {"test": test, "trial": best.number, "params": asdict(params)}
        sc = evaluate_params([prep[c] for c in test], params, hd=True)
        for c in test:
            sc[c]["fold"] = {"fold": f}
        held.update(sc)
        print(f"fold {f} (trial {best.number}) held-out " + " ".join(
            f"{c}: " + ",".join(f"{sc[c][r]['dice']:.3f}" for r in L.REGIONS) for c in test),
            flush=True)
    (out / "cv_params.json").write_text(json.dumps(fold_params, indent=1))
    (out / "cv_heldout.json").write_text(json.dumps(held, indent=1))
    write_table({c: v for c, v in held.items() if not c.endswith(HEALTHY_SUFFIX)},
                out / "cv_watershed", "watershed (CV held-out)" + (
                    f", without {' and '.join(m.upper() for m in missing)}" if missing else ""))
    healthy = {c: {"tumour_voxels_predicted": int(round(
        (1 - v["WT"]["specificity"]) * prep[c].total))} for c, v in held.items()
        if c.endswith(HEALTHY_SUFFIX)}
    (out / "cv_healthy.json").write_text(json.dumps(healthy, indent=1))
    best_all = max(trials, key=lambda t: float(t.value or 0.0))
    (out / "params.json").write_text(json.dumps(asdict(params_from(best_all.params)),
                                                indent=1))
    print("tuned parameters for shipping:", json.dumps(best_all.params), flush=True)


if __name__ == "__main__":
    sys.exit(main())
