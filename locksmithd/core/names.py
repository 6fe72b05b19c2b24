"""The one rule for holder ids and group names, and safe display of untrusted text."""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 256
"""Longest holder id or group name accepted (machine ids are 32 characters)."""

MAX_SHOWN_CHARS = 100
"""How much of a bad value an error message echoes."""

# _IS_PRINTABLE_ENOUGH: str.isprintable() is False for every character of the
# categories C* (control, format, surrogate, private use, unassigned), Zl, Zp
# and Zs except the ASCII space, and every whitespace character is one of
# those. So a string it accepts has nothing to escape, and one that also has
# no space breaks no naming rule: the fast paths below skip the per-character
# checks only then (tests/test_names.py compares both on every code point).


def name_problem(value: object, what: str = "holder id") -> str | None:
    """Why ``value`` is not a valid holder id or group name, or None when it is.

    The rule, applied wherever a name enters (command line, machine-id file,
    environment, documents and keys read from etcd, FleetLock requests): a
    non-empty string of at most 256 characters, valid Unicode (no lone
    surrogates, which is how Python carries bytes that are not UTF-8), with no
    whitespace and no control or format characters. Such a name prints as one
    token on one line, in logs, JSON, etcd keys and terminals.
    """
    if not isinstance(value, str):
        return f"{what} is a {type(value).__name__}, not a string"
    if value == "":
        return f"{what} is empty"
    if len(value) > MAX_NAME_CHARS:
        return f"{what} is longer than {MAX_NAME_CHARS} characters"
    if value.isprintable() and " " not in value:
        return None  # the common case in one C call; see _IS_PRINTABLE_ENOUGH
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            return f"{what} is not valid UTF-8"
        if char.isspace() or category.startswith("C") or category in ("Zl", "Zp"):
            return f"{what} contains whitespace or control character {ascii(char)}"
    return None


def group_problem(value: str) -> str | None:
    """Why ``value`` is not a valid group name ("" is locksmith's default group), or None."""
    return None if value == "" else name_problem(value, "group name")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` made safe for one line of a terminal or log: control characters escaped.

    Every control, format, separator or surrogate character becomes a visible
    escape (``\\n``, ``\\x1b``, ``\\udcff``), so untrusted strings from etcd or
    D-Bus can neither add lines nor send terminal sequences. With ``limit``
    the result is cut to about that many characters, ending in "...".
    """
    # The common case in one C call; see _IS_PRINTABLE_ENOUGH.
    shown = text if text.isprintable() else "".join(_escaped(char) for char in text)
    if limit is not None and len(shown) > limit:
        shown = shown[: max(limit - 3, 0)] + "..."
    return shown


def _escaped(char: str) -> str:
    """``char``, or its escape when it is a control, format, separator, surrogate or non-space whitespace."""
    category = unicodedata.category(char)
    if category.startswith("C") or category in ("Zl", "Zp") or (char.isspace() and char != " "):
        return ascii(char)[1:-1]
    return char


def shown_value(value: object) -> str:
    """A bad value quoted for an error message: escaped, at most ~100 characters."""
    if isinstance(value, str):
        if any(unicodedata.category(c) == "Cs" for c in value):
            return "(not valid UTF-8)"
        return f"'{printable(value, MAX_SHOWN_CHARS)}'"  # printable already escaped it: no repr on top
    return printable(repr(value), MAX_SHOWN_CHARS)
