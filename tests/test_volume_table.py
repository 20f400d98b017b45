"""``volumes.csv`` as people and other programs leave it: re-saved by a spreadsheet, with
their own columns, not a table at all, or written by two runs at once."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from braintumor.scale import write_volume_table


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_spreadsheet_resaved_table_keeps_its_rows(tmp_path: Path, sep: str) -> None:
    (tmp_path / "volumes.csv").write_text(
        sep.join(["case", "method", "WT_mL"]) + "\n" + sep.join(["old1", "cnn", "12,5"])
        + "\n", encoding="cp1252")
    write_volume_table([{"case": "new", "method": "watershed", "WT_mL": "3.00"}], tmp_path)
    rows = {r["case"]: r for r in _rows(tmp_path / "volumes.csv")}
    assert set(rows) == {"old1", "new"}
    assert rows["old1"]["method"] == "cnn" and rows["old1"]["WT_mL"] == "12,5"


def test_a_users_column_is_kept(tmp_path: Path) -> None:
    write_volume_table([{"case": "a", "method": "cnn"}, {"case": "b", "method": "cnn"}],
                       tmp_path)
    table = tmp_path / "volumes.csv"
    rows = _rows(table)
    fields = [*rows[0].keys(), "reviewer_note"]
    with table.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows([{**r, "reviewer_note": f"checked {r['case']}"} for r in rows])
    write_volume_table([{"case": "b", "method": "watershed"}, {"case": "c", "method": "cnn"}],
                       tmp_path)
    got = {r["case"]: r for r in _rows(table)}
    assert list(_rows(table)[0])[-1] == "reviewer_note"
    assert got["a"]["reviewer_note"] == "checked a"
    assert got["b"]["method"] == "watershed" and got["b"]["reviewer_note"] == "checked b"
    assert got["c"]["reviewer_note"] == ""


def test_a_file_that_is_no_table_is_kept_aside(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "volumes.csv"
    table.write_text("my notes about these patients\nnot a table\n")
    write_volume_table([{"case": "a", "method": "cnn"}], tmp_path)
    assert (tmp_path / "volumes.csv.bak-1").read_text().startswith("my notes")
    assert [r["case"] for r in _rows(table)] == ["a"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "volumes.csv.bak-1" in err


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl lock there")
def test_two_writers_lose_no_row(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = ("import os, sys, time\nfrom braintumor.scale import write_volume_table\n"
            "open(sys.argv[2] + '/ready-' + sys.argv[1], 'w').close()\n"
            "while not os.path.exists(sys.argv[3]):\n    time.sleep(0.001)\n"
            "for i in range(150):\n"
            "    write_volume_table([{'case': f'{sys.argv[1]}_{i:03d}'}], sys.argv[2])\n")
    import time

    import braintumor

    env = {**os.environ, "PYTHONPATH": str(Path(braintumor.__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, tag, str(tmp_path), str(go)],
                              env=env) for tag in ("A", "B")]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both write at once
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(_rows(tmp_path / "volumes.csv")) == 300


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl lock there")
@pytest.mark.parametrize("err", ["EBADF", "ENOLCK", "EINVAL", "EOPNOTSUPP"])
def test_a_folder_that_takes_no_lock_still_gets_its_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        err: str) -> None:
    """NFS (a lock there needs write access, and the folder is opened read-only: EBADF),
    SMB or a file system without locks: the table is written without the lock, said once."""
    import errno
    import fcntl

    from braintumor import scale

    def no_lock(fd: int, op: int) -> None:
        raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)))

    monkeypatch.setattr(fcntl, "flock", no_lock)
    monkeypatch.setattr(scale, "_said_no_lock", set(), raising=False)
    write_volume_table([{"case": "a", "method": "watershed"}], tmp_path)
    write_volume_table([{"case": "b", "method": "watershed"}], tmp_path)
    assert [r["case"] for r in _rows(tmp_path / "volumes.csv")] == ["a", "b"]
    said = capsys.readouterr().err
    assert said.count("does not support file locks") == 1
    assert "do not run two commands into it at once" in said


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl lock there")
def test_a_table_held_too_long_by_another_command_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another command holding the folder's lock (a hung writer): the wait ends, and the
    table is left as it was, in a sentence that says why."""
    import fcntl

    from braintumor import scale

    write_volume_table([{"case": "a", "method": "watershed"}], tmp_path)
    monkeypatch.setattr(scale, "TABLE_LOCK_WAIT_S", 0.3)
    other = os.open(tmp_path, os.O_RDONLY)  # as another process: its own open of the folder
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(OSError, match="another command has held the table for over 0.3 s"):
            write_volume_table([{"case": "b", "method": "watershed"}], tmp_path)
    finally:
        os.close(other)
    assert [r["case"] for r in _rows(tmp_path / "volumes.csv")] == ["a"]
    write_volume_table([{"case": "b", "method": "watershed"}], tmp_path)  # free again
    assert [r["case"] for r in _rows(tmp_path / "volumes.csv")] == ["a", "b"]


def test_the_2d_area_table_takes_turns_at_the_folder_as_volumes_csv_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """areas_2d.csv waits for another writer of the folder (it wrote a fixed temporary
    file, which two runs wrote at once) and is left as it was when that one holds on."""
    import fcntl

    from braintumor import scale
    from braintumor.slices2d import _write_areas

    table = tmp_path / "areas_2d.csv"
    _write_areas(table, [{"picture": str(tmp_path / "a.png"), "mask": "a_mask.png"}])
    monkeypatch.setattr(scale, "TABLE_LOCK_WAIT_S", 0.3)
    other = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(OSError, match="another command has held the table"):
            _write_areas(table, [{"picture": str(tmp_path / "b.png"), "mask": "b_mask.png"}])
    finally:
        os.close(other)
    _write_areas(table, [{"picture": str(tmp_path / "b.png"), "mask": "b_mask.png"}])
    assert [r["mask"] for r in _rows(table)] == ["a_mask.png", "b_mask.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_2d_area_table_keeps_a_spreadsheets_rows_and_columns(tmp_path: Path) -> None:
    """areas_2d.csv re-saved by a spreadsheet (';' between columns, a reader's column
    added) keeps its rows and that column, as volumes.csv does."""
    from braintumor.slices2d import _write_areas

    table = tmp_path / "areas_2d.csv"
    table.write_text("picture;mask;area_px;note\n"
                     f"{tmp_path / 'a.png'};a_mask.png;12;seen by Dr X\n"
                     f"{tmp_path / 'b.png'};b_mask.png;7;redo\n", encoding="utf-8")
    _write_areas(table, [{"picture": str(tmp_path / "b.png"), "mask": "b_mask.png",
                          "area_px": 9}])
    rows = _rows(table)
    assert [(r["mask"], r["area_px"], r["note"]) for r in rows] == [
        ("a_mask.png", "12", "seen by Dr X"), ("b_mask.png", "9", "redo")]
    table.write_text("not a table\n", encoding="utf-8")  # kept aside, not lost
    _write_areas(table, [{"picture": str(tmp_path / "c.png"), "mask": "c_mask.png"}])
    assert (tmp_path / "areas_2d.csv.bak-1").read_text(encoding="utf-8") == "not a table\n"
    assert [r["mask"] for r in _rows(table)] == ["c_mask.png"]
