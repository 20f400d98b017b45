"""Synthetic BraTS-like cases (braintumor.phantom)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from braintumor import labels as L
from braintumor.cases import discover, load_case
from braintumor.errors import InputError
from braintumor.phantom import BRATS_SHAPE, make_case, write_case
from braintumor.preprocess import brain_mask, zscore

SMALL = (48, 48, 48)


@pytest.fixture(scope="module")
def hgg():  # type: ignore[no-untyped-def]
    return make_case(SMALL, seed=0)


def _zmeans(case) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    z = zscore(case.image, brain_mask(case.image))
    return {v: z[:, case.label == v].mean(axis=1) for v in (1, 2, 3)}


def test_seeded_and_deterministic(hgg) -> None:  # type: ignore[no-untyped-def]
    again = make_case(SMALL, seed=0)
    np.testing.assert_array_equal(again.image, hgg.image)
    np.testing.assert_array_equal(again.label, hgg.label)
    other = make_case(SMALL, seed=1)
    assert not np.array_equal(other.label, hgg.label)


def test_high_grade_has_all_sub_regions_inside_the_brain(hgg) -> None:  # type: ignore[no-untyped-def]
    counts = np.bincount(hgg.label.ravel(), minlength=4)
    assert counts[L.NCR] > 0 and counts[L.ED] > 0 and counts[L.ET] > 0
    assert set(np.unique(hgg.label).tolist()) <= {0, 1, 2, 3}
    brain = hgg.image.min(axis=0) > 0
    assert brain[hgg.label > 0].all()
    # outside the brain every channel is 0 (skull-stripped, as BraTS)
    assert (hgg.image[:, ~brain] == 0).all()
    assert (hgg.image == np.round(hgg.image)).all()
    # the enhancing rim wraps the necrotic core: ET touches NCR
    near_ncr = ndi.binary_dilation(hgg.label == L.NCR, iterations=1)
    assert (near_ncr & (hgg.label == L.ET)).any()


def test_relative_contrasts(hgg) -> None:  # type: ignore[no-untyped-def]
    z = zscore(hgg.image, brain_mask(hgg.image))
    m = _zmeans(hgg)
    healthy = (hgg.label == 0) & brain_mask(hgg.image)
    t1, t1ce, t2, flair = range(4)
    h = z[:, healthy].mean(axis=1)
    assert m[L.ED][flair] > h[flair] + 1.0 and m[L.ED][t2] > h[t2] + 0.3
    assert m[L.ET][t1ce] > h[t1ce] + 1.0
    assert m[L.ET][t1ce] > m[L.NCR][t1ce] + 1.5
    assert m[L.NCR][t1ce] < h[t1ce]
    assert m[L.NCR][t2] > h[t2] + 1.0
    # healthy tissue: T1 WM > GM > CSF; T2 CSF bright; FLAIR CSF dark
    from braintumor.phantom import _anatomy

    anat = _anatomy(SMALL)
    wm = (anat[2] > 0.8) & healthy
    gm = (anat[1] > 0.6) & healthy
    csf = (anat[0] - anat[1] - anat[2] > 0.6) & healthy
    assert z[t1][wm].mean() > z[t1][gm].mean() > z[t1][csf].mean()
    assert z[t2][csf].mean() > z[t2][gm].mean() > z[t2][wm].mean()
    assert z[flair][csf].mean() < z[flair][gm].mean()


def test_low_grade_second_lesion_and_tumour_free() -> None:
    lgg = make_case(SMALL, seed=2, low_grade=True)
    counts = np.bincount(lgg.label.ravel(), minlength=4)
    assert counts[L.ET] <= 0.05 * (counts[L.NCR] + counts[L.ET])
    assert counts[L.NCR] > 0 and counts[L.ED] > 0
    z = zscore(lgg.image, brain_mask(lgg.image))
    healthy = (lgg.label == 0) & brain_mask(lgg.image)
    # no enhancement: the core is not brighter than healthy tissue on T1ce
    assert z[1][lgg.label == L.NCR].mean() < z[1][healthy].mean() + 0.5

    two = make_case((64, 64, 64), seed=3, second_lesion=True)
    one = make_case((64, 64, 64), seed=3)
    _, n_two = ndi.label(two.label > 0, structure=np.ones((3, 3, 3)))
    _, n_one = ndi.label(one.label > 0, structure=np.ones((3, 3, 3)))
    assert n_two >= 2 and n_two > n_one - 1
    assert (two.label > 0).sum() > (one.label > 0).sum()

    free = make_case(SMALL, seed=4, tumour=False)
    assert free.label is not None and not free.label.any()
    assert (free.image > 0).sum() > 0.2 * np.prod(SMALL)


def test_same_seed_same_place_at_any_size() -> None:
    a = make_case((40, 40, 40), seed=5)
    b = make_case((72, 64, 56), seed=5)
    ca = np.array(ndi.center_of_mass(a.label > 0)) / np.array(a.shape)
    cb = np.array(ndi.center_of_mass(b.label > 0)) / np.array(b.shape)
    bra = np.array(ndi.center_of_mass(a.image[0] > 0)) / np.array(a.shape)
    brb = np.array(ndi.center_of_mass(b.image[0] > 0)) / np.array(b.shape)
    # the tumour's offset from the brain's centre (voxels) agrees once scaled: the brain
    # is fitted by its longest (y) axis in both, so voxel sizes differ by 40 / 64
    np.testing.assert_allclose((ca - bra) * a.shape, (cb - brb) * b.shape * 40 / 64,
                               atol=3.0)


def test_geometry_is_brats_like() -> None:
    case = make_case(SMALL, seed=0, spacing=(1.0, 1.0, 2.0))
    assert nib.aff2axcodes(case.affine) == ("L", "P", "S")
    assert case.spacing == (1.0, 1.0, 2.0)
    assert int(case.header["qform_code"]) == 2 and int(case.header["sform_code"]) == 1
    with pytest.raises(InputError):
        make_case((4, 4, 4))


@pytest.mark.parametrize("naming", ["brats2021", "brats2023"])
def test_write_case_round_trip(tmp_path: Path, hgg, naming: str) -> None:  # type: ignore[no-untyped-def]
    folder = write_case(hgg, tmp_path, naming=naming)
    assert folder == tmp_path / hgg.case_id
    (src,) = discover(folder)
    assert src.kind == naming and src.label_path is not None
    back = load_case(src)
    np.testing.assert_array_equal(back.image, hgg.image)
    np.testing.assert_array_equal(back.label, hgg.label)
    np.testing.assert_allclose(back.affine, hgg.affine)
    seg = np.asarray(nib.load(str(src.label_path)).dataobj)
    assert (seg == (4 if naming == "brats2021" else 3)).any()
    with pytest.raises(InputError):
        write_case(hgg, tmp_path, naming="nifti")


@pytest.mark.slow
def test_full_size_case_looks_like_brats() -> None:
    case = make_case(seed=0)
    assert case.shape == BRATS_SHAPE
    brats_affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(case.affine, brats_affine)
    brain_ml = (case.image[0] > 0).sum() * case.voxel_volume_ml
    assert 1200 < brain_ml < 1800  # an adult brain
    wt_ml = (case.label > 0).sum() * case.voxel_volume_ml
    assert 30 < wt_ml < 300  # BraTS whole tumours are mostly 20-250 mL
    m = _zmeans(case)
    # z-scored tumour classes near the BraTS 2018 medians (ED FLAIR 2.0, ET T1ce 1.9)
    assert 1.3 < m[L.ED][3] < 2.8
    assert 1.2 < m[L.ET][1] < 3.0
