"""``segment(case, method)``: the one door that the CLI, the web app and the batch
engine all go through.

Methods are looked up lazily by name (so importing this module is cheap):

* ``cnn``       the shipped (or a given) CNN model      -> :mod:`braintumor.inference`
* ``watershed`` classical marker-controlled watershed   -> :mod:`braintumor.watershed`
* ``hybrid``    CNN-guided watershed refinement         -> :mod:`braintumor.watershed`

Each method is a function ``fn(case, **options) -> SegmentationResult``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from braintumor.cases import Case
from braintumor.errors import InputError

#: method name -> "module:function"
METHODS: dict[str, str] = {
    "cnn": "braintumor.inference:segment_cnn",
    "watershed": "braintumor.watershed:segment_watershed",
    "hybrid": "braintumor.watershed:segment_hybrid",
}
#: the methods built and trained on BraTS's 1 mm grid, which segment() runs on that grid
MODEL_GRID_METHODS = frozenset({"cnn", "watershed", "hybrid"})


@dataclass
class SegmentationResult:
    """Output of a segmenter, in the case's native grid.

    ``labels``: ``(X, Y, Z)`` uint8, internal convention. ``probabilities``: optional
    ``(3, X, Y, Z)`` float32 region probabilities (WT, TC, ET). ``uncertainty``: optional
    ``(X, Y, Z)`` float32. ``info``: method, model version, timings (s).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[float, str], None]


def get_method(method: str) -> Callable[..., SegmentationResult]:
    """Resolve a method name to its function."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    mod_name, fn_name = METHODS[method].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name == mod_name:
            raise InputError(f"The {method} method is not available in this build.") from None
        raise
    fn: Callable[..., SegmentationResult] = getattr(mod, fn_name)
    return fn


def available_methods() -> list[str]:
    """Names of methods whose module is present."""
    out = []
    for name in METHODS:
        try:
            get_method(name)
        except InputError:
            continue
        out.append(name)
    return out


def segment(case: Case, method: str = "cnn", progress: ProgressFn | None = None,
            resample: bool = True, **options: Any) -> SegmentationResult:
    """Segment ``case`` with ``method``; labels come back in the case's native grid.

    ``resample``: a case whose voxels are not about 1 mm (3 mm slices, 2 mm volumes,
    fine in-plane pixels) is segmented by :data:`MODEL_GRID_METHODS` on the 1 mm grid
    they were built on (:func:`braintumor.preprocess.on_model_grid`), and its labels
    (nearest voxel), probabilities and uncertainty (linear) are brought back; the
    held-out effect is in the README. A scan that does not look skull-stripped is
    segmented all the same, with ``info["warning"]`` saying so
    (:func:`braintumor.preprocess.skull_strip_warning`).
    """
    from braintumor.preprocess import (
        MODEL_SPACING_MM,
        on_model_grid,
        resample_labels,
        resample_to,
        skull_strip_warning,
    )

    fn = get_method(method)
    work = on_model_grid(case) if resample and method in MODEL_GRID_METHODS else None
    result = fn(case if work is None else work, progress=progress, **options)
    if work is not None:
        result.labels = resample_labels(result.labels, case.shape)
        if result.probabilities is not None:
            result.probabilities = np.clip(resample_to(result.probabilities, case.shape), 0, 1)
        if result.uncertainty is not None:
            result.uncertainty = resample_to(result.uncertainty[None], case.shape)[0]
        result.info["resampled_to_mm"] = MODEL_SPACING_MM
        result.info["grid"] = list(work.shape)
    if result.labels.shape != case.shape:
        raise RuntimeError(
            f"{method} returned shape {result.labels.shape} for a case of shape {case.shape}"
        )
    result.info.setdefault("method", method)
    warning = skull_strip_warning(case.image, case.spacing)
    if warning is not None:
        earlier = result.info.get("warning")
        result.info["warning"] = f"{earlier}; {warning}" if earlier else warning
    return result
