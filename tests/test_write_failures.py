"""A write that fails part-way (a full disk, a quota, a read-only or failing disk) leaves
every earlier output as it was, no cut-short file under an output's name, and one
sentence that names the file; the exit status says the machine failed (1), not the user."""

from __future__ import annotations

import csv
import errno
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from braintumor import io as bio
from braintumor.cli import main

SHAPE = (12, 11, 9)
AFF = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def _case(root: Path, cid: str = "c1") -> Path:
    d = root / cid
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for m in ("t1", "t1ce", "t2", "flair"):
        nib.save(nib.Nifti1Image(rng.integers(1, 100, SHAPE).astype(np.int16), AFF),
                 str(d / f"{cid}_{m}.nii.gz"))
    return d


def _disk_full_after(text: str) -> Any:
    """A writer that puts ``text`` in its file, then fails as a full disk does."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def _parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".part" in p.name]


def test_files_written_together_go_in_only_when_all_were_written(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OSError), bio.written_together(last=[a]):
        bio.write_replacing(a, lambda tmp: tmp.write_text("new a"))
        assert a.read_text() == "old a"  # not yet in place
        assert bio.pending(a).read_text() == "new a"  # but readable where it is
        bio.write_replacing(b, _disk_full_after("new b, cut"))
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert _parts(tmp_path) == []
    with bio.written_together(last=[a]):
        bio.write_replacing(a, lambda tmp: tmp.write_text("new a"))
        bio.write_replacing(b, lambda tmp: tmp.write_text("new b"))
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert _parts(tmp_path) == []
    # a folder where the block's last file goes: nothing goes in, not the first half
    b.unlink()
    b.mkdir()
    with pytest.raises(OSError) as err, bio.written_together(last=[b]):
        bio.write_replacing(a, lambda tmp: tmp.write_text("newer a"))
        bio.write_replacing(b, lambda tmp: tmp.write_text("newer b"))
    assert err.value.filename == str(b) and "folder" in str(err.value)
    assert a.read_text() == "new a" and b.is_dir()
    assert _parts(tmp_path) == []


def test_a_write_that_fails_names_the_file_not_its_temporary(tmp_path: Path) -> None:
    out = tmp_path / "m.txt"
    with pytest.raises(OSError) as err:
        bio.write_replacing(out, _disk_full_after("cut"))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(out)
    (tmp_path / "d.txt").mkdir()  # a folder where the file goes: the rename fails
    with pytest.raises(OSError) as err:
        bio.write_replacing(tmp_path / "d.txt", lambda tmp: tmp.write_text("x"))
    assert err.value.filename == str(tmp_path / "d.txt")


def _volume_rows(out: Path) -> list[dict[str, str]]:
    with (out / "volumes.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_rerun_whose_report_fails_keeps_the_earlier_map_and_its_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The label map used to be renamed in before the report was written: a full disk at
    the report left the new map with the earlier row, which --skip-existing trusted."""
    from braintumor import report

    d, out = _case(tmp_path / "in"), tmp_path / "out"
    assert main(["predict", str(d), "-o", str(out), "--method", "watershed"]) == 0
    before, rows = (out / "c1.nii.gz").read_bytes(), _volume_rows(out)

    def full_disk(out_dir: Any, case_id: str, *args: Any, **kwargs: Any) -> Any:
        bio.write_replacing(Path(out_dir) / f"{case_id}_report.html",
                            _disk_full_after("<html>cut short"))

    monkeypatch.setattr(report, "write_report", full_disk)
    capsys.readouterr()
    rc = main(["predict", str(d), "-o", str(out), "--method", "watershed", "--report"])
    err = capsys.readouterr().err
    assert (out / "c1.nii.gz").read_bytes() == before and _volume_rows(out) == rows
    assert rc == 1  # the disk failed, not the user
    assert f"{out / 'c1_report.html'}: no space left on device." in err
    assert "the earlier result" in err and "Traceback" not in err
    assert not (out / "c1_report.html").exists() and not (out / "c1_overlay.png").exists()
    assert _parts(out) == []


def test_a_report_cut_short_is_not_taken_for_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--report's page was written in place: a full disk left a truncated page, which
    --skip-existing counted as done. Now the page goes in whole or not at all, and the
    folder's index likewise keeps its earlier version."""
    d, out = _case(tmp_path / "in"), tmp_path / "out"
    assert main(["predict", str(d), "-o", str(out), "--method", "watershed", "--report"]) == 0
    page = (out / "c1_report.html").read_text()
    index = (out / "report_index.html").read_text()
    assert page.rstrip().endswith("</html>")
    real = Path.write_text

    def cut_short(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(".html"):  # half of the page reaches the disk
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", cut_short)
    main(["predict", str(d), "-o", str(out), "--method", "watershed", "--report"])
    assert (out / "c1_report.html").read_text() == page  # the earlier page, whole
    from braintumor.scale import write_report_index

    with pytest.raises(OSError):
        write_report_index(out)
    assert (out / "report_index.html").read_text() == index
    assert _parts(out) == []
    monkeypatch.setattr(Path, "write_text", real)
    (out / "c1_report.html").unlink()  # a page missing (or cut, as before): done again
    capsys.readouterr()
    assert main(["predict", str(d), "-o", str(out), "--method", "watershed", "--report",
                 "--skip-existing"]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert (out / "c1_report.html").read_text().rstrip().endswith("</html>")


def _cut_short_on(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """``Path.write_text`` of a file ending in ``suffix`` puts half its text on the disk,
    then fails as a full disk does."""
    real = Path.write_text

    def cut_short(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(suffix):
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", cut_short)


def _seg(root: Path, cid: str, n: int) -> Path:
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:2 + n, 3:8, 2:6] = 2
    seg[4:6, 4:6, 3:5] = 4
    (root / cid).mkdir(parents=True, exist_ok=True)
    path = root / cid / f"{cid}_seg.nii.gz"
    nib.save(nib.Nifti1Image(seg, AFF), str(path))
    return path


def test_evaluate_on_a_full_disk_keeps_the_earlier_csv_and_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The CSV and JSON were written in place: a full disk left a cut JSON beside an
    empty or new CSV, the earlier run's both lost."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _seg(ref, "c1", 6)
    pred.mkdir()
    _seg(tmp_path / "p", "c1", 4).rename(pred / "c1.nii.gz")
    out = tmp_path / "m.csv"
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out), "--quiet"]
    assert main(args) == 0
    before = out.read_text(), out.with_suffix(".json").read_text()
    _seg(tmp_path / "p", "c1", 8).rename(pred / "c1.nii.gz")  # other numbers this time
    _cut_short_on(monkeypatch, ".json")  # the CSV is written, the JSON is cut
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert (out.read_text(), out.with_suffix(".json").read_text()) == before
    assert _parts(tmp_path) == [] and "Traceback" not in err
    assert rc == 1 and f"{out.with_suffix('.json')}: no space left on device." in err


def test_compare_on_a_full_disk_keeps_the_earlier_pair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """fu.json was cut short while fu.html stayed the earlier run's."""
    a, b = _seg(tmp_path, "a", 4), _seg(tmp_path, "b", 6)
    out = tmp_path / "fu"
    assert main(["compare", str(a), str(b), "-o", str(out)]) == 0
    before = (tmp_path / "fu.json").read_text(), (tmp_path / "fu.html").read_text()
    _cut_short_on(monkeypatch, ".html")  # the JSON is written, the page is cut
    capsys.readouterr()
    rc = main(["compare", str(b), str(a), "-o", str(out)])
    err = capsys.readouterr().err
    assert ((tmp_path / "fu.json").read_text(), (tmp_path / "fu.html").read_text()) == before
    assert _parts(tmp_path) == [] and "Traceback" not in err
    assert rc == 1 and f"{tmp_path / 'fu.html'}: no space left on device." in err


def test_a_folder_where_the_label_map_goes_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """It was found only after segmenting, named the hidden temporary and said the
    earlier result was kept, though it was a folder."""
    from braintumor import segment

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("segmented")

    monkeypatch.setattr(segment, "segment", never)
    d, out = _case(tmp_path / "in"), tmp_path / "out"
    (out / "c1.nii.gz").mkdir(parents=True)
    rc = main(["predict", str(d), "-o", str(out), "--method", "watershed"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(lines) == 1, err  # a file that cannot be written
    assert f"{out / 'c1.nii.gz'} is a folder" in lines[0]
    assert ".part" not in err and "earlier result" not in err


def test_the_sample_case_of_the_demo_is_never_left_cut_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """phantom.write_case saved each scan in place: a full disk left an empty or cut
    ``_t1.nii.gz``, which a rerun read as the sample."""
    from braintumor import phantom

    case = phantom.make_case(shape=(24, 24, 20), case_id="s1")
    real = nib.save

    def cut_short(img: Any, name: str) -> None:
        if "_t1ce" in name:
            Path(name).write_bytes(b"\x1f\x8b cut")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(img, name)

    monkeypatch.setattr(phantom.nib, "save", cut_short)
    monkeypatch.setattr(bio.nib, "save", cut_short)
    with pytest.raises(OSError) as err:
        phantom.write_case(case, tmp_path)
    assert err.value.filename == str(tmp_path / "s1" / "s1_t1ce.nii.gz")
    assert not (tmp_path / "s1" / "s1_t1ce.nii.gz").exists()
    assert _parts(tmp_path) == []


def test_a_full_disk_names_the_output_in_every_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate, compare, demo and export-onnx said only "no space left on device." when
    the error named no file; memory that runs out is the machine's failure too (1)."""
    from braintumor.commands import compare

    a = _seg(tmp_path, "a", 4)

    def full(args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compare, "run", full)
    rc = main(["compare", str(a), str(a), "-o", str(tmp_path / "fu")])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == f"error: {tmp_path / 'fu'}: no space left on device."

    def no_memory(args: Any) -> int:
        raise MemoryError

    monkeypatch.setattr(compare, "run", no_memory)
    rc = main(["compare", str(a), str(a), "-o", str(tmp_path / "fu")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ran out of memory") and "Traceback" not in err


def test_a_case_that_fails_for_want_of_disk_exits_1_not_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One case given alone that failed for a full disk or no memory exited 2, the
    status of a user's mistake."""
    from braintumor import segment

    d = _case(tmp_path / "in")
    for fault in (OSError(errno.ENOSPC, "No space left on device"), MemoryError()):
        def fail(*args: Any, fault: BaseException = fault, **kwargs: Any) -> Any:
            raise fault

        monkeypatch.setattr(segment, "segment", fail)
        out = tmp_path / f"out{type(fault).__name__}"
        assert main(["predict", str(d), "-o", str(out), "--method", "watershed"]) == 1
        assert "Traceback" not in capsys.readouterr().err
    # a mistake in the input alone is still 2
    (d / "c1_flair.nii.gz").unlink()
    (d / "c1_t1ce.nii.gz").unlink()
    assert main(["predict", str(d), "-o", str(tmp_path / "o2"), "--method", "watershed"]) == 2
