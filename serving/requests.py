"""Every form an image request takes, in one place: the options and the JSON body, for HTTP, gRPC, SDK and CLI.

An image request is encoded images plus `ImageOptions`. Over HTTP the images come as a raw body, multipart
fields named `image`, or the JSON form of the categorization API:

    {"image": "<base64>", "options": {"model": "...", "confidence_threshold": 0.8, "top_k": 5}}
    {"images": ["<base64>", ...], "options": {...}}

Options may also be query parameters (`?top_k=3&confidence_threshold=0.5`); in the JSON form the body's
`options` win. gRPC carries the same options as request fields.
"""

import base64
import binascii
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving.errors import BadRequestError, strings_in

DEFAULT_TOP_K = 5
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads_client_json(raw: bytes) -> Any:
    """`json.loads` of a client's body, refusing what JSON's grammar allows but text cannot hold: a lone UTF-16
    surrogate escape (`"\\ud800"`), which pydantic's parser (the image API's bodies) refuses too. Such a string
    reached messages and logs that cannot encode it. Raises ValueError, as json.loads does for text that is not
    JSON; only a body with a `\\ud`/`\\uD` escape is searched."""
    value = json.loads(raw)
    if (b"\\ud" in raw or b"\\uD" in raw) and any(_SURROGATE.search(text) for text in strings_in(value, keys=True)):
        raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
    return value


class ImageOptions(BaseModel):
    """What to run on the images and how to answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None,
        min_length=1,  # `?model=` is a malformed request, not the default (gRPC's empty `model` is "not given")
        description="Classifier; the server's default when omitted.",
    )
    model_version: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,9}$",
        description="A loaded version of the model (the served one or its canary); omitted: the model's routing.",
    )
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=1000, description="Most classes returned per image.")
    confidence_threshold: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Leave out classes scoring below this (0..1); 0 keeps all top_k."
    )
    fields: list[str] | None = Field(
        default=None, description="Analysis stages to run (analyze only); all available when omitted."
    )
    anonymize: bool = Field(
        default=False, description="Drop GPS and personal fields (names, places) from metadata results."
    )

    @field_validator("top_k", "confidence_threshold", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        """JSON `true` is no number (pydantic reads it as 1: `top_k: true` answered one class, a threshold of
        `true` none), as `/v1/convert`'s `quality` refuses it."""
        if isinstance(value, bool):
            raise ValueError("expected a number, not true or false")
        return value

    @classmethod
    def parse(cls, /, **values: Any) -> "ImageOptions":
        """Validated options; an invalid value is a 400 naming the field (not a pydantic trace)."""
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise BadRequestError(f"invalid options: {validation_summary(exc, cls)}") from None


class JsonImageRequest(BaseModel):
    """The JSON body form: one base64 `image` or a list `images`, plus `options`."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(default=None, description="One encoded image, base64.")
    images: list[str] | None = Field(default=None, description="Several encoded images, base64, answered in order.")
    options: dict[str, Any] = Field(default_factory=dict, description="`ImageOptions` fields.")

    @model_validator(mode="after")
    def _one_form(self) -> "JsonImageRequest":
        if (self.image is None) == (self.images is None):
            raise ValueError("give exactly one of 'image' (base64) or 'images' (a list of base64 strings)")
        return self

    def encoded_images(self) -> list[bytes]:
        items = [self.image] if self.image is not None else list(self.images or [])
        images = []
        for index, item in enumerate(items):
            try:
                images.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                raise BadRequestError(f"image {index} is not valid base64") from None
        return images


def validation_summary(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Each error as `where: what`; `where` holds client-chosen names (an unknown field), so it is bounded. An unknown
    top-level field of `model` is named with the model's fields, as an unknown query parameter is (`{"topk": 3}`:
    "topk: unknown; known: model, ..., top_k, ...")."""

    def what(error: Any) -> str:
        if error["type"] == "extra_forbidden" and model is not None and len(error["loc"]) == 1:
            return f"unknown; known: {', '.join(model.model_fields)}"
        return str(error["msg"])

    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])[:80] or 'body'}: {what(e)}" for e in exc.errors())


def parse_json_request(body: bytes) -> JsonImageRequest:
    try:
        return JsonImageRequest.model_validate_json(body)
    except ValidationError as exc:
        raise BadRequestError(f"invalid JSON image request: {validation_summary(exc, JsonImageRequest)}") from None
