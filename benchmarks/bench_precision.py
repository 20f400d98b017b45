"""What OpenVINO's bfloat16 changes against its 32-bit floats, for the shipped CNN on
every shared BraTS case: seconds per case (side by side in one process), the largest
probability change, the label voxels that change, and the Dice against the expert
outlines with each.

    python benchmarks/bench_precision.py [--data ../shared/data/brats2018]

The shipped model was trained on these cases, so its Dice here is not its accuracy (the
model card has the held-out numbers): the two columns only show whether the arithmetic
moves the outlines. Writes experiments/backends/precision.json. Needs a CPU that computes
bfloat16 natively (AVX-512 BF16 or AMX); elsewhere OpenVINO picks 32-bit floats anyway.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from braintumor.cases import discover, load_case
    from braintumor.errors import InputError
    from braintumor.inference import DEFAULT_MODEL, MODELS_DIR, load_model
    from braintumor.labels import REGIONS
    from braintumor.metrics import score_case

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats2018")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "backends")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder")
    folder = MODELS_DIR / DEFAULT_MODEL
    models = {}
    for prec in ("f32", "bf16"):
        try:  # OpenVINO named: not installed, or unable to compile here, is refused
            lm = load_model(folder, "cpu", "openvino")
            for net in lm.nets:
                net.precision = prec  # type: ignore[attr-defined]
                net.compile()  # type: ignore[attr-defined]  (outside the timing)
        except InputError as exc:
            raise SystemExit(f"bench_precision.py compares OpenVINO's precisions and needs "
                             f"OpenVINO: {exc}") from None
        models[prec] = lm
    from braintumor import inference

    rows = []
    for src in discover(args.data):
        case = load_case(src)
        row: dict[str, object] = {"case": src.case_id}
        res = {}
        for prec, lm in models.items():
            inference._CACHE[(str(None), "cpu", "auto")] = lm
            t = time.perf_counter()
            res[prec] = inference.segment_cnn(case, device="cpu")
            row[f"seconds_{prec}"] = time.perf_counter() - t
            sc = score_case(res[prec].labels, case.label, case.spacing, lesions=False)
            row[f"dice_{prec}"] = {r: sc[r]["dice"] for r in REGIONS}
        pa, pb = res["f32"].probabilities, res["bf16"].probabilities
        assert pa is not None and pb is not None
        row["max_probability_change"] = float(np.abs(pa - pb).max())
        row["label_voxels_changed"] = int((res["f32"].labels != res["bf16"].labels).sum())
        row["voxels"] = int(res["f32"].labels.size)
        rows.append(row)
        print(json.dumps(row), flush=True)
    inference._CACHE.clear()
    summary = {
        "cases": len(rows),
        "seconds_f32": float(np.mean([r["seconds_f32"] for r in rows])),
        "seconds_bf16": float(np.mean([r["seconds_bf16"] for r in rows])),
        "max_probability_change": max(float(r["max_probability_change"]) for r in rows),
        "label_voxels_changed": [min(int(r["label_voxels_changed"]) for r in rows),
                                 max(int(r["label_voxels_changed"]) for r in rows)],
    }
    for prec in ("f32", "bf16"):
        summary[f"mean_dice_{prec}"] = {
            r: float(np.mean([row[f"dice_{prec}"][r] for row in rows]))  # type: ignore[index]
            for r in REGIONS}
    summary["max_case_dice_change"] = max(
        abs(row["dice_f32"][r] - row["dice_bf16"][r])  # type: ignore[index]
        for row in rows for r in REGIONS)
    print(f"seconds per case: float32 {summary['seconds_f32']:.2f}, bfloat16 "
          f"{summary['seconds_bf16']:.2f} (ratio "
          f"{summary['seconds_bf16'] / summary['seconds_f32']:.2f})")
    print(f"largest probability change {summary['max_probability_change']:.4f}; label voxels "
          f"changed per case {summary['label_voxels_changed'][0]}-"
          f"{summary['label_voxels_changed'][1]} of {rows[0]['voxels']}")
    for prec in ("f32", "bf16"):
        d = summary[f"mean_dice_{prec}"]
        print(f"mean Dice {prec}: " + ", ".join(f"{r} {d[r]:.4f}" for r in REGIONS))
    print(f"largest change of one case's Dice: {summary['max_case_dice_change']:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(
        json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
