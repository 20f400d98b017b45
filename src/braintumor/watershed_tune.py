"""Cross-validated tuning and evaluation of the watershed segmenters.

Run as a module::

    nice -n 10 python -m braintumor.watershed_tune cache --data ../shared/data/brats2018
    nice -n 10 python -m braintumor.watershed_tune tune  --folds 7 --trials 60
    nice -n 10 python -m braintumor.watershed_tune evaluate --params experiments/watershed/params.json

* ``cache``: loads each BraTS case once, crops it to the brain (plus a margin) and stores
  ``image`` (int16/float16 ``(4, x, y, z)``), ``label`` (internal, ``(x, y, z)``), the
  crop box and the native shape as ``cache/watershed/<case>.npz`` (an ignored folder).
  Running the segmenter on the cropped case gives the same labels as on the full case,
  since the segmenter crops to the brain itself.
* ``tune``: per fold, an Optuna study (SQLite storage under ``cache/``, so it resumes)
  maximises the mean training-fold Dice; the held-out fold is scored with the best
  parameters only. Results go to ``experiments/watershed/``.
* ``evaluate``: scores a parameter set (or the shipped defaults) on every case, and the
  hybrid method against CNN-alone when cross-validated CNN probability maps exist under
  ``cache/cv_probs/<case>.npz``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "cache" / "watershed"
EXPERIMENTS = ROOT / "experiments" / "watershed"
CV_PROBS = ROOT / "cache" / "cv_probs"

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
        img = case.image[(slice(None), *box)]
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

    def __init__(self, path: Path, factor: int) -> None:
        from braintumor.preprocess import brain_mask
        from braintumor.watershed import make_grid, robust_z, to_work

        d = load_cached(path)
        case = d["case"]
        self.case_id = path.stem
        self.label = case.label
        self.spacing = case.spacing
        self.total = int(np.prod(d["shape"]))
        bn = brain_mask(case.image)
        self.grid = make_grid(bn, case.spacing, factor)
        self.brain_native = bn
        img = to_work(self.grid, case.image)
        self.brain = to_work(self.grid, bn) >= 0.5
        self.img = img
        self._z: dict[int, np.ndarray] = {}

    def z(self, erode: int) -> np.ndarray:
        from braintumor.watershed import robust_z

        if erode not in self._z:
            self._z[erode] = robust_z(self.img, self.brain, erode)
        return self._z[erode]

    def run(self, p: Any) -> np.ndarray:
        """Native-cropped-grid labels for parameters ``p``."""
        from braintumor.watershed import labels_from_work, watershed_work

        work = watershed_work(self.z(p.stats_erode), self.brain, self.grid.voxel_ml,
                              float(np.mean(self.grid.spacing)), p)
        lab = labels_from_work(self.grid, work)
        lab[~self.brain_native] = 0
        return lab


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
