"""DICOM studies: MR series converted to NIfTI with dcm2niix and matched to the four
modalities (T1, T1ce, T2, FLAIR) by their descriptions and acquisition (inversion, echo and
repetition times).

One path for the web page (a zip of DICOM files, or the files themselves, matched in the
page) and ``braintumor predict`` (a folder of DICOM files, matched automatically, or by
``--series``): :func:`convert_study` converts each series on its own and labels it by its
SeriesNumber, :func:`auto_assignment` and :func:`settle_assignment` match the series to
the modalities and say which could not be read and why. No patient identifier is kept:
dcm2niix writes anonymised sidecars and the NIfTI text fields are blanked
(:func:`braintumor.io.convert_dicom_series`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.cases import (  # grid_modality: the case grid's rule, NIfTI's as well
    COARSER_THAN_GRID,
    MODALITIES,
    MODALITY_NAMES,
    REQUIRED_MODALITIES,
    CaseSource,
    coarsest_edge,
    grid_modality,
)
from braintumor.errors import InputError
from braintumor.io import peek_nifti, voxel_sizes

NIFTI_EXT = (".nii.gz", ".nii")


_WORDS = {
    "flair": "flair", "t2f": "flair", "t2flair": "flair", "t2_flair": "flair",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1_gd": "t1ce", "t1post": "t1ce",
    "t1_post": "t1ce", "t1_ce": "t1ce", "t1_c": "t1ce", "t1contrast": "t1ce",
    "t2w": "t2", "t2": "t2", "t2_tse": "t2",
    "t1n": "t1", "t1w": "t1", "t1": "t1", "t1_pre": "t1", "t1pre": "t1",
}
#: a contrast agent named (in the description's words joined by spaces): ``gad``,
#: ``gd``, ``contrast``, ``ce``, ``+C`` (``+ C``, ``C+``), German ``KM`` (Kontrastmittel)
_AGENT = r"(contrast|gad\w*|gd|km|ce|c|enhanced|enhancement)"
#: said without a contrast agent: ``PRE GAD``, ``pre contrast``, ``precontrast``,
#: ``W/O CONTRAST``, ``WO GAD``, ``non-contrast``, ``without contrast``, ``before gad``,
#: ``no contrast``, German ``ohne KM``, ``vor KM``, ``_PRE_KM``; ``nativ``, ``native``,
#: ``unenhanced``, ``pre`` on its own (``T1 pre``)
_PRE_CONTRAST = re.compile(
    rf"\b(pre|prae|w ?o|without|non|no|before|ohne|vor)[ -]?(iv )?{_AGENT}\b"
    r"|\b(nativ|native|unenhanced|nonenhanced|noncon|pre)\b")
#: a series named as one without contrast by a word of its own (German ``nativ``):
#: whatever agent the description names besides (``T1_KM_nativ``), it is the T1
_NATIVE = re.compile(r"\b(nativ|native|unenhanced|nonenhanced)\b")
#: a contrast agent given: ``POST``, ``GAD``, ``Gd``, ``+C``, ``+ C``, ``C+``, ``contrast``
#: (``w/ contrast``, ``with contrast``), ``CE``, German ``KM`` (``mit KM``, ``nach KM``,
#: ``T1+KM``), read once the phrases that say without one are taken out
_POST_CONTRAST = re.compile(r"(post|gad|\bgd\b|\+ ?c\b|contrast|\bce\b|\bc ?\+|\bkm\b)")
#: FLAIR by another name: Siemens calls it dark fluid (``t2_tirm_tra_dark-fluid``,
#: ``DARKFLUID``, ``t2_spc_da-fl_sag``); matched in the description's words joined by ``_``
_FLAIR_WORDS = re.compile(r"flair|dark_?fluid|(^|_)da_?fl(_|$)")
#: an inversion-recovery sequence named without saying which: Siemens' ``tirm`` is STIR
#: (fat nulled) unless it says dark fluid, which the FLAIR words catch first
_STIR_WORDS = {"stir", "tirm", "tir"}
_T1_WORD = re.compile(r"(^|_)t1(w|n|c|ce|gd|flair|post|pre|\+c?)?(_|$)")
_T2_WORD = re.compile(r"(^|_)t2(w|star)?(_|$)")
#: T2-weighted by another contrast than BraTS' spin-echo T2: a gradient echo (T2*:
#: ``T2* GRE``, Siemens' ``t2_fl2d_tra_hemo``, GE's MPGR and MERGE, Siemens' MEDIC, Philips'
#: FFE; balanced steady state: FIESTA, CISS, TrueFISP), read in the description's words
_GRADIENT_WORDS = {"gre", "fl2d", "fl3d", "flash", "mpgr", "merge", "medic", "ffe", "hemo",
                   "haemo", "hemosiderin", "t2star", "fiesta", "ciss", "truefisp", "bffe"}
_T2_STAR = re.compile(r"t2\s*\*|t2[\s_-]?star")
#: susceptibility-weighted images (SWI, GE's SWAN, Philips' SWIp, VenoBOLD) and the
#: magnitude, phase and minimum intensity projections they come as
_SWI_WORDS = {"swi", "swan", "swip", "venobold", "susceptibility", "minip", "mag",
              "magnitude", "pha", "phase"}
#: proton density, and the dual echo (Siemens' ``t2_de``) that gives a PD and a T2 volume
_PD_WORDS = {"pd", "pdw", "pdwi", "proton", "pdt2"}
_DUAL_ECHO = re.compile(r"(^|_)(de|dual_?echo)(_|$)")


def t2_lookalike(text: str) -> str | None:
    """Which contrast a series that is not BraTS' T2 (a spin-echo or turbo spin-echo T2)
    but could be read as one says it is, by its description: ``"t2star"`` (a gradient
    echo), ``"swi"`` (susceptibility weighted, its magnitude or phase), ``"pd"`` (proton
    density), ``"pd_t2"`` (a dual echo, PD and T2: its echo time tells which volume is
    the T2), or None. A description that names T1 (a T1 gradient echo: FLASH, SPGR) is
    none of these."""
    low = text.lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", low) if t]  # "PD+T2": PD and T2
    joined = "_".join(tokens)
    if _T1_WORD.search(joined):
        return None
    words = set(tokens)
    pd = bool(words & _PD_WORDS)
    if _DUAL_ECHO.search(joined) or ("dual" in words and "echo" in words) or \
            (pd and (_T2_WORD.search(joined) or "pdt2" in words)):
        return "pd_t2"
    if pd:
        return "pd"
    if words & _SWI_WORDS:
        return "swi"
    if words & _GRADIENT_WORDS or _T2_STAR.search(low):
        return "t2star"
    return None


def _t1_or_t1ce(joined: str) -> str:
    """T1ce when the description names a contrast agent given, else T1: a phrase that says
    without one (``PRE GAD``, ``W/O CONTRAST``, ``non-contrast``, ``ohne KM``, ``nativ``)
    is taken out before the contrast words are looked for, so it reads as the T1."""
    text = " ".join(t for t in re.split(r"[^a-z0-9+]+", joined.lower().replace("+", " + "))
                    if t)
    if _NATIVE.search(text):  # said to be without contrast outright: no agent word counts
        return "t1"
    text = _PRE_CONTRAST.sub(" ", text)
    return "t1ce" if _POST_CONTRAST.search(text) else "t1"


def detect_modality(text: str) -> str | None:
    """Guess the modality (t1, t1ce, t2, flair) from a file name or series description.

    BraTS names (``_t1ce``, ``-t1c`` ...) are read exactly; other texts by key words:
    FLAIR first (also Siemens' dark fluid; GE's T1 FLAIR, a T1-weighted inversion
    recovery, is a T1), then a short-TI inversion recovery (STIR, Siemens' ``tirm``
    without dark fluid) as none of the four, then a T2* gradient echo, a
    susceptibility-weighted or a proton-density series (:func:`t2_lookalike`) as none of
    the four, then T1 with a contrast word as T1ce, then T2, then T1.
    """
    from braintumor.cases import _match_brats_name

    hit = _match_brats_name(Path(text)) if text.lower().endswith(NIFTI_EXT) else None
    if hit is not None and hit[2] in MODALITIES:
        return hit[2]
    low = text.lower()
    for ext in NIFTI_EXT:
        if low.endswith(ext):
            low = low[: -len(ext)]
    tokens = re.split(r"[^a-z0-9+]+", low)
    joined = "_".join(t for t in tokens if t)
    t1_named = bool(_T1_WORD.search(joined))
    if _FLAIR_WORDS.search(joined) or "t2f" in tokens:
        if t1_named and not _T2_WORD.search(joined):  # "AX T1 FLAIR": T1-weighted
            return _t1_or_t1ce(joined)
        return "flair"
    if _STIR_WORDS & set(tokens) and not t1_named:
        return None
    if t2_lookalike(text):  # T2*, SWI, PD: none of the four
        return None
    for tok in reversed(tokens):  # the modality word usually ends a BraTS-like name
        if tok in _WORDS and _WORDS[tok] != "t1":
            return _WORDS[tok]
        if tok in _WORDS:
            return _t1_or_t1ce(joined)
    if re.search(r"t1", joined):
        return _t1_or_t1ce(joined)
    if re.search(r"t2", joined):
        return "t2"
    # T1-weighted 3D sequences named by their vendor's word alone: Siemens' MPRAGE and
    # MP2RAGE, GE's (F)SPGR and BRAVO, Philips' TFE
    if any(w in joined for w in ("mprage", "mp2rage", "spgr", "bravo")) or "tfe" in tokens:
        return _t1_or_t1ce(joined)
    return None


#: inversion times (ms) that tell FLAIR (CSF nulled: about 1500-2800 ms at 1.5-3 T, 2D or
#: 3D) from STIR (fat nulled: 100-250 ms); T1-weighted inversion recovery (MPRAGE, GE's
#: T1 FLAIR) lies between, with a short echo time
FLAIR_MIN_TI_MS = 1500.0
STIR_MAX_TI_MS = 300.0
#: T2 weighting: FLAIR's echo time is long (80-140 ms 2D, longer 3D), its TR longer still
T2_MIN_TE_MS = 60.0
T1_MAX_TE_MS = 40.0
FLAIR_MIN_TR_MS = 4000.0
#: a gradient echo with a TR under this is T2*- (or T1-) weighted, never BraTS' T2, a
#: spin echo whose TR runs to 2500-6000 ms
GRADIENT_MAX_TR_MS = 1500.0


@dataclass(frozen=True)
class Acquisition:
    """How an MR series was acquired, as far as its files say (None or "" where not):
    inversion, repetition and echo times in ms, the DICOM ScanningSequence (``SE\\IR``)
    and SequenceName (Siemens' ``*tir2d1_15``)."""

    inversion_ms: float | None = None
    repetition_ms: float | None = None
    echo_ms: float | None = None
    scanning_sequence: str = ""
    sequence_name: str = ""

    @classmethod
    def from_sidecar(cls, meta: dict[str, Any]) -> Acquisition:
        """From dcm2niix's BIDS sidecar (times in seconds)."""

        def ms(key: str) -> float | None:
            v = meta.get(key)
            return float(v) * 1000.0 if isinstance(v, (int, float)) and v > 0 else None

        return cls(ms("InversionTime"), ms("RepetitionTime"), ms("EchoTime"),
                   str(meta.get("ScanningSequence") or ""), str(meta.get("SequenceName") or ""))

    @classmethod
    def from_header(cls, ds: Any) -> Acquisition:
        """From a DICOM header (times in ms)."""

        def ms(key: str) -> float | None:
            try:
                v = float(getattr(ds, key, None) or 0)
            except (TypeError, ValueError):
                return None
            return v if v > 0 else None

        seq = getattr(ds, "ScanningSequence", None) or ""
        text = seq if isinstance(seq, str) else "\\".join(str(v) for v in seq)
        return cls(ms("InversionTime"), ms("RepetitionTime"), ms("EchoTime"), text,
                   str(getattr(ds, "SequenceName", "") or ""))

    @property
    def gradient_echo(self) -> bool | None:
        """Whether the echo is a gradient echo with no spin echo (ScanningSequence ``GR``;
        Siemens' FLASH, SWI and MEDIC sequence names), None when the files do not say."""
        if not self.scanning_sequence and not self.sequence_name:
            return None
        kinds = set(re.split(r"[^A-Z]+", self.scanning_sequence.upper()))
        if "SE" in kinds:
            return False
        return "GR" in kinds or bool(re.match(r"\*?(fl\d|swi\d|me\d|e?fgre)",
                                              self.sequence_name.lower()))

    @property
    def inversion_recovery(self) -> bool | None:
        """Whether the sequence is an inversion recovery (None when the files do not say)."""
        if not self.scanning_sequence and not self.sequence_name:
            return None
        kinds = set(re.split(r"[^A-Z]+", self.scanning_sequence.upper()))
        return "IR" in kinds or bool(re.search(r"tir|spcir|flair", self.sequence_name.lower()))


def classify_series(description: str, acq: Acquisition | None = None) -> str | None:
    """The modality of a series from its description (:func:`detect_modality`) and, where
    its files give them, its inversion, repetition and echo times: a long inversion time
    (CSF nulled) with long TR and TE is a FLAIR whatever the name (``t2_tirm_tra``,
    ``AX T2``); a short one (STIR, fat nulled) is not a FLAIR, nor a T2; an inversion
    recovery named FLAIR with a short echo time is T1-weighted (GE's T1 FLAIR). Without
    an inversion time, an inversion recovery with TE >= 80 ms and TR >= 6000 ms is taken
    for a FLAIR (STIR's echo is shorter). A series named T1 or T1ce stays one.

    BraTS' T2 is a spin echo: a gradient echo with TR < 1500 ms (T2*) is not, whatever
    its name; nor are series named T2*, SWI or PD (:func:`t2_lookalike`), except the long
    echo of a dual echo (PD and T2), whose volumes dcm2niix writes apart, each with its
    echo time: the one of TE >= 60 ms is the T2, the other (the PD) none."""
    text = detect_modality(description)
    if acq is not None and acq.echo_ms is not None and acq.gradient_echo is not True and \
            t2_lookalike(description) == "pd_t2":
        return "t2" if acq.echo_ms >= T2_MIN_TE_MS else None
    if acq is None or text in ("t1", "t1ce"):
        return text
    ti, tr, te = acq.inversion_ms, acq.repetition_ms, acq.echo_ms
    ir = acq.inversion_recovery
    if text == "t2" and acq.gradient_echo and tr is not None and tr < GRADIENT_MAX_TR_MS:
        return None  # a T2* gradient echo named T2
    if ti is None:
        if ir and te is not None and te >= 80.0 and tr is not None and tr >= 6000.0:
            return "flair"
        return text
    if ti >= FLAIR_MIN_TI_MS:
        if (te is None or te >= T2_MIN_TE_MS) and (tr is None or tr >= FLAIR_MIN_TR_MS):
            return "flair"
        return text
    if ir is False:  # an inversion time on a sequence that says it inverts nothing
        return text
    if ti < STIR_MAX_TI_MS:
        return None
    if text == "flair" and te is not None and te < T1_MAX_TE_MS:
        low = "_".join(t for t in re.split(r"[^a-z0-9+]+", description.lower()) if t)
        return _t1_or_t1ce(low)
    return text


#: the least a series must cover, along each of its axes, to be a brain volume: a
#: localizer (scout) is a few slices, or a thin slab; a head is 140 mm or more across
MIN_SLICES = 12
MIN_COVER_MM = 80.0


def too_small(shape: list[int], zooms: list[float]) -> str | None:
    """Why a 3D volume of ``shape`` and voxel sizes ``zooms`` (mm) covers too little to be
    a brain volume (fewer than :data:`MIN_SLICES` slices, or under :data:`MIN_COVER_MM`
    mm, along an axis), or None."""
    least = min(range(3), key=lambda i: shape[i])
    if shape[least] < MIN_SLICES:
        return f"{shape[least]} slices: a localizer?"
    cover = [n * abs(z) for n, z in zip(shape[:3], zooms[:3], strict=True)]
    if min(cover) < MIN_COVER_MM:
        return f"covers {min(cover):.0f} mm along an axis: a localizer or a slab?"
    return None


@dataclass
class Series:
    """One converted series: ``path`` (NIfTI), its description, shape, whether it is a 3D
    volume covering enough to be a brain (``usable``; ``small`` says why one does not
    cover enough) and the modality its description suggests (``guess``)."""

    path: Path
    description: str
    shape: list[int]
    usable: bool
    guess: str | None
    small: str | None = None


def describe_series(nifti: Path, header: DicomSeries | None = None) -> Series:
    """What dcm2niix's sidecar (or, without one, ``header``, the DICOM series it came from,
    or its file name ``<series number>_<description>``) says of a converted series. The
    description is the header's where it gives one: pydicom decodes the series' character
    set (SpecificCharacterSet), which dcm2niix's sidecar does not (``Überblick`` in UTF-8
    comes out as ``Ãberblick``)."""
    sidecar = nifti.with_name(nifti.name[: -len(".nii.gz")] + ".json")
    desc = ""
    meta: dict[str, Any] = {}
    if sidecar.exists():
        try:
            loaded = json.loads(sidecar.read_text())
            meta = loaded if isinstance(loaded, dict) else {}
            desc = str(meta.get("SeriesDescription") or meta.get("ProtocolName") or "")
        except (OSError, json.JSONDecodeError):
            meta, desc = {}, ""
    if header is not None and header.description:
        desc = header.description
    if not desc:
        desc = re.sub(r"^\d+_", "", nifti.name[: -len(".nii.gz")])
    acq = Acquisition.from_sidecar(meta) if meta or header is None else header.acquisition
    img: Any = peek_nifti(nifti)
    shape = [int(s) for s in img.shape]
    usable = len([s for s in shape if s > 1]) == 3
    # voxel sizes from the affine, as every image of the project's (the header's own may
    # disagree with an sform)
    small = too_small(shape, list(voxel_sizes(img.affine, img.header.get_zooms()[:3]))) \
        if usable else None
    usable = usable and small is None
    return Series(nifti, desc[:120], shape, usable,
                  classify_series(desc, acq) if usable else None, small)


def complete_assignment(guess: dict[str, str | None]) -> dict[str, str] | None:
    """{series id: modality} when each modality is guessed for exactly one series (of the
    3D series ``guess`` lists). A T1 or T2 may lack a series, as long as every series got
    a guess: one that did not might be the missing modality."""
    by_mod: dict[str, list[str]] = {}
    for sid, mod in guess.items():
        if mod:
            by_mod.setdefault(mod, []).append(sid)
    if any(len(v) != 1 for v in by_mod.values()) or \
            not set(REQUIRED_MODALITIES) <= set(by_mod):
        return None
    if set(by_mod) != set(MODALITIES) and not all(guess.values()):
        return None
    return {v[0]: m for m, v in by_mod.items()}


def resample_onto_t1(paths: dict[str, Path], ref_mod: str | None = None) -> None:
    """Bring every modality file onto ``ref_mod``'s grid (by default the T1's, the T1ce's
    when there is no T1), in place, when grids differ (same-session DICOM series share
    scanner coordinates, so the affines line them up; linear interpolation). A series on
    the same grid stored with its axes in another order or direction (dcm2niix stores a
    3D acquisition with left and right the other way round from a 2D one) is turned,
    voxel for voxel, not interpolated."""
    from braintumor.io import file_onto_grid, load_nifti, save_float_nifti

    present = [m for m in MODALITIES if m in paths]
    ref_mod = ref_mod or present[0]
    ref = load_nifti(paths[ref_mod], ndim=3)
    for mod in (m for m in present if m != ref_mod):
        data = file_onto_grid(paths[mod], ref.data.shape, ref.affine)
        if data is not None:
            save_float_nifti(data, paths[mod], ref.header, ref.affine)


#: the value representations a DICOM element may name (explicit VR)
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
        b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def is_dicom_file(path: Path) -> bool:
    """A DICOM file: a Part 10 one (the ``DICM`` mark after the 128-byte preamble), or one
    written without preamble and mark, as older scanners and PACS exports do, which
    dcm2niix converts too (:func:`bare_dicom`). Only the first 132 bytes are read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:] == b"DICM") or bare_dicom(head)


def bare_dicom(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, starts as a DICOM data set without the
    preamble: the tag of a file meta (group 0002) or identifying (group 0008) element,
    little endian, then a value representation (explicit VR) or an even value length
    under 64 KiB (implicit VR). No picture, NIfTI file or text starts so: a PNG starts
    ``\x89PNG``, a JPEG ``\xff\xd8``, a NIfTI header with its size (348 or 540), a
    gzip file ``\x1f\x8b``."""
    if len(head) < 8 or head[1] != 0 or head[0] not in (0x02, 0x08):
        return False
    element = int.from_bytes(head[2:4], "little")
    if element > 0x1200:  # groups 0002 and 0008 define no element beyond (0008,1199)
        return False
    if head[4:6] in _VRS:
        return True
    length = int.from_bytes(head[4:8], "little")
    return length < 0x10000 and length % 2 == 0


#: folder names under which CDs and PACS exports keep their images, probed first
_DICOM_FOLDERS = re.compile(r"^(dicom|dcm|images?|img|series|studies|study|data|"
                            r"(pa|st|se|s)\d+)$", re.IGNORECASE)
#: suffixes of a CD's viewer, autorun and reports: never DICOM, so never opened
_NOT_DICOM = {".exe", ".dll", ".inf", ".ini", ".txt", ".htm", ".html", ".xml", ".xsl",
              ".js", ".css", ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".ico", ".pdf",
              ".jar", ".cab", ".msi", ".bat", ".sh", ".json", ".cfg", ".log", ".so",
              ".dylib", ".plist", ".icns", ".lic", ".chm", ".zip"}


def _probe_order(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, those most likely DICOM first: in each folder its files
    (``.dcm``/``.ima``, then extensionless names, then others; a viewer's ``.exe``,
    ``.dll``, ``.inf`` ... left out), then its subfolders, those named as image folders
    (``DICOM``, ``IMAGES``, ``S0001``) first. Lazy: a folder is listed only when
    reached."""
    entries = sorted(folder.iterdir())
    files = [f for f in entries if f.is_file() and f.suffix.lower() not in _NOT_DICOM]
    files.sort(key=lambda f: (0 if f.suffix.lower() in (".dcm", ".dicom", ".ima")
                              else 1 if not f.suffix else 2))
    yield from files
    dirs = [d for d in entries if d.is_dir()]
    dirs.sort(key=lambda d: not _DICOM_FOLDERS.match(d.name))
    for d in dirs:
        yield from _probe_order(d)


def is_dicom_study(path: str | Path, probe: int = 20) -> bool:
    """A folder holding DICOM files and no NIfTI file: a study to convert. A ``DICOMDIR``
    (a CD's index, any letter case) in it marks one; else the files most likely DICOM are
    opened first (:func:`_probe_order`: in ``DICOM/``, ``IMAGES/``, without extension;
    a CD viewer's programs not at all), at most ``probe`` of them, so a big folder is not
    read through."""
    p = Path(path)
    try:
        if not p.is_dir():
            return False
        if any(f.name.upper() == "DICOMDIR" and f.is_file() for f in p.iterdir()):
            return True
        seen = 0
        for f in _probe_order(p):
            if f.name.lower().endswith(NIFTI_EXT):
                return False
            if is_dicom_file(f):
                return True
            seen += 1
            if seen >= probe:
                break
    except OSError:  # a folder that cannot be listed: reading it as a case says why
        return False
    return False


def header_tag(path: Path, tag: str) -> str | None:
    """One text tag of a DICOM file's header (pixels not read); None when the file is
    unreadable, lacks the tag, or pydicom is missing."""
    try:
        import pydicom
    except ImportError:
        return None
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=[tag],
                             force=True)  # a file without preamble, too: is_dicom_file
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for a bad file
        return None
    value = getattr(ds, tag, None)
    return str(value) if value else None


def _study_uid(folder: Path) -> str | None:
    """The StudyInstanceUID of the first DICOM file under ``folder`` that gives one."""
    for f in sorted(folder.rglob("*")):
        if f.is_file() and is_dicom_file(f):
            uid = header_tag(f, "StudyInstanceUID")
            if uid:
                return uid
    return None


def find_studies(folder: str | Path) -> list[tuple[Path, str]]:
    """``(folder, case id)`` for each DICOM study under a folder :func:`is_dicom_study`
    accepts: the folder itself when everything in it is one study (series may sit in
    subfolders), else each subfolder that holds DICOM files, named after it (a folder of
    patients' studies). Folders of one series each, most of one study, are that study's
    series folders: the folder stays one case, and a series of another study among them
    is refused as a mix of studies, not read as a case of one series."""
    root = Path(folder)
    subs = [d for d in sorted(root.iterdir()) if d.is_dir() and is_dicom_study(d)]
    loose = any(f.is_file() and is_dicom_file(f) for f in root.iterdir())
    if len(subs) < 2 or loose:
        return [(root, root.name)]
    uids = [_study_uid(d) for d in subs]
    if len(set(uids)) < 2 or None in uids:
        return [(root, root.name)]
    if len(set(uids)) < len(uids) and all(_one_series(d) for d in subs):
        return [(root, root.name)]  # a study's series folders, another study's among them
    return [(d, d.name) for d in subs]


def _one_series(folder: Path) -> bool:
    """Whether the DICOM files under ``folder`` look like one series: its first and last
    files (in name order) name the same SeriesInstanceUID."""
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and is_dicom_file(f)]
    if not files:
        return False
    first, last = (header_tag(f, "SeriesInstanceUID") for f in (files[0], files[-1]))
    return first is not None and first == last


#: the modality words ``--series`` takes (case-insensitive): BraTS 2021's and 2023's
SERIES_WORDS = {"t1": "t1", "t1n": "t1", "t1ce": "t1ce", "t1c": "t1ce", "t2": "t2",
                "t2w": "t2", "flair": "flair", "t2f": "flair"}


def parse_series_choice(text: str | None) -> dict[str, str]:
    """``--series`` text, ``"3=t1,4=t1ce,5=t2,7=flair"``, -> ``{series: modality}``: each
    series as the series list shows it (its DICOM series number, ``4b`` where volumes share
    a number, ``no-number-1`` for one without), or its description; matched to the study's
    series by :func:`study_source`. The modality is a word of :data:`SERIES_WORDS` (BraTS
    2021's t1, t1ce, t2, flair or 2023's t1n, t1c, t2w, t2f). A series, or a modality,
    named twice is refused in one sentence (a dictionary would keep only the last)."""
    out: dict[str, str] = {}
    words = ", ".join(SERIES_WORDS)
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, word = part.rpartition("=")
        mod = SERIES_WORDS.get(word.strip().lower())
        key = " ".join(key.split())
        if not key or mod is None:
            raise InputError(f"--series {text}: give each series as NUMBER=MODALITY (the number "
                             "as the series list shows it, or the series description; the "
                             f"modality one of {words}), e.g. 3=t1,4=t1ce,5=t2,7=flair.")
        if key.casefold() in (k.casefold() for k in out):
            raise InputError(f"--series {text}: names series {key} twice; name each series "
                             "once, as the one modality it is.")
        if mod in out.values():
            raise InputError(f"--series {text}: names two series as the "
                             f"{MODALITY_NAMES[mod]}; give one series for each modality.")
        out[key] = mod
    return out


@dataclass
class DicomSeries:
    """One image series of a DICOM study as its headers tell it (no pixel read): its
    SeriesInstanceUID, SeriesNumber (None when the files give none), description (the
    SeriesDescription, else the ProtocolName), acquisition and files; ``dates``: the
    StudyDates its files give (else their SeriesDate or AcquisitionDate), ISO."""

    uid: str
    number: int | None
    description: str
    acquisition: Acquisition
    files: list[Path]
    dates: set[str] = field(default_factory=set)
    image_type: str = ""  # its ImageType, ``ORIGINAL\\PRIMARY\\M``, ``DERIVED\\SECONDARY\\MPR``


def is_derived(image_type: str) -> bool:
    """Whether an ImageType (``DERIVED\\SECONDARY\\SUBTRACTION``) says the series was made
    from others (a subtraction, a reformat, a map), not acquired: DERIVED, or SECONDARY."""
    values = [v.strip().upper() for v in image_type.split("\\")]
    return values[0] == "DERIVED" or (len(values) > 1 and values[1] == "SECONDARY")


def dicom_date(ds: Any) -> str | None:
    """A DICOM header's date of the examination, ISO (``2018-03-14``): its StudyDate,
    else its SeriesDate or AcquisitionDate; None when it gives none that is a date."""
    import datetime

    for tag in ("StudyDate", "SeriesDate", "AcquisitionDate"):
        text = str(getattr(ds, tag, "") or "").strip()
        try:
            return datetime.datetime.strptime(text[:8], "%Y%m%d").date().isoformat()
        except ValueError:
            continue
    return None


_SCANNED_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
                 "ProtocolName", "Rows", "InversionTime", "RepetitionTime", "EchoTime",
                 "ScanningSequence", "SequenceName", "StudyDate", "SeriesDate",
                 "AcquisitionDate", "ImageType"]


def scan_study(folder: str | Path) -> tuple[list[DicomSeries], set[str], int]:
    """The image series of the DICOM files under ``folder`` (headers only), in series
    number order (those without one last), the StudyInstanceUIDs they name, and how many
    DICOM files had a header that could not be read. Files that hold no image (a CD's
    DICOMDIR, reports, presentation states) are passed over."""
    try:
        import pydicom
    except ImportError:
        raise InputError("Reading a DICOM study needs pydicom, which is not installed "
                         "(pip install pydicom).") from None
    series: dict[str, DicomSeries] = {}
    studies: set[str] = set()
    unreadable = 0
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if not is_dicom_file(f):
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=_SCANNED_TAGS,
                                 force=True)  # a file without preamble, too: is_dicom_file
        except Exception:  # noqa: BLE001 - pydicom raises many kinds for a bad file
            unreadable += 1
            continue
        if getattr(ds, "StudyInstanceUID", None):
            studies.add(str(ds.StudyInstanceUID))
        if not getattr(ds, "Rows", None):
            continue
        try:
            number: int | None = int(ds.SeriesNumber)
        except (AttributeError, TypeError, ValueError):
            number = None
        desc = str(getattr(ds, "SeriesDescription", "") or getattr(ds, "ProtocolName", "")
                   or "").strip()
        uid = str(getattr(ds, "SeriesInstanceUID", "") or f"?{number}:{desc}")
        if uid not in series:
            kind = getattr(ds, "ImageType", None) or ""
            kind = kind if isinstance(kind, str) else "\\".join(str(v) for v in kind)
            series[uid] = DicomSeries(uid, number, desc[:120], Acquisition.from_header(ds), [],
                                      image_type=kind)
        series[uid].files.append(f)
        date = dicom_date(ds)
        if date:
            series[uid].dates.add(date)
    order = sorted(series.values(), key=lambda d: (d.number is None, d.number or 0,
                                                   d.description, d.files[0]))
    return order, studies, unreadable


@dataclass
class StudySeries:
    """A volume of a DICOM study as the command line and the web page show it. ``label``
    is what messages and the page's series list show, and what ``--series`` takes: the
    DICOM SeriesNumber; with a letter (``4a``, ``4b``) where several volumes share one
    (two series numbered alike, or the echoes of one series); ``no-number-1`` ... for a
    series without one. ``path`` is the converted volume (NIfTI), None when the series
    could not be converted or read (``fault`` says why); ``guess`` the modality it reads
    as (for one that could not be read, by its headers); ``uneven``: its slices are not
    evenly spaced (so it cannot be put on one grid); ``uid`` its SeriesInstanceUID.
    ``left_out``: how many of its ``of_files`` files were cut short and left out (it was
    converted from the others, :func:`convert_without_cut_short`), ``end_slices`` how many
    of them lay at its ends (it is that much shorter; those inside are in ``filled``)."""

    label: str
    number: int | None
    description: str
    shape: list[int]
    guess: str | None
    path: Path | None
    fault: str | None = None
    uneven: bool = False
    shared: int = 0  # how many volumes share its series number, when more than one
    uid: str = ""
    small: str | None = None  # why a 3D volume covers too little to be a brain volume
    filled: int | None = None  # slices missing from it that dcm2niix interpolated
    left_out: int = 0  # its files cut short, left out of it
    of_files: int = 0  # its files, cut short ones included, when some were left out
    end_slices: int = 0  # slices at its ends that the files left out held
    #: where ``filled``: why dcm2niix put it on an even grid, as its headers tell
    #: (:func:`slice_spacing`); None when they do not say
    spacing: SliceSpacing | None = None
    image_type: str = ""  # its ImageType (``DERIVED\\SECONDARY\\MPR``: made from others)

    @property
    def derived(self) -> bool:
        """Made from other series (a subtraction, a reformat), not acquired: its ImageType
        says DERIVED or SECONDARY (:func:`is_derived`)."""
        return bool(self.image_type) and is_derived(self.image_type)

    @property
    def readable(self) -> bool:
        return self.path is not None

    @property
    def usable(self) -> bool:
        """Read, a 3D volume, and covering enough to be a brain volume."""
        return self.path is not None and len([s for s in self.shape if s > 1]) == 3 and \
            not self.small

    def named(self) -> str:
        return f"series {self.label} ({self.description or 'no description'})"

    def remarks(self) -> list[str]:
        """What sets it apart in a list of the study's series (its number shared, not read
        and why, files cut short and left out, not 3D, slices unevenly spaced)."""
        out = []
        if self.shared:
            out.append(f"one of {self.shared} sharing series number {self.number}")
        if self.path is None:
            out.append(f"could not be read: {self.fault}")
            return out
        if self.left_out:
            out.append(self.cut_said())
        if self.derived:
            out.append(f"derived ({self.image_type})")
        if self.small:
            out.append(self.small)
        elif not self.usable:
            out.append("not 3D")
        elif self.uneven:
            out.append("slices not evenly spaced")
        elif self.filled is not None and not self.left_out:
            out.append(self.gap())
        return out

    def cut_said(self, sentence: bool = False) -> str:
        """Its files left out for being cut short, and what that made of it (slices missing
        inside it, filled in by interpolation: :meth:`gap`; the series ending short of
        those at its ends), as the series list says it, or with ``sentence`` the warning.
        No file name: a file may be named after the patient."""
        n, k = self.left_out, self.end_slices
        parts = [f"{'has ' if sentence else ''}{self.gap()}"] if self.filled is not None \
            else []
        if k:
            parts.append(f"ends {'a slice' if k == 1 else f'{k} slices'} short")
        if not sentence:
            return f"{n} of its {self.of_files} files cut short and left out" + \
                (f": {', '.join(parts)}" if parts else "")
        return f"{n} of its {self.of_files} files {'is' if n == 1 else 'are'} cut short and " \
            f"{'was' if n == 1 else 'were'} left out" + \
            (f", so the series {', and '.join(parts)}" if parts else "")

    @property
    def missing_slices(self) -> bool:
        """Whether it was put on an even grid for slices missing (not only for a position
        given twice or an uneven spacing)."""
        return self.filled is not None and (self.spacing is None or self.spacing.missing > 0)

    def gap(self) -> str:
        """Why dcm2niix put it on an even grid, as the series list and the warning say it:
        slices missing (filled in by interpolation), a duplicate slice position, uneven
        slice spacing."""
        sp = self.spacing
        parts = []
        if self.missing_slices:
            n = self.filled if sp is None else sp.missing
            many = f"{n} slices" if n and n > 1 else "a slice" if n else "slices"
            parts.append(f"{many} missing, filled in by interpolation")
        if sp is not None and sp.duplicates:
            parts.append("a duplicate slice position" if sp.duplicates == 1
                         else f"{sp.duplicates} duplicate slice positions")
        if sp is not None and (sp.uneven or not parts):
            parts.append("uneven slice spacing, put on an even grid")
        return ", and ".join(parts)

    def as_dict(self, base: Path) -> dict[str, Any]:
        """Its fields as JSON values (``path`` relative to ``base``; ``uid`` left out), with
        ``id`` for the label, ``usable`` and ``remarks``: one row of the web page's list."""
        return {"id": self.label, "number": self.number, "description": self.description,
                "shape": list(self.shape), "guess": self.guess, "usable": self.usable,
                "remarks": self.remarks(), "fault": self.fault, "uneven": self.uneven,
                "shared": self.shared, "small": self.small, "filled": self.filled,
                "left_out": self.left_out, "of_files": self.of_files,
                "end_slices": self.end_slices,
                "spacing": None if self.spacing is None else vars(self.spacing),
                "image_type": self.image_type,
                "path": None if self.path is None else str(self.path.relative_to(base))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: Path) -> StudySeries:
        """The inverse of :meth:`as_dict`."""
        return cls(str(d["id"]), d.get("number"), str(d.get("description") or ""),
                   list(d.get("shape") or []), d.get("guess"),
                   None if d.get("path") is None else base / str(d["path"]), d.get("fault"),
                   bool(d.get("uneven")), int(d.get("shared") or 0),
                   small=d.get("small"), filled=d.get("filled"),
                   left_out=int(d.get("left_out") or 0), of_files=int(d.get("of_files") or 0),
                   end_slices=int(d.get("end_slices") or 0),
                   spacing=SliceSpacing(**d["spacing"]) if d.get("spacing") else None,
                   image_type=str(d.get("image_type") or ""))


@dataclass
class Study:
    """A DICOM study converted series by series (:func:`convert_study`): its volumes,
    its StudyInstanceUID, and what converting it found amiss that a case goes on without
    (DICOM files whose header could not be read); ``date``: the examination's date (ISO)
    when its files give one date, else None."""

    entries: list[StudySeries]
    study_uid: str | None
    notes: list[str]
    date: str | None = None


#: the share of a series' files that may be cut short (their pixel data ending early: a
#: copy broken off) and left out, the series converted from the others
#: (:func:`convert_without_cut_short`): one in ten, so that the outline rests on scanned
#: slices almost everywhere and a badly broken copy is exported again rather than patched
MAX_CUT_SHORT_SHARE = 0.1


def _slice_levels(files: list[Path]) -> list[int] | None:
    """Where each file's slice lies in its series: its rank among the series' distinct
    slice positions (its ImagePositionPatient along the normal of the first file's
    ImageOrientationPatient; the echoes of one slice share a rank), or None when a file
    does not say (headers only; pixels not read)."""
    where = _slice_positions(files)
    if where is None:
        return None
    levels: list[float] = []
    for z in sorted(where):
        if not levels or z - levels[-1] > 0.01:  # 0.01 mm: rounding in the headers
            levels.append(z)
    ranks = np.array(levels)
    return [int(np.abs(ranks - z).argmin()) for z in where]


@dataclass(frozen=True)
class SliceSpacing:
    """How a series' slices lie, as its headers place them: ``missing`` slice positions
    between its slices (gaps of a whole number of slice spacings), ``widest`` the most of
    them neighbouring one another in one gap, ``duplicates`` files at a position other
    files of it already fill (beyond its echoes), ``uneven`` gaps that are no whole number
    of slice spacings."""

    missing: int = 0
    widest: int = 0
    duplicates: int = 0
    uneven: int = 0


def slice_spacing(files: list[Path]) -> SliceSpacing | None:
    """:class:`SliceSpacing` of the series of ``files`` (headers only), None when a file
    does not say where its slice lies. The slice spacing is the median distance between
    neighbouring positions; a gap within a tenth of a whole number of them leaves that
    many less one slices missing."""
    where = _slice_positions(files)
    if where is None or len(where) < 2:
        return None
    levels: list[float] = []
    counts: list[int] = []
    for z in sorted(where):
        if levels and z - levels[-1] <= 0.01:  # 0.01 mm: rounding in the headers
            counts[-1] += 1
        else:
            levels.append(z)
            counts.append(1)
    duplicates = sum(c - min(counts) for c in counts)  # the echoes of a slice share it
    gaps = np.diff(levels)
    if not len(gaps):
        return SliceSpacing(duplicates=duplicates)
    step = float(np.median(gaps))
    missing = widest = uneven = 0
    for g in gaps / step:
        k = int(round(g))
        if abs(g - k) > 0.1 or k < 1:
            uneven += 1
        elif k > 1:
            missing += k - 1
            widest = max(widest, k - 1)
    return SliceSpacing(missing, widest, duplicates, uneven)


def _slice_positions(files: list[Path]) -> list[float] | None:
    """Each file's slice position along the normal of the first file's
    ImageOrientationPatient (mm), or None when a file does not say."""
    import pydicom

    normal = None
    where = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True, specific_tags=[
                "ImagePositionPatient", "ImageOrientationPatient"])
            pos = np.array([float(v) for v in ds.ImagePositionPatient])
            if normal is None:
                turn = [float(v) for v in ds.ImageOrientationPatient]
                normal = np.cross(turn[:3], turn[3:6])
        except Exception:  # noqa: BLE001 - pydicom raises many kinds; a tag missing or odd
            return None
        if pos.shape != (3,) or normal.shape != (3,) or not np.any(normal):
            return None
        where.append(float(normal @ pos))
    return where


def cut_short_refusal(cut: list[Path], files: list[Path], levels: list[int] | None
                      ) -> tuple[str | None, int, int]:
    """Whether the series of ``files`` (``levels``: :func:`_slice_levels`, read only when
    needed) may be converted without the files in ``cut``: (why not, a phrase, or None;
    how many of its slice positions the files leave empty at its ends, and inside it).

    The rule: at most :data:`MAX_CUT_SHORT_SHARE` of its files, and never two neighbouring
    slice positions inside it. A slice missing between two intact ones is filled in by
    dcm2niix from those two, one slice spacing away on each side: the outline there is
    less sure, not made up. Two neighbouring ones would be bridged across three spacings
    (15 mm of 5 mm slices), where a small enhancing focus vanishes or is made up, so
    that series stays unreadable, to be exported again. Missing end slices (the first or
    last ones) are not made up at all: the series only ends short, losing the edge of its
    field of view (the count limit bounds how much)."""
    if len(cut) > MAX_CUT_SHORT_SHARE * len(files):
        return "too many to leave out (a series may lack one file in ten at most)", 0, 0
    if levels is None:
        return "and its files do not say where their slices lie, so none can be left out", 0, 0
    rank = dict(zip(files, levels, strict=True))
    gone = {rank[f] for f in cut}
    top = max(levels)
    lead = next(i for i in range(top + 2) if i not in gone)
    trail = next(i for i in range(top + 2) if top - i not in gone or top - i < lead)
    inside = sorted(g for g in gone if lead <= g <= top - trail)
    if any(b - a == 1 for a, b in zip(inside, inside[1:], strict=False)):
        return "two of them neighbouring slices: too wide a gap to fill in", 0, 0
    return None, lead + trail, len(inside)


def convert_without_cut_short(src: DicomSeries, work: Path, uneven: set[Path],
                              filled: dict[Path, int], left: list[Path] | None = None
                              ) -> tuple[list[Path], str | None, int, int]:
    """Convert a series with dcm2niix (:func:`braintumor.io.convert_dicom_series`, into
    ``work``), and where some of its files are cut short, again from its intact files,
    when :func:`cut_short_refusal` allows it: -> (its NIfTI files, why none, how many
    files were left out, how many slices they left empty at its ends).

    dcm2niix converts nothing of a series with a file cut short, and names only the first
    it meets: each conversion without the files found so far may find another, until one
    finds none or the rule is broken. The slices missing inside the series leave a gap
    that dcm2niix's evenly spaced copy fills in by interpolation (``filled``); where it
    makes none (or the gap goes unseen), the series stays unreadable, with why."""
    from braintumor.io import convert_dicom_series, cut_short_words

    cut: list[Path] = []
    niftis, fault = convert_dicom_series(src.files, work, uneven=uneven, filled=filled, cut=cut,
                                         signed=True)
    if not cut:
        return niftis, fault, 0, 0
    total = len(src.files)
    levels: list[int] | None = None
    for attempt in range(1, total + 1):
        if levels is None and len(cut) <= MAX_CUT_SHORT_SHARE * total:
            levels = _slice_levels(src.files)
        why, ends, inside = cut_short_refusal(cut, src.files, levels)
        if why:
            return [], f"{cut_short_words(len(cut), total, at_least=True)}, {why}", 0, 0
        gone = set(cut)
        more: list[Path] = []
        gaps: set[Path] = set()
        # signed pixels: this dcm2niix makes its evenly spaced copy of those only
        niftis, fault = convert_dicom_series([f for f in src.files if f not in gone],
                                             work.with_name(f"{work.name}-{attempt}"),
                                             uneven=gaps, filled=filled, cut=more, signed=True)
        if not more or set(more) <= gone:
            break
        cut += [f for f in more if f not in gone]
    said = cut_short_words(len(cut), total)
    if not niftis:
        return [], said, 0, 0
    if gaps or (inside and not any(n in filled for n in niftis)):
        return [], (f"{said}, and without {'it' if len(cut) == 1 else 'them'} its slices are "
                    "not evenly spaced (a gap dcm2niix could not fill in)"), 0, 0
    if left is not None:  # the files it was converted without
        left += cut
    return niftis, None, len(cut), ends


def convert_study(folder: str | Path, work_dir: str | Path, where: str,
                  apart: str = "a folder") -> Study:
    """Scan the DICOM files under ``folder`` (:func:`scan_study`), convert each series on
    its own with dcm2niix into ``work_dir`` (so that a failure is its own, and said), read
    what each volume is (:func:`describe_series`) and label it (:class:`StudySeries`). A
    series with files cut short is converted from its intact files where few are
    (:func:`convert_without_cut_short`), and says so (:meth:`StudySeries.cut_said`).

    Refused in one sentence starting with ``where`` (the study as the user knows it; no
    patient identifier): files of more than one study (``apart``: what the user should
    give each study in, as the caller takes it: the command line a folder, the web page
    a zip), no series that could be converted, fewer than two 3D series. The one path of
    the command line and the web page."""
    scanned, studies, bad = scan_study(folder)
    if len(studies) > 1:
        raise InputError(f"{where}: holds DICOM files of {len(studies)} studies "
                         "(examinations); a case is one study: give each study's files in "
                         f"{apart} of its own.")
    raw = Path(work_dir)
    uneven: set[Path] = set()
    filled: dict[Path, int] = {}
    out: list[StudySeries] = []
    for k, src in enumerate(scanned):
        left: list[Path] = []
        niftis, fault, left_out, ends = convert_without_cut_short(src, raw / f"{k:04d}",
                                                                  uneven, filled, left)
        # where dcm2niix put its slices on an even grid: why, from where the files it was
        # converted from place them (slices missing, a position given twice, or uneven)
        spacing = slice_spacing([f for f in src.files if f not in left]) \
            if any(n in filled for n in niftis) else None
        volumes = []
        for n in niftis:
            try:
                volumes.append(describe_series(n, src))
            except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
                fault = f"dcm2niix's NIfTI file of it could not be read ({type(exc).__name__})"
        out += [StudySeries("", src.number, v.description, v.shape, v.guess, v.path,
                            uneven=v.path in uneven, uid=src.uid, small=v.small,
                            filled=filled.get(v.path), left_out=left_out,
                            of_files=len(src.files) if left_out else 0, end_slices=ends,
                            spacing=spacing if v.path in filled else None,
                            image_type=src.image_type)
                for v in volumes] or [
            StudySeries("", src.number, src.description, [],
                        classify_series(src.description, src.acquisition), None,
                        fault or "dcm2niix made no image of it", uid=src.uid,
                        image_type=src.image_type)]
    by_number: dict[int | None, list[StudySeries]] = {}
    for e in out:
        by_number.setdefault(e.number, []).append(e)
    for num, group in by_number.items():
        for i, e in enumerate(group):
            if num is None:
                e.label = f"no-number-{i + 1}"
            elif len(group) == 1:
                e.label = str(num)
            else:
                e.label = f"{num}{chr(ord('a') + i) if i < 26 else f'-{i + 1}'}"
                e.shared = len(group)
    if not any(e.readable for e in out):
        raise InputError(f"{where}: holds no DICOM series that could be converted to NIfTI"
                         + (f" ({listing(out)})." if out else "."))
    usable = sum(e.usable for e in out)
    if usable < len(REQUIRED_MODALITIES):
        raise InputError(f"{where}: holds {usable} 3D series ({listing(out)}); a case needs "
                         "T1ce and FLAIR, and T1 and T2 where there are.")
    notes = [f"{bad} DICOM file{'s' if bad > 1 else ''} of the study could not be read (a "
             f"damaged header) and {'were' if bad > 1 else 'was'} left out"] if bad else []
    dates = set().union(*(s.dates for s in scanned)) if scanned else set()
    return Study(out, next(iter(studies), None), notes,
                 date=next(iter(dates)) if len(dates) == 1 else None)


def auto_assignment(entries: list[StudySeries], where: str,
                    overrides: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """{label: modality} from what each series reads as (``overrides``: label -> modality
    the user gave), when that settles each modality (:func:`complete_assignment`), else
    None. A series that could not be read still counts as a candidate: with two T1s, one
    unreadable, the user chooses, as with two readable ones. Refused (one sentence from
    ``where``, saying why) when the only series that reads as the T1ce or FLAIR could not
    be read. A derived series (a subtraction, a reformat: :attr:`StudySeries.derived`)
    that reads as a modality an acquired series reads as too is set aside
    (:func:`set_aside`)."""
    over = overrides or {}
    guess = {e.label: over.get(e.label) or e.guess for e in entries}
    aside = set_aside(entries, over)
    entries = [e for e in entries if e.label not in aside]
    for m in REQUIRED_MODALITIES:
        alike = [e for e in entries if guess[e.label] == m and (e.usable or not e.readable)]
        if alike and not any(e.readable for e in alike):
            raise InputError(f"{where}: {alike[0].named()}, the {MODALITY_NAMES[m]}, could not "
                             f"be read: {alike[0].fault}; a case needs T1ce and FLAIR.")
    return complete_assignment({e.label: guess[e.label] for e in entries
                                if e.usable or not e.readable and guess[e.label]})


def set_aside(entries: list[StudySeries], overrides: Mapping[str, str] | None = None
              ) -> set[str]:
    """The labels of the derived series (ImageType DERIVED or SECONDARY: a subtraction, a
    reformat) that read as a modality an acquired (ORIGINAL/PRIMARY) usable series of the
    study reads as too: that one is the scan, these are made from it or beside it. A
    series given a modality in ``overrides`` is never set aside."""
    over = overrides or {}
    guess = {e.label: over.get(e.label) or e.guess for e in entries}
    acquired = {guess[e.label] for e in entries if e.usable and not e.derived}
    return {e.label for e in entries if e.derived and e.label not in over
            and guess[e.label] is not None and guess[e.label] in acquired}


def settle_assignment(entries: list[StudySeries], by_label: Mapping[str, str], where: str,
                      given: bool) -> tuple[dict[str, str], list[str]]:
    """Check an assignment {label: modality} of a study's series (``given``: by the user,
    else :func:`auto_assignment`'s) -> ({modality: label}, notes for the warning).

    A series that could not be read is refused when the user gave it; when it was only
    read as the T1 or T2, the case goes without it. A modality left without a series
    while the only series that read as it could not be read: said, with why (refused for
    the T1ce or FLAIR; a note for the T1 or T2). A chosen series that is not a 3D volume, or
    whose slices are not evenly spaced, is refused; one with slices filled in by
    interpolation, or files cut short and left out, is said (:func:`patched_notes`)."""
    series = {e.label: e for e in entries}
    chosen: dict[str, str] = {}
    for label, m in by_label.items():
        e = series[label]
        if not e.readable:
            if given:
                raise InputError(f"{where}: {e.named()}, given as the {MODALITY_NAMES[m]}, "
                                 f"could not be read: {e.fault}.")
            continue
        if e.small:
            raise InputError(f"{where}: {e.named()} covers too little to be a brain volume "
                             f"({e.small}), so it cannot be the {MODALITY_NAMES[m]}.")
        if not e.usable:
            raise InputError(f"{where}: {e.named()} is not a 3D volume, so it cannot be the "
                             f"{MODALITY_NAMES[m]}.")
        if e.uneven:
            raise InputError(f"{where}: {e.named()}, the {MODALITY_NAMES[m]}, has slices that "
                             "are not evenly spaced (one missing?), so it cannot be put on one "
                             "grid; export the whole series again.")
        if e.spacing is not None and e.spacing.widest > 1:  # the cut-short rule's limit
            raise InputError(f"{where}: {e.named()}, the {MODALITY_NAMES[m]}, lacks "
                             f"{e.spacing.widest} neighbouring slices, too wide a gap to fill "
                             "in by interpolation; export the whole series again.")
        chosen[m] = label
    notes = []
    for m in (m for m in MODALITIES if m not in chosen):
        lost = [e for e in entries if not e.readable and e.guess == m]
        if not lost or any(e.usable and e.guess == m for e in entries):
            continue  # the user left out a series that could be read
        if m in REQUIRED_MODALITIES:
            raise InputError(f"{where}: {lost[0].named()}, the {MODALITY_NAMES[m]}, could not "
                             f"be read: {lost[0].fault}; a case needs T1ce and FLAIR.")
        notes += [f"{e.named()}, the study's {MODALITY_NAMES[m]}, could not be read, so the "
                  f"case goes without it: {e.fault}" for e in lost]
    if not given:  # matched by what the series read as: the derived ones set aside, said
        named = {m: series[label].named() for m, label in chosen.items()}
        notes += [f"{series[label].named()} is derived ({series[label].image_type}) and was "
                  f"set aside for {named[series[label].guess or '']}, the acquired "
                  f"{MODALITY_NAMES[series[label].guess or '']}"
                  for label in sorted(set_aside(entries)) if label not in by_label
                  and series[label].guess in named]
    return chosen, notes + patched_notes(entries, chosen)


def patched_notes(entries: list[StudySeries], chosen: Mapping[str, str]) -> list[str]:
    """Notes for the chosen series ({modality: label}) that are not quite what the scanner
    made: files cut short and left out (:meth:`StudySeries.cut_said`), slices missing
    and filled in by interpolation (:meth:`StudySeries.gap`)."""
    series = {e.label: e for e in entries}
    notes = []
    for m, label in chosen.items():
        e = series[label]
        unsure = "; the outline there is less sure" if e.filled is not None and (
            e.missing_slices or e.spacing is not None and e.spacing.uneven) else ""
        if e.left_out:
            notes.append(f"{e.named()}, the {MODALITY_NAMES[m]}: {e.cut_said(sentence=True)}"
                         + unsure)
        elif e.filled is not None:
            why = " (the scanner's slice positions leave a gap)" if e.missing_slices else ""
            notes.append(f"{e.named()}, the {MODALITY_NAMES[m]}, had {e.gap()}{why}{unsure}")
    return notes


def doubted_choice(entries: list[StudySeries], chosen: Mapping[str, str]) -> list[str]:
    """Notes for the series the user gave ({modality: label}) that read as another of the
    four modalities (by description or acquisition: a TI of 2500 ms is a FLAIR's): the
    choice stands (the user may know better), but the result's warning says so."""
    series = {e.label: e for e in entries}
    # a T1 read as such for want of a contrast word may well be the T1ce the user says
    # it is (many post-contrast series are named without one): not doubted
    return [f"{series[label].named()} was given as the {MODALITY_NAMES[m]} but reads as "
            f"{MODALITY_NAMES[series[label].guess or m]}"
            for m, label in chosen.items() if series[label].guess not in (None, m)
            and not (m == "t1ce" and series[label].guess == "t1")]


def place_series(entries: list[StudySeries], chosen: Mapping[str, str], dest: Path
                 ) -> tuple[dict[str, Path], list[str], str]:
    """Copy the chosen series ({modality: label}) to ``dest/<modality>.nii.gz``, all on
    one grid (:func:`grid_modality`'s series, :func:`resample_onto_t1`): -> the files,
    a note for each series much coarser than that grid (its detail between slices is
    interpolated there) and for a grid other than the T1's, and the grid's modality."""
    series = {e.label: e for e in entries}
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    edges = {}
    for m in (m for m in MODALITIES if m in chosen):
        src = series[chosen[m]].path
        assert src is not None  # settle_assignment refuses one that could not be read
        paths[m] = dest / f"{m}.nii.gz"
        shutil.copyfile(src, paths[m])
        img: Any = peek_nifti(src)
        edges[m] = coarsest_edge(img.header, img.affine)  # the NIfTI cases' rule
    ref = grid_modality(edges)
    notes = [f"{series[chosen[m]].named()}, the {MODALITY_NAMES[m]}, has {edges[m]:.3g} mm "
             f"voxels and was interpolated onto the {MODALITY_NAMES[ref]}'s "
             f"{edges[ref]:.3g} mm grid: the outline relies less on it between its slices"
             for m in paths if m != ref and edges[m] > COARSER_THAN_GRID * edges[ref]]
    if ref != next(iter(paths)):
        notes.insert(0, f"the label map lies on the grid of {series[chosen[ref]].named()}, "
                        f"the {MODALITY_NAMES[ref]} ({edges[ref]:.3g} mm voxels), not the "
                        f"{MODALITY_NAMES[next(iter(paths))]}'s "
                        f"{edges[next(iter(paths))]:.3g} mm slices")
    resample_onto_t1(paths, ref)
    return paths, notes, ref


def _find_series(key: str, entries: list[StudySeries], folder: Path) -> StudySeries:
    """The series ``--series`` names by ``key``: its label as listed, its series number
    where that is one volume's, or its description."""
    low = key.casefold()
    for e in entries:
        if e.label.casefold() == low:
            return e
    if key.isdigit():
        same = [e for e in entries if e.number == int(key)]
        if same:
            raise InputError(f"{folder}: {len(same)} volumes have series number {key} ("
                             + "; ".join(f"{e.label}: {e.description}" for e in same)
                             + "); name one of them in --series as "
                             + " or ".join(e.label for e in same) + ".")
    by_desc = [e for e in entries if " ".join(e.description.casefold().split()) == low]
    if len(by_desc) == 1:
        return by_desc[0]
    if by_desc:
        raise InputError(f"{folder}: {len(by_desc)} series are described as {key!r}; name "
                         "one of them in --series by its number, "
                         + " or ".join(e.label for e in by_desc) + ".")
    raise InputError(f"{folder}: no series {key}; it holds {listing(entries)}.")


def study_source(folder: str | Path, out_dir: str | Path, case_id: str | None = None,
                 choice: Mapping[str, str] | Mapping[int, str] | None = None
                 ) -> CaseSource:
    """Convert the DICOM study under ``folder`` (:func:`convert_study`) and match its
    series to the modalities (``choice``: series -> modality, each series as
    :func:`parse_series_choice` takes it, else each series' description and acquisition,
    :func:`auto_assignment`), every modality on the T1 series' grid (a finer series' when
    the T1's slices are thick, :func:`grid_modality`). The four volumes are written,
    anonymised, to ``out_dir/<case>_series/<modality>.nii.gz``; the returned source reads
    them, so the label map comes out on that grid, and a DICOM SEG refers to that series.
    An unclear match raises :class:`InputError` listing the series found, by their DICOM
    series numbers (:class:`StudySeries`).

    A series that cannot be converted or read is said, with why: refused when it is the
    T1ce or FLAIR (or named in ``choice``), and the case goes on without it, saying so in
    ``notes`` (hence in the result's warning), when it is the T1 or T2, as for a study
    without one (:func:`settle_assignment`). A series with a few files cut short is
    converted from its intact ones (:func:`convert_without_cut_short`), and the notes say
    so (:func:`patched_notes`)."""
    folder = Path(folder)
    cid = case_id or folder.name
    raw = Path(out_dir) / f".{cid}_dcm2niix"
    shutil.rmtree(raw, ignore_errors=True)
    try:
        study = convert_study(folder, raw, str(folder))
        entries = study.entries
        if choice:
            by_label: dict[str, str] = {}
            for key, mod in choice.items():
                e = _find_series(str(key), entries, folder)
                if e.label in by_label:
                    raise InputError(f"--series names {e.named()} twice; name each series "
                                     "once.")
                by_label[e.label] = mod
        else:
            by_label = auto_assignment(entries, str(folder)) or {}
        chosen, lost = settle_assignment(entries, by_label, str(folder), bool(choice)) \
            if by_label else ({}, [])
        complete = set(REQUIRED_MODALITIES) <= set(chosen) and \
            len(by_label) == len(set(by_label.values()))
        if choice and not complete:
            raise InputError("--series must name one series for each of T1ce and FLAIR, and "
                             "of T1 and T2 where the study has them, each modality once; "
                             f"{folder} holds {listing(entries)}.")
        guesses = [e.guess for e in entries if e.usable]
        lacking = [MODALITY_NAMES[m] for m in REQUIRED_MODALITIES if m not in guesses]
        if not complete and lacking and all(guesses):
            raise InputError(
                f"{folder}: holds no series that reads as {' or '.join(lacking)} "
                f"({listing(entries, readings=True)}); a case needs T1ce and FLAIR, and T1 "
                "and T2 where there are. If one of these is it, name them with --series, "
                f"e.g. --series {series_example(entries)}.")
        if not complete:
            raise InputError(
                f"{folder}: could not tell which series is T1, T1ce, T2 and FLAIR; it holds "
                f"{listing(entries, readings=True)}. Name them with --series, e.g. --series "
                f"{series_example(entries)}.")
        if choice:
            lost += doubted_choice(entries, chosen)
        paths, coarse, grid = place_series(entries, chosen, Path(out_dir) / f"{cid}_series")
        lost += coarse
    finally:
        shutil.rmtree(raw, ignore_errors=True)  # sidecars and unused series
    ref = {e.label: e for e in entries}[chosen[grid]]
    return CaseSource(case_id=cid, kind="brats2021", modality_paths=paths,
                      dicom_reference=(folder, ref.uid, study.study_uid),
                      notes=study.notes + lost, series=series_used(entries, chosen))


def series_used(entries: list[StudySeries], chosen: Mapping[str, str]) -> str:
    """Which series became which modality ({modality: label}), in one line:
    ``T1 = series 2 (AX T1 SE), T1ce = series 3 (AX T1 +C), T2 = ..., FLAIR = ...``."""
    series = {e.label: e for e in entries}
    return ", ".join(f"{MODALITY_NAMES[m]} = {series[chosen[m]].named()}"
                     for m in MODALITIES if m in chosen)


def series_example(entries: list[StudySeries]) -> str:
    """A ``--series`` value in this study's own labels: each modality given the first
    usable series that reads as it, then (for one still without) an unused series that
    reads as its pre- or post-contrast, T2 or FLAIR sibling, or as none of the four;
    ``N`` where none is left. Only an example: the user checks it against the list."""
    usable = [e for e in entries if e.usable]
    sibling = {"t1": "t1ce", "t1ce": "t1", "t2": "flair", "flair": "t2"}
    used: set[str] = set()
    picked: dict[str, str] = {}
    for m in MODALITIES:
        e = next((e for e in usable if e.guess == m and e.label not in used), None)
        if e is not None:
            picked[m] = e.label
            used.add(e.label)
    for m in (m for m in MODALITIES if m not in picked):
        e = next((e for e in usable if e.label not in used and e.guess == sibling[m]), None) \
            or next((e for e in usable if e.label not in used and e.guess is None), None)
        if e is not None:
            picked[m] = e.label
            used.add(e.label)
        elif m in REQUIRED_MODALITIES:
            picked[m] = "N"
    return ",".join(f"{picked[m]}={m}" for m in MODALITIES if m in picked)


def listing(entries: list[StudySeries], readings: bool = False) -> str:
    """The series as messages list them: ``label: description``, with what sets one apart
    (:meth:`StudySeries.remarks`); with ``readings``, also what each usable series reads
    as (``reads as T1``, ``reads as none of the four``)."""
    parts = []
    for e in entries:
        notes = e.remarks()
        if readings and e.usable:
            notes.insert(0, f"reads as {MODALITY_NAMES[e.guess]}" if e.guess
                         else "reads as none of the four")
        parts.append(f"{e.label}: {e.description or 'no description'}"
                     + (f" ({'; '.join(notes)})" if notes else ""))
    return "; ".join(parts)
