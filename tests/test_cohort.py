"""``predict`` on a cohort: stopped by a signal, gone on with ``--skip-existing``, a
case that fails after an earlier success, duplicate case names, a broken table, a 2D
patient among 3D cases."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import braintumor
from braintumor.cli import main
from braintumor.phantom import make_case, write_case


def _cohort(root: Path, n: int, shape: tuple[int, int, int] = (40, 48, 32)) -> Path:
    for i in range(n):
        write_case(make_case(shape=shape, seed=60 + i, case_id=f"p{i}"), root)
    return root


def _rows(out: Path) -> list[str]:
    with (out / "volumes.csv").open(newline="") as fh:
        return sorted(r["case"] for r in csv.DictReader(fh))


def _signal_after_first_case(cmd: list[str], sig: int) -> tuple[int, str]:
    """Run ``braintumor`` ``cmd`` in a process group of its own, send ``sig`` to the group
    once its first case has ended; its exit status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(braintumor.__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "braintumor", *cmd], env=env, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    assert p.stderr is not None
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.startswith("[1/"):
            os.killpg(p.pid, sig)
            break
    lines += p.stderr.readlines()
    return p.wait(timeout=120), "".join(lines)


@pytest.mark.slow
def test_sigterm_stops_a_serial_run_like_ctrl_c(tmp_path: Path) -> None:
    data, out = _cohort(tmp_path / "data", 6, (64, 64, 48)), tmp_path / "out"
    rc, err = _signal_after_first_case(["predict", str(data), "-o", str(out), "--method",
                                        "watershed"], signal.SIGTERM)
    assert rc == 143, err
    assert "Traceback" not in err and "--skip-existing" in err
    maps = sorted(p.name[: -len(".nii.gz")] for p in out.glob("*.nii.gz"))
    assert maps and maps == _rows(out)  # every label map with its row
    assert not [p for p in out.iterdir() if ".part" in p.name or p.suffix == ".tmp"]
    line = next(x for x in err.splitlines() if x.startswith("interrupted at"))
    assert f"the {len(maps)} case(s) finished before it are written" in line


@pytest.mark.slow
def test_ctrl_c_stops_a_dask_run_keeping_each_finished_row(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    data, out = _cohort(tmp_path / "data", 6, (64, 64, 48)), tmp_path / "out"
    rc, err = _signal_after_first_case(["predict", str(data), "-o", str(out), "--method",
                                        "watershed", "--scheduler", "local:1"], signal.SIGINT)
    assert rc == 130, err
    assert "Traceback" not in err and len(err.splitlines()) < 10, err
    assert any(x.startswith("interrupted: the ") and "--skip-existing" in x
               for x in err.splitlines()), err
    maps = sorted(p.name[: -len(".nii.gz")] for p in out.glob("*.nii.gz"))
    assert maps and maps == _rows(out)
    assert not [p for p in out.iterdir() if ".part" in p.name]


def test_skip_existing_and_an_earlier_result_kept(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, out = _cohort(tmp_path / "data", 2), tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--method", "watershed"]
    assert main(args) == 0
    capsys.readouterr()
    before = (out / "p0.nii.gz").stat().st_mtime_ns
    assert main([*args, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped, its label map and row are in") == 2
    assert (out / "p0.nii.gz").stat().st_mtime_ns == before
    # a case that fails now: its earlier map and row stand, and that is said
    (data / "p1" / "p1_flair.nii.gz").write_bytes(b"broken")
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error: p1"))
    assert line.endswith(f"(the earlier result in {out} is kept)"), line
    assert _rows(out) == ["p0", "p1"]


def test_skip_existing_redoes_a_case_without_its_row(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data, out = _cohort(tmp_path / "data", 2), tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--method", "watershed"]
    assert main(args) == 0
    (out / "volumes.csv").write_text("case,method\np0,watershed\np1,cnn\n")
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "p0: skipped" in err and "p1: skipped" not in err


def test_skip_existing_redoes_a_case_whose_label_map_is_cut_short(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A label map cut short after its run (a copy stopped half way) is no finished case:
    --skip-existing segments it again, and the map reads again."""
    from braintumor.io import load_label_nifti

    data, out = _cohort(tmp_path / "data", 2), tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--method", "watershed"]
    assert main(args) == 0
    raw = (out / "p1.nii.gz").read_bytes()
    (out / "p1.nii.gz").write_bytes(raw[: len(raw) // 2])
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "p0: skipped" in err and "p1: skipped" not in err
    assert "cannot be read" in " ".join(err.split())
    assert load_label_nifti(out / "p1.nii.gz").data.shape == (40, 48, 32)


def test_duplicate_case_names_say_the_files_name_the_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(make_case(shape=(40, 48, 32), seed=1, case_id="same"), tmp_path / "siteA")
    write_case(make_case(shape=(40, 48, 32), seed=2, case_id="same"), tmp_path / "siteB")
    rc = main(["predict", str(tmp_path / "siteA"), str(tmp_path / "siteB"), "-o",
               str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 1
    line = next(x for x in err.splitlines() if "another input of this run" in x)
    assert "files' common prefix" in line and "folders of different names" not in line


def test_a_table_that_is_a_folder_is_one_sentence(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, out = _cohort(tmp_path / "data", 1), tmp_path / "out"
    (out / "volumes.csv").mkdir(parents=True)
    rc = main(["predict", str(data), "-o", str(out), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "input(s) failed" not in err
    assert any("volumes.csv is a folder" in x for x in err.splitlines()), err
    assert (out / "p0.nii.gz").exists()


def test_interrupting_the_first_case_says_none_was_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from braintumor.commands.predict import _say_interrupted

    _say_interrupted(tmp_path, 0, " at p0")
    err = capsys.readouterr().err
    assert "0 case(s)" not in err and "volumes.csv" not in err
    assert err.startswith("interrupted at p0: no case of this run had finished")


def test_a_2d_patient_folder_in_a_3d_dataset_goes_to_the_2d_model(tmp_path: Path) -> None:
    pytest.importorskip("braintumor.slices2d")
    import numpy as np
    from PIL import Image

    from braintumor.commands.predict import _split_inputs

    data = _cohort(tmp_path / "data", 1)
    pat = data / "TCGA_X_1"
    pat.mkdir()
    for n in (1, 2, 3):
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(pat / f"TCGA_X_1_{n}.tif")
    three, two = _split_inputs([str(data)])
    assert three == [data] and two == [pat]


def test_2d_patients_of_one_name_at_two_sites_among_3d_cases_are_two_outputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data set of 3D cases and of 2D patients' folders under sites: each 2D site came
    to the 2D model as a folder of its own, so siteA/P1 and siteB/P1 both went to
    OUTDIR/P1 and the second was refused as a name clash; each keeps its path below the
    data set."""
    from PIL import Image

    data = _cohort(tmp_path / "data", 1)
    for site in ("siteA", "siteB"):
        (data / site / "P1").mkdir(parents=True)
        for n in (1, 2, 3):
            Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(
                data / site / "P1" / f"P1_{n}.png")
    out = tmp_path / "out"
    assert main(["predict", str(data), "-o", str(out), "--method", "watershed"]) == 0, \
        capsys.readouterr().err
    for site in ("siteA", "siteB"):
        assert (out / site / "P1" / "P1_2_mask.png").is_file()
    assert (out / "p0.nii.gz").is_file()


def test_skip_existing_redoes_cases_made_with_other_labels_or_missing_outputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rerun with another --labels convention, or asking for files or columns the first
    run did not write (--report, --diameters), segments those cases again rather than
    keeping outputs that do not match; one with the same settings skips them."""
    data, out = _cohort(tmp_path / "data", 1), tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--method", "watershed"]
    assert main(args) == 0
    with (out / "volumes.csv").open(newline="") as fh:
        assert next(csv.DictReader(fh))["labels"] == "brats2021"
    capsys.readouterr()
    for extra in (["--labels", "brats2023"], ["--labels", "brats2023", "--report"],
                  ["--labels", "brats2023", "--diameters"]):
        assert main([*args, "--skip-existing", *extra]) == 0
        err = capsys.readouterr().err
        assert "p0: skipped" not in err and "segmented again" in err, extra
    with (out / "volumes.csv").open(newline="") as fh:
        assert next(csv.DictReader(fh))["labels"] == "brats2023"
    assert (out / "p0_report.html").exists()
    assert main([*args, "--skip-existing", "--labels", "brats2023", "--report",
                 "--diameters"]) == 0
    assert "p0: skipped" in capsys.readouterr().err


def test_skip_existing_reads_a_table_from_before_the_labels_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row without the labels column: the label map's own values tell (ET 4: 2021; no
    ET: the conventions write the same values)."""
    import nibabel as nib
    import numpy as np

    data, out = _cohort(tmp_path / "data", 1), tmp_path / "out"
    args = ["predict", str(data), "-o", str(out), "--method", "watershed"]
    assert main(args) == 0
    old = "case,method\np0,watershed\n"
    (out / "volumes.csv").write_text(old)
    capsys.readouterr()
    assert main([*args, "--skip-existing", "--labels", "brats2023"]) == 0  # no ET in it
    assert "p0: skipped" in capsys.readouterr().err
    img = nib.load(str(out / "p0.nii.gz"))
    lab = np.asarray(img.dataobj).copy()
    lab[10:12, 10:12, 10:12] = 4  # an ET in 2021's values
    nib.save(nib.Nifti1Image(lab, img.affine, img.header), str(out / "p0.nii.gz"))
    (out / "volumes.csv").write_text(old)
    assert main([*args, "--skip-existing"]) == 0
    assert "p0: skipped" in capsys.readouterr().err
    assert main([*args, "--skip-existing", "--labels", "brats2023"]) == 0
    assert "p0: skipped" not in capsys.readouterr().err


def _args(**kw: object) -> argparse.Namespace:
    """The options of ``braintumor predict`` that decide whether a row is made alike: a
    CNN run with the defaults, changed by ``kw``."""
    base = {"method": "cnn", "fast": False, "tta": False, "uncertainty": False,
            "labels": "brats2021", "report": False, "diameters": False, "dicom_seg": False}
    return argparse.Namespace(**{**base, **kw})


def test_skip_existing_compares_model_mode_and_a_watershed_fallback(tmp_path: Path) -> None:
    """The CNN's rows are told apart by model version and mode (--fast, --tta); a case
    the CNN left to the watershed (no T1) counts as done by a CNN rerun."""
    from braintumor.cases import CaseSource
    from braintumor.commands.predict import _made_alike
    from braintumor.segment import FALLBACK_NOTE

    (tmp_path / "c.nii.gz").write_bytes(b"")  # not read: the row says its labels
    src = CaseSource(case_id="c", kind="brats2021", modality_paths={})

    row = {"case": "c", "method": "cnn", "model": "v2", "mode": "accurate",
           "labels": "brats2021", "warning": ""}
    assert _made_alike(_args(), row, src, tmp_path, "v2")
    assert not _made_alike(_args(), row, src, tmp_path, "v3")  # another --model
    assert not _made_alike(_args(), row, src, tmp_path, None)  # a model of no version
    assert not _made_alike(_args(tta=True), row, src, tmp_path, "v2")
    assert not _made_alike(_args(fast=True), row, src, tmp_path, "v2")
    assert not _made_alike(_args(labels="brats2023"), row, src, tmp_path, "v2")
    assert not _made_alike(_args(method="hybrid"), row, src, tmp_path, "v2")
    mirrored = {**row, "mode": "accurate + mirroring"}
    assert _made_alike(_args(tta=True), mirrored, src, tmp_path, "v2")
    fallback = {**row, "method": "watershed", "model": "", "mode": "",
                "warning": f"the scan has no T1 image, {FALLBACK_NOTE}, tuned for scans"}
    assert _made_alike(_args(), fallback, src, tmp_path, "v2")
    assert _made_alike(_args(method="hybrid", uncertainty=True), fallback, src, tmp_path, "v2")
    assert not _made_alike(_args(), {**fallback, "warning": ""}, src, tmp_path, "v2")


def test_skip_existing_reads_the_fallback_and_the_seg_from_their_columns(
        tmp_path: Path) -> None:
    """Whether the watershed stood in for the method asked, and whether a DICOM SEG could
    be written, are read from the row's ``missing`` and ``dicom_seg`` columns, so a
    reworded warning changes nothing; a row from before those columns is read by the
    words its warning then held."""
    from braintumor.cases import CaseSource
    from braintumor.commands.predict import _made_alike

    (tmp_path / "c.nii.gz").write_bytes(b"")
    src = CaseSource(case_id="c", kind="brats2021", modality_paths={})
    dicom = CaseSource(case_id="c", kind="brats2021", modality_paths={},
                       dicom_reference=(tmp_path, 2, None))

    fallback = {"case": "c", "method": "watershed", "model": "", "mode": "",
                "labels": "brats2021", "missing": "T1", "dicom_seg": "",
                "warning": "no T1: the threshold segmenter took over"}  # words of its own
    assert _made_alike(_args(), fallback, src, tmp_path, "v2")
    assert _made_alike(_args(method="hybrid"), fallback, src, tmp_path, "v2")
    assert not _made_alike(_args(), {**fallback, "missing": ""}, src, tmp_path, "v2")
    old = {"case": "c", "method": "watershed", "labels": "brats2021",  # this release's row
           "warning": "the scan has no T1 image, so it was segmented by the watershed "
                      "alone, tuned for scans without it"}
    assert _made_alike(_args(), old, src, tmp_path, "v2")
    # --dicom-seg: a SEG that could not be written is not asked for again
    seg = {**fallback, "dicom_seg": "not written", "warning": "no SEG: nothing outlined"}
    assert _made_alike(_args(dicom_seg=True), seg, dicom, tmp_path, "v2")
    assert not _made_alike(_args(dicom_seg=True), {**seg, "dicom_seg": "written"}, dicom,
                           tmp_path, "v2")  # its file is gone
    (tmp_path / "c_seg.dcm").write_bytes(b"")
    assert _made_alike(_args(dicom_seg=True), {**seg, "dicom_seg": "written"}, dicom,
                       tmp_path, "v2")
    (tmp_path / "c_seg.dcm").unlink()
    shed = _args(method="watershed", dicom_seg=True)
    assert _made_alike(shed, {**old, "warning": "no DICOM SEG written: no tumour was "
                                                "outlined"}, dicom, tmp_path, None)
    assert not _made_alike(shed, old, dicom, tmp_path, None)


def test_a_fallback_row_counts_only_while_the_case_still_lacks_the_modality(
        tmp_path: Path) -> None:
    """A row saying the watershed stood in for want of a T1 (its ``missing`` column, or
    an older row's warning) skips a CNN rerun only while the case still has no T1: a
    row carried over after the T1 was added, by a release that kept unknown columns,
    sends the case to the CNN, with its model and mode checked. A T1 there but blank
    counts as lacking while its voxels are blank, whatever its date: rewritten the same
    (as a DICOM study's series are on every run) it still lacks; a good T1 restored with
    an old date (``cp -p``, an archive) is a T1."""
    import os

    import nibabel as nib

    from braintumor.cases import CaseSource
    from braintumor.commands.predict import _made_alike

    made = tmp_path / "c.nii.gz"
    made.write_bytes(b"")
    rng = np.random.default_rng(0)
    paths = {}
    for m in ("t1", "t1ce", "t2", "flair"):
        paths[m] = tmp_path / f"c_{m}.nii.gz"
        data = rng.uniform(10, 100, (12, 12, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(paths[m]))
    t1 = paths["t1"]
    os.utime(t1, (made.stat().st_mtime - 60,) * 2)  # older than the label map
    rest = {m: p for m, p in paths.items() if m != "t1"}
    without = CaseSource(case_id="c", kind="brats2021", modality_paths=rest)
    given = CaseSource(case_id="c", kind="brats2021", modality_paths=dict(paths))
    args = _args()
    carried = {"case": "c", "method": "watershed", "model": "", "mode": "",
               "labels": "brats2021", "missing": "T1", "dicom_seg": "", "warning": ""}
    assert _made_alike(args, carried, without, tmp_path, "v2")
    assert not _made_alike(args, carried, given, tmp_path, "v2")
    old = {"case": "c", "method": "watershed", "labels": "brats2021",
           "warning": "the scan has no T1 image, so it was segmented by the watershed "
                      "alone, tuned for scans without it"}
    assert _made_alike(args, old, without, tmp_path, "v2")
    assert not _made_alike(args, old, given, tmp_path, "v2")
    # a CNN row whose missing column a carried-over run left: the CNN's checks still hold
    cnn = {**carried, "method": "cnn", "model": "v1", "mode": "accurate"}
    assert not _made_alike(args, cnn, given, tmp_path, "v2")
    assert _made_alike(args, {**cnn, "model": "v2"}, given, tmp_path, "v2")
    # a T1 there but blank: lacking while its voxels are blank, even written since
    good = nib.load(str(t1)).get_fdata()
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12), np.float32), np.eye(4)), str(t1))
    os.utime(t1, (made.stat().st_mtime + 60,) * 2)  # written anew since the label map
    blank = {**carried, "warning": "the scan's T1 image is blank (one value throughout), "
                                   "so it was segmented by the watershed alone"}
    assert _made_alike(args, blank, given, tmp_path, "v2")
    # a T2 named missing too, but there and not blank: the case is for the CNN now
    assert not _made_alike(args, {**blank, "missing": "T1, T2"}, given, tmp_path, "v2")
    # a good T1 restored with a date older than the label map is a T1 all the same
    nib.save(nib.Nifti1Image(good.astype(np.float32), np.eye(4)), str(t1))
    os.utime(t1, (made.stat().st_mtime - 60,) * 2)
    assert not _made_alike(args, blank, given, tmp_path, "v2")


def test_a_case_without_its_t1_is_recorded_as_such_and_skipped_by_a_cnn_rerun(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The row of a case the watershed segmented for want of its T1 says so in its
    ``missing`` column; a CNN rerun with --skip-existing passes it over whatever its
    warning's words."""
    data, out = _cohort(tmp_path / "data", 1), tmp_path / "out"
    (data / "p0" / "p0_t1.nii.gz").unlink()
    assert main(["predict", str(data), "-o", str(out), "--method", "watershed"]) == 0
    with (out / "volumes.csv").open(newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["missing"] == "T1" and row["dicom_seg"] == ""
    table = (out / "volumes.csv").read_text()
    (out / "volumes.csv").write_text(table.replace("so it was segmented by the watershed "
                                                   "alone", "so the watershed took it"))
    capsys.readouterr()
    assert main(["predict", str(data), "-o", str(out), "--skip-existing"]) == 0
    assert "p0: skipped" in capsys.readouterr().err


def test_skip_existing_leaves_a_file_that_is_no_table_where_it_is(tmp_path: Path) -> None:
    """Deciding what to skip only reads volumes.csv: a file there that is no table is not
    renamed aside outside the table's lock (the run's first write does that)."""
    from braintumor.cases import discover
    from braintumor.commands.predict import _not_done

    data, out = _cohort(tmp_path / "data", 1), tmp_path / "out"
    out.mkdir()
    (out / "volumes.csv").write_text("my notes\n")
    args = _args(method="watershed", model=None)
    assert len(_not_done(args, discover(data), out)) == 1
    assert sorted(p.name for p in out.iterdir()) == ["volumes.csv"]
