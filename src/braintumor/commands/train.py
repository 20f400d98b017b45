"""``braintumor train --config FILE [--fold K] [--device auto|cpu|cuda] [--out DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "train"
HELP = "Train a segmentation network from a YAML config (resumes when its run folder exists)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="training config YAML (examples: configs/ of the source repository)")
    p.add_argument("--fold", type=int, default=None,
                   help="cross-validation fold to hold out (-1: train on all cases)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where it trains (default auto: a CUDA GPU when there is one)")
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
    from braintumor.interrupts import Interrupted, interruptible
    from braintumor.training.trainer import Trainer

    cfg = load_config(args.config)
    changes = parse_overrides(args.set)
    if args.fold is not None:
        changes["fold"] = args.fold
    if changes:
        cfg = cfg.replace(**changes)
        check_config(cfg)
    out = args.out or f"runs/{cfg.name}/fold{cfg.fold if cfg.fold >= 0 else 'all'}"
    trainer = Trainer(cfg, out, device=args.device, progress=not args.no_progress)
    try:
        with interruptible():
            summary = trainer.fit()
    except Interrupted as exc:
        print(interrupted_message(args, out, cfg.epochs, trainer.epochs_done, exc.name),
              file=sys.stderr)
        return exc.exit_status
    print(json.dumps(summary, indent=1))
    print(f"checkpoint: {out}/best.pt")
    return 0


def resume_command(args: argparse.Namespace, out: str) -> str:
    """The command line that continues this run (same config, overrides and folder)."""
    import shlex

    cmd = ["braintumor", "train", "--config", str(args.config), "--out", str(out)]
    if args.fold is not None:
        cmd += ["--fold", str(args.fold)]
    if args.device != "auto":
        cmd += ["--device", args.device]
    if args.no_progress:
        cmd += ["--no-progress"]
    if args.set:
        cmd += ["--set", *args.set]
    return shlex.join(cmd)


def interrupted_message(args: argparse.Namespace, out: str, epochs: int, done: int,
                        signal_name: str) -> str:
    """One line: where the run stopped, what was kept and how to go on."""
    last = Path(out) / "last.pt"
    if done and last.exists():
        kept = f"after epoch {done}/{epochs}: checkpoint {last}; resume with: "
    else:
        kept = "before the first epoch ended (no checkpoint yet); start again with: "
    return f"interrupted ({signal_name}) {kept}{resume_command(args, out)}"
