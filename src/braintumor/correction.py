"""Interactive correction of a label map from a few seed points.

A user clicks a few voxels and says what each one is: a region (internal label 1 NCR,
2 ED, 3 ET) or background (0). :func:`correct` changes the label map only inside a
local window, the union of the cubes of half-width ``window_mm`` (24 mm) around the
seeds, so an edit on a full-size case takes a fraction of a second and nothing far from
the clicks moves.

Seeds whose cubes overlap or touch are worked on together; seeds far apart each in a
window of their own. Inside a window every seed becomes a small marker ball, and the
voxels whose intensities (all four modalities, robust z within the window) are unlike
those of every seed whose cube holds them, plus the window's edge, become "leave as it
is" markers. A watershed on the
multi-modal gradient magnitude then floods from all markers at once: each seed claims
the basin around it up to the strongest edge before dissimilar tissue, and its label is
written there. A background seed floods only through voxels that are tumour now (it
removes, never adds), and a false positive that lies wholly inside the window is
removed whole; a region seed may claim any brain voxel.

A seed that changes nothing (outside the brain, or asking for what is there already) is
said in ``notes`` when the caller gives a list (the web page shows it).

Speed (``benchmarks/bench_correction.py``, full-size case): the watershed is most of an
edit's time, so everything that cannot change is kept out of its queue (settled "keep"
voxels, normal tissue around a background seed, the box between scattered seeds), and
each seed looks for voxels like it in its own cube only, so an edit costs about what
its seeds' cubes hold, not the seeds times the box they span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from braintumor.cases import Case
from braintumor.errors import InputError

Seed = tuple[int, int, int, int]


@dataclass(frozen=True)
class CorrectionParams:
    """``window_mm``: half-width of the window around the seeds (mm); ``seed_mm``:
    radius of each seed's marker ball (mm); ``tolerance``: how far (robust z, the worst
    modality) a voxel may differ from a seed's mean and still be claimed by it, or
    ``relative`` times the seed's own z where that is larger;
    ``grad_sigma``: Gaussian scale of the gradient (voxels)."""

    window_mm: float = 24.0
    seed_mm: float = 2.0
    tolerance: float = 2.5
    relative: float = 0.6
    grad_sigma: float = 1.0


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
    if len(items) == 4 and not any(isinstance(v, (Sequence, np.ndarray)) for v in items):
        return [tuple(items)]  # one seed, not wrapped in a list
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
    :class:`InputError`.

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
    changed = [False] * len(sds)
    for group in _clusters(np.array([s[:3] for s in sds]), half):
        lab, box, window, moved = _correct_window(case, labels, [sds[i] for i in group],
                                                  p, half)
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


def _correct_window(case: Case, labels: np.ndarray, sds: list[Seed], p: CorrectionParams,
                    half: np.ndarray
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
    lab = np.array(labels[box], dtype=np.uint8)
    brain = np.any(img != 0, axis=0)

    # robust z within the window, so a tolerance means the same on any scanner
    z = np.zeros_like(img)
    for c in range(img.shape[0]):
        v = img[c][brain] if brain.any() else img[c].ravel()
        # every fourth voxel gives the same median and MAD to well under 1 %, at a
        # quarter of the cost
        if v.size > 40_000:
            v = v[::4]
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med))) * 1.4826 or float(v.std()) or 1.0
        z[c] = (img[c] - med) / mad
    zs = np.stack([ndi.gaussian_filter(z[c], 0.5) for c in range(z.shape[0])])

    shape = lab.shape
    markers = np.zeros(shape, dtype=np.int32)
    similar = np.zeros(shape, dtype=bool)
    r = np.maximum(0, np.round(p.seed_mm / spacing)).astype(int)
    balls = []
    tumour = lab > 0
    # each seed's cube in the box: its ball and the voxels like it are looked for there
    # only (nothing outside the cubes can change), so the cost grows with the seeds, not
    # with the seeds times the box they span
    cubes = [tuple(slice(max(0, int(c - h)), min(int(c + h + 1), n))
                   for c, h, n in zip(pt, half, shape, strict=True)) for pt in pts - lo]
    for (x, y, zz, lab_), cube in zip(sds, cubes, strict=True):
        c = np.array([x, y, zz]) - lo - np.array([s.start for s in cube])
        grid = np.ogrid[tuple(slice(0, s.stop - s.start) for s in cube)]
        d2 = sum(((g - ci) / max(ri, 1)) ** 2 for g, ci, ri in zip(grid, c, r, strict=True))
        ball = d2 <= 1.0  # in the cube
        balls.append(ball)
        zc = zs[(slice(None),) + cube]
        mean = zc[:, ball].mean(axis=1)
        # a seed far from normal tissue tolerates more: the lesion's own blurred edge
        # lies halfway between the seed and its surroundings
        allow = np.maximum(p.tolerance, p.relative * np.abs(mean))
        near = np.all(np.abs(zc - mean[:, None, None, None]) <= allow[:, None, None, None],
                      axis=0)
        # a background seed only ever takes tumour away, so it floods only through
        # tumour: the normal tissue like it is settled, and the watershed (most of an
        # edit's time) need not visit it
        similar[cube] |= near & tumour[cube] if lab_ == 0 else near
    keep_id = len(sds) + 1
    markers[~similar] = keep_id
    # the window: the union of the cubes of half-width window_mm around the seeds (not
    # their bounding box, so three scattered clicks cost about what one does); its edge
    # layer, where a neighbour outside it lies inside the image, keeps its labels
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
    markers[edge] = keep_id
    for i, (ball, cube) in enumerate(zip(balls, cubes, strict=True)):
        markers[cube][ball] = i + 1
    # gradient magnitude at scale grad_sigma: smooth the sigma-0.5 maps up to it and
    # take central differences (a third of the filter passes of a Gaussian-derivative
    # gradient per axis, the costliest step of an edit after the watershed)
    extra = float(np.sqrt(max(p.grad_sigma ** 2 - 0.25, 0.0)))
    elev = np.zeros(shape, dtype=np.float32)
    for c in range(zs.shape[0]):
        sm = ndi.gaussian_filter(zs[c], extra) if extra > 0 else zs[c]
        for g in np.gradient(sm):
            elev += g * g
    np.sqrt(elev, out=elev)
    # "keep" voxels whose neighbours are all "keep" cannot change and would only fill
    # the watershed's queue: leave them out of its mask
    keep = markers == keep_id
    settled = ndi.binary_erosion(keep, border_value=1) & keep
    ws = watershed(elev, markers, mask=(brain | (markers > 0)) & window & ~settled)
    comps, _ = ndi.label(tumour, structure=np.ones((3, 3, 3)))
    basins = ndi.find_objects(ws, max_label=len(sds))
    moved = []
    for i, (_, _, _, label) in enumerate(sds):
        claim = np.zeros(shape, dtype=bool)
        if basins[i] is not None:  # the seed's basin, looked at in its own box
            claim[basins[i]] = ws[basins[i]] == i + 1
        if label == 0:
            # a false positive that lies wholly in the window goes entirely; one that
            # runs on outside it loses only the basin the seed claims
            hit = np.unique(comps[cubes[i]][balls[i] & tumour[cubes[i]]])
            for k in hit[hit > 0]:
                comp = comps == k
                if not (comp & edge).any():
                    claim |= comp
            claim &= tumour
        claim &= brain
        moved.append(bool(np.any(lab[claim] != label)))
        lab[claim] = label
    return lab, box, window, moved
