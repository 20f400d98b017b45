"""Case discovery and loading (braintumor.cases): both BraTS namings, folders of cases,
the MSD 4D layout, every consistency check, and label maps written on the input's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from braintumor import labels as L
from braintumor.cases import (
    MODALITIES,
    MSD_ORDER,
    case_from_arrays,
    discover,
    load_case,
    parse_channels,
    write_label_map,
)
from braintumor.errors import InputError

SHAPE = (12, 11, 9)
BRATS_AFF = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
SUFFIX = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}


def _image(seed: int) -> np.ndarray:
    """(4, X, Y, Z) whole-number intensities, one level per modality so order is testable."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(1, 50, SHAPE) + 100 * (m + 1) for m in range(4)]).astype(
        np.float32)


def _labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 100).integers(0, 4, SHAPE).astype(np.uint8)


def write_brats(folder: Path, case_id: str, naming: str = "brats2021", seed: int = 0,
                ext: str = ".nii.gz", affine: np.ndarray = BRATS_AFF, with_seg: bool = True,
                skip: tuple[str, ...] = ()) -> Path:
    """Write a small BraTS case by hand (nibabel only); returns the case folder."""
    out = folder / case_id
    out.mkdir(parents=True, exist_ok=True)
    img = _image(seed)
    for m, name in enumerate(MODALITIES):
        if name in skip:
            continue
        nii = nib.Nifti1Image(img[m].astype(np.int16), affine)
        nii.header.set_qform(affine, 2)
        nii.header.set_sform(affine, 1)
        nib.save(nii, str(out / f"{case_id}{SUFFIX[naming][name]}{ext}"))
    if with_seg:
        seg = L.from_internal(_labels(seed), naming)
        nib.save(nib.Nifti1Image(seg, affine), str(out / f"{case_id}{SUFFIX[naming]['seg']}{ext}"))
    return out


@pytest.mark.parametrize("naming", ["brats2021", "brats2023"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_load_brats_case_both_namings(tmp_path: Path, naming: str, ext: str) -> None:
    folder = write_brats(tmp_path, "Case-007_x", naming, seed=1, ext=ext)
    (src,) = discover(folder)
    assert src.kind == naming and src.case_id == "Case-007_x"
    case = load_case(src)
    assert case.image.shape == (4, *SHAPE) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, _image(1))  # fixed modality order
    np.testing.assert_array_equal(case.label, _labels(1))  # internal values
    assert case.label_convention == naming
    np.testing.assert_allclose(case.affine, BRATS_AFF)
    assert case.spacing == (1.0, 1.0, 1.0)
    assert case.shape == SHAPE and case.voxel_volume_ml == pytest.approx(0.001)
    np.testing.assert_array_equal(case.modality("flair"), _image(1)[3])


def test_discover_dataset_folder_and_single_file(tmp_path: Path) -> None:
    write_brats(tmp_path / "data", "B_2", "brats2021", seed=2)
    write_brats(tmp_path / "data", "A-1", "brats2023", seed=3)
    found = discover(tmp_path / "data")
    assert [s.case_id for s in found] == ["A-1", "B_2"]
    assert [s.kind for s in found] == ["brats2023", "brats2021"]
    # one modality file stands for its case
    (one,) = discover(tmp_path / "data" / "B_2" / "B_2_flair.nii.gz")
    assert one.case_id == "B_2"
    with pytest.raises(InputError, match="holds 2 cases"):
        load_case(tmp_path / "data")


def test_missing_modality_lists_found_and_missing(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, "c1", "brats2021", skip=("t1ce", "flair"))
    with pytest.raises(InputError) as err:
        discover(folder)
    msg = str(err.value)
    assert "c1" in msg and "T1ce" in msg and "FLAIR" in msg
    assert "missing the T1ce, FLAIR modalities (found: T1, T2)." in msg
    assert msg.endswith(".") and "\n" not in msg


def test_empty_or_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no BraTS case"):
        discover(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file"):
        discover(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="is not a file braintumor reads: a NIfTI volume"):
        discover(tmp_path / "notes.txt")


def test_modalities_on_different_grids(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, "c2", "brats2021", with_seg=False)
    nib.save(nib.Nifti1Image(np.ones((12, 11, 8), np.int16), BRATS_AFF),
             str(folder / "c2_t2.nii.gz"))
    with pytest.raises(InputError) as err:
        load_case(folder)
    assert "c2_t2.nii.gz" in str(err.value) and "shape" in str(err.value)
    shifted = BRATS_AFF.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.int16), shifted), str(folder / "c2_t2.nii.gz"))
    with pytest.raises(InputError) as err:
        load_case(folder, regrid=False)
    assert "c2_t2.nii.gz" in str(err.value) and "affine" in str(err.value)
    # resampled, it would cover 10 of the T1's 12 columns: too little to be one scan
    with pytest.raises(InputError, match=r"c2_t2.nii.gz: lies on another grid .* covers "
                                         r"only 83 % of the brain"):
        load_case(folder)


def test_a_modality_on_a_grid_of_its_own_is_resampled(tmp_path: Path) -> None:
    """A T2 of 2 mm slices over a larger field of view, as a scanner's conversion leaves
    it, comes onto the T1's grid by scanner coordinates (exact for a linear ramp)."""
    folder = write_brats(tmp_path, "c3", "brats2021", with_seg=True)
    world = lambda ijk, aff: ijk @ aff[:3, :3].T + aff[:3, 3]  # noqa: E731
    aff = BRATS_AFF.copy()
    aff[:3, 2] *= 2.0  # 2 mm slices
    aff[:3, 3] = world(np.array([-2.0, -2.0, -1.0]), BRATS_AFF)  # starts outside the T1
    shape = (SHAPE[0] + 4, SHAPE[1] + 4, SHAPE[2] // 2 + 3)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    xyz = world(ijk.reshape(-1, 3).astype(float), aff).reshape(*shape, 3)
    ramp = lambda p: 500 + 3 * p[..., 0] - 2 * p[..., 1] + 5 * p[..., 2]  # noqa: E731
    nib.save(nib.Nifti1Image(ramp(xyz).astype(np.float32), aff), str(folder / "c3_t2.nii.gz"))
    case = load_case(folder)
    assert case.regridded == ("t2",) and case.shape == SHAPE
    assert np.allclose(case.affine, BRATS_AFF) and case.label is not None
    ijk1 = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    want = ramp(world(ijk1.reshape(-1, 3).astype(float), BRATS_AFF).reshape(*SHAPE, 3))
    assert np.allclose(case.modality("t2"), want, atol=1e-3)
    assert np.array_equal(case.modality("t1"), load_case(folder, regrid=True).modality("t1"))
    from braintumor.segment import regrid_note

    note = regrid_note(case)
    assert note is not None and note.startswith("the T2 lay on a grid of its own")


@pytest.mark.parametrize("axes", [(0, 1), (1, 0, 2)])
def test_a_modality_on_the_same_grid_stored_turned_is_not_resampled(
        tmp_path: Path, axes: tuple[int, ...]) -> None:
    """A T2 stored with x and y reversed (RAS beside the others' LPS), or x and y swapped,
    its affine to match, lies on the T1's grid: it is turned onto it voxel for voxel, with
    no resampling and no warning."""
    folder = write_brats(tmp_path, "c9", "brats2021", with_seg=False)
    t2 = np.asarray(nib.load(str(folder / "c9_t2.nii.gz")).dataobj).astype(np.float32)
    if len(axes) == 2:  # reversed along these axes
        flip = np.eye(4)
        for a in axes:
            flip[a, a], flip[a, 3] = -1.0, SHAPE[a] - 1
        data, aff = np.flip(t2, axes), BRATS_AFF @ flip
    else:  # axes swapped
        perm = np.eye(4)[[*axes, 3]].T
        data, aff = np.transpose(t2, axes), BRATS_AFF @ perm
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), aff), str(folder / "c9_t2.nii.gz"))
    case = load_case(folder, with_label=False)
    assert case.regridded == () and case.shape == SHAPE
    np.testing.assert_array_equal(case.modality("t2"), t2)
    from braintumor.segment import regrid_note

    assert regrid_note(case) is None


def _store_turned(path: Path, axes: tuple[int, ...]) -> None:
    """Rewrite a BraTS file as the same grid stored in another orientation: reversed along
    ``axes`` (two of them), or its axes swapped (three), its affine to match."""
    img = nib.load(str(path))
    vox = np.asarray(img.dataobj)
    aff = np.asarray(img.affine, float)
    if len(axes) == 2:
        flip = np.eye(4)
        for a in axes:
            flip[a, a], flip[a, 3] = -1.0, vox.shape[a] - 1
        data, aff = np.flip(vox, axes), aff @ flip
    else:
        data, aff = np.transpose(vox, axes), aff @ np.eye(4)[[*axes, 3]].T
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), aff), str(path))


@pytest.mark.parametrize("turned", ["seg", "t1"])
@pytest.mark.parametrize("axes", [(0, 1), (1, 0, 2)])
def test_a_label_map_stored_turned_from_its_t1_is_turned_onto_the_case_grid(
        tmp_path: Path, turned: str, axes: tuple[int, ...]) -> None:
    """A _seg file stored flipped or with its axes swapped beside the T1 (or the T1 so
    stored beside the seg, the case then lying on the T1's storage) outlines the same
    voxels: it is turned onto the case's grid as the modalities are, not taken as it lies
    (which kept the tumour mirrored, or refused a swapped shape)."""
    plain = load_case(write_brats(tmp_path / "a", "c7", "brats2021"), with_label=True)
    folder = write_brats(tmp_path / "b", "c7", "brats2021")
    _store_turned(folder / f"c7_{turned}.nii.gz", axes)
    case = load_case(folder, with_label=True)
    assert case.label is not None and plain.label is not None
    t1 = case.modality("t1")
    if turned == "seg":  # the case stays on the T1's grid
        np.testing.assert_array_equal(case.label, plain.label)
        np.testing.assert_array_equal(t1, plain.modality("t1"))
    else:  # the case lies on the turned T1: its label map is turned along
        move = (lambda a: np.flip(a, axes)) if len(axes) == 2 else \
            (lambda a: np.transpose(a, axes))
        np.testing.assert_array_equal(t1, move(plain.modality("t1")))
        np.testing.assert_array_equal(case.label, move(plain.label))


def test_a_voxel_size_a_little_off_is_another_grid(tmp_path: Path) -> None:
    """A T2 whose voxels are 0.5 % larger than the T1's moves no affine entry by the
    0.01 mm tolerance, yet its far corner by 0.1 mm: it is resampled (said in
    ``regridded``), not taken voxel for voxel, and its label map beside it is refused."""
    folder = write_brats(tmp_path / "a", "c7")
    for name in ("c7_t2.nii.gz", "c7_seg.nii.gz"):
        img = nib.load(str(folder / name))
        aff = np.asarray(img.affine, float).copy()
        aff[:3, :3] *= 1.005
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), str(folder / name))
    assert load_case(folder, with_label=False).regridded == ("t2",)
    with pytest.raises(InputError, match="label map's voxel-to-world geometry"):
        load_case(folder, with_label=True)


@pytest.mark.parametrize("flipped", [False, True])
def test_modalities_and_label_maps_share_one_grid_tolerance(tmp_path: Path,
                                                            flipped: bool) -> None:
    """A T2 and a _seg file whose affines are 0.005 mm off the T1's (another tool's
    float rounding), stored as the T1 or flipped, lie on its grid: taken voxel for voxel,
    with or without ``regrid`` (the T2 was resampled and warned of, or refused, at
    1e-3 mm while the label map beside it was taken at 0.01 mm). 0.05 mm off, the T2 is
    resampled and the label map refused."""
    from braintumor.io import GRID_TOLERANCE_MM

    def store(folder: Path, off: float) -> None:
        for name in ("c6_t2.nii.gz", "c6_seg.nii.gz"):
            img = nib.load(str(folder / name))
            data, aff = np.asarray(img.dataobj), np.asarray(img.affine, float).copy()
            if flipped:
                flip = np.eye(4)
                flip[0, 0], flip[0, 3] = -1.0, SHAPE[0] - 1
                data, aff = np.ascontiguousarray(data[::-1]), aff @ flip
            aff[:3, 3] += off
            nib.save(nib.Nifti1Image(data, aff), str(folder / name))

    plain = load_case(write_brats(tmp_path / "a", "c6"), with_label=True)
    near = write_brats(tmp_path / "b", "c6")
    store(near, 0.5 * GRID_TOLERANCE_MM)
    for regrid in (True, False):
        case = load_case(near, with_label=True, regrid=regrid)
        assert case.regridded == ()
        np.testing.assert_array_equal(case.modality("t2"), plain.modality("t2"))
        np.testing.assert_array_equal(case.label, plain.label)
    far = write_brats(tmp_path / "c", "c6")
    store(far, 5 * GRID_TOLERANCE_MM)
    assert load_case(far, with_label=False).regridded == ("t2",)
    with pytest.raises(InputError, match="label map's voxel-to-world geometry"):
        load_case(far, with_label=True)


def test_a_label_map_stored_turned_and_shifted_is_refused_for_its_affine(
        tmp_path: Path) -> None:
    """A _seg file stored with x and y swapped (its shape then 11, 12, 9) and shifted by
    5 mm has the case's shape once turned: its geometry is the fault, as evaluate says of
    such a prediction (its shape was named before, against the image's 12, 11, 9)."""
    folder = write_brats(tmp_path, "c5", "brats2021")
    _store_turned(folder / "c5_seg.nii.gz", (1, 0, 2))
    _shift_x(folder / "c5_seg.nii.gz", 5.0)
    with pytest.raises(InputError, match=r"c5_seg.nii.gz: the label map's voxel-to-world "
                                         r"geometry \(affine\) differs from the image's"):
        load_case(folder, with_label=True)


def test_a_label_map_on_another_grid_of_the_same_shape_is_refused(tmp_path: Path) -> None:
    """A _seg file of the image's shape but shifted in scanner space outlines other
    voxels: refused in one sentence, not taken voxel for voxel."""
    folder = write_brats(tmp_path, "c8", "brats2021")
    _shift_x(folder / "c8_seg.nii.gz", 5.0)
    with pytest.raises(InputError, match=r"c8_seg.nii.gz: the label map's voxel-to-world "
                                         r"geometry \(affine\) differs from the image's"):
        load_case(folder, with_label=True)


def _shift_x(path: Path, mm: float) -> None:
    """The NIfTI file at ``path`` moved ``mm`` along scanner x, its voxels as they are."""
    img = nib.load(str(path))
    aff = np.asarray(img.affine, float).copy()
    aff[0, 3] += mm
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), str(path))


def _world(ijk: np.ndarray, aff: np.ndarray) -> np.ndarray:
    return ijk @ aff[:3, :3].T + aff[:3, 3]


def _ramp(xyz: np.ndarray) -> np.ndarray:
    """A linear ramp in scanner mm: linear resampling reproduces it exactly."""
    return 500 + 3 * xyz[..., 0] - 2 * xyz[..., 1] + 5 * xyz[..., 2]


def _ramp_on(shape: tuple[int, ...], aff: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return _ramp(_world(ijk.reshape(-1, 3).astype(float), aff).reshape(*shape, 3))


#: a T1 of 2 mm slices over the 1 mm series' field of view (slice k at their z = 2k)
THICK_AFF = BRATS_AFF.copy()
THICK_AFF[:3, 2] *= 2.0
THICK_SHAPE = (SHAPE[0], SHAPE[1], SHAPE[2] // 2 + 1)


def write_thick_t1(tmp_path: Path, case_id: str, seg: str | None = None,
                   shape: tuple[int, int, int] = THICK_SHAPE) -> Path:
    """A case of 1 mm T1ce, T2 and FLAIR with a T1 of 2 mm slices (a linear ramp); with
    ``seg`` 't1' or 't1ce', a label map on that modality's grid."""
    folder = write_brats(tmp_path, case_id, "brats2021", with_seg=False)
    nib.save(nib.Nifti1Image(_ramp_on(shape, THICK_AFF).astype(np.float32), THICK_AFF),
             str(folder / f"{case_id}_t1.nii.gz"))
    if seg is not None:
        aff, on = (THICK_AFF, shape) if seg == "t1" else (BRATS_AFF, SHAPE)
        lab = np.zeros(on, np.uint8)
        lab[3:6, 3:6, 1:3] = 4
        nib.save(nib.Nifti1Image(lab, aff), str(folder / f"{case_id}_seg.nii.gz"))
    return folder


def test_a_thick_slice_t1_goes_onto_the_finer_grid(tmp_path: Path) -> None:
    """A T1 of 2 mm slices beside 1 mm T1ce, T2 and FLAIR: the case lies on the T1ce's
    grid (as a DICOM study's would), the T1 is resampled onto it, and the warning says
    onto whose grid."""
    from braintumor.cases import grid_of_files
    from braintumor.segment import regrid_note

    folder = write_thick_t1(tmp_path, "thick")
    case = load_case(folder)
    assert case.grid == "t1ce" and case.regridded == ("t1",)
    assert case.shape == SHAPE and np.allclose(case.affine, BRATS_AFF)
    assert case.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(case.modality("t1"), _ramp_on(SHAPE, BRATS_AFF), atol=1e-3)
    np.testing.assert_array_equal(case.image[1:], _image(0)[1:])  # the 1 mm series as read
    note = regrid_note(case)
    assert note is not None and note.startswith(
        "the T1 lay on a grid of its own and was resampled onto the T1ce's (finer than the "
        "T1's slices")
    (src,) = discover(folder)
    assert grid_of_files(src.modality_paths) == "t1ce"
    # the label map comes out on the T1ce's grid
    out = tmp_path / "out.nii.gz"
    write_label_map(case, np.zeros(case.shape, np.uint8), out)
    assert nib.load(str(out)).shape == SHAPE
    # without regridding the T1's grid is the case's, as ever: the others are refused
    with pytest.raises(InputError, match="differs from the T1 image's"):
        load_case(folder, regrid=False)


def test_a_label_map_on_the_t1s_grid_keeps_the_case_there(tmp_path: Path) -> None:
    """The same case with a label map drawn on the thick T1's grid stays on the T1's
    grid (it is scored where it was drawn), whether or not the label map is read; one
    drawn on the T1ce's grid goes with the finer grid."""
    from braintumor.cases import grid_of_files
    from braintumor.segment import regrid_note

    folder = write_thick_t1(tmp_path, "onT1", seg="t1")
    for with_label in (True, False):
        case = load_case(folder, with_label=with_label)
        assert case.grid == "t1" and case.regridded == ("t1ce", "t2", "flair")
        assert case.shape == THICK_SHAPE and np.allclose(case.affine, THICK_AFF)
        assert (case.label is not None) == with_label
    assert case.label is None
    case = load_case(folder)
    assert case.label is not None and case.label.sum() == 3 * 3 * 2 * L.ET
    note = regrid_note(case)
    assert note is not None and "resampled onto the T1's by scanner" in note
    (src,) = discover(folder)
    assert grid_of_files(src.modality_paths, src.label_path) == "t1"
    assert grid_of_files(src.modality_paths) == "t1ce"

    folder = write_thick_t1(tmp_path, "onT1ce", seg="t1ce")
    case = load_case(folder)
    assert case.grid == "t1ce" and case.regridded == ("t1",) and case.label is not None
    (src,) = discover(folder)
    assert grid_of_files(src.modality_paths, src.label_path) == "t1ce"


def test_case_grid_rule(tmp_path: Path) -> None:
    """A case on one grid stays as it was read; a T1 up to 1.5 times coarser keeps its
    grid; without a T1, a thick T1ce gives way to a finer FLAIR."""
    folder = write_brats(tmp_path, "one", "brats2021", with_seg=True)
    case = load_case(folder)
    assert case.grid == "t1" and case.regridded == ()
    np.testing.assert_array_equal(case.image, _image(0))
    from braintumor.segment import regrid_note

    assert regrid_note(case) is None

    folder = write_brats(tmp_path, "fine", "brats2021", with_seg=False)
    aff = BRATS_AFF.copy()
    aff[:3, 2] *= 1.5
    nib.save(nib.Nifti1Image(_ramp_on((12, 11, 6), aff).astype(np.float32), aff),
             str(folder / "fine_t1.nii.gz"))
    case = load_case(folder)
    assert case.grid == "t1" and case.regridded == ("t1ce", "t2", "flair")

    folder = write_brats(tmp_path, "noT1", "brats2021", with_seg=False, skip=("t1",))
    nib.save(nib.Nifti1Image(_ramp_on(THICK_SHAPE, THICK_AFF).astype(np.float32), THICK_AFF),
             str(folder / "noT1_t1ce.nii.gz"))
    case = load_case(folder)
    assert case.grid == "t2" and case.regridded == ("t1ce",) and case.missing == ("t1",)
    note = regrid_note(case)
    assert note is not None and "onto the T2's (finer than the T1ce's slices" in note



def test_voxel_sizes_come_from_the_affine_not_pixdim(tmp_path: Path) -> None:
    """Files whose sform says 3 mm slices while their pixdim says 1 mm (qform unset, as a
    tool that rewrites only the sform leaves them): the case has 3 mm slices, so it is
    segmented on a 1 mm resampling and its volumes count 3 mm^3 a voxel."""
    from braintumor.preprocess import model_grid_zoom

    aff = BRATS_AFF @ np.diag([1.0, 1.0, 3.0, 1.0])
    folder = write_brats(tmp_path, "slabs", with_seg=False)
    for f in folder.iterdir():
        img = nib.load(str(f))
        out = nib.Nifti1Image(np.asarray(img.dataobj), aff)
        out.header.set_sform(aff, 2)
        out.header.set_qform(None, 0)
        out.header["pixdim"][1:4] = 1.0
        nib.save(out, str(f))
    assert nib.load(str(f)).header.get_zooms()[:3] == (1.0, 1.0, 1.0)
    case = load_case(folder)
    assert case.spacing == pytest.approx((1.0, 1.0, 3.0))
    assert case.voxel_volume_ml == pytest.approx(0.003)
    assert model_grid_zoom(case.spacing) is not None  # resampled to 1 mm to be segmented

def test_a_thick_t1_slab_too_short_for_the_finer_grid_keeps_its_grid(tmp_path: Path) -> None:
    """A T1 of thick slices covering too little of the 1 mm series' brain (a slab beside a
    3D series of the whole head) does not get the case refused: it keeps the T1's grid,
    onto which the others are resampled, as before the finer grid was taken."""
    folder = write_thick_t1(tmp_path, "slab", shape=(SHAPE[0], SHAPE[1], 3))  # z 0-4 mm
    case = load_case(folder)
    assert case.grid == "t1" and case.regridded == ("t1ce", "t2", "flair")
    assert case.shape == (SHAPE[0], SHAPE[1], 3) and np.allclose(case.affine, THICK_AFF)


def test_a_missing_modalitys_stand_in_on_a_grid_of_its_own(tmp_path: Path) -> None:
    """Without a T2, its channel holds the FLAIR as the case's grid has it: resampled
    when the FLAIR came on a grid of its own (it was its own-grid array, which did not
    fit the channel)."""
    folder = write_brats(tmp_path, "noT2", "brats2021", with_seg=False, skip=("t2",))
    aff = BRATS_AFF.copy()
    aff[:3, 2] *= 2.0  # 2 mm slices
    shape = (SHAPE[0], SHAPE[1], SHAPE[2] // 2 + 1)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    z_mm = (ijk.reshape(-1, 3).astype(float) @ aff[:3, :3].T + aff[:3, 3])[:, 2]
    nib.save(nib.Nifti1Image((500 + 5 * z_mm).reshape(shape).astype(np.float32), aff),
             str(folder / "noT2_flair.nii.gz"))
    case = load_case(folder)
    assert case.missing == ("t2",) and case.regridded == ("flair",) and case.shape == SHAPE
    want = np.broadcast_to(500 + 5 * np.arange(SHAPE[2], dtype=float), SHAPE)
    assert np.allclose(case.modality("flair"), want, atol=1e-3)
    np.testing.assert_array_equal(case.modality("t2"), case.modality("flair"))


@pytest.mark.parametrize("shape", [(12, 11), (12, 11, 9, 2, 2)])
def test_modality_with_wrong_dimensions(tmp_path: Path, shape: tuple[int, ...]) -> None:
    folder = write_brats(tmp_path, "c3", "brats2021", with_seg=False)
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), np.eye(4)), str(folder / "c3_t1ce.nii.gz"))
    with pytest.raises(InputError, match=rf"c3_t1ce.nii.gz: is a {len(shape)}D image"):
        load_case(folder)


def test_modality_with_nan_or_infinity(tmp_path: Path) -> None:
    """A NaN voxel is background (0), counted in the case's notes; an infinity is
    refused in one sentence naming the file."""
    folder = write_brats(tmp_path, "c4", "brats2021", with_seg=False)
    data = np.ones(SHAPE, np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, BRATS_AFF), str(folder / "c4_flair.nii.gz"))
    case = load_case(folder)
    assert case.image[MODALITIES.index("flair"), 0, 0, 0] == 0
    assert case.source.notes == ["c4_flair.nii.gz: 1 voxel is NaN (not a number), read as "
                                 "background (0), as brain-masking tools write NaN outside "
                                 "the brain"]
    data[1, 1, 1] = -np.inf
    nib.save(nib.Nifti1Image(data, BRATS_AFF), str(folder / "c4_flair.nii.gz"))
    with pytest.raises(InputError, match="c4_flair.nii.gz: contains 2 NaN or infinite"):
        load_case(folder)


def test_load_case_with_another_label_leaves_the_source_as_it_was(tmp_path: Path) -> None:
    """load_case(src, label_path=other) rewrote src.label_path, so a later load_case(src)
    read the other map; the notes reading makes still reach the caller's source and the
    case's."""
    folder = write_brats(tmp_path, "c9", "brats2021")
    data = _image(0)[MODALITIES.index("flair")].astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, BRATS_AFF), str(folder / "c9_flair.nii.gz"))
    src = discover(folder)[0]
    own = src.label_path
    other = tmp_path / "empty_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), BRATS_AFF), str(other))
    case = load_case(src, label_path=other)
    assert not case.label.any() and case.source.label_path == other
    assert src.label_path == own
    assert case.source.notes == src.notes and "1 voxel is NaN" in src.notes[0]
    assert case.source.nan_voxels == src.nan_voxels == {str(folder / "c9_flair.nii.gz"): 1}
    np.testing.assert_array_equal(load_case(src).label, _labels(0))


@pytest.mark.parametrize("naming,values", [("brats2021", [0, 1, 3]), ("brats2023", [0, 4]),
                                           ("brats2021", [0, 6])])
def test_label_values_that_fit_no_convention(tmp_path: Path, naming: str,
                                             values: list[int]) -> None:
    folder = write_brats(tmp_path, "c5", naming, with_seg=False)
    seg = np.zeros(SHAPE, np.uint8)
    seg.flat[: len(values)] = values
    name = f"c5{SUFFIX[naming]['seg']}.nii.gz"
    nib.save(nib.Nifti1Image(seg, BRATS_AFF), str(folder / name))
    with pytest.raises(InputError) as err:
        load_case(folder)
    assert name in str(err.value) and str(max(values)) in str(err.value)
    # the images alone still load
    assert load_case(folder, with_label=False).label is None


def test_label_map_on_another_grid(tmp_path: Path) -> None:
    folder = write_brats(tmp_path, "c6", "brats2021", with_seg=False)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), BRATS_AFF),
             str(folder / "c6_seg.nii.gz"))
    with pytest.raises(InputError, match="label map shape"):
        load_case(folder)


def _write_msd(root: Path, seed: int = 5, ext: str = ".nii.gz",
               affine: np.ndarray = BRATS_AFF) -> tuple[Path, np.ndarray]:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    img = _image(seed)  # MODALITIES order
    four = np.stack([img[MODALITIES.index(m)] for m in MSD_ORDER], axis=-1)
    path = root / "imagesTr" / f"BRATS_001{ext}"
    nib.save(nib.Nifti1Image(four.astype(np.float32), affine), str(path))
    lab = _labels(seed)
    nib.save(nib.Nifti1Image(L.from_internal(lab, "msd"), affine),
             str(root / "labelsTr" / f"BRATS_001{ext}"))
    return path, lab


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_msd_4d_layout(tmp_path: Path, ext: str) -> None:
    path, lab = _write_msd(tmp_path / "Task01", ext=ext)
    for where in (path, tmp_path / "Task01" / "imagesTr"):
        (src,) = discover(where)
        assert src.kind == "msd" and src.label_path is not None
        case = load_case(src)
        np.testing.assert_array_equal(case.image, _image(5))  # FLAIR,T1,T1gd,T2 reordered
        np.testing.assert_array_equal(case.label, lab)  # 1 edema, 2 NET, 3 ET -> internal
        assert case.label_convention == "msd"
    # write back: 3D, on the 4D file's spatial grid
    out = write_label_map(case, case.label, tmp_path / "out" / "BRATS_001.nii.gz", "msd")
    back = nib.load(str(out))
    assert back.shape == SHAPE
    np.testing.assert_allclose(back.affine, BRATS_AFF)
    np.testing.assert_array_equal(L.to_internal(np.asarray(back.dataobj), "msd"), lab)


def test_msd_task_root_and_a_folder_of_4d_files(tmp_path: Path) -> None:
    """The Decathlon task's own folder is read through its imagesTr folder, and a folder
    of 4D files named otherwise is recognised by the files' four channels."""
    path, lab = _write_msd(tmp_path / "Task01")
    (src,) = discover(tmp_path / "Task01")
    assert src.kind == "msd" and src.image4d == path and src.label_path is not None
    loose = tmp_path / "scans"
    loose.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (loose / name).write_bytes(path.read_bytes())
    assert [(s.case_id, s.kind) for s in discover(loose)] == [("a", "msd"), ("b", "msd")]
    # with a file of three channels they are read as one case's series, by their names
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 3), np.float32), np.eye(4)),
             str(loose / "b.nii.gz"))
    with pytest.raises(InputError, match="do not name their modalities clearly"):
        discover(loose)
    # an empty folder: the sentence says what would be read
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="4D NIfTI files of the four modalities"):
        discover(tmp_path / "empty")


@pytest.mark.parametrize("suffix", [".mgz", ".img", ".nrrd"])
def test_a_modality_in_another_format_is_named(tmp_path: Path, suffix: str) -> None:
    """A T2 stored as MGZ, Analyze or NRRD is not taken as missing (which would hand the
    case to the watershed without a word about the file): the file is named."""
    folder = write_brats(tmp_path, "c7", "brats2021", with_seg=False)
    t2 = folder / "c7_t2.nii.gz"
    t2.rename(folder / f"c7_t2{suffix}")
    with pytest.raises(InputError, match=rf"c7_t2\{suffix}: is an? .* file; braintumor "
                                         r"reads NIfTI"):
        discover(folder)
    # beside its NIfTI copy, the other file is passed over
    (folder / f"c7_t2{suffix}").rename(t2)
    (folder / f"c7_t2{suffix}").write_bytes(b"x")
    (src,) = discover(folder)
    assert src.modality_paths["t2"] == t2


def test_msd_needs_four_channels(tmp_path: Path) -> None:
    p = tmp_path / "three.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 3), np.float32), np.eye(4)), str(p))
    with pytest.raises(InputError, match="needs 4 channels"):
        load_case(p)
    # channels on the first axis: the sentence says where NIfTI keeps them
    first = tmp_path / "first.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, *SHAPE), np.float32), np.eye(4)), str(first))
    with pytest.raises(InputError, match="its first axis has 4, but NIfTI keeps"):
        load_case(first)


def test_a_vector_image_of_the_four_modalities_is_one_case(tmp_path: Path) -> None:
    """NIfTI stores a vector image's components on the 5th axis after a time axis of
    one, (X, Y, Z, 1, 4): the same four volumes as a 4D file."""
    path, _ = _write_msd(tmp_path / "Task01")
    four = nib.load(str(path))
    five = tmp_path / "vec" / "BRATS_001.nii.gz"
    five.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(four.dataobj)[:, :, :, None, :], four.affine),
             str(five))
    (src,) = discover(five.parent)
    assert src.kind == "msd"
    case = load_case(src)
    np.testing.assert_array_equal(case.image, load_case(path).image)


def _oblique() -> np.ndarray:
    a = np.deg2rad(23.0)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0],
                            [-np.sin(a), 0, np.cos(a)]]) @ np.diag([1.2, 0.8, 2.5])
    aff[:3, 3] = [12.5, -30.0, 7.75]
    return aff


@pytest.mark.parametrize("naming", ["brats2021", "brats2023"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("oblique", [False, True])
def test_write_label_map_keeps_input_geometry(tmp_path: Path, naming: str, ext: str,
                                              oblique: bool) -> None:
    aff = _oblique() if oblique else BRATS_AFF
    folder = write_brats(tmp_path / "in", "c7", naming, seed=7, ext=ext, affine=aff)
    case = load_case(folder)
    assert case.label is not None
    out = write_label_map(case, case.label, tmp_path / "out" / f"c7{ext}", naming)
    back = nib.load(str(out))
    ref = nib.load(str(folder / f"c7{SUFFIX[naming]['t1']}{ext}"))
    assert back.shape == ref.shape
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-5)
    for getter in ("get_qform", "get_sform"):
        m_ref, c_ref = getattr(ref.header, getter)(coded=True)
        m_out, c_out = getattr(back.header, getter)(coded=True)
        assert int(c_out) == int(c_ref)
        np.testing.assert_allclose(m_out, m_ref, atol=1e-5)
    assert back.header.get_zooms()[:3] == pytest.approx(ref.header.get_zooms()[:3])
    written = np.asarray(back.dataobj)
    np.testing.assert_array_equal(written, L.from_internal(_labels(7), naming))
    # and the written map reads back as the same internal labels
    np.testing.assert_array_equal(L.to_internal(written, naming), case.label)


def test_write_label_map_refuses_other_shape(tmp_path: Path) -> None:
    case = case_from_arrays("x", _image(0))
    with pytest.raises(InputError, match="differs"):
        write_label_map(case, np.zeros((3, 3, 3), np.uint8), tmp_path / "x.nii.gz")


def test_case_from_arrays_geometry() -> None:
    aff = np.diag([0.5, 2.0, 3.0, 1.0])
    case = case_from_arrays("arr", _image(0), aff, _labels(0))
    assert case.spacing == (0.5, 2.0, 3.0)
    assert case.voxel_volume_ml == pytest.approx(0.003)
    np.testing.assert_allclose(case.header.get_best_affine(), aff)


def test_case_from_arrays_stores_whole_labels_as_uint8() -> None:
    """A label of whole floats (or any array-like, a tensor included) is kept as the
    uint8 ndarray a Case holds; a fractional, NaN or BraTS-valued one is refused."""
    lab = _labels(0)
    case = case_from_arrays("arr", _image(0), None, lab.astype(np.float64))
    assert type(case.label) is np.ndarray and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.label, lab)
    assert case_from_arrays("l", _image(0), None, lab.tolist()).label.dtype == np.uint8
    with pytest.raises(InputError, match=r"label map of case f holds \d.5, not a whole number"):
        case_from_arrays("f", _image(0), None, lab * 0.5)
    with pytest.raises(InputError, match="holds NaN"):
        case_from_arrays("n", _image(0), None, np.where(lab > 0, lab, np.nan))
    with pytest.raises(InputError, match="holds label 4"):
        case_from_arrays("b", _image(0), None, L.from_internal(lab, "brats2021"))


SERIES_NAMES = {"t1": "3_AX_T1_SE.nii.gz", "t1ce": "4_AX_T1_SE_POST_GAD.nii.gz",
                "t2": "5_AX_T2_TSE.nii.gz", "flair": "7_AX_T2_FLAIR.nii"}


def _write_series_folder(folder: Path, names: dict[str, str], seg: str | None = None) -> Path:
    folder.mkdir(parents=True)
    img = _image(2)
    for m, name in names.items():
        nib.save(nib.Nifti1Image(img[MODALITIES.index(m)].astype(np.int16), BRATS_AFF),
                 str(folder / name))
    if seg:
        nib.save(nib.Nifti1Image(L.from_internal(_labels(2), "brats2021"), BRATS_AFF),
                 str(folder / seg))
    return folder


def test_a_folder_of_series_named_by_their_modality(tmp_path: Path) -> None:
    """Files named as a converter names series (not BraTS's names) make one case, named
    after the folder, read with the web page's rules; a 'seg' file is its label map."""
    folder = _write_series_folder(tmp_path / "patient7", SERIES_NAMES, seg="seg.nii.gz")
    (src,) = discover(folder)
    assert src.case_id == "patient7" and src.kind == "named"
    assert {m: p.name for m, p in src.modality_paths.items()} == SERIES_NAMES
    case = load_case(src)
    assert np.array_equal(case.image, _image(2)) and case.missing == ()
    assert case.label is not None and np.array_equal(case.label, _labels(2))
    three = _write_series_folder(tmp_path / "p8", {m: n for m, n in SERIES_NAMES.items()
                                                   if m != "t1"})
    assert load_case(three).missing == ("t1",)


@pytest.mark.parametrize("names,says", [
    ({"t1": "a_T1.nii.gz", "t1ce": "b_T1.nii.gz", "flair": "c_FLAIR.nii.gz"},
     "a_T1.nii.gz: T1, b_T1.nii.gz: T1, c_FLAIR.nii.gz: FLAIR"),
    ({"t1": "scan1.nii.gz", "flair": "scan2_flair.nii.gz"}, "scan1.nii.gz: ?"),
    ({"t1": "t1.nii.gz", "t2": "t2.nii.gz"}, "missing the T1ce, FLAIR modalities")])
def test_unclear_or_incomplete_series_names_are_one_sentence(tmp_path: Path, names: dict,
                                                             says: str) -> None:
    folder = _write_series_folder(tmp_path / "px", names)
    with pytest.raises(InputError) as err:
        discover(folder)
    assert says in str(err.value)


def test_a_dataset_of_series_folders(tmp_path: Path) -> None:
    """Patients' folders of series named by their modality are one case each; a folder
    of earlier outputs beside them is no case and no error."""
    root = tmp_path / "exports"
    _write_series_folder(root / "P1", SERIES_NAMES)
    _write_series_folder(root / "P2", {m: n for m, n in SERIES_NAMES.items() if m != "t2"})
    out = root / "out"
    out.mkdir()
    for name in ("P1.nii.gz", "P2.nii.gz"):
        nib.save(nib.Nifti1Image(_labels(0), BRATS_AFF), str(out / name))
    found = discover(root)
    assert [(s.case_id, s.kind) for s in found] == [("P1", "named"), ("P2", "named")]
    assert load_case(found[1]).missing == ("t2",)
    with pytest.raises(InputError, match="do not name their modalities clearly"):
        discover(out)  # pointed at directly, it is an error


def test_the_first_broken_modality_is_the_one_reported(tmp_path: Path) -> None:
    """Modalities are read two at a time; the error is still the first file's in order."""
    folder = write_brats(tmp_path, "c9", "brats2021", with_seg=False)
    for name in ("t2", "t1ce"):
        (folder / f"c9_{name}.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(InputError, match="c9_t1ce.nii.gz"):
        load_case(folder)


def _traced_peak(fn: Any) -> tuple[Any, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_reading_a_case_holds_it_about_once(tmp_path: Path, ext: str) -> None:
    """A case read from one 4D file or from four files is held about once while it is
    put into its float32 block (a 4D file was held three times, float32 read, stacked and
    copied again; four files were all held beside the block), with the same values."""
    rng = np.random.default_rng(0)
    shape = (48, 40, 36)
    vols = rng.integers(0, 3000, (4, *shape)).astype(np.int16)
    folder = tmp_path / "four"
    folder.mkdir()
    for m, name in enumerate(MODALITIES):
        nib.save(nib.Nifti1Image(vols[m], BRATS_AFF), str(folder / f"c_{name}{ext}"))
    four = np.stack([vols[MODALITIES.index(m)] for m in MSD_ORDER], axis=-1)
    nib.save(nib.Nifti1Image(four, BRATS_AFF), str(tmp_path / f"BRATS_001{ext}"))
    block = vols.size * 4  # the case's float32 (4, X, Y, Z)
    # (the 4D file's bound holds without gzip: inflating it in memory takes its own copies)
    for where, bound in ((tmp_path / f"BRATS_001{ext}", 1.8 if ext == ".nii" else 3.2),
                         (folder, 1.8)):
        case, peak = _traced_peak(lambda w=where: load_case(w, with_label=False))
        np.testing.assert_array_equal(case.image, vols.astype(np.float32))
        assert case.image.flags.c_contiguous
        assert peak < bound * block, (where, peak / block)


@pytest.mark.parametrize("four_d", [False, True])
def test_scaled_integer_files_are_read_with_their_scale(tmp_path: Path, four_d: bool) -> None:
    """Integers stored with scl_slope / scl_inter (as dcm2niix writes Philips scans) are
    read as the values they stand for, not rounded or wrapped back into their integer
    type (nibabel hands out a header without the scaling, which sits on the proxy)."""
    shape = (24, 20, 18)
    stored = np.random.default_rng(1).integers(0, 30000, (4, *shape)).astype(np.int16)
    slope, inter = 2.5, 3.5  # values up to 75,003.5: fractional, and beyond an int16

    def save(arr: np.ndarray, path: Path) -> None:
        img = nib.Nifti1Image(arr, BRATS_AFF)
        img.header.set_data_dtype(np.int16)
        img.header.set_slope_inter(slope, inter)
        nib.save(img, str(path))

    if four_d:
        where = tmp_path / "BRATS_001.nii.gz"
        save(np.stack([stored[MODALITIES.index(m)] for m in MSD_ORDER], axis=-1), where)
    else:
        for m, name in enumerate(MODALITIES):
            save(stored[m], tmp_path / f"c_{name}.nii.gz")
        where = tmp_path
    case = load_case(where, with_label=False)
    np.testing.assert_allclose(case.image, stored.astype(np.float64) * slope + inter,
                               rtol=1e-6)


def test_cohort_sorted_into_site_folders_and_4d_files_beside_cases(tmp_path: Path) -> None:
    """A cohort kept as site folders of case folders (some a level deeper), with a 4D
    file lying beside the case folders: every case is found, none passed over in silence,
    and a broken case below is reported while the others are kept."""
    cohort = tmp_path / "cohort"
    write_brats(cohort / "siteA", "A1", seed=1)
    write_brats(cohort / "siteA", "A2", seed=2)
    write_brats(cohort / "siteB" / "scanner2", "B1", seed=3)
    write_brats(cohort / "siteB", "Bbad", skip=("flair",))
    msd, _ = _write_msd(tmp_path / "Task01")
    (cohort / "siteA" / "four.nii.gz").write_bytes(msd.read_bytes())
    (cohort / "notes").mkdir()  # a folder holding no case is passed over
    (cohort / "notes" / "readme.txt").write_text("x")
    errors: list[InputError] = []
    found = discover(cohort, errors=errors)
    assert [s.case_id for s in found] == ["A1", "A2", "B1", "four"]
    assert [str(e) for e in errors] == [
        f"Bbad: the case in {cohort / 'siteB' / 'Bbad'} is missing the FLAIR modality "
        "(found: T1, "
        "T1ce, T2). T1ce and FLAIR are needed; a case without T1 or T2 is segmented by the "
        "watershed alone."]
    # one site folder given: its 4D file beside the case folders counts too
    assert [s.case_id for s in discover(cohort / "siteA")] == ["A1", "A2", "four"]


def test_a_loose_file_beside_case_folders_that_is_no_nifti_is_named_and_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file named as a NIfTI lying beside case folders that cannot be read is passed
    over in one note naming it (not in silence), while the cases run."""
    import gzip

    from braintumor.cli import main

    data = tmp_path / "data"
    write_brats(data, "c1", seed=1)
    loose = data / "loose.nii.gz"
    loose.write_bytes(gzip.compress(b"no NIfTI header here " * 20))
    notes: list[str] = []
    assert [s.case_id for s in discover(data, notes=notes)] == ["c1"]
    assert notes == [f"{loose}: not readable as a NIfTI file, so it is skipped."]
    assert [s.case_id for s in discover(data)] == ["c1"]  # no notes asked: as before
    capsys.readouterr()
    assert main(["predict", str(data), "-o", str(tmp_path / "out"),
                 "--method", "watershed"]) == 0
    err = capsys.readouterr().err
    assert f"note: {loose}: not readable as a NIfTI file, so it is skipped." in err
    assert (tmp_path / "out" / "c1.nii.gz").is_file()


# -- a 4D file's channel order -----------------------------------------------------------
BRATS_FILE_ORDER = ("t1", "t1ce", "t2", "flair")


def _phantom_4d(path: Path, order: tuple[str, ...]) -> np.ndarray:
    """A phantom case written as one 4D file with its channels in ``order``; returns its
    image in MODALITIES order."""
    from braintumor.phantom import make_case

    img = make_case((48, 48, 40), seed=1).image
    four = np.stack([img[MODALITIES.index(m)] for m in order], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(four, BRATS_AFF), str(path))
    return img


def test_channel_check_passes_the_decathlon_order_and_flags_brats_order() -> None:
    from braintumor.cases import channel_order_note
    from braintumor.phantom import make_case

    img = make_case((48, 48, 40), seed=2).image
    assert channel_order_note(img) is None
    # a file stacked T1, T1ce, T2, FLAIR read as FLAIR, T1, T1gd, T2
    misread = np.empty_like(img)
    for i, m in enumerate(MSD_ORDER):
        misread[MODALITIES.index(m)] = img[MODALITIES.index(BRATS_FILE_ORDER[i])]
    note = channel_order_note(misread)
    assert note is not None and "--channels" in note
    # the 4D file's own voxels, channels last, give the same answers without a copy
    from braintumor.cases import channel_order_note_4d

    brats_file = np.stack([img[MODALITIES.index(m)] for m in BRATS_FILE_ORDER], axis=-1)
    assert channel_order_note_4d(brats_file, MSD_ORDER) == note
    assert channel_order_note_4d(brats_file, BRATS_FILE_ORDER) is None


def test_4d_file_in_another_order_warns_and_is_read_as_stated(tmp_path: Path) -> None:
    import json

    path = tmp_path / "Task01" / "imagesTr" / "BRATS_001.nii.gz"
    img = _phantom_4d(path, BRATS_FILE_ORDER)
    # nothing says the order: the Decathlon's is taken, and the images say it is wrong
    (src,) = discover(path)
    case = load_case(src)
    assert not np.array_equal(case.image, img)
    assert any("do not look like FLAIR, T1, T1ce and T2" in n for n in src.notes)
    # the order stated by the caller (predict --channels)
    (src,) = discover(path)
    src.channels = parse_channels("t1,t1ce,t2,flair")
    np.testing.assert_array_equal(load_case(src).image, img)
    assert src.notes == []
    # ... or by the task's dataset.json one folder up, in the Decathlon's own words
    (tmp_path / "Task01" / "dataset.json").write_text(json.dumps(
        {"name": "BRATS", "modality": {"0": "T1w", "1": "t1gd", "2": "T2w", "3": "FLAIR"}}))
    (src,) = discover(path)
    np.testing.assert_array_equal(load_case(src).image, img)
    assert src.notes == []


def test_4d_file_in_the_decathlon_order_passes_quietly(tmp_path: Path) -> None:
    path = tmp_path / "BRATS_002.nii.gz"
    img = _phantom_4d(path, MSD_ORDER)
    (src,) = discover(path)
    np.testing.assert_array_equal(load_case(src).image, img)
    assert src.notes == []


@pytest.mark.parametrize("text", ["t1,t1,t2,flair", "flair,t1,t1ce", "flair,t1,t1ce,pd"])
def test_channel_order_that_is_no_permutation_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="each named once in the file's order"):
        parse_channels(text)


def test_dataset_json_naming_other_channels_is_refused(tmp_path: Path) -> None:
    import json

    path = tmp_path / "BRATS_003.nii.gz"
    _phantom_4d(path, MSD_ORDER)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT", "1": "PET"}}))
    with pytest.raises(InputError, match=r"dataset.json \(its modality block\): names"):
        load_case(path)


# -- the label map's header ---------------------------------------------------------------
def test_nifti2_case_gets_a_nifti2_label_map_without_complaint(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "c2"
    folder.mkdir()
    img = _image(3)
    for i, m in enumerate(MODALITIES):
        nib.save(nib.Nifti2Image(img[i].astype(np.int16), BRATS_AFF),
                 str(folder / f"c2_{m}.nii.gz"))
    case = load_case(folder, with_label=False)
    out = write_label_map(case, _labels(3), tmp_path / "out" / "c2.nii.gz")
    back = nib.load(str(out))
    assert isinstance(back, nib.Nifti2Image) and back.header.sizeof_hdr == 540
    np.testing.assert_allclose(back.affine, BRATS_AFF)
    assert "sizeof_hdr" not in capfd.readouterr().err + caplog.text


def test_label_map_of_a_vector_image_is_no_vector(tmp_path: Path) -> None:
    """A 4D case stored as NIfTI's vector image (X, Y, Z, 1, 4; intent "vector") gets a
    label map with no intent, as one of a 3D case has; a time step of 0 stays 0."""
    img = _image(4)
    five = np.stack([img[MODALITIES.index(m)] for m in MSD_ORDER], axis=-1)[:, :, :, None, :]
    vec = nib.Nifti1Image(five.astype(np.float32), BRATS_AFF)
    vec.header.set_intent("vector")
    path = tmp_path / "v.nii.gz"
    nib.save(vec, str(path))
    case = load_case(path, with_label=False)
    back = nib.load(str(write_label_map(case, _labels(4), tmp_path / "out" / "v.nii.gz")))
    assert back.header.get_intent()[0] == "none"
    assert back.shape == SHAPE and int(back.header["dim"][0]) == 3
    # a 3D file whose time step is 0: the label map keeps 0
    folder = tmp_path / "c0"
    folder.mkdir()
    for i, m in enumerate(MODALITIES):
        three = nib.Nifti1Image(img[i].astype(np.int16), BRATS_AFF)
        three.header["pixdim"][4] = 0
        nib.save(three, str(folder / f"c0_{m}.nii.gz"))
    case = load_case(folder, with_label=False)
    back = nib.load(str(write_label_map(case, _labels(4), tmp_path / "out" / "c0.nii.gz")))
    assert float(back.header["pixdim"][4]) == 0.0


@pytest.mark.parametrize("step", [0.0, 2.5])
def test_label_map_of_a_4d_case_keeps_its_time_step(tmp_path: Path, step: float) -> None:
    """A 4D case's pixdim[4] (0, or a time step) is the label map's as well, not 1."""
    img = _image(4)
    four = np.stack([img[MODALITIES.index(m)] for m in MSD_ORDER], axis=-1)
    nii = nib.Nifti1Image(four.astype(np.float32), BRATS_AFF)
    nii.header["pixdim"][4] = step
    path = tmp_path / "f.nii.gz"
    nib.save(nii, str(path))
    case = load_case(path, with_label=False)
    back = nib.load(str(write_label_map(case, _labels(4), tmp_path / "out" / "f.nii.gz")))
    assert float(back.header["pixdim"][4]) == step
