"""Persistent job store: one SQLite file under the data dir.

A job moves ``uploading -> (awaiting_input ->) queued -> running -> done | failed |
cancelled`` (``awaiting_input`` only when DICOM series still need their modality
confirmed). The
row keeps what the page needs to show a job after a reload or on another tab: status,
stage, progress (0..1), the message of a failure, the inputs (JSON) and the result
(JSON). Files live in ``<data dir>/jobs/<id>/``; :meth:`JobStore.job_dir` is the only
place that turns an id into a path, and it refuses anything that is not an id this
store could have made.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("braintumor.web")

#: statuses after which a job never changes again (corrections aside)
TERMINAL = ("done", "failed", "cancelled")
STATUSES = ("uploading", "awaiting_input", "queued", "running", *TERMINAL)
#: statuses the time-to-live never cuts short (work in progress, or waiting its turn): a
#: job's time-to-live runs from when it finished
_BUSY = ("uploading", "queued", "running")

#: ``secrets.token_urlsafe(18)`` gives 24 characters from this alphabet (144 random bits)
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{24}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    label_version INTEGER NOT NULL DEFAULT 0,
    inputs TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE TABLE IF NOT EXISTS revisions (
    id TEXT PRIMARY KEY,
    label_revision INTEGER NOT NULL,
    at_mark TEXT NOT NULL
);
"""

#: a job's row with its label revision (a table of its own, so that the jobs table keeps
#: the columns an earlier release reads: it builds a job from every column there)
_JOB_ROW = ("SELECT jobs.*, revisions.label_revision AS revision_, "
            "revisions.at_mark AS at_mark_ FROM jobs LEFT JOIN revisions "
            "ON revisions.id = jobs.id WHERE jobs.id = ?")


def outline_mark(version: int, result: dict[str, Any]) -> str:
    """What names a job's outline: its label version and its last correction's random
    id, which every release writes with a correction. An earlier release's undo then
    correction returns to the version but not to the id."""
    corrections = result.get("corrections") or []
    last = corrections[-1].get("id", "") if corrections and isinstance(
        corrections[-1], dict) else ""
    return f"{int(version)}:{last}"


def reconcile_revisions(db: sqlite3.Connection) -> None:
    """Count on the revision of every job whose outline moved without it (a server of an
    earlier release ran on the folder in between: one server at a time holds it, so
    this runs when none does), and drop the revisions of jobs gone. Inside a write."""
    db.execute("DELETE FROM revisions WHERE id NOT IN (SELECT id FROM jobs)")
    rows = db.execute("SELECT jobs.id, jobs.label_version, jobs.result, revisions.at_mark "
                      "FROM jobs JOIN revisions ON revisions.id = jobs.id").fetchall()
    for jid, version, result, at in rows:
        try:
            mark = outline_mark(version, json.loads(result or "{}"))
        except ValueError:
            continue
        if mark != at:
            db.execute("UPDATE revisions SET label_revision = label_revision + 1, "
                       "at_mark = ? WHERE id = ?", (mark, jid))


def new_job_id() -> str:
    """A random, unguessable job id (144 bits, URL-safe)."""
    return secrets.token_urlsafe(18)


def is_job_id(text: str) -> bool:
    """True when ``text`` has the shape of a job id (nothing else may name a folder)."""
    return bool(_ID_RE.match(text))


@dataclass
class Job:
    """One row of the store, decoded."""

    id: str
    kind: str
    method: str
    status: str
    stage: str = ""
    progress: float = 0.0
    message: str = ""
    created: float = 0.0
    updated: float = 0.0
    started: float | None = None
    finished: float | None = None
    expires: float = 0.0
    cancel_requested: bool = False
    label_version: int = 0
    #: counts every change of the outline (each correction and undo), never lowered: one
    #: number names one outline, where ``label_version`` (the depth of the corrections,
    #: lowered by an undo) may name two in turn
    label_revision: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """True when the job will not run (again)."""
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        # the revision: as recorded, when recorded on the outline the job holds now
        # (outline_mark); a job with none recorded (from an earlier release) counts from
        # its version; one whose outline moved since without it (an earlier release's
        # server corrected it in between: the store counts it on at its next start,
        # reconcile_revisions) one on from the recorded, which no page has seen
        revision, at = d.pop("revision_", None), d.pop("at_mark_", None)
        version = int(d.get("label_version") or 0)
        d["result"] = json.loads(d["result"] or "{}")
        if revision is None:
            d["label_revision"] = version
        else:
            d["label_revision"] = int(revision) + (0 if at == outline_mark(
                version, d["result"]) else 1)
        d["inputs"] = json.loads(d["inputs"] or "{}")
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)


class JobStore:
    """Thread-safe access to the jobs table and the jobs' folders.

    ``ttl_s``: seconds a job (inputs and results) is kept after it finished (one still
    waiting for its series to be assigned: after its upload).
    """

    def __init__(self, data_dir: str | Path, ttl_s: float = 24 * 3600.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.jobs_root = self.data_dir / "jobs"
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = float(ttl_s)
        self._lock = threading.RLock()
        #: jobs whose deletion is under way
        self._deleting: set[str] = set()
        #: ``guard(job_id)``: held while a job is deleted, so what writes a job's files
        #: (a correction) finishes first and cannot write into the deleted folder after
        self.delete_guard: Callable[[str], AbstractContextManager[Any]] | None = None
        self._db = open_database(self.data_dir / "jobs.sqlite3")

    # -- plumbing -------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # -- one server per data folder ---------------------------------------------------
    def claim(self, held: Any = None) -> int:
        """Hold the data folder for this server (an exclusive lock on ``server.lock``,
        released when the process ends or :meth:`release` is called), then tidy what a
        stopped server left: running jobs go back in the queue, uploads that were cut
        off are deleted (no upload survives its server), and no job outlives the
        time-to-live in force now. A second server on the folder would run the first
        one's jobs again: :class:`~braintumor.errors.InputError` says so instead. ``held``:
        the lock :func:`claim_data_dir` gave the caller already, now this store's to hold
        (so no other server can take the folder in between). Returns how many jobs went
        back in the queue."""
        self._lock_fh = held if held is not None else claim_data_dir(self.data_dir)
        with self._lock:
            cut = [r["id"] for r in self._db.execute(
                "SELECT id FROM jobs WHERE status = 'uploading'")]
        for jid in cut:
            self.delete(jid)
        with self._tx() as db:
            db.execute("UPDATE jobs SET expires = MIN(expires, COALESCE(finished, created) + ?)",
                       (self.ttl_s,))
        return self.requeue_interrupted()

    def release(self) -> None:
        """Let another server use the data folder."""
        fh = getattr(self, "_lock_fh", None)
        if fh is not None:
            fh.close()
            self._lock_fh = None

    def job_dir(self, job_id: str) -> Path:
        """The folder of a job; raises ``KeyError`` for anything that is not an id."""
        if not is_job_id(job_id):
            raise KeyError(job_id)
        path = (self.jobs_root / job_id).resolve()
        if path.parent != self.jobs_root:  # belt and braces: the regex already forbids it
            raise KeyError(job_id)
        return path

    # -- create / read --------------------------------------------------------------
    def create(self, kind: str, method: str, status: str = "queued",
               inputs: dict[str, Any] | None = None, job_id: str | None = None) -> Job:
        """Insert a new job and make its folder."""
        now = time.time()
        jid = job_id or new_job_id()
        folder = self.job_dir(jid)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO jobs (id, kind, method, status, created, updated, expires,"
                    " inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (jid, kind, method, status, now, now, now + self.ttl_s,
                     json.dumps(inputs or {})),
                )
        except BaseException:  # no row (a full disk): no folder either
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            row = self._db.execute(_JOB_ROW, (jid,)).fetchone()
        return Job.from_row(row)

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        if not is_job_id(job_id):
            return None
        with self._lock:
            row = self._db.execute(_JOB_ROW, (job_id,)).fetchone()
        if row is None:
            return None
        job = Job.from_row(row)
        if job.expires <= time.time() and job.status not in _BUSY:
            self.delete(job_id)
            return None
        return job

    def count(self, status: str | None = None) -> int:
        """Number of jobs (with ``status`` when given)."""
        with self._lock:
            if status is None:
                return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?",
                                        (status,)).fetchone()[0])

    def queue_position(self, job: Job) -> int:
        """How many queued jobs were created before this one (0 = next)."""
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND created < ?",
                (job.created,)).fetchone()[0])

    # -- state changes --------------------------------------------------------------
    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns of one job (``inputs``/``result`` given as dicts;
        ``label_revision`` is kept beside the row, with the version it names)."""
        if not fields:
            return
        revision = fields.pop("label_revision", None)
        # the outline the revision names, from what is written where given (a correction
        # and an undo give both), else as the row holds it
        mark = (outline_mark(fields["label_version"], fields["result"])
                if revision is not None and "label_version" in fields and "result" in fields
                else None)
        cols, values = _assignments(fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values, job_id))
            if revision is not None and mark is None:
                row = db.execute("SELECT label_version, result FROM jobs WHERE id = ?",
                                 (job_id,)).fetchone()
                if row is not None:
                    mark = outline_mark(row[0], json.loads(row[1] or "{}"))
            if revision is not None and mark is not None:
                db.execute("INSERT OR REPLACE INTO revisions (id, label_revision, at_mark) "
                           "VALUES (?, ?, ?)", (job_id, int(revision), mark))

    def update_if(self, job_id: str, was: str, **fields: Any) -> bool:
        """Set columns of one job only while its status is still ``was``, checked and
        written at once (``inputs``/``result`` given as dicts): a job cancelled meanwhile
        is not put back in the queue. True when the row was changed."""
        cols, values = _assignments(fields)
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET {cols} WHERE id = ? AND status = ?",
                             (*values, job_id, was))
            return cur.rowcount > 0

    def set_progress(self, job_id: str, progress: float, stage: str) -> None:
        """Record live progress of a running job (not of one asked to stop: its stage
        stays 'cancelling')."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET progress = ?, stage = ?, updated = ? "
                       "WHERE id = ? AND status = 'running' AND cancel_requested = 0",
                       (float(min(max(progress, 0.0), 1.0)), stage, time.time(), job_id))

    def claim_next(self) -> Job | None:
        """Atomically take the oldest queued job and mark it running."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' "
                             "ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', started = ?, updated = ?, "
                       "stage = 'starting', progress = 0 WHERE id = ?", (now, now, row["id"]))
        return self.get(row["id"])

    def finish(self, job_id: str, status: str, message: str = "",
               result: dict[str, Any] | None = None,
               inputs: dict[str, Any] | None = None) -> None:
        """Mark a job done, failed or cancelled; its time-to-live starts now. ``inputs``:
        the job's inputs as its run found them, when they could not be recorded before."""
        assert status in TERMINAL
        now = time.time()
        fields: dict[str, Any] = {"status": status, "message": message,
                                  "finished": now, "expires": now + self.ttl_s}
        if status == "done":
            fields.update(progress=1.0, stage="done")
        else:
            # not the stage it had reached, which would read as if it were still at it
            fields["stage"] = status
        if result is not None:
            fields["result"] = result
        if inputs is not None:
            fields["inputs"] = inputs
        self.update(job_id, **fields)

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a job: at once when it has not started, else flag it for its worker."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            now = time.time()
            if row["status"] in ("queued", "awaiting_input"):
                db.execute("UPDATE jobs SET status = 'cancelled', stage = 'cancelled', "
                           "message = 'Cancelled before it started.', cancel_requested = 1, "
                           "finished = ?, updated = ?, expires = ? WHERE id = ?",
                           (now, now, now + self.ttl_s, job_id))
            elif row["status"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1, stage = 'cancelling', "
                           "updated = ? WHERE id = ?", (now, job_id))
        return self.get(job_id)

    def requeue_interrupted(self) -> int:
        """Put jobs left 'running' by a stopped server back in the queue; returns how many."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET status = 'queued', stage = 'queued again after a "
                             "server restart', progress = 0 WHERE status = 'running'")
            return int(cur.rowcount)

    # -- deletion -------------------------------------------------------------------
    def delete(self, job_id: str, strict: bool = False) -> bool:
        """Delete a job's folder and row (the folder first: on a full disk, removing the
        files makes the room the database needs); True when something was deleted.

        A folder that cannot be removed keeps its row, so the job stays listed (and is
        tried again when it expires) rather than leaving files no job accounts for; with
        ``strict`` (a user's delete) the :class:`OSError` is raised, else logged."""
        try:
            folder = self.job_dir(job_id)
        except KeyError:
            return False
        with self._lock:
            self._deleting.add(job_id)
        try:
            with self.delete_guard(job_id) if self.delete_guard else nullcontext():
                try:
                    remove_tree(folder)
                except OSError as exc:
                    if strict:
                        raise
                    log.warning("job %s: its folder could not be deleted (%s)", job_id, exc)
                    return False
                with self._tx() as db:
                    cur = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    db.execute("DELETE FROM revisions WHERE id = ?", (job_id,))
                return cur.rowcount > 0
        finally:
            with self._lock:
                self._deleting.discard(job_id)

    def deleting(self, job_id: str) -> bool:
        """True while :meth:`delete` removes the job."""
        with self._lock:
            return job_id in self._deleting

    def vanishing(self, job_id: str) -> bool:
        """True when a job is gone or going: being deleted, its row or its folder gone."""
        with self._lock:
            if job_id in self._deleting:
                return True
            row = self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone()
        try:
            return row is None or not self.job_dir(job_id).is_dir()
        except KeyError:
            return True

    def purge_expired(self, now: float | None = None) -> list[str]:
        """Delete every job past its time-to-live (and stray folders); returns their ids."""
        t = time.time() if now is None else now
        with self._lock:
            # an upload that never finished (the client went away) goes a day after its TTL
            ids = [r["id"] for r in self._db.execute(
                "SELECT id FROM jobs WHERE (expires <= ? AND status NOT IN (?, ?, ?)) "
                "OR (status = 'uploading' AND expires <= ?)",
                (t, *_BUSY, t - 24 * 3600.0))]
            known = {r["id"] for r in self._db.execute("SELECT id FROM jobs")}
        for jid in ids:
            self.delete(jid)
        # folders with no row (a crash between mkdir and insert) go too
        for folder in self.jobs_root.iterdir():
            if folder.name not in known and folder.is_dir():
                age = t - folder.stat().st_mtime
                if age > 3600:
                    shutil.rmtree(folder, ignore_errors=True)
        return ids


#: seconds a server starting waits for a job database another program holds locked
OPEN_WAIT_S = 10.0
#: seconds a query waits for the database once the server runs
BUSY_S = 30.0


def open_database(path: Path) -> sqlite3.Connection:
    """The job database at ``path``, checked and with its table made; one sentence that
    names the file and what to do (:class:`~braintumor.errors.InputError`) when it is
    damaged, locked by another program past :data:`OPEN_WAIT_S`, or not a file, and an
    ``OSError`` (ENOSPC) when the disk is too full to set it up. The file is never
    changed, let alone deleted, when it cannot be used."""
    import errno

    from braintumor.errors import InputError

    if path.exists() and not path.is_file():
        raise InputError(f"{path}: the job database's name is taken by a folder (or something "
                         "else that is no file); move it aside, then start the server again.")
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                             timeout=BUSY_S)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 1000")
        try:
            _check_database(db)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            log.warning("%s: the job database is locked by another program; waiting up to "
                        "%.0f s for it", path, OPEN_WAIT_S)
            db.execute(f"PRAGMA busy_timeout = {int(OPEN_WAIT_S * 1000)}")
            _check_database(db)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_S * 1000)}")
        return db
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        text = str(exc)
        if _locked(exc):
            raise InputError(f"{path}: the job database is locked by another program that "
                             "has it open; stop that program, then start the server "
                             "again.") from None
        if "full" in text.lower():
            raise OSError(errno.ENOSPC, "the disk is full, so the job database cannot be "
                          "set up; free space, then start the server again",
                          str(path)) from None
        if not isinstance(exc, sqlite3.OperationalError) or "malformed" in text \
                or "not a database" in text:
            raise InputError(f"{path}: the job database is damaged ({text}); move it aside "
                             "(or put back a copy from a backup), then start the server "
                             "again.") from None
        raise InputError(f"{path}: the job database cannot be opened ({text}); check that "
                         "the server may read and write it, then start it again.") from None


def _check_database(db: sqlite3.Connection) -> None:
    """Read the whole database once (a damaged one says so here, before anything is
    written to it), then make its table."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        raise sqlite3.DatabaseError(f"database disk image is malformed: {rows[0][0]}")
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    # a write, so that a lock another program holds is met here, under the short wait
    # (in WAL mode its writing blocks none of the reads above), not at the first job
    db.execute("BEGIN IMMEDIATE")
    try:  # what an earlier release's server did to the jobs in between
        reconcile_revisions(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def remove_tree(folder: Path) -> None:
    """Remove ``folder`` and everything in it (nothing when it is gone already); an
    entry that cannot be removed raises its :class:`OSError`."""
    def gone_already(_: Any, path: str, exc: Any) -> None:
        err = exc[1] if isinstance(exc, tuple) else exc
        if not isinstance(err, FileNotFoundError):
            raise err

    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=gone_already)
    else:
        shutil.rmtree(folder, onerror=gone_already)


def claim_data_dir(data_dir: Path) -> Any:
    """An open file holding an exclusive lock on ``data_dir/server.lock`` (None where the
    system has no ``fcntl``); :class:`InputError` when another process holds it."""
    from braintumor.locks import claim

    return claim(data_dir / "server.lock",
                 lambda _: f"{data_dir}: another braintumor server is using this data "
                           "folder; stop it, or give this one another --data-dir.",
                 f"the data folder {data_dir} does not support file locks; do not start "
                 "two servers on it")


def _assignments(fields: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``"a = ?, b = ?"`` and the values of an UPDATE of ``fields`` (``inputs`` and
    ``result`` stored as JSON), with the time of the change."""
    for key in ("inputs", "result"):
        if key in fields:
            fields[key] = json.dumps(fields[key])
    fields["updated"] = time.time()
    return ", ".join(f"{k} = ?" for k in fields), tuple(fields.values())
