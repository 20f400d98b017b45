"""Frozen dataclass configs, saved as YAML next to every checkpoint.

A checkpoint always knows how it was made: the config, the code version and the data
split are written beside it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from braintumor.errors import InputError


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation; ``enabled=False`` turns all of it off.

    ``strength`` scales every probability/magnitude (0 = off, 1 = default, 2 = strong).
    """

    enabled: bool = True
    strength: float = 1.0
    flips: bool = True
    rotate: bool = True  # in-plane 90-degree rotations + small-angle rotation
    scale: bool = True
    elastic: bool = False  # costly on a CPU; off by default
    intensity: bool = True  # gamma, brightness, contrast
    noise: bool = True
    # MONAI's BraTS-recipe intensity jitter, applied to every sample: scale by 1+U(-a, a),
    # shift by U(-a, a) (standard deviations); 0 = off. Not scaled by ``strength``.
    scale_shift: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run."""

    name: str = "run"
    network: str = "compact_unet"
    network_args: dict[str, Any] = field(default_factory=dict)
    output: str = "sigmoid"  # "sigmoid" (3 region channels WT,TC,ET) or "softmax" (4 labels)
    data: str = "../shared/data/brats2018"
    cache: str = "cache/brats2018"
    synthetic: int = 0  # >0: train on this many phantom cases instead of `data`
    synthetic_shape: tuple[int, int, int] = (64, 64, 48)
    case_ids: tuple[str, ...] = ()  # restrict training/validation to these cases (empty = all)
    folds: int = 3
    fold: int = 0  # -1: train on all cases (no validation)
    split_seed: int = 0
    patch: tuple[int, int, int] = (96, 96, 96)
    batch_size: int = 2
    fg_fraction: float = 0.33
    steps_per_epoch: int = 50
    epochs: int = 40
    time_budget_min: float = 0.0  # >0: stop after this many minutes of training
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | poly | constant
    warmup_steps: int = 50
    dropout: float = 0.0
    deep_supervision: bool = False
    label_smoothing: float = 0.0
    # dice_bce | dice_ce (softmax) | dice_sq (MONAI's BraTS recipe: squared Dice, no BCE)
    loss: str = "dice_bce"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_every: int = 5
    early_stopping: int = 0  # epochs without val improvement before stopping (0 = never)
    amp: bool = True  # mixed precision on GPU only
    threads: int = 0  # torch threads on CPU (0 = torch default)
    seed: int = 0
    sw_overlap: float = 0.25
    whole_volume_max: int = 0  # validate in one pass when the padded crop has <= this many voxels
    num_workers: int = 0
    # start from these weights (a checkpoint path; "{fold}" is replaced by the fold) with a
    # fresh optimizer and schedule: a warm restart that continues an earlier run
    init_from: str = ""

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with some fields changed (dotted ``augment.x`` keys allowed, and an
        ``augment`` mapping, merged into the current settings as a study's ``set:`` is);
        an unknown field is one sentence."""
        aug = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("augment.")}
        if isinstance(changes.get("augment"), dict):
            changes = dict(changes)
            aug = {**changes.pop("augment"), **aug}
        rest = {k: v for k, v in changes.items() if not k.startswith("augment.")}
        aug_names = {f.name for f in fields(self.augment)}
        unknown = sorted(set(rest) - {f.name for f in fields(self)}
                         | {f"augment.{k}" for k in set(aug) - aug_names})
        if unknown:
            raise InputError(f"Unknown config keys: {', '.join(unknown)}.")
        d = to_dict(self)
        d.update(rest)
        if aug:
            d["augment"] = {**to_dict(self.augment), **aug}
        return from_dict(d)  # checked as a config file is


def _normalise(kw: dict[str, Any], cls: type) -> dict[str, Any]:
    """Values as the fields hold them: a number written as text in a number field
    (PyYAML reads ``1e-3``, which has no dot, as text) becomes that number, and one case
    id given alone (``case_ids=Brats18_2013_11_1``) a list of that one id."""
    out = dict(kw)
    for f in fields(cls):
        v = out.get(f.name)
        if isinstance(f.default, float) and isinstance(v, str):
            try:
                out[f.name] = float(v.strip())
            except ValueError:
                pass  # left as it is: the check names the field
    if "case_ids" in out and cls is TrainConfig:
        ids = out["case_ids"]
        if ids is None:
            out["case_ids"] = ()
        elif isinstance(ids, (str, int)) and not isinstance(ids, bool):
            out["case_ids"] = (str(ids),)
        elif isinstance(ids, (list, tuple)):
            out["case_ids"] = tuple(str(x) for x in ids)
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples as lists) for YAML/JSON."""
    d = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return {k: fix(v) for k, v in d.items()}


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Plain dict -> TrainConfig, refusing unknown keys with one sentence."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(d) - known
    if unknown:
        raise InputError(f"Unknown config keys: {', '.join(sorted(unknown))}.")
    kw = _normalise(d, TrainConfig)
    if "augment" in kw and isinstance(kw["augment"], dict):
        aknown = {f.name for f in fields(AugmentConfig)}
        bad = set(kw["augment"]) - aknown
        if bad:
            raise InputError(f"Unknown augment keys: {', '.join(sorted(bad))}.")
        kw["augment"] = AugmentConfig(**_normalise(kw["augment"], AugmentConfig))
    elif "augment" in kw and not isinstance(kw["augment"], AugmentConfig):
        raise InputError(f"augment must be a mapping of augmentation settings, not "
                         f"{kw['augment']!r}.")
    for key in ("patch", "synthetic_shape"):
        if key in kw:
            v = kw[key]
            if not isinstance(v, (list, tuple)) or len(v) != 3 or \
                    not all(_whole(x) and int(x) > 0 for x in v):
                raise InputError(f"{key} must be three whole numbers above 0 (x, y, z), not "
                                 f"{v!r}.")
            kw[key] = tuple(int(x) for x in v)
    cfg = TrainConfig(**kw)
    check_config(cfg)
    return cfg


#: the values a config's named choices may take (what the trainer implements)
CHOICES: dict[str, tuple[str, ...]] = {
    "output": ("sigmoid", "softmax"),
    "optimizer": ("adamw", "adam", "sgd"),
    "schedule": ("cosine", "poly", "constant"),
    "loss": ("dice_bce", "dice_ce", "dice_sq"),
}


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_fields(obj: Any, prefix: str = "") -> None:
    """Each field's value of the kind its default has (a whole number where one is
    expected, a number, a yes/no, a text, a mapping), in one sentence if not."""
    for f in fields(obj):
        v, default = getattr(obj, f.name), f.default
        name = prefix + f.name
        if isinstance(default, bool):
            ok, kind = isinstance(v, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = _whole(v), "a whole number"
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            kind = "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(v, str), "a text"
        elif f.name == "network_args":
            ok, kind = isinstance(v, dict), "a mapping"
        else:
            continue
        if not ok:
            raise InputError(f"{name} must be {kind}, not {v!r}.")


def check_config(cfg: TrainConfig) -> None:
    """Refuse, in one sentence, a config the trainer would misread: a value of the wrong
    kind, a choice it does not implement (which it would silently replace by its
    default), or a number out of range."""
    _check_fields(cfg)
    if not isinstance(cfg.augment, AugmentConfig):
        raise InputError(f"augment must be a mapping of augmentation settings, not "
                         f"{cfg.augment!r}.")
    _check_fields(cfg.augment, "augment.")
    if not isinstance(cfg.case_ids, tuple) or not all(isinstance(x, str) for x in cfg.case_ids):
        raise InputError(f"case_ids must be a list of case ids, not {cfg.case_ids!r}.")
    for key in ("patch", "synthetic_shape"):
        v = getattr(cfg, key)
        if not isinstance(v, tuple) or len(v) != 3 or not all(_whole(x) and x > 0 for x in v):
            raise InputError(f"{key} must be three whole numbers above 0 (x, y, z), not "
                             f"{v!r}.")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise InputError(f"{key} must be one of {', '.join(allowed)}, not "
                             f"{getattr(cfg, key)!r}.")
    if cfg.loss == "dice_ce" and cfg.output != "softmax":
        raise InputError("loss dice_ce goes with output softmax; sigmoid outputs use dice_bce "
                         "or dice_sq.")
    for key in ("epochs", "steps_per_epoch", "batch_size", "val_every"):
        if getattr(cfg, key) <= 0:
            raise InputError(f"{key} must be above 0, not {getattr(cfg, key)!r}.")
    if cfg.folds < 2:
        raise InputError(f"folds must be 2 or more, not {cfg.folds}.")
    if not -1 <= cfg.fold < cfg.folds:
        raise InputError(f"fold {cfg.fold} does not exist: folds run 0 to {cfg.folds - 1} "
                         "(-1 trains on every case).")
    for key in ("lr", "warmup_steps", "weight_decay", "dropout", "label_smoothing",
                "time_budget_min", "fg_fraction", "early_stopping", "seed", "split_seed",
                "threads"):
        if getattr(cfg, key) < 0:
            raise InputError(f"{key} must be 0 or more, not {getattr(cfg, key)!r}.")
    if cfg.dropout >= 1 or cfg.fg_fraction > 1 or cfg.label_smoothing >= 1:
        raise InputError("dropout and label_smoothing must be under 1, fg_fraction at most 1.")
    if not 0 <= cfg.sw_overlap < 1:
        raise InputError(f"sw_overlap must be 0 or more and under 1 (the share of a window "
                         f"its neighbour overlaps), not {cfg.sw_overlap!r}.")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML settings file as a mapping, each way it can fail one sentence: no such
    file, not readable YAML, not a mapping of settings. An empty file is ``{}``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such config file.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{p} is not a readable YAML config ({first}).") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a config is a mapping of settings (key: value), "
                         f"not {type(raw).__name__}.")
    return raw


def changed_settings(saved: dict[str, Any], now: dict[str, Any], keep: tuple[str, ...] = (),
                     most: int = 3) -> str:
    """``"lr 0.002 -> 0.01, augment.noise True -> False"``: the settings of ``now`` that
    ``saved`` holds with another value (those in ``keep`` aside; of a mapping, only its
    entries that differ), the first ``most`` of them and how many more; empty when none
    differs."""
    changed = []
    for k in now:
        if k in keep or k not in saved or saved[k] == now[k]:
            continue
        a, b = saved[k], now[k]
        if isinstance(a, dict) and isinstance(b, dict):
            # an entry on one side only differs even where the other's would be None
            changed += [f"{k}.{x} {_entry(a, x)} -> {_entry(b, x)}" for x in {**a, **b}
                        if (x in a) != (x in b) or a.get(x) != b.get(x)]
        else:
            changed.append(f"{k} {a!r} -> {b!r}")
    what = ", ".join(changed[:most])
    return what + (f" and {len(changed) - most} more" if len(changed) > most else "")


def _entry(mapping: dict[str, Any], key: str) -> str:
    """A mapping's entry as :func:`changed_settings` says it (``unset`` when absent)."""
    return repr(mapping[key]) if key in mapping else "unset"


def load_config(path: str | Path) -> TrainConfig:
    """Read a training config YAML (a ``train:`` mapping or the fields at top level)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: config file not found.")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file in UTF-8, so not a YAML config.") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a config must be a mapping of fields.")
    if "train" in raw:
        if not isinstance(raw["train"], dict):
            raise InputError(f"{p}: 'train' must be a mapping of training settings "
                             f"(key: value), not {raw['train']!r}.")
        raw = raw["train"]
    return from_dict(raw)


def save_config(cfg: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a config (plus e.g. code version and data split) as YAML."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    d = {"train": to_dict(cfg)}
    if extra:
        d.update(extra)
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p
