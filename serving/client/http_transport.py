"""The SDK over HTTP: `/v1/classify`, `/v1/analyze` and `/v1/models` with httpx (sync)."""

import base64
from collections.abc import Iterable, Iterator
from pathlib import PurePath
from typing import Any

import httpx

from serving.client.errors import (
    AuthenticationError,
    ImgServeError,
    PermissionDeniedError,
    RateLimitedError,
)
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
CALLER_REFUSALS = (AuthenticationError, PermissionDeniedError, RateLimitedError)  # about the caller, not an image


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
        """No streaming route over HTTP: one `/v1/analyze` call per image. Errors the server answered
        belong to their item; a server that cannot be reached (after retries), or one that refuses the caller
        (401, 403, 429: as a gRPC stream is refused when it opens), ends the stream by raising."""
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
        response = self._send("POST", f"/v1/{operation}", params={**options, "report": "json"}, content=image.data)
        report = response.json()
        data = base64.b64decode(report.pop("image_base64"))
        return OperationResult(data, report["content_type"], report)
