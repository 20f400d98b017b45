"""`braintumor predict` end to end on a GPU against the same command on the same machine's
CPU: each mode runs as its own process (start, reading and writing NIfTI included), twice
on the GPU (the first pays for CUDA's start), once on the CPU; the script prints seconds,
the GPU/CPU ratio and how many voxels the two label maps differ in (mixed precision on
the GPU may move a few boundary voxels).

    python benchmarks/bench_gpu_predict.py [--case DIR] [--device cuda] [--out FILE.json]

Without --case, a real shared BraTS case is used when present, else a full-size
synthetic case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = {"cnn": [], "cnn --fast": ["--fast"], "hybrid": ["--method", "hybrid"],
         "hybrid --fast": ["--method", "hybrid", "--fast"], "cnn --tta": ["--tta"]}


def predict(case: Path, out: Path, device: str, extra: list[str]) -> tuple[float, np.ndarray]:
    import nibabel as nib

    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "braintumor", "predict", str(case), "-o", str(out),
                        "--device", device, *extra], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"predict {' '.join(extra)} on {device} failed: {p.stderr[-400:]}")
    return dt, np.asarray(nib.load(next(out.glob("*.nii.gz"))).dataobj)  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", default="")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: "
                    + ", ".join(MODES))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(args.case) if args.case else None
        if case is None:
            shared = ROOT.parent / "shared" / "data" / "brats2018" / "Brats18_CBICA_AQN_1"
            if shared.is_dir():
                case = shared
            else:
                from braintumor.phantom import make_case, write_case

                case = Path(write_case(make_case(seed=0), Path(tmp) / "in"))
        res: dict[str, Any] = {"device": args.device, "case": case.name}
        for k, mode in enumerate(m for m in args.modes.split(",") if m):
            extra = MODES[mode]
            gpu = [predict(case, Path(tmp) / f"{k}g{r}", args.device, extra) for r in range(2)]
            cpu_s, cpu_lab = predict(case, Path(tmp) / f"{k}c", "cpu", extra)
            lab = gpu[-1][1]
            res[mode] = {"device_s": [round(g[0], 2) for g in gpu], "cpu_s": round(cpu_s, 2),
                         "ratio": round(gpu[-1][0] / cpu_s, 2),
                         "voxels_differ": int((lab != cpu_lab).sum()), "voxels": int(lab.size)}
            r = res[mode]
            print(f"{mode:14s} {args.device} {r['device_s'][0]:6.2f} / {r['device_s'][1]:6.2f} s   "
                  f"cpu {r['cpu_s']:6.2f} s   ratio {r['ratio']:.2f}x   labels differ in "
                  f"{r['voxels_differ']} of {r['voxels']} voxels", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
