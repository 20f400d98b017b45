"""Marker-controlled 3D watershed segmentation, classical and CNN-guided.

Two segmenters, both returning a :class:`~braintumor.segment.SegmentationResult` whose
labels (internal: 0 background, 1 NCR, 2 ED, 3 ET) lie on the case's native grid:

* :func:`segment_watershed` needs no training. On a brain-cropped, optionally
  downsampled working grid it

  1. z-scores every modality against *normal tissue*: the median and MAD
     (x 1.4826) of the eroded brain, robust to a tumour filling a sixth of it;
  2. builds an abnormality map ``A``, a weighted mean of ``z(FLAIR)``, ``z(T2)`` and
     ``-z(T1)``, and an
     enhancement map ``E = z(T1ce) - k * z(T1)``;
  3. whole tumour (WT): sure-tumour markers where ``A`` is high, sure-background
     markers where it is low or outside the brain; a watershed on the multi-modal
     gradient magnitude (FLAIR, T2) settles the band between them; components too
     small, too faint, too small beside the largest lesion or FLAIR-dark (free water
     that is bright on T2 only) are dropped; the rest
     grow a few voxels into connected voxels whose ``A`` passes a threshold between
     the normal brain's and the lesion's median (the faint outer rim of the edema);
  4. inside WT, a second watershed on the T1ce gradient with three kinds of markers:
     enhancing tumour (``E`` high and T1ce bright), necrosis / non-enhancing core
     (T1ce dark, the low-grade "core" that has no enhancement at all) and edema
     (T1ce near normal, no enhancement); the T1ce-dark interior enclosed by an
     enhancing rim becomes necrosis whatever its markers said, and when the
     enhancement is large enough the core is that rim and its interior only;
  5. region rules: ET and TC lie inside WT, small ET specks become edema, small core
     specks away from enhancement become edema;
  6. edema grows out of WT through one-sided FLAIR-bright voxels (:func:`grow_edema`:
     edema bright on FLAIR only, normal on T2);
  7. labels go back to the native grid (region indicators interpolated linearly, so
     a 2x working grid does not leave 2 mm staircases; the detached specks that leaves
     at a lesion's corners are dropped, :func:`without_specks`), where the enhancing
     tumour is redrawn from the native T1ce (:func:`refine_et_native`).

  A tumour-free brain gives an empty map: no lesion smaller than
  ``min_lesion_ml`` survives, and a lesion must reach an abnormality peak of
  ``wt_peak`` (robust z), or be ``big_lesion_ml`` or larger, to be kept at all.

* :func:`segment_hybrid` takes CNN region probabilities ``(3, X, Y, Z)`` (WT, TC, ET):
  voxels the CNN is sure about become inside / outside markers for each region, and a
  watershed on the image gradient decides the uncertain band between them. By default
  the result is then combined per region with :func:`segment_watershed`'s
  (:func:`fuse_labels`): the whole tumour is the watershed's plus the refined CNN
  lesions touching it, the core (TC, ET) is the refined CNN's inside that whole tumour,
  plus the watershed's core lesions and enhancing voxels the CNN supports (a T1ce-dark
  core the CNN under-reads, with a low but real probability).

Every tunable number is a field of the frozen :class:`WatershedParams`; the defaults are
the values chosen by cross-validation on the shared BraTS cases
(``python -m braintumor.watershed_tune``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from braintumor import labels as L
from braintumor import stacking
from braintumor.cases import OPTIONAL_MODALITIES, Case, check_finite
from braintumor.errors import InputError, join_warnings
from braintumor.preprocess import (
    Box,
    bounding_box,
    brain_mask,
    remove_small_components,
    robust_stats,
    scaled_mad,
)
from braintumor.segment import ProgressFn, SegmentationResult

T1, T1CE, T2, FLAIR = 0, 1, 2, 3


@dataclass(frozen=True)
class WatershedParams:
    """Parameters of :func:`segment_watershed`.

    Lengths are in working-grid voxels unless the name says mm; volumes in mL;
    thresholds in robust z units (MADs x 1.4826 from the normal-tissue median).
    """

    factor: int = 2  #: downsampling factor of the working grid (1 = native)
    #: the first ``n4`` modalities (T1, T1ce, T2, FLAIR: 2 = T1 and T1ce, 4 = all) are
    #: divided by their N4 bias field before anything else
    #: (:func:`braintumor.preprocess.correct_bias`; :func:`segment_watershed` applies it).
    #: Off: ``python -m braintumor.watershed_tune n4`` (experiments/watershed/n4) chose 2,
    #: but held out it cost WT and HD95, gained ET in one case only and took 1.5 s more
    #: (README, Watershed).
    n4: int = 0
    sigma: float = 0.216  #: Gaussian smoothing of the z maps (working voxels)
    stats_erode: int = 2  #: brain erosion before the normal-tissue statistics
    slab: int = 5  #: half-thickness (working slices) of the axial intensity levelling
    rim_mm: float = 1.396  #: brain rim (mm) where no tumour marker may start
    w_flair: float = 1.0  #: weight of z(FLAIR) in the abnormality map
    w_t2: float = 1.376  #: weight of z(T2) in the abnormality map
    w_t1: float = 0.493  #: weight of -z(T1) (T1 darkening) in the abnormality map
    csf_flair: float = -2.253  #: FLAIR z below which a voxel is a background marker (CSF)
    wt_hi: float = 1.5  #: abnormality above which a voxel is a sure-tumour marker
    wt_lo: float = -0.3278  #: abnormality below which a voxel is a sure-background marker
    wt_compactness: float = 0.0  #: compactness of the WT watershed
    grad_sigma: float = 1.0  #: Gaussian scale of the gradient magnitude
    wt_peak: float = 3.0  #: a kept lesion must reach this abnormality somewhere
    #: ... unless it is this large (mL): a large one-sided region of abnormal signal is a
    #: tumour however faint its brightest voxel (its markers already passed ``wt_hi`` and
    #: the asymmetry rule). Set after low-contrast synthetic tumours of 180-300 mL (peak
    #: 2.1-3.0) were dropped whole; on the shared cases no component of 9 mL or more was
    #: dropped by the peak, so their outlines are the same to the voxel.
    big_lesion_ml: float = 30.0
    min_lesion_ml: float = 1.0  #: smaller WT components are dropped
    rel_lesion: float = 0.135  #: components under this fraction of the largest are dropped
    #: a kept lesion's median FLAIR z must reach this: T2-bright but FLAIR-dark signal is
    #: free water (CSF; FLAIR suppresses it), not edema or tumour
    lesion_flair: float = 0.5
    et_k: float = 0.5  #: weight of T1 subtracted from T1ce in the enhancement map
    et_hi: float = 1.2  #: enhancement above which a WT voxel is an ET marker
    et_t1c: float = 0.588  #: T1ce z an ET marker also needs
    et_lo: float = 1.0  #: enhancement below which a voxel cannot be an ET marker
    ncr_t1c: float = -0.5737  #: T1ce z below which a WT voxel is a core marker
    ed_t1c: float = -0.5  #: T1ce z above which a non-enhancing WT voxel is an edema marker
    ed_edge: int = 1  #: WT border layer (voxels) always seeded as edema
    core_compactness: float = 0.0  #: compactness of the sub-region watershed
    rim_close: int = 2  #: closing radius before filling the interior of an ET rim
    min_et_ml: float = 0.224  #: smaller ET components become edema
    min_core_ml: float = 0.5  #: smaller core components without ET become edema
    #: a sure-tumour marker needs its abnormality to exceed the mirror image's (left-right
    #: through the middle of the brain, max over +-``sym_reach`` voxels) by this much;
    #: -99 switches the rule off
    sym_fg: float = 1.0
    #: voxels whose abnormality falls this far below the mirror's (asymmetry under it)
    #: are background markers; -99 switches it off
    sym_bg: float = -99.0
    sym_reach: int = 1  #: tolerance (working voxels) for an imperfect midline
    #: after the lesion rules WT grows (up to ``grow_reach`` working voxels, connected)
    #: into voxels whose abnormality exceeds the normal brain's median plus
    #: ``grow_alpha`` x (lesion median - normal median), and at least ``grow_min``:
    #: the watershed stops at the steepest edge, inside the faint rim of the edema
    grow_alpha: float = 0.4
    grow_reach: int = 2  #: 0 switches the growing off
    grow_min: float = 0.3
    #: when the enhancing tumour exceeds this volume (mL) the core is the enhancing
    #: rim and what it encloses only (T1ce-dark edema outside the rim stays edema);
    #: smaller enhancement (low-grade) keeps the T1ce-dark core markers
    rim_core_ml: float = 3.0
    #: ... and this fraction of the whole tumour: the spurious enhancement of a
    #: low-grade tumour (a few mL of a large lesion) must not cut its core away
    rim_core_frac: float = 0.08
    rim_core_close: int = 5  #: closing radius (working voxels) that shuts an open rim
    #: the enhancing tumour is redrawn on the native grid (a 2 mm working grid blurs
    #: rims of a few mm: even the reference's own ET loses 0.15 Dice on a round trip
    #: through it): voxels of the core, widened by ``et_native_reach`` native voxels,
    #: whose native enhancement (z(T1ce) - ``et_native_k`` x z(T1)) exceeds this and
    #: whose z(T1ce) exceeds ``et_native_t1c``, connected to the working grid's ET; the
    #: working grid's ET voxels that fail become necrosis. 99 switches it off. Chosen by
    #: ``python -m braintumor.watershed_tune native`` (experiments/watershed/native_et).
    et_native: float = 0.8
    et_native_k: float = 0.7
    et_native_t1c: float = 0.3
    et_native_reach: int = 1
    #: at the end of the working-grid segmentation, edema grows out of WT
    #: (geodesically, up to ``flair_reach`` working voxels)
    #: into brain voxels whose smoothed z(FLAIR) exceeds ``flair_grow`` and exceeds its
    #: mirror image across the midline by ``flair_asym``: faint edema bright on FLAIR
    #: only (normal on T2) lies under the abnormality map's threshold, while FLAIR-bright
    #: normal anatomy is symmetric. Only edema is added; the core and ET stay as they
    #: are. 99 switches it off. Chosen by ``python -m braintumor.watershed_tune flair``
    #: (experiments/watershed/flair_edema).
    flair_grow: float = 1.4
    flair_asym: float = 0.5
    flair_reach: int = 24

    def replace(self, **changes: Any) -> WatershedParams:
        """A copy with ``changes`` (unknown names raise :class:`InputError`)."""
        return replace(self, **_checked(changes))


_INT_PARAMS = ("factor", "n4", "stats_erode", "slab", "ed_edge", "rim_close", "sym_reach",
               "grow_reach", "rim_core_close", "et_native_reach",
               "flair_reach")


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f.type for f in fields(WatershedParams)}
    out = {}
    for k, v in changes.items():
        if k not in known:
            raise InputError(
                f"Unknown watershed parameter {k!r}; known: {', '.join(sorted(known))}."
            )
        out[k] = int(v) if k in _INT_PARAMS else float(v)
    return out


DEFAULT_PARAMS = WatershedParams()

#: brains whose bounding box holds fewer voxels are segmented on their own grid
SMALL_VOXELS = 1_000_000


def params_from(params: WatershedParams | dict[str, Any] | None = None,
                **overrides: Any) -> WatershedParams:
    """Build parameters from defaults, a dataclass or a dict, then ``overrides``."""
    base = DEFAULT_PARAMS
    if isinstance(params, WatershedParams):
        base = params
    elif params:
        base = base.replace(**params)
    return base.replace(**overrides) if overrides else base


# ---------------------------------------------------------------------------------------
# grids


@dataclass
class WorkGrid:
    """The brain-cropped, downsampled grid the watershed works on.

    ``box``: crop box in the native grid; ``factor``: integer downsampling; ``padded``:
    the cropped shape rounded up to a multiple of ``factor``; ``spacing``: working
    voxel size (mm).
    """

    box: Box
    factor: int
    cropped: tuple[int, int, int]
    padded: tuple[int, int, int]
    native: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def voxel_ml(self) -> float:
        """Volume of one working voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0


def make_grid(brain: np.ndarray, spacing: tuple[float, float, float], factor: int,
              margin: int = 2) -> WorkGrid:
    """Working grid for a native brain mask ``(X, Y, Z)``."""
    box = bounding_box(brain, margin=margin)
    cropped = tuple(s.stop - s.start for s in box)
    padded = tuple(int(np.ceil(c / factor)) * factor for c in cropped)
    return WorkGrid(box=box, factor=factor, cropped=cropped, padded=padded,  # type: ignore[arg-type]
                    native=brain.shape, spacing=tuple(s * factor for s in spacing))  # type: ignore[arg-type]


def to_work(grid: WorkGrid, array: np.ndarray) -> np.ndarray:
    """Native ``(..., X, Y, Z)`` -> working grid (crop, zero-pad, block mean), float32."""
    a = np.asarray(array, dtype=np.float32)[(Ellipsis,) + tuple(grid.box)]
    f = grid.factor
    if f == 1:
        return np.ascontiguousarray(a)
    extra = [(0, p - c) for p, c in zip(grid.padded, grid.cropped, strict=True)]
    pad = [(0, 0)] * (a.ndim - 3) + extra
    a = np.pad(a, pad)
    lead = a.shape[:-3]
    x, y, z = (p // f for p in grid.padded)
    a = a.reshape(*lead, x, f, y, f, z, f)
    return a.mean(axis=(-5, -3, -1))


def from_work(grid: WorkGrid, fraction: np.ndarray) -> np.ndarray:
    """Working-grid fraction ``(x, y, z)`` in [0, 1] -> native bool mask ``(X, Y, Z)``.

    Linear interpolation with pixel-area alignment (``grid_mode``), the inverse of the
    block mean, thresholded at 0.5.
    """
    f = grid.factor
    cx, cy, cz = grid.cropped
    out = np.zeros(grid.native, dtype=bool)
    if f == 1:
        out[grid.box] = fraction[:cx, :cy, :cz] >= 0.5
        return out
    nz = fraction > 0
    if not nz.any():
        return out
    # interpolate only around the non-zero part (the tumour is a small part of the brain)
    sub = bounding_box(nz, margin=2)
    up = ndi.zoom(fraction[sub].astype(np.float32), f, order=1, grid_mode=True,
                  mode="nearest") >= 0.5
    cropped = np.zeros(grid.padded, dtype=bool)
    cropped[tuple(slice(s.start * f, s.stop * f) for s in sub)] = up
    out[grid.box] = cropped[:cx, :cy, :cz]
    return out


def labels_from_work(grid: WorkGrid, labels: np.ndarray) -> np.ndarray:
    """Working-grid internal labels -> native labels via the nested region masks."""
    if grid.factor == 1:
        out = np.zeros(grid.native, dtype=np.uint8)
        cx, cy, cz = grid.cropped
        out[grid.box] = labels[:cx, :cy, :cz]
        return out
    m = L.region_masks(labels)
    wt = from_work(grid, m["WT"].astype(np.float32))
    tc = from_work(grid, m["TC"].astype(np.float32)) & wt
    et = from_work(grid, m["ET"].astype(np.float32)) & tc
    out = np.zeros(grid.native, dtype=np.uint8)
    out[wt] = L.ED
    out[tc] = L.NCR
    out[et] = L.ET
    return out


def without_specks(native: np.ndarray, grid: WorkGrid, work: np.ndarray, voxel_ml: float,
                   min_ml: float) -> np.ndarray:
    """``native`` labels ``(X, Y, Z)`` (from working-grid ``work`` through
    :func:`labels_from_work`, clipped to the brain) without the detached specks the step
    back made: where a working-grid lesion comes back in several pieces (its corners
    cut off by the interpolation or the native brain mask), only its largest piece and
    pieces of ``min_ml`` (mL, on the native voxel of ``voxel_ml``) or more stay, so no
    lesion under the working grid's own minimum appears on the native grid."""
    comp, n = _components(native > 0)
    if n <= 1:
        return native
    sizes = np.bincount(comp.ravel())
    small = sizes * voxel_ml < min_ml
    small[0] = False
    if not small.any():
        return native
    # the working-grid lesion each piece comes from, on the native grid (nearest block)
    wlab, _ = _components(work > 0)
    f = grid.factor
    up = wlab
    for axis in range(3):
        up = np.repeat(up, f, axis=axis)
    cx, cy, cz = grid.cropped
    origin = np.zeros(grid.native, dtype=wlab.dtype)
    origin[grid.box] = up[:cx, :cy, :cz]
    index = np.arange(1, n + 1)
    source = np.concatenate([[0], np.asarray(ndi.maximum(origin, comp, index=index))])
    largest: dict[int, int] = {}
    for k in index:
        w = int(source[k])
        if w and (w not in largest or sizes[k] > sizes[largest[w]]):
            largest[w] = int(k)
    keep = ~small
    keep[0] = False
    keep[list(largest.values())] = True
    out = native.copy()
    out[~keep[comp]] = 0
    return out


# ---------------------------------------------------------------------------------------
# features


def robust_z(image: np.ndarray, brain: np.ndarray, erode: int = 2, slab: int = 0
             ) -> np.ndarray:
    """Per-channel z against normal tissue: ``(I - median) / (1.4826 MAD)``.

    ``image`` ``(C, x, y, z)``; statistics over the brain eroded by ``erode`` voxels
    (the skull-stripping rim has partial-volume values). Outside the brain: 0.

    ``slab`` > 0 first divides out the slow change of intensity along the axial (last)
    axis: each slice is scaled so that the median of the brain in the slab of
    ``2 * slab + 1`` slices around it matches the global median. Coil sensitivity makes
    FLAIR of the posterior fossa and temporal lobes several MADs brighter than the
    cerebrum in some scanners, which a global statistic would read as tumour.
    """
    inner = ndi.binary_erosion(brain, iterations=erode) if erode > 0 else brain
    if inner.sum() < 100:
        inner = brain
    out = np.zeros(image.shape, dtype=np.float32)
    counts = inner.sum(axis=(0, 1))
    for c in range(image.shape[0]):
        vals = image[c][inner]
        if vals.size == 0:
            continue
        med = float(np.median(vals))
        ch = image[c]
        if slab > 0 and med > 0:
            scale = np.ones(ch.shape[2], dtype=np.float32)
            for k in range(ch.shape[2]):
                lo, hi = max(0, k - slab), min(ch.shape[2], k + slab + 1)
                if counts[lo:hi].sum() < 200:
                    continue
                level = float(np.median(ch[:, :, lo:hi][inner[:, :, lo:hi]]))
                if level > 0:
                    scale[k] = med / level
            ch = ch * scale[None, None, :]
            vals = ch[inner]
        mad = scaled_mad(vals, med)  # about the median from before the levelling
        if mad < 1e-6:
            mad = float(vals.std()) or 1.0
        z = (ch - med) / mad
        z[~brain] = 0.0
        out[c] = z
    return out


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(a, sigma) if sigma > 0 else a


def _gradient(channels: list[np.ndarray], sigma: float) -> np.ndarray:
    """Multi-modal gradient magnitude: root of the summed squared channel gradients."""
    acc = np.zeros(channels[0].shape, dtype=np.float32)
    for ch in channels:
        g = ndi.gaussian_gradient_magnitude(ch, max(sigma, 0.5))
        acc += g * g
    return np.sqrt(acc)


def _ball(radius: int) -> np.ndarray:
    r = int(radius)
    g = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return (g ** 2).sum(0) <= r * r


_STRUCT26 = ndi.generate_binary_structure(3, 3)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndi.label(mask, structure=_STRUCT26)
    return lab, int(n)


def _fill_rim_interior(et: np.ndarray, close: int) -> np.ndarray:
    """Voxels enclosed by the enhancing rim (3D holes after a closing, plus the holes
    of each axial slice, since rims are often open at the top or bottom)."""
    shell = ndi.binary_closing(et, structure=_ball(close), iterations=1) if close > 0 else et
    filled = ndi.binary_fill_holes(shell)
    for z in range(shell.shape[2]):
        if shell[:, :, z].any():
            filled[:, :, z] |= ndi.binary_fill_holes(shell[:, :, z])
    return filled & ~et


# ---------------------------------------------------------------------------------------
# the classical segmenter


def _check_case(case: Case) -> None:
    img = np.asarray(case.image)
    if img.ndim != 4 or img.shape[0] != 4:
        raise InputError(
            f"Case {case.case_id}: the watershed needs a (4, X, Y, Z) image "
            f"(T1, T1ce, T2, FLAIR); got shape {img.shape}."
        )
    if min(img.shape[1:]) < 4:
        raise InputError(f"Case {case.case_id}: image {img.shape[1:]} is too small to segment.")
    # one NaN spreads through the smoothing and the statistics and blanks the outline;
    # the image's sum costs a full-size case about 12 ms
    check_finite(case)


def with_zero_floor(case: Case, brain: np.ndarray | None = None) -> Case:
    """``case`` with every modality whose brain runs below zero (an image z-scored or
    otherwise shifted before it came, background left at 0) shifted, inside the brain,
    so that the brain's 1st percentile lies at zero, as in a scan's own intensities
    (there it lies within 1 % of the median). The slice levelling divides intensities
    by each slab's median, which is only meaningful from a physical zero: on a z-scored
    Brats18_2013_11_1 it was skipped, and 22,959 voxels of the outline changed against
    the raw scan's; shifted so, 320 do (rescaling the raw scan to 0-255 changes 337)."""
    img = np.asarray(case.image)
    brain = brain_mask(img) if brain is None else brain
    if not brain.any():
        return case
    shifted = None
    for c in range(img.shape[0]):
        vals = img[c][brain]
        floor = float(np.percentile(vals, 1))
        if floor < 0:
            if shifted is None:
                shifted = img.astype(np.float32, copy=True)
            shifted[c][brain] -= floor
    return case if shifted is None else replace(case, image=shifted)


def _need_all(case: Case, method: str) -> None:
    """Refuse a case without some modality: ``method`` learned on all four."""
    if case.missing:
        names = " and ".join(m.upper() for m in case.missing)
        raise InputError(f"Case {case.case_id} has no {names} image: the {method} method "
                         "needs all four modalities; segment it with the watershed.")


def lr_axis(affine: np.ndarray) -> int:
    """The array axis that runs left-right (the largest x component of the affine)."""
    return int(np.argmax(np.abs(np.asarray(affine)[0, :3])))


def asymmetry(a: np.ndarray, brain: np.ndarray, axis: int = 0, reach: int = 1
              ) -> np.ndarray:
    """``a`` minus its mirror image through the middle of the brain along ``axis``.

    The mirror is max-filtered over ``2 * reach + 1`` voxels, so a midline a voxel or
    two off does not make normal anatomy look asymmetric. ``a``, ``brain``: ``(x, y, z)``.
    Coil brightness and normal FLAIR-bright anatomy (posterior fossa, temporal poles)
    are roughly symmetric; a tumour seldom is.
    """
    idx = np.where(brain.any(axis=tuple(i for i in range(3) if i != axis)))[0]
    mirror = np.zeros_like(a)
    if idx.size:
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        sl = [slice(None)] * 3
        sl[axis] = slice(lo, hi)
        mirror[tuple(sl)] = np.flip(a[tuple(sl)], axis=axis)
    if reach > 0:
        mirror = ndi.maximum_filter(mirror, size=2 * reach + 1)
    return a - mirror


def _grow(wt: np.ndarray, abn: np.ndarray, brain: np.ndarray, p: WatershedParams
          ) -> np.ndarray:
    """``wt`` grown into connected, moderately abnormal voxels near it (a threshold
    between the normal brain's and the lesion's median abnormality)."""
    rest = brain & ~wt
    if not rest.any():
        return wt
    lesion, normal = float(np.median(abn[wt])), float(np.median(abn[rest]))
    thr = max(p.grow_min, normal + p.grow_alpha * (lesion - normal))
    near = ndi.distance_transform_edt(~wt) <= p.grow_reach
    cand = (abn > thr) & near & ndi.binary_erosion(brain, iterations=1)
    return ndi.binary_fill_holes(_touching(cand | wt, wt))


def brain_interior(brain: np.ndarray, spacing_mm: float, p: WatershedParams) -> np.ndarray:
    """``brain`` without its outer ``rim_mm`` (at least one voxel), where tumour may start."""
    rim = max(1, int(round(p.rim_mm / spacing_mm)))
    return ndi.binary_erosion(brain, iterations=rim)


def n4_image(image: np.ndarray, brain: np.ndarray, spacing: Sequence[float] | np.ndarray,
             n4: int) -> np.ndarray:
    """``image`` ``(C, X, Y, Z)`` with its first ``n4`` channels divided by their N4 bias
    field (:func:`braintumor.preprocess.correct_bias`); ``image`` itself when ``n4`` is 0."""
    if n4 <= 0:
        return image
    from braintumor.preprocess import correct_bias

    out = image.astype(np.float32, copy=True)
    out[:n4] = correct_bias(image[:n4], brain, spacing)
    return out


#: flair_grow at or above this switches the FLAIR growing off
FLAIR_GROW_OFF = 50.0


def grow_edema(labels: np.ndarray, flair: np.ndarray, interior: np.ndarray, lr: int,
               p: WatershedParams) -> np.ndarray:
    """Working-grid ``labels`` with edema grown geodesically (``flair_reach`` steps) out of
    the whole tumour through voxels of ``interior`` whose smoothed z(FLAIR) exceeds
    ``flair_grow`` and its mirror image by ``flair_asym`` (see :class:`WatershedParams`).
    Returns ``labels`` itself when the step is off or finds nothing."""
    wt = labels > 0
    if p.flair_grow >= FLAIR_GROW_OFF or p.flair_reach <= 0 or not wt.any():
        return labels
    cand = (flair > p.flair_grow) & interior
    cand &= asymmetry(flair, interior, lr, p.sym_reach) > p.flair_asym
    grown = ndi.binary_dilation(wt, iterations=p.flair_reach, mask=cand | wt)
    grown = ndi.binary_fill_holes(grown) & ~wt
    if not grown.any():
        return labels
    out = labels.copy()
    out[grown] = L.ED
    return out


def without_modalities(p: WatershedParams, missing: Sequence[str]) -> WatershedParams:
    """``p`` with every use of a ``missing`` modality (``"t1"``, ``"t2"``) switched off."""
    if "t1" in missing:
        p = replace(p, w_t1=0.0, et_k=0.0, et_native_k=0.0)
    if "t2" in missing:
        p = replace(p, w_t2=0.0)
    return p


#: the fields of :class:`WatershedParams` that differ from the defaults for scans without
#: T1, T2 or both, chosen by ``python -m braintumor.watershed_tune tune --without ...``
#: (``experiments/watershed/without_*/params.json``), plus the native enhancing-tumour
#: step's and then the FLAIR edema growing's settings chosen on each such CV's folds by
#: ``python -m braintumor.watershed_tune native|flair --without ...`` (``.../native_et/``,
#: ``.../flair_edema/``)
TUNED_WITHOUT: dict[tuple[str, ...], dict[str, Any]] = {
    ("t1",): {"min_et_ml": 0.4332, "min_core_ml": 2.4356, "grow_alpha": 0.4413,
              "et_native": 0.8, "et_native_k": 0.3, "et_native_t1c": 0.3,
              "et_native_reach": 1, "flair_grow": 1.4, "flair_asym": 1.0, "flair_reach": 24},
    ("t2",): {"w_t1": 0.7405, "rim_core_close": 2,
              "et_native": 0.8, "et_native_k": 0.7, "et_native_t1c": 0.3, "et_native_reach": 1,
              "flair_grow": 1.0, "flair_asym": 1.0, "flair_reach": 24},
    ("t1", "t2"): {"grad_sigma": 0.6149, "min_core_ml": 1.351, "sym_fg": 1.3823,
                   "et_native": 0.6, "et_native_k": 0.3, "et_native_t1c": 1.0,
                   "et_native_reach": 1, "flair_grow": 99.0},
}


def params_without(missing: Sequence[str]) -> WatershedParams:
    """The watershed's parameters for a scan without the ``missing`` modalities."""
    key = tuple(m for m in OPTIONAL_MODALITIES if m in missing)
    return without_modalities(DEFAULT_PARAMS.replace(**TUNED_WITHOUT.get(key, {})), missing)


def watershed_work(z: np.ndarray, brain: np.ndarray, voxel_ml: float, spacing_mm: float,
                   p: WatershedParams, lr: int = 0, missing: Sequence[str] = ()
                   ) -> np.ndarray:
    """The classical segmentation on the working grid.

    ``z``: robust z maps ``(4, x, y, z)`` (T1, T1ce, T2, FLAIR), unsmoothed; ``brain``:
    ``(x, y, z)`` bool; ``voxel_ml``: working voxel volume (mL); ``spacing_mm``: working
    voxel edge (mm); ``lr``: the left-right axis; ``missing``: modalities the scan lacks
    (``"t1"``, ``"t2"``), whose channels of ``z`` are then ignored. Returns internal
    labels ``(x, y, z)`` uint8.
    """
    bad = set(missing) - set(OPTIONAL_MODALITIES)
    if bad:
        raise InputError(f"The watershed needs the {', '.join(sorted(bad))} image.")
    p = without_modalities(p, missing)
    t2 = [] if "t2" in missing else [T2]
    zs = np.stack([_smooth(z[c], p.sigma) for c in range(4)])
    wsum = max(p.w_flair + p.w_t2 + p.w_t1, 1e-6)
    abn = (p.w_flair * zs[FLAIR] + p.w_t2 * zs[T2] - p.w_t1 * zs[T1]) / wsum
    enh = zs[T1CE] - p.et_k * zs[T1]

    interior = brain_interior(brain, spacing_mm, p)

    # --- whole tumour
    fg = (abn > p.wt_hi) & interior
    use_sym = p.sym_fg > -50 or p.sym_bg > -50
    asym = asymmetry(abn, brain, lr, p.sym_reach) if use_sym else None
    if asym is not None and p.sym_fg > -50:
        fg &= asym > p.sym_fg
    fg = remove_small_components(fg, max(1.0, 0.2 * p.min_lesion_ml / voxel_ml))
    out = np.zeros(brain.shape, dtype=np.uint8)
    if not fg.any():
        return out
    bg = (((abn < p.wt_lo) | (zs[FLAIR] < p.csf_flair)) & brain) | \
        ~ndi.binary_dilation(brain, iterations=1)
    if asym is not None and p.sym_bg > -50:
        bg |= (asym < p.sym_bg) & brain
    markers = np.zeros(brain.shape, dtype=np.int32)
    markers[bg] = 1
    markers[fg] = 2
    elev = _gradient([zs[c] for c in [FLAIR, *t2]], p.grad_sigma)
    ws = watershed(elev, markers, compactness=p.wt_compactness)
    wt = (ws == 2) & brain
    wt = ndi.binary_fill_holes(wt)

    # lesion rules: big enough, bright enough, not a speck beside the main lesion
    lab, n = _components(wt)
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel())[1:]
    peaks = ndi.maximum(abn, lab, index=np.arange(1, n + 1))
    flair = ndi.median(zs[FLAIR], lab, index=np.arange(1, n + 1))
    largest = sizes.max()
    bright = (np.asarray(peaks) >= p.wt_peak) | (sizes * voxel_ml >= p.big_lesion_ml)
    keep = (sizes * voxel_ml >= p.min_lesion_ml) & bright & \
        (sizes >= p.rel_lesion * largest) & (np.asarray(flair) >= p.lesion_flair)
    wt = np.concatenate([[False], keep])[lab]
    if not wt.any():
        return out
    if p.grow_reach > 0:
        wt = _grow(wt, abn, brain, p)

    # --- sub-regions inside WT
    et_seed = wt & (enh > p.et_hi) & (zs[T1CE] > p.et_t1c)
    et_seed = remove_small_components(et_seed, max(1.0, p.min_et_ml / voxel_ml))
    core_seed = wt & (zs[T1CE] < p.ncr_t1c) & ~et_seed
    edge = wt & ~ndi.binary_erosion(wt, iterations=p.ed_edge) if p.ed_edge > 0 else \
        np.zeros_like(wt)
    ed_seed = wt & (((zs[T1CE] > p.ed_t1c) & (enh < p.et_lo)) | edge) & ~et_seed & ~core_seed
    sub = np.zeros(brain.shape, dtype=np.int32)
    sub[ed_seed] = L.ED
    sub[core_seed] = L.NCR
    sub[et_seed] = L.ET
    if not (sub > 0).any():
        sub[wt] = L.ED
    elev_c = _gradient([zs[c] for c in [T1CE, *t2]], p.grad_sigma)
    regions = watershed(elev_c, sub, mask=wt, compactness=p.core_compactness)
    regions[~wt] = 0

    et = regions == L.ET
    et = remove_small_components(et, max(1.0, p.min_et_ml / voxel_ml))
    if et.sum() * voxel_ml >= p.rim_core_ml and et.sum() >= p.rim_core_frac * wt.sum():
        # an enhancing tumour: the core is the rim and what it encloses
        core = et | (_fill_rim_interior(et, p.rim_core_close) & wt)
    else:
        core = (regions == L.NCR) | et
        if et.any():
            core |= _fill_rim_interior(et, p.rim_close) & wt
    # core specks without enhancement are edema
    lab, n = _components(core)
    if n:
        sizes = np.bincount(lab.ravel())
        has_et = np.bincount(lab.ravel(), weights=et.ravel()) > 0
        keep = (sizes * voxel_ml >= p.min_core_ml) | has_et
        keep[0] = False
        core = keep[lab]
    out[wt] = L.ED
    out[core] = L.NCR
    out[et & core] = L.ET
    return grow_edema(out, zs[FLAIR], interior, lr, p)


#: et_native at or above this switches the native enhancing-tumour step off
ET_NATIVE_OFF = 50.0


def saved_params(params: dict[str, Any]) -> dict[str, Any]:
    """A parameter set as saved by a study: one saved before the native enhancing-tumour
    step, the FLAIR edema growing or the bias-field correction existed (no ``et_native``
    / ``flair_grow`` / ``n4`` field) runs without it, as it was measured."""
    missing = {"et_native": 99.0, "flair_grow": 99.0, "n4": 0}
    return {**{k: v for k, v in missing.items() if k not in params}, **params}


def native_z(image: np.ndarray, brain: np.ndarray, slices: slice, erode: int, slab: int,
             channels: Sequence[int] = (T1, T1CE)) -> np.ndarray:
    """Robust z of ``channels`` on the native grid, for the axial ``slices`` only.

    As :func:`robust_z` (median and MAD of the brain eroded by ``erode`` voxels, each
    slice levelled to the median of the ``2 * slab + 1`` slices around it), except that
    the MAD is taken before the levelling, so that only the slices asked for need their
    level. Returns ``(len(channels), X, Y, len(slices))`` float32, 0 outside the brain.
    """
    box = bounding_box(brain, margin=0)
    sub = brain[box]
    inner = ndi.binary_erosion(sub, iterations=erode) if erode > 0 else sub
    if inner.sum() < 100:
        inner = sub
    z0 = box[2].start
    ks = range(slices.start or 0, slices.stop if slices.stop is not None else brain.shape[2])
    out = np.zeros((len(channels), brain.shape[0], brain.shape[1], len(ks)), dtype=np.float32)
    counts = inner.sum(axis=(0, 1))
    for i, c in enumerate(channels):
        ch = np.asarray(image[c], dtype=np.float32)[box]
        vals = ch[inner]
        if vals.size == 0:
            continue
        med, mad = robust_stats(vals)
        if mad < 1e-6:
            mad = float(vals.std()) or 1.0
        for j, k in enumerate(ks):
            kk = k - z0
            if kk < 0 or kk >= ch.shape[2]:
                continue
            scale = 1.0
            if slab > 0 and med > 0:
                lo, hi = max(0, kk - slab), min(ch.shape[2], kk + slab + 1)
                if counts[lo:hi].sum() >= 200:
                    level = float(np.median(ch[:, :, lo:hi][inner[:, :, lo:hi]]))
                    if level > 0:
                        scale = med / level
            zk = (ch[:, :, kk] * scale - med) / mad
            zk[~sub[:, :, kk]] = 0.0
            out[i, box[0], box[1], j] = zk
    return out


def refine_et_native(labels: np.ndarray, image: np.ndarray, brain: np.ndarray,
                     p: WatershedParams, z: np.ndarray | None = None) -> np.ndarray:
    """Redraw the enhancing tumour of native ``labels`` on the native grid (see
    ``WatershedParams.et_native``). ``z``: :func:`native_z` of T1 and T1ce over all
    slices when the caller has it (tuning); otherwise it is computed around the core."""
    et0 = labels == L.ET
    if p.et_native >= ET_NATIVE_OFF or not et0.any():
        return labels
    core = (labels == L.NCR) | et0
    reach = max(1, p.et_native_reach) + 1
    box = bounding_box(core, margin=reach + 1)
    lab = labels[box]
    e0, c0 = et0[box], core[box]
    inside = lab > 0
    if z is None:
        zz = native_z(image, brain, box[2], p.stats_erode * p.factor, p.slab * p.factor)
        zb = zz[:, box[0], box[1], :]
    else:
        zb = z[(slice(None),) + tuple(box)]
    zt1, zt1c = zb[0], zb[1]
    region = (ndi.binary_dilation(c0, iterations=p.et_native_reach) & inside
              if p.et_native_reach > 0 else c0.copy())
    region |= ndi.binary_dilation(e0, iterations=1) & brain[box]
    et = region & (zt1c - p.et_native_k * zt1 > p.et_native) & (zt1c > p.et_native_t1c)
    comp, n = _components(et)
    if n:
        touching = np.unique(comp[ndi.binary_dilation(e0, iterations=1) & et])
        keep = np.zeros(n + 1, dtype=bool)
        keep[touching] = True
        keep[0] = False
        et = keep[comp]
    if not et.any():
        return labels  # nothing passes on the native grid: keep the working grid's
    out = labels.copy()
    ob = out[box]
    ob[e0 & ~et] = L.NCR
    ob[et] = L.ET
    return out


def grid_params(p: WatershedParams, factor: int) -> WatershedParams:
    """``p`` for a working grid of ``factor`` instead of ``p.factor`` (a small brain is
    segmented on a finer grid). The smoothing ``sigma`` was tuned on ``p.factor``'s
    grid, whose block mean already averages noise away: on a k-times finer grid it
    becomes ``sqrt((k sigma)^2 + (k^2 - 1) / 12)`` voxels, the same scale in mm plus the
    block mean's own blur (a box of k voxels has variance (k^2 - 1) / 12)."""
    if factor >= p.factor or factor < 1:
        return p
    k = p.factor / factor
    return replace(p, sigma=float(np.sqrt((k * p.sigma) ** 2 + (k * k - 1) / 12)))


def segment_watershed(case: Case, progress: ProgressFn | None = None,
                      params: WatershedParams | dict[str, Any] | None = None,
                      device: str | None = None, model: Any = None, tta: bool = False,
                      uncertainty: bool = False, backend: str | None = None,
                      fast: bool = False, **overrides: Any) -> SegmentationResult:
    """Classical marker-controlled watershed of ``case`` (see the module docstring).

    ``params`` (a :class:`WatershedParams` or a dict) and keyword ``overrides`` change
    the tuned defaults (``device``, ``model``, ``tta``, ``uncertainty``, ``backend`` and
    ``fast`` are accepted, and ignored, so every method takes the same options). Returns labels
    ``(X, Y, Z)`` uint8 on the native grid; ``info`` holds the parameters, the working
    grid and the time in seconds.
    """
    t0 = time.perf_counter()
    _ = (device, model, tta, uncertainty, backend, fast)
    _check_case(case)
    case = with_zero_floor(case)
    if params is None and case.missing:
        params = params_without(case.missing)
    p = params_from(params, **overrides)
    brain = None
    if p.n4 > 0:
        if progress:
            progress(0.0, "watershed: bias-field correction")
        brain = brain_mask(case.image)
        case = replace(case, image=n4_image(case.image, brain, case.spacing, p.n4))
    ws = watershed_grid(case, p, progress, brain=brain)
    if progress:
        progress(0.9, "watershed: back to the native grid")
    labels = ws.native_labels()
    if ws.grid.factor > 1:
        labels = refine_et_native(labels, case.image, ws.brain_native,
                                  without_modalities(p, case.missing))
    if progress:
        progress(1.0, "watershed: done")
    return SegmentationResult(
        labels=labels,
        info={"method": "watershed", "params": asdict(p),
              "seconds": time.perf_counter() - t0},
    )


@dataclass
class WatershedWork:
    """The classical segmentation on its working grid, with what it was computed from:
    ``grid``, the native brain mask, the working brain mask, the robust z maps
    ``(4, x, y, z)`` and the internal labels ``work``."""

    grid: WorkGrid
    brain_native: np.ndarray
    brain: np.ndarray
    z: np.ndarray
    work: np.ndarray
    #: the working grid's smallest lesion (mL), kept on the native grid too
    min_lesion_ml: float = 1.0

    def native_labels(self) -> np.ndarray:
        """The labels on the native grid, nothing outside the brain and no detached speck
        that the step back made (:func:`without_specks`)."""
        labels = labels_from_work(self.grid, self.work)
        labels[~self.brain_native] = 0
        vox = float(np.prod(self.grid.spacing)) / self.grid.factor ** 3 / 1000.0
        return without_specks(labels, self.grid, self.work, vox, self.min_lesion_ml)


def watershed_grid(case: Case, p: WatershedParams, progress: ProgressFn | None = None,
                   brain: np.ndarray | None = None) -> WatershedWork:
    """:func:`segment_watershed` up to its working-grid labels (checked ``case``;
    ``brain``: its brain mask when the caller has it already)."""
    if progress:
        progress(0.0, "watershed: brain mask")
    brain_native = brain_mask(case.image) if brain is None else brain
    if not brain_native.any():
        raise InputError(f"Case {case.case_id}: every voxel is zero; there is no brain.")
    box = bounding_box(brain_native)
    # downsampling pays only on big volumes; a small one keeps thin rims on its own grid
    small = np.prod([s.stop - s.start for s in box]) < SMALL_VOXELS
    grid = make_grid(brain_native, case.spacing, 1 if small else p.factor)
    img = to_work(grid, case.image)
    brain_work = to_work(grid, brain_native) >= 0.5
    if progress:
        progress(0.2, "watershed: normal-tissue statistics")
    z = robust_z(img, brain_work, p.stats_erode, p.slab)
    if progress:
        progress(0.4, "watershed: markers and flooding")
    work = watershed_work(z, brain_work, grid.voxel_ml, float(np.mean(grid.spacing)),
                          grid_params(p, grid.factor), lr_axis(case.affine), case.missing)
    return WatershedWork(grid, brain_native, brain_work, z, work, p.min_lesion_ml)


# ---------------------------------------------------------------------------------------
# CNN-guided refinement

_REGION_INDEX = {r: i for i, r in enumerate(L.REGIONS)}
PerRegion = float | tuple[float, float, float]


def _per_region(value: PerRegion, region: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return float(value[_REGION_INDEX[region]])


@dataclass(frozen=True)
class HybridParams:
    """Parameters of :func:`segment_hybrid`.

    For every region in ``regions`` a voxel whose probability is above ``sure_in`` is an
    inside marker, below ``sure_out`` an outside marker, and a watershed on the image
    gradient (Gaussian scale ``grad_sigma``, voxels) settles the band between them. The
    other regions keep the CNN's own thresholded mask, so ``regions=()`` reproduces the
    CNN alone exactly. ``sure_in``, ``sure_out`` and ``grad_sigma`` are one number for
    all regions or a tuple (WT, TC, ET). Refined lesions without a single sure-inside
    voxel are dropped when ``drop_unsure`` is set, and lesions under ``min_lesion_ml``
    (mL) always.

    ``wt_from``, ``wt_veto``, ``core`` and the adoptions then combine the refined CNN with
    the classical watershed per region (:func:`fuse_labels`): ``wt_from="hybrid"`` with
    ``core="keep"`` and no adoption (``core_adopt=0``, ``et_adopt=0``) is the refinement
    alone. The default takes the whole tumour from the watershed plus the refined CNN's
    lesions that touch it, and the refined core clipped to it, with the watershed's core
    lesions that the CNN supports over 30 % of their voxels (TC probability 0.2 or more)
    while its core covers less than half of them, and the watershed's ET voxels of CNN
    ET probability above 0.05, added.

    The defaults are the choice of the cross-validation study
    (``python -m braintumor.hybrid_study``, ``experiments/hybrid/params.json``) on all
    cases; that study says whether they still match after a rerun.
    """

    sure_in: PerRegion = (0.6, 0.9, 0.6)
    sure_out: PerRegion = (0.4, 0.1, 0.4)
    grad_sigma: PerRegion = 1.0
    compactness: float = 0.0
    drop_unsure: bool = True
    min_lesion_ml: float = 0.0
    regions: tuple[str, ...] = ("WT", "TC", "ET")
    #: where the whole tumour comes from (:data:`WT_SOURCES`, see :func:`fuse_labels`);
    #: anything but "hybrid" also runs :func:`segment_watershed` (its defaults)
    wt_from: str = "touching"
    #: watershed lesions with less than this fraction of their voxels at a CNN WT
    #: probability of 0.5 or more are dropped
    wt_veto: float = 0.5
    #: how the refined core (TC, ET) is fitted into that whole tumour (:data:`CORE_RULES`)
    core: str = "clip"
    #: watershed core lesions of which at least this fraction has a CNN TC probability of
    #: :data:`ADOPT_P` or more join the core, as the watershed outlines them (0: off)
    core_adopt: float = 0.3
    #: ... and of which the refined CNN's (clipped) core covers less than this fraction: the
    #: CNN cut that core too small (1: any lesion)
    core_cover: float = 0.5
    #: watershed ET voxels with a CNN ET probability above this join the enhancing tumour
    #: (inside the core; 0: off)
    et_adopt: float = 0.05
    #: the whole tumour from the packaged trees of :mod:`braintumor.stacking` (when the
    #: package holds them and the result is fused), the core kept as fused
    wt_learned: bool = True

    @property
    def fused(self) -> bool:
        """Whether the label map combines the refined CNN with the classical watershed."""
        return self.wt_from != "hybrid" or self.core != "keep" or self.core_adopt > 0 \
            or self.et_adopt > 0

    def band(self, region: str) -> tuple[float, float]:
        """``(sure_out, sure_in)`` of ``region``."""
        return _per_region(self.sure_out, region), _per_region(self.sure_in, region)


def hybrid_params(params: HybridParams | dict[str, Any] | None = None,
                  **overrides: Any) -> HybridParams:
    """Checked :class:`HybridParams` from a dataclass or dict plus ``overrides``.

    ``regions`` may be a comma-separated string (``"WT,ET"``); lists become tuples.
    A wrong name, region or band raises :class:`InputError`.
    """
    known = {f.name for f in fields(HybridParams)}
    base = asdict(params) if isinstance(params, HybridParams) else dict(params or {})
    opts = {**base, **overrides}
    bad = sorted(set(opts) - known)
    if bad:
        raise InputError(f"Unknown hybrid parameter(s) {bad}; known: {sorted(known)}.")
    regions = opts.get("regions", HybridParams.regions)
    if isinstance(regions, str):
        regions = [r.strip() for r in regions.split(",") if r.strip()]
    regions = tuple(str(r).upper() for r in regions)
    if set(regions) - set(L.REGIONS):
        raise InputError(f"Hybrid regions {list(regions)} must be among WT, TC, ET.")
    opts["regions"] = tuple(r for r in L.REGIONS if r in regions)
    for k in ("sure_in", "sure_out", "grad_sigma"):
        if k in opts and not isinstance(opts[k], (int, float)):
            v = tuple(float(x) for x in opts[k])
            if len(v) != 3:
                raise InputError(f"Hybrid {k} must be one number or three (WT, TC, ET).")
            opts[k] = v
    for k, allowed in (("wt_from", WT_SOURCES), ("core", CORE_RULES)):
        if k in opts and opts[k] not in allowed:
            raise InputError(f"Hybrid {k} {opts[k]!r} must be one of {', '.join(allowed)}.")
    for k in ("wt_veto", "core_adopt", "core_cover", "et_adopt"):
        if k in opts:
            opts[k] = float(opts[k])
            if not 0.0 <= opts[k] <= 1.0:
                raise InputError(f"Hybrid {k} {opts[k]} must lie in [0, 1].")
    hp = HybridParams(**opts)
    for r in L.REGIONS:
        lo, hi = hp.band(r)
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(
                f"Hybrid band for {r}: sure_out {lo} and sure_in {hi} must satisfy "
                "0 <= sure_out <= sure_in <= 1."
            )
    return hp


def cnn_postprocess(post: Any = None) -> Any:
    """The CNN's postprocessing (:class:`braintumor.inference.PostProcess`).

    ``post``: a PostProcess, a dict of its fields, or None for the shipped model's
    (``model.json`` ``postprocess``; the plain 0.5 thresholds when there is no model).
    """
    import json

    from braintumor.inference import DEFAULT_MODEL, MODELS_DIR, PostProcess

    if isinstance(post, PostProcess):
        return post
    if post is None:
        meta = MODELS_DIR / DEFAULT_MODEL / "model.json"
        post = json.loads(meta.read_text()).get("postprocess", {}) if meta.exists() else {}
    return PostProcess(threshold=tuple(post.get("threshold", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
                       et_min_voxels=int(post.get("et_min_voxels", 0)),
                       wt_min_voxels=int(post.get("wt_min_voxels", 0)),
                       wt_keep_fraction=float(post.get("wt_keep_fraction", 0.0)))


#: region -> channels (T1, T1ce, T2, FLAIR indices) whose gradient bounds it
_REGION_CHANNELS = {"WT": (FLAIR, T2), "TC": (T1CE, T2), "ET": (T1CE,)}

#: the refinement works in the box of brain voxels where some region probability
#: reaches this (or the lowest ``sure_out``, when that is lower): outside it nothing
#: can change, since every voxel there is a sure-outside marker
BOX_P = 0.05


def _no_model_error() -> InputError:
    return InputError(
        "The hybrid method needs a CNN model, and this installation has none; "
        "give one with --model, or use --method watershed."
    )


def _cnn_probabilities(case: Case, model: Any = None, device: str = "auto",
                       tta: bool = False, backend: str = "auto", fast: bool = False,
                       progress: ProgressFn | None = None
                       ) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """CNN region probabilities ``(3, X, Y, Z)``, the model's PostProcess, and what ran
    (``model_version``, ``folds``: members run, ``mode``: as the CNN method says it, ``backend``
    and ``precision``). ``progress`` hears the CNN's own progress."""
    try:
        from braintumor import inference
    except ModuleNotFoundError as exc:
        if exc.name == "braintumor.inference":
            raise _no_model_error() from None
        raise
    available = getattr(inference, "shipped_model_available", None)
    if model is None and available is not None and not available():
        raise _no_model_error()
    probs, lm, timings = inference.predict_probabilities(case, model, device, tta=tta,
                                                         backend=backend, fast=fast,
                                                         progress=progress)
    ran = {"model_version": lm.version, "folds": int(timings["members"]),
           "mode": inference.run_mode(fast, tta), **inference.runtime_info(lm, fast, device)}
    return np.asarray(probs, dtype=np.float32), lm.post, ran


@dataclass
class HybridInputs:
    """What the refinement needs from a case, cut to the box where it can act.

    ``probs`` ``(3, x, y, z)`` float32, ``brain`` ``(x, y, z)`` bool and ``z`` robust z
    ``(4, x, y, z)`` (normal-tissue median / MAD of the whole brain) inside ``box`` of
    the native ``shape``; ``voxel_ml`` in mL. Gradients are cached per region and scale,
    so many parameter sets can be tried on one case.
    """

    probs: np.ndarray
    brain: np.ndarray
    z: np.ndarray
    box: Box | None
    shape: tuple[int, int, int]
    voxel_ml: float
    _grads: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    _squared: dict[tuple[int, float], np.ndarray] = field(default_factory=dict)

    def gradient(self, region: str, sigma: float) -> np.ndarray:
        """Multi-modal gradient magnitude bounding ``region`` ``(x, y, z)`` (as
        :func:`_gradient`; each channel's part is computed once, since the regions
        share channels)."""
        key = (region, float(sigma))
        if key not in self._grads:
            acc = np.zeros(self.z.shape[1:], dtype=np.float32)
            for c in _REGION_CHANNELS[region]:
                if (c, float(sigma)) not in self._squared:
                    g = ndi.gaussian_gradient_magnitude(self.z[c], max(sigma, 0.5))
                    self._squared[(c, float(sigma))] = g * g
                acc += self._squared[(c, float(sigma))]
            self._grads[key] = np.sqrt(acc)
        return self._grads[key]


def prepare_hybrid(case: Case, probs: np.ndarray, box_p: float = BOX_P,
                   brain: np.ndarray | None = None) -> HybridInputs:
    """Cut ``case`` and its CNN probabilities ``(3, X, Y, Z)`` to the refinement box
    (``brain``: the case's brain mask when the caller has it already)."""
    brain = brain_mask(case.image) if brain is None else brain
    maybe = (probs.max(axis=0) >= box_p) & brain
    if not maybe.any():
        empty = np.zeros((0, 0, 0), dtype=bool)
        return HybridInputs(np.zeros((3, 0, 0, 0), np.float32), empty,
                            np.zeros((4, 0, 0, 0), np.float32), None, case.shape,
                            case.voxel_volume_ml)
    box = bounding_box(maybe, margin=3)
    # normal-tissue statistics from the whole brain (every other voxel is plenty), so
    # the z scale, and with it the channels' weights in the gradient, does not depend
    # on how large the box is
    sub = brain[::2, ::2, ::2]
    img = np.asarray(case.image[(slice(None),) + tuple(box)], dtype=np.float32)
    b = brain[box]
    z = np.zeros(img.shape, dtype=np.float32)
    for c in range(img.shape[0]):
        vals = case.image[c][::2, ::2, ::2][sub]
        med, mad = robust_stats(vals) if vals.size else (0.0, 0.0)
        if mad < 1e-6:
            mad = float(vals.std()) if vals.size and vals.std() > 0 else 1.0
        z[c] = (img[c] - med) / mad
        z[c][~b] = 0.0
    return HybridInputs(np.asarray(probs[(slice(None),) + tuple(box)], dtype=np.float32), b,
                        z, box, case.shape, case.voxel_volume_ml)


def _refine_region(prob: np.ndarray, elev: np.ndarray, brain: np.ndarray, lo: float,
                   hi: float, p: HybridParams, voxel_ml: float) -> np.ndarray:
    """One region: inside markers ``prob > hi``, outside markers ``prob < lo`` or outside
    the brain, a watershed on ``elev`` for the band between; returns the bool mask."""
    inside = (prob > hi) & brain
    if not inside.any():
        return np.zeros(prob.shape, dtype=bool)
    outside = (prob < lo) | ~brain
    band = ~inside & ~outside
    region = inside
    if band.any():
        markers = np.zeros(prob.shape, dtype=np.int32)
        markers[outside] = 1
        markers[inside] = 2
        # only the band and the markers touching it take part: markers further away
        # can flood nothing, and leaving them out of the watershed's queue makes the
        # refinement several times faster on a full-size case
        reach = ndi.binary_dilation(band)
        ws = watershed(elev, markers, mask=reach, compactness=p.compactness)
        region = (inside | ((ws == 2) & band)) & brain
    lab, n = _components(region)
    if n and (p.drop_unsure or p.min_lesion_ml > 0):
        keep = np.ones(n + 1, dtype=bool)
        keep[0] = False
        if p.drop_unsure:
            # components holding a sure voxel (a count, not a sort per component)
            keep &= np.bincount(lab[prob > hi], minlength=n + 1) > 0
        if p.min_lesion_ml > 0:
            keep[1:] &= np.bincount(lab.ravel(), minlength=n + 1)[1:] * voxel_ml >= \
                p.min_lesion_ml
        region = keep[lab]
    return region


def hybrid_labels(inp: HybridInputs, hp: HybridParams, post: Any) -> np.ndarray:
    """Internal labels ``(X, Y, Z)`` of the hybrid for prepared inputs.

    Regions in ``hp.regions`` are refined; the rest are the CNN's masks at ``post``'s
    thresholds. The three masks then go through the CNN's own postprocessing (nesting,
    small components, ET relabelling), so the hybrid differs from the CNN alone only
    where the refinement changed a mask.
    """
    labels = np.zeros(inp.shape, dtype=np.uint8)
    if inp.box is None:
        return labels
    masks = []
    for i, r in enumerate(L.REGIONS):
        if r in hp.regions:
            lo, hi = hp.band(r)
            masks.append(_refine_region(inp.probs[i], inp.gradient(r, _per_region(
                hp.grad_sigma, r)), inp.brain, lo, hi, hp, inp.voxel_ml))
        else:
            masks.append(inp.probs[i] > post.threshold[i])
    binary = replace(post, threshold=(0.5, 0.5, 0.5))
    labels[inp.box] = binary.apply(np.stack(masks).astype(np.float32))
    return labels


#: whole-tumour sources of :func:`fuse_labels`
WT_SOURCES = ("hybrid", "watershed", "union", "intersection", "touching")
#: ways to fit the refined core into the fused whole tumour
CORE_RULES = ("keep", "clip", "extend")
#: the CNN TC probability from which a voxel counts as supporting a watershed core lesion
ADOPT_P = 0.2


def fuse_labels(hybrid: np.ndarray, watershed_labels: np.ndarray, wt_prob: np.ndarray,
                wt_from: str = "hybrid", wt_veto: float = 0.0, core: str = "keep",
                core_adopt: float = 0.0, et_adopt: float = 0.0,
                tc_prob: np.ndarray | None = None, et_prob: np.ndarray | None = None,
                core_cover: float = 1.0
                ) -> np.ndarray:
    """Per-region combination of the refined CNN and the classical watershed.

    ``hybrid``, ``watershed_labels``: internal labels ``(X, Y, Z)``; ``wt_prob``: the
    CNN's whole-tumour probability ``(X, Y, Z)``. First, watershed lesions (26-connected
    components of its WT) of which less than the fraction ``wt_veto`` has a ``wt_prob``
    of 0.5 or more are dropped: the watershed reads any asymmetric FLAIR/T2 brightness
    as tumour, the CNN knows better what a tumour looks like (a lesion's fraction, not
    its peak: a false lesion beside the tumour often reaches the CNN's edge somewhere).
    The whole tumour is then, by ``wt_from``:

    * ``hybrid``: the hybrid's (the CNN's, refined where the refinement chose to);
    * ``watershed``: the (vetoed) watershed's;
    * ``union`` / ``intersection`` of the two;
    * ``touching``: the watershed's plus every hybrid lesion that touches it (the CNN
      extends a lesion the watershed found, but its isolated blobs are dropped).

    When that whole tumour is empty but the hybrid's is not, the hybrid's labels are
    returned unchanged. The core (TC, ET: the hybrid's) is fitted in by
    ``core``: ``keep`` as it is (the whole tumour grows to hold it), ``clip`` cut to the
    whole tumour, ``extend`` core lesions touching the whole tumour kept whole (and the
    whole tumour grown to hold them), the others dropped.

    Then the watershed's core may add what the CNN under-reads (a T1ce-dark core the
    CNN gives a low but not negligible probability): with ``core_adopt`` > 0, each
    watershed core lesion (26-connected component of its TC) of which at least that
    fraction has a ``tc_prob`` of :data:`ADOPT_P` or more, and less than ``core_cover``
    is already core, joins the core whole; with ``et_adopt`` > 0, watershed ET voxels of
    ``et_prob`` above it join the enhancing tumour. What joins is cut to the whole tumour
    under ``clip``. A lesion the CNN hardly supports (the watershed reading edema as
    necrosis) stays out.

    Edema is the whole tumour minus the core. Returns internal labels ``(X, Y, Z)``
    uint8, nested.
    """
    if wt_from not in WT_SOURCES or core not in CORE_RULES:
        raise InputError(f"Fusion {wt_from!r}/{core!r}: wt_from must be one of "
                         f"{', '.join(WT_SOURCES)}, core one of {', '.join(CORE_RULES)}.")
    if (core_adopt > 0 and tc_prob is None) or (et_adopt > 0 and et_prob is None):
        raise InputError("Fusion: core_adopt needs tc_prob and et_adopt needs et_prob.")
    adopt = core_adopt > 0 or et_adopt > 0
    if wt_from == "hybrid" and core == "keep" and not adopt:
        return np.asarray(hybrid, dtype=np.uint8).copy()
    out = np.zeros(hybrid.shape, dtype=np.uint8)
    present = (hybrid > 0) | (watershed_labels > 0)
    if not present.any():
        return out
    # everything happens inside the box of both label maps (a small part of the volume)
    box = bounding_box(present, margin=2)
    hm = L.region_masks(hybrid[box])
    ws = watershed_labels[box] > 0
    if wt_veto > 0 and ws.any():
        lab, n = _components(ws)
        sure = (wt_prob[box] >= 0.5).astype(np.float32)
        support = np.asarray(ndi.mean(sure, lab, index=np.arange(1, n + 1)))
        ws = np.concatenate([[False], support >= wt_veto])[lab]
    cnn = hm["WT"]
    if wt_from == "hybrid":
        wt = cnn
    elif wt_from == "watershed":
        wt = ws
    elif wt_from == "union":
        wt = ws | cnn
    elif wt_from == "intersection":
        wt = ws & cnn
    else:
        wt = ws | _touching(cnn, ws)
    if not wt.any() and cnn.any():
        # the two disagree about every lesion (say the watershed missed a tumour that
        # crosses the midline symmetrically): rather the hybrid than nothing at all
        return np.asarray(hybrid, dtype=np.uint8).copy()
    tc, et = hm["TC"], hm["ET"]
    if core == "clip":
        tc = tc & wt
    elif core == "extend":
        tc = _touching(tc, wt)
    if adopt:
        wsm = L.region_masks(watershed_labels[box])
        if core_adopt > 0 and tc_prob is not None and wsm["TC"].any():
            lab, n = _components(wsm["TC"])
            sure = (tc_prob[box] >= ADOPT_P).astype(np.float32)
            index = np.arange(1, n + 1)
            support = np.asarray(ndi.mean(sure, lab, index=index))
            cover = np.asarray(ndi.mean(tc.astype(np.float32), lab, index=index))
            take = (support >= core_adopt) & (cover < core_cover)
            tc = tc | (np.concatenate([[False], take])[lab] & (wt if core == "clip" else True))
        if et_adopt > 0 and et_prob is not None:
            et = et | (wsm["ET"] & (et_prob[box] > et_adopt))
    wt = wt | tc
    et = et & tc
    sub = out[box]
    sub[wt] = L.ED
    sub[tc] = L.NCR
    sub[et] = L.ET
    return out


def _without_small_lesions(labels: np.ndarray, min_ml: float, voxel_ml: float
                           ) -> np.ndarray:
    """``labels`` without the detached lesions (26-connected) under ``min_ml`` mL."""
    found = labels > 0
    keep = remove_small_components(found, min_ml, voxel_size=voxel_ml)
    if np.array_equal(keep, found):
        return labels
    return np.where(keep, labels, 0).astype(labels.dtype, copy=False)


def _touching(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The 26-connected components of ``mask`` that overlap or touch ``other``."""
    if not mask.any() or not other.any():
        return np.zeros(mask.shape, dtype=bool)
    lab, n = _components(mask)
    hit = np.unique(lab[ndi.binary_dilation(other, structure=_STRUCT26) & mask])
    keep = np.zeros(n + 1, dtype=bool)
    keep[hit] = True
    keep[0] = False
    return keep[lab]


#: a region whose CNN and watershed outlines agree less than this (Dice) is flagged for a
#: check: held out on the 14 shared cases, agreement ranked the combined hybrid's true
#: Dice with Spearman 0.65 (WT), 0.75 (TC) and 0.88 (ET); README, "How far to trust a
#: hybrid outline"
AGREEMENT_CHECK = 0.5


def method_agreement(cnn_labels: np.ndarray, watershed_labels: np.ndarray
                     ) -> dict[str, float]:
    """Dice of the CNN's and the classical watershed's label maps per region (WT, TC,
    ET; both empty -> 1): two methods that fail differently agreeing on an outline."""
    from braintumor.metrics import dice

    a, b = L.region_masks(cnn_labels), L.region_masks(watershed_labels)
    return {r: round(dice(a[r], b[r]), 3) for r in L.REGIONS}


def agreement_note(agreement: dict[str, float]) -> str | None:
    """One sentence naming the regions whose agreement is under :data:`AGREEMENT_CHECK`,
    or None."""
    low = [f"{r} ({v:.2f})" for r, v in agreement.items() if v < AGREEMENT_CHECK]
    if not low:
        return None
    return (f"the CNN and the watershed disagree on {', '.join(low)} (Dice between them "
            f"under {AGREEMENT_CHECK}; held out, such regions scored far lower): check "
            f"{'that region' if len(low) == 1 else 'those regions'}.")


def segment_hybrid(case: Case, probabilities: np.ndarray | None = None,
                   progress: ProgressFn | None = None,
                   params: HybridParams | dict[str, Any] | None = None,
                   model: Any = None, device: str = "auto", tta: bool = False,
                   post: Any = None, uncertainty: bool = False, backend: str = "auto",
                   fast: bool = False,
                   **overrides: Any) -> SegmentationResult:
    """CNN-guided watershed: ``probabilities`` ``(3, X, Y, Z)`` (WT, TC, ET, in [0, 1],
    native grid) give sure inside / outside markers per region; a watershed on the image
    gradient settles the uncertain band (see :class:`HybridParams`), and the CNN's
    postprocessing ``post`` (default: the shipped model's) makes the label map.

    Without ``probabilities`` the shipped CNN (:mod:`braintumor.inference`) provides
    them and its postprocessing (``model``, ``device``, ``tta``, ``backend`` and
    ``fast``, the CNN's one-model fast mode, go to it);
    when there is none, :class:`InputError` says so. ``uncertainty`` adds the binary
    entropy (bits) of the whole-tumour probability, as the CNN method does.

    With the fusion fields of :class:`HybridParams` set (``wt_from`` other than
    "hybrid", ``core`` other than "keep", or an adoption on), :func:`segment_watershed`
    (its defaults) also runs and :func:`fuse_labels` combines the two label maps per
    region; ``info["agreement"]`` then holds the CNN's and the watershed's agreement per
    region (:func:`method_agreement`), a sign of how far to trust each region.
    """
    t0 = time.perf_counter()
    _check_case(case)
    _need_all(case, "hybrid")
    hp = hybrid_params(params, **overrides)
    if progress:
        progress(0.0, "hybrid: CNN probabilities")
    if probabilities is None:
        cnn_progress = None if progress is None else (
            lambda f, stage: progress(0.5 * f, f"hybrid: {stage}"))
        probs, model_post, cnn_ran = _cnn_probabilities(case, model, device,
                                                        tta or uncertainty, backend, fast,
                                                        cnn_progress)
        post = model_post if post is None else post
    else:
        probs, cnn_ran = np.asarray(probabilities, dtype=np.float32), {}
    if probs.shape != (3, *case.shape):
        raise InputError(
            f"Case {case.case_id}: CNN probabilities have shape {probs.shape}; the hybrid "
            f"method needs (3, {', '.join(map(str, case.shape))}) (WT, TC, ET)."
        )
    if probabilities is not None:
        lo, hi = float(probs.min()), float(probs.max())
        if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
            raise InputError(f"Case {case.case_id}: the probabilities run from {lo:g} to "
                             f"{hi:g}; they must lie in [0, 1] (a logit or a 0-255 map is "
                             "not a probability).")
    pp = cnn_postprocess(post).for_voxel(float(np.prod(case.spacing)))
    t1 = time.perf_counter()
    if progress:
        progress(0.5, "hybrid: refining the uncertain band")
    lowest = min(hp.band(r)[0] for r in hp.regions) if hp.regions else BOX_P
    brain = brain_mask(case.image)  # shared by the refinement and the watershed
    inp = prepare_hybrid(case, probs, min(BOX_P, lowest), brain)
    labels = hybrid_labels(inp, hp, pp)
    t2 = time.perf_counter()
    ws_seconds = 0.0
    learned = False
    agreement: dict[str, float] | None = None
    if hp.fused:
        if progress:
            progress(0.7, "hybrid: classical watershed")
        # the working grid's labels, without the native enhancing-tumour step, the
        # FLAIR edema growing or a bias correction: the combination rule was chosen and
        # measured on them (experiments/hybrid)
        wsw = watershed_grid(case, params_from(None, flair_grow=99.0, n4=0), brain=brain)
        ws = wsw.native_labels()
        ws_seconds = time.perf_counter() - t2
        agreement = method_agreement(pp.apply(probs), ws)
        labels = fuse_labels(labels, ws, probs[0], hp.wt_from, hp.wt_veto, hp.core,
                             core_adopt=hp.core_adopt, core_cover=hp.core_cover,
                             et_adopt=hp.et_adopt, tc_prob=probs[1], et_prob=probs[2])
        trees = stacking.shipped_model() if hp.wt_learned else None
        if trees is not None:
            if progress:
                progress(0.85, "hybrid: learned whole tumour")
            pw = stacking.whole_tumour_probability(
                trees, wsw.z, wsw.brain, to_work(wsw.grid, probs), wsw.work,
                lr_axis(case.affine))
            labels = stacking.with_whole_tumour(
                labels, from_work(wsw.grid, pw) & wsw.brain_native)
            learned = True
        # the combination leaves specks of a few voxels where the learned whole tumour,
        # back from the working grid, or the clipping cut a lesion's edge off: no lesion
        # under the watershed's smallest (the CNN's own is larger still) stays
        labels = _without_small_lesions(labels, wsw.min_lesion_ml, case.voxel_volume_ml)
    if progress:
        progress(1.0, "hybrid: done")
    t3 = time.perf_counter()
    unc = None
    if uncertainty:
        pw = np.clip(probs[0], 1e-6, 1 - 1e-6)
        unc = (-(pw * np.log2(pw) + (1 - pw) * np.log2(1 - pw))).astype(np.float32)
    info: dict[str, Any] = {
        "method": "hybrid", "params": asdict(hp), "postprocess": asdict(pp),
        "refine_seconds": t2 - t1, "watershed_seconds": ws_seconds,
        "fuse_seconds": t3 - t2 - ws_seconds, "learned_wt": learned, "seconds": t3 - t0,
        **cnn_ran}  # the CNN's model version, members and mode, when it ran here
    notes = []
    if agreement is not None:
        info["agreement"] = agreement
        notes.append(agreement_note(agreement))
    if probabilities is None:  # the CNN ran here, perhaps in its fast mode
        from braintumor.inference import fast_small_note

        notes.append(fast_small_note(fast, float(np.count_nonzero(labels))
                                     * case.voxel_volume_ml))
    if any(notes):
        info["warning"] = join_warnings(*notes)
    return SegmentationResult(labels=labels, probabilities=probs, uncertainty=unc, info=info)
