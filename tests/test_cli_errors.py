"""Every bad input of the data layer, through the CLI: a non-zero exit, one ``error:``
sentence naming the file and the fault, and no traceback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintumor.cli import main

SHAPE = (12, 11, 9)
AFF = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
MODS = ("t1", "t1ce", "t2", "flair")

needs_predict = pytest.mark.skipif(
    importlib.util.find_spec("braintumor.commands.predict") is None,
    reason="braintumor predict is not built yet")


def _case(root: Path, cid: str = "c1", seg: np.ndarray | None = None) -> Path:
    d = root / cid
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for m in MODS:
        nib.save(nib.Nifti1Image(rng.integers(1, 100, SHAPE).astype(np.int16), AFF),
                 str(d / f"{cid}_{m}.nii.gz"))
    if seg is not None:
        nib.save(nib.Nifti1Image(seg, AFF), str(d / f"{cid}_seg.nii.gz"))
    return d


def _drop_flair(d: Path) -> str:
    (d / "c1_flair.nii.gz").unlink()
    (d / "c1_t1ce.nii.gz").unlink()
    return "FLAIR"


def _other_shape(d: Path) -> str:
    nib.save(nib.Nifti1Image(np.ones((12, 11, 7), np.int16), AFF), str(d / "c1_t2.nii.gz"))
    return "c1_t2.nii.gz"


def _other_affine(d: Path) -> str:
    aff = AFF.copy()
    aff[2, 3] = 5.0
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.int16), aff), str(d / "c1_t2.nii.gz"))
    return "c1_t2.nii.gz"


def _two_d(d: Path) -> str:
    nib.save(nib.Nifti1Image(np.ones((12, 11), np.int16), AFF), str(d / "c1_t1.nii.gz"))
    return "2D"


def _five_d(d: Path) -> str:
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2, 2), np.int16), AFF), str(d / "c1_t1ce.nii.gz"))
    return "5D"


def _garbage(d: Path) -> str:
    (d / "c1_flair.nii.gz").write_bytes(b"\x00garbage" * 50)
    return "c1_flair.nii.gz"


def _truncated(d: Path) -> str:
    p = d / "c1_t2.nii.gz"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return "c1_t2.nii.gz"


def _inf(d: Path) -> str:
    data = np.ones(SHAPE, np.float32)
    data[3, 3, 3] = np.inf
    nib.save(nib.Nifti1Image(data, AFF), str(d / "c1_t1.nii.gz"))
    return "NaN or infinite"


BAD_INPUTS: dict[str, Callable[[Path], str]] = {
    "missing modality": _drop_flair,
    "shape differs": _other_shape,
    "affine differs": _other_affine,
    "2D image": _two_d,
    "5D image": _five_d,
    "unreadable file": _garbage,
    "truncated file": _truncated,
    "infinite voxels": _inf,
}


def _check_one_sentence(err: str, expect: str) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]
    assert lines[0].rstrip().endswith("."), lines[0]


@needs_predict
@pytest.mark.parametrize("fault", sorted(BAD_INPUTS))
def test_predict_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           fault: str) -> None:
    d = _case(tmp_path / "in")
    expect = BAD_INPUTS[fault](d)
    rc = main(["predict", str(d), "-o", str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    # 2 when nothing could be read at all; 1 is predict's "some inputs failed"
    assert rc in (1, 2)
    _check_one_sentence(err, expect)
    assert not list((tmp_path / "out").glob("*.nii.gz")) if (tmp_path / "out").exists() else True


@needs_predict
def test_nan_outside_the_brain_is_read_as_background(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """NaN where a brain-masking tool left no brain: the same outline as zeros there,
    and a note naming the file."""
    from braintumor.phantom import make_case, write_case

    case = make_case(shape=(64, 64, 64), seed=1, case_id="m1")
    write_case(case, tmp_path / "zeros")
    d = write_case(case, tmp_path / "nans")
    flair = next(d.glob("*_flair.nii.gz"))
    img = nib.load(str(flair))
    data = np.asarray(img.dataobj, np.float32)
    data[data == 0] = np.nan
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.float32)
    nib.save(out, str(flair))
    for name in ("zeros", "nans"):
        assert main(["predict", str(tmp_path / name), "-o", str(tmp_path / f"out_{name}"),
                     "--method", "watershed"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"{flair.name}: {int(np.isnan(data).sum())} voxels are NaN" in err
    a = nib.load(str(tmp_path / "out_zeros" / "m1.nii.gz")).get_fdata()
    b = nib.load(str(tmp_path / "out_nans" / "m1.nii.gz")).get_fdata()
    assert a.any() and np.array_equal(a, b)


@needs_predict
@pytest.mark.parametrize("name", ["c1_t2.nii.gz", "c1_t2.nii"])
def test_predict_says_a_corrupt_header_in_its_sentence_alone(tmp_path: Path, name: str) -> None:
    """A modality whose header is no NIfTI's: nibabel's "sizeof_hdr should be 348" and
    "data code 0 not supported" lines came before predict's one sentence (only label maps
    were read with them held back); every NIfTI is opened with them held back now. Seen
    from outside, as a user sees it: nibabel's logger writes to the process's stderr."""
    d = _case(tmp_path / "in")
    (d / "c1_t2.nii.gz").unlink()
    (d / name).write_bytes(bytes(400))
    r = subprocess.run([sys.executable, "-m", "braintumor", "predict", str(d), "-o",
                        str(tmp_path / "out"), "--method", "watershed"],
                       capture_output=True, text=True, timeout=300)
    err = r.stderr
    assert r.returncode in (1, 2), err
    _check_one_sentence(err, f"{name}: not a readable NIfTI file")
    assert "sizeof_hdr" not in err and "not attempting fix" not in err, err
    others = [ln for ln in err.splitlines() if not ln.startswith("error:")]
    assert all(ln.startswith("[1/1] c1: failed") or "input(s) failed" in ln
               for ln in others), err


def _bad_header(path: Path) -> None:
    """A gzipped NIfTI whose header is wrong past its size and magic (a file cut or
    overwritten at the start): nibabel reads on, logging two lines, and then fails."""
    import gzip
    import struct

    head = bytearray(b"no NIfTI header here " * 20)
    head[0:4] = struct.pack("<i", 348)
    head[344:348] = b"n+1\0"
    path.write_bytes(gzip.compress(bytes(head)))


def _predict_err(*args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "braintumor", "predict", *args, "--method",
                        "watershed"], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr


@needs_predict
@pytest.mark.parametrize("given", ["case", "file", "dataset"])
def test_a_corrupt_header_is_said_in_one_sentence_whatever_looks_at_it_first(
        tmp_path: Path, given: str) -> None:
    """The looks at a header before the reading proper (a modality's voxel type, whether
    a file is a 4D case) printed nibabel's "sizeof_hdr should be 348" and "not attempting
    fix" lines before the one sentence; they are the reading's to say, and it says none
    for a file it refuses."""
    d = _case(tmp_path / "in")
    _bad_header(d / "c1_t1.nii.gz")
    alone = tmp_path / "alone"
    alone.mkdir()
    _bad_header(alone / "x.nii.gz")
    target = {"case": d, "file": alone / "x.nii.gz", "dataset": alone}[given]
    rc, err = _predict_err(str(target), "-o", str(tmp_path / "out"))
    assert rc in (1, 2), err
    assert "sizeof_hdr" not in err and "not attempting fix" not in err, err
    assert "Traceback" not in err and len([ln for ln in err.splitlines()
                                           if ln.startswith("error:")]) == 1, err
    if given != "dataset":  # a folder holding no case says that, not the file's fault
        _check_one_sentence(err, "x.nii.gz: not a readable NIfTI file" if given == "file"
                            else "c1_t1.nii.gz: not a readable NIfTI file")


@needs_predict
def test_a_readable_headers_note_is_said_once(tmp_path: Path) -> None:
    """nibabel's line about a readable header ("qform_code 7 not valid") is why the file's
    qform is not used: said once, by the reading, not again by each look before it."""
    d = _case(tmp_path / "in")
    img = nib.load(str(d / "c1_t1.nii.gz"))
    odd = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    odd.header["qform_code"] = 7
    nib.save(odd, str(d / "c1_t1.nii.gz"))
    rc, err = _predict_err(str(d), "-o", str(tmp_path / "out"))
    assert rc == 0, err
    assert err.count("qform_code 7 not valid") == 1, err


def test_a_look_at_a_corrupt_header_logs_nothing(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The header looks that answer "cannot tell" for a file they cannot read (its grid,
    its voxel type) leave nibabel's lines about it to the reading proper."""
    from braintumor.cases import _file_grid, _read_dtype
    from braintumor.io import peek_nifti

    _bad_header(tmp_path / "x.nii.gz")
    assert _file_grid(tmp_path / "x.nii.gz") is None
    assert _read_dtype(tmp_path / "x.nii.gz") is np.float32
    with pytest.raises(Exception, match="not recognized"):
        peek_nifti(tmp_path / "x.nii.gz")
    assert "sizeof_hdr" not in caplog.text and "not attempting fix" not in caplog.text


@needs_predict
def test_missing_modality_names_found_and_missing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    d = _case(tmp_path / "in")
    _drop_flair(d)
    rc = main(["predict", str(d), "-o", str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 2
    _check_one_sentence(err, "missing the T1ce, FLAIR modalities (found: T1, T2)")
    # the run ends with its count of failures, as one that failed in segmentation does
    assert err.splitlines()[-1] == "1 input(s) failed; 0 file(s) written.", err


@needs_predict
def test_cases_refused_when_found_end_with_the_count_and_sentences(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cid in ("c1", "c2"):
        d = _case(tmp_path / "in", cid)
        (d / f"{cid}_flair.nii.gz").unlink()
    rc = main(["predict", str(tmp_path / "in" / "c1"), str(tmp_path / "in" / "c2"), "-o",
               str(tmp_path / "out"), "--method", "watershed"])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 2
    said = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error:")]
    assert len(said) == 2
    assert lines[-3:] == ["2 input(s) failed; 0 file(s) written. Failed:",
                          *(f"  - {s}" for s in said)]


@pytest.mark.parametrize("values", [[0, 1, 3], [0, 7]])
def test_evaluate_label_values_fitting_no_convention(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     values: list[int]) -> None:
    seg = np.zeros(SHAPE, np.uint8)
    seg.flat[: len(values)] = values
    _case(tmp_path / "ref", seg=seg)
    pred = tmp_path / "pred"
    pred.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFF), str(pred / "c1.nii.gz"))
    rc = main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ref"),
               "-o", str(tmp_path / "m.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0
    _check_one_sentence(err, str(max(values)))


def test_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    """The same contract seen from outside: exit status and stderr of ``python -m``."""
    d = _case(tmp_path / "in")
    _drop_flair(d)
    cmd = "predict" if importlib.util.find_spec("braintumor.commands.predict") else "evaluate"
    args = ([cmd, str(d), "-o", str(tmp_path / "out"), "--method", "watershed"]
            if cmd == "predict" else [cmd, "--pred", str(d), "--ref", str(d)])
    r = subprocess.run([sys.executable, "-m", "braintumor", *args], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "FLAIR" in r.stderr


def test_predict_2d_pixel_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--pixel-size`` gives 2D areas in mm^2 too; a wrong one is one sentence, exit 2."""
    s2d = pytest.importorskip("braintumor.slices2d")
    if not s2d.model_available():
        pytest.skip("the 2D model is not installed")
    from PIL import Image

    pic = np.zeros((64, 64), np.uint8)
    pic[16:48, 16:48] = 90
    pic[26:34, 30:40] = 230
    Image.fromarray(pic).save(tmp_path / "s.png")
    rc = main(["predict", str(tmp_path / "s.png"), "-o", str(tmp_path / "out"),
               "--pixel-size", "0.5"])
    err = capsys.readouterr().err
    assert rc == 0 and "mm^2" in err
    table = (tmp_path / "out" / "areas_2d.csv").read_text().splitlines()
    assert table[0].startswith("picture,stack,area_pixels,area_mm2")
    px, mm2 = table[1].split(",")[2:4]
    assert float(mm2) == pytest.approx(0.25 * int(px))
    rc = main(["predict", str(tmp_path / "s.png"), "-o", str(tmp_path / "o2"),
               "--pixel-size", "-1"])
    err = capsys.readouterr().err
    assert rc != 0 and "pixel size" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    # a DICOM slice brings its own pixel size
    pytest.importorskip("pydicom")
    from test_web_support import write_dicom_slice

    write_dicom_slice(tmp_path / "IM7.dcm", pic.astype(np.uint16) * 10, (0.4, 0.4))
    assert main(["predict", str(tmp_path / "IM7.dcm"), "-o", str(tmp_path / "o3")]) == 0
    assert (tmp_path / "o3" / "IM7_mask.png").exists()
    px, mm2 = (tmp_path / "o3" / "areas_2d.csv").read_text().splitlines()[1].split(",")[2:4]
    assert float(mm2) == pytest.approx(0.16 * int(px), abs=0.01)


@needs_predict
def test_a_scan_that_is_not_skull_stripped_is_segmented_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Noise everywhere (no zero background) in 4 mm voxels: 2.5 L of non-zero voxels,
    more than a brain. The labels are written, stderr says why they may be wrong."""
    d = tmp_path / "in" / "c1"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    for m in MODS:
        nib.save(nib.Nifti1Image(rng.integers(1, 100, (34, 34, 34)).astype(np.int16), aff),
                 str(d / f"c1_{m}.nii.gz"))
    rc = main(["predict", str(d), "-o", str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "out" / "c1.nii.gz").exists()
    assert "warning: c1: the scan does not look skull-stripped (2.5 L" in err
    assert "Traceback" not in err
    # a skull-stripped case of the same size says nothing
    case = _case(tmp_path / "in2")
    assert main(["predict", str(case), "-o", str(tmp_path / "out2"), "--method",
                 "watershed"]) == 0
    assert "skull-stripped" not in capsys.readouterr().err


def _stack4d(path: Path, seed: int = 0) -> Path:
    """A 4D NIfTI of the four modalities (Decathlon order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nib.save(nib.Nifti1Image(rng.integers(1, 100, (*SHAPE, 4)).astype(np.int16), AFF),
             str(path))
    return path


@needs_predict
def test_predict_never_overwrites_an_input(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``-o`` the input's own folder: the label map would replace the scan; refused (and
    no empty progress display is left between the error and the summary line)."""
    scan = _stack4d(tmp_path / "r1" / "scan.nii.gz")
    before = scan.read_bytes()
    rc = main(["predict", str(scan), "-o", str(tmp_path / "r1"), "--method", "watershed"])
    out, err = capsys.readouterr()
    assert rc == 2 and scan.read_bytes() == before
    _check_one_sentence(err, "would overwrite the input")
    assert out == "" and "" not in err.splitlines(), err


@needs_predict
def test_predict_batch_goes_on_past_clashes_and_file_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two inputs of one name: the second is refused, not written over the first; a case
    whose output cannot be written (a folder in its way) is one sentence and the next
    case is still written; the exit status says some failed."""
    a = _stack4d(tmp_path / "a" / "scan.nii.gz", seed=1)
    b = _stack4d(tmp_path / "b" / "scan.nii.gz", seed=2)
    c = _stack4d(tmp_path / "c" / "blocked.nii.gz", seed=3)
    d = _stack4d(tmp_path / "d" / "fine.nii.gz", seed=4)
    out = tmp_path / "out"
    (out / "blocked.nii.gz").mkdir(parents=True)
    rc = main(["predict", str(a), str(b), str(c), str(d), "-o", str(out),
               "--method", "watershed", "--uncertainty"])
    err = capsys.readouterr().err
    assert rc == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in err, err
    assert "also case 'scan'" in errors[0] and str(a) in errors[0]
    assert errors[1].startswith("error: blocked: ") and "blocked.nii.gz is a folder" in errors[1]
    assert (out / "scan.nii.gz").exists() and (out / "fine.nii.gz").exists()
    rows = (out / "volumes.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["scan", "fine"]
    assert "watershed gives no probabilities" in err  # --uncertainty has nothing to write


@needs_predict
def test_predict_output_folder_that_cannot_be_used(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    scan = _stack4d(tmp_path / "in" / "scan.nii.gz")
    (tmp_path / "afile").write_text("keep me")
    for target, says in ((tmp_path / "afile", "exists and is not a folder"),
                         (tmp_path / "afile" / "sub", "cannot be made")):
        rc = main(["predict", str(scan), "-o", str(target), "--method", "watershed"])
        assert rc == 1  # a folder that cannot be written, as the README's contract says
        _check_one_sentence(capsys.readouterr().err, says)
    assert (tmp_path / "afile").read_text() == "keep me"


@needs_predict
def test_a_volume_table_saved_by_a_spreadsheet_is_kept(tmp_path: Path) -> None:
    """An earlier ``volumes.csv`` re-saved in a spreadsheet's own encoding (cp1252): its
    rows are kept and the table is written again in UTF-8."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "volumes.csv").write_bytes("case,WT_ml,warning\r\nécho,1.5,\r\n".encode("cp1252"))
    scan = _stack4d(tmp_path / "in" / "scan.nii.gz")
    assert main(["predict", str(scan), "-o", str(out), "--method", "watershed"]) == 0
    rows = (out / "volumes.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("écho,") and rows[2].startswith("scan,")


def test_small_argument_mistakes_are_one_sentence(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse's own usage line and sentence
        main(["demo", "--seed=-1", "-o", str(tmp_path / "d")])
    assert stop.value.code == 2 and "negative" in capsys.readouterr().err
    folder = tmp_path / "visits"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFF), str(tmp_path / "b.nii.gz"))
    assert main(["compare", str(folder), str(tmp_path / "b.nii.gz")]) == 2
    _check_one_sentence(capsys.readouterr().err, "is a folder")


@needs_predict
def test_a_scheduler_that_is_no_address_is_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    scan = _stack4d(tmp_path / "in" / "scan.nii.gz")
    rc = main(["predict", str(scan), "-o", str(tmp_path / "o"), "--method", "watershed",
               "--scheduler", "bogus"])
    assert rc == 2
    _check_one_sentence(capsys.readouterr().err, "give local:N, or a running scheduler's")
    for bad, words in (("local:0", "give local:N with N a whole number"),
                       ("127.0.0.1:1", "could not reach the Dask scheduler")):
        out = tmp_path / f"o-{bad.replace(':', '-')}"
        assert main(["predict", str(scan), "-o", str(out), "--scheduler", bad]) == 2
        _check_one_sentence(capsys.readouterr().err, words)
        assert not out.exists()  # refused before the output folder is made


@needs_predict
def test_a_dataset_goes_on_past_system_files_and_a_broken_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """macOS leaves ._<name> beside every file on a foreign disk: passed over. A case
    folder missing its FLAIR is one error line; the dataset's other case is written."""
    good = _case(tmp_path / "ds", "good")
    (good / "._good_t1.nii.gz").write_bytes(b"\0" * 4096)
    (good / ".DS_Store").write_bytes(b"junk")
    bad = _case(tmp_path / "ds", "bad")
    (bad / "bad_flair.nii.gz").unlink()
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "ds"), "-o", str(out), "--method", "watershed",
               "--report"])
    err = capsys.readouterr().err
    assert rc == 1 and "FLAIR" in err and "._good" not in err
    assert (out / "good.nii.gz").exists() and not (out / "bad.nii.gz").exists()


def test_nifti_read_by_what_it_is_not_its_name(tmp_path: Path) -> None:
    """An uncompressed file named .Nii or .NII, a gzipped one named .nii and an
    uncompressed one named .nii.gz are all read."""
    import gzip

    from braintumor.io import load_nifti

    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), AFF)
    raw = img.to_bytes()
    for name, data in (("a.Nii", raw), ("b.NII", raw), ("c.nii", gzip.compress(raw)),
                       ("d.nii.gz", raw)):
        (tmp_path / name).write_bytes(data)
        vol = load_nifti(tmp_path / name)
        assert np.array_equal(vol.data, np.asarray(img.dataobj)), name


def test_report_index_links_are_url_encoded(tmp_path: Path) -> None:
    from braintumor.scale import write_report_index

    (tmp_path / "volumes.csv").write_text(
        "case,method,WT_mL,warning\nPat#1 a?b 100%,watershed,1,\n")
    (tmp_path / "Pat#1 a?b 100%_report.html").write_text("<html></html>")
    page = write_report_index(tmp_path)
    assert page is not None
    text = page.read_text()
    assert "href='Pat%231%20a%3Fb%20100%25_report.html'" in text
    assert ">Pat#1 a?b 100%<" in text


@needs_predict
def test_error_lines_name_the_input_that_failed(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Two files of one case folder: the clash names the second file given, not the
    case's first file twice. A 2D stack whose pictures differ in size names the odd one."""
    from PIL import Image

    d = _case(tmp_path)
    t1, t2 = d / "c1_t1.nii.gz", d / "c1_t2.nii.gz"
    stack = tmp_path / "pat"
    stack.mkdir()
    for n, size in ((1, 64), (2, 80)):
        Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(stack / f"pat_{n}.png")
    rc = main(["predict", str(t1), str(t2), str(stack), "-o", str(tmp_path / "out"),
               "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"error: {t2}: another input of this run is also case 'c1' ({t1})" in err, err
    assert f"note: {t1} is one file of case c1; the case is segmented from its 4 images" in err
    line = next(x for x in err.splitlines() if "same size" in x)
    assert line.startswith(f"error: {stack / 'pat_2.png'} is 80x80 pixels while pat_1.png "
                           "is 64x64"), line


def test_an_error_line_says_its_case_once() -> None:
    from braintumor.commands.predict import _named

    assert _named("b1", "Case b1: the T1ce image is blank.") == "b1: the T1ce image is blank."
    assert _named("b1", "Case b1 has no T1 image.") == "Case b1 has no T1 image."
    assert _named("b1", "a file is cut short.") == "b1: a file is cut short."


@needs_predict
def test_a_slab_of_a_few_slices_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan of a few slices is segmented, but its volumes are of the slab: the warning
    says so, on stderr and in the volumes table; a whole head is not warned about."""
    import csv

    from braintumor import preprocess

    monkeypatch.setattr(preprocess, "MIN_FIELD_MM", 80.0)
    head = np.zeros((1, 60, 60, 40), np.float32)
    head[:, 10:50, 10:50, 5:35] = 1.0  # a small head with room around it: not a slab
    assert preprocess.coverage_warning(head, (1.0, 1.0, 1.0)) is None
    assert preprocess.coverage_warning(np.ones((1, 48, 48, 30)), (5.0, 5.0, 5.0)) is None
    cut = np.ones((1, 60, 60, 5), np.float32)  # five slices of a brain
    assert "covers only 5 mm" in (preprocess.coverage_warning(cut, (1.0, 1.0, 1.0)) or "")
    slab = _stack4d(tmp_path / "in" / "slab.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", str(slab), "-o", str(out), "--method", "watershed"]) == 0
    said = "the scan covers only"
    assert said in capsys.readouterr().err
    row = next(csv.DictReader((out / "volumes.csv").open()))
    assert said in row["warning"] and "not of the whole tumour" in row["warning"]


@needs_predict
def test_cuda_without_a_gpu_is_one_sentence_before_any_case(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    a, b = _stack4d(tmp_path / "a.nii.gz"), _stack4d(tmp_path / "b.nii.gz", seed=1)
    rc = main(["predict", str(a), str(b), "-o", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("no CUDA GPU is available") == 1, err
    assert not (tmp_path / "out" / "a.nii.gz").exists()


@needs_predict
def test_cnn_options_are_checked_only_where_the_cnn_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--model/--backend apply to 3D cases only and the watershed does not use --device,
    as the warnings say, but 2D pictures with --backend onnx and a checkpoint, or the
    watershed with --device cuda on a machine without a GPU, were refused (exit 2)
    before the run: now each runs, saying the options are not used."""
    import torch
    from PIL import Image

    from braintumor import slices2d

    stack = _stack4d(tmp_path / "in" / "s.nii.gz")
    if not torch.cuda.is_available():
        rc = main(["predict", str(stack), "-o", str(tmp_path / "ws"), "--method",
                   "watershed", "--device", "cuda"])
        err = capsys.readouterr().err
        assert rc == 0 and "no CUDA GPU" not in err, err
        assert "--device applies to the CNN" in err and (tmp_path / "ws" / "s.nii.gz").exists()
    if not slices2d.model_available():
        return
    pic = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(pic)
    checkpoint = tmp_path / "member0.pt"
    checkpoint.write_bytes(b"not used: no 3D case")
    rc = main(["predict", str(pic), "-o", str(tmp_path / "2d"), "--backend", "onnx",
               "--model", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 0 and "checkpoint" not in err, err
    assert "--model, --backend apply to 3D cases only" in err
    assert (tmp_path / "2d" / "pic_mask.png").exists()
    # with a 3D case for the CNN the same options are refused before any case
    rc = main(["predict", str(pic), str(stack), "-o", str(tmp_path / "both"), "--backend",
               "onnx", "--model", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1, err
    assert not (tmp_path / "both").exists()


def test_options_the_inputs_do_not_take_are_said() -> None:
    """A pixel size with only 3D cases, or 3D options with only 2D pictures: one warning
    each, not silence (the run goes on)."""
    import argparse

    from braintumor.commands.predict import _unused_options, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["x", "-o", "o", "--pixel-size", "0.5"])
    assert _unused_options(args, has_3d=True, has_2d=False) == [
        "--pixel-size applies to 2D pictures only; the 3D cases' voxel sizes come from "
        "their files."]
    assert _unused_options(args, has_3d=True, has_2d=True) == []
    args = parser.parse_args(["x", "-o", "o", "--report", "--method", "watershed"])
    said = _unused_options(args, has_3d=False, has_2d=True)
    assert len(said) == 1 and said[0].startswith("--method, --report apply to 3D cases only")
    assert _unused_options(args, has_3d=True, has_2d=True) == []
    assert _unused_options(parser.parse_args(["x", "-o", "o"]), False, True) == []
    # the CNN's runtime, model and device are not the 2D model's either
    args = parser.parse_args(["x", "-o", "o", "--backend", "openvino", "--model", "m.pt",
                              "--device", "cpu"])
    assert _unused_options(args, has_3d=False, has_2d=True) == [
        "--device, --model, --backend apply to 3D cases only; the 2D pictures are outlined "
        "by the 2D model as they always are."]


def test_options_the_watershed_does_not_use_are_said() -> None:
    """--method watershed --fast --tta --backend openvino --model X ran the watershed with
    all four passed over in silence: one warning line for them (and the one for
    --uncertainty), none where the CNN or the hybrid uses them."""
    import argparse

    from braintumor.commands.predict import _unused_options, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    given = ["--fast", "--tta", "--backend", "openvino", "--model", "X", "--device", "cpu"]
    args = parser.parse_args(["x", "-o", "o", "--method", "watershed", *given])
    assert _unused_options(args, has_3d=True, has_2d=False) == [
        "--device, --model, --backend, --fast, --tta apply to the CNN (--method cnn or "
        "hybrid); the watershed does not use them."]
    args = parser.parse_args(["x", "-o", "o", "--method", "watershed", "--uncertainty",
                              "--fast"])
    assert _unused_options(args, has_3d=True, has_2d=False) == [
        "--fast applies to the CNN (--method cnn or hybrid); the watershed does not use it.",
        "--uncertainty: the watershed gives no probabilities, so no uncertainty map is "
        "written (it comes with --method cnn or hybrid)."]
    for method in ("cnn", "hybrid"):
        args = parser.parse_args(["x", "-o", "o", "--method", method, *given])
        assert _unused_options(args, has_3d=True, has_2d=False) == []


def test_a_zipped_nifti_case_and_dataset_on_the_command_line(tmp_path: Path) -> None:
    """``predict case.zip``: a zip of a case folder (or of a dataset of them) is read as
    the folders it was made from, its files' names kept, with the system's own entries
    (``__MACOSX``) passed over; a zip of files named by modality only is a case named
    after the zip."""
    import zipfile

    from braintumor.cli import main
    from braintumor.phantom import make_case, write_case

    cases = [make_case(shape=(64, 64, 64), seed=s, case_id=f"Z{s}") for s in (1, 2)]
    folders = [write_case(c, tmp_path / "src", with_label=False) for c in cases]
    one = tmp_path / "one.zip"
    with zipfile.ZipFile(one, "w") as z:
        for f in folders[0].iterdir():
            z.write(f, f"{folders[0].name}/{f.name}")
        z.writestr("__MACOSX/._junk.nii.gz", b"not a scan")
    both = tmp_path / "dataset.zip"
    with zipfile.ZipFile(both, "w") as z:
        for folder in folders:
            for f in folder.iterdir():
                z.write(f, f"data/{folder.name}/{f.name}")
    plain = tmp_path / "visit3.zip"
    series = {"_t1.": "3_AX_T1.", "_t1ce.": "4_AX_T1_POST_GAD.", "_t2.": "5_AX_T2.",
              "_flair.": "7_AX_T2_FLAIR."}
    with zipfile.ZipFile(plain, "w") as z:
        for f in folders[1].iterdir():
            key = next(k for k in series if k in f.name)
            z.write(f, f.name.replace(f"Z2{key}", series[key]))
    out = tmp_path / "out"
    for zipped, names in ((one, ["Z1"]), (both, ["Z1", "Z2"]), (plain, ["visit3"])):
        assert main(["predict", str(zipped), "-o", str(out / zipped.stem),
                     "--method", "watershed"]) == 0, zipped
        written = sorted(p.name for p in (out / zipped.stem).glob("*.nii.gz"))
        assert written == [f"{n}.nii.gz" for n in names], written
        assert not [p for p in (out / zipped.stem).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("option", ["--ttl-hours", "--max-upload-mb", "--workers", "--threads",
                                    "--job-timeout-min"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_serve_refuses_limits_that_are_not_above_zero(
        option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:  # before any folder, port or model is touched
        main(["serve", f"{option}={value}"])
    assert stop.value.code == 2
    assert f"{option}: {value} is not a number above 0" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_one_sentence_before_the_link(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    pytest.importorskip("uvicorn")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["serve", "--port", str(port), "--data-dir", str(tmp_path / "web")])
    out, err = capsys.readouterr()
    assert rc == 1 and "http://" not in out
    _check_one_sentence(err, f"port {port} on 127.0.0.1 is already in use")
    assert main(["serve", "--host", "10.255.255.254", "--data-dir", str(tmp_path / "web")]) == 2
    _check_one_sentence(capsys.readouterr().err, "not an address of this machine")


def test_serve_without_the_web_extra_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from braintumor.commands.serve import check_web_extra
    from braintumor.errors import InputError

    # python_multipart too: every upload imports it, so a server without it started and
    # failed at the first upload
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "python_multipart", None)
        with pytest.raises(InputError, match=r"\(no python_multipart\)"):
            check_web_extra()
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert main(["serve", "--data-dir", str(tmp_path / "web")]) == 2
    _check_one_sentence(capsys.readouterr().err, "pip install 'braintumor[web]'")
    assert not (tmp_path / "web").exists()  # said before anything is made
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "Needs the [web] extra" in " ".join(capsys.readouterr().out.split())


def test_serve_data_folder_that_cannot_be_used_is_said_as_predict_says_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    (tmp_path / "afile").write_text("keep me")
    for target, says in ((tmp_path / "afile", "exists and is not a folder"),
                         (tmp_path / "afile" / "sub", "the data folder cannot be made")):
        rc = main(["serve", "--data-dir", str(target), "--port", "8798"])
        assert rc == 1  # a folder that cannot be written: status 1, as for predict's
        _check_one_sentence(capsys.readouterr().err, f"{target}: {says}")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_search_without_the_track_extra_names_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    study = Path(__file__).resolve().parents[1] / "configs" / "study_search.yaml"
    assert main(["experiment", "--config", str(study)]) == 2
    _check_one_sentence(capsys.readouterr().err, "pip install 'braintumor[track]'")


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


@needs_predict
def test_predict_interrupted_keeps_finished_cases_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a cohort's third case: the two cases finished before it keep their
    label maps and their volumes.csv rows (with an earlier run's row), and nothing
    half-written is left in the output folder."""
    import braintumor.segment as segment_module

    for cid in ("c1", "c2", "c3"):
        _case(tmp_path / "ds", cid)
    out = tmp_path / "out"
    out.mkdir()
    (out / "volumes.csv").write_text("case,WT_mL\nearlier,1.00\n")
    real = segment_module.segment

    def stopped_at_c3(case: object, *args: object, **kwargs: object) -> object:
        if getattr(case, "case_id", "") == "c3":
            raise KeyboardInterrupt
        return real(case, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(segment_module, "segment", stopped_at_c3)
    assert main(["predict", str(tmp_path / "ds"), "-o", str(out), "--method",
                 "watershed"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at c3: the 2 case(s) finished before it are written" in err
    rows = (out / "volumes.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["earlier", "c1", "c2"]
    assert sorted(p.name for p in out.iterdir()) == ["c1.nii.gz", "c2.nii.gz", "volumes.csv"]


@needs_predict
def test_predict_interrupted_while_the_model_loads_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the CNN is loaded to be compiled ahead of the first case: the run
    says that no case had finished and how to go on, as during a case."""
    import braintumor.inference as inference

    _case(tmp_path / "ds", "c1")

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "warm_model", stopped)
    assert main(["predict", str(tmp_path / "ds"), "-o", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted at c1: no case of this run had finished" in err
    assert "--skip-existing" in err


def test_label_map_stopped_mid_write_leaves_the_earlier_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A label map whose writing is stopped half-way (Ctrl-C, a full disk) leaves the
    earlier file whole, and no partial file beside it."""
    from braintumor.io import save_label_nifti

    target = save_label_nifti(np.ones(SHAPE, np.uint8), tmp_path / "c1.nii.gz", affine=AFF)
    before = target.read_bytes()

    def half_write(img: object, filename: str) -> None:
        Path(filename).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_label_nifti(np.zeros(SHAPE, np.uint8), target, affine=AFF)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c1.nii.gz"]


@needs_predict
def test_predict_log_lines_and_failures_summed_up_at_the_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stderr not a terminal (a log file): a plain line per case as it ends, no bars or
    control characters; the run ends by listing every failure with its sentence."""
    _case(tmp_path / "ds", "c1")
    bad = _case(tmp_path / "ds", "c2")
    (bad / "c2_flair.nii.gz").write_bytes((bad / "c2_flair.nii.gz").read_bytes()[:200])
    _case(tmp_path / "ds", "c3")
    rc = main(["predict", str(tmp_path / "ds"), "-o", str(tmp_path / "out"), "--method",
               "watershed"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "\x1b" not in err and "━" not in err and "\r" not in err
    lines = err.splitlines()
    progress = [ln.split(" (")[0] for ln in lines if ln.startswith("[")]
    assert progress == ["[1/3] c1: done", "[2/3] c2: failed", "[3/3] c3: done"]
    (said,) = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    assert said.startswith("c2: ") and "truncated or corrupt" in said
    assert lines[-2:] == ["1 input(s) failed; 3 file(s) written. Failed:", f"  - {said}"]


@needs_predict
def test_predict_channels_that_are_no_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    four = tmp_path / "case4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 4), np.float32), AFF), str(four))
    code = main(["predict", str(four), "-o", str(tmp_path / "out"), "--channels", "t1,t2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--channels: names the channels t1, t2;" in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_warnings_are_joined_without_a_full_stop_before_the_semicolon() -> None:
    from braintumor.errors import join_warnings

    assert join_warnings(None, "", "one") == "one"
    assert join_warnings("the T2 is missing.", None, "The whole tumour is large.") == \
        "the T2 is missing; The whole tumour is large."
    assert join_warnings() == ""


def test_a_predict_that_writes_nothing_leaves_no_output_folder_of_its_making(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input is one sentence and status 2; the output folder the run would
    have made is not left behind empty, while a folder that was there stays."""
    out = tmp_path / "new" / "out"
    assert main(["predict", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not out.exists() and not out.parent.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["predict", str(tmp_path / "nothing"), "-o", str(kept)]) == 2
    assert kept.is_dir()


def test_compare_and_evaluate_that_write_nothing_leave_no_folder_of_their_making(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``compare`` and ``evaluate`` make ``-o``'s folders before any work (to say at once
    that one cannot be written); a run that then failed left them behind empty, as only
    ``predict`` cleaned up after itself. A folder that was there stays."""
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    out = tmp_path / "new" / "sub" / "report"
    assert main(["compare", str(bad), str(bad), "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    ref = tmp_path / "ref"
    ref.mkdir()
    csv_out = tmp_path / "made" / "deeper" / "m.csv"
    rc = main(["evaluate", "--pred", str(tmp_path / "nothing"), "--ref", str(ref),
               "-o", str(csv_out), "--quiet"])
    assert rc != 0 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "made").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["compare", str(bad), str(bad), "-o", str(kept / "report")]) == 2
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_a_zip_is_not_unpacked_for_a_cnn_that_cannot_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A model that is none (or ``--device cuda`` without a GPU) is refused before a
    zipped study or case is unpacked: a large study would cost its whole extraction
    first."""
    import zipfile

    import braintumor.commands.predict as predict_cmd
    from braintumor.phantom import make_case, write_case

    folder = write_case(make_case(shape=(32, 32, 32), seed=1, case_id="Z1"), tmp_path / "src",
                        with_label=False)
    zipped = tmp_path / "case.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"{folder.name}/{f.name}")
    unpacked: list[Path] = []
    real = predict_cmd._unzip_study

    def spy(zip_path: Path, into: Path) -> Path:
        unpacked.append(zip_path)
        return real(zip_path, into)

    monkeypatch.setattr(predict_cmd, "_unzip_study", spy)
    out = tmp_path / "out"
    assert main(["predict", str(zipped), "-o", str(out), "--model",
                 str(tmp_path / "no_model")]) == 2
    assert "error:" in capsys.readouterr().err
    assert unpacked == [] and not out.exists()


@needs_predict
def test_an_unreadable_zip_alone_ends_with_the_count(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    rc = main(["predict", str(bad), "-o", str(tmp_path / "out"), "--method", "watershed"])
    err = capsys.readouterr().err
    assert rc == 2
    _check_one_sentence(err, "bad.zip")
    assert err.splitlines()[-1] == "1 input(s) failed; 0 file(s) written.", err
