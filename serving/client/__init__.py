"""Python SDK for a running imgserve server, over gRPC or HTTP with the same typed results.

from serving.client import Client

with Client("grpc://127.0.0.1:9000") as client:
    for result in client.classify(["cat.jpg", "dog.jpg"], top_k=3):
        print(result.predictions[0].label, result.predictions[0].score)
    confident = client.classify("cat.jpg", top_k=5, confidence_threshold=0.5)  # classes scoring >= 0.5 only

A server with `IMGSERVE_AUTH=required` wants an API key: `Client(url, api_key=...)`, or export
`IMGSERVE_API_KEY` (read when no `api_key` is given). Refusals raise `AuthenticationError` (401 /
UNAUTHENTICATED), `PermissionDeniedError` (403 / PERMISSION_DENIED) or `RateLimitedError` (429 /
RESOURCE_EXHAUSTED, `.retry_after` seconds), all subclasses of `ImgServeError`.
"""

from serving.client.batch import BatchJob, JobResult
from serving.client.client import Client
from serving.client.errors import AuthenticationError, ImgServeError, PermissionDeniedError, RateLimitedError
from serving.client.training import TrainingJob
from serving.client.types import (
    Analysis,
    Classification,
    ModelInfo,
    ModelList,
    OperationResult,
    Prediction,
    StreamResult,
)

__all__ = [
    "Analysis",
    "AuthenticationError",
    "BatchJob",
    "Classification",
    "Client",
    "ImgServeError",
    "JobResult",
    "ModelInfo",
    "ModelList",
    "OperationResult",
    "PermissionDeniedError",
    "Prediction",
    "RateLimitedError",
    "StreamResult",
    "TrainingJob",
]
