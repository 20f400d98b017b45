"""Time of the shipped CNN's sliding windows at other window sizes and overlaps, against
the shipped configuration, in one process on the same case.

Each configuration runs the shipped members (its default backend) through
``predict_probabilities`` on a copy of the model whose ``model.json`` names that window;
the time is the network, the window blending and the logistic (``inference_s``), best
of ``--repeat`` after one warm-up call that compiles the networks. Held-out accuracy at
these windows: ``experiments/rerun/README.md``.

    python benchmarks/bench_windows.py [--case DIR] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(80, 0.5), (80, 0.25), (96, 0.25), (112, 0.25)]


def main() -> int:
    from braintumor.cases import load_case
    from braintumor.inference import MODELS_DIR, predict_probabilities
    from braintumor.phantom import make_case

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", default=None, help="a BraTS case folder (default: a shared "
                    "case when present, else the built-in full-size sample)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    shared = ROOT.parent / "shared" / "data" / "brats2018" / "Brats18_CBICA_AQN_1"
    if args.case or shared.is_dir():
        case = load_case(args.case or shared, with_label=False)
    else:
        case = make_case(seed=0)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for window, overlap in CONFIGS:
        folder = tmp / f"w{window}_{overlap}"
        shutil.copytree(MODELS_DIR / "brats3d", folder)
        meta = json.loads((folder / "model.json").read_text())
        meta["patch"] = [window] * 3
        (folder / "model.json").write_text(json.dumps(meta))
        predict_probabilities(case, folder, "cpu", overlap=overlap)  # compile, warm up
        best = min(predict_probabilities(case, folder, "cpu", overlap=overlap)[2]["inference_s"]
                   for _ in range(args.repeat))
        rows.append((window, overlap, best))
    shutil.rmtree(tmp, ignore_errors=True)
    ref = rows[0][2]
    print(f"case: {case.case_id}, shape {case.shape}")
    print(f"{'window':>8s}{'overlap':>9s}{'seconds':>9s}{'ratio':>8s}")
    for window, overlap, s in rows:
        tag = "  (shipped)" if (window, overlap) == CONFIGS[0] else ""
        print(f"{window:>7d}^3{overlap:>9.2f}{s:>9.2f}{s / ref:>8.2f}{tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
