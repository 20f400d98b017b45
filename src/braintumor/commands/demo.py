"""``braintumor demo [-o OUTDIR] [--method auto|cnn|watershed|hybrid] [--device ...]``.

The main job end to end on the built-in sample: a seeded synthetic BraTS-like case at
full BraTS size (real MNI152 anatomy, see :mod:`braintumor.phantom`) is written in BraTS
naming to ``OUTDIR/sample/``, read back like any user case, segmented with the best
method available, and scored against its known truth. Writes:

* ``OUTDIR/prediction/<case>.nii.gz`` - the label map (BraTS 2021 values, input grid);
* ``OUTDIR/overlay.png`` - axial FLAIR/T1ce slices with the regions coloured;
* ``OUTDIR/diameters.png`` - the slices the largest lesions' RANO diameters were
  measured on, with both diameters drawn;
* ``OUTDIR/report.html`` and ``OUTDIR/report.json`` - volumes, RANO diameters and metrics.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

NAME = "demo"
HELP = "Segment the built-in sample case and write a label map, a picture and a report."

#: Environment variable with a smaller sample size, e.g. "64" or "64,64,48" (for tests).
SIZE_ENV = "BRAINTUMOR_DEMO_SIZE"
CASE_ID = "BraTS-demo-00000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="braintumor-demo", metavar="OUTDIR",
                   help="output folder (default: ./braintumor-demo)")
    p.add_argument("--method", default="auto", choices=["auto", "cnn", "watershed", "hybrid"],
                   help="segmenter (default auto: the CNN when its model is installed, "
                        "else the classical watershed)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the CNN runs (default: auto)")
    p.add_argument("--seed", type=_seed, default=0, help="sample case seed (default 0)")
    # a smaller sample for tests; not part of the documented interface
    p.add_argument("--size", default=None, help=argparse.SUPPRESS)


def parse_size(text: str | None) -> tuple[int, int, int] | None:
    """``"64"`` -> (64, 64, 64); ``"64,64,48"`` -> (64, 64, 48); None/"" -> None."""
    from braintumor.errors import InputError

    if not text:
        return None
    try:
        parts = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError:
        raise InputError(f"Sample size {text!r} is not one or three whole numbers.") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 16:
        raise InputError(f"Sample size {text!r} needs one or three numbers of at least 16.")
    return (parts[0], parts[1], parts[2])


def choose_method(requested: str, available: list[str], model_installed: bool) -> str:
    """The method ``auto`` stands for, or ``requested`` when it can run.

    ``auto``: the CNN when it and its shipped model are installed (the shipped model,
    as ``predict``'s default; the hybrid is more accurate and slower), else the hybrid
    when it can get CNN probabilities, else the watershed.
    """
    from braintumor.errors import BrainTumorError

    needs_model = {"cnn", "hybrid"}
    usable = [m for m in available if m not in needs_model or model_installed]
    if requested == "auto":
        for m in ("cnn", "hybrid", "watershed"):
            if m in usable:
                return m
        raise BrainTumorError(
            "No segmenter is available in this installation (neither the CNN with its "
            "model nor the watershed), so the demo cannot run."
        )
    if requested not in usable:
        why = "its model is not installed" if requested in available else "it is not installed"
        raise BrainTumorError(f"The {requested} method cannot run: {why}.")
    return requested


def _model_installed() -> bool:
    try:
        from braintumor.inference import shipped_model_available
    except ImportError:
        return False
    try:
        return bool(shipped_model_available())
    except Exception:  # a broken model folder counts as none
        return False


def _seed(text: str) -> int:
    """A whole number from 0 up (what the sample's random generator takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def run(args: argparse.Namespace) -> int:
    """``demo``: a run that fails before writing anything leaves no empty output folders
    of its own making."""
    from braintumor.commands import removing_empty_made

    with removing_empty_made(args.output):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from braintumor import phantom, report
    from braintumor.cases import load_case, write_label_map
    from braintumor.commands import output_folder
    from braintumor.diameters import describe, rano
    from braintumor.segment import available_methods, segment

    console = Console()
    size = parse_size(args.size or os.environ.get(SIZE_ENV))
    method = choose_method(args.method, available_methods(), _model_installed())
    if args.device == "cuda" and method in ("cnn", "hybrid"):
        from braintumor.inference import resolve_device

        resolve_device("cuda")  # one sentence before the sample is built and written
    out = output_folder(args.output)
    timings: dict[str, float] = {}

    with Progress(TextColumn("{task.description:<12}"), BarColumn(),
                  TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task("sample", total=1.0, stage="building")
        t0 = time.perf_counter()
        sample = phantom.make_case(size or phantom.BRATS_SHAPE, seed=args.seed,
                                   case_id=CASE_ID)
        case_dir = phantom.write_case(sample, out / "sample", naming="brats2021")
        case = load_case(case_dir)  # the same path a user's case takes
        timings["sample_s"] = time.perf_counter() - t0
        prog.update(task, completed=1.0, stage=f"{case.shape[0]}x{case.shape[1]}x"
                                               f"{case.shape[2]} written")

        seg_task = prog.add_task(method, total=1.0, stage="starting")

        def cb(frac: float, stage: str) -> None:
            prog.update(seg_task, completed=max(0.0, min(1.0, frac)), stage=stage)

        t0 = time.perf_counter()
        opts = {"device": args.device}
        result = segment(case, method, progress=cb, **opts)
        timings["segment_s"] = time.perf_counter() - t0
        prog.update(seg_task, completed=1.0, stage="done")

        rep_task = prog.add_task("report", total=1.0, stage="scoring")
        pred_path = write_label_map(case, result.labels,
                                    out / "prediction" / f"{case.case_id}.nii.gz", "brats2021")
        assert case.label is not None
        metrics = report.score(result.labels, case.label, case.spacing)
        prog.update(rep_task, completed=0.5, stage="drawing")
        png = report.overlay_png(case.image, result.labels, case.affine, out / "overlay.png",
                                 slices=report.pick_slices(case.label),
                                 title=f"{case.case_id}: {method} segmentation")
        # as predict's reports say them: method, model and mode ("-" where none applies)
        info = {"method": method, "model": result.info.get("model_version") or "-",
                "mode": result.info.get("mode") or "-",
                "size (voxels)": "x".join(str(s) for s in case.shape),
                "segmentation took": f"{timings['segment_s']:.1f} s",
                "sample built in": f"{timings['sample_s']:.1f} s"}
        diameters = rano(result.labels, case.affine)
        measured = report.diameters_png(
            report.diameter_pictures(case.image, result.labels, case.affine, diameters),
            out / "diameters.png")
        paths = report.write_report(out, case.case_id, result.labels, case.voxel_volume_ml,
                                    metrics=metrics, picture=png, info=info,
                                    diameters=diameters, diameter_picture=measured,
                                    spacing=case.spacing)
        prog.update(rep_task, completed=1.0, stage="done")

    table = Table(title=f"{case.case_id} - {method} against the sample's truth")
    for col in ("region", "Dice", "HD95 (mm)", "predicted mL", "truth mL"):
        table.add_column(col, justify="right")
    truth_ml = report.volumes_ml(case.label, case.voxel_volume_ml)
    pred_ml = report.volumes_ml(result.labels, case.voxel_volume_ml)
    for region in ("WT", "TC", "ET"):
        m = metrics.get(region, {})
        table.add_row(region, f"{m.get('dice', float('nan')):.3f}",
                      f"{m.get('hd95', float('nan')):.1f}", f"{pred_ml[region]:.1f}",
                      f"{truth_ml[region]:.1f}")
    console.print(table)
    lines = [f"sample case : {case_dir}",
             "diameters   : " + "; ".join(f"{region} {describe(summ)}"
                                          for region, summ in diameters.items()),
             f"label map   : {pred_path}",
             f"overlay     : {png}"]
    if measured is not None:
        lines.append(f"diameters picture : {measured}")
    lines += [f"report      : {paths['html']} (and {paths['json'].name})",
              f"re-score    : braintumor evaluate --pred {pred_path.parent} "
              f"--ref {out / 'sample'}"]
    for line in lines:  # unwrapped and taken literally, so paths and commands copy whole
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    sys.stdout.flush()
    return 0
