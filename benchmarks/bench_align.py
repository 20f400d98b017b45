"""Seconds to align a full-size case's modalities, against the segmentation they precede.

    OMP_NUM_THREADS=2 python benchmarks/bench_align.py [CASE_DIR]

Moves the case's T1ce, T2 and FLAIR by a few millimetres and degrees (as a patient who
moved between series; a full-size phantom without arguments), times
:func:`braintumor.register.align_modalities` and, in the same process as the reference,
``segment(case, "cnn", fast=True)`` (the page's default), and prints both, their ratio
and the alignment's residual against the applied motion.
"""

from __future__ import annotations

import time

import numpy as np

from braintumor.motion_study import motion
from braintumor.register import align_modalities
from braintumor.segment import segment


def main(args: list[str]) -> None:
    if args:
        from braintumor.cases import load_case

        case = load_case(args[0])
    else:
        from braintumor.phantom import make_case

        case = make_case(seed=0)
    moved, truth = motion(case, 0, 5.0, 5.0)
    segment(moved, "cnn", fast=True)  # warm-up (imports, model load)
    t0 = time.perf_counter()
    _, done = align_modalities(moved)
    t_align = time.perf_counter() - t0
    t0 = time.perf_counter()
    segment(moved, "cnn", fast=True)
    t_cnn = time.perf_counter() - t0
    pts = np.argwhere(case.image[0] != 0)[::200] * np.asarray(case.spacing)
    err = {a.modality: float(np.mean([np.linalg.norm(np.subtract(truth[a.modality].TransformPoint(
        a.transform.TransformPoint(tuple(map(float, p)))), p)) for p in pts])) for a in done}
    print(f"{case.case_id} {case.shape}: alignment of 3 modalities {t_align:.1f} s "
          f"(moved {', '.join(f'{a.modality} {a.moved_mm:.1f} mm' for a in done)}; "
          f"off the applied motion by {', '.join(f'{m} {e:.2f} mm' for m, e in err.items())}); "
          f"reference, the fast CNN {t_cnn:.1f} s; ratio {t_align / t_cnn:.2f}")


if __name__ == "__main__":
    from _cases import case_arguments

    main(case_arguments(__doc__))
