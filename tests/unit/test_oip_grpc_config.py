"""gRPC `ModelConfig`, read by tritonclient's own `get_model_config`, answers what `GET /v2/models/{m}/config` does.

tritonclient.grpc's `get_model_config` calls `/inference.GRPCInferenceService/ModelConfig`, which imgserve did not
declare (UNIMPLEMENTED) while the HTTP route answered. The server runs in a process of its own (imgserve's OIP
stubs and tritonclient's share the `inference` proto names and cannot load in one process): the tiny models on
the local placement behind the direct listeners an Ingress replica opens, HTTP and gRPC over one service. This
process drives both with tritonclient.
"""

from typing import Any

import pytest

from tests.unit.tiny_server import (
    UNKNOWN_MODELS_AND_VERSIONS,
    TinyServer,
    assert_declared_as_tritons,
    assert_not_found_on_both,
)

pytestmark = pytest.mark.unit

MODELS = ("tiny", "quality_mos", "classify")  # two tensor models (one output, two outputs) and the image-level one


def as_http_json(config: Any) -> dict[str, Any]:
    """tritonclient.grpc's `ModelConfig` message in the shape of the HTTP route's JSON, its data types named by
    tritonclient's own `DataType` enum (so a wrong enum number shows as a wrong name)."""
    from tritonclient.grpc.model_config_pb2 import DataType

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "data_type": DataType.Name(t.data_type), "dims": list(t.dims)} for t in items]

    return {
        "name": config.name,
        "platform": config.platform,
        "max_batch_size": config.max_batch_size,
        "input": tensors(config.input),
        "output": tensors(config.output),
        "dynamic_batching": {
            "preferred_batch_size": list(config.dynamic_batching.preferred_batch_size),
            "max_queue_delay_microseconds": config.dynamic_batching.max_queue_delay_microseconds,
        },
    }


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_grpc_model_config_equals_the_http_config(tiny_clients: tuple[Any, Any], model: str) -> None:
    grpc_client, http_client = tiny_clients
    over_http = http_client.get_model_config(model)
    over_grpc = grpc_client.get_model_config(model).config
    assert as_http_json(over_grpc) == over_http
    assert over_http["input"] and over_http["output"] and over_http["max_batch_size"] > 0  # not a vacuous match
    if model == "classify":
        # one encoded image per batch row: metadata shape [-1], no dims past the batch axis
        assert over_http["input"] == [{"name": "IMAGE", "data_type": "TYPE_STRING", "dims": []}]
        assert [(o["name"], o["data_type"]) for o in over_http["output"]][1] == ("SCORES", "TYPE_FP32")
    else:
        assert over_grpc.platform == "onnxruntime_onnx" and over_grpc.max_batch_size == 8
    as_json = grpc_client.get_model_config(model, as_json=True)["config"]  # tritonclient's JSON form parses too
    assert as_json["name"] == model and [i["name"] for i in as_json["input"]] == [i["name"] for i in over_http["input"]]


def test_the_tiny_models_config_in_detail(tiny_clients: tuple[Any, Any]) -> None:
    config = tiny_clients[0].get_model_config("quality_mos").config
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [o.name for o in config.output] == ["probs", "score"] and list(config.output[1].dims) == [1]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000  # the tiny config.yaml's 1 ms


def test_a_version_is_answered_as_over_http(tiny_clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = tiny_clients
    version = http_client.get_model_metadata("tiny")["versions"][0]
    assert as_http_json(grpc_client.get_model_config("tiny", version).config) == http_client.get_model_config(
        "tiny", version
    )
    assert grpc_client.get_model_config("classify", "1").config.name == "classify"


@pytest.mark.parametrize(("model", "version"), UNKNOWN_MODELS_AND_VERSIONS)
def test_unknown_models_and_versions_are_not_found_on_both(
    tiny_clients: tuple[Any, Any], model: str, version: str
) -> None:
    grpc_client, http_client = tiny_clients
    assert_not_found_on_both(
        lambda: grpc_client.get_model_config(model, version), lambda: http_client.get_model_config(model, version)
    )


def test_model_config_is_counted_like_the_other_methods(tiny_server: TinyServer, tiny_clients: tuple[Any, Any]) -> None:
    before = tiny_server.counts("ModelConfig")
    tiny_clients[0].get_model_config("tiny")
    tiny_clients[0].get_model_config("quality_mos")
    with pytest.raises(Exception, match="no_such_model"):
        tiny_clients[0].get_model_config("no_such_model")
    after = tiny_server.counts("ModelConfig")
    assert after.get("grpc:OK", 0) - before.get("grpc:OK", 0) == 2
    assert after.get("grpc:NOT_FOUND", 0) - before.get("grpc:NOT_FOUND", 0) == 1


# Every message field imgserve declares for ModelConfig, checked against tritonclient's descriptors (Triton's protos).
CONFIG_MESSAGES = (
    "ModelConfigRequest",
    "ModelConfigResponse",
    "ModelConfig",
    "ModelInput",
    "ModelOutput",
    "ModelDynamicBatching",
)


def test_the_declared_fields_have_tritons_numbers_and_types() -> None:
    """Fields imgserve leaves unset too (format, label_filename, backend): a client that sets or reads one must
    find it where Triton's protos put it."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    ours = assert_declared_as_tritons("ModelConfig", CONFIG_MESSAGES, service_pb2, model_config_pb2)
    triton_enums = {"DataType": model_config_pb2.DataType, "ModelInput.Format": model_config_pb2.ModelInput.Format}
    for name, values in ours["enums"].items():
        assert values == {v.name: v.number for v in triton_enums[name].DESCRIPTOR.values}, name
