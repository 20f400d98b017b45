"""Compact 2D U-Nets for single MRI slices (``(B, C, H, W)`` -> ``(B, out, H, W)`` logits).

``unet2d`` is MONAI's residual :class:`~monai.networks.nets.UNet` in two dimensions with
narrow channels: on a CPU the cost of a U-Net is dominated by its full-resolution layers,
so the first level stays at 16 channels and capacity goes into the coarse levels, where a
pixel is 16x cheaper. H and W must be divisible by ``2 ** (len(channels) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from braintumor.networks import register


@register("unet2d", dims=2, notes="MONAI residual UNet, 2D, ~1 M parameters by default")
def unet2d(
    in_channels: int = 3,
    out_channels: int = 1,
    channels: Sequence[int] = (16, 32, 64, 128, 128),
    num_res_units: int = 1,
    dropout: float = 0.0,
    norm: str = "batch",
) -> nn.Module:
    """2D residual U-Net; the default has about 1 M parameters.

    ``in_channels`` 3 matches the LGG slices (pre-contrast T1, FLAIR, post-contrast T1);
    a greyscale picture is fed as three identical channels (see
    :func:`braintumor.slices2d.prepare_input`), so one network serves both.
    """
    from monai.networks.nets import UNet

    chans = tuple(int(c) for c in channels)
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=chans,
        strides=(2,) * (len(chans) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
    )


@register("basicunet2d", dims=2, notes="MONAI BasicUNet, 2D, narrow features")
def basicunet2d(
    in_channels: int = 3,
    out_channels: int = 1,
    features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI's BasicUNet in 2D with narrow features (about 0.5 M parameters)."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(int(f) for f in features),
        dropout=dropout,
    )
