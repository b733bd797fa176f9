"""Text width on a terminal, in display cells: what aligns a column of keys.

``len`` counts code points, and bytes count more: a wide character (CJK, full-width
forms) takes two cells, a combining mark (an accent written as its own code point, as
NFD keys have) and a zero-width format character take none.
"""

from __future__ import annotations

import unicodedata


def cells(text: str) -> int:
    """The number of terminal cells ``text`` takes."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` cells (unchanged when wider)."""
    return text + " " * max(0, width - cells(text))


def rjust(text: str, width: int) -> str:
    """``text`` right-aligned in ``width`` cells (unchanged when wider)."""
    return " " * max(0, width - cells(text)) + text
