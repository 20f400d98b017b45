"""Time ``braintumor.metrics.score_case`` on a full-size case against the official package.

Scores one 240x240x155 case, all regions (WT, TC, ET: Dice, sensitivity, specificity,
HD95, lesion-wise Dice and HD95), against a perturbed copy of its reference (shifted,
noisy border, one false-positive blob). The reference run in the same process is the
official ``brats-evaluation`` package (panoptica, glioma config, restricted to the same
three regions); DeepMind's ``surface-distance`` HD95 alone is timed too when installed.

    python benchmarks/bench_metrics.py [--case DIR_OR_SEG_FILE] [--repeats 5]

Uses the first case of the shared BraTS data (``$BRAINTUMOR_DATA`` or ../shared/data)
and falls back to a synthetic full-size label map when it is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from braintumor import labels as L
from braintumor import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def find_case(arg: str | None) -> Path | None:
    if arg:
        p = Path(arg)
        return p if p.is_file() else next(iter(sorted(p.glob("*seg.nii*"))), None)
    env = os.environ.get("BRAINTUMOR_DATA")
    for base in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        segs = sorted((base / "brats2018").glob("*/*_seg.nii.gz"))
        if segs:
            return segs[0]
    return None


def synthetic_reference(shape=(240, 240, 155), seed: int = 0) -> np.ndarray:
    """An irregular three-part tumour on the BraTS grid (internal labels)."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre, radii = (100, 130, 80), (35, 30, 25)
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, radii, strict=True)))
    wobble = ndimage.zoom(rng.standard_normal((12, 12, 8)), np.array(shape) / (12, 12, 8),
                          order=3)
    r = r * (1 + 0.25 * wobble / np.abs(wobble).max())
    lab = np.zeros(shape, dtype=np.uint8)
    lab[r < 1.0] = L.ED
    lab[r < 0.6] = L.ET
    lab[r < 0.35] = L.NCR
    return lab


def perturbed(ref: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible segmenter output: shifted, with smooth bumps and dents along the
    tumour border, enhancing tumour partly called necrotic, one far false positive."""
    rng = np.random.default_rng(seed)
    pred = np.roll(ref, (2, -1, 1), axis=(0, 1, 2))
    box = M.bounding_box(pred > 0, margin=6)
    assert box is not None
    sub = pred[box]
    field = ndimage.gaussian_filter(rng.standard_normal(sub.shape), 3)
    field /= field.std()
    wt = sub > 0
    shell = ndimage.binary_dilation(wt, iterations=3) & ~ndimage.binary_erosion(wt, iterations=3)
    sub[shell & (field > 1.0) & ~wt] = L.ED  # bumps
    sub[shell & (field < -1.0)] = 0  # dents
    sub[(sub == L.ET) & (field > 1.5)] = L.NCR
    pred[20:26, 20:26, 20:26] = L.ET  # a false positive far away
    return pred


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median wall time and median CPU time of this process (s) over ``repeats`` runs.

    The CPU time is what the scoring itself costs; on a shared, loaded machine the wall
    time also counts the waits for a core.
    """
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=None, help="a BraTS case folder or its seg file")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    seg = find_case(args.case)
    if seg is not None:
        from braintumor.evaluate import load_label_map

        ref, spacing, _ = load_label_map(seg)
        source = f"real case {seg.parent.name}"
    else:
        ref, spacing, source = synthetic_reference(), (1.0, 1.0, 1.0), "synthetic case"
    pred = perturbed(ref)
    print(f"{source}: shape {ref.shape}, spacing {spacing} mm, "
          f"WT {int((ref > 0).sum())} voxels")

    M.surfel_area_table(tuple(spacing))  # one-off table build, not part of scoring
    ours_t, ours_c, ours = timed(lambda: M.score_case(pred, ref, spacing), args.repeats)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          "times are medians: wall s (CPU s)")
    print(f"braintumor.metrics.score_case  {ours_t:7.3f} s ({ours_c:.3f} s)  "
          f"[{args.repeats} runs; WT/TC/ET, global + lesion-wise]")
    for region, s in ours.items():  # type: ignore[union-attr]
        print(f"    {region}: Dice {s['dice']:.4f}  HD95 {s['hd95']:.2f} mm  "
              f"lesion Dice {s['lesion_dice']:.4f}  lesion HD95 {s['lesion_hd95']:.2f} mm")

    try:
        from brats_evaluation import config_path
        from panoptica import Panoptica_Evaluator
    except ImportError:
        print("official package (brats-evaluation) not installed: no ratio")
        return
    import contextlib
    import io as _io

    with contextlib.redirect_stdout(_io.StringIO()):  # its banner and config notes
        ev = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    p23, r23 = pred.copy(), ref.copy()  # internal labels are the 2023 values it expects

    def official() -> object:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            return ev.evaluate(p23, r23, voxelspacing=tuple(spacing), verbose=False,
                               skip_groups=["snfh", "netc", "rc"])

    reps = max(1, min(3, args.repeats))
    off_t, off_c, _ = timed(official, reps)
    print(f"official brats-evaluation      {off_t:7.3f} s ({off_c:.3f} s)  "
          f"[{reps} runs; same regions]")
    print(f"ratio official / ours          {off_t / ours_t:7.1f} x wall, "
          f"{off_c / ours_c:.1f} x CPU")

    try:
        import surface_distance as sd
    except ImportError:
        return
    masks_p, masks_r = L.region_masks(pred), L.region_masks(ref)

    def deepmind() -> object:
        return [sd.compute_robust_hausdorff(
            sd.compute_surface_distances(masks_r[r], masks_p[r], spacing), 95)
            for r in L.REGIONS]

    dm_t, dm_c, _ = timed(deepmind, reps)
    hd_t, hd_c, _ = timed(
        lambda: [M.hd95(masks_p[r], masks_r[r], spacing) for r in L.REGIONS], args.repeats)
    print(f"HD95 only, 3 regions: ours {hd_t:.3f} s ({hd_c:.3f} s), surface-distance "
          f"{dm_t:.3f} s ({dm_c:.3f} s): ratio {dm_t / hd_t:.1f} x wall, "
          f"{dm_c / hd_c:.1f} x CPU")


if __name__ == "__main__":
    main()
