"""The SDK over HTTP: `/v1/classify`, `/v1/analyze`, `/v1/models`, `/v1/convert` and `/v1/enhance` with httpx
(sync). Convert and enhance ask for the image itself and read their report from its `X-Imgserve-*` headers."""

import json
from collections.abc import Iterable, Iterator
from pathlib import PurePath
from typing import Any

import httpx

from serving.client.errors import CALLER_REFUSALS, ImgServeError
from serving.client.inputs import NamedImage
from serving.client.options import RequestOptions
from serving.client.routes import HttpRoutes
from serving.client.types import (
    Analysis,
    Classification,
    ModelInfo,
    ModelList,
    OperationResult,
    Prediction,
    StreamResult,
)


def classification_from_json(data: dict[str, Any]) -> Classification:
    predictions = tuple(Prediction(str(p["label"]), int(p["index"]), float(p["score"])) for p in data["predictions"])
    return Classification(
        str(data["model"]), predictions, float(data["timing_ms"]), str(data.get("model_version") or "")
    )


def analysis_from_json(data: dict[str, Any]) -> Analysis:
    """Known stages become typed fields; keys this SDK predates are kept as they came in `extra`."""
    classification = data.get("classification")
    known = ("classification", "metadata", "quality", "anomaly")
    extra = {key: value for key, value in data.items() if key not in known}
    typed = classification_from_json(classification) if classification else None
    return Analysis(typed, data.get("metadata"), data.get("quality"), data.get("anomaly"), extra)


def model_list_from_json(data: dict[str, Any]) -> ModelList:
    models = tuple(
        ModelInfo(
            name=m["name"],
            version=m.get("version", ""),
            task=m.get("task", ""),
            state=m.get("state", ""),
            reason=m.get("reason") or None,
            backend=(m.get("backend") or {}).get("backend") or None,
            backend_info=dict(m.get("backend") or {}),
        )
        for m in data["models"]
    )
    return ModelList(str(data["default_model"]), models)


Params = list[tuple[str, str | int | float]]


def _query(options: RequestOptions, fields: bool = True) -> Params:
    """The options as query parameters (no `fields` for classify); `confidence_threshold` only when set
    (> 0), so requests without it are the same as before the option existed."""
    params: Params = [("top_k", options.top_k)]
    if options.model:
        params.append(("model", options.model))
    if fields:
        params.extend(("fields", f) for f in options.fields or ())
    if options.confidence_threshold > 0:
        params.append(("confidence_threshold", options.confidence_threshold))
    if fields and options.anonymize:
        params.append(("anonymize", "true"))
    return params


def _results(response: httpx.Response, expected: int) -> list[dict[str, Any]]:
    results = response.json()["results"]
    if len(results) != expected:
        raise ImgServeError("INTERNAL", "bad_response", f"sent {expected} images, got {len(results)} results")
    return results


class HttpTransport(HttpRoutes):
    """One httpx client per `Client`; every call retried on UNAVAILABLE (connection errors, 503 not overloaded).

    With `api_key`, every request carries `Authorization: Bearer <key>` (httpx shows the value as [secure]).
    """

    def _post_images(self, path: str, images: list[NamedImage], params: Params) -> httpx.Response:
        files = [("image", (PurePath(i.name).name or "image", i.data, "application/octet-stream")) for i in images]
        return self._send("POST", path, params=params, files=files)

    def classify(self, images: list[NamedImage], options: RequestOptions) -> list[Classification]:
        response = self._post_images("/v1/classify", images, _query(options, fields=False))
        return [classification_from_json(r) for r in _results(response, len(images))]

    def analyze(self, images: list[NamedImage], options: RequestOptions) -> list[Analysis]:
        response = self._post_images("/v1/analyze", images, _query(options))
        return [analysis_from_json(r) for r in _results(response, len(images))]

    def stream(self, images: Iterable[NamedImage], options: RequestOptions) -> Iterator[StreamResult]:
        """No streaming route over HTTP: one `/v1/analyze` call per image. Errors the server answered belong to
        their item, a rate limit's 429 included (a `RateLimitedError` with the server's `retry_after`, as over gRPC;
        the next item is sent at once: waiting is the caller's decision); a server that cannot be reached (after
        retries), or one that refuses the caller's key or role (401, 403: `CALLER_REFUSALS`, as a gRPC stream ends
        with the status), ends the stream by raising."""
        for image in images:
            try:
                analysis = self.analyze([image], options)[0]
            except ImgServeError as exc:
                if exc.status is None or isinstance(exc, CALLER_REFUSALS):
                    raise
                yield StreamResult(image.name, error=exc)
            else:
                yield StreamResult(image.name, analysis=analysis)

    def models(self) -> ModelList:
        return model_list_from_json(self._send("GET", "/v1/models").json())

    def operate(self, operation: str, image: NamedImage, options: dict[str, str]) -> OperationResult:
        """Asked for as the image itself (`report=image`), its report read from the `X-Imgserve-*` headers: no
        base64 (a third more bytes) nor a JSON parse of a multi-megabyte string. The report is the one
        `report=json` answers, keys, order and types (`REPORT_FROM_HEADERS`)."""
        response = self._send("POST", f"/v1/{operation}", params={**options, "report": "image"}, content=image.data)
        try:
            report = REPORT_FROM_HEADERS[operation](response.headers)
        except (KeyError, ValueError, TypeError) as exc:  # a proxy that drops or mangles them
            raise ImgServeError(
                "INTERNAL", "bad_response", f"{operation} answer without its headers: {exc!r}"
            ) from None
        return OperationResult(response.content, report["content_type"], report)


def conversion_report_from_headers(headers: httpx.Headers) -> dict[str, Any]:
    """The report `/v1/convert?report=json` answers (`ConvertResult.summary`), with its keys, order and types, from
    the image answer's headers. A server older than the `X-Imgserve-Input-*` and `-Frames` headers leaves those
    facts out of it."""
    report: dict[str, Any] = {}
    if "x-imgserve-input-format" in headers:
        report["input_format"] = headers["x-imgserve-input-format"]
    report["format"] = headers["x-imgserve-format"]
    report["content_type"] = headers["content-type"]
    if "x-imgserve-input-size" in headers:
        report["input_size"] = _size(headers["x-imgserve-input-size"])
    report["size"] = _size(headers["x-imgserve-size"])
    if "x-imgserve-frames" in headers:
        report["frames"] = int(headers["x-imgserve-frames"])
    report["input_bytes"] = int(headers["x-imgserve-input-bytes"])
    report["output_bytes"] = int(headers["x-imgserve-output-bytes"])
    report["compression_ratio"] = float(headers["x-imgserve-compression-ratio"])
    return report


def enhancement_report_from_headers(headers: httpx.Headers) -> dict[str, Any]:
    """The report `/v1/enhance?report=json` answers (`EnhanceOutcome.summary`), with its keys, order and types, from
    the image answer's headers: the conversion's facts, the operations, the reverted auto steps (when there are
    any) and the quality verdicts before and after (None without the quality stage). From a server older than
    `X-Imgserve-Quality` and `-Reverted`, the verdicts are what the score and tags headers say (the score to one
    decimal, no level) and the reverted steps are left out."""
    report = conversion_report_from_headers(headers)
    report["operations"] = _json_list(headers["x-imgserve-operations-detail"])
    if "x-imgserve-quality" not in headers:
        report["quality_before"], report["quality_after"] = (_verdict(headers, name) for name in ("before", "after"))
        return report
    if reverted := _json_list(headers["x-imgserve-reverted"]):
        report["reverted"] = reverted
    quality = json.loads(headers["x-imgserve-quality"])
    report["quality_before"], report["quality_after"] = quality["before"], quality["after"]
    return report


REPORT_FROM_HEADERS = {"convert": conversion_report_from_headers, "enhance": enhancement_report_from_headers}


def _json_list(text: str) -> list[Any]:
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list, got {text[:80]!r}")
    return value


def _verdict(headers: httpx.Headers, name: str) -> dict[str, Any] | None:
    """An older server's `X-Imgserve-Score-<name>` and `-Tags-<name>` as a verdict; None when it sent none."""
    if f"x-imgserve-score-{name}" not in headers:
        return None
    tags = headers[f"x-imgserve-tags-{name}"]
    return {"score": float(headers[f"x-imgserve-score-{name}"]), "tags": [] if tags == "none" else tags.split(",")}


def _size(text: str) -> list[int]:
    """`"320x240"` -> `[320, 240]`, as the JSON report has a size."""
    width, height = text.split("x")
    return [int(width), int(height)]
