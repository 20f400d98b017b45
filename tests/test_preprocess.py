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
