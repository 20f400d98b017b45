"""``braintumor evaluate``: score predictions against references by the BraTS rules."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import Any

NAME = "evaluate"
HELP = ("Score predicted label maps against references: Dice, sensitivity, specificity, "
        "HD95 (mm) and BraTS 2023 lesion-wise scores per case and region.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="folder of predictions: <case>.nii.gz or BraTS-named seg files "
                             "(or 2D mask pictures)")
    parser.add_argument("--ref", required=True, type=Path, metavar="DIR",
                        help="BraTS dataset folder (case folders with *_seg.nii.gz or "
                             "*-seg.nii.gz) or a flat folder of label files (or 2D masks)")
    parser.add_argument("-o", "--output", type=Path, default=Path("metrics.csv"),
                        metavar="CSV",
                        help="CSV to write (default metrics.csv); a JSON goes next to it")
    parser.add_argument("--pred-labels", default="auto",
                        choices=("auto", "brats2021", "brats2023", "msd"),
                        help="label convention of the predictions (default auto: from the "
                             "file name, then the values: a 4 means brats2021)")
    parser.add_argument("--ref-labels", default="auto",
                        choices=("auto", "brats2021", "brats2023", "msd"),
                        help="label convention of the references (default auto: a Decathlon "
                             "labelsTr/labelsTs folder is msd, else as --pred-labels)")
    parser.add_argument("--hd95", default="surface", dest="hd95_method",
                        choices=("surface", "voxel", "voxel-directed"),
                        help="HD95 definition: surface (BraTS 2023 challenge, default), "
                             "voxel (brats-evaluation / panoptica), voxel-directed (MONAI)")
    parser.add_argument("--no-lesion-wise", action="store_true",
                        help="skip the BraTS 2023 lesion-wise scores (faster)")
    parser.add_argument("--diameters", action="store_true",
                        help="also the RANO sum of products of the enhancing tumour and "
                             "the whole tumour, of prediction and reference, and their "
                             "difference in %% (about 0.6 s a case)")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR_OR_CSV",
                        help="compare with a baseline on the same cases: its prediction "
                             "folder or the CSV an earlier evaluate wrote; prints per region "
                             "the mean Dice and HD95 difference with its 95%% bootstrap "
                             "interval, the Wilcoxon signed-rank p and the cases each wins, "
                             "and writes <CSV stem>_paired.csv")
    parser.add_argument("--quiet", action="store_true", help="print no table")


def run(args: argparse.Namespace) -> int:
    """``evaluate``: a run that fails before writing its files leaves no empty folders
    of its own making for them (``-o``'s folder is made before any scoring)."""
    from braintumor.commands import removing_empty_made

    with removing_empty_made(args.output):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from braintumor import evaluate as E
    from braintumor.commands import output_file

    console = Console(stderr=False)
    output_file(args.output)  # before any scoring: a folder it cannot write is said at once
    # The bar is drawn on a terminal only, and erased when done: elsewhere (a pipe, a
    # file) it would show nothing, and rich would still end it with an empty line there.
    bar = Progress(TextColumn("scoring {task.description}"), BarColumn(),
                   TimeRemainingColumn(), console=console, transient=True) \
        if console.is_interactive and not args.quiet else None
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task("", total=1.0) if bar is not None else None

        def progress(fraction: float, stage: str) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=fraction, description=stage)

        def score(pred: Path) -> Any:
            if E.is_2d_folder(pred) and E.is_2d_folder(args.ref):
                ev2 = E.evaluate_2d(pred, args.ref, progress=progress)
                if ev2.extra.get("paired_by_name"):  # folders named otherwise: said
                    print(f"note: {pred}: {ev2.extra['paired_by_name']}", file=sys.stderr)
                return ev2
            return E.evaluate_folders(pred, args.ref, pred_labels=args.pred_labels,
                                      ref_labels=args.ref_labels,
                                      hd95_method=args.hd95_method,
                                      lesions=not args.no_lesion_wise, progress=progress,
                                      diameters=args.diameters)

        if args.against is not None and not args.against.exists():
            from braintumor.errors import InputError

            raise InputError(f"{args.against}: no such baseline folder or CSV.")
        ev = score(args.pred)
        paired = None
        left_out: list[str] = []
        if args.against is not None:
            baseline = (args.against if args.against.is_file() else score(args.against))
            paired = E.paired_against(
                ev, baseline, warn=lambda said: print(f"warning: {said}", file=sys.stderr),
                left_out=left_out)
            ev.extra["paired"] = {"against": str(args.against),
                                  "rows": [p.as_row() for p in paired],
                                  "no_prediction_in_either": left_out}
    from braintumor.io import written_together

    # the CSV, its JSON and the tables beside them go in together, once all are written:
    # a full disk at any of them leaves the earlier run's files as they were
    with written_together(last=[args.output]):
        csv_path = E.write_csv(ev, args.output)
        json_path = E.write_json(ev, csv_path.with_suffix(".json"))
        written = [str(csv_path), str(json_path)]
        if ev.extra.get("per_patient", {}).get("patients"):
            written.append(str(write_patients(ev.extra["per_patient"], csv_path)))
        if paired is not None:
            written.append(str(write_paired(paired, csv_path)))
    if not args.quiet:
        print_summary(console, ev)
        if paired is not None:
            print_paired(console, paired, args.pred.name, args.against.name, left_out,
                         said_cases=ev.n_cases)
    console.print(f"wrote {', '.join(written[:-1])} and {written[-1]}",
                  soft_wrap=True, markup=False, highlight=False)
    for said in ev.unreadable:  # scored as missing; the run says so and fails
        print(f"error: {said}", file=sys.stderr)
    return 1 if ev.unreadable else 0


def write_paired(rows: list[Any], csv_path: Path) -> Path:
    """``<stem>_paired.csv``: one row per region and metric of the comparison."""
    import csv

    from braintumor.io import write_replacing

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0].as_row()))
            w.writeheader()
            for p in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                            for k, v in p.as_row().items()})

    return write_replacing(csv_path.with_name(csv_path.stem + "_paired.csv"), write)


def print_paired(console: Any, rows: list[Any], name_a: str, name_b: str,
                 left_out: list[str] | None = None, said_cases: int | None = None) -> None:
    """The comparison with a baseline, one line per region and metric; ``left_out``:
    the cases neither predicts (no comparison); ``said_cases``: the number of cases the
    summary above already called too few for its intervals (not said twice)."""
    from rich.table import Table

    from braintumor.stats import fmt_p, rough_note

    t = Table(title=f"{name_a} against {name_b}: paired over the same cases "
              "(difference = mean of per-case differences; Wilcoxon over the cases that "
              "differ)", title_justify="left")
    for col in ("region", "metric", name_a, name_b, "difference [95% CI]", "Wilcoxon p",
                "better / equal / worse"):
        t.add_column(col, justify="left" if col in ("region", "metric") else "right")
    for p in rows:
        d = 2 if p.metric.endswith("hd95") else 3
        ci = (f" [{p.low:+.{d}f}, {p.high:+.{d}f}]"
              if math.isfinite(p.low) and math.isfinite(p.high) else "")
        t.add_row(p.region, p.metric, _cell(p.mean_a, d), _cell(p.mean_b, d),
                  f"{p.diff:+.{d}f}{ci}", fmt_p(p.p), f"{p.wins} / {p.ties} / {p.losses}")
    console.print(t)
    if left_out:
        console.print(f"left out: {len(left_out)} case(s) with no prediction in either "
                      f"folder ({', '.join(left_out)})")
    cases = min(p.cases for p in rows)
    note = rough_note(None if cases == said_cases else cases, min(p.n for p in rows))
    if note:
        console.print(note)


def write_patients(per_patient: dict[str, Any], csv_path: Path) -> Path:
    """``<stem>_patients.csv``: one row per patient of 2D slice stacks (Dice of the
    patient's volume, mean Dice over slices with tumour, slice counts) and the mean row,
    the numbers the LGG literature reports, beside the per-picture rows."""
    import csv

    from braintumor.slices2d import rows_2d

    rows = rows_2d(per_patient)
    from braintumor.io import write_replacing

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), extrasaction="ignore",
                               restval="")
            w.writeheader()
            w.writerows(rows)

    return write_replacing(csv_path.with_name(csv_path.stem + "_patients.csv"), write)


def _cell(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _bound(bounds: Any, i: int, digits: int) -> str:
    return _cell(bounds[i], digits) if bounds else "-"


def print_summary(console: Any, ev: Any) -> None:
    """Per-case Dice/HD95 (when there are few cases) and the mean/median per region."""
    from rich.table import Table

    regions = ev.regions
    # 2D masks are scored picture by picture, their distances in pixels
    flat = ev.settings.get("hd95_unit") == "pixel"
    if ev.n_cases <= 30:
        t = Table(title="Per picture: Dice / HD95 (pixels)" if flat
                  else "Per case: Dice / HD95 (mm)", title_justify="left")
        t.add_column("case", overflow="fold")
        for r in regions:
            t.add_column(r, justify="right")
        t.add_column("status")
        by_case: dict[str, dict[str, dict]] = {}
        for row in ev.rows:
            by_case.setdefault(row["case"], {})[row["region"]] = row
        for case, rr in by_case.items():
            cells = [f"{_cell(rr[r]['dice'])} / {_cell(rr[r]['hd95'], 1)}" for r in regions]
            status = next(iter(rr.values()))["status"]
            t.add_row(case, *cells, f"[red]{status}[/red]" if status != "ok" else status)
        console.print(t)
    cis = ev.extra.get("mean_ci95", {})
    # 2D masks are scored picture by picture (a tumour-free picture predicted empty
    # scores Dice 1): the patients' volumes are the table below
    unit = "picture(s)" if flat else "case(s)"
    penalty = "HD95 the picture's diagonal in pixels" if flat else "HD95 374"
    t = Table(title=f"Summary over {ev.n_cases} {unit}"
              + (f", {len(ev.missing)} missing (scored Dice 0, {penalty})" if ev.missing
                 else "")
              + ("; CI: 95 % bootstrap interval of the mean" if cis else ""),
              title_justify="left")
    t.add_column("region")
    t.add_column("stat")
    keys = [k for k in ("dice", "sensitivity", "specificity", "hd95", "lesion_dice",
                        "lesion_hd95", "spd_diff_pct") if k in ev.summary["mean"][regions[0]]]
    for k in keys:
        t.add_column("SPD diff %" if k == "spd_diff_pct" else k.replace("_", " "),
                     justify="right")
    for r in regions:
        for stat in ("mean", "median"):
            vals = ev.summary[stat][r]
            t.add_row(r if stat == "mean" else "", stat,
                      *[_cell(vals[k], 1 if k == "spd_diff_pct" else 2 if "hd95" in k else 4)
                        for k in keys])
        if r in cis:
            for i, stat in enumerate(("CI low", "CI high")):
                t.add_row("", stat, *[_bound(cis[r].get(k), i, 2 if "hd95" in k else 4)
                                      for k in keys])
    console.print(t)
    if cis:  # the CI rows over few cases are too narrow: said here as with --against
        from braintumor.stats import rough_note

        note = rough_note(ev.n_cases)
        if note:
            console.print(note)
    if ev.extra.get("per_patient_skipped"):
        print(f"warning: no per-patient scores: {ev.extra['per_patient_skipped']}",
              file=sys.stderr)
    pp = ev.extra.get("per_patient")
    if pp and pp.get("patients"):
        t = Table(title="Per patient (slice stacks): Dice of each patient's volume, and "
                  "mean Dice over its slices with tumour", title_justify="left")
        for col in ("patient", "volume Dice", "slice Dice", "slices",
                    "false-positive slices", "missed slices"):
            t.add_column(col, justify="left" if col == "patient" else "right",
                         overflow="fold")

        def of(part: Any, whole: Any) -> str:
            return f"{part} of {whole}" if part is not None and whole is not None else "-"

        for pid, m in pp["patients"].items():
            lacking = m.get("missing_slices_pred") or 0
            # a patient scored with pictures it has no prediction for says so
            t.add_row(pid + (f" ({lacking} without a prediction)" if lacking else ""),
                      _cell(m.get("dice"), 4), _cell(m.get("slice_dice_mean"), 4),
                      str(m.get("slices", "-")),
                      of(m.get("fp_slices"), m.get("tumour_free_slices")),
                      of(m.get("missed_slices"), m.get("tumour_slices")))
        s = pp.get("summary", {})
        t.add_row("mean", _cell(s.get("dice_mean"), 4), _cell(s.get("slice_dice_mean"), 4),
                  "", of(s.get("fp_slices"), s.get("tumour_free_slices")),
                  of(s.get("missed_slices"), s.get("tumour_slices")))
        console.print(t)
        lacking = s.get("missing_slices_pred") or 0
        if lacking:  # a slice without a prediction is never scored as a right empty one
            print(f"note: {lacking} slice(s) have no readable prediction: they count as "
                  "missed where the reference has tumour, are left out of the "
                  "false-positive slices, and their patients have no volume Dice (the "
                  f"mean is over {s.get('dice_patients', 0)} of {s.get('patients', 0)} "
                  "patients).", file=sys.stderr)
    if pp and pp.get("not_stacked"):
        loose = pp["not_stacked"]
        print(f"note: {len(loose)} picture(s) named without a slice number "
              f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}) are no "
              "patient's slices: scored per picture only.", file=sys.stderr)
    if ev.missing:
        console.print(f"[red]missing predictions[/red]: {', '.join(ev.missing)}")
    if ev.unmatched:
        console.print(f"predictions without a reference (not scored): "
                      f"{', '.join(Path(u).name for u in ev.unmatched)}")
