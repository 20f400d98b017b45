"""The Trainer: one frozen :class:`~braintumor.config.TrainConfig` in, a checkpoint out.

Writes into its run folder: ``config.yaml`` (config + code version + data split),
``last.pt`` (resumable: model, optimiser, scheduler, RNG, epoch, best score),
``best.pt`` (best validation Dice), ``log.csv`` (one row per epoch), ``curve.png``.
Re-running with the same run folder resumes from ``last.pt``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import __version__
from braintumor.config import TrainConfig, save_config, to_dict
from braintumor.io import write_replacing
from braintumor.training.data import (
    PatchSampler,
    Prepared,
    build_cache,
    kfold_split,
    load_prepared,
    prepare_case,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return 1.0
    return 2.0 * int((a & b).sum()) / (sa + sb)


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    import subprocess

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        rev = ""
    return f"{__version__}+{rev}" if rev else __version__


def load_cases(cfg: TrainConfig) -> list[Prepared]:
    """Prepared training cases: the cache of ``cfg.data`` or synthetic phantoms
    (only ``cfg.case_ids`` when that is set)."""
    if cfg.synthetic > 0:
        from braintumor.phantom import make_case

        cases = [prepare_case(make_case(shape=cfg.synthetic_shape, seed=1000 + i,
                                        low_grade=(i % 4 == 3)))
                 for i in range(cfg.synthetic)]
        return [c for c in cases if not cfg.case_ids or c.case_id in cfg.case_ids]
    cache = Path(cfg.cache)
    ids = cached_case_ids(cfg)
    if cfg.case_ids:
        missing = sorted(set(cfg.case_ids) - set(ids))
        if missing:
            from braintumor.errors import InputError

            raise InputError(f"{cache}: no cached case {missing[0]!r} (asked for in case_ids).")
        ids = [i for i in ids if i in cfg.case_ids]
    return [load_prepared(cache / f"{i}.npz") for i in ids]


def cached_case_ids(cfg: TrainConfig) -> list[str]:
    """The case ids of ``cfg.cache``, built or brought up to date from ``cfg.data`` first
    (a case whose files changed since it was cached is made again); a cache carried
    without its data folder is taken as it is."""
    cache = Path(cfg.cache)
    index = cache / "cases.json"
    if index.exists():
        _check_cache_source(cfg, cache, json.loads(index.read_text()))
    if Path(cfg.data).is_dir() or not index.exists():
        build_cache(cfg.data, cache)
    return list(json.loads(index.read_text()))


def _check_cache_source(cfg: TrainConfig, cache: Path, ids: list[str]) -> None:
    """Refuse a cache built from another data folder than ``cfg.data`` (judged by the
    cases each holds; a data folder that is not here, as where only the cache was
    carried, is not checked)."""
    from braintumor.cases import discover
    from braintumor.errors import InputError

    if not Path(cfg.data).is_dir():
        return
    try:
        found = sorted(s.case_id for s in discover(cfg.data))
    except InputError:
        return
    if found and found != sorted(ids):
        extra = sorted(set(found) - set(ids)) or sorted(set(ids) - set(found))
        raise InputError(f"{cache}: this preprocessed cache holds other cases than {cfg.data} "
                         f"(e.g. {extra[0]}); point 'cache' to a folder of its own for this "
                         "data, or delete the cache to rebuild it.")


class Trainer:
    """Trains one network on one fold; see the module docstring for its outputs."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, device: str = "auto",
                 progress: bool = True,
                 on_validate: Callable[[int, float, dict[str, float]], None] | None = None
                 ) -> None:
        """``on_validate(epoch, progress_fraction, scores)`` is called after every
        validation (e.g. to report to a hyperparameter search's pruner, which may stop
        the run by raising)."""
        import torch

        from braintumor.inference import resolve_device

        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        self.progress = progress
        self.on_validate = on_validate
        if cfg.threads and self.device == "cpu":
            torch.set_num_threads(cfg.threads)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shape: pick fast kernels once
        self.amp = cfg.amp and self.device == "cuda"
        #: validations in a row without a better score (for early stopping; resumed)
        self.stale = 0
        #: epochs in ``last.pt`` (0 before the first ends); the epoch a resume began at
        self.epochs_done = 0
        self.resumed_epoch: int | None = None

    # ------------------------------------------------------------------ set-up
    def _split(self, cases: list[Prepared]) -> tuple[list[Prepared], list[Prepared], dict]:
        ids = [c.case_id for c in cases]
        if self.cfg.fold < 0:
            split = {"train": sorted(ids), "val": []}
        else:
            split = kfold_split(ids, self.cfg.folds, self.cfg.split_seed)[self.cfg.fold]
        by_id = {c.case_id: c for c in cases}
        return ([by_id[i] for i in split["train"]], [by_id[i] for i in split["val"]], split)

    def _build(self) -> None:
        import torch

        from braintumor.networks import create_network
        from braintumor.training.losses import RegionLoss

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        out_ch = 3 if cfg.output == "sigmoid" else 4
        args = dict(cfg.network_args)
        if cfg.deep_supervision:
            args["deep_supervision"] = True
        self.net = create_network(cfg.network, out_channels=out_ch, dropout=cfg.dropout,
                                  **args).to(self.device)
        if cfg.optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(
                self.net.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True,
                weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":  # MONAI's BraTS recipe: Adam with L2 weight decay
            self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr,
                                        weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay)
        self.total_steps = max(1, cfg.epochs * cfg.steps_per_epoch)
        self.step_count = 0
        self.elapsed_before = 0.0
        self.t_start = time.perf_counter()
        self.loss_fn = RegionLoss(cfg.output, cfg.label_smoothing, cfg.loss)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def progress_fraction(self) -> float:
        """Share of the run done: by steps, or by time when a time budget is set, so the
        learning-rate schedule always anneals fully within the budget."""
        return min(1.0, max(self.step_count / self.total_steps, self.time_fraction()))

    def time_fraction(self) -> float:
        """Share of the time budget used (0 without one)."""
        if self.cfg.time_budget_min <= 0:
            return 0.0
        el = self.elapsed_before + time.perf_counter() - self.t_start
        return el / (self.cfg.time_budget_min * 60)

    def lr_factor(self) -> float:
        """Warm-up, then cosine or poly decay over :meth:`progress_fraction`."""
        cfg = self.cfg
        if self.step_count < cfg.warmup_steps:
            return (self.step_count + 1) / cfg.warmup_steps
        t = self.progress_fraction()
        if cfg.schedule == "cosine":
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "poly":
            return max(0.02, (1 - t) ** 0.9)
        return 1.0

    # ---------------------------------------------------------------- checkpoint
    def _state(self, epoch: int, best: float, history: list[dict]) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step_count": self.step_count,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best": best,
            "history": history,
            "config": to_dict(self.cfg),
            "version": code_version(),
            "rng": {"torch": self.gen.get_state(), "numpy": self.sampler.rng.bit_generator.state,
                    **_global_rng()},
            "stale": self.stale,
        }

    def _save(self, name: str, state: dict[str, Any]) -> None:
        """Write ``out/name`` through a temporary name of this process's own, renamed into
        place (:func:`braintumor.io.write_replacing`): a save cut short (a full disk)
        leaves the earlier checkpoint and no partial file, and two trainers in a folder
        that takes no lock never write, or rename away, one another's temporary file."""
        import torch

        from braintumor.io import write_replacing

        write_replacing(self.out / name, lambda tmp: torch.save(state, tmp))

    def _init_weights(self, path: str) -> None:
        """Load network weights from another run's checkpoint (fresh optimizer)."""
        import torch

        from braintumor.errors import InputError

        p = Path(path)
        if not p.is_file():
            raise InputError(f"init_from: no checkpoint at {p}.")
        ck = torch.load(p, map_location=self.device, weights_only=False)
        try:
            self.net.load_state_dict(ck["model"] if "model" in ck else ck)
        except RuntimeError as e:
            raise InputError(f"init_from: {p} does not fit network {self.cfg.network} "
                             f"with {self.cfg.network_args}.") from e

    # -------------------------------------------------------------------- train
    def fit(self) -> dict[str, Any]:
        """Train (or resume) and return a summary with the best validation Dice. The run
        folder is locked meanwhile: a second trainer on it is refused in one sentence. The
        temporary files of checkpoint saves killed before (SIGKILL, out of memory) are
        removed first."""
        from braintumor.locks import remove_partials

        lock = lock_run_folder(self.out)
        try:
            if lock is not None:  # no other trainer here: a save killed before left these
                remove_partials(self.out, ("last.pt", "best.pt"))
            return self._fit()
        finally:
            if lock is not None:
                lock.close()

    def _fit(self) -> dict[str, Any]:
        from braintumor.networks import check_network

        cfg = self.cfg
        check_network(cfg.network, cfg.network_args, cfg.patch)
        cases = load_cases(cfg)
        train, val, split = self._split(cases)
        self.sampler = PatchSampler(train, cfg.patch, cfg.fg_fraction, seed=cfg.seed)
        self._build()
        epoch0, best, history = 0, -1.0, []
        last = self.out / "last.pt"
        ck = _load_last(last, self.device) if last.exists() else None
        if ck is not None:  # checked before config.yaml, the run's record, is rewritten
            check_resume(self.out, ck.get("config", {}), cfg)
            if ck["epoch"] > cfg.epochs:  # its record stays as it is: it says what was run
                print(f"the run in {self.out} already has {ck['epoch']} epochs (asked "
                      f"{cfg.epochs}); nothing to do", file=sys.stderr, flush=True)
                self.epochs_done = self.resumed_epoch = int(ck["epoch"])
                return _finished_summary(self.out, ck)
        save_config(cfg, self.out / "config.yaml",
                    {"code_version": code_version(), "split": split, "device": self.device})
        if ck is not None:
            self.net.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            self.step_count = ck.get("step_count", 0)
            self.scaler.load_state_dict(ck["scaler"])
            self.gen.set_state(ck["rng"]["torch"])
            self.sampler.rng.bit_generator.state = ck["rng"]["numpy"]
            _set_global_rng(ck["rng"])
            epoch0, best, history = ck["epoch"], ck["best"], ck["history"]
            self.stale = int(ck.get("stale", 0))
            self.resumed_epoch = epoch0
            used = (f" ({history[-1]['elapsed_s'] / 60:.2g} of {cfg.time_budget_min:g} min "
                    "of its time budget used)" if cfg.time_budget_min and history else "")
            print(f"resumed from {last} at epoch {epoch0}/{cfg.epochs}{used}", file=sys.stderr,
                  flush=True)
        elif cfg.init_from:
            self._init_weights(cfg.init_from.replace("{fold}", str(cfg.fold)))
        t_start = time.perf_counter()
        elapsed0 = history[-1]["elapsed_s"] if history else 0.0
        self.t_start, self.elapsed_before = t_start, elapsed0
        self.epochs_done = epoch0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.epochs, initial=epoch0, desc=cfg.name, unit="epoch",
                       dynamic_ncols=True)
        try:
            history, best, stop_reason = self._epochs(epoch0, best, history, val, bar)
        finally:
            if bar is not None:
                bar.close()
        if not val:  # no validation: the last weights are the result
            self._save("best.pt", self._state(len(history), best, history))
        self._plot(history)
        summary = {"best_val_dice": best if val else None, "epochs": len(history),
                   "stop": stop_reason,
                   "train_s": history[-1]["elapsed_s"] if history else 0.0,
                   "steps": len(history) * cfg.steps_per_epoch,
                   "val_cases": [c.case_id for c in val]}
        text = json.dumps(summary, indent=1)
        write_replacing(self.out / "summary.json", lambda tmp: tmp.write_text(text))
        return summary

    def _epochs(self, epoch0: int, best: float, history: list[dict[str, Any]],
                val: list[Prepared], bar: Any) -> tuple[list[dict[str, Any]], float, str]:
        """The training loop from ``epoch0``: ``(history, best score, why it stopped)``;
        ``last.pt`` is written after every epoch."""
        cfg = self.cfg
        t_start, elapsed0 = self.t_start, self.elapsed_before
        stop_reason = "epochs"
        stale = self.stale
        for epoch in range(epoch0, cfg.epochs):
            # a resumed run that had already stopped stays stopped
            if cfg.early_stopping and stale >= cfg.early_stopping:
                stop_reason = "early stopping"
                break
            if self.time_fraction() >= 1.0:
                stop_reason = "time budget"
                break
            self.net.train()
            losses = []
            t_ep = time.perf_counter()
            for _ in range(cfg.steps_per_epoch):
                losses.append(self._step())
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                   "lr": self.opt.param_groups[0]["lr"],
                                   "epoch_s": time.perf_counter() - t_ep}
            if val and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                scores = self.validate(val)
                row.update(scores)
                if self.on_validate is not None:
                    self.on_validate(epoch + 1, self.progress_fraction(), scores)
                if scores["val_dice"] > best:
                    best, stale = scores["val_dice"], 0
                    self._save("best.pt", self._state(epoch + 1, best, history + [row]))
                else:
                    stale += 1
            self.stale = stale
            row["elapsed_s"] = elapsed0 + time.perf_counter() - t_start
            history.append(row)
            self._save("last.pt", self._state(epoch + 1, best, history))
            self.epochs_done = epoch + 1
            self._write_log(history)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}",
                                val=f"{row.get('val_dice', float('nan')):.3f}")
            if epoch + 1 == cfg.epochs:
                break  # the epoch limit, whatever the clock says
            if cfg.early_stopping and stale >= cfg.early_stopping:
                stop_reason = "early stopping"
                break
            if self.time_fraction() >= 1.0:
                stop_reason = "time budget"
                if val and "val_dice" not in row:
                    scores = self.validate(val)
                    row.update(scores)
                    if self.on_validate is not None:
                        self.on_validate(epoch + 1, 1.0, scores)
                    if scores["val_dice"] > best:
                        best = scores["val_dice"]
                        self._save("best.pt", self._state(epoch + 1, best, history))
                    self._save("last.pt", self._state(epoch + 1, best, history))
                    self._write_log(history)
                break
        return history, best, stop_reason

    def _step(self) -> float:
        import torch

        from braintumor.training.augment import augment_batch

        cfg = self.cfg
        imgs, tgts = zip(*(self.sampler.sample() for _ in range(cfg.batch_size)), strict=False)
        # augmentation runs where the network runs (on a GPU it would otherwise be the
        # bottleneck of a step)
        x = torch.from_numpy(np.stack(imgs)).to(self.device)
        y = torch.from_numpy(np.stack(tgts)).to(self.device).float()
        x, y = augment_batch(x, y, cfg.augment, self.gen)
        if cfg.output == "softmax":
            from braintumor.labels import channels_to_labels

            lab = torch.from_numpy(np.stack([channels_to_labels(t.cpu().numpy()) for t in y]))
            y = torch.nn.functional.one_hot(lab.long(), 4).permute(0, 4, 1, 2, 3).float()
            y = y.to(self.device)
        if self.step_count == 0:
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * self.lr_factor()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device, enabled=self.amp):
            out = self.net(x)
        if isinstance(out, (list, tuple)):
            out = [o.float() for o in out]
        else:
            out = out.float()
        loss = self.loss_fn(out, y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 12.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step_count += 1
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * self.lr_factor()
        return float(loss.detach())

    def validate(self, val: list[Prepared]) -> dict[str, float]:
        """Mean Dice per region on whole validation cases (cropped grid)."""
        from braintumor.inference import PostProcess, sliding_window_probs
        from braintumor.labels import region_masks

        self.net.eval()
        per: dict[str, list[float]] = {"WT": [], "TC": [], "ET": []}
        post = PostProcess()
        for c in val:
            probs = sliding_window_probs(self.net, c.image, self.cfg.patch,
                                         self.cfg.sw_overlap, self.device, self.cfg.output,
                                         whole_volume_max=self.cfg.whole_volume_max)
            pred = region_masks(post.apply(probs))
            ref = region_masks(c.label if c.label is not None else np.zeros_like(pred["WT"]))
            for r in per:
                per[r].append(_dice(pred[r], ref[r]))
        self.net.train()
        out = {f"val_{r.lower()}": float(np.mean(v)) for r, v in per.items()}
        out["val_dice"] = float(np.mean([out["val_wt"], out["val_tc"], out["val_et"]]))
        return out

    def _write_log(self, history: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        with open(self.out / "log.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(history)

    def _plot(self, history: list[dict[str, Any]]) -> None:
        if not history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in history]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        ax[0].plot(ep, [r["loss"] for r in history])
        ax[0].set_xlabel("epoch")
        ax[0].set_ylabel("training loss")
        vr = [r for r in history if "val_dice" in r]
        for key in ("val_wt", "val_tc", "val_et", "val_dice"):
            ax[1].plot([r["epoch"] for r in vr], [r[key] for r in vr], marker="o",
                       label=key[4:].upper() if key != "val_dice" else "mean")
        ax[1].set_xlabel("epoch")
        ax[1].set_ylabel("validation Dice")
        ax[1].set_ylim(0, 1)
        if vr:
            ax[1].legend(fontsize=8)
        fig.suptitle(self.cfg.name)
        fig.tight_layout()
        fig.savefig(self.out / "curve.png", dpi=90)
        plt.close(fig)


def lock_run_folder(out: Path) -> Any:
    """Take the advisory lock of a run folder (``.train.lock``, holding this process's id;
    the file is left in the folder, as removing a lock file others may be waiting on is
    not safe) and return its open file (closing it lets go), or refuse in one sentence
    when another process holds it. None where file locks are not available: no
    ``fcntl``, or a file system that takes no lock (NFS without its lock service, some
    network and FUSE mounts; the run then trains unlocked, said in a note)."""
    from braintumor.locks import claim

    return claim(out / ".train.lock",
                 lambda pid: f"{out} is being trained by another process (pid {pid}); wait "
                             "for it to end, or train into another folder.",
                 f"{out} is on a file system that does not support file locks, so it is "
                 "trained without one; do not train into it from two commands at once")


def _load_last(last: Path, device: str) -> dict[str, Any]:
    """A run folder's ``last.pt`` to resume from, or one sentence when it cannot be read
    (cut short, or not a checkpoint of this trainer): left where it is, as it may be
    worth keeping."""
    import torch

    from braintumor.errors import InputError

    try:
        ck = torch.load(last, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; the cause is said
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise InputError(f"{last}: cannot be read as a training checkpoint to resume from "
                         f"({why.rstrip(': ')}; cut short, or written by another set of "
                         "libraries); move it aside to train this run afresh, or train into "
                         "another folder.") from None
    if not (isinstance(ck, dict) and all(k in ck for k in ("model", "optimizer", "epoch"))):
        raise InputError(f"{last}: is not a training checkpoint of this trainer (no model, "
                         "optimizer and epoch in it); move it aside to train this run "
                         "afresh, or train into another folder.")
    return ck


def read_json_record(path: Path) -> dict[str, Any] | None:
    """A run's ``result.json`` / ``summary.json`` as a mapping; None when it is missing or
    cannot be read as one (cut short by a kill or a full disk while it was written before
    such files were put in place whole): that step is then done again."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _finished_summary(out: Path, ck: dict[str, Any]) -> dict[str, Any]:
    """The summary of a run that needs no more training: its ``summary.json``, or one
    made from its checkpoint where that is missing."""
    saved = read_json_record(out / "summary.json")  # None: missing or cut short
    if saved is not None:
        return saved
    history = ck.get("history") or []
    return {"best_val_dice": ck["best"] if ck.get("best", -1.0) >= 0 else None,
            "epochs": len(history), "stop": "epochs",
            "train_s": history[-1]["elapsed_s"] if history else 0.0,
            "steps": int(ck.get("step_count", 0)), "val_cases": []}


#: what may change when a run is resumed: how long it trains, how often it validates,
#: and settings of the machine; anything else would mix two recipes in one checkpoint
RESUMABLE_KEYS = ("epochs", "time_budget_min", "val_every", "early_stopping", "threads",
                  "num_workers", "name")


def check_resume(run_dir: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse (one sentence) to resume a run folder whose checkpoint was made with another
    config, apart from :data:`RESUMABLE_KEYS`."""
    from braintumor.config import changed_settings
    from braintumor.errors import InputError

    what = changed_settings(saved, to_dict(cfg), RESUMABLE_KEYS)
    if what:
        raise InputError(f"{run_dir}: holds a run trained with another config ({what}); "
                         "resume it with its own config, or train into another folder.")


def _global_rng() -> dict[str, Any]:
    """The process-wide random states that a step also draws from (dropout draws from
    torch's), so that a resumed run continues them."""
    import torch

    out: dict[str, Any] = {"torch_global": torch.get_rng_state(),
                           "numpy_global": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_global_rng(saved: dict[str, Any]) -> None:
    import torch

    if "torch_global" in saved:  # checkpoints from before these were saved lack them
        torch.set_rng_state(saved["torch_global"])
        np.random.set_state(saved["numpy_global"])
        random.setstate(saved["python"])
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
