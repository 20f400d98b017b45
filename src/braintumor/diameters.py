"""Bidimensional tumour measurements, as radiologists report them (RANO).

Response criteria for gliomas (RANO, and RANO 2.0 of 2023) do not read volumes: on the
axial slice where a lesion is largest, they take its longest diameter and the longest
diameter perpendicular to it, and a lesion is *measurable* when both are at least
10 mm. The sum of the products of the target lesions' diameters (SPD) is what is
followed from scan to scan. This module measures an outline the same way, so its output
can be checked against, and carried into, a radiologist's report:

* ``ET``: the contrast-enhancing tumour, each slice's holes filled (a ring-enhancing
  lesion is measured across its outer edge, necrotic centre included, as RANO does);
* ``WT``: the T2/FLAIR abnormality (the whole tumour), which RANO 2.0 measures for
  tumours that do not enhance.

Lesions are 3D connected components (26-connectivity) whose longest diameter reaches
:data:`MIN_LISTED_MM`; each is measured on the slice,
of those holding at least half its largest cross-section, where the product of its two
diameters is largest (of slices that tie, the one nearest the lesion's centre, then the
most superior: the same anatomy gives the same slice whatever the storage order).
Slices are the voxel axis closest to the scanner's head-foot axis
(axial), whatever order the file stores its axes in. Diameters are measured on the
union of the lesion's pixel squares in millimetres (in-plane voxel size included), so a
digitised disc of diameter D reads D within about one pixel. Targets are the up to
:data:`MAX_TARGETS` measurable lesions with the largest products, as in RANO 2.0.

Python: :func:`measure` (one mask), :func:`rano` (a label map, both regions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from braintumor import labels as L

#: the smallest lesion that is listed or counted (mL): BraTS's own lesion-wise floor
#: (50 mm^3), so a speck of a few voxels, say one a correction left, is not a lesion of
#: the diameters or of the page's lesion count and table; the lesion-wise metrics keep
#: their own rules. Here, not in :mod:`braintumor.lesions`, so that reading it does not
#: load scikit-image
LESION_FLOOR_ML = 0.05

#: both diameters at least this long (mm) make a lesion measurable (RANO)
MEASURABLE_MM = 10.0
#: target lesions counted in the sum of products (RANO 2.0)
MAX_TARGETS = 3
#: lesions listed per region, largest product first, and the shortest listed (mm):
#: specks under it are below what a slice can show and are left out
MAX_LISTED = 20
MIN_LISTED_MM = 5.0
_STRUCT26 = ndi.generate_binary_structure(3, 3)


@dataclass(frozen=True)
class Lesion:
    """One lesion's bidimensional measurement.

    ``slice``: voxel index of the measured slice along ``axis`` (the file's own axis);
    ``longest_mm`` and ``perpendicular_mm``: the two diameters; ``ends`` and
    ``perpendicular_ends``: the end points of each diameter, as voxel coordinates
    ``(i, j, k)`` of the file (floats), for drawing them; ``centre_mm``: the longest
    diameter's midpoint in scanner coordinates; ``slices``: how many slices the file has
    along ``axis`` (to name the measured one "88 of 155").
    """

    longest_mm: float
    perpendicular_mm: float
    axis: int
    slice: int
    volume_ml: float
    ends: tuple[tuple[float, float, float], tuple[float, float, float]]
    perpendicular_ends: tuple[tuple[float, float, float], tuple[float, float, float]]
    #: the longest diameter's midpoint in scanner coordinates (mm), to show the slice
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: the file's number of slices along ``axis``
    slices: int | None = None

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm

    @property
    def measurable(self) -> bool:
        return min(self.longest_mm, self.perpendicular_mm) >= MEASURABLE_MM

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(product_mm2=round(self.product_mm2, 1), measurable=self.measurable,
                 longest_mm=tenths(self.longest_mm),
                 perpendicular_mm=tenths(self.perpendicular_mm))
        return d


def slice_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the scanner's head-foot (S) axis: the axial slices'."""
    rot = np.asarray(affine, dtype=float)[:3, :3]
    dirs = rot / np.maximum(np.linalg.norm(rot, axis=0), 1e-12)
    return int(np.argmax(np.abs(dirs[2])))


def diameters_2d(mask: np.ndarray, spacing: tuple[float, float]
                 ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Longest diameter of a 2D ``mask`` (pixel squares of size ``spacing`` mm) and the
    longest chord perpendicular to it.

    Returns ``(longest_mm, perpendicular_mm, ends, perpendicular_ends)``, the ends as
    ``(2, 2)`` pixel coordinates. An empty mask gives zeros.
    """
    from scipy.spatial import ConvexHull, QhullError

    sp = np.asarray(spacing, dtype=float)
    idx = np.argwhere(mask)
    if len(idx) == 0:
        zero = np.zeros((2, 2))
        return 0.0, 0.0, zero, zero
    # the corners of the pixel squares, in mm: their hull is the outline's
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    corners = ((idx[:, None, :] + offsets[None]) * sp).reshape(-1, 2)
    try:
        hull = corners[ConvexHull(corners).vertices]
    except QhullError:  # all on one line
        hull = corners
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    a, b = hull[i], hull[j]
    longest = float(np.sqrt(d2[i, j]))
    u = (b - a) / max(longest, 1e-9)
    v = np.array([-u[1], u[0]])
    # chords perpendicular to u, every half of the finer pixel side, sampled as finely
    step = float(sp.min()) / 2
    s_pos = np.arange(0.0, longest + step / 2, step)
    t_proj = (corners - a) @ v
    t_pos = np.arange(t_proj.min(), t_proj.max() + step / 4, step / 2)
    pts = a + s_pos[:, None, None] * u + t_pos[None, :, None] * v  # (S, T, 2) mm
    pix = np.rint(pts / sp).astype(int)
    ok = (pix >= 0).all(-1) & (pix[..., 0] < mask.shape[0]) & (pix[..., 1] < mask.shape[1])
    inside = np.zeros(ok.shape, bool)
    inside[ok] = mask[pix[..., 0][ok], pix[..., 1][ok]]
    any_in = inside.any(1)
    if not any_in.any():  # cannot happen for a non-empty mask; kept for safety
        return longest, 0.0, np.stack([a, b]) / sp, np.zeros((2, 2))
    first = np.argmax(inside, axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    lengths = np.where(any_in, (last - first + 1) * (step / 2), 0.0)
    k = int(np.argmax(lengths))
    p0 = a + s_pos[k] * u + (t_pos[first[k]] - step / 4) * v
    p1 = a + s_pos[k] * u + (t_pos[last[k]] + step / 4) * v
    return (longest, float(lengths[k]), np.stack([a, b]) / sp,
            np.stack([p0, p1]) / sp)


def measure(mask: np.ndarray, affine: np.ndarray, fill_holes: bool = False) -> list[Lesion]:
    """Every lesion of a 3D ``mask`` (file's voxel grid, ``affine`` its geometry) whose
    longest diameter reaches :data:`MIN_LISTED_MM` and whose volume reaches
    :data:`LESION_FLOOR_ML`, largest product first (at most
    :data:`MAX_LISTED`). ``fill_holes``: fill each slice's holes first (enhancing rims:
    measured across their outer edge)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3 or not m.any():
        return []
    axis = slice_axis(affine)
    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    inplane = tuple(float(spacing[d]) for d in range(3) if d != axis)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    comp, _ = ndi.label(m, structure=_STRUCT26)
    out: list[Lesion] = []
    for lab, box in enumerate(ndi.find_objects(comp), start=1):
        if box is None:
            continue
        extent = [(box[d].stop - box[d].start) * spacing[d] for d in range(3) if d != axis]
        if float(np.hypot(*extent)) < MIN_LISTED_MM:  # a speck: nothing to list
            continue
        piece = np.moveaxis(comp[box] == lab, axis, 0)  # (slices, a, b)
        volume = float(piece.sum()) * voxel_ml
        if volume < LESION_FLOOR_ML:  # a thread of a few voxels: not a lesion either
            continue
        if fill_holes:
            piece = np.stack([ndi.binary_fill_holes(s) for s in piece])
        areas = piece.reshape(len(piece), -1).sum(1)
        found = []
        for z in np.flatnonzero(areas >= areas.max() / 2):
            lo, pe, ends, pends = diameters_2d(piece[z], inplane)  # type: ignore[arg-type]
            found.append((lo * pe, lo, pe, int(z), ends, pends))
        # slices whose products tie are told apart in scanner coordinates, not by the
        # order the file stores them in: the one nearest the lesion's centre along the
        # slice axis, then the most superior, so mirrored storage gives the same slice
        top = max(f[0] for f in found)
        middle = float(np.average(np.arange(len(areas)), weights=areas))
        head = float(np.asarray(affine, dtype=float)[2, axis])  # mm up per slice
        _, lo, pe, z, ends, pends = min(
            (f for f in found if f[0] >= top * (1 - 1e-9)),
            key=lambda f: (round(abs(f[3] - middle) * float(spacing[axis]), 6),
                           -f[3] * head))
        offset = [s.start for s in box]
        ends3 = _to_voxel(ends, z, axis, offset)
        mid = np.asarray(affine, dtype=float) @ np.append(np.mean(ends3, axis=0), 1.0)
        out.append(Lesion(longest_mm=lo, perpendicular_mm=pe, axis=axis,
                          slice=z + offset[axis], volume_ml=round(volume, 3),
                          ends=ends3,  # type: ignore[arg-type]
                          perpendicular_ends=_to_voxel(pends, z, axis,  # type: ignore[arg-type]
                                                       offset),
                          centre_mm=tuple(round(float(c), 2) for c in mid[:3]),  # type: ignore[arg-type]
                          slices=int(m.shape[axis])))
    out = [les for les in out if les.longest_mm >= MIN_LISTED_MM]
    out.sort(key=lambda les: -les.product_mm2)
    return out[:MAX_LISTED]


def _to_voxel(points: np.ndarray, z: int, axis: int, offset: list[int]
              ) -> tuple[tuple[float, ...], ...]:
    """In-slice pixel coordinates ``(2, 2)`` -> file voxel coordinates ``(i, j, k)``."""
    rows = []
    for p in points:
        coord = list(p)
        coord.insert(axis, float(z))
        rows.append(tuple(round(float(c) + o, 2) for c, o in zip(coord, offset, strict=True)))
    return tuple(rows)


#: diameters under this (mm) are shown to 0.1 mm: whole millimetres would hide on which
#: side of :data:`MEASURABLE_MM` they fall ("10 x 10 mm", not measurable, for 10.3 x 9.8)
WHOLE_MM_FROM = 20.0


def tenths(value: float) -> float:
    """A diameter to 0.1 mm, but one short of :data:`MEASURABLE_MM` that would round up
    to it (9.96 mm) cut down (9.9), so that it never reads as reaching it."""
    shown = round(value, 1)
    if value < MEASURABLE_MM <= shown:
        return math.floor(value * 10) / 10
    return shown


def mm_text(value: float) -> str:
    """A diameter as shown: to 0.1 mm (:func:`tenths`) under :data:`WHOLE_MM_FROM`, where
    whole millimetres could hide on which side of :data:`MEASURABLE_MM` it falls, else in
    whole mm."""
    return f"{tenths(value):.1f}" if value < WHOLE_MM_FROM - 0.05 else f"{value:.0f}"


def summarise(lesions: list[Lesion]) -> dict[str, Any]:
    """Targets, sum of products, the largest lesion's diameters and all of it in a few
    words (``text``, :func:`describe`), JSON-ready."""
    targets = [les for les in lesions if les.measurable][:MAX_TARGETS]
    largest = lesions[0] if lesions else None
    out = {
        "lesions": [les.as_dict() for les in lesions],
        "measurable": sum(les.measurable for les in lesions),
        "targets": len(targets),
        "spd_mm2": round(sum(t.product_mm2 for t in targets), 1),
        "largest": (f"{mm_text(largest.longest_mm)} x {mm_text(largest.perpendicular_mm)} mm"
                    if largest else ""),
    }
    out["text"] = describe(out)
    return out


def picture_diameters(masks: list[np.ndarray], pixel_mm: float | None = None
                      ) -> dict[str, Any] | None:
    """The largest lesion's two diameters in 2D pictures (one, or a patient's slices):
    each 8-connected outline of each picture measured with :func:`diameters_2d`, the
    largest product kept. In mm when ``pixel_mm`` is known, else in pixels (and then no
    word on measurability). None when nothing is outlined. JSON-ready: ``longest``,
    ``perpendicular``, ``unit``, ``slice`` (index of the picture), ``measurable``
    (:data:`MEASURABLE_MM`, or None in pixels), ``text``."""
    size = float(pixel_mm) if pixel_mm else 1.0
    best: tuple[float, float, int] | None = None
    for k, mask in enumerate(masks):
        comp, n = ndi.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
        for i in range(1, n + 1):
            lo, pe, _, _ = diameters_2d(comp == i, (size, size))
            if best is None or lo * pe > best[0] * best[1]:
                best = (lo, pe, k)
    if best is None:
        return None
    unit = "mm" if pixel_mm else "pixels"
    return {"longest": tenths(best[0]), "perpendicular": tenths(best[1]), "unit": unit,
            "slice": best[2],
            "measurable": (min(best[0], best[1]) >= MEASURABLE_MM) if pixel_mm else None,
            "text": (f"{mm_text(best[0])} x {mm_text(best[1])} mm" if pixel_mm else
                     f"{best[0]:.0f} x {best[1]:.0f} {unit}")}


#: region -> (internal labels, fill each slice's holes)
REGIONS: dict[str, tuple[tuple[int, ...], bool]] = {
    "ET": ((L.ET,), True),
    "WT": ((L.NCR, L.ED, L.ET), False),
}


def rano(labels: np.ndarray, affine: np.ndarray) -> dict[str, dict[str, Any]]:
    """Bidimensional measurements of a label map (internal labels, the file's grid):
    ``{"ET": summary, "WT": summary}`` (:func:`summarise`). A map holding a label above
    3 (a BraTS file's ET = 4, not yet converted) is refused: its ET would measure
    nothing."""
    lab = np.asarray(labels)
    from braintumor.labels import check_internal

    check_internal(lab, "label map", "rano takes")
    return {region: summarise(measure(np.isin(lab, values), affine, fill_holes=fill))
            for region, (values, fill) in REGIONS.items()}


def lines_volume(shape: tuple[int, ...], diameters: dict[str, dict[str, Any]]
                 ) -> np.ndarray:
    """A ``shape`` uint8 volume holding the largest lesion's two diameters of each region
    of :func:`rano`'s result, one voxel wide on the measured slice: 1 along the longest,
    2 along the perpendicular one (for a viewer to lay over the scan)."""
    out = np.zeros(tuple(shape), np.uint8)
    for summ in diameters.values():
        if not summ.get("lesions"):
            continue
        les = summ["lesions"][0]
        for value, (a, b) in ((1, les["ends"]), (2, les["perpendicular_ends"])):
            a, b = np.asarray(a, float), np.asarray(b, float)
            n = int(np.ceil(np.abs(b - a).max() * 4)) + 1
            pts = np.rint(a + np.linspace(0, 1, n)[:, None] * (b - a)).astype(int)
            pts = np.clip(pts, 0, np.array(shape) - 1)
            out[pts[:, 0], pts[:, 1], pts[:, 2]] = value
    return out


def describe(summary: dict[str, Any]) -> str:
    """One region's measurement in a few words: ``"41 x 33 mm; SPD 1353 mm² (1 target)"``."""
    if not summary["lesions"]:
        return "none"
    n = summary["targets"]
    spd = (f"; SPD {summary['spd_mm2']:.0f} mm² ({n} target{'s' if n != 1 else ''})" if n
           else "; not measurable (under 10 x 10 mm)")
    return f"{summary['largest']}{spd}"
