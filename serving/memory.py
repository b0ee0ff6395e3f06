"""Process memory settings: how many glibc malloc arenas the image threads may create.

glibc gives each thread that contends for malloc an arena of its own (up to 8 per core) and rarely returns their
memory: image conversion on a few threads grew a process by ~2x the memory it needed (`python -m
loadtests.convert_bench`, bulk: 211 MB of growth with glibc's default, 85 MB with two arenas, at the same speed).
Classification is unaffected (c16 over HTTP: 90-99 images/s with the cap, 90-98 without; peak RSS 1.55-1.60 GB
either way, same session). `imgserve serve` sets MALLOC_ARENA_MAX for the Ray it starts (every replica process
inherits it); `tune_malloc` caps a running process through `mallopt` (the bulk CLI commands, before their
threads exist).
IMGSERVE_MALLOC_ARENAS: the cap, a whole number (default 2; 0 leaves glibc's default); anything else is refused.

The bulk commands also fix glibc's mmap threshold (`BULK_MMAP_THRESHOLD`): by default glibc raises it to the size of
each large block it frees (up to 32 MB), so a decoded photo's buffer, once freed, sends the next ones to the heap,
where two threads' alternating photos fragment it and the process keeps its high-water mark. With a fixed threshold
every buffer of 64 KB or more is mapped and unmapped on its own: `imgserve convert` of 100 camera photos to WebP at
2048 px peaked at 138 MB instead of 185 (JPEG thumbnails 98 instead of 103) at the same speed (BENCHMARKS.md,
"Conversion"). A MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment is glibc's and is left alone.

`imgserve convert` also bounds the bytes of decoded JPEGs held at once for lossy WebP outputs
(`pipelines.convert.jpeg_fast.DECODE_BUDGET`): 16 MB a worker by default (IMGSERVE_DECODE_BUDGET_MB, the total; 0: no
bound). Two workers converting 12 MP photos to 2048-px WebP then decode one at a time (24 MB each with the frame)
while the other encodes: the peak holds one decode instead of two, and decodes are short next to encodes (100 camera
photos: 88-97 MB against 96-99 MB unbounded, same speed; BENCHMARKS.md, "WebP through libwebp's own API").
"""

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers
BULK_MMAP_THRESHOLD = 64 * 1024  # blocks this large or larger are mapped on their own, and unmapped when freed
BULK_TRIM_THRESHOLD = 128 * 1024  # free memory at the top of the heap beyond this is given back
ARENAS_ENV = "IMGSERVE_MALLOC_ARENAS"
DEFAULT_ARENAS = 2
DECODE_BUDGET_ENV = "IMGSERVE_DECODE_BUDGET_MB"
BULK_DECODE_MB_PER_WORKER = 16


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


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None  # musl and macOS have no mallopt
    except OSError:
        return None


def tune_malloc(arenas: int | None = None) -> bool:
    """Cap glibc's malloc arenas; False where there is no glibc (musl, macOS) or the cap is off."""
    arenas = arena_cap() if arenas is None else arenas
    if arenas <= 0:
        return False
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


def tune_malloc_for_bulk() -> bool:
    """`tune_malloc`, and the fixed mmap and trim thresholds of the bulk commands (module docstring), before their
    threads exist. False where the arena cap is off or there is no glibc; ValueError for a bad
    IMGSERVE_MALLOC_ARENAS."""
    if not tune_malloc():
        return False
    libc = _libc()
    assert libc is not None  # tune_malloc found it (cached)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(M_MMAP_THRESHOLD, BULK_MMAP_THRESHOLD)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        libc.mallopt(M_TRIM_THRESHOLD, BULK_TRIM_THRESHOLD)
    return True


def bound_decodes_for_bulk(workers: int) -> int:
    """Set the bulk commands' decode budget (module docstring) and return it in bytes (0: unbounded); ValueError
    naming IMGSERVE_DECODE_BUDGET_MB for anything but a whole number 0 or more."""
    from pipelines.convert.jpeg_fast import DECODE_BUDGET

    raw = os.environ.get(DECODE_BUDGET_ENV)
    if raw is not None and not raw.strip().isdecimal():
        raise ValueError(f"{DECODE_BUDGET_ENV}={raw!r}: expected a whole number of MB, 0 or more (0: no bound)")
    megabytes = int(raw) if raw is not None else BULK_DECODE_MB_PER_WORKER * max(1, workers)
    DECODE_BUDGET.limit = megabytes * 1024 * 1024
    return DECODE_BUDGET.limit
