"""Cross-validate fold models and assemble the shipped model.

``python -m braintumor.training.package --runs runs/compact_cv --data DIR --out DIR``

For each fold run (``fold0``, ``fold1``, ...): predicts its held-out cases in native
space, saves their region probabilities (``cache/cv_probs/<case>.npz``, float16, used by
the hybrid study), chooses the postprocessing on those held-out predictions (as nnU-Net
does), scores every held-out case with :func:`braintumor.metrics.score_case`, writes the
per-case table and the summary, and packs the fold models (fp16 weights + ONNX) with a
``model.json`` into the model folder: the shipped model is the ensemble of the fold
models, each of which was validated on cases it did not train on.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from braintumor.cases import discover, load_case
from braintumor.inference import PostProcess, export_onnx, load_checkpoint_net, sliding_window_probs
from braintumor.metrics import score_case
from braintumor.preprocess import uncrop
from braintumor.training.data import prepare_case

REGIONS = ("WT", "TC", "ET")


def heldout_probabilities(run_dirs: list[Path], data: str | Path, probs_dir: Path,
                          checkpoint: str = "last.pt", overlap: float = 0.5,
                          whole_volume_max: int = 0) -> dict[str, dict[str, Any]]:
    """Predict each fold's validation cases; returns case_id -> {fold, seconds}."""
    sources = {s.case_id: s for s in discover(data)}
    probs_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, dict[str, Any]] = {}
    for k, run in enumerate(run_dirs):
        meta = yaml.safe_load((run / "config.yaml").read_text())
        net, cfg = load_checkpoint_net(run / checkpoint, "cpu")
        for cid in meta["split"]["val"]:
            dst = probs_dir / f"{cid}.npz"
            case = load_case(sources[cid], with_label=False)
            t0 = time.perf_counter()
            if not dst.exists():
                prep = prepare_case(case)
                p = sliding_window_probs(net, prep.image, tuple(cfg.patch), overlap, "cpu",
                                         cfg.output, whole_volume_max=whole_volume_max)
                full = uncrop(p, prep.box, case.shape, fill=0.0)
                np.savez_compressed(dst, probs=full.astype(np.float16), fold=k)
            info[cid] = {"fold": k, "seconds": time.perf_counter() - t0}
            print(f"fold {k}: {cid} ({info[cid]['seconds']:.1f} s)", flush=True)
    return info


def choose_postprocess(probs_dir: Path, refs: dict[str, np.ndarray],
                       spacing: dict[str, tuple[float, float, float]]) -> tuple[PostProcess,
                                                                                 list[dict]]:
    """Grid over ET relabelling and small-component thresholds; best mean Dice wins."""
    from braintumor.labels import region_masks
    from braintumor.metrics import dice

    probs = {c: np.load(probs_dir / f"{c}.npz")["probs"].astype(np.float32) for c in refs}
    trials = []
    for et_min in (0, 50, 100, 200, 400):
        for wt_min in (0, 200, 1000):
            pp = PostProcess(et_min_voxels=et_min, wt_min_voxels=wt_min)
            d = []
            for c, ref in refs.items():
                pm, rm = region_masks(pp.apply(probs[c])), region_masks(ref)
                d.append(np.mean([dice(pm[r], rm[r]) for r in REGIONS]))
            trials.append({"et_min_voxels": et_min, "wt_min_voxels": wt_min,
                           "mean_dice": float(np.mean(d))})
    best = max(trials, key=lambda t: (round(t["mean_dice"], 4), -t["et_min_voxels"],
                                      -t["wt_min_voxels"]))
    return PostProcess(et_min_voxels=int(best["et_min_voxels"]),
                       wt_min_voxels=int(best["wt_min_voxels"])), trials


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", default="runs/compact_cv")
    ap.add_argument("--data", default="../shared/data/brats2018")
    ap.add_argument("--probs", default="cache/cv_probs")
    ap.add_argument("--report", default="experiments/shipped_cv")
    ap.add_argument("--out", default="src/braintumor/models/brats3d")
    ap.add_argument("--version", default="brats3d-1.0")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--checkpoint", default="last.pt",
                    help="which checkpoint of each fold (last.pt: the end of the annealed "
                         "schedule; best.pt: best whole-volume validation)")
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args(argv)

    runs = sorted(Path(args.runs).glob("fold[0-9]*"))
    probs_dir, report = Path(args.probs), Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    info = heldout_probabilities(runs, args.data, probs_dir, args.checkpoint, args.overlap)
    sources = {s.case_id: s for s in discover(args.data)}
    refs, spacing = {}, {}
    for cid in info:
        c = load_case(sources[cid])
        assert c.label is not None
        refs[cid], spacing[cid] = c.label, c.spacing
    post, trials = choose_postprocess(probs_dir, refs, spacing)
    rows = []
    for cid, ref in refs.items():
        probs = np.load(probs_dir / f"{cid}.npz")["probs"].astype(np.float32)
        sc = score_case(post.apply(probs), ref, spacing[cid])
        for r in REGIONS:
            rows.append({"case": cid, "fold": info[cid]["fold"], "region": r,
                         **{k: sc[r][k] for k in ("dice", "sensitivity", "specificity",
                                                  "hd95")}})
    with open(report / "heldout_metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, Any] = {"postprocess": post.__dict__ | {"threshold": list(post.threshold)},
                               "postprocess_trials": trials, "regions": {}}
    for r in REGIONS:
        rr = [x for x in rows if x["region"] == r]
        summary["regions"][r] = {k: {"mean": float(np.mean([x[k] for x in rr])),
                                     "std": float(np.std([x[k] for x in rr])),
                                     "median": float(np.median([x[k] for x in rr]))}
                                 for k in ("dice", "sensitivity", "specificity", "hd95")}
    (report / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| region | Dice | sensitivity | specificity | HD95 (mm) |", "|---|---|---|---|---|"]
    for r in REGIONS:
        s = summary["regions"][r]
        lines.append(f"| {r} | {s['dice']['mean']:.3f} ± {s['dice']['std']:.3f} | "
                     f"{s['sensitivity']['mean']:.3f} | {s['specificity']['mean']:.4f} | "
                     f"{s['hd95']['mean']:.1f} |")
    per_case = ["", "| case | fold | WT | TC | ET |", "|---|---|---|---|---|"]
    for cid in sorted(refs):
        d = {x["region"]: x["dice"] for x in rows if x["case"] == cid}
        per_case.append(f"| {cid} | {info[cid]['fold']} | {d['WT']:.3f} | {d['TC']:.3f} | "
                        f"{d['ET']:.3f} |")
    (report / "table.md").write_text("\n".join(lines + per_case) + "\n")
    print("\n".join(lines + per_case))

    # pack the shipped model
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cks, onnx = [], []
    for k, run in enumerate(runs):
        ck = torch.load(run / args.checkpoint, map_location="cpu", weights_only=False)
        slim = {"model": {n: t.half() if t.is_floating_point() else t
                          for n, t in ck["model"].items()},
                "config": ck["config"], "version": ck["version"], "epoch": ck["epoch"],
                "best_val_dice": ck["best"], "checkpoint": args.checkpoint}
        torch.save(slim, out / f"fold{k}.pt")
        cks.append(f"fold{k}.pt")
        if not args.no_onnx:
            export_onnx(out / f"fold{k}.pt", out / f"fold{k}.onnx")
            onnx.append(f"fold{k}.onnx")
    cfg = yaml.safe_load((runs[0] / "config.yaml").read_text())["train"]
    meta = {"version": args.version, "architecture": cfg["network"],
            "network_args": cfg["network_args"], "checkpoints": cks, "onnx": onnx,
            "patch": cfg["patch"], "whole_volume_max": 0, "overlap": args.overlap,
            "postprocess": summary["postprocess"],
            "cv": {r: {k: round(v["mean"], 4) for k, v in summary["regions"][r].items()}
                   for r in REGIONS},
            "training": {"folds": len(runs), "recipe": "configs/compact_cv.yaml"}}
    (out / "model.json").write_text(json.dumps(meta, indent=1))
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
