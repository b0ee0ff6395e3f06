"""The tiny models' service behind both direct listeners (HTTP and gRPC, as an Ingress replica opens them), in a
process of its own: imgserve's OIP stubs and tritonclient's share the `inference` proto names and cannot load in one
process, so tests drive it with tritonclient from theirs. `tiny_server` / `tiny_clients` (tests/unit/conftest.py)."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.paths import PROJECT_ROOT

START_TIMEOUT_S = 120
MARK = "@test-answer "  # the server process's own lines on its stdout, whatever else is printed there


def serve_both_edges(root: str) -> None:
    """Run in the server's process: listen on free ports and print them as a JSON line; then answer each line read
    on stdin (an endpoint's name) with its `imgserve_requests_total` counts by protocol and status; stop when stdin
    closes."""
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

    def counts(endpoint: str) -> dict[str, float]:
        by_status: dict[str, float] = {}
        for sample in REQUESTS.collect()[0].samples:
            if sample.name.endswith("_total") and sample.labels["endpoint"] == endpoint:
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
            while endpoint := await asyncio.to_thread(sys.stdin.readline):
                print(MARK + json.dumps(counts(endpoint.strip())), flush=True)
        finally:
            await listeners.stop()

    asyncio.run(serve())


class TinyServer:
    """The server's process: its ports, and the ModelConfig counts it keeps."""

    def __init__(self, root: Path) -> None:
        script = f"from tests.unit.tiny_server import serve_both_edges; serve_both_edges({str(root)!r})"
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

    def counts(self, endpoint: str) -> dict[str, float]:
        """`imgserve_requests_total` of `endpoint` in the server's process, by "<protocol>:<status>"."""
        assert self.process.stdin is not None
        self.process.stdin.write(endpoint + "\n")
        self.process.stdin.flush()
        return json.loads(self._line())

    def stop(self) -> None:
        self.process.communicate(timeout=START_TIMEOUT_S)


UNKNOWN_MODELS_AND_VERSIONS = [("no_such_model", ""), ("tiny", "999"), ("classify", "2")]


def assert_not_found_on_both(over_grpc: Callable[[], Any], over_http: Callable[[], Any]) -> None:
    """The same tritonclient call over gRPC and over HTTP is NOT_FOUND / 404 with the same message, word for word."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as grpc_error:
        over_grpc()
    with pytest.raises(InferenceServerException) as http_error:
        over_http()
    assert grpc_error.value.status() == "StatusCode.NOT_FOUND" and http_error.value.status() == "404"
    assert grpc_error.value.message() == http_error.value.message()


DESCRIBE_SCRIPT = """
import json
from serving.grpc.oip_codec import pb
fields = {name: {f.name: [f.number, f.type, f.is_repeated] for f in getattr(pb, name).DESCRIPTOR.fields} for name in %r}
enums = {e: {v.name: v.number for v in d.values} for e, d in
         (("DataType", pb.DataType.DESCRIPTOR), ("ModelInput.Format", pb.ModelInput.Format.DESCRIPTOR))}
method = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[%r]
types = [method.input_type.full_name, method.output_type.full_name]
print(json.dumps({"fields": fields, "enums": enums, "method": types}))
"""


def assert_declared_as_tritons(method: str, messages: tuple[str, ...], *triton_modules: Any) -> dict[str, Any]:
    """Every field imgserve declares in `messages` has Triton's number, type and repetition (the first of
    tritonclient's `triton_modules` that has the message), and `method` takes and answers Triton's message types
    (imgserve's descriptors are read in a process of its own). Returns imgserve's side, enums included."""
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE_SCRIPT % (messages, method)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=True,
    )
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    for name, fields in ours["fields"].items():
        triton = next(getattr(module, name) for module in triton_modules if hasattr(module, name))
        theirs = {f.name: [f.number, f.type, f.is_repeated] for f in triton.DESCRIPTOR.fields}
        assert fields and all(theirs[field] == spec for field, spec in fields.items()), (name, fields, theirs)
    rpc = triton_modules[0].DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[method]
    assert ours["method"] == [rpc.input_type.full_name, rpc.output_type.full_name]
    return ours
