"""Sub-commands of the ``braintumor`` CLI, one module each (see :mod:`braintumor.cli`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


def output_folder(raw: str | Path, what: str = "output folder",
                  purpose: str = "the outputs") -> Path:
    """The output folder, made when missing; one sentence when it cannot be written,
    before any work is done. These are file-system failures (an ``OSError`` naming the
    folder), so the command exits with status 1, as for any file it cannot write.
    ``what`` names the folder in those sentences and ``purpose`` what it is for (the web
    server's data folder says so)."""
    import errno
    import os

    out = Path(raw)
    if out.exists() and not out.is_dir():
        raise FileExistsError(errno.EEXIST, f"exists and is not a folder; give a folder for "
                              f"{purpose}", str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"the {what} cannot be made ({exc.strerror})",
                      str(out)) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"the {what} is not writable", str(out))
    return out


def output_file(raw: str | Path) -> Path:
    """A file a command writes when its work is done (and the files written beside it):
    its folder made and checked as :func:`output_folder` does, before any work, so a
    folder that cannot be written is one sentence at once, not after the work is lost."""
    import errno
    import os

    out = Path(raw)
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give the name of the file to "
                                "write", str(out))
    output_folder(str(out.parent))
    if out.exists() and not os.access(out, os.W_OK):
        raise PermissionError(errno.EACCES, "the file is not writable", str(out))
    return out


@contextlib.contextmanager
def removing_empty_made(path: str | Path | None) -> Iterator[None]:
    """Around a command's work: the folders ``path`` (an output folder, or a file the
    command writes) and the folders above it that are missing now and made during the
    work (by :func:`output_folder` or :func:`output_file`) are removed again if the work
    leaves them empty, as when it fails before writing anything; a folder that was there
    stays, and so does one that holds anything. ``None`` (no output asked for): nothing."""
    import os

    made: list[Path] = []
    if path is not None:
        out = Path(os.path.abspath(path))
        made = [d for d in (out, *out.parents) if not d.exists()]  # by this run, if any
    try:
        yield
    finally:  # a run that wrote nothing leaves no empty folders of its own making
        for d in made:
            if not d.exists():
                continue  # never made (or the file, which was not written)
            try:
                d.rmdir()
            except OSError:
                break  # not empty (or the file written): kept, and the folders above it
