"""Inputs of a batch request -> job items: uploads and archive entries go to the object store by hash,
URIs are checked against the allow-list and kept as URIs (read when the item runs). Uploads and archive entries with a
hidden or system name (`._x.jpg`, `@eaDir/...`, `.DS_Store`, `__MACOSX/...`: `archives.is_skipped_entry`, the rule
datasets and collections list by) become no item.

Blocking (file reads, hashing, store writes): call through `asyncio.to_thread`.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from serving.errors import BadRequestError
from serving.jobs.archives import ArchiveLimits, ExpansionBudget, is_skipped_entry, read_archive
from serving.jobs.errors import JobStoreUnavailableError
from serving.jobs.objects import ObjectStore
from serving.jobs.records import NewItem
from serving.jobs.settings import JobSettings
from serving.jobs.uris import check_uri

MAX_NAME = 1024


@dataclass(frozen=True)
class InputPart:
    """One input of a request, in request order: an image file, an archive of images, or a URI."""

    kind: Literal["image", "archive", "uri"]
    name: str
    file: BinaryIO | None = None


def item_name(name: str) -> str:
    """An upload's or archive entry's name as its item keeps it: at most `MAX_NAME` characters, a NUL shown as U+FFFD
    (PostgreSQL's text holds no NUL: an upload named `a\\x00b.jpg` failed the whole submission there)."""
    return name[:MAX_NAME].replace("\x00", "\ufffd")


def _failed(name: str, kind: str, message: str) -> NewItem:
    return NewItem(item_name(name), "none", "", None, kind, message)


def _stored(objects: ObjectStore, name: str, data: bytes) -> NewItem:
    return NewItem(item_name(name), "object", objects.put(data), len(data))


def refuse_only_hidden_uploads(parts: Sequence[InputPart], items: Sequence[NewItem]) -> None:
    """A 400 that names why a request of nothing but hidden-named uploads (`-F image=@.x.jpg`) has no input, instead
    of "the batch has no inputs" after the file was sent."""
    hidden = [part.name for part in parts if part.kind == "image" and is_skipped_entry(part.name)]
    if hidden and not items:
        raise BadRequestError(
            f"{hidden[0][:200]!r}{f' and {len(hidden) - 1} more' if len(hidden) > 1 else ''}: hidden or system names"
            " (starting with '.' or '@', or under __MACOSX/) are left out of batches, as folder walks leave them out;"
            " rename the file to send it"
        )


class Intake:
    def __init__(self, objects: ObjectStore, settings: JobSettings, tenant: str):
        self.objects, self.settings = objects, settings
        self.allowed_root, self.remote = settings.read_root(tenant), settings.remote_access(tenant)
        self.limits = ArchiveLimits(
            max_entries=settings.max_items,
            max_total_bytes=settings.max_archive_bytes,
            max_entry_bytes=settings.max_image_bytes,
            max_ratio=settings.max_compression_ratio,
        )

    def check(self, parts: Sequence[InputPart]) -> None:
        """Request-level checks before anything is stored: every URI must be allowed (else 403/400): file:// under
        the tenant's root, s3:// / gs:// under its allowed prefixes."""
        for part in parts:
            if part.kind == "uri":
                check_uri(part.name, self.allowed_root, self.remote)

    def items(self, parts: Sequence[InputPart]) -> list[NewItem]:
        self.check(parts)
        items: list[NewItem] = []
        expansion = ExpansionBudget(self.settings.max_request_archive_bytes)
        for part in parts:
            if part.kind == "uri":
                items.append(NewItem(part.name[:MAX_NAME], "uri", part.name))
            elif part.kind == "image":
                if not is_skipped_entry(part.name):  # a client's folder walk sends `birds/._x.jpg` as it found it
                    items.append(self._image(part))
            else:
                items.extend(self._archive(part, expansion))
        return items

    def ensure_stored(self, parts: Sequence[InputPart], digests: Sequence[str]) -> None:
        """Each object `items(parts)` stored, checked in the store (a HEAD or stat each), and the bytes of those a
        deleter removed since stored again, read again from the request's files (rare: a purge or the orphan sweep
        deleted them between the intake and its rows). Called under the digests' locks as the items are written
        (serving.jobs.objects.hold_objects)."""
        missing = self.objects.missing(digests)
        for part in parts:
            if not missing:
                return
            if part.file is None:
                continue
            part.file.seek(0)
            entries: Iterable[bytes]
            if part.kind == "image":
                entries = [part.file.read(self.settings.max_image_bytes + 1)]
            else:
                budget = ExpansionBudget(self.settings.max_request_archive_bytes)
                entries = (entry.data for entry in read_archive(part.file, self.limits, budget) if entry.data)
            for data in entries:
                if hashlib.sha256(data).hexdigest() in missing:
                    missing.discard(self.objects.store_again(data))
        if missing:  # not found in the request again: its rows would name objects that are gone
            raise JobStoreUnavailableError(
                f"{len(missing)} stored inputs of this request were removed while it was taken in; send it again"
            )

    def _image(self, part: InputPart) -> NewItem:
        assert part.file is not None
        limit = self.settings.max_image_bytes
        data = part.file.read(limit + 1)
        if len(data) > limit:
            return _failed(part.name, "too_large", f"{part.name!r} is larger than {limit} bytes")
        return _stored(self.objects, part.name, data)

    def _archive(self, part: InputPart, expansion: ExpansionBudget) -> list[NewItem]:
        assert part.file is not None
        items = []
        for entry in read_archive(part.file, self.limits, expansion):
            name = f"{part.name}/{entry.name}" if part.name else entry.name
            if entry.error is not None or entry.data is None:
                kind = entry.error.kind if entry.error else "invalid_input"
                items.append(_failed(name, kind, str(entry.error or "empty entry")))
            else:
                items.append(_stored(self.objects, name, entry.data))
        return items
