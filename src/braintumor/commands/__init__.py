"""Sub-commands of the ``braintumor`` CLI, one module each (see :mod:`braintumor.cli`)."""

from __future__ import annotations

from pathlib import Path


def output_folder(raw: str) -> Path:
    """The output folder, made when missing; one sentence when it cannot be written,
    before any work is done."""
    import os

    from braintumor.errors import InputError

    out = Path(raw)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give a folder for the outputs.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: the output folder cannot be made ({exc.strerror}).") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"{out}: the output folder is not writable.")
    return out
