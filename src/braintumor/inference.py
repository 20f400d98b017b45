"""Predictor: checkpoint -> region probabilities -> labels in the input's native space.

Pipeline: crop to the brain, z-score as in training, sliding-window inference (MONAI's
inferer, Gaussian weighting) or a single whole-volume pass when it fits, optional
mirroring test-time augmentation and fold ensembling, postprocessing, region channels
turned back into labels, uncropped into the input's native grid.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import labels as L
from braintumor.cases import Case
from braintumor.errors import InputError, join_warnings
from braintumor.preprocess import remove_small_components, uncrop
from braintumor.segment import ProgressFn, SegmentationResult

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "brats3d"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error.

    Without an NVIDIA driver on the machine ``auto`` is ``cpu`` at once, without
    importing torch (the ONNX Runtime path does not need it).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"Unknown device {device!r}; use auto, cpu or cuda.")
    if device == "cpu" or (device == "auto" and not _nvidia_driver()):
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available.")
    if device not in ("cpu", "cuda"):
        raise InputError(f"Unknown device {device!r}; use auto, cpu or cuda.")
    return device


def _nvidia_driver() -> bool:
    """True when an NVIDIA kernel driver is loaded (CUDA may then be usable)."""
    import os

    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def sliding_window_probs(model: Any, image: np.ndarray, patch: tuple[int, int, int],
                         overlap: float = 0.25, device: str = "cpu", output: str = "sigmoid",
                         mirror: bool = False, whole_volume_max: int = 0,
                         progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Region probabilities ``(3, x, y, z)`` float32 for a prepared image ``(4, x, y, z)``.

    ``model`` is one network or a list of them (an ensemble, whose probabilities are
    averaged; each window is then cut once for all of them). When the (16-padded)
    volume has at most ``whole_volume_max`` voxels, one pass over the whole volume
    replaces the sliding window (faster on a CPU, no seams). ``mirror`` averages the 8
    axis flips (test-time augmentation). Windows are cut and blended in NumPy; only the
    network itself runs in PyTorch or ONNX Runtime, so the ONNX path never imports torch
    (0.7 s of a fast prediction). ``progress`` is told the fraction of windows done.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    x = np.ascontiguousarray(image, dtype=np.float32)[None]
    orig = x.shape[2:]
    if any(s % 16 for s in orig):  # zeros to a multiple of 16 (half np.pad's time)
        padded = np.zeros(x.shape[:2] + tuple(s + (-s) % 16 for s in orig), np.float32)
        padded[:, :, : orig[0], : orig[1], : orig[2]] = x
        x = padded
    whole = whole_volume_max > 0 and int(np.prod(x.shape[2:])) <= whole_volume_max
    predicts = [m.run if isinstance(m, OnnxNet) else _torch_predictor(m, device)
                for m in models]
    flips: list[tuple[int, ...]] = [()]
    if mirror:
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    acc: np.ndarray | None = None
    for i, f in enumerate(flips):
        inp = np.ascontiguousarray(np.flip(x, f)) if f else x
        done = None if progress is None else (
            lambda n, total, i=i: progress((i + n / total) / len(flips)))
        logits = [predict(inp) for predict in predicts] if whole else sliding_windows(
            inp, patch, predicts, overlap, batch=4 if device == "cuda" else 2, done=done,
            ahead=device == "cpu")
        if whole and progress is not None:
            progress((i + 1) / len(flips))
        for lg in logits:
            # in place where the logits are this function's own buffer: each fresh
            # volume-sized array costs its page faults on a prediction's one pass
            p = region_probs(lg, output, in_place=lg.flags.writeable)
            p = np.flip(p, f) if f else p
            if acc is None:
                acc = p if p.flags.writeable and p.dtype == np.float32 else p.astype(np.float32)
            else:
                acc += p
    assert acc is not None
    acc *= np.float32(1.0 / (len(flips) * len(predicts)))
    return np.ascontiguousarray(acc[0, :, : orig[0], : orig[1], : orig[2]], dtype=np.float32)


def _torch_predictor(model: Any, device: str) -> Any:
    """``(B, C, X, Y, Z)`` float32 array -> logits array, through a torch network
    (mixed precision on a GPU)."""
    import torch

    dev = torch.device(device)

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device_type=dev.type,
                                                    enabled=dev.type == "cuda"):
            out = model(torch.from_numpy(a).to(dev))
        return out.float().cpu().numpy()  # type: ignore[no-any-return]

    return predict


def gaussian_importance(roi: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """Window weights ``roi``-shaped: a separable Gaussian (sigma = ``sigma_scale`` x
    size), floored at its minimum or 1e-3 (the same map as MONAI's ``gaussian`` mode)."""
    m: np.ndarray | None = None
    for i, r in enumerate(roi):
        x = np.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=np.float32)
        x = np.exp(x ** 2 / (-2 * (r * sigma_scale) ** 2)).astype(np.float32)
        m = x if m is None else m[..., None] * x[(None,) * i]
    assert m is not None
    return np.maximum(m, max(float(m.min()), 1e-3)).astype(np.float32)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis: a step of ``roi * (1 - overlap)``,
    the last window moved back to end at the border (MONAI's placement). An ``overlap``
    outside [0, 1) is refused: at 1 or more the step would be one voxel (a window per
    voxel), below 0 windows would leave voxels that none covers."""
    if not 0 <= overlap < 1:
        raise ValueError(f"a sliding-window overlap is 0 or more and under 1, not "
                         f"{overlap!r}.")
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    n = next((d for d in range(math.ceil(size / interval)) if d * interval + roi >= size),
             None)
    return [i * interval - max(i * interval + roi - size, 0)
            for i in range((n + 1) if n is not None else 1)]


def sliding_window(x: np.ndarray, roi: tuple[int, int, int], predict: Any, overlap: float,
                   batch: int = 2) -> np.ndarray:
    """Gaussian-weighted sliding-window inference of ``x`` ``(1, C, X, Y, Z)`` ->
    ``(1, K, X, Y, Z)``; ``predict`` maps a ``(B, C, *roi)`` array to ``(B, K, *roi)``
    and gets ``batch`` windows at a time.

    The same windows, weights and padding as ``monai.inferers.sliding_window_inference``
    (tested to agree to 1e-5); written here because importing MONAI takes about 2 s,
    a third of a fast-mode prediction on a 2-core CPU.
    """
    return sliding_windows(x, roi, [predict], overlap, batch)[0]


def sliding_windows(x: np.ndarray, roi: tuple[int, int, int], predicts: list[Any],
                    overlap: float, batch: int = 2,
                    done: Callable[[int, int], None] | None = None,
                    ahead: bool = False) -> list[np.ndarray]:
    """:func:`sliding_window` for several networks at once (an ensemble's members): each
    batch of windows is cut once and given to every ``predict``, and the blending
    weights are summed once; one output per network, each as :func:`sliding_window`
    would give it. ``done(n, total)`` hears after each batch how many windows are done.

    ``ahead``: the networks work on the next batch, in a thread of their own, while
    this one blends the last (the runtimes let go of the GIL): about 0.3 s less of a
    default prediction on 2 cores, the same sums to the bit (the blending keeps its
    order). Only for a ``predict`` that sets up its own context (PyTorch's inference
    mode is the calling thread's, and the thread ahead is another) and returns a fresh
    array each call (a buffer it reuses would be overwritten by the next batch before
    the last is blended)."""
    import itertools

    spatial = tuple(int(s) for s in x.shape[2:])
    pad = [(0, 0), (0, 0)]
    for s, r in zip(spatial, roi, strict=True):
        d = max(r - s, 0)
        pad.append((d // 2, d - d // 2))
    xp = np.pad(x, pad) if any(p for pp in pad for p in pp) else x
    size = tuple(int(s) for s in xp.shape[2:])
    corners = list(itertools.product(*(window_starts(s, r, overlap)
                                       for s, r in zip(size, roi, strict=True))))
    w = gaussian_importance(roi)
    outs: list[np.ndarray | None] = [None] * len(predicts)
    count = np.zeros(size, np.float32)
    every = (slice(None),)
    batches = [[(slice(i, i + roi[0]), slice(j, j + roi[1]), slice(k, k + roi[2]))
                for i, j, k in corners[b:b + batch]] for b in range(0, len(corners), batch)]

    def infer(boxes: list[tuple[slice, slice, slice]]) -> list[np.ndarray]:
        windows = np.stack([xp[(0,) + every + box] for box in boxes])
        return [np.asarray(predict(windows), dtype=np.float32) for predict in predicts]

    with ThreadPoolExecutor(1, thread_name_prefix="braintumor-windows") as pool:
        coming = pool.submit(infer, batches[0]) if ahead else None
        for b, boxes in enumerate(batches):
            if coming is None:  # each batch predicted when it is blended
                ys = infer(boxes)
            else:
                ys = coming.result()
                if b + 1 < len(batches):
                    coming = pool.submit(infer, batches[b + 1])
            for m, y in enumerate(ys):
                if not y.flags.writeable:
                    y = y.copy()
                y *= w  # weighted in place: no temporary per window
                out = outs[m]
                if out is None:
                    out = outs[m] = np.zeros((1, y.shape[1]) + size, np.float32)
                for n, box in enumerate(boxes):
                    out[(0,) + every + box] += y[n]
            for box in boxes:
                count[box] += w
            if done is not None:
                done(min((b + 1) * batch, len(corners)), len(corners))
    keep = tuple(slice(p[0], p[0] + n) for p, n in zip(pad[2:], spatial, strict=True))
    result = []
    for out in outs:
        assert out is not None
        out /= count
        result.append(out[every + every + keep])
    return result


def logistic(logits: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The logistic function through tanh (no overflow warning for very negative
    logits), float32; ``in_place`` overwrites ``logits`` (float32) with it."""
    if in_place and logits.dtype == np.float32:
        y = logits
        y *= np.float32(0.5)
    else:
        y = np.multiply(logits, 0.5, dtype=np.float32)
    np.tanh(y, out=y)
    y *= 0.5
    y += 0.5
    return y


def region_probs(logits: np.ndarray, output: str, in_place: bool = False) -> np.ndarray:
    """Network logits ``(B, K, ...)`` -> region probabilities ``(B, 3, ...)`` (WT, TC, ET);
    ``in_place``: sigmoid outputs overwrite ``logits``."""
    if output == "sigmoid":
        return logistic(logits, in_place)
    e = np.exp(logits - logits.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)  # background, NCR, ED, ET
    return np.stack([p[:, 1:].sum(1), p[:, 1] + p[:, 3], p[:, 3]], axis=1).astype(np.float32)


@dataclass
class PostProcess:
    """Postprocessing rules (chosen by cross-validation, see the model card).

    ``et_min_voxels``: an enhancing tumour smaller than this in total is relabelled as
    necrosis (BraTS scores an empty-reference ET with a false positive as Dice 0).
    ``wt_min_voxels``: isolated whole-tumour components smaller than this are removed.
    ``wt_keep_fraction``: components smaller than this fraction of the largest one are
    removed too (distant false positives are what inflate HD95).
    The voxel counts are of 1 mm^3 voxels, the grid they were chosen on; :meth:`for_voxel`
    converts them for other voxel sizes.
    """

    threshold: tuple[float, float, float] = (0.5, 0.5, 0.5)
    et_min_voxels: int = 0
    wt_min_voxels: int = 0
    wt_keep_fraction: float = 0.0

    def for_voxel(self, voxel_mm3: float) -> PostProcess:
        """The same rules for voxels of ``voxel_mm3``: the minimum sizes keep their volume
        in mm^3 (4,000 voxels of 1 mm^3 are 500 voxels of 2x2x2 mm)."""
        if abs(voxel_mm3 - 1.0) < 1e-6:
            return self
        return replace(self, et_min_voxels=math.ceil(self.et_min_voxels / voxel_mm3),
                       wt_min_voxels=math.ceil(self.wt_min_voxels / voxel_mm3))

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Region probabilities ``(3, ...)`` -> internal labels ``(...)``. In 3D the
        rules work in the box around the voxels over a threshold (every component lies
        in it; the rest of the volume is background): the same labels, in a fraction of
        a full volume's time."""
        wt = probs[0] > self.threshold[0]
        tc = probs[1] > self.threshold[1]
        et = probs[2] > self.threshold[2]
        if wt.ndim != 3:
            return self._labels(wt, tc, et)
        labels = np.zeros(wt.shape, np.uint8)
        found = wt | tc | et
        if found.any():
            from braintumor.preprocess import bounding_box

            box = bounding_box(found)
            labels[box] = self._labels(wt[box], tc[box], et[box])
        return labels

    def _labels(self, wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
        if self.wt_min_voxels or self.wt_keep_fraction:
            keep = remove_small_components(wt | tc | et, self.wt_min_voxels,
                                           self.wt_keep_fraction)
            wt, tc, et = wt & keep, tc & keep, et & keep
        labels = L.channels_to_labels(np.stack([wt, tc, et]))
        if self.et_min_voxels and 0 < int((labels == L.ET).sum()) < self.et_min_voxels:
            labels[labels == L.ET] = L.NCR
        return labels


@dataclass
class LoadedModel:
    """One or more networks (folds) with the config they were trained with."""

    nets: list[Any]
    config: Any
    version: str
    patch: tuple[int, int, int]
    output: str
    post: PostProcess = field(default_factory=PostProcess)
    whole_volume_max: int = 0
    path: Path | None = None
    overlap: float = 0.5
    # fast mode: a subset of the members at a lower window overlap (model.json "fast")
    fast_members: tuple[int, ...] = (0,)
    fast_overlap: float = 0.25


def load_checkpoint_net(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """Build the network a checkpoint was made with and load its weights."""
    import torch

    from braintumor.networks import create_network

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: model checkpoint not found.")
    try:
        ck = torch.load(p, map_location=device, weights_only=False)
    except Exception as exc:
        raise InputError(f"{p}: not a readable model checkpoint ({exc}).") from None
    _check_checkpoint(p, ck)
    cfg = _saved_config(p, ck)
    out_ch = 3 if cfg.output == "sigmoid" else 4
    args = {k: v for k, v in cfg.network_args.items() if k != "dropout"}
    if cfg.deep_supervision:  # the checkpoint holds the extra heads (unused in eval mode)
        args["deep_supervision"] = True
    try:
        net = create_network(cfg.network, out_channels=out_ch, dropout=0.0, **args)
    except InputError as exc:  # a network this version does not have
        raise InputError(f"{p}: {exc}") from None
    except TypeError:  # settings this version's network does not take
        raise InputError(f"{p}: its network settings ({cfg.network} with "
                         f"{cfg.network_args}) do not fit this version's {cfg.network}; it "
                         "was made by a version whose network differs.") from None
    state = ck.get("model_ema") or ck["model"]
    # shipped checkpoints store weights in float16 to halve their size
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in state.items()})
    except (RuntimeError, AttributeError, TypeError):  # shapes, names or kinds that differ
        raise InputError(f"{p}: its weights do not fit the network its config describes "
                         f"({cfg.network} with {cfg.network_args or 'default settings'}): it was "
                         "altered since, or made by a version whose network differs.") from None
    net.eval().to(device)
    return net, cfg


def _checkpoint_config(path: Path) -> Any:
    """The training config saved in a checkpoint (without building its network)."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable model checkpoint ({exc}).") from None
    _check_checkpoint(path, ck)
    return _saved_config(path, ck)


def _saved_config(path: Path, ck: dict[str, Any]) -> Any:
    """The training config of a checkpoint; one with settings this version does not know
    is said to be another version's, naming the checkpoint."""
    from dataclasses import fields

    from braintumor import __version__
    from braintumor.config import AugmentConfig, TrainConfig, from_dict

    saved = ck["config"]
    unknown = sorted(set(saved) - {f.name for f in fields(TrainConfig)})
    aug = saved.get("augment")
    if isinstance(aug, dict):
        unknown += sorted(f"augment.{k}"
                          for k in set(aug) - {f.name for f in fields(AugmentConfig)})
    if unknown:
        raise InputError(f"{path}: made by another version of braintumor "
                         f"({ck.get('version') or 'not recorded'}; this is {__version__}), "
                         f"its config has settings this version does not know "
                         f"({', '.join(unknown)}); use it with the version that made it.")
    try:
        return from_dict(saved)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _check_checkpoint(path: Path, ck: Any) -> None:
    if not (isinstance(ck, dict) and isinstance(ck.get("config"), dict) and "model" in ck):
        raise InputError(f"{path}: not a model checkpoint written by braintumor train (it "
                         "holds no network weights with their config).")


def model_location(model: str | Path | None = None) -> Path:
    """Where a model given by name or path is: a shipped model's or a model folder (with
    ``model.json``), or a checkpoint file; a run folder of ``braintumor train`` stands for
    its ``best.pt`` (else ``last.pt``). Refused in one sentence: nothing there, or an
    ONNX file (it lacks the config the model runs with)."""
    name = DEFAULT_MODEL if model is None else str(model)
    folder = MODELS_DIR / name if (MODELS_DIR / name).is_dir() else Path(name)
    if folder.is_dir() and not (folder / "model.json").exists():
        for ck in ("best.pt", "last.pt"):
            if (folder / ck).is_file():
                return folder / ck
    if folder.is_file() and folder.suffix.lower() == ".onnx":
        raise InputError(f"{folder}: ONNX files are not taken as a model (they lack the "
                         "config the model runs with); give the checkpoint (.pt) it was "
                         "exported from, or the run folder of braintumor train.")
    if not folder.is_file() and not (folder / "model.json").exists():
        shipped = ("; the shipped model may be missing from this installation" if model is None
                   else "")
        raise InputError(
            f"No model found at {folder} (expected a model folder with model.json, a run "
            f"folder of braintumor train with best.pt or last.pt, or a checkpoint "
            f"file){shipped}."
        )
    return folder


def check_model(model: str | Path | None = None) -> None:
    """Refuse a model that cannot be loaded (:func:`model_location`, a checkpoint that is
    not one) in one sentence, so a cohort hears it once rather than once per case."""
    where = model_location(model)
    if where.is_file():
        _checkpoint_config(where)


def model_version(model: str | Path | None = None) -> str:
    """The version a model's results record (``info["model_version"]``, the ``model``
    column of ``volumes.csv``), read without loading it: a model folder's ``model.json``
    version, a checkpoint's ``checkpoint:<file name>``."""
    where = model_location(model)
    if where.is_file():
        return f"checkpoint:{where.name}"
    return str(json.loads((where / "model.json").read_text()).get("version", "unknown"))


def import_openvino() -> Any:
    """OpenVINO, imported with its usage statistics off. Its model converter, loaded with
    it, sends an event to Google Analytics at import when ``openvino_telemetry`` is
    installed (a DNS query from every prediction, and seconds of delay where the network
    drops it); this package sends nothing anywhere, so that module is hidden and OpenVINO
    uses its own no-op stand-in."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def _importable(module: str) -> bool:
    """True when ``module`` (``openvino`` or ``onnxruntime``) imports. OpenVINO is
    imported through :func:`import_openvino` only: imported any other way first, it
    brings its usage statistics module with it before any model is compiled."""
    try:
        if module == "openvino":
            import_openvino()
        else:
            __import__(module)
    except ImportError:
        return False
    return True


#: the CNN runtimes a prediction may ask for (``auto``: the fastest installed)
BACKENDS = ("auto", "openvino", "onnx", "torch")


def load_model(model: str | Path | None = None, device: str = "cpu",
               backend: str = "auto") -> LoadedModel:
    """Load a shipped model by name, a model folder (``model.json`` + fold checkpoints),
    a single checkpoint file or a run folder of ``braintumor train`` (its ``best.pt``).

    ``backend``: ``torch``, ``onnx`` (ONNX Runtime), ``openvino`` or ``auto``. On a CPU,
    ``auto`` runs the model's ONNX files with OpenVINO when it is installed, else with
    ONNX Runtime, else the checkpoints with PyTorch: the benchmark
    (benchmarks/bench_predict.py) measured them in that order of speed for the shipped
    model; one that is not installed is passed over for the next. ``onnx`` and
    ``openvino`` named run that runtime or are refused in one sentence
    (:func:`check_backend`), never swapped for another without a word.
    """
    check_backend(model, backend, device)
    folder = model_location(model)
    if folder.is_file():
        net, cfg = load_checkpoint_net(folder, device)
        return LoadedModel([net], cfg, f"checkpoint:{folder.name}", tuple(cfg.patch),
                           cfg.output, path=folder)
    meta_path = folder / "model.json"
    meta = json.loads(meta_path.read_text())
    nets: list[Any] = []
    cfg = None
    runtime = _onnx_runtime(backend) if device == "cpu" and meta.get("onnx") else None
    for i, ck in enumerate(meta["checkpoints"]):
        if runtime and i < len(meta["onnx"]) and (folder / meta["onnx"][i]).exists():
            # the ONNX file replaces the torch network; its session opens on first use,
            # so the fast mode pays only for the member it runs
            if cfg is None and "output" not in meta:
                cfg = _checkpoint_config(folder / ck)
            nets.append(runtime(folder / meta["onnx"][i]))
        else:
            net, cfg = load_checkpoint_net(folder / ck, device)
            nets.append(net)
    pp = meta.get("postprocess", {})
    post = PostProcess(threshold=tuple(pp.get("threshold", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
                       et_min_voxels=int(pp.get("et_min_voxels", 0)),
                       wt_min_voxels=int(pp.get("wt_min_voxels", 0)),
                       wt_keep_fraction=float(pp.get("wt_keep_fraction", 0.0)))
    fast = meta.get("fast", {})
    members = tuple(int(i) for i in fast.get("members", [0]) if 0 <= int(i) < len(nets))
    patch = tuple(meta["patch"]) if "patch" in meta else tuple(cfg.patch)  # type: ignore[union-attr]
    output = meta["output"] if "output" in meta else cfg.output  # type: ignore[union-attr]
    return LoadedModel(nets, cfg, meta.get("version", "unknown"), patch, output, post,  # type: ignore[arg-type]
                       int(meta.get("whole_volume_max", 0)), folder,
                       float(meta.get("overlap", 0.5)), members or (0,),
                       float(fast.get("overlap", 0.25)))


def shipped_model_available(name: str = DEFAULT_MODEL) -> bool:
    """True when the shipped model's files are installed."""
    return (MODELS_DIR / name / "model.json").exists()


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def get_model(model: str | Path | None = None, device: str = "cpu",
              backend: str = "auto") -> LoadedModel:
    """Load (once per process) and cache a model."""
    key = (str(model), device, backend)
    with _CACHE_LOCK:  # a server's jobs in threads load it once between them
        if key not in _CACHE:
            _CACHE[key] = load_model(model, device, backend)
        return _CACHE[key]


def model_device(device: str, backend: str) -> str:
    """The device a prediction runs on: an ONNX runtime named runs on the CPU, also
    where ``auto`` would pick a GPU."""
    return "cpu" if backend in _NAMED_RUNTIMES and device == "auto" else resolve_device(device)


def open_members(lm: LoadedModel, fast: bool = False) -> None:
    """Compile (OpenVINO) or open (ONNX Runtime) the members a prediction runs, as the
    first prediction would: all of them, or the fast mode's. A model OpenVINO cannot
    compile is remembered as such (ONNX Runtime stands in, or the error is kept), so
    no later case compiles it again."""
    for i in (lm.fast_members if fast else range(len(lm.nets))):
        net = lm.nets[i]
        if isinstance(net, OpenVinoNet) and net.compile() is None:
            net = net.fallback
        getattr(net, "session", None)  # a torch network has none


def warm_model(model: str | Path | None = None, device: str = "auto",
               backend: str = "auto", fast: bool = False) -> threading.Thread | None:
    """Start compiling the model's members in a thread of its own, so that their
    compilation (about 0.15 s each for OpenVINO) overlaps the reading of the first
    case; its prediction waits for what is not yet done. Returns the thread (join it
    before the process ends), or None where there is nothing to compile (a PyTorch
    model) or the model cannot be loaded (the prediction itself says why)."""
    try:
        lm = get_model(model, model_device(device, backend), backend)
    except Exception:  # noqa: BLE001 - the case's prediction reports it as it should
        return None
    if not any(isinstance(n, OnnxNet) for n in lm.nets):
        return None
    if any(isinstance(n, OpenVinoNet) for n in lm.nets):
        import_openvino()  # imported here, not in the thread, beside the reading's imports

    def compile_all() -> None:
        try:
            open_members(lm, fast)
        except Exception:  # noqa: BLE001 - the prediction compiles again and says why
            pass

    thread = threading.Thread(target=compile_all, name="braintumor-compile")
    thread.start()
    return thread


def predict_probabilities(case: Case, model: str | Path | None = None, device: str = "auto",
                          tta: bool = False, progress: ProgressFn | None = None,
                          overlap: float | None = None, backend: str = "auto",
                          fast: bool = False
                          ) -> tuple[np.ndarray, LoadedModel, dict[str, float]]:
    """Region probabilities ``(3, X, Y, Z)`` in the case's native grid.

    ``fast``: only the model's fast members (one fold model for the shipped ensemble) at
    its fast overlap: 18-27 windows of 80^3 on a full-size case instead of 72 (2 members x
    36); its cross-validated accuracy is in the model card. The case is predicted on its
    own grid: :func:`braintumor.segment.segment` brings cases that are not about 1 mm to
    the models' 1 mm grid first.
    """
    from braintumor.training.data import prepare_case

    # an ONNX runtime named runs on the CPU, also where "auto" would pick a GPU
    dev = model_device(device, backend)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lm = get_model(model, dev, backend)
    timings["load_model_s"] = time.perf_counter() - t0
    if progress:
        progress(0.1, "preprocessing")
    t0 = time.perf_counter()
    prep = prepare_case(case)
    timings["preprocess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nets = [lm.nets[i] for i in lm.fast_members] if fast else lm.nets
    if overlap is None:
        overlap = lm.fast_overlap if fast else lm.overlap
    label = f"CNN, {len(nets)} model{'s' if len(nets) > 1 else ''}"
    windows = None if progress is None else (
        lambda f: progress(0.15 + 0.75 * f, label))
    # the members share each window's cut and weights; their probabilities are averaged
    probs = sliding_window_probs(nets, prep.image, lm.patch, overlap, dev, lm.output,
                                 mirror=tta, whole_volume_max=lm.whole_volume_max,
                                 progress=windows)
    timings["members"] = float(len(nets))
    timings["overlap"] = float(overlap)
    timings["inference_s"] = time.perf_counter() - t0
    full = uncrop(probs, prep.box, case.shape, fill=0.0)
    return full, lm, timings


def segment_cnn(case: Case, model: str | Path | None = None, device: str = "auto",
                progress: ProgressFn | None = None, tta: bool = False,
                uncertainty: bool = False, backend: str = "auto", fast: bool = False,
                post: PostProcess | None = None, **unknown: Any) -> SegmentationResult:
    """Segment a case with a CNN model (the shipped one by default); ``fast`` runs
    only the model's fast members at its fast overlap (see predict_probabilities);
    ``post``: postprocessing other than the model's own. Any other keyword raises
    :class:`InputError`, as the watershed's and the hybrid's unknown parameters do (a
    misspelt ``fast`` would otherwise run the accurate mode without a word)."""
    t0 = time.perf_counter()
    if unknown:
        known = ("model", "device", "tta", "uncertainty", "backend", "fast", "post")
        raise InputError(f"Unknown CNN option(s) {', '.join(map(repr, sorted(unknown)))}; "
                         f"known: {', '.join(known)}.")
    if case.missing:
        names = " and ".join(m.upper() for m in case.missing)
        raise InputError(f"Case {case.case_id} has no {names} image: the CNN needs all four "
                         "modalities; segment it with the watershed.")
    probs, lm, timings = predict_probabilities(case, model, device, tta=tta or uncertainty,
                                               progress=progress, backend=backend, fast=fast)
    if progress:
        progress(0.92, "postprocessing")
    pp = (post or lm.post).for_voxel(float(np.prod(case.spacing)))
    labels = pp.apply(probs)
    dropped = None
    if pp.wt_min_voxels and not labels.any():
        # nothing kept: say whether something below the smallest kept size was dropped, so
        # that "no tumour" is not read into a finding too small for the CNN's rule
        found = int(np.count_nonzero(probs[0] > pp.threshold[0]))
        if found:
            vox_ml = float(np.prod(case.spacing)) / 1000.0
            dropped = (f"the CNN found {found * vox_ml:.2g} mL of tumour-like signal, all of "
                       f"it in pieces under {pp.wt_min_voxels * vox_ml:.2g} mL, the smallest "
                       "it reports (a rule against scattered false positives); none is "
                       "outlined, so look at the images before reading this as no tumour")
    unc = None
    if uncertainty:
        # binary entropy of the whole-tumour probability, in bits (0 certain .. 1)
        p = np.clip(probs[0], 1e-6, 1 - 1e-6)
        unc = (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)
    timings["total_s"] = time.perf_counter() - t0
    info = {"method": "cnn", "model_version": lm.version, "folds": int(timings["members"]),
            # test-time mirroring said, so a results table tells the runs apart
            "mode": run_mode(fast, tta or uncertainty),
            **runtime_info(lm, fast, device), **timings}
    small = fast_small_note(fast, float(np.count_nonzero(labels)) * float(np.prod(case.spacing))
                            / 1000.0)
    if dropped or small:
        info["warning"] = join_warnings(dropped, small)
    return SegmentationResult(labels=labels, probabilities=probs, uncertainty=unc, info=info)


# --------------------------------------------------------------------------- ONNX
class OnnxNet:
    """An exported network run with ONNX Runtime on the CPU: :meth:`run` maps a
    ``(B, 4, X, Y, Z)`` float32 array to logits ``(B, K, X, Y, Z)``, which is what
    :func:`sliding_window_probs` asks of a model; the session opens on first use.
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: ONNX model file not found.")
        self.threads = threads
        self._session: Any = None
        #: held while the session is made: a model warmed in the background
        #: (:func:`warm_model`) is then waited for rather than made twice
        self._lock = threading.RLock()

    def thread_count(self) -> int:
        """Threads for the runtime (0: its default). OMP_NUM_THREADS caps it as it caps
        PyTorch: N workers of a distributed run (braintumor.scale) then share the cores
        instead of each starting one thread per core."""
        env = os.environ.get("OMP_NUM_THREADS", "")
        return self.threads or (int(env) if env.isdigit() else 0)

    @property
    def session(self) -> Any:
        """The ONNX Runtime session, opened on first use."""
        with self._lock:
            return self._open()

    def _open(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            threads = self.thread_count()
            if threads:
                opts.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(self.path), opts,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def run(self, x: np.ndarray) -> np.ndarray:
        """``(B, 4, X, Y, Z)`` float32 array -> logits array (no torch involved)."""
        session = self.session
        out = session.run(None, {session.get_inputs()[0].name:
                                 np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out)



class OpenVinoNet(OnnxNet):
    """The same ONNX file compiled by OpenVINO for the CPU, tuned for the latency of one
    call. ``precision``: ``f32``, ``bf16``, or ``auto``: bfloat16 on a CPU that computes
    it natively (AVX-512 BF16 or AMX), else 32-bit floats.

    Measured on a 2-core AMD EPYC with bfloat16 (benchmarks/bench_backends.py and
    bench_predict.py): in 32-bit floats the windows take 0.68x ONNX Runtime's time with
    probabilities within 3e-3 of its; in bfloat16 the default prediction takes 0.68x the
    32-bit time, probabilities move by up to 0.023 and 40-222 of 8.9 million label
    voxels change per case, mean Dice against the expert outlines moved by at most 1.2e-4
    on the 14 shared cases (README, Speed).
    """

    def __init__(self, path: str | Path, threads: int = 0, precision: str = "auto",
                 may_fall_back: bool = True) -> None:
        super().__init__(path, threads)
        #: False where OpenVINO was named (``--backend openvino``): a model it cannot
        #: compile is then an error, not a run on ONNX Runtime
        self.may_fall_back = may_fall_back
        if precision not in ("auto", "f32", "bf16"):
            raise ValueError(f"precision {precision!r}: auto, f32 or bf16")
        self.precision = precision
        self._local = threading.local()
        #: ONNX Runtime's session for the same file, when OpenVINO could not compile it
        #: on this machine (``fallback_reason`` says why)
        self.fallback: OnnxNet | None = None
        self.fallback_reason = ""
        #: why OpenVINO named could not compile the model here: said once, then again
        #: at once (a cohort's later cases do not compile it again to fail the same way)
        self.compile_error = ""

    def _open(self) -> Any:
        """The compiled model, made on first use (which settles ``precision``)."""
        if self._session is None:
            ov = import_openvino()
            core = ov.Core()
            if self.precision == "auto":
                native = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
                self.precision = "bf16" if native else "f32"
            config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                      "INFERENCE_PRECISION_HINT": self.precision}
            threads = self.thread_count()
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._session = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        return self._session

    def compile(self) -> Any:
        """The compiled model (:attr:`session`), or None where OpenVINO could not compile
        it and ONNX Runtime now runs it (:attr:`fallback`). With OpenVINO named
        (``may_fall_back`` False) that failure is an :class:`InputError`, remembered:
        later calls raise it again without compiling again."""
        with self._lock:
            return self._compile()

    def _compile(self) -> Any:
        if self.fallback is not None:
            return None
        if self.compile_error:
            raise InputError(self.compile_error)
        try:
            return self.session
        except Exception as exc:  # noqa: BLE001 - any runtime failure: the next runtime
            if not self.may_fall_back:
                why = f"{type(exc).__name__}: {exc}"[:200]
                self.compile_error = (f"--backend openvino: OpenVINO could not compile "
                                      f"{self.path.name} on this machine ({why}); --backend "
                                      "onnx or auto runs it with ONNX Runtime.")
                raise InputError(self.compile_error) from None
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise exc from None
            self.fallback = OnnxNet(self.path, self.threads)
            self.fallback_reason = f"OpenVINO failed ({type(exc).__name__}: {exc})"[:200]
            self.precision = "f32"
            return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """``(B, 4, X, Y, Z)`` float32 array -> logits array (float32). Each thread has an
        inference request of its own (the web page's thread workers share one model).
        Where OpenVINO cannot compile the model (a CPU or container it does not serve),
        ONNX Runtime runs it instead, when installed and ``may_fall_back``."""
        if self.fallback is not None:
            return self.fallback.run(x)
        compiled = self.compile()
        if compiled is None:
            assert self.fallback is not None
            return self.fallback.run(x)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = compiled.create_infer_request()
        # the input is read in place; the output comes back as a copy of the request's
        # buffer (share_outputs=False), which the next call reuses
        out = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)}, share_inputs=True)
        return np.asarray(out[0], dtype=np.float32)


def _onnx_runtime(backend: str) -> Callable[..., OnnxNet] | None:
    """What runs ONNX files for ``backend`` (see :func:`load_model`): called with a file
    (and, for OpenVINO, a ``precision``); None for PyTorch. ``auto`` takes OpenVINO, else
    ONNX Runtime; a runtime named is that one or None (:func:`check_backend` says why),
    and OpenVINO named is not swapped for ONNX Runtime where it cannot compile a model."""
    order = {"auto": ("openvino", "onnxruntime"), "openvino": ("openvino",),
             "onnx": ("onnxruntime",)}.get(backend, ())
    for module in order:
        if not _importable(module):
            continue
        if module == "openvino":
            return functools.partial(OpenVinoNet, may_fall_back=backend == "auto")
        return OnnxNet
    return None


def onnx_net(path: str | Path, backend: str = "auto", precision: str = "auto"
             ) -> OnnxNet | None:
    """An ONNX file's runner for ``backend`` (:func:`_onnx_runtime`): with ``auto``,
    OpenVINO (in ``precision``) where installed, else ONNX Runtime; with a runtime named,
    that one. None when the runtime(s) it may take are not installed (a named one is not
    swapped for the other)."""
    runtime = _onnx_runtime(backend)
    if runtime is None:
        return None
    return runtime(path) if runtime is OnnxNet else runtime(path, precision=precision)


#: the runtimes a backend may name, with the module each needs and its name in a sentence
_NAMED_RUNTIMES = {"onnx": ("onnxruntime", "ONNX Runtime"), "openvino": ("openvino", "OpenVINO")}


def check_backend(model: str | Path | None = None, backend: str = "auto",
                  device: str = "auto") -> None:
    """Refuse, in one sentence, a runtime named (``onnx``, ``openvino``) that cannot run
    ``model`` here: not installed, no ONNX file for a member of the model (a checkpoint
    has none), or ``device`` ``cuda`` (the ONNX runtimes run on the CPU). ``auto``
    chooses the fastest that can, silently, and ``torch`` always can; but a run that
    names one (a benchmark's) must not time another without a word."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
    if backend not in _NAMED_RUNTIMES:
        return
    module, name = _NAMED_RUNTIMES[backend]
    if device == "cuda":
        raise InputError(f"--backend {backend} runs the model with {name} on the CPU, and "
                         "--device cuda was asked for; use --backend torch (or auto) on the "
                         "GPU.")
    if not _importable(module):
        raise InputError(f"--backend {backend} was asked for, but {name} is not installed "
                         f"(pip install {module}); --backend auto runs the fastest runtime "
                         "installed.")
    where = model_location(model)
    if where.is_file():
        raise InputError(f"--backend {backend} runs a model's ONNX files, and {where} is a "
                         "checkpoint, which has none; give a model folder whose model.json "
                         "lists them, or use --backend torch or auto.")
    meta = json.loads((where / "model.json").read_text())
    onnx = list(meta.get("onnx") or [])
    lacking = [ck for i, ck in enumerate(meta["checkpoints"])
               if i >= len(onnx) or not (where / onnx[i]).is_file()]
    if lacking:
        raise InputError(f"--backend {backend} runs a model's ONNX files, and {where} has no "
                         f"ONNX file for {', '.join(lacking)} (braintumor export-onnx writes "
                         "one; list it under \"onnx\" in model.json), or use --backend torch "
                         "or auto.")


def backend_name(net: Any) -> str:
    """``openvino``, ``onnx`` or ``torch``: what runs ``net``."""
    if isinstance(net, OpenVinoNet):
        return "onnx" if net.fallback is not None else "openvino"
    return "onnx" if isinstance(net, OnnxNet) else "torch"


#: a fast-mode whole tumour under this (mL) is warned of: on brains made tumour-free
#: (the tumour replaced by the mirrored healthy hemisphere) the fast mode's one member
#: found 14.1 and 7.1 mL, and 22.4 mL on the synthetic sample made without a tumour,
#: where the accurate mode's two and the watershed found none (a rule of thumb: every
#: one of the 14 shared cases holds 26 mL or more)
FAST_CONFIRM_ML = 30.0


def fast_small_note(fast: bool, wt_ml: float) -> str | None:
    """The warning for a fast-mode result with a small whole tumour (0 < ``wt_ml`` <
    :data:`FAST_CONFIRM_ML`), or None."""
    if not fast or not 0 < wt_ml < FAST_CONFIRM_ML:
        return None
    return (f"the fast mode (one model) found {wt_ml:.1f} mL of tumour; a finding this small "
            "is not confirmed by a second model, and on tumour-free brains the fast mode "
            "found up to 22 mL where the accurate mode found none: check it with the "
            "accurate mode (--fast left out; 'accurate' on the web page) or the watershed")


def run_mode(fast: bool, mirrored: bool) -> str:
    """``info["mode"]`` of a CNN run: fast or accurate, and whether test-time mirroring
    ran, so a results table tells the runs apart."""
    return ("fast" if fast else "accurate") + (" + mirroring" if mirrored else "")


def runtime_info(lm: LoadedModel, fast: bool, device: str) -> dict[str, str]:
    """``backend`` and ``precision`` of what ran ``lm`` (its fast member when ``fast``)."""
    net = lm.nets[lm.fast_members[0] if fast else 0]
    out = {"backend": backend_name(net), "precision": net_precision(net, resolve_device(device))}
    if getattr(net, "fallback_reason", ""):
        out["backend_note"] = net.fallback_reason
    return out


def net_precision(net: Any, device: str) -> str:
    """The arithmetic ``net`` runs in on ``device``: ``float32``, ``bfloat16`` (OpenVINO
    on a CPU that has it) or ``float16 mixed`` (PyTorch on a GPU)."""
    if isinstance(net, OpenVinoNet):
        return "bfloat16" if net.precision == "bf16" else "float32"
    return "float16 mixed" if device == "cuda" and not isinstance(net, OnnxNet) else "float32"


def onnx_export(net: Any, x: Any, out: Path, dyn: dict[int, str], opset: int) -> None:
    """``torch.onnx.export`` of ``net`` on the example input ``x``, its batch and spatial
    axes ``dyn`` left free. Instance normalisation without running statistics normalises
    by each input's own statistics in training and evaluation alike, so the exporter's
    warning that it exports it "with train=True" says nothing about this network and is
    not passed on."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        torch.onnx.export(net, (x,), str(out), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": dyn, "logits": dyn}, opset_version=opset,
                          dynamo=False)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` did: ``path`` the file asked for; ``diff`` the largest
    probability difference from PyTorch on the seeded input (None: not checked);
    ``written`` False where that exceeded the tolerance, so nothing was put at ``path``
    (a file already there is left as it was); ``replaced`` True where an earlier file at
    ``path`` was replaced."""

    path: Path
    diff: float | None = None
    written: bool = True
    replaced: bool = False


def check_export_target(checkpoint: str | Path, out_path: str | Path) -> None:
    """Refuse, in one sentence and before any work, an ONNX file to be written over the
    checkpoint it is exported from (by its own path, another spelling of it or a link to
    it: the checkpoint would be lost) or onto a folder
    (:func:`braintumor.io.check_written_file`)."""
    from braintumor.io import check_written_file

    src, out = Path(checkpoint), Path(out_path)
    also = "" if str(out) == str(src) else f" ({src})"
    check_written_file(
        out, src,
        over_source=f"{out}: is the checkpoint being exported{also}, and the ONNX file "
                    "written there would destroy it; give the ONNX file another name, "
                    f"such as {src.with_suffix('.onnx').name}.",
        folder=f"{out}: is a folder; name the ONNX file to write, such as "
               f"{out / src.with_suffix('.onnx').name}.")


#: the largest probability difference between PyTorch and ONNX Runtime an ONNX export
#: may show on :func:`onnx_agreement`'s seeded input and still be written
ONNX_TOLERANCE = 1e-4


def export_onnx(checkpoint: str | Path, out_path: str | Path, opset: int = 17,
                tolerance: float | None = ONNX_TOLERANCE) -> OnnxExport:
    """Export a checkpoint's network to ONNX with dynamic batch and spatial axes.

    The file is written beside ``out_path`` and renamed into place, so a failed export
    never leaves half a file there; a link at ``out_path`` is written through (the file it
    points to is replaced, the link kept), and a file replaced keeps its permission bits
    (the rule of every file written whole: :func:`braintumor.io.write_replacing`).
    It is first checked against PyTorch (:func:`onnx_agreement`, where ONNX Runtime is
    installed) and put in place only when their probabilities differ by at most
    ``tolerance`` (:data:`ONNX_TOLERANCE` unless given; ``None`` skips the check);
    otherwise it is removed, ``written`` is False and a file already at ``out_path`` is
    left as it was. An ``out_path`` that is the checkpoint itself is refused
    (:func:`check_export_target`)."""
    import torch

    from braintumor.io import naming, partial_beside, put_in_place, write_target

    check_export_target(checkpoint, out_path)
    net, _ = load_checkpoint_net(checkpoint, "cpu")
    out = Path(out_path)
    target = write_target(out)
    partial = partial_beside(target)
    try:
        x = torch.zeros(1, 4, 64, 64, 64)
        with naming(target, partial):  # a full disk names the file, not its temporary
            onnx_export(net, x, partial, {0: "batch", 2: "x", 3: "y", 4: "z"}, opset)
        diff = None if tolerance is None else onnx_agreement(checkpoint, partial)
        if diff is not None and tolerance is not None and diff > tolerance:
            return OnnxExport(out, diff, written=False)
        replaced = target.exists()
        put_in_place(partial, target)
        return OnnxExport(out, diff, replaced=replaced)
    finally:
        partial.unlink(missing_ok=True)


def onnx_agreement(checkpoint: str | Path, onnx_path: str | Path, size: int = 64,
                   seed: int = 0) -> float | None:
    """The largest difference between the region probabilities of a checkpoint's network
    in PyTorch and of its ONNX export in ONNX Runtime on one seeded random ``size``^3
    input (``None`` where ONNX Runtime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    net, _ = load_checkpoint_net(checkpoint, "cpu")
    x = np.random.default_rng(seed).standard_normal((1, 4, size, size, size)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.float64)
    return float(np.abs(_sigmoid(got) - _sigmoid(ref.astype(np.float64))).max())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))
