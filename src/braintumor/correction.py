"""Interactive correction of a label map from a few seed points.

A user clicks a few voxels and says what each one is: a region (internal label 1 NCR,
2 ED, 3 ET) or background (0). :func:`correct` changes the label map only inside a
local window, the union of the cubes of half-width ``window_mm`` (24 mm) around the
seeds, so an edit on a full-size case takes a fraction of a second and nothing far from
the clicks moves.

Seeds whose cubes overlap or touch are worked on together; seeds far apart each in a
window of their own; the same seed given twice is one seed. A seed claims the voxels
like it that connect to a small ball around it (radius ``seed_mm``) through voxels like
it, in its own cube: "like it" is within tolerance of the ball's mean in robust z
against the case's normal brain (median and MAD of the brain not labelled tumour, so a
window that is mostly tumour does not stretch the scale), on the modalities that define
the region asked for (edema: T1ce, T2, FLAIR; enhancing tumour: T1ce; necrosis: T1ce and
T2; background: all four). A region seed adds to background only voxels that look
abnormal the way its region does (:func:`_abnormal`: enhancing tumour bright on T1ce,
edema bright on T2 or FLAIR, necrosis bright on T2, neither of the last two dark on
FLAIR), and only when its own ball looks so: "like" a seed on normal tissue is normal
tissue, so such a seed adds its ball and no more. It relabels the label under it, and
leaves the other regions around it as they are. A region seed on a voxel that already
holds its label changes nothing. Seeds asking for different
labels of the same voxels share them along the strongest edge between them (a
watershed from their balls on the gradient magnitude). A background seed removes only
tumour (it never adds): the tumour like it that connects to it, the whole false
positive it hits when that lies wholly inside the window (where the images are 0 too),
and, of one that runs on outside the window, its voxels outside the brain.

Measured on the 14 shared BraTS 2018 cases (``benchmarks/bench_correction_recall.py``;
the tolerances, modalities and floors were chosen on these same cases, so the numbers
are in-sample): one ED seed at the deepest voxel of the largest edema piece, cleared,
gives back 57 % of it in its window, with 5 % of what it adds not edema in the expert
map (15 % and 4 % with the former all-four-modality test against the window's own
statistics); one region seed on unlabelled normal brain adds a median of 33 voxels
(its ball; at most 1026), one confirming the label under it none.

A seed that changes nothing (outside the brain, or asking for what is there already) is
said in ``notes`` when the caller gives a list (the web page shows it).

Speed (``benchmarks/bench_correction.py``, full-size case): an edit costs about what
its seeds' cubes hold (a labelling of each cube), not the seeds times the box they span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from braintumor.cases import Case, check_finite
from braintumor.errors import InputError
from braintumor.preprocess import robust_stats

Seed = tuple[int, int, int, int]


@dataclass(frozen=True)
class CorrectionParams:
    """``window_mm``: half-width of the window around the seeds (mm); ``seed_mm``:
    radius of each seed's ball (mm); ``tolerance``: how far (robust z against the normal
    brain, the worst of the region's modalities) a voxel may differ from a seed's mean
    and still be claimed by it, or ``relative`` times the seed's own z where that is
    larger (1.5 and 0.5: of 2.5/0.6, 2.0/0.5 and 1.5/0.5, the one with the fewest false
    additions at about the same F1 on the shared cases); ``grad_sigma``: Gaussian scale
    of the gradient along which seeds of different labels share voxels (voxels).

    ``abnormal``: how abnormal (robust z, :func:`_abnormal`) background must look to
    join a region; ``seed_floor``: how abnormal a region seed's ball must look for the
    seed to add more than its ball; ``flair_floor``: the FLAIR z below which a voxel is
    fluid, not edema or necrosis. Chosen on the 14 shared cases: a floor of 0.7 let
    seeds on normal brain spread (Brats18_TCIA01_378_1, TCIA01_201_1, TCIA10_628_1:
    15 000-42 000 voxels), 1.5 cost edema and enhancing recall (2013_11_1,
    TCIA13_623_1); 1.0 for what joins and 1.5 for the seed keep both; without the
    FLAIR floor a seed in the ventricle of TCIA13_623_1 added 2 300-4 100 voxels of
    fluid, with it NCR recall falls on TCIA10_628_1 (0.60 to 0.00)."""

    window_mm: float = 24.0
    seed_mm: float = 2.0
    tolerance: float = 1.5
    relative: float = 0.5
    grad_sigma: float = 1.0
    abnormal: float = 1.0
    seed_floor: float = 1.5
    flair_floor: float = -0.5


def _whole(v: object) -> int:
    """A whole number (a float such as 3.0 included); else ValueError."""
    if isinstance(v, bool):
        raise ValueError(v)
    f = float(v)  # type: ignore[arg-type]
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def _seed_list(seeds: object) -> list[object]:
    """``seeds`` as a list: one seed given bare, ``(x, y, z, label)``, is a list of one."""
    if seeds is None or isinstance(seeds, (str, bytes)):
        raise InputError(f"Seeds must be a list of (x, y, z, label); got {seeds!r}.")
    try:
        items = list(seeds)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"Seeds must be a list of (x, y, z, label); got {seeds!r}.") from None
    if len(items) in (3, 4) and not any(isinstance(v, (Sequence, np.ndarray)) for v in items):
        return [tuple(items)]  # one seed, not wrapped in a list (three numbers: no label)
    return items


def _check(case: Case, labels: np.ndarray, seeds: object) -> list[Seed]:
    if labels.shape != case.shape:
        raise InputError(
            f"Label map shape {labels.shape} differs from case {case.case_id}'s {case.shape}."
        )
    if min(case.shape) < 2:
        raise InputError(f"Case {case.case_id} is {case.shape} voxels: a correction needs "
                         "at least two voxels along every axis.")
    from braintumor.labels import check_internal

    check_internal(labels, "label map", "corrections take")
    out: list[Seed] = []
    at: dict[tuple[int, int, int], int] = {}
    for s in _seed_list(seeds):
        if (isinstance(s, (Sequence, np.ndarray)) and not isinstance(s, str)
                and len(s) == 3):
            raise InputError(f"Seed {tuple(s)!r} has no label: give (x, y, z, label), the "
                             "label 0 background, 1 NCR, 2 ED or 3 ET.")
        if not isinstance(s, (Sequence, np.ndarray)) or isinstance(s, str) or len(s) != 4:
            raise InputError(f"Seed {s!r} must be (x, y, z, label).")
        try:
            x, y, z, lab = (_whole(v) for v in s)
        except (TypeError, ValueError):
            raise InputError(f"Seed {s!r}: x, y, z and label must be whole numbers.") from None
        if not all(0 <= c < n for c, n in zip((x, y, z), case.shape, strict=True)):
            raise InputError(f"Seed ({x}, {y}, {z}) lies outside the image {case.shape}.")
        if lab not in (0, 1, 2, 3):
            raise InputError(
                f"Seed label {lab} is not an internal label (0 background, 1 NCR, 2 ED, 3 ET)."
            )
        if at.get((x, y, z), lab) != lab:
            raise InputError(f"Two seeds at ({x}, {y}, {z}) ask for different labels "
                             f"({at[(x, y, z)]} and {lab}); keep one of them.")
        at[(x, y, z)] = lab
        out.append((x, y, z, lab))
    return out


#: what each internal label is called in a correction's notes
_NAMES = {0: "background", 1: "necrosis (NCR)", 2: "edema (ED)", 3: "enhancing tumour (ET)"}


def correct(case: Case, labels: np.ndarray, seeds: Sequence[Seed] | Seed,
            params: CorrectionParams | None = None, notes: list[str] | None = None,
            where: Callable[[int, int, int], str] | None = None) -> np.ndarray:
    """Corrected copy of ``labels`` ``(X, Y, Z)`` (internal, uint8) given ``seeds``, a list
    of ``(x, y, z, label)`` voxel indices with an internal label (0 removes tumour); one
    seed may be given bare. Two seeds on one voxel asking for different labels raise
    :class:`InputError`; the same seed twice counts once.

    Only voxels within ``window_mm`` of a seed (per axis: the cube around each seed)
    can change. Seeds whose cubes overlap or touch are worked on together, in the box
    their cubes span; seeds far apart each in their own, so scattered clicks cost what
    that many single clicks do. ``notes``: when a list is given, a sentence is added to
    it for every seed that changed nothing (one outside the brain, or one asking for
    what is there already); ``where`` names a seed's place in them (default: its voxel
    indices, ``(x, y, z)``), so a caller can say it as its reader sees it (the web page:
    scanner millimetres, as the line under its viewer).
    """
    p = params or CorrectionParams()
    labels = np.asarray(labels)
    sds = _check(case, labels, seeds)
    out = labels.astype(np.uint8, copy=True)
    if not sds:
        return out
    spacing = np.asarray(case.spacing, dtype=float)
    half = np.maximum(1, np.round(p.window_mm / spacing)).astype(int)
    # the same seed given twice is one seed, and said once
    sds = list(dict.fromkeys(sds))
    changed = [False] * len(sds)
    stats = _normal_stats(case, labels)
    for group in _clusters(np.array([s[:3] for s in sds]), half):
        lab, box, window, moved = _correct_window(case, labels, [sds[i] for i in group],
                                                  p, half, stats)
        out[box][window] = lab[window]
        for i, m in zip(group, moved, strict=True):
            changed[i] = m
    if notes is not None:
        for (x, y, z, lab_), moved_ in zip(sds, changed, strict=True):
            if moved_:
                continue
            at = where(x, y, z) if where is not None else f"({x}, {y}, {z})"
            if not np.any(np.asarray(case.image[:, x, y, z]) != 0):
                notes.append(f"the seed at {at} lies outside the brain (every "
                             "modality is 0 there); nothing changed there")
            elif lab_ == 0:
                notes.append(f"the background seed at {at} found no tumour to "
                             "take away; nothing changed there")
            else:
                notes.append(f"the seed at {at} asks for {_NAMES[lab_]}, which "
                             "is what the outline holds there already; nothing changed there")
    return out


#: the modalities (0 T1, 1 T1ce, 2 T2, 3 FLAIR) that decide whether a voxel is like a
#: seed, per label: edema is FLAIR/T2 signal without enhancement, enhancing tumour is
#: T1ce enhancement, necrosis a T1ce-dark core with T2 signal; T1 says little about any
#: of them, and its texture only broke lesions up. A background seed uses all four.
_CHANNELS: dict[int, tuple[int, ...]] = {0: (0, 1, 2, 3), 1: (1, 2), 2: (1, 2, 3), 3: (1,)}


#: stride of the voxel grid the normal brain's statistics are taken from (every fourth
#: voxel along each axis: about 25 000 brain samples on a full-size case, medians within
#: 1 % of every second voxel's, at an eighth of the cost)
_STRIDE = 4
#: fewest samples the statistics are taken from: below it, the normal brain is topped up
#: with labelled brain (evenly spread), so the scale moves smoothly as the labels grow
_MIN_SAMPLES = 1000


def _refuse_nonfinite(case: Case, part: np.ndarray) -> None:
    """Refuse the case (:func:`check_finite`, which counts the whole image's NaN and
    infinite voxels) when ``part``, voxels the correction reads, holds one. Only what is
    read is summed: the whole image's sum on every edit cost a full-size case 12 ms of a
    one-seed edit's 33."""
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(part.sum(dtype=np.float64)))
    if not finite:
        check_finite(case, finite=False)


def _normal_stats(case: Case, labels: np.ndarray) -> np.ndarray | None:
    """Per modality ``(median, scale)`` of the normal brain (brain not labelled tumour),
    from every ``_STRIDE``-th voxel along each axis; None where too little brain is
    seen. With fewer than ``_MIN_SAMPLES`` normal samples, labelled brain tops them up.
    A case with no labels yet is all "normal": a median and MAD barely move for a
    tumour that is a minority of the brain."""
    k = _STRIDE
    sub = np.asarray(case.image)[:, ::k, ::k, ::k]
    _refuse_nonfinite(case, sub)
    brain = np.any(sub != 0, axis=0)
    if brain.sum() < 100:
        return None
    lab = np.asarray(labels)[::k, ::k, ::k]
    normal = brain & (lab == 0)
    short = _MIN_SAMPLES - int(normal.sum())
    if short > 0:
        extra = np.flatnonzero(brain & ~normal)
        take = extra[np.linspace(0, extra.size - 1, min(short, extra.size)).astype(int)]
        normal.ravel()[take] = True
    out = np.zeros((sub.shape[0], 2))
    for c in range(sub.shape[0]):
        v = sub[c][normal].astype(np.float32)
        med, mad = robust_stats(v)
        out[c] = med, mad or float(v.std()) or 1.0
    return out


def _abnormal(zs: np.ndarray, cube: tuple[slice, ...], lab: int,
              p: CorrectionParams, floor: float) -> np.ndarray:
    """Voxels of ``cube`` that look abnormal the way region ``lab`` does, in robust z
    against normal brain: enhancing tumour bright on T1ce; edema bright on T2 or FLAIR;
    necrosis bright on T2; edema and necrosis not dark on FLAIR (``flair_floor``: fluid,
    the ventricles and sulci, is bright on T2 and dark on FLAIR)."""
    t1ce, t2, flair = zs[(1,) + cube], zs[(2,) + cube], zs[(3,) + cube]
    if lab == 3:
        return t1ce >= floor
    if lab == 2:
        return (np.maximum(t2, flair) >= floor) & (flair >= p.flair_floor)
    return (t2 >= floor) & (flair >= p.flair_floor)


def _clusters(pts: np.ndarray, half: np.ndarray) -> list[list[int]]:
    """Seeds (indices into ``pts``) grouped so that two whose cubes of half-width ``half``
    overlap or touch share a group."""
    n = len(pts)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    close = np.all(np.abs(pts[:, None, :] - pts[None, :, :]) <= 2 * half + 1, axis=2)
    for i, j in zip(*np.nonzero(np.triu(close, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _reach(p: CorrectionParams) -> int:
    """Voxels beyond a seed's cube where the smoothed z must be right: the gradient the
    seeds of different labels share voxels along (:func:`_split`) reads its Gaussian's
    reach (four sigma, rounded) plus one beyond what a claim holds."""
    extra = float(np.sqrt(max(p.grad_sigma ** 2 - 0.25, 0.0)))
    return int(4 * extra + 0.5) + 1


#: reach of the z-scores' own Gaussian (sigma 0.5, truncated at four sigma)
_Z_REACH = 2


def _smoothed_z(img: np.ndarray, scale: list[tuple[float, float]],
                cubes: list[tuple[slice, ...]], p: CorrectionParams) -> np.ndarray:
    """Robust z of ``img`` ``(C, X, Y, Z)`` (``scale``: per modality median and scale),
    smoothed (Gaussian, sigma 0.5 voxel): over the whole box, or, where the seeds'
    ``cubes`` (grown by what :func:`_split` reads) hold fewer voxels than the box (seeds
    far apart, whose cubes chain into a box mostly outside them), cube by cube, with a
    margin the filter reaches, so the values within them are the box-wide ones to the
    last bit and the rest, never read, stays 0."""
    shape = img.shape[1:]
    grow = _reach(p)
    inner = [tuple(slice(max(0, s.start - grow), min(s.stop + grow, n))
                   for s, n in zip(cube, shape, strict=True)) for cube in cubes]
    outer = [tuple(slice(max(0, s.start - _Z_REACH), min(s.stop + _Z_REACH, n))
                   for s, n in zip(cube, shape, strict=True)) for cube in inner]
    size = sum(int(np.prod([s.stop - s.start for s in cube])) for cube in outer)
    if size >= int(np.prod(shape)):
        outer = [tuple(slice(0, n) for n in shape)]
        inner = outer
    zs = np.zeros(img.shape, dtype=np.float32)
    for part, keep in zip(outer, inner, strict=True):
        at = tuple(slice(k.start - o.start, k.stop - o.start)
                   for k, o in zip(keep, part, strict=True))
        for c, (med, mad) in enumerate(scale):
            z = (img[(c,) + part] - np.float32(med)) / np.float32(mad)
            zs[(c,) + keep] = ndi.gaussian_filter(z, 0.5)[at]
    return zs


def _correct_window(case: Case, labels: np.ndarray, sds: list[Seed], p: CorrectionParams,
                    half: np.ndarray, stats: np.ndarray | None
                    ) -> tuple[np.ndarray, tuple[slice, ...], np.ndarray, list[bool]]:
    """One group of nearby seeds: the corrected labels of the box their cubes span, the
    box, the window (the union of the cubes) in it, and whether each seed changed a
    voxel."""
    spacing = np.asarray(case.spacing, dtype=float)
    pts = np.array([s[:3] for s in sds])
    lo = np.maximum(pts.min(0) - half, 0)
    hi = np.minimum(pts.max(0) + half + 1, np.asarray(case.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    img = np.asarray(case.image[(slice(None),) + box], dtype=np.float32)
    _refuse_nonfinite(case, img)
    orig = np.array(labels[box], dtype=np.uint8)
    lab = orig.copy()
    brain = np.any(img != 0, axis=0)

    # robust z against the normal brain (``stats``), so a tolerance means the same on
    # any scanner and in a window that is mostly tumour; the window's own statistics
    # only where the case shows too little normal brain
    scale = []
    for c in range(img.shape[0]):
        if stats is not None:
            med, mad = float(stats[c, 0]), float(stats[c, 1])
        else:
            v = img[c][brain] if brain.any() else img[c].ravel()
            if v.size > 40_000:  # every fourth voxel: the same median and MAD to < 1 %
                v = v[::4]
            med, mad = robust_stats(v)
            mad = mad or float(v.std()) or 1.0
        scale.append((med, mad))
    zs = _smoothed_z(img, scale, [tuple(slice(max(0, int(c - h)), int(c + h + 1))
                                        for c, h in zip(pt, half, strict=True))
                                  for pt in pts - lo], p)

    shape = lab.shape
    r = np.maximum(0, np.round(p.seed_mm / spacing)).astype(int)
    tumour = orig > 0
    # the window: the union of the cubes of half-width window_mm around the seeds (not
    # their bounding box, so three scattered clicks cost about what one does); its edge
    # layer, where a neighbour outside it lies inside the image, keeps its labels
    cubes = [tuple(slice(max(0, int(c - h)), min(int(c + h + 1), n))
                   for c, h, n in zip(pt, half, shape, strict=True)) for pt in pts - lo]
    window = np.zeros(shape, dtype=bool)
    for cube in cubes:
        window[cube] = True
    padded = np.pad(window, 1)
    for axis in range(3):
        for side, at_edge in ((0, lo[axis] == 0), (-1, hi[axis] == case.shape[axis])):
            if at_edge:  # an image face has no neighbour to keep
                idx = [slice(None)] * 3
                idx[axis] = slice(-1, None) if side == -1 else slice(0, 1)
                padded[tuple(idx)] = True
    edge = window & ~ndi.binary_erosion(padded)[1:-1, 1:-1, 1:-1]
    free = window & ~edge
    comps = None
    claims: list[np.ndarray] = []
    balls: list[tuple[tuple[slice, ...], np.ndarray]] = []
    for (x, y, zz, lab_), cube in zip(sds, cubes, strict=True):
        at = (x - lo[0], y - lo[1], zz - lo[2])
        c = np.array(at) - np.array([s.start for s in cube])
        grid = np.ogrid[tuple(slice(0, s.stop - s.start) for s in cube)]
        d2 = sum(((g - ci) / max(ri, 1)) ** 2 for g, ci, ri in zip(grid, c, r, strict=True))
        ball = d2 <= 1.0  # in the cube
        balls.append((cube, ball))
        if lab_ and orig[at] == lab_:
            # a region seed on a voxel that already holds its label asks for nothing
            claims.append(np.zeros(shape, dtype=bool))
            continue
        zc = zs[(list(_CHANNELS[lab_]),) + cube]
        mean = zc[:, ball].mean(axis=1)
        # a seed far from normal tissue tolerates more: the lesion's own blurred edge
        # lies halfway between the seed and its surroundings
        allow = np.maximum(p.tolerance, p.relative * np.abs(mean))
        near = np.all(np.abs(zc - mean[:, None, None, None]) <= allow[:, None, None, None],
                      axis=0)
        if lab_ == 0:
            # a background seed only ever takes tumour away
            allowed = tumour[cube]
        else:
            # a region seed adds to background, or relabels what lies under it; the
            # other regions around it stay as they are
            under = orig[at]
            allowed = (orig[cube] == 0) | (orig[cube] == under)
        ok = allowed & brain[cube] & free[cube]
        if lab_:
            # background joins a region only where it looks abnormal the region's way
            # (and only from a seed that does so itself, at the higher ``seed_floor``):
            # "like" a seed on normal tissue would be normal tissue
            bg = orig[cube] == 0
            if _abnormal(zs, cube, lab_, p, p.seed_floor)[ball].mean() >= 0.5:
                near &= ~bg | _abnormal(zs, cube, lab_, p, p.abnormal)
            else:
                near &= ~bg
        # the voxels like the seed that connect to its ball through voxels like it
        cc, _ = ndi.label(near & ok)
        ids = np.unique(cc[ball])
        claim = np.zeros(shape, dtype=bool)
        claim[cube] = np.isin(cc, ids[ids > 0]) | (ball & ok)
        if lab_ == 0:
            # a false positive that lies wholly in the window goes entirely, where the
            # images are 0 too; of one that runs on outside it, the part like the seed
            # and the part outside the brain go
            if comps is None:
                comps, _ = ndi.label(tumour, structure=np.ones((3, 3, 3)))
            hit = np.unique(comps[cube][ball & tumour[cube]])
            for k in hit[hit > 0]:
                comp = comps == k
                claim |= comp if not (comp & edge).any() else comp & ~brain & free
        claims.append(claim)
    # seeds asking for different labels of the same voxels share them along the
    # strongest edge between them (a watershed from their balls on the gradient)
    labs = [s[3] for s in sds]
    owner = None
    if len(set(labs)) > 1:
        count = np.zeros(shape, dtype=np.int16)
        for claim in claims:
            count += claim
        clash = count > 1
        if clash.any() and any(np.any(claims[i] & claims[j]) for i in range(len(sds))
                               for j in range(i) if labs[i] != labs[j]):
            owner = _split(zs, claims, balls, sds, p, shape)
    for i, (claim, label) in enumerate(zip(claims, labs, strict=True)):
        mine = claim if owner is None else claim & (owner == i + 1)
        lab[mine] = label
    moved = [bool(np.any((lab[claim] == label) & (orig[claim] != label)))
             for claim, label in zip(claims, labs, strict=True)]
    return lab, box, window, moved


def _split(zs: np.ndarray, claims: list[np.ndarray],
           balls: list[tuple[tuple[slice, ...], np.ndarray]], sds: list[Seed],
           p: CorrectionParams, shape: tuple[int, ...]) -> np.ndarray:
    """Which seed (1-based) owns each claimed voxel: a watershed from the seeds' balls
    on the gradient magnitude (scale ``grad_sigma``) of the modalities they look at."""
    mask = np.zeros(shape, dtype=bool)
    for claim in claims:
        mask |= claim
    # only the box the claims span: scattered seeds may span much of the brain
    bb = ndi.find_objects(mask.astype(np.uint8))[0]
    chans = sorted({c for s in sds for c in _CHANNELS[s[3]]})
    extra = float(np.sqrt(max(p.grad_sigma ** 2 - 0.25, 0.0)))
    elev = np.zeros(mask[bb].shape, dtype=np.float32)
    for c in chans:
        sm = ndi.gaussian_filter(zs[c][bb], extra) if extra > 0 else zs[c][bb]
        for axis in range(sm.ndim):
            if sm.shape[axis] > 1:  # a box one voxel thick has no gradient across it
                g = np.gradient(sm, axis=axis)
                elev += g * g
    np.sqrt(elev, out=elev)
    markers = np.zeros(shape, dtype=np.int32)
    for i, (cube, ball) in enumerate(balls):
        markers[cube][ball & claims[i][cube]] = i + 1
    owner = np.zeros(shape, dtype=np.int32)
    owner[bb] = watershed(elev, markers[bb], mask=mask[bb])
    return owner
