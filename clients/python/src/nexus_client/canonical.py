"""Canonical JSON: RFC 8785 (JCS) restricted to integers in the i53 range (spec/README.md).

:func:`parse_json` reads JSON text keeping what canonicalisation must see (a number with a
fraction, an exponent, or ``-0`` becomes a :class:`NonInteger`, never a rounded float);
:func:`canonical_bytes` encodes a value canonically or raises :class:`WireError`
(``not_an_integer``, ``out_of_range``, ``too_deep``, ``invalid_json``).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from .errors import WireError

MAX_SAFE_INTEGER = 2**53 - 1

JsonValue = Any
"""A JSON value as this package holds it: ``None``, ``bool``, ``int``, ``str``, ``list``,
``dict`` with ``str`` keys (and :class:`NonInteger` for a refused number literal)."""


class NonInteger:
    """A JSON number literal that is not an integer (fraction, exponent or ``-0``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"NonInteger({self.text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NonInteger) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _parse_int(text: str) -> int | NonInteger:
    # Python's json hands integer literals to parse_int, "-0" among them: not an integer
    # neXus accepts.
    return NonInteger(text) if text == "-0" else int(text)


def _refuse_constant(text: str) -> NoReturn:
    raise WireError("invalid_json", f"{text} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise WireError("invalid_json", f"duplicate member name {k!r}")
        obj[k] = v
    return obj


def parse_json(text: str | bytes) -> JsonValue:
    """Parses JSON text; fractions, exponents and ``-0`` become :class:`NonInteger`,
    ``NaN``/``Infinity`` and repeated member names are refused (``invalid_json``)."""
    try:
        return json.loads(
            text,
            parse_float=NonInteger,
            parse_int=_parse_int,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WireError("invalid_json", str(e)) from None


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _canon_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # everything else literal, including / U+007F U+2028
    out.append('"')
    return "".join(out)


def _utf16_key(s: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the sequence of UTF-16 code units.
    return s.encode("utf-16-be", "surrogatepass")


def _canon(value: JsonValue, max_depth: int | None, depth: int) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, NonInteger):
        raise WireError("not_an_integer", value.text)
    if type(value) is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise WireError("out_of_range", str(value))
        return str(value)
    if isinstance(value, float):
        raise WireError("not_an_integer", repr(value))
    if isinstance(value, str):
        return _canon_str(value)
    if isinstance(value, (list, tuple, dict)):
        if max_depth is not None and depth >= max_depth:
            raise WireError("too_deep", f"deeper than {max_depth}")
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, str):
                    raise WireError("malformed", f"object member names must be strings, got {k!r}")
            members = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
            return "{" + ",".join(_canon_str(k) + ":" + _canon(v, max_depth, depth + 1) for k, v in members) + "}"
        return "[" + ",".join(_canon(v, max_depth, depth + 1) for v in value) + "]"
    raise WireError("malformed", f"not a JSON value: {value!r} ({type(value).__name__})")


def canonical_bytes(value: JsonValue, max_depth: int | None = None) -> bytes:
    """The canonical encoding of ``value`` as UTF-8 bytes. ``max_depth`` bounds the
    nesting of arrays and objects (``too_deep`` past it)."""
    try:
        return _canon(value, max_depth, 0).encode("utf-8")
    except UnicodeEncodeError:
        raise WireError("invalid_json", "lone surrogate in a string") from None


def canonical_text(value: JsonValue, max_depth: int | None = None) -> str:
    """:func:`canonical_bytes` as a ``str``."""
    return canonical_bytes(value, max_depth).decode("utf-8")
