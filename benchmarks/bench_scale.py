"""Throughput of batch inference on a local Dask cluster against the plain serial loop.

    python benchmarks/bench_scale.py [--cases 6] [--workers 2] [--method cnn] [--fast]
                                     [--data DATASET]

Both runs segment the same cases with the same method and write the label maps (the
reference is the in-process loop that ``braintumor predict`` runs without
``--scheduler``); the script prints seconds per case for each and their ratio. Without
``--data``, full-size 240 x 240 x 155 phantoms are written to a temporary folder. The
cluster's start-up is included in its time, as a user pays it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--method", default="cnn", choices=["cnn", "watershed", "hybrid"])
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--data", default=None, help="a dataset folder (first --cases cases)")
    a = ap.parse_args()

    from braintumor.cases import discover
    from braintumor.scale import predict_many, run_case

    with tempfile.TemporaryDirectory() as tmp:
        if a.data:
            sources = discover(a.data)[: a.cases]
        else:
            from braintumor.phantom import make_case, write_case

            for i in range(a.cases):
                write_case(make_case(seed=i, case_id=f"phantom{i}"), Path(tmp) / "data")
            sources = discover(Path(tmp) / "data")
        opts = {"fast": True} if a.fast and a.method != "watershed" else {}
        run_case(sources[0], str(Path(tmp) / "warm"), a.method, options=opts)  # imports, model
        t0 = time.perf_counter()
        serial = [run_case(s, str(Path(tmp) / "serial"), a.method, options=opts)
                  for s in sources]
        t_serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = predict_many(sources, Path(tmp) / "dist", a.method,
                            scheduler=f"local:{a.workers}", options=opts)
        t_dist = time.perf_counter() - t0
    n = len(sources)
    bad = [o.case_id for o in serial + dist if not o.ok]
    print(f"{n} cases, method {a.method}{' fast' if opts else ''}"
          f"{'; FAILED: ' + ', '.join(bad) if bad else ''}")
    print(f"serial loop, 1 process:       {t_serial / n:6.2f} s per case ({t_serial:.1f} s)")
    print(f"local cluster, {a.workers} workers:    {t_dist / n:6.2f} s per case ({t_dist:.1f} s, "
          "start-up included)")
    print(f"ratio cluster / serial: {t_dist / t_serial:.2f}")


if __name__ == "__main__":
    main()
