"""Advisory file locks, told apart from file systems that take none.

A lock another process holds and a file system without locks (NFS without its lock
service, or NFS asked to lock a folder; SMB and some FUSE mounts) both fail with
:class:`OSError`; the first means "wait or refuse", the second "go on without a lock".
The run folder of a training, the table of volumes of an output folder and the web
server's data folder all lock through :func:`try_lock`.
"""

from __future__ import annotations

import errno
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
