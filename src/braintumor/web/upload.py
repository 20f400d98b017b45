"""Streaming ``multipart/form-data`` reader with a size limit.

Each file part is written straight into the job's folder under a name made by the
server (``0000.part``, ``0001.part`` ...), never under the name the client sent, so no
upload can place a file anywhere else; the client's name is kept only as text (for
modality detection and display). The byte count is checked while the body streams in,
so an over-large upload is refused (413) without being stored whole.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from braintumor.errors import InputError
from braintumor.io import human_size

#: most file parts one upload may hold: a 2D stack of up to 512 slice pictures with their
#: masks, and some slack (a 3D case needs five)
MAX_FILES = 1040
#: most bytes of all non-file form fields together
MAX_FIELD_BYTES = 64 * 1024
#: most characters of a file's name as the client sends it (file systems allow 255; the
#: page and the job keep at most 200 of them, :func:`safe_display_name`)
MAX_NAME_CHARS = 1024
#: most bytes of one header of a form part: room for a name of MAX_NAME_CHARS characters
#: of 4 UTF-8 bytes each, or with every character percent-escaped, and what surrounds it
MAX_HEADER_BYTES = 16 * 1024


class UploadTooLarge(InputError):
    """The request body is over the configured limit (answered with 413)."""


class UnsupportedUpload(InputError):
    """A kind of file or request the server does not handle (answered with 415)."""


class ServerStopping(InputError):
    """The server is stopping while the upload streams in (answered with 503)."""


STOPPING = ("The server is stopping, so the upload was not kept; send it again once the "
            "server is back.")


async def _chunks(request: Any, stopping: Callable[[], bool] | None) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive; once ``stopping()`` is true (checked
    between chunks, and every quarter second while none arrives), :class:`ServerStopping`."""
    stream = request.stream().__aiter__()
    while True:
        if stopping is None:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
            yield chunk
            continue
        if stopping():
            raise ServerStopping(STOPPING)
        task = asyncio.ensure_future(stream.__anext__())
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and stopping():
                task.cancel()
                raise ServerStopping(STOPPING)
        try:
            chunk = task.result()
        except StopAsyncIteration:
            return
        yield chunk


@dataclass
class UploadedFile:
    """One file part as stored: ``field`` (form field name), ``name`` (the client's file
    name, as text only), ``path`` (where the server stored it), ``size`` (bytes)."""

    field: str
    name: str
    path: Path
    size: int


def _name_too_long(name: str | None = None) -> InputError:
    """The one sentence for a file name over :data:`MAX_NAME_CHARS` (``name``: the
    name, when it was read whole)."""
    if name is None:
        return InputError(f"A file name in the upload is over {MAX_NAME_CHARS:,} characters "
                          "long, this server's limit; rename the file shorter.")
    shown = "".join(ch for ch in name if ch.isprintable())
    shown = f"{shown[:24]}...{shown[-20:]}"
    return InputError(f"The file name {shown!r} is {len(name):,} characters long, over this "
                      f"server's limit of {MAX_NAME_CHARS:,}; rename the file shorter.")


def safe_display_name(raw: str) -> str:
    """The last component of a client's file name, printable, at most 200 characters: a
    longer one loses characters from its middle, so that its end (a modality's name, the
    file type) still tells what it is."""
    base = re.split(r"[\\/]", raw)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if len(base) > 200:
        base = base[:150] + "..." + base[-47:]
    return base or "unnamed"


class _Collector:
    """python-multipart callbacks that write parts to ``dest``."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.fields: dict[str, str] = {}
        self.files: list[UploadedFile] = []
        self._field_bytes = 0
        self._hname = b""
        self._hval = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._buf = bytearray()
        self._fh: IO[bytes] | None = None
        self._size = 0
        self._path: Path | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._acc("_hname", d[s:e]),
            "on_header_value": lambda d, s, e: self._acc("_hval", d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def _acc(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)
        if len(self._hname) + len(self._hval) > MAX_HEADER_BYTES:
            if self._hname.strip().lower() == b"content-disposition" and \
                    b"filename" in self._hval:
                raise _name_too_long()
            raise InputError(f"The upload has a form header over {MAX_HEADER_BYTES // 1024} "
                             "KiB; it is not a normal form.")

    def on_part_begin(self) -> None:
        self._headers = {}
        self._hname = self._hval = b""
        self._name, self._filename = "", None
        self._buf = bytearray()
        self._size = 0

    def on_header_end(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hval.strip()
        self._hname = self._hval = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disp = self._headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disp)
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        fname = params.get(b"filename")
        if fname is None:
            self._filename = None
            return
        name = fname.decode("utf-8", "replace")
        if len(name) > MAX_NAME_CHARS:
            raise _name_too_long(name)
        self._filename = safe_display_name(name)
        if len(self.files) >= MAX_FILES:
            raise InputError(f"The upload holds more than {MAX_FILES} files; "
                             "send one case at a time.")
        self._path = self.dest / f"{len(self.files):04d}.part"
        self._fh = open(self._path, "wb")  # noqa: SIM115 - closed in on_part_end

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._fh is not None:
            self._fh.write(chunk)
            self._size += len(chunk)
            return
        self._field_bytes += len(chunk)
        if self._field_bytes > MAX_FIELD_BYTES:
            raise InputError("The upload's form fields are over 64 KiB; only short options "
                             "belong there.")
        self._buf += chunk

    def on_part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            assert self._path is not None and self._filename is not None
            self.files.append(UploadedFile(self._name, self._filename, self._path, self._size))
        else:
            self.fields[self._name] = self._buf.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


async def read_multipart(request: Any, dest: Path, limit: int,
                         stopping: Callable[[], bool] | None = None
                         ) -> tuple[dict[str, str], list[UploadedFile]]:
    """Read a ``multipart/form-data`` request body into ``dest``.

    ``request``: a Starlette request; ``limit``: most bytes the body may have;
    ``stopping``: true once the server stops, which ends the reading
    (:class:`ServerStopping`) rather than keep the stop waiting for the client. Returns
    the text fields and the stored files. Raises :class:`UploadTooLarge`,
    :class:`UnsupportedUpload` or :class:`InputError` (one sentence each).
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
    from starlette.requests import ClientDisconnect

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedUpload("Send the files as multipart/form-data (as a browser form or "
                                "curl -F does).")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"The upload is {human_size(int(declared))}, over this "
                             f"server's limit of {human_size(limit)}.")
    dest.mkdir(parents=True, exist_ok=True)
    col = _Collector(dest)
    try:
        # the parser's own limit on one header (about 4 KiB in recent versions) would
        # refuse a long file name as a malformed form: the collector's limits, which say
        # what is wrong, apply first (it sees a header at the latest at a chunk's end)
        parser = MultipartParser(params[b"boundary"], col.callbacks(),  # type: ignore[arg-type]
                                 max_header_size=MAX_HEADER_BYTES + 2**20)
    except TypeError:  # an older python-multipart, without that limit
        parser = MultipartParser(params[b"boundary"], col.callbacks())  # type: ignore[arg-type]
    total = 0
    try:
        async for chunk in _chunks(request, stopping):
            total += len(chunk)
            if total > limit:
                raise UploadTooLarge(f"The upload is over this server's limit of "
                                     f"{human_size(limit)}.")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise InputError("The upload is not a well-formed multipart form.") from None
    except ClientDisconnect:
        raise InputError("The upload was interrupted before it finished.") from None
    finally:
        col.close()
    if total == 0:
        raise InputError("The upload is empty; send at least one file.")
    if parser.state != MultipartState.END:  # a part not ended is no file or field
        raise InputError("The upload ends before its form does (its closing boundary is "
                         "missing): it was cut off or is not a well-formed multipart form; "
                         "send it again.")
    return col.fields, col.files
