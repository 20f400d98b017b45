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
from dataclasses import replace
from typing import Any

import numpy as np

from braintumor.cases import Case
from braintumor.errors import InputError, join_warnings

#: method name -> "module:function"
METHODS: dict[str, str] = {
    "cnn": "braintumor.inference:segment_cnn",
    "watershed": "braintumor.watershed:segment_watershed",
    "hybrid": "braintumor.watershed:segment_hybrid",
}
#: held-out mean Dice (WT, TC, ET) of the watershed tuned for scans without these
#: modalities, with its native enhancing-tumour step and FLAIR edema growing as each
#: fold chose them (``experiments/watershed/without_*/flair_edema/cv_watershed.md``)
WITHOUT_ACCURACY: dict[tuple[str, ...], tuple[float, float, float]] = {
    ("t1",): (0.856, 0.715, 0.580),
    ("t2",): (0.805, 0.655, 0.611),
    ("t1", "t2"): (0.776, 0.537, 0.446),
}
#: the methods built and trained on BraTS's 1 mm grid, which segment() runs on that grid
MODEL_GRID_METHODS = frozenset({"cnn", "watershed", "hybrid"})


class SegmentationResult:
    """Output of a segmenter, in the case's native grid.

    ``labels``: ``(X, Y, Z)`` uint8, internal convention. ``probabilities``: optional
    ``(3, X, Y, Z)`` float32 region probabilities (WT, TC, ET). ``uncertainty``: optional
    ``(X, Y, Z)`` float32. ``info``: method, model version, timings (s).

    Probabilities that :func:`segment` must bring back from the 1 mm model grid are
    brought back when first read (:meth:`defer_probabilities`): at 0.5 mm that takes
    longer than the segmentation and twice its memory, and most callers never read them.
    """

    def __init__(self, labels: np.ndarray, probabilities: np.ndarray | None = None,
                 uncertainty: np.ndarray | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.labels = labels
        self._probabilities = probabilities
        self._pending: Callable[[], np.ndarray] | None = None
        self.uncertainty = uncertainty
        self.info: dict[str, Any] = {} if info is None else info

    @property
    def probabilities(self) -> np.ndarray | None:
        """The region probabilities, computed on first read when they were deferred."""
        if self._pending is not None:
            make, self._pending = self._pending, None
            self._probabilities = make()
        return self._probabilities

    @probabilities.setter
    def probabilities(self, value: np.ndarray | None) -> None:
        self._pending = None
        self._probabilities = value

    @property
    def has_probabilities(self) -> bool:
        """Whether there are probabilities to read, without computing deferred ones."""
        return self._pending is not None or self._probabilities is not None

    def defer_probabilities(self, make: Callable[[], np.ndarray]) -> None:
        """Let ``make()`` give the probabilities when they are first read."""
        self._probabilities = None
        self._pending = make

    def __repr__(self) -> str:
        return (f"SegmentationResult(labels={self.labels.shape}, "
                f"probabilities={'yes' if self.has_probabilities else 'no'}, "
                f"uncertainty={'yes' if self.uncertainty is not None else 'no'}, "
                f"info={self.info!r})")


ProgressFn = Callable[[float, str], None]


def _check_method_name(method: object) -> None:
    if not isinstance(method, str):
        raise InputError(f"The method must be one name, not {type(method).__name__} "
                         f"{method!r}; use one of {', '.join(METHODS)}.")
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")


def get_method(method: str) -> Callable[..., SegmentationResult]:
    """Resolve a method name to its function."""
    _check_method_name(method)
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


#: what the warning of a case segmented by the watershed in place of the method asked
#: (it lacked its T1 or T2) says, in ``volumes.csv`` too (whose ``missing`` column records
#: it for ``--skip-existing``)
FALLBACK_NOTE = "so it was segmented by the watershed alone"


def missing_modality_note(missing: tuple[str, ...], method: str,
                          blank: tuple[str, ...] = ()) -> str:
    """The warning for a case without some modality that ``method`` needs (``blank``:
    those of them whose image was there but blank)."""
    from braintumor.cases import MODALITY_NAMES

    absent = " and ".join(MODALITY_NAMES[m] for m in missing if m not in blank)
    empty = " and ".join(MODALITY_NAMES[m] for m in missing if m in blank)
    what = " and ".join(
        ([f"has no {absent} image"] if absent else [])
        + ([f"{'its ' if absent else ''}{empty} image{'s are' if len(blank) > 1 else ' is'}"
            " blank (one value throughout)"] if empty else []))
    accuracy = WITHOUT_ACCURACY.get(tuple(missing))
    measured = (f" (held out on 14 BraTS cases: Dice WT {accuracy[0]:.2f}, TC {accuracy[1]:.2f},"
                f" ET {accuracy[2]:.2f})" if accuracy else "")
    why = "" if method == "watershed" else f"; the {method} method needs all four modalities"
    subject = "the scan" if absent else "the scan's"  # "has no T1 image" / "T1 image is"
    return (f"{subject} {what}, {FALLBACK_NOTE}, tuned for scans "
            f"without {'them' if len(missing) > 1 else 'it'}{measured}{why}")


def unoriented_note(case: Case) -> str | None:
    """A sentence for a scan whose header says nothing of where its voxels lie (qform
    and sform codes 0): it was segmented as stored, its axes taken as BraTS's
    (:func:`braintumor.io.assumed_affine`), and the label map keeps that header."""
    from braintumor.io import has_orientation

    if case.header is None or has_orientation(case.header):
        return None
    return ("the scan's header gives no orientation (qform and sform codes 0, or an affine "
            "that gives an axis no length), so its "
            "voxel axes were taken as BraTS's (towards the patient's left, back and head) "
            "and the report's side letters rest on that; the label map keeps the header "
            "as it came")


def regrid_note(case: Case) -> str | None:
    """The warning for a case some of whose modalities came on grids of their own: which,
    and onto whose grid (:attr:`Case.grid`) they were resampled; a grid other than the
    first present modality's is said to be finer than that one's slices."""
    from braintumor.cases import MODALITIES, MODALITY_NAMES

    if not case.regridded:
        return None
    first = next(m for m in MODALITIES if m not in case.missing)
    ref = case.grid or first
    names = " and ".join(MODALITY_NAMES[m] for m in case.regridded)
    finer = (f" (finer than the {MODALITY_NAMES[first]}'s slices, so the others keep their "
             "detail)" if ref != first and first in case.regridded else "")
    return (f"the {names} lay on {'grids' if len(case.regridded) > 1 else 'a grid'} of "
            f"{'their' if len(case.regridded) > 1 else 'its'} own and "
            f"{'were' if len(case.regridded) > 1 else 'was'} resampled onto the "
            f"{MODALITY_NAMES[ref]}'s{finer} by scanner coordinates, which line up within "
            "one session; images from different sessions must be co-registered first")


def _probabilities_for(probs: Any, case: Case, turn: Any, work: Case | None) -> np.ndarray:
    """Region probabilities given on ``case``'s own grid ``(3, X, Y, Z)``, put where the
    method works: reoriented as the case was, and on the 1 mm grid when it is used."""
    from braintumor.preprocess import apply_turn, resample_to

    p = np.asarray(probs, dtype=np.float32)
    if p.shape != (3, *case.shape):
        raise InputError(f"The probabilities have shape {p.shape}; the case needs "
                         f"(3, {', '.join(map(str, case.shape))}) (WT, TC, ET on its grid).")
    if turn is not None:
        p = apply_turn(p, turn)
    if work is not None:
        p = resample_to(p, work.shape)
        np.clip(p, 0, 1, out=p)
    return p


def _back_to_case(probs: np.ndarray | None, shape: tuple[int, ...], turn: Any
                  ) -> Callable[[], np.ndarray]:
    """What brings model-grid probabilities ``(3, x, y, z)`` back to the case's grid of
    ``shape`` (and orientation, ``turn``): linearly, channel by channel into one float32
    array, clipped to [0, 1] in place."""
    from braintumor.preprocess import from_model_orientation, resample_to

    assert probs is not None

    def make() -> np.ndarray:
        out = resample_to(probs, shape)
        np.clip(out, 0, 1, out=out)
        return out if turn is None else from_model_orientation(out, turn)

    return make


def _restate_fast_note(info: dict[str, Any], work_ml: float, case_ml: float) -> None:
    """The fast mode's small-tumour warning, made on the 1 mm grid a case was segmented
    on, restated with the volume on the case's own grid (the volume every table gives)."""
    from braintumor.inference import fast_small_note

    said, now = fast_small_note(True, work_ml), fast_small_note(True, case_ml)
    warning = info.get("warning")
    if said and now and isinstance(warning, str) and said in warning:
        info["warning"] = warning.replace(said, now)


def segment(case: Case, method: str = "cnn", progress: ProgressFn | None = None,
            resample: bool = True, align: bool = False, bias_correct: bool = False,
            **options: Any) -> SegmentationResult:
    """Segment ``case`` with ``method``; labels come back in the case's native grid.

    ``resample``: a case whose voxels are not about 1 mm (3 mm slices, 2 mm volumes,
    fine in-plane pixels) is segmented by :data:`MODEL_GRID_METHODS` on the 1 mm grid
    they were built on (:func:`braintumor.preprocess.on_model_grid`), and its labels
    (nearest voxel), probabilities and uncertainty (linear) are brought back; the
    held-out effect is in the README. A scan that does not look skull-stripped is
    segmented all the same, with ``info["warning"]`` saying so
    (:func:`braintumor.preprocess.skull_strip_warning`). A case stored with its voxel
    axes in another order or direction than BraTS's (sagittal or coronal slices; the
    front-back axis reversed, as DICOM conversions store it) is segmented reoriented to
    BraTS's and the results reoriented back (``info["reoriented_from"]``: its axis
    codes, e.g. ``LAS``). A case without its T1 or T2
    (``case.missing``) is segmented by the watershed tuned for that, whatever ``method``
    asks, and ``info["warning"]`` says so with its held-out accuracy; so is one whose T1 or
    T2 image is blank (one value throughout), while a blank T1ce or FLAIR, or a scan
    that is zero throughout, raises :class:`InputError`
    (:func:`braintumor.cases.without_blank`). ``align``: first register every modality
    rigidly to the reference one, for a patient who moved between series
    (:func:`braintumor.register.align_modalities`; ``info["aligned"]`` per modality and a
    note in ``info["warning"]``). ``bias_correct``: then divide every modality by its N4
    bias field (:func:`braintumor.preprocess.correct_bias`), for a scan whose intensity
    drifts across the brain (not bias-corrected; ``info["bias_corrected"]``).
    """
    from braintumor.cases import without_blank
    from braintumor.preprocess import (
        MODEL_SPACING_MM,
        brain_mask,
        correct_bias,
        coverage_warning,
        from_model_orientation,
        in_model_orientation,
        model_orientation,
        on_model_grid,
        resample_labels,
        resample_to,
        skull_strip_warning,
        thick_slice_warning,
    )

    if not isinstance(case, Case):
        raise InputError(f"segment takes a Case, not {type(case).__name__}: build one from "
                         "an image (4, X, Y, Z) with braintumor.cases.case_from_arrays, or "
                         "read one with braintumor.cases.load_case.")
    _check_method_name(method)  # before a case without T1 or T2 turns it into the watershed
    case = without_blank(case)
    aligned: list[Any] = []
    align_note = None
    if align:
        from braintumor.register import align_modalities, alignment_note, reference_of

        case, aligned = align_modalities(case)
        align_note = alignment_note(reference_of(case), aligned)
    if bias_correct:
        case = replace(case, image=correct_bias(case.image, brain_mask(case.image),
                                                case.spacing))
    redirect = None
    if case.missing:
        redirect = missing_modality_note(case.missing, method, case.blank)
        if method != "watershed":
            if options.get("uncertainty"):  # asked of the CNN: not passed over in silence
                redirect += ("; the watershed gives no probabilities, so no uncertainty map "
                             "is written")
            method = "watershed"
            options = {}  # the watershed tuned for this input, whatever was asked of the other
    fn = get_method(method)
    # the methods were built on BraTS's arrays: a scan stored in another axis order
    # (sagittal or coronal slices) or direction (as DICOM conversions leave it) is
    # reoriented to theirs (no interpolation) and back afterwards
    turn = model_orientation(case.affine) if method in MODEL_GRID_METHODS else None
    axial = case if turn is None else in_model_orientation(case, turn)
    work = on_model_grid(axial) if resample and method in MODEL_GRID_METHODS else None
    if options.get("probabilities") is not None:  # given on the case's grid: moved with it
        options = dict(options, probabilities=_probabilities_for(
            options["probabilities"], case, turn, work))
    result = fn(axial if work is None else work, progress=progress, **options)
    if work is not None:
        work_ml = float(np.count_nonzero(result.labels)) * work.voxel_volume_ml
        result.labels = resample_labels(result.labels, axial.shape)
        _restate_fast_note(result.info, work_ml,
                           float(np.count_nonzero(result.labels)) * axial.voxel_volume_ml)
        if result.has_probabilities:
            # brought back only when read: at 0.5 mm this took longer than the
            # segmentation and doubled the memory, for callers that never read them
            result.defer_probabilities(_back_to_case(result.probabilities, axial.shape, turn))
        if result.uncertainty is not None:
            result.uncertainty = resample_to(result.uncertainty[None], axial.shape)[0]
        result.info["resampled_to_mm"] = MODEL_SPACING_MM
        result.info["grid"] = list(work.shape)
    if turn is not None:
        result.labels = from_model_orientation(result.labels, turn)
        if work is None and result.probabilities is not None:
            result.probabilities = from_model_orientation(result.probabilities, turn)
        if result.uncertainty is not None:
            result.uncertainty = from_model_orientation(result.uncertainty, turn)
        from nibabel.orientations import aff2axcodes

        result.info["reoriented_from"] = "".join(str(c) for c in aff2axcodes(case.affine))
    if result.labels.shape != case.shape:
        raise RuntimeError(
            f"{method} returned shape {result.labels.shape} for a case of shape {case.shape}"
        )
    result.info.setdefault("method", method)
    if case.missing:
        result.info["missing"] = list(case.missing)
    if aligned:
        result.info["aligned"] = {a.modality: a.as_dict() for a in aligned}
    if bias_correct:
        result.info["bias_corrected"] = True
    if redirect and not result.labels.any():
        redirect += ("; the watershed found no tumour, which on such a scan does not rule "
                     "one out")
    notes = list(getattr(case.source, "notes", None) or [])  # what reading the case found
    own = result.info.get("warning")
    if own:
        # what the method said of its own outline (a volume it found, its members'
        # disagreement), apart from what is said of the scan: once the outline is
        # corrected, only this part was said of another outline
        result.info["method_warning"] = str(own)
    parts = [*notes, own, redirect, regrid_note(case),
             unoriented_note(case), align_note,
             skull_strip_warning(case.image, case.spacing),
             coverage_warning(case.image, case.spacing), thick_slice_warning(case.spacing)]
    if any(parts):
        result.info["warning"] = join_warnings(*parts)
    return result
