"""gRPC `ModelConfig` on the real server, read by tritonclient.grpc 2.73: what `GET /v2/models/{m}/config` answers."""

from typing import Any

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc.model_config_pb2 import DataType
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import RunningServer

pytestmark = pytest.mark.integration

MODEL = "mobilenet_v2_imagenet"


@pytest.fixture(scope="module", params=["graph", "local"])
def target(request: pytest.FixtureRequest, server: RunningServer, local_server: RunningServer) -> RunningServer:
    """The server under test: the graph placement or the local one (both on the Ingress replica's listeners)."""
    return server if request.param == "graph" else local_server


@pytest.fixture(scope="module")
def clients(target: RunningServer) -> tuple[triton_grpc.InferenceServerClient, triton_http.InferenceServerClient]:
    return (
        triton_grpc.InferenceServerClient(target.grpc_target),
        triton_http.InferenceServerClient(target.http_url.removeprefix("http://")),
    )


def _as_http_json(config: Any) -> dict[str, Any]:
    """A `ModelConfig` message in the HTTP route's JSON shape, data types named by tritonclient's enum."""

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


@pytest.mark.parametrize("model", [MODEL, "classify"])
def test_model_config_equals_http(clients: tuple[Any, Any], model: str) -> None:
    grpc_client, http_client = clients
    over_http = http_client.get_model_config(model)
    config = grpc_client.get_model_config(model).config
    assert _as_http_json(config) == over_http
    if model == MODEL:
        assert config.max_batch_size == 32 and list(config.input[0].dims) == [3, 224, 224]
        assert DataType.Name(config.input[0].data_type) == "TYPE_FP32" and config.output[0].name == "probs"


def test_model_config_of_the_loaded_version_and_unknown_ones(clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = clients
    version = http_client.get_model_metadata(MODEL)["versions"][0]
    assert grpc_client.get_model_config(MODEL, version).config.name == MODEL
    for model, bad_version in (("no_such_model", ""), (MODEL, "999")):
        with pytest.raises(InferenceServerException) as caught:
            grpc_client.get_model_config(model, bad_version)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
