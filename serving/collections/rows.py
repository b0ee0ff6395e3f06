"""One image as a collection records it (`RecordedImage`) and its `collection_images` row, both ways; what the row
says of the file it was read from (`RecordedFile`, for `collection analyze --refresh` and `--prune`).

A row's `created_at` is a time at or before its file was read: the start of the run that recorded it (or of the
`--refresh` that read the file again and found the same sha256; when it was recorded, for an image saved from a
batch job, which no refresh reads). A file whose change time is later was changed after its analysis read it.
"""

from dataclasses import dataclass
from typing import Any

from pipelines.collections.record import ImageRecord
from serving.collections.storable import finite_json, storable_taken_at, storable_text

RECORD_COLUMNS = tuple(f for f in ImageRecord.__dataclass_fields__ if f not in ("tags", "class_probs"))


@dataclass(frozen=True)
class RecordedImage:
    """One analysed image as stored: its record, its analysis document (None when it failed) and where it was read."""

    record: ImageRecord
    document: dict[str, Any] | None = None
    location: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class RecordedFile:
    """What a collection's row says of the file behind one image: where it was read, its size and sha256 (None when
    it failed, or without the metadata stage) and `read_since`, a time at or before it was read (`created_at`)."""

    name: str
    ok: bool
    location: str | None
    member: str | None
    size_bytes: int | None
    sha256: str | None
    read_since: float


def record_row(collection_id: str, image: RecordedImage, read_since: float) -> dict[str, Any]:
    """The image's row, as every store can hold it: text without lone surrogates, None for NaN and infinities;
    `read_since` (its `created_at`): a time at or before its file was read."""
    record, document = image.record, image.document
    row = {name: _storable(getattr(record, name)) for name in RECORD_COLUMNS}
    row.update(
        collection_id=collection_id,
        location=_storable(image.location),
        member=_storable(image.member) or None,
        taken_at=storable_taken_at(record.taken_at),  # one ISO form that fits the column, whatever made the document
        tags="," + "".join(f"{storable_text(tag)}," for tag in record.tags),
        class_probs=finite_json([list(pair) for pair in record.class_probs]) or None,
        document=finite_json(document),
        created_at=read_since,
    )
    return row


def _storable(value: Any) -> Any:
    return storable_text(value) if isinstance(value, str) else finite_json(value)


def row_record(row: Any) -> ImageRecord:
    # a NaN or infinite number stored before they were refused (PostgreSQL and SQLite keep them) is no value: the
    # report's score histogram and location clusters raised on one (a 500 for the whole report)
    values = {name: finite_json(getattr(row, name)) for name in RECORD_COLUMNS}
    tags = tuple(t for t in (row.tags or "").split(",") if t)
    # A probability stored as null (NaN/infinity: `finite_json`) is left out: float(None) made every read of the
    # collection (listing, export, report) fail for one image's output.
    probs = tuple((int(i), float(p)) for i, p in row.class_probs or () if p is not None)
    return ImageRecord(**values, tags=tags, class_probs=probs)
