"""Segmentation metrics by the official BraTS definitions (pure numpy / scipy).

Everything here works on boolean masks ``(X, Y, Z)`` (or ``(H, W)`` for 2D) and a voxel
spacing in mm; :func:`score_case` works on internal label maps (see
:mod:`braintumor.labels`) and scores the regions WT, TC and ET.

Definitions
-----------
Dice
    ``2 |P & R| / (|P| + |R|)``.
Sensitivity
    ``|P & R| / |R|`` (true positive rate).
Specificity
    ``|~P & ~R| / |~R|`` (true negative rate, over the whole array).
HD95 (mm)
    95th percentile Hausdorff distance. Three definitions are in use by BraTS tools and
    all three are available through ``method``:

    ``"surface"`` (default)
        The BraTS 2023 challenge definition: its ranking code calls DeepMind's
        ``surface-distance`` package. The surface is the marching-cubes surface of the
        mask: surface elements ("surfels") sit on the grid of voxel corners, one per
        2x2x2 neighbourhood that is neither all inside nor all outside, each weighted by
        its area in mm^2 (the classic Lorensen marching-cubes triangles, spacing
        honoured). For each direction (reference -> prediction and back) the distances
        from every surfel to the nearest surfel of the other surface are sorted and the
        first one whose cumulative area reaches 95 % is taken; HD95 is the larger of
        the two.
    ``"voxel"``
        The ``brats-evaluation`` package (BraTS 2024+, built on ``panoptica``): border
        voxels are the mask minus its erosion by the 6-neighbourhood (voxels on the
        array edge count as border); distances from every border voxel centre to the
        nearest border voxel of the other mask, both directions pooled, and
        ``numpy.percentile(..., 95)`` with linear interpolation.
    ``"voxel-directed"``
        MONAI's ``compute_hausdorff_distance(percentile=95)``: the same border voxels,
        but the percentile is taken per direction (linear interpolation) and HD95 is
        the larger of the two.

    All three measure Euclidean distance in mm with the voxel spacing. They agree on a
    pure translation of a box but generally differ by a fraction of a voxel; the tests
    check each against its own reference implementation to 0.01 mm.

Empty masks (every metric documents the same rules)
    * reference and prediction both empty: Dice 1, sensitivity 1, HD95 0 mm;
    * exactly one of them empty: Dice 0, HD95 :data:`EMPTY_HD95` = 374 mm (the BraTS
      2023 penalty, about the diagonal of the 240x240x155 1 mm BraTS grid); with an
      empty reference, sensitivity is 0 for any non-empty prediction (as the BraTS
      2023 code computes it, ``0 / (0 + eps)``);
    * specificity with no negative voxel at all (the reference fills the array): 1.

    374 mm replaces only a distance that does not exist: a measured HD95 is never capped
    (the BraTS 2023 code replaces only the infinite distance of an empty side), so on a
    grid larger than BraTS's a prediction farther away than 374 mm scores its distance.

Lesion-wise Dice and HD95 (BraTS 2023)
    As the BraTS 2023 challenge code (``get_lesion_wise_results``) computes them:

    1. connected components of the reference and the prediction, 26-connectivity;
    2. the reference is dilated ``dilation`` times (3 for gliomas) with the
       18-neighbourhood structure; reference components falling in one connected
       component of the dilated reference are merged into one lesion (nearby
       fragments count as one lesion; the reference voxels themselves do not change);
    3. for every reference lesion, the predicted components touching its dilated
       extent are its matches (one predicted component may match several lesions);
       the lesion's Dice and HD95 are computed between the lesion and the union of its
       matches; a lesion without a match (a miss) scores Dice 0 and HD95 374;
    4. predicted components touching no dilated lesion are false positives and score
       Dice 0 and HD95 374 each;
    5. reference lesions of volume ``<= min_volume`` mm^3 (50 for gliomas) are left
       out of the average, whether found or missed (their matches are not false
       positives);
    6. lesion-wise Dice = sum of lesion Dice / (lesions kept + false positives), and the
       same for HD95 (false positives adding 374 each). With no lesion kept and no
       false positive the scores are Dice 1 and HD95 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from braintumor.errors import InputError

#: HD95 (mm) when exactly one of prediction and reference is empty (BraTS 2023 penalty).
EMPTY_HD95 = 374.0
#: BraTS 2023 glioma rules for lesion-wise scores.
LESION_DILATION = 3
LESION_MIN_VOLUME_MM3 = 50.0

HD95Method = Literal["surface", "voxel", "voxel-directed"]
HD95_METHODS: tuple[str, ...] = ("surface", "voxel", "voxel-directed")

#: Columns of one region's scores, in the order reports print them.
SCORE_KEYS: tuple[str, ...] = (
    "dice",
    "sensitivity",
    "specificity",
    "hd95",
    "lesion_dice",
    "lesion_hd95",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "ref_volume_ml",
    "pred_volume_ml",
)


# --------------------------------------------------------------------------- helpers


def _pair(pred: np.ndarray, ref: np.ndarray, spatial: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """Two masks of one shape as booleans; ``spatial``: masks whose surfaces are measured,
    so 3D ``(X, Y, Z)`` or 2D ``(H, W)`` only."""
    p = np.asarray(pred).astype(bool, copy=False)
    r = np.asarray(ref).astype(bool, copy=False)
    if p.shape != r.shape:
        raise InputError(
            f"The prediction's shape {p.shape} differs from the reference's {r.shape}."
        )
    if spatial:
        _check_spatial(p.shape)
    return p, r


def _check_spatial(shape: tuple[int, ...], what: str = "mask",
                   hint: str = "score one region (one channel) at a time") -> None:
    if len(shape) not in (2, 3):
        raise InputError(f"A {what} must be 3D (X, Y, Z) or 2D (H, W), not of shape "
                         f"{shape}{': ' + hint if len(shape) > 3 else ''}.")


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        if np.ndim(spacing) == 0:
            sp = (float(spacing),) * ndim  # type: ignore[arg-type]
        else:
            sp = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"Voxel spacing {spacing!r} must be sizes in mm.") from None
    if len(sp) != ndim:
        raise InputError(f"Voxel spacing {sp} has {len(sp)} values for a {ndim}D mask.")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"Voxel spacing {sp} must hold finite sizes above 0 mm.")
    return sp


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` voxels
    on each side (clipped to the array); None for an empty mask."""
    m = np.asarray(mask)
    out = []
    for ax in range(m.ndim):
        proj = np.any(m, axis=tuple(a for a in range(m.ndim) if a != ax))
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        lo = max(int(idx[0]) - margin, 0)
        hi = min(int(idx[-1]) + 1 + margin, m.shape[ax])
        out.append(slice(lo, hi))
    return tuple(out)


def confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """Voxel counts ``(tp, fp, fn, tn)`` of two boolean masks of one shape."""
    p, r = _pair(pred, ref)
    tp = int(np.count_nonzero(p & r))
    n_p = int(np.count_nonzero(p))
    n_r = int(np.count_nonzero(r))
    fp, fn = n_p - tp, n_r - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _dice(tp: int, fp: int, fn: int) -> float:
    if tp + fp + fn == 0:
        return 1.0  # both empty
    return 2.0 * tp / (2.0 * tp + fp + fn)


def _sensitivity(tp: int, fp: int, fn: int) -> float:
    if tp + fn == 0:
        return 1.0 if fp == 0 else 0.0  # empty reference
    return tp / (tp + fn)


def _specificity(fp: int, tn: int) -> float:
    if tn + fp == 0:
        return 1.0  # no negative voxel at all
    return tn / (tn + fp)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; both empty -> 1.0, one empty -> 0.0."""
    tp, fp, fn, _ = confusion(pred, ref)
    return _dice(tp, fp, fn)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True positive rate ``|P & R| / |R|``; empty reference: 1.0 if the prediction is
    empty too, else 0.0."""
    tp, fp, fn, _ = confusion(pred, ref)
    return _sensitivity(tp, fp, fn)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True negative rate ``|~P & ~R| / |~R|`` over the whole array; 1.0 when the
    reference has no negative voxel."""
    _, fp, _, tn = confusion(pred, ref)
    return _specificity(fp, tn)


# ------------------------------------------------------------------ surface distances

#: bit of each corner of a 2x2x2 (2x2) neighbourhood in the neighbour code
_KERNEL_3D = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
_KERNEL_2D = np.array([[8, 4], [2, 1]], dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def _unit_area_vectors() -> tuple[np.ndarray, ...]:
    """For each of the 256 neighbour codes, the area vectors ``(T, 3)`` of its
    marching-cubes triangles in a unit cube (vertices on edge midpoints).

    Patterns with more than four corners inside use the triangles of their complement,
    as the classic marching-cubes table (and so the ``surface-distance`` package) does.
    """
    from skimage.measure import marching_cubes

    vecs: list[np.ndarray] = [np.zeros((0, 3))] * 256
    for code in range(1, 255):
        if bin(code).count("1") > 4:
            continue
        cube = ((_KERNEL_3D & code) > 0).astype(np.float32)
        verts, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen",
                                            allow_degenerate=True)
        v = verts.astype(np.float64)
        tri = v[faces]
        vecs[code] = 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for code in range(1, 255):
        if bin(code).count("1") > 4:
            vecs[code] = vecs[255 - code]
    return tuple(vecs)


@functools.lru_cache(maxsize=32)
def surfel_area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Area (mm^2, 3D) or length (mm, 2D) of the surface element of every neighbour
    code ``(256,)`` / ``(16,)`` for a voxel spacing in mm."""
    if len(spacing) == 2:
        s0, s1 = spacing
        diag = 0.5 * float(np.hypot(s0, s1))
        table = np.zeros(16)
        for code in range(1, 15):
            corners = (_KERNEL_2D & code) > 0
            n = int(corners.sum())
            if n in (1, 3):
                table[code] = diag
            elif corners[0].all() or corners[1].all():  # one row inside: cut across axis 1
                table[code] = s1
            elif corners[:, 0].all() or corners[:, 1].all():
                table[code] = s0
            else:  # two opposite corners: two cuts
                table[code] = 2 * diag
        return table
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])  # how an area vector scales with spacing
    table = np.zeros(256)
    for code, vec in enumerate(_unit_area_vectors()):
        if len(vec):
            table[code] = float(np.linalg.norm(vec * scale, axis=1).sum())
    return table


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every voxel corner: ``mask`` ``(X, Y, Z)`` -> ``(X+1, Y+1, Z+1)``
    uint8 (each corner sees the 2x2x2 voxels around it; outside the array is empty).

    The code is the sum of :data:`_KERNEL_3D` over the inside voxels; built one axis at a
    time (three shifted passes instead of eight), each axis adding the next bits.
    """
    codes = np.pad(mask.astype(np.uint8), 1)
    for ax in range(mask.ndim - 1, -1, -1):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        bits = mask.ndim - 1 - ax  # bits already packed by the later axes
        codes = (codes[tuple(lo)] << (1 << bits)) | codes[tuple(hi)]
    return codes


@dataclass
class Surface:
    """The surface elements of one mask (one HD95 method).

    ``cells``: ``(N, ndim)`` integer positions in the array given (voxel-corner indices
    for "surface", where corner ``c`` sits between voxels ``c - 1`` and ``c``; voxel
    indices for the voxel methods); ``points``: the same in mm; ``weights``: the
    elements' areas in mm^2 ("surface") or ones.
    """

    cells: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    method: str

    @property
    def empty(self) -> bool:
        return self.cells.shape[0] == 0

    def labels_from(self, label_map: np.ndarray) -> np.ndarray:
        """The label of ``label_map`` (same shape as the mask) under every element.

        Two 26-connected components never share a 2x2x2 corner neighbourhood (all its
        voxels are mutual 26-neighbours), so each corner surfel belongs to exactly one
        component and the surfels of a union of components are the union of theirs:
        per-lesion distances can be taken from subsets of the whole surface.
        """
        if self.method != "surface":
            return label_map[tuple(self.cells.T)]
        pad = np.pad(label_map, 1)  # voxel v is pad[v + 1]; corner c sees pad[c + o]
        out = np.zeros(self.cells.shape[0], dtype=label_map.dtype)
        for off in np.ndindex(*((2,) * label_map.ndim)):
            np.maximum(out, pad[tuple((self.cells + np.array(off)).T)], out=out)
        return out


def surface_of(mask: np.ndarray, spacing: Sequence[float] | float | None = None,
               method: HD95Method | str = "surface") -> Surface:
    """Surface elements of a boolean mask ``(X, Y, Z)`` or ``(H, W)`` by ``method``.

    Work happens in the mask's bounding box (one voxel of margin), so the cost follows
    the object, not the array.
    """
    if method not in HD95_METHODS:
        raise InputError(f"Unknown HD95 method {method!r}; use one of {', '.join(HD95_METHODS)}.")
    m = np.asarray(mask).astype(bool, copy=False)
    _check_spatial(m.shape)
    sp = np.asarray(_spacing(spacing, m.ndim))
    box = bounding_box(m, margin=1)
    if box is None:
        z = np.zeros((0, m.ndim))
        return Surface(z.astype(np.intp), z, np.zeros(0), method)
    sub = m[box]
    origin = np.array([b.start for b in box])
    if method == "surface":
        codes = _neighbour_codes(sub)
        full = 255 if m.ndim == 3 else 15
        idx = np.nonzero((codes != 0) & (codes != full))
        weights = surfel_area_table(tuple(float(x) for x in sp))[codes[idx]]
    else:
        # border voxels as ``brats-evaluation`` / MONAI find them; the crop keeps a
        # one-voxel margin where the array allows, and the array edge erodes as empty
        # (scipy's border_value=0), so cropping changes no border voxel
        st = ndimage.generate_binary_structure(m.ndim, 1)
        idx = np.nonzero(sub ^ ndimage.binary_erosion(sub, structure=st))
        weights = np.ones(idx[0].size)
    cells = np.stack(idx, axis=1) + origin
    return Surface(cells, cells * sp, weights, method)


def _nearest(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from every point of ``src`` to the nearest point of ``dst``, and
    that point's index.

    k-d tree queries give the exact Euclidean distances a distance transform of the
    bounding box would, at a cost that follows the surface size instead of the box
    volume (a stray false positive far away makes the box large): 4x faster than
    ``scipy.ndimage.distance_transform_edt`` on a real BraTS case here.
    """
    if src.shape[0] == 0:
        return np.zeros(0), np.zeros(0, dtype=np.intp)
    if dst.shape[0] == 0:
        return np.full(src.shape[0], np.inf), np.zeros(src.shape[0], dtype=np.intp)
    d, i = cKDTree(dst).query(src)
    return d, i


@dataclass
class _PairDistances:
    """Both directed nearest-distance queries between two whole surfaces."""

    d_pr: np.ndarray
    i_pr: np.ndarray
    d_rp: np.ndarray
    i_rp: np.ndarray

    @classmethod
    def of(cls, sp_: Surface, sr_: Surface) -> _PairDistances:
        d_pr, i_pr = _nearest(sp_.points, sr_.points)
        d_rp, i_rp = _nearest(sr_.points, sp_.points)
        return cls(d_pr, i_pr, d_rp, i_rp)


def _subset_nearest(d_all: np.ndarray, i_all: np.ndarray, src: np.ndarray, dst: np.ndarray,
                    src_sel: np.ndarray, dst_sel: np.ndarray) -> np.ndarray:
    """Nearest distances from ``src[src_sel]`` to ``dst[dst_sel]``, reusing the
    whole-surface answer wherever its nearest point lies in the subset anyway."""
    d, i = d_all[src_sel], i_all[src_sel]
    redo = ~dst_sel[i]
    if redo.any():
        d = d.copy()
        d[redo] = _nearest(src[src_sel][redo], dst[dst_sel])[0]
    return d


@dataclass
class SurfaceDistances:
    """Directed surface distances of a prediction/reference pair (one method).

    ``pred_to_ref``: for every surface element of the prediction, the distance (mm) to
    the nearest element of the reference's surface; ``ref_to_pred`` the other way;
    ``pred_weights``/``ref_weights``: the elements' areas (mm^2; ones for the voxel
    methods). An empty side has empty arrays (and the other side's distances are inf).
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_weights: np.ndarray
    ref_weights: np.ndarray


def surface_distances(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    method: HD95Method | str = "surface",
) -> SurfaceDistances:
    """Distances between the surfaces of two masks ``(X, Y, Z)`` or ``(H, W)`` in mm.

    ``method`` "surface": corner-grid surfels weighted by area (BraTS 2023 /
    ``surface-distance``); "voxel" / "voxel-directed": border voxels, unit weights
    (``brats-evaluation`` / MONAI).
    """
    p, r = _pair(pred, ref, spatial=True)
    sp_, sr_ = surface_of(p, spacing, method), surface_of(r, spacing, method)
    return SurfaceDistances(_nearest(sp_.points, sr_.points)[0],
                            _nearest(sr_.points, sp_.points)[0], sp_.weights, sr_.weights)


def _weighted_percentile(dist: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The first sorted distance whose cumulative weight share reaches ``q`` percent
    (the ``surface-distance`` rule)."""
    if dist.size == 0:
        return float("inf")
    order = np.lexsort((weights, dist))
    d, w = dist[order], weights[order]
    cum = np.cumsum(w) / np.sum(w)
    idx = int(np.searchsorted(cum, q / 100.0))
    return float(d[min(idx, d.size - 1)])


def _hd95_surfaces(sp_: Surface, sr_: Surface, method: str, percentile: float = 95.0,
                   sel_p: np.ndarray | None = None, sel_r: np.ndarray | None = None,
                   pair: _PairDistances | None = None) -> float:
    """HD95 from two surfaces, or from subsets of them (``sel_p``, ``sel_r``: boolean
    over their elements; ``pair``: the whole surfaces' distances to reuse), with the
    empty rules."""
    n_p = sp_.points.shape[0] if sel_p is None else int(np.count_nonzero(sel_p))
    n_r = sr_.points.shape[0] if sel_r is None else int(np.count_nonzero(sel_r))
    if n_p == 0 and n_r == 0:
        return 0.0
    if n_p == 0 or n_r == 0:
        return EMPTY_HD95
    if sel_p is None and sel_r is None:
        pair = pair or _PairDistances.of(sp_, sr_)
        d_pr, d_rp, w_p, w_r = pair.d_pr, pair.d_rp, sp_.weights, sr_.weights
    else:
        all_p = np.ones(sp_.points.shape[0], dtype=bool) if sel_p is None else sel_p
        all_r = np.ones(sr_.points.shape[0], dtype=bool) if sel_r is None else sel_r
        pair = pair or _PairDistances.of(sp_, sr_)
        d_pr = _subset_nearest(pair.d_pr, pair.i_pr, sp_.points, sr_.points, all_p, all_r)
        d_rp = _subset_nearest(pair.d_rp, pair.i_rp, sr_.points, sp_.points, all_r, all_p)
        w_p, w_r = sp_.weights[all_p], sr_.weights[all_r]
    if method == "surface":
        value = max(_weighted_percentile(d_pr, w_p, percentile),
                    _weighted_percentile(d_rp, w_r, percentile))
    elif method == "voxel":
        value = float(np.percentile(np.concatenate([d_rp, d_pr]), percentile))
    else:
        value = max(float(np.percentile(d_pr, percentile)),
                    float(np.percentile(d_rp, percentile)))
    return value  # a real distance stands even past the empty-mask penalty


def hd95(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    method: HD95Method | str = "surface",
    percentile: float = 95.0,
) -> float:
    """95th percentile Hausdorff distance in mm between two boolean masks.

    ``spacing``: voxel size in mm per axis (default 1). ``method``: "surface" (BraTS
    2023 challenge code / DeepMind ``surface-distance``, the default), "voxel"
    (``brats-evaluation`` / panoptica) or "voxel-directed" (MONAI); see the module
    docstring for the exact definitions. Both masks empty: 0.0; exactly one empty:
    :data:`EMPTY_HD95` (374 mm).
    """
    p, r = _pair(pred, ref, spatial=True)
    sp = _spacing(spacing, p.ndim)
    return _hd95_surfaces(surface_of(p, sp, method), surface_of(r, sp, method), method,
                          percentile)


# ------------------------------------------------------------------ lesion-wise scores


@dataclass
class LesionScores:
    """BraTS 2023 lesion-wise scores of one region.

    ``dice``/``hd95``: the lesion-wise means (false positives and misses count 0 / 374
    mm); ``tp``: reference lesions found, ``fn``: missed, both counting only lesions
    larger than the minimum volume; ``fp``: predicted components touching no lesion;
    ``lesions``: one dict per reference lesion (``volume_mm3``, ``dice``, ``hd95``,
    ``matched``, ``kept``).
    """

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int
    lesions: list[dict[str, Any]]


def _label26(mask: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return lab, int(n)


def lesion_wise(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    dilation: int = LESION_DILATION,
    min_volume_mm3: float = LESION_MIN_VOLUME_MM3,
    hd95_method: HD95Method | str = "surface",
) -> LesionScores:
    """BraTS 2023 lesion-wise Dice and HD95 of two boolean masks (see module docstring).

    ``dilation``: iterations of the 18-neighbourhood dilation that merges nearby
    reference fragments and sets each lesion's catchment (3 for BraTS gliomas);
    ``min_volume_mm3``: reference lesions of at most this volume are left out (50).
    """
    p, r = _pair(pred, ref, spatial=True)
    sp = _spacing(spacing, p.ndim)
    box = bounding_box(p | r, margin=1)
    if box is None:
        return LesionScores(1.0, 0.0, 0, 0, 0, [])
    p, r = p[box], r[box]
    return _lesion_wise(p, r, sp, dilation, min_volume_mm3, hd95_method,
                        surface_of(p, sp, hd95_method), surface_of(r, sp, hd95_method))


def _lesion_wise(p: np.ndarray, r: np.ndarray, sp: tuple[float, ...], dilation: int,
                 min_volume_mm3: float, method: str, surf_p: Surface, surf_r: Surface,
                 whole: tuple[float, float] | None = None,
                 pair: _PairDistances | None = None) -> LesionScores:
    """:func:`lesion_wise` on masks whose surfaces are already known."""
    voxel_mm3 = float(np.prod(sp))
    pred_cc, n_pred = _label26(p)
    rbox = bounding_box(r, margin=dilation + 1)
    if rbox is None:  # no lesion: every predicted component is a false positive
        if n_pred == 0:
            return LesionScores(1.0, 0.0, 0, 0, 0, [])
        return LesionScores(0.0, EMPTY_HD95, 0, n_pred, 0, [])
    # the margin keeps the dilation from being clipped by the box (at the array's own
    # edge it stops, as it does on the full array)
    r_sub, pred_sub = r[rbox], pred_cc[rbox]
    dil = (ndimage.binary_dilation(r_sub, structure=ndimage.generate_binary_structure(
        r.ndim, 2), iterations=dilation) if dilation > 0 else r_sub)
    # each connected piece of the dilated reference is one lesion: its reference voxels
    # (possibly several 26-connected fragments) and its catchment (the piece itself,
    # which equals the dilation of those voxels)
    dil_cc, n_les = _label26(dil)
    lesion_sub = np.where(r_sub, dil_cc, 0)
    lesion_map = np.zeros(r.shape, dtype=dil_cc.dtype)
    lesion_map[rbox] = lesion_sub
    les_vox = np.bincount(lesion_sub.ravel(), minlength=n_les + 1)
    pred_vox = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    both = (lesion_sub > 0) & (pred_sub > 0)
    ov_les, ov_pred = lesion_sub[both], pred_sub[both]
    dil_boxes = ndimage.find_objects(dil_cc, max_label=n_les)
    lab_p = surf_p.labels_from(pred_cc)
    lab_r = surf_r.labels_from(lesion_map)
    matched_any = np.zeros(n_pred + 1, dtype=bool)
    lesions: list[dict[str, Any]] = []
    for k in range(1, n_les + 1):
        dbox = dil_boxes[k - 1]
        assert dbox is not None
        hits = np.unique(pred_sub[dbox][dil_cc[dbox] == k])
        hits = hits[hits != 0]
        matched_any[hits] = True
        volume = float(les_vox[k]) * voxel_mm3
        if hits.size == 0:
            d, h = 0.0, EMPTY_HD95
        elif whole is not None and n_les == 1 and hits.size == n_pred:
            d, h = whole  # the lesion is the whole reference, its match the whole prediction
        else:
            tp = int(np.count_nonzero((ov_les == k) & np.isin(ov_pred, hits)))
            n_pk = int(pred_vox[hits].sum())
            d = _dice(tp, n_pk - tp, int(les_vox[k]) - tp)
            if pair is None:
                pair = _PairDistances.of(surf_p, surf_r)
            h = _hd95_surfaces(surf_p, surf_r, method, sel_p=np.isin(lab_p, hits),
                               sel_r=lab_r == k, pair=pair)
        lesions.append({"volume_mm3": volume, "dice": d, "hd95": h,
                        "matched": bool(hits.size), "kept": volume > min_volume_mm3})
    n_fp = int(n_pred - np.count_nonzero(matched_any[1:]))
    kept = [les for les in lesions if les["kept"]]
    denom = len(kept) + n_fp
    if denom == 0:
        l_dice, l_hd = 1.0, 0.0
    else:
        l_dice = sum(les["dice"] for les in kept) / denom
        l_hd = (sum(les["hd95"] for les in kept) + EMPTY_HD95 * n_fp) / denom
    n_tp = sum(1 for les in kept if les["matched"])
    return LesionScores(float(l_dice), float(l_hd), n_tp, n_fp, len(kept) - n_tp, lesions)


# ------------------------------------------------------------------- per-case scoring


def score_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    lesions: bool = True,
    hd95_method: HD95Method | str = "surface",
    dilation: int = LESION_DILATION,
    min_volume_mm3: float = LESION_MIN_VOLUME_MM3,
) -> dict[str, float]:
    """Every metric of one boolean mask pair: the keys of :data:`SCORE_KEYS`
    (volumes in mL; lesion-wise keys only with ``lesions``). Both surfaces are found
    once and serve the global and every per-lesion HD95."""
    p, r = _pair(pred, ref, spatial=True)
    sp = _spacing(spacing, p.ndim)
    tp, fp, fn, tn = confusion(p, r)
    out: dict[str, float] = {
        "dice": _dice(tp, fp, fn),
        "sensitivity": _sensitivity(tp, fp, fn),
        "specificity": _specificity(fp, tn),
    }
    box = bounding_box(p | r, margin=dilation + 1)
    if box is None:
        out["hd95"] = 0.0
        if lesions:
            out.update(lesion_dice=1.0, lesion_hd95=0.0, lesion_tp=0, lesion_fp=0,
                       lesion_fn=0)
    else:
        p, r = p[box], r[box]
        surf_p, surf_r = surface_of(p, sp, hd95_method), surface_of(r, sp, hd95_method)
        pair = (_PairDistances.of(surf_p, surf_r)
                if not (surf_p.empty or surf_r.empty) else None)
        out["hd95"] = _hd95_surfaces(surf_p, surf_r, hd95_method, pair=pair)
        if lesions:
            ls = _lesion_wise(p, r, sp, dilation, min_volume_mm3, hd95_method, surf_p,
                              surf_r, whole=(out["dice"], out["hd95"]), pair=pair)
            out.update(lesion_dice=ls.dice, lesion_hd95=ls.hd95, lesion_tp=ls.tp,
                       lesion_fp=ls.fp, lesion_fn=ls.fn)
    voxel_ml = float(np.prod(sp)) / 1000.0
    out["ref_volume_ml"] = (tp + fn) * voxel_ml
    out["pred_volume_ml"] = (tp + fp) * voxel_ml
    return out


def score_case(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    lesions: bool = True,
    hd95_method: HD95Method | str = "surface",
    dilation: int = LESION_DILATION,
    min_volume_mm3: float = LESION_MIN_VOLUME_MM3,
) -> dict[str, dict[str, float]]:
    """Score internal label maps ``(X, Y, Z)`` region by region.

    Returns ``{"WT": {...}, "TC": {...}, "ET": {...}}``, each with the keys of
    :data:`SCORE_KEYS`. ``spacing`` is the voxel size in mm. Everything is computed in
    the bounding box of the tumour in either map (plus the lesion dilation margin);
    the voxels outside count as true negatives.
    """
    from braintumor.labels import REGIONS, region_masks

    pl, rl = np.asarray(pred_labels), np.asarray(ref_labels)
    if pl.shape != rl.shape:
        raise InputError(
            f"The prediction's shape {pl.shape} differs from the reference's {rl.shape}."
        )
    _check_spatial(pl.shape, "label map", "a one-hot or channel-first map must be turned "
                   "into labels 0-3 first")
    from braintumor.labels import check_internal

    check_internal(pl, "prediction", "score_case takes")
    check_internal(rl, "reference", "score_case takes")
    sp = _spacing(spacing, pl.ndim)
    box = bounding_box((pl > 0) | (rl > 0), margin=dilation + 2)
    if box is None:
        box = tuple(slice(0, min(1, s)) for s in pl.shape)
    pl_c, rl_c = pl[box], rl[box]
    outside = int(pl.size - pl_c.size)  # background in both maps: true negatives
    pm, rm = region_masks(pl_c), region_masks(rl_c)
    scores: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        s = score_masks(pm[region], rm[region], sp, lesions, hd95_method, dilation,
                        min_volume_mm3)
        if outside:
            tp, fp, fn, tn = confusion(pm[region], rm[region])
            s["specificity"] = _specificity(fp, tn + outside)
        scores[region] = s
    return scores
