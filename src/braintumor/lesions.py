"""Split a tumour label map into separate lesions.

Connected components (26-connectivity) are lesions; where two lesions touch, a
component is split further by a watershed on its distance transform (in mm), seeded by
the distance maxima that stand out by at least ``min_depth_mm`` from the saddle between
them (the regional maxima of the h-dome reconstruction, one per dome even where it has
two equally high peaks), so a neck between two blobs splits and a bumpy single lesion
does not.
Used for the lesion count and per-lesion volumes of a report and by lesion-wise metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

from braintumor.diameters import LESION_FLOOR_ML  # noqa: F401 - the floor, kept light
from braintumor.errors import InputError

_STRUCT26 = ndi.generate_binary_structure(3, 3)


def split_lesions(labels: np.ndarray, spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
                  min_depth_mm: float = 3.0, min_volume_ml: float = 0.0
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Lesions of a label map ``(X, Y, Z)`` (any value above zero is tumour, in any
    label convention; a negative value or a NaN, which no convention holds
    (:mod:`braintumor.labels`), is refused, as is an empty array).

    ``spacing``: voxel size (mm), three sizes or one for every axis. ``min_depth_mm``:
    how much deeper (distance to the lesion border, mm) two centres must be than the
    neck joining them to count as two lesions. ``min_volume_ml``: smaller pieces are
    merged into a touching lesion or, if alone, dropped.

    Returns ``(lesion_map, lesions)``: ``lesion_map`` ``(X, Y, Z)`` int32 with 0 for
    background and 1..N per lesion (largest first), and one dict per lesion with
    ``id``, ``volume_ml``, ``voxels`` and ``centroid`` (voxel indices, float x, y, z).
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise InputError(f"A label map must be 3D (X, Y, Z); got shape {lab.shape}.")
    if not lab.size:
        raise InputError(f"The label map {lab.shape} holds no voxels.")
    if lab.dtype.kind not in "biuf":
        raise InputError(f"The label map holds {lab.dtype} values; labels are numbers, "
                         "0 for background.")
    if lab.dtype.kind in "if":
        lo = lab.min()
        if not lo >= 0:  # a NaN fails too
            raise InputError(f"The label map holds {float(lo):g}; labels are 0 for "
                             "background and positive whole numbers for tumour.")
    try:  # one number is every axis's size, as the metrics take it
        if np.ndim(spacing) == 0:
            sp: tuple[float, ...] = (float(spacing),) * 3  # type: ignore[arg-type]
        else:
            sp = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        sp = ()
    # a NaN or infinite size never lets the dome reconstruction finish
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"Voxel spacing {spacing!r} must be three positive, finite sizes "
                         "in mm (or one for every axis).")
    voxel_ml = float(np.prod(sp)) / 1000.0
    tumour = lab > 0
    out = np.zeros(lab.shape, dtype=np.int32)
    comp, n = ndi.label(tumour, structure=_STRUCT26)
    next_id = 1
    for i, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        # one voxel of padding so the distance sees the border everywhere
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = comp[sl] == i
        dist = ndi.distance_transform_edt(m, sampling=sp)
        peaks = _dome_tops(dist, min_depth_mm) if min_depth_mm > 0 else \
            (dist == dist.max()) & m
        mk, nk = ndi.label(peaks & m, structure=_STRUCT26)
        if nk <= 1:
            pieces = m.astype(np.int32)
        else:
            pieces = watershed(-dist, mk, mask=m).astype(np.int32)
        if min_volume_ml > 0 and nk > 1:
            pieces = _merge_small(pieces, min_volume_ml / voxel_ml)
        view = out[sl]
        for k in np.unique(pieces[pieces > 0]):
            view[pieces == k] = next_id
            next_id += 1
    _ = n
    # renumber, largest first, dropping pieces under the minimum
    sizes = np.bincount(out.ravel())
    order = [k for k in np.argsort(-sizes[1:], kind="stable") + 1
             if sizes[k] > 0 and sizes[k] * voxel_ml >= min_volume_ml]
    lut = np.zeros(len(sizes), dtype=np.int32)
    for new, old in enumerate(order, start=1):
        lut[old] = new
    out = lut[out]
    lesions: list[dict[str, Any]] = []
    if order:
        cents = ndi.center_of_mass(np.ones(lab.shape), out, range(1, len(order) + 1))
        for new, old in enumerate(order, start=1):
            lesions.append({
                "id": new,
                "voxels": int(sizes[old]),
                "volume_ml": float(sizes[old] * voxel_ml),
                "centroid": tuple(float(c) for c in cents[new - 1]),
            })
    return out, lesions


def _dome_tops(dist: np.ndarray, depth: float) -> np.ndarray:
    """One marker per peak of ``dist`` standing at least ``depth`` above the saddle to any
    higher one: the regional maxima of the reconstruction of ``dist - depth`` under
    ``dist`` (a dome's top is one flat plateau there). ``h_maxima`` marks only the voxels
    at the very peak height, so two equally high peaks under one dome, joined by a neck
    shallower than ``depth``, gave two markers and split one lesion."""
    tops = reconstruction(dist - depth, dist, method="dilation")
    return np.asarray(local_maxima(tops), dtype=bool)


def _merge_small(pieces: np.ndarray, min_voxels: float) -> np.ndarray:
    """Merge pieces under ``min_voxels`` into the touching piece they share most faces
    with (pieces of one component always touch another)."""
    while True:
        sizes = np.bincount(pieces.ravel())
        small = [k for k in range(1, len(sizes)) if 0 < sizes[k] < min_voxels]
        if not small or (sizes[1:] > 0).sum() <= 1:
            return pieces
        k = min(small, key=lambda j: sizes[j])
        ring = ndi.binary_dilation(pieces == k, structure=_STRUCT26) & (pieces > 0) & \
            (pieces != k)
        if not ring.any():
            return pieces
        target = np.bincount(pieces[ring]).argmax()
        pieces[pieces == k] = target


def lesion_count(labels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 **kw: Any) -> int:
    """Number of separate lesions in ``labels``."""
    return len(split_lesions(labels, spacing, **kw)[1])
