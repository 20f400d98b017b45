"""Interactive correction of a finished job's label map.

Each correction is a list of seeds ``(x, y, z, label)`` (voxel indices of the input
grid, or millimetre coordinates turned into them with the input's affine; label an
internal value 0..3, 0 meaning "not tumour here"). :func:`braintumor.correction.correct`
gives the new label map, stored as the next version; undo steps back one version.
The newest version is what the viewer shows and what downloads and reports use.

Every correction and undo also counts the job's revision up, which is never lowered: a
version may name two outlines in turn (correct to 1, undo to 0, correct to 1 again), a
revision only one. A correction or undo may name the revision (older clients: the
version) it was made against (the one its page shows):
when another page or reader changed the outline since, it is refused
(:class:`VersionConflict`) and changes nothing, so a seed never lands on an outline its
reader has not seen and an Undo never takes back someone else's correction. The check is
made under the job's lock, so two requests made against one version cannot both pass.

The case and the current labels of recently corrected jobs stay in memory, so a click
costs the correction itself and one file write, not a reload of the four volumes.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import Case
from braintumor.errors import InputError
from braintumor.web.inputs import load_job_case
from braintumor.web.store import Job, JobStore
from braintumor.web.worker import VIEWER_CONVENTION, labels_path

log = logging.getLogger(__name__)

#: most seeds one request may carry
MAX_SEEDS = 2000

#: a seed this many voxels or more from the image's origin is said to lie far outside it,
#: without its voxel index
FAR = 1e6


class CorrectionUnavailable(InputError):
    """This build has no correction method (answered with 501)."""


class VersionConflict(InputError):
    """The outline changed since the version a correction or undo was made against
    (answered with 409); nothing was changed."""


def check_version(job: Job, expected: int | None, undo: bool = False,
                  revision: int | None = None) -> None:
    """Refuse (:class:`VersionConflict`) a correction or undo made against label map
    revision ``revision`` or version ``expected`` when the job's is another; ``None``
    names none: always passes. The revision names one outline (every change counts it
    up); the version, the depth of the corrections, is what clients from before the
    revision send: an undo lowers it, so a version may name two outlines in turn."""
    moved = expected is not None and expected != job.label_version
    if not moved and (revision is None or revision == job.label_revision):
        return
    done = "nothing was undone" if undo else "this correction was not applied"
    again = "undo again if need be" if undo else "correct again"
    # named by the versions where they differ (the count of corrections the page shows),
    # by the revisions where only they do (undone and corrected again since)
    which = (f"version {expected}, now {job.label_version}" if moved
             else f"revision {revision}, now {job.label_revision}")
    raise VersionConflict(
        f"The outline changed since this page showed it ({which}: another page or reader "
        f"corrected or undid it), so {done}: check the outline as it is now and {again}.")


def correction_available() -> bool:
    """True when :mod:`braintumor.correction` can be imported."""
    try:
        from braintumor.correction import correct  # noqa: F401
    except ImportError:
        return False
    return True


def read_labels(path: Path) -> np.ndarray:
    """A label map written by the worker, as ``(X, Y, Z)`` uint8 internal values."""
    import nibabel as nib

    img: Any = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.uint8)


def parse_seeds(raw: Any, case: Case) -> list[tuple[int, int, int, int]]:
    """Seeds from JSON: ``[{"x","y","z","label"}]`` or ``[{"mm": [x, y, z], "label"}]``."""
    if not isinstance(raw, list) or not raw:
        raise InputError("Send at least one seed, e.g. {\"seeds\": [{\"x\": 10, \"y\": 20, "
                         "\"z\": 30, \"label\": 3}]}.")
    if len(raw) > MAX_SEEDS:
        raise InputError(f"Send at most {MAX_SEEDS} seeds at once (got {len(raw)}).")
    inv = np.linalg.inv(case.affine)
    out = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise InputError(f"Seed {i + 1} is not an object with x, y, z (or mm) and label.")
        label = s.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 3:
            raise InputError(f"Seed {i + 1}: label must be 0 (outside), 1 (NCR), 2 (ED) or 3 "
                             "(ET).")
        if "mm" in s:
            mm = s["mm"]
            if (not isinstance(mm, list) or len(mm) != 3
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in mm)):
                raise InputError(f"Seed {i + 1}: mm must be three finite numbers.")
            with np.errstate(over="ignore", invalid="ignore"):
                vox = inv @ np.array([*map(float, mm), 1.0])
            if not all(math.isfinite(float(v)) and abs(float(v)) < FAR for v in vox[:3]):
                # no voxel index hundreds of digits long in the sentence
                raise InputError(f"Seed {i + 1} lies far outside the image {case.shape} "
                                 "(its mm are not in the scan).")
            xyz = [int(round(float(v))) for v in vox[:3]]
        else:
            vals = [s.get(k) for k in ("x", "y", "z")]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                raise InputError(f"Seed {i + 1}: x, y and z must be whole voxel indices.")
            xyz = [int(v) for v in vals]  # type: ignore[arg-type]
            if not all(abs(v) < FAR for v in xyz):
                raise InputError(f"Seed {i + 1} lies far outside the image {case.shape}.")
        if not all(0 <= v < n for v, n in zip(xyz, case.shape, strict=True)):
            raise InputError(f"Seed {i + 1} at voxel {tuple(xyz)} lies outside the image "
                             f"{case.shape}.")
        out.append((xyz[0], xyz[1], xyz[2], int(label)))
    return out


#: the seeds that changed nothing a correction's note says one by one; the rest counted
NOTES_SAID = 3


def notes_text(notes: list[str]) -> str:
    """What a correction's seeds that changed nothing say, in one line kept with the job
    and sent on every poll: the first :data:`NOTES_SAID`, then how many more."""
    said = "; ".join(notes[:NOTES_SAID])
    more = len(notes) - NOTES_SAID
    if more > 0:
        said += f"; and {more} more seed{'s' if more > 1 else ''} changed nothing"
    return said


def seed_place(case: Case, x: int, y: int, z: int) -> str:
    """Where a seed lies, as the page's line under the viewer says it: the voxel's centre
    in scanner millimetres (RAS), then its indices, ``(-24.0, 14.0, 75.0) mm (voxel 24,
    225, 75)``."""
    mm = (np.asarray(case.affine) @ np.array([x, y, z, 1.0]))[:3]
    return f"({', '.join(f'{float(v):.1f}' for v in mm)}) mm (voxel {x}, {y}, {z})"


#: files made from one label map version, ``{v}`` its number: downloads in each
#: convention, the report's pictures and PDF, the diameters volume for the viewer. They are
#: kept to be served again, so a version undone and written anew must not leave them behind
DERIVED_PATTERNS = ("download_v{v}_*", "report_v{v}_*", "diameters_v{v}.nii.gz")


def drop_derived(job_dir: Path, version: int) -> None:
    """Remove every file made from label map version ``version`` of the job in
    ``job_dir`` (its downloads, report files and diameters volume)."""
    out = job_dir / "output"
    for pattern in DERIVED_PATTERNS:
        for path in out.glob(pattern.format(v=version)):
            path.unlink(missing_ok=True)


class Corrector:
    """Applies and undoes corrections; keeps the last ``cache_size`` cases in memory."""

    def __init__(self, store: JobStore, cache_size: int = 2) -> None:
        self.store = store
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Case, int, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        # re-entrant: a job that expires under a correction is deleted (store.get) with
        # its lock held (JobStore.delete_guard)
        self._job_locks: dict[str, threading.RLock] = {}
        self._loading: set[str] = set()
        # (job id, label revision) whose lesions and metrics are being measured
        self._measuring: set[tuple[str, int]] = set()
        # outlines whose measuring failed: not tried again while this server runs (the
        # page asks for the job every 400 ms while its lesions are uncounted)
        self._failed: set[tuple[str, int]] = set()

    def prefetch(self, job: Job) -> None:
        """Load a finished job's case into memory in the background, so the first
        correction click does not wait for the four volumes to be read."""
        with self._lock:
            if job.id in self._cache or job.id in self._loading:
                return
            self._loading.add(job.id)

        def load() -> None:
            try:
                with self._job_lock(job.id):
                    self._state(job)
            except Exception:  # noqa: BLE001 - the click itself reports any problem
                pass
            finally:
                with self._lock:
                    self._loading.discard(job.id)

        threading.Thread(target=load, daemon=True, name="braintumor-prefetch").start()

    def _job_lock(self, job_id: str) -> threading.RLock:
        with self._lock:
            return self._job_locks.setdefault(job_id, threading.RLock())

    @contextmanager
    def guard(self, job_id: str) -> Iterator[None]:
        """Hold a job still: no correction or undo runs meanwhile (one under way finishes
        first). Held while a job is deleted, so a correction can neither write into the
        deleted folder nor read half of it."""
        with self._job_lock(job_id):
            yield

    def forget(self, job_id: str) -> None:
        """Drop a job from the cache (deleted or expired)."""
        with self._lock:
            self._cache.pop(job_id, None)
            self._job_locks.pop(job_id, None)

    def _state(self, job: Job) -> tuple[Case, np.ndarray]:
        with self._lock:
            hit = self._cache.get(job.id)
            if hit is not None and hit[1] == job.label_version:
                self._cache.move_to_end(job.id)
                return hit[0], hit[2]
        job_dir = self.store.job_dir(job.id)
        case = hit[0] if hit is not None else load_job_case(job_dir, job.inputs)
        labels = read_labels(labels_path(job_dir, job.label_version))
        self._remember(job.id, case, job.label_version, labels)
        return case, labels

    def _remember(self, job_id: str, case: Case, version: int, labels: np.ndarray) -> None:
        with self._lock:
            self._cache[job_id] = (case, version, labels)
            self._cache.move_to_end(job_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def apply(self, job: Job, raw_seeds: Any, expected: int | None = None,
              request: str | None = None,
              revision: int | None = None) -> tuple[float, bool, str]:
        """Apply one correction: the seconds it took, whether it changed a voxel, and
        what its seeds that changed nothing say ("" when every one changed something).
        Made against label revision ``revision`` and version ``expected`` (when given):
        refused (:class:`VersionConflict`) if the job's is another by then. ``request`` (the
        client's name for it) is kept with the correction.

        A correction that changes no voxel (every seed outside the brain, or asking for
        what is there) is no correction: no label version is written, it is not counted
        and leaves nothing to undo."""
        try:
            from braintumor.correction import correct
        except ImportError:
            raise CorrectionUnavailable("Interactive correction is not available in this "
                                        "build (braintumor.correction is missing).") from None
        from braintumor.cases import write_label_map
        from braintumor.io import write_replacing
        from braintumor.web.measure import summary

        with self._job_lock(job.id):
            job = self._fresh(job)
            check_version(job, expected, revision=revision)
            t0 = time.perf_counter()
            case, labels = self._state(job)
            seeds = parse_seeds(raw_seeds, case)
            notes: list[str] = []  # seeds that changed nothing, said on the page
            new = np.asarray(correct(case, labels.copy(), seeds, notes=notes,
                                     where=lambda x, y, z: seed_place(case, x, y, z)),
                             dtype=np.uint8)
            if new.shape != labels.shape:
                raise RuntimeError(f"correction returned shape {new.shape}, not {labels.shape}")
            if np.array_equal(new, labels):
                return time.perf_counter() - t0, False, notes_text(notes)
            version = job.label_version + 1
            job_dir = self.store.job_dir(job.id)
            if self.store.vanishing(job.id):  # nothing is written for a job gone
                raise KeyError(job.id)
            # files made from an earlier version of this number (undone since) would be
            # served in place of this one's
            drop_derived(job_dir, version)
            # written whole or not at all (a full disk leaves no empty version behind)
            write_replacing(labels_path(job_dir, version),
                            lambda tmp: write_label_map(case, new, tmp, VIEWER_CONVENTION))
            result = dict(job.result)
            # volumes now; lesions and metrics (about a second on a full-size case) follow
            # in the background so the outline updates at once
            result["summaries"] = [*result.get("summaries", []),
                                   summary(new, case.spacing, quick=True)]
            seconds = time.perf_counter() - t0
            token = secrets.token_hex(8)
            result["corrections"] = [*result.get("corrections", []),
                                     {"seeds": [list(s) for s in seeds],
                                      "seconds": round(seconds, 3), "id": token,
                                      **({"request": request} if request else {}),
                                      **({"note": notes_text(notes)} if notes else {})}]
            self.store.update(job.id, result=result, label_version=version,
                              label_revision=job.label_revision + 1)
            self._remember(job.id, case, version, new)
            key = (job.id, job.label_revision + 1)
            with self._lock:
                self._measuring.add(key)
        threading.Thread(target=self._measure, args=(job.id, token, version, new, case, key),
                         daemon=True, name="braintumor-measure").start()
        return seconds, True, notes_text(notes)

    def _measure(self, job_id: str, token: str, version: int, labels: np.ndarray,
                 case: Case, key: tuple[str, int]) -> None:
        """Complete the summary of label version ``version`` (if it is still current)."""
        from braintumor.web.measure import summary

        try:
            full = summary(labels, case.spacing, case.label, affine=case.affine)
            with self._job_lock(job_id):
                job = self.store.get(job_id)
                if job is None or job.label_version != version:
                    return
                corr = job.result.get("corrections", [])
                summaries = list(job.result.get("summaries", []))
                if len(corr) != version or corr[-1].get("id") != token or \
                        len(summaries) != version + 1:
                    return
                summaries[version] = full
                self.store.update(job_id, result={**job.result, "summaries": summaries})
        except Exception:  # noqa: BLE001 - the volumes already shown stay valid
            return
        finally:
            with self._lock:
                self._measuring.discard(key)

    @staticmethod
    def unmeasured(job: Job) -> bool:
        """True for a finished 3D job whose current outline has its volumes but not its
        lesions, diameters and metrics: a correction's measurement, made in the
        background, that a server stop cut short."""
        res = job.result
        summaries = res.get("summaries") or []
        return (job.status == "done" and res.get("kind") == "3d"
                and len(summaries) == job.label_version + 1
                and summaries[-1].get("lesion_count") is None)

    def remeasure(self, job: Job) -> None:
        """Take again, in the background, the measurements missing for ``job``'s current
        outline (:meth:`unmeasured`; none is taken twice at once). The revision measured
        is the one current when it starts; the result is kept only if it still is, so a
        correction made meanwhile is never given the measurements of the outline before."""
        if not self.unmeasured(job):
            return
        key = (job.id, job.label_revision)
        with self._lock:
            if key in self._measuring or key in self._failed:
                return
            self._measuring.add(key)

        def run() -> None:
            from braintumor.web.measure import summary

            try:
                with self._job_lock(job.id):
                    now = self.store.get(job.id)
                    if now is None or now.label_revision != key[1] or not self.unmeasured(now):
                        return
                    case, labels = self._state(now)
                full = summary(labels, case.spacing, case.label, affine=case.affine)
                with self._job_lock(job.id):
                    now = self.store.get(job.id)
                    if now is None or now.label_revision != key[1] or not self.unmeasured(now):
                        return
                    summaries = list(now.result["summaries"])
                    summaries[-1] = full
                    self.store.update(job.id, result={**now.result, "summaries": summaries})
            except Exception:  # noqa: BLE001 - said once, and to the page
                log.exception("job %s: measuring its outline failed", job.id)
                with self._lock:
                    self._failed.add(key)
                self._mark_failed(job.id, key[1])
            finally:
                with self._lock:
                    self._measuring.discard(key)

        threading.Thread(target=run, daemon=True, name="braintumor-remeasure").start()

    def _mark_failed(self, job_id: str, revision: int) -> None:
        """Say in the job's current summary (still revision ``revision``) that its lesions
        could not be counted, so the page stops waiting for them and the reports say so;
        a server started again tries once more."""
        try:
            with self._job_lock(job_id):
                now = self.store.get(job_id)
                if now is None or now.label_revision != revision or not self.unmeasured(now):
                    return
                summaries = list(now.result["summaries"])
                summaries[-1] = {**summaries[-1], "measure_failed": True}
                self.store.update(job_id, result={**now.result, "summaries": summaries})
        except Exception:  # noqa: BLE001 - the volumes shown stay valid
            log.exception("job %s: saying its measuring failed failed", job_id)

    def undo(self, job: Job, expected: int | None = None,
             revision: int | None = None) -> None:
        """Step back to the previous label map version (a new revision); made against
        revision ``revision`` and version ``expected`` (when given): refused
        (:class:`VersionConflict`) if the job's is another by then."""
        with self._job_lock(job.id):
            job = self._fresh(job)
            check_version(job, expected, undo=True, revision=revision)
            if job.label_version == 0:
                raise InputError("There is no correction to undo.")
            job_dir = self.store.job_dir(job.id)
            result = dict(job.result)
            result["summaries"] = result.get("summaries", [])[:-1]
            result["corrections"] = result.get("corrections", [])[:-1]
            version = job.label_version - 1
            self.store.update(job.id, result=result, label_version=version,
                              label_revision=job.label_revision + 1)
            labels_path(job_dir, job.label_version).unlink(missing_ok=True)
            drop_derived(job_dir, job.label_version)
            with self._lock:
                hit = self._cache.pop(job.id, None)
            if hit is not None:
                self._remember(job.id, hit[0], version,
                               read_labels(labels_path(job_dir, version)))

    def _fresh(self, job: Job) -> Job:
        now = self.store.get(job.id)
        if now is None:
            raise KeyError(job.id)
        if now.status != "done" or now.result.get("kind") != "3d":
            raise InputError("Only a finished 3D segmentation can be corrected.")
        return now
