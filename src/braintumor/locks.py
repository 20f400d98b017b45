"""Advisory file locks, told apart from file systems that take none.

A lock another process holds and a file system without locks (NFS without its lock
service, or NFS asked to lock a folder; SMB and some FUSE mounts) both fail with
:class:`OSError`; the first means "wait or refuse", the second "go on without a lock".
The run folder of a training, the table of volumes of an output folder and the web
server's data folder all lock through :func:`try_lock`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the errors of a lock that another process holds (the rest: no locks here)
BUSY = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


def try_lock(fd: Any) -> bool:
    """Take an exclusive advisory lock on the open file or descriptor ``fd`` without
    waiting: True when taken, False when another process holds it. :class:`OSError`
    (EBADF, ENOLCK, EINVAL, EOPNOTSUPP...) when its file system takes no lock, and
    :class:`ImportError` where the system has no ``fcntl``."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in BUSY:
            return False
        raise
    return True


def claim(path: Path, busy: Callable[[str], str], no_locks: str) -> Any:
    """Hold the lock file ``path`` (made if missing; it holds the process id of its
    holder) for as long as the returned open file stays open. :class:`InputError` with
    ``busy(pid)`` when another process holds it; None where locks cannot be had: no
    ``fcntl``, or a file system that takes none (``no_locks`` is said on stderr, with
    the reason, and the caller goes on unlocked)."""
    import os
    import sys

    from braintumor.errors import InputError

    fh = open(path, "a+")  # noqa: SIM115 - held open for the lock's life
    try:
        taken = try_lock(fh)
    except ImportError:  # no fcntl on this platform
        fh.close()
        return None
    except OSError as exc:  # ENOLCK, EINVAL, EOPNOTSUPP: no lock here, not another holder
        fh.close()
        print(f"note: {no_locks} ({exc.strerror or exc}).", file=sys.stderr)
        return None
    if not taken:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise InputError(busy(pid))
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def remove_partials(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files that saves of ``names`` (``last.pt``) in ``folder`` cut
    short by a hard kill (SIGKILL, the OOM killer) left behind: the hidden
    ``.<stem>.<pid>-<thread>-<hex>.part<suffix>`` names of
    :func:`braintumor.io.partial_beside`, each as large as what was saved. Only for a
    folder whose lock this process holds, so no other process is writing one of them.
    Returns those removed (one that cannot be removed is left)."""
    from braintumor.io import partial_pattern

    pattern = partial_pattern(names)
    removed = []
    for f in sorted(Path(folder).glob(".*.part*")):
        if f.is_file() and pattern.fullmatch(f.name):
            try:
                f.unlink()
            except OSError:
                continue
            removed.append(f)
    return removed
