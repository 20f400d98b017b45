"""Seconds to measure a full-size case's RANO diameters (both regions, every lesion).

    OMP_NUM_THREADS=1 python benchmarks/bench_diameters.py [CASE_DIR]

Takes the case's reference label map (a full-size phantom's truth without arguments),
times :func:`braintumor.diameters.rano` and, in the same process as the reference, the
lesion split the page already runs on every result
(:func:`braintumor.web.measure.lesions`), and prints both and their ratio.
"""

from __future__ import annotations

import time

import numpy as np

from braintumor.diameters import rano
from braintumor.web.measure import lesions


def _best(fn: object, repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        runs.append(time.perf_counter() - t0)
    return float(np.min(runs))


def main(args: list[str]) -> None:
    if args:
        from braintumor.cases import load_case

        case = load_case(args[0])
    else:
        from braintumor.phantom import make_case

        case = make_case(seed=0)
    assert case.label is not None, "the case needs a reference label map"
    labels = case.label
    rano(labels, case.affine)  # warm-up (imports)
    t_rano = _best(lambda: rano(labels, case.affine))
    t_ref = _best(lambda: lesions(labels, case.spacing))
    d = rano(labels, case.affine)
    print(f"{case.case_id} {case.shape}: RANO diameters {t_rano:.3f} s "
          f"(ET {d['ET']['text']}; WT {d['WT']['text']}); reference, the lesion split "
          f"{t_ref:.3f} s; ratio {t_rano / t_ref:.2f}")


if __name__ == "__main__":
    from _cases import case_arguments

    main(case_arguments(__doc__))
