"""Brain mask and hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor.preprocess import brain_mask, fill_holes_3d


@pytest.mark.parametrize("seed", range(6))
def test_fill_holes_in_the_box_equals_scipy_on_the_volume(seed: int) -> None:
    """Random blobs with holes and cavities, some cut by the volume's faces (a cavity
    open to a face is not a hole), filled in their box as scipy fills the volume."""
    rng = np.random.default_rng(seed)
    shape = (40, 36, 30)
    zz = np.indices(shape).transpose(1, 2, 3, 0)
    mask = np.zeros(shape, bool)
    for _ in range(3):
        c = rng.uniform(-4, np.array(shape) + 4)
        r = rng.uniform(5, 14)
        d = np.linalg.norm(zz - c, axis=-1)
        mask |= (d < r) & (d > r * rng.uniform(0.3, 0.7))  # a shell: its inside is a hole
    mask &= rng.random(shape) > 0.02  # pinholes
    filled = fill_holes_3d(mask)
    assert filled.sum() > mask.sum()  # holes were there to fill
    np.testing.assert_array_equal(filled, ndi.binary_fill_holes(mask))


def test_brain_mask_keeps_dark_necrosis_inside() -> None:
    img = np.zeros((4, 30, 30, 30), np.float32)
    img[:, 5:25, 5:25, 5:25] = 1.0
    img[:, 12:18, 12:18, 12:18] = 0.0  # zero in every modality, enclosed by brain
    img[:, 5:25, 5:25, 0:3] = 1.0  # a second piece touching a face
    m = brain_mask(img)
    assert m[15, 15, 15] and not m[2, 2, 2]
    assert not brain_mask(img, fill_holes=False)[15, 15, 15]
    assert not brain_mask(np.zeros((4, 8, 8, 8), np.float32)).any()


def _fine_head(shape: tuple[int, int, int] = (64, 72, 48), spacing: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray]:
    """A (4, X, Y, Z) float32 skull-stripped head (an ellipsoid of noise) and its mask."""
    xx, yy, zz = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    brain = sum(((a - m) / (0.44 * s)) ** 2
                for a, m, s in zip((xx, yy, zz), c, shape, strict=True)) <= 1
    rng = np.random.default_rng(0)
    image = np.where(brain, rng.uniform(50, 150, (4, *shape)), 0).astype(np.float32)
    return image, brain


def test_model_grid_works_channel_by_channel() -> None:
    """Putting a 0.5 mm scan on the 1 mm grid needs less extra memory than the scan
    itself (a full copy for the brain-edge fill and a filtered copy of every modality
    took 1.8 times it), and fills the brain's edge as before."""
    import tracemalloc

    from braintumor.cases import case_from_arrays
    from braintumor.preprocess import on_model_grid

    image, _ = _fine_head()
    case = case_from_arrays("fine", image, np.diag([0.5, 0.5, 0.5, 1.0]))
    tracemalloc.start()
    try:
        fine = on_model_grid(case)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fine is not None and fine.shape == (32, 36, 24)
    assert peak < image.nbytes
    inside = fine.image[0] > 0
    assert fine.image[:, inside].min() >= 50 and fine.image[:, inside].max() <= 150


def _head(shape: tuple[int, int, int], semi_mm: tuple[float, float, float],
          spacing: float) -> np.ndarray:
    """(4, X, Y, Z): an ellipsoid brain of ``semi_mm`` semi-axes in the middle."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing for n in shape],
                        indexing="ij")
    brain = sum((g / s) ** 2 for g, s in zip(grids, semi_mm, strict=True)) <= 1
    return np.repeat(brain[None].astype(np.float32) * 100, 4, axis=0)


def test_a_cut_field_of_view_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole adult-sized head is not warned about; the same head cut to a box around
    part of the brain (reaching four faces or more, under an adult brain's volume) is:
    normalisation then rests on part of the brain. Neither sign alone is a cut: a whole
    brain cropped to its own box reaches all six faces, a child's brain may be small."""
    from braintumor import preprocess

    monkeypatch.setattr(preprocess, "MIN_BRAIN_ML", 900.0)
    sp = (2.0, 2.0, 2.0)
    head = _head((90, 108, 80), (68, 84, 62), 2.0)  # about 1.5 L, room around it
    assert preprocess.coverage_warning(head, sp) is None
    bottom = head[:, :, :, 8:]  # the brain reaching the bottom face, as BraTS's do
    assert preprocess.coverage_warning(bottom, sp) is None
    cut = head[:, 20:54, 30:85, 20:60]  # 68x110x80 mm inside the brain
    said = preprocess.coverage_warning(cut, sp) or ""
    assert "6 of its 6 sides" in said and "intensity normalisation" in said
    inside = np.argwhere(head[0] != 0)
    lo, hi = inside.min(0), inside.max(0) + 1
    boxed = head[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]  # cropped to its own box
    assert preprocess.coverage_warning(boxed, sp) is None
    small = _head((90, 108, 80), (45, 55, 40), 2.0)  # 0.41 L, inside the volume: a child's
    assert preprocess.coverage_warning(small, sp) is None
    # not skull-stripped (noise everywhere): said by its own warning, not as a cut
    assert preprocess.coverage_warning(np.ones((1, 48, 48, 30)), (5.0, 5.0, 5.0)) is None


def test_slices_thicker_than_measured_are_said() -> None:
    """Voxels up to 3 mm (the resolution study's coarsest) pass; 5 mm slices are said
    to inflate volumes, with what was measured."""
    from braintumor.preprocess import thick_slice_warning

    for ok in ((1.0, 1.0, 1.0), (0.5, 0.5, 3.0), (2.0, 2.0, 2.0), (1.0, 3.02, 1.0)):
        assert thick_slice_warning(ok) is None
    said = thick_slice_warning((0.9, 0.9, 5.0)) or ""
    assert "5.0 mm" in said and "up to 3 mm" in said and "a fifth" in said


@pytest.mark.parametrize("ndim", [2, 3])
def test_small_components_in_the_box_equal_the_whole_array_rule(ndim: int) -> None:
    """Components under a size (in voxels, or in mL through a voxel's volume) or under a
    fraction of the largest are dropped, found in the box around the mask: the same mask
    as the components of the whole array give, masks touching the array's faces
    included; every other voxel is kept."""
    from braintumor.preprocess import remove_small_components

    rng = np.random.default_rng(7 + ndim)
    shape = (60, 50) if ndim == 2 else (40, 36, 30)
    structure = ndi.generate_binary_structure(ndim, ndim)
    for trial in range(30):
        field = ndi.gaussian_filter(rng.random(shape), 1.2)
        mask = field > np.quantile(field, 0.9 + 0.09 * rng.random())
        if trial % 5 == 0:  # a mask in a corner: the box is small
            mask[tuple(slice(6, None) for _ in range(ndim))] = False
        minimum = float(rng.integers(0, 40))
        fraction = float(rng.choice([0.0, 0.1, 0.5]))
        voxel = float(rng.choice([1.0, 0.001, 2.5]))
        lab, _ = ndi.label(mask, structure=structure)
        sizes = np.bincount(lab.ravel()) * voxel
        sizes[0] = 0
        keep = sizes >= max(minimum * voxel, fraction * sizes.max())
        keep[0] = False
        got = remove_small_components(mask, minimum * voxel, fraction, voxel_size=voxel)
        assert got.dtype == bool and got.shape == mask.shape
        assert np.array_equal(got, keep[lab])
        assert not (got & ~mask).any()
    assert not remove_small_components(np.zeros(shape, bool), 5).any()
    single = np.zeros(shape, bool)
    single[(3,) * ndim] = True
    assert remove_small_components(single, 1).sum() == 1
    assert not remove_small_components(single, 2).any()


def test_a_shifted_background_is_not_taken_for_a_head() -> None:
    """A skull-stripped scan shifted before it came (every voxel minus 5000, background
    included) is still skull-stripped: its background has one value all round. A head
    (a shell of scalp around the brain) and a background of noise still warn."""
    from braintumor.preprocess import background_value, skull_strip_warning

    r = np.linalg.norm(np.indices((100, 100, 100)) - 49.5, axis=0)
    spacing = (2.1, 2.1, 2.1)  # a brain of 1.0 L, a head of 2.5 L, a field of view of 9 L
    rng = np.random.default_rng(0)
    image = np.where(r < 30, rng.uniform(50, 150, (4, *r.shape)), 0).astype(np.float32)
    assert skull_strip_warning(image, spacing) is None
    shifted = image - 5000.0
    assert background_value(shifted[0]) == -5000.0 and background_value(image[0]) == 0.0
    assert skull_strip_warning(shifted, spacing) is None
    head = np.where((r >= 30) & (r < 40), 40.0, image).astype(np.float32)
    msg = skull_strip_warning(head, spacing)
    assert msg is not None and "(2.5 L of non-zero" in msg
    msg = skull_strip_warning(head - 5000.0, spacing)
    assert msg is not None and "(2.5 L of voxels other than the background's value" in msg
    noisy = shifted + rng.uniform(1, 5, shifted.shape).astype(np.float32)
    assert background_value(noisy[0]) == 0.0
    assert skull_strip_warning(noisy, spacing) is not None
