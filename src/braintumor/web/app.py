"""The FastAPI application: page, JSON API, job files.

Every action the page takes is a JSON endpoint under ``/api`` (listed at ``/docs``,
machine-readable at ``/openapi.json``), so scripts can do what the page does.

Safety: an optional access token (``token`` argument, else the ``BRAINTUMOR_TOKEN``
environment variable) is required on every request when set; uploads are limited in
size while they stream (413 beyond); every user mistake is a 4xx with one sentence;
job ids are random; files are only ever reached through a job id the store checks;
responses carry a CSP without inline script, ``nosniff`` and ``frame-ancestors 'none'``.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import nibabel as nib
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, Strict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from braintumor import __version__
from braintumor.cases import MODALITIES
from braintumor.errors import InputError
from braintumor.io import (
    ArchiveTooLarge,
    VolumeTooLarge,
    nifti_gz_bytes,
    save_whole,
    write_replacing,
)
from braintumor.web.correct import (
    CorrectionUnavailable,
    Corrector,
    VersionConflict,
    correction_available,
)
from braintumor.web.inputs import (
    FeatureUnavailable,
    StackTooLarge,
    call_named,
    detect_modality,
    on_case_grid,
    switch,
)
from braintumor.web.store import Job, JobStore
from braintumor.web.upload import ServerStopping, UnsupportedUpload, UploadTooLarge
from braintumor.web.worker import WorkerPool, disk_full, labels_path

log = logging.getLogger("braintumor.web")

STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "BRAINTUMOR_TOKEN"
TOKEN_COOKIE = "braintumor_token"
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self' data: blob:; worker-src 'self' blob:; font-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


# -- response models (they document the API) -------------------------------------------
class MethodInfo(BaseModel):
    name: str
    available: bool
    label: str
    note: str = ""


class Info(BaseModel):
    """What this server offers."""

    version: str
    methods: list[MethodInfo]
    default_method: str | None
    image2d_available: bool
    sample_available: bool
    correction_available: bool
    dicom_available: bool
    modalities: list[str]
    max_upload_bytes: int
    ttl_seconds: float
    token_required: bool


class JobOut(BaseModel):
    """A job as the page sees it."""

    id: str
    kind: str
    method: str
    status: str = Field(description="uploading | awaiting_input | queued | running | done | "
                                    "failed | cancelled")
    stage: str
    progress: float = Field(description="0..1")
    message: str = Field(description="why it failed or was cancelled")
    created: float
    finished: float | None
    expires: float
    queue_position: int | None
    label_version: int
    label_revision: int = Field(description="counts every change of the outline (each "
                                            "correction and undo) and is never lowered, so "
                                            "it names one outline where `label_version` "
                                            "(lowered by an undo) may name two in turn")
    inputs: dict[str, Any]
    result: dict[str, Any]
    urls: dict[str, Any]


class SampleRequest(BaseModel):
    method: str | None = Field(None, description="cnn | watershed | hybrid; default: the "
                                                 "best available")
    uncertainty: bool = Field(False, description="also compute an uncertainty map "
                                                 "(slower: test-time augmentation)")
    accurate: bool = Field(False, description="CNN: run the whole ensemble at the full "
                                              "window overlap (slower) instead of the "
                                              "fast mode")


class SeriesChoice(BaseModel):
    modalities: dict[str, str] = Field(description="{series id: t1 | t1ce | t2 | flair}")


#: a whole number as JSON writes it: neither true/false nor 2.0 nor "2"
WholeNumber = Annotated[int, Strict()]

#: a count from 0 (a version, a revision)
Count = Annotated[int, Strict(), Field(ge=0)]


class Seed(BaseModel):
    # a misspelt field is refused (400), not ignored
    model_config = ConfigDict(extra="forbid")

    x: WholeNumber | None = None
    y: WholeNumber | None = None
    z: WholeNumber | None = None
    mm: list[float] | None = Field(None, description="world coordinates (mm) instead of "
                                                      "x,y,z")
    label: WholeNumber = Field(description="0 outside (remove), 1 NCR, 2 ED, 3 ET (a whole "
                                           "number: not true/false, 2.0 or \"2\")")


#: what ``version`` of a correction or undo says, in the API's schema
_VERSION_DOC = ("the label map version (the job's `label_version`) this is made against, "
                "as the page shows it: when the job's is another by then (another page or "
                "reader corrected or undid it), the request is refused with 409 and "
                "changes nothing; leave it out to act on whatever version is current")

#: what ``revision`` of a correction or undo says, in the API's schema
_REVISION_DOC = ("the job's `label_revision` this is made against, as the page shows it: "
                 "when the job's is another by then (another page or reader corrected or "
                 "undid it, even back to the same `label_version`), the request is refused "
                 "with 409 and changes nothing; send it with `version` or in its place")

#: what a 409 of a correction or undo means, in the API's description
_STALE_DOC = ("nothing was changed, for one of two reasons, `detail` saying which in one "
              "sentence. The outline is no longer the `revision` or `version` named (another "
              "page or reader corrected or undid it since): `detail` names both, "
              "`label_version` and `label_revision` are the job's now and `job` the job as "
              "`GET /api/jobs/{id}` answers it, so a client redraws without asking again. "
              "Or the job is not done (running, say): only `detail`")


class CorrectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seeds: list[Seed]
    version: Count | None = Field(None, description=_VERSION_DOC)
    revision: Count | None = Field(None, description=_REVISION_DOC)
    request: str | None = Field(None, max_length=64,
                                description="a name the client gives this correction; once "
                                            "it is applied the job's "
                                            "`result.last_correction_request` carries it "
                                            "until the next, so a client that stopped "
                                            "waiting for the answer can tell its own "
                                            "correction, applied late, from another's")


class UndoRequest(BaseModel):
    # a misspelt `version` refused, not ignored: ignored, the undo would take back
    # whatever is current
    model_config = ConfigDict(extra="forbid")

    version: Count | None = Field(None, description=_VERSION_DOC)
    revision: Count | None = Field(None, description=_REVISION_DOC)


class CorrectionOut(JobOut):
    """A job after a correction, with what the correction did."""

    changed: bool = Field(description="whether the correction changed a voxel; one that "
                                      "changed none is no correction: no new label "
                                      "version, not counted, nothing to undo")
    note: str = Field("", description="what its seeds that changed nothing say (outside "
                                      "the brain, asking for what is there), each "
                                      "placed in scanner mm and voxel indices")


class StaleOut(BaseModel):
    """A correction or undo refused (409): the outline changed since its ``version``
    (all fields), or the job is not done (``detail`` only)."""

    detail: str = Field(description="why, in one sentence (naming both versions when "
                                    "the outline changed)")
    label_version: int | None = Field(None, description="the job's label map version now; "
                                                        "present when the outline changed "
                                                        "since `version`, absent when the "
                                                        "job is not done")
    label_revision: int | None = Field(None, description="the job's label revision now; "
                                                          "present when the outline changed "
                                                          "since `revision` or `version`, "
                                                          "absent when the job is not done")
    job: JobOut | None = Field(None, description="the job as it is now; present when the "
                                                 "outline changed since `version`, absent "
                                                 "when the job is not done")


class NamesRequest(BaseModel):
    names: list[str]


#: what a job's DICOM series list shows of each series: its label (the series number as
#: on the command line), description, shape, modality guess, whether it can be chosen,
#: and what sets it apart (not read and why, number shared, not 3D)
_SERIES_SHOWN = ("id", "description", "shape", "guess", "usable", "remarks")

#: the Method menu's words: each fits the page's 290-pixel side panel whole
_METHOD_LABELS = {"cnn": "CNN (trained model)", "watershed": "Watershed (classical)",
                  "hybrid": "Hybrid (CNN + watershed, best)"}


def _with_slice_positions(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with each RANO lesion's slice named as the reports name it
    (:func:`braintumor.report.slice_position`: ``"88 of 155, S 12.0 mm"``) under
    ``position``, so the page says the slice in the same words."""
    from braintumor.report import slice_position

    diam = summary.get("diameters")
    if not diam:
        return summary
    named = {}
    for region, summ in diam.items():
        if summ and summ.get("lesions"):
            summ = dict(summ, lesions=[dict(les, position=slice_position(les))
                                       for les in summ["lesions"]])
        named[region] = summ
    return dict(summary, diameters=named)


def _status_for(exc: InputError) -> int:
    if isinstance(exc, (UploadTooLarge, ArchiveTooLarge, VolumeTooLarge, StackTooLarge)):
        return 413
    if isinstance(exc, UnsupportedUpload):
        return 415
    if isinstance(exc, ServerStopping):
        return 503
    if isinstance(exc, CorrectionUnavailable):
        return 501
    if isinstance(exc, VersionConflict):
        return 409
    if isinstance(exc, FeatureUnavailable):
        return 501
    return 400


# -- security middleware (pure ASGI: it must not buffer streaming uploads) ----------------
#: the largest request body that is not an upload (JSON: seeds, series, names); uploads are
#: multipart and limited by ``max_upload_bytes`` as they stream
MAX_JSON_BYTES = 8 << 20
#: methods that change nothing, so another site may cause them (a link, a picture)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _navigating(request: Request) -> bool:
    """Whether the browser is opening this address as a page (a link followed or opened
    in a tab), not the page's script fetching it."""
    if request.method != "GET":
        return False
    dest = request.headers.get("sec-fetch-dest")
    if dest is not None:
        return dest == "document"
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def _error_page(message: str) -> str:
    """A small page saying why a link opened in a tab has nothing to show."""
    import html

    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>braintumor: not available</title></head>"
            "<body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;"
            "padding:0 1rem;line-height:1.5\"><main><h1>Not available</h1>"
            f"<p role=\"alert\">{html.escape(message)}</p>"
            "<p><a href=\"/\">Back to braintumor</a></p></main></body></html>")


def host_name(host: str) -> str:
    """The name of a ``Host`` header (or an origin's host and port), its port dropped:
    ``localhost:8000`` -> ``localhost``, ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    # a fully qualified name's trailing dot names the same host
    return (name if colon and port.isdigit() and ":" not in name else host).rstrip(".")


def host_port(netloc: str, scheme: str = "") -> str:
    """``host[:port]`` of a ``Host`` header or an origin's netloc, lower case, without a
    trailing dot on the name, and without the port that is the default for ``scheme``
    (``https``: 443, ``http``: 80; with no scheme, either), so the forms one browser
    and one proxy give of the same address compare equal."""
    netloc = netloc.strip().lower()
    name, colon, port = netloc.rpartition(":")
    if not colon or not port.isdigit() or (":" in name and not name.endswith("]")):
        name, port = netloc, ""
    default = {"https": {"443"}, "http": {"80"}}.get(scheme, {"80", "443"})
    name = name.rstrip(".")
    return name if not port or port in default else f"{name}:{port}"


class SecurityMiddleware:
    """Adds the security headers to every response and checks the access token.

    It also refuses what a browser does on another site's behalf: a request naming a
    host the server was not started for (``hosts``; None: any, as when it listens on
    every address), so a name rebound to this machine's address cannot reach it; and a
    request that would change something coming from another site (its ``Origin`` not
    this server, ``Sec-Fetch-Site: cross-site``), so a page elsewhere cannot upload or
    start jobs through the reader's browser. Clients that are no browser (curl, scripts)
    send neither header. A body that is no upload must be JSON, of at most
    :data:`MAX_JSON_BYTES`."""

    def __init__(self, app: Any, token: str | None,
                 hosts: Collection[str] | None = None,
                 proxies: Collection[str] = ()) -> None:
        self.app = app
        self.token = token or None
        self.hosts = None if hosts is None else {host_name(h) for h in hosts}
        #: the names (``name`` or ``name:port``) a reverse proxy serves the page by: an
        #: ``Origin`` naming one is this server's own page, whatever ``Host`` the proxy
        #: passes on
        self.proxies = {host_port(p) for p in proxies}

    def _ok(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(str(candidate).encode(),
                                                       str(self.token).encode())

    def _refusal(self, hdr: Any, method: str) -> tuple[int, str] | None:
        """Why a request is refused before anything else (status, sentence), or None."""
        host = hdr.get("host", "")
        if self.hosts is not None and host and host_name(host) not in self.hosts:
            return 400, (f"This server does not answer to the name {host_name(host)[:100]!r}; "
                         "open it by the address it was started on.")
        if method in SAFE_METHODS:
            return None
        cross = ("Requests that change something are only taken from this server's own "
                 "page, not from another website.")
        if hdr.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, cross
        origin = hdr.get("origin")
        if origin is not None:
            from urllib.parse import urlsplit

            try:
                parts = urlsplit(origin.strip())
                where = host_port(parts.netloc, parts.scheme) if parts.netloc else ""
            except ValueError:
                where = ""
            forwarded = hdr.get("x-forwarded-host", "").split(",")[0]
            own = {host_port(h, parts.scheme if where else "")
                   for h in (host, forwarded) if h.strip()} | self.proxies
            if not where or where not in own:
                return 403, cross
        ctype = hdr.get("content-type", "").split(";")[0].strip().lower()
        has_body = hdr.get("content-length", "0").strip() not in ("", "0") or \
            "transfer-encoding" in hdr
        if has_body and ctype != "multipart/form-data" and not (
                ctype == "application/json" or ctype.endswith("+json")):
            return 415, ("Send the request body as JSON (Content-Type: application/json), "
                         "or files as multipart/form-data.")
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope.get("method") == "HEAD"
        if head:  # answered as GET without the body (monitors and download managers ask)
            scope = dict(scope, method="GET")

        async def send_with_headers(message: Any) -> None:
            if head and message["type"] == "http.response.body":
                message = dict(message, body=b"")
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", [])
                           if h[0].lower() not in {k for k, _ in SECURITY_HEADERS}]
                headers += SECURITY_HEADERS
                path = scope.get("path", "")
                if path.startswith("/api/") and not any(
                        h[0].lower() == b"cache-control" for h in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        from starlette.datastructures import Headers

        hdr = Headers(scope=scope)
        method = str(scope.get("method", "GET")).upper()
        refused = self._refusal(hdr, method)
        if refused is not None:
            resp: Response = JSONResponse({"detail": refused[1]}, status_code=refused[0])
            await resp(scope, receive, send_with_headers)
            return
        if self.token:
            auth = hdr.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            given = given or hdr.get("x-braintumor-token")
            cookie = _cookie(hdr.get("cookie", ""), TOKEN_COOKIE)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            qtoken = (query.get("token") or [None])[0]
            if self._ok(qtoken) and scope.get("method") == "GET":
                # a shared link with ?token=: set the cookie and drop the token from the URL;
                # the path with one leading slash, so it stays on this server (//host/ and
                # /\\host/ would send the browser to another)
                rest = {k: v for k, v in query.items() if k != "token"}
                loc = "/" + scope.get("path", "/").lstrip("/\\") + (
                    ("?" + urlencode(rest, doseq=True)) if rest else "")
                resp = Response(status_code=303, headers={"location": loc})
                resp.set_cookie(TOKEN_COOKIE, str(self.token), httponly=True,
                                samesite="strict", path="/")
                await resp(scope, receive, send_with_headers)
                return
            if not (self._ok(given) or self._ok(cookie) or self._ok(qtoken)):
                resp = JSONResponse({"detail": "This server needs an access token: open the "
                                               "link with ?token=... or send the "
                                               "Authorization: Bearer header."},
                                    status_code=401,
                                    headers={"WWW-Authenticate": 'Bearer realm="braintumor"'})
                await resp(scope, receive, send_with_headers)
                return
        ctype = hdr.get("content-type", "").split(";")[0].strip().lower()
        if method not in SAFE_METHODS and ctype != "multipart/form-data":
            # a body that is no upload: read whole here, within MAX_JSON_BYTES
            body = await _read_capped(hdr, receive)
            if body is None:
                resp = JSONResponse({"detail": "The request body is larger than the "
                                     f"{MAX_JSON_BYTES >> 20} MiB a request that is no upload "
                                     "may send."}, status_code=413)
                await resp(scope, receive, send_with_headers)
                return
            sent = False

            async def replay() -> Any:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            receive = replay
        await self.app(scope, receive, send_with_headers)


async def _read_capped(hdr: Any, receive: Any) -> bytes | None:
    """The whole request body, or None once it is larger than :data:`MAX_JSON_BYTES`
    (said by its Content-Length, or counted as it arrives)."""
    try:
        if int(hdr.get("content-length", "0") or 0) > MAX_JSON_BYTES:
            return None
    except ValueError:
        pass
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


# -- the app ------------------------------------------------------------------------------
def create_app(data_dir: str | Path, *, token: str | None = None,
               max_upload_bytes: int = 1 << 30, ttl_s: float = 24 * 3600.0, workers: int = 1,
               isolation: str = "process", threads: int | None = None,
               job_timeout_s: float | None = None, sample_options: dict[str, Any] | None = None,
               janitor_interval_s: float = 60.0, warm: bool = True,
               hosts: Collection[str] | None = None,
               proxies: Collection[str] = (), data_lock: Any = None) -> FastAPI:
    """Build the web application.

    ``data_dir``: where the job database and the jobs' files live; ``token``: access
    token (None: the ``BRAINTUMOR_TOKEN`` environment variable; ``""``: none);
    ``max_upload_bytes``: upload limit (413 beyond); ``ttl_s``: seconds a job and its
    files are kept; ``workers``: jobs run at once; ``isolation``: ``process`` (a crash
    only fails its job) or ``thread``; ``threads``: CPU threads per job;
    ``sample_options``: keyword arguments for :func:`braintumor.phantom.make_case` when
    the sample case is asked for; ``warm``: import the segmenters in the worker
    process at start rather than on the first job; ``hosts``: the names the server
    answers to in the ``Host`` header (None: any, as when it listens on every address;
    :class:`SecurityMiddleware`); ``proxies``: the names (``name`` or ``name:port``) a
    reverse proxy serves the page by, whose ``Origin`` is the page's own; ``data_lock``:
    the data folder's lock (:func:`~braintumor.web.store.claim_data_dir`) taken by the
    caller, which the server holds from then on instead of claiming the folder itself.
    """
    tok = os.environ.get(TOKEN_ENV) if token is None else token
    store = JobStore(data_dir, ttl_s=ttl_s)
    pool = WorkerPool(store, workers=workers, isolation=isolation, threads=threads,
                      job_timeout_s=job_timeout_s, sample_options=sample_options, warm=warm,
                      prepare_sample=warm and _have_sample())
    corrector = Corrector(store)
    store.delete_guard = corrector.guard
    stop = threading.Event()

    def janitor() -> None:
        while not stop.wait(janitor_interval_s):
            try:
                for jid in store.purge_expired():
                    corrector.forget(jid)
            except Exception:  # noqa: BLE001 - cleaning must never stop the server
                log.exception("purging expired jobs failed")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        n = store.claim(data_lock)
        if n:
            log.info("%d interrupted job(s) queued again", n)
        store.purge_expired()
        pool.start()
        jt = threading.Thread(target=janitor, daemon=True, name="braintumor-janitor")
        jt.start()
        try:
            yield
        finally:
            stop.set()
            pool.stop()
            store.release()

    app = FastAPI(
        title="braintumor",
        version=__version__,
        description="Upload multi-modal brain MRI, segment the tumour, view, correct, "
                    "measure and download. Research software: not for clinical use.",
        docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    app.state.store = store
    app.state.pool = pool
    app.state.corrector = corrector
    app.state.max_upload_bytes = int(max_upload_bytes)
    #: set when the server is told to stop (:class:`braintumor.commands.serve.StoppingServer`):
    #: uploads still streaming in end at once with a 503 instead of holding up the stop
    app.state.stopping = threading.Event()

    method_cache: dict[str, Any] = {"t": 0.0, "names": []}

    def methods() -> list[str]:
        # resolving imports the segmenters: do it once a minute at most
        from braintumor import segment as seg

        key = tuple(seg.METHODS.items())
        if time.monotonic() - method_cache["t"] > 60 or method_cache.get("key") != key:
            method_cache.update(t=time.monotonic(), names=_ready_methods(), key=key)
        return list(method_cache["names"])

    def choose_method(method: str | None) -> str:
        names = methods()
        if not names:
            raise InputError("No segmentation method is available in this build.")
        if not method:
            return _default_method(names)
        if method not in names:
            raise InputError(f"The {method!r} method is not available here; use one of "
                             f"{', '.join(names)}.")
        return method

    def have_2d() -> bool:
        try:
            from braintumor import slices2d
        except ImportError:
            return False
        if not hasattr(slices2d, "segment_image"):
            return False
        check = getattr(slices2d, "model_available", None)
        return bool(check()) if callable(check) else True

    have_sample = _have_sample

    # -- errors -------------------------------------------------------------------------
    def vanished(request: Request) -> Response | None:
        """The 404 of a request whose job was deleted or expired while it was answered
        (its files gone under it), or None."""
        job_id = request.path_params.get("job_id")
        if isinstance(job_id, str) and store.vanishing(job_id):
            # a folder removed under a job still listed (not by its deletion) is said so
            text = NO_JOB if store.deleting(job_id) or store.get(job_id) is None \
                else FILES_GONE
            return said_404(request, text)
        return None

    def said_404(request: Request, text: str) -> Response:
        """A 404 saying ``text``: on a page for a link opened in a tab, else JSON."""
        if _navigating(request):
            return HTMLResponse(_error_page(text), status_code=404)
        return JSONResponse({"detail": text}, status_code=404)

    def job_folder(request: Request) -> Path | None:
        """The folder of the request's job, or None (no job in the address, a bad id)."""
        job_id = request.path_params.get("job_id")
        if not isinstance(job_id, str):
            return None
        try:
            return store.job_dir(job_id)
        except KeyError:
            return None

    def inputs_gone(job_id: str) -> bool:
        """True when a file a job keeps of its upload (its scans, reference, pictures) is
        no longer in its folder (removed under it: by hand, by a clean-up of the disk)."""
        job = store.get(job_id)
        if job is None:
            return False
        inp = job.inputs
        kept = [*(inp.get("modalities") or {}).values(), inp.get("reference"),
                inp.get("image"), *(inp.get("images") or []), *(inp.get("ref_masks") or [])]
        folder = store.job_dir(job_id)
        return any(isinstance(p, str) and not (folder / p).exists() for p in kept)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """A refusal answers JSON, as the API says; a link the reader opened in a tab
        (a report or download of a job deleted since) gets the sentence on a page."""
        from fastapi.exception_handlers import http_exception_handler

        if 400 <= exc.status_code < 500 and _navigating(request) and isinstance(exc.detail,
                                                                                 str):
            return HTMLResponse(_error_page(exc.detail), status_code=exc.status_code,
                                headers=getattr(exc, "headers", None))
        return await http_exception_handler(request, exc)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> Response:
        gone = vanished(request)
        if gone is not None:
            return gone
        text = str(exc)
        folder = job_folder(request)
        if folder is not None and str(folder) in text:
            # said of a file the job keeps, not of what the user sent: one removed under
            # the job says so, and no path of the server's is shown
            if inputs_gone(request.path_params["job_id"]):
                log.warning("job %s: %s", folder.name, text)
                return said_404(request, FILES_GONE)
            text = text.replace(str(folder) + os.sep, "")
        text = text.replace(str(store.data_dir) + os.sep, "")
        return JSONResponse({"detail": text}, status_code=_status_for(exc))

    def files_missing(request: Request, exc: OSError) -> bool:
        """True when ``exc`` is a file of the request's job that is not there (removed
        under a job the database still lists)."""
        job_id = request.path_params.get("job_id")
        if not isinstance(exc, FileNotFoundError) or not isinstance(job_id, str):
            return False
        try:
            folder = store.job_dir(job_id)
        except KeyError:
            return False
        return exc.filename is None or Path(str(exc.filename)).resolve().is_relative_to(folder)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> Response:
        gone = vanished(request)
        if gone is not None:
            return gone
        if files_missing(request, exc):
            return JSONResponse({"detail": FILES_GONE}, status_code=404)
        fetching = request.method in ("GET", "HEAD")
        if disk_full(exc):
            return JSONResponse({"detail": DISK_FULL_FETCH if fetching else DISK_FULL},
                                status_code=507)
        log.error("file error: %s", exc)
        if fetching and _cannot_write(exc):
            return JSONResponse({"detail": "The server cannot write to its data folder ("
                                 f"{exc.strerror or type(exc).__name__}), so the file could "
                                 "not be prepared; ask whoever runs the server."},
                                status_code=500)
        return JSONResponse({"detail": "The server could not read or write a file "
                             f"({exc.strerror or type(exc).__name__})."}, status_code=500)

    @app.exception_handler(MemoryError)
    async def _memory_error(_: Request, exc: MemoryError) -> JSONResponse:
        log.error("out of memory answering a request")
        return JSONResponse({"detail": "The server ran out of memory on this request; the "
                             "file is too large for it to read."}, status_code=507)

    @app.exception_handler(sqlite3.OperationalError)
    async def _db_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        if disk_full(exc):
            fetching = request.method in ("GET", "HEAD")
            return JSONResponse({"detail": DISK_FULL_FETCH if fetching else DISK_FULL},
                                status_code=507)
        log.error("job database error: %s", exc)
        return JSONResponse({"detail": "The job database could not be used (" + str(exc)
                             + ")."}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        if errs:
            e = errs[0]
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            if e.get("type") == "extra_forbidden":  # a misspelt field, say
                text = f"The request is malformed: it has an unknown field, {where!r}."
            else:
                text = (f"The request is malformed: {where or 'body'}: "
                        f"{e.get('msg', 'invalid')}.")
        else:
            text = "The request is malformed."
        return JSONResponse({"detail": text}, status_code=400)

    def get_job(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, NO_JOB)
        return job

    @contextmanager
    def writing(job_id: str) -> Iterator[None]:
        """Around writing a file of a job (a download, a report): not while the job is
        deleted (it waits), and nothing for a job gone (404), so no file is left behind
        in a deleted job's folder."""
        with corrector.guard(job_id):
            if store.vanishing(job_id):
                raise HTTPException(404, NO_JOB)
            yield

    def results_gone(job: Job) -> bool:
        """True when a finished job's result files are no longer in its folder (removed
        under it: by hand, by a clean-up of the disk)."""
        if job.status != "done":
            return False
        out = store.job_dir(job.id) / "output"
        kind = job.result.get("kind")
        if kind == "3d":
            return not labels_path(store.job_dir(job.id), job.label_version).is_file()
        if kind == "2d":
            name = "masks.zip" if int(job.result.get("slices", 1)) > 1 else "mask.png"
            return not (out / name).is_file()
        return False

    def require_files(job: Job) -> Job:
        """``job``, or a 404 that says its files are gone (:func:`results_gone`)."""
        if results_gone(job):
            raise HTTPException(404, FILES_GONE)
        return job

    def served(path: Path) -> Path:
        """``path``, or a 404 that says the job's files are gone: a file a job lists but
        its folder has not is no 500."""
        if not path.is_file():
            raise HTTPException(404, FILES_GONE)
        return path

    def in_scratch(job_id: str, make: Any) -> Any:
        """``make(folder)`` in a temporary folder outside the data folder: what a fetch
        makes when the job's folder cannot be written (a full disk, a read-only one) is
        made there and answered from memory; the folder goes after."""
        import tempfile

        with writing(job_id), tempfile.TemporaryDirectory(prefix="braintumor-") as tmp:
            return make(Path(tmp))

    def job_out(job: Job) -> dict[str, Any]:
        base = f"/api/jobs/{job.id}"
        inputs = {k: v for k, v in job.inputs.items()
                  if k not in ("modalities", "reference", "image", "reference_default",
                               "images", "ref_masks")}
        if "series" in inputs:  # what the page's list shows of each (no server path)
            inputs["series"] = [{k: v for k, v in s.items() if k in _SERIES_SHOWN}
                                for s in inputs["series"]]
        urls: dict[str, Any] = {"page": f"/jobs/{job.id}", "self": base}
        mods = job.inputs.get("modalities") or {}
        if mods:
            urls["images"] = {m: f"{base}/images/{m}{_suffix(p)}" for m, p in mods.items()}
        res = job.result
        if res.get("kind") == "3d":  # from the moment the outline exists (measuring)
            # the revision in the address: an outline of a version number undone and made
            # anew is another file, not one the viewer holds already
            urls["overlay"] = (f"{base}/overlay/v{job.label_version}/labels.nii.gz"
                               f"?r={job.label_revision}")
        if job.status == "done" and res.get("kind") == "3d":
            if res.get("has_uncertainty"):
                urls["uncertainty"] = f"{base}/overlay/uncertainty.nii.gz"
            urls["download"] = f"{base}/download/labels.nii.gz"
            urls["report_html"] = f"{base}/report.html"
            urls["report_pdf"] = f"{base}/report.pdf"
            urls["corrections"] = f"{base}/corrections"
            urls["diameters"] = (f"{base}/overlay/v{job.label_version}/diameters.nii.gz"
                                 f"?r={job.label_revision}")
        if job.status == "done" and res.get("kind") == "2d":
            urls["image2d"] = {k: f"{base}/image2d/{k}.png"
                               for k in ("input", "mask", "overlay", "reference")}
            # saved as <image>_mask.png, not opened in the tab as a picture
            urls["download"] = f"{base}/image2d/mask.png?download=1"
            urls["report_html"] = f"{base}/report.html"
            urls["report_pdf"] = f"{base}/report.pdf"
            if int(res.get("slices", 1)) > 1:
                # a stack: slice k's pictures at {base}/image2d/slice/k/<name>.png, every
                # mask in one zip
                urls["slice2d"] = f"{base}/image2d/slice/"
                urls["download"] = f"{base}/image2d/masks.zip"
        result = dict(res)
        summaries = result.pop("summaries", None)
        if summaries:
            result["summary"] = _with_slice_positions(summaries[-1])
        corrections = result.pop("corrections", [])
        result["corrections"] = len(corrections)
        if corrections:
            result["last_correction_s"] = corrections[-1].get("seconds")
            if corrections[-1].get("note"):  # e.g. a seed outside the brain changed nothing
                result["last_correction_note"] = corrections[-1]["note"]
            if corrections[-1].get("request"):  # the client's name for it
                result["last_correction_request"] = corrections[-1]["request"]
        return JobOut(
            id=job.id, kind=job.kind, method=job.method, status=job.status, stage=job.stage,
            progress=job.progress, message=job.message, created=job.created,
            finished=job.finished, expires=job.expires,
            queue_position=store.queue_position(job) if job.status == "queued" else None,
            label_version=job.label_version, label_revision=job.label_revision,
            inputs=inputs, result=result, urls=urls,
        ).model_dump()

    # -- page and docs ------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job_page(job_id: str) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- API ----------------------------------------------------------------------------
    @app.get("/api/info", response_model=Info, summary="What this server offers")
    def info() -> Info:
        names = methods()
        from braintumor.io import dcm2niix_executable

        return Info(
            version=__version__,
            methods=[MethodInfo(name=m, available=m in names, label=_METHOD_LABELS.get(m, m),
                                note="" if m in names else _why_not(m))
                     for m in _all_methods()],
            default_method=_default_method(names) if names else None,
            image2d_available=have_2d(),
            sample_available=have_sample(),
            correction_available=correction_available(),
            dicom_available=dcm2niix_executable() is not None,
            modalities=list(MODALITIES),
            max_upload_bytes=app.state.max_upload_bytes,
            ttl_seconds=store.ttl_s,
            token_required=bool(tok),
        )

    @app.post("/api/detect-modalities", summary="Guess each file's modality from its name")
    def detect(req: NamesRequest) -> dict[str, Any]:
        """The guesses the page shows (and lets the user change) before uploading."""
        return {"modalities": {n: detect_modality(n) for n in req.names[:64]}}

    @app.post(
        "/api/jobs", status_code=202, response_model=JobOut, summary="Upload a case",
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "required": ["files"], "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "four 3D NIfTI files (one per modality), one 4D "
                                         "NIfTI, one zip of a case's NIfTI files or of a DICOM "
                                         "study, one 2D picture or the numbered slice pictures "
                                         "of one patient"},
                "pixel_mm": {"type": "string", "description": "optional pixel size of 2D "
                             "pictures in mm: areas in mm^2 instead of pixels"},
                "reference": {"type": "string", "format": "binary",
                              "description": "optional reference label map (NIfTI)"},
                "method": {"type": "string", "description": "cnn | watershed | hybrid "
                           "(default: /api/info's default_method)"},
                "modalities": {"type": "string", "description": 'JSON {"file name or series '
                               'id": "t1|t1ce|t2|flair"}; overrides detection'},
                "confirm_series": {"type": "string", "description": "'true': stop after DICOM "
                                   "conversion so the series can be assigned"},
                "uncertainty": {"type": "string", "description": "'true': also compute an "
                                "uncertainty map (slower)"},
                "accurate": {"type": "string", "description": "'true': CNN ensemble at full "
                             "overlap instead of the fast mode (slower)"},
                "align": {"type": "string", "description": "'true': register each "
                          "modality rigidly to the one whose grid the case lies on (the "
                          "T1, the T1ce without a T1, or the finer series beside thick T1 "
                          "slices) before segmenting (a patient who moved between series; "
                          "slower)"},
                "bias_correct": {"type": "string", "description": "'true': divide each "
                                 "modality by its N4 bias field first (a scan that is not "
                                 "bias-corrected; slower)"},
                "channels": {"type": "string", "description": "one 4D NIfTI file: its four "
                             "channels in the file's order, e.g. 't1,t1ce,t2,flair' (BraTS's "
                             "order), as braintumor predict --channels takes it; without it "
                             "the Medical Segmentation Decathlon's order (flair,t1,t1ce,t2) "
                             "is taken and checked against the images, a doubt said in the "
                             "job's inputs.channel_warning"},
            }}}}}},
    )
    async def upload(request: Request) -> JSONResponse:
        """Stream the upload into a new job, check it, and queue it (202)."""
        from braintumor.web.upload import read_multipart

        job = store.create("upload", "pending", status="uploading")
        job_dir = store.job_dir(job.id)
        try:
            fields, files = await read_multipart(request, job_dir / "upload",
                                                 app.state.max_upload_bytes,
                                                 app.state.stopping.is_set)
            method = "2d"
            inputs = await run_in_threadpool(_prepare, job_dir, fields, files)
            if inputs.get("source") != "image2d":
                method = choose_method(fields.get("method"))
                inputs["options"] = _job_options(
                    *(switch(fields, name)
                      for name in ("uncertainty", "accurate", "align", "bias_correct")))
            elif fields.get("method") and fields["method"] not in (*_METHOD_LABELS, "2d"):
                # as the command line refuses an unknown --method; a known one is passed
                # over, a 2D picture being outlined by the 2D model whatever is asked
                raise InputError(f"The {fields['method'][:40]!r} method is not one this "
                                 f"page knows; use one of {', '.join(_METHOD_LABELS)} (a 2D "
                                 "picture is outlined by the 2D model whichever is chosen).")
            shutil.rmtree(job_dir / "upload", ignore_errors=True)
        except BaseException:
            store.delete(job.id)
            raise
        status = "awaiting_input" if inputs.get("needs_confirmation") else "queued"
        store.update(job.id, inputs=inputs, method=method, status=status,
                     stage="waiting for the series to be assigned" if status != "queued"
                     else "queued", expires=time.time() + store.ttl_s)
        pool.notify()
        return JSONResponse(job_out(get_job(job.id)), status_code=202)

    def _prepare(job_dir: Path, fields: dict[str, str], files: list[Any]) -> dict[str, Any]:
        from braintumor.web.inputs import prepare_upload

        return prepare_upload(job_dir, fields, files, max_unzipped=2 * app.state.max_upload_bytes,
                              have_2d=have_2d())

    @app.post("/api/sample", status_code=202, response_model=JobOut,
              summary="Segment the built-in sample case")
    def sample(req: SampleRequest | None = Body(None)) -> dict[str, Any]:
        """Queue a job on the synthetic demo case (its true outline gives metrics)."""
        if not have_sample():
            raise FeatureUnavailable("The sample case needs braintumor.phantom, which this "
                                     "build lacks.")
        method = choose_method(req.method if req else None)
        job = store.create("sample", method, status="queued",
                           inputs={"source": "sample", "files": [],
                                   "options": _job_options(req.uncertainty if req else False,
                                                           req.accurate if req else False)})
        pool.notify()
        return job_out(job)

    @app.get("/api/jobs/{job_id}", response_model=JobOut, summary="A job's state and result")
    def get(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        if results_gone(job):
            # an undo between reading the row and looking for its file (the row moved
            # to the version before, that version's file removed) is no file gone: the
            # row is read again before the job is said to have lost its files
            job = get_job(job_id)
        if results_gone(job):
            # no longer claimed to be there: told as a job that has no results, which
            # every client shows with its sentence
            out = job_out(job)
            out.update(status="failed", stage="failed", message=FILES_GONE)
            out["result"]["files_gone"] = True
            out["urls"] = {k: v for k, v in out["urls"].items() if k in ("page", "self")}
            return out
        if job.status == "done" and job.result.get("kind") == "3d" and correction_available():
            corrector.prefetch(job)
        # a correction's lesions and metrics that a server stop left unmeasured
        corrector.remeasure(job)
        return job_out(job)

    @app.post("/api/jobs/{job_id}/series", response_model=JobOut,
              summary="Assign DICOM series to modalities and queue the job")
    def series(job_id: str, req: SeriesChoice) -> dict[str, Any]:
        from braintumor.web.inputs import confirm_series, parse_modality_choice

        job = get_job(job_id)
        if job.status != "awaiting_input":
            raise HTTPException(409, "This job is not waiting for its series to be assigned.")
        choice = parse_modality_choice(_json_dumps(req.modalities))
        inputs = confirm_series(store.job_dir(job_id), job.inputs, choice)
        method = choose_method(job.method if job.method != "pending" else None)
        # only while it still waits: a cancel answered meanwhile stands
        if not store.update_if(job_id, "awaiting_input", inputs=inputs, status="queued",
                               stage="queued", method=method):
            if get_job(job_id).status == "cancelled":  # 404 once deleted meanwhile
                raise HTTPException(409, "This job was cancelled while its series were "
                                         "being assigned, so it stays cancelled.")
            raise HTTPException(409, "This job is not waiting for its series to be assigned.")
        pool.notify()
        return job_out(get_job(job_id))

    @app.post("/api/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job")
    def cancel(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        if job.terminal:
            return job_out(job)
        store.request_cancel(job_id)
        pool.cancel(job_id)
        return job_out(get_job(job_id))

    @app.delete("/api/jobs/{job_id}", status_code=204, summary="Delete a job and its files now")
    def delete(job_id: str) -> Response:
        job = get_job(job_id)
        if job.status == "running":
            store.request_cancel(job_id)
            pool.cancel(job_id)
            for _ in range(50):
                j = store.get(job_id)
                if j is None or j.status != "running":
                    break
                time.sleep(0.1)
        try:
            # waits for a correction under way, which then writes nothing more
            store.delete(job_id, strict=True)
        except OSError as exc:
            if disk_full(exc):
                raise
            log.error("job %s: its folder could not be deleted: %s", job_id, exc)
            raise HTTPException(500, "The job's files could not all be deleted "
                                f"({exc.strerror or type(exc).__name__}); the job is kept, "
                                "so deleting it can be tried again.") from None
        finally:
            corrector.forget(job_id)
        return Response(status_code=204)

    @app.get("/api/jobs/{job_id}/images/{name}", summary="One input modality (NIfTI)",
             response_class=FileResponse)
    def image(job_id: str, name: str) -> FileResponse:
        job = get_job(job_id)
        mod = name.split(".", 1)[0]
        mods = job.inputs.get("modalities") or {}
        if mod not in mods:
            raise HTTPException(404, f"This job has no {mod!r} image.")
        path = served(on_case_grid(store.job_dir(job_id), mods, mod, job.inputs.get("grid"),
                                   job.inputs.get("reference")))
        return FileResponse(path, media_type="application/gzip"
                            if path.name.endswith(".gz") else "application/octet-stream")

    def outline_3d(job_id: str) -> Job:
        job = get_job(job_id)
        if job.result.get("kind") != "3d":
            raise HTTPException(409 if not job.terminal else 404,
                                "This job has no 3D label map (yet).")
        return job

    def done_3d(job_id: str) -> Job:
        job = get_job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"The job is {job.status}; results exist once it is done.")
        if job.result.get("kind") != "3d":
            raise HTTPException(404, "This job has no 3D label map.")
        return require_files(job)

    @app.get("/api/jobs/{job_id}/overlay/v{version}/labels.nii.gz",
             summary="A label map version for the viewer (internal values 0-3)",
             response_class=FileResponse)
    def overlay(job_id: str, version: int) -> FileResponse:
        job = outline_3d(job_id)
        if not 0 <= version <= job.label_version:
            raise HTTPException(404, "No such label map version.")
        return FileResponse(served(labels_path(store.job_dir(job_id), version)),
                            media_type="application/gzip")

    @app.get("/api/jobs/{job_id}/overlay/v{version}/diameters.nii.gz",
             summary="The largest lesions' RANO diameters as a volume for the viewer",
             response_class=FileResponse)
    def diameter_lines(job_id: str, version: int) -> Response:
        """1 along each region's longest diameter, 2 along the perpendicular one, on the
        label map's grid; 404 until the label version's diameters are measured."""
        from braintumor.diameters import lines_volume

        job = done_3d(job_id)
        summ = (job.result.get("summaries") or [{}])[-1]
        if version != job.label_version or not summ.get("diameters"):
            raise HTTPException(404, "No diameters measured for this label map version.")
        job_dir = store.job_dir(job_id)
        out = job_dir / "output" / f"diameters_v{version}.nii.gz"
        if not out.exists():
            with writing(job_id):
                ref: Any = nib.load(str(labels_path(job_dir, version)))
                img = nib.Nifti1Image(lines_volume(ref.shape, summ["diameters"]), ref.affine)
                try:
                    save_whole(img, out)
                except OSError as exc:
                    if not _cannot_write(exc):
                        raise
                    return Response(nifti_gz_bytes(img), media_type="application/gzip")
        return FileResponse(out, media_type="application/gzip")

    @app.get("/api/jobs/{job_id}/overlay/uncertainty.nii.gz", summary="Uncertainty map",
             response_class=FileResponse)
    def uncertainty(job_id: str) -> FileResponse:
        job = done_3d(job_id)
        path = store.job_dir(job_id) / "output" / "uncertainty.nii.gz"
        if not job.result.get("has_uncertainty"):
            raise HTTPException(404, "This method gave no uncertainty map.")
        return FileResponse(served(path), media_type="application/gzip")

    @app.get("/api/jobs/{job_id}/download/labels.nii.gz", response_class=FileResponse,
             summary="Download the (corrected) label map in the input's geometry")
    def download(job_id: str, convention: str = "brats2021") -> Response:
        """``convention``: brats2021 (ET = 4, default), brats2023 or msd."""
        from braintumor import labels as L

        job = done_3d(job_id)
        L.allowed_values(convention)  # one sentence for an unknown convention
        job_dir = store.job_dir(job_id)
        out = job_dir / "output" / f"download_v{job.label_version}_{convention}.nii.gz"
        src = labels_path(job_dir, job.label_version)
        made: bytes | None = None
        if not out.exists():  # written whole or not at all: this file is served as it is
            img = _converted_labels(src, convention)
            try:
                with writing(job_id):
                    save_whole(img, out)
            except OSError as exc:  # not kept (a full disk): sent from memory instead
                if not _cannot_write(exc):
                    raise
                log.warning("job %s: the download could not be kept (%s); sent from memory",
                            job_id, exc)
                made = nifti_gz_bytes(img)
        # not <case>_seg.nii.gz: saved into a BraTS case folder, that would replace the
        # expert's outline, which carries that name; a corrected outline (version N) and
        # another convention say so in the name, so saving one beside the other keeps both
        name = job.inputs.get("case_id", "case") + "_braintumor"
        if job.label_version:
            name += f"_corrected{job.label_version}"
        if convention != "brats2021":
            name += f"_{convention}"
        if made is not None:
            return _attachment_bytes(made, "application/gzip", f"{name}.nii.gz")
        return _attachment(out, "application/gzip", f"{name}.nii.gz")

    @app.get("/api/jobs/{job_id}/report.html", response_class=HTMLResponse,
             summary="Printable HTML report, self-contained (pictures embedded)")
    def report_html(job_id: str) -> HTMLResponse:
        from braintumor.web.report import render_html, render_html_2d

        job = get_job(job_id)
        # opens in the browser; saved (curl -OJ, the browser's save) under the case's name
        named = {"content-disposition": content_disposition(report_name(job, "html"),
                                                            inline=True)}
        if job.status == "done" and job.result.get("kind") == "2d":
            return HTMLResponse(render_html_2d(
                job, served(store.job_dir(job_id) / "output" / "overlay.png")), headers=named)
        job = done_3d(job_id)
        corrector.remeasure(job)  # said "not measured yet" meanwhile
        try:
            page = render_html(job, *_report_pictures(job))
        except OSError as exc:  # the pictures cannot be kept: drawn for this answer only
            if not _cannot_write(exc):
                raise
            page = in_scratch(job_id, lambda d: render_html(job, *_report_pictures(job, d)))
        return HTMLResponse(page, headers=named)

    @app.get("/api/jobs/{job_id}/report/v{version}/{view}.png", response_class=FileResponse,
             summary="A key slice picture of the report")
    def report_png(job_id: str, version: int, view: str) -> FileResponse:
        from braintumor.web.report import VIEWS

        job = done_3d(job_id)
        if view == "diameters" and version == job.label_version:
            measured = _diameter_picture(job)
            if measured is not None:
                return FileResponse(measured, media_type="image/png")
        if view not in VIEWS or version != job.label_version:
            raise HTTPException(404, "No such picture.")
        return FileResponse(_pictures(job)[view], media_type="image/png")

    @app.get("/api/jobs/{job_id}/report.pdf", response_class=FileResponse,
             summary="PDF report")
    def report_pdf(job_id: str) -> Response:
        from braintumor.web.report import render_pdf, render_pdf_2d, report_facts, report_file

        job = get_job(job_id)
        name = report_name(job, "pdf")
        try:
            if job.status == "done" and job.result.get("kind") == "2d":
                overlay_png = served(store.job_dir(job_id) / "output" / "overlay.png")
                out = store.job_dir(job_id) / "output" / "report_2d.pdf"
                if not out.exists():
                    with writing(job_id):
                        write_replacing(out, lambda tmp: render_pdf_2d(job, overlay_png, tmp))
            else:
                job = done_3d(job_id)
                corrector.remeasure(job)  # said "not measured yet" meanwhile
                # named anew with the RANO section: a PDF written before, without it, is
                # not served
                out = store.job_dir(job_id) / "output" / report_file(job, "report_rano.pdf")
                # kept once the diameters are in it: before, they are still being measured
                if not out.exists() or report_facts(job)["diameters"] is None:
                    with writing(job_id):
                        slices, measured = _report_pictures(job)
                        write_replacing(out, lambda tmp: render_pdf(job, slices, tmp,
                                                                    measured))
        except OSError as exc:  # not kept (a full disk): made for this answer only
            if not _cannot_write(exc):
                raise
            log.warning("job %s: the PDF report could not be kept (%s); sent from memory",
                        job_id, exc)

            def pdf(d: Path) -> bytes:
                if job.result.get("kind") == "2d":
                    made = render_pdf_2d(job, store.job_dir(job_id) / "output" / "overlay.png",
                                         d / "report.pdf")
                else:
                    slices, measured = _report_pictures(job, d)
                    made = render_pdf(job, slices, d / "report.pdf", measured)
                return made.read_bytes()

            return _attachment_bytes(in_scratch(job_id, pdf), "application/pdf", name)
        return _attachment(out, "application/pdf", name)

    def _diameter_picture(job: Job) -> Path | None:
        from braintumor.web.correct import read_labels
        from braintumor.web.report import diameter_picture

        job_dir = store.job_dir(job.id)
        with writing(job.id):
            return diameter_picture(job_dir, job,
                                    read_labels(labels_path(job_dir, job.label_version)))

    def _report_pictures(job: Job, into: Path | None = None
                         ) -> tuple[dict[str, Path], Path | None]:
        """The report's pictures, kept in the job's folder (``into``: drawn there instead,
        when the job's folder cannot be written)."""
        from braintumor.web.correct import read_labels
        from braintumor.web.report import report_pictures

        job_dir = store.job_dir(job.id)
        with writing(job.id):
            return report_pictures(job_dir, job,
                                   read_labels(labels_path(job_dir, job.label_version)), into)

    def _pictures(job: Job) -> dict[str, Path]:
        from braintumor.web.correct import read_labels
        from braintumor.web.report import slice_pictures

        job_dir = store.job_dir(job.id)
        with writing(job.id):
            return slice_pictures(job_dir, job,
                                  read_labels(labels_path(job_dir, job.label_version)))

    @app.get("/api/jobs/{job_id}/image2d/{name}.png", response_class=FileResponse,
             summary="2D job pictures: input, mask, overlay or reference (the overlay "
                     "with an uploaded reference mask's outline)")
    def image2d(job_id: str, name: str, download: bool = False) -> FileResponse:
        """``download=1``: sent as a file to save (the mask as ``<image>_mask.png``, as
        ``braintumor predict`` names it) instead of a picture the browser shows."""
        job = get_job(job_id)
        if job.status != "done" or job.result.get("kind") != "2d" or \
                name not in ("input", "mask", "overlay", "reference"):
            raise HTTPException(404, "No such picture.")
        path = store.job_dir(job_id) / "output" / f"{name}.png"
        if not path.exists():  # a reference picture of a job given no reference mask
            require_files(job)
            raise HTTPException(404, "This job has no such picture (no reference mask "
                                     "was uploaded).")
        if download:
            return _attachment(path, "image/png",
                               f"{job.inputs.get('case_id') or 'image'}_{name}.png")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/jobs/{job_id}/image2d/slice/{index}/{name}.png", response_class=FileResponse,
             summary="One slice of a 2D stack: input, mask, overlay or reference")
    def image2d_slice(job_id: str, index: int, name: str) -> FileResponse:
        job = get_job(job_id)
        n = int(job.result.get("slices", 1)) if job.status == "done" else 0
        if job.result.get("kind") != "2d" or n < 2 or not 0 <= index < n or \
                name not in ("input", "mask", "overlay", "reference"):
            raise HTTPException(404, "No such slice picture.")
        path = store.job_dir(job_id) / "output" / "slices" / f"{index:03d}_{name}.png"
        if not path.exists():  # no reference mask for this slice
            require_files(job)
            raise HTTPException(404, "This slice has no such picture (no reference mask "
                                     "was uploaded for it).")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/jobs/{job_id}/image2d/masks.zip", response_class=FileResponse,
             summary="Every mask of a 2D stack, named after its picture")
    def image2d_masks(job_id: str) -> FileResponse:
        job = get_job(job_id)
        if job.status != "done" or job.result.get("kind") != "2d" or \
                int(job.result.get("slices", 1)) < 2:
            raise HTTPException(404, "This job has no stack of masks.")
        return _attachment(served(store.job_dir(job_id) / "output" / "masks.zip"),
                           "application/zip",
                           f"{job.inputs.get('case_id', 'slices')}_masks.zip")

    @app.post("/api/jobs/{job_id}/compare", summary="Compare with an earlier scan",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["before"], "properties": {
                          "before": {"type": "string", "format": "binary",
                                     "description": "the earlier scan's label map (NIfTI, "
                                                    "either convention), such as this "
                                                    "page's download of that job"},
                          "before_date": {"type": "string", "format": "date",
                                          "description": "the earlier scan's date, "
                                                         "YYYY-MM-DD (optional)"},
                          "after_date": {"type": "string", "format": "date",
                                         "description": "this scan's date, YYYY-MM-DD "
                                                        "(optional; a DICOM study's "
                                                        "own otherwise)"},
                          "labels": {"type": "string",
                                     "enum": ["auto", "brats2021", "brats2023"],
                                     "default": "auto",
                                     "description": "the earlier file's label convention "
                                                    "(optional; auto: by its values, its "
                                                    "name where they fit either)"}}}}}}})
    async def compare_with(job_id: str, request: Request) -> dict[str, Any]:
        """This job's outline (the current version) against an earlier scan's label map:
        volumes and RANO SPD at both dates, the change and where it falls against RANO's
        size thresholds (:mod:`braintumor.followup`). ``warnings``: why the earlier file
        may not be this patient's (names of different cases, fields of view apart) or is
        this outline itself (:func:`braintumor.followup.checks`); ``notes``: facts such as
        grids that differ, or the earlier file read as another convention than its name
        suggests (``labels``: auto, by its values; or brats2021, brats2023); ``dates``:
        each scan's date, None where not known (a label map has none: the form's
        ``before_date`` and ``after_date``, YYYY-MM-DD, give them; a DICOM study's is its
        StudyDate), and the ``days`` between them. The upload is not kept."""
        from braintumor.web.upload import read_multipart

        job = done_3d(job_id)
        tmp = store.job_dir(job_id) / f"compare_{secrets.token_hex(4)}"
        try:
            fields, files = await read_multipart(request, tmp, 256 << 20,
                                                 app.state.stopping.is_set)
            before = [f for f in files if f.field == "before"]
            if len(before) != 1:
                raise InputError("Send the earlier scan's label map as one file in the "
                                 "field 'before'.")
            dates = _scan_dates(fields, job)
            labels = (fields.get("labels") or "auto").strip().lower() or "auto"
            if labels not in ("auto", "brats2021", "brats2023"):
                raise InputError(f"labels {fields['labels']!r} is no label convention; give "
                                 "auto, brats2021 or brats2023.")
            return await run_in_threadpool(_compare, job, before[0].path, before[0].name,
                                           dates, labels)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _scan_dates(fields: dict[str, str], job: Job) -> dict[str, Any]:
        """The two scans' dates: typed by the reader (``before_date``, ``after_date``,
        YYYY-MM-DD), else this job's DICOM StudyDate; ``days`` between them where both are
        known. A date that is no date, lies ahead, or puts the earlier scan after this one
        is refused in one sentence."""
        import datetime as dt

        from braintumor.followup import dated

        unknown = sorted(set(fields) - {"before_date", "after_date", "labels"})
        if unknown:
            raise InputError(f"Unknown field {unknown[0]!r}; a comparison takes the file "
                             "'before', the dates 'before_date' and 'after_date' and the "
                             "convention 'labels'.")
        said = {"before_date": "the earlier scan's date", "after_date": "this scan's date"}
        got: dict[str, dt.date | None] = {}
        for key, given in (("before_date", fields.get("before_date")),
                           ("after_date", fields.get("after_date")
                            or job.inputs.get("study_date"))):
            text = (given or "").strip()
            if not text:
                got[key] = None
                continue
            try:
                day = dt.date.fromisoformat(text)
            except ValueError:
                raise InputError(f"{said[key]} {text!r} is not a date; give it as "
                                 "YYYY-MM-DD.") from None
            if day > dt.date.today():
                raise InputError(f"{said[key]} {day} lies ahead of today.")
            got[key] = day
        b, a = got["before_date"], got["after_date"]
        if b is not None and a is not None and b >= a:
            raise InputError(f"The earlier scan's date ({b}) is not before this scan's "
                             f"({a}).")
        return dated(b, a)

    def _compare(job: Job, before: Path, name: str,
                 dates: dict[str, Any] | None = None, convention: str = "auto"
                 ) -> dict[str, Any]:
        from braintumor.followup import CAVEAT, checks, compare, read_label_map, table_rows
        from braintumor.io import is_nifti
        from braintumor.web.correct import read_labels

        if not is_nifti(name):
            raise InputError(f"{name}: the earlier scan's label map must be a NIfTI file "
                             "(.nii or .nii.gz).")
        # under its own name's suffix, which tells the reader the format (the rest of the
        # client's name is not used on disk)
        suffix = ".nii.gz" if name.lower().endswith(".gz") else ".nii"
        stored = before.rename(before.with_name("before" + suffix))
        old, old_affine, note = call_named(
            lambda p: read_label_map(p, convention, name=name,
                                     choose="send labels=auto to read it by its own values"),
            stored, name)
        path = labels_path(store.job_dir(job.id), job.label_version)
        now: Any = nib.load(str(path))
        labels = read_labels(path)
        result = compare(old, old_affine, labels, now.affine)
        result["files"] = {"before": name, "after": f"this job (version {job.label_version})"}
        # whether the earlier file looks like this patient's: said, never refused
        case = str(job.inputs.get("case_id") or "")
        result.update(checks(name, case, old, old_affine, labels, now.affine,
                             said=("the earlier file", "this case")))
        result["notes"] = [note, *result["notes"]] if note else result["notes"]
        # a label map carries no date: the reader's, or a DICOM study's kept with its job
        result["dates"] = dates or {"before": None, "after": job.inputs.get("study_date"),
                                    "days": None}
        result["rows"] = table_rows(result)
        result["caveat"] = CAVEAT
        return result

    def stale(job_id: str, exc: VersionConflict) -> JSONResponse:
        """The 409 of a correction or undo made on an outline changed since: its sentence
        and the job as it is now, so the client redraws it without asking again."""
        from fastapi.encoders import jsonable_encoder

        now = JobOut.model_validate(job_out(get_job(job_id)))
        return JSONResponse(jsonable_encoder(StaleOut(detail=str(exc),
                                                      label_version=now.label_version,
                                                      label_revision=now.label_revision,
                                                      job=now)), status_code=409)

    @app.post("/api/jobs/{job_id}/corrections", response_model=CorrectionOut,
              summary="Correct the outline with inside/outside seeds (409 if it changed "
                      "since `revision` or `version`)",
              responses={409: {"model": StaleOut, "description": _STALE_DOC}})
    def correct(job_id: str, req: CorrectionRequest) -> dict[str, Any] | Response:
        """Seeds: voxel ``x, y, z`` or world ``mm``, with ``label`` 1-3 (inside that
        region) or 0 (outside the tumour). Answers the job with the new label version,
        ``changed`` and ``note``; a correction that changes no voxel answers the job as
        it was (``changed`` false, ``note`` saying why). With ``revision`` (the
        ``label_revision`` the seeds were placed on) or ``version`` (its
        ``label_version``, what clients from before the revision send) it is refused with
        409, in one sentence and changing nothing, when the outline is another by then:
        another page or reader corrected or undid it since; the refusal carries the job
        as it is now (``label_version``, ``label_revision``, ``job``)."""
        job = done_3d(job_id)
        seeds = [s.model_dump(exclude_none=True) for s in req.seeds]
        try:
            _, changed, note = corrector.apply(job, seeds, expected=req.version,
                                               request=req.request, revision=req.revision)
        except KeyError:
            raise HTTPException(404, NO_JOB) from None
        except VersionConflict as exc:
            return stale(job_id, exc)
        return {**job_out(get_job(job_id)), "changed": changed, "note": note}

    @app.post("/api/jobs/{job_id}/corrections/undo", response_model=JobOut,
              summary="Undo the last correction (409 if the outline changed since "
                      "`revision` or `version`)",
              responses={409: {"model": StaleOut, "description": _STALE_DOC}})
    def undo(job_id: str,
             version: int | None = Query(None, ge=0, description=_VERSION_DOC),
             req: UndoRequest | None = Body(None)) -> dict[str, Any] | Response:
        """Steps back to the previous label map version. ``version`` (in a JSON body or
        the query) is the ``label_version`` the undo was asked on: when the outline is
        another version by then, another page or reader corrected or undid it since, and
        the undo is refused with 409, in one sentence and changing nothing, rather than
        taking back someone else's correction; the refusal carries the job as it is now
        (``label_version``, ``job``). Without it the last correction is undone, whoever
        made it. ``revision`` (in the body: the ``label_revision`` shown) names the
        outline itself, which a version does not once an undo lowered it: sent, it is
        checked as well."""
        body = req.version if req is not None else None
        if version is not None and body is not None and version != body:
            raise HTTPException(400, "The request is malformed: version: the query and the "
                                     "body name different versions.")
        job = done_3d(job_id)
        try:
            corrector.undo(job, expected=body if body is not None else version,
                           revision=req.revision if req is not None else None)
        except KeyError:  # deleted or expired meanwhile
            raise HTTPException(404, NO_JOB) from None
        except VersionConflict as exc:
            return stale(job_id, exc)
        return job_out(get_job(job_id))

    app.add_middleware(SecurityMiddleware, token=tok, hosts=hosts, proxies=proxies)
    return app


#: what a request about a job hears when there is no such job
NO_JOB = "This job is no longer on the server (deleted or expired), or its link is wrong."

#: what a request hears when the data folder's disk is full
DISK_FULL = ("The server's disk is full, so nothing more can be stored; the upload was "
             "discarded. Try again later, or ask whoever runs the server to free space.")


#: what a fetch (a download, a report) hears when the disk is too full to prepare it
DISK_FULL_FETCH = ("The server's disk is full, so the file could not be prepared; try again "
                   "once space is freed, or ask whoever runs the server to free space.")

#: what a request about a finished job hears when its files were removed under it
FILES_GONE = ("This job's files are no longer on the server (removed by a clean-up or by "
              "hand), so its results cannot be shown or downloaded; run it again.")


def _cannot_write(exc: OSError) -> bool:
    """True for a file that cannot be written for want of room or permission (a full
    disk, a read-only data folder): what a fetch can make in memory instead."""
    import errno

    from braintumor.errors import NO_PERMISSION_ERRNOS, NO_ROOM_ERRNOS

    return exc.errno in (NO_ROOM_ERRNOS - {errno.EFBIG}) | NO_PERMISSION_ERRNOS


def _have_sample() -> bool:
    try:
        from braintumor.phantom import make_case, write_case  # noqa: F401
    except ImportError:
        return False
    return True


def _ready_methods() -> list[str]:
    """Methods that can run here: their module imports and, for those built on the CNN,
    a trained model is installed."""
    from braintumor import segment as seg

    names = seg.available_methods()
    if "cnn" in names:
        try:
            from braintumor.inference import shipped_model_available
        except ImportError:
            shipped_model_available = None  # type: ignore[assignment]
        if shipped_model_available is not None and not shipped_model_available():
            # hybrid refines the CNN's probabilities: it needs the model too
            names = [n for n in names if n not in ("cnn", "hybrid")]
    return names


def _why_not(method: str) -> str:
    if method in ("cnn", "hybrid"):
        return "no trained model is installed"
    return "not part of this build"


def _all_methods() -> list[str]:
    from braintumor import segment as seg

    return list(seg.METHODS)


def _default_method(names: list[str]) -> str:
    """The method a job runs when none is asked for, and the one ``/api/info`` names: the
    most accurate that is installed (the hybrid needs the CNN)."""
    return next((m for m in ("hybrid", "cnn") if m in names), names[0])


def _job_options(uncertainty: bool, accurate: bool = False, align: bool = False,
                 bias_correct: bool = False) -> dict[str, Any]:
    """Options passed through ``segment(case, method, **options)``: the page runs the
    CNN in its fast mode (one model, fewer windows) unless ``accurate`` is asked for, so
    a case is outlined in seconds on a plain CPU; ``align`` registers the modalities
    first (:mod:`braintumor.register`); ``bias_correct`` divides them by their N4 bias
    fields (:func:`braintumor.preprocess.correct_bias`)."""
    opts: dict[str, Any] = {"uncertainty": True} if uncertainty else {}
    if not accurate:
        opts["fast"] = True
    if align:
        opts["align"] = True
    if bias_correct:
        opts["bias_correct"] = True
    return opts


def report_name(job: Job, ext: str) -> str:
    """The name a report of ``job`` is saved under: ``<case>_report.<ext>``, with the
    label map download's ``_corrected<N>`` once the outline was corrected, so reports
    before and after a correction saved side by side keep both."""
    name = job.inputs.get("case_id") or "case"
    if job.label_version and job.result.get("kind") == "3d":
        name += f"_corrected{job.label_version}"
    return f"{name}_report.{ext}"


def content_disposition(name: str, inline: bool = False) -> str:
    """``Content-Disposition`` of a download named ``name``: the name as an ASCII
    ``filename`` (accents dropped, other characters as ``_``) for clients of old, and,
    when that is not the name itself, the name in full as RFC 5987's ``filename*``."""
    import unicodedata
    from urllib.parse import quote

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_name).strip("._-") or "download"
    kind = "inline" if inline else "attachment"  # inline: shown in the browser, saved named
    if ascii_name == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _attachment(path: Path, media_type: str, name: str) -> FileResponse:
    """``path`` served as a download named ``name`` (:func:`content_disposition`)."""
    return FileResponse(path, media_type=media_type,
                        headers={"content-disposition": content_disposition(name)})


def _attachment_bytes(content: bytes, media_type: str, name: str) -> Response:
    """``content``, made in memory, as a download named ``name``."""
    return Response(content, media_type=media_type,
                    headers={"content-disposition": content_disposition(name)})


def _suffix(path: str) -> str:
    return ".nii.gz" if path.endswith(".nii.gz") else ".nii"


def _json_dumps(obj: Any) -> str:
    import json

    return json.dumps(obj)


def _converted_labels(src: Path, convention: str) -> Any:
    """``src`` (internal values, input geometry) in ``convention``, same geometry, as an
    image in memory (saved whole, or sent as bytes where it cannot be kept)."""
    import nibabel as nib
    import numpy as np

    from braintumor import labels as L
    from braintumor.io import label_nifti_image

    img: Any = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.uint8)
    return label_nifti_image(L.from_internal(data, convention), img.header, img.affine, src)

