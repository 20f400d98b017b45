"""The :class:`Case` and the discovery of BraTS-style inputs.

Accepted inputs:

* a BraTS case folder, 2017-2021 naming (``<case>_t1.nii.gz``, ``_t1ce``, ``_t2``,
  ``_flair``, optional ``_seg``) or 2023+ naming (``<case>-t1n``, ``-t1c``, ``-t2w``,
  ``-t2f``, optional ``-seg``), ``.nii`` or ``.nii.gz``;
* a folder of such case folders;
* a Medical Segmentation Decathlon 4D NIfTI (4 channels in the order FLAIR, T1, T1gd,
  T2, unless a ``dataset.json`` beside it or one folder up, or the caller
  (:attr:`CaseSource.channels`), names another; its label file, if any, in a sibling
  ``labelsTr`` folder or given explicitly).

Whatever the source, a :class:`Case` holds the modalities as one ``(4, X, Y, Z)``
float32 array in the fixed order :data:`MODALITIES` and labels in the internal
convention of :mod:`braintumor.labels`. A case folder may lack its T1 or T2
(:data:`OPTIONAL_MODALITIES`): :attr:`Case.missing` names them, and their channels hold
a stand-in (:data:`STAND_IN`) that no segmenter reads. Outputs copy the geometry of the
case's grid (:attr:`Case.grid`, :func:`case_grid`): the T1's, or the first modality
present's, unless its slices are thick beside a finer series.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from braintumor import labels as L
from braintumor.errors import InputError
from braintumor.io import (
    IMAGE_SUFFIXES,
    NotOnGrid,
    Volume,
    header_for,
    is_hidden,
    is_nifti,
    label_onto_grid,
    load_label_nifti,
    load_nifti,
    on_grid,
    peek_nifti,
    resample_onto,
    same_placement,
    strip_nifti_suffix,
    turned_onto,
    voxel_sizes,
)

#: Fixed channel order of every Case image.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
MODALITY_NAMES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
#: modalities a case may lack: it is then segmented by the watershed tuned without them
#: (T1ce and FLAIR are needed: they make the enhancing tumour and tell edema from free
#: water). A missing channel of :attr:`Case.image` holds a copy of :data:`STAND_IN`'s.
OPTIONAL_MODALITIES: tuple[str, ...] = ("t1", "t2")
REQUIRED_MODALITIES: tuple[str, ...] = ("t1ce", "flair")
STAND_IN = {"t1": "t1ce", "t2": "flair"}
#: a modality on another grid must cover this share of the reference's brain
MIN_COVER = 0.9
#: a series whose coarsest voxel edge exceeds the case grid's by this factor is said to
#: have been interpolated onto it (3 mm slices onto a 1 mm T1); a T1 whose coarsest edge
#: exceeds another series' by this factor is not the case's grid (5 mm T1 slices beside
#: a 1 mm 3D T1ce: the T1ce's grid keeps the detail of the other three)
COARSER_THAN_GRID = 1.5

#: file-name suffix -> modality, per naming
SUFFIXES_2021 = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
SUFFIXES_2023 = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}
#: MSD Task01 channel order: FLAIR, T1w, T1gd, T2w -> index in MODALITIES order
MSD_ORDER = ("flair", "t1", "t1ce", "t2")

#: the words a Decathlon ``dataset.json`` (or a user) names a channel by, lower case and
#: without punctuation -> modality
CHANNEL_WORDS = {
    "flair": "flair", "t2flair": "flair", "t2f": "flair",
    "t1": "t1", "t1w": "t1", "t1n": "t1", "t1native": "t1",
    "t1gd": "t1ce", "t1c": "t1ce", "t1ce": "t1ce", "t1wce": "t1ce", "t1post": "t1ce",
    "t1contrast": "t1ce",
    "t2": "t2", "t2w": "t2",
}

_RE_2021 = re.compile(r"^(?P<case>.+)_(?P<mod>t1|t1ce|t2|flair|seg)$", re.IGNORECASE)
_RE_2023 = re.compile(r"^(?P<case>.+)-(?P<mod>t1n|t1c|t2w|t2f|seg)$", re.IGNORECASE)


@dataclass
class CaseSource:
    """Where a case's files are on disk (nothing read yet)."""

    case_id: str
    kind: str  # "brats2021" | "brats2023" | "msd" | "named" (modality words in the names)
    modality_paths: dict[str, Path] = field(default_factory=dict)  # modality -> file
    image4d: Path | None = None  # MSD 4D file
    label_path: Path | None = None
    #: a converted DICOM study: (its folder, the series whose grid the case lies on, by its
    #: SeriesInstanceUID or number, the StudyInstanceUID), for a DICOM SEG of the outline
    dicom_reference: tuple[Path, str | int, str | None] | None = None
    #: what reading it found amiss that the case goes on without (a DICOM series that
    #: could not be read), carried into the segmentation's warning
    notes: list[str] = field(default_factory=list)
    #: files whose NaN voxels were read as background: {file: how many}
    nan_voxels: dict[str, int] = field(default_factory=dict)
    #: a converted DICOM study: which series became which modality, as the command line
    #: says it (``T1 = series 2 (AX T1 SE), T1ce = series 3 (AX T1 +C), ...``); else ""
    series: str = ""
    #: a 4D file: its channels' modalities in the file's order, as the user stated them
    #: (``--channels``); None: a ``dataset.json`` beside the file names them, else
    #: :data:`MSD_ORDER` is taken, and checked (:func:`channel_order_note`)
    channels: tuple[str, ...] | None = None

    @property
    def reference_path(self) -> Path:
        """The case's first file (the T1, or the first modality there; the 4D image),
        which names where the case is (its grid: :attr:`Case.grid`)."""
        if self.image4d is not None:
            return self.image4d
        return self.modality_paths[next(m for m in MODALITIES if m in self.modality_paths)]

    @property
    def missing(self) -> tuple[str, ...]:
        """The modalities without a file (none for a 4D image)."""
        if self.image4d is not None:
            return ()
        return tuple(m for m in MODALITIES if m not in self.modality_paths)


@dataclass
class Case:
    """One multi-modal MRI case in memory.

    ``image``: ``(4, X, Y, Z)`` float32 in :data:`MODALITIES` order; ``affine``: voxel
    index -> mm; ``spacing``: voxel size (mm); ``label``: ``(X, Y, Z)`` uint8 internal
    labels or None; ``header``: the reference file's header (3D geometry), used to write
    outputs in the input's own geometry.
    """

    case_id: str
    image: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    header: nib.Nifti1Header
    label: np.ndarray | None = None
    label_convention: str | None = None
    source: CaseSource | None = None
    #: modalities the scan lacks (their channels hold a stand-in: :data:`STAND_IN`)
    missing: tuple[str, ...] = ()
    #: modalities read from another grid and resampled onto the reference's
    regridded: tuple[str, ...] = ()
    #: the modality whose grid the case lies on (:func:`case_grid`); None: the first
    #: present (a 4D image, a case built from arrays)
    grid: str | None = None
    #: of :attr:`missing`, those whose file was there but blank (:func:`without_blank`)
    blank: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.image.shape[1:])  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm^3 / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0

    def modality(self, name: str) -> np.ndarray:
        """One modality ``(X, Y, Z)`` by name (t1, t1ce, t2, flair)."""
        return self.image[MODALITIES.index(name)]


def _match_brats_name(path: Path) -> tuple[str, str, str] | None:
    """-> (case_id, naming, modality or 'seg') for a BraTS-named NIfTI file."""
    if not is_nifti(path.name):
        return None
    stem = strip_nifti_suffix(path.name)
    m = _RE_2023.match(stem)
    if m:
        mod = m.group("mod").lower()
        return m.group("case"), "brats2023", "seg" if mod == "seg" else SUFFIXES_2023[mod]
    m = _RE_2021.match(stem)
    if m:
        mod = m.group("mod").lower()
        return m.group("case"), "brats2021", mod
    return None


#: image formats of the field that braintumor does not read, by their name's ending
OTHER_FORMATS = {
    ".mgz": "FreeSurfer MGZ", ".mgh": "FreeSurfer MGH", ".img": "Analyze",
    ".img.gz": "Analyze", ".hdr": "Analyze", ".nrrd": "NRRD", ".nhdr": "NRRD",
    ".mha": "MetaImage", ".mhd": "MetaImage", ".mnc": "MINC",
}


def _other_format(path: Path) -> tuple[str, str, str, str] | None:
    """-> (case_id, naming, modality or 'seg', format) for a file named as a BraTS
    modality but stored in another format (``<case>_t2.mgz``)."""
    low = path.name.lower()
    for suffix in sorted(OTHER_FORMATS, key=len, reverse=True):
        if low.endswith(suffix):
            hit = _match_brats_name(path.with_name(path.name[: -len(suffix)] + ".nii"))
            return None if hit is None else (*hit, OTHER_FORMATS[suffix])
    return None


def _source_from_files(files: list[Path], where: Path) -> list[CaseSource]:
    groups: dict[tuple[str, str], CaseSource] = {}
    others: list[tuple[Path, tuple[str, str, str, str]]] = []
    for f in files:
        hit = _match_brats_name(f)
        if hit is None:
            other = _other_format(f)
            if other is not None:
                others.append((f, other))
            continue
        case_id, naming, mod = hit
        src = groups.setdefault((case_id, naming), CaseSource(case_id=case_id, kind=naming))
        if mod == "seg":
            src.label_path = f
        else:
            if mod in src.modality_paths:
                raise InputError(
                    f"{where}: holds two {MODALITY_NAMES[mod]} files for case {case_id} "
                    f"({src.modality_paths[mod].name}, {f.name})."
                )
            src.modality_paths[mod] = f
    for f, (case_id, naming, mod, fmt) in others:
        # a modality left out because of its format is said, not taken as missing (which
        # would hand the case to the watershed, or refuse it, without naming the file)
        known = groups.get((case_id, naming))
        if mod != "seg" and (known is None or mod not in known.modality_paths):
            raise InputError(
                f"{f}: is a{'n' if fmt[0] in 'AEIMO' else ''} {fmt} file; braintumor reads "
                "NIfTI (.nii, .nii.gz): convert it first (nibabel, SimpleITK or "
                "mri_convert write NIfTI).")
    return list(groups.values())


class IncompleteCase(InputError):
    """A case without a modality it needs (:func:`check_complete`), carrying the case, so
    that training can say what training needs."""

    def __init__(self, message: str, source: CaseSource, where: Path) -> None:
        super().__init__(message)
        self.source = source
        self.where = where


def check_complete(src: CaseSource, where: Path, allow_missing: bool = True) -> None:
    """Raise one sentence listing found and missing modalities when a needed one is
    missing (T1ce or FLAIR; any, with ``allow_missing=False``, as training needs)."""
    if src.image4d is not None:
        return
    missing = list(src.missing)
    needed = [m for m in missing if not allow_missing or m not in OPTIONAL_MODALITIES]
    if needed:
        found = [MODALITY_NAMES[m] for m in MODALITIES if m in src.modality_paths]
        hint = (" T1ce and FLAIR are needed; a case without T1 or T2 is segmented by the "
                "watershed alone." if allow_missing else
                " Training needs all four in every case; complete the case or move it out "
                "of the training data.")
        raise IncompleteCase(
            f"{src.case_id}: the case in {where} is missing the "
            f"{', '.join(MODALITY_NAMES[m] for m in missing)} "
            f"{'modalities' if len(missing) > 1 else 'modality'} "
            f"(found: {', '.join(found) or 'none'}).{hint}", src, where
        )


def _msd_label_for(image4d: Path) -> Path | None:
    name = image4d.name
    for folder in ("labelsTr", "labelsTs", "labels"):
        cand = image4d.parent.parent / folder / name
        if cand.exists():
            return cand
    return None


#: how many folders deep below the one given a cohort's cases are looked for (site /
#: scanner / time point folders around the case folders)
MAX_NESTING = 4


def discover(path: str | Path, errors: list[InputError] | None = None,
             _depth: int = 0, notes: list[str] | None = None) -> list[CaseSource]:
    """Find every case under ``path`` (a case folder, a dataset folder or a 4D NIfTI);
    hidden files and folders (a leading dot) are passed over. A dataset's cases may lie in
    folders of folders (a cohort sorted by site, up to :data:`MAX_NESTING` deep), and 4D
    NIfTI cases may lie beside case folders.

    Raises :class:`InputError` when nothing usable is found or a case lacks a modality;
    with ``errors``, a dataset's case folder that fails is added to it and the others
    are still returned. A loose NIfTI file beside case folders that cannot be read is
    passed over, said in ``notes`` (when given) in one sentence naming it.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder.")
    if p.is_file():
        if not is_nifti(p.name):
            raise InputError(
                f"{p}: is not a file braintumor reads: a NIfTI volume (.nii, .nii.gz), a "
                f"DICOM file, a picture ({', '.join(IMAGE_SUFFIXES)}) or a case folder."
            )
        hit = _match_brats_name(p)
        if hit is not None:
            # one modality file of a case: take its folder
            return discover(p.parent)
        return [_msd_source(p)]
    files = sorted(f for f in p.iterdir() if f.is_file() and not is_hidden(f))
    sources = _brats_cases(p, files)
    if sources:
        return sources
    # a folder of case folders (BraTS-named, or series named by their modality), or an
    # MSD imagesTr folder
    out: list[CaseSource] = []
    for sub in sorted(d for d in p.iterdir() if d.is_dir() and not is_hidden(d)):
        sub_files = sorted(f for f in sub.iterdir() if f.is_file() and not is_hidden(f))
        try:
            found = _brats_cases(sub, sub_files)
            if not found and not sub.name.lower().startswith(("images", "labels")):
                found = _named_cases(sub, sub_files, strict=False)
            if not found and _depth < MAX_NESTING and not sub.name.lower().startswith("labels"):
                # a site's (or scanner's) folder of cases, or of 4D files: its cases count
                found = discover(sub, errors, _depth + 1, notes)
        except InputError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        out.extend(found)
    if out:  # 4D NIfTI cases lying beside case folders are cases too
        unreadable: list[Path] = []
        out += [_msd_source(f) for f in files
                if is_nifti(f.name) and _is_4d_case(f, unreadable)]
        if notes is not None:
            notes += [f"{f}: not readable as a NIfTI file, so it is skipped." for f in unreadable]
    else:
        niftis = [f for f in files if is_nifti(f.name)]
        # a Decathlon task's root: its images folders hold the 4D cases
        images = [d for d in sorted(p.iterdir()) if d.is_dir() and not is_hidden(d)
                  and d.name.lower() in ("imagestr", "imagests")]
        if niftis and (p.name.lower().startswith("images") or all(map(_is_4d_case, niftis))):
            out = [_msd_source(f) for f in niftis]
        elif images and not niftis:
            out = [_msd_source(f) for d in images for f in sorted(d.iterdir())
                   if f.is_file() and not is_hidden(f) and is_nifti(f.name)]
        else:
            # a folder below the one given may hold anything (earlier outputs, notes)
            out = _named_cases(p, files, strict=not _depth)
    if _depth:  # its failing cases are in ``errors``; one holding none is passed over
        return out
    if not out and errors:  # every case folder failed: the first says why
        raise errors.pop(0)
    if not out:
        raise InputError(
            f"{p}: holds no BraTS case (expected files such as <case>_t1.nii.gz ... "
            "_flair.nii.gz or <case>-t1n.nii.gz ... -t2f.nii.gz, 4D NIfTI files of the "
            "four modalities, or a Decathlon task's imagesTr folder)."
        )
    return sorted(out, key=lambda s: s.case_id)


def parse_channels(names: list[str] | str, where: str = "--channels") -> tuple[str, ...]:
    """A 4D file's channel names in its order (``flair,t1,t1ce,t2``, or a list) -> their
    modalities; anything but the four modalities, each once, raises :class:`InputError`."""
    words = names.split(",") if isinstance(names, str) else list(names)
    mods = [CHANNEL_WORDS.get(re.sub(r"[^a-z0-9]", "", str(w).lower())) for w in words]
    if len(mods) != len(MODALITIES) or None in mods or len(set(mods)) != len(MODALITIES):
        given = ", ".join(str(w).strip() for w in words)
        raise InputError(
            f"{where}: names the channels {given}; a 4D file's four channels are FLAIR, T1, "
            "T1ce and T2, each named once in the file's order (e.g. flair,t1,t1ce,t2).")
    return tuple(m for m in mods if m is not None)


def dataset_channels(image4d: Path) -> tuple[str, ...] | None:
    """The channel order a Decathlon ``dataset.json`` beside a 4D file (or one folder up,
    as a task keeps ``imagesTr/`` beside it) names in its ``modality`` (or
    ``channel_names``) block; None without one. A block that does not name the four
    modalities raises :class:`InputError`."""
    import json

    for folder in (image4d.parent, image4d.parent.parent):
        meta = folder / "dataset.json"
        if not meta.is_file():
            continue
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # not a Decathlon description: as if there were none
        block = data.get("modality") or data.get("channel_names") \
            if isinstance(data, dict) else None
        if not isinstance(block, dict):
            continue
        try:
            order = sorted(block.items(), key=lambda kv: int(kv[0]))
        except (TypeError, ValueError):
            continue
        return parse_channels([str(v) for _, v in order], f"{meta} (its modality block)")
    return None


#: a 4D file's channels are checked to look like T1, T1ce, T2 and FLAIR on a sample of
#: this many brain voxels
_CHANNEL_SAMPLE = 200_000


#: how a 4D file's channel order is stated on the command line
CHANNELS_ADVICE = "on the command line: --channels t1,t1ce,t2,flair for BraTS's order"


def channel_order_note(image: np.ndarray, advice: str = CHANNELS_ADVICE) -> str | None:
    """A warning when the channels of a ``(4, X, Y, Z)`` image in :data:`MODALITIES` order
    do not look like T1, T1ce, T2 and FLAIR (a 4D file stacked in another order than the
    one taken); None when they do, or when there is too little brain to tell.

    Within the brain (no channel 0), by each channel's own intensity ranks: the
    T1 and T1ce (both T1-weighted) must be the pair most alike, and the T2 must be bright
    where the FLAIR is dark (the cerebrospinal fluid) far more often than the reverse. Both
    hold on the 14 shared BraTS cases and fail for each of them stacked in BraTS's order
    (T1, T1ce, T2, FLAIR) and read as the Decathlon's; a T1 and T1ce swapped are not told
    apart. ``advice`` says how to state the order."""
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        return None
    # every other voxel along each axis: an eighth of the case, so the check holds little
    # beside it (a view, and the brain's samples copied alone)
    step = 2 if min(image.shape[1:]) >= 16 else 1
    return _channel_note(image[:, ::step, ::step, ::step], advice)


def channel_order_note_4d(data: np.ndarray, order: Sequence[str],
                          advice: str = CHANNELS_ADVICE) -> str | None:
    """:func:`channel_order_note` of a 4D file's ``(X, Y, Z, 4)`` voxels read in ``order``,
    taking only the voxels it looks at (not a stacked copy of the whole case)."""
    if data.ndim != 4 or data.shape[3] != len(MODALITIES):
        return None
    step = 2 if min(data.shape[:3]) >= 16 else 1
    return _channel_note(np.stack([data[::step, ::step, ::step, list(order).index(m)]
                                   for m in MODALITIES]), advice)


def _channel_note(view: np.ndarray, advice: str) -> str | None:
    """The check of :func:`channel_order_note` on its sampled ``(4, x, y, z)`` view."""
    from scipy.stats import rankdata

    brain = np.flatnonzero(np.all(view != 0, axis=0))
    if brain.size < 1000:
        return None
    brain = brain[:: max(1, brain.size // _CHANNEL_SAMPLE)]
    ranks = np.stack([(rankdata(ch.reshape(-1)[brain]) / brain.size).astype(np.float32)
                      for ch in view])  # ties share their mean rank
    corr = np.corrcoef(ranks)
    t1, t1ce, t2, flair = (MODALITIES.index(m) for m in ("t1", "t1ce", "t2", "flair"))

    def bright_dark(a: int, b: int) -> float:
        return float(np.mean((ranks[a] > 0.9) & (ranks[b] < 0.3)))

    t1_pair = corr[t1, t1ce] >= 0.25 and corr[t1, t1ce] > max(corr[t1, t2], corr[t1ce, t2])
    csf = bright_dark(t2, flair) > 1.5 * bright_dark(flair, t2)
    if t1_pair and csf:
        return None
    why = ("the T1 and T1ce are not the most alike pair" if not t1_pair else
           "the T2 is not bright where the FLAIR is dark (the fluid around the brain)")
    return (f"its channels do not look like FLAIR, T1, T1ce and T2 in the order taken ({why}), "
            f"so the outline may be wrong; if the file holds them in another order, state it "
            f"({advice})")


def _msd_source(image4d: Path) -> CaseSource:
    return CaseSource(case_id=strip_nifti_suffix(image4d.name), kind="msd", image4d=image4d,
                      label_path=_msd_label_for(image4d))


def _is_4d_case(path: Path, unreadable: list[Path] | None = None) -> bool:
    """Whether a NIfTI file holds the four modalities as a 4th axis (read from its header
    alone); one that cannot be read is not, and is added to ``unreadable``."""
    try:
        shape = list(getattr(peek_nifti(path), "shape", ()))
    except Exception:  # noqa: BLE001 - an unreadable file is not one; reading says why
        if unreadable is not None:
            unreadable.append(path)
        return False
    while len(shape) > 4 and shape[-1] == 1:
        shape.pop()
    if len(shape) == 5 and shape[3] == 1:  # (X, Y, Z, 1, 4): a vector image's layout
        shape.pop(3)
    return len(shape) == 4 and shape[-1] == len(MODALITIES)


_LABEL_WORDS = re.compile(r"(^|[^a-z])(seg|label|labels|mask)([^a-z]|$)", re.IGNORECASE)


def _named_case(folder: Path, niftis: list[Path]) -> CaseSource:
    """One case from a folder of NIfTI files named by their modality in other words than
    BraTS's (``3_AX_T2_FLAIR.nii.gz``, ``t1_mprage_post.nii``, as converters name series),
    read with the web page's rules; a file named seg, label or mask is the label map."""
    from braintumor.dicom import detect_modality

    labels = [f for f in niftis if _LABEL_WORDS.search(strip_nifti_suffix(f.name))]
    images = [f for f in niftis if f not in labels]
    guess = {f: detect_modality(f.name) for f in images}
    by_mod: dict[str, list[Path]] = {}
    for f, m in guess.items():
        if m:
            by_mod.setdefault(m, []).append(f)
    unclear = len(labels) > 1 or any(m is None for m in guess.values()) or \
        any(len(v) > 1 for v in by_mod.values())
    if unclear:
        listing = ", ".join(f"{f.name}: {MODALITY_NAMES[m] if m else '?'}"
                            for f, m in guess.items())
        raise InputError(
            f"{folder}: its NIfTI files do not name their modalities clearly ({listing}); "
            "name them <case>_t1.nii.gz, <case>_t1ce.nii.gz, <case>_t2.nii.gz and "
            "<case>_flair.nii.gz.")
    return CaseSource(case_id=folder.name, kind="named",
                      modality_paths={m: v[0] for m, v in by_mod.items()},
                      label_path=labels[0] if labels else None)


def _named_cases(folder: Path, files: list[Path], strict: bool = True) -> list[CaseSource]:
    """[the folder's named case] when it holds 2 to 5 NIfTI files, else []. Unclear or
    incomplete names raise :class:`InputError`, or, not ``strict`` (a subfolder of the
    folder given, which may hold anything, earlier outputs say), give []."""
    niftis = [f for f in files if is_nifti(f.name)]
    if not 2 <= len(niftis) <= 5:
        return []
    try:
        named = _named_case(folder, niftis)
        check_complete(named, folder)
    except InputError:
        if strict:
            raise
        return []
    return [named]


def _brats_cases(folder: Path, files: list[Path]) -> list[CaseSource]:
    """The BraTS-named cases among ``files`` (checked), or, where those names are only
    BraTS-like endings of a converter's series names ("7_AX_T2_FLAIR.nii": several
    incomplete cases, or files left over), the folder's one named case."""
    sources = _source_from_files(files, folder)
    try:
        for s in sources:
            check_complete(s, folder)
    except InputError:
        niftis = [f for f in files if is_nifti(f.name)]
        grouped = {f for s in sources for f in [*s.modality_paths.values(), s.label_path]}
        if not 2 <= len(niftis) <= 5 or (len(sources) == 1 and grouped >= set(niftis)):
            raise
        return _named_cases(folder, files)
    return sorted(sources, key=lambda s: s.case_id)


def _read_dtype(path: str | Path) -> type:
    """The type to read a NIfTI image's voxels as: its own when it stores small integers
    without scaling (as scanners and BraTS store them: exact, and half the memory of
    float32 until the case's float32 block is filled), else float32."""
    try:
        img: Any = peek_nifti(path)
        dt = np.dtype(img.header.get_data_dtype())
        # nibabel moves the header's scl_slope / scl_inter onto the image's proxy (the
        # header it hands out says None), so the scaling is read there
        slope = float(getattr(img.dataobj, "slope", 1.0))
        inter = float(getattr(img.dataobj, "inter", 0.0))
    except Exception:  # the reading proper says what is wrong with the file
        return np.float32
    if dt.kind in "iu" and dt.itemsize <= 2 and slope == 1.0 and inter == 0.0:
        return dt.newbyteorder("=").type
    return np.float32


def nan_note(count: int) -> str:
    """What a file's ``count`` NaN voxels, read as background, are said to be."""
    are = "voxel is" if count == 1 else "voxels are"
    return (f"{count} {are} NaN (not a number), read as background (0), as brain-masking "
            "tools write NaN outside the brain")


def _note_nan(src: CaseSource, vol: Volume) -> None:
    """Say, among the case's notes, that ``vol``'s NaN voxels were read as background."""
    if vol.nan_voxels:
        src.nan_voxels[str(vol.path)] = vol.nan_voxels
        note = f"{vol.path.name}: {nan_note(vol.nan_voxels)}"
        if note not in src.notes:
            src.notes.append(note)


def _read_parallel(paths: dict[str, Path]) -> dict[str, Volume]:
    """:func:`load_nifti` of each path, two at a time (gzip inflates outside the GIL);
    the first file in order that fails raises its error, as a loop would. Small
    unscaled integers stay in their own type (:func:`_read_dtype`)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(2, len(paths)) or 1) as pool:
        futures = {m: pool.submit(load_nifti, p, dtype=_read_dtype(p), nan_as_background=True)
                   for m, p in paths.items()}
        return {m: f.result() for m, f in futures.items()}


def grid_modality(edges: Mapping[str, float]) -> str:
    """The modality whose grid a case is put on, from each modality's coarsest voxel edge
    in mm: the T1's (the T1ce's when there is no T1), as in BraTS, unless the finest
    modality's edge is :data:`COARSER_THAN_GRID` times smaller: then that modality's (the
    first of T1, T1ce, T2, FLAIR among equals). Resampling thin series onto thick slices
    would lose their detail between those slices for good."""
    present = [m for m in MODALITIES if m in edges]
    finest = min(present, key=lambda m: edges[m])
    return finest if edges[present[0]] > COARSER_THAN_GRID * edges[finest] else present[0]


def coarsest_edge(header: Any, affine: np.ndarray) -> float:
    """A NIfTI image's coarsest voxel edge in mm (a 2D series' slice spacing): the
    affine's longest voxel axis (:func:`~braintumor.io.voxel_sizes`: the affine places the
    voxels, whatever the header's own voxel sizes say; they count only for an axis the
    affine gives no length)."""
    return max(voxel_sizes(affine, header.get_zooms()[:3]))


#: one image's grid: (shape, affine, coarsest voxel edge in mm)
Grid = tuple[tuple[int, ...], np.ndarray, float]


def _file_grid(path: str | Path) -> Grid | None:
    """A NIfTI file's :data:`Grid` from its header alone; None when it cannot be read (the
    reading proper says why)."""
    try:
        img: Any = peek_nifti(path)
        return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, float), \
            coarsest_edge(img.header, img.affine)
    except Exception:  # nibabel raises many types for bad files
        return None


def case_grid(grids: Mapping[str, Grid], label_path: str | Path | None = None) -> str:
    """The modality whose grid a case lies on, from each present modality's :data:`Grid`:
    :func:`grid_modality`'s (the T1's, the T1ce's without a T1, a finer modality's beside
    thick T1 slices), the one rule of NIfTI files and DICOM studies.

    A label map given with the case (``label_path``: a BraTS ``_seg`` file, the web
    page's reference) that lies on the T1's grid (its shape, which is what the label
    check asks) and not on the finer modality's (shape and affine) keeps the case on the
    T1's grid: a label map is the expert's outline on the grid it was drawn on (BraTS's
    are on the T1's), so the case is scored there rather than on an interpolated copy,
    and the outline comes out where the label map lies. Only then is its header read."""
    present = [m for m in MODALITIES if m in grids]
    pick = grid_modality({m: grids[m][2] for m in present})
    first = present[0]
    if pick == first or label_path is None:
        return pick
    label = _file_grid(label_path)
    if label is None:
        return pick
    on_pick = on_grid(label[0], label[1], grids[pick][0][:3], grids[pick][1])
    return first if not on_pick and label[0] == tuple(grids[first][0][:3]) else pick


def grid_of_files(paths: Mapping[str, str | Path], label_path: str | Path | None = None
                  ) -> str:
    """:func:`case_grid` of a case's NIfTI files ({modality: file}) from their headers
    alone: the grid :func:`load_case` puts them on, unless a modality covers too little
    of the finer grid (which only their voxels tell; the case then keeps the T1's)."""
    grids = {m: g for m, g in ((m, _file_grid(p)) for m, p in paths.items()) if g}
    return case_grid(grids, label_path) if grids else next(m for m in MODALITIES
                                                              if m in paths)


def label_on_grid(lv: Volume, shape: tuple[int, ...], affine: np.ndarray) -> Volume:
    """A case's label map voxel for voxel on its image's grid (``shape``, ``affine``): as
    it is when it has the image's shape and affine (or no geometry of its own: an identity
    affine, as a label map saved from an array often has), its axes reordered or reversed
    when it is that grid stored in another orientation (a T1 stored flipped beside a label
    map that is not, or the other way round), exactly, as the modalities are
    (:func:`~braintumor.io.turned_onto`); else :class:`InputError`: a label map on another
    grid would outline the wrong voxels (the rule of
    :func:`braintumor.evaluate.on_reference_grid`: :func:`~braintumor.io.label_onto_grid`)."""
    try:
        return replace(lv, data=label_onto_grid(lv.data, lv.affine, shape, affine),
                       affine=affine)
    except NotOnGrid as exc:
        if exc.shape_differs:
            raise InputError(f"{lv.path}: label map shape {lv.data.shape} differs from the "
                             f"image's {tuple(shape)}; the label map must lie on the case's "
                             "grid.") from None
    raise InputError(f"{lv.path}: the label map's voxel-to-world geometry (affine) differs "
                     "from the image's, as if shifted, rotated or resampled; the label map "
                     "must lie on the case's grid.")


def _other_grids(vols: dict[str, Volume], grid: str, regrid: bool) -> list[str]:
    """The modalities of ``vols`` on another grid than ``grid``'s; a file on its affine
    with another shape, or (not ``regrid``) on another affine, raises
    :class:`InputError`. One on ``grid``'s grid stored in another orientation is turned
    onto it in ``vols`` (:func:`~braintumor.io.turned_onto`) and is on the grid."""
    ref = vols[grid]
    ref_name = MODALITY_NAMES[grid]
    other = []
    for m in (m for m in MODALITIES if m in vols and m != grid):
        v = vols[m]
        try:
            data = turned_onto(v.data, v.affine, ref.data.shape, ref.affine)
        except NotOnGrid as exc:
            shape_differs = exc.shape_differs
        else:
            if data is not v.data:
                vols[m] = replace(v, data=data, affine=ref.affine)
            continue
        same_affine = same_placement(v.affine, ref.affine, ref.data.shape)
        if same_affine or not regrid:  # one grid claimed, another size: a wrong file
            raise InputError(
                f"{v.path}: shape {v.data.shape} differs from the {ref_name} image's "
                f"{ref.data.shape}; all modalities must be co-registered on one grid."
                if shape_differs else
                f"{v.path}: its affine (voxel-to-world geometry) differs from the "
                f"{ref_name} image's; all modalities must be co-registered on one grid."
            )
        other.append(m)
    return other


def _stacked(vols: dict[str, Volume], grid: str, other: list[str]) -> np.ndarray:
    """The ``(4, X, Y, Z)`` image on ``grid``'s grid, the ``other`` modalities resampled
    onto it (each covering :data:`MIN_COVER` of its brain, else :class:`InputError`), a
    missing one's channel its stand-in's. Each modality on the grid is released once
    copied (its entry in ``vols`` then holds its channel of the block, the same values),
    so the case is never held twice."""
    shape = vols[grid].data.shape
    image = np.empty((len(MODALITIES), *shape), np.float32)
    for i, m in enumerate(MODALITIES):  # the reference first: the others need its brain
        if m in vols and m not in other:
            image[i] = vols[m].data
            vols[m] = replace(vols[m], data=image[i])
    ref = vols[grid]
    for i, m in enumerate(MODALITIES):
        if m in other:  # a series of its own: onto the reference by scanner mm
            image[i] = resample_onto(vols[m], shape, ref.affine,
                                     inside=ref.data != 0, min_cover=MIN_COVER)
    for i, m in enumerate(MODALITIES):  # as its stand-in lies on the grid, resampled or not
        if m not in vols:
            image[i] = image[MODALITIES.index(STAND_IN[m])]
    return image


def load_case(src: CaseSource | str | Path, with_label: bool = True,
              label_path: str | Path | None = None, regrid: bool = True) -> Case:
    """Read a case into memory, with every consistency check.

    Modalities should share one shape and affine. With ``regrid``, those on grids of
    their own (series acquired apart, as a scanner's conversion leaves them) are
    resampled by scanner coordinates, which line up within one session, onto the case's
    grid (:func:`case_grid`, :attr:`Case.grid`): the T1's (else the first modality
    present's), or a finer modality's where the T1's slices are thick (5 mm T1 slices
    beside a 1 mm 3D T1ce), as for a DICOM study; each must cover :data:`MIN_COVER` of
    that grid's brain, and :attr:`Case.regridded` names them. Where one covers too little
    of the finer grid (a slab of thick slices beside a 3D series of the whole head), the
    case keeps the T1's grid, as the first modality's grid was always taken. A file on
    the reference's affine with another shape is refused; without ``regrid`` so is one
    on another affine.

    A label map given with the case keeps it on the T1's grid where it lies there (so it
    is scored on the grid it was drawn on, :func:`case_grid`), whether or not it is read
    (``with_label``), so that the outline lies on one grid either way. It must share the
    case's grid (stored in another orientation it is turned onto it, as the modalities
    are: :func:`label_on_grid`) and its values must fit the convention the naming
    implies.
    """
    if not isinstance(src, CaseSource):
        found = discover(src)
        if len(found) != 1:
            raise InputError(f"{src}: holds {len(found)} cases; give one case.")
        src = found[0]
    if label_path is not None:
        # on a copy: the caller's source keeps its own label map for the next load; the
        # copy shares its notes and NaN counts, so what reading finds is seen on both
        src = replace(src, label_path=Path(label_path))
    other_grid: list[str] = []
    grid: str | None = None
    if src.image4d is not None:
        vol = load_nifti(src.image4d, ndim=(4, 5), dtype=_read_dtype(src.image4d),
                         nan_as_background=True)
        _note_nan(src, vol)
        if vol.data.ndim == 5 and vol.data.shape[3] == 1:
            # NIfTI's place for the components of a vector image is its 5th axis, after
            # a time axis of one: (X, Y, Z, 1, 4) holds the same four volumes
            vol = replace(vol, data=vol.data[:, :, :, 0, :])
        if vol.data.ndim != 4:
            raise InputError(f"{src.image4d}: is a 5D image of shape {vol.data.shape}; a "
                             "case's four modalities lie along its 4th axis (X, Y, Z, 4) or "
                             "its 5th after a time axis of one (X, Y, Z, 1, 4).")
        if vol.data.shape[3] != 4:
            first = (f"; its first axis has 4, but NIfTI keeps a case's channels on the "
                     f"4th (shape {vol.data.shape})" if vol.data.shape[0] == 4 else "")
            raise InputError(
                f"{src.image4d}: a 4D image needs 4 channels (FLAIR, T1, T1gd, T2); "
                f"it has {vol.data.shape[3]}{first}."
            )
        # one float32 block filled channel by channel from the file's own voxels: the
        # 4D float32 array, its stack and its float32 copy held the case three times
        order = src.channels or dataset_channels(src.image4d)
        image = np.empty((len(MODALITIES), *vol.data.shape[:3]), np.float32)
        for i, m in enumerate(order or MSD_ORDER):
            image[MODALITIES.index(m)] = vol.data[..., i]
        if order is None:  # the Decathlon's order taken, not stated: it must look so
            note = channel_order_note(image)
            if note and note not in src.notes:
                src.notes.append(note)
        hdr = header_for(vol.header, vol.data.shape[:3], vol.header.get_data_dtype())
        ref = Volume(path=vol.path, data=image[0], affine=vol.affine, header=hdr)
        del vol
        label_conv_hint: str | None = "msd"
    else:
        check_complete(src, src.reference_path.parent)
        present = [m for m in MODALITIES if m in src.modality_paths]
        vols = _read_parallel({m: src.modality_paths[m] for m in present})
        for v in vols.values():
            _note_nan(src, v)
        grid = present[0]
        if regrid:
            grid = case_grid({m: (v.data.shape, v.affine, coarsest_edge(v.header, v.affine))
                              for m, v in vols.items()}, src.label_path)
        other_grid = _other_grids(vols, grid, regrid)
        try:
            image = _stacked(vols, grid, other_grid)
        except InputError:
            if grid == present[0]:
                raise
            # too little of the finer grid covered: the T1's grid, as before the finer
            # one was taken (its own refusal stands)
            grid = present[0]
            other_grid = _other_grids(vols, grid, regrid)
            image = _stacked(vols, grid, other_grid)
        ref = vols[grid]
        label_conv_hint = src.kind if src.kind in ("brats2021", "brats2023") else None
    label = None
    conv = None
    if with_label and src.label_path is not None:
        lv = label_on_grid(load_label_nifti(src.label_path), ref.data.shape, ref.affine)
        hint = L.convention_from_name(lv.path.name) or label_conv_hint
        conv = L.detect_convention(lv.data, hint=hint, what=f"label map {lv.path}")
        label = L.to_internal(lv.data, conv, what=f"label map {lv.path}")
    return Case(
        case_id=src.case_id,
        image=image,
        affine=ref.affine,
        spacing=ref.spacing,
        header=ref.header,
        label=label,
        label_convention=conv,
        source=src,
        missing=src.missing,
        regridded=tuple(other_grid),
        grid=grid,
    )


def check_finite(case: Case, finite: bool | None = None) -> None:
    """Refuse (:class:`InputError`) a case whose image holds NaN or infinite voxels: one
    NaN spreads through every filter, and an outline or an edit comes out empty.
    ``finite``: the caller's own cheap test where it has one (a channel's min and max);
    else the image's sum is taken (a NaN or an infinity makes it non-finite). The
    voxels are counted only when a test fails."""
    image = np.asarray(case.image)
    if finite is None:
        with np.errstate(over="ignore", invalid="ignore"):
            finite = bool(np.isfinite(image.sum()))
    bad = 0 if finite else int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise InputError(f"Case {case.case_id}: the image holds {bad} NaN or infinite "
                         "voxels; every voxel must be a number.")


def without_blank(case: Case) -> Case:
    """``case``, with any blank image (one value throughout: an empty series, a failed
    export) taken for what it is.

    A blank T1 or T2 is missing (:attr:`Case.missing`, :attr:`Case.blank`): its channel
    gets the stand-in and the case is segmented as one without it. A blank T1ce or
    FLAIR, or a scan blank throughout, raises :class:`InputError`: no outline can be
    drawn from it, and an empty one would read as "no tumour".
    """
    image_ok = isinstance(case.image, np.ndarray) and case.image.ndim == 4 and \
        case.image.shape[0] == len(MODALITIES)
    if not image_ok:
        raise InputError(f"Case {case.case_id}: the image must be (4, X, Y, Z), the four "
                         f"modalities first, not {np.shape(case.image)}.")
    values = [(float(ch.min()), float(ch.max())) for ch in case.image]
    # a NaN makes its channel's min and max NaN, an infinity one of them infinite
    check_finite(case, bool(np.isfinite(values).all()))
    if all(lo == hi == 0 for lo, hi in values):
        raise InputError(f"Case {case.case_id}: every voxel is zero; there is no brain.")
    blank = [m for m, (lo, hi) in zip(MODALITIES, values, strict=True)
             if lo == hi and m not in case.missing]
    if not blank:
        return case
    needed = [m for m in blank if m not in OPTIONAL_MODALITIES]
    if needed:
        names = " and ".join(MODALITY_NAMES[m] for m in needed)
        value = values[MODALITIES.index(needed[0])][0]
        raise InputError(
            f"Case {case.case_id}: the {names} image{'s are' if len(needed) > 1 else ' is'} "
            f"blank (every voxel {value:g}); the tumour cannot be outlined without "
            f"{'them' if len(needed) > 1 else 'it'}."
        )
    image = case.image.copy()
    for m in blank:
        image[MODALITIES.index(m)] = image[MODALITIES.index(STAND_IN[m])]
    missing = tuple(m for m in MODALITIES if m in case.missing or m in blank)
    return replace(case, image=image, missing=missing, blank=tuple(blank),
                   regridded=tuple(m for m in case.regridded if m not in blank))


def output_name(case: Case, naming: str | None = None) -> str:
    """File name of a case's label map: ``<case>.nii.gz``."""
    _ = naming
    return f"{case.case_id}.nii.gz"


def write_label_map(case: Case, labels: np.ndarray, out_path: str | Path,
                    convention: str = "brats2021") -> Path:
    """Write internal ``labels`` in ``convention`` on the case's own geometry."""
    from braintumor.io import save_label_nifti

    if labels.shape != case.shape:
        raise InputError(
            f"Label map shape {labels.shape} differs from case {case.case_id}'s {case.shape}."
        )
    return save_label_nifti(L.from_internal(labels, convention), out_path,
                            reference=case.header, affine=case.affine)


def case_from_arrays(case_id: str, image: np.ndarray, affine: np.ndarray | None = None,
                     label: np.ndarray | None = None) -> Case:
    """Build a Case from arrays (tests, phantoms, a notebook): ``image`` ``(4, X, Y, Z)``
    in T1, T1ce, T2, FLAIR order; ``affine`` 4x4 voxel-to-mm (identity by default);
    ``label`` ``(X, Y, Z)`` internal labels 0-3 as whole numbers, stored as uint8."""
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise InputError(f"Case {case_id}: the image must be (4, X, Y, Z), the four modalities "
                         f"(T1, T1ce, T2, FLAIR) first, not {image.shape}.")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or \
            abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise InputError(f"Case {case_id}: the affine must be a 4x4 voxel-to-mm matrix with "
                         "an invertible 3x3 part.")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[1:]:
            raise InputError(f"Case {case_id}: the label map's shape {label.shape} differs "
                             f"from the image's {image.shape[1:]}.")
        L.check_internal(label, f"label map of case {case_id}", "a Case holds")
        label = label.astype(np.uint8, copy=False)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(image.shape[1:])
    hdr.set_qform(aff, 1)
    hdr.set_sform(aff, 1)
    spacing = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
    hdr.set_zooms(spacing)
    return Case(case_id=case_id, image=np.asarray(image, dtype=np.float32), affine=aff,
                spacing=spacing, header=hdr, label=label)  # type: ignore[arg-type]
