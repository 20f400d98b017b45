"""2D slice images: LGG "kaggle_3m" data, preprocessing, inference and evaluation.

Many users have one slice exported from a viewer (PNG/JPEG/TIFF) or a stack of numbered
slices rather than four co-registered NIfTI volumes. This module serves them with a
compact 2D network trained on the LGG slices of Buda et al. (2019):

* data: ``<patient>/<patient>_<n>.tif`` (``(256, 256, 3)`` uint8; channels pre-contrast
  T1, FLAIR, post-contrast T1) and ``<patient>_<n>_mask.tif`` (0/255, FLAIR
  abnormality); :func:`load_patient` rebuilds a patient's volume from the slice numbers.
* preprocessing: :func:`prepare_input` turns any picture ``(H, W, C)`` uint8 (C = 1 or 3)
  into the network's ``(3, S, S)`` float32 input; a greyscale picture becomes three
  identical channels, which the network saw in training (random greyscale conversion),
  so one model serves both. :func:`restore` undoes the geometry.
* inference: :func:`segment_image` (one slice), :func:`segment_stack` (a patient's
  numbered slices, with 3D post-processing), :func:`predict_images` /
  :func:`predict_2d_inputs` (files and folders -> ``<image>_mask.png`` 0/255 and
  ``<image>_overlay.png``).
* evaluation: :func:`stack_metrics` (Dice per patient volume as Buda et al. report it,
  Dice per slice with tumour, false positives on tumour-free slices) and
  :func:`evaluate_2d` on folders of mask pictures.

Pixel size is unknown for exported pictures, so areas are reported in pixels.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import InputError

#: side (pixels) of the square the network works at
INPUT_SIZE = 96
#: the shipped model's folder inside the package
MODEL_DIR = Path(__file__).resolve().parent / "models" / "lgg2d"
MODEL_FILE = "unet2d_lgg.pt"
#: a greyscale specialist: when shipped, greyscale pictures go to it instead
MODEL_FILE_GREY = "unet2d_lgg_grey.pt"
_SLICE_RE = re.compile(r"^(?P<stem>.*?)[_\-\s]?(?P<num>\d+)$")
_MASK_SUFFIXES = ("_mask", "_seg", "_label", "_overlay")


# --------------------------------------------------------------------------- data


@dataclass
class PatientSlices:
    """One patient's slices in slice-number order.

    ``images``: ``(N, H, W, 3)`` uint8; ``masks``: ``(N, H, W)`` bool (None when the
    folder has no masks); ``numbers``: the slice numbers ``(N,)``; ``paths``: the image files.
    """

    patient_id: str
    images: np.ndarray
    masks: np.ndarray | None
    numbers: np.ndarray
    paths: list[Path] = field(default_factory=list)

    @property
    def tumour_slices(self) -> int:
        """Number of slices whose mask holds any tumour pixel."""
        if self.masks is None:
            return 0
        return int(self.masks.reshape(len(self.masks), -1).any(1).sum())


def slice_number(path: str | Path) -> int | None:
    """The trailing slice number of a file name (``TCGA_x_12.tif`` -> 12), or None."""
    m = _SLICE_RE.match(Path(path).stem)
    return int(m.group("num")) if m else None


def slice_stem(path: str | Path) -> str | None:
    """What a numbered slice's file name holds besides its number (``TCGA_x_12.tif`` ->
    ``TCGA_x``), or None for a name without a trailing number or with nothing else."""
    m = _SLICE_RE.match(Path(path).stem)
    return (m.group("stem") or None) if m else None


def is_mask_name(path: str | Path) -> bool:
    """True for files that hold masks or outputs rather than images (``*_mask.*`` ...)."""
    stem = Path(path).stem.lower()
    return stem.endswith(_MASK_SUFFIXES)


#: the smallest side of a picture the 2D model reads (pixels)
MIN_PICTURE_SIDE = 8


def check_picture_size(image: np.ndarray, name: str | None = None) -> None:
    """Refuse a picture smaller than :data:`MIN_PICTURE_SIDE` on a side, in one sentence
    (naming it when ``name`` is given): what the command line and the web page's upload
    both say."""
    a = np.asarray(image)
    if a.ndim not in (2, 3) or a.shape[0] < MIN_PICTURE_SIDE or a.shape[1] < MIN_PICTURE_SIDE:
        size = f"{a.shape[1]}x{a.shape[0]} pixels" if a.ndim in (2, 3) else f"of shape {a.shape}"
        raise InputError(f"{name + ': ' if name else ''}the picture is {size}, and a 2D "
                         f"picture must be at least {MIN_PICTURE_SIDE}x{MIN_PICTURE_SIDE} "
                         "pixels.")


def check_same_size(shapes: Sequence[tuple[int, ...]], names: Sequence[str],
                    stack: str) -> None:
    """Refuse slices of one stack whose sizes differ, in one sentence that names the
    first slice that differs from the first one (as :func:`load_patient` and the web page
    say it)."""
    for shape, name in zip(shapes[1:], names[1:], strict=True):
        if tuple(shape[:2]) != tuple(shapes[0][:2]):
            h, w = shapes[0][:2]
            raise InputError(f"{name} is {shape[1]}x{shape[0]} pixels while "
                             f"{Path(names[0]).name} is {w}x{h}; the slices of {stack} must "
                             "be the same size.")


def _few(nums: Sequence[int | str], most: int = 6) -> str:
    shown = ", ".join(str(n) for n in nums[:most])
    return shown + (f" and {len(nums) - most} more" if len(nums) > most else "")


def _gaps(gaps: Sequence[tuple[int, int]], total: int, most: int = 6) -> str:
    """The first few runs of missing numbers (``3``, ``7 to 9``) and how many more."""
    shown = [str(lo) if lo == hi else f"{lo}, {hi}" if hi == lo + 1 else f"{lo} to {hi}"
             for lo, hi in gaps[:most]]
    rest = total - sum(hi - lo + 1 for lo, hi in gaps[:most])
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def numbering_note(names: Sequence[str | Path]) -> str | None:
    """One sentence when the numbered slices of one stack skip numbers (1, 2, 4, 5) or
    give one twice (``pt_1`` and ``pt_01``), naming those numbers; None when the numbers
    run on without a gap, or the names are not numbered. The stack is still made, slice
    after slice as they come: a gap may be slices left out on export."""
    nums = [slice_number(n) for n in names]
    if len(nums) < 2 or any(n is None for n in nums):
        return None
    have = [int(n) for n in nums if n is not None]
    counts = Counter(have)
    twice = sorted(n for n, k in counts.items() if k > 1)
    # the gaps between neighbouring numbers, never the whole span: two pictures named
    # a_1 and a_20000000 (or phone photos named by the time) would otherwise make a set
    # of twenty million numbers
    gaps = [(a + 1, b - 1) for a, b in pairwise(sorted(counts)) if b - a > 1]
    n_missing = sum(hi - lo + 1 for lo, hi in gaps)
    said = []
    if gaps:
        said.append(f"number{'s' if n_missing > 1 else ''} {_gaps(gaps, n_missing)} "
                    f"{'are' if n_missing > 1 else 'is'} missing")
    if twice:
        which = [Path(str(x)).name for x, n in zip(names, have, strict=True) if n in twice]
        said.append(f"number{'s' if len(twice) > 1 else ''} {_few(twice)} "
                    f"{'are' if len(twice) > 1 else 'is'} given twice ({', '.join(which[:4])}"
                    f"{', ...' if len(which) > 4 else ''})")
    if not said:
        return None
    return ("the slice numbering has gaps or repeats: " + "; ".join(said)
            + "; the slices are stacked in their order, one after the other.")


def _images_in(folder: Path) -> list[Path]:
    from braintumor.io import is_hidden, is_image_2d

    files = [p for p in folder.iterdir()
             if p.is_file() and is_image_2d(p) and not is_mask_name(p) and not is_hidden(p)]
    numbered = [p for p in files if slice_number(p) is not None]
    if numbered and len(numbered) == len(files):
        return sorted(numbered, key=lambda p: (slice_number(p), p.name))
    return sorted(files)


def _mask_for(image: Path) -> Path | None:
    for suf in (".tif", ".tiff", ".png"):
        cand = image.with_name(image.stem + "_mask" + suf)
        if cand.exists():
            return cand
    return None


def _mask_beside(image: Path) -> Path | None:
    """A ``<image>_mask.*`` picture in the image's folder (any picture suffix, as a data
    set's ``_mask.tif``), or None."""
    from braintumor.io import is_image_2d

    want = (image.stem + "_mask").lower()
    try:
        return next((f for f in sorted(image.parent.iterdir())
                     if f.stem.lower() == want and is_image_2d(f) and f.is_file()), None)
    except OSError:
        return None


def load_patient(folder: str | Path, with_masks: bool = True) -> PatientSlices:
    """Read a folder of numbered slices of one patient as a volume ``(N, H, W, 3)``.

    Slices are ordered by their trailing number (``_1, _2, ..., _10``, not
    alphabetically); masks ``<image>_mask.tif`` are read when present.
    """
    from braintumor.io import read_image_2d

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: is not a folder of slice images.")
    files = _images_in(root)
    if not files:
        raise InputError(f"{root}: holds no PNG/JPEG/TIFF slice images.")
    images, masks = [], []
    shape: tuple[int, ...] | None = None
    for f in files:
        img = to_three_channels(read_image_2d(f))
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise InputError(f"{f}: is {img.shape[1]}x{img.shape[0]} pixels while the other "
                             f"slices of {root.name} are {shape[1]}x{shape[0]}.")
        images.append(img)
        if with_masks:
            mp = _mask_for(f)
            masks.append(None if mp is None else _read_mask(mp))
    have = [m is not None for m in masks]
    mask_arr = np.stack(masks) if with_masks and have and all(have) else None  # type: ignore[arg-type]
    nums = np.array([slice_number(f) if slice_number(f) is not None else i
                     for i, f in enumerate(files)])
    return PatientSlices(root.name, np.stack(images), mask_arr, nums, list(files))


def list_patients(root: str | Path) -> list[Path]:
    """Patient folders of a kaggle_3m-style data set (sorted by name)."""
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: data folder not found.")
    return sorted(p for p in r.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_lgg(root: str | Path, patients: Iterable[str] | None = None) -> list[PatientSlices]:
    """All (or the named) patients of a kaggle_3m folder, each with its masks."""
    want = None if patients is None else set(patients)
    return [load_patient(p) for p in list_patients(root) if want is None or p.name in want]


def make_folds(patient_ids: Sequence[str], k: int = 4, seed: int = 0) -> list[list[str]]:
    """Split patients (never slices) into ``k`` folds of near-equal size, seeded.

    Patients are shuffled within their acquisition site (the ``CS``/``DU``/... code of
    the TCGA id) and dealt round-robin, so every fold mixes the sites.
    """
    rng = np.random.default_rng(seed)
    ids = sorted(patient_ids)
    by_site: dict[str, list[str]] = {}
    for pid in ids:
        parts = pid.split("_")
        by_site.setdefault(parts[1] if len(parts) > 1 else "", []).append(pid)
    order: list[str] = []
    for site in sorted(by_site):
        grp = list(by_site[site])
        rng.shuffle(grp)
        order += grp
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, pid in enumerate(order):
        folds[i % k].append(pid)
    return [sorted(f) for f in folds]


def save_folds(folds: list[list[str]], path: str | Path) -> Path:
    """Write folds as JSON ``{"folds": [[patient, ...], ...]}``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"folds": folds}, indent=1) + "\n")
    return out


def load_folds(path: str | Path) -> list[list[str]]:
    """Read folds written by :func:`save_folds`."""
    return [list(f) for f in json.loads(Path(path).read_text())["folds"]]


# ------------------------------------------------------------------ preprocessing


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3+)`` -> ``(H, W, 3)`` uint8 (grey repeated)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] < 1:
        raise InputError(f"an image of shape {a.shape} is not a 2D picture.")
    if a.shape[2] == 1 or a.shape[2] == 2:
        a = np.repeat(a[..., :1], 3, axis=2)
    from braintumor.io import to_uint8

    return to_uint8(a[..., :3])


def is_greyscale(image: np.ndarray) -> bool:
    """True when a picture has one channel or three identical ones."""
    a = np.asarray(image)
    if a.ndim == 2 or a.shape[2] == 1:
        return True
    return bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))


def normalise(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32, each channel divided by its 99th
    percentile inside the head and clipped to [0, 1.5].

    Exported pictures carry whatever window the viewer had, so a per-picture scale
    (rather than a fixed one) makes the input independent of the export.
    """
    x = np.asarray(image, dtype=np.float32)
    ref = x.max(axis=2)
    top = float(ref.max())
    out = np.zeros((3,) + x.shape[:2], dtype=np.float32)
    if top <= 0:
        return out
    fg = ref > 0.1 * top
    for c in range(3):
        ch = x[..., c]
        vals = ch[fg]
        s = float(np.percentile(vals, 99)) if vals.size else top
        out[c] = np.clip(ch / max(s, 1.0), 0.0, 1.5)
    return out


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 to ``size`` = (H', W') with antialiased bilinear."""
    from PIL import Image

    a = np.asarray(image, dtype=np.uint8)
    bil = Image.Resampling.BILINEAR
    chans = [np.asarray(Image.fromarray(a[..., c]).resize((size[1], size[0]), bil))
             for c in range(a.shape[2])]
    return np.stack(chans, axis=2)


@dataclass(frozen=True)
class Geometry:
    """How a picture ``(H, W)`` was padded to a square and resized to ``size``."""

    shape: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, bottom, left, right (pixels of the original)
    size: int


def to_square(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Geometry]:
    """Pad ``(H, W, C)`` with zeros to a square (keeps the aspect ratio), then resize to
    ``(size, size, C)``."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (top, side - h - top, left, side - w - left)
    sq = np.pad(image, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
    if side != size:
        sq = resize_uint8(sq, (size, size))
    return sq, Geometry((h, w), pad, size)


def prepare_input(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Geometry]:
    """Any picture ``(H, W, C)`` (C = 1 or 3) -> network input ``(3, size, size)`` float32."""
    sq, geo = to_square(to_three_channels(image), size)
    return normalise(sq), geo


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of linear resampling along one axis, pixel centres
    aligned (PyTorch's ``interpolate(..., align_corners=False)`` without antialiasing)."""
    src = (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5
    src = np.maximum(src, 0.0).astype(np.float32)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a float ``(H, W)`` array to ``shape``, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` does it (no torch needed)."""
    a = np.asarray(a, dtype=np.float32)
    y0, y1, wy = _linear_weights(a.shape[0], shape[0])
    x0, x1, wx = _linear_weights(a.shape[1], shape[1])
    rows = (1 - wx) * a[:, x0] + wx * a[:, x1]
    return ((1 - wy)[:, None] * rows[y0] + wy[:, None] * rows[y1]).astype(np.float32)


def restore(prob: np.ndarray, geo: Geometry) -> np.ndarray:
    """Undo :func:`to_square`: ``(size, size)`` probabilities -> ``(H, W)`` float32."""
    h, w = geo.shape
    side = max(h, w)
    p = np.asarray(prob, dtype=np.float32)
    if side != geo.size:
        p = resize_bilinear(p, (side, side))
    top, _, left, _ = geo.pad
    return np.ascontiguousarray(p[top:top + h, left:left + w])


def check_image(image: np.ndarray) -> str | None:
    """A sentence saying why a picture does not look like a brain MRI slice, or None.

    Heuristics: a blank picture has next to no range of grey levels (it gets an empty
    mask); a very dark one is an end slice with little tissue; a brain MRI slice is a
    head on a dark background (dark frame, a sizeable dark share of the picture), while
    a photograph has a bright or busy frame. Of the 866 LGG slices, only end slices
    with next to no tissue are flagged (as blank or very dark).
    """
    a = to_three_channels(image).astype(np.float32)
    grey = a.mean(axis=2)
    if float(grey.max() - grey.min()) < 8:
        return f"the image is blank (all pixels close to {int(np.median(grey))}); no brain found."
    lo, hi = (float(v) for v in np.percentile(grey, [1, 99.5]))
    if hi - lo < 32:
        return ("the image is very dark or has almost no contrast; little or no brain tissue "
                "found.")
    h, w = grey.shape
    bh, bw = max(1, h // 16), max(1, w // 16)
    frame = np.concatenate([grey[:bh].ravel(), grey[-bh:].ravel(),
                            grey[:, :bw].ravel(), grey[:, -bw:].ravel()])
    dark = grey < lo + 0.1 * (hi - lo)
    if np.median(frame) > lo + 0.25 * (hi - lo) or dark.mean() < 0.15:
        return ("the image does not look like a brain MRI slice (no dark background around "
                "the head); the outline may be meaningless.")
    return None


# ---------------------------------------------------------------------- inference


@dataclass
class SliceResult:
    """Result on one picture: ``mask`` ``(H, W)`` bool, ``probability`` ``(H, W)``
    float32 in [0, 1], ``info`` (area in pixels, input kind, warning, timings)."""

    mask: np.ndarray
    probability: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Model2D:
    """A loaded 2D network and the settings it was trained with."""

    network: Any
    config: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.config.get("size", INPUT_SIZE))

    @property
    def threshold(self) -> float:
        """Cut-off for a single picture."""
        return float(self.config.get("threshold", 0.5))

    @property
    def stack_threshold(self) -> float:
        """Cut-off for a stack of slices, whose component rule removes the false
        positives a lower cut-off lets in (``threshold`` when the config has none)."""
        st = self.config.get("stack_threshold")
        return self.threshold if st is None else float(st)

    def refinement(self, image: np.ndarray) -> Refinement | None:
        """The CNN-guided watershed setting for this picture (:func:`refine_masks`): the
        config's ``refine_grey`` for a greyscale picture, ``refine_colour`` otherwise
        (None: the network's outline as it is)."""
        key = "refine_grey" if is_greyscale(image) else "refine_colour"
        return refine_setting(self.config.get(key))


def build_network(config: dict[str, Any]) -> Any:
    """The registered network named in ``config`` (``network``, ``network_kwargs``)."""
    from braintumor.networks import create_network

    return create_network(config.get("network", "unet2d"), **dict(config.get("network_kwargs", {})))


def load_model_2d(path: str | Path | None = None, onnx: bool = True) -> Model2D:
    """Load 2D weights (a ``.pt`` holding ``state_dict`` and ``config``, or ``members``,
    a list of state dicts whose probabilities are averaged); by default the shipped
    model. Missing weights raise :class:`InputError`.

    With ``onnx`` and the weights' ONNX export beside them (:func:`onnx_files`, written
    by :func:`export_onnx_2d`), the export runs with OpenVINO or ONNX Runtime in 32-bit
    floats instead, so that neither PyTorch nor MONAI is imported: their imports took
    about 6 s of a 6.5 s single-picture prediction on a 2-core CPU."""
    p = Path(path) if path is not None else MODEL_DIR / MODEL_FILE
    return _load_model_cached(str(p.resolve()), onnx)


def onnx_files(weights: str | Path) -> tuple[Path, Path]:
    """The ONNX export of a 2D weights file and its config (JSON), beside it."""
    p = Path(weights)
    return p.with_suffix(".onnx"), p.with_suffix(".json")


@lru_cache(maxsize=4)
def _load_model_cached(path: str, onnx: bool = True) -> Model2D:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: 2D model weights not found.")
    graph, cfg_path = onnx_files(p)
    if onnx and graph.exists() and cfg_path.exists():
        from braintumor.inference import onnx_net

        net = onnx_net(graph, precision="f32")
        if net is not None:
            return Model2D(net, json.loads(cfg_path.read_text()))
    return _load_torch_model(p)


def _load_torch_model(p: Path) -> Model2D:
    import torch

    try:
        blob = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise InputError(f"{p}: not a readable 2D model ({type(exc).__name__}).") from None
    cfg = dict(blob.get("config", {}))
    nets = []
    # an ensemble holds one state dict per member ("members"), all of the config's network
    for sd in blob.get("members") or [blob["state_dict"]]:
        net = build_network(cfg)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
        nets.append(net.eval())
    return Model2D(nets[0] if len(nets) == 1 else mean_of_members(nets), cfg)


def export_onnx_2d(weights: str | Path, opset: int = 17) -> tuple[Path, Path]:
    """Write the ONNX export of 2D weights (dynamic batch and picture size) and their
    config beside them (:func:`onnx_files`); :func:`load_model_2d` then runs them
    without PyTorch. Each is written beside its place, and only once both are written is
    the earlier export removed and the two renamed into place, the export last: the
    predictor takes the pair only when both are there, so a failed export leaves the
    earlier pair, or no export (the weights are then run), never half a file nor a new
    config with an earlier graph. A link at either place is written through and a file
    replaced keeps its permission bits (:func:`braintumor.io.write_replacing`'s rule);
    weights named like their export (``m.onnx``, ``m.json``) are refused, not
    overwritten, and so is a folder at either place."""
    import torch

    from braintumor import inference
    from braintumor.io import (
        check_written_file,
        keep_mode,
        partial_beside,
        put_in_place,
        write_target,
    )

    p = Path(weights)
    graph, cfg_path = onnx_files(p)
    for target in (graph, cfg_path):
        check_written_file(
            target, p,
            over_source=f"{p}: its ONNX export and config are written beside it as "
                        f"{graph.name} and {cfg_path.name}, which would write over the "
                        f"weights; give the weights file another name (such as {p.stem}.pt).",
            folder=f"{target}: is a folder, where the ONNX export of {p.name} goes (its "
                   f"export and config are written beside it as {graph.name} and "
                   f"{cfg_path.name}); rename or remove that folder.")
    model = _load_torch_model(p)
    x = torch.zeros(1, 3, model.size, model.size)
    targets = [write_target(t) for t in (graph, cfg_path)]
    partial = [partial_beside(t) for t in targets]
    try:
        inference.onnx_export(model.network, x, partial[0], {0: "batch", 2: "h", 3: "w"},
                              opset)
        partial[1].write_text(json.dumps(model.config, indent=1) + "\n")
        # the earlier graph goes first: stopped before the new one is in place, the
        # predictor finds no pair and runs the weights, never the new config with the
        # earlier graph (a picture size or threshold it was not exported with)
        if targets[0].exists():
            keep_mode(targets[0], partial[0])
            targets[0].unlink()
        put_in_place(partial[1], targets[1])
        put_in_place(partial[0], targets[0])
    finally:
        for t in partial:
            t.unlink(missing_ok=True)
        _load_model_cached.cache_clear()
    return graph, cfg_path


def mean_of_members(nets: Sequence[Any]) -> Any:
    """One network out of several: its logit is that of the members' mean probability,
    so the sigmoid every caller applies gives the ensemble's averaged probability."""
    import torch

    class MeanOfMembers(torch.nn.Module):
        def __init__(self, members: Sequence[Any]):
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, x: Any) -> Any:
            p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0)
            return torch.logit(p, eps=1e-7)

    return MeanOfMembers(nets).eval()


def pick_model(model: Model2D | str | Path | None, images: Sequence[np.ndarray]
               ) -> tuple[Model2D, str]:
    """The model for these pictures and its name: ``model`` when given, else the shipped
    greyscale specialist for greyscale pictures (when it is installed), else the shipped
    model."""
    if isinstance(model, Model2D):
        return model, "given"
    if model is not None:
        return load_model_2d(model), Path(model).name
    grey = MODEL_DIR / MODEL_FILE_GREY
    if images and grey.exists() and all(is_greyscale(i) for i in images):
        return load_model_2d(grey), MODEL_FILE_GREY
    return load_model_2d(), shipped_version()


def shipped_version() -> str:
    """The shipped 2D model's version (``model.json`` beside its weights), else the name
    of its weights file."""
    try:
        return str(json.loads((MODEL_DIR / "model.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return MODEL_FILE


def model_available() -> bool:
    """True when the shipped 2D weights are in the package."""
    return (MODEL_DIR / MODEL_FILE).exists()


#: test-time views of a picture by the ``tta`` setting of a model's config: ``""`` as it
#: is, ``"h"`` mirrored left-right, ``"v"`` upside down, ``"hv"`` both
TTA_VIEWS: dict[str, tuple[str, ...]] = {"off": ("",), "h": ("", "h"), "hv": ("", "h", "v", "hv")}


def tta_views(setting: Any) -> tuple[str, ...]:
    """The views averaged at inference for a config's ``tta``: false -> the picture
    alone, true or ``"h"`` -> also its mirror image, ``"hv"`` -> the four flips.
    Anything else raises :class:`InputError`."""
    if setting is None or setting is False:
        return TTA_VIEWS["off"]
    if setting is True:
        return TTA_VIEWS["h"]
    key = str(setting).lower()
    if key not in TTA_VIEWS:
        raise InputError(f"2D model setting tta={setting!r}: use true, false, "
                         f"{', '.join(repr(k) for k in TTA_VIEWS)}.")
    return TTA_VIEWS[key]


def describe_tta(setting: Any) -> str:
    """``"hv"`` -> ``"4 (as is, mirrored, upside down, both)"``."""
    names = {"": "as is", "h": "mirrored", "v": "upside down", "hv": "both"}
    views = tta_views(setting)
    return "none" if len(views) == 1 else \
        f"{len(views)} ({', '.join(names[v] for v in views)})"


def _flip_dims(view: str) -> list[int]:
    return ([-1] if "h" in view else []) + ([-2] if "v" in view else [])


def predict_batch(model: Model2D, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """Network probabilities for ``(N, 3, S, S)`` inputs -> ``(N, S, S)`` float32,
    averaged over the flipped views the model's config asks for (``tta``, see
    :func:`tta_views`).

    The brain is near-symmetric left/right and the net was trained with left-right (and
    some upside-down) flips, so each view's error is partly its own: averaging views
    removes part of the net's orientation-dependent error, one more pass per view.
    """
    views = tta_views(model.config.get("tta", False))
    run = getattr(model.network, "run", None)
    if run is not None:  # an ONNX export (numpy in, logits out)
        return _predict_batch_onnx(run, inputs, views, batch)
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            x = torch.as_tensor(np.ascontiguousarray(inputs[i:i + batch]))
            p = torch.zeros((x.shape[0],) + tuple(x.shape[2:]))
            for v in views:
                dims = _flip_dims(v)
                xv = x.flip(dims) if dims else x
                pv = torch.sigmoid(model.network(xv))[:, 0]
                p += pv.flip(dims) if dims else pv
            out.append((p / len(views)).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,) * 3, np.float32)


def _predict_batch_onnx(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray,
                        views: Sequence[str], batch: int) -> np.ndarray:
    """:func:`predict_batch` through an ONNX export's ``run``."""
    from braintumor.inference import logistic

    out = []
    for i in range(0, len(inputs), batch):
        x = np.asarray(inputs[i:i + batch], dtype=np.float32)
        p = np.zeros((x.shape[0],) + x.shape[2:], np.float32)
        for v in views:
            dims = _flip_dims(v)
            xv = np.ascontiguousarray(np.flip(x, dims) if dims else x)
            logit = np.asarray(run(xv), dtype=np.float32)[:, 0]
            pv = logistic(logit)
            p += np.flip(pv, dims) if dims else pv
        out.append(p / len(views))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,) * 3, np.float32)


def remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop connected components (8-connectivity in 2D, 26 in 3D) under ``min_pixels``."""
    from scipy import ndimage

    if min_pixels <= 1 or not mask.any():
        return mask
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def postprocess_slice(prob: np.ndarray, threshold: float = 0.5,
                      min_fraction: float = 0.001) -> np.ndarray:
    """Threshold ``(H, W)`` probabilities; drop specks under ``min_fraction`` of the
    picture (0.1 % = 66 pixels of a 256x256 slice), which are mostly false positives."""
    m = prob >= threshold
    return remove_small(m, int(round(min_fraction * prob.size)))


#: rules for choosing which 3D components of a thresholded stack to keep
KEEP_RULES = ("largest", "longest", "all")


def postprocess_stack(probs: np.ndarray, threshold: float = 0.5, min_fraction: float = 0.001,
                      keep: str = "largest") -> np.ndarray:
    """Threshold ``(N, H, W)`` probabilities of one patient's slices, treated as a volume.

    ``keep="largest"`` keeps the largest 3D connected component (26-connectivity), as
    Buda et al. did for these data: a glioma is one lesion, and the false positives of a
    slice-wise network are small islands elsewhere in the stack. ``"longest"`` keeps the
    component spanning the most slices (ties: the larger): the false positives that beat
    the tumour on size are flat blobs on two to four slices at the top or bottom of the
    head (vertex, orbits), while a glioma runs through more slices. ``"all"`` keeps every
    component over ``min_fraction`` of a slice.
    """
    from scipy import ndimage

    if keep not in KEEP_RULES:
        raise InputError(f"unknown component rule {keep!r}; use one of {', '.join(KEEP_RULES)}.")
    masks = np.stack([postprocess_slice(p, threshold, min_fraction) for p in probs]) \
        if len(probs) else np.zeros_like(probs, dtype=bool)
    if keep != "all" and masks.any():
        lab, n = ndimage.label(masks, structure=np.ones((3, 3, 3)))
        if n > 1:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            if keep == "largest":
                best = int(np.argmax(sizes))
            else:
                span = np.array([o[0].stop - o[0].start for o in ndimage.find_objects(lab)])
                best = int(np.lexsort((sizes, span))[-1])
            masks = lab == best + 1
    return masks


#: side (pixels) of the pictures the refinement's distances are given for (the LGG data's)
REFINE_REFERENCE = 256


def flair_of(image: np.ndarray) -> np.ndarray:
    """The FLAIR picture in ``image`` as float32 ``(H, W)``: a greyscale picture is read
    as FLAIR, a colour one as the LGG composite (pre-contrast T1, FLAIR, post-contrast
    T1), whose FLAIR is the second channel."""
    a = np.asarray(image)
    if a.ndim == 2:
        return a.astype(np.float32)
    return a[..., 0 if is_greyscale(a) else 1].astype(np.float32)


#: a refinement: ``(sure_out, sigma)`` grows the outline; ``(sure_out, sure_in, sigma)``
#: may also cut it (see :func:`refine_masks`)
Refinement = tuple[float, float] | tuple[float, float, float]


def refine_setting(value: Any) -> Refinement | None:
    """A model config's refinement (``refine_colour`` / ``refine_grey``): None,
    ``[sure_out, sigma]`` or ``[sure_out, sure_in, sigma]`` with
    ``0 <= sure_out <= sure_in <= 1`` and a positive sigma. Anything else raises
    :class:`InputError`."""
    if value is None or value is False:
        return None
    try:
        v = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        v = ()
    if len(v) not in (2, 3):
        raise InputError(f"2D refinement {value!r}: give [sure_out, sigma], "
                         "[sure_out, sure_in, sigma] or null.")
    if not (0.0 <= v[0] <= v[-2] <= 1.0 and v[-1] > 0):
        raise InputError(f"2D refinement {value!r}: need 0 <= sure_out <= sure_in <= 1 "
                         "and sigma > 0.")
    return v  # type: ignore[return-value]


def refine_masks(probs: np.ndarray, flair: np.ndarray, masks: np.ndarray,
                 setting: Refinement | None, reach: int = 6) -> np.ndarray:
    """CNN-guided watershed on 2D slices: the network's outline grown out to the FLAIR
    picture's own edges.

    ``probs``, ``flair``: ``(N, H, W)`` (or one ``(H, W)`` slice); ``masks``: the
    thresholded, post-processed outline (bool, same shape); ``setting``:
    ``(sure_out, sigma)`` (None: ``masks`` unchanged). On every slice, the outline is
    the tumour marker; pixels under ``sure_out``, or further than ``reach`` pixels from
    the outline, are background markers; a watershed on the FLAIR gradient magnitude
    (Gaussian scale ``sigma``) decides the band between them. So the outline only grows,
    by at most ``reach``, up to where the FLAIR brightness changes; it is never cut and no
    lesion is added. With ``(sure_out, sure_in, sigma)`` only the outline's pixels at
    ``sure_in`` or more are tumour markers, so an edge may move inwards too (a slice with
    no such pixel keeps its outline); that form lost on another cohort and is not
    shipped (README, 2D). ``reach`` and ``sigma`` are for a 256-pixel picture
    (:data:`REFINE_REFERENCE`) and scale with its side.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    m = np.asarray(masks, dtype=bool)
    if setting is None or not m.any():
        return m.copy()
    single = m.ndim == 2
    p = np.asarray(probs, dtype=np.float32)
    f = np.asarray(flair, dtype=np.float32)
    if single:
        p, f, m = p[None], f[None], m[None]
    if not p.shape == f.shape == m.shape:
        raise InputError(f"refine_masks: probabilities {p.shape}, FLAIR {f.shape} and "
                         f"masks {m.shape} differ in shape.")
    lo, sigma = setting[0], setting[-1]
    hi = setting[1] if len(setting) == 3 else None
    scale = max(m.shape[1:]) / REFINE_REFERENCE
    sigma_px = sigma * scale
    steps = max(1, int(round(reach * scale)))
    out = m.copy()
    disk = ndimage.generate_binary_structure(2, 1)
    pad = steps + 1
    margin = int(np.ceil(4 * sigma_px)) + 1  # the gradient's support, cut off the crop
    h, w = m.shape[1:]
    for i in range(len(m)):
        inside = m[i] if hi is None else m[i] & (p[i] >= hi)
        if not inside.any():
            continue
        # work in the outline's box (plus the reach): the rest stays background
        rows, cols = np.nonzero(m[i])
        y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, h)
        x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, w)
        gy0, gy1 = max(y0 - margin, 0), min(y1 + margin, h)
        gx0, gx1 = max(x0 - margin, 0), min(x1 + margin, w)
        grad = ndimage.gaussian_gradient_magnitude(f[i, gy0:gy1, gx0:gx1], sigma_px)
        grad = grad[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
        box = (slice(y0, y1), slice(x0, x1))
        near = ndimage.binary_dilation(m[i][box], structure=disk, iterations=steps)
        markers = np.zeros(near.shape, dtype=np.int32)
        markers[(p[i][box] < lo) | ~near] = 1
        markers[inside[box]] = 2
        out[i] = False
        out[i][box] = watershed(grad, markers) == 2
    return out[0] if single else out


def _describe(image: np.ndarray) -> str:
    a = np.asarray(image)
    return "greyscale" if is_greyscale(a) else "RGB (T1, FLAIR, T1 post-contrast)"


def segment_image(image: np.ndarray, model: Model2D | str | Path | None = None,
                  threshold: float | None = None) -> SliceResult:
    """Outline the tumour (FLAIR abnormality) on one slice picture of any size.

    ``image``: ``(H, W)`` or ``(H, W, C)`` uint8, C = 1 (greyscale, FLAIR-like) or 3
    (pre-contrast T1, FLAIR, post-contrast T1 as in the LGG data set). Returns a
    :class:`SliceResult` at the input's size. A picture that does not look like a brain
    MRI slice is still processed, with ``info["warning"]`` saying what was found; a
    blank picture gets an empty mask.
    """
    import time

    t0 = time.perf_counter()
    arr = np.asarray(image)
    check_picture_size(arr)
    h, w = arr.shape[:2]
    warning = check_image(arr)
    info: dict[str, Any] = {"input": _describe(arr), "shape": [int(h), int(w)],
                            "area_unit": "pixels"}
    if warning is not None:
        info["warning"] = warning
    if warning is not None and warning.startswith("the image is blank"):
        z = np.zeros((h, w), dtype=np.float32)
        info.update(area_pixels=0, seconds=time.perf_counter() - t0)
        return SliceResult(z > 0, z, info)
    m, name = pick_model(model, [arr])
    info["model"] = name
    x, geo = prepare_input(arr, m.size)
    p_small = predict_batch(m, x[None])[0]
    prob = np.clip(restore(p_small, geo), 0.0, 1.0)
    thr = m.threshold if threshold is None else float(threshold)
    mask = postprocess_slice(prob, thr, float(m.config.get("min_fraction", 0.001)))
    setting = m.refinement(arr)
    if setting is not None:
        mask = refine_masks(prob, flair_of(arr), mask, setting)
        info["refined"] = True
    info.update(area_pixels=int(mask.sum()), seconds=time.perf_counter() - t0)
    return SliceResult(mask, prob, info)


def segment_stack(images: Sequence[np.ndarray], model: Model2D | str | Path | None = None,
                  threshold: float | None = None, keep: str | None = None,
                  names: Sequence[str] | None = None) -> list[SliceResult]:
    """Outline the tumour on the numbered slices of one patient, as a volume.

    ``images``: slices of equal size, each ``(H, W, C)`` in order. Each slice is
    predicted on its own; the stack, thresholded at ``threshold`` (by default the
    model's ``stack_threshold``), then keeps one 3D component (:func:`postprocess_stack`;
    rule ``keep``, by default the model's ``keep`` setting, else the largest), so
    per-patient metrics apply. ``names``: the slices' names, for the sentence that
    refuses a slice of another size than the first (:func:`check_same_size`) or one under
    :data:`MIN_PICTURE_SIDE` (:func:`check_picture_size`). A slice whose own outline the
    3D rule removed (another component was kept) has ``info["removed_by_stack"]``.
    """
    if not images:
        return []
    for k, img in enumerate(images):
        check_picture_size(np.asarray(img), names[k] if names is not None else f"slice {k + 1}")
    check_same_size([np.asarray(i).shape for i in images],
                    list(names) if names is not None
                    else [f"slice {k + 1}" for k in range(len(images))], "one stack")
    m, name = pick_model(model, images)
    xs, geos, warns = [], [], []
    for img in images:
        x, g = prepare_input(img, m.size)
        xs.append(x)
        geos.append(g)
        warns.append(check_image(img))
    small = predict_batch(m, np.stack(xs))
    probs = np.stack([np.clip(restore(p, g), 0, 1) for p, g in zip(small, geos, strict=True)])
    for i, w in enumerate(warns):
        if w is not None and w.startswith("the image is blank"):
            probs[i] = 0.0
    thr = m.stack_threshold if threshold is None else float(threshold)
    rule = keep if keep is not None else str(m.config.get("keep", "largest"))
    masks = postprocess_stack(probs, thr, float(m.config.get("min_fraction", 0.001)), rule)
    # the slices with an outline of their own that the 3D rule left empty, to be said
    own = postprocess_stack(probs, thr, float(m.config.get("min_fraction", 0.001)), "all")
    emptied = [bool(own[k].any()) and not bool(masks[k].any()) for k in range(len(masks))]
    # a stack with any colour picture is refined as colour
    setting = m.refinement(next((np.asarray(i) for i in images if not is_greyscale(i)),
                                np.asarray(images[0])))
    if setting is not None:
        masks = refine_masks(probs, np.stack([flair_of(i) for i in images]), masks, setting)
    out = []
    for img, pr, mk, w, gone in zip(images, probs, masks, warns, emptied, strict=True):
        info: dict[str, Any] = {"input": _describe(img), "shape": list(pr.shape),
                                "area_pixels": int(mk.sum()), "area_unit": "pixels",
                                "model": name}
        if gone:
            info["removed_by_stack"] = True
        if setting is not None:
            info["refined"] = True
        if w is not None:
            info["warning"] = w
        out.append(SliceResult(mk, pr.astype(np.float32), info))
    return out


def display_grey(image: np.ndarray) -> np.ndarray:
    """The picture an outline is shown on, ``(H, W)`` uint8: its FLAIR (:func:`flair_of`),
    the image the outline describes. Grey keeps the tint readable on the colourful LGG
    composites; their channels' mean, shown before, blurred FLAIR's edges with the two
    T1 pictures'."""
    return np.clip(flair_of(to_three_channels(image)), 0, 255).astype(np.uint8)


#: the colour of a reference outline drawn beside the model's (sky blue: apart from the
#: model's red, also with red-green colour blindness)
REFERENCE_COLOUR = (86, 180, 233)


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40),
            alpha: float = 0.4, reference: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 picture with the mask tinted and its outline drawn; with
    ``reference`` (an expert's mask), that mask's outline too, in
    :data:`REFERENCE_COLOUR`, over the model's."""
    from scipy import ndimage

    base = np.repeat(display_grey(image)[..., None].astype(np.float32), 3, axis=2)
    m = np.asarray(mask, dtype=bool)
    col = np.array(color, dtype=np.float32)
    base[m] = (1 - alpha) * base[m] + alpha * col
    edge = m & ~ndimage.binary_erosion(m)
    base[edge] = col
    if reference is not None:
        r = np.asarray(reference, dtype=bool)
        base[r & ~ndimage.binary_erosion(r)] = np.array(REFERENCE_COLOUR, dtype=np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def _is_stack_folder(path: Path) -> bool:
    return path.is_dir() and bool(_images_in(path))


def stack_folders(root: Path) -> list[Path]:
    """``root`` and every folder under it (hidden ones passed over, linked ones followed
    once) that holds slice pictures, in name order: a data set's patients however deep
    (``data/site/patient``), and a folder's own loose pictures as well as its patients'."""
    found: list[Path] = []
    seen: set[Path] = set()

    def visit(folder: Path) -> None:
        real = folder.resolve()
        if real in seen:
            return
        seen.add(real)
        if _is_stack_folder(folder):
            found.append(folder)
        try:
            subs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        except OSError:
            return
        for d in subs:
            visit(d)

    if root.is_dir():
        visit(root)
    return found


def predict_images(paths: Sequence[str | Path], out_dir: str | Path,
                   model: Model2D | str | Path | None = None,
                   log: Callable[[str], None] | None = None,
                   pixel_mm: float | None = None,
                   on_error: Callable[[InputError], None] | None = None,
                   bases: dict[Path, Path] | None = None) -> list[Path]:
    """Segment picture files and folders of numbered slices; write the results.

    Each picture ``X.png`` gives ``out_dir/X_mask.png`` (0/255, same size as the input)
    and ``out_dir/X_overlay.png``, put in place together. A folder of numbered slices of
    one patient is segmented as a volume (said in a line, with a warning naming the
    slices whose outline the 3D rule removed) and written to ``out_dir/<folder>/``. A
    folder of such folders, at any depth (kaggle_3m, or ``data/site/patient``), is
    handled patient by patient, its own loose pictures as well (:func:`stack_folders`).
    A file given twice is segmented once. ``out_dir/areas_2d.csv`` lists every
    picture's tumour area in pixels (rows of an earlier run into the folder are kept,
    a picture segmented again replaced), and in mm^2 when ``pixel_mm`` (the pixel size, which
    exported pictures do not carry) is given, and its largest lesion's longest diameter
    and the one perpendicular to it (:func:`braintumor.diameters.picture_diameters`; mm
    or pixels likewise). ``log`` receives one line per picture (and
    every warning). ``bases``: for a folder given, the folder its patients' output paths
    are taken below (a data set's, when its 2D folders come one by one from among its 3D
    cases; else the folder's own). Returns the written paths.

    A folder whose pictures are not all numbered is not one patient's stack: each of its
    pictures is outlined on its own, into ``out_dir/<folder>/``. A picture is refused
    (:class:`InputError`) when its mask would overwrite another input's of this run (two
    pictures of one name) or a mask beside it (the outputs written into the picture's
    own folder; a ``<image>_mask.*`` of any picture suffix counts). With ``on_error``, an
    input (a picture, or a patient's folder) that fails, or whose outputs cannot be
    written (a folder in their place, a full disk), is passed to it and the others are
    still segmented; without, the error is raised. Stopped by Ctrl-C or SIGTERM, the run
    writes the rows of the pictures it finished into ``areas_2d.csv`` and says so.
    """
    from braintumor.diameters import picture_diameters
    from braintumor.errors import BrainTumorError, describe_failure
    from braintumor.interrupts import Interrupted
    from braintumor.io import (
        is_dicom_picture,
        is_image_2d,
        read_dicom_2d,
        read_image_2d,
        write_png,
        written_together,
    )

    if pixel_mm is not None and not 0 < pixel_mm <= 20:
        raise InputError(f"the pixel size must be a number of millimetres above 0 and at "
                         f"most 20 (got {pixel_mm:g}).")
    say = log or (lambda s: None)
    out = Path(out_dir)
    m = model if isinstance(model, Model2D) else load_model_2d(model)
    written: list[Path] = []
    rows: list[dict[str, Any]] = []

    claimed: dict[Path, str] = {}

    def _claim(picture: Path, dest: Path) -> None:
        """Refuse a picture whose outputs would overwrite an input or an earlier one's."""
        mask = (dest / f"{picture.stem}_mask.png").resolve()
        if mask in claimed:
            raise InputError(f"{picture}: another picture of this run ({claimed[mask]}) has "
                             "the same name, and its mask would be overwritten; run it "
                             "into another folder.")
        beside = _mask_beside(picture) if mask.parent == picture.resolve().parent else None
        if beside is not None:
            raise InputError(f"{picture}: {beside.name} lies beside it (a reference "
                             f"outline?), and the output {mask.name} would be taken for "
                             "it or overwrite it; write the outputs to another folder.")
        claimed[mask] = str(picture)

    def _write(img: np.ndarray, res: SliceResult, dest: Path, stem: str, name: str,
               stack: str = "", px: float | None = pixel_mm) -> None:
        # the mask and its overlay go in together: a failure at either leaves both as
        # they were (io.written_together)
        with written_together():
            pair = [write_png(res.mask.astype(np.uint8) * 255, dest / f"{stem}_mask.png"),
                    write_png(overlay(img, res.mask), dest / f"{stem}_overlay.png")]
        written.extend(pair)
        area = int(res.info["area_pixels"])
        mm2 = round(area * px * px, 2) if px else None
        diam = picture_diameters([res.mask], px)
        line = f"{name}: tumour area {area} pixels" + (f" ({mm2:g} mm^2)" if mm2 is not None
                                                       else "")
        if diam:
            line += f", largest lesion {diam['text']}"
        if "warning" in res.info:
            line += f" (warning: {res.info['warning']})"
        say(line)
        rows.append({"picture": name, "stack": stack, "area_pixels": area,
                     "area_mm2": "" if mm2 is None else mm2,
                     "longest": diam["longest"] if diam else "",
                     "perpendicular": diam["perpendicular"] if diam else "",
                     "diameter_unit": diam["unit"] if diam else "",
                     "warning": res.info.get("warning", ""),
                     # last, so that the earlier columns keep their places
                     "mask": (dest / f"{stem}_mask.png").relative_to(out).as_posix()})

    def _picture(p: Path, dest: Path, stack: str = "") -> None:
        _claim(p, dest)
        if is_dicom_picture(p) or is_dicom_slice_file(p):
            # a DICOM slice says its own pixel size (a given one still wins)
            img, own = read_dicom_2d(p)
            _write(img, segment_image(img, m), dest, p.stem, str(p), stack,
                   px=pixel_mm if pixel_mm is not None else own)
            return
        if not is_image_2d(p):
            raise InputError(f"{p}: is not a PNG/JPEG/TIFF picture or a DICOM slice.")
        img = read_image_2d(p)
        _write(img, segment_image(img, m), dest, p.stem, str(p), stack)

    def _folder(folder: Path, root: Path) -> None:
        files = _images_in(folder)
        # a patient under a data set keeps its path there (site/patient), so that two
        # sites' patients of one name are two outputs; the folder given keeps its name
        rel = Path(folder.name) if folder == root else folder.relative_to(root)
        dest = out / rel
        name = rel.as_posix()
        if not all(slice_number(f) is not None for f in files):
            say(f"{folder}: its pictures are not numbered slices of one patient "
                "(name_1, name_2, ...), so each is outlined on its own.")
            for f in files:
                guarded(_picture, f, dest)
            return
        # numbered slices of several names (patients copied into one folder) are several
        # volumes: one stack would interleave them and keep one patient's tumour
        stems: dict[str, list[Path]] = {}
        for f in files:
            stems.setdefault(slice_stem(f) or "", []).append(f)
        if len(stems) > 1:
            say(f"{folder}: holds the numbered slices of {len(stems)} names "
                f"({', '.join(sorted(stems)[:3])}{', ...' if len(stems) > 3 else ''}); "
                "each is segmented as a volume of its own.")
            for stem, group in sorted(stems.items()):
                guarded(_stack, group, dest, f"{name}/{stem}")
            return
        _stack(files, dest, name)

    def _stack(files: list[Path], dest: Path, name: str) -> None:
        for f in files:
            _claim(f, dest)
        imgs = [read_image_2d(f) for f in files]
        results = segment_stack(imgs, m, names=[str(f) for f in files])
        # one volume: its slices keep one 3D tumour, which may empty a slice's outline
        say(f"{name}: segmented as one stack of {len(files)} numbered slice(s) (one "
            "patient's volume, keeping one 3D tumour).")
        note = numbering_note(files)
        if note is not None:
            say(f"note: {name}: {note}")
        emptied = [f.name for f, r in zip(files, results, strict=True)
                   if r.info.get("removed_by_stack")]
        if emptied:
            say(f"warning: {name}: the outline{'s' if len(emptied) > 1 else ''} of "
                f"{_few(emptied)} {'were' if len(emptied) > 1 else 'was'} removed by the "
                "stack's one-tumour rule; if these pictures are not one patient's slices, "
                "give them one at a time or name them apart (not name_1, name_2, ...).")
        for f, img, res in zip(files, imgs, results, strict=True):
            _write(img, res, dest, f.stem, str(f), name)

    def guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except (InputError, OSError) as exc:
            if on_error is None:
                raise
            first = args[0] if args else ""
            # a stack's pictures are named by their folder, not as a list
            where = str(first[0].parent if isinstance(first, list) and first else first)
            if not isinstance(exc, BrainTumorError):  # an output that could not be written
                exc = OutputNotWritten(f"{where}: its outputs could not be written: "
                                       f"{describe_failure(exc)}")
            if where and where not in str(exc):  # every error line names its input
                exc = InputError(f"{where}: {exc}")
            on_error(exc)

    def _input(p: Path) -> None:
        if not p.exists():
            raise InputError(f"{p}: file not found.")
        if p.is_file():
            _picture(p, out)
            return
        folders = stack_folders(p)
        if not folders:
            raise InputError(f"{p}: holds no PNG/JPEG/TIFF slice images.")
        root = (bases or {}).get(p, p)
        for folder in folders:
            guarded(_folder, folder, root)

    given: set[Path] = set()
    try:
        for raw in paths:
            p = Path(raw)
            if p.exists() and p.resolve() in given:  # one picture typed twice: once
                say(f"note: {p} is given more than once; it is segmented once.")
                continue
            given.add(p.resolve())
            guarded(_input, p)
    except (KeyboardInterrupt, Interrupted):
        # the pictures finished keep their rows, as a 3D run's finished cases do
        table = out / "areas_2d.csv"
        kept = (f"the {len(rows)} picture(s) finished are written, with their rows in "
                f"{table}" if rows else "no picture of this run had finished")
        if rows:
            _write_areas(table, rows, say)
        say(f"interrupted: {kept}.")
        raise
    if rows:
        out.mkdir(parents=True, exist_ok=True)
        table = out / "areas_2d.csv"
        written.append(_write_areas(table, rows, say))
    return written


def _other_picture(earlier: str, now: str) -> bool:
    """True only when a picture path an earlier run stored, as it was typed, is known to
    be another picture than ``now``: both files there and not one file; else an absolute
    path elsewhere, or another file name. A relative path typed in another folder, whose
    file is not found from here, cannot be told apart: False (no warning rather than a
    false one)."""
    import os

    a, b = Path(earlier), Path(now)
    try:
        if a.exists() and b.exists():
            return not os.path.samefile(a, b)
    except OSError:
        return False
    if a.is_absolute():
        return a.resolve() != b.resolve()
    return a.name != b.name


def _write_areas(table: Path, rows: list[dict[str, Any]],
                 say: Callable[[str], None] | None = None) -> Path:
    """Add ``rows`` to ``areas_2d.csv`` as ``volumes.csv`` is added to
    (:func:`braintumor.scale.write_volume_table`): an earlier run's rows for other
    pictures stay, but not a row of this run's pictures (however their paths were typed)
    nor one whose mask this run has written over; a table re-saved by a spreadsheet is
    read by its own separator, columns a user added are kept with their values, a file
    that is no such table is kept aside, and writers of the folder take turns through
    its lock."""
    import csv

    from braintumor.io import write_replacing
    from braintumor.scale import read_table, table_lock

    def where(picture: str) -> str:
        return str(Path(picture).resolve()) if picture else ""

    with table_lock(table):
        old, extra = read_table(table, "mask", list(rows[0]))
        mine = {where(str(r["picture"])) for r in rows}
        masks = {str(r["mask"]) for r in rows}
        kept = [r for r in old if where(r.get("picture") or "") not in mine
                and (r.get("mask") or "") not in masks]
        if say is not None:  # another picture's result, written over: said, not dropped
            by_mask = {str(r["mask"]): str(r["picture"]) for r in rows}
            for r in old:
                if (r.get("mask") or "") in masks and r.get("picture") and \
                        _other_picture(str(r["picture"]), by_mask[str(r["mask"])]):
                    say(f"warning: {r['mask']} of an earlier run, the outline of "
                        f"{r['picture']}, was replaced by that of {by_mask[str(r['mask'])]} "
                        "(the same name); its row in areas_2d.csv went with it.")
        earlier = {str(r.get("mask")): r for r in old}
        out_rows = kept + [{**{f: earlier[str(r["mask"])].get(f, "") for f in extra
                               if str(r["mask"]) in earlier}, **r} for r in rows]
        # written beside it and renamed over it (io.write_replacing): a temporary name of
        # the call's own, so two runs, or two threads, never write one file
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=[*rows[0], *extra], extrasaction="ignore",
                                   restval="")
                w.writeheader()
                w.writerows(out_rows)

        write_replacing(table, write)
    return table


class OutputNotWritten(InputError):
    """A picture's outputs that could not be written (a full disk, a folder in a file's
    place): the machine's failure, not the input's (``predict`` exits 1, not 2)."""


def predict_2d_inputs(paths: Sequence[str | Path], out_dir: str | Path,
                      pixel_mm: float | None = None,
                      not_written: list[str] | None = None,
                      bases: dict[Path, Path] | None = None) -> tuple[list[Path], int]:
    """What ``braintumor predict`` calls for 2D inputs (pictures or slice folders):
    writes ``<image>_mask.png``, ``<image>_overlay.png`` and ``areas_2d.csv`` under
    ``out_dir``, prints one line per picture (warnings included) and one ``error:``
    sentence per input that failed; returns the written paths and how many failed.
    ``not_written`` gets the error of each input whose outputs could not be written;
    ``bases`` as :func:`predict_images` takes it."""
    import sys

    failed: list[InputError] = []

    def report(exc: InputError) -> None:
        print(f"error: {exc}", file=sys.stderr)
        failed.append(exc)
        if not_written is not None and isinstance(exc, OutputNotWritten):
            not_written.append(str(exc))

    written = predict_images(paths, out_dir, log=lambda s: print(s, file=sys.stderr),
                             pixel_mm=pixel_mm, on_error=report, bases=bases)
    return written, len(failed)


def is_dicom_slice_file(path: str | Path) -> bool:
    """A file given on its own whose name says nothing (a PACS export's ``IM0001``) but
    whose content is DICOM (:func:`braintumor.dicom.is_dicom_file`): one slice, read as
    a ``.dcm`` file is (a multi-frame file is refused there in a sentence). A picture or
    NIfTI name is taken by its name."""
    from braintumor.dicom import is_dicom_file
    from braintumor.io import is_image_2d, is_nifti

    p = Path(path)
    return p.is_file() and not (is_image_2d(p) or is_nifti(p)) and is_dicom_file(p)


def is_2d_input(path: str | Path) -> bool:
    """True for a 2D picture or a single DICOM slice file, or a folder (of folders, at any
    depth: :func:`stack_folders`) of 2D slice pictures without NIfTI (a folder of DICOM
    files is a series: the 3D path)."""
    from braintumor.io import is_dicom_picture, is_image_2d, is_nifti

    p = Path(path)
    if p.is_file():
        return is_image_2d(p) or is_dicom_picture(p) or is_dicom_slice_file(p)
    if not p.is_dir():
        return False
    if any(is_nifti(f) for f in p.rglob("*")):
        return False
    return bool(stack_folders(p))


# --------------------------------------------------------------------- evaluation


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean arrays; 1.0 when both are empty."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    s = int(p.sum()) + int(r.sum())
    return 1.0 if s == 0 else 2.0 * int((p & r).sum()) / s


def stack_metrics(pred: np.ndarray, ref: np.ndarray,
                  lacking: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of one patient's stack ``(N, H, W)`` bool against its reference.

    ``dice``: over the whole volume (Buda et al.'s per-patient Dice);
    ``slice_dice_mean``: mean Dice over slices whose reference has tumour;
    ``fp_slices`` / ``tumour_free_slices``: tumour-free slices where anything was
    predicted; ``missed_slices``: tumour slices with an empty prediction.

    ``lacking`` ``(N,)`` bool marks slices with no prediction (missing or unreadable;
    ``pred`` is empty there). A prediction that is not there is never a right empty
    one: such a tumour slice is missed (Dice 0), such a tumour-free slice is left out of
    ``tumour_free_slices`` (so of the false-positive rate), and the volume's Dice, which
    a missing slice would raise, is undefined (NaN) for the patient.
    """
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference {r.shape}.")
    gone = np.zeros(len(p), bool) if lacking is None else np.asarray(lacking, bool)
    has_p = np.asarray(p.reshape(len(p), -1).any(axis=1), dtype=bool) & ~gone
    has_r = np.asarray(r.reshape(len(r), -1).any(axis=1), dtype=bool)
    sd = [0.0 if gone[i] else dice(p[i], r[i]) for i in np.flatnonzero(has_r)]
    return {
        "dice": float("nan") if gone.any() else dice(p, r),
        "slice_dice_mean": float(np.mean(sd)) if sd else float("nan"),
        "slices": int(len(p)),
        "tumour_slices": int(has_r.sum()),
        "tumour_free_slices": int((~has_r & ~gone).sum()),
        "fp_slices": int((has_p & ~has_r).sum()),
        "missed_slices": int((~has_p & has_r).sum()),
        "slice_dices": [float(d) for d in sd],
    }


def summarise(per_patient: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over patients and pooled slice counts of :func:`stack_metrics` results.

    The volume Dice's mean, median and minimum are over the patients whose every slice
    has a prediction (``dice_patients`` of ``patients``; NaN with none): a patient with
    slices missing has no volume Dice. ``fp_rate`` is NaN without a tumour-free slice,
    as ``slice_dice_mean`` is without a tumour slice."""
    rows = list(per_patient.values())
    if not rows:
        return {}
    slice_d = [d for r in rows for d in r["slice_dices"]]
    free = sum(r["tumour_free_slices"] for r in rows)
    fps = sum(r["fp_slices"] for r in rows)
    whole = [float(r["dice"]) for r in rows if not np.isnan(r["dice"])]
    nan = float("nan")
    return {
        "patients": len(rows),
        "dice_patients": len(whole),
        "dice_mean": float(np.mean(whole)) if whole else nan,
        "dice_median": float(np.median(whole)) if whole else nan,
        "dice_min": float(np.min(whole)) if whole else nan,
        "slice_dice_mean": float(np.mean(slice_d)) if slice_d else nan,
        "tumour_slices": int(sum(r["tumour_slices"] for r in rows)),
        "tumour_free_slices": int(free),
        "fp_slices": int(fps),
        "fp_rate": float(fps / free) if free else nan,
        "missed_slices": int(sum(r["missed_slices"] for r in rows)),
        "missing_slices_pred": int(sum(r.get("missing_slices_pred", 0) for r in rows)),
    }


def _mask_files(root: Path) -> dict[str, Path]:
    """``<image>`` -> its ``<image>_mask`` picture anywhere under ``root``, keyed by its
    path there (``PA/slice_1``); hidden files and folders (macOS's ``._`` copies) are
    passed over, as everywhere, and linked folders followed."""
    from braintumor.evaluate import mask_files_2d

    return mask_files_2d(root, named_only=True)


def _read_mask(path: Path) -> np.ndarray:
    """A mask picture as boolean ``(H, W)``, read as every 2D path reads one
    (:func:`braintumor.evaluate.read_mask_2d`: above 0 in a label mask, values under
    16, else a channel above 127)."""
    from braintumor.evaluate import read_mask_2d

    return read_mask_2d(path)


def evaluate_2d(pred_dir: str | Path, ref_dir: str | Path) -> dict[str, Any]:
    """Score folders of 2D masks: ``<image>_mask.png`` predictions against references.

    ``ref_dir``: a kaggle_3m-style folder (``<patient>/<image>_mask.tif``) or any folder
    (tree) of ``<image>_mask.(png|tif)``; ``pred_dir``: the output of
    :func:`predict_images` (files matched by their paths under each folder, a flat
    folder against patients' folders by name: :func:`braintumor.evaluate.match_masks_2d`).
    Slices are grouped into patients by the reference's parent folder (in a flat folder, by their
    names before the slice number) and ordered by slice number; pictures of a flat folder
    whose names have no number (``brain_mask.png``) are no patient's slices: they are
    listed in ``not_stacked`` and scored per picture only
    (:func:`braintumor.evaluate.evaluate_2d`). A reference without a prediction (listed
    in ``missing``; an unreadable one or one of another size likewise, in
    ``unreadable``; each patient's ``missing_slices_pred`` counts them) is never taken as
    a right empty prediction (:func:`stack_metrics`' ``lacking``): a missed tumour slice,
    no tumour-free slice, and no volume Dice for its patient. References of different
    sizes in one patient, or no patient at all, are refused (:class:`InputError`).
    Returns ``{"patients": {id: metrics}, "summary": {...}, "missing": [...],
    "unreadable": [...], "not_stacked": [...]}``.
    """
    pred_root, ref_root = Path(pred_dir), Path(ref_dir)
    for d, what in ((pred_root, "prediction"), (ref_root, "reference")):
        if not d.is_dir():
            raise InputError(f"{d}: {what} folder not found.")
    refs = _mask_files(ref_root)
    if not refs:
        raise InputError(f"{ref_root}: holds no <image>_mask.png/.tif reference masks.")
    preds = _mask_files(pred_root)
    from braintumor.evaluate import case_names_2d, match_masks_2d

    pairs = match_masks_2d(refs, preds)
    if not pairs:
        raise InputError(f"{pred_root}: holds no <image>_mask.png matching the references "
                         f"in {ref_root}.")
    names = case_names_2d(refs)
    groups: dict[str, list[str]] = {}
    loose: list[str] = []
    for key in refs:
        # a patient's folder names the patient; in one flat folder, the slices' names
        # before their numbers do (several patients' slices are never one volume), and
        # pictures named without a number are single pictures, no patient's volume
        folder, _, stem = key.rpartition("/")
        if not folder and slice_number(stem) is None:
            loose.append(names[key])
            continue
        pid = folder or slice_stem(stem) or "all"
        groups.setdefault(pid, []).append(key)
    if not groups:
        raise InputError(f"{ref_root}: holds no numbered slices of a patient (name_1, "
                         "name_2, ... or a folder per patient), so there is no patient's "
                         "volume to score.")
    per_patient: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    unreadable: list[str] = []
    for pid, stems in sorted(groups.items()):
        stems.sort(key=lambda s: (slice_number(s) if slice_number(s) is not None else -1, s))
        P: list[np.ndarray] = []
        R: list[np.ndarray] = []
        gone: list[bool] = []
        for s in stems:
            r = _read_mask(refs[s])
            if R and r.shape != R[0].shape:
                raise InputError(f"{refs[s]}: is {r.shape[1]}x{r.shape[0]} pixels while "
                                 f"{refs[stems[0]].name} is {R[0].shape[1]}x{R[0].shape[0]};"
                                 f" the slices of patient {pid} must be the same size.")
            pm = None
            if s in pairs:
                found = preds[pairs[s]]
                try:
                    pm = _read_mask(found)
                    if pm.shape != r.shape:
                        raise InputError(f"{found}: is {pm.shape[1]}x{pm.shape[0]} pixels, "
                                         f"its reference {r.shape[1]}x{r.shape[0]}.")
                except InputError as exc:  # scored as a missing picture, and said
                    unreadable.append(str(exc))
                    pm = None
            else:
                missing.append(names[s])
            gone.append(pm is None)  # no outline: never a right empty one
            P.append(np.zeros_like(r) if pm is None else pm)
            R.append(r)
        per_patient[pid] = {**stack_metrics(np.stack(P), np.stack(R), np.array(gone, bool)),
                            "missing_slices_pred": int(sum(gone))}
    return {"patients": per_patient, "summary": summarise(per_patient), "missing": missing,
            "unreadable": unreadable, "not_stacked": sorted(loose)}


def has_2d_masks(path: str | Path) -> bool:
    """True for a folder (tree) holding ``<image>_mask.(png|tif)`` pictures and no NIfTI:
    what ``braintumor evaluate`` checks before handing the folders to :func:`evaluate_2d`."""
    from braintumor.io import is_nifti

    p = Path(path)
    if not p.is_dir():
        return False
    from braintumor.evaluate import walk_files

    return not any(is_nifti(f) for f in walk_files(p)) and bool(_mask_files(p))


def rows_2d(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (one per patient, then ``mean``) of an :func:`evaluate_2d` result, for a
    CSV: patient, dice, slice_dice_mean, slices, tumour_slices, tumour_free_slices,
    fp_slices, missed_slices, missing_slices_pred (the mean row's dice is over the
    patients with every slice predicted, :func:`summarise`)."""
    rows: list[dict[str, Any]] = []
    for pid, m in result["patients"].items():
        rows.append({"patient": pid, **{k: v for k, v in m.items() if k != "slice_dices"}})
    s = result["summary"]
    rows.append({"patient": "mean", "dice": s["dice_mean"],
                 "slice_dice_mean": s["slice_dice_mean"],
                 "slices": sum(r["slices"] for r in rows),
                 "tumour_slices": s["tumour_slices"],
                 "tumour_free_slices": s["tumour_free_slices"], "fp_slices": s["fp_slices"],
                 "missed_slices": s["missed_slices"],
                 "missing_slices_pred": s["missing_slices_pred"]})
    return rows
