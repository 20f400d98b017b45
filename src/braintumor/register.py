"""Rigid alignment of a case's modalities, for a patient who moved between series.

The series of one session share the scanner's coordinates, so :mod:`braintumor.cases`
lays them on one grid by their affines. That holds only while the head keeps still: a
patient who moves between the T1 and the FLAIR (minutes apart) leaves the FLAIR a few
millimetres or degrees off, and every method here reads the four images voxel by voxel.
:func:`align_modalities` registers each modality to the reference one (the one whose grid
the case lies on and the outline is written on, :func:`reference_of`) with SimpleITK:
a rigid (Euler) transform, Mattes mutual information over the reference's brain and a margin of
:data:`MARGIN_MM` around it (the brain's edge against the background is the surest
feature two modalities share; on the brain alone one shared case's still T2 slid
17 mm), three resolution levels. A
transform that does not improve the match, or that is larger than head motion in a
scanner can be (:data:`MAX_ROTATION_DEG`, :data:`MAX_SHIFT_MM`), is refused and the
image is kept as acquired, with a note; so is one that moved less than
:data:`IN_LINE_MM` (interpolating it would only blur it). Held-out effect: README,
"Patient motion between series" (``python -m braintumor.motion_study``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from braintumor.cases import MODALITIES, MODALITY_NAMES, Case

#: a transform rotating more than this (degrees) or moving the brain's centre more than
#: :data:`MAX_SHIFT_MM` is taken for a failed registration
MAX_ROTATION_DEG = 20.0
MAX_SHIFT_MM = 30.0
#: the metric's region: the brain and this margin around it (mm)
MARGIN_MM = 10.0
#: share of the region's voxels the metric samples at each level (seeded)
#: a fitted motion smaller than this (mean displacement of the brain's voxels, mm) is
#: taken as no motion: the image is kept as acquired rather than interpolated
IN_LINE_MM = 1.0
SAMPLING = 0.05
SEED = 1
#: the resolution levels: shrink factors and Gaussian smoothing (mm)
SHRINK = (4, 2, 1)
SIGMAS = (2.0, 1.0, 0.0)


@dataclass(frozen=True)
class Alignment:
    """How one modality was moved onto the reference: ``moved_mm`` is the mean
    displacement of the reference's brain voxels under the transform, ``rotation_deg``
    its rotation angle, ``shift_mm`` the displacement of the brain's centre;
    ``accepted`` False when the transform was refused (``reason`` says why)."""

    modality: str
    moved_mm: float
    rotation_deg: float
    shift_mm: float
    accepted: bool
    reason: str = ""
    #: the fitted SimpleITK transform (fixed -> moving points), for studies
    transform: Any = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``info`` and JSON."""
        return {"moved_mm": round(self.moved_mm, 2), "rotation_deg": round(self.rotation_deg, 2),
                "shift_mm": round(self.shift_mm, 2), "accepted": self.accepted,
                **({"reason": self.reason} if self.reason else {})}


def _image(array: np.ndarray, spacing: tuple[float, float, float],
           origin: tuple[float, ...] = (0.0, 0.0, 0.0)) -> Any:
    import SimpleITK as sitk

    im = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    im.SetSpacing([float(s) for s in spacing])
    im.SetOrigin([float(o) for o in origin])
    return im


def displacement(tx: Any, points: np.ndarray) -> np.ndarray:
    """``|T(p) - p|`` for each physical point ``p`` (rows of ``points``, mm)."""
    moved = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in points])
    return np.linalg.norm(moved - points, axis=1)


def brain_points(brain: np.ndarray, spacing: tuple[float, float, float], seed: int,
                 points: int = 2000) -> np.ndarray:
    """Up to ``points`` voxels of ``brain`` drawn at random (seeded), as mm rows."""
    idx = np.argwhere(brain)
    rng = np.random.default_rng(seed)
    return idx[rng.choice(len(idx), min(points, len(idx)), replace=False)] * np.asarray(spacing)


def rigid(fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float, float],
          mask: np.ndarray) -> tuple[Any, float, float]:
    """A rigid transform taking ``fixed``'s physical points to ``moving``'s (both
    ``(X, Y, Z)`` on one grid with voxel size ``spacing``), fitted on ``mask``; with the
    metric (Mattes mutual information, lower is better) at the start and at the end.
    Only the box around ``mask`` is read (placed at its own position, so the transform
    is the whole grid's)."""
    import SimpleITK as sitk

    lo = np.argwhere(mask).min(axis=0)
    hi = np.argwhere(mask).max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    origin = tuple(float(a * s) for a, s in zip(lo, spacing, strict=True))
    f = _image(fixed[box].astype(np.float32), spacing, origin)
    # the moving image with room for its brain to have moved by up to twice the margin
    pad = np.ceil(MARGIN_MM / np.asarray(spacing)).astype(int)
    mlo = np.maximum(lo - pad, 0)
    mhi = np.minimum(hi + pad, moving.shape)
    mbox = tuple(slice(int(a), int(b)) for a, b in zip(mlo, mhi, strict=True))
    m = _image(moving[mbox].astype(np.float32), spacing,
               tuple(float(a * s) for a, s in zip(mlo, spacing, strict=True)))
    mask = mask[box]
    start = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING, SEED)
    reg.SetMetricFixedMask(_image(mask.astype(np.uint8), spacing, origin))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=150,
                                                 relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(SHRINK))
    reg.SetSmoothingSigmasPerLevel(list(SIGMAS))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(start, inPlace=False)
    before = reg.MetricEvaluate(f, m)
    tx = reg.Execute(f, m).Downcast()
    while isinstance(tx, sitk.CompositeTransform):  # Execute wraps the result
        tx = tx.GetNthTransform(0).Downcast()
    reg.SetInitialTransform(tx, inPlace=False)
    after = reg.MetricEvaluate(f, m)
    return tx, float(before), float(after)


def resample(moving: np.ndarray, tx: Any, spacing: tuple[float, float, float]) -> np.ndarray:
    """``moving`` brought through ``tx`` onto its own grid (linear, 0 outside its moved
    footprint)."""
    import SimpleITK as sitk

    im = _image(moving.astype(np.float32), spacing)
    out = sitk.Resample(im, im, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    # the image's footprint (non-zero voxels) moves by nearest neighbour: no fringe of
    # partial values along the brain's edge, which the methods would read as signal
    keep = sitk.Resample(_image((moving != 0).astype(np.uint8), spacing), im, tx,
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    arr = np.asarray(sitk.GetArrayFromImage(out)).transpose(2, 1, 0)
    arr[np.asarray(sitk.GetArrayFromImage(keep)).transpose(2, 1, 0) == 0] = 0
    return arr


def _rotation_deg(tx: Any) -> float:
    r = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def reference_of(case: Case) -> str:
    """The modality the others are registered to: the one whose grid the case lies on
    (:attr:`Case.grid`: the T1's, or a finer series' beside thick T1 slices, which an
    interpolated thick T1 would match worse), else the first present."""
    present = [m for m in MODALITIES if m not in case.missing]
    return case.grid if case.grid in present else present[0]


def align_modalities(case: Case) -> tuple[Case, list[Alignment]]:
    """``case`` with every present modality rigidly registered to the reference
    (:func:`reference_of`); the reference, missing modalities and the grid are
    unchanged."""
    present = [m for m in MODALITIES if m not in case.missing]
    if len(present) < 2:
        return case, []
    ref = reference_of(case)
    present = [ref, *(m for m in present if m != ref)]
    fixed = case.modality(ref)
    brain = np.any(case.image[[MODALITIES.index(m) for m in present]] != 0, axis=0)
    if brain.sum() < 1000:
        return case, []
    pts = brain_points(brain, case.spacing, SEED)
    centre = np.argwhere(brain).mean(axis=0) * np.asarray(case.spacing)
    region = ndi.distance_transform_edt(~brain, sampling=case.spacing) <= MARGIN_MM
    image = case.image.copy()
    done = []
    for mod in present[1:]:
        i = MODALITIES.index(mod)
        tx, before, after = rigid(fixed, case.image[i], case.spacing, region)
        rot = _rotation_deg(tx)
        shift = float(displacement(tx, centre[None])[0])
        moved = float(displacement(tx, pts).mean())
        reason = ""
        if not after < before:
            reason = "the registration did not improve the match"
        elif rot > MAX_ROTATION_DEG or shift > MAX_SHIFT_MM:
            reason = (f"the registration asked for {rot:.0f} degrees and {shift:.0f} mm, "
                      "more than a head moves in a scanner")
        if not reason and moved >= IN_LINE_MM:
            image[i] = resample(case.image[i], tx, case.spacing)
        done.append(Alignment(mod, moved, rot, shift, not reason, reason, tx))
    return replace(case, image=image), done


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def alignment_note(ref: str, done: list[Alignment]) -> str | None:
    """One sentence on what :func:`align_modalities` did, for the warning line."""
    if not done:
        return None
    ok = [a for a in done if a.accepted and a.moved_mm >= IN_LINE_MM]
    still = [a for a in done if a.accepted and a.moved_mm < IN_LINE_MM]
    parts = []
    if ok:
        names = _and([MODALITY_NAMES[a.modality] for a in ok])
        mm = _and([f"{a.moved_mm:.1f}" for a in ok])
        parts.append(f"the {names} {'were' if len(ok) > 1 else 'was'} aligned to the "
                     f"{MODALITY_NAMES[ref]} by rigid registration (moved {mm} mm on average)")
    if still:
        names = _and([MODALITY_NAMES[a.modality] for a in still])
        parts.append(f"the {names} already lay within {IN_LINE_MM:g} mm of the "
                     f"{MODALITY_NAMES[ref]} and {'were' if len(still) > 1 else 'was'} "
                     "kept as acquired")
    for a in done:
        if not a.accepted:
            parts.append(f"the {MODALITY_NAMES[a.modality]} was kept as acquired: {a.reason}")
    return "; ".join(parts)
