"""Analysis results -> plain JSON documents for the result rows (numpy scalars and dataclasses included)."""

import base64
import dataclasses
import json
from typing import Any

import numpy as np


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return str(value)


def to_jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def analysis_document(analysis: Any) -> dict[str, Any]:
    """The stages that ran, by field name (stages not selected are left out, as in `/v1/analyze`)."""
    return to_jsonable(analysis.to_dict())
