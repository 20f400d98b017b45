"""Fonts for the text matplotlib draws (the PDF reports, the overlay picture's title).

Case names keep letters of any script (``Müller_ü``, ``患者1``), but matplotlib's own
font, DejaVu Sans, has no Chinese, Japanese or Korean glyphs. Text is therefore drawn
with :func:`families`: DejaVu Sans first, then the CJK-capable fonts installed on the
system (matplotlib >= 3.6 takes each glyph from the first font in the list that has it,
and the PDF embeds only the glyphs used). ``scripts/install.sh --dev`` installs one,
WenQuanYi Micro Hei (Debian's ``fonts-wqy-microhei``).

A character no font in the list can draw (CJK without such a font, or a script none of
them covers) would come out as an empty box; :func:`drawable` writes it as its code
point instead, ``[U+60A3 U+8005]1`` for ``患者1``, so the name stays unambiguous, and
:data:`MISSING_NOTE` is the sentence a PDF report adds to say so. The HTML report, whose
fonts the browser picks, shows such names as written.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: matplotlib's own font (always there), whose glyphs come first
PRIMARY = "DejaVu Sans"
#: fonts with Chinese, Japanese and Korean glyphs, in order of preference, as matplotlib
#: names them: Noto Sans CJK / Source Han Sans (Debian's fonts-noto-cjk), WenQuanYi
#: (fonts-wqy-microhei, fonts-wqy-zenhei), Droid Sans Fallback (fonts-droid-fallback),
#: and those that come with macOS and Windows
CJK_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Noto Sans CJK HK", "Source Han Sans", "Source Han Sans JP", "Source Han Sans SC",
    "Source Han Sans K", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
    "Hiragino Sans", "PingFang SC", "Apple SD Gothic Neo", "Microsoft YaHei", "Yu Gothic",
    "Malgun Gothic", "SimHei", "MS Gothic",
)
#: what a PDF report says when :func:`drawable` had to write characters as code points
MISSING_NOTE = ("[U+...] is the code point of a character no installed font can draw (the "
                "HTML report shows it; for CJK, install fonts-wqy-microhei).")


@functools.cache
def fallback_families() -> tuple[str, ...]:
    """The installed fonts of :data:`CJK_FAMILIES`, in that order, one per font file.

    Asks matplotlib's font manager; when it knows none, the system's font folders are
    looked through once more, since the manager's cache (built on matplotlib's first
    use) does not see a font installed after it."""
    from matplotlib import font_manager as fm

    def installed() -> tuple[str, ...]:
        files: dict[str, str] = {}
        for entry in fm.fontManager.ttflist:
            if entry.name in CJK_FAMILIES:
                files.setdefault(entry.name, str(entry.fname))
        found, seen = [], set()
        for name in CJK_FAMILIES:
            if name in files and files[name] not in seen:
                seen.add(files[name])
                found.append(name)
        return tuple(found)

    found = installed()
    if not found:
        known = {str(f.fname) for f in fm.fontManager.ttflist}
        for path in fm.findSystemFonts():
            if path not in known:
                try:
                    fm.fontManager.addfont(path)
                except Exception:  # a file FreeType cannot read: not a font to use
                    continue
        found = installed()
    return found


def families() -> list[str]:
    """The font list for matplotlib's ``font.family`` (or a text's ``fontfamily``):
    DejaVu Sans, then the installed CJK fonts."""
    return [PRIMARY, *fallback_families()]


@functools.cache
def _font_file(family: str, weight: str, style: str) -> Any:
    """The file (a path, or matplotlib's path and face) of ``family`` in the nearest
    weight and style; None when it is not installed."""
    from matplotlib import font_manager as fm

    prop: Any = fm.FontProperties(family=family, weight=weight)
    prop.set_style(style)
    try:
        return fm.findfont(prop, fallback_to_default=False)
    except ValueError:
        return None


def _lacks(text: str, names: list[str], weight: Any = "normal", style: str = "normal"
           ) -> list[str]:
    from matplotlib import font_manager as fm

    files = [_font_file(str(n), str(weight), str(style)) for n in names]
    fonts = [fm.get_font(f) for f in files if f is not None]
    return [c for c in dict.fromkeys(str(text))
            if c != "\n" and not any(f.get_char_index(ord(c)) for f in fonts)]


def missing(text: str, prop: Any = None) -> list[str]:
    """The characters of ``text`` that no font of ``prop`` (a FontProperties; default:
    :func:`families`) has a glyph for, once each, in order (line breaks aside)."""
    if prop is None:
        return _lacks(text, families())
    return _lacks(text, [str(n) for n in prop.get_family()], prop.get_weight(),
                  prop.get_style())


def family_for(text: str, weight: Any = "normal") -> list[str]:
    """The fonts to draw ``text`` with: DejaVu Sans alone when it has every glyph (so
    that a bold heading does not look for a bold CJK font), else :func:`families`."""
    return [PRIMARY] if not _lacks(text, [PRIMARY], weight) else families()


def drawable(text: str, weight: Any = "normal") -> str:
    """``text`` with each run of characters that no font of :func:`families` can draw
    written as code points: ``患者1`` -> ``[U+60A3 U+8005]1`` where no CJK font is
    installed; ``text`` itself when every character has a glyph."""
    # the fallback fonts looked at in their regular weight: a bold one is rarely there
    # (matplotlib draws with the regular one then) and coverage is the question
    lacking = _lacks(text, [PRIMARY], weight)
    if not lacking:  # DejaVu Sans draws it all: no need to look for other fonts
        return str(text)
    lost = set(_lacks("".join(lacking), list(fallback_families())))
    if not lost:
        return str(text)
    pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(lost)) + "]+")
    return pattern.sub(lambda m: "[" + " ".join(f"U+{ord(c):04X}" for c in m.group()) + "]",
                       str(text))
