"""Python SDK for a running imgserve server, over gRPC or HTTP with the same typed results.

from serving.client import Client

with Client("grpc://127.0.0.1:9000") as client:
    for result in client.classify(["cat.jpg", "dog.jpg"], top_k=3):
        print(result.predictions[0].label, result.predictions[0].score)
    confident = client.classify("cat.jpg", top_k=5, confidence_threshold=0.5)  # classes scoring >= 0.5 only
"""

from serving.client.batch import BatchJob, JobResult
from serving.client.client import Client
from serving.client.errors import ImgServeError
from serving.client.types import Analysis, Classification, ModelInfo, ModelList, Prediction, StreamResult

__all__ = [
    "Analysis",
    "BatchJob",
    "Classification",
    "Client",
    "ImgServeError",
    "JobResult",
    "ModelInfo",
    "ModelList",
    "Prediction",
    "StreamResult",
]
