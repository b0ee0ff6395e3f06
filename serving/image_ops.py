"""Image operations (conversion, enhancement) as the HTTP routes, gRPC and batch jobs call them.

The pixel work (`pipelines.convert`, `pipelines.enhance`) runs on the stages' own threads in the replica that
received the request; enhancement asks the quality stage (wherever the placement runs it) for the verdict of the
input, which auto mode reads, and of the output, so a caller sees what the change did.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar, get_type_hints

from pydantic import TypeAdapter, ValidationError

from pipelines.convert import ConvertOptions, ConvertResult, convert_image
from pipelines.enhance import EnhanceOptions, should_revert, without_auto
from pipelines.enhance.image import enhance_image
from pipelines.enhance.plan import MANUAL_FACTORS, auto_step
from pipelines.errors import ImageTooLargeError, InvalidOptionError
from pipelines.limits import DecodeLimits
from pipelines.quality import QualityReport
from serving.admission import REPLICA_LIMIT
from serving.errors import ModelUnavailableError
from serving.metrics import ENHANCEMENT_STEPS, IMAGE_OPERATION_BYTES, STAGE_LATENCY
from serving.refunds import refunded_on_server_error
from serving.service import InferenceService
from serving.stages.concurrency import stage_thread

T = TypeVar("T")

REPORT_FORMS = ("image", "json")  # HTTP's answer: the image with X-Imgserve-* headers, or JSON with it as base64
ENHANCE_OPTION_NAMES = ("auto", "ops", *MANUAL_FACTORS)
CONVERT_OPTION_NAMES = tuple(f.name for f in fields(ConvertOptions))
# The conversion options typed as integers (`quality: int | None` ...): their values are read the way pydantic
# reads an integer, whatever carried them (HTTP's query as text, a JSON body, gRPC's text map), so "80.0" (or 80.0
# in JSON) is 80 everywhere and "80.5" is refused everywhere.
INTEGER_OPTIONS = frozenset(name for name, hint in get_type_hints(ConvertOptions).items() if hint in (int, int | None))
_INTEGER: TypeAdapter[int] = TypeAdapter(int)
# One rule for an empty option value, whichever transport carried it: empty ("", or a JSON null) means the option
# was not given and its default applies. `?quality=` (what an HTML form sends for a field left blank), a JSON body's
# `{"quality": ""}` and gRPC's `options["quality"] = ""` are all the same request as no quality at all; HTTP's typed
# query parameters refused `?quality=` with a 400 that the other two did not (`serving.http.operation_routes`
# reads its query through `not_given`); `ConvertOptions.parse` and `EnhanceOptions.parse` skip such values. A name
# that is no option is refused whatever its value (`?bogus=`, `{"bogus": ""}`, `{"bogus": null}`).
EMPTY_OPTION_VALUES = (None, "")


def not_given(value: Any) -> bool:
    """Whether an option's value means "not given" (`EMPTY_OPTION_VALUES`): a bool or number is always given."""
    return isinstance(value, str | None) and value in EMPTY_OPTION_VALUES


def _integer(value: Any) -> Any:
    """`value` as HTTP's typed query parameter reads it; left as it is (for `ConvertOptions.parse` to refuse with
    its own message) when it is no integer."""
    if isinstance(value, bool):
        return value
    try:
        return _INTEGER.validate_python(value)
    except ValidationError:
        return value


def read_integer_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` (conversion options, name -> value) with the `INTEGER_OPTIONS` read as pydantic reads an integer."""
    return {name: _integer(value) if name in INTEGER_OPTIONS else value for name, value in raw.items()}


@dataclass(frozen=True)
class OperationOptions:
    """The options of one conversion or enhancement, parsed the same way whichever transport carried them (HTTP
    query parameters and a JSON body's `options`, gRPC's text map)."""

    convert: ConvertOptions
    enhance: EnhanceOptions | None  # None: a conversion
    report: str  # one of REPORT_FORMS: how HTTP answers (gRPC answers always carry the image and the report)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], enhancing: bool) -> "OperationOptions":
        """From option name -> value (text or JSON; empty, "" or None: not given). Raises `InvalidOptionError` (400 /
        INVALID_ARGUMENT, kind `invalid_option`) for any option, `report` included."""
        known = {*CONVERT_OPTION_NAMES, "report", *(ENHANCE_OPTION_NAMES if enhancing else ())}
        unknown = sorted(name for name in raw if name not in known)
        if unknown:  # named with every option this operation takes (ConvertOptions.parse knew only its own)
            noun = "enhancement" if enhancing else "conversion"
            raise InvalidOptionError(f"unknown {noun} options {unknown}; known: {', '.join(sorted(known))}")
        given = read_integer_options(raw)
        report = given.pop("report", None)
        form = str(report or "image").lower()
        if form not in REPORT_FORMS:
            raise InvalidOptionError(f"report={report!r}: choose {' or '.join(REPORT_FORMS)}")
        enhance = None
        if enhancing:
            enhance = EnhanceOptions.parse(**{name: given.pop(name) for name in ENHANCE_OPTION_NAMES if name in given})
        return cls(ConvertOptions.parse(**given), enhance, form)


@dataclass(frozen=True)
class EnhanceOutcome:
    result: ConvertResult
    applied: list[dict[str, Any]]  # operation, reason, parameters
    before: QualityReport | None  # None when the quality stage is not served (manual enhancement only)
    after: QualityReport | None
    reverted: list[dict[str, Any]] = field(default_factory=list)  # auto steps undone: they lowered the score

    def summary(self) -> dict[str, Any]:
        def verdict(report: QualityReport | None) -> dict[str, Any] | None:
            if report is None:
                return None
            return {"score": report.score, "level": report.level, "tags": [t.name for t in report.tags]}

        return {
            **self.result.summary(),
            "operations": self.applied,
            **({"reverted": self.reverted} if self.reverted else {}),
            "quality_before": verdict(self.before),
            "quality_after": verdict(self.after),
        }


def _first_work(operation: Callable[..., T], *args: Any) -> T:
    """`operation(*args)` in a stage thread, after the queue budget's check (`REPLICA_LIMIT.check_queue_wait`): a
    conversion, or an enhancement without the quality stage, that waited for a worker longer than the budget is shed
    with 503 `overloaded` as a decode for the models is; later work of a request that has started is never shed."""
    REPLICA_LIMIT.check_queue_wait()
    return operation(*args)


class ImageOperations:
    def __init__(self, service: InferenceService, limits: DecodeLimits):
        self.service = service
        self.limits = limits

    async def _forced_options(self, options: ConvertOptions) -> ConvertOptions:
        """The options after charging the image to the caller's quotas, with a tenant's forced anonymisation."""
        return replace(options, anonymize=await self.service.charge(1, options.anonymize))

    async def convert(self, data: bytes, options: ConvertOptions) -> ConvertResult:
        options = await self._forced_options(options)
        start = time.perf_counter()
        async with refunded_on_server_error(self.service, 1):  # charged by `_forced_options`
            result = await stage_thread(_first_work, convert_image, data, options, self.limits)
        STAGE_LATENCY.labels("convert", "").observe(time.perf_counter() - start)
        self._count("convert", result)
        return result

    async def enhance(self, data: bytes, options: EnhanceOptions, convert: ConvertOptions) -> EnhanceOutcome:
        convert = await self._forced_options(convert)
        async with refunded_on_server_error(self.service, 1):  # charged by `_forced_options`
            return await self._enhance_charged(data, options, convert)

    async def _enhance_charged(self, data: bytes, options: EnhanceOptions, convert: ConvertOptions) -> EnhanceOutcome:
        has_quality = self.service.pipeline.has_quality
        if options.auto and not has_quality:
            raise ModelUnavailableError("auto enhancement reads the quality stage, which this application does not run")
        before = await self.service.assess_quality(data) if has_quality else None
        if before is not None:
            REPLICA_LIMIT.mark_started()  # scored: its first work is done, here or in the graph's stage deployments
        tags = [t.name for t in before.tags] if before is not None else []
        start = time.perf_counter()
        result, applied = await stage_thread(_first_work, enhance_image, data, options, convert, self.limits, tags)
        STAGE_LATENCY.labels("enhance", "").observe(time.perf_counter() - start)
        if result.data is data:  # nothing applied and no conversion asked: the input itself, scored already
            after = before
        else:
            after = await self._output_quality(result.data) if has_quality else None
        reverted: list[dict[str, Any]] = []
        if before is not None and after is not None and should_revert(options, applied, before.score, after.score):
            plain, plain_applied = await stage_thread(
                enhance_image, data, without_auto(options), convert, self.limits, []
            )
            plain_after = await self._output_quality(plain.data)
            if plain_after is not None and plain_after.score > after.score:  # the auto steps lowered the score
                reverted = [step for step in applied if auto_step(step)]
                result, applied, after = plain, plain_applied, plain_after
        for step in applied:
            ENHANCEMENT_STEPS.labels(step["operation"], step["reason"].split(" ")[0]).inc()
        self._count("enhance", result)
        return EnhanceOutcome(result, applied, before, after, reverted)

    async def _output_quality(self, data: bytes) -> QualityReport | None:
        """The quality of an output, or None when it is larger than an input may be (a BMP or uncompressed TIFF of a
        large photo). The size limit guards what clients send; the output is the server's own and is answered
        without a score after, not refused with a 413 for the client's request."""
        try:
            return await self.service.assess_quality(data)
        except ImageTooLargeError:
            return None

    @staticmethod
    def _count(operation: str, result: ConvertResult) -> None:
        IMAGE_OPERATION_BYTES.labels(operation, "in").inc(result.input_bytes)
        IMAGE_OPERATION_BYTES.labels(operation, "out").inc(result.output_bytes)
