"""Turn the values Pillow's TIFF/EXIF reader returns (str, int, IFDRational, tuples, bytes) into clean Python.

Each function returns None for anything that is not a usable value of its kind; callers decide whether
that deserves an error message.
"""

import math
from collections.abc import Mapping
from typing import Any


def first(value: Any) -> Any:
    """The first element of a multi-valued tag, the value itself otherwise."""
    if isinstance(value, tuple | list):
        return value[0] if value else None
    return value


def text(value: Any) -> str | None:
    """An EXIF ASCII value: cut at the first NUL, UTF-8 when it decodes as such, whitespace trimmed."""
    if isinstance(value, tuple | list) and value and all(isinstance(v, str) for v in value):
        value = value[0]
    if isinstance(value, str):
        # Pillow decodes ASCII tags as latin-1, so this round-trips to the original bytes.
        raw = value.encode("latin-1", errors="replace")
    elif isinstance(value, bytes):
        raw = value
    else:
        return None
    raw = raw.split(b"\x00", 1)[0]
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    decoded = " ".join(decoded.split())
    return decoded or None


def undefined(value: Any) -> bool:
    """A rational 0/0: EXIF's way of leaving a value unset (a camera that writes no seconds, no f-number)."""
    return getattr(value, "numerator", None) == 0 and getattr(value, "denominator", None) == 0


def shown(value: Any) -> str:
    """A tag value for a message: rationals as n/d (Pillow's repr of 1/0 is 'nan'), tuples item by item."""
    if isinstance(value, tuple | list):
        return "(" + ", ".join(shown(item) for item in value) + ")"
    if hasattr(value, "numerator") and hasattr(value, "denominator") and not isinstance(value, int):
        return f"{value.numerator}/{value.denominator}"
    return repr(value)


def number(value: Any) -> float | None:
    """A finite float from an int, float or rational (first element of a tuple); None for 0/0, inf, text."""
    value = first(value)
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def integer(value: Any) -> int | None:
    """An int from an integral tag value (first element of a tuple)."""
    value = first(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):  # Pillow returns BYTE tags such as GPSAltitudeRef as b"\x00"
        return value[0] if len(value) == 1 else None
    as_float = number(value)
    return int(as_float) if as_float is not None and as_float.is_integer() else None


def numbers(value: Any) -> tuple[float, ...] | None:
    """All elements of a multi-valued numeric tag as floats; None if any is unusable."""
    items = value if isinstance(value, tuple | list) else (value,)
    result = tuple(number(v) for v in items)
    if not result or any(v is None for v in result):
        return None
    return tuple(v for v in result if v is not None)


def enum_name(value: Any, names: Mapping[int, str]) -> tuple[str | None, str | None]:
    """(name, error) for an enumerated tag; an unknown code is an error, never a guess."""
    code = integer(value)
    if code is None:
        return None, None if value is None else f"not an integer: {value!r}"
    if code not in names:
        return None, f"unknown code {code}"
    return names[code], None
