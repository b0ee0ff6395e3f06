"""gRPC `ModelConfig`, read by tritonclient's own `get_model_config`, answers what `GET /v2/models/{m}/config` does.

tritonclient.grpc's `get_model_config` calls `/inference.GRPCInferenceService/ModelConfig`, which imgserve did not
declare (UNIMPLEMENTED) while the HTTP route answered. The server runs in a process of its own (imgserve's OIP
stubs and tritonclient's share the `inference` proto names and cannot load in one process): the tiny models on
the local placement behind the direct listeners an Ingress replica opens, HTTP and gRPC over one service. This
process drives both with tritonclient.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

MODELS = ("tiny", "quality_mos", "classify")  # two tensor models (one output, two outputs) and the image-level one
START_TIMEOUT_S = 120
MARK = "@test-answer "  # the server process's own lines on its stdout, whatever else is printed there


def serve_both_edges(root: str) -> None:
    """Run in the server's process: listen on free ports and print them as a JSON line; then answer each line read
    on stdin with the `imgserve_requests_total` counts of ModelConfig by protocol and status; stop when it closes."""
    import asyncio

    from loadtests.server_process import free_port
    from serving.config.app_args import DirectIngressOptions
    from serving.deployments.direct_ingress import DirectListeners
    from serving.grpc.image_methods import ImageGrpcMethods
    from serving.grpc.oip_methods import OipGrpcMethods
    from serving.http.app import create_http_app
    from serving.metrics import REQUESTS
    from serving.service import InferenceService
    from tests.unit.tiny_models import tiny_local_service

    class Servicer(OipGrpcMethods, ImageGrpcMethods):
        """The gRPC methods the Ingress registers on its listeners, over the tiny models' service."""

        def __init__(self, service: InferenceService) -> None:
            self.service = service

    def counts() -> dict[str, float]:
        by_status: dict[str, float] = {}
        for sample in REQUESTS.collect()[0].samples:
            if sample.name.endswith("_total") and sample.labels["endpoint"] == "ModelConfig":
                key = f"{sample.labels['protocol']}:{sample.labels['status']}"
                by_status[key] = by_status.get(key, 0) + sample.value
        return by_status

    async def serve() -> None:
        service, settings = tiny_local_service(Path(root))
        options = DirectIngressOptions(http_port=free_port(), grpc_port=free_port())
        listeners = DirectListeners(options, settings.max_request_bytes)
        await listeners.start(Servicer(service), create_http_app(service, settings=settings))
        print(MARK + json.dumps({"http": options.http_port, "grpc": options.grpc_port}), flush=True)
        try:
            while await asyncio.to_thread(sys.stdin.readline):
                print(MARK + json.dumps(counts()), flush=True)
        finally:
            await listeners.stop()

    asyncio.run(serve())


class TinyServer:
    """The server's process: its ports, and the ModelConfig counts it keeps."""

    def __init__(self, root: Path) -> None:
        script = f"from tests.unit.test_oip_grpc_config import serve_both_edges; serve_both_edges({str(root)!r})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", script], cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ports = json.loads(self._line() or "null")
        if ports is None:
            self.process.wait(timeout=START_TIMEOUT_S)
            pytest.fail(f"the server's process exited with {self.process.returncode} before listening")
        self.http_url, self.grpc_url = f"127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"

    def _line(self) -> str:
        """The server's next answer line ("" once its process has ended): blocks until it writes one."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                return line.removeprefix(MARK)
        return ""

    def counts(self) -> dict[str, float]:
        """`imgserve_requests_total` of ModelConfig in the server's process, by "<protocol>:<status>"."""
        assert self.process.stdin is not None
        self.process.stdin.write("counts\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def stop(self) -> None:
        self.process.communicate(timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    running = TinyServer(tmp_path_factory.mktemp("tiny"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def clients(server: TinyServer) -> tuple[Any, Any]:
    triton_grpc = pytest.importorskip("tritonclient.grpc")
    triton_http = pytest.importorskip("tritonclient.http")
    return triton_grpc.InferenceServerClient(server.grpc_url), triton_http.InferenceServerClient(server.http_url)


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
def test_tritonclient_grpc_model_config_equals_the_http_config(clients: tuple[Any, Any], model: str) -> None:
    grpc_client, http_client = clients
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


def test_the_tiny_models_config_in_detail(clients: tuple[Any, Any]) -> None:
    config = clients[0].get_model_config("quality_mos").config
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [o.name for o in config.output] == ["probs", "score"] and list(config.output[1].dims) == [1]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000  # the tiny config.yaml's 1 ms


def test_a_version_is_answered_as_over_http(clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = clients
    version = http_client.get_model_metadata("tiny")["versions"][0]
    assert as_http_json(grpc_client.get_model_config("tiny", version).config) == http_client.get_model_config(
        "tiny", version
    )
    assert grpc_client.get_model_config("classify", "1").config.name == "classify"


@pytest.mark.parametrize(("model", "version"), [("no_such_model", ""), ("tiny", "999"), ("classify", "2")])
def test_unknown_models_and_versions_are_not_found_on_both(clients: tuple[Any, Any], model: str, version: str) -> None:
    from tritonclient.utils import InferenceServerException

    grpc_client, http_client = clients
    with pytest.raises(InferenceServerException) as over_grpc:
        grpc_client.get_model_config(model, version)
    with pytest.raises(InferenceServerException) as over_http:
        http_client.get_model_config(model, version)
    assert over_grpc.value.status() == "StatusCode.NOT_FOUND" and over_http.value.status() == "404"
    assert over_grpc.value.message() == over_http.value.message()  # the same error, word for word


def test_model_config_is_counted_like_the_other_methods(server: TinyServer, clients: tuple[Any, Any]) -> None:
    before = server.counts()
    clients[0].get_model_config("tiny")
    clients[0].get_model_config("quality_mos")
    with pytest.raises(Exception, match="no_such_model"):
        clients[0].get_model_config("no_such_model")
    after = server.counts()
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
DESCRIBE_SCRIPT = """
import json
from serving.grpc.oip_codec import pb
fields = {name: {f.name: [f.number, f.type, f.is_repeated] for f in getattr(pb, name).DESCRIPTOR.fields} for name in %r}
enums = {e: {v.name: v.number for v in d.values} for e, d in
         (("DataType", pb.DataType.DESCRIPTOR), ("ModelInput.Format", pb.ModelInput.Format.DESCRIPTOR))}
method = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name["ModelConfig"]
types = [method.input_type.full_name, method.output_type.full_name]
print(json.dumps({"fields": fields, "enums": enums, "method": types}))
"""


def test_the_declared_fields_have_tritons_numbers_and_types() -> None:
    """Fields imgserve leaves unset too (format, label_filename, backend): a client that sets or reads one must
    find it where Triton's protos put it."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE_SCRIPT % (CONFIG_MESSAGES,)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=True,
    )
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    for name, fields in ours["fields"].items():
        triton = getattr(service_pb2, name, None) or getattr(model_config_pb2, name)
        theirs = {f.name: [f.number, f.type, f.is_repeated] for f in triton.DESCRIPTOR.fields}
        assert fields and all(theirs[field] == spec for field, spec in fields.items()), (name, fields, theirs)
    triton_enums = {"DataType": model_config_pb2.DataType, "ModelInput.Format": model_config_pb2.ModelInput.Format}
    for name, values in ours["enums"].items():
        assert values == {v.name: v.number for v in triton_enums[name].DESCRIPTOR.values}, name
    triton_method = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name["ModelConfig"]
    assert ours["method"] == [triton_method.input_type.full_name, triton_method.output_type.full_name]
