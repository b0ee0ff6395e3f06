"""Convert and enhance a collection's images while it is analysed (`imgserve collection analyze --convert ...
--enhance ... --suffix ... --out DEST`): batch jobs' image operations, run in the Ray Data stages.

The options, their parsing and their error messages are batch jobs' own (`serving.jobs.operations.parse_pairs` and
`operation_spec`), and so is the work: `ImageOperations` (conversion, enhancement with auto mode's "do no harm"
revert) over a stand-in for the service that answers what it asks (no quotas; the quality verdicts from the
analysis' own stages). Each output is named as a job names it (the image's name in the collection, the suffix, the
output format's extension) and written under DEST with `write_output`; the image's record keeps what the job result
keeps as `output` (the operation's summary: sizes, compression ratio, applied operations, scores; the name and URI),
or `{"error": "kind: message"}` when the operation failed; the analysis is kept either way.

DEST: a collection has no object store to keep outputs in, so they are written out as they are made. A local folder
(or `file://` URI) is the output root itself: IMGSERVE_BATCH_OUTPUT_ROOT guards a *server* against clients writing
where they like, while this command writes with its user's own rights where its user says (as `imgserve convert
--out` does); `write_output` still writes nothing outside the folder (a link out of it is refused). `s3://` / `gs://`
as jobs accept them. No output is ever written inside a source (it would overwrite originals, or be read as a new
image on the next run): DEST inside a source is refused up front, and each output is checked again.
"""

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pipelines.convert.names import output_bases, output_name
from pipelines.enhance import EnhanceOptions
from pipelines.errors import InvalidOptionError
from pipelines.limits import DecodeLimits
from pipelines.quality import QualityReport
from serving.collections.sources import is_uri
from serving.image_ops import ImageOperations
from serving.jobs.errors import ItemInputError
from serving.jobs.operations import apply_operation, operation_spec, parse_pairs
from serving.jobs.uris import write_output

NO_DESTINATION = (
    "--convert/--enhance need --out FOLDER_OR_URI: a collection has no object store to keep the outputs in (a local"
    " folder, s3:// or gs://)"
)


@dataclass(frozen=True)
class OutputPlan:
    """What to make of each image and where it goes (pickled to the Ray workers)."""

    spec: dict[str, Any]  # operation_spec's: convert, enhance (None: convert only), suffix, destination
    root: Path | None  # a local destination's folder: write_output writes nothing outside it
    protected: tuple[str, ...] = ()  # the local sources (resolved) and source URIs: no output lands inside one
    renamed: dict[str, str] = field(default_factory=dict)  # image name -> the name its output is named after

    @property
    def enhancing(self) -> bool:
        return self.spec.get("enhance") is not None

    @property
    def destination(self) -> str:
        return str(self.spec["destination"])


def _inside(target: str, protected: Sequence[str]) -> str | None:
    return next((p for p in protected if target == p or target.startswith(p.rstrip("/") + "/")), None)


def _is_remote(location: str) -> bool:
    """An fsspec URI other than `file://` (which names a local folder)."""
    return is_uri(location) and not location.lower().startswith("file:")


def _local_folder(out: str) -> Path:
    path = unquote(urlsplit(out).path) if out.lower().startswith("file:") else out
    return Path(path).expanduser().resolve()


def output_plan(
    convert: str | None,
    enhance: str | None,
    suffix: str | None,
    out: str | None,
    selected: Sequence[str],
    sources: Sequence[str],
) -> OutputPlan | None:
    """The run's outputs from the CLI's flags, checked before anything runs (the messages are batch jobs'); None
    without --convert/--enhance. Raises `InvalidOptionError` (a ValueError), `UriNotAllowedError`/`BadRequestError`
    (a refused destination) or `ValueError`."""
    convert_raw, enhance_raw = parse_pairs(convert), parse_pairs(enhance)
    if convert_raw is None and enhance_raw is None:
        if out is not None or suffix is not None:
            raise ValueError("--out and --suffix go with --convert and/or --enhance")
        return None
    spec = operation_spec([], convert_raw, enhance_raw, suffix)  # the options first: their errors name no folder
    assert spec is not None
    if spec["enhance"] is not None and EnhanceOptions.parse(**spec["enhance"]).auto and "quality" not in selected:
        raise InvalidOptionError(
            "auto enhancement reads the quality stage, which this analysis does not run: add quality to --stages"
            " or give manual options (brightness=1.2, ops=clahe, ...)"
        )
    if not out:
        raise ValueError(NO_DESTINATION)
    protected = tuple(s.rstrip("/") if _is_remote(s) else str(_local_folder(s)) for s in sources)
    root = None
    if _is_remote(out):
        destination = out.rstrip("/")
    else:
        root = _local_folder(out)
        destination = root.as_uri()
    target = str(root) if root is not None else destination
    inside = _inside(target, protected)
    if inside is not None:
        raise ValueError(
            f"--out {out} is inside the source {inside}: the outputs would overwrite originals or be read as new"
            " images on the next run; give a destination outside the sources"
        )
    spec = operation_spec([], convert_raw, enhance_raw, suffix, destination, root)
    assert spec is not None
    return OutputPlan(spec, root, protected)


def prepare_destination(plan: OutputPlan, names: Sequence[str]) -> OutputPlan:
    """The plan for these images, just before the run: a local folder is created (an unusable one fails the run now,
    not every image later), and images whose outputs would share a name get names that keep them apart
    (`output_bases`: `IMG_1.HEIC` and `IMG_1.JPG` write `IMG_1_HEIC.webp` and `IMG_1_JPG.webp`)."""
    if plan.root is not None:
        plan.root.mkdir(parents=True, exist_ok=True)
    bases = output_bases(list(enumerate(names)))
    return replace(plan, renamed={names[index]: base for index, base in bases.items()})


@dataclass(frozen=True)
class _Pipeline:
    has_quality: bool


class _WorkerService:
    """The part of `InferenceService` that `ImageOperations` calls, in a collection worker: nothing is charged (the
    command's user runs it on their own images), and the quality verdict is `assess` (the runner's own stages) or,
    for the input, the verdict its analysis already made."""

    def __init__(
        self, assess: Callable[[bytes], QualityReport] | None, data: bytes, before: QualityReport | None
    ) -> None:
        self.pipeline = _Pipeline(assess is not None)
        self.assess, self.data, self.before = assess, data, before

    async def charge(self, images: int, anonymize: bool | None = None) -> bool:
        return bool(anonymize)

    async def refund_failed(self, images: int, error: BaseException) -> None:
        return None  # nothing was charged

    async def assess_quality(self, data: bytes) -> QualityReport:
        if data is self.data and self.before is not None:
            return self.before
        assert self.assess is not None  # has_quality is False without it: ImageOperations does not ask
        return self.assess(data)


def make_output(
    plan: OutputPlan,
    data: bytes,
    name: str,
    limits: DecodeLimits,
    anonymize: bool = False,
    assess: Callable[[bytes], QualityReport] | None = None,
    before: QualityReport | None = None,
) -> dict[str, Any]:
    """Convert or enhance one image (`data`, named `name` in the collection) and write the output; returns the
    record's `output` entry. `assess`: the quality verdict of an image (enhancement; None: not served), `before`:
    the input's, already made. Raises the operation's or the write's error."""
    operations = ImageOperations(_WorkerService(assess, data, before), limits)  # type: ignore[arg-type]
    result, summary = asyncio.run(apply_operation(operations, plan.spec, data, anonymize))
    relative = output_name(plan.renamed.get(name, name), plan.spec["suffix"], result)
    if plan.root is not None:
        target = os.path.realpath(plan.root / relative)
        destination_name = quote(relative)  # a file URI's path: '#', '?' and '%' in names stay names
    else:
        target, destination_name = f"{plan.destination}/{relative}", relative
    inside = _inside(target, plan.protected)
    if inside is not None:
        raise ItemInputError("would_overwrite", f"output {relative!r} would be written inside the source {inside}")
    uri = write_output(plan.destination, destination_name, result.data, plan.root)
    return {**summary, "name": relative, "uri": uri}


def output_label(plan: OutputPlan) -> str:
    return str(plan.root) if plan.root is not None else plan.destination
