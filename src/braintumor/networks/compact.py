"""A compact 3D U-Net designed for speed on a CPU.

On a CPU, what costs is width at full resolution: every 3x3x3 convolution at 1 mm over a
128^3 patch touches two million voxels. This network therefore works at half resolution
from its first layer (a strided stem), keeps the usual U-Net encoder/decoder with
residual blocks at 1/2 ... 1/16, predicts region logits at 1/2 resolution, upsamples
them trilinearly and lets a thin full-resolution head (the four modalities + the
upsampled logits, 8 channels wide) sharpen the boundary. Optional deep-supervision heads
at 1/4 and 1/8 resolution return extra outputs in training mode.

Input ``(B, 4, X, Y, Z)``; output ``(B, out_channels, X, Y, Z)`` logits; X, Y, Z
multiples of 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from braintumor.networks import register


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm3d(c, affine=True)


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            _norm(cout),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ResBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (1x1 projection if needed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, padding=1, bias=False), _norm(cout))
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False),
                                      _norm(cout))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.conv2(self.conv1(x))) + self.skip(x))


class CompactUNet(nn.Module):
    """Half-resolution residual U-Net with a thin full-resolution refinement head."""

    def __init__(self, in_channels: int = 4, out_channels: int = 3,
                 channels: Sequence[int] = (24, 48, 96, 160), dropout: float = 0.0,
                 deep_supervision: bool = False, head_channels: int = 8) -> None:
        super().__init__()
        ch = list(channels)
        self.deep_supervision = deep_supervision
        self.stem = ConvNormAct(in_channels, ch[0], stride=2)  # -> 1/2
        self.enc = nn.ModuleList([ResBlock(ch[0], ch[0], dropout=0.0)])
        for i in range(1, len(ch)):
            self.enc.append(ResBlock(ch[i - 1], ch[i], stride=2,
                                     dropout=dropout if i >= len(ch) - 2 else 0.0))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.up.append(nn.ConvTranspose3d(ch[i], ch[i - 1], 2, stride=2, bias=False))
            self.dec.append(ResBlock(2 * ch[i - 1], ch[i - 1]))
        self.out_half = nn.Conv3d(ch[0], out_channels, 1)
        self.ds_heads = nn.ModuleList(
            [nn.Conv3d(ch[i], out_channels, 1) for i in (1, 2)] if deep_supervision else []
        )
        self.head = nn.Sequential(
            ConvNormAct(in_channels + out_channels, head_channels),
            nn.Conv3d(head_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        h = self.stem(x)
        skips = []
        for i, blk in enumerate(self.enc):
            h = blk(h)
            if i < len(self.enc) - 1:
                skips.append(h)
        ds_feats: list[torch.Tensor] = []
        for up, dec in zip(self.up, self.dec, strict=False):
            h = up(h)
            h = dec(torch.cat([h, skips.pop()], dim=1))
            ds_feats.append(h)
        half = self.out_half(h)
        coarse = F.interpolate(half, size=x.shape[2:], mode="trilinear", align_corners=False)
        out = coarse + self.head(torch.cat([x, coarse], dim=1))
        if self.training and self.deep_supervision:
            # ds_feats: [1/8, 1/4, 1/2] decoder outputs -> heads at 1/4 and 1/8
            extra = [self.ds_heads[0](ds_feats[-2]), self.ds_heads[1](ds_feats[-3])]
            return [out, half, *extra]
        return out


def _compact_patch(channels: Sequence[int] = (24, 48, 96, 160), **_: object
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # a strided stem, then one stride-2 block per further level; instance norm needs
    # more than one voxel at the coarsest level
    m = 2 ** len(channels)
    return (m, m, m), (2 * m, 2 * m, 2 * m)


@register("compact_unet", dims=3, note="own design: half-resolution residual U-Net for CPUs",
          patch_rule=_compact_patch)
def compact_unet(in_channels: int = 4, out_channels: int = 3,
                 channels: Sequence[int] = (24, 48, 96, 160), dropout: float = 0.0,
                 deep_supervision: bool = False) -> nn.Module:
    return CompactUNet(in_channels, out_channels, channels, dropout, deep_supervision)
