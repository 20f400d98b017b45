"""``braintumor compare BEFORE AFTER``: how a tumour's outline changed between two scans."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "compare"
HELP = ("Compare two label maps of one patient (an earlier and a later scan): volumes and "
        "RANO diameters (SPD), their change, and where it falls against RANO's size "
        "thresholds.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", type=Path, help="label map of the earlier scan (NIfTI)")
    parser.add_argument("after", type=Path, help="label map of the later scan (NIfTI)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="also write FILE.html (a report) and FILE.json")
    parser.add_argument("--labels", default="auto", choices=("auto", "brats2021", "brats2023"),
                        help="label convention of both maps (default auto: from the name, "
                             "then the values)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from braintumor.errors import InputError
    from braintumor.followup import CAVEAT, compare_files, table_rows, write_outputs

    for p in (args.before, args.after):
        if not p.is_file():
            raise InputError(f"{p}: no such file; give two label map files (NIfTI).")
    result = compare_files(args.before, args.after, args.labels)
    console = Console()
    t = Table(title=f"{args.before.name} -> {args.after.name}", title_justify="left")
    for col in ("quantity", "before", "after", "change", "%", "size reading"):
        t.add_column(col, justify="left" if col in ("quantity", "size reading") else "right")
    for row in table_rows(result):
        t.add_row(*row)
    console.print(t)
    console.print(CAVEAT)
    if args.output is not None:
        paths = write_outputs(result, args.output)
        console.print(f"wrote {paths['html']} and {paths['json']}")
    return 0
