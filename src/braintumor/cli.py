"""The ``braintumor`` command.

Each sub-command lives in :mod:`braintumor.commands` as a module with ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Those modules keep their
heavy imports (torch, fastapi) inside ``run`` so ``braintumor --help`` stays instant.
A user mistake (:class:`~braintumor.errors.InputError`) is printed as one sentence and
exits with status 2; a file or folder that cannot be read or written (an ``OSError``), or
a worker process that failed (:class:`~braintumor.errors.RunFailed`), as one sentence
with status 1; no traceback. SIGINT / SIGTERM, where a command stops on them
(:mod:`braintumor.interrupts`), exit with 130 / 143.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from braintumor import __version__
from braintumor.errors import NO_ROOM_ERRNOS

#: sub-command modules, in the order ``--help`` lists them
COMMAND_MODULES = (
    "demo",
    "predict",
    "evaluate",
    "compare",
    "train",
    "experiment",
    "export_onnx",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every sub-command registered)."""
    parser = argparse.ArgumentParser(
        prog="braintumor",
        description="Find and outline brain tumours in multi-modal MRI.",
    )
    parser.add_argument("--version", action="version", version=f"braintumor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"braintumor.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"braintumor.commands.{name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from braintumor.errors import BrainTumorError, RunFailed, describe_failure
    from braintumor.interrupts import Interrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):  # no command: a user mistake, as argparse's are
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except BrainTumorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RunFailed) else 2
    except OSError as exc:  # a file or folder that cannot be read or written, a full disk
        print(f"error: {describe_failure(_named_output(exc, args))}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # the machine's failure, as a full disk is: status 1
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:
        print(f"interrupted ({exc.name})", file=sys.stderr)
        return exc.exit_status


def _named_output(exc: OSError, args: argparse.Namespace) -> OSError:
    """A write's error that names no file (a full disk met inside a library's writer),
    named by the command's ``-o`` (its file or folder), so that its sentence says where
    the space ran out; any other error as it is."""
    output = getattr(args, "output", None)
    if exc.filename is not None or exc.errno not in NO_ROOM_ERRNOS or output is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(output))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
