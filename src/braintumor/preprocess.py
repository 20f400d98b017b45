"""Brain mask, z-scoring, crop and uncrop: pure functions on numpy arrays.

Shapes: images ``(C, X, Y, Z)``; masks and labels ``(X, Y, Z)``. A crop box is a tuple
of three ``slice`` objects in the native grid, so ``uncrop`` can put a prediction back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

Box = tuple[slice, slice, slice]


def brain_mask(image: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """Voxels where any modality is non-zero (BraTS images are skull-stripped).

    ``image``: ``(C, X, Y, Z)``. Holes are filled slice-wise-free (3D) so dark necrosis
    inside the brain stays inside the mask.
    """
    mask = np.any(image != 0, axis=0)
    if fill_holes and mask.any():
        mask = fill_holes_3d(mask)
    return mask


def fill_holes_3d(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 3D mask, computed in the mask's bounding
    box with a one-voxel ring of background around it: every hole lies inside the box,
    and the ring joins all background outside it (the volume's faces included), so the
    result is the same (tested), in less time (a brain fills about 40 % of a BraTS
    volume)."""
    box = bounding_box(mask)
    out = np.zeros_like(mask, dtype=bool)
    sub = np.zeros(tuple(s.stop - s.start + 2 for s in box), bool)
    sub[1:-1, 1:-1, 1:-1] = mask[box]
    out[box] = ndi.binary_fill_holes(sub)[1:-1, 1:-1, 1:-1]
    return out


#: the largest non-zero volume (mL) a skull-stripped brain is taken to have: the 14 BraTS
#: 2018 cases hold 1.08-1.73 L; a whole head is 3-4.5 L, and a field of view whose
#: background is noise rather than zero is all non-zero
MAX_BRAIN_ML = 2300.0


#: the least a scan should cover along each of its axes to hold a whole brain (the rule
#: that keeps a DICOM localizer from being a modality: braintumor.dicom.MIN_COVER_MM)
MIN_FIELD_MM = 80.0


#: the least non-zero volume (mL) a whole skull-stripped adult brain is taken to hold: the
#: 14 BraTS 2018 cases hold 1.3-1.8 L of non-zero voxels
MIN_BRAIN_ML = 900.0
#: the most faces of the volume (of six) a whole brain's non-zero voxels may reach: BraTS
#: cases reach none or the bottom one (the brain stem leaves the field of view)
MAX_FACES_REACHED = 2


def coverage_warning(image: np.ndarray, spacing: tuple[float, float, float]
                     ) -> str | None:
    """One sentence when a scan covers too little to hold a whole brain, else None.

    Along an axis under :data:`MIN_FIELD_MM`, with the brain (non-zero voxels) running
    out of the image at both of its ends there (a slab of a few slices cut from a brain,
    not a small head with room around it): its outline and volumes are those of the part
    scanned. Otherwise a field of view cut around part of the brain: the brain reaching
    more than :data:`MAX_FACES_REACHED` of the volume's six faces *and* holding less than
    :data:`MIN_BRAIN_ML`; intensity normalisation then rests on part of the brain, and
    the volumes may be off. Either alone is no sign: a whole brain cropped to its own box
    reaches all six faces, and a child's whole brain may hold less. ``image``:
    ``(C, X, Y, Z)``; ``spacing``: voxel size (mm)."""
    image = np.asarray(image)
    shape = image.shape[-3:]
    for axis in np.argsort([n * float(s) for n, s in zip(shape, spacing, strict=True)]):
        field = shape[axis] * float(spacing[axis])
        if field >= MIN_FIELD_MM:
            break
        ax = image.ndim - 3 + int(axis)
        if image.take(0, axis=ax).any() and image.take(shape[axis] - 1, axis=ax).any():
            n = int(shape[axis])
            return (f"the scan covers only {field:.0f} mm along one of its axes "
                    f"({n} slice{'s' if n != 1 else ''}), where a brain spans over "
                    f"{MIN_FIELD_MM:.0f} mm: the outline and its volumes are of the part "
                    "scanned, not of the whole tumour.")
    brain = np.zeros(shape, bool)
    for channel in image.reshape(-1, *shape):
        brain |= channel != 0
    ml = float(np.count_nonzero(brain)) * float(np.prod(spacing)) / 1000
    if ml == 0 or ml > MAX_BRAIN_ML:  # blank, or not skull-stripped (said apart)
        return None
    faces = sum(bool(brain.take(i, axis=a).any()) for a in range(3) for i in (0, shape[a] - 1))
    if faces <= MAX_FACES_REACHED or ml >= MIN_BRAIN_ML:
        return None
    what = (f"the brain reaches the image's edge on {faces} of its 6 sides and the scan "
            f"holds {ml / 1000:.2f} L of brain, where an adult's has over "
            f"{MIN_BRAIN_ML / 1000:.1f} L")
    return (f"{what}: the field of view looks cut around part of the brain, so intensity "
            "normalisation rests on that part and the outline and its volumes may be off "
            "(one BraTS case cut to 68x110x80 mm around its tumour lost 16 % of its CNN "
            "whole-tumour volume).")


#: the coarsest voxel edge (mm) at which the methods' accuracy was measured (README, "Other
#: voxel sizes": 2 mm voxels and 3 mm slices)
MAX_MEASURED_MM = 3.0


def thick_slice_warning(spacing: Sequence[float]) -> str | None:
    """One sentence when a scan's coarsest voxel edge is above :data:`MAX_MEASURED_MM`
    (5 mm slices), else None: the 1 mm resampling cannot restore what lies between such
    slices, and the volumes grow."""
    edge = max(float(s) for s in spacing)
    if edge <= MAX_MEASURED_MM + 0.05:
        return None
    return (f"the scan's voxels are {edge:.1f} mm along one axis; accuracy was measured on "
            f"voxels up to {MAX_MEASURED_MM:.0f} mm, and at this thickness volumes may be off "
            "by a fifth or more (one BraTS case made into 5 mm slices: whole tumour +21 % "
            "and edema +30 % in the fast mode, whole tumour +9 % by the default CNN).")


#: share of a channel's border voxels (its six faces) that must hold one value for that
#: value to be its background: a skull-stripped scan shifted or rescaled before it came
#: (background -5000, say) has one value all round; a noisy field of view has none
BACKGROUND_SHARE = 0.9


def background_value(channel: np.ndarray) -> float:
    """The background value of one ``(X, Y, Z)`` channel: the value of its corners that
    :data:`BACKGROUND_SHARE` of its faces' voxels hold, else 0 (a background of noise,
    or a volume filled to its faces, has no one value)."""
    a = np.asarray(channel)
    faces = np.concatenate([a[[0, -1]].ravel(), a[:, [0, -1]].ravel(),
                            a[:, :, [0, -1]].ravel()])
    for v in np.unique(a[np.ix_([0, -1], [0, -1], [0, -1])]):
        if np.count_nonzero(faces == v) >= BACKGROUND_SHARE * faces.size:
            return float(v)
    return 0.0


def skull_strip_warning(image: np.ndarray, spacing: tuple[float, float, float]
                        ) -> str | None:
    """One sentence when a scan does not look skull-stripped, else None.

    ``image``: ``(C, X, Y, Z)``; ``spacing``: voxel size (mm). The methods learned on
    skull-stripped scans, whose voxels other than the background are the brain; more
    than :data:`MAX_BRAIN_ML` of them means scalp, skull or a noisy background is in.
    The background is 0 unless a channel's faces hold one other value
    (:func:`background_value`: a scan shifted before it came, background included).
    """
    img = np.asarray(image)
    bg = [background_value(ch) for ch in img]
    if any(bg):
        mask = np.any(img != np.asarray(bg, img.dtype)[:, None, None, None], axis=0)
    else:
        mask = brain_mask(img, fill_holes=False)
    ml = float(mask.sum()) * float(np.prod(spacing)) / 1000
    if ml <= MAX_BRAIN_ML:
        return None
    what = "voxels other than the background's value" if any(bg) else "non-zero voxels"
    return (f"the scan does not look skull-stripped ({ml / 1000:.1f} L of {what}, "
            f"where a brain has under {MAX_BRAIN_ML / 1000:.1f} L): the methods learned on "
            "skull-stripped scans and may outline scalp, skull or background; strip the skull "
            "first (e.g. with HD-BET or SynthStrip).")


def bounding_box(mask: np.ndarray, margin: int = 0,
                 min_size: tuple[int, int, int] | None = None) -> Box:
    """Smallest box around ``mask`` grown by ``margin`` voxels (clipped to the volume),
    then widened symmetrically to at least ``min_size`` where the volume allows."""
    shape = mask.shape
    if not mask.any():
        return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.where(np.any(mask, axis=other))[0]
        lo, hi = int(idx[0]) - margin, int(idx[-1]) + 1 + margin
        if min_size is not None and hi - lo < min_size[axis]:
            grow = min_size[axis] - (hi - lo)
            lo -= grow // 2
            hi += grow - grow // 2
        if lo < 0:
            hi, lo = hi - lo, 0
        if hi > shape[axis]:
            lo, hi = max(0, lo - (hi - shape[axis])), shape[axis]
        out.append(slice(lo, hi))
    return (out[0], out[1], out[2])


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the last three axes of ``array`` to ``box``."""
    return array[(Ellipsis,) + tuple(box)]


def uncrop(array: np.ndarray, box: Box, shape: tuple[int, int, int],
           fill: float = 0) -> np.ndarray:
    """Put a cropped ``array`` (``(..., x, y, z)``) back into a volume of ``shape``."""
    out = np.full(array.shape[:-3] + tuple(shape), fill, dtype=array.dtype)
    out[(Ellipsis,) + tuple(box)] = array
    return out


def zscore(image: np.ndarray, mask: np.ndarray | None = None, clip: float | None = 5.0
           ) -> np.ndarray:
    """Z-score each channel over ``mask`` voxels; outside the mask becomes 0.

    ``image``: ``(C, X, Y, Z)`` -> float32 of the same shape. Channels that are constant
    inside the mask become 0 (no division by zero).
    """
    img = np.asarray(image, dtype=np.float32)
    if mask is None:
        mask = brain_mask(img)
    out = np.zeros_like(img)
    outside = ~mask
    for c in range(img.shape[0]):
        vals = img[c][mask]
        if vals.size == 0:
            continue
        mu, sd = float(vals.mean()), float(vals.std())
        if sd < 1e-8:
            continue
        ch = out[c]  # computed in its place in ``out``: the same float32 steps, no copies
        np.subtract(img[c], np.float32(mu), out=ch)
        ch /= np.float32(sd)
        if clip is not None:
            np.clip(ch, -clip, clip, out=ch)
        np.copyto(ch, 0, where=outside)
    return out


#: MAD x this = the standard deviation of a normal distribution
MAD_TO_SD = 1.4826


def scaled_mad(values: np.ndarray, center: float) -> float:
    """Median absolute deviation of ``values`` from ``center``, x :data:`MAD_TO_SD`."""
    return float(np.median(np.abs(values - center))) * MAD_TO_SD


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """``(median, scaled MAD)`` of ``values``: a mean and standard deviation that a
    minority of outliers (a tumour in the brain) barely moves. No fallback: a constant
    sample gives a scale of 0 and an empty one NaN, so each caller says what it uses
    then."""
    med = float(np.median(values))
    return med, scaled_mad(values, med)


def remove_small_components(mask: np.ndarray, minimum: float, keep_fraction: float = 0.0,
                            voxel_size: float = 1.0) -> np.ndarray:
    """``mask`` (2D or 3D) without its components (full connectivity: 26 neighbours in 3D,
    8 in 2D) smaller than ``minimum`` (in the unit of ``voxel_size``, one voxel's size:
    voxels by default, mL when ``voxel_size`` is a voxel's mL) or smaller than
    ``keep_fraction`` of the largest component. A new bool array.

    The components are labelled in the box around ``mask`` (every component lies in it):
    the same result as on the whole array, in a fraction of its time. The one place the
    CNN's postprocessing, the watershed and the hybrid drop small components."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    box = tuple(_extent(mask, axis) for axis in range(mask.ndim))
    lab, _ = ndi.label(mask[box], structure=ndi.generate_binary_structure(mask.ndim, mask.ndim))
    sizes = np.bincount(lab.ravel()) * voxel_size
    sizes[0] = 0
    keep = sizes >= max(minimum, keep_fraction * sizes.max())
    keep[0] = False
    out[box] = keep[lab]
    return out


def _extent(mask: np.ndarray, axis: int) -> slice:
    """The slice of ``axis`` that holds every True voxel of ``mask`` (not empty)."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    idx = np.flatnonzero(np.any(mask, axis=other))
    return slice(int(idx[0]), int(idx[-1]) + 1)


# --------------------------------------------------------------------------- model grid
#: the grid the 3D methods were built and trained on (BraTS: 1 mm isotropic); a case whose
#: voxels differ from it by more than MODEL_GRID_TOLERANCE (fraction) on any axis is
#: segmented on it and its results are brought back to the case's own grid
MODEL_SPACING_MM = 1.0
MODEL_GRID_TOLERANCE = 0.15


def model_grid_zoom(spacing: tuple[float, ...]) -> tuple[float, ...] | None:
    """Per-axis zoom from a case's voxels to the 1 mm model grid, or None when the case
    is already on it (within :data:`MODEL_GRID_TOLERANCE`)."""
    if all(abs(s / MODEL_SPACING_MM - 1.0) <= MODEL_GRID_TOLERANCE for s in spacing):
        return None
    return tuple(float(s) / MODEL_SPACING_MM for s in spacing)


def resample_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of ``(C, X, Y, Z)`` to the spatial ``shape`` over the same field
    of view (voxel centres aligned as grids of that extent), float32."""
    zoom = [t / c for t, c in zip(shape, array.shape[1:], strict=True)]
    # channel by channel into one block: no list of channels stacked into a second copy
    out = np.empty((array.shape[0], *shape), np.float32)
    for c, a in enumerate(array):
        ndi.zoom(a.astype(np.float32, copy=False), zoom, output=out[c], order=1,
                 mode="nearest", grid_mode=True)
    return out


def resample_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-voxel resampling of a label map to ``shape`` over the same field of view
    (each target voxel takes the label at its centre)."""
    idx = [np.minimum(((np.arange(n) + 0.5) * (m / n)).astype(np.intp), m - 1)
           for n, m in zip(shape, labels.shape, strict=True)]
    return labels[np.ix_(*idx)]


#: the voxel directions of BraTS's arrays (and of the shipped phantom): x toward the
#: patient's left, y toward the back, z up; the methods were built and tuned on them
BRATS_AXCODES = ("L", "P", "S")


def model_orientation(affine: np.ndarray) -> np.ndarray | None:
    """The reorientation (a nibabel ``ornt``: for each voxel axis, the axis it becomes and
    whether it is reversed) that puts the voxel axes of ``affine`` in the order and
    directions of BraTS's arrays (:data:`BRATS_AXCODES`: axial slices, left, back, up), or
    None when they are so already. Only axes are reordered and reversed: no
    interpolation."""
    import nibabel as nib

    o = nib.orientations
    current = o.io_orientation(np.asarray(affine, float))
    if np.isnan(current).any():
        return None
    turn = o.ornt_transform(current, o.axcodes2ornt(BRATS_AXCODES))
    if np.array_equal(turn, [[0, 1], [1, 1], [2, 1]]):
        return None
    return np.asarray(turn)


def in_model_orientation(case: Any, turn: np.ndarray) -> Any:
    """``case`` (a :class:`braintumor.cases.Case`) reoriented by ``turn``
    (:func:`model_orientation`): the same voxels, the same world positions."""
    import nibabel as nib

    from braintumor.cases import Case

    o = nib.orientations
    image = apply_turn(case.image, turn)
    affine = case.affine @ o.inv_ornt_aff(turn, case.shape)
    spacing = [0.0, 0.0, 0.0]
    for i, (axis, _) in enumerate(turn):
        spacing[int(axis)] = float(case.spacing[i])
    header = case.header.copy()
    header.set_data_shape(image.shape[1:])
    header.set_zooms(tuple(spacing))
    label = None if case.label is None else apply_turn(case.label, turn)
    return Case(case_id=case.case_id, image=image, affine=affine,
                spacing=(spacing[0], spacing[1], spacing[2]), header=header, label=label,
                missing=case.missing)


def from_model_orientation(array: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Undo :func:`in_model_orientation` on a ``(X, Y, Z)`` or ``(C, X, Y, Z)`` array."""
    back = np.zeros_like(turn)
    for i, (axis, flip) in enumerate(turn):
        back[int(axis)] = (i, flip)
    return apply_turn(array, back)


def apply_turn(array: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """nibabel's ``apply_orientation`` on the last three axes (a leading channel axis
    kept), as a contiguous array."""
    import nibabel as nib

    a = np.asarray(array)
    if a.ndim == 4:
        moved = nib.orientations.apply_orientation(np.moveaxis(a, 0, -1), turn)
        return np.ascontiguousarray(np.moveaxis(moved, -1, 0))
    return np.ascontiguousarray(nib.orientations.apply_orientation(a, turn))


def on_model_grid(case: Any) -> Any | None:
    """``case`` (a :class:`braintumor.cases.Case`) resampled to the 1 mm model grid over
    the same field of view (image linear; no label), or None when it is already on it."""
    from braintumor.cases import Case

    zoom = model_grid_zoom(case.spacing)
    if zoom is None:
        return None
    shape = tuple(max(1, round(n * z)) for n, z in zip(case.shape, zoom, strict=True))
    scale = np.array(shape, float) / np.array(case.shape, float)
    affine = case.affine.copy()
    # new voxel j has its centre at old (continuous) index (j + 0.5) / scale - 0.5
    affine[:3, 3] = affine[:3, :3] @ (0.5 / scale - 0.5) + affine[:3, 3]
    affine[:3, :3] = affine[:3, :3] / scale[None, :]
    spacing = tuple(float(s) / k for s, k in zip(case.spacing, scale, strict=True))
    header = case.header.copy()
    header.set_data_shape(shape)
    header.set_zooms(spacing)
    # the background (0 in every modality, as skull-stripped scans are) must not darken
    # the brain's edge into a rim of tissue-like intensities: linear interpolation reaches
    # one voxel out, so each background voxel next to the brain first takes the mean of
    # its brain neighbours, and everything outside the resampled brain is 0 again after
    # channel by channel into the 1 mm block: at 0.5 mm a full copy of the scan and a
    # filtered copy of each modality took 2 GB beside the scan itself
    image = case.image
    brain = np.zeros(case.shape, bool)
    for channel in image:
        brain |= channel != 0
    factors = [t / c for t, c in zip(shape, case.shape, strict=True)]
    fraction = brain.astype(np.float32)
    outside = ndi.zoom(fraction, factors, order=1, mode="nearest", grid_mode=True) < 0.5
    ring: np.ndarray | None = None
    if brain.any() and not brain.all():
        weight = ndi.uniform_filter(fraction, 3)
        ring = (weight > 0) & ~brain
        # the filter is needed only at the ring: in its box and one voxel around it, the
        # same values as over the whole volume (each voxel's neighbours are inside)
        box = bounding_box(ring, margin=1)
        ring_box = ring[box]
        ring_weight = weight[box][ring_box]
        del weight
    del fraction
    out = np.empty((image.shape[0], *shape), np.float32)
    for c, channel in enumerate(image):
        if ring is not None:
            channel = channel.astype(np.float32, copy=True)
            sub = channel[box]
            sub[ring_box] = ndi.uniform_filter(sub, 3)[ring_box] / ring_weight
        ndi.zoom(channel.astype(np.float32, copy=False), factors, output=out[c], order=1,
                 mode="nearest", grid_mode=True)
        out[c][outside] = 0
    image = out
    return Case(case_id=case.case_id, image=image, affine=affine, spacing=spacing,
                header=header, label=None, missing=case.missing)  # type: ignore[arg-type]


#: N4 fits the bias field on a grid of about this voxel size (mm): the field is smooth at
#: that scale, and fitting there takes about a second a modality on a CPU
BIAS_GRID_MM = 6.0
#: N4 iterations per fitting level (two levels)
BIAS_ITERATIONS = (20, 20)


def correct_bias(image: np.ndarray, brain: np.ndarray,
                 spacing: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each modality of ``image`` ``(C, X, Y, Z)`` divided by its N4 bias field.

    SimpleITK's ``N4BiasFieldCorrectionImageFilter`` is fitted inside ``brain`` (where
    the modality is positive) on a grid of about :data:`BIAS_GRID_MM` (every k-th voxel
    of the brain's bounding box), and its log field is brought back to every voxel
    linearly. Outside the box and for a channel with too few positive brain voxels the
    image is unchanged. Returns float32.
    """
    import SimpleITK as sitk

    out = image.astype(np.float32, copy=True)
    if not brain.any():
        return out
    box = bounding_box(brain)
    step = [max(1, int(round(BIAS_GRID_MM / float(s)))) for s in spacing]
    thin = tuple(slice(None, None, k) for k in step)
    for c in range(image.shape[0]):
        sub = out[c][box]
        fit = brain[box] & (sub > 0)
        small, mask = sub[thin], fit[thin]
        if mask.sum() < 64:
            continue
        img = sitk.GetImageFromArray(np.ascontiguousarray(small, dtype=np.float32))
        msk = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations(list(BIAS_ITERATIONS))
        n4.Execute(img, msk)
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(img))
        zoom = [n / s for n, s in zip(sub.shape, log_field.shape, strict=True)]
        full = ndi.zoom(log_field.astype(np.float32), zoom, order=1)
        out[c][box] = sub / np.exp(full[tuple(slice(0, n) for n in sub.shape)])
    return out
