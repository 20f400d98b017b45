"""``braintumor evaluate``: score predictions against references by the BraTS rules."""

from __future__ import annotations

import argparse
import math
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
                        choices=("auto", "brats2021", "brats2023"),
                        help="label convention of the predictions (default auto: from the "
                             "file name, then the values: a 4 means brats2021)")
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
    parser.add_argument("--quiet", action="store_true", help="print no table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from braintumor import evaluate as E

    console = Console(stderr=False)
    with Progress(TextColumn("scoring {task.description}"), BarColumn(),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=args.quiet) as bar:
        task = bar.add_task("", total=1.0)

        def progress(fraction: float, stage: str) -> None:
            bar.update(task, completed=fraction, description=stage)

        if E.is_2d_folder(args.pred) and E.is_2d_folder(args.ref):
            ev = E.evaluate_2d(args.pred, args.ref, progress=progress)
        else:
            ev = E.evaluate_folders(args.pred, args.ref, pred_labels=args.pred_labels,
                                    hd95_method=args.hd95_method,
                                    lesions=not args.no_lesion_wise, progress=progress,
                                    diameters=args.diameters)
    csv_path = E.write_csv(ev, args.output)
    json_path = E.write_json(ev, csv_path.with_suffix(".json"))
    if not args.quiet:
        print_summary(console, ev)
    console.print(f"wrote {csv_path} and {json_path}")
    return 0


def _cell(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def print_summary(console: Any, ev: Any) -> None:
    """Per-case Dice/HD95 (when there are few cases) and the mean/median per region."""
    from rich.table import Table

    regions = ev.regions
    if ev.n_cases <= 30:
        t = Table(title="Per case: Dice / HD95 (mm)", title_justify="left")
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
            t.add_row(case, *cells, "[red]missing[/red]" if status == "missing" else status)
        console.print(t)
    t = Table(title=f"Summary over {ev.n_cases} case(s)"
              + (f", {len(ev.missing)} missing (scored Dice 0, HD95 374)" if ev.missing else ""),
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
    console.print(t)
    pp = ev.extra.get("per_patient")
    if pp and pp.get("patients"):
        t = Table(title="Per patient (slice stacks): volume Dice", title_justify="left")
        for col in ("patient", "dice", "slices", "false-positive slices", "missed slices"):
            t.add_column(col, justify="left" if col == "patient" else "right")
        for pid, m in pp["patients"].items():
            t.add_row(pid, _cell(m.get("dice"), 4), str(m.get("slices", "-")),
                      str(m.get("fp_slices", "-")), str(m.get("missed_slices", "-")))
        console.print(t)
    if ev.missing:
        console.print(f"[red]missing predictions[/red]: {', '.join(ev.missing)}")
    if ev.unmatched:
        console.print(f"predictions without a reference (not scored): "
                      f"{', '.join(Path(u).name for u in ev.unmatched)}")
