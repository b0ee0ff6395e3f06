"""Image operations as batch-job stages: `convert` and `enhance`, their options checked at submission, run per item.

A job carries `operations` = {"convert": {conversion options}, "enhance": {enhancement options} or None, "suffix":
"..."}: the same options as `/v1/convert` and `/v1/enhance` (raw values, parsed by `pipelines.convert` and
`pipelines.enhance`). Each item's output goes to the object store (content-addressed, so a re-run writes nothing
twice) and is named after the input with the suffix and the output format's extension (inputs whose outputs would
share a name are named apart: `pipelines.convert.names`); `GET /v1/jobs/{id}/outputs.zip` streams them. With a
`destination` (`output_uri`: a folder under IMGSERVE_BATCH_OUTPUT_ROOT, or s3:// / gs://) each output is also written
there under its name. The originals stay untouched in the store.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from pipelines.convert import ConvertOptions, ConvertResult
from pipelines.convert.names import output_name
from pipelines.enhance import EnhanceOptions
from pipelines.errors import InvalidOptionError
from serving.image_ops import ImageOperations, read_integer_options
from serving.jobs.objects import ObjectStore
from serving.jobs.records import ItemOutput
from serving.jobs.remote_access import RemoteAccess
from serving.jobs.uris import check_destination, write_named_output

OPERATION_STAGES = ("convert", "enhance")
DEFAULT_SUFFIX = {"convert": "", "enhance": "_enhanced"}
_SUFFIX = re.compile(r"^[A-Za-z0-9._-]{0,64}$")


def parse_pairs(text: str | None) -> dict[str, str] | None:
    """`format=webp,quality=80` (a query parameter) -> {"format": "webp", "quality": "80"}; None stays None. An item
    without `=` continues the value before it (a list: `ops=clahe,sharpen,brightness=1.2` -> ops "clahe,sharpen");
    a key given twice is an error (the last one used to win silently)."""
    if text is None:
        return None
    pairs: dict[str, str] = {}
    last: str | None = None
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            if last is None:
                raise InvalidOptionError(f"option {item!r}: expected key=value (e.g. format=webp,quality=80)")
            pairs[last] += "," + item.strip()
            continue
        last = key.strip()
        if last in pairs:
            raise InvalidOptionError(f"option {last!r} is given twice")
        pairs[last] = value.strip()
    return pairs


def operation_spec(
    stages: list[str],
    convert: dict[str, Any] | None,
    enhance: dict[str, Any] | None,
    suffix: str | None,
    destination: str | None = None,
    output_root: Path | None = None,
    remote: RemoteAccess | None = None,
) -> dict[str, Any] | None:
    """The job's `operations`, checked (400 on a bad option, 403 on a destination this server may not write), or
    None when the job runs no image operation. `destination`: a folder URI the outputs are also written to (`remote`:
    the s3:// / gs:// locations the tenant may write; None: any)."""
    enhancing = "enhance" in stages or enhance is not None
    if not enhancing and "convert" not in stages and convert is None:
        given = [name for name, value in (("output_suffix", suffix), ("output_uri", destination)) if value is not None]
        if given:  # else the job would run and write nothing where the caller expects its outputs
            raise InvalidOptionError(
                f"{' and '.join(given)}: this job makes no outputs (add stages=convert, convert=... or enhance=...)"
            )
        return None
    convert = read_integer_options(convert or {})  # stored as read: 80.0 is 80, as on /v1/convert
    ConvertOptions.parse(**convert)
    enhance_options = dict(enhance or {}) if enhancing else None
    if enhance_options is not None:
        EnhanceOptions.parse(**enhance_options)
    suffix = DEFAULT_SUFFIX["enhance" if enhancing else "convert"] if suffix is None else suffix
    if not _SUFFIX.fullmatch(suffix):
        raise InvalidOptionError(f"output_suffix={suffix!r}: up to 64 letters, digits, '.', '_' or '-'")
    spec: dict[str, Any] = {"convert": convert, "enhance": enhance_options, "suffix": suffix}
    if destination:
        spec["destination"] = check_destination(destination, output_root, remote)
    return spec


async def apply_operation(
    operations: ImageOperations, spec: dict[str, Any], data: bytes, anonymize: bool
) -> tuple[ConvertResult, dict[str, Any]]:
    """The operation `spec` names (enhance, else convert) on one image: (the output, its summary)."""
    convert = ConvertOptions.parse(**spec["convert"])
    if anonymize:
        convert = replace(convert, anonymize=True)
    if spec.get("enhance") is not None:
        outcome = await operations.enhance(data, EnhanceOptions.parse(**spec["enhance"]), convert)
        return outcome.result, outcome.summary()
    result = await operations.convert(data, convert)
    return result, result.summary()


async def run_operations(
    operations: ImageOperations,
    objects: ObjectStore,
    spec: dict[str, Any],
    data: bytes,
    item_name: str,
    anonymize: bool,
    output_root: Path | None = None,
    remote: RemoteAccess | None = None,
    before_writing: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], ItemOutput]:
    """Run the job's operation on one item and store the output: (the result document's "output", the output).
    `before_writing`: awaited once the output is made, before anything is written (it raises to write nothing:
    the job was purged meanwhile)."""
    result, summary = await apply_operation(operations, spec, data, anonymize)
    if before_writing is not None:
        await before_writing()
    digest = await asyncio.to_thread(objects.put, result.data)
    name = output_name(item_name, spec["suffix"], result)
    ensure_stored = partial(_ensure_stored, objects, digest, result.data)
    output = ItemOutput(digest, name, result.input_bytes, result.output_bytes, ensure_stored)
    document = {**summary, "name": name, "object": digest}
    if spec.get("destination"):
        document["uri"] = await asyncio.to_thread(
            write_named_output, spec["destination"], name, result.data, output_root, remote
        )
    return document, output


def _ensure_stored(objects: ObjectStore, digest: str, data: bytes) -> None:
    """The item's output stored again if a deleter removed it since `run_operations` stored it (one HEAD or stat)."""
    if objects.missing([digest]):
        objects.store_again(data)
