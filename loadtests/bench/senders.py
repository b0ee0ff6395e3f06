"""Clients for the baselines (imgserve uses closed_loop's http_sender / grpc_sender), over the same HTTP client
(loadtests.raw_http) as imgserve's."""

import contextlib
from collections.abc import AsyncIterator, Iterable

import numpy as np

from loadtests.bench.catalog import MODEL_NAME
from loadtests.closed_loop import OCTET, Send, SenderFactory
from loadtests.raw_http import raw_http_client


@contextlib.asynccontextmanager
async def naive_sender(url: str, concurrency: int) -> AsyncIterator[Send]:
    async with raw_http_client(url, concurrency, OCTET) as client:

        async def send(image: bytes) -> bool:
            response = await client.post("/classify?top_k=1", image)
            return response is not None and response.status == 200

        yield send


def triton_request(image: bytes) -> tuple[bytes, dict[str, str]]:
    """An OIP binary-tensor request carrying `image` as a [1, 1] BYTES tensor (what tritonclient.http sends)."""
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_), binary_data=True)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("INDICES", "SCORES")]
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor], outputs)
    headers = dict(OCTET)
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def triton_top1(body: bytes, header_length: str | None) -> int:
    import tritonclient.http as triton_http

    result = triton_http.InferenceServerClient.parse_response_body(
        body, header_length=int(header_length) if header_length else None
    )
    return int(result.as_numpy("INDICES")[0][0])


def make_triton_sender(images: Iterable[bytes]) -> SenderFactory:
    """Request bodies are encoded once per distinct image, before the clock starts (the others send raw bytes)."""
    bodies = {id(image): triton_request(image) for image in images}

    @contextlib.asynccontextmanager
    async def triton_sender(url: str, concurrency: int) -> AsyncIterator[Send]:
        async with raw_http_client(url, concurrency) as client:
            path = f"/v2/models/{MODEL_NAME}/infer"

            async def send(image: bytes) -> bool:
                body, headers = bodies.get(id(image)) or triton_request(image)
                response = await client.post(path, body, headers)
                if response is None or response.status != 200:
                    return False
                try:
                    return triton_top1(response.body, response.headers.get("inference-header-content-length")) >= 0
                except Exception:  # noqa: BLE001 - an unparsable answer is an error
                    return False

            yield send

    return triton_sender
