"""Seconds per case of `braintumor predict` on a cohort (one command, many cases), with
the next case read while one is segmented (the default) against each case read once the
one before is done, in the same script on the same cases. Each run is a process of its
own, end to end (imports, reading, writing); the label maps of the two runs are compared
voxel by voxel.

    python benchmarks/bench_cohort.py [CASE_DIR ...] [--repeat 2] [--extra --fast]

Without case folders, the shared BraTS cases are used when present (all of them), else
four full-size phantom cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RUN = r"""
import sys, time
t0 = time.perf_counter()
import braintumor.commands.predict as predict
predict.READ_AHEAD = sys.argv[1] == "ahead"
from braintumor.cli import main
rc = main(["predict", *sys.argv[3:], "-o", sys.argv[2], "--device", "cpu"])
print("{" + f'"seconds": {time.perf_counter() - t0}, "rc": {rc}' + "}")
"""


def _run(mode: str, out: Path, inputs: list[str], extra: list[str]) -> float:
    r = subprocess.run([sys.executable, "-c", RUN, mode, str(out), *inputs, *extra],
                       capture_output=True, text=True, cwd=ROOT, timeout=7200)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines or json.loads(lines[-1])["rc"] != 0:
        raise SystemExit(f"run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return float(json.loads(lines[-1])["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="CASE_DIR")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is kept")
    ap.add_argument("--extra", nargs="*", default=[], help="extra predict flags, e.g. --fast")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cases = list(args.cases)
    if not cases:
        shared = ROOT.parent / "shared" / "data" / "brats2018"
        if shared.is_dir():
            cases = sorted(str(p) for p in shared.iterdir() if p.is_dir())
        else:
            from braintumor.phantom import make_case, write_case

            cases = [str(write_case(make_case(seed=i, case_id=f"phantom{i}"), tmp / "in"))
                     for i in range(4)]
    best: dict[str, float] = {}
    for rep in range(args.repeat):  # alternated, so a busy spell of the machine hits both
        for mode in ("ahead", "turn"):
            t = time.perf_counter()
            seconds = _run(mode, tmp / f"{mode}{rep}", cases, args.extra)
            best[mode] = min(best.get(mode, float("inf")), seconds)
            print(f"run {rep + 1} {mode}: {seconds:.1f} s ({time.perf_counter() - t:.1f} s "
                  "wall)", flush=True)
    import nibabel as nib

    differ = 0
    for f in sorted((tmp / "ahead0").glob("*.nii.gz")):
        a = np.asarray(nib.load(str(f)).dataobj)
        b = np.asarray(nib.load(str(tmp / "turn0" / f.name)).dataobj)
        differ += int((a != b).sum())
    n = len(cases)
    print(f"cases: {n}{' (' + ' '.join(args.extra) + ')' if args.extra else ''}")
    print(f"next case read ahead:   {best['ahead'] / n:6.2f} s per case")
    print(f"each case at its turn:  {best['turn'] / n:6.2f} s per case")
    print(f"time ratio ahead / at its turn: {best['ahead'] / best['turn']:.3f}")
    print(f"label voxels that differ between the two: {differ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
