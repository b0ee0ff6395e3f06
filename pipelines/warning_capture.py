"""Warnings captured per thread: what `warnings.catch_warnings(record=True)` is used for, safe with several threads.

`catch_warnings` swaps process-wide state (the filter list and where warnings go) on entry and puts back what it
saw on exit, so two threads interleaving leave one thread's state behind for good (the Python docs call it not
thread-safe). The stage threads decode and read metadata side by side; measured before this module: after a few
hundred photos through six threads, every later warning of the replica went into a stale per-image list forever
(unbounded memory, warnings never shown), and the filter list kept an extra entry.

Here one dispatcher replaces `warnings.showwarning` (the documented hook) and sends a warning to the list of the
thread that is capturing, else on to whatever showed warnings before. A filter appended last makes warnings that no
other filter claims reach the dispatcher every time ("always", so the second photo with the same corrupt EXIF
still gets its message), and the dispatcher shows an uncaptured one once per text and place, which is what the
default action does. Filters set by the application or a test runner come first and still win.
"""

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()
_lock = threading.Lock()
_passed_on: set[tuple[str, type, str, int]] = set()  # uncaptured warnings shown once already
_PASSED_ON_LIMIT = 10_000
_ALWAYS = ("always", None, Warning, None, 0)
ShowWarning = Callable[..., None]
_previous: ShowWarning = warnings.showwarning


def _dispatch(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sink: list[warnings.WarningMessage] | None = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
        return
    key = (str(message), category, filename, lineno)
    if key in _passed_on:
        return
    if len(_passed_on) < _PASSED_ON_LIMIT:
        _passed_on.add(key)
    _previous(message, category, filename, lineno, file, line)


def _ensure_installed() -> None:
    """Install the dispatcher and the closing "always" filter, again if something (a test runner's own
    `catch_warnings`) put other ones in place since."""
    global _previous
    if warnings.showwarning is _dispatch and _ALWAYS in warnings.filters:
        return
    with _lock:
        if warnings.showwarning is not _dispatch:
            _previous = warnings.showwarning
            warnings.showwarning = _dispatch
        if _ALWAYS not in warnings.filters:
            warnings.filterwarnings("always", append=True)


@contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised by this thread inside the block (other threads' warnings are not in it)."""
    _ensure_installed()
    outer = getattr(_local, "sink", None)
    caught: list[warnings.WarningMessage] = []
    _local.sink = caught
    try:
        yield caught
    finally:
        _local.sink = outer
