"""braintumor.evaluate and the ``braintumor evaluate`` command."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import evaluate as E
from braintumor import labels as L
from braintumor import metrics as M
from braintumor.cli import main
from braintumor.errors import InputError

SPACING = (1.0, 1.0, 1.5)


def labels2021(shift: int = 0, shape=(24, 24, 20)) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[5:19, 5:19, 4:16] = 2
    lab[8:16, 8:16, 6:14] = 4
    lab[10:14, 10:14, 8:12] = 1
    return np.roll(lab, shift, axis=0)


def save(lab: np.ndarray, path: Path, spacing=SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(lab.astype(np.uint8), np.diag([*spacing, 1.0]))
    nib.save(img, str(path))
    return path


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A BraTS 2017-21 dataset folder with three cases; predictions for two of them,
    one in each label convention."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for i, case in enumerate(("caseA", "caseB", "caseC")):
        save(labels2021(), ref / case / f"{case}_seg.nii.gz")
        save(np.zeros_like(labels2021()), ref / case / f"{case}_t1.nii.gz")  # ignored
        _ = i
    save(labels2021(shift=1), pred / "caseA.nii.gz")  # 2017-21 values (ET = 4)
    save(L.convert(labels2021(shift=2), "brats2021", "brats2023"), pred / "caseB.nii.gz")
    return pred, ref


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_evaluate_command_writes_csv_json_and_flags_missing(folders, tmp_path, capsys):
    pred, ref = folders
    out = tmp_path / "res" / "metrics.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "missing" in text and "caseC" in text and "Summary" in text
    with out.open() as fh:
        header = fh.readline().strip().split(",")
    assert header[:6] == ["case", "region", "dice", "sensitivity", "specificity", "hd95"]
    assert "lesion_dice" in header and "lesion_hd95" in header
    rows = read_csv(out)
    cases = [r["case"] for r in rows]
    assert cases.count("caseA") == cases.count("caseC") == 3
    assert cases[-6:] == ["mean"] * 3 + ["median"] * 3
    # case A against a direct computation with the reference's spacing
    direct = M.score_case(L.to_internal(labels2021(shift=1), "brats2021"),
                          L.to_internal(labels2021(), "brats2021"), SPACING)
    for r in rows:
        if r["case"] == "caseA":
            for k in ("dice", "hd95", "lesion_dice", "sensitivity", "specificity"):
                assert float(r[k]) == pytest.approx(direct[r["region"]][k], rel=1e-5)
    # case B was written in 2023 values: auto detection read ET correctly
    b_et = next(r for r in rows if r["case"] == "caseB" and r["region"] == "ET")
    assert float(b_et["dice"]) > 0.5
    # case C has no prediction: flagged, Dice 0, HD95 374, and in the mean
    c = [r for r in rows if r["case"] == "caseC"]
    assert all(r["status"] == "missing" and float(r["dice"]) == 0.0
               and float(r["hd95"]) == 374.0 for r in c)
    assert all(int(float(r["lesion_fn"])) == 1 and int(float(r["lesion_tp"])) == 0
               for r in c)  # its one lesion per region is missed
    mean_wt = next(r for r in rows if r["case"] == "mean" and r["region"] == "WT")
    dice_wt = [float(r["dice"]) for r in rows if r["region"] == "WT"
               and r["case"].startswith("case")]
    assert float(mean_wt["dice"]) == pytest.approx(np.mean(dice_wt), rel=1e-5)
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["missing"] == ["caseC"]
    assert doc["cases"]["caseC"]["status"] == "missing"
    assert doc["summary"]["mean"]["WT"]["dice"] == pytest.approx(float(mean_wt["dice"]),
                                                                 rel=1e-5)


def test_flat_2023_folders_and_brats_named_predictions(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    lab = L.convert(labels2021(), "brats2021", "brats2023")
    save(lab, ref / "BraTS-GLI-00001-000-seg.nii.gz")
    save(lab, pred / "BraTS-GLI-00001-000-seg.nii.gz")
    ev = E.evaluate_folders(pred, ref)
    assert ev.missing == [] and ev.n_cases == 1
    assert all(r["dice"] == 1.0 and r["hd95"] == 0.0 for r in ev.rows)


def test_unmatched_predictions_are_listed(folders):
    pred, ref = folders
    save(labels2021(), pred / "stranger.nii.gz")
    ev = E.evaluate_folders(pred, ref, lesions=False)
    assert [Path(u).name for u in ev.unmatched] == ["stranger.nii.gz"]
    assert "lesion_dice" not in ev.rows[0]


@pytest.mark.parametrize("off", ["shape", "affine"])
def test_a_prediction_off_its_reference_grid_is_scored_as_missing(folders, tmp_path, capsys,
                                                                  off):
    """One prediction of another shape, or on an affine shifted against its reference's,
    no longer stops the whole cohort (exit 2, no CSV): that case is scored as missing
    with status unreadable and its sentence, the others are scored, and the run exits 1."""
    pred, ref = folders
    if off == "shape":
        save(np.zeros((10, 10, 10), np.uint8), pred / "caseA.nii.gz")
        said = "shape (10, 10, 10) differs"
    else:
        moved = np.eye(4)
        moved[0, 3] = 10.0
        nib.save(nib.Nifti1Image(labels2021(shift=1), moved), str(pred / "caseA.nii.gz"))
        said = "affine) differs from its reference"
    out = tmp_path / "m.csv"
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out),
                 "--quiet", "--no-lesion-wise"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: " in err and "caseA.nii.gz" in err and said in err
    assert "Traceback" not in err
    rows = read_csv(out)
    status = {r["case"]: r["status"] for r in rows if r["case"].startswith("case")}
    assert status == {"caseA": "unreadable", "caseB": "ok", "caseC": "missing"}
    assert float(next(r for r in rows if r["case"] == "caseB" and r["region"] == "WT")
                 ["dice"]) > 0


def test_a_prediction_is_scored_on_the_reference_grid(tmp_path: Path) -> None:
    """The reference stored with its x axis reversed (affine to match) is the same map:
    Dice 1; the reference shifted by 10 mm in its affine is not on the grid: refused;
    an identity affine (a map saved from an array) is taken voxel for voxel."""
    aff = np.array([[-1.0, 0, 0, 90.0], [0, 1.0, 0, -120.0], [0, 0, 1.5, -60.0], [0, 0, 0, 1]])
    lab = labels2021()
    lab[:4] = 0
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(lab, aff), str(ref))
    flip = aff @ np.array([[-1, 0, 0, lab.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0],
                           [0, 0, 0, 1]])
    flipped = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lab[::-1]), flip), str(flipped))
    scores = E.evaluate_pair(flipped, ref, lesions=False)
    assert all(scores[r]["dice"] == 1.0 for r in ("WT", "TC", "ET"))
    shifted = tmp_path / "shifted.nii.gz"
    moved = aff.copy()
    moved[0, 3] += 10
    nib.save(nib.Nifti1Image(lab, moved), str(shifted))
    with pytest.raises(InputError, match="affine.* differs from its reference ref.nii.gz's"):
        E.evaluate_pair(shifted, ref, lesions=False)
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(plain))
    assert E.evaluate_pair(plain, ref, lesions=False)["WT"]["dice"] == 1.0


def test_a_prediction_no_turn_puts_on_the_grid_is_refused_for_its_affine(
        tmp_path: Path) -> None:
    """A prediction of its reference's shape whose affine says its x and y are swapped,
    or one whose affine places an axis nowhere, is refused for its geometry (the first
    was said to differ in shape, quoting two equal shapes; the second stopped the whole
    run with nibabel's ValueError); evaluate then scores it as unreadable."""
    aff = np.array([[-1.0, 0, 0, 90.0], [0, 1.0, 0, -120.0], [0, 0, 1.0, -60.0],
                    [0, 0, 0, 1]])
    lab = labels2021(shape=(24, 22, 20))
    ref = tmp_path / "ref" / "caseA" / "caseA_seg.nii.gz"
    ref.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(lab, aff), str(ref))
    swapped = tmp_path / "swapped.nii.gz"
    nib.save(nib.Nifti1Image(lab, aff @ np.eye(4)[[1, 0, 2, 3]].T), str(swapped))
    with pytest.raises(E.OffGrid, match=r"affine\) differs from its reference caseA_seg"):
        E.evaluate_pair(swapped, ref, lesions=False)
    flat = aff.copy()
    flat[:3, 2] = 0.0  # z placed nowhere
    img = nib.Nifti1Image(lab, aff)
    img.header.set_sform(flat, code=1)
    img.header.set_qform(None, code=0)
    img.update_header = lambda: None  # the degenerate sform saved as written
    pred = tmp_path / "pred" / "caseA.nii.gz"
    pred.parent.mkdir()
    nib.save(img, str(pred))
    assert np.allclose(nib.load(str(pred)).affine, flat)
    with pytest.raises(E.OffGrid, match=r"affine\) differs from its reference caseA_seg"):
        E.evaluate_pair(pred, ref, lesions=False)
    out = tmp_path / "m.csv"
    main(["evaluate", "--pred", str(pred.parent), "--ref", str(ref.parent.parent), "-o",
          str(out), "--quiet"])
    assert {r["status"] for r in read_csv(out) if r["case"] == "caseA"} == {"unreadable"}


def test_explicit_convention_is_checked(folders, tmp_path, capsys):
    pred, ref = folders
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--pred-labels",
                 "brats2023", "-o", str(tmp_path / "m.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "caseA.nii.gz" in err and "brats2023 convention asked for" in err


def test_nothing_matches_or_no_folder(tmp_path, folders):
    pred, ref = folders
    other = tmp_path / "other"
    save(labels2021(), other / "zzz.nii.gz")
    with pytest.raises(InputError, match="no prediction matches"):
        E.evaluate_folders(other, ref)
    with pytest.raises(InputError, match="no such prediction folder"):
        E.evaluate_folders(tmp_path / "nope", ref)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no reference label maps"):
        E.evaluate_folders(pred, empty)


def test_numbers_equal_the_official_package(folders, tmp_path):
    """With --hd95 voxel, Dice and HD95 are the official package's (1 mm grids)."""
    pytest.importorskip("brats_evaluation")
    from brats_evaluation import config_path
    from panoptica import Panoptica_Evaluator

    pred, ref = folders
    for case in ("caseA", "caseB"):  # isotropic copies (its global HD95 is in voxels)
        save(L.to_internal(np.asarray(nib.load(str(pred / f"{case}.nii.gz")).dataobj),
                           "brats2021" if case == "caseA" else "brats2023"),
             tmp_path / "p1" / f"{case}.nii.gz", (1.0, 1.0, 1.0))
        save(labels2021(), tmp_path / "r1" / case / f"{case}_seg.nii.gz", (1.0, 1.0, 1.0))
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "p1"), "--ref", str(tmp_path / "r1"),
                 "--hd95", "voxel", "-o", str(out), "--quiet"]) == 0
    rows = read_csv(out)
    ev = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    for case in ("caseA", "caseB"):
        p = np.asarray(nib.load(str(tmp_path / "p1" / f"{case}.nii.gz")).dataobj)
        r = L.convert(labels2021(), "brats2021", "brats2023")  # it expects 2023 labels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ev.evaluate(p, r, verbose=False, skip_groups=["snfh", "netc", "rc"])
        for row in (x for x in rows if x["case"] == case):
            o = res[row["region"].lower()].to_dict(True)
            assert float(row["dice"]) == pytest.approx(o["global_bin_dsc"], abs=1e-6)
            assert float(row["hd95"]) == pytest.approx(o["global_bin_hd95"], abs=0.01)


# ----------------------------------------------------------------------------- 2D


def test_evaluate_2d_masks(tmp_path, capsys):
    from PIL import Image

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 8:20] = 255
    Image.fromarray(m).save(ref / "img1_mask.tif")
    Image.fromarray(np.roll(m, 3, axis=1)).save(pred / "img1_mask.png")
    Image.fromarray(np.zeros_like(m)).save(ref / "img2_mask.tif")  # tumour-free slice
    Image.fromarray(np.zeros_like(m)).save(pred / "img2_mask.png")
    Image.fromarray(m).save(ref / "img3_mask.tif")  # no prediction
    Image.fromarray(m).save(ref / "img3.tif")  # the picture itself is not a mask
    ev = E.evaluate_2d(pred, ref)
    by = {r["case"]: r for r in ev.rows}
    assert by["img1"]["dice"] == pytest.approx(9 / 12)
    assert by["img1"]["hd95"] == pytest.approx(3.0)
    assert (by["img2"]["dice"], by["img2"]["hd95"]) == (1.0, 0.0)
    assert by["img3"]["status"] == "missing" and by["img3"]["dice"] == 0.0
    assert ev.summary["mean"]["tumour"]["dice"] == pytest.approx((0.75 + 1 + 0) / 3)
    out = tmp_path / "m2d.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 0
    rows = read_csv(out)
    assert [r["case"] for r in rows] == ["img1", "img2", "img3", "mean", "median"]
    assert "lesion_dice" not in rows[0]


def _square_masks(folder: Path, names: dict[str, int], top: int = 255) -> None:
    """A 32x32 mask per name: a 12x12 square shifted right by the number, ``top`` inside."""
    from PIL import Image

    for name, shift in names.items():
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8 + shift:20 + shift] = top
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(folder / name)


@pytest.mark.parametrize("side", ["pred", "ref"])
def test_a_0_1_mask_is_read_as_it_is(tmp_path, side):
    """A mask PNG of only 0 and 1 (as many tools save one) is tumour where it is 1, not
    empty; a 0/255 mask and a JPEG's noise near 0 keep the cut at 127."""
    from PIL import Image

    _square_masks(tmp_path / "ref", {"a_mask.png": 0}, top=1 if side == "ref" else 255)
    _square_masks(tmp_path / "pred", {"a_mask.png": 3}, top=1 if side == "pred" else 255)
    ev = E.evaluate_2d(tmp_path / "pred", tmp_path / "ref")
    assert ev.rows[0]["dice"] == pytest.approx(9 / 12)
    noisy = np.zeros((8, 8), np.uint8)
    noisy[0, 0], noisy[1, 1] = 2, 200
    Image.fromarray(noisy).save(tmp_path / "n.png")
    assert E.read_mask_2d(tmp_path / "n.png").sum() == 1


def test_patients_folders_with_the_same_slice_names(tmp_path, capsys):
    """``PA/slice_1`` and ``PB/slice_1`` (what predict writes for two patients) are two
    pictures, each scored against its own patient's reference; a flat prediction folder
    still pairs with patients' folders by name when the names are one patient's."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _square_masks(ref, {"PA/slice_1_mask.png": 0, "PB/slice_1_mask.png": 0})
    _square_masks(pred, {"PA/slice_1_mask.png": 0, "PB/slice_1_mask.png": 6})
    ev = E.evaluate_2d(pred, ref)
    by = {r["case"]: r["dice"] for r in ev.rows}
    assert by == {"PA/slice_1": 1.0, "PB/slice_1": pytest.approx(0.5)}
    assert set(ev.extra["per_patient"]["patients"]) == {"PA", "PB"}
    assert ev.extra["per_patient"]["patients"]["PB"]["dice"] == pytest.approx(0.5)
    out = tmp_path / "o" / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 0
    assert [r["case"] for r in read_csv(out)][:2] == ["PA/slice_1", "PB/slice_1"]
    flat = tmp_path / "flat"
    _square_masks(flat, {"PA_1_mask.png": 0, "PB_1_mask.png": 6})
    _square_masks(tmp_path / "ref2", {"PA/PA_1_mask.png": 0, "PB/PB_1_mask.png": 0})
    ev = E.evaluate_2d(flat, tmp_path / "ref2")
    assert {r["case"]: r["dice"] for r in ev.rows} == {"PA_1": 1.0, "PB_1": pytest.approx(0.5)}


def test_2d_folders_named_otherwise_pair_by_unique_file_names(tmp_path, capsys):
    """Prediction folders named otherwise than the reference's (``ren/patient_A`` for
    ``ref/TCGA_A``) pair by file name where each name is given once on both sides, all
    of them or only the pictures the paths leave unpaired, and one note line says so; a
    name given twice stays unpaired (scored as missing)."""
    ref, pred = tmp_path / "ref", tmp_path / "ren"
    _square_masks(ref, {"TCGA_A/TCGA_A_1_mask.png": 0, "TCGA_A/TCGA_A_2_mask.png": 0,
                        "TCGA_B/TCGA_B_1_mask.png": 0, "TCGA_C/x_mask.png": 0,
                        "TCGA_D/x_mask.png": 0})
    _square_masks(pred, {"patient_A/TCGA_A_1_mask.png": 0, "patient_A/TCGA_A_2_mask.png": 6,
                         "TCGA_B/TCGA_B_1_mask.png": 0, "pc/x_mask.png": 0,
                         "pd/x_mask.png": 0})
    ev = E.evaluate_2d(pred, ref)
    by = {r["case"]: (r["status"], r["dice"]) for r in ev.rows}
    assert by["TCGA_A_1"] == ("ok", 1.0) and by["TCGA_A_2"] == ("ok", pytest.approx(0.5))
    assert by["TCGA_B_1"] == ("ok", 1.0)
    assert by["TCGA_C/x"][0] == by["TCGA_D/x"][0] == "missing"
    assert ev.extra["paired_by_name"].startswith("2 of 3 picture(s) are paired")
    assert "patient_A for TCGA_A" in ev.extra["paired_by_name"]
    assert ev.extra["per_patient"]["patients"]["TCGA_A"]["missing_slices_pred"] == 0
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref),
                 "-o", str(tmp_path / "m.csv")]) == 0
    notes = [x for x in capsys.readouterr().err.splitlines() if "by file name" in x]
    assert len(notes) == 1 and notes[0].startswith(f"note: {pred}: 2 of 3 picture(s)")
    # paired by path alone: no note
    assert "paired_by_name" not in E.evaluate_2d(ref, ref).extra


def test_2d_distances_are_in_pixels_and_one_empty_side_is_the_diagonal(tmp_path, capsys):
    """HD95 of a 2D picture is in pixels, and where one side is empty (or the prediction
    is missing) it is the picture's diagonal, not BraTS's 374 mm."""
    from PIL import Image

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _square_masks(ref, {"a_mask.png": 0, "b_mask.png": 0})
    pred.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(pred / "a_mask.png")
    ev = E.evaluate_2d(pred, ref)
    by = {r["case"]: r for r in ev.rows}
    assert by["a"]["hd95"] == pytest.approx(math.hypot(32, 32))
    assert by["b"]["status"] == "missing" and by["b"]["hd95"] == pytest.approx(math.hypot(32, 32))
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref),
                 "-o", str(tmp_path / "m.csv")]) == 0
    said = capsys.readouterr().out
    assert "HD95 (pixels)" in said and "(mm)" not in said and "374" not in said


def test_2d_baseline_scored_before_the_diagonal_penalty_is_refused(tmp_path, capsys):
    """``--against`` a 2D CSV whose JSON records no ``empty_hd95`` (scored when a picture
    with one side empty had HD95 374) is refused as scored otherwise; a baseline scored
    now is compared."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _square_masks(ref, {"a_mask.png": 0, "b_mask.png": 0})
    _square_masks(pred, {"a_mask.png": 2, "b_mask.png": 0})
    base = tmp_path / "base.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(base),
                 "--quiet"]) == 0
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o",
            str(tmp_path / "new.csv"), "--against", str(base), "--quiet"]
    capsys.readouterr()
    assert main(args) == 0
    assert "scored with" not in capsys.readouterr().err
    doc = json.loads(base.with_suffix(".json").read_text())
    assert doc["settings"]["empty_hd95"] == "the picture's diagonal (pixels)"
    del doc["settings"]["empty_hd95"]  # as the CSV's JSON was written before
    base.with_suffix(".json").write_text(json.dumps(doc))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "base.csv was scored with empty_hd95 = 374" in err and "Traceback" not in err


def test_2d_evaluate_follows_linked_patient_folders(tmp_path):
    """Patients' folders linked into the folders given are found, as predict finds them,
    a link back up the tree is no loop, and a broken link to a mask is passed over."""
    store = tmp_path / "store"
    _square_masks(store / "ref", {"PA/PA_1_mask.png": 0})
    _square_masks(store / "pred", {"PA/PA_1_mask.png": 0})
    for side in ("ref", "pred"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "PA").symlink_to(store / side / "PA")
        (tmp_path / side / "PA" / "up").symlink_to(tmp_path / side)
    assert E.is_2d_folder(tmp_path / "ref")
    ev = E.evaluate_2d(tmp_path / "pred", tmp_path / "ref")
    assert [(r["case"], r["dice"]) for r in ev.rows] == [("PA_1", 1.0)]
    assert ev.extra["per_patient"]["patients"]["PA"]["dice"] == 1.0

    # a broken link among the masks (a file moved away) is passed over, as before
    (tmp_path / "ref" / "PA" / "PA_2_mask.png").symlink_to(tmp_path / "gone_mask.png")
    assert "PA_2_mask.png" not in {f.name for f in E.walk_files(tmp_path / "ref")}
    ev = E.evaluate_2d(tmp_path / "pred", tmp_path / "ref")
    assert [(r["case"], r["dice"]) for r in ev.rows] == [("PA_1", 1.0)]


# ----------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_case_folder(brats_dir, tmp_path):
    segs = sorted(brats_dir.glob("*/*_seg.nii.gz"))[:2]
    if not segs:
        pytest.skip("no BraTS label maps in the shared data")
    ref = tmp_path / "ref"
    for s in segs:  # a dataset folder of two cases (links; nothing copied)
        (ref / s.parent.name).mkdir(parents=True)
        (ref / s.parent.name / s.name).symlink_to(s)
    img = nib.load(str(segs[0]))
    lab = np.asarray(img.dataobj).astype(np.uint8)
    pred_lab = np.roll(lab, 2, axis=1)
    pred_lab[pred_lab == 4] = 1  # ET dropped
    case = segs[0].parent.name
    save(pred_lab, tmp_path / "pred" / f"{case}.nii.gz", img.header.get_zooms()[:3])
    ev = E.evaluate_folders(tmp_path / "pred", ref)
    assert ev.missing == [segs[1].parent.name]
    by = {(r["case"], r["region"]): r for r in ev.rows}
    assert by[(case, "ET")]["dice"] == 0.0 and by[(case, "ET")]["hd95"] == 374.0
    assert 0.5 < by[(case, "WT")]["dice"] < 1.0
    assert math.isfinite(by[(case, "TC")]["hd95"])


@pytest.mark.realdata
def test_real_lgg_slices(lgg_dir, tmp_path, capsys):
    from PIL import Image

    patient = sorted(d for d in lgg_dir.iterdir() if d.is_dir())[0]
    masks = sorted(patient.glob("*_mask.tif"))[:12]
    ref, pred = tmp_path / "ref" / patient.name, tmp_path / "pred"
    ref.mkdir(parents=True)
    pred.mkdir()
    for m in masks:
        (ref / m.name).symlink_to(m)
        arr = E.read_mask_2d(m)
        Image.fromarray((np.roll(arr, 2, axis=0) * 255).astype(np.uint8)).save(
            pred / m.name.replace(".tif", ".png"))
    out = tmp_path / "lgg.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == len(masks) + 2
    for r in rows[:-2]:
        has = E.read_mask_2d(ref / f"{r['case']}_mask.tif").any()
        d = float(r["dice"])
        assert (0.5 < d < 1.0) if has else d == 1.0
    doc = json.loads(out.with_suffix(".json").read_text())
    if "per_patient" in doc:  # the 2D module's per-patient volume Dice
        assert patient.name in doc["per_patient"]["patients"]


def test_evaluate_with_diameters(tmp_path: Path) -> None:
    """A prediction 1.25 times as large in-plane (SPD x1.56) against its reference: the
    SPD difference is +56 % within the pixel rounding, for ET and WT; TC gets none."""
    from braintumor.diameters import rano

    shape = (80, 80, 30)
    g = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")

    def tumour(scale: float) -> np.ndarray:
        r = np.sqrt(g[0] ** 2 + g[1] ** 2) / scale
        lab = np.zeros(shape, np.uint8)
        lab[(r <= 24) & (abs(g[2]) <= 8)] = 2
        lab[(r <= 14) & (abs(g[2]) <= 5)] = 4
        lab[(r <= 8) & (abs(g[2]) <= 3)] = 1
        return lab

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    save(tumour(1.0), ref / "c1" / "c1_seg.nii.gz", (1.0, 1.0, 1.0))
    save(tumour(1.25), pred / "c1.nii.gz", (1.0, 1.0, 1.0))
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out),
                 "--diameters", "--quiet"]) == 0
    rows = {r["region"]: r for r in read_csv(out) if r["case"] == "c1"}
    want = rano(L.to_internal(tumour(1.0), "brats2021"), np.eye(4))
    for region in ("ET", "WT"):
        assert float(rows[region]["spd_ref_mm2"]) == pytest.approx(
            want[region]["spd_mm2"], rel=1e-4)
        assert float(rows[region]["spd_diff_pct"]) == pytest.approx(56, abs=6)
    assert rows["TC"]["spd_diff_pct"] == ""
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["settings"]["diameters"] is True
    assert doc["summary"]["mean"]["ET"]["spd_diff_pct"] == pytest.approx(
        float(rows["ET"]["spd_diff_pct"]))
    # without the flag: no such columns
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o",
                 str(tmp_path / "n.csv"), "--quiet"]) == 0
    assert "spd_diff_pct" not in (tmp_path / "n.csv").read_text().splitlines()[0]


def test_decathlon_references_are_read_as_decathlon_labels(tmp_path, capsys):
    """A Decathlon task's labelsTr (1 edema, 2 non-enhancing core, 3 enhancing) holds the
    same values as BraTS 2023's (1 core, 2 edema, 3 enhancing): read by their folder, a
    perfect prediction scores 1 in every region, not a core made of edema."""
    lab = labels2021()
    ref = tmp_path / "Task01_BrainTumour" / "labelsTr"
    save(L.convert(lab, "brats2021", "msd"), ref / "BRATS_001.nii.gz")
    save(lab, tmp_path / "pred" / "BRATS_001.nii.gz")
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(ref),
                 "-o", str(out), "--no-lesion-wise"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "BRATS_001"}
    assert dice == {"WT": 1.0, "TC": 1.0, "ET": 1.0}, dice
    # the task's own folder is read through its labelsTr folder, the same way
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(ref.parent),
                 "-o", str(out), "--no-lesion-wise"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "BRATS_001"}
    assert dice == {"WT": 1.0, "TC": 1.0, "ET": 1.0}, dice
    # the same file elsewhere is taken at its values' word, unless --ref-labels says
    flat = tmp_path / "refs"
    save(L.convert(lab, "brats2021", "msd"), flat / "BRATS_001.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(flat),
                 "-o", str(out), "--no-lesion-wise", "--ref-labels", "msd"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "BRATS_001"}
    assert dice == {"WT": 1.0, "TC": 1.0, "ET": 1.0}, dice
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(flat),
                 "-o", str(out), "--no-lesion-wise"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "BRATS_001"}
    assert dice["TC"] < 1.0  # read as BraTS 2023: edema taken for core


def test_an_unreadable_prediction_is_scored_as_missing_and_the_rest_scored(folders, tmp_path,
                                                                          capsys):
    """One truncated prediction among others: the others are scored and written, the
    broken one counts as missing (status unreadable), and the run says so and fails."""
    pred, ref = folders
    raw = (pred / "caseB.nii.gz").read_bytes()
    (pred / "caseB.nii.gz").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "res" / "metrics.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out),
                 "--no-lesion-wise"]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "caseB.nii.gz" in err and "Traceback" not in err
    rows = read_csv(out)
    status = {r["case"]: r["status"] for r in rows if r["case"].startswith("case")}
    assert status == {"caseA": "ok", "caseB": "unreadable", "caseC": "missing"}
    assert float(next(r for r in rows if r["case"] == "caseA" and r["region"] == "WT")
                 ["dice"]) > 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert len(doc["unreadable_predictions"]) == 1


def test_a_prediction_in_a_folder_named_labelsTs_is_read_by_its_values(tmp_path, capsys):
    """``predict -o Task/labelsTs --labels brats2023`` writes BraTS 2023 values into a
    folder named as the Decathlon's: the folder says the convention of references only,
    so the prediction is read by its values (a perfect one scores 1), and as the
    Decathlon's only when --pred-labels says so."""
    lab = labels2021()
    save(lab, tmp_path / "ref" / "case1" / "case1_seg.nii.gz")
    pred = tmp_path / "Task" / "labelsTs"
    save(L.convert(lab, "brats2021", "brats2023"), pred / "case1.nii.gz")
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
                 "-o", str(out), "--no-lesion-wise", "--quiet"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "case1"}
    assert dice == {"WT": 1.0, "TC": 1.0, "ET": 1.0}, dice
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
                 "-o", str(out), "--no-lesion-wise", "--quiet", "--pred-labels", "msd"]) == 0
    dice = {r["region"]: float(r["dice"]) for r in read_csv(out) if r["case"] == "case1"}
    assert dice["TC"] < 1.0  # asked for: edema (the Decathlon's 1) taken for core


def test_volumes_and_distances_use_the_affines_voxel_size(tmp_path: Path) -> None:
    """A reference whose sform says 3 mm slices while its pixdim says 1 mm: volumes and
    HD95 are those of 3 mm slices, as the sform places the voxels."""
    lab = labels2021()
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    img = nib.Nifti1Image(lab, aff)
    img.header.set_sform(aff, 2)
    img.header.set_qform(None, 0)
    img.header["pixdim"][1:4] = 1.0
    ref = tmp_path / "ref" / "case1.nii.gz"
    ref.parent.mkdir()
    nib.save(img, str(ref))
    pred = save(np.roll(lab, 1, axis=2), tmp_path / "pred" / "case1.nii.gz", (1.0, 1.0, 3.0))
    scores = E.evaluate_pair(pred, ref, lesions=False)
    wt = L.region_masks(L.to_internal(lab, "brats2021"))["WT"]
    assert scores["WT"]["ref_volume_ml"] == pytest.approx(wt.sum() * 3.0 / 1000)
    assert scores["WT"]["hd95"] == pytest.approx(3.0)  # one slice off: 3 mm, not 1


def test_a_reference_stored_with_a_scale_factor_is_scored_by_its_labels(tmp_path: Path) -> None:
    """nibabel's default for a float label map saved as uint8 scales it (1 is stored as
    1.0039, 2 as 1.9922): a perfect prediction scores 1, edema not read as core."""
    lab = labels2021()
    img = nib.Nifti1Image(lab.astype(np.float32), np.diag([*SPACING, 1.0]))
    img.set_data_dtype(np.uint8)
    ref = tmp_path / "ref" / "case1_seg.nii.gz"
    ref.parent.mkdir()
    nib.save(img, str(ref))
    pred = save(lab, tmp_path / "pred" / "case1.nii.gz")
    scores = E.evaluate_pair(pred, ref, lesions=False)
    assert all(scores[r]["dice"] == 1.0 for r in ("WT", "TC", "ET")), scores


def test_no_empty_line_on_stdout(folders, tmp_path, capsys):
    """The progress bar is drawn on a terminal only: piped or captured, an error leaves
    stdout empty and the results start at the first line."""
    pred, ref = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--pred", str(pred), "--ref", str(empty),
                 "-o", str(tmp_path / "m.csv")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref),
                 "-o", str(tmp_path / "m.csv"), "--no-lesion-wise"]) == 0
    out = capsys.readouterr().out
    assert out.strip() and out.splitlines()[0].strip(), out[:200]


def test_an_output_that_cannot_be_written_is_said_before_any_scoring(folders, tmp_path,
                                                                    capsys, monkeypatch):
    pred, ref = folders

    def never(*args, **kwargs):
        raise AssertionError("scored before the output was checked")

    monkeypatch.setattr(E, "evaluate_folders", never)
    (tmp_path / "afile").write_text("keep me")
    for target, says in ((tmp_path / "afile" / "m.csv", "exists and is not a folder"),
                         (tmp_path / "afile" / "sub" / "m.csv", "cannot be made"),
                         (tmp_path, "is a folder")):
        assert main(["evaluate", "--pred", str(pred), "--ref", str(ref),
                     "-o", str(target), "--quiet"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert says in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_without_lesion_wise_a_missing_case_invents_no_lesion_wise_mean(folders, tmp_path):
    # caseC has no prediction; with lesion-wise scoring off, no case has a lesion-wise
    # score, so the summary must not report the missing case's penalty as the mean
    pred, ref = folders
    ev = E.evaluate_folders(pred, ref, lesions=False)
    assert ev.missing == ["caseC"]
    assert all(not k.startswith("lesion_") for r in ev.rows for k in r)
    assert all(math.isnan(ev.summary["mean"][reg].get("lesion_dice", math.nan))
               for reg in ev.regions)
    out = E.write_csv(ev, tmp_path / "m.csv")
    assert not any(c.startswith("lesion_") for c in read_csv(out)[0])
    # with lesion-wise scoring on, the missing case still counts as every lesion missed
    ev = E.evaluate_folders(pred, ref)
    row = next(r for r in ev.rows if r["case"] == "caseC" and r["region"] == "WT")
    assert (row["lesion_dice"], row["lesion_hd95"], row["lesion_fn"]) == (0.0, 374.0, 1)


def test_a_summary_over_few_cases_says_its_intervals_are_rough(folders, tmp_path, capsys):
    """The plain summary prints CI rows too, so with few cases it says how rough they are,
    as the comparison with ``--against`` does."""
    pred, ref = folders
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref),
                 "-o", str(tmp_path / "m.csv")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CI low" in text
    assert "These are rough: a bootstrap interval over 3 cases is too narrow" in text


def test_a_prediction_whose_values_fit_no_convention_is_scored_as_missing(folders, tmp_path,
                                                                          capsys):
    """One prediction holding a value of no convention (a 5) among good ones: it is said
    and scored as unreadable, the others are scored, and the run fails."""
    pred, ref = folders
    bad = labels2021()
    bad[0, 0, 0] = 5
    save(bad, pred / "caseC.nii.gz")
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out),
                 "--no-lesion-wise"]) == 1
    err = capsys.readouterr().err
    assert "caseC.nii.gz" in err and "fit no known convention" in err
    assert "Traceback" not in err
    status = {r["case"]: r["status"] for r in read_csv(out) if r["case"].startswith("case")}
    assert status == {"caseA": "ok", "caseB": "ok", "caseC": "unreadable"}


@pytest.mark.parametrize("conv", ["brats2021", "brats2023"])
def test_case_names_ending_like_a_modality_are_no_label_hint(tmp_path, capsys, conv):
    """Predictions of cases named for a time point or a sequence (pat01_t1, pat01-t2w),
    as predict writes them: their values decide the convention, whatever the name."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for case in ("pat01_t1", "pat01-t2w"):
        save(labels2021(), ref / case / f"{case}_seg.nii.gz")
        save(L.convert(labels2021(shift=1), "brats2021", conv), pred / f"{case}.nii.gz")
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out),
                 "--no-lesion-wise", "--quiet"]) == 0, capsys.readouterr().err
    rows = read_csv(out)
    et = [float(r["dice"]) for r in rows if r["region"] == "ET" and r["case"].startswith("pat")]
    assert len(et) == 2 and all(0.5 < d < 1.0 for d in et)


def test_unnumbered_pictures_of_different_sizes_are_no_patient(tmp_path, capsys):
    """A flat folder of masks named without a slice number (``brain_mask.png`` 64x64 and
    ``scan_mask.png`` 80x100) is scored per picture, without a traceback: the pictures
    are no patient's volume, so there are no per-patient scores and a warning says why;
    beside numbered slices they are left out of the patients and named in a note."""
    from PIL import Image

    for side in ("ref", "pred"):
        (tmp_path / side).mkdir()
        for name, shape in (("brain", (64, 64)), ("scan", (80, 100))):
            m = np.zeros(shape, np.uint8)
            m[10:30, 10:30] = 255
            Image.fromarray(m).save(tmp_path / side / f"{name}_mask.png")
    out = tmp_path / "ev.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no per-patient scores" in err
    assert [r["case"] for r in read_csv(out)][:2] == ["brain", "scan"]
    _square_masks(tmp_path / "ref", {"p_1_mask.png": 0, "p_2_mask.png": 0})
    _square_masks(tmp_path / "pred", {"p_1_mask.png": 0, "p_2_mask.png": 0})
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 picture(s) named without a slice number (brain, scan)" in err
    assert [r["patient"] for r in read_csv(tmp_path / "ev_patients.csv")] == ["p", "mean"]


def test_reference_slices_of_different_sizes_in_one_patient_are_said(tmp_path, capsys):
    """One patient's reference slices of two sizes: one sentence, no traceback, the
    pictures still scored."""
    from PIL import Image

    for side in ("ref", "pred"):
        for n, shape in ((1, (32, 32)), (2, (40, 40))):
            (tmp_path / side / "PA").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros(shape, np.uint8)).save(
                tmp_path / side / "PA" / f"s_{n}_mask.png")
    out = tmp_path / "ev.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "must be the same size" in err
    assert len(read_csv(out)) == 2 + 2


def test_missing_predictions_never_score_as_right_empty_ones(tmp_path, capsys):
    """A patient's tumour-free slices without a prediction are not correct negatives:
    the partial predictions must not score better than the full ones (no false-positive
    rate of 0 of 3, no higher volume Dice); they are left out of the tumour-free slices,
    the patient has no volume Dice, and a note says how many slices had no prediction."""
    from PIL import Image

    from braintumor.slices2d import evaluate_2d as by_patient

    t = np.zeros((64, 64), np.uint8)
    t[10:30, 10:30] = 255
    fp = np.zeros((64, 64), np.uint8)
    fp[40:50, 40:50] = 255
    z = np.zeros((64, 64), np.uint8)
    for side in ("ref", "full", "partial", "mixed"):
        (tmp_path / side / "P1").mkdir(parents=True)
    (tmp_path / "ref" / "P2").mkdir()
    (tmp_path / "mixed" / "P2").mkdir()
    for n, (ref, pred) in enumerate([(t, t), (z, fp), (z, fp), (z, fp)], 1):
        Image.fromarray(ref).save(tmp_path / "ref" / "P1" / f"P1_{n}_mask.png")
        Image.fromarray(pred).save(tmp_path / "full" / "P1" / f"P1_{n}_mask.png")
        Image.fromarray(ref).save(tmp_path / "ref" / "P2" / f"P2_{n}_mask.png")
        Image.fromarray(ref).save(tmp_path / "mixed" / "P2" / f"P2_{n}_mask.png")
    Image.fromarray(t).save(tmp_path / "partial" / "P1" / "P1_1_mask.png")
    Image.fromarray(t).save(tmp_path / "mixed" / "P1" / "P1_1_mask.png")
    full = by_patient(tmp_path / "full", tmp_path / "ref")
    part = by_patient(tmp_path / "partial", tmp_path / "ref")
    assert full["summary"]["fp_rate"] == 1.0 and full["patients"]["P1"]["dice"] < 1
    p1 = part["patients"]["P1"]
    assert p1["tumour_free_slices"] == 0 and p1["fp_slices"] == 0
    assert math.isnan(p1["dice"]) and p1["missing_slices_pred"] == 3
    assert math.isnan(part["summary"]["fp_rate"]) and math.isnan(part["summary"]["dice_mean"])
    # a complete patient beside an incomplete one: the mean is the complete one's
    mixed = by_patient(tmp_path / "mixed", tmp_path / "ref")
    assert mixed["summary"]["dice_mean"] == 1.0 and mixed["summary"]["dice_patients"] == 1
    assert mixed["summary"]["tumour_free_slices"] == 3 and mixed["summary"]["fp_rate"] == 0.0
    # a missing tumour slice is a missed one, Dice 0
    (tmp_path / "mixed" / "P2" / "P2_1_mask.png").unlink()
    m2 = by_patient(tmp_path / "mixed", tmp_path / "ref")["patients"]["P2"]
    assert m2["missed_slices"] == 1 and m2["slice_dices"] == [0.0]
    out = tmp_path / "ev.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "partial"), "--ref",
                 str(tmp_path / "ref"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "7 slice(s) have no readable prediction" in err  # P1's 3, all 4 of P2
    rows = read_csv(tmp_path / "ev_patients.csv")
    assert rows[0]["dice"] == "nan" and rows[0]["tumour_free_slices"] == "0"
    assert rows[-1]["missing_slices_pred"] == "7"


def test_a_label_mask_of_small_values_is_tumour_above_0(tmp_path):
    """A reference of labels 0/1/2, or a 0/1 mask with values up to 3, is tumour where
    it is above 0, not empty; a 0/255 mask (and its JPEG) keeps the cut at 127."""
    from PIL import Image

    lab = np.zeros((32, 32), np.uint8)
    lab[8:20, 8:20] = 1
    lab[10:14, 10:14] = 2
    Image.fromarray(lab).save(tmp_path / "l.png")
    assert E.read_mask_2d(tmp_path / "l.png").sum() == 144
    Image.fromarray(np.where(lab > 0, 3, 0).astype(np.uint8)).save(tmp_path / "j.png")
    assert E.read_mask_2d(tmp_path / "j.png").sum() == 144
    Image.fromarray((lab > 0).astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=75)
    assert abs(int(E.read_mask_2d(tmp_path / "m.jpg").sum()) - 144) <= 4
