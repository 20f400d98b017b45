"""braintumor.locks: a lock held elsewhere told apart from a file system without locks."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from braintumor.locks import try_lock


def test_try_lock_takes_refuses_and_raises_where_no_lock_is_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lock"
    with open(path, "a+") as first:
        assert try_lock(first) is True
        fd = os.open(path, os.O_RDONLY)  # another open file: flock tells them apart
        try:
            assert try_lock(fd) is False
        finally:
            os.close(fd)

    def no_locks(*_: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with open(path, "a+") as fh, pytest.raises(OSError) as info:
        try_lock(fh)
    assert info.value.errno == errno.ENOLCK


def test_a_data_folder_without_locks_serves_with_a_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server's data folder on NFS without its lock service is not "another server"."""
    from braintumor.errors import InputError
    from braintumor.web.store import claim_data_dir

    held = claim_data_dir(tmp_path)
    with pytest.raises(InputError, match="another braintumor server"):
        claim_data_dir(tmp_path)
    held.close()

    def no_locks(*_: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert claim_data_dir(tmp_path) is None
    assert "does not support file locks" in capsys.readouterr().err
