"""The web server when its environment fails: a disk that fills while a job runs, a job
database that cannot be opened, a finished job's files removed underneath it, a result
fetched when nothing more can be written. Each answers one sentence, and the server goes
on working once the trouble is gone.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from braintumor.web import create_app  # noqa: E402
from test_web_support import (  # noqa: E402
    wait_done,
)

DB_FULL = "database or disk is full"


def _four(files: dict[str, Path]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (p.name, p.read_bytes())) for m, p in files.items() if m != "seg"]


def _upload(c: TestClient, files: dict[str, Path]) -> str:
    r = c.post("/api/jobs", files=_four(files), data={"method": "threshold"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _wait(cond: Any, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_a_disk_filling_while_a_job_runs_fails_that_job_and_the_next_one_runs(
        methods: None, case_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills as a job runs: its progress cannot be recorded, its label map cannot
    be written, nor its failure. The slot survives; once there is room the job is recorded
    as failed, with the disk-full sentence, and a job queued meanwhile runs."""
    import braintumor.cases
    from braintumor.web.worker import DISK_FULL_JOB

    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    store = app.state.store
    pool = app.state.pool
    full = threading.Event()
    seen: list[str] = []

    def filling(real: Any, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "set_progress" and not seen:
                full.set()  # the disk fills once the first job is under way
            # the worker's writes fail; the second upload's came in just before
            if full.is_set() and threading.current_thread().name.startswith("braintumor-slot"):
                seen.append(name)
                raise sqlite3.OperationalError(DB_FULL)
            return real(*args, **kwargs)
        return call

    for name in ("set_progress", "update", "finish", "claim_next"):
        monkeypatch.setattr(store, name, filling(getattr(store, name), name))
    real_write = braintumor.cases.write_label_map

    def write(*args: Any, **kwargs: Any) -> Any:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(braintumor.cases, "write_label_map", write)
    with TestClient(app) as c:
        first = _upload(c, case_files)
        _wait(lambda: "finish" in seen)  # its failure could not be recorded
        second = _upload(c, case_files)  # accepted while the first is still unsettled
        assert c.get(f"/api/jobs/{first}").json()["status"] == "running"
        assert all(t.is_alive() for t in pool._threads)
        full.clear()  # room again
        job = wait_done(c.get, first, timeout=30)
        assert job["status"] == "failed" and job["message"] == DISK_FULL_JOB
        job = wait_done(c.get, second, timeout=60)
        assert job["status"] == "done", job
        assert all(t.is_alive() for t in pool._threads)


def test_a_job_outcome_the_store_could_not_record_is_recorded_later(
        methods: None, case_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that finished while the database could not be written (its files were) is
    recorded as done, with its result, once the database can be written again."""
    app = create_app(tmp_path / "d", token="", isolation="thread", warm=False)
    store = app.state.store
    full = threading.Event()
    full.set()
    tries: list[int] = []
    real_finish = store.finish

    def finish(*args: Any, **kwargs: Any) -> Any:
        if full.is_set():
            tries.append(1)
            raise sqlite3.OperationalError(DB_FULL)
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish", finish)
    with TestClient(app) as c:
        jid = _upload(c, case_files)
        _wait(lambda: len(tries) >= 2)  # tried, and tried again
        full.clear()
        job = wait_done(c.get, jid, timeout=30)
        assert job["status"] == "done" and job["result"]["kind"] == "3d", job
        assert c.get(job["urls"]["download"]).status_code == 200


def _serve(data_dir: Path) -> int:
    from braintumor.cli import main
    from test_web_support import free_port

    return main(["serve", "--data-dir", str(data_dir), "--port", str(free_port())])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "folder"])
def test_serve_with_a_damaged_job_database_is_one_sentence_and_keeps_the_file(
        tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "jobs.sqlite3"
    if damage == "garbage":
        db.write_bytes(bytes(range(256)) * 20)
    elif damage == "truncated":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE x (a)")
        con.executemany("INSERT INTO x VALUES (?)", [("a" * 1000,)] * 200)
        con.commit()
        con.close()
        whole = db.read_bytes()
        db.write_bytes(whole[:len(whole) // 2])
    else:
        db.mkdir()
    before = db.read_bytes() if db.is_file() else None
    assert _serve(data) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(db) in err and "move it aside" in err, err
    if before is not None:
        assert db.read_bytes() == before  # the user's file, as it was
    else:
        assert db.is_dir()


def _serve_says_locked(data: Path, other: sqlite3.Connection,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """serve on ``data``, whose job database ``other`` holds locked: it stops within 10 s
    with the sentence naming the lock, no traceback; ``other`` is closed after."""
    try:
        t0 = time.monotonic()
        assert _serve(data) != 0
        assert time.monotonic() - t0 < 10
    finally:
        other.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "locked by another program" in err and "stop that program" in err, err


def test_serve_with_a_job_database_locked_by_another_program_says_so_soon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import braintumor.web.store as web_store

    monkeypatch.setattr(web_store, "OPEN_WAIT_S", 0.5)
    data = tmp_path / "data"
    data.mkdir()
    other = sqlite3.connect(data / "jobs.sqlite3", isolation_level=None)
    other.execute("CREATE TABLE t (a)")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO t VALUES (1)")
    _serve_says_locked(data, other, capsys)
    # a database a server made (WAL mode), whose writing another program holds: the
    # reads of the check pass it, so the check writes too, and meets the lock there
    wal = tmp_path / "wal"
    from braintumor.web.store import JobStore

    store = JobStore(wal)
    store.create("3d", "watershed")
    store.close()
    other = sqlite3.connect(wal / "jobs.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE jobs SET message = 'x'")
    _serve_says_locked(wal, other, capsys)


@pytest.fixture(scope="module")
def server(methods: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(tmp_path_factory.mktemp("data"), token="", isolation="thread",
                     warm=False)
    with TestClient(app) as c:
        yield c


def _done(c: TestClient, files: dict[str, Path]) -> dict[str, Any]:
    job = wait_done(c.get, _upload(c, files))
    assert job["status"] == "done", job
    return job


def _one_sentence(r: Any, status: int, text: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert text in detail and "Traceback" not in r.text, (r.url, detail)


def test_a_finished_job_whose_files_were_removed_says_so(
        server: TestClient, case_files: dict[str, Path]) -> None:
    """Files removed under a finished job: every fetch is a 404 that says so (no 500, no
    connection dropped), and the job no longer claims to have results."""
    from braintumor.web.app import FILES_GONE

    store = server.app.state.store  # type: ignore[attr-defined]
    for whole in (False, True):
        job = _done(server, case_files)
        urls = job["urls"]
        job_dir = store.job_dir(job["id"])
        if whole:
            import shutil

            shutil.rmtree(job_dir)
        else:
            (job_dir / "output" / "labels_v0.nii.gz").unlink()
            (job_dir / "input" / "flair.nii.gz").unlink()
        for url in (urls["overlay"], urls["images"]["flair"], urls["download"],
                    urls["download"] + "?convention=brats2023", urls["report_html"],
                    urls["report_pdf"], f"/api/jobs/{job['id']}/report/v0/axial.png",
                    urls["diameters"]):
            _one_sentence(server.get(url), 404, FILES_GONE)
        now = server.get(urls["self"]).json()
        assert now["status"] == "failed" and now["message"] == FILES_GONE, now
        assert now["result"]["files_gone"] is True
        assert "download" not in now["urls"] and "overlay" not in now["urls"]
        assert server.delete(urls["self"]).status_code == 204


def test_a_finished_job_whose_inputs_were_removed_says_so_and_keeps_its_outline(
        server: TestClient, case_files: dict[str, Path]) -> None:
    """The input folder removed under a finished job (its label maps kept): what needs the
    scans (the viewer's images, the reports, a correction) is a 404 that says the files
    are gone, naming no path of the server's; the outline still downloads."""
    import shutil

    from braintumor.web.app import FILES_GONE

    store = server.app.state.store  # type: ignore[attr-defined]
    job = _done(server, case_files)
    urls = job["urls"]
    job_dir = store.job_dir(job["id"])
    shutil.rmtree(job_dir / "input")
    # the scans read ahead for a correction are not held (as after a restart)
    corrector = server.app.state.corrector  # type: ignore[attr-defined]
    _wait(lambda: job["id"] not in corrector._loading)
    corrector.forget(job["id"])
    seeds = {"seeds": [{"x": 10, "y": 10, "z": 10, "label": 0}]}
    for r in (server.get(urls["images"]["flair"]), server.get(urls["report_html"]),
              server.get(urls["report_pdf"]),
              server.get(f"/api/jobs/{job['id']}/report/v0/axial.png"),
              server.post(urls["corrections"], json=seeds)):
        _one_sentence(r, 404, FILES_GONE)
        assert str(store.data_dir) not in r.text and "input/" not in r.text, r.text
    # the report opened in a tab says it on a page
    tab = server.get(urls["report_html"], headers={"sec-fetch-dest": "document"})
    assert tab.status_code == 404 and tab.headers["content-type"].startswith("text/html")
    assert "no longer on the server" in tab.text and str(store.data_dir) not in tab.text
    got = server.get(urls["download"])
    assert got.status_code == 200 and got.content
    assert server.get(urls["self"]).json()["status"] == "done"
    assert server.delete(urls["self"]).status_code == 204


def test_a_finished_result_is_fetched_from_memory_when_the_disk_is_full(
        server: TestClient, case_files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A download or report made at its first fetch, on a disk too full (or read-only) to
    keep it, is made in memory and sent; nothing is left in the job's folder; what cannot
    be made says so in words that fit a fetch."""
    from PIL import Image

    import braintumor.web.app as web_app

    job = _done(server, case_files)
    urls = job["urls"]
    out = server.app.state.store.job_dir(job["id"]) / "output"  # type: ignore[attr-defined]
    before = sorted(p.name for p in out.iterdir())
    real_save = Image.Image.save

    def full(code: int) -> Any:
        def fail(*_: Any, **__: Any) -> Any:
            raise OSError(code, "No space left on device")
        return fail

    def save(self: Any, fp: Any, *args: Any, **kwargs: Any) -> Any:
        if str(fp).startswith(str(out)):  # the data folder is full, the system's not
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return real_save(self, fp, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(web_app, "write_replacing", full(errno.ENOSPC))
        mp.setattr(web_app, "save_whole", full(errno.EROFS))
        mp.setattr(Image.Image, "save", save)
        got = server.get(urls["download"] + "?convention=brats2023")
        assert got.status_code == 200, got.text
        assert "brats2023" in got.headers["content-disposition"]
        pdf = server.get(urls["report_pdf"])
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF"), pdf.text
        page = server.get(urls["report_html"])
        assert page.status_code == 200 and page.text.count("data:image/png") >= 3
        assert server.get(urls["diameters"]).status_code == 200
        assert sorted(p.name for p in out.iterdir()) == before  # nothing kept
        # a key slice picture is a file of its own: it says why it cannot be made
        r = server.get(f"/api/jobs/{job['id']}/report/v0/axial.png")
        _one_sentence(r, 507, "the file could not be prepared")
        assert "upload" not in r.json()["detail"]
    kept = server.get(urls["download"] + "?convention=brats2023")  # room again: kept
    assert kept.status_code == 200 and kept.content
    import gzip

    assert gzip.decompress(kept.content) == gzip.decompress(got.content)
    assert server.get(urls["report_pdf"]).status_code == 200
