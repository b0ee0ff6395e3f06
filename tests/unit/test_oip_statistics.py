"""Triton's statistics extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`, gRPC `ModelStatistics`), as
tritonclient's `get_inference_statistics` reads it (perf_analyzer asks for it before measuring and fails without it).

The figures' arithmetic on known counter samples; a model stage recording its batches; and the tiny models' server
(a process of its own: imgserve's OIP stubs and tritonclient's cannot load in one process, as in
`tests/unit/tiny_server.py`) driven by tritonclient over HTTP and gRPC."""

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client.samples import Sample

from serving.model_statistics import model_statistics
from tests.unit.tiny_server import UNKNOWN_MODELS_AND_VERSIONS, assert_declared_as_tritons, assert_not_found_on_both

pytestmark = pytest.mark.unit


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, {"model": "m", "version": "1", **labels}, value, None, None)


def test_the_figures_follow_tritons_definitions() -> None:
    """Three batches of 2 and one of 4 (two replicas' samples of the same series are summed): each item is charged
    its whole batch's time, as Triton charges every request of a batch; batch_stats count batches."""
    executions = "imgserve_model_executions_total"
    seconds = "imgserve_model_execution_seconds_total"
    samples = [
        sample(executions, 2, batch_size="2"),
        sample(executions, 1, batch_size="2"),  # another replica's batches of 2
        sample(executions, 1, batch_size="4"),
        sample(seconds, 0.030, batch_size="2", phase="compute_infer"),
        sample(seconds, 0.020, batch_size="4", phase="compute_infer"),
        sample(seconds, 0.003, batch_size="2", phase="compute_input"),
        sample(seconds, 0.001, batch_size="4", phase="compute_input"),
        sample(seconds, 0.0006, batch_size="2", phase="compute_output"),
        sample("imgserve_model_inferences_total", 10, outcome="success"),
        sample("imgserve_model_inferences_total", 2, outcome="fail"),
        sample("imgserve_model_inference_seconds_total", 0.05, phase="queue"),
        sample("imgserve_model_inference_seconds_total", 0.2, phase="success"),
        sample("imgserve_model_inference_seconds_total", 0.01, phase="fail"),
        sample("imgserve_model_last_inference_timestamp_seconds", 1_700_000_000.5),
        sample("imgserve_model_last_inference_timestamp_seconds", 1_600_000_000.0),
        sample("imgserve_model_executions_created", 1e9, batch_size="2"),  # not a count
        Sample("imgserve_model_executions_total", {"model": "other", "version": "3", "batch_size": "8"}, 5, None),
    ]
    [row, unseen] = model_statistics([("m", "1"), ("m", "2")], samples)
    assert (row["name"], row["version"], row["inference_count"], row["execution_count"]) == ("m", "1", 10, 4)
    assert row["last_inference"] == 1_700_000_000_500  # milliseconds, the latest of the replicas'
    stats = row["inference_stats"]
    assert stats["success"] == {"count": 10, "ns": 200_000_000} and stats["fail"] == {"count": 2, "ns": 10_000_000}
    assert stats["queue"] == {"count": 10, "ns": 50_000_000}  # the successes' (perf_analyzer divides by them)
    assert stats["compute_infer"] == {"count": 10, "ns": 2 * 30_000_000 + 4 * 20_000_000}
    assert stats["compute_input"] == {"count": 10, "ns": 2 * 3_000_000 + 4 * 1_000_000}
    assert stats["compute_output"] == {"count": 10, "ns": 1_200_000}
    assert stats["cache_hit"] == stats["cache_miss"] == {"count": 0, "ns": 0}
    assert [(b["batch_size"], b["compute_infer"]["count"], b["compute_infer"]["ns"]) for b in row["batch_stats"]] == [
        (2, 3, 30_000_000),
        (4, 1, 20_000_000),
    ]
    assert row["batch_stats"][1]["compute_output"] == {"count": 1, "ns": 0} and row["memory_usage"] == []
    assert unseen["version"] == "2" and unseen["inference_count"] == unseen["execution_count"] == 0
    assert unseen["batch_stats"] == [] and unseen["inference_stats"]["success"] == {"count": 0, "ns": 0}


def test_a_model_stage_records_its_batches_and_its_failures(tmp_path: Path) -> None:
    """Through the tiny models' service in this process (no PROMETHEUS_MULTIPROC_DIR: this process's counters)."""
    from tests.unit.tiny_models import tiny_local_service

    service, _ = tiny_local_service(tmp_path)
    entry = service.loaded_entry("tiny")
    stage = service.pipeline.models["tiny"]

    def figures() -> dict[str, Any]:
        return model_statistics([("tiny", entry.version)])[0]

    async def infer(count: int) -> None:
        tensor = np.zeros((3, 32, 32), np.float32)
        await asyncio.gather(*(stage.infer(tensor) for _ in range(count)))

    before = figures()
    asyncio.run(infer(5))
    after = figures()
    assert after["inference_count"] - before["inference_count"] == 5
    ran = after["execution_count"] - before["execution_count"]
    assert 1 <= ran <= 5
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) - before["execution_count"] == ran

    def ns(row: dict[str, Any], phase: str) -> int:
        return row["inference_stats"][phase]["ns"]

    spent = {phase: ns(after, phase) - ns(before, phase) for phase in ("success", "queue", "compute_infer")}
    assert spent["compute_infer"] > 0 and spent["success"] >= spent["queue"] + spent["compute_infer"]
    assert after["last_inference"] >= before["last_inference"] > 0 or before["inference_count"] == 0

    def broken(batch: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("the backend failed")

    stage.backend.infer = broken  # a backend that raises: its batch's items are failures, not executions
    with pytest.raises(RuntimeError, match="the backend failed"):
        asyncio.run(infer(2))
    failed = figures()
    assert failed["inference_stats"]["fail"]["count"] - after["inference_stats"]["fail"]["count"] == 2
    assert (failed["inference_count"], failed["execution_count"]) == (
        after["inference_count"],
        after["execution_count"],
    )
    assert failed["inference_stats"]["queue"] == after["inference_stats"]["queue"]  # a failure is `fail` alone


COMPUTE = ("compute_input", "compute_infer", "compute_output")
INFER_STATISTICS = ("success", "fail", "queue", *COMPUTE, "cache_hit", "cache_miss")


def as_http(response: Any) -> dict[str, Any]:
    """tritonclient.grpc's `ModelStatisticsResponse`, read field by field, in the HTTP route's JSON shape."""

    def duration(value: Any) -> dict[str, int]:
        return {"count": value.count, "ns": value.ns}

    def batch_phases(batch: Any) -> dict[str, dict[str, int]]:
        return {phase: duration(getattr(batch, phase)) for phase in COMPUTE}

    return {
        "model_stats": [
            {
                "name": row.name,
                "version": row.version,
                "last_inference": row.last_inference,
                "inference_count": row.inference_count,
                "execution_count": row.execution_count,
                "inference_stats": {f: duration(getattr(row.inference_stats, f)) for f in INFER_STATISTICS},
                "batch_stats": [{"batch_size": b.batch_size, **batch_phases(b)} for b in row.batch_stats],
                "memory_usage": list(row.memory_usage),
            }
            for row in response.model_stats
        ]
    }


def tiny_input(rows: int) -> Any:
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("input", [rows, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(rows).random((rows, 3, 32, 32), dtype=np.float32))
    return tensor


def test_every_loaded_model_is_listed_and_both_protocols_agree(tiny_clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = tiny_clients
    http_client.infer("tiny", [tiny_input(2)])
    over_http = http_client.get_inference_statistics()
    assert [(row["name"], row["version"]) for row in over_http["model_stats"]] == [
        ("classify", "1"),
        ("quality_mos", "1"),
        ("tiny", "1"),
    ]
    assert as_http(grpc_client.get_inference_statistics()) == over_http  # no request in between
    tiny = grpc_client.get_inference_statistics("tiny", as_json=True)["model_stats"][0]  # tritonclient's JSON form
    assert (
        tiny["name"] == "tiny" and int(tiny["inference_count"]) >= 2 and int(tiny["inference_stats"]["success"]["ns"])
    )
    assert "statistics" in http_client.get_server_metadata()["extensions"]


def test_inferences_are_counted_per_item_and_per_batch(tiny_clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = tiny_clients
    before = http_client.get_inference_statistics("tiny")["model_stats"][0]
    for _ in range(2):  # one after the other: two batches of 3
        http_client.infer("tiny", [tiny_input(3)])
    after = http_client.get_inference_statistics("tiny", "1")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 6
    assert after["execution_count"] - before["execution_count"] == 2
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 6

    def batches_of_3(row: dict[str, Any]) -> int:
        return sum(b["compute_infer"]["count"] for b in row["batch_stats"] if b["batch_size"] == 3)

    assert batches_of_3(after) - batches_of_3(before) == 2
    assert after["last_inference"] >= before["last_inference"]
    assert as_http(grpc_client.get_inference_statistics("tiny", "1")) == {"model_stats": [after]}


def test_the_image_level_model_counts_its_images(tiny_clients: tuple[Any, Any]) -> None:
    import tritonclient.http as triton_http

    _, http_client = tiny_clients
    encoded = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 60, 30)).save(encoded, "JPEG")
    images = triton_http.InferInput("IMAGE", [2], "BYTES")
    images.set_data_from_numpy(np.array([encoded.getvalue()] * 2, dtype=np.object_))

    def rows() -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in http_client.get_inference_statistics()["model_stats"]}

    before = rows()
    http_client.infer("classify", [images])
    after = rows()
    assert after["classify"]["inference_count"] - before["classify"]["inference_count"] == 2  # one request of 2
    assert after["classify"]["execution_count"] - before["classify"]["execution_count"] == 1
    assert after["tiny"]["inference_count"] - before["tiny"]["inference_count"] == 2  # the classifier it ran


@pytest.mark.parametrize(("model", "version"), UNKNOWN_MODELS_AND_VERSIONS)
def test_unknown_models_and_versions_are_not_found_on_both(
    tiny_clients: tuple[Any, Any], model: str, version: str
) -> None:
    grpc_client, http_client = tiny_clients
    assert_not_found_on_both(
        lambda: grpc_client.get_inference_statistics(model, version),
        lambda: http_client.get_inference_statistics(model, version),
    )


STATISTICS_MESSAGES = (
    "ModelStatisticsRequest",
    "ModelStatisticsResponse",
    "ModelStatistics",
    "InferStatistics",
    "InferBatchStatistics",
    "StatisticDuration",
    "MemoryUsage",
)


def test_the_declared_fields_have_tritons_numbers_and_types() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    assert_declared_as_tritons("ModelStatistics", STATISTICS_MESSAGES, service_pb2)
