"""The load test's server-side figures (`loadtests.server_stats`, logged by `make loadtest` at the end): from the tiny
models' server, whose `/v2/models/tiny/stats` is read before and after a known load."""

from typing import Any

import numpy as np
import pytest

from loadtests import server_stats
from tests.unit.tiny_server import TinyServer

pytestmark = pytest.mark.unit


def test_the_figures_of_a_known_load(tiny_server: TinyServer, tiny_clients: tuple[Any, Any]) -> None:
    import tritonclient.http as triton_http

    url = f"http://{tiny_server.http_url}"
    before, why = server_stats.fetch(url, "tiny")
    assert before is not None and why == ""
    tensor = triton_http.InferInput("input", [4, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((4, 3, 32, 32), np.float32))
    for _ in range(3):  # three batches of 4, one after the other
        tiny_clients[1].infer("tiny", [tensor])
    after, _ = server_stats.fetch(url, "tiny")
    assert after is not None
    figures = server_stats.breakdown(before, after)
    assert (figures["images"], figures["batches"], figures["mean_batch"], figures["failed"]) == (12, 3, 4.0, 0)
    assert figures["compute_infer_ms"] > 0 and figures["queue_ms"] >= 0
    parts = sum(figures[f"{phase}_ms"] for phase in server_stats.PHASES)
    assert figures["request_ms"] >= parts * 0.999  # queueing to the batch's end holds every phase
    line = server_stats.describe("tiny", figures)
    assert line.startswith("server, tiny: 12 images in 3 batches (4.0 per batch, 0 failed)")


def test_a_refusal_or_no_server_is_said_not_raised(tiny_server: TinyServer) -> None:
    row, why = server_stats.fetch(f"http://{tiny_server.http_url}", "no_such_model")
    assert row is None and "404" in why
    row, why = server_stats.fetch("http://127.0.0.1:9", "tiny")  # nothing listens on the discard port
    assert row is None and "ConnectError" in why
