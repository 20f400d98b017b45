"""Losses: MONAI's Dice + BCE for region (sigmoid) outputs, Dice + CE for softmax,
with optional label smoothing and deep supervision."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RegionLoss(nn.Module):
    """Dice + BCE on sigmoid region channels (WT, TC, ET), as the BraTS winners train.

    ``label_smoothing`` moves BCE targets towards 0.5 by that amount. With deep
    supervision the network returns a list; lower-resolution outputs are compared with
    nearest-downsampled targets, weights halving per level (nnU-Net's scheme).
    """

    def __init__(self, output: str = "sigmoid", label_smoothing: float = 0.0,
                 loss: str = "dice_bce") -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.output = output
        self.smooth = label_smoothing
        self.dice_only = loss == "dice_sq"
        if loss == "dice_sq":
            # MONAI's BraTS tutorial/bundle loss: squared-denominator Dice, no BCE term
            self.dice = DiceLoss(sigmoid=output == "sigmoid", softmax=output != "sigmoid",
                                 smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True,
                                 to_onehot_y=False)
        elif output == "sigmoid":
            self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)
        else:
            self.dice = DiceLoss(softmax=True, to_onehot_y=False, include_background=False,
                                 smooth_nr=1e-5, smooth_dr=1e-5, batch=True)

    def _one(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[2:] != target.shape[2:]:
            target = F.interpolate(target, size=logits.shape[2:], mode="nearest")
        if self.dice_only:
            return self.dice(logits, target)
        if self.output == "sigmoid":
            t = target * (1 - self.smooth) + 0.5 * self.smooth if self.smooth else target
            return self.dice(logits, target) + F.binary_cross_entropy_with_logits(logits, t)
        # softmax: target holds one-hot labels (B, 4, ...)
        ce = F.cross_entropy(logits, target.argmax(1), label_smoothing=self.smooth)
        return self.dice(logits, target) + ce

    def forward(self, out: torch.Tensor | list[torch.Tensor], target: torch.Tensor
                ) -> torch.Tensor:
        if isinstance(out, (list, tuple)):
            weights = [0.5**i for i in range(len(out))]
            total = sum(weights)
            return sum(w * self._one(o, target) for w, o in zip(weights, out, strict=False)) / total  # type: ignore[return-value]
        return self._one(out, target)
