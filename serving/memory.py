"""Process memory settings: how many glibc malloc arenas the image threads may create.

glibc gives each thread that contends for malloc an arena of its own (up to 8 per core) and rarely returns their
memory: image conversion on a few threads grew a process by ~2x the memory it needed (`python -m
loadtests.convert_bench`, bulk: 211 MB of growth with glibc's default, 85 MB with two arenas, at the same speed).
Classification is unaffected (c16 over HTTP: 90-99 images/s with the cap, 90-98 without; peak RSS 1.55-1.60 GB
either way, same session). `imgserve serve` sets MALLOC_ARENA_MAX for the Ray it starts (every replica process
inherits it); `tune_malloc` caps a running process through `mallopt` (the bulk CLI commands, before their
threads exist).
IMGSERVE_MALLOC_ARENAS: the cap, a whole number (default 2; 0 leaves glibc's default); anything else is refused.
"""

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS_ENV = "IMGSERVE_MALLOC_ARENAS"
DEFAULT_ARENAS = 2


def arena_cap() -> int:
    """IMGSERVE_MALLOC_ARENAS (default 2; 0: glibc's own default); ValueError naming it for anything but a whole
    number 0 or more (`imgserve serve` refuses to start with it)."""
    raw = os.environ.get(ARENAS_ENV)
    if raw is None:
        return DEFAULT_ARENAS
    text = raw.strip()
    if not text.isdecimal():  # no sign: a negative cap meant glibc's default without saying so
        raise ValueError(f"{ARENAS_ENV}={raw!r}: expected a whole number of arenas, 0 or more (0: glibc's default)")
    return int(text)


def tune_malloc(arenas: int | None = None) -> bool:
    """Cap glibc's malloc arenas; False where there is no glibc (musl, macOS) or the cap is off."""
    arenas = arena_cap() if arenas is None else arenas
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
