"""Measurements the page shows: sub-region and region volumes (mL), lesion count,
bidimensional diameters (RANO) and, when a reference label map was given, the BraTS
metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.diameters import LESION_FLOOR_ML as _LESION_FLOOR_ML

#: (key, name, internal label values) in the order the page lists them
VOLUME_ROWS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("NCR", "Necrotic / non-enhancing core", (L.NCR,)),
    ("ED", "Edema", (L.ED,)),
    ("ET", "Enhancing tumour", (L.ET,)),
    ("TC", "Tumour core (NCR + ET)", (L.NCR, L.ET)),
    ("WT", "Whole tumour (all)", (L.NCR, L.ED, L.ET)),
)


def volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume in mL of each sub-region (NCR, ED, ET) and region (TC, WT).

    ``labels``: ``(X, Y, Z)`` internal labels; ``voxel_ml``: one voxel's volume in mL.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=4)
    # to 1e-6 mL, as the reports keep them: a region present never rounds to 0
    return {key: round(float(sum(int(counts[v]) for v in vals)) * voxel_ml, 6)
            for key, _, vals in VOLUME_ROWS}


#: the smallest lesion the lesion count and table list (mL), as the diameters
LESION_FLOOR_ML = _LESION_FLOOR_ML


def lesions(labels: np.ndarray, spacing: tuple[float, float, float],
            min_volume_ml: float = LESION_FLOOR_ML) -> list[dict[str, Any]]:
    """Connected tumour lesions of ``min_volume_ml`` or more: ``[dict(id, volume_ml,
    voxels, centroid)]``.

    Uses :func:`braintumor.lesions.split_lesions` when present, else connected
    components of the whole tumour with 26-connectivity (the BraTS 2023 rule).
    """
    import importlib

    try:
        split = importlib.import_module("braintumor.lesions").split_lesions
    except (ImportError, AttributeError):
        split = None
    if split is not None:
        # lesions live in the tumour's bounding box: splitting only that box is several
        # times faster on a full-size case and gives the same lesions
        wt = np.asarray(labels) > 0
        if not wt.any():
            return []
        idx = np.argwhere(wt)
        lo = np.maximum(idx.min(0) - 2, 0)
        hi = np.minimum(idx.max(0) + 3, wt.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        _, found = split(np.asarray(labels)[box], spacing, min_volume_ml=min_volume_ml)
        out = []
        for d in found:
            d = dict(d)
            if d.get("centroid") is not None:
                d["centroid"] = [float(c) + float(o) for c, o in
                                 zip(d["centroid"], lo, strict=True)]
            out.append(_plain(d))
        return out
    from scipy import ndimage

    wt = np.asarray(labels) > 0
    comp, n = ndimage.label(wt, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(wt, comp, idx)
    cents = ndimage.center_of_mass(wt, comp, idx)
    vox_ml = float(np.prod(spacing)) / 1000.0
    out = [{"id": int(i), "voxels": int(s), "volume_ml": round(float(s) * vox_ml, 3),
            "centroid": [round(float(c), 1) for c in cen]}
           for i, s, cen in zip(idx, sizes, cents, strict=True) if s * vox_ml >= min_volume_ml]
    return sorted(out, key=lambda d: -d["voxels"])


def metrics(pred: np.ndarray, ref: np.ndarray,
            spacing: tuple[float, float, float]) -> dict[str, Any] | None:
    """Per-region metrics from :func:`braintumor.metrics.score_case`, or None when that
    module is not part of this build."""
    try:
        from braintumor.metrics import score_case
    except ImportError:
        return None
    return _plain(score_case(pred, ref, spacing))


def summary(labels: np.ndarray, spacing: tuple[float, float, float],
            reference: np.ndarray | None = None, quick: bool = False,
            affine: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the measurements panel shows, JSON-ready.

    ``quick``: volumes only (lesions, diameters and metrics left None), to show at once
    while the rest is computed. ``affine``: the scan's geometry, for the bidimensional
    diameters (:func:`braintumor.diameters.rano`); without it they stay None.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, Any] = {
        "volumes_ml": volumes_ml(labels, voxel_ml),
        "volume_rows": [{"key": k, "name": n} for k, n, _ in VOLUME_ROWS],
        "lesion_count": None,
        "lesions": [],
        "voxel_ml": voxel_ml,
        "diameters": None,
        "metrics": None,
        "metrics_note": "",
    }
    if quick:
        return out
    les = lesions(labels, spacing)
    out["lesion_count"] = len(les)
    out["lesions"] = les[:50]
    if affine is not None:
        from braintumor.diameters import rano

        out["diameters"] = _plain(rano(labels, affine))
    if reference is not None:
        m = metrics(labels, reference, spacing)
        out["metrics"] = m
        if m is None:
            out["metrics_note"] = "Metrics need braintumor.metrics, which this build lacks."
    return out


def _plain(obj: Any) -> Any:
    """Numpy scalars/arrays -> Python; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
