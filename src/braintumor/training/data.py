"""Preprocessing done once and cached, and patch sampling for training.

Each case is cropped to the brain's bounding box, each modality z-scored over brain
voxels, and stored as ``<cache>/<case_id>.npz`` with ``image`` ``(4, x, y, z)`` float16,
``label`` ``(x, y, z)`` uint8 (internal values), ``box`` ``(3, 2)`` (the crop in the native
grid) and ``shape`` (native shape), so a prediction can be put back in native space.
``<cache>/sources.json`` records, for each case, the files it was made from (path in the
data folder, size, modification time) and the preprocessing settings, so a case whose
files changed since is made again rather than trained on as it was.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import (
    Case,
    CaseSource,
    IncompleteCase,
    check_complete,
    discover,
    load_case,
)
from braintumor.io import write_replacing
from braintumor.labels import regions_to_channels
from braintumor.preprocess import Box, bounding_box, brain_mask, crop, zscore

CROP_MARGIN = 2
#: what a cached case depends on besides its files (change when preprocessing changes)
CACHE_SETTINGS = {"format": 1, "crop_margin": CROP_MARGIN}


@dataclass
class Prepared:
    """A preprocessed case: ``image`` ``(4, x, y, z)`` float32 z-scores, ``label``
    ``(x, y, z)`` uint8 or None, ``box`` the crop in the native grid, ``shape`` native."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    box: Box
    shape: tuple[int, int, int]


def prepare_case(case: Case, margin: int = CROP_MARGIN) -> Prepared:
    """Crop to the brain and z-score each modality over brain voxels."""
    mask = brain_mask(case.image)
    box = bounding_box(mask, margin=margin)
    img = zscore(crop(case.image, box), crop(mask, box))
    lab = crop(case.label, box) if case.label is not None else None
    return Prepared(case.case_id, img, lab, box, case.shape)


def box_to_array(box: Box) -> np.ndarray:
    """Crop box -> ``(3, 2)`` int array of (start, stop)."""
    return np.array([[s.start, s.stop] for s in box], dtype=np.int64)


def array_to_box(arr: np.ndarray) -> Box:
    """``(3, 2)`` array -> crop box."""
    a = np.asarray(arr)
    return (slice(int(a[0, 0]), int(a[0, 1])), slice(int(a[1, 0]), int(a[1, 1])),
            slice(int(a[2, 0]), int(a[2, 1])))


def save_prepared(p: Prepared, folder: Path) -> Path:
    """Write a prepared case to ``folder/<case_id>.npz`` (float16 image)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{p.case_id}.npz"
    arrays = {"image": p.image.astype(np.float16), "box": box_to_array(p.box),
              "shape": np.array(p.shape, dtype=np.int64)}
    if p.label is not None:
        arrays["label"] = p.label.astype(np.uint8)
    # written beside and renamed into place (io.write_replacing): a worker stopped
    # mid-write leaves no truncated case that a later run would read as cached
    write_replacing(out, lambda tmp: np.savez(tmp, **arrays))  # type: ignore[arg-type]
    return out


def load_prepared(path: Path) -> Prepared:
    """Read a cached case."""
    with np.load(path) as z:
        label = z["label"] if "label" in z.files else None
        return Prepared(path.stem, z["image"].astype(np.float32), label,
                        array_to_box(z["box"]), tuple(int(s) for s in z["shape"]))  # type: ignore[arg-type]


def source_fingerprint(src: CaseSource, data: str | Path) -> list[list[Any]]:
    """The files a case is made from as ``[path, size, mtime_ns]`` (path relative to the
    data folder where it lies under it): cheap to take, and changed by any rewrite."""
    files = [src.image4d] if src.image4d is not None else list(src.modality_paths.values())
    if src.label_path is not None:
        files.append(src.label_path)
    out: list[list[Any]] = []
    for f in sorted({Path(x) for x in files if x is not None}):
        st = f.stat()
        try:
            name = str(f.resolve().relative_to(Path(data).resolve()))
        except ValueError:
            name = str(f.resolve())
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def training_sources(data: str | Path) -> list[CaseSource]:
    """The cases of a training data folder, each with all four modalities (the networks
    learn from all four; no stand-in channel), else one sentence that says so."""
    try:
        sources = discover(data)
    except IncompleteCase as exc:  # said as prediction would: a case may lack T1 or T2
        check_complete(exc.source, exc.where, allow_missing=False)
        raise
    for src in sources:
        check_complete(src, Path(data), allow_missing=False)
    return sources


def build_cache(data: str | Path, cache: str | Path, progress: bool = True) -> list[Path]:
    """Preprocess every case under ``data`` into ``cache``: a case already there is kept
    when its files and the preprocessing settings are those it was made from
    (``sources.json``), and made again otherwise, which is said in one line."""
    cache_dir = Path(cache)
    out = []
    sources = training_sources(data)
    index = cache_dir / "sources.json"
    try:
        known = json.loads(index.read_text()) if index.exists() else {}
    except (OSError, ValueError):
        known = {}
    same_settings = known.get("settings") == CACHE_SETTINGS
    before: dict[str, Any] = dict(known.get("cases") or {}) if same_settings else {}
    now: dict[str, Any] = {}
    remade: list[str] = []
    for i, src in enumerate(sources):
        dst = cache_dir / f"{src.case_id}.npz"
        now[src.case_id] = source_fingerprint(src, data)
        fresh = dst.exists() and before.get(src.case_id) == now[src.case_id]
        if not fresh:
            if dst.exists():
                remade.append(src.case_id)
            save_prepared(prepare_case(load_case(src)), cache_dir)
            if progress:
                print(f"[{i + 1}/{len(sources)}] {src.case_id}", flush=True)
        out.append(dst)
    if remade:
        why = ("the cache did not record what its cases were made from" if not known else
               "the preprocessing settings changed" if not same_settings else
               "their files changed since they were cached")
        print(f"{cache_dir}: made {len(remade)} cached case(s) again ({', '.join(remade[:3])}"
              f"{', ...' if len(remade) > 3 else ''}): {why}", file=sys.stderr, flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if known.get("cases") != now or not same_settings:
        record = json.dumps({"settings": CACHE_SETTINGS, "cases": now}, indent=1)
        write_replacing(index, lambda tmp: tmp.write_text(record))
    ids = cache_dir / "cases.json"
    text = json.dumps([s.case_id for s in sources], indent=1)
    if not ids.exists() or ids.read_text() != text:
        ids.write_text(text)
    return out


def kfold_split(case_ids: list[str], k: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Patient-wise k folds: ``[{"train": [...], "val": [...]}, ...]`` (seeded shuffle);
    every fold holds at least one case (:class:`InputError` when there are fewer cases
    than folds)."""
    ids = sorted(case_ids)
    if len(ids) < k:
        from braintumor.errors import InputError

        raise InputError(f"{k} folds need at least {k} cases; there are {len(ids)}.")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    folds = [order[i::k] for i in range(k)]
    return [{"train": sorted(c for j, f in enumerate(folds) if j != i for c in f),
             "val": sorted(folds[i])} for i in range(k)]


class PatchSampler:
    """Random patches from prepared cases; a share of them centred on foreground.

    ``fg_fraction`` of patches (nnU-Net uses 1/3) are centred on a random tumour voxel,
    the rest uniformly inside the volume. Volumes smaller than the patch are zero-padded.
    Returns ``image`` ``(4, *patch)`` float32 and ``target`` ``(3, *patch)`` uint8 regions.
    """

    def __init__(self, cases: list[Prepared], patch: tuple[int, int, int],
                 fg_fraction: float = 1 / 3, seed: int = 0) -> None:
        self.cases = cases
        self.patch = patch
        self.fg_fraction = fg_fraction
        self.rng = np.random.default_rng(seed)
        self.targets = [regions_to_channels(c.label) if c.label is not None else None
                        for c in cases]
        # per-class foreground coordinates (WT, TC, ET) to sample small regions often
        self.fg = []
        for c in cases:
            lab = c.label if c.label is not None else np.zeros(c.image.shape[1:], np.uint8)
            coords = np.argwhere(lab > 0)
            self.fg.append(coords)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.rng.integers(len(self.cases)))
        case, tgt = self.cases[i], self.targets[i]
        shape = np.array(case.image.shape[1:])
        patch = np.array(self.patch)
        fg = self.fg[i]
        if len(fg) and self.rng.random() < self.fg_fraction:
            centre = fg[int(self.rng.integers(len(fg)))]
            start = centre - patch // 2 + self.rng.integers(-patch // 4, patch // 4 + 1)
        else:
            start = np.array([int(self.rng.integers(min(0, s - p), max(0, s - p) + 1))
                              for s, p in zip(shape, patch, strict=False)])
        start = np.clip(start, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
        img = _extract(case.image, start, patch)
        if tgt is None:
            t = np.zeros((3, *self.patch), np.uint8)
        else:
            t = _extract(tgt, start, patch)
        return img, t


def _extract(arr: np.ndarray, start: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Crop ``arr`` ``(C, X, Y, Z)`` at ``start`` with zero padding outside."""
    out = np.zeros((arr.shape[0], *patch), dtype=arr.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch, arr.shape[1:], strict=False):
        a, b = max(s, 0), min(s + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(slice(None),) + tuple(dst)] = arr[(slice(None),) + tuple(src)]
    return out
