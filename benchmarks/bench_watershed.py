"""Seconds per full-size case for the classical watershed (1 thread).

    OMP_NUM_THREADS=1 python benchmarks/bench_watershed.py [CASE_DIR ...]

Without arguments a full-size 240 x 240 x 155 phantom is used. Prints seconds per case,
as shipped, then without its added steps one by one (the FLAIR edema growing, the
native enhancing-tumour step), with the T1/T1ce bias correction that was tried and not
shipped (``n4=2``), then what ``--bias-correct`` (N4 on every modality) adds, and the
ratios to a reference step
timed in the same process (brain mask + z-score of the
four modalities, the preprocessing every method shares), so numbers from machines of
different speed compare.
"""

from __future__ import annotations

import time

from braintumor.preprocess import brain_mask, correct_bias, zscore
from braintumor.watershed import segment_watershed


def _cases(args: list[str]):
    if args:
        from braintumor.cases import load_case

        return [load_case(a) for a in args]
    from braintumor.phantom import make_case

    return [make_case(seed=0)]


def main(args: list[str]) -> None:
    for case in _cases(args):
        zscore(case.image, brain_mask(case.image))  # warm-up, then the best of three
        ref = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            zscore(case.image, brain_mask(case.image))
            ref = min(ref, time.perf_counter() - t0)
        segment_watershed(case)  # warm-up (imports, allocator)
        best = {}
        variants = (("as shipped", {}),
                    ("without the FLAIR edema growing", {"flair_grow": 99.0}),
                    ("without it and the native ET step", {"flair_grow": 99.0,
                                                           "et_native": 99.0}),
                    ("with T1 and T1ce bias-corrected (n4=2, not shipped)", {"n4": 2}))
        for name, options in variants:
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                segment_watershed(case, **options)
                runs.append(time.perf_counter() - t0)
            best[name] = min(runs)
        print(f"{case.case_id} {case.shape} (reference step {ref:.2f} s):")
        for name, sec in best.items():
            print(f"  watershed {name}: {sec:.2f} s per case, {sec / ref:.1f}x the reference")
        t0 = time.perf_counter()
        correct_bias(case.image, brain_mask(case.image), case.spacing)
        n4 = time.perf_counter() - t0
        print(f"  --bias-correct adds {n4:.2f} s, {n4 / ref:.1f}x the reference")


if __name__ == "__main__":
    from _cases import case_arguments

    main(case_arguments(__doc__, many=True))
