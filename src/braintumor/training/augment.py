"""Data augmentation on torch batches, built so it never bottlenecks a 2-core CPU.

Spatial transforms (rotation, scaling, elastic deformation) are folded into a single
``grid_sample`` call per batch (trilinear for images, nearest for targets); flips and
axial 90-degree rotations are exact index operations; intensity transforms (gamma,
brightness, contrast, noise) are per-channel tensor arithmetic.

Shapes: ``image`` ``(B, C, X, Y, Z)`` float32, ``target`` ``(B, K, X, Y, Z)`` float.
Tensors may live on a GPU: the random draws come from the CPU generator (so a run is
reproducible) and are moved to the batch's device, where all the arithmetic happens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from braintumor.config import AugmentConfig


def augment_batch(image: torch.Tensor, target: torch.Tensor, cfg: AugmentConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the configured random augmentations to a batch."""
    if not cfg.enabled or cfg.strength <= 0:
        return image, target
    s = float(cfg.strength)
    b = image.shape[0]
    dev = image.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    def rand1() -> float:  # a scalar draw stays on the CPU (no device sync)
        return float(torch.rand(1, generator=gen).item())

    # exact flips and axial rotations (cheap and label-preserving)
    if cfg.flips:
        for axis in (2, 3, 4):
            if rand1() < 0.5:
                image, target = image.flip(axis), target.flip(axis)
    if cfg.rotate and rand1() < 0.5 * min(s, 1.0) and image.shape[2] == image.shape[3]:
        k = int(torch.randint(1, 4, (1,), generator=gen).item())
        image, target = image.rot90(k, (2, 3)), target.rot90(k, (2, 3))

    # one resampling for rotation + scaling + elastic
    do_rot = cfg.rotate and rand1() < 0.2 * s
    do_scale = cfg.scale and rand1() < 0.2 * s
    do_el = cfg.elastic and rand1() < 0.2 * s
    if do_rot or do_scale or do_el:
        theta = torch.eye(3, device=dev).repeat(b, 1, 1)
        if do_rot:
            for i in range(b):
                # up to +-15 degrees
                ang = (torch.rand(3, generator=gen) * 2 - 1) * (math.pi / 12) * s
                theta[i] = _rotation(ang).to(dev) @ theta[i]
        if do_scale:
            sc = 1 + (rand(b) * 2 - 1) * 0.15 * s
            theta = theta * sc.view(b, 1, 1)
        aff = torch.cat([theta, torch.zeros(b, 3, 1, device=dev)], dim=2)
        grid = F.affine_grid(aff, list(image.shape), align_corners=False)
        if do_el:
            coarse = (rand(b, 3, 5, 5, 5) * 2 - 1) * 0.04 * s
            disp = F.interpolate(coarse, size=image.shape[2:], mode="trilinear",
                                 align_corners=False)
            grid = grid + disp.permute(0, 2, 3, 4, 1)
        image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        target = F.grid_sample(target, grid, mode="nearest", padding_mode="zeros",
                               align_corners=False)

    if cfg.intensity:
        c = image.shape[1]
        if rand1() < 0.3 * s:  # contrast / brightness per channel
            mult = 1 + (rand(b, c, 1, 1, 1) * 2 - 1) * 0.25 * s
            add = (rand(b, c, 1, 1, 1) * 2 - 1) * 0.1 * s
            image = image * mult + add
        if rand1() < 0.3 * s:  # gamma on a min-max rescaled copy
            g = torch.exp((rand(b, c, 1, 1, 1) * 2 - 1) * 0.3 * s)
            lo = image.amin(dim=(2, 3, 4), keepdim=True)
            hi = image.amax(dim=(2, 3, 4), keepdim=True)
            rng = (hi - lo).clamp_min(1e-6)
            image = ((image - lo) / rng).clamp(0, 1).pow(g) * rng + lo
    if cfg.noise and rand1() < 0.15 * s:
        sigma = rand1() * 0.1 * s
        if dev.type == "cpu":
            noise = torch.randn(image.shape, generator=gen)
        else:  # a CPU draw of a whole batch would cost more than the GPU step
            noise = torch.randn(image.shape, device=dev)
        image = image + noise * sigma
    if cfg.scale_shift > 0:  # MONAI RandScaleIntensity + RandShiftIntensity, prob 1
        a = float(cfg.scale_shift)
        image = image * (1 + (rand(b, 1, 1, 1, 1) * 2 - 1) * a) + (rand(b, 1, 1, 1, 1) * 2 - 1) * a
    return image.contiguous(), target.contiguous()


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    a, b, c = (float(x) for x in angles)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return (rz @ ry @ rx).float()
