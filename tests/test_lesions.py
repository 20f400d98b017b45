"""Lesion separation on hand-built label maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.errors import InputError
from braintumor.lesions import lesion_count, split_lesions


def _ball(shape, centre, radius) -> np.ndarray:
    g = np.mgrid[tuple(slice(0, s) for s in shape)]
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius ** 2


def test_two_separate_balls_two_lesions_with_volumes() -> None:
    shape = (40, 40, 40)
    a, b = _ball(shape, (10, 10, 10), 5), _ball(shape, (28, 28, 28), 7)
    labels = np.zeros(shape, np.uint8)
    labels[a] = 2
    labels[b] = 3
    lmap, les = split_lesions(labels, (1.0, 1.0, 2.0))
    assert len(les) == 2
    # largest first; volume in mL with anisotropic voxels (2 mm^3 each)
    assert les[0]["voxels"] == b.sum() and les[1]["voxels"] == a.sum()
    assert les[0]["volume_ml"] == pytest.approx(b.sum() * 2 / 1000)
    assert np.allclose(les[0]["centroid"], (28, 28, 28), atol=0.2)
    assert set(np.unique(lmap[b])) == {1} and set(np.unique(lmap[a])) == {2}
    assert not lmap[labels == 0].any()


def test_touching_balls_are_split_at_the_neck() -> None:
    shape = (30, 60, 30)
    a, b = _ball(shape, (15, 20, 15), 9), _ball(shape, (15, 37, 15), 9)
    labels = (a | b).astype(np.uint8)
    from scipy import ndimage as ndi

    assert ndi.label(labels)[1] == 1  # one connected component
    lmap, les = split_lesions(labels, (1, 1, 1))
    assert len(les) == 2
    # each ball's centre region belongs to a different lesion, roughly half each
    assert lmap[15, 20, 15] != lmap[15, 37, 15]
    assert abs(les[0]["voxels"] - les[1]["voxels"]) < 0.2 * les[0]["voxels"]


def test_a_single_bumpy_lesion_is_not_split() -> None:
    shape = (40, 40, 40)
    blob = _ball(shape, (20, 20, 20), 10) | _ball(shape, (20, 20, 31), 3)
    assert lesion_count(blob.astype(np.uint8)) == 1


def test_two_equally_high_peaks_under_one_dome_are_one_lesion() -> None:
    # two overlapping balls of one radius: their distance peaks are exactly as high and
    # the neck between them only 0.2 mm lower, far under min_depth_mm
    shape = (40, 40, 40)
    blob = _ball(shape, (18, 20, 20), 10) | _ball(shape, (22, 20, 20), 10)
    assert lesion_count(blob.astype(np.uint8)) == 1
    # equal peaks with a deep neck still split
    pair = _ball(shape, (10, 20, 20), 8) | _ball(shape, (26, 20, 20), 8)
    assert lesion_count(pair.astype(np.uint8)) == 2


def test_empty_and_min_volume() -> None:
    assert split_lesions(np.zeros((8, 8, 8), np.uint8))[1] == []
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[_ball(labels.shape, (8, 8, 8), 5)] = 1
    labels[_ball(labels.shape, (22, 22, 22), 1)] = 1  # 7 voxels = 0.007 mL
    assert lesion_count(labels) == 2
    assert lesion_count(labels, min_volume_ml=0.05) == 1


def test_bad_input() -> None:
    with pytest.raises(InputError):
        split_lesions(np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(InputError):
        split_lesions(np.zeros((4, 4, 4)), (1, 0, 1))


@pytest.mark.parametrize("labels, said", [
    (np.zeros((0, 5, 5)), "holds no voxels"),
    (np.full((6, 6, 6), -1, np.int16), "holds -1;"),
    (np.full((6, 6, 6), np.nan), "holds nan;"),
    (np.full((6, 6, 6), "a"), "holds <U1 values"),
])
def test_a_map_no_label_convention_holds_is_one_sentence(labels, said) -> None:
    """An empty array raised numpy's ValueError; a negative label (which no convention
    holds, and the docstring called tumour) was silently background."""
    lab = np.array(labels)
    if lab.size and lab.dtype.kind != "U":
        lab[1:4, 1:4, 1:4] = 2
    with pytest.raises(InputError, match=said):
        split_lesions(lab, 1)


@pytest.mark.timeout(60, method="thread")  # the old loop never gave the signal a chance
@pytest.mark.parametrize("spacing", [(1, float("nan"), 1), (1, 1, float("inf")), -1.0, (1, 2),
                                     "1mm"])
def test_spacing_that_is_not_three_finite_sizes_is_refused(spacing) -> None:
    """A NaN or infinite size sent the dome reconstruction into a loop that never
    ended; now it is one sentence."""
    lab = np.zeros((40, 20, 20), np.uint8)
    lab[2:10, 5:13, 5:13] = 2
    with pytest.raises(InputError, match="must be three positive, finite sizes in mm"):
        split_lesions(lab, spacing)


def test_one_number_is_every_axis_spacing() -> None:
    """A scalar spacing, as every metric takes, raised TypeError."""
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[_ball(lab.shape, (8, 8, 8), 4)] = 1
    lab[_ball(lab.shape, (21, 21, 21), 5)] = 2
    for sp in (2.0, 2, np.float32(2.0)):
        out, lesions = split_lesions(lab, sp)
        ref_out, ref = split_lesions(lab, (2.0, 2.0, 2.0))
        assert lesions == ref and np.array_equal(out, ref_out)


def test_the_page_and_reports_count_no_speck_as_a_lesion() -> None:
    # a few voxels beside a tumour (say what a correction left) are not a second lesion;
    # the floor is BraTS's own lesion-wise minimum, 50 mm^3
    from braintumor.web.measure import LESION_FLOOR_ML, lesions, summary

    labels = np.zeros((40, 40, 40), np.uint8)
    labels[_ball(labels.shape, (15, 15, 15), 6)] = 2
    labels[30:32, 30:32, 30:32] = 3  # 8 voxels, 0.008 mL
    assert LESION_FLOOR_ML == 0.05
    assert len(lesions(labels, (1.0, 1.0, 1.0))) == 1
    assert summary(labels, (1.0, 1.0, 1.0))["lesion_count"] == 1
    assert len(lesions(labels, (1.0, 1.0, 1.0), min_volume_ml=0.0)) == 2
    # at 2 mm the same voxels are 0.064 mL: counted
    assert len(lesions(labels, (2.0, 2.0, 2.0))) == 2
