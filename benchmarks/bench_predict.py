"""CPU time and peak memory of `braintumor predict` on a full-size case, against MONAI's
SegResNet in the configuration of MONAI's BraTS bundle (blocks_down 1,2,2,4,
init_filters 16, sliding window roi 240x240x160), run in the same script on the same
input. Both run end to end in their own subprocess (read the four NIfTI files,
normalise, infer, write the label map) so each peak memory is its own.

    python benchmarks/bench_predict.py [--case DIR] [--threads N] [--repeat 2]

Without --case, a real shared BraTS case is used when present, else the built-in
full-size sample case. SegResNet's weights are random: only its time is compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from braintumor.cli import main
rc = main(["predict", sys.argv[1], "-o", sys.argv[2], "--device", "cpu"] + sys.argv[3:])
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rc": rc,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

MONAI = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np, nibabel as nib, torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet
from braintumor.cases import load_case
from braintumor.io import save_label_nifti
case = load_case(sys.argv[1], with_label=False)
img = case.image.copy()
# MONAI bundle: NormalizeIntensity(nonzero=True, channel_wise=True)
for c in range(4):
    m = img[c] != 0
    v = img[c][m]
    img[c][m] = (v - v.mean()) / (v.std() + 1e-8)
net = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16,
                in_channels=4, out_channels=3, dropout_prob=0.2).eval()
with torch.inference_mode():
    x = torch.from_numpy(img)[None]
    out = sliding_window_inference(x, roi_size=(240, 240, 160), sw_batch_size=1,
                                   predictor=net, overlap=0.5)
    prob = torch.sigmoid(out)[0].numpy() > 0.5
lab = np.zeros(case.shape, np.uint8)
lab[prob[0]] = 2; lab[prob[1]] = 1; lab[prob[2]] = 4
save_label_nifti(lab, sys.argv[2] + "/monai.nii.gz", case.header, case.affine)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rc": 0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, args: list[str], threads: int) -> dict[str, float]:
    import os

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=3600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=None)
    ap.add_argument("--threads", type=int, default=0, help="OMP threads (0: torch default)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is kept")
    ap.add_argument("--extra", nargs="*", default=[], help="extra predict flags, e.g. --tta")
    ap.add_argument("--default-only", action="store_true",
                    help="skip the runs with the other backends (ONNX Runtime, PyTorch)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    case = args.case
    if case is None:
        shared = ROOT.parent / "shared" / "data" / "brats2018" / "Brats18_CBICA_AQN_1"
        if shared.is_dir():
            case = str(shared)
        else:
            from braintumor.phantom import make_case, write_case

            case = str(write_case(make_case(seed=0), tmp / "in"))
    ours = min((_run(OURS, [case, str(tmp / "ours"), *args.extra], args.threads)
                for _ in range(args.repeat)), key=lambda r: r["seconds"])
    fast = min((_run(OURS, [case, str(tmp / "fast"), "--fast", *args.extra], args.threads)
                for _ in range(args.repeat)), key=lambda r: r["seconds"])
    # the default backend is the fastest installed one (OpenVINO, else ONNX Runtime)
    others = {}
    if not args.default_only:
        for backend in ("onnx", "torch"):
            others[backend] = min((_run(OURS, [case, str(tmp / backend), "--backend", backend,
                                               *args.extra], args.threads)
                                   for _ in range(args.repeat)), key=lambda r: r["seconds"])
    (tmp / "monai").mkdir()
    ref = min((_run(MONAI, [case, str(tmp / "monai")], args.threads)
               for _ in range(args.repeat)), key=lambda r: r["seconds"])
    print(f"case: {case}")
    print(f"{'':28s}{'seconds':>10s}{'peak MB':>10s}")
    print(f"{'braintumor predict':28s}{ours['seconds']:10.2f}{ours['peak_mb']:10.0f}")
    print(f"{'braintumor predict --fast':28s}{fast['seconds']:10.2f}{fast['peak_mb']:10.0f}")
    names = {"onnx": "  (ONNX Runtime backend)", "torch": "  (PyTorch backend)"}
    for backend, r in others.items():
        print(f"{names[backend]:28s}{r['seconds']:10.2f}{r['peak_mb']:10.0f}")
    print(f"{'MONAI SegResNet (bundle)':28s}{ref['seconds']:10.2f}{ref['peak_mb']:10.0f}")
    print(f"time ratio braintumor / MONAI: {ours['seconds'] / ref['seconds']:.3f}")
    print(f"time ratio braintumor --fast / MONAI: {fast['seconds'] / ref['seconds']:.3f}")
    print(f"memory ratio braintumor / MONAI: {ours['peak_mb'] / ref['peak_mb']:.3f}")
    for backend, r in others.items():
        print(f"backend ratio default / {names[backend].strip(' ()')}: "
              f"{ours['seconds'] / r['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
