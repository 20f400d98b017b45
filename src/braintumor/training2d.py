r"""Training and patient-wise cross-validation of the 2D slice model (LGG kaggle_3m).

Independent of the 3D trainer: a small loop over slices resized to ``size`` x ``size``,
with augmentation that imitates exported pictures (viewer windowing, greyscale export,
resizing, JPEG compression, flips, small rotations). Checkpoints every
``checkpoint_every`` steps make a run resumable: rerunning the same command continues.
A run folder goes on only with the recipe it was started with (how long it trains, where
the data lie, the machine and how models are judged may change; :data:`RESUMABLE_KEYS`),
and a finished run is not stretched to another length: its schedule has ended. ``final``
and ``export`` write weights beside the run (``<out>/final/unet2d_lgg.pt``); the shipped
model in the package is replaced only by a ``--dest`` that names it.

Usage::

    python -m braintumor.training2d cv    --config configs/lgg2d.yaml [--fold K]
    python -m braintumor.training2d final --config configs/lgg2d.yaml   # -> runs/lgg2d/final/
    python -m braintumor.training2d report --config configs/lgg2d.yaml
    python -m braintumor.training2d reeval --config configs/lgg2d_v5hv.yaml --from runs/lgg2d_v5
    python -m braintumor.training2d export --config configs/lgg2d_v5hv.yaml \
        --from runs/lgg2d_v5/final/final.pt --dest src/braintumor/models/lgg2d/unet2d_lgg.pt
    python -m braintumor.training2d external [--brats ../shared/data/brats2018]
    python -m braintumor.training2d ensemble --config configs/lgg2d_ens.yaml \
        --from runs/lgg2d_v5,runs/lgg2d_gpu            # fold models averaged, judged
    python -m braintumor.training2d pack --config configs/lgg2d_gpu.yaml --dest FILE.npz
    python -m braintumor.training2d cv --config configs/lgg2d_gpu.yaml --train-only \
        --device cuda --budget 6.5 --fold K    # on a GPU machine, from the packed slices
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import slices2d as s2d


@dataclass(frozen=True)
class Train2DConfig:
    """How a 2D model is trained and judged; saved inside every checkpoint."""

    data: str = "../shared/data/lgg_kaggle_3m"
    out: str = "runs/lgg2d"
    network: str = "unet2d"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    size: int = 128
    batch: int = 16
    steps: int = 1200
    lr: float = 2e-3
    weight_decay: float = 1e-4
    tumour_fraction: float = 0.5  # share of each batch drawn from slices with tumour
    # the last layer's bias starts at the logit of the tumour pixels' prior (~2 %): from 0
    # it takes Adam ~1/lr steps just to move the background logit where it belongs
    output_bias_init: float = -4.0
    # augmentation (probabilities)
    p_grey_flair: float = 0.3  # FLAIR channel alone, repeated: a greyscale FLAIR export
    p_grey_mix: float = 0.1  # luminance of the RGB composite: a colour export made grey
    p_channel_gain: float = 0.3
    # one channel lifted onto a flat grey floor with its contrast squeezed: an exported
    # composite whose channel kept a grey background (one LGG patient's T1 sits at 103/255)
    p_channel_offset: float = 0.0
    p_window: float = 0.5
    p_jpeg: float = 0.3
    p_resize: float = 0.3
    p_flip_ud: float = 0.1
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    # evaluation / post-processing
    threshold: float = 0.5  # single pictures
    stack_threshold: float | None = None  # stacks of slices (None: ``threshold``)
    min_fraction: float = 0.001
    # test-time flips averaged at inference: false, true (= "h", the left-right mirror
    # image) or "hv" (the four flips; slices2d.tta_views)
    tta: bool | str = False
    keep: str = "largest"  # 3D component rule of the shipped model (slices2d.KEEP_RULES)
    # CNN-guided watershed growing the outline to the FLAIR picture's edges
    # (slices2d.refine_masks: [sure_out, sigma] or None), for colour and greyscale
    # pictures; chosen by the report's cross-fold selection
    refine_colour: list[float] | None = None
    refine_grey: list[float] | None = None
    # the candidates the report chooses from: "grow" (REFINEMENTS) or "cut" (CUT_REFINEMENTS,
    # which may also move an edge inwards; measured, not shipped)
    refine_candidates: str = "grow"
    folds: int = 4
    fold_seed: int = 0
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    # warm restart: start from the weights of an earlier run ("{part}" is "cv/fold<K>"
    # or "final"), with a fresh optimiser and schedule
    init_from: str = ""
    # auxiliary training slices cut from 3D BraTS cases (T1, FLAIR, T1ce as RGB, whole
    # tumour as the mask): a folder of cases, the share of each batch drawn from them, and
    # every how many axial slices one is taken. They only ever train; every score is on
    # held-out LGG patients.
    aux_brats: str = ""
    aux_fraction: float = 0.0
    aux_every: int = 2
    # where a run trains: "cpu", "cuda" or "auto" (cuda when there is one); on a GPU the
    # network runs under bfloat16 autocast
    device: str = "cpu"
    # processes that make the augmented batches (0: the training process itself, one
    # random stream, as every CPU recipe here was trained)
    workers: int = 0
    # > 0: train for this many minutes of wall-clock time instead of ``steps``, the
    # learning rate annealed over the time (runs sharing one GPU machine)
    time_budget_min: float = 0.0
    # a packed copy of the slices at ``size`` (``python -m braintumor.training2d pack``),
    # read for training instead of ``data`` where the pictures are not at hand; held-out
    # patients are always judged on the pictures themselves
    slice_cache: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = list(self.scale)
        return d


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: how each kind of setting is checked (by its annotation) and what it should be, in words
_KINDS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str), "a text"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict[str, Any]": (lambda v: isinstance(v, dict), "a mapping of settings"),
    "tuple[float, float]": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                            and all(_is_number(x) for x in v), "a pair of numbers"),
    "float | None": (lambda v: v is None or _is_number(v), "a number or null"),
    "bool | str": (lambda v: isinstance(v, (bool, str)), "true, false or a text"),
    "list[float] | None": (lambda v: v is None or (isinstance(v, (list, tuple))
                                                   and all(_is_number(x) for x in v)),
                           "a list of numbers or null"),
}
#: settings that must be at least this much
_AT_LEAST = {"size": 8, "batch": 1, "steps": 1, "folds": 2, "threads": 1,
             "checkpoint_every": 1, "aux_every": 1, "workers": 0}


def check_config(raw: dict[str, Any], where: str) -> None:
    """Refuse (one sentence naming ``where`` and the key) a setting of the wrong kind or
    out of range."""
    from braintumor.errors import InputError

    for f in fields(Train2DConfig):
        if f.name not in raw:
            continue
        v = raw[f.name]
        ok, what = _KINDS.get(str(f.type), (lambda _: True, ""))
        if not ok(v):
            raise InputError(f"{where}: {f.name} is {v!r}; it should be {what}.")
        if f.name in _AT_LEAST and v < _AT_LEAST[f.name]:
            raise InputError(f"{where}: {f.name} is {v!r}; it should be at least "
                             f"{_AT_LEAST[f.name]}.")
    if raw.get("device", "cpu") not in ("cpu", "cuda", "auto"):
        raise InputError(f"{where}: device is {raw['device']!r}; use cpu, cuda or auto.")
    if "lr" in raw and raw["lr"] <= 0:
        raise InputError(f"{where}: lr is {raw['lr']!r}; it should be above 0.")
    for key in ("time_budget_min", "weight_decay", "tumour_fraction", "aux_fraction"):
        if key in raw and raw[key] < 0:
            raise InputError(f"{where}: {key} is {raw[key]!r}; it should not be negative.")


def load_config(path: str | Path | None, **overrides: Any) -> Train2DConfig:
    """Read a YAML config (unknown keys and settings of the wrong kind refused, one
    sentence each) and apply ``overrides``."""
    from braintumor.config import read_yaml_mapping
    from braintumor.errors import InputError

    raw: dict[str, Any] = {} if path is None else read_yaml_mapping(path)
    names = {f.name for f in fields(Train2DConfig)}
    bad = sorted(str(k) for k in set(raw) - names)
    if bad:
        raise InputError(f"{path}: unknown keys {', '.join(bad)}.")
    check_config(raw, str(path))
    given = {k: v for k, v in overrides.items() if v is not None}
    check_config(given, "the command line")
    raw.update(given)
    if "scale" in raw:
        raw["scale"] = tuple(raw["scale"])
    return Train2DConfig(**raw)


#: what may differ from the config a run folder was trained with when the same command
#: runs again: how long it trains (while unfinished), where the data and the run live,
#: the machine, and how the models are judged; anything else mixes two recipes in one
#: checkpoint
RESUMABLE_KEYS = ("data", "out", "steps", "time_budget_min", "checkpoint_every", "threads",
                  "workers", "device", "slice_cache", "threshold", "stack_threshold",
                  "min_fraction", "tta", "keep", "refine_colour", "refine_grey",
                  "refine_candidates", "folds", "fold_seed")


def check_resume(run_dir: Path, saved: dict[str, Any], cfg: Train2DConfig,
                 finished: bool = False) -> None:
    """Refuse (one sentence) to go on with a run folder whose checkpoint was made with
    another recipe (any key but :data:`RESUMABLE_KEYS`), or, ``finished``, to stretch a
    finished run to another length: its schedule has already ended."""
    from braintumor.config import changed_settings
    from braintumor.errors import InputError

    norm = {k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()}
    what = changed_settings(norm, cfg.to_dict(), RESUMABLE_KEYS)
    if what:
        raise InputError(f"{run_dir}: holds a run trained with another config ({what}); "
                         "go on with its own config, or train into another folder (--out).")
    if not finished:
        return
    if float(saved.get("time_budget_min") or 0) != float(cfg.time_budget_min or 0):
        raise InputError(
            f"{run_dir}: finished training with a time budget of "
            f"{saved.get('time_budget_min') or 0:g} min, not {cfg.time_budget_min:g}; its "
            "results stand: to train for another budget, train into another folder (--out).")
    if not cfg.time_budget_min and "steps" in saved and int(saved["steps"]) != cfg.steps:
        raise InputError(
            f"{run_dir}: finished training at {saved['steps']} steps, so --steps "
            f"{cfg.steps} would not train it on (its learning-rate schedule has ended); its "
            f"results stand: to train {cfg.steps} steps, train into another folder (--out).")


# ------------------------------------------------------------------- augmentation


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"))
    return out


def augment(image: np.ndarray, mask: np.ndarray, cfg: Train2DConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training sample from a slice already resized to ``(S, S, 3)`` uint8 and its
    ``(S, S)`` float mask -> network input ``(3, S, S)`` float32 and target ``(1, S, S)``.

    Order follows an export: geometry, viewer window, greyscale conversion, file
    resolution, JPEG, and finally the same :func:`~braintumor.slices2d.normalise` that
    inference uses.
    """
    from scipy import ndimage

    size = image.shape[0]
    img = image.astype(np.float32)
    msk = mask.astype(np.float32)
    # geometry: one affine warp (rotation, isotropic scale, shift) about the centre
    ang = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    sc = rng.uniform(*cfg.scale)
    c, s_ = np.cos(ang), np.sin(ang)
    mat = np.array([[c, -s_], [s_, c]]) / sc
    centre = np.array([size / 2 - 0.5] * 2)
    shift = rng.uniform(-0.06, 0.06, 2) * size
    offset = centre - mat @ (centre + shift)
    img = np.stack([ndimage.affine_transform(img[..., k], mat, offset, order=1, mode="constant")
                    for k in range(3)], axis=2)
    msk = ndimage.affine_transform(msk, mat, offset, order=1, mode="constant")
    if rng.random() < 0.5:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if rng.random() < cfg.p_flip_ud:
        img, msk = img[::-1], msk[::-1]
    # intensity: a channel on a grey floor, per-channel gain, then a viewer window (black
    # level, white level, gamma)
    if rng.random() < cfg.p_channel_offset:
        k = int(rng.integers(3))
        img[..., k] = rng.uniform(30.0, 120.0) + rng.uniform(0.3, 1.0) * img[..., k]
    if rng.random() < cfg.p_channel_gain:
        img = (img * rng.uniform(0.7, 1.3, 3)[None, None, :]).astype(np.float32)
    if rng.random() < cfg.p_window:
        top = float(np.percentile(img, rng.uniform(97.0, 100.0))) or 1.0
        lo = rng.uniform(0.0, 0.08) * top
        hi = top * rng.uniform(0.75, 1.1)
        img = (np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1) ** rng.uniform(0.7, 1.5)
               * 255.0).astype(np.float32)
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    u = rng.random()
    if u < cfg.p_grey_flair:
        img8 = np.repeat(img8[..., 1:2], 3, axis=2)
    elif u < cfg.p_grey_flair + cfg.p_grey_mix:
        g = img8.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        img8 = np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if rng.random() < cfg.p_resize:
        small = int(rng.integers(size // 3, size - 8))
        img8 = s2d.resize_uint8(s2d.resize_uint8(img8, (small, small)), (size, size))
    if rng.random() < cfg.p_jpeg:
        img8 = _jpeg(np.ascontiguousarray(img8), int(rng.integers(25, 95)))
    x = s2d.normalise(np.ascontiguousarray(img8))
    y = (msk > 0.5).astype(np.float32)[None]
    return x, np.ascontiguousarray(y)


# --------------------------------------------------------------------------- data


@dataclass
class SliceSet:
    """All slices of some patients at network size: ``images`` ``(N, S, S, 3)`` uint8,
    ``masks`` ``(N, S, S)`` float32 (area-averaged), ``patient`` ``(N,)`` ids."""

    images: np.ndarray
    masks: np.ndarray
    patient: np.ndarray


def to_slice_set(patients: list[s2d.PatientSlices], size: int) -> SliceSet:
    """Resize every slice to ``size`` with the same routine inference uses."""
    imgs, msks, pid = [], [], []
    for p in patients:
        assert p.masks is not None
        for img, m in zip(p.images, p.masks, strict=True):
            sq, _ = s2d.to_square(img, size)
            imgs.append(sq)
            mm, _ = s2d.to_square((m.astype(np.uint8) * 255)[..., None], size)
            msks.append(mm[..., 0].astype(np.float32) / 255.0)
            pid.append(p.patient_id)
    return SliceSet(np.stack(imgs), np.stack(msks), np.array(pid))


#: the 2D model's channel order, as the LGG pictures carry it (pre-contrast T1, FLAIR,
#: post-contrast T1)
AUX_CHANNELS = ("t1", "flair", "t1ce")


def case_slices(image: np.ndarray, label: np.ndarray, affine: np.ndarray, size: int,
                every: int = 2, fill: float = 0.68) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices of one 3D case, made to look like the LGG pictures.

    ``image`` ``(3, X, Y, Z)`` in :data:`AUX_CHANNELS` order, ``label`` ``(X, Y, Z)``
    (whole tumour > 0). The volume is turned to RAS so each picture has the nose up, as
    in the LGG set; each channel is scaled to 8 bits by its 99.5th percentile inside the
    brain; each picture is a square around the brain in which the brain spans ``fill`` of
    the side (the LGG pictures show the skull too). Slices with less than 2 % brain are
    skipped. Returns ``(N, size, size, 3)`` uint8 and ``(N, size, size)`` float32.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    img = np.stack([nib.orientations.apply_orientation(c, ornt) for c in image])
    lab = nib.orientations.apply_orientation(label, ornt) > 0
    brain = img.max(axis=0) > 0
    img8 = np.zeros(img.shape, np.uint8)
    for c in range(img.shape[0]):
        vals = img[c][brain]
        top = float(np.percentile(vals, 99.5)) if vals.size else 1.0
        img8[c] = np.clip(img[c] / max(top, 1e-6) * 220.0, 0, 255).astype(np.uint8)
    xs, ys = np.nonzero(brain.any(axis=2))
    if xs.size == 0:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    half = max(xs.max() - xs.min(), ys.max() - ys.min()) / fill / 2
    area = brain.sum(axis=(0, 1))
    zs = [z for z in range(0, brain.shape[2], max(1, every))
          if area[z] >= 0.02 * brain.shape[0] * brain.shape[1]]
    pics, masks = [], []
    for z in zs:
        # rows = anterior (up) to posterior, columns = the x axis
        pic = np.rot90(np.moveaxis(img8[:, :, :, z], 0, 2))
        msk = np.rot90(lab[:, :, z]).astype(np.uint8) * 255
        r0, c0 = int(round(img.shape[2] - 1 - cy - half)), int(round(cx - half))
        side = int(round(2 * half))
        canvas = np.zeros((side, side, 3), np.uint8)
        mcanvas = np.zeros((side, side), np.uint8)
        rs, cs = max(r0, 0), max(c0, 0)
        re_, ce = min(r0 + side, pic.shape[0]), min(c0 + side, pic.shape[1])
        canvas[rs - r0:re_ - r0, cs - c0:ce - c0] = pic[rs:re_, cs:ce]
        mcanvas[rs - r0:re_ - r0, cs - c0:ce - c0] = msk[rs:re_, cs:ce]
        sq, _ = s2d.to_square(canvas, size)
        mm, _ = s2d.to_square(mcanvas[..., None], size)
        pics.append(sq)
        masks.append(mm[..., 0].astype(np.float32) / 255.0)
    return np.stack(pics), np.stack(masks)


def brats_stacks(root: str | Path, size: int, every: int = 2
                 ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(case id, pictures, masks)``: :func:`case_slices` of each labelled case under
    ``root`` (BraTS layout), one case at a time."""
    from braintumor import cases
    from braintumor.cases import MODALITIES

    for src in cases.discover(root):
        case = cases.load_case(src)
        if case.label is None:
            continue
        chans = case.image[[MODALITIES.index(m) for m in AUX_CHANNELS]]
        yield (case.case_id, *case_slices(chans, case.label, case.affine, size, every))


def pack_slices(data: SliceSet, dest: str | Path) -> Path:
    """Write ``data`` compactly (each picture as PNG bytes, the masks in steps of 1/255)
    to ``dest`` (.npz), for :func:`load_slice_cache`."""
    from PIL import Image

    blobs, offsets = [], [0]
    for img in data.images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(blobs[-1]))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, png=np.concatenate(blobs), offsets=np.array(offsets, np.int64),
                        masks=np.round(data.masks * 255).astype(np.uint8),
                        patient=data.patient.astype(str))
    return dest


def load_slice_cache(path: str | Path) -> SliceSet:
    """The :class:`SliceSet` that :func:`pack_slices` wrote."""
    from PIL import Image

    with np.load(path) as z:
        png, off = z["png"], z["offsets"]
        images = np.stack([np.asarray(Image.open(io.BytesIO(png[a:b].tobytes())).convert("RGB"))
                           for a, b in zip(off[:-1], off[1:], strict=True)])
        return SliceSet(images, z["masks"].astype(np.float32) / 255.0, z["patient"].astype(str))


def subset(data: SliceSet, patient_ids: set[str] | list[str]) -> SliceSet:
    """The slices of the named patients."""
    keep = np.isin(data.patient, list(patient_ids))
    return SliceSet(data.images[keep], data.masks[keep], data.patient[keep])


def brats_slice_set(root: str | Path, size: int, every: int = 2) -> SliceSet:
    """:func:`case_slices` of every labelled case under ``root`` (BraTS layout)."""
    imgs, msks, pid = [], [], []
    for cid, a, b in brats_stacks(root, size, every):
        imgs.append(a)
        msks.append(b)
        pid += [cid] * len(a)
    if not imgs:
        from braintumor.errors import InputError

        raise InputError(f"{root}: no labelled BraTS cases for the auxiliary slices.")
    return SliceSet(np.concatenate(imgs), np.concatenate(msks), np.array(pid))


# ----------------------------------------------------------------------- training


Pool = tuple[SliceSet, np.ndarray, np.ndarray]


def _pools(data: SliceSet, aux: SliceSet | None, cfg: Train2DConfig
           ) -> tuple[list[Pool], list[float]]:
    """``(slice set, tumour slice indices, tumour-free indices)`` to draw batches from, and
    each one's share of a batch."""
    def split(d: SliceSet) -> Pool:
        has_t = d.masks.reshape(len(d.masks), -1).max(1) > 0.5
        return d, np.flatnonzero(has_t), np.flatnonzero(~has_t)

    pools, share = [split(data)], [1.0]
    if aux is not None and cfg.aux_fraction > 0:
        pools.append(split(aux))
        share = [1.0 - cfg.aux_fraction, cfg.aux_fraction]
    return pools, share


def make_batch(pools: list[Pool], share: list[float], cfg: Train2DConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented batch: ``(B, 3, S, S)`` inputs and ``(B, 1, S, S)`` targets, a share
    ``cfg.tumour_fraction`` of each pool's pictures drawn from slices with tumour."""
    counts = rng.multinomial(cfg.batch, share)
    pairs = []
    for (d, pos, neg), n in zip(pools, counts, strict=True):
        n_pos = int(rng.binomial(n, cfg.tumour_fraction))
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, n - n_pos)])
        pairs += [augment(d.images[i], d.masks[i], cfg, rng) for i in idx.astype(int)]
    return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])


def _worker_batches(pools: list[Pool], share: list[float], cfg: Train2DConfig,
                    start: int) -> Any:
    """An endless loader of batches made by ``cfg.workers`` processes, each with its own
    random stream (seeded by the config's seed, the worker and the step it resumes at)."""
    import torch

    class Batches(torch.utils.data.IterableDataset):  # type: ignore[misc]
        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            info = torch.utils.data.get_worker_info()
            rng = np.random.default_rng([cfg.seed, info.id if info else 0, start])
            while True:
                x, y = make_batch(pools, share, cfg, rng)
                yield torch.from_numpy(x), torch.from_numpy(y)

    return iter(torch.utils.data.DataLoader(
        Batches(), batch_size=None, num_workers=cfg.workers, prefetch_factor=4,
        pin_memory=torch.cuda.is_available(), multiprocessing_context="fork",
        persistent_workers=True))


def train_device(cfg: Train2DConfig) -> str:
    """The device a run trains on: ``cfg.device``, with ``auto`` resolved."""
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        from braintumor.errors import InputError

        raise InputError("device cuda was asked for, but PyTorch sees no CUDA GPU.")
    return cfg.device


def _checkpoint(path: Path, net: Any, opt: Any, sched: Any, step: int, cfg: Train2DConfig,
                rng: np.random.Generator, log: list[dict[str, float]],
                elapsed: float = 0.0) -> None:
    import torch

    from braintumor.io import write_replacing

    state = {"state_dict": net.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "step": step, "config": cfg.to_dict(),
             "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "log": log, "elapsed": elapsed}
    # a temporary name of this process's own, removed when the save fails (a full disk)
    write_replacing(path, lambda tmp: torch.save(state, tmp))


def train(cfg: Train2DConfig, data: SliceSet, out_dir: str | Path, part: str = "final",
          aux: SliceSet | None = None) -> Path:
    """Train on ``data`` (and ``aux``, a share ``cfg.aux_fraction`` of every batch);
    resume from ``out_dir/last.pt`` if present. Returns the path of the final checkpoint
    ``out_dir/final.pt`` (weights + config). The folder is locked meanwhile, as the 3D
    trainer's (a second trainer on it is refused in one sentence), and the temporary
    files of checkpoint saves killed before (SIGKILL, out of memory) are removed first."""
    from braintumor.locks import remove_partials
    from braintumor.training.trainer import lock_run_folder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_folder(out)
    try:
        if lock is not None:  # no other trainer here: a save killed before left these
            remove_partials(out, ("last.pt",))
        return _train(cfg, data, out, part, aux)
    finally:
        if lock is not None:
            lock.close()


def _train(cfg: Train2DConfig, data: SliceSet, out: Path, part: str,
           aux: SliceSet | None) -> Path:
    import torch

    from braintumor.slices2d import build_network

    torch.set_num_threads(cfg.threads)
    final = out / "final.pt"
    if final.exists():
        check_resume(out, torch.load(final, map_location="cpu", weights_only=False)
                     .get("config", {}), cfg, finished=True)
        return final
    device = train_device(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = build_network(cfg.to_dict())
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    if convs and convs[-1].bias is not None:
        torch.nn.init.constant_(convs[-1].bias, cfg.output_bias_init)
    if cfg.init_from:
        init = torch.load(cfg.init_from.format(part=part), map_location="cpu", weights_only=False)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in init["state_dict"].items()})
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget_s = cfg.time_budget_min * 60.0
    # progress through the schedule, 0 .. 1: steps done, or seconds spent, of the budget
    progress = [0.0]

    def lr_factor(t: int) -> float:
        # linear warm-up over the first 5 %, then cosine decay to zero at the end
        if budget_s <= 0:
            progress[0] = min(t, cfg.steps) / cfg.steps
        warm = min(1.0, (progress[0] + 1.0 / max(cfg.steps, 1)) / 0.05) if budget_s > 0 \
            else min(1.0, (t + 1) / max(1, cfg.steps // 20))
        return float(warm * 0.5 * (1 + np.cos(np.pi * min(progress[0], 1.0))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    step, log, spent = 0, [], 0.0
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        check_resume(out, ck.get("config", {}), cfg)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, log, spent = int(ck["step"]), list(ck["log"]), float(ck.get("elapsed", 0.0))
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed {out} at step {step}", flush=True)
    pools, share = _pools(data, aux, cfg)
    loader = _worker_batches(pools, share, cfg, step) if cfg.workers > 0 else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    net.train()
    t0, run_loss = time.perf_counter() - spent, 0.0

    def running() -> bool:
        if budget_s > 0:
            return time.perf_counter() - t0 < budget_s
        return step < cfg.steps

    while running():
        if loader is not None:
            xb, yb = next(loader)
        else:
            xa, ya = make_batch(pools, share, cfg, rng)
            xb, yb = torch.as_tensor(xa), torch.as_tensor(ya)
        x = xb.to(device, non_blocking=True)
        y = yb.to(device, non_blocking=True)
        with amp:
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if budget_s > 0:
            progress[0] = (time.perf_counter() - t0) / budget_s
        sched.step()
        step += 1
        run_loss += float(loss.detach())
        if step % 25 == 0:
            el = time.perf_counter() - t0
            log.append({"step": step, "loss": run_loss / 25, "seconds": el})
            total = f"{budget_s:.0f}s" if budget_s > 0 else str(cfg.steps)
            print(f"step {step} ({total}) loss {run_loss / 25:.4f} "
                  f"lr {sched.get_last_lr()[0]:.2e} {el:.0f}s", flush=True)
            run_loss = 0.0
        if step % cfg.checkpoint_every == 0 or (budget_s <= 0 and step == cfg.steps):
            _checkpoint(last, net, opt, sched, step, cfg, rng, log, time.perf_counter() - t0)
    net.to("cpu")
    torch.save({"state_dict": net.state_dict(), "config": {**cfg.to_dict(), "steps": step},
                "log": log}, final)
    return final


# --------------------------------------------------------------------- evaluation


def _grey_flair(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., 1:2])


def _jpeg_q50(img: np.ndarray) -> np.ndarray:
    return _jpeg(np.ascontiguousarray(img), 50)


INPUT_MODES = {"rgb": lambda a: a, "grey": _grey_flair, "jpeg50": _jpeg_q50}


def predict_patient(model: s2d.Model2D, patient: s2d.PatientSlices, mode: str) -> np.ndarray:
    """Probabilities ``(N, H, W)`` of one patient's slices through the inference path
    (``mode``: ``rgb`` as stored, ``grey`` the FLAIR channel alone, ``jpeg50``)."""
    conv = INPUT_MODES[mode]
    xs, geos = [], []
    for img in patient.images:
        x, g = s2d.prepare_input(conv(img), model.size)
        xs.append(x)
        geos.append(g)
    small = s2d.predict_batch(model, np.stack(xs))
    return np.stack([np.clip(s2d.restore(p, g), 0, 1) for p, g in zip(small, geos, strict=True)])


#: post-processings judged in CV: name -> component rule of slices2d.postprocess_stack
POSTPROC = {"slice": "all", "volume": "largest", "longest": "longest"}


def evaluate_model(model: s2d.Model2D, patients: list[s2d.PatientSlices],
                   modes: tuple[str, ...] = ("rgb", "grey"),
                   prob_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{mode: {post: {patient: stack_metrics}}}`` for each input mode and
    post-processing (``slice``: each slice on its own, specks removed; ``volume``: the
    largest 3D component kept; ``longest``: the component spanning most slices).
    Probabilities are saved to ``prob_dir`` (uint8) if given."""
    res: dict[str, dict[str, Any]] = {}
    for mode in modes:
        res[mode] = {k: {} for k in POSTPROC}
        for p in patients:
            assert p.masks is not None
            probs = predict_patient(model, p, mode)
            if prob_dir is not None:
                prob_dir.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(prob_dir / f"{p.patient_id}_{mode}.npz",
                                    prob=(probs * 255).round().astype(np.uint8))
            for name, keep in POSTPROC.items():
                pred = s2d.postprocess_stack(probs, model.threshold, model.config.get(
                    "min_fraction", 0.001), keep)
                res[mode][name][p.patient_id] = s2d.stack_metrics(pred, p.masks)
    return res


def aux_slices(cfg: Train2DConfig) -> SliceSet | None:
    """The auxiliary BraTS slices a config asks for, or None."""
    if not cfg.aux_brats or cfg.aux_fraction <= 0:
        return None
    return brats_slice_set(cfg.aux_brats, cfg.size, cfg.aux_every)


def _judge_fold(cfg: Train2DConfig, ck: Path, va: list[s2d.PatientSlices], fold_dir: Path,
                record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Judge the fold model ``ck`` on its held-out patients ``va`` with ``cfg``'s inference
    settings; probabilities to ``fold_dir/probs``, ``record`` plus the results to
    ``fold_dir/metrics.json``. Returns the results."""
    model = s2d.load_model_2d(ck)
    model = s2d.Model2D(model.network, {**model.config, "threshold": cfg.threshold,
                                        "min_fraction": cfg.min_fraction, "tta": cfg.tta})
    res = evaluate_model(model, va, ("rgb", "grey", "jpeg50"), fold_dir / "probs")
    (fold_dir / "metrics.json").write_text(json.dumps({**record, "results": res}, indent=1)
                                           + "\n")
    return res


def training_slices(cfg: Train2DConfig, patient_ids: list[str],
                    patients: list[s2d.PatientSlices] | None = None) -> SliceSet:
    """The named patients' slices at ``cfg.size``: from ``cfg.slice_cache`` if the config
    names one, else from ``patients`` (or the pictures under ``cfg.data``)."""
    if cfg.slice_cache:
        return subset(load_slice_cache(cfg.slice_cache), patient_ids)
    if patients is None:
        patients = s2d.load_lgg(cfg.data, patient_ids)
    return to_slice_set([p for p in patients if p.patient_id in set(patient_ids)], cfg.size)


def _all_patient_ids(cfg: Train2DConfig) -> list[str]:
    if cfg.slice_cache:  # the ids alone, without decoding the pictures
        with np.load(cfg.slice_cache) as z:
            return sorted({str(p) for p in z["patient"]})
    return [p.name for p in s2d.list_patients(cfg.data)]


def _train_seconds(ck: Path, measured: float) -> float:
    """Training time of a fold: the run's own log (a model trained elsewhere and judged
    here), else the time ``train`` took here."""
    import torch

    log = torch.load(ck, map_location="cpu", weights_only=False).get("log") or []
    return float(log[-1]["seconds"]) if log else measured


def run_cv(cfg: Train2DConfig, only_fold: int | None = None, train_only: bool = False) -> Path:
    """Patient-wise k-fold cross-validation: train on k-1 folds, judge the held-out
    patients; results (per fold JSON) under ``out/cv``. ``train_only`` skips the judging
    (a later run without it judges the trained folds)."""
    from braintumor.errors import InputError

    out = Path(cfg.out) / "cv"
    folds_file = out / "folds.json"
    n_folds = len(s2d.load_folds(folds_file)) if folds_file.exists() else cfg.folds
    if n_folds != cfg.folds:
        raise InputError(f"{folds_file}: this run is split into {n_folds} folds, the config "
                         f"asks for {cfg.folds}; train into another folder (--out).")
    if only_fold is not None and not 0 <= only_fold < n_folds:
        raise InputError(f"--fold {only_fold}: the folds are numbered 0 to {n_folds - 1}.")
    ids = _all_patient_ids(cfg)
    if folds_file.exists():
        folds = s2d.load_folds(folds_file)
    else:
        folds = s2d.make_folds(ids, cfg.folds, cfg.fold_seed)
        s2d.save_folds(folds, folds_file)
    patients = None if train_only else s2d.load_lgg(cfg.data)
    for k, held in enumerate(folds):
        if only_fold is not None and k != only_fold:
            continue
        res_file = out / f"fold{k}" / "metrics.json"
        final = out / f"fold{k}" / "final.pt"
        if final.exists() and (res_file.exists() or train_only):
            import torch

            saved = torch.load(final, map_location="cpu", weights_only=False)
            check_resume(out / f"fold{k}", saved.get("config", {}), cfg, finished=True)
            steps = saved.get("config", {}).get("steps", "?")
            print(f"fold {k}: already trained ({steps} steps)"
                  + (f" and judged: {res_file}" if res_file.exists() else ""), flush=True)
            continue
        if res_file.exists():
            print(f"fold {k}: already judged: {res_file}", flush=True)
            continue
        tr = [pid for pid in ids if pid not in held]
        print(f"fold {k}: train {len(tr)} patients, validate {len(held)}", flush=True)
        t0 = time.perf_counter()
        ck = train(cfg, training_slices(cfg, tr, patients), out / f"fold{k}",
                   part=f"cv/fold{k}", aux=aux_slices(cfg))
        if patients is None:
            continue
        train_s = _train_seconds(ck, time.perf_counter() - t0)
        va = [p for p in patients if p.patient_id in held]
        res = _judge_fold(cfg, ck, va, out / f"fold{k}",
                          {"fold": k, "patients": held, "train_seconds": train_s})
        print(json.dumps({m: {pp: s2d.summarise(r) for pp, r in v.items()}
                          for m, v in res.items()}, indent=1), flush=True)
    return out


def export_model(ck: Path | list[Path], dest: Path, cfg: Train2DConfig) -> Path:
    """Write shippable weights: float16 state dict + config (threshold included), and
    their ONNX export beside them (:func:`braintumor.slices2d.export_onnx_2d`). Several
    checkpoints (of the config's network) make an ensemble whose probabilities are
    averaged (``members``)."""
    import torch

    cks = ck if isinstance(ck, list) else [ck]
    states = []
    for c in cks:
        blob = torch.load(c, map_location="cpu", weights_only=False)
        states.append({k: v.half() if v.is_floating_point() else v
                       for k, v in blob["state_dict"].items()})
    conf = cfg.to_dict()
    for key in ("data", "out", "slice_cache", "device", "workers", "time_budget_min"):
        conf.pop(key, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"state_dict": states[0], "config": conf}
    if len(states) > 1:
        out["members"] = states
        out["member_sources"] = [str(c) for c in cks]
    torch.save(out, dest)
    # the ONNX export beside the weights is what predicting runs: never leave a stale one
    try:
        s2d.export_onnx_2d(dest)
    except Exception:  # noqa: BLE001 - no exporter here: the weights run with PyTorch
        for f in s2d.onnx_files(dest):
            f.unlink(missing_ok=True)
    return dest


def default_export(cfg: Train2DConfig) -> Path:
    """Where ``final`` and ``export`` write the weights unless told: beside the run's
    final checkpoint (``<out>/final/unet2d_lgg.pt``), never the package's shipped model,
    which only a ``--dest`` naming it replaces."""
    return Path(cfg.out) / "final" / s2d.MODEL_FILE


def run_final(cfg: Train2DConfig, steps: int | None = None,
              dest: str | Path | None = None) -> Path:
    """Train on all patients and export the weights to ``dest`` (default
    :func:`default_export`), so a candidate waits for its CV before it is shipped."""
    c = replace(cfg, steps=steps or cfg.steps)
    ck = train(c, training_slices(c, _all_patient_ids(c)), Path(cfg.out) / "final",
               aux=aux_slices(c))
    return export_model(ck, Path(dest) if dest else default_export(c), c)


#: thresholds the cross-fold selection may pick besides the config's own: a net trained
#: on batches half made of tumour slices is not calibrated, and the best cut-off for
#: per-patient Dice need not be 0.5
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


def candidate_posts(threshold: float) -> dict[str, tuple[str, float]]:
    """Post-processings the selection chooses from: ``{name: (component rule,
    threshold)}``. The names of :data:`POSTPROC` stand for the config's ``threshold``;
    the stack rules at each other threshold of :data:`THRESHOLDS` are named
    ``"<name>@<t>"``. Ties go to the first, so the config's threshold is preferred."""
    out = {name: (rule, threshold) for name, rule in POSTPROC.items()}
    for t in THRESHOLDS:
        if abs(t - threshold) > 1e-9:
            out.update({f"{name}@{t:g}": (rule, t) for name, rule in POSTPROC.items()
                        if rule != "all"})
    return out


def describe_post(name: str, threshold: float) -> str:
    """``"longest@0.3"`` -> ``"longest, threshold 0.3"`` (the config's threshold when
    the name carries none)."""
    rule, _, t = name.partition("@")
    return f"{POSTPROC.get(rule, rule)}, threshold {float(t) if t else threshold:g}"


def rescore_folds(cfg: Train2DConfig, folds: list[dict[str, Any]],
                  modes: tuple[str, ...] = ("rgb", "grey", "jpeg50")
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """Score every fold's saved held-out probabilities (``fold<K>/probs``) under each
    post-processing of :func:`candidate_posts` -> ``{mode: {post: {patient:
    stack_metrics}}}``.

    Rescoring from the probabilities (rather than reading ``metrics.json``) lets runs
    made before a rule existed be judged by it.
    """
    cv = Path(cfg.out) / "cv"
    ids = [pid for f in folds for pid in f["patients"]]
    masks = {p.patient_id: p.masks for p in s2d.load_lgg(cfg.data, ids)}
    posts = candidate_posts(cfg.threshold)
    res: dict[str, dict[str, dict[str, Any]]] = {}
    for f in folds:
        for mode in modes:
            for pid in f["patients"]:
                file = cv / f"fold{f['fold']}" / "probs" / f"{pid}_{mode}.npz"
                if not file.exists():
                    continue
                with np.load(file) as z:
                    probs = z["prob"].astype(np.float32) / 255.0
                ref = masks[pid]
                assert ref is not None  # load_lgg reads every patient's masks
                for post, (rule, thr) in posts.items():
                    pred = s2d.postprocess_stack(probs, thr, cfg.min_fraction, rule)
                    res.setdefault(mode, {}).setdefault(post, {})[pid] = \
                        s2d.stack_metrics(pred, ref)
    return res


def select_rule(merged: dict[str, dict[str, dict[str, Any]]], patients: list[str],
                modes: tuple[str, ...] = ("rgb", "grey")) -> str:
    """The post-processing (a key of ``merged``: component rule, maybe with a threshold)
    with the best mean per-patient Dice over ``patients``, averaged over ``modes``
    (ties: the first)."""
    def score(post: str) -> float:
        return float(np.mean([merged[m][post][p]["dice"] for m in modes for p in patients]))

    return max((k for k in merged[modes[0]] if k != "selected"), key=score)


def cross_fold_selection(merged: dict[str, dict[str, dict[str, Any]]],
                         folds: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]],
                                                              list[str]]:
    """Post-processing chosen without the held-out patients: for fold K, the rule that
    scores best on the other folds' held-out patients is applied to fold K's.

    Returns ``({mode: {patient: stack_metrics}}, [rule per fold])``.
    """
    chosen, out = [], {m: {} for m in merged}  # type: ignore[var-annotated]
    for f in folds:
        others = [p for g in folds if g is not f for p in g["patients"]]
        post = select_rule(merged, others)
        chosen.append(post)
        for m in merged:
            out[m].update({p: merged[m][post][p] for p in f["patients"] if p in merged[m][post]})
    return out, chosen


#: refinements (:func:`braintumor.slices2d.refine_masks`: sure_out, sigma) the
#: cross-fold selection chooses from for each input kind; None (the network's outline as
#: it is) first, so it wins a tie
REFINEMENTS: tuple[s2d.Refinement | None, ...] = (
    None, (0.02, 1.0), (0.05, 1.0), (0.02, 2.0), (0.05, 2.0), (0.1, 2.0))
#: the candidates that may also cut the outline (sure_out, sure_in, sigma): the first
#: version, measured and not shipped (``refine_candidates: cut``)
CUT_REFINEMENTS: tuple[s2d.Refinement | None, ...] = (
    None, (0.1, 0.9, 1.0), (0.1, 0.9, 2.0), (0.2, 0.8, 2.0), (0.05, 0.9, 2.0), (0.1, 0.7, 2.0))


def refine_candidates(cfg: Train2DConfig) -> tuple[s2d.Refinement | None, ...]:
    """The refinements the report chooses from for ``cfg``."""
    table = {"grow": REFINEMENTS, "cut": CUT_REFINEMENTS}
    if cfg.refine_candidates not in table:
        from braintumor.errors import InputError

        raise InputError(f"refine_candidates {cfg.refine_candidates!r}: use grow or cut.")
    return table[cfg.refine_candidates]
#: a refinement must raise the training patients' mean Dice by more than this
REFINE_MIN_GAIN = 0.002
#: the input whose Dice chooses each kind's refinement, and the kind each input is
REFINE_KIND = {"rgb": "colour", "grey": "grey", "jpeg50": "colour"}


def describe_refine(setting: s2d.Refinement | list[float] | None) -> str:
    """``(0.05, 2.0)`` -> ``"grow to p 0.05, sigma 2"``; ``(0.1, 0.9, 2.0)`` ->
    ``"band 0.1-0.9, sigma 2"``; None -> ``"none"``."""
    if setting is None:
        return "none"
    if len(setting) == 3:
        return f"band {setting[0]:g}-{setting[1]:g}, sigma {setting[2]:g}"
    return f"grow to p {setting[0]:g}, sigma {setting[1]:g}"


class RefineScores:
    """Per-patient stack metrics of every refinement on top of a post-processing, for the
    saved held-out probabilities of a CV run, computed on demand and kept."""

    def __init__(self, cfg: Train2DConfig, folds: list[dict[str, Any]]):
        self.cfg = cfg
        self.fold_of = {pid: f["fold"] for f in folds for pid in f["patients"]}
        self.patients = {p.patient_id: p for p in s2d.load_lgg(cfg.data, list(self.fold_of))}
        self.posts = candidate_posts(cfg.threshold)
        self.candidates = refine_candidates(cfg)
        self._inputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._scores: dict[tuple[str, int, str, str], dict[str, Any]] = {}

    def _input(self, mode: str, pid: str) -> tuple[np.ndarray, np.ndarray]:
        key = (mode, pid)
        if key not in self._inputs:
            file = Path(self.cfg.out) / "cv" / f"fold{self.fold_of[pid]}" / "probs" / \
                f"{pid}_{mode}.npz"
            with np.load(file) as z:
                probs = z["prob"].astype(np.float32) / 255.0
            conv = INPUT_MODES[mode]
            flair = np.stack([s2d.flair_of(conv(img)) for img in self.patients[pid].images])
            self._inputs[key] = (probs, flair)
        return self._inputs[key]

    def score(self, post: str, k: int, mode: str, pid: str) -> dict[str, Any]:
        """Metrics of patient ``pid`` (input ``mode``) under ``post`` then
        refinement ``k`` of :func:`refine_candidates`."""
        key = (post, k, mode, pid)
        if key not in self._scores:
            probs, flair = self._input(mode, pid)
            rule, thr = self.posts[post]
            masks = s2d.postprocess_stack(probs, thr, self.cfg.min_fraction, rule)
            masks = s2d.refine_masks(probs, flair, masks, self.candidates[k])
            ref = self.patients[pid].masks
            assert ref is not None  # load_lgg reads every patient's masks
            self._scores[key] = s2d.stack_metrics(masks, ref)
        return self._scores[key]

    def choose(self, post: str, kind: str, patients: list[str]) -> int:
        """Index into the candidates of the best refinement of ``kind`` (colour: judged
        on the RGB input, grey: on the greyscale one) on ``patients`` under ``post``."""
        mode = "rgb" if kind == "colour" else "grey"
        means = [float(np.mean([self.score(post, k, mode, p)["dice"] for p in patients]))
                 for k in range(len(self.candidates))]
        best = int(np.argmax(means))
        return best if means[best] - means[0] > REFINE_MIN_GAIN else 0


def refine_selection(cfg: Train2DConfig, folds: list[dict[str, Any]], chosen: list[str],
                     modes: tuple[str, ...], final_post: str
                     ) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, int]],
                                dict[str, int]]:
    """The refinement of each input kind chosen without the held-out patients: for fold
    K, on the other folds' held-out patients under fold K's own post-processing
    (``chosen[K]``); single pictures ("each slice alone", the config's threshold) get
    the same refinement, as the config holds one per kind. Returns
    ``({row: {mode: {patient: metrics}}}`` with rows ``refined`` (stacks) and
    ``slice_refined``, ``[{kind: index} per fold]``,
    ``{kind: index}`` chosen on all patients under ``final_post``, the rule chosen on
    them)."""
    rs = RefineScores(cfg, folds)
    rows: dict[str, dict[str, dict[str, Any]]] = {"refined": {m: {} for m in modes},
                                                   "slice_refined": {m: {} for m in modes}}
    picks = []
    for f, post in zip(folds, chosen, strict=True):
        others = [p for g in folds if g is not f for p in g["patients"]]
        pick = {kind: rs.choose(post, kind, others) for kind in ("colour", "grey")}
        picks.append(pick)
        for m in modes:
            kind = REFINE_KIND[m]
            for p in f["patients"]:
                rows["refined"][m][p] = rs.score(post, pick[kind], m, p)
                rows["slice_refined"][m][p] = rs.score("slice", pick[kind], m, p)
    everyone = [p for f in folds for p in f["patients"]]
    final = {kind: rs.choose(final_post, kind, everyone) for kind in ("colour", "grey")}
    return rows, picks, final


def run_reeval(cfg: Train2DConfig, source: str | Path) -> Path:
    """Judge the fold models of an earlier run (``source``, its ``cv/fold<K>/final.pt``)
    again on their own held-out patients, with ``cfg``'s inference settings (``tta``,
    ``threshold``, ``min_fraction``) and without training: results and probabilities go
    to ``cfg.out/cv`` as :func:`run_cv` writes them (training time copied from the
    source), so ``report`` tables them. Finished folds are skipped."""
    import shutil

    src = Path(source) / "cv"
    out = Path(cfg.out) / "cv"
    if not (src / "folds.json").exists():
        from braintumor.errors import InputError

        raise InputError(f"{src}: no folds.json, not a cross-validation run.")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "folds.json", out / "folds.json")
    folds = s2d.load_folds(out / "folds.json")
    patients = s2d.load_lgg(cfg.data, [p for f in folds for p in f])
    for k, held in enumerate(folds):
        res_file = out / f"fold{k}" / "metrics.json"
        if res_file.exists():
            continue
        old = json.loads((src / f"fold{k}" / "metrics.json").read_text())
        va = [p for p in patients if p.patient_id in held]
        _judge_fold(cfg, src / f"fold{k}" / "final.pt", va, out / f"fold{k}",
                    {"fold": k, "patients": held, "train_seconds": old["train_seconds"],
                     "models_from": str(src / f"fold{k}")})
        print(f"fold {k}: judged {len(va)} patients", flush=True)
    return out


def run_ensemble_cv(cfg: Train2DConfig, sources: list[str | Path],
                    only_fold: int | None = None) -> Path:
    """Cross-validate an ensemble of earlier runs without training: each fold's members
    (``<source>/cv/fold<K>/final.pt``, the same folds in every source) are written as one
    ensemble checkpoint (:func:`export_model`) and judged on the fold's held-out patients
    through the inference path, as :func:`run_cv` writes it; ``report`` tables it."""
    import shutil

    srcs = [Path(s) / "cv" for s in sources]
    folds = [s2d.load_folds(s / "folds.json") if (s / "folds.json").exists() else None
             for s in srcs]
    if folds[0] is None or any(f != folds[0] for f in folds):
        from braintumor.errors import InputError

        raise InputError("the ensemble's runs must be cross-validations on the same folds.")
    out = Path(cfg.out) / "cv"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(srcs[0] / "folds.json", out / "folds.json")
    patients = s2d.load_lgg(cfg.data, [p for f in folds[0] for p in f])
    for k, held in enumerate(folds[0]):
        done = (out / f"fold{k}" / "metrics.json").exists()
        if done or (only_fold is not None and k != only_fold):
            continue
        cks = [s / f"fold{k}" / "final.pt" for s in srcs]
        ck = export_model(cks, out / f"fold{k}" / "final.pt", cfg)
        seconds = sum(json.loads((s / f"fold{k}" / "metrics.json").read_text())["train_seconds"]
                      for s in srcs)
        _judge_fold(cfg, ck, [p for p in patients if p.patient_id in held], out / f"fold{k}",
                    {"fold": k, "patients": held, "train_seconds": seconds,
                     "members": [str(c) for c in cks]})
        print(f"fold {k}: judged the ensemble of {len(cks)}", flush=True)
    return out


def run_report(cfg: Train2DConfig, dest: str | Path = "experiments/lgg2d") -> Path:
    """Collect the CV folds into ``dest``: ``cv_results.json`` (per patient, every input
    mode and post-processing), ``cv_results.md`` (the table) and ``cv_dice.png``."""
    cv = Path(cfg.out) / "cv"
    folds = [json.loads(f.read_text()) for f in sorted(cv.glob("fold*/metrics.json"))]
    if not folds:
        from braintumor.errors import InputError

        raise InputError(f"{cv}: no finished folds (fold*/metrics.json).")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    merged = rescore_folds(cfg, folds)
    selected, chosen = cross_fold_selection(merged, folds)
    where = ("the members' own runs, added up" if any("members" in f for f in folds) else
             "on a GPU, wall-clock" if cfg.device != "cpu" else
             f"{cfg.threads} CPU thread{'s' if cfg.threads != 1 else ''}")
    for m in merged:
        merged[m]["selected"] = selected[m]
    all_post = select_rule(merged, [p for f in folds for p in f["patients"]])
    shipped_rule = describe_post(all_post, cfg.threshold)
    rows, picks, final = refine_selection(cfg, folds, chosen, tuple(merged), all_post)
    cands = refine_candidates(cfg)
    for m in merged:
        merged[m]["refined"] = rows["refined"][m]
        merged[m]["slice_refined"] = rows["slice_refined"][m]
    summary = {m: {p: s2d.summarise(r) for p, r in v.items()} for m, v in merged.items()}
    per_fold = [{"fold": f["fold"], "patients": f["patients"],
                 "train_seconds": round(f["train_seconds"], 1),
                 "rule": describe_post(c, cfg.threshold),
                 "refine_colour": cands[pk["colour"]],
                 "refine_grey": cands[pk["grey"]],
                 "rgb_dice": s2d.summarise({p: merged["rgb"]["refined"][p]
                                            for p in f["patients"]})["dice_mean"],
                 "grey_dice": s2d.summarise({p: merged["grey"]["refined"][p]
                                             for p in f["patients"]})["dice_mean"]}
                for f, c, pk in zip(folds, chosen, picks, strict=True)]
    (out / "cv_results.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "folds": per_fold, "summary": summary,
         "rule_for_all_patients": shipped_rule,
         "refine_for_all_patients": {k: cands[v] for k, v in final.items()},
         "patients": {m: {p: {k: {kk: vv for kk, vv in r.items() if kk != "slice_dices"}
                               for k, r in v.items()} for p, v in pp.items()}
                      for m, pp in merged.items()}}, indent=1) + "\n")
    names = {"rgb": "RGB (T1, FLAIR, T1c)", "grey": "greyscale (FLAIR only)",
             "jpeg50": "RGB as JPEG q50"}
    posts = {"refined": "**stack, rule and refinement chosen on the other folds**",
             "selected": "stack, rule chosen on the other folds (no refinement)",
             "volume": "stack (largest 3D component)",
             "longest": "stack (3D component over most slices)", "slice": "each slice alone",
             "slice_refined": "each slice alone, refinement chosen on the other folds"}
    lines = [
        f"Patient-wise {len(folds)}-fold cross-validation, {sum(len(f['patients']) for f in folds)}"
        f" patients (LGG kaggle_3m), one model per fold serving every input kind; "
        f"input {cfg.size}x{cfg.size}, test-time flips averaged: {s2d.describe_tta(cfg.tta)}"
        f", threshold {cfg.threshold} where the row does not say it was chosen; run folder "
        f"`{cfg.out}`.",
        "",
        "| input | post-processing | Dice per patient, mean (median, min) | "
        "Dice per tumour slice | FP tumour-free slices | missed tumour slices |",
        "|---|---|---|---|---|---|",
    ]
    for m in ("rgb", "grey", "jpeg50"):
        for p in posts:
            if m not in summary or p not in summary[m]:
                continue
            s = summary[m][p]
            lines.append(
                f"| {names[m]} | {posts[p]} | {s['dice_mean']:.3f} ({s['dice_median']:.3f}, "
                f"{s['dice_min']:.3f}) | {s['slice_dice_mean']:.3f} | {s['fp_slices']}/"
                f"{s['tumour_free_slices']} ({100 * s['fp_rate']:.1f} %) | "
                f"{s['missed_slices']}/{s['tumour_slices']} |")
    thr = ", ".join(f"{t:g}" for t in sorted({cfg.threshold, *THRESHOLDS}))
    ships = cfg.threshold if cfg.stack_threshold is None else cfg.stack_threshold
    lines += ["", "The component rule and threshold of each fold were chosen (largest / most "
              f"slices / every component; thresholds {thr}; best mean of RGB and greyscale "
              "Dice) on the other three folds' held-out patients only. On all "
              f"{sum(len(f['patients']) for f in folds)} patients the best is "
              f"`{shipped_rule}`; the config ships `{cfg.keep}, threshold {ships:g}` for a "
              f"stack (single pictures: {cfg.threshold:g}).",
              "",
              ("Then the CNN-guided watershed that grows the outline out to the FLAIR "
               "picture's edges (`slices2d.refine_masks`; none, or the probability under "
               "which a pixel is sure background and the gradient scale: "
               if cfg.refine_candidates == "grow" else
               "Then the CNN-guided watershed that moves the outline onto the FLAIR "
               "picture's edges, outwards or inwards (`slices2d.refine_masks`; none, or the "
               "band between sure background and sure tumour and the gradient scale: ")
              + "; ".join(describe_refine(r) for r in cands[1:])
              + ") was chosen per fold on the other folds' held-out patients, for colour "
              "pictures on the RGB Dice and for greyscale ones on the greyscale Dice (a "
              f"refinement must gain more than {REFINE_MIN_GAIN} there); JPEG pictures are "
              "colour pictures. On all patients: colour "
              f"`{describe_refine(cands[final['colour']])}`, greyscale "
              f"`{describe_refine(cands[final['grey']])}`; the config ships colour "
              f"`{describe_refine(cfg.refine_colour)}`, greyscale "
              f"`{describe_refine(cfg.refine_grey)}`, for stacks and single pictures alike.",
              "",
              f"| fold | held-out patients | training time (s, {where}) | rule | "
              "refinement colour / greyscale | "
              "RGB Dice per patient | greyscale Dice per patient |",
              "|---|---|---|---|---|---|---|"]
    for f in per_fold:
        lines.append(f"| {f['fold']} | {len(f['patients'])} | {f['train_seconds']:.0f} | "
                     f"{f['rule']} | {describe_refine(f['refine_colour'])} / "
                     f"{describe_refine(f['refine_grey'])} | "
                     f"{f['rgb_dice']:.3f} | {f['grey_dice']:.3f} |")
    (out / "cv_results.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pids = sorted(merged["rgb"]["selected"])
    fig, ax = plt.subplots(figsize=(10, 3.6))
    w = 0.27
    for i, m in enumerate(("rgb", "grey", "jpeg50")):
        if m in merged:
            ax.bar(np.arange(len(pids)) + (i - 1) * w,
                   [merged[m]["refined"][p]["dice"] for p in pids], w, label=names[m])
    ax.set_xticks(np.arange(len(pids)))
    ax.set_xticklabels([p[5:12] for p in pids], rotation=70, fontsize=7)
    ax.set_ylabel("Dice per patient")
    ax.set_ylim(0, 1)
    ax.axhline(0.85, color="k", lw=0.6, ls="--")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Patient-wise cross-validation (held-out patients)")
    fig.tight_layout()
    fig.savefig(out / "cv_dice.png", dpi=110)
    plt.close(fig)
    return out


def external_brats(root: str | Path, dest: str | Path, model: str | Path | None = None,
                   every: int = 3, size: int = 256) -> dict[str, Any]:
    """The 2D model on patients it never saw: each labelled BraTS case under ``root`` made
    into an LGG-like stack (:func:`case_slices`, every ``every``-th axial slice, a
    ``size`` x ``size`` picture), run through :func:`~braintumor.slices2d.segment_stack`
    (the user's path: the model's stack threshold and component rule) as colour,
    greyscale (FLAIR alone) and JPEG q50 pictures, and scored per patient as the CV is.
    A different cohort (mostly high-grade, skull-stripped, 1 mm slices) from the LGG
    training set, so a check of how the model carries over, not a second CV.
    Writes ``results.json`` and ``results.md`` to ``dest``; returns the summary."""
    m = s2d.load_model_2d(model)
    per: dict[str, dict[str, Any]] = {mode: {} for mode in INPUT_MODES}
    for cid, pics, masks in brats_stacks(root, size, every):
        for mode, conv in INPUT_MODES.items():
            res = s2d.segment_stack([conv(p) for p in pics], m)
            per[mode][cid] = s2d.stack_metrics(np.stack([r.mask for r in res]), masks > 0.5)
    summary = {mode: s2d.summarise(v) for mode, v in per.items()}
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"model": str(model or s2d.MODEL_DIR / s2d.MODEL_FILE), "every": every, "size": size,
         "summary": summary,
         "patients": {mode: {p: {k: v for k, v in r.items() if k != "slice_dices"}
                             for p, r in v.items()} for mode, v in per.items()}},
        indent=1) + "\n")
    names = {"rgb": "RGB (T1, FLAIR, T1c)", "grey": "greyscale (FLAIR only)",
             "jpeg50": "RGB as JPEG q50"}
    lines = [f"The 2D model on {len(per['rgb'])} BraTS cases it never saw (one axial slice in "
             f"{every} as a {size}x{size} picture; stack threshold and component rule of the "
             "model); per-patient Dice of the whole tumour.", "",
             "| input | Dice per patient, mean (median, min) | Dice per tumour slice | "
             "FP tumour-free slices | missed tumour slices |", "|---|---|---|---|---|"]
    for mode, sm in summary.items():
        if not sm:
            continue
        lines.append(f"| {names[mode]} | {sm['dice_mean']:.3f} ({sm['dice_median']:.3f}, "
                     f"{sm['dice_min']:.3f}) | {sm['slice_dice_mean']:.3f} | "
                     f"{sm['fp_slices']}/{sm['tumour_free_slices']} "
                     f"({100 * sm['fp_rate']:.1f} %) | {sm['missed_slices']}/"
                     f"{sm['tumour_slices']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    from braintumor.errors import run_guarded

    ap = argparse.ArgumentParser(prog="python -m braintumor.training2d", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["cv", "final", "report", "external", "reeval", "export",
                                     "pack", "ensemble"])
    ap.add_argument("--config", default=None)
    ap.add_argument("--fold", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dest", default=None,
                    help="final, export: write the weights here (default "
                         "<out>/final/unet2d_lgg.pt; the shipped model is replaced only when "
                         "this names it); report: the folder for the tables (default "
                         "experiments/lgg2d)")
    ap.add_argument("--brats", default="../shared/data/brats2018",
                    help="external: the BraTS cases to judge the shipped model on")
    ap.add_argument("--model", default=None, help="external: 2D weights (default: shipped)")
    ap.add_argument("--from", dest="source", default=None,
                    help="reeval: the earlier run whose fold models are judged again; "
                         "export: the checkpoint to ship with this config's settings "
                         "(several, comma-separated: an ensemble)")
    ap.add_argument("--train-only", action="store_true",
                    help="cv: train the folds without judging them (a later cv run judges)")
    ap.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"])
    ap.add_argument("--slice-cache", default=None,
                    help="train from this packed copy of the slices (pack) instead of --data")
    ap.add_argument("--budget", type=float, default=None,
                    help="train for this many minutes of wall-clock time instead of steps")
    a = ap.parse_args(argv)
    return run_guarded(lambda: _main(a))


def _needs_data(a: argparse.Namespace, cfg: Train2DConfig) -> bool:
    """Whether the command reads the LGG pictures themselves."""
    if a.what in ("export", "external"):
        return False
    if cfg.slice_cache and (a.what == "final" or (a.what == "cv" and a.train_only)):
        return False
    return True


def _main(a: argparse.Namespace) -> int:
    from braintumor.errors import InputError

    if a.what == "external":
        dest = a.dest or "experiments/lgg2d/external_brats"
        print(json.dumps(external_brats(a.brats, dest, a.model), indent=1))
        return 0
    cfg = load_config(a.config, steps=a.steps, data=a.data, out=a.out, device=a.device,
                      time_budget_min=a.budget, slice_cache=a.slice_cache)
    if _needs_data(a, cfg) and not Path(cfg.data).is_dir():
        raise InputError(f"{cfg.data}: no such data folder; name the LGG kaggle_3m folder "
                         "with --data (or data: in the config).")
    if cfg.slice_cache and a.what in ("cv", "final") and not Path(cfg.slice_cache).is_file():
        raise InputError(f"{cfg.slice_cache}: no such packed slice file (slice_cache).")
    if a.what in ("reeval", "export", "ensemble") and not a.source:
        what = "RUN,RUN[,...]" if a.what == "ensemble" else "RUN" if a.what == "reeval" \
            else "CHECKPOINT[,CHECKPOINT...]"
        raise InputError(f"{a.what} needs --from {what}.")
    if a.what == "pack":
        dest = a.dest or f"{cfg.out}/slices_{cfg.size}.npz"
        ids = [p.name for p in s2d.list_patients(cfg.data)]
        print(pack_slices(to_slice_set(s2d.load_lgg(cfg.data, ids), cfg.size), dest))
    elif a.what == "cv":
        run_cv(cfg, a.fold, a.train_only)
    elif a.what == "report":
        print(run_report(cfg, a.dest or "experiments/lgg2d"))
    elif a.what == "ensemble":
        print(run_ensemble_cv(cfg, a.source.split(","), a.fold))
    elif a.what == "reeval":
        print(run_reeval(cfg, a.source))
    elif a.what == "export":
        srcs = [Path(x) for x in a.source.split(",")]
        for src in srcs:
            if not src.is_file():
                raise InputError(f"{src}: no such checkpoint to export (--from).")
        print(export_model(srcs if len(srcs) > 1 else srcs[0],
                           Path(a.dest) if a.dest else default_export(cfg), cfg))
    else:
        print(run_final(cfg, dest=a.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
