"""Values as every job database (SQLite, PostgreSQL), Ray Data's Arrow blocks and strict JSON readers can hold them.

A file name that is not UTF-8 (old cameras, Windows shares, old zips) reaches Python as a str with surrogate escapes
(os.walk, os.listdir), which no UTF-8 column or Arrow string accepts. Its display name is stored with U+FFFD, as tar
names are read (`serving.jobs.archives.TAR_NAMES`); where the file is read from is stored reversibly
(`storable_location`), so the run reads it and a report shows it later. NaN and infinities are not JSON: documents
are stored and answered with None in their place.
"""

import math
import os
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

# A local path that is not UTF-8, as its bytes percent-encoded: "fsbytes:///photos/caf%E9.jpg"
RAW_PATH_PREFIX = "fsbytes://"


def storable_text(text: str) -> str:
    """`text` as UTF-8 can hold it: bytes escaped as surrogates (a name that is not UTF-8) become U+FFFD, as
    `bytes.decode("utf-8", "replace")` makes them; any other lone surrogate becomes '?'. Valid text is unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF: not an escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


def storable_location(path: str) -> str:
    """A local path as a location text columns and Arrow hold: itself when it is valid text, else its file-system
    bytes percent-encoded after `RAW_PATH_PREFIX` (read back by `local_path`)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return RAW_PATH_PREFIX + quote_from_bytes(os.fsencode(path), safe="/")


def local_path(location: str) -> str | None:
    """The local path a `storable_location` of a path that is not UTF-8 names; None for any other location."""
    if not location.startswith(RAW_PATH_PREFIX):
        return None
    return os.fsdecode(unquote_to_bytes(location.removeprefix(RAW_PATH_PREFIX)))


def finite_json(value: Any) -> Any:
    """`value` (JSON-ready: dicts, lists, tuples, scalars) with every NaN or infinite float as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value
