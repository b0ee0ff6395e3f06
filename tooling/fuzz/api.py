"""API fuzzing of a real server: every HTTP route from its OpenAPI schema (schemathesis) and every gRPC method.

    python -m tooling.fuzz.api                      # starts a server, 10,000+ HTTP and gRPC requests (`make fuzz`)
    python -m tooling.fuzz.api --url http://127.0.0.1:8000 --grpc 127.0.0.1:8001 --max-examples 20
    python -m tooling.fuzz.api --url http://127.0.0.1:8000 --grpc 127.0.0.1:9000 --no-http   # gRPC methods only

HTTP: schemathesis generates valid and invalid requests per operation (examples, coverage and fuzzing phases) and
checks `not_a_server_error`: no 5xx for anything a client sends. gRPC: seeded random requests per method (mutated
images, bad model names, shapes, datatypes, counts, raw contents; a tenth as mutated message bytes that may not parse);
a finding is any INTERNAL, UNKNOWN or DATA_LOSS status. Figures (requests, statuses) go to `build/fuzz/api.json`; the
schemathesis HAR log beside it.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from tooling.fuzz.seeds import SEEDS

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "fuzz"
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
RAW_SHARE = 0.1  # of gRPC requests sent as mutated message bytes (truncated, bad UTF-8, wrong wire types)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16", "", "fp32", "X" * 300]


def private_state(tmp: Path) -> dict[str, str]:
    """Where the campaign's server keeps what the fuzzer changes: its own job database, object store and trained
    models under `tmp`. The build outputs (ONNX, INT8) stay in the user's cache: reading them changes nothing. With
    the defaults, the fuzzer's DELETE ...?purge=true and canary requests reached the user's own jobs and models."""
    return {
        "IMGSERVE_DATABASE_URL": f"sqlite:///{tmp / 'jobs.sqlite3'}",
        "IMGSERVE_OBJECT_STORE": str(tmp / "objects"),
        "IMGSERVE_TRAINED_MODELS_DIR": str(tmp / "trained-models"),
    }


def run_schemathesis(url: str, max_examples: int, seed: int, har: Path, max_time_s: int | None) -> dict[str, Any]:
    """The schemathesis CLI against `url`; returns request and status counts from its HAR log."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
        "--checks", "not_a_server_error", "--max-examples", str(max_examples), "--seed", str(seed),
        "--report", "har", "--report-har-path", str(har), "--suppress-health-check", "all",
        "--request-timeout", "60", "--workers", "2", "--phases", "examples,coverage,fuzzing",
    ]  # fmt: skip
    if max_time_s:
        command += ["--max-time", str(max_time_s)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=har.parent)  # its state folder goes there
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = Counter(int(e["response"]["status"]) for e in entries)
    return {
        "requests": len(entries),
        "status_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "exit_code": result.returncode,
        "output_tail": result.stdout[-3000:] if result.returncode else "",
    }


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(0, 8)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.8:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 64))
        elif data:
            start = rng.randrange(len(data))
            data[start:start] = data[start : start + rng.randint(1, 512)] * rng.randint(1, 4)
    return bytes(data)


def _text(rng: random.Random) -> str:
    return rng.choice(["", "mobilenetv2", "quality_mos", "../etc", "\x00", "é" * 50, "m" * 5000, str(rng.random())])


def _image_calls(pb: Any, rng: random.Random, images: list[bytes]) -> tuple[str, Any]:
    fields = rng.sample(["classification", "quality", "metadata", "anomaly", "bogus", ""], rng.randint(0, 3))
    blobs = [_mutate(rng, rng.choice(images)) for _ in range(rng.choice([0, 1, 1, 2, 5]))]
    top_k = rng.choice([0, 1, 5, 1000, 2**32 - 1])
    threshold = rng.choice([0.0, 0.5, -1.0, 2.0, float("nan"), float("inf")])
    if rng.random() < 0.5:
        return "Classify", pb.ClassifyRequest(
            images=blobs, model=_text(rng), top_k=top_k, confidence_threshold=threshold
        )
    return "Analyze", pb.AnalyzeRequest(
        images=blobs, model=_text(rng), top_k=top_k, fields=fields, confidence_threshold=threshold,
        anonymize=rng.random() < 0.5,
    )  # fmt: skip


def _infer_call(pb: Any, rng: random.Random, images: list[bytes]) -> tuple[str, Any]:
    request = pb.ModelInferRequest(model_name=_text(rng), id=_text(rng)[:100])
    for i in range(rng.choice([0, 1, 1, 2])):
        shape = [rng.choice([-1, 0, 1, 2, 3, 224, 2**31, 2**62]) for _ in range(rng.randint(0, 5))]
        tensor = request.inputs.add(name=f"in{i}", datatype=rng.choice(DATATYPES), shape=shape)
        if rng.random() < 0.5:
            request.raw_input_contents.append(_mutate(rng, rng.choice(images))[: rng.choice([0, 4, 64, 10**6])])
        else:
            tensor.contents.fp32_contents.extend([rng.random() for _ in range(rng.choice([0, 1, 12]))])
            tensor.contents.bytes_contents.extend([_mutate(rng, rng.choice(images))] * rng.choice([0, 1]))
    if rng.random() < 0.3:
        request.outputs.add(name=_text(rng)).parameters["classification"].int64_param = rng.choice([-1, 0, 3, 2**40])
    if rng.random() < 0.3:
        request.parameters["top_k"].string_param = _text(rng)
    return "ModelInfer", request


def run_grpc(target: str, requests: int, seed: int) -> dict[str, Any]:
    from serving.grpc.stubs import load

    images = [data for _, data in SEEDS["decode"]()]
    image_pb, image_grpc = load("image_service_pb2"), load("image_service_pb2_grpc")
    oip_pb, oip_grpc = load("inference_pb2"), load("inference_pb2_grpc")
    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    faults: list[str] = []
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        image_stub, oip_stub = image_grpc.ImageServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(requests):
            pick = rng.random()
            if pick < 0.45:
                method, message = _image_calls(image_pb, rng, images)
                stub = image_stub
            elif pick < 0.9:
                method, message = _infer_call(oip_pb, rng, images)
                stub = oip_stub
            else:
                method = rng.choice(["ModelMetadata", "ModelReady"])
                message = getattr(oip_pb, f"{method}Request")(name=_text(rng), version=_text(rng)[:20])
                stub = oip_stub
            raw = rng.random() < RAW_SHARE  # the message's bytes mutated: not always a valid protobuf any more
            label = f"{method} (raw)" if raw else method
            try:
                if raw:
                    service = "imgserve.v1.ImageService" if stub is image_stub else "inference.GRPCInferenceService"
                    channel.unary_unary(f"/{service}/{method}")(_mutate(rng, message.SerializeToString()), timeout=60)
                else:
                    getattr(stub, method)(message, timeout=60)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                if code in SERVER_FAULTS:
                    faults.append(f"{label}: {code.name}: {exc.details()}"[:500])
            statuses[f"{label} {code.name}"] += 1
    return {"requests": requests, "faults": faults, "statuses": dict(sorted(statuses.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's HTTP URL (default: start one)")
    parser.add_argument("--grpc", help="its gRPC host:port (with --url)")
    parser.add_argument("--max-examples", type=int, default=200, help="schemathesis test cases per operation")
    parser.add_argument("--max-time", type=int, help="schemathesis time budget, seconds")
    parser.add_argument("--grpc-requests", type=int, default=3000)
    parser.add_argument("--no-http", action="store_true", help="the gRPC requests only (e.g. behind Ray's proxy)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT / "api.json")
    options = parser.parse_args(argv)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    server, tmp = None, None
    if options.url is None:
        from loadtests.server_process import ServerProcess

        tmp = Path(tempfile.mkdtemp(prefix="imgserve-fuzz-"))
        server = ServerProcess(tmp, env=private_state(tmp))
        server.start()
        options.url, options.grpc = server.http_url, server.grpc_target
    try:
        start = time.monotonic()
        har = options.out.with_suffix(".har")
        http = (
            {"requests": 0, "status_5xx": 0, "statuses": {}, "exit_code": 0, "output_tail": ""}
            if options.no_http
            else run_schemathesis(options.url, options.max_examples, options.seed, har, options.max_time)
        )
        print(f"HTTP: {http['requests']} requests, statuses {http['statuses']}", flush=True)
        grpc_figures = run_grpc(options.grpc, options.grpc_requests, options.seed) if options.grpc else None
        if grpc_figures:
            print(f"gRPC: {grpc_figures['requests']} requests, {len(grpc_figures['faults'])} server faults", flush=True)
        alive = server is None or server.proc is None or server.proc.poll() is None
    finally:
        if server is not None:
            server.stop()
    report = {"seconds": round(time.monotonic() - start, 1), "http": http, "grpc": grpc_figures, "server_alive": alive}
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = http["status_5xx"] or http["exit_code"] or (grpc_figures and grpc_figures["faults"]) or not alive
    if failed:
        print(http["output_tail"], (grpc_figures or {}).get("faults", [])[:20], file=sys.stderr)
    if tmp is not None and not failed:  # the server's state and log: kept, and named, only where something failed
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp is not None:
        print(f"the server's log and state are kept in {tmp}", file=sys.stderr)
    total = http["requests"] + (grpc_figures["requests"] if grpc_figures else 0)
    faults = len((grpc_figures or {}).get("faults", []))
    print(f"{total} API requests; 5xx: {http['status_5xx']}; gRPC faults: {faults}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
