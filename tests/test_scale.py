"""Batch inference on a real Dask cluster: a local one started by the project, and a
running scheduler reached by its address."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from braintumor.cases import discover, load_case  # noqa: E402
from braintumor.cli import main  # noqa: E402
from braintumor.errors import InputError  # noqa: E402
from braintumor.io import load_label_nifti  # noqa: E402
from braintumor.phantom import make_case, write_case  # noqa: E402
from braintumor.scale import predict_many, run_case, summary  # noqa: E402
from braintumor.segment import segment  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic cases and one whose FLAIR file is not a NIfTI image."""
    root = tmp_path_factory.mktemp("scale") / "data"
    for i in range(4):
        write_case(make_case(shape=(40, 48, 32), seed=40 + i, case_id=f"case{i}"), root)
    (root / "case3" / "case3_flair.nii.gz").write_bytes(b"not an image")
    return root


def _check_run(dataset: Path, out: Path, outcomes: list) -> None:
    by_id = {o.case_id: o for o in outcomes}
    assert [o.case_id for o in outcomes] == [f"case{i}" for i in range(4)]
    assert not by_id["case3"].ok and "case3_flair" in str(by_id["case3"].error)
    assert not (out / "case3.nii.gz").exists()
    for i in range(3):
        o = by_id[f"case{i}"]
        assert o.ok and Path(str(o.path)) == (out / f"case{i}.nii.gz").resolve()
        case = load_case(dataset / f"case{i}", with_label=False)
        # the same labels as the serial door gives, on the input's grid
        want = segment(case, "watershed").labels
        got = load_label_nifti(out / f"case{i}.nii.gz")
        assert got.data.shape == case.shape and np.allclose(got.affine, case.affine)
        assert np.array_equal(np.where(got.data == 4, 3, got.data), want)
    s = summary(outcomes)
    assert s["written"] == 3 and len(s["failed"]) == 1


def test_paths_are_discovered_into_cases(dataset: Path, tmp_path: Path) -> None:
    from braintumor.scale import as_sources

    ids = [s.case_id for s in discover(dataset)]
    assert [s.case_id for s in as_sources(dataset)] == ids
    assert [s.case_id for s in as_sources(str(dataset))] == ids
    mixed = as_sources([dataset / "case0", str(dataset / "case2"), discover(dataset)[1]])
    assert [s.case_id for s in mixed] == ["case0", "case2", "case1"]
    with pytest.raises(InputError, match="no such file or folder"):
        as_sources([tmp_path / "nope"])
    with pytest.raises(InputError, match="neither a path nor a case"):
        as_sources([42])  # type: ignore[list-item]


def test_local_cluster_writes_every_case_and_reports_the_broken_one(dataset: Path,
                                                                   tmp_path: Path) -> None:
    seen: list[str] = []
    out = tmp_path / "out"
    # a dataset folder as it is: its cases are discovered
    outcomes = predict_many(dataset, out, "watershed", scheduler="local:2",
                            on_done=lambda o: seen.append(o.case_id))
    assert sorted(seen) == [f"case{i}" for i in range(4)]
    _check_run(dataset, out, outcomes)
    assert all(":" in o.worker for o in outcomes)


def test_running_scheduler_by_address(dataset: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        out = tmp_path / "out"
        outcomes = predict_many(discover(dataset), out, "watershed",
                                scheduler=cluster.scheduler_address)
        _check_run(dataset, out, outcomes)
        assert len({o.worker for o in outcomes}) == 1  # the one worker of that cluster


def test_bad_scheduler_is_one_sentence(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="local:N"):
        predict_many(discover(dataset), tmp_path, scheduler="local:x")
    with pytest.raises(InputError, match="could not reach the Dask scheduler"):
        predict_many(discover(dataset), tmp_path, scheduler="127.0.0.1:9", timeout=2)


def test_run_case_in_process_turns_errors_into_outcomes(dataset: Path, tmp_path: Path) -> None:
    srcs = {s.case_id: s for s in discover(dataset)}
    bad = run_case(srcs["case3"], str(tmp_path), "watershed")
    assert not bad.ok and bad.path is None and "\n" not in str(bad.error)
    good = run_case(srcs["case0"], str(tmp_path), "watershed", labels="brats2023")
    assert good.ok and set(np.unique(load_label_nifti(str(good.path)).data)) <= {0, 1, 2, 3}
    assert good.warning is None and good.row is not None
    assert good.row["agree_WT"] == "" and good.row["warning"] == ""  # the watershed: no pair
    # a case with a noisy background in 4 mm voxels (3.9 L non-zero): written, with a warning
    case = make_case(shape=(40, 48, 32), seed=45, case_id="head")
    rng = np.random.default_rng(0)
    case.image = case.image + 1.0 + rng.random(case.image.shape).astype(np.float32)
    case.affine = np.diag([4.0, 4.0, 4.0, 1.0])
    case.spacing = (4.0, 4.0, 4.0)
    case.header.set_zooms((4.0, 4.0, 4.0))
    write_case(case, tmp_path / "heads")
    head = run_case(discover(tmp_path / "heads")[0], str(tmp_path), "watershed")
    assert head.ok and "skull-stripped" in str(head.warning)


def test_cli_scheduler(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["predict", str(dataset), "-o", str(out), "--method", "watershed",
               "--scheduler", "local:2", "--report"])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 1  # one case failed, the others were written
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"case{i}.nii.gz" for i in range(3)]
    assert "error: case3:" in err and "Traceback" not in err
    assert err.count("/4] ") == 4  # one progress line per case
    # the failure's sentence in its error line and again in the summary that ends the
    # run, and the files named as given
    assert sum("case3" in line for line in err.splitlines()) == 3
    assert "case3: failed\n" in err
    said = next(ln for ln in err.splitlines() if ln.startswith("error: case3: "))
    assert err.endswith(f"1 input(s) failed; 8 file(s) written. Failed:\n"
                        f"  - {said[len('error: '):]}\n")
    listed = captured.out.split()
    assert str(out / "case0.nii.gz") in listed and str(out / "volumes.csv") in listed
    import csv

    rows = list(csv.DictReader((out / "volumes.csv").open()))
    assert sorted(r["case"] for r in rows) == ["case0", "case1", "case2"]
    for r in rows:  # the volumes of the label maps the workers wrote
        lab = load_label_nifti(out / f"{r['case']}.nii.gz")
        vox_ml = float(np.prod(np.abs(np.diag(lab.affine)[:3]))) / 1000
        assert float(r["WT_mL"]) == pytest.approx((lab.data > 0).sum() * vox_ml, abs=0.006)
        # --report: each written case's page, made on the worker
        page = (out / f"{r['case']}_report.html").read_text()
        assert "method: watershed" in page and f"<td>{r['WT_mL']}</td>" in page
    assert not (out / "case3_report.html").exists()
    index = (out / "report_index.html").read_text()
    assert [f"href='case{i}_report.html'" in index for i in range(4)] == [True] * 3 + [False]
    rc = main(["predict", str(dataset), "-o", str(out), "--scheduler", "local:0"])
    assert rc == 2 and "local:N" in capsys.readouterr().err


def test_without_dask_one_sentence(dataset: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import now fails
    with pytest.raises(InputError, match=r"braintumor\[scale\]"):
        predict_many(discover(dataset), tmp_path, scheduler="local:1")


def test_report_index_puts_warnings_first(tmp_path: Path) -> None:
    from braintumor.scale import write_report_index, write_volume_table

    assert write_report_index(tmp_path) is None  # no table yet
    rows = [{"case": c, "method": "cnn", "model": "m-1", "mode": "fast", "WT_mL": "1.00",
             "warning": w} for c, w in (("a", ""), ("b", "not <skull>-stripped"), ("c", ""))]
    write_volume_table(rows, tmp_path)
    assert write_report_index(tmp_path) is None  # no case has a page
    for c in ("a", "b"):
        (tmp_path / f"{c}_report.html").write_text("page")
    page = write_report_index(tmp_path).read_text()  # type: ignore[union-attr]
    assert page.index("b_report.html") < page.index("a_report.html")  # the warning first
    assert "c_report.html" not in page and "not &lt;skull&gt;-stripped" in page
    assert "m-1 (fast)" in page and "(2 cases)" in page


def test_a_volume_table_that_cannot_be_replaced_is_said_and_no_temporary_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renaming the new table over the old one fails (a locked file, a full disk): the
    error names volumes.csv (not its temporary copy), the temporary copy is removed and
    the earlier table is kept."""
    import os

    from braintumor.errors import describe_failure
    from braintumor.scale import write_volume_table

    (tmp_path / "volumes.csv").write_text("case,WT_ml\nold,1.0\n")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError) as err:
        write_volume_table([{"case": "new", "WT_ml": 2.0}], tmp_path)
    said = describe_failure(err.value)
    assert said.startswith(f"{tmp_path / 'volumes.csv'}: the volume table could not be "
                           "written"), said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.csv"]
    assert "old,1.0" in (tmp_path / "volumes.csv").read_text()


@pytest.mark.parametrize("speaks", [b"", b"HTTP/1.0 200 OK\r\n\r\n<html>dashboard</html>"])
def test_a_port_that_is_no_scheduler_is_one_sentence_in_bounded_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], speaks: bytes) -> None:
    import socket
    import threading
    import time

    from braintumor.scale import open_client

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:  # accepts, says its piece (or nothing) and keeps the line open
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if speaks:
                conn.recv(65536)
                conn.sendall(speaks * 50)
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    address = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        with pytest.raises(InputError, match="no Dask scheduler answered at tcp://"), \
                open_client(address, timeout=1):
            pass
        t1 = time.monotonic()
        rc = main(["predict", str(tmp_path / "x"), "-o", str(tmp_path / "o"),
                   "--scheduler", address])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "8786" in err, err
        assert t1 - t0 < 8 and time.monotonic() - t1 < 20
    finally:
        srv.close()
        for c in held:
            c.close()


def test_relative_inputs_reach_a_worker_elsewhere(dataset: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from distributed import Client, LocalCluster

    from braintumor.cases import CaseSource

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(os.chdir, str(elsewhere))  # the worker's working folder is not ours
        monkeypatch.chdir(dataset.parent)
        out = tmp_path / "out"
        got = predict_many([Path(dataset.name) / "case0"], out, "watershed",
                           scheduler=cluster.scheduler_address)
        assert got[0].ok, got[0].error
        # a file the worker cannot see: said to be the worker's
        ghost = CaseSource("ghost", "brats2021",
                           {m: tmp_path / "gone" / f"ghost_{m}.nii.gz"
                            for m in ("t1", "t1ce", "t2", "flair")})
        lost = predict_many([ghost], out, "watershed", scheduler=cluster.scheduler_address)
        assert "file not found on the worker" in str(lost[0].error)


def test_a_dead_worker_is_said_as_such() -> None:
    from distributed.scheduler import KilledWorker

    from braintumor.scale import _lost

    said = _lost(KilledWorker("k", "w", 3))
    assert "worker process" in said and "memory" in said and "KilledWorker" not in said


def test_a_task_that_cannot_ask_whether_it_was_stopped_writes_nothing(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the cluster closes after Ctrl-C the stop event cannot be read: a task at its
    check before writing takes that as stopped (it wrote a label map without a row after
    the run had said it stopped)."""
    import distributed

    class Unreadable:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def is_set(self) -> bool:
            raise OSError("the scheduler is closing")

    monkeypatch.setattr(distributed, "Event", Unreadable)
    src = {s.case_id: s for s in discover(dataset)}["case0"]
    o = run_case(src, str(tmp_path), "watershed", stop="braintumor-x-stop")
    assert not list(tmp_path.iterdir())
    from braintumor.scale import NOT_ASKED

    assert o.stopped and not o.ok and o.error == NOT_ASKED and o.path is None


def test_an_interrupted_local_run_removes_only_its_own_unrecorded_files(
        tmp_path: Path) -> None:
    """After a local cluster is closed, files a task wrote whose outcome never came (no
    row) are removed; an earlier run's files of such a case are kept."""
    import os

    from braintumor.scale import _output_stamps, _remove_unrecorded

    (tmp_path / "old.nii.gz").write_bytes(b"earlier run")
    (tmp_path / "old_report.html").write_text("earlier page")
    (tmp_path / "kept.nii.gz").write_bytes(b"earlier, rewritten")
    before = _output_stamps(tmp_path, ["old", "new", "kept"])
    (tmp_path / "new.nii.gz").write_bytes(b"written after the stop")
    tmp = tmp_path / ".kept.part"  # written beside and renamed over, as the label maps are
    tmp.write_bytes(b"this run's")
    os.replace(tmp, tmp_path / "kept.nii.gz")
    _remove_unrecorded(tmp_path, before, ["old", "new", "kept"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nii.gz", "old_report.html"]


def test_an_interrupted_run_removes_the_temporaries_of_its_stopped_cases_only(
        tmp_path: Path) -> None:
    """The temporary files of a stopped case's outputs go; another case's, whose name
    begins with the same letters, and any other hidden file stay."""
    from braintumor.io import partial_beside
    from braintumor.scale import _case_files, _remove_parts

    made = {cid: [partial_beside(f) for f in _case_files(tmp_path, cid)] for cid in ("A1", "A10")}
    for p in made["A1"] + made["A10"]:
        p.write_bytes(b"cut short")
    other = tmp_path / ".A1.notes.part.txt"
    other.write_text("not a write's temporary")
    _remove_parts(tmp_path, ["A1"])
    assert sorted(tmp_path.iterdir()) == sorted([*made["A10"], other])
