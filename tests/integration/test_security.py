"""Issue #14 against a real server: `imgserve serve` with IMGSERVE_AUTH=required and keys made with the CLI.

No key -> 401 / UNAUTHENTICATED everywhere but the probes; tenants cannot see each other's jobs (404); a viewer
cannot submit (403); a 5/s key gets 429 + Retry-After within a burst of 50 while another tenant is unaffected;
every action leaves exactly one audit entry; purge leaves no row and no stored object; the retention sweeper
of the running server deletes an expired job.
"""

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.grpc.stubs import load
from tests.integration.conftest import HOOK_PORT
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")
oip, oip_grpc = service_pb2, service_pb2_grpc  # Triton's own OIP stubs (ours conflict with them in one process)
MODEL = "mobilenet_v2_imagenet"


def bearer(world: dict[str, Any], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['keys'][name]}"}


def image() -> bytes:
    return (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()


HTTP_ROUTES = [
    ("POST", "/v1/classify"),
    ("POST", "/v1/analyze"),
    ("POST", "/v1/metadata"),
    ("GET", "/v1/models"),
    ("GET", "/v1/status"),
    ("GET", "/v1/categories"),
    ("POST", "/v1/batch"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/x"),
    ("DELETE", "/v1/jobs/x"),
    ("POST", "/v1/jobs/x/items"),
    ("POST", "/v1/jobs/x/start"),
    ("GET", "/v1/jobs/x/events"),
    ("GET", "/v1/jobs/x/results"),
    ("GET", "/v1/jobs/x/progress"),
    ("GET", "/v1/collections/x/images/1/thumbnail"),
    ("GET", "/v1/collections"),
    ("GET", "/v1/collections/x/report"),
    ("DELETE", "/v1/collections/x"),
    ("POST", "/v1/jobs/x/collection"),
    ("GET", "/v1/audit"),
    ("GET", "/metrics"),
    ("GET", "/v2"),
    ("GET", f"/v2/models/{MODEL}"),
    ("GET", f"/v2/models/{MODEL}/ready"),
    ("GET", f"/v2/models/{MODEL}/config"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/repository/index"),
    ("POST", f"/v2/models/{MODEL}/infer"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/whoami"),
    ("POST", "/v1/training-jobs"),
    ("GET", "/v1/training-jobs"),
    ("POST", "/v1/training-jobs/x/cancel"),
    ("POST", f"/v1/models/{MODEL}/load"),
    ("POST", f"/v1/models/{MODEL}/versions/1/promote"),
    ("POST", f"/v1/models/{MODEL}/canary"),
    ("DELETE", f"/v1/models/{MODEL}/canary"),
    ("POST", f"/v2/repository/models/{MODEL}/load"),
    ("POST", f"/v2/repository/models/{MODEL}/unload"),
]


def test_no_key_is_401_on_every_http_route(secure: dict[str, Any]) -> None:
    http = secure["http"]
    for method, path in HTTP_ROUTES:
        response = http.request(method, path, content=b"x")
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["kind"] == "unauthenticated"
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200


def test_no_key_is_unauthenticated_on_every_grpc_method(secure: dict[str, Any]) -> None:
    with grpc.insecure_channel(secure["server"].grpc_target) as channel:
        images, infer = pb_grpc.ImageServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
        calls = {
            "Classify": lambda: images.Classify(pb.ClassifyRequest(images=[image()])),
            "Analyze": lambda: images.Analyze(pb.AnalyzeRequest(images=[image()])),
            "AnalyzeStream": lambda: list(images.AnalyzeStream(iter([pb.AnalyzeStreamRequest(image=image())]))),
            "ListModels": lambda: images.ListModels(pb.ListModelsRequest()),
            "ServerMetadata": lambda: infer.ServerMetadata(oip.ServerMetadataRequest()),
            "ModelMetadata": lambda: infer.ModelMetadata(oip.ModelMetadataRequest(name=MODEL)),
            "ModelConfig": lambda: infer.ModelConfig(oip.ModelConfigRequest(name=MODEL)),
            "ModelReady": lambda: infer.ModelReady(oip.ModelReadyRequest(name=MODEL)),
            "RepositoryIndex": lambda: infer.RepositoryIndex(oip.RepositoryIndexRequest()),
            "ModelStatistics": lambda: infer.ModelStatistics(oip.ModelStatisticsRequest(name=MODEL)),
            "RepositoryModelLoad": lambda: infer.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=MODEL)),
            "ModelInfer": lambda: infer.ModelInfer(oip.ModelInferRequest(model_name=MODEL)),
            "ModelStreamInfer": lambda: list(infer.ModelStreamInfer(iter([oip.ModelInferRequest(model_name=MODEL)]))),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert infer.ServerLive(oip.ServerLiveRequest()).live
        assert infer.ServerReady(oip.ServerReadyRequest()).ready
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        metadata = [("authorization", f"Bearer {secure['keys']['a_analyst']}")]
        result = images.Classify(pb.ClassifyRequest(images=[image()]), metadata=metadata)
        assert result.results[0].predictions[0].label.startswith("streetcar")
        viewer = [("authorization", f"Bearer {secure['keys']['a_viewer']}")]
        with pytest.raises(grpc.RpcError) as denied:
            images.Classify(pb.ClassifyRequest(images=[image()]), metadata=viewer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_training_and_model_control_need_their_roles(secure: dict[str, Any]) -> None:
    http = secure["http"]
    body = {"model": "parcels", "dataset": "file:///nowhere"}
    assert http.post("/v1/training-jobs", json=body, headers=bearer(secure, "a_analyst")).status_code == 403
    for name in ("operator", "a_analyst"):  # model control is the admin's
        assert http.post(f"/v2/repository/models/{MODEL}/unload", headers=bearer(secure, name)).status_code == 403
        assert http.post(f"/v1/models/{MODEL}/versions/1/promote", headers=bearer(secure, name)).status_code == 403
    refused = http.post("/v1/training-jobs", json=body, headers=bearer(secure, "operator"))
    assert refused.status_code == 403 and "file://" in refused.json()["error"]  # no allowed root on this server
    assert http.get("/v1/training-jobs", headers=bearer(secure, "a_viewer")).json() == {"training_jobs": []}
    me = http.get("/v1/whoami", headers=bearer(secure, "a_viewer")).json()
    assert (me["role"], me["tenant"], me["auth"]) == ("viewer", "tenant-a", "required") and me["key_id"]
    assert http.get("/ui").status_code == 200  # the UI's static page: no data, no key needed
    with grpc.insecure_channel(secure["server"].grpc_target) as channel:
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        analyst = [("authorization", f"Bearer {secure['keys']['a_analyst']}")]
        with pytest.raises(grpc.RpcError) as denied:
            infer.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(model_name=MODEL), metadata=analyst)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_triton_client_sends_the_key_as_a_header(secure: dict[str, Any]) -> None:
    client = triton_grpc.InferenceServerClient(secure["server"].grpc_target)
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(MODEL)
    headers = {"authorization": f"Bearer {secure['keys']['a_analyst']}"}
    assert client.get_model_metadata(MODEL, headers=headers).name == MODEL
    tensor = triton_grpc.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
    assert client.infer(MODEL, [tensor], headers=headers).as_numpy("probs").shape[0] == 1


def test_viewer_cannot_submit_and_analyst_can(secure: dict[str, Any]) -> None:
    http = secure["http"]
    denied = http.post("/v1/classify", content=image(), headers=bearer(secure, "a_viewer"))
    assert denied.status_code == 403 and denied.json()["kind"] == "permission_denied"
    assert http.post("/v1/batch", content=b"file:///x", headers=bearer(secure, "a_viewer")).status_code == 403
    ok = http.post("/v1/classify", content=image(), headers=bearer(secure, "a_analyst"))
    assert ok.status_code == 200 and ok.json()["results"][0]["predictions"][0]["label"].startswith("streetcar")
    assert http.get("/metrics", headers=bearer(secure, "a_analyst")).status_code == 403
    for path in ("/metrics", "/v1/status", "/v2/models/stats"):  # server-wide: not for a customer's operator
        refused = http.get(path, headers=bearer(secure, "operator"))
        assert refused.status_code == 403 and "server-wide" in refused.json()["error"], refused.text
        assert http.get(path, headers=bearer(secure, "d_admin")).status_code == 200
    with grpc.insecure_channel(secure["server"].grpc_target) as channel:  # gRPC's statistics: server-wide too
        infer = oip_grpc.GRPCInferenceServiceStub(channel)
        customer = [("authorization", f"Bearer {secure['keys']['operator']}")]
        with pytest.raises(grpc.RpcError) as refused:
            infer.ModelStatistics(oip.ModelStatisticsRequest(name=MODEL), metadata=customer)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "server-wide" in refused.value.details()
        own = [("authorization", f"Bearer {secure['keys']['d_admin']}")]
        answered = infer.ModelStatistics(oip.ModelStatisticsRequest(name=MODEL), metadata=own)
        assert [row.name for row in answered.model_stats] == [MODEL]


def test_rate_limit_holds_and_other_tenants_are_unaffected(secure: dict[str, Any]) -> None:
    http = secure["http"]

    def limited(_: int) -> httpx.Response:
        return http.get("/v1/models", headers=bearer(secure, "limited"))

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(limited, range(50)))
    codes = [r.status_code for r in responses]
    assert 429 in codes and codes.count(200) >= 5, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["kind"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    others = [http.get("/v1/models", headers=bearer(secure, "other")).status_code for _ in range(30)]
    assert others == [200] * 30


def submit(secure: dict[str, Any], key: str, seed: int, webhook: str | None = None, start: bool = True) -> str:
    rng = np.random.default_rng(seed)
    import io

    from PIL import Image

    files = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        files.append(("image", (f"{seed}-{i}.png", buffer.getvalue(), "image/png")))
    params: dict[str, Any] = {"webhook_url": webhook} if webhook else {}
    if not start:
        params["start"] = "false"
    response = secure["http"].post("/v1/batch", files=files, params=params, headers=bearer(secure, key))
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_finished(secure: dict[str, Any], job: str, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = secure["http"].get(f"/v1/jobs/{job}", headers=bearer(secure, key)).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not finish: {status}")


def audit(secure: dict[str, Any], key: str = "d_admin", **params: Any) -> list[dict[str, Any]]:
    response = secure["http"].get("/v1/audit", params=params, headers=bearer(secure, key))
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def test_tenants_are_isolated_and_every_action_is_audited(secure: dict[str, Any]) -> None:
    http, since = secure["http"], time.time()
    job = submit(secure, "a_analyst", 1, webhook=f"http://127.0.0.1:{HOOK_PORT}/tenant-a-private-hook")
    wait_finished(secure, job, "a_analyst")
    b = bearer(secure, "b_analyst")
    assert job not in [j["job_id"] for j in http.get("/v1/jobs", headers=b).json()["jobs"]]
    for method, path in (
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/results"),
        ("GET", f"/v1/jobs/{job}/events"),
        ("DELETE", f"/v1/jobs/{job}"),
    ):
        response = http.request(method, path, headers=b)
        assert response.status_code == 404 and "tenant-a-private-hook" not in response.text, (path, response.text)
    purge_b = http.delete(f"/v1/jobs/{job}?purge=true", headers=bearer(secure, "b_admin"))
    assert purge_b.status_code == 404
    events = http.get(f"/v1/jobs/{job}/events", headers=bearer(secure, "a_viewer"))
    assert events.status_code == 200
    results = http.get(f"/v1/jobs/{job}/results", headers=bearer(secure, "a_viewer")).text
    assert results.count("\n") == 2
    cancel = submit(secure, "a_analyst", 2, start=False)  # left open: a started job of two images may end first
    cancelled = http.delete(f"/v1/jobs/{cancel}", headers=bearer(secure, "a_analyst"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    http.get("/v1/models", headers={"X-Forwarded-For": "6.6.6.6"})  # one refusal without a key; a forged address
    entries = audit(secure, since=since)
    mine = [(e["action"], e["target"], e["tenant"]) for e in entries if e["action"].startswith("job.")]
    assert mine == [
        ("job.create", job, "tenant-a"),
        ("job.create", cancel, "tenant-a"),
        ("job.cancel", cancel, "tenant-a"),
    ]
    refusals = [e for e in entries if e["action"] == "auth.unauthenticated" and e["target"] == "/v1/models"]
    assert len(refusals) == 1 and refusals[0]["client"] == "127.0.0.1"  # the TCP peer's, not X-Forwarded-For
    own = audit(secure, "a_admin", since=since)  # a tenant's admin: its own tenant's entries only
    assert own and {e["tenant"] for e in own} == {"tenant-a"}, {e["tenant"] for e in own}
    assert all(secure["keys"][n] not in str(entries) for n in secure["keys"])
    started = audit(secure, action="server.start")
    assert len(started) == 1 and started[0]["detail"]["listeners"] == ["127.0.0.1"]  # one Ingress replica
    created = audit(secure, action="key.create")
    assert sorted(e["target"] for e in created) == sorted(k.split("_")[1] for k in secure["keys"].values())


def test_collections_are_tenant_scoped_and_erased_with_their_job(secure: dict[str, Any]) -> None:
    http = secure["http"]
    job = submit(secure, "a_analyst", 5)
    wait_finished(secure, job, "a_analyst")
    b = bearer(secure, "b_analyst")
    assert http.post(f"/v1/jobs/{job}/collection", params={"name": "b-steal"}, headers=b).status_code == 404
    saved = http.post(f"/v1/jobs/{job}/collection", params={"name": "a-shoot"}, headers=bearer(secure, "a_analyst"))
    assert saved.status_code == 200 and saved.json()["images"] == 2, saved.text
    collection = saved.json()["id"]
    assert all(c["id"] != collection for c in http.get("/v1/collections", headers=b).json()["collections"])
    for method, path in (
        ("GET", f"/v1/collections/{collection}"),
        ("GET", f"/v1/collections/{collection}/images"),
        ("GET", f"/v1/collections/{collection}/export"),
        ("GET", f"/v1/collections/{collection}/report"),
        ("DELETE", f"/v1/collections/{collection}"),
        ("GET", "/v1/collections/a-shoot"),
    ):
        assert http.request(method, path, headers=b).status_code == 404, (method, path)
    viewer = bearer(secure, "a_viewer")
    assert http.get(f"/v1/collections/{collection}/images", headers=viewer).json()["images"]
    assert http.delete(f"/v1/collections/{collection}", headers=viewer).status_code == 403
    copy = http.post(f"/v1/jobs/{job}/collection", params={"name": "a-copy"}, headers=bearer(secure, "a_analyst"))
    assert http.delete("/v1/collections/a-copy", headers=bearer(secure, "a_analyst")).status_code == 200
    deleted = [e for e in audit(secure, action="collection.delete") if e["target"] == copy.json()["id"]]
    assert len(deleted) == 1 and deleted[0]["tenant"] == "tenant-a" and deleted[0]["detail"]["images"] == 2
    # Purging the job erases the collection saved from it (a copy of its results).
    assert http.delete(f"/v1/jobs/{job}?purge=true", headers=bearer(secure, "a_admin")).status_code == 200
    assert http.get(f"/v1/collections/{collection}", headers=viewer).status_code == 404


def stored_objects(secure: dict[str, Any]) -> set[str]:
    root = Path(secure["env"]["IMGSERVE_CACHE_DIR"]) / "objects" / "sha256"
    return {p.name for p in root.glob("*/*")}


def rows_of(secure: dict[str, Any], job: str) -> int:
    with sqlite3.connect(secure["db"]) as db:
        return sum(
            db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (job,)).fetchone()[0]
            for table, column in (
                ("jobs", "id"),
                ("job_items", "job_id"),
                ("job_results", "job_id"),
                ("job_events", "job_id"),
                ("webhook_deliveries", "job_id"),
            )
        )


def test_purge_leaves_no_row_and_no_object(secure: dict[str, Any]) -> None:
    before = stored_objects(secure)
    job = submit(secure, "a_analyst", 3)
    wait_finished(secure, job, "a_analyst")
    added = stored_objects(secure) - before
    assert len(added) == 2 and rows_of(secure, job) > 0
    assert secure["http"].delete(f"/v1/jobs/{job}?purge=true", headers=bearer(secure, "a_analyst")).status_code == 403
    purged = secure["http"].delete(f"/v1/jobs/{job}?purge=true", headers=bearer(secure, "a_admin"))
    assert purged.status_code == 200, purged.text
    assert rows_of(secure, job) == 0 and not (stored_objects(secure) & added)
    entries = audit(secure, action="job.purge")
    assert [e["target"] for e in entries if e["target"] == job] == [job]


def test_retention_sweeps_an_expired_job(secure: dict[str, Any]) -> None:
    before = stored_objects(secure)
    job = submit(secure, "b_analyst", 4)
    wait_finished(secure, job, "b_analyst")
    added = stored_objects(secure) - before
    with sqlite3.connect(secure["db"]) as db:  # finished two days ago: past IMGSERVE_RETENTION_DAYS=1
        db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (time.time() - 2 * 86400, job))
    deadline = time.monotonic() + 30
    while rows_of(secure, job) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rows_of(secure, job) == 0 and not (stored_objects(secure) & added)
    assert [e["target"] for e in audit(secure, action="job.expire")] == [job]


def test_webhooks_to_loopback_are_refused_and_never_connect(secure: dict[str, Any]) -> None:
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        for url in (
            f"http://127.0.0.1:{port}/hook",
            f"http://[::1]:{port}/hook",
            f"http://2130706433:{port}/hook",
            f"http://0x7f.1:{port}/hook",
            f"http://localhost.:{port}/hook",
            f"http://169.254.169.254:{port}/latest/meta-data",
        ):
            response = secure["http"].post(
                "/v1/batch", params={"webhook_url": url}, content=b"x", headers=bearer(secure, "a_analyst")
            )
            assert response.status_code == 400 and response.json()["kind"] == "bad_request", (url, response.text)
        time.sleep(0.5)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()


def series(secure: dict[str, Any]) -> set[str]:
    response = secure["http"].get("/metrics", headers=bearer(secure, "d_admin"))
    assert response.status_code == 200, response.text
    text = response.text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_random_model_names_leave_the_metrics_series_unchanged(secure: dict[str, Any]) -> None:
    http, key = secure["http"], bearer(secure, "other")
    metadata = [("authorization", key["Authorization"])]

    def one(i: int) -> int:
        if i % 2:
            return http.post(f"/v1/classify?model=random-{i}", content=b"x", headers=key).status_code
        return http.get(f"/v2/models/random-{i}/ready", headers=key).status_code

    with grpc.insecure_channel(secure["server"].grpc_target) as channel:
        stub = pb_grpc.ImageServiceStub(channel)

        def rpc(i: int) -> grpc.StatusCode:
            try:
                stub.Classify(pb.ClassifyRequest(images=[b"x"], model=f"random-{i}"), metadata=metadata)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        for warm in range(2):  # every (endpoint, status) pair these requests produce exists once
            one(warm), rpc(warm)
        time.sleep(1)
        before = series(secure)
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(one, range(10_000)))
            rpcs = list(pool.map(rpc, range(200)))
        assert set(codes) == {404} and set(rpcs) == {grpc.StatusCode.NOT_FOUND}
        time.sleep(1)
        after = series(secure)
    assert after == before, sorted(after ^ before)[:10]
    assert not any("random-" in s for s in after)
