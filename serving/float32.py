"""Scores at the precision models compute them in (float32), for the server's answers and the SDK's alike."""

import struct

_FLOAT32 = struct.Struct("<f")


def _as_float32(value: float) -> float:
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


def float32_score(value: float) -> float:
    """`value` rounded to float32, as its shortest decimal that reads back as the same float32: a probability of
    0.917 is 0.917, not float64's 0.9170000553131104 (digits the model never computed, 13 more bytes per score in
    every JSON answer and CSV row). A float32 has at most 9 significant digits; a decimal of 6 or fewer that reads
    back as it is what `.6g` gives (it strips the zeros), so the search starts there. Beyond float32's range (not a
    model's probability): the value itself."""
    try:
        target = _as_float32(value)
    except OverflowError:
        return float(value)
    for digits in range(6, 10):
        shortest = float(f"{target:.{digits}g}")
        if _as_float32(shortest) == target:
            return shortest
    return target  # NaN
