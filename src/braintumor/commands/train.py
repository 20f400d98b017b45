"""``braintumor train --config FILE [--fold K] [--device auto|cpu|cuda] [--out DIR]``."""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "Train a segmentation network from a YAML config (resumes when its run folder exists)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training config YAML (see configs/)")
    p.add_argument("--fold", type=int, default=None,
                   help="cross-validation fold to hold out (-1: train on all cases)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=None, help="run folder (default runs/<name>/fold<K>)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. --set lr=0.001 augment.enabled=false")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["lr=0.001", "patch=[64,64,64]"]`` -> typed values (YAML parsing)."""
    import yaml

    from braintumor.errors import InputError

    out: dict[str, object] = {}
    for it in items:
        if "=" not in it:
            raise InputError(f"Override {it!r} is not of the form KEY=VALUE.")
        k, v = it.split("=", 1)
        val = yaml.safe_load(v)
        if isinstance(val, list):
            val = tuple(val)
        out[k.strip()] = val
    return out


def run(args: argparse.Namespace) -> int:
    from braintumor.config import check_config, load_config
    from braintumor.training.trainer import Trainer

    cfg = load_config(args.config)
    changes = parse_overrides(args.set)
    if args.fold is not None:
        changes["fold"] = args.fold
    if changes:
        cfg = cfg.replace(**changes)
        check_config(cfg)
    out = args.out or f"runs/{cfg.name}/fold{cfg.fold if cfg.fold >= 0 else 'all'}"
    summary = Trainer(cfg, out, device=args.device, progress=not args.no_progress).fit()
    print(json.dumps(summary, indent=1))
    print(f"checkpoint: {out}/best.pt")
    return 0
