"""CPU time per 256x256 slice of the 2D model, against a reference run in the same process.

The reference is MONAI's UNet as its tutorials configure it (channels 16-256, two residual
units) applied at the full 256x256 resolution; the measured paths are
``segment_image`` (one picture end to end: checks, resize, network, restore,
post-processing; a colour and a greyscale picture, since only the greyscale one gets the
watershed refinement in the shipped config), with the ONNX export the package runs
(OpenVINO or ONNX Runtime) and with PyTorch, ``segment_stack`` (a patient's slices
batched) and the refinement alone (``refine_masks`` growing a 60-pixel outline). Last, a
cold start: one picture in a fresh Python process (imports, loading the model, the
picture), with the export and with PyTorch.

    python benchmarks/bench_2d.py [--threads 1] [--repeats 20] [--model PATH]

Uses the shipped weights (or ``--model``, a candidate's exported weights) when present,
else an untrained network of the same shape (the time does not depend on the weights).
The model's own settings apply, the test-time flips it averages (``tta``) included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--model", default=None, help="exported 2D weights (default: shipped)")
    a = ap.parse_args()

    import os

    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # OpenVINO and ONNX Runtime read it
    import torch
    from monai.networks.nets import UNet

    from braintumor import slices2d as s2d
    from braintumor.inference import backend_name

    torch.set_num_threads(a.threads)
    weights = a.model or (str(s2d.MODEL_DIR / s2d.MODEL_FILE) if s2d.model_available()
                          else None)
    if weights:
        model = s2d.load_model_2d(weights)
        model_torch = s2d.load_model_2d(weights, onnx=False)
        source = a.model or "shipped weights"
    else:
        cfg = {"network": "unet2d", "network_kwargs": {"channels": [16, 32, 64, 128, 256]},
               "size": s2d.INPUT_SIZE}
        model = model_torch = s2d.Model2D(s2d.build_network(cfg).eval(), cfg)
        source = "untrained network (no shipped weights)"
    runtime = backend_name(model.network)

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    head = ((yy - 128) / 100.0) ** 2 + ((xx - 128) / 85.0) ** 2 < 1
    img = (head[..., None] * rng.integers(60, 200, (256, 256, 3))).astype(np.uint8)
    stack = [img] * 20

    ref = UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2).eval()
    x_ref = torch.randn(1, 3, 256, 256)

    def run_ref() -> None:
        with torch.inference_mode():
            torch.sigmoid(ref(x_ref))

    t_ref = _time(run_ref, a.repeats)
    t_one = _time(lambda: s2d.segment_image(img, model), a.repeats)
    t_one_torch = _time(lambda: s2d.segment_image(img, model_torch), a.repeats)
    grey = np.ascontiguousarray(img[..., 1])
    t_grey = _time(lambda: s2d.segment_image(grey, model), a.repeats)
    t_stack = _time(lambda: s2d.segment_stack(stack, model), max(2, a.repeats // 5)) / len(stack)
    disc = (yy - 120) ** 2 + (xx - 140) ** 2
    flair = np.where(disc < 34 ** 2, 200.0, 90.0) + rng.normal(0, 3, (256, 256))
    prob = np.clip(1.2 - np.sqrt(disc) / 30.0, 0, 1).astype(np.float32)
    outline = prob >= 0.2
    t_refine = _time(lambda: s2d.refine_masks(prob, flair, outline, (0.02, 2.0)), a.repeats)
    n_par = sum(p.numel() for p in model_torch.network.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    print(f"threads {a.threads}; model: {source}, {n_par / 1e6:.2f} M parameters, "
          f"input {model.size}x{model.size}, test-time flips averaged: "
          f"{s2d.describe_tta(model.config.get('tta'))}")
    print(f"reference  MONAI UNet 16-256 (2 res units, {n_ref / 1e6:.2f} M) at 256x256: "
          f"{t_ref * 1000:7.1f} ms/slice")
    print(f"segment_image (one 256x256 picture, end to end, {runtime}):  "
          f"{t_one * 1000:7.1f} ms/slice  ratio {t_one / t_ref:.2f}")
    print(f"segment_image (the same, PyTorch):                          "
          f"{t_one_torch * 1000:7.1f} ms/slice  ratio {t_one_torch / t_ref:.2f}")
    print(f"segment_image (the same picture, greyscale):                "
          f"{t_grey * 1000:7.1f} ms/slice  ratio {t_grey / t_ref:.2f}  "
          f"(refined: {describe(model, grey)})")
    print(f"segment_stack (20 slices of one patient, batched):          "
          f"{t_stack * 1000:7.1f} ms/slice  ratio {t_stack / t_ref:.2f}")
    print(f"refine_masks alone (a 60-pixel outline grown on 256x256):    "
          f"{t_refine * 1000:7.1f} ms/slice  ratio {t_refine / t_ref:.2f}")
    worst = max(t_one, t_grey)
    print(f"target <= 100 ms/slice: {'met' if worst <= 0.1 else 'NOT met'}")
    if weights:
        cold = {onnx: _cold_start(weights, onnx, a.threads) for onnx in (True, False)}
        print(f"cold start, one picture in a fresh process: {runtime} {cold[True]:.2f} s, "
              f"PyTorch {cold[False]:.2f} s, ratio {cold[True] / cold[False]:.2f}")


def _cold_start(weights: str, onnx: bool, threads: int) -> float:
    """Seconds for a fresh Python process to import, load ``weights`` and segment one
    picture (best of three)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from braintumor import slices2d as s2d\n"
            f"m = s2d.load_model_2d({weights!r}, onnx={onnx})\n"
            "img = np.zeros((256, 256, 3), np.uint8); img[40:216, 50:206] = 120\n"
            "s2d.segment_image(img, m)\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        best = min(best, time.perf_counter() - t)
    return best


def describe(model, image: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    """The refinement the model's config gives this picture."""
    from braintumor.slices2d import refine_setting

    key = "refine_grey" if image.ndim == 2 else "refine_colour"
    return str(refine_setting(model.config.get(key)))


if __name__ == "__main__":
    main()
