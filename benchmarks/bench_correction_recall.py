"""How much one click (or three) of interactive correction gives back on real cases.

    OMP_NUM_THREADS=1 python benchmarks/bench_correction_recall.py [DATA_DIR] [--seeds 1 3]
        [--set tolerance=2.5 ...] [--case Brats18_CBICA_AQN_1 ...]

DATA_DIR holds BraTS case folders (default: ``$BRAINTUMOR_DATA/brats2018``, else
``../shared/data/brats2018`` beside the repository); without it the script says so and
exits 0. For every case and every scenario below, one piece of the expert map is
spoiled, seeds are put in it, :func:`braintumor.correction.correct` runs, and the
result is compared with the expert map inside the window (the union of the 24 mm cubes
around the seeds):

* ``ED``: the largest connected edema piece is cleared (background), ED seeds.
* ``ET``, ``NCR``: the largest connected piece is relabelled to the label most common
  on its border (26-neighbours; mostly ED around ET, ET around NCR), as an outline that
  took it for its neighbour; seeds with the right label.
* ``FP``: a false positive: the tumour mirrored left-right (first axis) onto normal
  brain at least 3 mm from the tumour, its largest piece labelled ED; background seeds.
  Its ``false`` is 0 by construction: a background seed removes only tumour connected
  to it, and this piece touches none.
* ``FPT``: a false positive touching the tumour: the normal brain within 4 mm of the
  expert tumour (its largest piece) labelled ED; background seeds. Here a seed can
  take true tumour away.

Over-growth, one seed on the expert map itself (``added``: voxels the edit changed;
median and max over the cases):

* ``normal ED`` / ``ET`` / ``NCR``: a region seed on unlabelled normal brain (the
  deepest voxel of the ``FP`` scenario's mirrored piece, not labelled here).
* ``confirm ED`` / ``ET`` / ``NCR``: a region seed at the deepest voxel of the largest
  piece of that region, which holds the label already.

Seeds: the piece's deepest voxel (maximum of its distance transform, in mm); the
3-seed variant adds, twice, the deepest voxel at least 10 mm from the seeds so far.

Columns: ``recall``: of the spoiled voxels in the window, the fraction put right;
``false``: of the voxels the edit changed to the seed's label (or, for FP, removed),
the fraction the expert map does not hold so (adds where the expert says otherwise,
removals of expert tumour); ``F1`` of the two; ``outside``: voxels changed outside the
window (must be 0); ``s``: seconds for the edit. The last rows are the means over the
cases where the scenario exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from braintumor.correction import CorrectionParams, correct

SCENARIOS = ("ED", "ET", "NCR", "FP", "FPT")
_LABEL = {"ED": 2, "ET": 3, "NCR": 1, "FP": 0, "FPT": 0}
GROWTH = ("normal", "confirm")
_REGIONS = {"ED": 2, "ET": 3, "NCR": 1}
FPT_MM = 4.0  # width of the touching false positive
MIN_VOXELS = 100  # a piece smaller than this is no scenario


def _default_dir() -> Path:
    env = os.environ.get("BRAINTUMOR_DATA")
    if env:
        return Path(env) / "brats2018"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"


def _largest(mask: np.ndarray) -> np.ndarray:
    comps, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return mask
    sizes = np.bincount(comps.ravel())[1:]
    return comps == int(np.argmax(sizes)) + 1


def _seeds(piece: np.ndarray, spacing: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """The deepest voxel of ``piece``, then (n > 1) the deepest at least 10 mm from the
    seeds chosen so far."""
    box = _box(piece, 1)
    sub = piece[box]
    depth = ndi.distance_transform_edt(sub, sampling=spacing)
    out: list[tuple[int, int, int]] = []
    free = sub.copy()
    g = np.indices(sub.shape, dtype=np.float32)
    for _ in range(n):
        d = np.where(free, depth, -1)
        if d.max() < 0:
            break
        c = np.unravel_index(int(np.argmax(d)), sub.shape)
        out.append(tuple(int(v) + b.start for v, b in zip(c, box, strict=True)))  # type: ignore[arg-type]
        far = sum(((g[i] - c[i]) * spacing[i]) ** 2 for i in range(3)) >= 100.0
        free &= far
    return out


def _box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``pad`` voxels."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def scenario(gt: np.ndarray, brain: np.ndarray, spacing: np.ndarray, name: str
             ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(spoiled map, spoiled piece)`` for a scenario, or None where it does not exist."""
    if name == "FP":
        tumour = gt > 0
        away = np.ones(gt.shape, dtype=bool)
        box = _box(tumour, int(np.ceil(4.0 / spacing.min())))
        away[box] = ndi.distance_transform_edt(~tumour[box], sampling=spacing) > 3.0
        piece = _largest(tumour[::-1] & brain & away)
        if piece.sum() < MIN_VOXELS:
            return None
        lab = gt.copy()
        lab[piece] = 2
        return lab, piece
    if name == "FPT":
        tumour = gt > 0
        if tumour.sum() < MIN_VOXELS:
            return None
        box = _box(tumour, int(np.ceil((FPT_MM + 1) / spacing.min())))
        ring = np.zeros(gt.shape, dtype=bool)
        ring[box] = ndi.distance_transform_edt(~tumour[box], sampling=spacing) <= FPT_MM
        piece = _largest(ring & ~tumour & brain)
        if piece.sum() < MIN_VOXELS:
            return None
        lab = gt.copy()
        lab[piece] = 2
        return lab, piece
    region = _LABEL[name]
    if (gt == region).sum() < MIN_VOXELS:
        return None
    piece = _largest(gt == region)
    if piece.sum() < MIN_VOXELS:
        return None
    lab = gt.copy()
    if name == "ED":
        lab[piece] = 0
    else:
        shell = ndi.binary_dilation(piece, structure=np.ones((3, 3, 3))) & ~piece
        lab[piece] = int(np.argmax(np.bincount(gt[shell], minlength=4)))
    return lab, piece


def prepare(case, gt: np.ndarray, name: str, n_seeds: int
            ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]] | None:
    """``(spoiled map, spoiled piece, seeds)`` of a scenario, or None."""
    spacing = np.asarray(case.spacing, dtype=float)
    brain = np.any(np.asarray(case.image) != 0, axis=0)
    made = scenario(gt, brain, spacing, name)
    if made is None:
        return None
    lab, piece = made
    return lab, piece, [(*c, _LABEL[name]) for c in _seeds(piece, spacing, n_seeds)]


def measure(case, gt: np.ndarray, name: str, made, params: CorrectionParams
            ) -> dict[str, float]:
    """Score one edit of a scenario made by :func:`prepare`."""
    lab, piece, seeds = made
    region = _LABEL[name]
    spacing = np.asarray(case.spacing, dtype=float)
    half = np.maximum(1, np.round(params.window_mm / spacing)).astype(int)
    window = np.zeros(gt.shape, dtype=bool)
    for c in seeds:
        window[tuple(slice(max(0, a - h), a + h + 1)
                     for a, h in zip(c[:3], half, strict=True))] = True
    t0 = time.perf_counter()
    out = correct(case, lab, seeds, params=params)
    dt = time.perf_counter() - t0
    target = piece & window
    if name in ("FP", "FPT"):
        right = target & (out == 0)
        changed = (out == 0) & (lab > 0)
        wrong = changed & (gt > 0)
    else:
        right = target & (out == region)
        changed = (out == region) & (lab != region)
        wrong = changed & (gt != region)
    recall = right.sum() / max(int(target.sum()), 1)
    false = wrong.sum() / max(int(changed.sum()), 1)
    prec = 1.0 - false if changed.any() else 0.0
    f1 = 2 * prec * recall / (prec + recall) if prec + recall > 0 else 0.0
    return {"target": float(target.sum()), "recall": float(recall), "false": float(false),
            "f1": float(f1), "outside": float(((out != lab) & ~window).sum()), "s": dt}


def growth(case, gt: np.ndarray, params: CorrectionParams) -> dict[str, int]:
    """Voxels changed by one region seed on normal brain and by one confirming a label,
    on the expert map itself; keys ``"normal ED"`` ... ``"confirm NCR"``."""
    spacing = np.asarray(case.spacing, dtype=float)
    brain = np.any(np.asarray(case.image) != 0, axis=0)
    out: dict[str, int] = {}
    made = scenario(gt, brain, spacing, "FP")
    for name, region in _REGIONS.items():
        if made is not None:
            s = _seeds(made[1], spacing, 1)[0]
            out[f"normal {name}"] = int((correct(case, gt, [(*s, region)], params=params)
                                         != gt).sum())
        if (gt == region).sum() >= MIN_VOXELS:
            s = _seeds(_largest(gt == region), spacing, 1)[0]
            out[f"confirm {name}"] = int((correct(case, gt, [(*s, region)], params=params)
                                          != gt).sum())
    return out


def _params(pairs: list[str]) -> CorrectionParams:
    kw: dict[str, object] = {}
    fields = {f.name: f.type for f in dataclasses.fields(CorrectionParams)}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"CorrectionParams has no field {key!r} (fields: {', '.join(fields)})")
        default = getattr(CorrectionParams(), key)
        kw[key] = type(default)(value) if not isinstance(default, bool) else value == "1"
    return CorrectionParams(**kw)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=None, metavar="DATA_DIR")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="CorrectionParams fields to change")
    parser.add_argument("--case", nargs="*", default=None, help="only these case ids")
    args = parser.parse_args()
    data = args.data or _default_dir()
    if not data.is_dir():
        print(f"no data folder at {data} (give DATA_DIR or set BRAINTUMOR_DATA); skipped")
        return 0
    from braintumor.cases import load_case

    params = _params(args.set)
    dirs = sorted(d for d in data.iterdir() if d.is_dir())
    if args.case:
        dirs = [d for d in dirs if d.name in args.case]
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    added: dict[str, list[int]] = {}
    print(f"{'case':<22} {'scen':<4} {'n':>1} {'voxels':>7} {'recall':>6} {'false':>6} "
          f"{'F1':>5} {'outside':>7} {'s':>5}")
    for d in dirs:
        case = load_case(d, with_label=True)
        gt = np.asarray(case.label, dtype=np.uint8)
        for name in SCENARIOS:
            for n in args.seeds:
                made = prepare(case, gt, name, n)
                if made is None:
                    continue
                r = measure(case, gt, name, made, params)
                rows.setdefault((name, n), []).append(r)
                print(f"{case.case_id[8:]:<22} {name:<4} {n:>1} {int(r['target']):>7} "
                      f"{r['recall']:>6.3f} {r['false']:>6.3f} {r['f1']:>5.3f} "
                      f"{int(r['outside']):>7} {r['s']:>5.2f}", flush=True)
        for key, v in growth(case, gt, params).items():
            added.setdefault(key, []).append(v)
            print(f"{case.case_id[8:]:<22} {key:<14} added {v:>7}", flush=True)
    print()
    print("| scenario | seeds | cases | recall | false | F1 | outside | s per edit (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, n), rs in sorted(rows.items(), key=lambda kv: (SCENARIOS.index(kv[0][0]), kv[0][1])):
        m = {k: float(np.mean([r[k] for r in rs])) for k in ("recall", "false", "f1", "s")}
        print(f"| {name} | {n} | {len(rs)} | {m['recall']:.3f} | {m['false']:.3f} | "
              f"{m['f1']:.3f} | {int(sum(r['outside'] for r in rs))} | "
              f"{m['s']:.2f} ({max(r['s'] for r in rs):.2f}) |")
    print()
    print("| one seed | cases | voxels added, median | max |")
    print("|---|---|---|---|")
    for key in (f"{g} {r}" for g in GROWTH for r in _REGIONS):
        if key in added:
            v = added[key]
            print(f"| {key} | {len(v)} | {int(np.median(v))} | {max(v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
