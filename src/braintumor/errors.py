"""User-facing errors.

A :class:`InputError` carries exactly one clear sentence that names the file and the
fault. The CLI prints it and exits non-zero; the web app answers it with a 4xx.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Any


class BrainTumorError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(BrainTumorError, ValueError):
    """Bad input from the user: a missing modality, a truncated file, wrong labels..."""


class UnreadableFile(InputError):
    """A file that cannot be read as what it should be: truncated, corrupt, or not of its
    format (a batch can score or segment the others and list it as failed)."""


class RunFailed(BrainTumorError):
    """Work handed to another process (a search worker) failed there for a reason other
    than the user's input; the message says which and why."""


#: file-system errors that say the machine, not the user, failed: no space or quota left,
#: a file grown past its limit, a read-only or failing disk, no memory, no permission
#: a write the machine refused for want of room: a full disk, a quota, a file-size
#: limit, a read-only file system (the one list the command line and the server build on)
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
#: a write refused for want of permission
NO_PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
_MACHINE_ERRNOS = NO_ROOM_ERRNOS | NO_PERMISSION_ERRNOS | {errno.EIO, errno.ENOMEM}


def environment_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the machine's failure, not a mistake in the user's input: no
    memory (MemoryError), or a file that could not be written for want of space, quota or
    permission, or on a read-only or failing disk (:data:`_MACHINE_ERRNOS`). The command
    line answers it with exit status 1, never the user mistake's 2."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, BrainTumorError) \
        and exc.errno in _MACHINE_ERRNOS


def describe_failure(exc: BaseException) -> str:
    """One sentence for a failure: the message of an error raised on purpose, the file
    and reason of a file-system error (a folder that cannot be written, a disk that is
    full), else the error's type and message."""
    if isinstance(exc, BrainTumorError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror[0].lower()}{exc.strerror[1:]}."
    if isinstance(exc, MemoryError):
        return "ran out of memory (MemoryError); free memory or segment on a larger machine."
    return f"failed unexpectedly ({type(exc).__name__}: {exc})."


def run_guarded(body: Callable[[], int | None]) -> int:
    """Run a command's ``body`` as the CLI does: an error raised on purpose prints its
    sentence and exits 2, a file-system error (a file that cannot be read or written, a
    full disk) its file and reason and exits 1; never a traceback for either."""
    try:
        return int(body() or 0)
    except BrainTumorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """A module's ``main`` run through :func:`run_guarded`: its user mistakes end in one
    sentence and exit 2, a file it cannot read or write in one sentence and exit 1."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return run_guarded(lambda: main(*args, **kwargs))

    return wrapper


def join_warnings(*parts: str | None) -> str:
    """Warnings as one line: the empty ones left out, the others joined by "; " with no
    full stop before it (a sentence's own stays at the end)."""
    kept = [p for p in parts if p]
    return "; ".join([p.rstrip(".") for p in kept[:-1]] + kept[-1:])
