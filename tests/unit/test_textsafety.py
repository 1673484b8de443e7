"""Neutralising stored text for terminals and spreadsheets."""

from __future__ import annotations

import pytest

from auditlog_service.textsafety import spreadsheet_safe, terminal_safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("red \x1b[31malert", "red \\x1b[31malert"),
        ("bell\x07", "bell\\x07"),
        ("over\rwrite", "over\\x0dwrite"),
        ("nul\x00", "nul\\x00"),
        ("csi \x9b2J", "csi \\x9b2J"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("line\u2028break", "line\\u2028break"),
        ("two\nlines", "two\\nlines"),
        ("tab\tkept", "tab\tkept"),
        ("שלום עולם", "שלום עולם"),
    ],
)
def test_terminal_safe_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown


def test_terminal_safe_can_keep_line_breaks() -> None:
    assert terminal_safe("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_spreadsheet_safe_defuses_formulas(cell: str, safe: str) -> None:
    assert spreadsheet_safe(cell) == safe
