"""gRPC ingress: OIP with the unmodified Triton client, ImageService, health, status codes.

Every test runs twice: against the default graph (Ray Serve's gRPC proxy in front of the Ingress) and against
the local placement (both on the Ingress replica's own grpc.aio listener, serving.deployments.direct_ingress)."""

import asyncio
import queue
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.grpc.stubs import load
from tests.integration.conftest import RunningServer
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")
MODEL = "mobilenet_v2_imagenet"
EXPECTED = {
    "n04335435_streetcar.JPEG": "streetcar",
    "n03249569_drum.JPEG": "drum",
    "n02101006_Gordon_setter.JPEG": "Gordon setter",
    "n01749939_green_mamba.JPEG": "green mamba",
    "n07583066_guacamole.JPEG": "guacamole",
}


def _images() -> list[bytes]:
    return [(require(IMAGENET_SAMPLES) / name).read_bytes() for name in EXPECTED]


@pytest.fixture(scope="module", params=["graph", "local"])
def target(request: pytest.FixtureRequest, server: RunningServer, local_server: RunningServer) -> RunningServer:
    """The server under test: the graph placement or the local one (both on the Ingress replica's listeners)."""
    return server if request.param == "graph" else local_server


@pytest.fixture(scope="module")
def http(target: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def triton(target: RunningServer) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(target.grpc_target)


@pytest.fixture(scope="module")
def channel(target: RunningServer) -> grpc.Channel:
    with grpc.insecure_channel(target.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def images_stub(channel: grpc.Channel):  # noqa: ANN201 - generated stub type
    return pb_grpc.ImageServiceStub(channel)


def test_oip_health_and_metadata(triton: triton_grpc.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)
    assert triton.get_server_metadata().name == "imgserve"
    meta = triton.get_model_metadata(MODEL)
    assert meta.inputs[0].name == "input" and list(meta.inputs[0].shape) == [-1, 3, 224, 224]
    assert meta.outputs[0].name == "probs" and meta.outputs[0].datatype == "FP32"
    index = {m.name: m.state for m in triton.get_model_repository_index().models}
    assert index[MODEL] == "READY"
    # an unknown model or version is "not ready", as Triton answers it (it was NOT_FOUND: is_model_ready raised)
    assert not triton.is_model_ready("nope") and not triton.is_model_ready(MODEL, "99")


def test_model_infer_raw_contents_equals_http(triton: triton_grpc.InferenceServerClient, target: RunningServer) -> None:
    batch = np.random.default_rng(0).uniform(-1, 1, size=(3, 3, 224, 224)).astype(np.float32)
    grpc_input = triton_grpc.InferInput("input", list(batch.shape), "FP32")
    grpc_input.set_data_from_numpy(batch)  # tritonclient.grpc sends raw_input_contents
    grpc_probs = triton.infer(MODEL, [grpc_input], outputs=[triton_grpc.InferRequestedOutput("probs")]).as_numpy(
        "probs"
    )
    http_client = triton_http.InferenceServerClient(target.http_url.removeprefix("http://"))
    http_input = triton_http.InferInput("input", list(batch.shape), "FP32")
    http_input.set_data_from_numpy(batch, binary_data=True)
    http_probs = http_client.infer(MODEL, [http_input]).as_numpy("probs")
    assert grpc_probs.shape == (3, 1001)
    np.testing.assert_array_equal(grpc_probs, http_probs)


def test_image_level_bytes_model_equals_http_classify(
    triton: triton_grpc.InferenceServerClient, http: httpx.Client
) -> None:
    images = _images()
    tensor = triton_grpc.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    result = triton.infer("classify", [tensor], parameters={"top_k": 3})
    labels, scores, indices = result.as_numpy("LABELS"), result.as_numpy("SCORES"), result.as_numpy("INDICES")
    files = [("image", (n, d, "image/jpeg")) for n, d in zip(EXPECTED, images, strict=True)]
    over_http = http.post("/v1/classify", files=files, params={"top_k": 3}).json()["results"]
    for i, expected in enumerate(over_http):
        assert [p["index"] for p in expected["predictions"]] == indices[i].tolist()
        np.testing.assert_allclose([p["score"] for p in expected["predictions"]], scores[i], atol=1e-6)
        assert labels[i, 0].decode() == expected["predictions"][0]["label"]


def test_model_stream_infer_in_order_with_errors(
    triton: triton_grpc.InferenceServerClient, channel: grpc.Channel
) -> None:
    images = _images()
    sent = [images[0], b"not an image", images[1], images[2]]
    answers: queue.Queue = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, data in enumerate(sent):
            tensor = triton_grpc.InferInput("IMAGE", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
            triton.async_stream_infer("classify", [tensor], request_id=str(i))
        got = [answers.get(timeout=60) for _ in sent]
    finally:
        triton.stop_stream()
    assert got[1][0] is None and "INVALID_ARGUMENT" in str(got[1][1])
    # tritonclient hands a failed answer's error alone; the answer itself names the request, as Triton's does
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stream = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer
    bad = service_pb2.ModelInferRequest(model_name="nope", id="req-7")
    (failed,) = list(stream(iter([bad]), timeout=60))
    assert failed.error_message.startswith("NOT_FOUND") and failed.infer_response.id == "req-7"
    ok = [(r.get_response().id, r.as_numpy("LABELS")[0, 0].decode()) for r, e in got if e is None]
    assert [i for i, _ in ok] == ["0", "2", "3"]
    assert ok[0][1].startswith("streetcar") and ok[1][1].startswith("drum") and ok[2][1] == "Gordon setter"


def test_image_service_classify_and_analyze(images_stub) -> None:  # noqa: ANN001
    images = _images()
    response = images_stub.Classify(pb.ClassifyRequest(images=images, top_k=2), timeout=60)
    assert [r.predictions[0].label.startswith(v) for r, v in zip(response.results, EXPECTED.values(), strict=True)] == [
        True
    ] * len(images)
    analyzed = images_stub.Analyze(pb.AnalyzeRequest(images=images[:2], fields=["classification"]), timeout=60)
    assert [r.classification.predictions[0].index for r in analyzed.results] == [
        r.predictions[0].index for r in response.results[:2]
    ]


def test_analyze_stream_one_response_per_image_in_order(images_stub) -> None:  # noqa: ANN001
    images = _images()
    requests = [pb.AnalyzeStreamRequest(image=d, request_id=f"frame-{i}", top_k=1) for i, d in enumerate(images)]
    requests.insert(2, pb.AnalyzeStreamRequest(image=b"\xff\xd8\xff broken", request_id="broken", top_k=1))
    responses = list(images_stub.AnalyzeStream(iter(requests), timeout=120))
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert responses[2].error.code == "INVALID_ARGUMENT" and responses[2].error.kind == "invalid_image"
    good = [r for r in responses if not r.error.code]
    for response, expected in zip(good, EXPECTED.values(), strict=True):
        assert response.analysis.classification.predictions[0].label.startswith(expected)


def test_health_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    # the health protocol: Check of a service the server does not know fails with NOT_FOUND (Watch answers
    # SERVICE_UNKNOWN); it answered OK / SERVICE_UNKNOWN before
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _code(call) -> grpc.StatusCode:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_status_codes(images_stub, triton: triton_grpc.InferenceServerClient) -> None:  # noqa: ANN001
    good = _images()[0]
    assert (
        _code(lambda: images_stub.Classify(pb.ClassifyRequest(images=[good[:3000]])))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(lambda: images_stub.Classify(pb.ClassifyRequest(images=[b"GIF89a"]))) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(lambda: images_stub.Classify(pb.ClassifyRequest(images=[good], model="nope")))
        == grpc.StatusCode.NOT_FOUND
    )
    assert _code(lambda: images_stub.Classify(pb.ClassifyRequest(images=[good]), timeout=0.001)) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    models = {m.name: m.state for m in images_stub.ListModels(pb.ListModelsRequest()).models}
    if models.get("resnet50") == "UNAVAILABLE":
        call = lambda: images_stub.Classify(pb.ClassifyRequest(images=[good], model="resnet50"))  # noqa: E731
        assert _code(call) == grpc.StatusCode.UNAVAILABLE
    wrong = triton_grpc.InferInput("input", [1, 3, 8, 8], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT|StatusCode.INVALID_ARGUMENT"):
        triton.infer(MODEL, [wrong])
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        triton.get_model_metadata("no_such_model")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        triton.get_model_metadata("classify", model_version="99")  # the image-level model is version 1 only


def test_oip_values_out_of_range_are_invalid_argument(channel: grpc.Channel) -> None:
    """Typed contents the datatype cannot hold and a non-integer `classification` were INTERNAL errors (an
    OverflowError / ValueError escaped); tritonclient always sends raw contents, so the messages are built here."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = service_pb2.ModelInferRequest.InferInputTensor
    too_big = service_pb2.InferTensorContents(uint_contents=[300])
    uint8 = service_pb2.ModelInferRequest(
        model_name=MODEL, inputs=[tensor(name="input", datatype="UINT8", shape=[1], contents=too_big)]
    )
    assert _code(lambda: stub.ModelInfer(uint8)) == grpc.StatusCode.INVALID_ARGUMENT
    wanted = service_pb2.ModelInferRequest.InferRequestedOutputTensor(
        name="probs", parameters={"classification": service_pb2.InferParameter(string_param="two")}
    )
    zeros = np.zeros((1, 3, 8, 8), np.float32)
    named = service_pb2.ModelInferRequest(
        model_name=MODEL,
        inputs=[tensor(name="input", datatype="FP32", shape=list(zeros.shape))],
        raw_input_contents=[zeros.tobytes()],
        outputs=[wanted],
    )
    assert _code(lambda: stub.ModelInfer(named)) == grpc.StatusCode.INVALID_ARGUMENT


NOT_UTF8 = b"\x12\x02\xff\xfe"  # field 2 (a string of ClassifyRequest and AnalyzeStreamRequest) not UTF-8
TRUNCATED = b"\x0a\x05abc"  # field 1 announces 5 bytes, 3 follow


def _refused_as_malformed(call, method: str, kind_expected: bool = True) -> None:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, refused.value.details())
    assert f"not a valid {method} request" in refused.value.details()
    if kind_expected:
        assert dict(refused.value.trailing_metadata() or ()).get("imgserve-error-kind") == "bad_request", method


def test_malformed_messages_are_invalid_argument_on_every_kind_of_method(
    target: RunningServer, channel: grpc.Channel
) -> None:
    """Bytes that are not a valid message of the method's request type. Behind Ray's proxy (the graph target) a
    unary message was UNKNOWN "Unexpected <class '...DecodeError'>" and a stream's ended the stream with OK, the
    messages after it dropped. A stream's refusal carries its kind on the direct listeners only."""
    direct = "--ray-proxy" not in target.extra_args
    classify_raw = channel.unary_unary("/imgserve.v1.ImageService/Classify")
    for message in (NOT_UTF8, TRUNCATED):
        _refused_as_malformed(lambda: classify_raw(message, timeout=60), "Classify")  # noqa: B023 - called at once
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    _refused_as_malformed(lambda: check(TRUNCATED, timeout=60), "Check")
    infer = "/inference.GRPCInferenceService/ModelInfer"
    _refused_as_malformed(lambda: channel.unary_unary(infer)(TRUNCATED, timeout=60), "ModelInfer")
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
    _refused_as_malformed(lambda: list(watch(TRUNCATED, timeout=60)), "Watch", direct)
    model_stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    _refused_as_malformed(lambda: list(model_stream(iter([TRUNCATED]), timeout=60)), "ModelStreamInfer", direct)
    good = pb.AnalyzeStreamRequest(image=_images()[0], request_id="a", fields=["metadata"]).SerializeToString()
    analyze = channel.stream_stream(
        "/imgserve.v1.ImageService/AnalyzeStream", response_deserializer=pb.AnalyzeStreamResponse.FromString
    )
    answers: list[str] = []

    def read_stream() -> None:
        for answer in analyze(iter([good, NOT_UTF8, good]), timeout=60):
            answers.append(answer.request_id)

    _refused_as_malformed(read_stream, "AnalyzeStream", direct)
    assert answers in ([], ["a"])  # the stream reads ahead of its answers: the one before may or may not be sent
    classify = channel.unary_unary(
        "/imgserve.v1.ImageService/Classify", response_deserializer=pb.ClassifyResponse.FromString
    )
    answer = classify(pb.ClassifyRequest(images=[_images()[0]]).SerializeToString(), timeout=60)
    assert answer.results[0].predictions[0].label.startswith("streetcar")


def test_overload_is_resource_exhausted(target: RunningServer, images_stub) -> None:  # noqa: ANN001
    data = _images()[0]

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(target.grpc_target) as channel:
            stub = pb_grpc.ImageServiceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.Classify(pb.ClassifyRequest(images=[data], top_k=1), timeout=120)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one() for _ in range(300)))

    codes = set(asyncio.run(burst()))
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
    assert images_stub.Classify(pb.ClassifyRequest(images=[data], top_k=1), timeout=60).results[0].predictions


def test_convert_and_enhance_over_http_and_grpc(http: httpx.Client, images_stub, target: RunningServer) -> None:  # noqa: ANN001
    """Image operations on the real server, both placements: the same options over both protocols give the same
    facts, and enhancement reads the served quality stage (the graph's own deployment in the graph placement)."""
    photo = (require(IMAGENET_SAMPLES) / next(iter(EXPECTED))).read_bytes()
    options = {"format": "webp", "quality": "80", "max_side": "256"}
    over_http = http.post("/v1/convert", params={**options, "report": "json"}, content=photo).json()
    reply = images_stub.Convert(pb.ImageOperationRequest(image=photo, options=options))
    assert reply.content_type == "image/webp" and over_http["content_type"] == "image/webp"
    assert reply.report["size"] == over_http["size"] and max(over_http["size"]) == 256
    assert reply.report["output_bytes"] == over_http["output_bytes"] == len(reply.image)
    enhanced = http.post("/v1/enhance", params={"contrast": "1.3", "format": "png", "report": "json"}, content=photo)
    assert enhanced.status_code == 200, enhanced.text
    report = enhanced.json()
    assert [o["operation"] for o in report["operations"]] == ["contrast"]
    assert 0 <= report["quality_before"]["score"] <= 100 and 0 <= report["quality_after"]["score"] <= 100
    with pytest.raises(grpc.RpcError) as error:
        images_stub.Enhance(pb.ImageOperationRequest(image=photo, options={"brightness": "9"}))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert http.post("/v1/convert", params={"format": "bmp2"}, content=photo).status_code == 400
    from serving.client import Client

    for url in (target.http_url, f"grpc://{target.grpc_target}"):  # the SDK: same result over both transports
        with Client(url) as client:
            result = client.convert(photo, format="webp", quality=80, max_side=256)
            assert result.content_type == "image/webp" and result.data == reply.image
            assert result.report["compression_ratio"] == pytest.approx(len(photo) / len(reply.image), rel=1e-3)
            enhanced_ = client.enhance(photo, contrast=1.3, format="png")
            assert [o["operation"] for o in enhanced_.report["operations"]] == ["contrast"]
