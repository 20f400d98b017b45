"""``braintumor predict INPUT... -o OUTDIR [--method cnn|watershed|hybrid] ...``.

INPUT is a BraTS case folder (either naming), a folder of such cases, a 4D NIfTI, a
folder of DICOM files (one study, or one study per subfolder: its series converted with
dcm2niix into ``OUTDIR/<folder>_series/``, matched to the modalities by description or
``--series``), or
2D images (PNG/JPEG/TIFF) / a folder of numbered slices. Writes ``OUTDIR/<case>.nii.gz``
on the input's own grid and a row per case in ``OUTDIR/volumes.csv`` (region volumes in
mL, voxel size, warning; rows of earlier runs into the folder are kept),
or ``<image>_mask.png``, ``<image>_overlay.png`` and ``areas_2d.csv`` for 2D.
A failing case is reported in one sentence and skipped; the others are still written,
and the exit status is 1 when any case failed (2 when none gave an output).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

NAME = "predict"
HELP = "Segment BraTS cases, 4D NIfTI files or 2D slice images."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="case folder, dataset folder, 4D NIfTI, DICOM study folder, or 2D image(s)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--method", default="cnn", choices=["cnn", "watershed", "hybrid"],
                   help="segmenter (default: cnn, the shipped model; hybrid, about 3 s more "
                        "a case on a CPU, is the most accurate: README, Results)")
    p.add_argument("--labels", default="brats2021", choices=["brats2021", "brats2023"],
                   help="label values written (default brats2021: ET=4; brats2023: ET=3)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the CNN runs (default auto: a CUDA GPU when there is one)")
    p.add_argument("--model", default=None,
                   help="model folder, checkpoint or train's run folder (default: shipped)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "openvino"],
                   help="CNN runtime on a CPU (auto: OpenVINO, else ONNX Runtime, when the "
                        "model ships ONNX files, else PyTorch); onnx or openvino named runs "
                        "that runtime, or is refused before any case where it cannot")
    p.add_argument("--fast", action="store_true",
                   help="CNN (and hybrid) fast mode: one model of the ensemble at overlap 0.25 "
                        "(18-27 windows of 80^3 instead of 72, 2 members x 36; accuracy in "
                        "MODEL_CARD.md)")
    p.add_argument("--tta", action="store_true", help="test-time mirroring (8 flips, slower)")
    p.add_argument("--align", action="store_true",
                   help="register each modality rigidly to the one whose grid the case lies "
                        "on (the T1, or the finer series beside thick T1 slices) before "
                        "segmenting, for a patient who moved between series (about 5 s a "
                        "modality on a CPU)")
    p.add_argument("--bias-correct", action="store_true",
                   help="divide each modality by its N4 bias field before segmenting, for a "
                        "scan that is not bias-corrected (2-3 s a full case on a CPU)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write <case>_uncertainty.nii.gz (entropy of the mirrored WT)")
    p.add_argument("--series", default=None, metavar="N=MOD,...",
                   help="a DICOM study folder: which series (by DICOM series number as "
                        "listed, e.g. 4b or no-number-1, or by description) is which "
                        "modality, e.g. 3=t1,4=t1ce,5=t2,7=flair, or in BraTS 2023's words "
                        "t1n, t1c, t2w, t2f (default: read from the series descriptions and "
                        "acquisition)")
    p.add_argument("--channels", default=None, metavar="MOD,MOD,MOD,MOD",
                   help="a 4D NIfTI file: its four channels in the file's order, e.g. "
                        "t1,t1ce,t2,flair for BraTS's (default: as a dataset.json beside the "
                        "file or one folder up names them, else the Decathlon's "
                        "flair,t1,t1ce,t2, checked against the images' contrasts)")
    p.add_argument("--report", action="store_true",
                   help="also write <case>_report.html for each 3D case: key slices with the "
                        "outline, volumes, method and model, warnings")
    p.add_argument("--diameters", action="store_true",
                   help="also the RANO measurements in volumes.csv: each region's sum of "
                        "products and its largest lesion's two diameters (ET, WT; about "
                        "0.25 s a case)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="a DICOM study: also write <case>_seg.dcm, the outline as a DICOM "
                        "Segmentation over the series the case's grid is on (the T1, or the "
                        "finer series beside thick T1 slices; for PACS and DICOM viewers; it "
                        "carries the study's patient identifiers)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="MM",
                   help="2D pictures: their pixel size in mm (exported pictures do not "
                        "carry it), for tumour areas in mm^2 as well as pixels")
    p.add_argument("--skip-existing", action="store_true",
                   help="pass over each case whose label map is already in OUTDIR with its "
                        "row in volumes.csv made as this run would make it (method, model, "
                        "mode, --labels, and the files --report, --uncertainty, --diameters "
                        "and --dicom-seg add), to go on with a run that was stopped")
    p.add_argument("--scheduler", default=None, metavar="local:N|HOST:PORT",
                   help="spread the cases over a Dask cluster: N local worker processes, or "
                        "a running scheduler whose workers see the same folders "
                        "(needs braintumor[scale])")


def _split_inputs(inputs: list[str], bases: dict[Path, Path] | None = None
                  ) -> tuple[list[Path], list[Path]]:
    """-> (3D inputs, 2D inputs): pictures and folders (of folders) of numbered slice
    pictures go to the 2D model, everything else to the 3D pipeline. ``bases`` gets,
    for a 2D folder found among a dataset's 3D cases, that dataset's folder (its
    patients' outputs keep their paths below it)."""
    from braintumor.io import is_image_2d

    try:
        from braintumor.slices2d import is_2d_input
    except ImportError:  # 2D model not installed: pictures alone count as 2D

        def is_2d_input(path: str | Path) -> bool:
            return Path(path).is_file() and is_image_2d(Path(path).name)

    from braintumor.dicom import is_dicom_study

    three: list[Path] = []
    two: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        # a folder of DICOM files is a study even when a viewer's preview pictures (a
        # PACS CD's JPEGs) lie among them
        (two if is_2d_input(p) and not is_dicom_study(p) else three).append(p)
        if p in three and p.is_dir() and not is_dicom_study(p):
            # a 2D patient's folder of numbered slices among a dataset's 3D cases (which
            # the 3D search passes over): segmented by the 2D model, and said so
            for sub in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")):
                if is_2d_input(sub) and not is_dicom_study(sub):
                    print(f"note: {sub} holds 2D slice pictures, not a 3D case: it is "
                          "segmented by the 2D model (masks and areas_2d.csv).",
                          file=sys.stderr)
                    two.append(sub)
                    if bases is not None:
                        bases[sub] = p
    return three, two


def _check_cnn(args: argparse.Namespace) -> None:
    """Refuse, once and before any case is segmented, a CNN that cannot run as asked:
    ``--device cuda`` without a GPU, a ``--model`` that is none, a ``--backend`` named
    that cannot run it. Asked only where 3D cases go to the CNN (``--method`` cnn or
    hybrid): 2D pictures and the watershed use none of these options (a warning says
    so), and a run of them is not refused for them."""
    if getattr(args, "method", "cnn") == "watershed":
        return
    from braintumor.inference import check_backend, check_model, resolve_device

    if getattr(args, "device", "auto") == "cuda":
        resolve_device("cuda")
    if getattr(args, "model", None):
        check_model(args.model)
    # a runtime named that cannot run the model is refused, not swapped for another
    check_backend(getattr(args, "model", None), getattr(args, "backend", "auto"),
                  getattr(args, "device", "auto"))


#: most bytes a zipped DICOM study given on the command line may unpack to
MAX_UNZIPPED_BYTES = 32 * 2**30


#: this run's failures, each one sentence, said again together at its end
_FAILED: list[str] = []


def _error(text: object) -> None:
    """One input's failure: its ``error:`` line now, and its sentence again in the
    summary at the end of the run, where a long cohort's failures would otherwise be
    scrolled away among the progress lines."""
    print(f"error: {text}", file=sys.stderr, flush=True)
    _FAILED.append(str(text))


#: the cases of a run whose outputs could not be written: for want of disk, memory or
#: permission (:func:`braintumor.errors.environment_failure`), or a folder in the label
#: map's place; the run exits 1 even when none gave an output, as for any file that
#: cannot be written, not the 2 of a mistake in the input
_MACHINE_FAILED: list[str] = []


def run(args: argparse.Namespace) -> int:
    """``predict``: a zip among the inputs (a zipped DICOM study, case folder or dataset)
    is unpacked next to the outputs for the run (a case named after the zip where its
    files name none) and removed afterwards."""
    _FAILED.clear()
    _MACHINE_FAILED.clear()

    if args.scheduler:  # a bad value or an unreachable scheduler before the output folder
        from braintumor.scale import check_scheduler

        check_scheduler(args.scheduler)
    from braintumor.commands import removing_empty_made
    from braintumor.interrupts import interruptible

    # a run that wrote nothing leaves no empty output folders of its own making;
    # SIGTERM (a time limit, docker stop) stops a run as Ctrl-C does
    with removing_empty_made(args.output), interruptible():
        return _run_inputs(args)


def _run_inputs(args: argparse.Namespace) -> int:
    import shutil

    from braintumor.commands import output_folder
    from braintumor.errors import InputError

    zips = {raw for raw in args.inputs
            if str(raw).lower().endswith(".zip") and Path(raw).is_file()}
    if not zips:
        return _run(args)
    _check_cnn(args)  # a zip is a 3D study or case: refused as asked before it is unpacked
    out_dir = output_folder(args.output)
    work = out_dir / f".unzipped-{os.getpid()}"
    inputs: list[str] = []
    failures = 0
    try:
        for raw in args.inputs:
            if raw not in zips:
                inputs.append(raw)
                continue
            folder = work / Path(raw).name[: -len(".zip")]
            try:
                folder = _unzip_study(Path(raw), folder)
            except InputError as exc:  # one unreadable zip leaves the other inputs
                _error(exc)
                failures += 1
                continue
            inputs.append(str(folder))
        if not inputs:  # every zip unreadable: the count of failures ends the run
            return _finish([], failures)
        return _run(argparse.Namespace(**{**vars(args), "inputs": inputs}), failures,
                    checked=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unzip_study(zip_path: Path, folder: Path) -> Path:
    """Unpack a zip into ``folder`` (as the web page does an upload: no entry may leave
    the folder, none may be encrypted, and all of them together at most
    :data:`MAX_UNZIPPED_BYTES`). A zip of NIfTI files (a case folder or a dataset, zipped)
    keeps its folders and file names, so its cases are found as in the folder it was
    made from (a case named by its modalities' files after the zip; the folder, not the
    folders around it alone, is returned); any other zip is a DICOM study, its files read
    by their content."""
    import shutil
    from pathlib import PurePosixPath

    from braintumor.errors import InputError
    from braintumor.io import extract_zip_entries, is_nifti, system_entry

    if folder.exists():
        raise InputError(f"{zip_path}: another zip of this run is also named "
                         f"{zip_path.name!r}; give the zips different names.")
    raw = folder.with_name(f".raw-{folder.name}")
    try:
        entries = extract_zip_entries(zip_path, raw, str(zip_path), MAX_UNZIPPED_BYTES)
        niftis = [(n, p) for n, p in entries if not system_entry(n) and is_nifti(n)]
        if not niftis:
            raw.rename(folder)
            return folder
        for name, path in niftis:  # entry names were checked not to leave the archive
            parts = ["".join(c for c in part if c.isprintable()) or "_"
                     for part in PurePosixPath(name).parts]
            dest = folder.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            path.replace(dest)
        top = folder
        while True:  # the zip of a folder holds that folder: read what it holds
            inside = list(top.iterdir())
            if len(inside) != 1 or not inside[0].is_dir():
                return top
            top = inside[0]
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def _run(args: argparse.Namespace, failures: int = 0, checked: bool = False) -> int:
    from rich.console import Console

    from braintumor import dicom
    from braintumor.cases import CaseSource, discover
    from braintumor.commands import output_folder
    from braintumor.errors import InputError

    console = Console(stderr=True)
    channels = None
    if getattr(args, "channels", None):  # a wrong order named before any work
        from braintumor.cases import parse_channels

        channels = parse_channels(args.channels)
    out_dir = output_folder(args.output)
    bases: dict[Path, Path] = {}
    three, two = _split_inputs(args.inputs, bases)
    if three and not checked:
        _check_cnn(args)
    studies = [p for p in three if dicom.is_dicom_study(p)]
    choice = _series_choice(args.series, studies, [p for p in [*three, *two]
                                                   if p not in studies])
    written: list[Path] = []
    for said in _unused_options(args, bool(three), bool(two)):
        print(f"warning: {said}", file=sys.stderr)

    if two:
        try:
            from braintumor.slices2d import predict_2d_inputs
        except ImportError:
            raise InputError("2D images need the 2D model, which is not installed.") from None
        done_2d, failed_2d = predict_2d_inputs(two, out_dir, pixel_mm=args.pixel_size,
                                               not_written=_MACHINE_FAILED, bases=bases)
        written += done_2d
        failures += failed_2d

    # every input's cases first (a study by its folder, nothing converted yet), so that two
    # of one name are told apart before anything of one is written under the other's name
    planned: list[tuple[Path, str, CaseSource | None]] = []
    for p in three:
        try:
            if p in studies:
                planned += [(folder, cid, None) for folder, cid in dicom.find_studies(p)]
            else:
                skipped: list[InputError] = []
                passed_over: list[str] = []
                # a file given names itself in a clash (two files of one case folder)
                cases = discover(p, errors=skipped, notes=passed_over)
                for note in passed_over:  # a loose file that is no case: the rest go on
                    print(f"note: {note}", file=sys.stderr)
                planned += [(p if p.is_file() else s.reference_path, s.case_id, s)
                            for s in cases]
                for s in cases:  # one file of a case folder stands for the whole case
                    if p.is_file() and s.image4d is None and len(s.modality_paths) > 1:
                        print(f"note: {p} is one file of case {s.case_id}; the case is "
                              f"segmented from its {len(s.modality_paths)} images in "
                              f"{p.parent}.", file=sys.stderr)
                for bad in skipped:  # a dataset's case that cannot be read: the rest go on
                    _error(bad)
                    failures += 1
        except InputError as exc:
            _error(exc)
            failures += 1
    planned, clashing = _distinct_case_ids(planned)
    failures += clashing
    sources: list[CaseSource] = []
    for where, cid, found in planned:
        if found is not None:
            sources.append(found)
            continue
        try:  # a study: converted next to the outputs, then a case
            out_dir.mkdir(parents=True, exist_ok=True)
            sources.append(dicom.study_source(where, out_dir, cid, choice))
            # which series became which modality, for the user to check the match
            print(f"{cid}: {sources[-1].series}", file=sys.stderr)
        except InputError as exc:  # one study failing leaves the others
            _error(exc)
            failures += 1
    if not sources and not written:
        if failures:  # the run's count of failures ends it, as after a case that failed
            return _finish([], failures)
        raise InputError("No input could be read.")

    sources, clashes = _without_clashes(sources, out_dir)
    failures += clashes
    if channels is not None:
        fours = [s for s in sources if s.image4d is not None]
        for s in fours:
            s.channels = channels
        if not fours:
            print("warning: --channels names the channels of a 4D NIfTI file, and no input "
                  "is one; the cases' modalities come from their file names.",
                  file=sys.stderr)
    if args.dicom_seg and not any(s.dicom_reference for s in sources):
        print("warning: --dicom-seg: no input is a DICOM study, so no DICOM SEG is written.",
              file=sys.stderr)
    if getattr(args, "skip_existing", False):
        sources = _not_done(args, sources, out_dir)
    if args.scheduler:
        return _run_distributed(args, sources, out_dir, written, failures)

    rows: list[dict[str, Any]] = []
    if sources:  # every case refused: no progress display (it would print an empty line)
        failures += _segment_each(args, sources, out_dir, console, written, rows)
    table, failed = _table(rows, out_dir)
    return _finish(written + table + _index(args, out_dir), failures, failed)


def _segment_each(args: argparse.Namespace, sources: list[Any], out_dir: Path, console: Any,
                  written: list[Path], rows: list[dict[str, Any]]) -> int:
    """Segment each case and write its outputs, with a progress line per case: adds the
    files written to ``written`` and the cases' volumes to ``rows``; returns how many
    cases failed (each said in one ``error:`` line, the others going on)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # a log (stderr piped to a file) gets a line per case as it ends, not bars at the end
    prog: Any = (Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                          console=console, transient=False)
                 if console.is_terminal else _CaseLines(len(sources)))
    from braintumor.interrupts import Interrupted

    try:  # loading the model to warm it takes a moment a Ctrl-C may fall in
        warming = _warm_cnn(args) if sources else None
    except (KeyboardInterrupt, Interrupted):
        _say_interrupted(out_dir, 0, f" at {sources[0].case_id}")
        raise
    try:
        failures = _each_case(args, sources, out_dir, prog, written, rows)
    finally:
        if warming is not None:
            warming.join()
    return failures


def _warm_cnn(args: argparse.Namespace) -> Any:
    """The CNN's members compiling in the background while the first case is read
    (:func:`braintumor.inference.warm_model`), where the method uses the CNN."""
    if args.method == "watershed":
        return None
    try:
        from braintumor.inference import warm_model
    except ImportError:  # the case's own segmentation says what is missing
        return None
    return warm_model(args.model, args.device, args.backend, fast=bool(args.fast))


def _each_case(args: argparse.Namespace, sources: list[Any], out_dir: Path, prog: Any,
               written: list[Path], rows: list[dict[str, Any]]) -> int:
    """The loop of :func:`_segment_each` over the cases."""
    from braintumor.cases import load_case
    from braintumor.errors import describe_failure, environment_failure
    from braintumor.interrupts import Interrupted, held
    from braintumor.scale import volume_row, write_outputs
    from braintumor.segment import segment

    failures = 0
    with prog:
        for src in sources:
            task = prog.add_task(src.case_id, total=1.0, stage="reading")

            def cb(frac: float, stage: str, task: Any = task) -> None:
                prog.update(task, completed=frac, stage=stage)

            try:
                case = load_case(src, with_label=False)
                res = segment(case, args.method, progress=cb, **_options(args))
                if args.report:
                    prog.update(task, stage="report")
                with held():  # the label map and its row, both or neither
                    written.append(write_outputs(case, res, out_dir, args.labels,
                                                 args.report, args.method, args.dicom_seg))
                    rows.append(volume_row(case, res, args.method, args.diameters,
                                           args.labels))
                    _keep_row(rows[-1], out_dir)
                written.extend(_report_files(args, out_dir, case.case_id))
                unc = out_dir / f"{case.case_id}_uncertainty.nii.gz"
                if res.uncertainty is not None and unc.exists():
                    written.append(unc)
                seg_file = out_dir / f"{case.case_id}_seg.dcm"
                if args.dicom_seg and src.dicom_reference is not None and seg_file.exists():
                    written.append(seg_file)
                done = "done"
                if res.info.get("resampled_to_mm"):
                    vox = "x".join(f"{s:g}" for s in case.spacing)
                    done = f"done (segmented on a 1 mm resampling of its {vox} mm voxels)"
                prog.update(task, completed=1.0, stage=done)
                if rows[-1]["warning"]:  # the result's, and an implausible volume's
                    print(f"warning: {case.case_id}: {rows[-1]['warning']}", file=sys.stderr)
            except (KeyboardInterrupt, Interrupted):
                prog.update(task, stage="interrupted")
                prog.stop()
                _say_interrupted(out_dir, len(rows), f" at {src.case_id}")
                raise
            except Exception as exc:  # noqa: BLE001 - one case failing leaves the others
                prog.update(task, stage="failed")
                _case_failed(src.case_id, describe_failure(exc), out_dir)
                if environment_failure(exc):
                    _MACHINE_FAILED.append(src.case_id)
                failures += 1
    return failures


class _CaseLines:
    """Progress where stderr is no terminal (a log file, a pipe): a plain line per case
    when it ends (``[3/40] case: done (12.5 s)``), flushed, so that a long cohort's log
    shows how far it got without a terminal's control characters."""

    def __init__(self, total: int) -> None:
        self.total, self.ended = total, 0
        self.started: dict[str, float] = {}

    def __enter__(self) -> _CaseLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, name: str, **_: Any) -> str:
        import time

        self.started[name] = time.perf_counter()
        return name

    def update(self, task: str, completed: float | None = None, stage: str = "") -> None:
        import time

        if stage.startswith("done") or stage in ("failed", "interrupted"):
            self.ended += stage != "interrupted"
            took = time.perf_counter() - self.started.get(task, time.perf_counter())
            print(f"[{self.ended}/{self.total}] {task}: {stage} ({took:.1f} s)",
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        return None


def _say_interrupted(out_dir: Path, finished: int, where: str = "", note: str = "") -> None:
    """The line that says what an interrupted run kept and how to go on."""
    table = out_dir / "volumes.csv"
    before = " before it" if where else ""
    kept = (f"the {finished} case(s) finished{before} are written, with their rows in {table}"
            if finished else "no case of this run had finished, so none was written")
    print(f"interrupted{where}: {kept}{note}; run the same command with --skip-existing "
          "to go on.", file=sys.stderr, flush=True)


def _case_failed(case_id: str, message: str, out_dir: Path) -> None:
    """A case's failure in one sentence, saying so when an earlier run's label map of
    that case is in the output folder (it is kept, with its row)."""
    text = _named(case_id, message)
    if (out_dir / f"{case_id}.nii.gz").is_file():
        text = f"{text.rstrip()} (the earlier result in {out_dir} is kept)"
    _error(text)


def _not_done(args: argparse.Namespace, sources: list[Any], out_dir: Path) -> list[Any]:
    """``--skip-existing``: the cases still to do. A case is passed over, in a one-line
    note, when its label map is in ``out_dir`` with its row in ``volumes.csv`` made as this
    run would make it (:func:`_made_alike`); the others are segmented again, said in one
    line with how many. The table is only read (a file there that is no table is left
    for the run's first write to keep aside)."""
    from braintumor.scale import VOLUME_TABLE, read_volume_rows

    rows = {r.get("case"): r for r in read_volume_rows(out_dir / VOLUME_TABLE)}
    version = _model_version(args)
    todo, redone = [], 0
    for s in sources:
        row = rows.get(s.case_id)
        if row is not None and _readable_map(out_dir / f"{s.case_id}.nii.gz") and \
                _made_alike(args, row, s, out_dir, version):
            print(f"note: {s.case_id}: skipped, its label map and row are in {out_dir} "
                  "(--skip-existing).", file=sys.stderr)
        else:
            redone += row is not None
            todo.append(s)
    if redone:
        print(f"note: {redone} case(s) in {out_dir} were made with other settings (method, "
              "model, mode, --labels), lack a file this run writes or hold a label map "
              "that cannot be read, so they are segmented again (--skip-existing).",
              file=sys.stderr)
    return todo


def _readable_map(path: Path) -> bool:
    """Whether ``path`` is a label map that reads to its end: a file cut short (a copy
    stopped half way, a full disk) is no finished case. Reading a label map takes a
    fraction of a second, against seconds to segment its case again."""
    from braintumor.io import load_label_nifti

    if not path.is_file():
        return False
    try:
        load_label_nifti(path)
    except Exception:  # noqa: BLE001 - any failure to read means: made again
        return False
    return True


def _model_version(args: argparse.Namespace) -> str | None:
    """The CNN model version this run's rows record (None when it cannot be told)."""
    if args.method == "watershed":
        return None
    try:
        from braintumor.inference import model_version

        version = model_version(args.model)
    except Exception:  # noqa: BLE001 - no model here: the run says so itself
        return None
    return None if version == "unknown" else version  # no version: models not told apart


#: the words by which a ``volumes.csv`` row from before its ``missing`` and ``dicom_seg``
#: columns says that the watershed stood in for the method asked, and that no DICOM SEG
#: could be written: fixed as those tables hold them, whatever the warnings now say
_OLD_FALLBACK_WORDS = "so it was segmented by the watershed alone"
_OLD_NO_SEG_WORDS = "no DICOM SEG written"


def _made_alike(args: argparse.Namespace, row: dict[str, str], src: Any, out_dir: Path,
                version: str | None) -> bool:
    """Whether a case's earlier row and files are what this run would write: the same
    method (a case the CNN or hybrid left to the watershed for a missing T1 or T2,
    which its ``missing`` column records, counts as done by them), CNN model version and
    mode (fast or accurate, with mirroring: ``--tta``, ``--uncertainty``), label values
    (``--labels``) and the files and columns the options ask for (``--report``,
    ``--uncertainty``, ``--diameters``, ``--dicom-seg``, whose SEG is not asked for again
    where the ``dicom_seg`` column says none could be written). A row from before those
    two columns is read by the words its warning then held (:data:`_OLD_FALLBACK_WORDS`,
    :data:`_OLD_NO_SEG_WORDS`). The fallback counts only while the case still lacks what
    its row names (:func:`_still_lacking`): a case given its T1 since goes to the method
    asked, with its model and mode checked."""
    from braintumor.scale import SEG_NOT_WRITTEN

    method = row.get("method") or ""
    warning = row.get("warning") or ""
    # a stand-in for the method asked: only a question when that is not the watershed
    fallback = args.method != "watershed" and _still_lacking(row, src)
    if method != args.method and not fallback:
        return False
    if args.method != "watershed" and not fallback:
        mirrored = args.tta or args.uncertainty
        mode = ("fast" if args.fast else "accurate") + (" + mirroring" if mirrored else "")
        if version is None or row.get("model") != version or row.get("mode") != mode:
            return False
    if (row.get("labels") or _labels_of(out_dir / f"{src.case_id}.nii.gz")) not in \
            (args.labels, "either"):
        return False
    cid = src.case_id
    wanted = [f"{cid}_report.html"] if args.report else []
    if args.uncertainty and args.method != "watershed" and not fallback:
        wanted.append(f"{cid}_uncertainty.nii.gz")
    no_seg = row.get("dicom_seg") == SEG_NOT_WRITTEN or (
        not row.get("dicom_seg") and _OLD_NO_SEG_WORDS in warning)
    if args.dicom_seg and src.dicom_reference is not None and not no_seg:
        wanted.append(f"{cid}_seg.dcm")
    if not all((out_dir / f).is_file() for f in wanted):
        return False
    return not args.diameters or bool(row.get("ET_SPD_mm2") and row.get("WT_SPD_mm2"))


#: a modality as ``volumes.csv`` and the warnings name it
_MODALITY_WORD = r"\b(?:T1ce|T1|T2|FLAIR)\b"


def _still_lacking(row: dict[str, str], src: Any) -> bool:
    """Whether the watershed stood in for the method asked on this case (its row's
    ``missing`` column, or in a row from before it, its warning's words) and the case as
    it is now still lacks those modalities: none has a file now, or every file there is
    blank (one value throughout), judged by its voxels as the segmentation judges them,
    not by its date (a DICOM study's series are written anew on every run; a good file
    restored with its old date is a new file all the same). A row carried over by another
    run (a release that kept unknown columns) can name a modality the case has been
    given since: the case is then for the method asked."""
    import re

    from braintumor.cases import MODALITY_NAMES

    warning = row.get("warning") or ""
    said = row.get("missing") or ""
    if not said:
        if row.get("method") != "watershed" or _OLD_FALLBACK_WORDS not in warning:
            return False
        said = warning.split(_OLD_FALLBACK_WORDS)[0]
    names = set(re.findall(_MODALITY_WORD, said))
    if not names:
        return False
    modality = {v: k for k, v in MODALITY_NAMES.items()}
    if src.image4d is None and not any(src.modality_paths.get(modality[n]) for n in names):
        return True  # without them now as then
    from braintumor.cases import load_case, without_blank

    try:  # a file there now: lacking only while its voxels are still blank
        case = without_blank(load_case(src, with_label=False))
    except Exception:  # noqa: BLE001 - unreadable now: segmenting it again says why
        return False
    return {modality[n] for n in names} <= set(case.missing)


def _labels_of(path: Path) -> str:
    """The convention of a label map written before ``volumes.csv`` recorded it, from its
    values: ET is 4 in brats2021's, 3 in brats2023's; ``either`` without ET (the two
    conventions then write the same values)."""
    import numpy as np

    from braintumor.io import load_label_nifti

    try:
        counts = np.bincount(load_label_nifti(path).data.ravel(), minlength=5)
    except Exception:  # noqa: BLE001 - unreadable: made again
        return ""
    return "brats2021" if counts[4] else "brats2023" if counts[3] else "either"


def _keep_row(row: dict[str, Any], out_dir: Path) -> None:
    """Add a finished case's row to ``volumes.csv`` at once, so that a run stopped later
    (Ctrl-C, a killed job) keeps it; a table that cannot be written is said once, at the
    end of the run."""
    from braintumor.scale import write_volume_table

    try:
        write_volume_table([row], out_dir)
    except Exception:  # noqa: BLE001,S110 - _table says why, after the run
        pass


def _series_choice(text: str | None, studies: list[Path], others: list[Path]
                   ) -> dict[str, str]:
    """``--series`` parsed, once for the run. It names the series of DICOM studies: with
    no study among the inputs it is refused (it would be silently ignored); with some,
    the other inputs are said once to be read without it."""
    from braintumor.dicom import parse_series_choice
    from braintumor.errors import InputError

    if not text:
        return {}
    if not studies:
        raise InputError("--series names the series of a DICOM study, and no input is one (a "
                         "folder of DICOM files); a NIfTI case's modalities come from its file "
                         "names, so leave --series out.")
    choice = parse_series_choice(text)
    if others:
        shown = ", ".join(str(p) for p in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        print(f"warning: --series applies to DICOM studies only; it is not used for "
              f"{shown}{more}.", file=sys.stderr)
    return choice


def _distinct_case_ids(planned: list[tuple[Path, str, Any]]) -> tuple[list[Any], int]:
    """The inputs' cases (where, case id, source or None for a DICOM study not yet
    converted) less those whose case id an earlier one of this run already has (two CDs'
    ``DICOM`` folders): each refused in one sentence, before anything is converted, so
    that no study's series or outline is written under another's name. Case ids are
    compared regardless of letter case (file systems that ignore it would mix them)."""
    first: dict[str, Path] = {}
    keep = []
    for where, cid, found in planned:
        key = cid.casefold()
        if key in first:
            advice = ("give the studies folders of different names" if found is None else
                      "a case is named by its files' common prefix (or a 4D file's name), "
                      "not by its folder, so rename one case's files, or run it into "
                      "another folder")
            _error(f"{where}: another input of this run is also case {cid!r} "
                   f"({first[key]}); {advice}.")
            continue
        first[key] = where
        keep.append((where, cid, found))
    return keep, len(planned) - len(keep)


def _without_clashes(sources: list[Any], out_dir: Path) -> tuple[list[Any], int]:
    """The cases whose label map may be written: not over one of the inputs (``-o`` the
    input's own folder, a 4D file named like its case), nor where a folder stands in its
    place (refused before the case is segmented, as a file that cannot be written: exit
    status 1); each refused case is said in one sentence. (Two inputs of one case name
    were refused before, by :func:`_distinct_case_ids`.)"""
    inputs = set()
    for s in sources:
        files = [*s.modality_paths.values(), s.image4d, s.label_path]
        inputs |= {Path(f).resolve() for f in files if f is not None}
    keep = []
    for s in sources:
        target = (out_dir / f"{s.case_id}.nii.gz").resolve()
        if target in inputs:
            _error(f"{s.case_id}: its label map would overwrite the input {target}; "
                   "write the outputs to another folder.")
        elif target.is_dir():
            _error(f"{s.case_id}: {out_dir / target.name} is a folder, where the case's "
                   "label map is to be written; move or rename it, or write the outputs to "
                   "another folder.")
            _MACHINE_FAILED.append(s.case_id)
        else:
            keep.append(s)
    return keep, len(sources) - len(keep)


#: the options only the CNN (and the hybrid, which runs it) takes, with their defaults
_OPTIONS_CNN: dict[str, Any] = {"device": "auto", "model": None, "backend": "auto",
                                "fast": False, "tta": False}

#: the options only 3D cases take, with their defaults (the CNN's among them)
_OPTIONS_3D: dict[str, Any] = {"method": "cnn", "labels": "brats2021", **_OPTIONS_CNN,
                               "align": False, "bias_correct": False, "uncertainty": False,
                               "report": False, "diameters": False, "dicom_seg": False}


def _unused_options(args: argparse.Namespace, has_3d: bool, has_2d: bool) -> list[str]:
    """One sentence for each kind of option the run's inputs or method do not take (a
    pixel size with no 2D picture, 3D options with 2D pictures only, the CNN's options
    with the watershed), rather than passing over them in silence; the run goes on."""
    out = []
    if args.pixel_size is not None and not has_2d:
        out.append("--pixel-size applies to 2D pictures only; the 3D cases' voxel sizes "
                   "come from their files.")
    if has_2d and not has_3d:
        given = _given(args, _OPTIONS_3D)
        if given:
            out.append(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to 3D "
                       "cases only; the 2D pictures are outlined by the 2D model as they "
                       "always are.")
    if has_3d and getattr(args, "method", "cnn") == "watershed":
        given = _given(args, _OPTIONS_CNN)
        if given:
            one = len(given) == 1
            out.append(f"{', '.join(given)} appl{'ies' if one else 'y'} to the CNN (--method "
                       f"cnn or hybrid); the watershed does not use {'it' if one else 'them'}.")
        if getattr(args, "uncertainty", False):
            out.append("--uncertainty: the watershed gives no probabilities, so no "
                       "uncertainty map is written (it comes with --method cnn or hybrid).")
    return out


def _given(args: argparse.Namespace, options: dict[str, Any]) -> list[str]:
    """The options of ``options`` that ``args`` sets away from their defaults, as flags."""
    return [f"--{k.replace('_', '-')}" for k, default in options.items()
            if getattr(args, k, default) != default]


def _named(case_id: str, message: str) -> str:
    """An error line's text for one case: ``<case>: <message>``, the message's own
    "Case <case>: " lead not said twice."""
    lead = f"Case {case_id}: "
    if message.startswith(lead):
        return f"{case_id}: {message[len(lead):]}"
    return message if message.startswith(f"Case {case_id} ") else f"{case_id}: {message}"


def _table(rows: list[dict[str, Any]], out_dir: Path) -> tuple[list[Path], int]:
    """``volumes.csv`` with this run's rows, and 1 when it could not be written (said in
    a sentence; the label maps stand)."""
    from braintumor.errors import describe_failure
    from braintumor.scale import write_volume_table

    try:
        table = write_volume_table(rows, out_dir)
    except Exception as exc:  # noqa: BLE001 - the outputs already written stand
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return [], 1
    return ([table] if table else []), 0


def _index(args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """With --report, the page that links every case's report in the folder."""
    from braintumor.scale import write_report_index

    index = write_report_index(out_dir) if args.report else None
    return [index] if index else []


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """segment() options from the command line."""
    extra = {"fast": True} if args.fast and args.method != "watershed" else {}
    return {"device": args.device, "model": args.model, "tta": args.tta,
            "uncertainty": args.uncertainty, "backend": args.backend, "align": args.align,
            "bias_correct": args.bias_correct, **extra}


def _run_distributed(args: argparse.Namespace, sources: list[Any], out_dir: Path,
                     written: list[Path], failures: int) -> int:
    """The 3D cases on a Dask cluster (:mod:`braintumor.scale`), one line per case."""
    from braintumor.scale import CaseOutcome, predict_many

    done = 0

    def report(o: CaseOutcome) -> None:
        nonlocal done
        done += 1
        # a failure's sentence comes in its error line (as it arrives, as a serial run
        # says it) and in the summary
        state = f"{o.seconds:.1f} s on {o.worker}" if o.ok else "failed"
        print(f"[{done}/{len(sources)}] {o.case_id}: {state}", file=sys.stderr, flush=True)
        if not o.ok:
            _case_failed(o.case_id, str(o.error), out_dir)
        if o.warning:
            print(f"warning: {o.case_id}: {o.warning}", file=sys.stderr, flush=True)
        if o.ok and o.row:
            _keep_row(o.row, out_dir)

    from braintumor.interrupts import Interrupted

    kept = 0

    def report_and_count(o: CaseOutcome) -> None:
        nonlocal kept
        report(o)
        kept += bool(o.ok and o.row)

    try:
        outcomes = predict_many(sources, out_dir, args.method, args.labels, args.scheduler,
                                _options(args), on_done=report_and_count,
                                report=args.report, dicom_seg=args.dicom_seg,
                                diameters=args.diameters)
    except (KeyboardInterrupt, Interrupted) as exc:
        left = getattr(exc, "still_running", 0)
        note = ""
        if left and getattr(exc, "may_write", False):
            note = (f"; {left} case(s) running on the workers could not be told to stop "
                    "and may still write their label maps, without rows")
        elif left:
            note = f"; the other {left} case(s) were stopped on the workers and write nothing"
        _say_interrupted(out_dir, kept, note=note)
        raise
    for o in outcomes:
        if o.ok and o.path is not None:
            # named under the output folder as given, as the other files are (a worker
            # answers with its absolute path)
            written.append(out_dir / Path(o.path).name)
            written.extend(_report_files(args, out_dir, o.case_id))
        else:
            failures += 1
            if o.environment:
                _MACHINE_FAILED.append(o.case_id)
    table, failed = _table([o.row for o in outcomes if o.ok and o.row], out_dir)
    rc = _finish(written + table + _index(args, out_dir), failures, failed)
    # every worker died (no memory, say): cases failed, no mistake of the user's
    return 1 if rc == 2 and any(o.worker == "?" for o in outcomes) else rc


def _report_files(args: argparse.Namespace, out_dir: Path, case_id: str) -> list[Path]:
    """The page a case's ``--report`` wrote, to be listed with its label map (its
    picture and JSON lie beside it)."""
    page = out_dir / f"{case_id}_report.html"
    return [page] if args.report and page.exists() else []


def _finish(written: list[Path], failures: int, table_failed: int = 0) -> int:
    for w in written:
        print(w)
    if table_failed and not failures:  # its sentence is just above
        print(f"{len(written)} file(s) written, without the table of volumes.",
              file=sys.stderr)
        return 1
    if failures:
        # the failures said during the run, again, unless the one line is just above
        recap = _FAILED if written or len(_FAILED) > 1 else []
        print(f"{failures} input(s) failed; {len(written)} file(s) written."
              + (" Failed:" if recap else ""), file=sys.stderr)
        for text in recap:
            print(f"  - {text}", file=sys.stderr)
        # none written: a user mistake (2), unless the machine failed a case (1)
        return 2 if not written and not _MACHINE_FAILED else 1
    return 0
