"""A zip of a job's outputs, written as it is sent: no temporary file, memory bounded by one output at a time.

Python's `zipfile` writes to a stream that cannot seek by putting each entry's sizes in a data descriptor after its
data; `_Chunks` is that stream, emptied after every entry. Outputs are named apart when the job runs
(`pipelines.convert.names.output_bases`); should two names still match, the second gets its item index in front of it.
An output that can no longer be read (the job purged between a page of names and its bytes, a damaged store) is left
out with a warning: the archive already sent cannot be taken back, and the rest is still delivered.
"""

import asyncio
import logging
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable

from serving.jobs.errors import ItemInputError
from serving.jobs.objects import ObjectStore

logger = logging.getLogger("imgserve.jobs")

Page = Callable[[int], Awaitable[list[tuple[int, str, str]]]]  # after index -> [(index, name, digest)]


class _Chunks:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


async def zip_stream(pages: Page, objects: ObjectStore) -> AsyncIterator[bytes]:
    sink = _Chunks()
    names: set[str] = set()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[arg-type]
        after = -1
        while rows := await pages(after):
            for index, name, digest in rows:
                try:
                    data = await asyncio.to_thread(objects.get, digest)
                except ItemInputError as exc:
                    logger.warning("outputs.zip: %s left out: %s", name, exc.message)
                    continue
                entry = name if name not in names else f"{index}_{name}"
                names.add(entry)
                archive.writestr(zipfile.ZipInfo(entry, date_time=stamp), data)  # type: ignore[arg-type]
                yield sink.take()
            after = rows[-1][0]
    yield sink.take()
