"""``braintumor export-onnx CHECKPOINT -o FILE.onnx``: export a network for ONNX Runtime."""

from __future__ import annotations

import argparse

NAME = "export-onnx"
HELP = ("Export a trained checkpoint to ONNX (dynamic batch and spatial axes), checked "
        "against PyTorch on a random input.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt checkpoint written by braintumor train")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")


def run(args: argparse.Namespace) -> int:
    """Export, check and only then put the file in place: an export whose probabilities
    differ from PyTorch's is not written (a file already at ``-o`` is kept, and folders
    made for it are removed again when left empty), and one that replaces a file says
    so."""
    from braintumor.commands import removing_empty_made

    with removing_empty_made(args.output):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import sys

    from braintumor.inference import ONNX_TOLERANCE, check_export_target, export_onnx

    # before any work: an -o that is the checkpoint itself would destroy it
    check_export_target(args.checkpoint, args.output)
    _not_2d(args.checkpoint)
    # the export is checked as it is written: the same seeded input through both
    done = export_onnx(args.checkpoint, args.output, args.opset)
    out = done.path
    if not done.written:
        kept = " (the file already there is left as it was)" if out.exists() else ""
        print(f"error: {args.checkpoint}: its ONNX export's probabilities differ from "
              f"PyTorch's by up to {done.diff:.2g} on a random 64^3 input (more than "
              f"{ONNX_TOLERANCE:g}), so it was not written to {out}{kept}.", file=sys.stderr)
        return 1
    print(out)
    if done.replaced:
        print(f"note: {out}: the file that was there is replaced by this export.",
              file=sys.stderr)
    if done.diff is None:
        print("ONNX Runtime is not installed: the export was not checked against PyTorch.",
              file=sys.stderr)
    else:
        print(f"checked: ONNX Runtime's probabilities within {done.diff:.1g} of PyTorch's on "
              "a random 64^3 input")
    return 0


def _not_2d(checkpoint: str) -> None:
    """A 2D slice model's checkpoint is exported by its own training module (its ONNX
    file and config go beside the weights, where the 2D predictor looks for them)."""
    from pathlib import Path

    import torch

    from braintumor.errors import InputError
    from braintumor.networks import list_networks

    path = Path(checkpoint)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; export-onnx takes one .pt checkpoint, such as "
                         "a run folder's best.pt or one of the members a model folder's "
                         "model.json lists.")
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found.")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one sentence
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}).") from None
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if isinstance(config, dict) and config.get("network") in list_networks(dims=2):
        raise InputError(f"{path}: is a 2D slice model's checkpoint; its ONNX export goes "
                         "beside the weights, where the 2D predictor looks for it: "
                         "braintumor.slices2d.export_onnx_2d(weights) writes it.")
