"""Batch inference on a distributed engine (Dask), for datasets one process is too slow for.

Each case becomes one task: a worker reads it, segments it through the same
:func:`braintumor.segment.segment` door the CLI and the web page use, and writes the label
map on the input's own grid into the output folder. Only the case's file paths travel to
the worker and only a small outcome record comes back, so the input and output folders
must be visible to every worker under the same paths (one machine, or a shared file
system).

``scheduler`` says where the work runs:

* ``local:N`` starts a cluster of ``N`` worker processes on this machine for the run (one
  thread each, and ``OMP_NUM_THREADS`` set so that ``N`` workers share the cores instead
  of each taking them all) and stops it afterwards;
* ``tcp://HOST:PORT`` (or ``HOST:PORT``) uses a running Dask scheduler, whose workers may
  sit on other machines (``dask scheduler`` on one, ``dask worker tcp://HOST:PORT
  --nthreads 1`` on each machine, braintumor installed on every one).

A failing case (unreadable file, missing modality, a worker lost) is reported in one
sentence and the others are still written. Python: :func:`predict_many`; command line:
``braintumor predict DATASET -o OUT --scheduler local:4``.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from braintumor.cases import CaseSource
from braintumor.errors import InputError, describe_failure, environment_failure, join_warnings
from braintumor.interrupts import Interrupted, held


@dataclass
class CaseOutcome:
    """What one task reports back: the file written (``path``) or why not (``error``),
    the seconds the worker spent, which worker did it (``host:pid``), and a warning about
    the input (say, a scan that is not skull-stripped)."""

    case_id: str
    path: str | None
    seconds: float
    worker: str
    error: str | None = None
    warning: str | None = None
    row: dict[str, Any] | None = None  # its volumes.csv row
    #: the run was stopped (Ctrl-C, SIGTERM) before this case was written: not a failure
    stopped: bool = False
    #: failed for want of disk, memory or permission, no fault of the input's
    #: (:func:`braintumor.errors.environment_failure`)
    environment: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def write_outputs(case: Any, res: Any, out_dir: str | Path, labels: str = "brats2021",
                  report: bool = False, method: str = "", dicom_seg: bool = False) -> Path:
    """Write a segmentation result on the case's own grid: ``<case>.nii.gz`` in the
    ``labels`` convention, ``<case>_uncertainty.nii.gz`` when the result holds an
    uncertainty map, with ``report``, :func:`write_case_report`'s page and, with
    ``dicom_seg`` and a case converted from a DICOM study, ``<case>_seg.dcm``
    (:mod:`braintumor.dicom_seg`; a case from NIfTI files has no series to attach one to
    and gets none; when none can be written, ``res.info["warning"]`` says why). Returns the
    label map's path. Shared by the serial ``predict`` loop and the distributed tasks.

    The case's files go in together (:func:`braintumor.io.written_together`), the label
    map last: each is written beside its place first, so a failure at any of them (a full
    disk at the report) leaves every file of an earlier run of the case as it was, in
    step with its ``volumes.csv`` row."""
    from braintumor.io import written_together

    dst = Path(out_dir) / f"{case.case_id}.nii.gz"
    with written_together(last=[dst]):
        _write_case_files(case, res, out_dir, labels, report, method, dicom_seg)
    return dst


def _write_case_files(case: Any, res: Any, out_dir: str | Path, labels: str, report: bool,
                      method: str, dicom_seg: bool) -> Path:
    """The files of :func:`write_outputs`, each through :func:`braintumor.io.write_replacing`."""
    from braintumor.cases import write_label_map
    from braintumor.io import save_float_nifti

    dst = write_label_map(case, res.labels, Path(out_dir) / f"{case.case_id}.nii.gz", labels)
    if res.uncertainty is not None:
        save_float_nifti(res.uncertainty, Path(out_dir) / f"{case.case_id}_uncertainty.nii.gz",
                         case.header, case.affine)
    ref = getattr(case.source, "dicom_reference", None)
    if dicom_seg and ref is not None:
        from braintumor.dicom_seg import series_files, write_seg

        try:
            write_seg(res.labels, case.affine, series_files(*ref),
                      Path(out_dir) / f"{case.case_id}_seg.dcm",
                      version=res.info.get("model_version") or "",
                      method=res.info.get("method") or method)
        except InputError as exc:  # the label map stands; the SEG's absence is said
            res.info["warning"] = join_warnings(res.info.get("warning"),
                                                f"no DICOM SEG written: {exc}")
            res.info["dicom_seg"] = SEG_NOT_WRITTEN
        else:
            res.info["dicom_seg"] = SEG_WRITTEN
    if report:  # last, so that its page carries every warning
        write_case_report(case, res, out_dir, method)
    return dst


def write_case_report(case: Any, res: Any, out_dir: str | Path, method: str) -> Path:
    """``<case>_report.html`` (self-contained: key axial slices of FLAIR and T1ce with the
    outline, volumes in mL, bidimensional diameters (RANO), method, model and mode, the
    two methods' agreement for the hybrid, any warning, the research-use notice) and its
    ``<case>_report.json``; the pictures are also kept as ``<case>_overlay.png`` and
    ``<case>_diameters.png`` (the measured slices). Returns the page's path."""
    import numpy as np

    from braintumor.report import diameter_pictures, diameters_png, overlay_png, write_report

    out = Path(out_dir)
    method = res.info.get("method") or method
    from braintumor.io import has_orientation

    header = getattr(case, "header", None)
    png = overlay_png(case.image, res.labels, case.affine, out / f"{case.case_id}_overlay.png",
                      title=f"{case.case_id}: {method}",
                      orientation_assumed=header is not None and not has_orientation(header))
    row = volume_row(case, res, method)
    info = {"method": method, "model": row["model"] or "-", "mode": row["mode"] or "-",
            "voxel size (mm)": row["voxel_mm"]}
    if res.info.get("agreement"):
        info["CNN and watershed agree (Dice)"] = " / ".join(
            f"{r} {v:.2f}" for r, v in res.info["agreement"].items())
    if row["series"]:  # a DICOM study: which series became which modality
        info["series"] = row["series"]
    if res.info.get("warning"):
        info["warning"] = res.info["warning"]
    diameters = case_diameters(case, res)
    measured = diameters_png(diameter_pictures(case.image, res.labels, case.affine, diameters),
                             out / f"{case.case_id}_diameters.png")
    paths = write_report(out, case.case_id, res.labels, float(np.prod(case.spacing)) / 1000.0,
                         picture=png, info=info, stem=f"{case.case_id}_report",
                         diameters=diameters, diameter_picture=measured,
                         spacing=case.spacing)
    return paths["html"]


#: the columns of ``volumes.csv``, one row per segmented case (``labels``: the label
#: map's convention, brats2021 or brats2023; ``series``: for a DICOM study, which series
#: became which modality; ``missing``: the modalities the case lacked (or had blank), for
#: which the watershed tuned without them segmented it whatever the method asked;
#: ``dicom_seg``: with ``--dicom-seg`` and a DICOM study, whether its SEG was
#: :data:`SEG_WRITTEN` or :data:`SEG_NOT_WRITTEN`). ``predict --skip-existing`` reads
#: these fields, not the warning's words.
VOLUME_FIELDS = ("case", "method", "model", "mode", "labels", "WT_mL", "TC_mL", "ET_mL", "NCR_mL",
                 "ED_mL", "voxel_mm", "agree_WT", "agree_TC", "agree_ET", "series",
                 "missing", "dicom_seg", "warning")
#: the ``dicom_seg`` column's values (``res.info["dicom_seg"]``)
SEG_WRITTEN, SEG_NOT_WRITTEN = "written", "not written"
VOLUME_TABLE = "volumes.csv"
#: the columns ``predict --diameters`` adds (before ``warning``): each region's SPD and
#: its largest lesion's two diameters
DIAMETER_FIELDS = ("ET_SPD_mm2", "ET_largest_mm", "WT_SPD_mm2", "WT_largest_mm")


def case_diameters(case: Any, res: Any) -> dict[str, Any]:
    """:func:`braintumor.diameters.rano` of a result, measured once however many outputs
    (report page, ``volumes.csv``) show it: kept in ``res.info["rano"]``."""
    from braintumor.diameters import rano

    if "rano" not in res.info:
        res.info["rano"] = rano(res.labels, case.affine)
    return dict(res.info["rano"])


def volume_row(case: Any, res: Any, method: str, diameters: bool = False,
               labels: str = "") -> dict[str, Any]:
    """One ``volumes.csv`` row: the CNN model version and its mode (fast / accurate, with
    mirroring) where one ran, the label map's convention (``labels``), region volumes
    (mL, on the case's own grid), the voxel size, the CNN's and the watershed's agreement
    per region (the hybrid only), the modalities the case lacked (``missing``) and whether
    its DICOM SEG was written (``dicom_seg``; :data:`VOLUME_FIELDS`), with ``diameters``
    the RANO measurements (:data:`DIAMETER_FIELDS`, about 0.25 s) and the result's warning.
    (No lesion count: splitting touching lesions takes about 1.4 s a case, a third of the
    fast mode's whole run; the web page counts them.)"""
    import numpy as np

    from braintumor.cases import MODALITY_NAMES
    from braintumor.report import implausible_warning, ml_text, volumes_ml

    vols = volumes_ml(res.labels, float(np.prod(case.spacing)) / 1000.0)
    warning = join_warnings(res.info.get("warning"), implausible_warning(vols))
    row = {"case": case.case_id, "method": res.info.get("method") or method,
           "model": res.info.get("model_version") or "", "mode": res.info.get("mode") or "",
           "labels": labels,
           **{f"{k}_mL": ml_text(vols[k]) for k in ("WT", "TC", "ET", "NCR", "ED")},
           "voxel_mm": "x".join(f"{s:g}" for s in case.spacing),
           **{f"agree_{r}": (res.info.get("agreement") or {}).get(r, "")
              for r in ("WT", "TC", "ET")},
           "series": getattr(getattr(case, "source", None), "series", "") or "",
           "missing": ", ".join(MODALITY_NAMES[m] for m in res.info.get("missing") or ()),
           "dicom_seg": res.info.get("dicom_seg") or "",
           "warning": warning}
    if diameters:
        for region, summ in case_diameters(case, res).items():
            row[f"{region}_SPD_mm2"] = f"{summ['spd_mm2']:.0f}"
            row[f"{region}_largest_mm"] = summ["largest"].removesuffix(" mm")
    return row


def write_volume_table(rows: list[dict[str, Any]], out_dir: str | Path) -> Path | None:
    """Add ``rows`` to ``out_dir/volumes.csv``: a case already listed there (an earlier
    run into the same folder) is replaced, every other row is kept. Returns the table's
    path, or None when there is nothing to write.

    A table re-saved by a spreadsheet (``;`` or tab between the columns, its own text
    encoding) is read as such and written back with commas; columns the user added (a
    reader's note) are kept, with their values, after the project's own, and a case
    segmented again keeps its values there. A file that is no table with a ``case``
    column is not overwritten: it is renamed ``volumes.csv.bak-N`` beside the new table,
    said in a warning. Writers sharing the folder (two runs, a run and a notebook) take
    turns through an advisory lock on the folder (where the system has ``fcntl`` and the
    folder's file system takes locks: :func:`table_lock`), so that no one's rows are
    lost."""
    import csv

    from braintumor.io import write_replacing

    if not rows:
        return None
    path = Path(out_dir) / VOLUME_TABLE
    new = {str(r["case"]): r for r in rows}
    if path.is_dir():
        raise InputError(f"{path} is a folder, so the table of volumes cannot be written "
                         "there (the label maps are); rename or remove that folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with table_lock(path):
        kept, extra = _read_volume_table(path)
        old = {str(r.get("case")): r for r in kept}
        kept = [r for r in kept if r.get("case") not in new]
        fields = list(VOLUME_FIELDS)
        if any(k in r for r in kept + rows for k in DIAMETER_FIELDS):
            fields[-1:-1] = DIAMETER_FIELDS  # before the warning; empty for cases without
        fields += [f for f in extra if f not in fields]
        out_rows = kept + [{**{f: old[c].get(f, "") for f in extra if c in old}, **r}
                           for c, r in new.items()]
        # written beside it and renamed over it (io.write_replacing): an interrupted write
        # leaves the old table, and no temporary copy
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", restval="")
                w.writeheader()
                w.writerows(out_rows)

        try:
            write_replacing(path, write)
        except OSError as exc:  # a full disk, a locked table: the old table stands, said
            raise OSError(exc.errno, f"the volume table could not be written "
                          f"({exc.strerror}); the label maps are written, the earlier "
                          "table is kept", str(path)) from None
    return path


#: seconds a writer of ``volumes.csv`` waits for another command's turn at the table
TABLE_LOCK_WAIT_S = 60.0
#: the note on an output folder that takes no lock is said once a run
_said_no_lock: set[str] = set()


@contextmanager
def table_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on the folder holding the table ``path``, for a
    read-modify-rename of it (no file of its own is left behind; none where the system
    lacks ``fcntl``). A folder whose file system takes no such lock (NFS, which needs
    write access to lock, SMB, some FUSE mounts) is written without it, said once in a
    note; another command holding it longer than :data:`TABLE_LOCK_WAIT_S` is an
    :class:`OSError` that says so (the table is left as it is)."""
    try:
        import fcntl  # noqa: F401 - whether the system has it (used by _take_lock)
    except ImportError:  # Windows: no lock, as before
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # the write that follows says why
        yield
        return
    try:
        _take_lock(fd, path)
        yield
    finally:
        os.close(fd)  # releases the lock


def _take_lock(fd: int, path: Path) -> bool:
    """Lock the open folder ``fd`` (see :func:`table_lock`); False when its file system
    takes no lock."""
    import sys

    from braintumor.locks import try_lock

    deadline = time.monotonic() + TABLE_LOCK_WAIT_S
    pause = 0.005
    while True:
        try:
            if try_lock(fd):
                return True
        except OSError as exc:  # EBADF (NFS), ENOLCK, EINVAL, EOPNOTSUPP: no lock here
            if str(path.parent) not in _said_no_lock:
                _said_no_lock.add(str(path.parent))
                print(f"note: the output folder {path.parent} does not support file "
                      f"locks ({exc.strerror or exc}), so {path.name} is written without "
                      "one; do not run two commands into it at once.", file=sys.stderr)
            return False
        if time.monotonic() >= deadline:
            raise OSError(errno.EWOULDBLOCK, f"another command has held the table for over "
                          f"{TABLE_LOCK_WAIT_S:g} s, so this run's rows were not added "
                          "to it", str(path))
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def read_volume_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``volumes.csv`` as they are, for reading only (``--skip-existing``):
    none when there is no table, or a file that is no table, which is left where it is
    (the next write keeps it aside)."""
    try:
        return _read_volume_table(path, keep_aside=False)[0]
    except OSError:  # unreadable: nothing is known to be done
        return []


def _read_volume_table(path: Path, keep_aside: bool = True
                       ) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of an existing ``volumes.csv`` and its columns that are not the
    project's (:func:`read_table`)."""
    return read_table(path, "case", [*VOLUME_FIELDS, *DIAMETER_FIELDS], keep_aside)


def read_table(path: Path, key: str, known: Sequence[str], keep_aside: bool = True
               ) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of an existing table of the project's (a row per ``key``) and its
    columns that are not in ``known`` (a user's); ``[], []`` when there is none. The
    separator (``,`` ``;`` tab) is taken from the header line. A file that is not such a
    table is renamed aside (said in a warning), so that nothing in it is lost; without
    ``keep_aside`` it is left as it is (a reader that does not write, outside the
    table's lock)."""
    import csv
    import io
    import sys

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # re-saved by a spreadsheet in its own encoding
        text = raw.decode("cp1252", errors="replace")
    if not text.strip():
        return [], []
    header = text.lstrip().splitlines()[0]
    for sep in (",", ";", "\t"):
        names = [c.strip() for c in next(csv.reader([header], delimiter=sep))]
        if key in names:
            reader = csv.DictReader(io.StringIO(text.lstrip(), newline=""), delimiter=sep)
            rows = [{(k or "").strip(): v for k, v in r.items() if k is not None}
                    for r in reader]
            rows = [r for r in rows if (r.get(key) or "").strip()]
            return rows, [n for n in names if n and n not in set(known)]
    if not keep_aside:
        return [], []
    n = 1
    while (aside := path.with_name(f"{path.name}.bak-{n}")).exists():
        n += 1
    path.replace(aside)
    print(f"warning: {path} is not a table with a '{key}' column, so it was kept as "
          f"{aside.name} and a new table was started.", file=sys.stderr)
    return [], []


REPORT_INDEX = "report_index.html"


def write_report_index(out_dir: str | Path) -> Path | None:
    """``out_dir/report_index.html``: one row per case of ``volumes.csv`` that has a report
    page (this run's and earlier runs' into the folder): its picture, linked to its page,
    method, model, volumes, RANO diameters (from its ``<case>_report.json``) and warning,
    cases with a warning first, so a folder of many cases can be checked by eye from one
    page. None when no case has a page."""
    import csv
    import html
    from urllib.parse import quote

    from braintumor.report import NOTICE

    out = Path(out_dir)
    table = out / VOLUME_TABLE
    if not table.exists():
        return None
    with table.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (out / f"{r['case']}_report.html").exists()]
    if not rows:
        return None
    rows.sort(key=lambda r: (not r.get("warning"), r["case"]))
    e = html.escape
    cells = []
    for r in rows:
        c = r["case"]
        u = e(quote(c))  # a file name in a link: # ? % and spaces percent-encoded
        diam = _report_diameters(out / f"{c}_report.json")
        pic = (f"<a href='{u}_report.html'><img src='{u}_overlay.png' alt='{e(c)}' "
               "style='height:9em'></a>")
        model = f"{r.get('model') or '-'}{' (' + r['mode'] + ')' if r.get('mode') else ''}"
        cells.append(f"<tr><td><a href='{u}_report.html'>{e(c)}</a></td><td>{pic}</td>"
                     f"<td>{e(r.get('method', ''))}<br>{e(model)}</td>"
                     + "".join(f"<td>{e(r.get(f'{k}_mL', ''))}</td>" for k in ("WT", "TC", "ET"))
                     + f"<td>{e(diam)}</td><td>{e(r.get('warning') or '')}</td></tr>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>braintumor: "
            f"{len(rows)} cases</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em;"
            "vertical-align:top}th{background:#eee}</style></head><body>"
            f"<h1>Segmentations in {e(out.name)} ({len(rows)} cases)</h1>"
            f"<p><strong>{NOTICE}</strong> Cases with a warning come first.</p>"
            "<table><tr><th>case</th><th>outline</th><th>method, model</th><th>WT mL</th>"
            "<th>TC mL</th><th>ET mL</th><th>RANO diameters, largest lesion (SPD)</th>"
            "<th>warning</th></tr>" + "".join(cells)
            + "</table></body></html>\n")
    from braintumor.io import write_replacing

    # beside its place, then renamed in: a full disk leaves the earlier index, not a cut one
    return write_replacing(out / REPORT_INDEX, lambda tmp: tmp.write_text(page, "utf-8"))


def _report_diameters(path: Path) -> str:
    """The RANO diameters a case's ``<case>_report.json`` holds, in a few words (empty
    for a page written before reports carried them)."""
    import json

    from braintumor.diameters import describe

    try:
        diam = json.loads(path.read_text()).get("diameters") or {}
    except (OSError, ValueError):
        return ""
    return "; ".join(f"{r}: {describe(d)}" for r, d in diam.items() if isinstance(d, dict))


def run_case(src: CaseSource, out_dir: str, method: str = "cnn", labels: str = "brats2021",
             options: dict[str, Any] | None = None, report: bool = False,
             dicom_seg: bool = False, diameters: bool = False,
             stop: str | None = None) -> CaseOutcome:
    """Read, segment and write one case (runs on a worker; also usable in-process).

    Every exception is caught and turned into ``error``: one case must not stop the
    others, and a worker's traceback would not help the person reading the summary.
    ``stop`` names a Dask event that, once set (the run was interrupted), makes the task
    end without writing anything (looked at before reading and before writing; one that
    cannot be looked at before writing, as while the cluster closes, counts as set).
    """
    from braintumor.cases import load_case
    from braintumor.segment import segment

    t0 = time.perf_counter()
    who = f"{socket.gethostname()}:{os.getpid()}"
    try:
        if _stopped(stop) is True:  # one that cannot ask reads on: it asks again below
            return CaseOutcome(src.case_id, None, 0.0, who, "not started", stopped=True)
        case = load_case(src, with_label=False)
        res = segment(case, method, **(options or {}))
        told = _stopped(stop)
        if told is not False:  # stopped, or the scheduler cannot say (closing): no write
            why = "not written" if told else NOT_ASKED
            return CaseOutcome(src.case_id, None, time.perf_counter() - t0, who, why,
                               stopped=True)
        dst = write_outputs(case, res, out_dir, labels, report, method, dicom_seg)
        row = volume_row(case, res, method, diameters, labels)  # its warning: the volume's too
        return CaseOutcome(src.case_id, str(dst), time.perf_counter() - t0, who,
                           warning=row["warning"] or None, row=row)
    except InputError as exc:
        err = str(exc)
        if err.endswith("file not found.") and _on_worker():  # say where it was looked for
            err = f"{err[:-len('file not found.')]}file not found on the worker {who} " \
                  "(every worker must see the input and output folders under the same paths)."
    except FileNotFoundError as exc:
        err = f"{exc.filename}: no such file or folder" + (
            f" on the worker {who} (every worker must see the input and output folders "
            "under the same paths)." if _on_worker() else ".")
    except Exception as exc:  # noqa: BLE001 - reported per case, the run goes on
        if environment_failure(exc):
            return CaseOutcome(src.case_id, None, time.perf_counter() - t0, who,
                               describe_failure(exc), environment=True)
        err = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return CaseOutcome(src.case_id, None, time.perf_counter() - t0, who, err)


def _on_worker() -> bool:
    """Whether this runs in a Dask worker."""
    try:
        from distributed import get_worker

        get_worker()
    except Exception:  # noqa: BLE001 - ValueError outside one, ImportError without Dask
        return False
    return True


#: a task's outcome when the scheduler could not say, before it wrote, whether the run
#: was stopped (its error where the run was not stopped after all)
NOT_ASKED = ("the Dask scheduler could not be asked before writing whether the run was "
             "stopped, so nothing was written for this case; run it again.")


def _stopped(stop: str | None) -> bool | None:
    """Whether the Dask event ``stop`` is set: False without one (outside a cluster),
    None when it cannot be asked (the scheduler is closing or gone)."""
    if not stop:
        return False
    try:
        from distributed import Event

        return bool(Event(stop).is_set())
    except Exception:  # noqa: BLE001 - no scheduler to ask
        return None


def _local_workers(scheduler: str) -> int | None:
    """``"local:N"`` -> N; ``"local"`` -> the CPU count; anything else -> None."""
    if scheduler == "local":
        return os.cpu_count() or 1
    if scheduler.startswith("local:"):
        n = scheduler.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"--scheduler {scheduler}: give local:N with N a whole number "
                             "of workers, 1 or more.")
        return int(n)
    return None


def _address(scheduler: str) -> str:
    """A remote scheduler's address (``tcp://HOST:PORT``), or an :class:`InputError`."""
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    host_port = address.split("://", 1)[1]
    if ":" not in host_port or not host_port.rsplit(":", 1)[1].isdigit():
        raise InputError(f"--scheduler {scheduler}: give local:N, or a running scheduler's "
                         "HOST:PORT (tcp://HOST:PORT).")
    return address


def check_scheduler(scheduler: str, timeout: float = 5.0) -> None:
    """Refuse, in one sentence and before anything is written, a ``--scheduler`` value
    that is no scheduler, a run that lacks Dask, or a TCP scheduler nothing answers at."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError("distributed runs need Dask: pip install 'braintumor[scale]'.") from None
    if _local_workers(scheduler) is not None:
        return
    _reach(_address(scheduler), timeout)


def _reach(address: str, timeout: float) -> None:
    """An :class:`InputError` in one sentence when nothing listens at a TCP ``address``
    or what listens there is no Dask scheduler (:func:`_handshake`)."""
    scheme, host_port = address.split("://", 1)
    if scheme != "tcp":
        return  # tls://, ucx://: left to Dask's client
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InputError(f"could not reach the Dask scheduler at {address} ({why}).") from None
    _handshake(address, 2 * timeout)


def _handshake(address: str, timeout: float) -> None:
    """Dask's own greeting with ``address``, within ``timeout`` seconds in all: a port
    that accepts connections but is no scheduler (its dashboard, a web server) would
    otherwise keep the client waiting for ever. An :class:`InputError` in one sentence
    when none answers."""
    import asyncio

    from distributed.comm import connect

    async def greet() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    from concurrent.futures import ThreadPoolExecutor

    try:  # in a thread of its own: the caller may be running an event loop (a notebook)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, greet()).result()
    except (TimeoutError, asyncio.TimeoutError):
        raise InputError(f"no Dask scheduler answered at {address} within {timeout:g} s (is "
                         "this the scheduler's port, usually 8786, not the dashboard's "
                         "8787?).") from None
    except OSError as exc:  # refused, unreachable: nothing listens there
        why = exc.strerror or type(exc).__name__
        raise InputError(f"could not reach the Dask scheduler at {address} ({why}).") from None
    except Exception as exc:  # noqa: BLE001 - junk bytes, a refused connection
        raise InputError(f"no Dask scheduler answered at {address} ({type(exc).__name__}; "
                         "is this the scheduler's port, usually 8786, not the dashboard's "
                         "8787?).") from None


@contextmanager
def open_client(scheduler: str, timeout: float = 10.0) -> Iterator[Any]:
    """A Dask client for ``scheduler`` (see the module text); a local cluster started
    here is stopped on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("distributed runs need Dask: pip install 'braintumor[scale]'.") from None
    n = _local_workers(scheduler)
    if n is not None:
        per = str(max(1, (os.cpu_count() or 1) // n))
        env = {k: per for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        # the workers started here ignore Ctrl-C (the terminal sends it to them as well):
        # the run stops them itself, without their tracebacks
        with _ignoring_sigint():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=None, env=env, silence_logs=40)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    address = _address(scheduler)
    _reach(address, timeout / 2)
    try:
        client = Client(address, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, junk from the port
        raise InputError(f"could not reach the Dask scheduler at {address} "
                         f"({type(exc).__name__}).") from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """SIGINT ignored while processes are started (they inherit it), then as before."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _quiet_dask() -> None:
    """Dask's own messages about a run being stopped (closed comms, lost workers) kept
    off the terminal: the command says what was kept in its own words."""
    import logging

    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def as_sources(sources: str | Path | CaseSource | Sequence[CaseSource | str | Path]
               ) -> list[CaseSource]:
    """Cases to segment: each path (a case folder, a dataset folder, a NIfTI file) is
    discovered into its cases (:func:`braintumor.cases.discover`), a
    :class:`~braintumor.cases.CaseSource` is taken as it is."""
    from braintumor.cases import discover

    items = [sources] if isinstance(sources, (str, Path, CaseSource)) else list(sources)
    out: list[CaseSource] = []
    for item in items:
        if isinstance(item, CaseSource):
            out.append(item)
        elif isinstance(item, (str, Path)):
            out.extend(discover(item))
        else:
            raise InputError(f"predict_many: {item!r} is neither a path nor a case "
                             "(braintumor.cases.discover gives cases).")
    return out


def predict_many(sources: str | Path | Sequence[CaseSource | str | Path], out_dir: str | Path,
                 method: str = "cnn",
                 labels: str = "brats2021", scheduler: str = "local:2",
                 options: dict[str, Any] | None = None,
                 on_done: Callable[[CaseOutcome], None] | None = None,
                 timeout: float = 10.0, report: bool = False,
                 dicom_seg: bool = False, diameters: bool = False) -> list[CaseOutcome]:
    """Segment ``sources`` on the cluster ``scheduler``; label maps go to ``out_dir``.

    ``sources``: cases (:func:`braintumor.cases.discover`) or paths to find them in
    (:func:`as_sources`), or one such path.

    ``options`` are passed to :func:`braintumor.segment.segment` (``device``, ``fast``,
    ``tta``, ...). ``on_done`` is called with each outcome as it arrives (in completion
    order); ``timeout`` is how long to wait for a running scheduler; ``report`` writes
    each case's report page (:func:`write_case_report`), ``diameters`` adds the RANO
    measurements to each row (:func:`volume_row`) and ``dicom_seg`` writes the DICOM SEG of
    each case from a DICOM study. Returns the
    outcomes in the order of ``sources``.
    """
    cases = [_resolved(s) for s in as_sources(sources)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cases:
        return []
    run_id = uuid.uuid4().hex[:8]
    stop = f"braintumor-{run_id}-stop"
    results: dict[str, CaseOutcome] = {}
    before = _output_stamps(out, [s.case_id for s in cases])
    interrupted = False
    try:
        with open_client(scheduler, timeout) as client:
            from distributed import as_completed

            futures = {client.submit(run_case, src, str(out.resolve()), method, labels,
                                     options, report, dicom_seg, diameters, stop,
                                     key=f"braintumor-{run_id}-{i}-{src.case_id}"): src
                       for i, src in enumerate(cases)}

            def take(fut: Any) -> None:
                src = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. the worker died under it
                    res = CaseOutcome(src.case_id, None, 0.0, "?", _lost(exc))
                if res.stopped and not interrupted:  # could not ask, and no one stopped it
                    res = replace(res, stopped=False, error=NOT_ASKED)
                with held():  # an outcome is recorded whole (its row with its map)
                    results[src.case_id] = res
                    if on_done is not None and not res.stopped:
                        on_done(res)

            try:
                for fut in as_completed(list(futures)):
                    take(fut)
            except (KeyboardInterrupt, Interrupted) as exc:  # stop the tasks, keep what came
                interrupted = True
                _quiet_dask()
                left, told = _stop_tasks(client, stop, [f for f in futures
                                                        if futures[f].case_id not in results],
                                         take)
                exc.still_running, exc.may_write = left, not told  # type: ignore[union-attr]
                raise
    except (KeyboardInterrupt, Interrupted):
        if _local_workers(scheduler) is not None:  # its workers are gone: no writer is left
            _remove_parts(out, [s.case_id for s in cases
                                if s.case_id not in results or not results[s.case_id].ok])
            # a task that wrote after it was told to stop, its outcome never taken: its
            # files have no row; an earlier run's files (unchanged since) are kept
            _remove_unrecorded(out, before, [s.case_id for s in cases
                                             if s.case_id not in results])
        raise
    return [results[s.case_id] for s in cases]


def _resolved(src: CaseSource) -> CaseSource:
    """``src`` with absolute paths: a worker's working folder is not the client's."""
    from dataclasses import replace

    def res(p: Path | None) -> Path | None:
        return None if p is None else Path(p).resolve()

    ref = src.dicom_reference
    return replace(src, modality_paths={m: Path(p).resolve()
                                        for m, p in src.modality_paths.items()},
                   image4d=res(src.image4d), label_path=res(src.label_path),
                   dicom_reference=None if ref is None else (Path(ref[0]).resolve(),
                                                             *ref[1:]))  # type: ignore[arg-type]


def _lost(exc: BaseException) -> str:
    """One sentence for a task that came back with no outcome."""
    if type(exc).__name__ == "KilledWorker":
        return ("the worker process running it died (often for lack of memory; a worker "
                "with more memory, or fewer workers per machine, may do).")
    return f"the task was lost ({type(exc).__name__})."


#: seconds an interrupted run waits for tasks that are writing their outputs
STOP_GRACE_S = 5.0


def _stop_tasks(client: Any, stop: str, pending: list[Any],
                take: Callable[[Any], None]) -> tuple[int, bool]:
    """Tell the tasks of an interrupted run to stop (a Dask event each looks at before it
    reads and before it writes), wait :data:`STOP_GRACE_S` for those that are writing,
    take the outcomes that came, cancel the rest. Returns how many were still running
    (they write nothing) and whether they were told (when the scheduler could not be
    reached they may still write their label maps)."""
    from distributed import Event, wait

    told = True
    try:
        Event(stop, client=client).set()
    except Exception:  # noqa: BLE001 - the scheduler is gone
        told = False
    try:
        wait(pending, timeout=STOP_GRACE_S)
    except Exception:  # noqa: BLE001,S110 - a timeout: those left are cancelled below
        pass
    left = []
    for fut in pending:
        if fut.status in ("finished", "error"):
            take(fut)
        else:
            left.append(fut)
    try:
        client.cancel(left)
    except Exception:  # noqa: BLE001,S110 - the scheduler is gone
        pass
    return len(left), told


def _remove_parts(out: Path, case_ids: list[str]) -> None:
    """The temporary files (:func:`braintumor.io.partial_pattern`) of the files
    (:func:`_case_files`) of cases whose worker was stopped while writing them."""
    from braintumor.io import partial_pattern

    if not case_ids:
        return
    pattern = partial_pattern([f.name for cid in case_ids for f in _case_files(out, cid)])
    for part in out.glob(".*.part*"):
        if pattern.fullmatch(part.name):
            part.unlink(missing_ok=True)


def _case_files(out: Path, case_id: str) -> list[Path]:
    """The files a task may write for a case (:func:`write_outputs`)."""
    return [out / f"{case_id}{tail}" for tail in (
        ".nii.gz", "_uncertainty.nii.gz", "_seg.dcm", "_report.html", "_report.json",
        "_overlay.png", "_diameters.png")]


def _output_stamps(out: Path, case_ids: list[str]) -> dict[Path, tuple[int, int]]:
    """(inode, modification time) of each case's files in ``out`` before a run: files a
    task writes replace them under a new inode (written beside and renamed), so a file
    whose stamp is unchanged is an earlier run's."""
    stamps = {}
    for cid in case_ids:
        for f in _case_files(out, cid):
            try:
                st = f.stat()
            except OSError:
                continue
            stamps[f] = (st.st_ino, st.st_mtime_ns)
    return stamps


def _remove_unrecorded(out: Path, before: dict[Path, tuple[int, int]],
                       case_ids: list[str]) -> None:
    """The files of ``case_ids`` (cases of an interrupted run with no recorded outcome,
    hence no row) written by this run: those whose stamp differs from ``before``'s."""
    now = _output_stamps(out, case_ids)
    for f, stamp in now.items():
        if before.get(f) != stamp:
            f.unlink(missing_ok=True)


def summary(outcomes: Sequence[CaseOutcome]) -> dict[str, Any]:
    """Counts, seconds and per-worker shares of a run (for the CLI and benchmarks)."""
    workers: dict[str, int] = {}
    for o in outcomes:
        workers[o.worker] = workers.get(o.worker, 0) + 1
    return {"cases": len(outcomes), "written": sum(o.ok for o in outcomes),
            "failed": [asdict(o) for o in outcomes if not o.ok],
            "worker_seconds": round(sum(o.seconds for o in outcomes), 2),
            "workers": workers}
