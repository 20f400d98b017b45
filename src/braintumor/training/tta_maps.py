"""Held-out probability maps of the shipped CNN with test-time mirroring.

Each case is predicted by the fold model of each recipe that did not train on it,
averaged over the 8 axis flips, and the recipes' maps are averaged as brats3d-2.0
averages its members; the result feeds the same study as the plain maps::

    OMP_NUM_THREADS=2 python -m braintumor.training.tta_maps --out cache/cv_probs_mix_tta
    python -m braintumor.hybrid_study --probs cache/cv_probs_mix_tta --out experiments/hybrid/tta

Resumable: a case's map, once written, is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from braintumor.errors import InputError, guarded
from braintumor.training.package import (
    average_probabilities,
    fold_run_dirs,
    heldout_probabilities,
)


@guarded
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m braintumor.training.tta_maps",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/compact_cv,runs/compact_gpu",
                    help="one folder of fold runs per recipe, comma-separated")
    ap.add_argument("--data", default="../shared/data/brats2018")
    ap.add_argument("--out", default="cache/cv_probs_mix_tta")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--checkpoint", default="last.pt")
    a = ap.parse_args(argv)
    out = Path(a.out)
    roots = [r for r in a.runs.split(",") if r]
    if not roots:
        raise InputError("--runs names no run folder.")
    every = [fold_run_dirs(r) for r in roots]  # all checked before any work
    dirs, info = [], {}
    for root, folds in zip(roots, every, strict=True):
        d = out.parent / f"{out.name}_{Path(root).name}"
        info = heldout_probabilities(folds, a.data, d, a.checkpoint, a.overlap, mirror=True)
        dirs.append(d)
    average_probabilities(dirs, out, info)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
