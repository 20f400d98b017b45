"""Patch sampler throughput with and without augmentation, against the training step.

Augmentation must not be the training bottleneck on a 2-core CPU. This measures, in one
process and at the shipped recipe's patch size and batch size (``configs/compact_cv.yaml``):

* the patch sampler alone (foreground-oversampled crops from the cached cases);
* the sampler followed by the full default augmentation (``augment_batch``: flips,
  rotations, scaling in one ``grid_sample``, intensity, noise), and with elastic
  deformation added;
* one training step of the shipped network (forward + backward + AdamW),

and prints samples/s for each and the ratios. Uses the real training cache when it exists
(``cache/brats2018``), otherwise synthetic phantom cases.

    python benchmarks/bench_augment.py [--config configs/compact_cv.yaml] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _rate(fn, n: int, per_call: int) -> float:  # type: ignore[no-untyped-def]
    """Samples per second over ``n`` calls of ``fn`` (after one warm-up call)."""
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n * per_call / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/compact_cv.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=20, help="batches per measurement")
    ap.add_argument("--steps", type=int, default=4, help="training steps to time")
    a = ap.parse_args()

    import numpy as np
    import torch

    from braintumor.config import load_config
    from braintumor.networks import create_network
    from braintumor.training.augment import augment_batch
    from braintumor.training.data import PatchSampler, load_prepared, prepare_case
    from braintumor.training.losses import RegionLoss

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    cache = Path(cfg.cache)
    if (cache / "cases.json").exists():
        ids = json.loads((cache / "cases.json").read_text())[:6]
        cases = [load_prepared(cache / f"{i}.npz") for i in ids]
        source = f"{len(cases)} cached BraTS cases"
    else:
        from braintumor.phantom import make_case

        cases = [prepare_case(make_case(shape=(160, 160, 128), seed=i)) for i in range(3)]
        source = "3 synthetic phantom cases (no training cache found)"
    bs = cfg.batch_size
    sampler = PatchSampler(cases, cfg.patch, cfg.fg_fraction, seed=0)
    gen = torch.Generator().manual_seed(0)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        imgs, tgts = zip(*(sampler.sample() for _ in range(bs)), strict=True)
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(tgts)).float()

    aug_default = cfg.augment.__class__(**{**cfg.augment.__dict__, "enabled": True})
    aug_elastic = aug_default.__class__(**{**aug_default.__dict__, "elastic": True})

    r_plain = _rate(batch, a.batches, bs)
    r_aug = _rate(lambda: augment_batch(*batch(), aug_default, gen), a.batches, bs)
    r_el = _rate(lambda: augment_batch(*batch(), aug_elastic, gen), a.batches, bs)

    net = create_network(cfg.network, out_channels=3, **cfg.network_args)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = RegionLoss()
    x, y = batch()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    r_step = _rate(step, a.steps, bs)
    patch = "x".join(str(p) for p in cfg.patch)
    print(f"data: {source}; patch {patch}, batch {bs}, {a.threads} torch thread(s)")
    print(f"sampler only               {r_plain:8.1f} samples/s")
    print(f"sampler + augmentation     {r_aug:8.1f} samples/s   "
          f"(ratio to sampler only {r_aug / r_plain:.2f})")
    print(f"sampler + aug + elastic    {r_el:8.1f} samples/s   "
          f"(ratio to sampler only {r_el / r_plain:.2f})")
    print(f"training step ({cfg.network})  {r_step:8.2f} samples/s")
    print(f"augmented sampling is {r_aug / r_step:.1f}x faster than training consumes it; "
          f"its share of a training step: {100 * r_step / r_aug:.1f} %")


if __name__ == "__main__":
    main()
