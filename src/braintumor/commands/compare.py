"""``braintumor compare SCAN SCAN [SCAN ...]``: how a tumour's outline changed between
scans (two side by side; three or more as a series against baseline and nadir)."""

from __future__ import annotations

import argparse
import errno
from collections.abc import Callable
from functools import partial
from pathlib import Path

NAME = "compare"
HELP = ("Compare label maps of one patient's scans in date order: volumes and RANO "
        "diameters (SPD), their change (from baseline and nadir), and where it falls against "
        "RANO's size thresholds.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scans", type=Path, nargs="+", metavar="LABELMAP",
                        help="label maps (NIfTI) of one patient's scans in date order: two "
                             "are compared side by side; three or more as a series, each "
                             "against the baseline and the nadir")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="also write FILE.html (a report) and FILE.json, the suffixes "
                             "added to the whole name (pat_2024.03.15 keeps its dots; "
                             "report.html writes report.html and report.json); checked "
                             "before any work")
    parser.add_argument("--dates", default=None, metavar="D1,D2,...",
                        help="the scans' dates (YYYY-MM-DD, one per label map, in their "
                             "order, increasing), shown with the comparison with the days "
                             "between the scans")
    parser.add_argument("--labels", default="auto", choices=("auto", "brats2021", "brats2023"),
                        help="label convention of the maps (default auto: each map by "
                             "its own values, a 4 meaning BraTS 2017-2021 and a 3 BraTS 2023, "
                             "its name deciding only where the values fit either; a map "
                             "read against its name is noted)")


def run(args: argparse.Namespace) -> int:
    """``compare``: a run that fails before writing its files leaves no empty folders
    of its own making for them (``-o``'s folders are made before any work)."""
    from braintumor.commands import removing_empty_made

    with removing_empty_made(args.output):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from braintumor.commands import output_file
    from braintumor.errors import InputError
    from braintumor.followup import (
        CAVEAT,
        SERIES_HEADER,
        compare_files,
        dated,
        dates_text,
        output_paths,
        scan_dates,
        series_dates_text,
        series_from_files,
        series_notes,
        series_rows,
        series_title,
        table_rows,
        write_outputs,
        write_series_outputs,
    )

    if len(args.scans) < 2:
        raise InputError("give two label maps or more, in date order.")
    for p in args.scans:
        if not p.is_file():
            raise InputError(f"{p}: {'is a folder' if p.is_dir() else 'no such file'}; "
                             "give label map files (NIfTI).")
    days = None if args.dates is None else scan_dates(args.dates, len(args.scans))
    if args.output is not None:
        # before any work, as predict and evaluate check theirs: a folder given for the
        # file (not FOLDER.html written beside it), a file where its folder should be, a
        # folder that cannot be written
        if args.output.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder; give the name of the files "
                                    "to write (NAME.html and NAME.json)", str(args.output))
        for path in output_paths(args.output).values():
            output_file(path)
    lines: list[str] = []  # said between the warnings and the table, as the files say them
    if len(args.scans) > 2:
        visits = series_from_files(args.scans, args.labels)
        for v, day in zip(visits, days or [], strict=False):
            v["date"], v["days"] = day.isoformat(), (day - days[0]).days  # type: ignore[index]
        header: tuple[str, ...] = SERIES_HEADER
        title, rows = series_title(visits), series_rows(visits)
        write: Callable[[Path], dict[str, Path]] = partial(write_series_outputs, visits)
        warnings, notes = series_notes(visits)
        lines = [series_dates_text(visits)] if series_dates_text(visits) else []
    else:
        before, after = args.scans
        result = compare_files(before, after, args.labels)
        result["dates"] = dated(*(days or (None, None)))
        title = f"{before.name} -> {after.name}"
        if dates_text(result["dates"]):
            title += f" ({dates_text(result['dates']).rstrip('.')})"
        header = ("quantity", "before", "after", "change", "%", "size reading")
        rows, write = table_rows(result), partial(write_outputs, result)
        warnings, notes = result["warnings"], result["notes"]
    console = Console()
    for w in warnings:  # whether the maps look like one patient's: said first
        console.print(f"[bold]Warning:[/bold] {escape(w)}")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    for n in notes:  # facts: grids that differ, a convention read against a name
        console.print(f"Note: {escape(n)}", highlight=False)
    t = Table(title=title, title_justify="left")
    for col in header:
        t.add_column(col, justify="left" if col in (header[0], header[-1]) else "right")
    for row in rows:
        t.add_row(*row)
    console.print(t)
    console.print(CAVEAT)
    if args.output is not None:
        paths = write(args.output)
        console.print(f"wrote {paths['html']} and {paths['json']}",
                      soft_wrap=True, markup=False, highlight=False)
    return 0
