"""A collection's images as CSV (the filterable columns) or JSONL (each record with its analysis document): the
"filter my dataset before training" export, streamed a page at a time."""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict

from serving.collections.filters import ImageFilter
from serving.collections.rows import RECORD_COLUMNS
from serving.collections.storable import finite_json
from serving.collections.store import CollectionStore
from serving.spreadsheet import safe_cell

CSV_COLUMNS = (*RECORD_COLUMNS, "tags", "location", "member")


def csv_lines(store: CollectionStore, collection_id: str, where: ImageFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for image in store.iter_images(collection_id, where, documents=False):
        values = [getattr(image.record, name) for name in RECORD_COLUMNS]
        values += [";".join(image.record.tags), image.location, image.member]
        writer.writerow([safe_cell(v) for v in values])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_lines(store: CollectionStore, collection_id: str, where: ImageFilter) -> Iterator[str]:
    for image in store.iter_images(collection_id, where):
        record = asdict(image.record)
        record["class_probs"] = [list(pair) for pair in image.record.class_probs]
        line = {**record, "location": image.location, "member": image.member, "analysis": image.document}
        yield json.dumps(finite_json(line), allow_nan=False) + "\n"  # strict JSON: NaN/Infinity are no JSON
