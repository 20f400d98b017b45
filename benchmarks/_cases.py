"""The command line of the benchmarks that time cases: their docstring as the help, and
the case folders to time (none: a full-size phantom)."""

from __future__ import annotations

import argparse


def case_arguments(doc: str | None, many: bool = False) -> list[str]:
    """Parse ``sys.argv``: an optional case folder (``many``: any number of them)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*" if many else "?", metavar="CASE_DIR",
                        help=f"case folder{'s' if many else ''} to time (default: a "
                             "full-size phantom)")
    given = parser.parse_args().cases
    return list(given) if many else ([given] if given else [])
