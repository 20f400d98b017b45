"""NIfTI reading and writing (braintumor.io): every bad file gives one sentence naming
the file; label maps keep the reference's shape, affine and header geometry."""

from __future__ import annotations

import gzip
import struct
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


def test_nan_voxels_can_be_read_as_background(tmp_path: Path) -> None:
    """A brain-masking tool's NaN outside the brain: read as 0 and counted when asked
    (a case's reading asks); an infinity is refused all the same."""
    data = np.ones(SHAPE, np.float32)
    data[:2] = np.nan
    p = _save(tmp_path / "masked.nii.gz", data)
    vol = io.load_nifti(p, nan_as_background=True)
    assert vol.nan_voxels == 2 * SHAPE[1] * SHAPE[2]
    assert np.isfinite(vol.data).all() and not vol.data[:2].any() and vol.data[2:].all()
    plain = p.with_name("plain.nii")  # an uncompressed file, read through a map of it
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(plain))
    assert not io.load_nifti(plain, nan_as_background=True).data[:2].any()
    data[5, 5, 5] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        io.load_nifti(_save(tmp_path / "inf.nii.gz", data), nan_as_background=True)


def test_label_map_must_hold_whole_numbers(tmp_path: Path) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[0, 0, 0] = 1.5
    p = _save(tmp_path / "x_seg.nii.gz", data)
    with pytest.raises(InputError, match="whole numbers"):
        io.load_label_nifti(p)
    ok = _save(tmp_path / "y_seg.nii.gz", np.full(SHAPE, 4, np.int16))
    assert io.load_label_nifti(ok).data.dtype == np.uint8



def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:6, 2:6, 2:6] = 2
    lab[3:5, 3:5, 3:5] = 1
    lab[4, 4, 4] = 4
    return lab


def _with_scaling(path: Path, raw: np.ndarray, slope: float, inter: float = 0.0) -> Path:
    """``raw`` integers stored with scl_slope / scl_inter written into the header, as
    another tool writes a label map (nibabel would choose a scaling of its own)."""
    b = bytearray(nib.Nifti1Image(raw, np.eye(4)).to_bytes())
    struct.pack_into("<ff", b, 112, slope, inter)  # scl_slope, scl_inter
    path.write_bytes(gzip.compress(bytes(b)))
    return path


def test_scaled_integer_label_maps_are_read_through_their_scale(tmp_path: Path) -> None:
    """Integers with a scale factor are read as any NIfTI reader reads them, each value
    the whole number the file stores as near as its step allows: nibabel's default for a
    float label map saved as uint8 (slope 1/63.75: 1.0039, 1.9922, 4.0) and an int16 with
    slope 1/25 (0.99999998 in float32) were read truncated, edema (2) as core (1)."""
    lab = _labels()
    img = nib.Nifti1Image(lab.astype(np.float32), np.eye(4))
    img.set_data_dtype(np.uint8)  # nibabel picks the scaling: slope 4/255
    nib.save(img, str(tmp_path / "u8_seg.nii.gz"))
    assert float(nib.load(str(tmp_path / "u8_seg.nii.gz")).dataobj.slope) != 1.0
    files = [tmp_path / "u8_seg.nii.gz",
             _with_scaling(tmp_path / "s25.nii.gz", lab.astype(np.int16) * 25, 1 / 25),
             _with_scaling(tmp_path / "s3.nii.gz", lab.astype(np.int16) * 3, 1 / 3),
             _with_scaling(tmp_path / "off.nii.gz", lab.astype(np.int16) * 10 - 20, 0.1, 2.0)]
    for f in files:
        got = io.load_label_nifti(f).data
        assert got.dtype == np.uint8 and np.array_equal(got, lab), (f.name, np.unique(got))


def test_a_scaled_label_map_of_fractions_is_refused_quoting_a_value(tmp_path: Path) -> None:
    raw = _labels().astype(np.int16) * 10
    raw[0, 0, 0] = 5  # 0.5: no label, however it is stored
    p = _with_scaling(tmp_path / "half_seg.nii.gz", raw, 0.1)
    with pytest.raises(InputError) as err:
        io.load_label_nifti(p)
    msg = str(err.value)
    _one_sentence(msg, p)
    assert "the value 0.5" in msg and "scl_slope 0.1" in msg and "whole numbers 0-255" in msg


def test_float_label_maps_within_a_thousandth_of_whole_numbers(tmp_path: Path) -> None:
    """A float label map from another tool's resampling carries noise (0.999999 for 1):
    read as the whole numbers; a value farther off is refused, quoted."""
    lab = _labels()
    noisy = lab.astype(np.float32) * np.float32(0.999999)
    noisy[lab == 2] += np.float32(0.0004)
    got = io.load_label_nifti(_save(tmp_path / "noisy.nii.gz", noisy)).data
    assert np.array_equal(got, lab)
    noisy[0, 0, 0] = 1.01
    p = _save(tmp_path / "off.nii.gz", noisy)
    with pytest.raises(InputError) as err:
        io.load_label_nifti(p)
    _one_sentence(str(err.value), p)
    assert "the value 1.01" in str(err.value)
    far = _save(tmp_path / "neg.nii.gz", np.full(SHAPE, -3, np.int16))
    with pytest.raises(InputError, match="the value -3"):
        io.load_label_nifti(far)


def test_voxel_size_is_the_affines_when_pixdim_disagrees(tmp_path: Path) -> None:
    """An sform of 3 mm slices over a header whose pixdim says 1 mm (qform unset): the
    voxels lie where the sform puts them, so they are 3 mm thick wherever a size is
    read (the volume's spacing, a case's grid rule)."""
    from braintumor.cases import coarsest_edge

    aff = np.diag([-1.0, 1.0, 3.0, 1.0])
    img = nib.Nifti1Image(np.ones(SHAPE, np.float32), aff)
    img.header.set_sform(aff, 2)
    img.header.set_qform(None, 0)
    img.header["pixdim"][1:4] = 1.0
    p = tmp_path / "mismatch.nii.gz"
    nib.save(img, str(p))
    back = nib.load(str(p))
    assert back.header.get_zooms()[:3] == (1.0, 1.0, 1.0)  # the file says both
    vol = io.load_nifti(p)
    assert vol.spacing == pytest.approx((1.0, 1.0, 3.0))
    assert coarsest_edge(back.header, back.affine) == pytest.approx(3.0)
    oblique = io.voxel_sizes(_oblique_affine())
    assert oblique == pytest.approx((0.94, 0.94, 3.0))
    flat = np.diag([1.0, 1.0, 0.0, 1.0])  # an axis of no length: the header's size stands
    assert io.voxel_sizes(flat, (1.0, 1.0, 2.5)) == pytest.approx((1.0, 1.0, 2.5))

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


def test_a_dicomdir_given_alone_is_said_to_be_an_index(tmp_path: Path) -> None:
    """A disc's ``DICOMDIR`` given as a picture is named an index, with its folder to give
    instead, not 'no pixel data'."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "DISC"
    ds.DirectoryRecordSequence = []
    (tmp_path / "disc").mkdir()
    pydicom.dcmwrite(tmp_path / "disc" / "DICOMDIR", ds, enforce_file_format=True)
    with pytest.raises(InputError, match=r"DICOMDIR: is a DICOMDIR, the index of a DICOM "
                       r"disc or folder, not an image: give its folder \(.*disc\) instead"):
        io.read_dicom_2d(tmp_path / "disc" / "DICOMDIR")


def test_a_16_bit_picture_is_scaled_as_a_dicom_slice_is(tmp_path: Path) -> None:
    """A 16-bit PNG or TIFF with one hot pixel keeps its picture: scaled between its
    minimum and 99.9th percentile, as a DICOM slice's grey values are, not by its
    maximum (which made it black)."""
    from PIL import Image

    px = np.zeros((40, 50), np.uint16)
    px[10:20, 5:25] = 1000
    px[0, 0] = 65535
    for name in ("hot.png", "hot.tif"):
        Image.fromarray(px).save(tmp_path / name)
        arr = io.read_image_2d(tmp_path / name)
        assert arr.dtype == np.uint8 and arr[15, 10, 0] == 255 and arr[30, 40, 0] == 0, name
    assert np.array_equal(io.to_uint8(px), io.to_uint8(px.astype(np.float32)))


def test_a_flat_16_bit_picture_or_all_tumour_mask_is_not_black(tmp_path: Path) -> None:
    """A uniform 16-bit picture, or an all-tumour 16-bit mask (all 1 or all 65535), reads
    white (and is all tumour as a mask), not black as its minimum; all 0 stays black."""
    from PIL import Image

    from braintumor.evaluate import read_mask_2d

    for value, grey in ((1, 255), (65535, 255), (700, 255), (0, 0)):
        px = np.full((32, 32), value, np.uint16)
        Image.fromarray(px).save(tmp_path / f"m{value}.png")
        arr = io.read_image_2d(tmp_path / f"m{value}.png")
        assert arr.dtype == np.uint8 and set(np.unique(arr)) == {grey}, value
        assert int(read_mask_2d(tmp_path / f"m{value}.png").sum()) == (1024 if value else 0)
    assert set(np.unique(io.to_uint8(np.full((4, 4), -5.0)))) == {0}


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


def _claiming(path: Path, shape: tuple[int, ...], dtype: type = np.float32,
              body: bytes = b"", gz: bool = True) -> Path:
    """A NIfTI file of a header claiming ``shape`` voxels followed by ``body`` only."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + body
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_a_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path: Path,
                                                                   gz: bool) -> None:
    """A few hundred bytes that claim 30000^3 float32 voxels (or 512 x 512 x 2048, more
    than a scan has) are refused in one sentence, never allocated."""
    for shape in ((30000, 30000, 30000), (512, 512, 2048), (512, 512, 600, 4)):
        p = _claiming(tmp_path / ("big.nii.gz" if gz else "big.nii"), shape, np.uint8
                      if shape[2] != 30000 else np.float32, gz=gz)
        with pytest.raises(io.VolumeTooLarge) as err:
            io.load_nifti(p)
        _one_sentence(str(err.value), p)
        assert "x".join(str(s) for s in shape) in str(err.value).replace(" ", "")
        with pytest.raises(io.VolumeTooLarge):
            io.load_label_nifti(p)


def test_a_four_channel_file_of_a_fine_scan_is_within_the_limit() -> None:
    """The four modalities of a 0.5 mm scan in one 4D file (480 x 480 x 310 x 4 int16) are
    a case, not a bomb: the per-file limit is above one volume's."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((480, 480, 310, 4))
    assert io.check_volume_size(hdr, Path("fine.nii.gz")) == 480 * 480 * 310 * 4 * 2


def test_gzip_decompression_stops_past_what_the_header_claims(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A small image followed by far more compressed zeros than its header accounts for
    is refused once decompression passes the header's size, not read whole."""
    monkeypatch.setattr(io, "_NIFTI_SLACK_BYTES", 1 << 16)
    p = _claiming(tmp_path / "padded.nii.gz", (4, 4, 4), body=b"\0" * (1 << 20))
    with pytest.raises(io.VolumeTooLarge) as err:
        io.load_nifti(p)
    _one_sentence(str(err.value), p)
    # within the slack it is an ordinary file
    ok = _claiming(tmp_path / "ok.nii.gz", (4, 4, 4), body=b"\0" * (4 * 64))
    assert io.load_nifti(ok).data.shape == (4, 4, 4)


def test_a_full_disk_while_unzipping_is_no_damaged_zip(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the entries failing (a full disk) is raised as the OSError it is, for the
    page's 507 and the command line's message, not blamed on the zip."""
    import errno
    import zipfile

    ok = tmp_path / "ok.zip"
    with zipfile.ZipFile(ok, "w") as zf:
        zf.writestr("study/a/IM1", b"x" * 100)

    from test_web_support import FullDiskFile

    monkeypatch.setattr(io, "open", FullDiskFile, raising=False)
    with pytest.raises(OSError) as err:
        io.extract_zip(ok, tmp_path / "out", "ok.zip", 1000)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, InputError)


def test_a_picture_is_read_as_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    """A JPEG stored 30 x 20 with EXIF orientation 6 (a phone held upright) is shown
    turned a quarter clockwise, 20 x 30: it is read so."""
    from PIL import Image

    stored = np.zeros((20, 30), np.uint8)  # (H, W) as stored
    stored[:, :10] = 250  # its left third bright
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    im.save(path, quality=95, exif=exif)
    arr = io.read_image_2d(path)
    assert arr.shape == (30, 20, 1)  # as shown
    np.testing.assert_allclose(arr[..., 0], np.rot90(stored, -1), atol=12)  # top now bright
    assert arr[:10, :, 0].mean() > 200 and arr[12:, :, 0].mean() < 30


def test_a_tiff_of_several_pages_is_refused(tmp_path: Path) -> None:
    """Only its first page was read (a blank first page gave "blank image" while the
    second held the brain)."""
    from PIL import Image

    pages = [Image.fromarray(np.full((20, 30), v, np.uint8)) for v in (0, 120, 200)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.raises(InputError, match=r"stack.tif: is a TIFF of 3 pages.*folder of "
                                         r"numbered pictures"):
        io.read_image_2d(path)
    pages[1].save(tmp_path / "one.tif")  # one page: read
    assert io.read_image_2d(tmp_path / "one.tif").shape == (20, 30, 1)


def test_a_float_map_on_a_nifti2_4d_scan_keeps_its_format_and_time_step(
        tmp_path: Path, capsys) -> None:
    """The uncertainty map and the web's split of a 4D upload are written as the label
    map is: the scan's NIfTI format, no vector intent, its time step as it was."""
    from braintumor.io import save_float_nifti

    hdr = nib.Nifti2Header()
    hdr.set_data_shape((6, 5, 4, 4))
    hdr["pixdim"][4] = 0.0
    hdr.set_intent("vector")
    out = save_float_nifti(np.ones((6, 5, 4)), tmp_path / "u.nii.gz", hdr, np.eye(4))
    back = nib.load(str(out))
    assert isinstance(back, nib.Nifti2Image) and back.shape == (6, 5, 4)
    assert float(back.header["pixdim"][4]) == 0.0 and back.header.get_intent()[0] == "none"
    assert "sizeof_hdr" not in capsys.readouterr().err


# ----------------------------------------------------------------- exact turns onto a grid
#: a 2 x 3 x 4 array whose values name their voxels (100 i + 10 j + k), on 1 mm voxels at
#: the origin: voxel (i, j, k) lies at world (i, j, k)
SMALL = (100 * np.arange(2)[:, None, None] + 10 * np.arange(3)[None, :, None]
         + np.arange(4)[None, None, :]).astype(np.int16)


def _grid(columns: list[list[float]], origin: list[float]) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = np.array(columns, float).T
    aff[:3, 3] = origin
    return aff


def test_a_flipped_grid_is_the_array_reversed() -> None:
    """The grid whose x runs the other way (voxel 0 at world x = 1) holds SMALL reversed
    along x: its voxel (0, 2, 3) is SMALL's (1, 2, 3), 123."""
    flipped = _grid([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], [1, 0, 0])
    out = io.turned_onto(SMALL, np.eye(4), (2, 3, 4), flipped)
    assert out[0, 2, 3] == 123 and out[1, 0, 0] == 0
    np.testing.assert_array_equal(out, SMALL[::-1])
    assert out.flags.c_contiguous
    both = _grid([[1, 0, 0], [0, -1, 0], [0, 0, -1]], [0, 2, 3])  # y and z reversed
    np.testing.assert_array_equal(io.turned_onto(SMALL, np.eye(4), (2, 3, 4), both),
                                  SMALL[:, ::-1, ::-1])


def test_a_permuted_grid_is_the_array_transposed() -> None:
    """x and y swapped: the grid's voxel (j, i, k) is SMALL's (i, j, k), its shape 3, 2, 4;
    a sagittal storage (its axes world z reversed, x, y) is a transpose and a flip."""
    swapped = _grid([[0, 1, 0], [1, 0, 0], [0, 0, 1]], [0, 0, 0])
    out = io.turned_onto(SMALL, np.eye(4), (3, 2, 4), swapped)
    assert out.shape == (3, 2, 4) and out[2, 1, 3] == 123
    np.testing.assert_array_equal(out, SMALL.transpose(1, 0, 2))
    sagittal = _grid([[0, 0, -1], [1, 0, 0], [0, 1, 0]], [0, 0, 3])
    out = io.turned_onto(SMALL, np.eye(4), (4, 2, 3), sagittal)
    assert out[0, 1, 2] == 123  # grid voxel (0, 1, 2) lies at world (1, 2, 3)
    np.testing.assert_array_equal(out, SMALL.transpose(2, 0, 1)[::-1])
    # and back: the turn of the turned array onto SMALL's grid is SMALL
    np.testing.assert_array_equal(io.turned_onto(out, sagittal, SMALL.shape, np.eye(4)), SMALL)


def test_a_4d_array_keeps_its_trailing_axis() -> None:
    """Only the first three axes turn; a fourth (channels, time) is kept, and counted in
    the shape: a 4D array is on no 3D grid."""
    four = np.stack([SMALL, -SMALL], axis=-1)
    swapped = _grid([[0, 1, 0], [1, 0, 0], [0, 0, 1]], [0, 0, 0])
    out = io.turned_onto(four, np.eye(4), (3, 2, 4, 2), swapped)
    assert out[2, 1, 3, 0] == 123 and out[2, 1, 3, 1] == -123
    np.testing.assert_array_equal(out, four.transpose(1, 0, 2, 3))
    with pytest.raises(io.NotOnGrid) as exc:
        io.turned_onto(four, np.eye(4), (3, 2, 4), swapped)
    assert exc.value.shape_differs


def test_an_affine_within_the_tolerance_is_on_the_grid_and_beyond_it_is_not() -> None:
    """0.004 mm off (float noise): on the grid, turned or as it is (then the array itself,
    not a copy); 0.02 mm off: another grid, and its affine is the fault."""
    tol = io.GRID_TOLERANCE_MM
    near = _grid([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], [1 + 0.4 * tol, 0, -0.4 * tol])
    np.testing.assert_array_equal(io.turned_onto(SMALL, np.eye(4), (2, 3, 4), near),
                                  SMALL[::-1])
    same = np.eye(4)
    same[:3, 3] = 0.4 * tol
    assert io.on_grid(SMALL.shape, np.eye(4), (2, 3, 4), same)
    assert io.turned_onto(SMALL, np.eye(4), (2, 3, 4), same) is SMALL
    far = near.copy()
    far[0, 3] = 1 + 2 * tol
    assert not io.on_grid((2, 3, 4), np.eye(4), (2, 3, 4), far)
    with pytest.raises(io.NotOnGrid) as exc:
        io.turned_onto(SMALL, np.eye(4), (2, 3, 4), far)
    assert not exc.value.shape_differs


def test_the_tolerance_is_a_distance_between_voxel_centres_across_the_grid() -> None:
    """A voxel size 0.9 % larger or a 0.55 degree rotation moves no affine entry by the
    tolerance but the far corner of a 240x240x155 grid by over 3 mm: another grid. An
    error that stays within the tolerance at every corner is on the grid."""
    shape = (240, 240, 155)
    zoomed = np.diag([1.009, 1.009, 1.009, 1.0])
    t = np.deg2rad(0.55)
    turned = np.eye(4)
    turned[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    for other in (zoomed, turned):
        assert np.abs(other - np.eye(4)).max() < io.GRID_TOLERANCE_MM
        assert not io.on_grid(shape, other, shape, np.eye(4))
        assert io.on_grid((2, 1, 1), other, (2, 1, 1), np.eye(4))  # 1 voxel: < 0.01 mm
    tiny = np.diag([1 + 0.4 * io.GRID_TOLERANCE_MM / 239] * 3 + [1.0])
    assert io.on_grid(shape, tiny, shape, np.eye(4))
    shifted = np.eye(4)  # 0.009 mm along each axis: 0.0156 mm away
    shifted[:3, 3] = 0.9 * io.GRID_TOLERANCE_MM
    assert not io.on_grid(shape, shifted, shape, np.eye(4))
    nan = np.eye(4)
    nan[0, 0] = np.nan
    assert not io.on_grid(shape, nan, shape, np.eye(4))


def test_oblique_sheared_and_degenerate_grids_are_no_turn() -> None:
    """No reordering or reversal of axes puts voxels on a grid rotated by 10 degrees, a
    sheared one or one whose affine places an axis nowhere: each is another grid, the
    affine's fault, not the shape's."""
    a = np.deg2rad(10)
    oblique = _grid([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]],
                    [0, 0, 0])
    sheared = _grid([[1, 0, 0], [0.2, 1, 0], [0, 0, 1]], [0, 0, 0])
    for grid in (oblique, sheared):
        with pytest.raises(io.NotOnGrid) as exc:
            io.turned_onto(SMALL, np.eye(4), (2, 3, 4), grid)
        assert not exc.value.shape_differs
    flat = np.diag([1.0, 1.0, 0.0, 1.0])  # z placed nowhere
    for src, dst in ((flat, np.eye(4)), (np.eye(4), flat)):
        with pytest.raises(io.NotOnGrid) as exc:
            io.turned_onto(SMALL, src, (2, 3, 4), dst)
        assert not exc.value.shape_differs


def test_the_shape_is_the_fault_only_when_it_fits_neither_as_stored_nor_turned() -> None:
    """Another size is the shape's fault; the grid's shape, but an affine that says its
    axes are swapped (so, turned, it would be 3, 2, 4), is the affine's; the grid's shape
    once turned, but shifted, is the affine's too."""
    with pytest.raises(io.NotOnGrid) as exc:
        io.turned_onto(SMALL, np.eye(4), (2, 3, 5), np.eye(4))
    assert exc.value.shape_differs
    swapped = _grid([[0, 1, 0], [1, 0, 0], [0, 0, 1]], [0, 0, 0])
    with pytest.raises(io.NotOnGrid) as exc:
        io.turned_onto(SMALL, swapped, (2, 3, 4), np.eye(4))
    assert not exc.value.shape_differs
    shifted = swapped.copy()
    shifted[0, 3] = 5.0
    with pytest.raises(io.NotOnGrid) as exc:
        io.turned_onto(SMALL, np.eye(4), (3, 2, 4), shifted)
    assert not exc.value.shape_differs


def test_a_label_map_that_is_no_nifti_is_read_without_nibabels_lines(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """nibabel's complaints about the header of a file that is no NIfTI (a text file, a
    picture) stay off stderr: the reader's one sentence says it; the logger is left as
    it was for the next read."""
    import logging

    text = tmp_path / "readme.txt"
    text.write_text("These are the scans of patient 1.\n" * 20)
    png = tmp_path / "pic.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(600))
    for path in (text, png):
        with pytest.raises(InputError) as err:
            io.load_label_nifti(path)
        _one_sentence(str(err.value), path)
    got = capfd.readouterr().err + caplog.text
    assert "sizeof_hdr" not in got and "not attempting fix" not in got, got
    assert not logging.getLogger("nibabel.global").filters


def test_a_readable_label_maps_header_lines_are_said_and_other_threads_are_heard(
        tmp_path: Path) -> None:
    """While a label map was read, nibabel's shared logger dropped every thread's lines
    (another thread's "qform_code 7 not valid; setting to 0" was lost), and the reader's
    own were dropped for a readable file too, which left unsaid why its qform is not used.
    Only this thread's lines are held now, and said once the file is read as a NIfTI."""
    import logging
    import threading

    log = logging.getLogger("nibabel.global")
    heard: list[tuple[str, int]] = []

    class Listen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            heard.append((record.getMessage(), record.thread or 0))

    listen = Listen()
    log.addHandler(listen)
    try:
        img = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
        img.header["qform_code"] = 7  # no code NIfTI defines: nibabel says it sets it to 0
        nib.save(img, tmp_path / "qcode.nii")
        io.load_label_nifti(tmp_path / "qcode.nii")
        assert [m for m, _ in heard] == ["qform_code 7 not valid; setting to 0"]
        heard.clear()
        # another thread's line, logged while this thread reads a file, is said at once
        inside, said = threading.Event(), threading.Event()

        def other() -> None:
            inside.wait(10)
            log.error("from another thread")
            said.set()

        worker = threading.Thread(target=other)
        worker.start()
        with io.quiet_nibabel():
            inside.set()
            assert said.wait(10)
            assert [m for m, _ in heard] == ["from another thread"]
            log.error("from this thread")
            assert len(heard) == 1
        worker.join()
        assert [m for m, _ in heard] == ["from another thread", "from this thread"]
        heard.clear()
        text = tmp_path / "readme.txt"
        text.write_text("These are the scans of patient 1.\n" * 20)
        with pytest.raises(InputError):
            io.load_label_nifti(text)
        assert heard == [] and not log.filters  # a file that is no NIfTI: one sentence
    finally:
        log.removeHandler(listen)


def test_a_file_is_put_onto_a_grid_turned_exactly_or_else_resampled(tmp_path: Path) -> None:
    """On the grid: None (nothing to write). The grid stored flipped: its voxels turned,
    exactly. Shifted by half a voxel: resampled, values between its neighbours'."""
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    grid = np.eye(4)
    nib.save(nib.Nifti1Image(data, grid), str(tmp_path / "same.nii.gz"))
    assert io.file_onto_grid(tmp_path / "same.nii.gz", data.shape, grid) is None
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, 3.0
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1]), flip),
             str(tmp_path / "flipped.nii.gz"))
    turned = io.file_onto_grid(tmp_path / "flipped.nii.gz", data.shape, grid)
    assert turned is not None and turned.dtype == np.float32
    np.testing.assert_array_equal(turned, data)
    shifted = np.eye(4)
    shifted[2, 3] = 0.5
    nib.save(nib.Nifti1Image(data, shifted), str(tmp_path / "shifted.nii.gz"))
    moved = io.file_onto_grid(tmp_path / "shifted.nii.gz", data.shape, grid)
    assert moved is not None and moved.shape == data.shape
    # voxel k of the grid lies between the file's voxels k-1 and k along the last axis
    np.testing.assert_allclose(moved[1:3, 1:4, 2:5], data[1:3, 1:4, 1:4] + 0.5, atol=1e-4)


# -- files written whole: one rule (write beside, then rename) ------------------------------
def test_write_replacing_writes_through_a_link_and_keeps_permissions(tmp_path: Path) -> None:
    """``cur.nii.gz -> v3/m.nii.gz`` (mode 600): the label map written to ``cur.nii.gz``
    replaced the link by a plain file of mode 644 (the version it pointed to left stale).
    Every file written whole now goes where the link points, the link kept, and keeps
    the permission bits of the file it replaces; a new file gets the umask's default."""
    import os
    import stat

    target = tmp_path / "v3" / "m.nii.gz"
    target.parent.mkdir()
    io.save_label_nifti(np.zeros(SHAPE, np.uint8), target)
    target.chmod(0o600)
    link = tmp_path / "cur.nii.gz"
    link.symlink_to(Path("v3") / "m.nii.gz")
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:4, 2:4, 2:4] = 2
    assert io.save_label_nifti(labels, link) == link
    assert link.is_symlink() and os.readlink(link) == str(Path("v3") / "m.nii.gz")
    assert np.array_equal(io.load_label_nifti(target).data, labels)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # a file written anew: the umask's default, as any program's
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = io.write_replacing(tmp_path / "new.txt", lambda tmp: tmp.write_text("x"))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_text("old")
    plain.chmod(0o640)
    io.write_replacing(plain, lambda tmp: tmp.write_text("new"))
    assert plain.read_text() == "new" and stat.S_IMODE(plain.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "cur.nii.gz", "m.nii.gz", "new.txt", "plain.txt", "v3"]  # no temporary left


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("earlier")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        io.write_replacing(out, fail)
    assert out.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_temporary_name_is_each_call_own(tmp_path: Path) -> None:
    """The temporary beside a file was named by the process id only: two threads of the
    web server writing one file wrote one temporary. Each call's is its own (process,
    thread and a random part), hidden, and of the file's suffix (``.nii.gz`` whole)."""
    import threading

    target = tmp_path / "case.nii.gz"
    names = [io.partial_beside(target) for _ in range(3)]
    other = threading.Thread(target=lambda: names.append(io.partial_beside(target)))
    other.start()
    other.join()
    assert len({p.name for p in names}) == 4
    for p in names:
        assert p.parent == tmp_path and p.name.startswith(".case.")
        assert p.name.endswith(".part.nii.gz")
    assert io.partial_beside(tmp_path / "m.onnx").name.endswith(".part.onnx")


def test_two_threads_writing_one_file_leave_it_whole(tmp_path: Path) -> None:
    import threading

    out = tmp_path / "t.txt"
    gate = threading.Barrier(4)

    def write(text: str) -> None:
        def slow(tmp: Path) -> None:
            with tmp.open("w") as fh:
                fh.write(text[:50])
                gate.wait()  # every thread is mid-write at once
                fh.write(text[50:])
        io.write_replacing(out, slow)

    texts = [str(i) * 100 for i in range(4)]
    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out.read_text() in texts and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_a_file_is_not_written_over_its_source_nor_onto_a_folder(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    src.write_bytes(b"weights")
    (tmp_path / "link.pt").symlink_to("m.pt")
    (tmp_path / "dir").mkdir()
    for out in (src, tmp_path / "link.pt", tmp_path / "." / "m.pt"):
        with pytest.raises(InputError, match="^over$"):
            io.check_written_file(out, src, over_source="over", folder="folder")
    with pytest.raises(InputError, match="^folder$"):
        io.check_written_file(tmp_path / "dir", src, over_source="over", folder="folder")
    io.check_written_file(tmp_path / "m.onnx", src, over_source="over", folder="folder")
    io.check_written_file(tmp_path / "m.onnx", tmp_path / "gone.pt", over_source="over",
                          folder="folder")


def test_a_label_map_goes_onto_a_grid_by_one_rule_for_cases_and_scoring(
        tmp_path: Path) -> None:
    """A case's label map (cases.label_on_grid) and a prediction scored against its
    reference (evaluate.on_reference_grid) each held the same steps; both now take
    io.label_onto_grid's answer and say its NotOnGrid in their own sentence and class."""
    from braintumor import cases, evaluate

    grid = np.diag([-1.0, -1.0, 1.0, 1.0])
    grid[:3, 3] = [2.0, 3.0, -4.0]
    data = SMALL.astype(np.uint8)
    flip = grid.copy()
    flip[:3, 0], flip[:3, 3] = -grid[:3, 0], grid[:3, 3] + grid[:3, 0] * (SMALL.shape[0] - 1)
    shifted = grid.copy()
    shifted[0, 3] += 0.5
    stored = {"same": (data, grid), "identity": (data, np.eye(4)),
              "flipped": (np.ascontiguousarray(data[::-1]), flip),
              "shifted": (data, shifted), "other shape": (data[:, :2], grid),
              "identity, other shape": (data[:, :2], np.eye(4))}
    want = {"same": data, "identity": data, "flipped": data,
            "shifted": False, "other shape": True, "identity, other shape": True}
    ref = _save(tmp_path / "ref.nii.gz", data, grid)
    for what, (arr, aff) in stored.items():
        path = _save(tmp_path / f"{what.replace(' ', '_').replace(',', '')}.nii.gz", arr, aff)
        lv = io.Volume(path=path, data=arr, affine=aff, header=nib.Nifti1Header())
        if isinstance(want[what], np.ndarray):
            assert np.array_equal(io.label_onto_grid(arr, aff, data.shape, grid), data), what
            assert np.array_equal(cases.label_on_grid(lv, data.shape, grid).data, data)
            assert np.array_equal(evaluate.on_reference_grid(arr, path, data.shape, ref), data)
            continue
        with pytest.raises(io.NotOnGrid) as exc:
            io.label_onto_grid(arr, aff, data.shape, grid)
        assert exc.value.shape_differs is want[what], what
        word = "shape" if want[what] else r"affine\) differs"
        with pytest.raises(InputError, match=f"label map.*{word}") as said:
            cases.label_on_grid(lv, data.shape, grid)
        assert not isinstance(said.value, evaluate.OffGrid)
        with pytest.raises(evaluate.OffGrid, match=f"prediction.s .*{word}"):
            evaluate.on_reference_grid(arr, path, data.shape, ref)
