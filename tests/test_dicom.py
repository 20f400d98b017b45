"""DICOM studies on the command line: a folder of DICOM files converted with dcm2niix,
its series matched to the modalities, segmented, and nothing identifying kept."""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import dicom
from braintumor.cli import main
from braintumor.errors import InputError
from test_web_support import small_case, write_dicom_zip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pydicom")
    from braintumor.io import dcm2niix_executable

    if dcm2niix_executable() is None:
        pytest.skip("dcm2niix is not installed")
    root = tmp_path_factory.mktemp("dicom")
    z = write_dicom_zip(small_case(shape=(40, 44, 28)), root / "study.zip")
    zipfile.ZipFile(z).extractall(root / "exam")
    z.unlink()
    return root / "exam"


def test_detect_a_study_folder(study: Path, tmp_path: Path) -> None:
    assert dicom.is_dicom_study(study)
    assert not dicom.is_dicom_study(tmp_path)  # empty
    (tmp_path / "a_t1.nii.gz").write_bytes(b"")
    assert not dicom.is_dicom_study(tmp_path)  # NIfTI: a case folder, not a study
    assert dicom.is_dicom_file(next(study.rglob("*.dcm")))
    assert not dicom.is_dicom_file(tmp_path / "a_t1.nii.gz")


def test_series_choice_parsed() -> None:
    assert dicom.parse_series_choice("3=t1, 4=T1CE,5=t2,7=flair") == {
        3: "t1", 4: "t1ce", 5: "t2", 7: "flair"}
    assert dicom.parse_series_choice(None) == {}
    for bad in ("x", "3=t3", "t1=3"):
        with pytest.raises(InputError, match="NUMBER=MODALITY"):
            dicom.parse_series_choice(bad)


def test_predict_a_dicom_study(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(study), "-o", str(out), "--method", "watershed"]) == 0
    lab = nib.load(str(out / "exam.nii.gz"))
    t1 = nib.load(str(out / "exam_series" / "t1.nii.gz"))
    # the label map lies on the T1 series' grid, as dcm2niix converted it
    assert lab.shape == t1.shape and np.allclose(lab.affine, t1.affine)
    assert sorted(f.name for f in (out / "exam_series").iterdir()) == [
        "flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    # each modality is its own series (matched by description), not one copied four times
    vols = {m: np.asarray(nib.load(str(out / "exam_series" / f"{m}.nii.gz")).dataobj)
            for m in ("t1", "t1ce", "t2", "flair")}
    assert not np.allclose(vols["t1"], vols["t1ce"]) and not np.allclose(vols["t2"], vols["flair"])
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert row["case"] == "exam" and float(row["WT_mL"]) > 0
    # no patient identifier and no DICOM left in the output folder
    for f in out.rglob("*"):
        assert not f.name.startswith(".exam_dcm2niix")
        if f.is_file():
            raw = f.read_bytes()
            raw = gzip.decompress(raw) if f.suffix == ".gz" else raw
            assert b"Doe" not in raw and b"PID-778899" not in raw, f
    # the series named by number give the same case
    again = tmp_path / "again"
    assert main(["predict", str(study), "-o", str(again), "--method", "watershed",
                 "--series", "2=t1,3=t1ce,4=t2,5=flair"]) == 0
    assert np.array_equal(np.asarray(nib.load(str(again / "exam.nii.gz")).dataobj),
                          np.asarray(lab.dataobj))


@pytest.mark.parametrize("series,says", [("2=t1,3=t1ce", "one series for each"),
                                         ("2=t1,3=t1ce,4=t2,9=flair", "no series 9"),
                                         ("2=t1,3=t1,4=t2,5=flair", "one series for each")])
def test_a_bad_series_choice_is_one_sentence(study: Path, tmp_path: Path, series: str,
                                             says: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    rc = main(["predict", str(study), "-o", str(tmp_path), "--series", series])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert "2: AX T1 SE" in err  # the series found are listed
    assert not list(tmp_path.glob(".*dcm2niix"))


def test_unclear_descriptions_ask_for_series(study: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dicom, "detect_modality", lambda text: None)
    rc = main(["predict", str(study), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "could not tell which series" in err and "--series" in err


def test_a_study_of_too_few_series_says_so(study: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    part = tmp_path / "part"
    for m in ("t1", "flair"):
        shutil.copytree(study / "study" / m, part / m)
    rc = main(["predict", str(part), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "no series that reads as T1ce" in err and "needs T1ce and FLAIR" in err


def test_a_folder_of_studies_is_one_case_each(study: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Patients' studies side by side (told apart by StudyInstanceUID) are one case each;
    the series folders of a single study stay one case."""
    import shutil

    root = tmp_path / "patients"
    shutil.copytree(study, root / "P1")
    z = write_dicom_zip(small_case(shape=(40, 44, 28), seed=5), tmp_path / "p2.zip")
    zipfile.ZipFile(z).extractall(root / "P2")
    shutil.copytree(study / "study" / "t1", root / "P3" / "t1")  # an incomplete study
    assert dicom.find_studies(study) == [(study, "exam")]
    assert [c for _, c in dicom.find_studies(root)] == ["P1", "P2", "P3"]
    out = tmp_path / "out"
    rc = main(["predict", str(root), "-o", str(out), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 1 and "P3" in err and "needs T1ce and FLAIR" in err  # P3 fails, others written
    assert sorted(f.name for f in out.glob("*.nii.gz")) == ["P1.nii.gz", "P2.nii.gz"]


def test_dicom_seg_lies_on_the_t1_series_and_equals_the_label_map(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hd = pytest.importorskip("highdicom")
    import pydicom

    from braintumor import labels as L

    out = tmp_path / "out"
    assert main(["predict", str(study), "-o", str(out), "--method", "watershed",
                 "--dicom-seg"]) == 0
    seg = hd.seg.segread(str(out / "exam_seg.dcm"))
    assert seg.Modality == "SEG" and seg.PatientID == "PID-778899"  # attached to its study
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "necrotic / non-enhancing tumour core", "peritumoural edema", "enhancing tumour"]
    t1 = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((study / "study" / "t1")
                                                                       .glob("*.dcm"))]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1[0].SeriesInstanceUID
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in t1], combine_segments=True,
        skip_overlap_checks=True)  # (slice, row, column): segment numbers 1-3
    # the label map at each DICOM pixel's centre: the test study's pixel (row r, column c)
    # of slice z lies at LPS (c, r, z) mm
    lab = nib.load(str(out / "exam.nii.gz"))
    internal = L.to_internal(np.asarray(lab.dataobj), "brats2021")
    z, r, c = np.meshgrid(*[np.arange(n) for n in frames.shape], indexing="ij")
    ras = np.stack([-c, -r, z, np.ones_like(z)], -1).astype(float)
    vox = np.rint(ras @ np.linalg.inv(lab.affine).T)[..., :3].astype(int)
    expected = internal[vox[..., 0], vox[..., 1], vox[..., 2]]
    as_labels = np.array([0, L.NCR, L.ED, L.ET], np.uint8)[frames]
    assert expected.any() and np.array_equal(as_labels, expected)
    # NIfTI input: nothing to attach a SEG to, and the user is told
    capsys.readouterr()
    case = out / "exam_series"
    for m in ("t1", "t1ce", "t2", "flair"):
        (case / f"{m}.nii.gz").rename(case / f"exam_{m}.nii.gz")
    assert main(["predict", str(case), "-o", str(tmp_path / "nifti"), "--method",
                 "watershed", "--dicom-seg"]) == 0
    assert "no input is a DICOM study, so no DICOM SEG is written" in capsys.readouterr().err
    assert not list((tmp_path / "nifti").glob("*.dcm"))


def test_no_dicom_seg_without_a_tumour(study: Path, tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    from braintumor.dicom_seg import series_files, write_seg

    files = series_files(study, 2)
    assert len(files) == 28
    with pytest.raises(InputError, match="no tumour was outlined"):
        write_seg(np.zeros((40, 44, 28), np.uint8), np.eye(4), files, tmp_path / "x.dcm")
    assert series_files(study, 2, study_uid="1.2.3") == []


def test_two_studies_in_one_folder_are_refused(study: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two examinations' series mixed in one folder: series chosen by number or name
    could come from either (or from two patients), and a DICOM SEG would name the wrong
    study; refused in one sentence that names no patient."""
    import shutil

    root = tmp_path / "mixed"
    shutil.copytree(study, root)
    z = write_dicom_zip(small_case(shape=(40, 44, 28), seed=5), tmp_path / "other.zip",
                        patient="Roe^Richard")
    zipfile.ZipFile(z).extractall(tmp_path / "other")
    for m in ("t1", "t1ce", "t2", "flair"):
        shutil.move(str(tmp_path / "other" / "study" / m), str(root / "study" / f"{m}_b"))
    rc = main(["predict", str(root), "-o", str(tmp_path / "out"), "--method", "watershed",
               "--series", "2=t1,3=t1ce,4=t2,5=flair", "--dicom-seg"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds DICOM files of 2 studies" in err and "Roe" not in err
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_a_series_with_a_slice_missing_is_not_put_on_a_wrong_grid(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A T1 series lacking a slice in its middle: either refused, or put on an evenly
    spaced grid that still places every slice where the scanner says it was."""
    import shutil

    root = tmp_path / "gap"
    shutil.copytree(study, root)
    (root / "study" / "t1" / "IM0014.dcm").unlink()
    out = tmp_path / "out"
    rc = main(["predict", str(root), "-o", str(out), "--method", "watershed"])
    err = capsys.readouterr().err
    if rc != 0:
        assert "not evenly spaced" in err and "series 2" in err
        return
    t1 = nib.load(str(out / "gap_series" / "t1.nii.gz"))
    z = np.array([(t1.affine @ [0, 0, k, 1])[2] for k in range(t1.shape[2])])
    assert np.allclose(np.diff(z), np.diff(z)[0])  # even spacing
    assert abs(z.max() - z.min()) == pytest.approx(27.0, abs=0.01)  # spans slices 0 to 27


def test_preview_pictures_in_a_study_leave_it_a_study(study: Path, tmp_path: Path) -> None:
    """A PACS CD puts JPEG previews beside the DICOM files: the folder is still a study."""
    import shutil

    from PIL import Image

    root = tmp_path / "cd"
    shutil.copytree(study, root)
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(root / "study" / "t1" / "preview.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(root), "-o", str(out), "--method", "watershed"]) == 0
    assert (out / "cd.nii.gz").exists() and not list(out.rglob("*_mask.png"))
