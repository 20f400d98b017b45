"""NIfTI reading and writing (braintumor.io): every bad file gives one sentence naming
the file; label maps keep the reference's shape, affine and header geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import io
from braintumor.errors import InputError

SHAPE = (10, 9, 8)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _one_sentence(msg: str, path: Path) -> None:
    assert str(path) in msg or path.name in msg, msg
    assert "\n" not in msg and msg.endswith("."), msg
    assert msg.count(". ") == 0 or msg.count(". ") == msg.count("(")  # a single sentence


def test_reads_3d_and_keeps_geometry(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    aff = np.diag([0.9, 1.1, 2.0, 1.0])
    p = _save(tmp_path / "a.nii.gz", data, aff)
    vol = io.load_nifti(p)
    np.testing.assert_allclose(vol.data, data)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.spacing == pytest.approx((0.9, 1.1, 2.0))


def test_trailing_singleton_dimension_is_squeezed(tmp_path: Path) -> None:
    p = _save(tmp_path / "a.nii", np.ones((*SHAPE, 1), np.float32))
    assert io.load_nifti(p).data.shape == SHAPE


@pytest.mark.parametrize("shape,dims", [((10, 9), 2), ((10, 9, 8, 2, 3), 5), ((4, 4, 4, 4), 4)])
def test_wrong_number_of_dimensions(tmp_path: Path, shape: tuple[int, ...], dims: int) -> None:
    p = _save(tmp_path / "bad.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(InputError) as err:
        io.load_nifti(p, ndim=3)
    msg = str(err.value)
    _one_sentence(msg, p)
    assert f"{dims}D" in msg and "expected 3D" in msg


def test_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        io.load_nifti(tmp_path / "nope.nii.gz")
    with pytest.raises(InputError, match="folder"):
        io.load_nifti(tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"this is not a nifti file at all" * 10)
    with pytest.raises(InputError) as err:
        io.load_nifti(p)
    _one_sentence(str(err.value), p)
    q = tmp_path / "junk.nii"
    q.write_bytes(bytes(400))
    with pytest.raises(InputError):
        io.load_nifti(q)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    full = _save(tmp_path / f"full{suffix}",
                 np.random.default_rng(1).random((20, 20, 20)).astype(np.float32))
    raw = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as err:
        io.load_nifti(cut)
    _one_sentence(str(err.value), cut)
    assert "truncated" in str(err.value) or "readable" in str(err.value)


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    data = np.random.default_rng(2).random((20, 20, 20)).astype(np.float32)
    raw = bytearray(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes()))
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    p = tmp_path / "corrupt.nii.gz"
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError):
        io.load_nifti(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path: Path, bad: float) -> None:
    data = np.ones(SHAPE, np.float32)
    data[1, 2, 3] = bad
    data[4, 4, 4] = bad
    p = _save(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputError) as err:
        io.load_nifti(p)
    _one_sentence(str(err.value), p)
    assert "2 NaN or infinite" in str(err.value)


def test_label_map_must_hold_whole_numbers(tmp_path: Path) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[0, 0, 0] = 1.5
    p = _save(tmp_path / "x_seg.nii.gz", data)
    with pytest.raises(InputError, match="whole numbers"):
        io.load_label_nifti(p)
    ok = _save(tmp_path / "y_seg.nii.gz", np.full(SHAPE, 4, np.int16))
    assert io.load_label_nifti(ok).data.dtype == np.uint8


def _oblique_affine() -> np.ndarray:
    a, b = np.deg2rad(17.0), np.deg2rad(-8.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.94, 0.94, 3.0])
    aff[:3, 3] = [-101.5, 87.25, -40.0]
    return aff


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("oblique", [False, True])
def test_label_map_keeps_reference_geometry(tmp_path: Path, suffix: str, oblique: bool) -> None:
    aff = _oblique_affine() if oblique else np.diag([-1.0, -1.0, 1.0, 1.0])
    img = nib.Nifti1Image(np.zeros(SHAPE, np.int16), aff)
    img.header.set_qform(aff, 2)  # "aligned", as BraTS files carry
    img.header.set_sform(aff, 1)  # "scanner"
    img.header.set_xyzt_units("mm", "sec")
    ref = tmp_path / f"ref{suffix}"
    nib.save(img, str(ref))
    vol = io.load_nifti(ref)
    lab = np.random.default_rng(3).integers(0, 5, SHAPE).astype(np.uint8)
    out = io.save_label_nifti(lab, tmp_path / f"out{suffix}", reference=vol.header,
                              affine=vol.affine)
    back = nib.load(str(out))
    assert back.shape == SHAPE
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    r_hdr, o_hdr = nib.load(str(ref)).header, back.header
    for getter in ("get_qform", "get_sform"):
        m_ref, code_ref = getattr(r_hdr, getter)(coded=True)
        m_out, code_out = getattr(o_hdr, getter)(coded=True)
        assert int(code_out) == int(code_ref)
        np.testing.assert_allclose(m_out, m_ref, atol=1e-5)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    assert o_hdr.get_zooms()[:3] == pytest.approx(r_hdr.get_zooms()[:3])
    assert o_hdr.get_xyzt_units() == r_hdr.get_xyzt_units()


def test_label_map_without_reference_uses_affine(tmp_path: Path) -> None:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    out = io.save_label_nifti(np.ones(SHAPE, np.uint8), tmp_path / "l.nii.gz", affine=aff)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff)
    assert int(back.header["sform_code"]) == 1


def test_2d_pictures(tmp_path: Path) -> None:
    rgb = np.random.default_rng(4).integers(0, 255, (16, 12, 3)).astype(np.uint8)
    p = io.write_png(rgb, tmp_path / "a.png")
    np.testing.assert_array_equal(io.read_image_2d(p), rgb)
    grey = io.write_png(rgb[..., 0], tmp_path / "g.png")
    assert io.read_image_2d(grey).shape == (16, 12, 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        io.read_image_2d(bad)
    with pytest.raises(InputError, match="not found"):
        io.read_image_2d(tmp_path / "none.png")


def test_palette_and_cmyk_pictures_are_read_by_their_colours(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    grey = rng.integers(0, 255, (20, 24)).astype(np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "grey_palette.png")
    back = io.read_image_2d(tmp_path / "grey_palette.png")
    assert back.shape == (20, 24, 1) and np.array_equal(back[..., 0], grey)
    rgb = rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    got = io.read_image_2d(tmp_path / "cmyk.jpg").astype(int)
    assert got.shape == (20, 24, 3) and np.abs(got - rgb).mean() < 20
    Image.fromarray(grey > 128).save(tmp_path / "bilevel.png")
    assert set(np.unique(io.read_image_2d(tmp_path / "bilevel.png"))) == {0, 255}


def test_a_picture_claiming_too_many_pixels_is_refused(tmp_path: Path) -> None:
    """A small file may claim a huge picture (a decompression bomb): refused in a sentence
    before it is decoded."""
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("1", (9000, 9000)).save(big)  # 81 million pixels in a few kB
    assert big.stat().st_size < 100_000
    with pytest.raises(InputError, match="9000 x 9000 pixels, more than the 64 million"):
        io.read_image_2d(big)
    Image.new("1", (16000, 16000)).save(big)  # so many that Pillow refuses to open it
    with pytest.raises(InputError, match="claims more than the 64 million"):
        io.read_image_2d(big)


def test_name_helpers() -> None:
    assert io.is_nifti("a.NII.GZ") and io.is_nifti("a.nii") and not io.is_nifti("a.png")
    assert io.strip_nifti_suffix("case_t1.nii.gz") == "case_t1"
    assert io.strip_nifti_suffix("case_t1.nii") == "case_t1"
    assert io.is_image_2d("x.TIF") and not io.is_image_2d("x.nii")


def test_dicom_slice_as_a_picture(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from test_web_support import write_dicom_slice

    px = np.zeros((40, 50), np.uint16)
    px[10:20, 5:25] = 1000
    px[0, 0] = 60000  # one hot pixel must not darken the rest
    f = write_dicom_slice(tmp_path / "s.dcm", px, (0.5, 0.8))
    arr, mm = io.read_dicom_2d(f)
    assert arr.shape == (40, 50, 1) and arr.dtype == np.uint8
    assert arr[15, 10, 0] == 255 and arr[30, 40, 0] == 0
    assert mm == pytest.approx(np.sqrt(0.5 * 0.8))  # areas exact: mm * mm = 0.4 mm^2
    assert np.array_equal(io.read_image_2d(f), arr)
    inv, _ = io.read_dicom_2d(write_dicom_slice(tmp_path / "m1.dcm", px, None, "MONOCHROME1"))
    assert inv[15, 10, 0] < inv[30, 40, 0]
    assert io.read_dicom_2d(tmp_path / "m1.dcm")[1] is None
    with pytest.raises(InputError, match="3 frames"):
        io.read_dicom_2d(write_dicom_slice(tmp_path / "mf.dcm", px, (1, 1), frames=3))
    (tmp_path / "bad.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(InputError, match="bad.dcm: not a readable DICOM"):
        io.read_dicom_2d(tmp_path / "bad.dcm")


def test_dcm2niix_faults_in_words_without_file_names() -> None:
    """dcm2niix's log of one series -> why it was not (all) converted, with no path (a
    folder may be named after the patient)."""
    ok = "Found 28 DICOM file(s)\nConvert 28 DICOM as /x/2_AX_T1 (40x44x28x1)\n"
    assert io.dcm2niix_fault(ok, 28) is None
    cut = ("Warning: File not large enough to store image data: /DOE_JANE/IM1.dcm\n"
           "Warning: File not large enough to store image data: /DOE_JANE/IM2.dcm\n"
           "Error: Converted 0 of 28 files\n")
    assert io.dcm2niix_fault(cut, 28) == ("2 of its 28 files are cut short (their pixel data "
                                          "ends early)")
    coded = "Warning: Unsupported transfer syntax '1.2.840.10008.1.2.4.100' (see x.org/a)\n"
    assert "compressed in a way (transfer syntax) dcm2niix cannot decode" in \
        io.dcm2niix_fault(coded, 5)
    odd = ("Warning: Something odd in /home/DOE_JANE/IM7.dcm here\n"
           "Convert 20 DICOM as /x/2_AX (40x44x20x1)\nError: Converted 20 of 28 files\n")
    assert io.dcm2niix_fault(odd, 28) == ("8 of its 28 files were not converted (dcm2niix: "
                                          "Warning: Something odd in <path> here)")
    assert io.dcm2niix_fault("No valid DICOM images were found\n", 3) == \
        "dcm2niix converted none of its files"


def test_extract_zip_refuses_escaping_encrypted_and_oversized_archives(tmp_path: Path) -> None:
    """The one unpacking of zips (the command line's zipped studies and the page's
    uploads): every file under a name of its own, nothing outside the folder, and a zip
    that unpacks to more than allowed is its own error (the page's 413)."""
    import zipfile

    from braintumor.io import ArchiveTooLarge, extract_zip

    ok = tmp_path / "ok.zip"
    with zipfile.ZipFile(ok, "w") as zf:
        zf.writestr("study/a/IM1", b"x" * 100)
        zf.writestr("study/b/IM2", b"y" * 100)
    assert extract_zip(ok, tmp_path / "out", "ok.zip", 1000) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.dcm", "000001.dcm"]
    with pytest.raises(ArchiveTooLarge, match="ok.zip: unpacks to more than 150 bytes"):
        extract_zip(ok, tmp_path / "small", "ok.zip", 150)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/cron.d/x", b"boom")
    with pytest.raises(InputError, match="leaves the archive's folder"):
        extract_zip(evil, tmp_path / "evil", "evil.zip", 1000)
    assert not (tmp_path / "etc").exists()
    with pytest.raises(InputError, match="is not a readable zip file"):
        extract_zip(tmp_path / "out" / "000000.dcm", tmp_path / "bad", "x.zip", 1000)
