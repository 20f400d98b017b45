"""Seconds per sliding window of the shipped CNN with each installed CPU backend
(OpenVINO in the precision it picks, bfloat16 where the CPU has it, and in 32-bit
floats; ONNX Runtime; PyTorch), side by side in one process on the same windows, and
how far their outputs are from ONNX Runtime's.

    python benchmarks/bench_backends.py [--repeat 5] [--batch 2]

The windows are cut from a real shared BraTS case when present (its brain crop,
normalised as for prediction), else from the built-in sample case. End-to-end times of
`braintumor predict` with each backend are in benchmarks/bench_predict.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _windows(batch: int) -> np.ndarray:
    from braintumor.cases import discover, load_case
    from braintumor.training.data import prepare_case

    shared = ROOT.parent / "shared" / "data" / "brats2018"
    if shared.is_dir():
        case = load_case(next(s for s in discover(shared)
                              if s.case_id == "Brats18_CBICA_AQN_1"), with_label=False)
    else:
        from braintumor.phantom import make_case

        case = make_case(seed=0)
    img = prepare_case(case).image
    c = [max(0, s // 2 - 40) for s in img.shape[1:]]
    w = img[:, c[0]:c[0] + 80, c[1]:c[1] + 80, c[2]:c[2] + 80]
    # neighbouring windows, as the sliding window sends them
    return np.stack([np.roll(w, 10 * i, axis=1) for i in range(batch)]).astype(np.float32)


def main() -> int:
    from braintumor.errors import InputError
    from braintumor.inference import DEFAULT_MODEL, MODELS_DIR, load_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5, help="timed calls of each (best kept)")
    ap.add_argument("--batch", type=int, default=2, help="windows a call (the CPU default)")
    args = ap.parse_args()
    x = _windows(args.batch)
    folder = MODELS_DIR / DEFAULT_MODEL
    results: dict[str, tuple[float, np.ndarray]] = {}
    for backend in ("openvino", "openvino-f32", "onnx", "torch"):
        # a runtime named that is not installed, or cannot compile the model on this
        # machine, is refused (not swapped for another) and left out of the table
        try:
            lm = load_model(folder, "cpu", backend.split("-")[0])
            net = lm.nets[0]
            if backend == "openvino-f32":
                net.precision = "f32"  # type: ignore[attr-defined]
            if backend == "torch":
                import torch

                def run(a: np.ndarray, net: object = net) -> np.ndarray:
                    with torch.inference_mode():
                        return net(torch.from_numpy(a)).numpy()  # type: ignore[operator, no-any-return]
            else:
                run = net.run
            out = run(x)  # warm-up (and the session's start)
        except InputError as exc:
            print(f"{backend}: unavailable ({exc})")
            continue
        best = min(_timed(run, x) for _ in range(args.repeat))
        name = f"openvino {net.precision}" if backend == "openvino" else backend  # type: ignore[attr-defined]
        results[name] = (best / len(x), np.asarray(out, dtype=np.float32))
    print(f"{'backend':16s}{'s / window':>12s}{'x ONNX Runtime':>16s}{'max |logit diff|':>18s}")
    ref = results.get("onnx")
    for backend, (sec, out) in results.items():
        ratio = sec / ref[0] if ref else float("nan")
        diff = float(np.abs(out - ref[1]).max()) if ref else float("nan")
        print(f"{backend:16s}{sec:12.3f}{ratio:16.2f}{diff:18.2e}")
    return 0


def _timed(run: object, x: np.ndarray) -> float:
    t = time.perf_counter()
    run(x)  # type: ignore[operator]
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
