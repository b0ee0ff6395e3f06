"""The stages of the one image pipeline, as plain classes with no Ray in them.

`DecodeStage` (bytes -> `DecodedImage`), `ModelStage` (tensors -> outputs, dynamically batched), `QualityStage`
(working image -> metrics) and `MetadataStage` (bytes -> EXIF/GPS/colours). `ImagePipeline` is the protocol the
service calls; `LocalPipeline` runs the stages in the calling process, `serving.placement.graph.GraphPipeline`
runs each as its own Ray Serve deployment. Which one is chosen once, in `serving.placement` (`build_pipeline`).
"""

from serving.stages.batching import BatchQueue
from serving.stages.local import LocalPipeline, build_local_pipeline
from serving.stages.pipeline import ImagePipeline, ModelResult, StageOutputs, StagePlan
from serving.stages.settings import StageSettings

__all__ = [
    "BatchQueue",
    "ImagePipeline",
    "LocalPipeline",
    "ModelResult",
    "StageOutputs",
    "StagePlan",
    "StageSettings",
    "build_local_pipeline",
]
