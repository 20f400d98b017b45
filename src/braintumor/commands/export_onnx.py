"""``braintumor export-onnx CHECKPOINT -o FILE.onnx``: export a network for ONNX Runtime."""

from __future__ import annotations

import argparse

NAME = "export-onnx"
HELP = "Export a trained checkpoint to ONNX (dynamic batch and spatial axes)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt checkpoint written by braintumor train")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> int:
    from braintumor.inference import export_onnx

    out = export_onnx(args.checkpoint, args.output, args.opset)
    print(out)
    return 0
