"""DICOM studies on the command line: a folder of DICOM files converted with dcm2niix,
its series matched to the modalities, segmented, and nothing identifying kept."""

from __future__ import annotations

import csv
import gzip
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import dicom
from braintumor.cli import main
from braintumor.errors import InputError
from test_web_support import cut_short, restamp_series, small_case, write_dicom_zip


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
        "3": "t1", "4": "t1ce", "5": "t2", "7": "flair"}
    # a volume sharing its number, one without a number, a description
    assert dicom.parse_series_choice("4b=t2,no-number-1=t1, AX  T2 FLAIR =flair") == {
        "4b": "t2", "no-number-1": "t1", "AX T2 FLAIR": "flair"}
    assert dicom.parse_series_choice(None) == {}
    for bad in ("x", "3=t3", "t1=3"):
        with pytest.raises(InputError, match="NUMBER=MODALITY"):
            dicom.parse_series_choice(bad)


def test_series_choice_takes_brats_2023_words_in_any_case() -> None:
    assert dicom.parse_series_choice("3=T1N,4=t1c,5=T2W,7=t2f") == {
        "3": "t1", "4": "t1ce", "5": "t2", "7": "flair"}
    assert dicom.parse_series_choice("3=T1,4=T1CE,5=T2,7=FLAIR") == {
        "3": "t1", "4": "t1ce", "5": "t2", "7": "flair"}
    with pytest.raises(InputError, match="the modality one of t1, t1n, t1ce, t1c, t2, t2w, "
                                         "flair, t2f"):
        dicom.parse_series_choice("3=t1gd")


@pytest.mark.parametrize("text,says", [
    ("10=t1,10=t1ce,5=t2,no-number-1=flair", "names series 10 twice"),
    ("4b=t1,4B=t1ce,5=t2,7=flair", "names series 4B twice"),
    ("2=t1,3=t1,4=t2,5=flair", "names two series as the T1"),
    ("2=t1ce,3=t1c,4=t2,5=flair", "names two series as the T1ce")])
def test_a_series_or_modality_named_twice_is_refused(text: str, says: str) -> None:
    """A dictionary would silently keep one of the two: refused in one sentence."""
    with pytest.raises(InputError, match=says) as err:
        dicom.parse_series_choice(text)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


def test_predict_a_dicom_study(study: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(study), "-o", str(out), "--method", "watershed",
                 "--report"]) == 0
    # which series became which modality: said, kept in the table and on the report page
    used = ("T1 = series 2 (AX T1 SE), T1ce = series 3 (AX T1 SE POST GAD), "
            "T2 = series 4 (AX T2 TSE), FLAIR = series 5 (AX T2 FLAIR)")
    assert f"exam: {used}" in capsys.readouterr().err
    assert used in (out / "exam_report.html").read_text()
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
    assert row["case"] == "exam" and float(row["WT_mL"]) > 0 and row["series"] == used
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
                                         ("2=t1,3=t1ce,4=t2,9=flair", "no series 9")])
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


def test_a_pre_contrast_t1_beside_an_unnamed_one_asks_for_series(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A T1 said to be without contrast and a T1 that names no contrast: neither is read
    as the T1ce, so the user is asked which is which rather than the two being guessed
    (and swapped, the outline losing its enhancing tumour)."""
    import shutil

    root = tmp_path / "swap"
    shutil.copytree(study, root)
    restamp_series(root / "study" / "t1", SeriesDescription="AX T1 SE W/O CONTRAST")
    restamp_series(root / "study" / "t1ce", SeriesDescription="AX T1 MPRAGE")
    rc = main(["predict", str(root), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "no series that reads as T1ce" in err and "--series" in err
    assert "2: AX T1 SE W/O CONTRAST (reads as T1)" in err and "Traceback" not in err


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
    with (out / "volumes.csv").open(newline="") as fh:
        assert next(csv.DictReader(fh))["dicom_seg"] == "written"  # --skip-existing reads it
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
    # an enhanced multi-frame file (positions per frame): refused for what it is, not for
    # lacking ImagePositionPatient
    import pydicom

    ds = pydicom.dcmread(files[0])
    ds.NumberOfFrames = 28
    del ds.ImagePositionPatient
    multi = tmp_path / "multi" / "enhanced.dcm"
    multi.parent.mkdir()
    ds.save_as(multi)
    with pytest.raises(InputError, match="enhanced multi-frame DICOM file"):
        write_seg(np.ones((40, 44, 28), np.uint8), np.eye(4), [multi], tmp_path / "y.dcm")


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
    # the command line takes folders, not zips: it offers no zip
    assert "give each study's files in a folder of its own." in " ".join(err.split())
    assert "zip" not in err
    assert not list((tmp_path / "out").glob("*.dcm"))


def test_a_prior_exams_series_among_series_folders_is_one_refusal(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study exported one folder per series, with a series of an earlier examination
    among them: not five cases of one series each (five errors that say nothing of the
    mix), but one study refused as a mix of studies."""
    import shutil

    root = tmp_path / "export"
    shutil.copytree(study / "study", root)
    z = write_dicom_zip(small_case(shape=(40, 44, 28), seed=5), tmp_path / "prior.zip")
    zipfile.ZipFile(z).extractall(tmp_path / "prior")
    shutil.move(str(tmp_path / "prior" / "study" / "t2"), str(root / "t2_prior"))
    assert dicom.find_studies(root) == [(root, "export")]
    rc = main(["predict", str(root), "-o", str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "holds DICOM files of 2 studies" in err


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


#: series descriptions as scanners write them, and the modality each is
DESCRIPTIONS = [
    ("t2_tirm_tra_dark-fluid", "flair"), ("t2_tirm_dark-fluid_fs", "flair"),
    ("t2_tirm_cor_dark-fluid_3mm", "flair"), ("t2_spc_da-fl_sag_p2_iso", "flair"),
    ("DARKFLUID", "flair"), ("dark fluid tra", "flair"), ("T2 FLAIR", "flair"),
    ("FLAIR", "flair"), ("T2W_FLAIR", "flair"), ("3D_Brain_VIEW_FLAIR", "flair"),
    ("Ax T2 FLAIR PROPELLER", "flair"), ("SAG CUBE FLAIR", "flair"), ("AX T2 FLAIR", "flair"),
    ("t2_tirm_tra", None), ("t2_stir_cor", None), ("AX STIR", None),  # STIR: fat nulled
    ("AX T1 FLAIR", "t1"), ("Sag T1 FLAIR +C", "t1ce"), ("T1FLAIR", "t1"),  # GE's T1 FLAIR
    ("t1_tirm_tra", "t1"), ("t2_tse_tra", "t2"), ("T2W_TSE", "t2"), ("Ax T2 FRFSE", "t2"),
    ("t1_mprage_sag_p2_iso", "t1"), ("3D T1 BRAVO +C", "t1ce"), ("AX T1 SE POST GAD", "t1ce"),
    ("ep2d_diff_3scan", None), ("Ax 3D BRAVO +C", "t1ce"), ("Sag 3D BRAVO", "t1"),
    ("3D TFE GADO", "t1ce"), ("sag_mp2rage_iso", "t1"), ("Ax T2 TFE", "t2"),
    ("T1_KM_nativ", "t1"), ("t1_tse_tra_prae_KM", "t1"),
    # German: KM (Kontrastmittel) is post-contrast, "ohne KM" and "nativ" are not
    ("t1_se_tra_KM", "t1ce"), ("t1_mprage_sag_p2_iso_KM", "t1ce"), ("T1 SE tra nach KM", "t1ce"),
    ("t1_vibe_fs_tra_KM", "t1ce"), ("T1+KM", "t1ce"), ("T1 tra mit KM", "t1ce"),
    ("t1_se_tra post KM", "t1ce"), ("T1 SE +KM", "t1ce"), ("T1 SE tra ohne KM", "t1"),
    ("t1_se_tra_nativ", "t1"), ("t1_se_tra", "t1"),
    # said without contrast: the pre-contrast T1, whatever contrast word follows
    ("AX T1 PRE GAD", "t1"), ("T1 pre contrast", "t1"), ("T1 precontrast", "t1"),
    ("T1 W/O CONTRAST", "t1"), ("AX T1 WO GAD", "t1"), ("T1 non-contrast", "t1"),
    ("T1 without contrast", "t1"), ("T1 before gad", "t1"), ("T1_SE_TRA_PRE_KM", "t1"),
    ("AX T1 SE W/O CONTRAST", "t1"), ("T1 noncontrast", "t1"), ("T1 vor KM", "t1"),
    ("t1_pre", "t1"),
    # said with contrast
    ("AX T1 SE + C", "t1ce"), ("AX T1 SE +C", "t1ce"), ("T1 C+", "t1ce"), ("T1 post", "t1ce"),
    ("AX T1 W/ CONTRAST", "t1ce"), ("T1 with contrast", "t1ce"), ("T1 mit KM", "t1ce"),
    ("T1W_SE +C", "t1ce"), ("sT1W_3D_TFE_Gd", "t1ce"),
]


@pytest.mark.parametrize("description,modality", DESCRIPTIONS)
def test_series_descriptions_of_real_scanners(description: str, modality: str | None) -> None:
    assert dicom.detect_modality(description) == modality
    assert dicom.classify_series(description, dicom.Acquisition()) == modality


#: T2-weighted, but not BraTS' T2 (a spin-echo or turbo spin-echo T2): T2* gradient
#: echoes, susceptibility-weighted images (and their magnitude and phase), proton density
#: and the dual echo that holds a PD and a T2; read as none of the four
NOT_BRATS_T2 = [
    "T2* GRE", "AX T2* GRE", "t2_fl2d_tra_hemo", "AX T2 GRE", "T2*", "T2 star", "t2star",
    "Ax T2 MPGR", "t2_fl3d_tra", "T2 FIESTA", "SWI", "t2_swi_tra_p2", "SWI_Images",
    "Mag_Images", "Pha_Images", "Ax SWAN", "SWIp", "PD", "AX PD FSE", "PDW_TSE",
    "PD_T2 (dual echo) echo 1", "t2_de_tra", "PD+T2", "PD/T2 FSE",
]


@pytest.mark.parametrize("description", NOT_BRATS_T2)
def test_t2_star_swi_and_pd_are_not_read_as_t2(description: str) -> None:
    assert dicom.detect_modality(description) is None
    assert dicom.classify_series(description, dicom.Acquisition()) is None
    assert dicom.classify_series(description, None) is None


#: (description, TI ms, TR ms, TE ms, ScanningSequence, SequenceName) -> modality
ACQUISITIONS = [
    # Siemens 2D FLAIR named without "dark-fluid", and its STIR, told apart by TI
    (("t2_tirm_tra", 2500, 9000, 81, "SE\\IR", "*tir2d1_15"), "flair"),
    (("t2_tirm_tra", 150, 5000, 50, "SE\\IR", "*tir2d1_13"), None),
    (("t2_tirm_tra_dark-fluid", 150, 5000, 50, "SE\\IR", "*tir2d1_13"), None),
    (("t2_spc_da-fl_sag_p2_iso", 1800, 5000, 387, "SE\\IR", "*spcir_282ns"), "flair"),
    (("AX T2", 2200, 9000, 120, "SE\\IR", ""), "flair"),  # a FLAIR named as a T2
    (("3D_Brain_VIEW_FLAIR", 1650, 4800, 340, "IR\\SE", ""), "flair"),
    (("series 7", None, 9000, 90, "SE\\IR", "*tir2d1_15"), "flair"),  # no TI: IR, long TE
    (("series 7", None, 5000, 50, "SE\\IR", "*tir2d1_13"), None),  # ... STIR's TE is short
    (("AX T1 FLAIR", 860, 2200, 9, "SE\\IR", ""), "t1"),
    (("FLAIR", 860, 2200, 9, "SE\\IR", ""), "t1"),  # T1-weighted IR named FLAIR alone
    (("Ax T1 FLAIR +C", 860, 2200, 9, "SE\\IR", ""), "t1ce"),
    (("t1_mprage_sag", 900, 2300, 2.3, "GR\\IR", "*tfl3d1_16ns"), "t1"),
    (("t1_mp2rage_sag_INV2", 2500, 5000, 2.9, "GR\\IR", "*tfl3d1_16"), "t1"),
    (("t2_tse_tra", None, 5000, 100, "SE", "*tse2d1_15"), "t2"),
    (("AX T2 FSE", 150, 4000, 100, "SE", ""), "t2"),  # a TI on a sequence that is not IR
    (("MR brain", 2400, 10000, 140, "", ""), "flair"),  # times alone
    # a gradient echo with a short TR is T2* (or T1) weighted, never BraTS' T2
    (("AX T2", None, 650, 20, "GR", "*fl2d1"), None),
    (("t2_me2d_tra", None, 600, 20, "GR", "*me2d1r3"), None),  # Siemens' MEDIC
    (("t2_me2d_tra", None, 600, 20, "", "*me2d1r3"), None),  # by its sequence name
    (("t2_swi_tra_p2", None, 28, 20, "GR", "*swi3d1r"), None),
    (("series 9", None, 700, 15, "GR", ""), None),
    (("AX T2 FSE", None, 4000, 100, "SE", ""), "t2"),
    (("T2W_TSE", None, 3000, 80, "SE", ""), "t2"),
    # a dual echo (PD and T2): the long echo is the T2, the short one (PD) none
    (("t2_de_tra", None, 3000, 12, "SE", "*tse2d2_5"), None),
    (("t2_de_tra", None, 3000, 96, "SE", "*tse2d2_5"), "t2"),
    (("PD_T2 (dual echo) echo 1", None, 2500, 15, "SE", ""), None),
    (("PD_T2 (dual echo) echo 1", None, 2500, 90, "SE", ""), "t2"),
    (("PD", None, 2500, 90, "SE", ""), None),  # named PD alone: not a dual echo
]


@pytest.mark.parametrize("row,modality", ACQUISITIONS)
def test_series_acquisitions_tell_flair_from_t2_and_stir(row: tuple, modality: str | None
                                                          ) -> None:
    desc, ti, tr, te, seq, name = row
    acq = dicom.Acquisition(ti, tr, te, seq, name)
    assert dicom.classify_series(desc, acq) == modality
    # dcm2niix's sidecar gives the times in seconds, a header in ms: both read alike
    meta = {"InversionTime": ti / 1000 if ti else None, "RepetitionTime": tr / 1000,
            "EchoTime": te / 1000, "ScanningSequence": seq, "SequenceName": name}
    assert dicom.Acquisition.from_sidecar(meta) == acq


def test_acquisition_from_a_dicom_header() -> None:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.Dataset()
    ds.InversionTime, ds.RepetitionTime, ds.EchoTime = 2500, 9000, 81
    ds.ScanningSequence = ["SE", "IR"]
    ds.SequenceName = "*tir2d1_15"
    assert dicom.Acquisition.from_header(ds) == dicom.Acquisition(
        2500.0, 9000.0, 81.0, "SE\\IR", "*tir2d1_15")
    ds.InversionTime = 0  # GE writes 0 for a sequence without inversion
    assert dicom.Acquisition.from_header(ds).inversion_ms is None


def test_siemens_dark_fluid_study_is_matched(study: Path, tmp_path: Path) -> None:
    """A Siemens study: FLAIR named dark fluid, a STIR beside the T2 (same tirm
    sequence, short TI): the FLAIR is found by name and times, the STIR taken for neither."""
    import shutil

    import nibabel as nib

    root = tmp_path / "siemens"
    shutil.copytree(study, root)
    s = root / "study"
    restamp_series(s / "flair", SeriesDescription="t2_tirm_tra_dark-fluid", ProtocolName=None,
             Manufacturer="SIEMENS", InversionTime=2500, RepetitionTime=9000, EchoTime=81,
             ScanningSequence=["SE", "IR"], SequenceName="*tir2d1_15")
    restamp_series(s / "t2", SeriesDescription="t2_tse_tra", ProtocolName=None, EchoTime=100,
             RepetitionTime=5000, ScanningSequence=["SE"], SequenceName="*tse2d1_15")
    shutil.copytree(s / "t2", s / "stir")
    restamp_series(s / "stir", new_uid=True, SeriesNumber=6, SeriesDescription="t2_tirm_tra",
             InversionTime=150, EchoTime=50, ScanningSequence=["SE", "IR"],
             SequenceName="*tir2d1_13")
    src = dicom.study_source(root, tmp_path / "out")
    flair = np.asarray(nib.load(str(src.modality_paths["flair"])).dataobj)
    t2 = np.asarray(nib.load(str(src.modality_paths["t2"])).dataobj)
    assert not np.array_equal(flair, t2)
    expected = np.asarray(nib.load(str(study_source_of(study, tmp_path, "flair"))).dataobj)
    assert np.array_equal(flair, expected)


def test_a_dual_echo_gives_its_long_echo_as_the_t2(study: Path, tmp_path: Path) -> None:
    """A dual-echo series (Siemens' ``t2_de_tra``: a PD and a T2 in one series, one
    SeriesNumber): dcm2niix writes its echoes apart, listed as 4a and 4b; the long echo
    is the T2, the short one (PD) none of the four, by each volume's echo time."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    root = tmp_path / "de"
    shutil.copytree(study, root)
    t2 = root / "study" / "t2"
    for f in sorted(t2.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = ds.ProtocolName = "t2_de_tra"
        ds.RepetitionTime, ds.ScanningSequence, ds.SequenceName = 3000, ["SE"], "*tse2d2_5"
        ds.EchoTime, ds.EchoNumbers = 96, 2
        ds.save_as(f, enforce_file_format=True)
        pd = pydicom.dcmread(f)  # the first echo: brighter, flatter
        pd.EchoTime, pd.EchoNumbers = 12, 1
        pd.SOPInstanceUID = pd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        pixels = pd.pixel_array.astype(np.uint16)
        pd.PixelData = (pixels // 2 + 300).astype(np.uint16).tobytes()
        pd.save_as(f.with_name("PD" + f.name), enforce_file_format=True)
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "x", choice={"9": "t2"})
    assert "4a: t2_de_tra (one of 2 sharing series number 4)" in str(err.value)
    src = dicom.study_source(root, tmp_path / "out")
    got = np.asarray(nib.load(str(src.modality_paths["t2"])).dataobj)
    assert np.array_equal(got, np.asarray(nib.load(str(study_source_of(
        study, tmp_path, "t2"))).dataobj))  # the long echo, as the T2 TSE was


def study_source_of(study: Path, tmp_path: Path, modality: str) -> Path:
    """The file the untouched test study gives for ``modality``."""
    return dicom.study_source(study, tmp_path / "plain").modality_paths[modality]


def _series_error(root: Path, tmp_path: Path, choice: dict[str, str]) -> str:
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "out", choice=choice)
    return str(err.value).replace(str(root), "STUDY")


def test_series_sharing_a_number_are_shown_and_chosen_as_listed(
        study: Path, tmp_path: Path) -> None:
    """Two series numbered 4 (the FLAIR exported with its T2's number): the list shows
    4a and 4b, never a number the PACS does not show, and --series takes them."""
    import shutil

    root = tmp_path / "clash"
    shutil.copytree(study, root)
    restamp_series(root / "study" / "flair", SeriesNumber=4)
    msg = _series_error(root, tmp_path, {"9": "flair"})
    assert "no series 9" in msg and "2: AX T1 SE; 3: AX T1 SE POST GAD" in msg
    assert "4a: AX T2 FLAIR (one of 2 sharing series number 4)" in msg
    assert "4b: AX T2 TSE (one of 2 sharing series number 4)" in msg
    assert not re.search(r"\d{3,}", msg), msg  # no made-up number (1003 ...)
    msg = _series_error(root, tmp_path, {"2": "t1", "3": "t1ce", "4": "t2", "5": "flair"})
    assert "2 volumes have series number 4" in msg and "as 4a or 4b" in msg
    src = dicom.study_source(root, tmp_path / "a", choice={
        "2": "t1", "3": "t1ce", "4b": "t2", "4A": "flair"})
    auto = dicom.study_source(root, tmp_path / "b")  # the descriptions settle it alone
    plain = dicom.study_source(study, tmp_path / "c")
    for m in ("t1", "t1ce", "t2", "flair"):
        want = np.asarray(nib.load(str(plain.modality_paths[m])).dataobj)
        for got in (src, auto):
            assert np.array_equal(np.asarray(nib.load(str(got.modality_paths[m])).dataobj),
                                  want), m
    out = tmp_path / "cli"  # as typed on the command line
    assert main(["predict", str(root), "-o", str(out), "--method", "watershed",
                 "--series", "2=t1,3=t1ce,4b=t2,4a=flair"]) == 0


def test_series_without_a_number_are_shown_and_chosen_as_listed(
        study: Path, tmp_path: Path) -> None:
    """Series whose files carry no SeriesNumber: a labelled stand-in (``no-number-1``),
    not the checksum dcm2niix names the file by, and --series takes it or the
    description; a DICOM SEG still finds the series its grid came from."""
    import shutil

    from braintumor.dicom_seg import series_files

    root = tmp_path / "nonum"
    shutil.copytree(study, root)
    for m in ("t1", "t2", "flair"):
        restamp_series(root / "study" / m, SeriesNumber=None)
    msg = _series_error(root, tmp_path, {"9": "flair"})
    assert ("3: AX T1 SE POST GAD; no-number-1: AX T1 SE; no-number-2: AX T2 FLAIR; "
            "no-number-3: AX T2 TSE") in msg, msg
    assert not re.search(r"\d{3,}", msg), msg  # dcm2niix's checksum names are not shown
    src = dicom.study_source(root, tmp_path / "a", choice={
        "no-number-1": "t1", "3": "t1ce", "ax t2 tse": "t2", "NO-NUMBER-2": "flair"})
    plain = dicom.study_source(study, tmp_path / "c")
    for m in ("t1", "t1ce", "t2", "flair"):
        assert np.array_equal(np.asarray(nib.load(str(src.modality_paths[m])).dataobj),
                              np.asarray(nib.load(str(plain.modality_paths[m])).dataobj)), m
    assert src.dicom_reference is not None
    assert len(series_files(*src.dicom_reference)) == 28  # the T1, found by its UID
    msg = _series_error(root, tmp_path, {"AX T1 SE": "t1", "3": "t1ce", "AX T2": "t2",
                                         "no-number-2": "flair"})
    assert "no series AX T2" in msg


def _compress_unreadably(series_dir: Path) -> None:
    """A series whose pixels are in a transfer syntax dcm2niix cannot decode (MPEG-2)."""
    import pydicom
    from pydicom.encaps import encapsulate

    for f in sorted(series_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
        ds.save_as(f, enforce_file_format=True)


def _cut(series_dir: Path, *slices: int) -> None:
    """Cut short the files of these slices (by their number in the series, from 0)."""
    for k in slices:
        cut_short(series_dir / f"IM{k:04d}.dcm")


#: a T1 series' files cut short past what it may do without, and why it may not
_PAST_THE_RULE = [
    ((5, 12, 20), "at least 3 of its 28 files are cut short (their pixel data ends early), "
                  "too many to leave out (a series may lack one file in ten at most)"),
    ((13, 14), "at least 2 of its 28 files are cut short (their pixel data ends early), two "
               "of them neighbouring slices: too wide a gap to fill in")]


@pytest.mark.parametrize("slices,why", _PAST_THE_RULE)
def test_an_unreadable_t1_is_said_and_the_case_goes_on(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        slices: tuple[int, ...], why: str) -> None:
    """A T1 series with more files cut short than it may do without (one in ten, never
    two neighbouring slices) cannot be converted: the case goes on without a T1 (as a
    study without one does), and says which series it lost and why, on stderr and in the
    volumes table, naming no patient."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(study, root)
    _cut(root / "study" / "t1", *slices)
    out = tmp_path / "out"
    assert main(["predict", str(root), "-o", str(out), "--method", "watershed"]) == 0
    err = capsys.readouterr().err
    said = ("series 2 (AX T1 SE), the study's T1, could not be read, so the case goes without "
            f"it: {why}")
    assert said in " ".join(err.split()), err
    assert "Doe" not in err and "PID-778899" not in err and "IM00" not in err
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert row["warning"].startswith(said) and "no T1 image" in row["warning"]
    assert sorted(f.name for f in (out / "broken_series").iterdir()) == [
        "flair.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]


def test_an_unreadable_needed_or_chosen_series_is_refused_with_why(
        study: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(study, root)
    _compress_unreadably(root / "study" / "t1ce")
    why = "its pixels are compressed in a way (transfer syntax) dcm2niix cannot decode"
    msg = _series_error(root, tmp_path, {})
    assert f"series 3 (AX T1 SE POST GAD), the T1ce, could not be read: {why}" in msg
    # named with --series: refused, not replaced
    _cut(root / "study" / "t1", 5, 12, 20)
    msg = _series_error(root, tmp_path, {"2": "t1", "4": "t2", "5": "flair", "3": "t1ce"})
    assert ("series 2 (AX T1 SE), given as the T1, could not be read: at least 3 of its 28 "
            "files are cut short (their pixel data ends early), too many to leave out") in msg
    # a second T1 beside the unreadable one: the user chooses, told why the first is out
    shutil.rmtree(root / "study" / "t1ce")
    shutil.copytree(study / "study" / "t1ce", root / "study" / "t1ce")
    shutil.copytree(study / "study" / "t1", root / "study" / "mprage")
    restamp_series(root / "study" / "mprage", new_uid=True, SeriesNumber=6,
             SeriesDescription="t1_mprage_sag")
    msg = _series_error(root, tmp_path, {})
    assert "could not tell which series" in msg
    assert "2: AX T1 SE (could not be read: at least 3 of its 28 files are cut short" in msg
    src = dicom.study_source(root, tmp_path / "ok", choice={
        "6": "t1", "3": "t1ce", "4": "t2", "5": "flair"})
    assert src.notes == [] and set(src.modality_paths) == {"t1", "t1ce", "t2", "flair"}


def test_the_cut_short_rule() -> None:
    """Files cut short may be left out: at most one in ten, never two neighbouring slices
    inside the series; those at its ends only shorten it (-> why not, end slices, slices
    inside)."""
    files = [Path(f"f{i}") for i in range(28)]
    levels = list(range(28))
    rule = dicom.cut_short_refusal
    assert rule([files[5]], files, levels) == (None, 0, 1)
    assert rule([files[0], files[27]], files, levels) == (None, 2, 0)
    assert rule([files[1], files[0]], files, levels) == (None, 2, 0)  # shorter, not a gap
    assert rule([files[0], files[5]], files, levels) == (None, 1, 1)
    assert rule([files[5], files[7]], files, levels) == (None, 0, 2)
    assert "neighbouring" in str(rule([files[6], files[5]], files, levels)[0])
    assert "too many" in str(rule([files[3], files[10], files[20]], files, levels)[0])
    assert "too many" in str(rule(files[:1], files[:9], levels[:9])[0])  # under ten files
    assert "do not say where" in str(rule([files[5]], files, None)[0])
    # two echoes of each slice: a file of either leaves its slice's position empty
    echoes = [Path(f"e{i}") for i in range(56)]
    assert rule([echoes[11]], echoes, [i // 2 for i in range(56)]) == (None, 0, 1)
    assert rule([echoes[10], echoes[13]], echoes, [i // 2 for i in range(56)])[0]


def test_a_t1_with_a_file_cut_short_is_kept_from_its_intact_files(
        study: Path, tmp_path: Path) -> None:
    """One file cut short in the middle of the T1: the series is converted from its other
    files, the slice there filled in by interpolation (dcm2niix's evenly spaced copy), so
    the volume keeps all its slices; the series list and the warning say so, naming no
    file."""
    import shutil

    root = tmp_path / "cut"
    shutil.copytree(study, root)
    _cut(root / "study" / "t1", 14)
    src = dicom.study_source(root, tmp_path / "out")
    if "t1" not in src.modality_paths:  # a dcm2niix that makes no evenly spaced copy
        assert src.notes == ["series 2 (AX T1 SE), the study's T1, could not be read, so the "
                             "case goes without it: 1 of its 28 files is cut short (their "
                             "pixel data ends early), and without it its slices are not "
                             "evenly spaced (a gap dcm2niix could not fill in)"]
        pytest.skip("this dcm2niix makes no evenly spaced copy of the series")
    assert src.notes == ["series 2 (AX T1 SE), the T1: 1 of its 28 files is cut short and was "
                         "left out, so the series has a slice missing, filled in by "
                         "interpolation; the outline there is less sure"]
    t1 = nib.load(str(src.modality_paths["t1"]))
    assert t1.shape == (40, 44, 28)
    z = np.array([(t1.affine @ [0, 0, k, 1])[2] for k in range(28)])
    assert np.allclose(np.diff(z), np.diff(z)[0]) and abs(z.max() - z.min()) == \
        pytest.approx(27.0, abs=0.01)
    vol = np.asarray(t1.dataobj, dtype=np.float64)
    k = int(np.argmin(np.abs(z - 14.0)))  # the slice left out, between its neighbours
    assert np.abs(vol[..., k] - (vol[..., k - 1] + vol[..., k + 1]) / 2).max() <= 0.5
    entries = dicom.convert_study(root, tmp_path / "raw", "cut").entries
    assert entries[0].remarks() == ["1 of its 28 files cut short and left out: a slice "
                                    "missing, filled in by interpolation"]
    assert "2: AX T1 SE (1 of its 28 files cut short and left out" in dicom.listing(entries)
    again = dicom.StudySeries.from_dict(entries[0].as_dict(tmp_path), tmp_path)
    assert again.cut_said(sentence=True) == entries[0].cut_said(sentence=True)


def test_cut_short_end_files_shorten_the_series_and_a_t1ce_is_kept(
        study: Path, tmp_path: Path) -> None:
    """The T1's first file and the T1ce's last cut short: no slice is made up, each
    series ends a slice short, and neither is lost (the T1ce no longer refused)."""
    import shutil

    root = tmp_path / "ends"
    shutil.copytree(study, root)
    _cut(root / "study" / "t1", 0)
    _cut(root / "study" / "t1ce", 27)
    src = dicom.study_source(root, tmp_path / "out")
    assert src.notes == [
        "series 2 (AX T1 SE), the T1: 1 of its 28 files is cut short and was left out, so the "
        "series ends a slice short",
        "series 3 (AX T1 SE POST GAD), the T1ce: 1 of its 28 files is cut short and was left "
        "out, so the series ends a slice short"]
    t1 = nib.load(str(src.modality_paths["t1"]))  # the case's grid: the T1's 27 slices
    assert t1.shape == (40, 44, 27)
    z = sorted((t1.affine @ [0, 0, k, 1])[2] for k in range(27))
    assert z[0] == pytest.approx(1.0, abs=0.01) and z[-1] == pytest.approx(27.0, abs=0.01)
    entries = dicom.convert_study(root, tmp_path / "raw", "ends").entries
    assert [e.remarks() for e in entries[:2]] == [
        ["1 of its 28 files cut short and left out: ends a slice short"]] * 2
    assert entries[1].shape == [40, 44, 27]


def test_a_gap_dcm2niix_cannot_fill_leaves_the_series_unreadable(
        study: Path, tmp_path: Path) -> None:
    """A T1 whose pixels go past what signed 16-bit numbers hold, a file in its middle
    cut short: where dcm2niix makes no evenly spaced copy of the series without it, the
    series stays unreadable, and the warning says why."""
    import shutil

    import pydicom

    root = tmp_path / "bright"
    shutil.copytree(study, root)
    for f in sorted((root / "study" / "t1").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.astype(np.uint16)
        px[0, 0] = 40000
        ds.PixelData = px.tobytes()
        ds.save_as(f, enforce_file_format=True)
    _cut(root / "study" / "t1", 14)
    src = dicom.study_source(root, tmp_path / "out")
    if "t1" in src.modality_paths:  # a dcm2niix that fills gaps in unsigned pixels too
        assert "the T1: 1 of its 28 files is cut short and was left out" in src.notes[0]
        assert nib.load(str(src.modality_paths["t1"])).shape == (40, 44, 28)
        return
    assert src.notes == ["series 2 (AX T1 SE), the study's T1, could not be read, so the case "
                         "goes without it: 1 of its 28 files is cut short (their pixel data "
                         "ends early), and without it its slices are not evenly spaced (a gap "
                         "dcm2niix could not fill in)"]


def _nifti_case(study: Path, where: Path, name: str) -> Path:
    """The test study as a BraTS-named NIfTI case folder ``where/name``."""
    import shutil

    src = dicom.study_source(study, where / "conv")
    case = where / name
    case.mkdir(parents=True)
    for m, f in src.modality_paths.items():
        shutil.copyfile(f, case / f"{name}_{m}.nii.gz")
    return case


def test_series_with_no_dicom_input_is_refused(study: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--series on NIfTI input would be ignored without a word: refused in one sentence."""
    case = _nifti_case(study, tmp_path, "nifti")
    out = tmp_path / "out"
    rc = main(["predict", str(case), "-o", str(out), "--method", "watershed",
               "--series", "flair=5"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "--series names the series of a DICOM study, and no input is one" in err
    assert not list(out.glob("*.nii.gz"))


def test_series_with_dicom_and_nifti_inputs_warns_once(study: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    case = _nifti_case(study, tmp_path, "nifti")
    out = tmp_path / "out"
    rc = main(["predict", str(study), str(case), "-o", str(out), "--method", "watershed",
               "--series", "2=t1,3=t1ce,4=t2,5=flair"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("--series applies to DICOM studies only") == 1
    assert f"it is not used for {case}." in " ".join(err.split())
    assert sorted(f.name for f in out.glob("*.nii.gz")) == ["exam.nii.gz", "nifti.nii.gz"]


def test_a_dicom_file_with_an_unreadable_header_is_said(
        study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    read = pydicom.dcmread
    broken = study / "study" / "t2" / "IM0000.dcm"

    def dcmread(path: object, *args: object, **kwargs: object) -> object:
        if Path(str(path)) == broken:
            raise pydicom.errors.InvalidDicomError("damaged")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    src = dicom.study_source(study, tmp_path)
    assert src.notes == ["1 DICOM file of the study could not be read (a damaged header) "
                         "and was left out"]


def test_a_folder_that_cannot_be_listed_is_not_taken_for_a_study(tmp_path, monkeypatch) -> None:
    """Looking for DICOM files in a folder that cannot be listed says "not a study" (the
    case reader then says why it cannot be read) instead of stopping the whole run."""
    from braintumor import dicom

    folder = tmp_path / "locked"
    folder.mkdir()

    def refuse(self, pattern):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(folder), "rglob", refuse)
    assert dicom.is_dicom_study(folder) is False


def test_a_series_stored_turned_on_the_t1_grid_is_turned_not_interpolated(
        tmp_path, monkeypatch) -> None:
    """dcm2niix stores a 3D acquisition with left and right the other way round from a 2D
    one on the same grid: such a series is put on the T1's grid voxel for voxel (values
    unchanged, no interpolation, which took seconds for a full-size series), while one on
    a shifted grid is still interpolated."""
    from braintumor import io

    interpolated = []
    real = io.resample_onto
    monkeypatch.setattr(io, "resample_onto",
                        lambda img, *a, **k: interpolated.append(img.data.shape) or
                        real(img, *a, **k))
    rng = np.random.default_rng(0)
    t1_aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    t1_aff[:3, 3] = [60.0, -70.0, -40.0]
    world = rng.normal(100, 20, (40, 48, 36)).astype(np.float32)
    paths = {m: tmp_path / f"{m}.nii.gz" for m in ("t1", "t1ce", "flair")}
    nib.save(nib.Nifti1Image(world, t1_aff), str(paths["t1"]))
    # the same voxels, stored with the first axis reversed, a third stored as X, Z, Y
    flip = t1_aff @ np.array([[-1, 0, 0, 39], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(world[::-1].copy(), flip), str(paths["t1ce"]))
    swap = t1_aff @ np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    shifted = swap.copy()
    shifted[:3, 3] += [0.3, 0.0, 0.0]  # a third of a voxel off: a grid of its own
    nib.save(nib.Nifti1Image(world.transpose(0, 2, 1).copy(), shifted), str(paths["flair"]))
    dicom.resample_onto_t1(paths)
    assert interpolated == [(40, 36, 48)]  # the FLAIR alone
    t1ce = nib.load(str(paths["t1ce"]))
    np.testing.assert_allclose(t1ce.affine, t1_aff, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(t1ce.dataobj, dtype=np.float32), world)
    flair = nib.load(str(paths["flair"]))
    assert flair.shape == world.shape
    values = np.asarray(flair.dataobj, dtype=np.float32)
    assert not np.array_equal(values, world)  # interpolated between voxels
    inner = (slice(2, -2),) * 3
    assert np.corrcoef(values[inner].ravel(), world[inner].ravel())[0, 1] > 0.4


def test_a_series_within_the_grid_tolerance_is_kept_voxel_for_voxel(tmp_path) -> None:
    """A series whose affine is 0.005 mm off the T1's (float rounding) lies on its grid,
    as :func:`braintumor.cases.load_case` and the label maps take it: kept as it is (it
    was interpolated at the 1e-3 mm the study's conversion used alone)."""
    from braintumor.io import GRID_TOLERANCE_MM

    t1_aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    t1_aff[:3, 3] = [60.0, -70.0, -40.0]
    world = np.random.default_rng(1).normal(100, 20, (20, 24, 18)).astype(np.float32)
    paths = {m: tmp_path / f"{m}.nii.gz" for m in ("t1", "t1ce")}
    nib.save(nib.Nifti1Image(world, t1_aff), str(paths["t1"]))
    near = t1_aff.copy()
    near[:3, 3] += 0.5 * GRID_TOLERANCE_MM
    nib.save(nib.Nifti1Image(world, near), str(paths["t1ce"]))
    before = paths["t1ce"].read_bytes()
    dicom.resample_onto_t1(paths)
    assert paths["t1ce"].read_bytes() == before


def test_two_studies_of_one_folder_name_are_not_mixed(
        study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two CDs' ``DICOM`` folders would both be case 'DICOM': the second conversion would
    overwrite the first's series, and patient B's images would end up under patient A's
    DICOM SEG. The clash is refused before anything is converted; a NIfTI case of that
    name is a clash too."""
    import shutil

    shutil.copytree(study, tmp_path / "cdA" / "DICOM")
    z = write_dicom_zip(small_case(shape=(40, 44, 28), seed=5), tmp_path / "b.zip",
                        patient="Roe^Richard")
    zipfile.ZipFile(z).extractall(tmp_path / "cdB" / "DICOM")
    nifti = _nifti_case(study, tmp_path / "nii", "dicom")
    converted: list[Path] = []
    real = dicom.study_source

    def study_source(folder: Path, *args: object, **kwargs: object) -> object:
        converted.append(Path(folder))
        return real(folder, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dicom, "study_source", study_source)
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "cdA" / "DICOM"), str(tmp_path / "cdB" / "DICOM"),
               str(nifti), "-o", str(out), "--method", "watershed"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1
    assert converted == [tmp_path / "cdA" / "DICOM"]  # B never converted
    assert (f"{tmp_path / 'cdB' / 'DICOM'}: another input of this run is also case 'DICOM' "
            f"({tmp_path / 'cdA' / 'DICOM'}); give the studies folders of different names"
            in err)
    assert "another input of this run is also case 'dicom'" in err
    assert sorted(f.name for f in out.glob("*.nii.gz")) == ["DICOM.nii.gz"]
    assert "Roe" not in err


def test_a_localizer_is_listed_with_why_and_refused_as_a_modality(
        study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3-slice localizer (or a series covering under 80 mm) is no brain volume: named
    in --series it is refused, else listed with why and left out of the match."""
    import shutil

    root = tmp_path / "scout"
    shutil.copytree(study, root)
    (root / "study" / "scout").mkdir()
    for z in (10, 11, 12):
        shutil.copy(root / "study" / "t1" / f"IM{z:04d}.dcm", root / "study" / "scout")
    restamp_series(root / "study" / "scout", new_uid=True, SeriesNumber=9,
                   SeriesDescription="t1_localizer")
    with pytest.raises(InputError, match=r"series 9 \(t1_localizer\) covers too little to be "
                       r"a brain volume \(3 slices: a localizer\?\), so it cannot be the T1"):
        dicom.study_source(root, tmp_path / "a", choice={"9": "t1", "3": "t1ce", "4": "t2",
                                                         "5": "flair"})
    src = dicom.study_source(root, tmp_path / "b")  # the real T1 is matched, not the scout
    assert src.modality_paths["t1"].exists() and nib.load(
        str(src.modality_paths["t1"])).shape == (40, 44, 28)
    entries = dicom.convert_study(root, tmp_path / "c", "scout").entries
    scout = next(e for e in entries if e.label == "9")
    assert not scout.usable and "9: t1_localizer (3 slices: a localizer?)" in dicom.listing(
        entries)
    assert dicom.StudySeries.from_dict(scout.as_dict(tmp_path / "c"), tmp_path / "c").small
    # a thin slab: the synthetic heads are 28 mm thick, under the 80 mm a brain covers
    monkeypatch.setattr(dicom, "MIN_COVER_MM", 80.0)
    with pytest.raises(InputError, match="covers 28 mm along an axis: a localizer or a slab"):
        dicom.study_source(study, tmp_path / "d")


def test_an_unclear_match_says_what_each_series_reads_as(
        study: Path, tmp_path: Path) -> None:
    """Two series that both read as T1: the message says what each reads as, and its
    --series example is in this study's own labels."""
    import shutil

    root = tmp_path / "two_t1"
    shutil.copytree(study, root)
    restamp_series(root / "study" / "t1ce", SeriesDescription="t1_se_tra_nativ")
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "out")
    said = " ".join(str(err.value).split())
    assert "holds no series that reads as T1ce" in said
    assert ("2: AX T1 SE (reads as T1); 3: t1_se_tra_nativ (reads as T1); 4: AX T2 TSE "
            "(reads as T2); 5: AX T2 FLAIR (reads as FLAIR)") in said
    assert said.endswith("e.g. --series 2=t1,3=t1ce,4=t2,5=flair.")
    restamp_series(root / "study" / "t2", SeriesDescription="ep2d_diff")  # a DWI's name
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "out")
    said = " ".join(str(err.value).split())
    assert "could not tell which series is T1, T1ce, T2 and FLAIR" in said
    assert "4: ep2d_diff (reads as none of the four)" in said
    assert said.endswith("e.g. --series 2=t1,3=t1ce,4=t2,5=flair.")
    entries = dicom.convert_study(root, tmp_path / "c", "x").entries
    for e in entries:
        e.guess = None  # nothing read: the example still names this study's series
    assert dicom.series_example(entries) == "2=t1,3=t1ce,4=t2,5=flair"
    assert dicom.series_example(entries[:1]) == "2=t1,N=t1ce,N=flair"


def test_a_utf8_description_is_read_as_the_header_says(study: Path, tmp_path: Path) -> None:
    """dcm2niix's sidecar writes a UTF-8 (ISO_IR 192) description encoded twice
    ('Ãberblick'); the header's, decoded by pydicom, is the one shown."""
    import shutil

    root = tmp_path / "utf8"
    shutil.copytree(study, root)
    restamp_series(root / "study" / "t1", SpecificCharacterSet="ISO_IR 192",
                   SeriesDescription="Überblick T1 SE")
    entries = dicom.convert_study(root, tmp_path / "w", "utf8").entries
    assert [e.description for e in entries][0] == "Überblick T1 SE"
    assert entries[0].guess == "t1"


def test_a_cd_whose_viewer_sorts_first_is_a_study(study: Path, tmp_path: Path) -> None:
    """A CD: AUTORUN.INF, a CDViewer/ folder (sorting before the images) and a DICOMDIR at
    its root. The DICOMDIR marks a study; without it, the DICOM folder is probed before
    the viewer's files."""
    import shutil

    cd = tmp_path / "cd"
    (cd / "CDViewer").mkdir(parents=True)
    for i in range(40):
        (cd / "CDViewer" / f"part{i:02d}.bin").write_bytes(b"\0" * 200)
        (cd / "CDViewer" / f"lib{i:02d}.dll").write_bytes(b"MZ" * 100)
    (cd / "AUTORUN.INF").write_text("[autorun]\nopen=CDViewer\\viewer.exe\n")
    shutil.copytree(study / "study", cd / "DICOM")
    for f in (cd / "DICOM").rglob("*.dcm"):
        f.rename(f.with_suffix(""))  # a CD's names: no extension
    assert dicom.is_dicom_study(cd)  # the DICOM folder probed before the viewer's files
    (cd / "DicomDir").write_bytes(b"\0" * 132)
    shutil.rmtree(cd / "DICOM")
    shutil.copytree(study / "study", cd / "zz" / "a" / "b" / "c")
    assert dicom.is_dicom_study(cd)  # found by its DICOMDIR, however deep the images lie
    assert [c for _, c in dicom.find_studies(cd)] == ["cd"]
    (cd / "DicomDir").unlink()
    assert not dicom.is_dicom_study(cd)  # 40 files probed, none DICOM: not read through


def test_swapped_series_are_kept_with_a_warning(study: Path, tmp_path: Path) -> None:
    """--series 6=t2,5=flair where 6 is a FLAIR by its inversion time, or a T1 given as
    the T1ce: the user's choice stands, and the case's warning says what each reads as."""
    import shutil

    root = tmp_path / "swap"
    shutil.copytree(study, root)
    restamp_series(root / "study" / "t2", SeriesDescription="AX T2 TSE", InversionTime=2500,
                   RepetitionTime=9000, EchoTime=90, ScanningSequence="SE\\IR")
    src = dicom.study_source(root, tmp_path / "a", choice=dicom.parse_series_choice(
        "3=t1,2=t1ce,5=t2,4=flair"))
    assert src.notes == [
        "series 3 (AX T1 SE POST GAD) was given as the T1 but reads as T1ce",
        # series 2 given as the T1ce is not doubted: many post-contrast T1 series are
        # named without a contrast word
        "series 5 (AX T2 FLAIR) was given as the T2 but reads as FLAIR"]  # 4: a FLAIR by TI
    out = tmp_path / "out"
    assert main(["predict", str(study), "-o", str(out), "--method", "watershed",
                 "--series", "2=t1,3=t1ce,5=t2,4=flair"]) == 0
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert "series 4 (AX T2 TSE) was given as the FLAIR but reads as T2" in row["warning"]
    assert "series 5 (AX T2 FLAIR) was given as the T2 but reads as FLAIR" in row["warning"]


def test_a_missing_slice_filled_by_interpolation_is_said(study: Path, tmp_path: Path) -> None:
    """dcm2niix's evenly spaced copy of a series lacking a slice stands in for it: the
    case goes on, and its warning says which series lacked how many slices."""
    import shutil

    root = tmp_path / "gap"
    shutil.copytree(study, root)
    (root / "study" / "t1" / "IM0014.dcm").unlink()
    # unsigned pixels, as most scanners store them: converted as signed ones (lossless),
    # since this dcm2niix makes its evenly spaced copy of those only
    try:
        src = dicom.study_source(root, tmp_path / "out")
    except InputError as exc:  # a dcm2niix that makes no evenly spaced copy: refused
        assert "not evenly spaced" in str(exc)
        pytest.skip("this dcm2niix makes no evenly spaced copy of the series")
    assert nib.load(str(src.modality_paths["t1"])).shape == (40, 44, 28)
    assert ("series 2 (AX T1 SE), the T1, had a slice missing, filled in by interpolation"
            in src.notes[0])


def test_a_thick_slice_series_interpolated_onto_the_t1_grid_is_said(
        study: Path, tmp_path: Path) -> None:
    """A FLAIR of 2 mm slices beside a 1 mm T1 is interpolated onto the T1's grid: the
    case says so (its detail between slices is made up there); series on the T1's own
    grid are not mentioned."""
    import shutil

    root = tmp_path / "thick"
    shutil.copytree(study, root)
    flair = sorted((root / "study" / "flair").glob("*.dcm"))
    for f in flair[1::2]:  # every second slice gone: 2 mm apart
        f.unlink()
    restamp_series(root / "study" / "flair", SliceThickness=2.0)
    src = dicom.study_source(root, tmp_path / "out")
    said = [n for n in src.notes if "interpolated onto" in n]
    assert len(said) == 1 and "the FLAIR, has 2 mm voxels" in said[0], src.notes
    assert "the T1's 1 mm grid" in said[0]
    img = nib.load(str(src.modality_paths["flair"]))
    assert img.shape == nib.load(str(src.modality_paths["t1"])).shape


def test_grid_modality_keeps_the_t1_unless_its_slices_are_thick() -> None:
    """BraTS's grid is the T1's; a T1 of slices over 1.5 times a finer series' voxels
    gives way to that series (the first of T1ce, T2, FLAIR among equals)."""
    assert dicom.grid_modality({"t1": 1.0, "t1ce": 1.0, "t2": 1.0, "flair": 1.0}) == "t1"
    assert dicom.grid_modality({"t1": 1.4, "t1ce": 1.0, "t2": 3.0, "flair": 3.0}) == "t1"
    assert dicom.grid_modality({"t1": 5.0, "t1ce": 1.0, "t2": 5.0, "flair": 5.0}) == "t1ce"
    assert dicom.grid_modality({"t1": 5.0, "t1ce": 3.0, "t2": 1.0, "flair": 1.0}) == "t2"
    assert dicom.grid_modality({"t1ce": 5.0, "flair": 1.0}) == "flair"
    assert dicom.grid_modality({"t1ce": 1.0, "flair": 5.0}) == "t1ce"


def test_thick_t1_slices_put_the_case_on_the_finest_series_grid(
        study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A T1 of 2 mm slices beside 1 mm series: the case is put on the T1ce's grid, not
    the T1's (which would throw away the other series' detail between its slices), the
    warning says so, the label map lies on the T1ce series' grid and the DICOM SEG refers
    to the T1ce series."""
    pytest.importorskip("highdicom")
    import shutil

    import pydicom

    root = tmp_path / "thickt1"
    shutil.copytree(study, root)
    for f in sorted((root / "study" / "t1").glob("*.dcm"))[1::2]:
        f.unlink()
    restamp_series(root / "study" / "t1", SliceThickness=2.0)
    src = dicom.study_source(root, tmp_path / "src")
    assert src.notes[0].startswith(
        "the label map lies on the grid of series 3 (AX T1 SE POST GAD)"), src.notes
    assert "the T1, has 2 mm voxels and was interpolated onto the T1ce's 1 mm grid" in \
        " ".join(src.notes)
    t1ce = [pydicom.dcmread(f, stop_before_pixels=True)
            for f in sorted((root / "study" / "t1ce").glob("*.dcm"))]
    assert src.dicom_reference is not None and src.dicom_reference[1] == \
        t1ce[0].SeriesInstanceUID
    out = tmp_path / "out"
    assert main(["predict", str(root), "-o", str(out), "--method", "watershed",
                 "--dicom-seg"]) == 0
    assert "the label map lies on the grid of series 3" in capsys.readouterr().err
    lab = nib.load(str(out / "thickt1.nii.gz"))
    assert lab.shape == (40, 44, 28)  # the T1ce's 28 slices, not the T1's 14
    seg = pydicom.dcmread(out / "thickt1_seg.dcm", stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1ce[0].SeriesInstanceUID


def test_a_zipped_study_on_the_command_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``predict study.zip``: a zipped DICOM study (as a PACS exports it, and as the web
    page takes it) is a case named after the zip; the unpacked files are removed after
    the run. A damaged zip is one sentence while the other inputs are written."""
    z = write_dicom_zip(small_case(shape=(40, 44, 28)), tmp_path / "exam2024.zip")
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "out"
    rc = main(["predict", str(z), str(bad), "-o", str(out), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 1 and f"{bad}: is not a readable zip file." in err
    assert (out / "exam2024.nii.gz").exists()
    assert nib.load(str(out / "exam2024.nii.gz")).shape == (40, 44, 28)
    assert not [p for p in out.iterdir() if p.name.startswith(".unzipped")]


def _strip_preamble(f: Path, meta: bool = False) -> None:
    """Rewrite a DICOM file without the 128-byte preamble and ``DICM`` mark, as older
    scanners and PACS exports write them: a bare implicit VR data set, or (``meta``) its
    file meta elements first, explicit VR."""
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.dcmread(f)
    if meta:
        f.write_bytes(f.read_bytes()[128 + 4:])
        return
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    f.write_bytes(buf.getvalue())


def test_dicom_files_without_preamble_are_read(study: Path, tmp_path: Path) -> None:
    """Files without the preamble and ``DICM`` mark are DICOM files all the same: a study
    of them is converted, and one whose T1ce lacks it in a few files keeps those slices
    (not skipped and filled in by interpolation)."""
    import shutil

    bare = tmp_path / "bare" / "exam"
    shutil.copytree(study, bare)
    for i, f in enumerate(sorted(bare.rglob("*.dcm"))):
        _strip_preamble(f, meta=bool(i % 2))
        f.rename(f.with_suffix(""))  # as CDs name them: no extension
    first = next(bare.rglob("IM0000"))
    assert first.read_bytes()[128:132] != b"DICM" and dicom.is_dicom_file(first)
    assert dicom.is_dicom_study(bare) and dicom.find_studies(bare) == [(bare, "exam")]
    src = dicom.study_source(bare, tmp_path / "out1")
    assert src.series.startswith("T1 = series 2 (AX T1 SE), T1ce = series 3") and not src.notes

    part = tmp_path / "part"
    shutil.copytree(study, part)
    for z in range(10, 14):
        _strip_preamble(part / "study" / "t1ce" / f"IM{z:04d}.dcm")
    src = dicom.study_source(part, tmp_path / "out2")
    assert nib.load(str(src.modality_paths["t1ce"])).shape == (40, 44, 28) and not src.notes


def test_pictures_nifti_and_text_are_not_taken_for_dicom(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.jpg")
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    nib.save(img, tmp_path / "a.nii")
    nib.save(img, tmp_path / "a.nii.gz")
    nib.save(nib.Nifti2Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "b.nii")
    (tmp_path / "a.txt").write_text("Patient report\n" * 20)
    (tmp_path / "b.bin").write_bytes(bytes(range(256)))
    (tmp_path / "c.bin").write_bytes(b"\x08\x00\x05\x00" + b"\xff" * 200)  # odd length
    (tmp_path / "short").write_bytes(b"\x08\x00")
    for f in tmp_path.iterdir():
        assert not dicom.is_dicom_file(f), f.name
    assert not dicom.is_dicom_study(tmp_path)


def test_neighbouring_slices_absent_from_the_folder_are_refused(study: Path,
                                                                tmp_path: Path) -> None:
    """Two neighbouring slices missing from the folder make as wide a gap as two
    neighbouring files cut short: refused, not filled in by interpolation."""
    import shutil

    root = tmp_path / "gap"
    shutil.copytree(study, root)
    for z in (13, 14):
        (root / "study" / "t1ce" / f"IM{z:04d}.dcm").unlink()
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "out")
    said = str(err.value)
    assert "series 3 (AX T1 SE POST GAD), the T1ce, lacks 2 neighbouring slices" in said
    assert said.count(". ") == 0 and said.endswith(".")


def test_spacing_is_said_for_what_it_is(study: Path, tmp_path: Path) -> None:
    """A slice position given twice, or slices shifted off an even spacing, are said as
    such, not as slices missing."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    dup = tmp_path / "dup"
    shutil.copytree(study, dup)
    ds = pydicom.dcmread(dup / "study" / "t1" / "IM0010.dcm")
    ds.InstanceNumber = 999
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(dup / "study" / "t1" / "IM_dup.dcm", enforce_file_format=True)
    uneven = tmp_path / "uneven"
    shutil.copytree(study, uneven)
    for f in sorted((uneven / "study" / "t1").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        if ds.ImagePositionPatient[2] > 15:
            ds.ImagePositionPatient = [0.0, 0.0, float(ds.ImagePositionPatient[2]) + 0.5]
            ds.save_as(f, enforce_file_format=True)
    for root, said in ((dup, "had a duplicate slice position"),
                       (uneven, "had uneven slice spacing, put on an even grid")):
        try:
            src = dicom.study_source(root, tmp_path / f"out_{root.name}")
        except InputError as exc:  # a dcm2niix that makes no evenly spaced copy: refused
            assert "not evenly spaced" in str(exc)
            continue
        (note,) = src.notes
        assert note.startswith(f"series 2 (AX T1 SE), the T1, {said}"), note
        assert "missing" not in note


def test_slice_spacing_of_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / str(i) for i in range(6)]
    for where, expect in (([0, 1, 2, 3, 4, 5], (0, 0, 0, 0)),
                          ([0, 1, 2, 4, 5, 6], (1, 1, 0, 0)),
                          ([0, 1, 2, 5, 6, 7], (2, 2, 0, 0)),
                          ([0, 1, 2, 2, 3, 4], (0, 0, 1, 0)),
                          ([0, 1, 2, 3.5, 4.5, 5.5], (0, 0, 0, 1)),
                          ([0, 0, 1, 1, 2, 2], (0, 0, 0, 0))):  # two echoes a slice
        monkeypatch.setattr(dicom, "_slice_positions", lambda f, w=where: [float(z) for z in w])
        assert dicom.slice_spacing(files) == dicom.SliceSpacing(*expect), where


def test_derived_series_are_set_aside_for_the_acquired_one(study: Path, tmp_path: Path) -> None:
    """A subtraction and a reformat made from the T1ce read as T1ce too: the acquired
    T1ce is used, the derived ones are set aside (said), and no --series is asked for."""
    import shutil

    root = tmp_path / "mixed"
    shutil.copytree(study, root)
    for name, number, desc, kind in (
            ("sub", 11, "t1_se_tra_KM_SUB", ["DERIVED", "SECONDARY", "SUBTRACTION"]),
            ("mpr", 12, "T1 POST GAD MPR COR", ["DERIVED", "SECONDARY", "MPR"])):
        shutil.copytree(root / "study" / "t1ce", root / "study" / name)
        restamp_series(root / "study" / name, new_uid=True, SeriesNumber=number,
                       SeriesDescription=desc, ImageType=kind)
    restamp_series(root / "study" / "t1ce", ImageType=["ORIGINAL", "PRIMARY", "M"])
    src = dicom.study_source(root, tmp_path / "out")
    assert "T1ce = series 3 (AX T1 SE POST GAD)" in src.series
    assert src.notes == [
        "series 11 (t1_se_tra_KM_SUB) is derived (DERIVED\\SECONDARY\\SUBTRACTION) and was set "
        "aside for series 3 (AX T1 SE POST GAD), the acquired T1ce",
        "series 12 (T1 POST GAD MPR COR) is derived (DERIVED\\SECONDARY\\MPR) and was set "
        "aside for series 3 (AX T1 SE POST GAD), the acquired T1ce"]
    # named in --series, a derived series is used as given
    src = dicom.study_source(root, tmp_path / "out2", choice=dicom.parse_series_choice(
        "2=t1,11=t1ce,4=t2,5=flair"))
    assert "T1ce = series 11 (t1_se_tra_KM_SUB)" in src.series


def _deflate(series_dir: Path) -> None:
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    for f in sorted(series_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)


def test_a_deflated_series_is_inflated_for_dcm2niix(study: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Deflated Explicit VR Little Endian, which dcm2niix does not read, is inflated into
    the conversion's work folder: the series comes out as its plain copy does, and the
    user's files stay as they were. Where inflating fails, the fault names the syntax and
    how to convert the files."""
    import shutil

    from braintumor import io as bio

    root = tmp_path / "deflated"
    shutil.copytree(study, root)
    _deflate(root / "study" / "t1ce")
    before = {f: f.read_bytes() for f in (root / "study" / "t1ce").glob("*.dcm")}
    plain = dicom.study_source(study, tmp_path / "plain")
    src = dicom.study_source(root, tmp_path / "out")
    assert np.array_equal(np.asarray(nib.load(str(src.modality_paths["t1ce"])).dataobj),
                          np.asarray(nib.load(str(plain.modality_paths["t1ce"])).dataobj))
    assert all(f.read_bytes() == raw for f, raw in before.items()) and not src.notes

    monkeypatch.setattr(bio, "_inflate", lambda files, links: False)
    with pytest.raises(InputError) as err:
        dicom.study_source(root, tmp_path / "out2")
    said = str(err.value)
    assert "the T1ce, could not be read: its files are deflated (transfer syntax Deflated " \
        "Explicit VR Little Endian, 1.2.840.10008.1.2.1.99)" in said and "dcmconv +te" in said
