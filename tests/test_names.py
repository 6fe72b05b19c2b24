"""The naming rule and printable(): their one-call fast paths agree with the per-character rule."""

from __future__ import annotations

import sys
import unicodedata

from locksmithd.core.names import name_problem, printable


def refused_in_a_name(char: str) -> bool:
    """The per-character naming rule, as name_problem states it."""
    category = unicodedata.category(char)
    return char.isspace() or category.startswith("C") or category in ("Zl", "Zp")


def escaped_by_printable(char: str) -> bool:
    """The per-character escaping rule, as printable() states it."""
    category = unicodedata.category(char)
    return category.startswith("C") or category in ("Zl", "Zp") or (char.isspace() and char != " ")


def test_isprintable_never_lets_through_what_the_rules_refuse() -> None:
    """On every code point: str.isprintable() (the fast paths' test) accepts nothing the slow rules catch."""
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if char.isprintable():
            assert not escaped_by_printable(char), hex(point)
            assert char == " " or not refused_in_a_name(char), hex(point)


def test_names_fast_and_slow_paths_agree() -> None:
    """Plain ids pass; a space, control, format, separator or surrogate anywhere is named."""
    assert name_problem("0123456789abcdef0123456789abcdef") is None
    assert name_problem("host-1.example_com~x") is None
    assert name_problem("é-ünïcödé-名前") is None
    assert name_problem("a b") == "holder id contains whitespace or control character ' '"
    assert name_problem("a\u00a0b") == "holder id contains whitespace or control character '\\xa0'"
    assert name_problem("a\u200bb") == "holder id contains whitespace or control character '\\u200b'"
    assert name_problem("a\u2028b") == "holder id contains whitespace or control character '\\u2028'"
    assert name_problem("a\udcffb") == "holder id is not valid UTF-8"
    assert name_problem("x" * 257) == "holder id is longer than 256 characters"


def test_printable_escapes_only_what_it_must() -> None:
    """Printable text comes back as is (spaces kept); everything else is escaped, and the limit cuts."""
    assert printable("2026-12-01T12:00:00.000+00:00 ok") == "2026-12-01T12:00:00.000+00:00 ok"
    assert printable("a\nb\x1b[31m\u2028\udcff\t") == "a\\nb\\x1b[31m\\u2028\\udcff\\t"
    assert printable("abcdefghij", 6) == "abc..."
    assert printable("a\nbcdefghij", 6) == "a\\n..."
