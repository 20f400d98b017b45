"""Cross-validate fold models and assemble the shipped model.

``python -m braintumor.training.package --runs runs/compact_cv --data DIR --out DIR``

For each fold run (``fold0``, ``fold1``, ...): predicts its held-out cases in native
space, saves their region probabilities (``cache/cv_probs/<case>.npz``, float16, used by
the hybrid study), chooses the postprocessing on those held-out predictions (as nnU-Net
does), scores every held-out case with :func:`braintumor.metrics.score_case`, writes the
per-case table and the summary, and packs the fold models (fp16 weights + ONNX) with a
``model.json`` into the model folder: the shipped model is the ensemble of the fold
models, each of which was validated on cases it did not train on, or, with
``--members``, of models trained the same way on all the cases (``--fold -1``), whose
accuracy the fold models' cross-validation then estimates.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from braintumor.cases import discover, load_case
from braintumor.errors import BrainTumorError, InputError, guarded
from braintumor.inference import (
    ONNX_TOLERANCE,
    PostProcess,
    export_onnx,
    load_checkpoint_net,
    sliding_window_probs,
)
from braintumor.metrics import score_case
from braintumor.preprocess import uncrop
from braintumor.training.data import prepare_case

REGIONS = ("WT", "TC", "ET")


def fold_run_dirs(root: str | Path) -> list[Path]:
    """The fold runs of a run folder (``fold0``, ``fold1``, ..., each with its
    ``config.yaml``), in order; one sentence when there are none."""
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: no such run folder (--runs names a folder of fold runs "
                         "fold0, fold1, ...).")
    folds = sorted((p for p in r.glob("fold[0-9]*") if (p / "config.yaml").is_file()),
                   key=lambda p: (len(p.name), p.name))
    if not folds:
        raise InputError(f"{r}: holds no fold runs (fold0, fold1, ... with their "
                         "config.yaml); --runs names the folder that does.")
    return folds


def heldout_probabilities(run_dirs: list[Path], data: str | Path, probs_dir: Path,
                          checkpoint: str = "last.pt", overlap: float = 0.5,
                          whole_volume_max: int = 0, mirror: bool = False,
                          window: int = 0) -> dict[str, dict[str, Any]]:
    """Predict each fold's validation cases (``mirror``: averaged over the 8 axis flips;
    ``window``: the sliding window's edge, 0 for the training patch); returns
    case_id -> {fold, seconds}."""
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
                patch = (window,) * 3 if window else tuple(cfg.patch)
                p = sliding_window_probs(net, prep.image, patch, overlap, "cpu",
                                         cfg.output, mirror=mirror,
                                         whole_volume_max=whole_volume_max)
                full = uncrop(p, prep.box, case.shape, fill=0.0)
                np.savez_compressed(dst, probs=full.astype(np.float16), fold=k)
            info[cid] = {"fold": k, "seconds": time.perf_counter() - t0}
            print(f"fold {k}: {cid} ({info[cid]['seconds']:.1f} s)", flush=True)
    return info


def average_probabilities(dirs: list[Path], out: Path,
                          info: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case, the mean of the held-out probabilities in ``dirs`` (one folder per
    recipe, each case predicted by a model that did not train on it), written to ``out``
    with the fold of ``info`` (the last recipe's split)."""
    out.mkdir(parents=True, exist_ok=True)
    for cid, meta in info.items():
        acc = None
        for d in dirs:
            p = np.load(d / f"{cid}.npz")["probs"].astype(np.float32)
            acc = p if acc is None else acc + p
        assert acc is not None
        np.savez_compressed(out / f"{cid}.npz", probs=(acc / len(dirs)).astype(np.float16),
                            fold=meta["fold"])
    return info


def choose_postprocess(probs_dir: Path, refs: dict[str, np.ndarray],
                       spacing: dict[str, tuple[float, float, float]]) -> tuple[PostProcess,
                                                                                 list[dict]]:
    """Grid over ET relabelling and small-component thresholds; best mean Dice wins."""
    from braintumor.labels import region_masks
    from braintumor.metrics import dice

    probs = {c: np.load(probs_dir / f"{c}.npz")["probs"].astype(np.float32) for c in refs}
    trials = []
    for et_min in (0, 100, 400):
        for wt_min in (0, 1000, 4000):
            for frac in (0.0, 0.1, 0.3):
                pp = PostProcess(et_min_voxels=et_min, wt_min_voxels=wt_min,
                                 wt_keep_fraction=frac)
                d = []
                for c, ref in refs.items():
                    pm, rm = region_masks(pp.apply(probs[c])), region_masks(ref)
                    d.append(np.mean([dice(pm[r], rm[r]) for r in REGIONS]))
                trials.append({"et_min_voxels": et_min, "wt_min_voxels": wt_min,
                               "wt_keep_fraction": frac, "mean_dice": float(np.mean(d))})
    best = max(trials, key=lambda t: (round(t["mean_dice"], 4), -t["et_min_voxels"],
                                      -t["wt_min_voxels"], -t["wt_keep_fraction"]))
    return PostProcess(et_min_voxels=int(best["et_min_voxels"]),
                       wt_min_voxels=int(best["wt_min_voxels"]),
                       wt_keep_fraction=float(best["wt_keep_fraction"])), trials


def _export_member(pt: Path) -> str:
    """Export a packed member to ONNX beside it, checked against PyTorch as the
    ``export-onnx`` command checks it (the folder users download runs it in ONNX Runtime
    and OpenVINO); the name of the file written. An export that disagrees is not
    written, and the packing stops rather than list a file the folder does not hold."""
    done = export_onnx(pt, pt.with_suffix(".onnx"))
    if not done.written:
        raise BrainTumorError(
            f"{pt}: its ONNX export's probabilities differ from PyTorch's by up to "
            f"{done.diff:.2g} on a random 64^3 input (more than {ONNX_TOLERANCE:g}), so "
            "it was not written; package with --no-onnx to ship the model without ONNX "
            "files.")
    return done.path.name


@guarded
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m braintumor.training.package",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/compact_cv",
                    help="fold-run folder(s) (fold0, fold1, ...), comma-separated when the "
                         "shipped ensemble takes one member per recipe: each case is then "
                         "scored with the average of one held-out model per recipe")
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
    ap.add_argument("--window", type=int, default=0,
                    help="edge of the sliding window in voxels (0: the training patch); "
                         "with --score-only, to measure other windows than the shipped one")
    ap.add_argument("--fast-overlap", type=float, default=0.25,
                    help="window overlap of the fast mode (one fold model), whose held-out "
                         "accuracy is measured too (0: no fast mode)")
    ap.add_argument("--fast-probs", default="cache/cv_probs_fast")
    ap.add_argument("--root-probs", default="",
                    help="with several --runs: their held-out probability folders, "
                         "comma-separated (default <probs>/root<i>); existing files are reused")
    ap.add_argument("--fast-member", type=int, default=0,
                    help="the member the fast mode runs")
    ap.add_argument("--fast-root", type=int, default=-1,
                    help="which --runs entry's fold models estimate the fast member")
    ap.add_argument("--recipe", default="configs/compact_cv.yaml",
                    help="the training configuration(s) the fold runs came from, in order")
    ap.add_argument("--members", default="",
                    help="comma-separated run folders whose checkpoints are shipped instead of "
                         "the fold runs' (e.g. models trained on all cases, fold -1, or one "
                         "model per recipe); required with several --runs")
    ap.add_argument("--timing", default="",
                    help="JSON of measured speeds for the model card (default: timing.json "
                         "in the report folder)")
    ap.add_argument("--card-note", default="",
                    help="a sentence for the model card's training section")
    ap.add_argument("--card-copy", default="MODEL_CARD.md",
                    help="also copy the model card here ('' for no copy)")
    ap.add_argument("--score-only", action="store_true",
                    help="cross-validate only: write the held-out table and summary to "
                         "--report and pack nothing (for recipes that are not shipped)")
    ap.add_argument("--card-only", action="store_true",
                    help="only rewrite the model card from the packaged model.json, the "
                         "report's summary.json and the timing (no training or scoring)")
    args = ap.parse_args(argv)
    if args.card_only:
        return rewrite_card(Path(args.out), Path(args.report),
                            Path(args.timing) if args.timing else None, args.card_copy)

    roots = [Path(r) for r in args.runs.split(",") if r]
    if not roots:
        raise InputError("--runs names no run folder.")
    fold_runs = [fold_run_dirs(r) for r in roots]
    runs = fold_runs[-1]
    probs_dir, report = Path(args.probs), Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    if len(roots) == 1:
        info = heldout_probabilities(runs, args.data, probs_dir, args.checkpoint, args.overlap,
                                     window=args.window)
    else:
        if not args.members and not args.score_only:
            ap.error("several --runs need --members (one shipped model per recipe)")
        rdirs = ([Path(d) for d in args.root_probs.split(",")] if args.root_probs
                 else [probs_dir / f"root{i}" for i in range(len(roots))])
        infos = [heldout_probabilities(fr, args.data, d, args.checkpoint, args.overlap,
                                       window=args.window)
                 for fr, d in zip(fold_runs, rdirs, strict=True)]
        info = average_probabilities(rdirs, probs_dir, infos[-1])
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
    if args.fast_overlap > 0:
        # fast mode = one fold model at a lower overlap: each case by its held-out model
        heldout_probabilities(fold_runs[args.fast_root], args.data, Path(args.fast_probs),
                              args.checkpoint, args.fast_overlap)
        frows = []
        for cid, ref in refs.items():
            probs = np.load(Path(args.fast_probs) / f"{cid}.npz")["probs"].astype(np.float32)
            sc = score_case(post.apply(probs), ref, spacing[cid])
            frows += [{"region": r, **sc[r]} for r in REGIONS]
        summary["fast"] = {"overlap": args.fast_overlap, "regions": {
            r: {k: {"mean": float(np.mean([x[k] for x in frows if x["region"] == r]))}
                for k in ("dice", "sensitivity", "specificity", "hd95")} for r in REGIONS}}
    (report / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| region | Dice | sensitivity | specificity | HD95 (mm) |", "|---|---|---|---|---|"]
    for r in REGIONS:
        s = summary["regions"][r]
        lines.append(f"| {r} | {s['dice']['mean']:.3f} ± {s['dice']['std']:.3f} | "
                     f"{s['sensitivity']['mean']:.3f} | {s['specificity']['mean']:.4f} | "
                     f"{s['hd95']['mean']:.1f} |")
    if "fast" in summary:
        lines += ["", f"Fast mode (one model, overlap {args.fast_overlap}):", "",
                  lines[0], lines[1]]
        for r in REGIONS:
            s = summary["fast"]["regions"][r]
            lines.append(f"| {r} | {s['dice']['mean']:.3f} | {s['sensitivity']['mean']:.3f} "
                         f"| {s['specificity']['mean']:.4f} | {s['hd95']['mean']:.1f} |")
    per_case = ["", "| case | fold | WT | TC | ET |", "|---|---|---|---|---|"]
    for cid in sorted(refs):
        d = {x["region"]: x["dice"] for x in rows if x["case"] == cid}
        per_case.append(f"| {cid} | {info[cid]['fold']} | {d['WT']:.3f} | {d['TC']:.3f} | "
                        f"{d['ET']:.3f} |")
    (report / "table.md").write_text("\n".join(lines + per_case) + "\n")
    print("\n".join(lines + per_case))
    if args.score_only:
        return 0

    # pack the shipped model
    import shutil

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cks, onnx = [], []
    members = [Path(m) for m in args.members.split(",") if m] or runs
    # every member is packed and exported beside the folder first, and moved in only
    # when all are: an export refused part way leaves the earlier model as it was, not
    # new weights beside the earlier model's ONNX files
    staging = out / f".packing-{os.getpid()}"
    staging.mkdir()
    try:
        for k, run in enumerate(members):
            ck = torch.load(run / args.checkpoint, map_location="cpu", weights_only=False)
            slim = {"model": {n: t.half() if t.is_floating_point() else t
                              for n, t in ck["model"].items()},
                    "config": ck["config"], "version": ck.get("version"),
                    "epoch": ck["epoch"], "best_val_dice": _best_score(ck),
                    "checkpoint": args.checkpoint}
            stem = f"fold{k}" if members is runs else f"member{k}"
            torch.save(slim, staging / f"{stem}.pt")
            cks.append(f"{stem}.pt")
            if not args.no_onnx:
                onnx.append(_export_member(staging / f"{stem}.pt"))
        for name in cks + onnx:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in list(out.glob("*.pt")) + list(out.glob("*.onnx")):
        if old.name not in cks + onnx:
            old.unlink()  # a model folder holds only the members of this model
    member_info = []
    for m in members:
        mm = yaml.safe_load((m / "config.yaml").read_text())
        member_info.append({"run": str(m), "recipe": mm["train"]["name"],
                            "fold": mm["train"]["fold"],
                            "train_cases": len(mm.get("split", {}).get("train", [])),
                            "device": mm.get("device", "cpu")})
    recipes = args.recipe.split(",")
    run_meta = yaml.safe_load((runs[0] / "config.yaml").read_text())
    cfg = run_meta["train"]
    root_cfgs = []
    for fr in fold_runs:
        rm = yaml.safe_load((fr[0] / "config.yaml").read_text())
        root_cfgs.append({"config": rm["train"], "device": rm.get("device", "cpu"),
                          "folds": len(fr)})
    meta = {"version": args.version, "architecture": cfg["network"],
            "network_args": cfg["network_args"], "checkpoints": cks, "onnx": onnx,
            "patch": [args.window] * 3 if args.window else cfg["patch"],
            "output": cfg.get("output", "sigmoid"),
            "whole_volume_max": 0, "overlap": args.overlap,
            "postprocess": summary["postprocess"],
            "cv": {r: {k: round(v["mean"], 4) for k, v in summary["regions"][r].items()}
                   for r in REGIONS},
            "training": {"folds": len(runs), "recipe": recipes,
                         "members": "fold models" if members is runs else "listed",
                         "member_runs": member_info, "recipes": root_cfgs,
                         "note": args.card_note}}
    if "fast" in summary:
        meta["fast"] = {"members": [args.fast_member], "overlap": args.fast_overlap,
                        "cv": {r: {k: round(v["mean"], 4)
                                   for k, v in summary["fast"]["regions"][r].items()}
                               for r in REGIONS}}
    (out / "model.json").write_text(json.dumps(meta, indent=1))
    print(f"model written to {out}")
    # the card is written from the files just saved, as --card-only does
    return rewrite_card(out, report, Path(args.timing) if args.timing else None,
                        args.card_copy)



def _best_score(ck: dict[str, Any]) -> float | None:
    """A checkpoint's best validation Dice; None for a run without validation (fold -1),
    whose checkpoint keeps -1 as its starting value."""
    best = ck.get("best")
    return float(best) if best is not None and best >= 0 else None


def rewrite_card(out: Path, report: Path, timing_path: Path | None = None,
                 card_copy: str = "") -> int:
    """Rewrite ``out/MODEL_CARD.md`` (and ``card_copy``) from what packaging left:
    ``out/model.json``, ``report/summary.json`` and the timing JSON (default
    ``report/timing.json``). For new speed measurements without repackaging."""
    from braintumor.errors import InputError
    from braintumor.networks import count_parameters

    meta_path, summary_path = out / "model.json", report / "summary.json"
    for p in (meta_path, summary_path):
        if not p.exists():
            raise InputError(f"{p} is missing: package the model first.")
    meta = json.loads(meta_path.read_text())
    summary = json.loads(summary_path.read_text())
    tpath = timing_path or report / "timing.json"
    timing = json.loads(tpath.read_text()) if tpath.exists() else None
    net0, _ = load_checkpoint_net(out / meta["checkpoints"][0], "cpu")
    card = write_model_card(meta, summary, out, count_parameters(net0), timing)
    if card_copy:
        Path(card_copy).write_text(card.read_text())
    print(f"model card written: {card}")
    return 0


CARD_STATIC = """
## Intended use

Research and education: outlining glioma sub-regions (necrotic / non-enhancing core,
edema, enhancing tumour) on skull-stripped, co-registered BraTS-style MRI (T1, T1ce, T2,
FLAIR, 1 mm). **Not a medical device; not for diagnosis or treatment decisions.**

## Known failure modes

- Trained on 14 cases only (11 high-grade, 3 low-grade, BraTS 2018 training set): expect
  errors on scanners, protocols and tumour types it has not seen.
- Enhancing tumour drawn where the T1ce does not enhance: in the low-grade case
  Brats18_TCIA13_623_1 the expert outline has 4,674 ET voxels (4.7 mL) that are no
  brighter than normal brain on the case's own T1ce (median z -0.63; 0 % pass the
  watershed's enhancement thresholds), and every method misses them (ET Dice 0;
  `experiments/watershed/native_et/reference_et.md`). Relabelling a small total ET volume
  as necrosis was part of the postprocessing search and did not help on these folds (see
  `experiments/shipped_cv/summary.json`).
- Images that are not skull-stripped, not co-registered, or not in 1 mm isotropic
  resolution are outside what it has seen. A scan with more than 2.3 L of non-zero voxels
  (a whole head, a noisy background) is flagged as not skull-stripped, in one warning
  sentence, and still segmented. Other voxel sizes are segmented on a 1 mm
  resampling and the labels written back on their own grid; coarse scans stay less
  accurate (3 mm slices: WT 0.828, TC 0.726, ET 0.583 held out, against 0.840 / 0.712 /
  0.580 at 1 mm and 0.752 / 0.621 / 0.483 without the resampling; `experiments/resolution/`).
- All four modalities are needed: with a missing one filled in from its neighbour the
  model fails (held out, T1 from T1ce: WT 0.768, TC 0.548, ET 0.385; T2 from FLAIR:
  0.680 / 0.559 / 0.549; `experiments/missing/`), so a scan without its T1 or T2 is
  given to the watershed tuned for it instead, with a warning, and never to this model.
- A patient who moved between series leaves the images off one another, and the model
  reads them voxel by voxel: T1ce, T2 and FLAIR moved by 3 to 8 mm bring it to WT 0.640,
  TC 0.536, ET 0.332 held out. `predict --align` (the page's "align the series first")
  registers them to the T1 first and brings it back to 0.832 / 0.727 / 0.591
  (`experiments/motion/`); it is not on by default (about 14 s a case on a CPU).
- Bright FLAIR artefacts (e.g. posterior fossa on some scanners) can become false edema.
- The cross-validated numbers above come from one training run per fold. Trained again
  (the GPU recipe on its original 7 folds; the CPU recipe on 7 folds of 12 training
  cases, where its first run used 3 folds of 9), the recipes scored WT 0.810, TC 0.716,
  ET 0.605 for this model's pair and 0.863 / 0.768 / 0.635 for `--method hybrid`
  (`experiments/rerun/`): on 14 cases, training alone moves a mean Dice by 0.01 to 0.05.

## With the watershed (`--method hybrid`)

`--method hybrid` runs this model, refines its output with a watershed on the image
gradient, combines it with the classical watershed (adopting watershed core lesions the
model supports but outlines too small), and takes the whole tumour from gradient-boosted
trees (`models/stacking/wt_trees.npz`, 156 KB, trained on the held-out maps of this
model's cross-validation). Held out on the same 14 cases: Dice WT 0.884, TC 0.815,
ET 0.653 (`experiments/hybrid/hybrid_cv.md`, `experiments/stacking/stack_cv.md`), for
about 3 s more per case on this CPU. The trees inherit this model's training data and
its failure modes. The hybrid also reports how far this model and the classical
watershed agree per region; held out, that agreement ranked the hybrid's Dice with
Spearman 0.65 (WT), 0.75 (TC) and 0.88 (ET), and a region under 0.5 is flagged for a
check (README, "How far to trust a hybrid outline").
"""


def _recipe_text(cfg: dict[str, Any] | None, device: str) -> str:
    """One sentence on a training config (from the run's saved config)."""
    if not cfg:
        return "see the configuration file."
    aug = cfg.get("augment", {})
    kinds = [k for k in ("flips", "rotate", "scale", "elastic", "intensity", "noise")
             if aug.get(k)]
    where = "an NVIDIA GPU, several runs sharing it" if device == "cuda" else "one CPU thread"
    loss = {"dice_bce": "Dice + BCE", "dice_ce": "Dice + cross-entropy",
            "dice_sq": "squared Dice"}.get(cfg.get("loss", ""), cfg.get("loss", ""))
    return (f"{loss} on region channels, {cfg.get('optimizer', 'adamw')} (lr {cfg['lr']}, "
            f"weight decay {cfg['weight_decay']}), {cfg['schedule']} schedule annealed over a "
            f"fixed wall-clock budget of {cfg['time_budget_min']:g} min per run on {where}, "
            f"{cfg['patch'][0]}^3 patches ({cfg['fg_fraction']:.0%} centred on tumour), "
            f"batch {cfg['batch_size']}, augmentation: {', '.join(kinds) or 'none'}; the "
            "weights at the end of the schedule are kept (none chosen on validation).")


def write_model_card(meta: dict[str, Any], summary: dict[str, Any], out: Path,
                     n_params: int, timing: dict[str, Any] | None = None) -> Path:
    """Write ``MODEL_CARD.md`` from the measured numbers (and the 2D model's section)."""
    regions = summary["regions"]
    tr = meta["training"]
    recipes = tr["recipe"]
    if isinstance(recipes, str):
        recipes = [recipes]
    rcfgs = tr.get("recipes") or [{"config": tr.get("config"), "device": tr.get("device", "cpu"),
                                   "folds": int(tr.get("folds", 3))}]
    mruns = tr.get("member_runs") or []
    n = len(meta["checkpoints"])
    if mruns and tr.get("members") != "fold models":
        shipped = (f"Shipped as an ensemble of {n} models (float16 weights, plus ONNX exports "
                   "run by OpenVINO or ONNX Runtime) whose three sigmoid region channels "
                   "(WT, TC, ET) are averaged:")
        for i, m in enumerate(mruns):
            trained = (f"all {m['train_cases']} cases" if int(m["fold"]) < 0
                       else f"{m['train_cases']} cases (fold {m['fold']})")
            shipped += (f" member {i}, recipe `{m['recipe']}`, trained on {trained} "
                        f"({'GPU' if m['device'] == 'cuda' else 'CPU'})"
                        + (";" if i < len(mruns) - 1 else "."))
    else:
        shipped = (f"Shipped as an ensemble of {n} fold models (float16 weights, plus ONNX "
                   "exports run by OpenVINO or ONNX Runtime); outputs three sigmoid region "
                   "channels (WT, TC, ET) averaged over the folds.")
    lines = [
        f"# Model card: `{meta['version']}` (3D BraTS model)",
        "",
        "## Model",
        "",
        f"- Architecture: `{meta['architecture']}` {meta['network_args']} "
        f"(`braintumor.networks.compact`): a residual U-Net working at half resolution "
        "from its first layer, with a thin full-resolution refinement head; "
        f"{n_params / 1e6:.2f} M parameters per model.",
        f"- {shipped}",
        f"- Inference: brain crop, per-modality z-score over brain voxels, sliding window "
        f"{tuple(meta['patch'])} with overlap {meta['overlap']} and Gaussian weighting; "
        f"postprocessing {meta['postprocess']} (chosen on the held-out predictions).",
        "",
        "## Training data and recipe",
        "",
        "- Data: the 14 shared BraTS 2018 training cases (Menze et al. 2015; Bakas et al. "
        "2017, 2018), patient-wise folds (seeded; the split is in each run's config.yaml).",
    ]
    for r, rc in zip(recipes, rcfgs, strict=False):
        lines.append(f"- Recipe `{r}` ({rc['folds']} folds): "
                     + _recipe_text(rc.get("config"), rc.get("device", "cpu")))
    # a member's recipe by its config's name (the file may be named otherwise)
    recipe_of = {str((rc.get("config") or {}).get("name")): str(r)
                 for r, rc in zip(recipes, rcfgs, strict=False)}
    lines.append("- Reproduce: " + "; ".join(
        f"`braintumor train --config {r} --fold K` for K = 0 .. {rc['folds'] - 1}"
        for r, rc in zip(recipes, rcfgs, strict=False))
        + "".join(f"; `braintumor train --config {recipe_of.get(m['recipe'], m['recipe'])} "
                  "--fold -1 "
                  f"--out {m['run']}` trains the all-case member (`--fold -1` alone writes "
                  f"`runs/{m['recipe']}/foldall`; `--set seed=S` for another seed)"
                  for m in mruns if int(m["fold"]) < 0)
        + "; then `python -m braintumor.training.package`"
        + (" with `--members` naming the shipped runs." if mruns and tr.get("members") !=
           "fold models" else "."))
    if tr.get("note"):
        lines.append(f"- {tr['note']}")
    several = len(recipes) > 1
    lines += [
        "",
        "## Cross-validated accuracy (held-out folds)",
        "",
        ("Each case is predicted by the average of one held-out model per recipe (in each "
         "recipe, the fold model that did not train on it), as the shipped ensemble "
         "averages one model per recipe; numbers are "
         if several else
         "Each case is predicted by the fold model that did not train on it; numbers are ")
        + "mean ± std over the 14 cases, computed in native space with "
        "`braintumor.metrics.score_case` (HD95 in mm, BraTS 2023 surface definition).",
        "",
        "| region | Dice | sensitivity | specificity | HD95 (mm) |",
        "|---|---|---|---|---|",
    ]
    for r in REGIONS:
        s = regions[r]
        lines.append(f"| {r} | {s['dice']['mean']:.3f} ± {s['dice']['std']:.3f} | "
                     f"{s['sensitivity']['mean']:.3f} | {s['specificity']['mean']:.4f} | "
                     f"{s['hd95']['mean']:.1f} |")
    lines += ["", "Per case: `experiments/shipped_cv/table.md`. The shipped ensemble itself "
              "cannot be cross-validated on these 14 cases (every case is in the training "
              "data of at least one member); unseen BraTS cases are the judge of it.", ""]
    if "fast" in meta:
        f = meta["fast"]
        lines += ["## Fast mode (`--fast`, the web API's default; the page's when *accurate* "
                  "is unticked)", "",
                  f"One model (member {f['members'][0]}) at window overlap "
                  f"{f['overlap']}: several times fewer windows than the full ensemble at "
                  f"overlap {meta['overlap']}. Held out, as above (each case by the fold "
                  "model of the member's recipe that did not train on it, at this "
                  "overlap):", "",
                  "| region | Dice | sensitivity | specificity | HD95 (mm) |",
                  "|---|---|---|---|---|"]
        for r in REGIONS:
            c = f["cv"][r]
            lines.append(f"| {r} | {c['dice']:.3f} | {c['sensitivity']:.3f} | "
                         f"{c['specificity']:.4f} | {c['hd95']:.1f} |")
        lines.append("")
    if timing:
        lines += ["## Speed and memory", ""] + [f"- {k}: {v}" for k, v in timing.items()] + [""]
    lines.append(CARD_STATIC)
    card2d = out.parent / "lgg2d" / "MODEL_CARD_2D.md"
    if card2d.exists():
        lines += ["", card2d.read_text()]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
