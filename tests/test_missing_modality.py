"""Scans without their T1 or T2: loaded, segmented by the watershed tuned for that, said
so; without T1ce or FLAIR, refused in one sentence."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import dicom
from braintumor.cases import MODALITIES, load_case
from braintumor.cli import main
from braintumor.errors import InputError
from braintumor.metrics import dice
from braintumor.segment import segment
from braintumor.watershed import params_without, segment_watershed, without_modalities
from test_web_support import small_case, write_case_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_case_files(small_case(seed=3), tmp_path_factory.mktemp("full") / "C")


def _folder_without(files: dict[str, Path], dest: Path, drop: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True)
    for m, p in files.items():
        if m not in drop:
            shutil.copyfile(p, dest / p.name)
    return dest


@pytest.mark.parametrize("drop", [("t1",), ("t2",), ("t1", "t2")])
def test_a_case_loads_without_t1_or_t2(files: dict[str, Path], tmp_path: Path,
                                       drop: tuple[str, ...]) -> None:
    case = load_case(_folder_without(files, tmp_path / "C", drop))
    assert case.missing == drop
    stand_in = {"t1": "t1ce", "t2": "flair"}
    full = load_case(files["t1"].parent)
    for m in MODALITIES:  # a missing channel holds its stand-in's image, the others theirs
        src = stand_in[m] if m in drop else m
        assert np.array_equal(case.modality(m), full.modality(src))
    assert np.allclose(case.affine, full.affine) and case.label is not None


@pytest.mark.parametrize("drop,says", [(("t1ce",), "missing the T1ce modality"),
                                       (("flair", "t1"), "missing the T1, FLAIR modalities")])
def test_without_t1ce_or_flair_is_one_sentence(files: dict[str, Path], tmp_path: Path,
                                               drop: tuple[str, ...], says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder_without(files, tmp_path / "C", drop)
    with pytest.raises(InputError, match="T1ce and FLAIR are needed"):
        load_case(folder)
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.nii.gz"))


@pytest.mark.parametrize("drop", [("t1",), ("t2",), ("t1", "t2")])
def test_the_watershed_finds_the_tumour_without_t1_or_t2(files: dict[str, Path],
                                                         tmp_path: Path,
                                                         drop: tuple[str, ...]) -> None:
    case = load_case(_folder_without(files, tmp_path / "C", drop))
    res = segment(case, "watershed")
    assert res.info["method"] == "watershed" and res.info["missing"] == list(drop)
    assert f"no {' and '.join(m.upper() for m in drop)} image" in res.info["warning"]
    assert "needs all four" not in res.info["warning"]  # the watershed was asked for
    assert case.label is not None
    full = segment(load_case(files["t1"].parent), "watershed").labels
    for region in ((1, 2, 3), (1, 3), (3,)):  # as good as with all four, give or take
        truth = np.isin(case.label, region)
        got, ref = dice(np.isin(res.labels, region), truth), dice(np.isin(full, region), truth)
        assert got > ref - 0.1 and got > 0.4, (region, got, ref)
    assert dice(res.labels > 0, case.label > 0) > 0.8


def test_the_missing_channel_is_not_used(files: dict[str, Path], tmp_path: Path) -> None:
    """Whatever stands in for the T1, the outline is the same: its channel is ignored."""
    case = load_case(_folder_without(files, tmp_path / "C", ("t1",)))
    a = segment_watershed(case).labels
    noise = np.random.default_rng(0).normal(300, 80, case.shape).astype(np.float32)
    case.image[0] = np.where(case.image[0] != 0, noise, 0)  # the same brain
    assert np.array_equal(segment_watershed(case).labels, a)
    p = params_without(("t1",))
    assert p.w_t1 == 0 and p.et_k == 0 and without_modalities(p, ("t2",)).w_t2 == 0


def test_other_methods_hand_over_to_the_watershed(files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    case = load_case(_folder_without(files, tmp_path / "C", ("t2",)))
    ws = segment(case, "watershed")
    for method in ("cnn", "hybrid"):
        res = segment(case, method, fast=True, tta=True)
        assert res.info["method"] == "watershed"
        assert f"the {method} method needs all four modalities" in res.info["warning"]
        assert np.array_equal(res.labels, ws.labels)
        assert "uncertainty" not in res.info["warning"]
        # an uncertainty map asked of the CNN is said not to come, not dropped in silence
        unc = segment(case, method, fast=True, uncertainty=True)
        assert unc.uncertainty is None
        assert "so no uncertainty map is written" in unc.info["warning"]
    from braintumor.inference import segment_cnn
    from braintumor.watershed import segment_hybrid

    for fn in (segment_cnn, segment_hybrid):  # called directly, they refuse
        with pytest.raises(InputError, match="has no T2 image"):
            fn(case)


def test_predict_without_t1_writes_and_says_so(files: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder_without(files, tmp_path / "C", ("t1",))
    out = tmp_path / "out"
    rc = main(["predict", str(folder), "-o", str(out), "--method", "hybrid", "--report"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: Web003: the scan has no T1 image" in err
    lab = nib.load(str(out / "Web003.nii.gz"))
    ref = nib.load(str(files["t1ce"]))  # the geometry of the first modality there
    assert lab.shape == ref.shape and np.allclose(lab.affine, ref.affine)
    assert np.asarray(lab.dataobj).any()
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert row["method"] == "watershed" and "no T1 image" in row["warning"]
    page = (out / "Web003_report.html").read_text()
    assert "no T1 image" in page and "watershed" in page


def test_dicom_matching_allows_a_missing_t1_or_t2() -> None:
    full = {"1": "t1", "2": "t1ce", "3": "t2", "4": "flair"}
    assert dicom.complete_assignment(full) == full
    assert dicom.complete_assignment({"2": "t1ce", "4": "flair"}) == {"2": "t1ce", "4": "flair"}
    # an unrecognised series might be the missing T1: ask
    assert dicom.complete_assignment({"2": "t1ce", "4": "flair", "5": None}) is None
    assert dicom.complete_assignment({"1": "t1", "3": "t2", "4": "flair"}) is None  # no T1ce
    assert dicom.complete_assignment({"2": "t1ce", "3": "t1ce", "4": "flair"}) is None


def test_a_dicom_study_without_t1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pydicom")
    import zipfile

    from braintumor.io import dcm2niix_executable
    from test_web_support import write_dicom_zip

    if dcm2niix_executable() is None:
        pytest.skip("dcm2niix is not installed")
    z = write_dicom_zip(small_case(shape=(40, 44, 28)), tmp_path / "study.zip")
    zipfile.ZipFile(z).extractall(tmp_path / "exam")
    study = tmp_path / "exam"
    shutil.rmtree(study / "study" / "t1")
    out = tmp_path / "out"
    rc = main(["predict", str(study), "-o", str(out), "--method", "cnn"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "no T1 image" in err
    assert sorted(p.name for p in (out / "exam_series").iterdir()) == [
        "flair.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    lab = nib.load(str(out / "exam.nii.gz"))
    t1ce = nib.load(str(out / "exam_series" / "t1ce.nii.gz"))
    assert lab.shape == t1ce.shape and np.allclose(lab.affine, t1ce.affine)
    # naming the series works too, leaving the T1 out
    rc = main(["predict", str(study), "-o", str(tmp_path / "out2"), "--series",
               "3=t1ce,4=t2,5=flair"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "out2" / "exam.nii.gz")).dataobj),
                          np.asarray(lab.dataobj))


def test_training_data_must_have_all_four(files: dict[str, Path], tmp_path: Path) -> None:
    from braintumor.training.data import build_cache

    data = tmp_path / "data"
    _folder_without(files, data / "C", ("t2",))
    with pytest.raises(InputError, match="missing the T2 modality"):
        build_cache(data, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_the_study_fills_in_or_flags_missing_channels(tmp_path: Path) -> None:
    import json

    from braintumor.missing_study import fold_params, without

    case = small_case(seed=1)
    cnn_input = without(case, ("t1", "t2"), flag=False)
    assert cnn_input.missing == () and case.missing == ()
    assert np.array_equal(cnn_input.image[0], case.image[1])  # T1 <- T1ce
    assert np.array_equal(cnn_input.image[2], case.image[3])  # T2 <- FLAIR
    assert np.array_equal(cnn_input.image[1], case.image[1])
    assert without(case, ("t2",), flag=True).missing == ("t2",)
    folder = tmp_path / "without_t2"
    folder.mkdir()
    (folder / "cv_params.json").write_text(json.dumps({
        "0": {"test": ["A", "A_healthy"], "params": {"wt_hi": 2.0}},
        "1": {"test": ["B"], "params": {"wt_hi": 3.0}}}))
    got = fold_params(("t2",), tmp_path)
    # saved before the native enhancing-tumour step, the FLAIR edema growing and the
    # bias-field correction existed: they run without them
    off = {"et_native": 99.0, "flair_grow": 99.0, "n4": 0}
    assert got["A"] == {"wt_hi": 2.0, **off}
    assert got["B"] == {"wt_hi": 3.0, **off}
    # a set saved with a step keeps its own setting
    from braintumor.watershed import saved_params

    kept = {"et_native": 0.8, "flair_grow": 1.4, "n4": 2}
    assert saved_params(kept) == kept


def test_shipped_parameters_are_the_ones_the_cv_chose() -> None:
    """TUNED_WITHOUT and the warning's accuracy are the committed study's results."""
    import json
    from dataclasses import asdict

    from braintumor.segment import WITHOUT_ACCURACY
    from braintumor.watershed import TUNED_WITHOUT

    root = Path(__file__).resolve().parents[1] / "experiments" / "watershed"
    assert set(TUNED_WITHOUT) == set(WITHOUT_ACCURACY)
    for key in TUNED_WITHOUT:
        folder = root / ("without_" + "_".join(key))
        chosen = json.loads((folder / "params.json").read_text())
        # the native enhancing-tumour step's and then the FLAIR edema growing's
        # settings: chosen later, on the same folds
        chosen.update(json.loads((folder / "native_et" / "params.json").read_text()))
        chosen.update(json.loads((folder / "flair_edema" / "params.json").read_text()))
        got = asdict(params_without(key))
        if "t1" in key:  # no T1 to subtract: the weight is switched off
            assert got["et_native_k"] == 0.0
            chosen["et_native_k"] = 0.0
        got = {k: v for k, v in got.items() if k in chosen}
        assert got == pytest.approx(chosen, abs=1e-4), key
        table = (folder / "flair_edema" / "cv_watershed.md").read_text()
        means = [float(line.split("|")[2]) for line in table.splitlines()
                 if line.startswith(("| WT", "| TC", "| ET"))]
        assert tuple(means) == WITHOUT_ACCURACY[key]


def test_an_empty_outline_without_t2_does_not_read_as_no_tumour(tmp_path: Path) -> None:
    from braintumor.phantom import make_case

    case = make_case(shape=(64, 72, 56), seed=2, tumour=False)
    case.image[2] = case.image[3]
    case.missing = ("t2",)
    res = segment(case, "cnn")
    assert not res.labels.any()
    assert "the watershed found no tumour, which on such a scan does not rule one out" \
        in res.info["warning"]
    # no test case is missed whole without its T2 any more (the large-lesion rule)
    assert "missed whole" not in res.info["warning"]
    with_tumour = segment(load_case(_folder_without(
        write_case_files(small_case(seed=3), tmp_path / "full"), tmp_path / "C", ("t2",))))
    assert with_tumour.labels.any() and "found no tumour" not in with_tumour.info["warning"]


def test_predict_on_a_folder_of_series_named_by_their_modality(files: dict[str, Path],
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "patient9"
    folder.mkdir()
    names = {"t1ce": "4_AX_T1_POST_GAD.nii.gz", "t2": "5_AX_T2_TSE.nii.gz",
             "flair": "7_AX_T2_FLAIR.nii.gz"}
    for m, name in names.items():
        shutil.copyfile(files[m], folder / name)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--method", "watershed"]) == 0
    lab = nib.load(str(out / "patient9.nii.gz"))
    full = load_case(files["t1"].parent)
    assert lab.shape == full.shape and np.allclose(lab.affine, full.affine)
    assert full.label is not None
    assert dice(np.asarray(lab.dataobj) > 0, full.label > 0) > 0.8


def _blank(files: dict[str, Path], dest: Path, modality: str, value: float = 0) -> Path:
    """A copy of the case whose ``modality`` file holds ``value`` throughout."""
    dest.mkdir(parents=True)
    for m, p in files.items():
        if m == modality:
            img = nib.load(str(p))
            nib.save(nib.Nifti1Image(np.full(img.shape, value, np.float32), img.affine),
                     str(dest / p.name))
        else:
            shutil.copyfile(p, dest / p.name)
    return dest


@pytest.mark.parametrize("modality", ["t1", "t2"])
def test_a_blank_t1_or_t2_is_a_missing_one(files: dict[str, Path], tmp_path: Path,
                                          modality: str) -> None:
    """An empty series (all zero, or one value) gets the outline of the scan without it,
    and the warning says the image is blank, not that it is absent."""
    without = segment(load_case(_folder_without(files, tmp_path / "W", (modality,))))
    for value, sub in ((0, "Z"), (412.0, "K")):
        case = load_case(_blank(files, tmp_path / sub, modality, value))
        assert case.missing == ()  # the file is there: only segment() looks inside
        res = segment(case, "cnn")
        assert res.info["method"] == "watershed" and res.info["missing"] == [modality]
        assert np.array_equal(res.labels, without.labels)
        name = modality.upper()
        assert f"the scan's {name} image is blank (one value throughout)" in res.info["warning"]
        assert f"no {name} image" not in res.info["warning"]
    both = load_case(_blank(files, tmp_path / "B", "t1"))
    both.image[2] = 0
    warning = segment(both, "watershed").info["warning"]
    assert "the scan's T1 and T2 images are blank" in warning and "without them" in warning
    half = load_case(_folder_without(files, tmp_path / "H", ("t2",)))
    half.image[0] = 7
    assert "the scan has no T2 image and its T1 image is blank" in \
        segment(half, "watershed").info["warning"]


@pytest.mark.parametrize("modality", ["t1ce", "flair"])
def test_a_blank_t1ce_or_flair_is_one_sentence(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              modality: str) -> None:
    folder = _blank(files, tmp_path / "C", modality)
    out = tmp_path / "out"
    for method in ("cnn", "watershed", "hybrid"):
        rc = main(["predict", str(folder), "-o", str(out), "--method", method])
        err = capsys.readouterr().err
        name = {"t1ce": "T1ce", "flair": "FLAIR"}[modality]
        assert rc != 0 and "Traceback" not in err
        assert f"the {name} image is blank (every voxel 0); the tumour cannot be outlined" \
            " without it." in err
        assert not list(out.glob("*.nii.gz"))


def test_a_scan_of_zeros_is_refused_by_every_method(files: dict[str, Path]) -> None:
    case = load_case(files["t1"].parent)
    case.image[:] = 0
    for method in ("cnn", "watershed", "hybrid"):
        with pytest.raises(InputError, match="every voxel is zero; there is no brain"):
            segment(case, method)
