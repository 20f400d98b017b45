"""Every label and region convention in one place.

Conventions (value -> meaning):

* ``brats2021`` (BraTS 2017-2021): 0 background, 1 necrotic / non-enhancing core (NCR),
  2 peritumoral edema (ED), 4 enhancing tumour (ET).
* ``brats2023`` (BraTS 2023+): 0 background, 1 NETC, 2 SNFH (edema), 3 ET.
* ``msd`` (Medical Segmentation Decathlon Task01): 0 background, 1 edema,
  2 non-enhancing tumour, 3 enhancing tumour.

Internally the project uses the ``brats2023`` values (contiguous 0..3): :data:`NCR` = 1,
:data:`ED` = 2, :data:`ET` = 3. Regions: WT = NCR | ED | ET, TC = NCR | ET, ET = ET.

MONAI's BraTS transforms hard-code ET = 4 and silently give an empty ET on 2023 data;
here the convention is always explicit, detected from file names and checked against
the values present, and a value that fits no convention is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import numpy as np

from braintumor.errors import InputError

Convention = Literal["brats2021", "brats2023", "msd"]
CONVENTIONS: tuple[Convention, ...] = ("brats2021", "brats2023", "msd")

#: Internal label values (same as BraTS 2023).
BACKGROUND, NCR, ED, ET = 0, 1, 2, 3
INTERNAL_NAMES = {NCR: "necrotic core", ED: "edema", ET: "enhancing tumour"}

REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}

#: value in the convention -> internal value
_TO_INTERNAL: dict[str, dict[int, int]] = {
    "brats2021": {0: 0, 1: NCR, 2: ED, 4: ET},
    "brats2023": {0: 0, 1: NCR, 2: ED, 3: ET},
    "msd": {0: 0, 1: ED, 2: NCR, 3: ET},
}
_FROM_INTERNAL: dict[str, dict[int, int]] = {
    c: {v: k for k, v in m.items()} for c, m in _TO_INTERNAL.items()
}


def allowed_values(convention: str) -> set[int]:
    """The label values a convention allows."""
    _check_convention(convention)
    return set(_TO_INTERNAL[convention])


def _check_convention(convention: str) -> None:
    if convention not in _TO_INTERNAL:
        raise InputError(
            f"Unknown label convention {convention!r}; use one of {', '.join(CONVENTIONS)}."
        )


def check_internal(labels: np.ndarray, what: str, who: str) -> None:
    """Refuse (one sentence) a map that does not hold internal labels 0-3: a BraTS file's
    ET = 4, passed in unconverted, would count as no enhancing tumour at all. ``what``
    names the map, ``who`` the function that takes it."""
    a = np.asarray(labels)
    if not a.size:
        return
    if a.dtype.kind not in "biuf":
        raise InputError(f"The {what} holds {a.dtype} values; {who} internal labels 0-3 "
                         "(ET = 3) as whole numbers.")
    lo, hi = a.min(), a.max()
    if a.dtype.kind == "f" and (np.isnan(lo) or np.isnan(hi)):
        raise InputError(f"The {what} holds NaN; {who} internal labels 0-3 (ET = 3) as "
                         "whole numbers.")
    if hi > 3 or lo < 0:
        bad = hi if hi > 3 else lo
        raise InputError(f"The {what} holds label {_shown(bad)}; {who} internal "
                         "labels 0-3 (ET = 3): convert a BraTS file's labels with "
                         "braintumor.labels.to_internal first.")
    if a.dtype.kind == "f":  # 2.55 or 2.7 would be read as 2 (or as no label at all)
        frac = a[a != np.floor(a)]
        if frac.size:
            raise InputError(f"The {what} holds {_shown(frac.flat[0])}, not a whole "
                             f"number; {who} internal labels 0-3 (ET = 3) as whole numbers.")


def _shown(value: object) -> str:
    """A label value as a sentence shows it: 4, not 4.0; 2.55 as it is."""
    v = float(value)  # type: ignore[arg-type]
    return str(int(v)) if np.isfinite(v) and v == int(v) else str(value)


def present_values(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``labels`` (comparisons or a counting pass for small
    whole numbers, several times faster than sorting a 240 x 240 x 155 volume)."""
    lab = np.asarray(labels)
    if lab.size and np.issubdtype(lab.dtype, np.integer):
        lo, hi = int(lab.min()), int(lab.max())
        if hi - lo < 32:  # label maps: a few comparisons beat any sort or int64 copy
            return np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (lab == v).any()],
                            dtype=lab.dtype)
        if lo >= 0 and hi < 65536:
            return np.nonzero(np.bincount(lab.ravel(), minlength=hi + 1))[0].astype(lab.dtype)
    return np.unique(lab)


def _remap(labels: np.ndarray, mapping: dict[int, int], what: str) -> np.ndarray:
    values = present_values(labels)
    bad = [v.item() for v in values
           if not np.isfinite(v) or v != int(v) or int(v) not in mapping]
    if bad:
        raise InputError(
            f"The {what} holds label values {bad} that fit no known convention "
            f"(allowed: {sorted(mapping)})."
        )
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[labels if np.issubdtype(labels.dtype, np.integer) else labels.astype(np.int64)]


def to_internal(labels: np.ndarray, convention: str, what: str = "label map") -> np.ndarray:
    """Convert a label map ``(X, Y, Z)`` from ``convention`` to internal values (uint8)."""
    _check_convention(convention)
    return _remap(np.asarray(labels), _TO_INTERNAL[convention], what)


def from_internal(labels: np.ndarray, convention: str) -> np.ndarray:
    """Convert an internal label map to ``convention`` (uint8)."""
    _check_convention(convention)
    return _remap(np.asarray(labels), _FROM_INTERNAL[convention], "internal label map")


def convert(labels: np.ndarray, source: str, target: str) -> np.ndarray:
    """Convert a label map between two conventions."""
    return from_internal(to_internal(labels, source), target)


# a label map's own ending only: a modality's ending in a label map's name is part of a
# case's name (``pat01_t1.nii.gz``, the first time point), no word on its labels
_NAME_2023 = re.compile(r"-seg\.nii(\.gz)?$", re.IGNORECASE)
_NAME_2021 = re.compile(r"_seg\.nii(\.gz)?$", re.IGNORECASE)


def convention_from_name(name: str) -> Convention | None:
    """Guess a label map's convention from its file name (BraTS 2023 ``-seg``, 2017-21
    ``_seg``)."""
    if _NAME_2023.search(name):
        return "brats2023"
    if _NAME_2021.search(name):
        return "brats2021"
    return None


def detect_convention(
    labels: np.ndarray, hint: str | None = None, what: str = "label map",
    hint_given: bool = False, way_out: str = "",
) -> Convention:
    """Decide the convention of ``labels``, checked against the values present
    (``hint_given``: the hint is the user's choice, not read from the file's name).

    ``hint`` (from the file name) wins when the values fit it. Without a hint, a 4 means
    ``brats2021``; values within {0,1,2,3} are read as ``brats2023`` (the MSD layout is
    only ever chosen by an explicit hint, since its values are the same set).
    ``way_out``: what the user can do, ending the sentence of values that fit no
    convention or not the hint's.
    """
    end = f"; {way_out}." if way_out else "."
    found = present_values(labels)
    odd = [v.item() for v in found if not np.isfinite(v) or v != int(v)]
    if odd:
        raise InputError(f"The {what} holds values {odd[:3]} that are not whole labels.")
    values = {int(v) for v in found}
    if hint is not None:
        _check_convention(hint)
        if values <= allowed_values(hint):
            return hint  # type: ignore[return-value]
        raise InputError(
            f"The {what} holds label values {sorted(values)}, which do not fit the "
            f"{hint} convention {'asked for' if hint_given else 'its name implies'} "
            f"(allowed: {sorted(allowed_values(hint))}){end}"
        )
    if values <= {0, 1, 2, 4}:
        return "brats2021"
    if values <= {0, 1, 2, 3}:
        return "brats2023"
    raise InputError(
        f"The {what} holds label values {sorted(values)} that fit no known convention "
        f"(BraTS 2017-2021 uses 0,1,2,4; BraTS 2023 and MSD use 0,1,2,3){end}"
    )


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of WT, TC, ET from an internal label map ``(X, Y, Z)``."""
    lab = np.asarray(labels)
    return {
        "WT": lab > 0,
        "TC": (lab == NCR) | (lab == ET),
        "ET": lab == ET,
    }


def regions_to_channels(labels: np.ndarray) -> np.ndarray:
    """Internal labels ``(X, Y, Z)`` -> region channels ``(3, X, Y, Z)`` (WT, TC, ET), uint8."""
    m = region_masks(labels)
    return np.stack([m[r] for r in REGIONS]).astype(np.uint8)


def channels_to_labels(channels: np.ndarray) -> np.ndarray:
    """Nested region masks ``(3, ...)`` (WT, TC, ET; bool or 0/1) -> internal labels.

    Nesting is enforced: ET lies inside TC, TC inside WT (a voxel predicted TC but not
    WT counts as TC, as the BraTS winners' region-based decoders do).
    """
    if len(channels) != 3:
        raise InputError(f"Region channels must be three (WT, TC, ET), not {len(channels)}.")
    wt, tc, et = (np.asarray(c).astype(bool) for c in channels)
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt | tc | et] = ED
    out[tc | et] = NCR
    out[et] = ET
    return out


def names(values: Iterable[int]) -> list[str]:
    """Human names of internal label values."""
    return [INTERNAL_NAMES.get(int(v), "background") for v in values]
