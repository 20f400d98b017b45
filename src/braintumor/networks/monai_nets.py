"""MONAI architectures, registered under project names.

All take ``(B, 4, X, Y, Z)`` and return ``(B, out_channels, X, Y, Z)`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from braintumor.networks import register


def _unet_patch(channels: Sequence[int] = (16, 32, 64, 128), **_: object
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # one stride-2 step per further level; normalisation needs more than one voxel at
    # the coarsest level
    m = 2 ** (len(channels) - 1)
    return (m, m, m), (2 * m, 2 * m, 2 * m)


def _segresnet_patch(blocks_down: Sequence[int] = (1, 2, 2, 4), **_: object
                     ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m = 2 ** (len(blocks_down) - 1)  # group norm: one voxel at the coarsest level is enough
    return (m, m, m), (m, m, m)


def _slices_patch(channels: Sequence[int] = (32, 64, 128, 256), **_: object
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # 2D: x and y are downsampled, z is not; the slices are the batch of batch norm,
    # which needs more than one value per channel
    m = 2 ** (len(channels) - 1)
    return (m, m, 1), (m, m, 2)


@register("unet3d", dims=3, note="MONAI UNet with residual units", patch_rule=_unet_patch)
def unet3d(in_channels: int = 4, out_channels: int = 3,
           channels: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.0,
           num_res_units: int = 2) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                num_res_units=num_res_units, dropout=dropout, norm="instance")


@register("segresnet", dims=3, note="MONAI SegResNet (residual encoder)",
          patch_rule=_segresnet_patch)
def segresnet(in_channels: int = 4, out_channels: int = 3, init_filters: int = 8,
              blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
              dropout: float = 0.0) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                     init_filters=init_filters, blocks_down=tuple(blocks_down),
                     blocks_up=tuple(blocks_up), dropout_prob=dropout or None)


@register("attention_unet", dims=3, note="MONAI AttentionUnet", patch_rule=_unet_patch)
def attention_unet(in_channels: int = 4, out_channels: int = 3,
                   channels: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.0
                   ) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                         dropout=dropout)


@register("unet2p5d", dims=3, note="2.5D: a 2D MONAI UNet over axial slices with neighbours",
          patch_rule=_slices_patch)
def unet2p5d(in_channels: int = 4, out_channels: int = 3,
             channels: Sequence[int] = (32, 64, 128, 256), context: int = 1,
             dropout: float = 0.0) -> nn.Module:
    from monai.networks.nets import UNet

    return SliceWise(UNet(spatial_dims=2, in_channels=in_channels * (2 * context + 1),
                          out_channels=out_channels, channels=tuple(channels),
                          strides=(2,) * (len(channels) - 1), num_res_units=2,
                          dropout=dropout, norm="batch"), context)


class SliceWise(nn.Module):
    """Run a 2D network over every axial slice of a 3D volume, each slice with
    ``context`` neighbours on either side as extra channels (2.5D).

    ``(B, C, X, Y, Z)`` -> ``(B, out, X, Y, Z)``.
    """

    def __init__(self, net2d: nn.Module, context: int = 1) -> None:
        super().__init__()
        self.net = net2d
        self.context = context

    def forward(self, x):  # type: ignore[no-untyped-def]
        import torch
        import torch.nn.functional as F

        b, c, nx, ny, nz = x.shape
        k = self.context
        xp = F.pad(x, (k, k)) if k else x
        # (B, C, X, Y, Z+2k) -> slices with neighbours: (B*Z, C*(2k+1), X, Y)
        stacks = [xp[..., i:i + nz] for i in range(2 * k + 1)]
        s = torch.cat(stacks, dim=1).permute(0, 4, 1, 2, 3).reshape(b * nz, -1, nx, ny)
        y = self.net(s)
        return y.reshape(b, nz, -1, nx, ny).permute(0, 2, 3, 4, 1)
