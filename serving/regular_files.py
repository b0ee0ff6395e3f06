"""Opening a local file a client named (a batch item, a training image, a collection's file) for reading, safely.

A client may point at something that is not a regular file: opening a FIFO waits for a writer forever (a worker
thread lost for good), a device never ends, and a folder's descriptor opened as a file reports its number as the
file's name. `open_regular_file` opens without blocking and refuses all of them with a message that names the path.
"""

import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO


class NotARegularFileError(OSError):
    """The path is a folder, FIFO, socket or device."""


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (after links), False for anything else or nothing at all."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_regular_file(path: str | Path, *, follow_links: bool = True) -> BinaryIO:
    """`path` opened for binary reading; NotARegularFileError unless it is a regular file, and, with
    `follow_links=False`, OSError when its last part is a link. O_NONBLOCK has no effect on a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotARegularFileError(f"{str(path)!r} is {what}")
    return os.fdopen(fd, "rb")


def write_file_atomically(target: Path, data: bytes) -> None:
    """Write `data` as `target` by a temporary file beside it renamed into place: a reader (or a run cut short by
    Ctrl-C or a full disk) sees the old file or the whole new one, never a part; the temporary file goes on failure."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
