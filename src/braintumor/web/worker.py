"""Running jobs: what one job does (:func:`run_job`) and the pool that runs them.

The pool has ``workers`` slots. Each slot is a thread of the server that takes the
oldest queued job from the store and, by default, runs it in a child process of its
own (kept warm between jobs, so the segmenters are imported once). A job that crashes
its child (a segfault, running out of memory) only fails that job: the slot starts a new
child and goes on. Cancelling a running job ends its child at once. With
``isolation="thread"`` jobs run in the slot thread itself (for debugging); then cancel
takes effect at the job's next progress report.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import InputError
from braintumor.web.store import Job, JobStore

log = logging.getLogger("braintumor.web")

Report = Callable[[str, Any], None]

#: internal label values written for the viewer: the BraTS 2023 layout is the internal one
VIEWER_CONVENTION = "brats2023"


class JobCancelled(Exception):
    """Raised inside a thread-run job when its cancel flag is seen."""


def labels_path(job_dir: Path, version: int) -> Path:
    """Where label map version ``version`` of a job lives (0 = as segmented)."""
    return job_dir / "output" / f"labels_v{version}.nii.gz"


def model_version(info: dict[str, Any], method: str) -> str:
    """The model version a segmenter reported, or a description of the method."""
    for key in ("model_version", "model", "version", "weights"):
        if info.get(key):
            mode = info.get("mode")
            folds = info.get("folds")
            if isinstance(mode, str) and mode.startswith("fast") and folds:
                more = mode[len("fast"):]  # " + mirroring" when the CNN ran mirrored
                return (f"{info[key]} (fast mode{more}: {folds} "
                        f"model{'s' if folds != 1 else ''})")
            if mode:
                return f"{info[key]} ({mode} mode)"
            return str(info[key])
    return {"watershed": "classical watershed (no trained model)"}.get(method, "not reported")


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    from braintumor.web.measure import _plain

    out = {}
    for k, v in info.items():
        v = _plain(v)
        if isinstance(v, (str, int, float, bool, type(None), list, dict)):
            out[str(k)] = v
        else:
            out[str(k)] = str(v)
    return out


def run_job(job_dir: Path, spec: dict[str, Any], report: Report) -> dict[str, Any]:
    """Run one job in ``job_dir``; returns its result dict (JSON-ready).

    ``spec``: ``dict(kind, method, inputs, sample)``; ``report(kind, payload)`` sends
    ``("progress", (fraction, stage))`` and ``("inputs", inputs)`` to the server.
    """
    t_job = time.perf_counter()
    inputs = spec["inputs"]
    if spec["kind"] == "sample":
        case, inputs = _make_sample(job_dir, spec, report)
    elif inputs.get("source") == "image2d":
        return _run_2d(job_dir, inputs, report)
    else:
        from braintumor.web.inputs import load_job_case

        report("progress", (0.02, "reading the images"))
        case = load_job_case(job_dir, inputs)
    options = dict(spec.get("options") or {})
    options["_t_job"] = t_job
    return _segment_and_measure(job_dir, case, spec["method"], report, options)


#: sample cases already read by this worker process (folder -> Case)
_SAMPLE_CASES: dict[str, Any] = {}


def _make_sample(job_dir: Path, spec: dict[str, Any], report: Report) -> tuple[Any, dict]:
    import copy

    from braintumor.cases import MODALITIES, CaseSource, discover, load_case
    from braintumor.phantom import make_case, write_case

    report("progress", (0.01, "preparing the sample case"))
    opts = dict(spec.get("sample") or {})
    cache = spec.get("sample_cache")
    case = None
    if cache:
        cached = sample_files(Path(cache), opts)
        folder = job_dir / "input" / "sample" / cached.name
        folder.mkdir(parents=True, exist_ok=True)
        for f in cached.iterdir():
            _link_or_copy(f, folder / f.name)
        src: CaseSource = discover(folder)[0]
    else:
        if "shape" in opts:
            opts["shape"] = tuple(opts["shape"])
        case = make_case(**opts)
        folder = write_case(case, job_dir / "input" / "sample", naming="brats2021")
        src = discover(folder)[0]
    inputs: dict[str, Any] = {
        "source": "sample", "case_id": src.case_id, "files": [],
        "modalities": {m: str(Path(src.modality_paths[m]).relative_to(job_dir))
                       for m in MODALITIES},
        "reference": (str(Path(src.label_path).relative_to(job_dir))
                      if src.label_path is not None else None),
        "reference_name": "the sample's true outline", "reference_hint": "brats2021",
    }
    report("inputs", inputs)  # the page can show the images while the case is read
    if case is None:
        key = str(cached)
        if key not in _SAMPLE_CASES:
            report("progress", (0.02, "reading the sample case"))
            _SAMPLE_CASES.clear()
            _SAMPLE_CASES[key] = load_case(src)
        # a copy: a segmenter must never be able to change the kept case
        case = copy.copy(_SAMPLE_CASES[key])
        case.image = case.image.copy()
    return case, inputs


def sample_files(cache_dir: Path, options: dict[str, Any]) -> Path:
    """The sample case's folder of files, built once per set of ``options`` and kept.

    A full-size phantom takes longer to build than to segment, so every sample job after
    the first reuses the files. Built in a temporary folder and renamed into place, so
    two processes building at once cannot leave a half-written case.
    """
    import hashlib
    import json
    import shutil
    import tempfile

    from braintumor.phantom import make_case, write_case

    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_dir / key
    if final.is_dir():
        return next(d for d in final.iterdir() if d.is_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
    try:
        opts = dict(options)
        if "shape" in opts:
            opts["shape"] = tuple(opts["shape"])
        write_case(make_case(**opts), tmp, naming="brats2021")
        try:
            tmp.rename(final)
        except OSError:
            pass  # another process finished first: use its files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return next(d for d in final.iterdir() if d.is_dir())


def _link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src`` (a copy across file systems). A job restarted
    after a server restart finds its earlier link, or a partial copy, in place."""
    import os
    import shutil

    if dest.exists() and os.path.samefile(src, dest):
        return
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _segment_and_measure(job_dir: Path, case: Any, method: str, report: Report,
                         options: dict[str, Any]) -> dict[str, Any]:
    from braintumor.cases import write_label_map
    from braintumor.io import save_float_nifti
    from braintumor.segment import segment
    from braintumor.web.measure import summary

    report("progress", (0.05, f"segmenting ({method})"))
    t0 = time.perf_counter()
    t_job = options.pop("_t_job", t0)

    def progress(fraction: float, stage: str = "") -> None:
        report("progress", (0.05 + 0.85 * float(fraction), stage or f"segmenting ({method})"))

    if method not in ("cnn", "hybrid"):  # the fast mode is an option of the CNN predictor
        options.pop("fast", None)
    res = segment(case, method=method, progress=progress, **options)
    seg_s = time.perf_counter() - t0
    report("progress", (0.91, "measuring"))
    labels = np.asarray(res.labels, dtype=np.uint8)
    write_label_map(case, labels, labels_path(job_dir, 0), VIEWER_CONVENTION)
    has_unc = res.uncertainty is not None
    if has_unc:
        save_float_nifti(np.asarray(res.uncertainty, dtype=np.float32),
                         job_dir / "output" / "uncertainty.nii.gz", case.header, case.affine)
    info = _plain_info(res.info)
    method = str(info.get("method") or method)  # a case without T1 or T2: the watershed
    outline_s = time.perf_counter() - t_job
    result = {
        "kind": "3d",
        "method": method,
        "model_version": model_version(info, method),
        "info": info,
        "warning": info.get("warning"),
        "method_warning": info.get("method_warning"),
        "shape": list(case.shape),
        "spacing_mm": [float(s) for s in case.spacing],
        "has_uncertainty": has_unc,
        "has_reference": case.label is not None,
        "segment_s": round(seg_s, 3),
        "outline_s": round(outline_s, 3),
        "summaries": [summary(labels, case.spacing, quick=True)],
        "corrections": [],
    }
    # the outline can be shown now; lesions and metrics follow
    report("partial", result)
    result["summaries"] = [summary(labels, case.spacing, case.label, affine=case.affine)]
    result["done_s"] = round(time.perf_counter() - t_job, 3)
    return result


def _areas(area_px: int, pixel_mm: float | None) -> dict[str, Any]:
    """A 2D area in pixels, and in mm^2 when the pixel size is known."""
    out: dict[str, Any] = {"area_px": int(area_px)}
    if pixel_mm:
        out["area_mm2"] = round(float(area_px) * pixel_mm * pixel_mm, 2)
    return out


def _metrics_2d(masks: list[np.ndarray], refs: list[np.ndarray | None]
                ) -> dict[str, Any] | None:
    """The outline scored against the uploaded masks (:func:`_reference_masks`, one volume
    for a stack), or None without them."""
    from braintumor.slices2d import stack_metrics

    given = [r for r in refs if r is not None]
    if not given or len(given) != len(masks):
        return None
    m = stack_metrics(np.stack(masks), np.stack(given))
    m.pop("slice_dices", None)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in m.items()}


def _write_2d(dest: Path, arr: np.ndarray, mask: np.ndarray, stem: str = "",
              reference: np.ndarray | None = None) -> None:
    """``<stem>input.png`` (the FLAIR, grey), ``<stem>mask.png`` (0/255), ``<stem>overlay.png``
    (the command line's overlay: tinted, outline drawn) and, with an uploaded
    ``reference`` mask, ``<stem>reference.png``: the overlay with the reference's outline
    drawn over it, to see where the two differ."""
    from braintumor.io import write_png
    from braintumor.slices2d import display_grey, overlay

    grey = display_grey(arr)  # the FLAIR the outline describes
    write_png(np.repeat(grey[..., None], 3, axis=2), dest / f"{stem}input.png")
    write_png(mask.astype(np.uint8) * 255, dest / f"{stem}mask.png")
    write_png(overlay(arr, mask), dest / f"{stem}overlay.png")
    if reference is not None:
        write_png(overlay(arr, mask, reference=reference), dest / f"{stem}reference.png")


def _reference_masks(job_dir: Path, inputs: dict[str, Any], shapes: list[tuple[int, ...]]
                     ) -> list[np.ndarray | None]:
    """The uploaded reference masks, one per picture (None where there is none, or where
    one does not fit its picture: the metrics then say why)."""
    from braintumor.evaluate import read_mask_2d

    refs = inputs.get("ref_masks") or []
    out: list[np.ndarray | None] = []
    for k, shape in enumerate(shapes):
        ref = read_mask_2d(job_dir / refs[k]) if k < len(refs) else None
        out.append(ref if ref is not None and ref.shape == shape[:2] else None)
    return out


def _run_2d(job_dir: Path, inputs: dict[str, Any], report: Report) -> dict[str, Any]:
    from braintumor.diameters import picture_diameters
    from braintumor.io import read_image_2d
    from braintumor.slices2d import segment_image

    if inputs.get("images"):
        return _run_2d_stack(job_dir, inputs, report)
    report("progress", (0.05, "reading the picture"))
    arr = read_image_2d(job_dir / inputs["image"])
    report("progress", (0.2, "segmenting (2D model)"))
    t0 = time.perf_counter()
    out = segment_image(arr)
    # a SliceResult (mask, probability, info) or a bare mask
    mask = np.asarray(getattr(out, "mask", out)).astype(bool)
    info2d = _plain_info(dict(getattr(out, "info", {}) or {}))
    seg_s = time.perf_counter() - t0
    if mask.shape != arr.shape[:2]:
        raise RuntimeError(f"2D model returned shape {mask.shape} for a {arr.shape[:2]} picture")
    report("progress", (0.9, "saving"))
    refs = _reference_masks(job_dir, inputs, [arr.shape])  # read once: pictures and scores
    _write_2d(job_dir / "output", arr, mask, reference=refs[0])
    pixel_mm = inputs.get("pixel_mm")
    metrics = _metrics_2d([mask], refs)
    return {
        "kind": "2d", "method": "2d", "model_version": model_version(info2d, "2d"),
        "info": info2d, "warning": info2d.get("warning"), "shape": list(mask.shape),
        "segment_s": round(seg_s, 3), "slices": 1, "pixel_mm": pixel_mm,
        "pixel_source": inputs.get("pixel_source"),
        **_areas(int(mask.sum()), pixel_mm), "area_fraction": round(float(mask.mean()), 5),
        "diameters": picture_diameters([mask], pixel_mm),
        "metrics_2d": metrics, "has_uncertainty": False, "has_reference": metrics is not None,
        "summaries": [], "corrections": [],
    }


def _run_2d_stack(job_dir: Path, inputs: dict[str, Any], report: Report) -> dict[str, Any]:
    """The slices of one patient as a volume (:func:`braintumor.slices2d.segment_stack`):
    per slice ``output/slices/<k>_{input,mask,overlay}.png``, the slice with the largest
    outline also as ``output/{input,mask,overlay}.png``, and every mask, named after its
    picture (:func:`mask_entry_names`), in ``output/masks.zip``."""
    import zipfile

    from braintumor.diameters import picture_diameters
    from braintumor.io import read_image_2d
    from braintumor.slices2d import segment_stack

    n = len(inputs["images"])
    report("progress", (0.05, f"reading {n} slices"))
    arrs = [read_image_2d(job_dir / p) for p in inputs["images"]]
    report("progress", (0.2, f"segmenting {n} slices (2D model)"))
    t0 = time.perf_counter()
    results = segment_stack(arrs)
    seg_s = time.perf_counter() - t0
    masks = [np.asarray(r.mask, dtype=bool) for r in results]
    report("progress", (0.8, "saving"))
    out = job_dir / "output"
    (out / "slices").mkdir(parents=True, exist_ok=True)
    names = list(inputs.get("slice_names") or [Path(p).name for p in inputs["images"]])
    refs = _reference_masks(job_dir, inputs, [a.shape for a in arrs])
    entries = mask_entry_names(names)
    with zipfile.ZipFile(out / "masks.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for k, (arr, mask) in enumerate(zip(arrs, masks, strict=True)):
            _write_2d(out / "slices", arr, mask, f"{k:03d}_", reference=refs[k])
            zf.write(out / "slices" / f"{k:03d}_mask.png", entries[k])
    areas = [int(m.sum()) for m in masks]
    best = int(np.argmax(areas))
    _write_2d(out, arrs[best], masks[best], reference=refs[best])
    pixel_mm = inputs.get("pixel_mm")
    metrics = _metrics_2d(masks, refs)
    info2d = _plain_info(dict(results[0].info))
    info2d.pop("area_pixels", None)
    warnings = sorted({str(r.info["warning"]) for r in results if r.info.get("warning")})
    if inputs.get("numbering_note"):  # gaps or repeats in the slices' numbers
        warnings.append(str(inputs["numbering_note"]))
    if inputs.get("passed_over"):  # a CD's previews beside one series' DICOM files
        warnings.append(str(inputs["passed_over"]))
    if inputs.get("skipped"):
        warnings.append(f"{len(inputs['skipped'])} file(s) named as masks were left out "
                        f"({', '.join(inputs['skipped'][:3])}"
                        f"{', ...' if len(inputs['skipped']) > 3 else ''})")
    return {
        "kind": "2d", "method": "2d", "model_version": model_version(info2d, "2d"),
        "info": info2d, "warning": "; ".join(warnings) or None, "shape": list(masks[0].shape),
        "segment_s": round(seg_s, 3), "slices": n, "slice_names": names,
        "slice_area_px": areas, "show_slice": best, "pixel_mm": pixel_mm,
        # the largest slice's area: a stack's areas added up are no area of the tumour
        "largest_slice": best, "largest_slice_area_px": int(areas[best]),
        "pixel_source": inputs.get("pixel_source"),
        "tumour_slices": sum(a > 0 for a in areas), **_areas(sum(areas), pixel_mm),
        "area_fraction": round(float(sum(areas)) / (n * masks[0].size), 5),
        "diameters": picture_diameters(masks, pixel_mm),
        "metrics_2d": metrics, "has_uncertainty": False, "has_reference": metrics is not None,
        "summaries": [], "corrections": [],
    }


#: why a job failed when the server's disk filled up under it
DISK_FULL_JOB = ("The server's disk filled up while this job ran, so its results could not be "
                 "saved; try again once space is freed.")


def mask_entry_names(names: list[str]) -> list[str]:
    """The names of a stack's masks in its ``masks.zip``, one per picture of ``names``:
    ``<stem>_mask.png``, as the command line names a picture's mask; pictures of one stem
    (``slice1.png`` and ``slice1.jpg``) keep their whole names (``slice1.png_mask.png``,
    ``slice1.jpg_mask.png``), and a name taken still (letter case aside, as a Mac or
    Windows unzips) gains the slice's number (``S1.png_mask.png``,
    ``s1.png_2_mask.png``), so no mask takes another's place when unzipped."""
    stems = [Path(n).stem.casefold() for n in names]
    out: list[str] = []
    taken: set[str] = set()
    for k, name in enumerate(names):
        base = name if stems.count(stems[k]) > 1 else Path(name).stem
        entry, n = f"{base}_mask.png", k + 1
        while entry.casefold() in taken:  # a numbered name may be taken too
            entry, n = f"{base}_{n}_mask.png", n + len(names)
        taken.add(entry.casefold())
        out.append(entry)
    return out


def disk_full(exc: BaseException) -> bool:
    """True for a full disk (or quota): an ``OSError`` ENOSPC / EDQUOT, or SQLite's
    "database or disk is full"."""
    import errno
    import sqlite3

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        return "full" in str(exc).lower()
    return False


def error_sentence(exc: BaseException) -> str:
    """One sentence for a failed job: the InputError itself, else a plain summary."""
    if isinstance(exc, InputError):
        return str(exc)
    if disk_full(exc):
        return DISK_FULL_JOB
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"The segmentation failed ({type(exc).__name__}{': ' + text if text else ''})."


# -- child process ------------------------------------------------------------------------
def _child_main(conn: Any, threads: int | None, warm: bool = True,
                sample: dict[str, Any] | None = None) -> None:
    """Loop of a worker child: receive a job spec, run it, send the outcome."""
    import os

    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    from braintumor import segment as seg

    if warm:
        try:
            seg.available_methods()  # import the segmenters now, not on the first job
        except Exception:  # noqa: BLE001 - a broken method shows up when a job uses it
            pass
    if warm:
        _preload_model()
    if warm and sample is not None:
        try:
            # build the sample case before anyone asks for it
            sample_files(Path(sample["cache"]), sample["options"])
        except Exception:  # noqa: BLE001 - the sample job reports its own error
            pass
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        seg.METHODS.clear()
        seg.METHODS.update(spec.get("methods") or {})
        report = _throttled_sender(conn)

        job_dir = Path(spec["job_dir"])
        try:
            result = run_job(job_dir, spec, report)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none kills
            if not isinstance(exc, InputError):
                _write_error_log(job_dir, exc)
            conn.send(("error", error_sentence(exc)))
        else:
            conn.send(("done", result))


def _preload_model() -> None:
    """Load the shipped CNN into this process's model cache (as the first CNN job would),
    so that job does not pay for it."""
    try:
        from braintumor.inference import (
            get_model,
            open_members,
            resolve_device,
            shipped_model_available,
        )

        if shipped_model_available():
            # every member's session opened now, as a job would open them: the page's
            # default (accurate) runs them all (0.15 s and 9 MB more than the fast
            # mode's one, at the worker's start instead of in the first job)
            open_members(get_model(None, resolve_device("auto"), "auto"))
    except Exception:  # noqa: BLE001 - the job itself reports a broken model
        pass


def _throttled_sender(conn: Any) -> Report:
    """A report function sending to ``conn``, progress at most ten times a second."""
    last = [0.0]

    def report(kind: str, payload: Any) -> None:
        if kind == "progress":
            now = time.monotonic()
            if now - last[0] < 0.1 and payload[0] < 0.999:
                return  # the page polls a few times a second; no need for more
            last[0] = now
        conn.send((kind, payload))

    return report


def _write_error_log(job_dir: Path, exc: BaseException) -> None:
    try:
        (job_dir / "error.log").write_text("".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        pass


class _Child:
    """A warm worker process and its pipe.

    Started as ``python -c ...`` rather than through multiprocessing's spawn, which
    would re-import the caller's ``__main__`` (and fail in a script without a main
    guard); the pipe is a socket pair wrapped in a multiprocessing Connection.
    """

    def __init__(self, threads: int | None, warm: bool = True,
                 sample: dict[str, Any] | None = None) -> None:
        import os
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        code = (f"from braintumor.web.worker import child_entry; child_entry({fd}, "
                f"{threads!r}, {warm!r}, {sample!r}, parent={os.getpid()})")
        env = dict(os.environ)
        # the child sees the modules the server sees (test helpers included)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,), env=env,
                                     stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.conn.close()

    def stop(self) -> None:
        import subprocess

        try:
            self.conn.send(None)
            self.proc.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def child_entry(fd: int, threads: int | None, warm: bool = True,
                sample: dict[str, Any] | None = None, parent: int | None = None) -> None:
    """Entry point of a worker child process (see :class:`_Child`); ``parent``: the
    server's process id, whose end ends this process too."""
    from multiprocessing.connection import Connection

    if parent is not None:
        from braintumor.interrupts import die_with_parent

        die_with_parent(parent)  # the child is started from a slot thread, which lives
        # as long as the pool
    _child_main(Connection(fd), threads, warm, sample)


class WorkerPool:
    """Slots that take queued jobs from ``store`` and run them.

    ``workers``: number of jobs run at once; ``isolation``: ``"process"`` (default) or
    ``"thread"``; ``threads``: CPU threads a job may use (None = library default);
    ``job_timeout_s``: a job running longer is stopped and failed (None = no limit);
    ``warm``: import the segmenters when a child starts, not on its first job;
    ``prepare_sample``: with ``warm``, also build the sample case's files then.
    """

    def __init__(self, store: JobStore, workers: int = 1, isolation: str = "process",
                 threads: int | None = None, job_timeout_s: float | None = None,
                 sample_options: dict[str, Any] | None = None, warm: bool = True,
                 prepare_sample: bool = False) -> None:
        if isolation not in ("process", "thread"):
            raise ValueError(f"isolation must be 'process' or 'thread', not {isolation!r}")
        self.store = store
        self.workers = max(1, int(workers))
        self.isolation = isolation
        self.threads = threads
        self.job_timeout_s = job_timeout_s
        self.sample_options = sample_options or {}
        self.warm = warm
        self.prepare_sample = prepare_sample
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: list[_Child | None] = [None] * self.workers
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        #: outcomes the store could not record (a full disk): job id -> finish's arguments,
        #: recorded as soon as it can write again, before another job is taken
        self._unsettled: dict[str, dict[str, Any]] = {}
        #: what a job reported that the store could not record yet (its inputs), written
        #: with its outcome
        self._deferred: dict[str, dict[str, Any]] = {}

    # -- control --------------------------------------------------------------------
    def start(self) -> None:
        """Start the slot threads (and warm their children)."""
        for i in range(self.workers):
            t = threading.Thread(target=self._slot, args=(i,), daemon=True,
                                 name=f"braintumor-slot-{i}")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop taking jobs; end children. Running jobs go back to the queue next start."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(10)
        for i, c in enumerate(self._children):
            if c is not None:
                c.stop()
                self._children[i] = None

    def notify(self) -> None:
        """Tell idle slots a job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Ask the slot running ``job_id`` to stop it."""
        with self._lock:
            self._cancel.add(job_id)

    def _cancelled(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._cancel:
                return True
        try:
            job = self.store.get(job_id)
        except Exception as exc:  # noqa: BLE001 - asked again in a moment
            self._store_trouble(f"job {job_id}: reading it failed", exc)
            return False
        return job is None or job.cancel_requested

    # -- slot loop --------------------------------------------------------------------
    def _slot(self, index: int) -> None:
        if self.isolation == "process":
            try:
                self._children[index] = self._new_child()
            except Exception:  # noqa: BLE001 - retried when the first job comes
                log.exception("starting a worker process failed")
        while not self._stop.is_set():
            try:
                self._turn(index)
            except Exception:  # noqa: BLE001 - nothing may end a slot: no job would run
                log.exception("worker slot %d: unexpected error; it goes on", index)
                self._stop.wait(1.0)

    def _turn(self, index: int) -> None:
        """One turn of a slot: record what could not be recorded, then run one job."""
        if not self._settle():
            self._wake.wait(2.0)  # the store cannot write (a full disk): no job either
            self._wake.clear()
            return
        try:
            job = self.store.claim_next()
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the slot
            self._store_trouble("claiming a job failed", exc)
            job = None
        if job is None:
            self._wake.wait(0.5)
            self._wake.clear()
            return
        try:
            self._run(index, job)
        except Exception as exc:  # noqa: BLE001 - last line of defence
            log.exception("job %s failed in the pool", job.id)
            child = self._children[index]
            if child is not None:  # it may still be at the job: never give it another
                child.kill()
                self._children[index] = None
            self._finish(job.id, "failed", error_sentence(exc))
        finally:
            with self._lock:
                self._cancel.discard(job.id)
        if self.isolation == "process" and self._children[index] is None \
                and not self._stop.is_set():
            try:
                self._children[index] = self._new_child()  # warm for the next job
            except Exception:  # noqa: BLE001 - retried when the next job comes
                log.exception("starting a worker process failed")

    def _store_trouble(self, what: str, exc: BaseException) -> None:
        """Log a store that cannot write: a full disk as one line (it is said again at
        every try), anything else with its traceback."""
        if disk_full(exc):
            log.warning("%s: the disk is full (%s)", what, exc)
        else:
            log.error("%s", what, exc_info=exc)

    def _finish(self, job_id: str, status: str, message: str = "",
                result: dict[str, Any] | None = None) -> None:
        """``store.finish``, and when the store cannot write (a full disk), the outcome
        kept to be recorded at the slot's next turn (:meth:`_settle`): the job does not
        stay 'running' for ever, and the slot goes on."""
        with self._lock:
            inputs = self._deferred.pop(job_id, {}).get("inputs")
        if status == "failed" and not message:
            message = "The segmentation failed."
        outcome: dict[str, Any] = {"status": status, "message": message, "result": result,
                                   "inputs": inputs}
        try:
            self.store.finish(job_id, **outcome)
        except Exception as exc:  # noqa: BLE001 - kept, retried
            self._store_trouble(f"job {job_id}: its outcome ({status}) could not be recorded "
                                "yet", exc)
            with self._lock:
                self._unsettled[job_id] = outcome

    def _settle(self) -> bool:
        """Record the outcomes :meth:`_finish` could not; True when none is left."""
        with self._lock:
            pending = list(self._unsettled.items())
        for job_id, outcome in pending:
            try:
                self.store.finish(job_id, **outcome)
            except Exception as exc:  # noqa: BLE001 - tried again at the next turn
                if disk_full(exc):  # said once, by _finish: not every two seconds
                    log.debug("job %s: its outcome could not be recorded yet (%s)", job_id,
                              exc)
                else:
                    self._store_trouble(f"job {job_id}: its outcome could not be recorded "
                                        "yet", exc)
                return False
            with self._lock:
                self._unsettled.pop(job_id, None)
            log.warning("job %s: its outcome (%s) is recorded now", job_id, outcome["status"])
        return True

    def _spec(self, job: Job) -> dict[str, Any]:
        from braintumor import segment as seg

        return {"job_dir": str(self.store.job_dir(job.id)), "kind": job.kind,
                "method": job.method, "inputs": job.inputs, "methods": dict(seg.METHODS),
                "sample": self.sample_options, "options": dict(job.inputs.get("options") or {}),
                "sample_cache": str(self.store.data_dir / "sample")}

    def _run(self, index: int, job: Job) -> None:
        spec = self._spec(job)
        if self.isolation == "thread":
            self._run_in_thread(job, spec)
        else:
            self._run_in_child(index, job, spec)

    def _handle(self, job: Job, kind: str, payload: Any) -> bool:
        """Apply one message from a job; True when the job is over."""
        if kind == "done":
            self._finish(job.id, "done", result=payload)
            return True
        if kind == "error":
            self._finish(job.id, "failed", str(payload))
            return True
        # news of a job under way: one the store cannot record (a full disk) is passed
        # over, and the job goes on (its inputs are written with its outcome)
        try:
            if kind == "progress":
                self.store.set_progress(job.id, payload[0], payload[1])
            elif kind == "inputs":
                with self._lock:
                    self._deferred[job.id] = {"inputs": payload}
                self.store.update(job.id, inputs=payload)
                with self._lock:
                    self._deferred.pop(job.id, None)
            elif kind == "partial":
                self.store.update(job.id, result=payload, stage="measuring", progress=0.95)
        except Exception as exc:  # noqa: BLE001 - see above
            self._store_trouble(f"job {job.id}: its {kind} could not be recorded", exc)
        return False

    def _run_in_thread(self, job: Job, spec: dict[str, Any]) -> None:
        def report(kind: str, payload: Any) -> None:
            if self._cancelled(job.id):
                raise JobCancelled
            self._handle(job, kind, payload)

        try:
            result = run_job(Path(spec["job_dir"]), spec, report)
        except JobCancelled:
            self._finish(job.id, "cancelled", "Cancelled while running.")
        except BaseException as exc:  # noqa: BLE001
            if not isinstance(exc, InputError):
                _write_error_log(Path(spec["job_dir"]), exc)
            self._finish(job.id, "failed", error_sentence(exc))
        else:
            self._handle(job, "done", result)

    def _new_child(self) -> _Child:
        sample = None
        if self.prepare_sample:
            sample = {"cache": str(self.store.data_dir / "sample"),
                      "options": self.sample_options}
        return _Child(self.threads, self.warm, sample)

    @staticmethod
    def _pending(child: _Child) -> bool:
        try:
            return bool(child.conn.poll(0))
        except (EOFError, OSError):
            return False

    def _run_in_child(self, index: int, job: Job, spec: dict[str, Any]) -> None:
        child = self._children[index]
        if child is None or not child.alive():
            if child is not None:
                child.kill()
            child = self._children[index] = self._new_child()
        t0 = time.monotonic()
        try:
            child.conn.send(spec)
        except (OSError, BrokenPipeError):
            child.kill()
            self._children[index] = None
            self._finish(job.id, "failed", "The job could not be started; please try again.")
            return
        last_check = 0.0
        eof = False
        while True:
            try:
                if child.conn.poll(0.2):
                    kind, payload = child.conn.recv()
                    if self._handle(job, kind, payload):
                        return
            except (EOFError, OSError):
                eof = True  # the child closed its end: nothing more will come
            if eof or (not child.alive() and not self._pending(child)):
                try:
                    child.proc.wait(5)
                except Exception:  # noqa: BLE001 - killed below in any case
                    pass
                code = child.exitcode
                child.kill()
                self._children[index] = None
                self._finish(job.id, "failed",
                                  f"The segmentation process stopped unexpectedly (exit code "
                                  f"{code}); the server is fine, please try again.")
                return
            now = time.monotonic()
            if now - last_check > 0.3:
                last_check = now
                if self._cancelled(job.id) or self._stop.is_set():
                    child.kill()
                    self._children[index] = None
                    if self._stop.is_set() and not self._cancelled(job.id):
                        return  # server stopping: the job stays 'running', requeued on start
                    self._finish(job.id, "cancelled", "Cancelled while running.")
                    return
                if self.job_timeout_s is not None and now - t0 > self.job_timeout_s:
                    child.kill()
                    self._children[index] = None
                    self._finish(job.id, "failed", f"The job ran over the time limit of "
                                      f"{self.job_timeout_s:.0f} s and was stopped.")
                    return
