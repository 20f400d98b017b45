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


#: the largest probability difference between PyTorch and ONNX Runtime an export may show
TOLERANCE = 1e-4


def run(args: argparse.Namespace) -> int:
    import sys

    from braintumor.inference import export_onnx, onnx_agreement

    _not_2d(args.checkpoint)
    out = export_onnx(args.checkpoint, args.output, args.opset)
    print(out)
    # the export is checked as it is written: the same seeded input through both
    diff = onnx_agreement(args.checkpoint, out)
    if diff is None:
        print("ONNX Runtime is not installed: the export was not checked against PyTorch.",
              file=sys.stderr)
    elif diff > TOLERANCE:
        print(f"error: {out}: its probabilities differ from PyTorch's by up to {diff:.2g} on a "
              f"random 64^3 input (more than {TOLERANCE:g}); do not use it.", file=sys.stderr)
        return 1
    else:
        print(f"checked: ONNX Runtime's probabilities within {diff:.1g} of PyTorch's on a random "
              "64^3 input")
    return 0


def _not_2d(checkpoint: str) -> None:
    """A 2D slice model's checkpoint is exported by its own training module (its ONNX
    file and config go beside the weights, where the 2D predictor looks for them)."""
    from pathlib import Path

    import torch

    from braintumor.errors import InputError
    from braintumor.networks import list_networks

    path = Path(checkpoint)
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
