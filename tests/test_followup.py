"""Two outlines of one tumour at two dates: volumes, SPD and their change."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor import labels as L
from braintumor.cli import main
from braintumor.followup import SPD_THRESHOLDS, change, compare


def _tumour(shape: tuple[int, int, int], spacing: float, scale: float) -> np.ndarray:
    """Edema ellipsoid around an enhancing shell around necrosis, sized by ``scale``."""
    g = np.meshgrid(*[(np.arange(n) - n / 2) * spacing for n in shape], indexing="ij")
    r = np.sqrt((g[0] / 1.5) ** 2 + g[1] ** 2 + g[2] ** 2)
    lab = np.zeros(shape, np.uint8)
    lab[r <= 24 * scale] = L.ED
    lab[r <= 12 * scale] = L.ET
    lab[r <= 7 * scale] = L.NCR
    return lab


def test_change_readings() -> None:
    assert change(100, 40, SPD_THRESHOLDS)["reading"] == "decrease of 50 % or more"
    assert change(100, 60, SPD_THRESHOLDS)["reading"] == "within the thresholds"
    assert change(100, 125, SPD_THRESHOLDS)["reading"] == "increase of 25 % or more"
    assert change(100, 124, SPD_THRESHOLDS)["percent"] == 24.0
    assert change(100, 0, SPD_THRESHOLDS)["reading"] == "gone"
    assert change(0, 30, SPD_THRESHOLDS) == {"before": 0, "after": 30, "change": 30,
                                             "percent": None, "reading": "new"}
    assert change(0, 0, SPD_THRESHOLDS)["reading"] == "none in either"


def test_a_change_on_a_threshold_reaches_it() -> None:
    """Exactly +40 % or -65 % of volume is on the threshold (1.4 / 1.0 - 1 falls just
    short of 0.4 in floating point); a shown percent never reads past a threshold the
    change did not reach."""
    from braintumor.followup import VOLUME_THRESHOLDS

    assert change(1.0, 1.4, VOLUME_THRESHOLDS)["reading"] == "increase of 40 % or more"
    assert change(3.0, 1.05, VOLUME_THRESHOLDS)["reading"] == "decrease of 65 % or more"
    assert change(1.0, 1.4, VOLUME_THRESHOLDS)["percent"] == 40.0
    near = change(1000, 1249.9, SPD_THRESHOLDS)
    assert near["reading"] == "within the thresholds" and near["percent"] == 24.9
    near = change(1000, 500.1, SPD_THRESHOLDS)
    assert near["reading"] == "within the thresholds" and near["percent"] == -49.9
    worst = sum(change(b / 1000, b * 1.4 / 1000, VOLUME_THRESHOLDS)["reading"]
                != "increase of 40 % or more" for b in range(1, 5000))
    assert worst == 0


def test_an_spd_of_zero_with_tumour_left_is_not_gone() -> None:
    """SPD 0 while enhancing tumour remains means nothing large enough to measure, not a
    complete response; a lesion that grows to measurable size is not a new tumour."""
    left = change(1690.5, 0, SPD_THRESHOLDS, present=(True, True))
    assert left["percent"] == -100.0 and left["reading"].startswith("decrease of 50 % or more")
    assert "smaller tumour remains" in left["reading"]
    grown = change(0, 120, SPD_THRESHOLDS, present=(True, True))
    assert grown["reading"].startswith("new measurable lesion")
    assert change(1690.5, 0, SPD_THRESHOLDS, present=(True, False))["reading"] == "gone"


def test_a_tumour_grown_by_a_fifth_on_another_grid() -> None:
    """Linear size x1.2: volumes x1.73 (+40 % or more), SPD x1.44 (+25 % or more), though
    the later scan has 2 mm voxels and another shape."""
    before = _tumour((120, 100, 90), 1.0, 1.0)
    after = _tumour((60, 50, 45), 2.0, 1.2)
    out = compare(before, np.eye(4), after, np.diag([2.0, 2.0, 2.0, 1.0]))
    vol = out["volumes"]["WT"]
    assert vol["after"] / vol["before"] == pytest.approx(1.2 ** 3, rel=0.08)
    assert vol["reading"] == "increase of 40 % or more"
    spd = out["spd"]["ET"]
    assert spd["after"] / spd["before"] == pytest.approx(1.44, rel=0.1)
    assert spd["reading"] == "increase of 25 % or more"
    same = compare(before, np.eye(4), before, np.eye(4))
    assert all(c["percent"] == 0 and c["reading"] == "within the thresholds"
               for c in [same["volumes"]["ET"], same["volumes"]["WT"], *same["spd"].values()])
    # RANO sets no threshold for the necrotic core, the edema or the tumour core
    grown = compare(before, np.eye(4), np.where(before > 0, L.NCR, 0).astype(np.uint8),
                    np.eye(4))
    assert all(grown["volumes"][k]["reading"] == "no RANO threshold"
               for k in ("NCR", "TC")), grown["volumes"]
    assert same["volumes"]["ED"]["reading"] == "no RANO threshold"
    json.dumps(out)


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = tmp_path / "before.nii.gz"
    a = tmp_path / "after-seg.nii.gz"  # a BraTS 2023 name: values 1, 2, 3
    nib.save(nib.Nifti1Image(L.from_internal(_tumour((120, 100, 90), 1.0, 1.0), "brats2021"),
                             np.eye(4)), str(b))
    nib.save(nib.Nifti1Image(L.from_internal(_tumour((120, 100, 90), 1.0, 0.7), "brats2023"),
                             np.eye(4)), str(a))
    assert main(["compare", str(b), str(a), "-o", str(tmp_path / "fu")]) == 0
    out = capsys.readouterr().out
    assert "Whole tumour" in out and "SPD" in out and "Size only" in out
    doc = json.loads((tmp_path / "fu.json").read_text())
    # x0.7: volume x0.34 (-65 % or more), SPD x0.49 (-50 % or more)
    assert doc["volumes"]["WT"]["reading"] == "decrease of 65 % or more"
    assert doc["spd"]["ET"]["reading"] == "decrease of 50 % or more"
    assert doc["files"] == {"before": str(b), "after": str(a)}
    page = (tmp_path / "fu.html").read_text()
    assert "Follow-up comparison" in page and "not for clinical use" in page.lower()
    # bad input: one sentence, exit 2
    img = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32),
                             np.eye(4)), str(img))
    for args in ([str(b), str(tmp_path / "nowhere.nii.gz")], [str(img), str(a)]):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err


def test_a_series_reads_response_from_baseline_and_progression_from_the_nadir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Baseline, a shrinkage to 0.6 of the size (SPD x0.36: a response), then regrowth to
    0.8 (SPD x0.64 of baseline, but x1.78 of the nadir: a progression)."""
    from braintumor.followup import series

    shape, eye = (120, 100, 90), np.eye(4)
    visits = [(f"v{k}", _tumour(shape, 1.0, s), eye) for k, s in enumerate((1.0, 0.6, 0.8))]
    rows = series(visits)
    assert "reading" not in rows[0]
    assert rows[1]["reading"]["ET"] == "decrease of 50 % or more from baseline"
    assert rows[2]["ET_vs_baseline"]["percent"] < 0
    assert rows[2]["ET_vs_nadir"]["nadir"] == "v1"
    assert rows[2]["reading"]["ET"] == "increase of 25 % or more from the nadir (v1)"
    # the command: three files make a series table and its JSON
    paths = []
    for name, lab, aff in visits:
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(L.from_internal(lab, "brats2021"), aff), str(paths[-1]))
    assert main(["compare", *map(str, paths), "-o", str(tmp_path / "series")]) == 0
    assert "Visits, in date order" in capsys.readouterr().out
    doc = json.loads((tmp_path / "series.json").read_text())
    assert [v["name"] for v in doc["visits"]] == ["v0.nii.gz", "v1.nii.gz", "v2.nii.gz"]
    assert "from the nadir (v1.nii.gz)" in doc["visits"][2]["reading"]["ET"]
    assert "vs nadir" in (tmp_path / "series.html").read_text()
    assert main(["compare", str(paths[0])]) == 2
    assert "two label maps or more" in capsys.readouterr().err


def test_names_that_tell_two_patients_apart() -> None:
    """A label map's name names its patient once what the file is, which visit, its date,
    a browser's copy mark and BraTS 2023's timepoint are set aside; names that name no
    one give nothing to compare."""
    from braintumor.followup import case_key

    assert case_key("Brats18_CBICA_AQN_1_braintumor (1).nii.gz") == \
        case_key("Brats18_CBICA_AQN_1") == "brats18_cbica_aqn_1"
    assert case_key("BraTS-GLI-00005-001-seg.nii.gz") == case_key("BraTS-GLI-00005-000") \
        == "brats_gli_00005"
    assert case_key("Brats18_2013_11_1_seg.nii.gz") != case_key("Brats18_CBICA_AQN_1")
    assert case_key("patient7_2018-03-14_seg.nii.gz") == case_key("Patient7 visit2.nii")
    assert case_key("C:\\scans\\P12_followup2_labels.nii") == "p12"
    assert case_key("Müller_ü_braintumor.nii.gz") == "müller_ü"
    for nameless in ("visit1_seg.nii.gz", "v0.nii.gz", "before.nii.gz", "after-seg.nii.gz",
                     "dicom-case", "case", "seg.nii.gz"):
        assert case_key(nameless) == "", nameless


def test_compare_warns_of_maps_of_two_patients(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two maps named for different cases are compared, with a warning first (printed,
    in the JSON and the HTML); as a series, the visit named for another case than the
    baseline's is warned of. The same outline twice is said to be one outline."""
    from braintumor.followup import checks

    lab = _tumour((60, 50, 45), 2.0, 1.0)
    paths = {}
    for name, scale in (("A17_seg", 1.0), ("A17_v2_seg", 0.8), ("B03_seg", 0.6)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(L.from_internal(_tumour((60, 50, 45), 2.0, scale),
                                                 "brats2021"), np.diag([2.0, 2, 2, 1])),
                 str(paths[name]))
    assert main(["compare", str(paths["A17_seg"]), str(paths["B03_seg"]), "-o",
                 str(tmp_path / "fu")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Warning: Check that both are one patient's")
    doc = json.loads((tmp_path / "fu.json").read_text())
    assert doc["names"]["same"] is False and len(doc["warnings"]) == 1
    assert "A17_seg.nii.gz" in doc["warnings"][0] and "B03_seg.nii.gz" in doc["warnings"][0]
    assert "Warning: Check that both" in (tmp_path / "fu.html").read_text()
    assert main(["compare", str(paths["A17_seg"]), str(paths["A17_v2_seg"])]) == 0
    assert "Warning" not in capsys.readouterr().out
    assert main(["compare", *map(str, paths.values()), "-o", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "B03_seg.nii.gz: Check that both" in " ".join(out.split())
    series = json.loads((tmp_path / "s.json").read_text())
    assert [len(v.get("warnings", [])) for v in series["visits"]] == [0, 0, 1]
    one = checks("P1_seg.nii.gz", "P1_braintumor.nii.gz", lab, np.eye(4), lab, np.eye(4))
    assert one["warnings"] == ["The two label maps are one outline (the same labels on the "
                               "same grid), so nothing changed; give the earlier scan's label "
                               "map."]


def test_a_series_warns_of_one_outline_given_for_two_later_visits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three maps with the same outline as the second and third visit were compared
    without a word (only the baseline was checked against the others): warned of, on the
    later visit, naming the earlier one."""
    grid = np.diag([2.0, 2, 2, 1])
    paths = []
    for name, scale in (("P1_v1", 1.0), ("P1_v2", 0.8), ("P1_v3", 0.8)):
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(L.from_internal(_tumour((60, 50, 45), 2.0, scale),
                                                 "brats2021"), grid), str(paths[-1]))
    assert main(["compare", *map(str, paths), "-o", str(tmp_path / "s")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("P1_v3.nii.gz: This visit (visit 3) and visit 2, P1_v2.nii.gz, are one outline"
            in out), out
    series = json.loads((tmp_path / "s.json").read_text())
    assert [len(v.get("warnings", [])) for v in series["visits"]] == [0, 0, 1]
    # given twice in a row, the same file is said to be one outline too
    assert main(["compare", *map(str, paths[:2]), str(paths[1]), "-o", str(tmp_path / "t")]) == 0
    assert "and visit 2, P1_v2.nii.gz, are one outline" in " ".join(
        capsys.readouterr().out.split())
    # two visits after a complete response (no tumour in either, one grid) are no file
    # given twice: no warning, on the baseline's side either
    empty = np.zeros((60, 50, 45), np.uint8)
    for name in ("P1_v2", "P1_v3"):
        nib.save(nib.Nifti1Image(empty, grid), str(tmp_path / f"{name}.nii.gz"))
    assert main(["compare", *map(str, paths), "-o", str(tmp_path / "u")]) == 0
    capsys.readouterr()
    series = json.loads((tmp_path / "u.json").read_text())
    assert [len(v.get("warnings", [])) for v in series["visits"]] == [0, 0, 0], series
    nib.save(nib.Nifti1Image(empty, grid), str(paths[0]))
    assert main(["compare", *map(str, paths), "-o", str(tmp_path / "w")]) == 0
    series = json.loads((tmp_path / "w.json").read_text())
    assert not any("one outline" in w for v in series["visits"]
                   for w in v.get("warnings", [])), series


def test_one_outline_and_one_grid_are_judged_as_the_package_judges_a_grid() -> None:
    """compare held two grids one when every affine entry was within 1e-3, where the
    package takes voxel centres within 0.01 mm (io.on_grid): two copies of one map whose
    affines differ by 0.007 mm were said to lie on different grids and were not seen as
    one outline, and one outline stored flipped was not caught at all."""
    from braintumor.followup import checks

    lab = _tumour((60, 50, 45), 2.0, 1.0)
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    near = grid.copy()
    near[0, 3] = 0.007  # a writer's float noise: the same voxels
    one = ("The two label maps are one outline (the same labels on the same grid), so "
           "nothing changed; give the earlier scan's label map.")
    got = checks("P1_seg.nii.gz", "P1_braintumor.nii.gz", lab, grid, lab, near)
    assert got["warnings"] == [one] and got["grids"]["same"] is True
    assert not any("different grids" in n for n in got["notes"])
    # the same outline stored with its first axis reversed (RAS beside LAS)
    flipped = grid.copy()
    flipped[0, 0], flipped[0, 3] = -2.0, 2.0 * (lab.shape[0] - 1)
    got = checks("P1_seg.nii.gz", "P1_braintumor.nii.gz", np.ascontiguousarray(lab[::-1]),
                 flipped, lab, grid)
    assert got["warnings"] == [one], got
    # a map truly moved (half a voxel) is no outline of the other, and lies elsewhere
    moved = grid.copy()
    moved[0, 3] = 1.0
    got = checks("P1_seg.nii.gz", "P1_braintumor.nii.gz", lab, moved, lab, grid)
    assert got["warnings"] == [] and got["grids"]["same"] is False
    # another label in the flipped copy: two outlines
    other = np.ascontiguousarray(lab[::-1]).copy()
    other[30, 25, 22] = L.ED if other[30, 25, 22] != L.ED else L.NCR
    got = checks("P1_seg.nii.gz", "P1_braintumor.nii.gz", other, flipped, lab, grid)
    assert got["warnings"] == []


def _save_map(path: Path, lab: np.ndarray, convention: str,
              affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(L.from_internal(lab, convention),
                             np.eye(4) if affine is None else affine), str(path))
    return path


def test_dotted_output_names_keep_their_dots(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """-o adds .html and .json to the whole name: two dated reports are two pairs of
    files, not one overwritten; a name ending in .html or .json names the pair without it."""
    lab = _tumour((60, 50, 45), 2.0, 1.0)
    b = _save_map(tmp_path / "P1_v1_seg.nii.gz", lab, "brats2021")
    a = _save_map(tmp_path / "P1_v2_seg.nii.gz", _tumour((60, 50, 45), 2.0, 0.9), "brats2021")
    for day in ("2024.03.15", "2024.03.20"):
        assert main(["compare", str(b), str(a), "-o", str(tmp_path / "o" / f"pat_{day}")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "pat_2024.03.15.html", "pat_2024.03.15.json", "pat_2024.03.20.html",
        "pat_2024.03.20.json"]
    assert "wrote" in capsys.readouterr().out
    from braintumor.followup import output_paths

    assert output_paths("r.HTML") == {"json": Path("r.json"), "html": Path("r.html")}
    assert output_paths("d/r.json")["html"] == Path("d/r.html")
    assert output_paths("pat.v2")["json"] == Path("pat.v2.json")


def test_an_output_that_cannot_be_written_is_said_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """-o naming a folder, or below a file, is one sentence (exit 1) before a map is
    read; no file is written beside the folder."""
    import braintumor.followup as fu

    lab = _tumour((60, 50, 45), 2.0, 1.0)
    b = _save_map(tmp_path / "P1_v1_seg.nii.gz", lab, "brats2021")
    a = _save_map(tmp_path / "P1_v2_seg.nii.gz", lab, "brats2021")
    c = _save_map(tmp_path / "P1_v3_seg.nii.gz", lab, "brats2021")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("x")

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the maps were read before -o was checked")

    monkeypatch.setattr(fu, "read_label_map", no_work)
    for out, says in (("outdir", "is a folder"), ("afile/sub", "is not a folder")):
        for scans in ([b, a], [b, a, c]):
            assert main(["compare", *map(str, scans), "-o", str(tmp_path / out)]) == 1
            err = capsys.readouterr().err
            assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".nii.gz")) == [
        "afile", "outdir"]


def test_maps_of_two_conventions_each_read_by_their_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A BraTS 2021 map and a BraTS 2023 one, both named *_seg (2021's name), compare:
    the values that fit only BraTS 2023 win over the name, and a note says so (terminal,
    JSON, HTML). Values that fit no convention, or not the one asked for, are one
    sentence naming the way out."""
    import json as _json

    from braintumor.followup import map_convention, read_label_map

    lab = _tumour((60, 50, 45), 2.0, 1.0)
    old = _save_map(tmp_path / "P1_2021_seg.nii.gz", lab, "brats2021")
    new = _save_map(tmp_path / "P1_2023_seg.nii.gz", _tumour((60, 50, 45), 2.0, 0.8),
                    "brats2023")
    got, _, note = read_label_map(new)
    assert got.max() == L.ET and note is not None and "BraTS 2023" in note
    assert main(["compare", str(old), str(new), "-o", str(tmp_path / "fu")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Note: P1_2023_seg.nii.gz was read as BraTS 2023 labels" in out
    doc = _json.loads((tmp_path / "fu.json").read_text())
    assert doc["notes"][0].startswith("P1_2023_seg.nii.gz was read as BraTS 2023 labels")
    assert doc["volumes"]["ET"]["after"] > 0
    assert "was read as BraTS 2023 labels" in (tmp_path / "fu.html").read_text()
    # BraTS 2021 values under a BraTS 2023 name: the values again
    assert map_convention(L.from_internal(lab, "brats2021"), "auto", "x-seg.nii.gz",
                          "map")[0] == "brats2021"
    # a map whose values fit its name, or fit both: no note
    assert map_convention(np.array([0, 1, 2]), "auto", "x_seg.nii.gz", "map") == \
        ("brats2021", None)
    assert map_convention(np.array([0, 3]), "auto", "x-seg.nii.gz", "map") == \
        ("brats2023", None)
    assert main(["compare", str(old), str(new), "--labels", "brats2021"]) == 2
    err = capsys.readouterr().err
    assert "do not fit the brats2021 convention" in err and "leave --labels out" in err
    assert err.count("\n") == 1
    both = L.from_internal(lab, "brats2021")
    both[0, 0, 0] = 3  # a 3 and a 4: no convention
    nib.save(nib.Nifti1Image(both, np.eye(4)), str(tmp_path / "P1_34_seg.nii.gz"))
    assert main(["compare", str(old), str(tmp_path / "P1_34_seg.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "fit no known convention" in err and err.count("\n") == 1
    assert err.rstrip().endswith("; give a label map in one of them."), err


def test_map_convention_refuses_as_detect_convention_does() -> None:
    """The choice and the values that fit no convention are checked by
    labels.detect_convention, with the way out the comparison names: a map of values
    that are not whole labels, read by a convention asked for, was taken as whole ones."""
    from braintumor.errors import InputError
    from braintumor.followup import map_convention

    with pytest.raises(InputError, match="not whole labels"):
        map_convention(np.array([0.0, 1.5]), "brats2021", "x.nii.gz", "map")
    with pytest.raises(InputError, match=r"do not fit the brats2023 convention asked for "
                                         r"\(allowed: \[0, 1, 2, 3\]\); send labels=auto\.$"):
        map_convention(np.array([0, 4]), "brats2023", "x.nii.gz", "map",
                       choose="send labels=auto")
    assert map_convention(np.array([0, 1, 3]), "msd", "x_seg.nii.gz", "map") == ("msd", None)


@pytest.mark.parametrize("first, second", [
    ("Pat01_preop_seg.nii.gz", "Pat01_postop_seg.nii.gz"),
    ("Pat01_pre-op.nii.gz", "Pat01_post-op.nii.gz"),
    ("Pat01_05-01-2023.nii.gz", "Pat01_12-06-2023.nii.gz"),
    ("Pat01_05012023.nii.gz", "Pat01_2023-06-12.nii.gz"),
    ("Pat01_week12.nii.gz", "Pat01_week24_seg.nii.gz"),
    ("Pat01_month3.nii.gz", "Pat01_6months.nii.gz"),
    ("Pat01_mo3.nii.gz", "Pat01_wk12.nii.gz"),
    ("sub-01_ses-baseline_dseg.nii.gz", "sub-01_ses-followup_dseg.nii.gz"),
    ("sub-01_ses-01_desc-tumor_dseg.nii.gz", "sub-01_ses-02_space-T1w_desc-tumor_dseg.nii.gz"),
    ("Pat01_2023-01-05T10-30.nii.gz", "Pat01_2023-06-12T08-15-00_seg.nii.gz"),
    ("Pat01_20230105T103000.nii.gz", "Pat01_2023_06_12_08_15.nii.gz"),
])
def test_one_patients_common_names_name_one_case(first: str, second: str) -> None:
    from braintumor.followup import case_key

    assert case_key(first) == case_key(second) != "", (case_key(first), case_key(second))


def test_names_of_two_cases_still_differ() -> None:
    """The visit and date words do not eat what names the case."""
    from braintumor.followup import case_key

    assert case_key("Brats18_2013_10_1") != case_key("Brats18_2013_11_1")
    assert case_key("Pat01_preop") != case_key("Pat02_preop")
    assert case_key("smith_m") != case_key("smith_f")
    assert case_key("sub-01_ses-01_dseg.nii.gz") != case_key("sub-02_ses-01_dseg.nii.gz")
    # a bare letter and number, or eight digits alone, may be what names the patient
    for a, b in (("pat_m3_seg", "pat_m4_seg"), ("P_3w", "P_4w"), ("W1_seg", "W10_seg"),
                 ("M01_seg", "M02_seg"), ("12032019", "13032019")):
        assert case_key(a) != case_key(b) and case_key(a) != "", (a, b)


def test_the_terminal_says_the_notes_and_dates_the_files_say(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two maps on different grids: the grid note printed as in the JSON; three: the grid
    note kept per visit (terminal, JSON, HTML), and --dates in the title and a line."""
    fine = _save_map(tmp_path / "P1_v1_seg.nii.gz", _tumour((120, 100, 90), 1.0, 1.0),
                     "brats2021")
    coarse = _save_map(tmp_path / "P1_v2_seg.nii.gz", _tumour((60, 50, 45), 2.0, 0.8),
                       "brats2021", np.diag([2.0, 2, 2, 1]))
    last = _save_map(tmp_path / "P1_v3_seg.nii.gz", _tumour((120, 100, 90), 1.0, 0.7),
                     "brats2021")
    assert main(["compare", str(fine), str(coarse), "-o", str(tmp_path / "two")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    doc = json.loads((tmp_path / "two.json").read_text())
    assert doc["notes"] and all(f"Note: {n}" in out for n in doc["notes"])
    assert "different grids" in out
    assert main(["compare", str(fine), str(coarse), str(last), "--dates",
                 "2024-01-15,2024-04-20,2024-07-01", "-o", str(tmp_path / "s")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Visits, in date order: 2024-01-15 to 2024-07-01 (168 days)" in out
    assert "P1_v2_seg.nii.gz 2024-04-20 (96 days after the baseline)" in out
    assert "Note: P1_v2_seg.nii.gz: The two lie on different grids" in out
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [len(v.get("notes", [])) for v in doc["visits"]] == [0, 1, 0]
    assert doc["notes"] == [f"P1_v2_seg.nii.gz: {doc['visits'][1]['notes'][0]}"]
    assert "different grids" in (tmp_path / "s.html").read_text()


def test_a_decrease_never_reads_as_an_increase(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """139.26 -> 139.16 mL is -0.07 %: cut to 0.1 it keeps its sign (-0.0 %), in the
    terminal, the JSON and the HTML alike; no change at all is unsigned."""
    from braintumor.followup import _pct, table_rows

    down = change(139.257, 139.16, SPD_THRESHOLDS)
    assert down["percent"] == 0 and math_sign(down["percent"]) < 0 and _pct(down) == "-0.0 %"
    up = change(139.16, 139.257, SPD_THRESHOLDS)
    assert _pct(up) == "+0.0 %"
    assert _pct(change(10, 10, SPD_THRESHOLDS)) == "0.0 %"
    assert _pct(change(100, 60, SPD_THRESHOLDS)) == "-40.0 %"
    lab = _tumour((60, 50, 45), 2.0, 1.0)
    less = lab.copy()
    less[tuple(np.argwhere(lab == L.ED)[0])] = 0  # one voxel of edema fewer: -0.0x %
    b = _save_map(tmp_path / "P1_v1_seg.nii.gz", lab, "brats2021")
    a = _save_map(tmp_path / "P1_v2_seg.nii.gz", less, "brats2021")
    assert main(["compare", str(b), str(a), "-o", str(tmp_path / "fu")]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "fu.json").read_text())
    assert math_sign(doc["volumes"]["WT"]["percent"]) < 0
    row = next(r for r in table_rows(doc) if r[0] == "Whole tumour (mL)")
    assert row[4] == "-0.0 %" and "-0.0 %" in out and "+0.0 %" not in out
    assert "<td>-0.0 %</td>" in (tmp_path / "fu.html").read_text()


def math_sign(x: float) -> float:
    import math

    return math.copysign(1.0, x)


def test_a_file_that_is_no_nifti_is_one_sentence(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A text file or a picture given as a label map: the reader's one sentence, none of
    nibabel's lines about the header before it."""
    lab = _save_map(tmp_path / "P1_seg.nii.gz", _tumour((60, 50, 45), 2.0, 1.0), "brats2021")
    (tmp_path / "readme.txt").write_text("These are the scans of patient 1.\n" * 20)
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(600))
    for bad in ("readme.txt", "pic.png"):
        assert main(["compare", str(lab), str(tmp_path / bad)]) == 2
        err = capfd.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "not attempting fix" not in err + caplog.text, caplog.text
