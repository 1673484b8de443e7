"""Neutralising stored text for the places that show it: terminals and spreadsheets."""

from __future__ import annotations

import re
import unicodedata

# Everything a terminal may act on or that reorders or hides what follows: C0, DEL, C1, and the
# Unicode format characters (bidi overrides and isolates, zero-width characters) and separators.
_UNSAFE_ASCII = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# A spreadsheet treats a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control, format and separator character shown as an escape.

    Tab stays; newlines stay only when asked (a table row must stay one line).
    """
    if text.isascii():
        escaped = _UNSAFE_ASCII.sub(lambda m: _escape(m.group()), text)
        return escaped if keep_newlines else escaped.replace("\n", "\\n")
    out = []
    for char in text:
        if char == "\n":
            out.append(char if keep_newlines else "\\n")
        elif char != "\t" and unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula: a leading quote marks it as text."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
