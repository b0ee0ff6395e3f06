"""Batch jobs against the real server: 1000 photos as one job on PostgreSQL (checked against the sync
endpoint, with online latency probed while it runs), a kill -9 and restart mid-job on SQLite (no item lost or
recorded twice), signed webhooks, and hostile inputs (corrupt entries, path traversal, links, zip bombs, URIs
outside the allowed root)."""

import csv
import io
import json
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from serving.client import Client
from serving.jobs.webhooks import SIGNATURE_HEADER, verify
from tests.integration.batch_server import BatchServer, ClientThreads
from tests.integration.postgres import running_postgres
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = pytest.mark.integration
SECRET = "batch-test-secret"
CONCURRENCY = 8
PROBE_IMAGE = "n04335435_streetcar.JPEG"


# ---- helpers ---------------------------------------------------------------------------------------------
class WebhookReceiver:
    """Records every POST (path, headers, raw body) and answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                calls.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls_to(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [c for c in self.calls if c[0] == path]

    def wait_for(self, path: str, timeout_s: float = 30.0) -> list[tuple[str, dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout_s
        while not self.calls_to(path) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # a duplicate would arrive right behind the first call
        return self.calls_to(path)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    yield hooks
    hooks.server.shutdown()


def _photos() -> list[Path]:
    photos = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))
    assert len(photos) == 1000
    return photos


def _server_env(tmp: Path, database_url: str, receiver: WebhookReceiver) -> dict[str, str]:
    return {
        "IMGSERVE_DATABASE_URL": database_url,
        "IMGSERVE_OBJECT_STORE": str(tmp / "objects"),
        "IMGSERVE_BATCH_ALLOWED_ROOT": str(require(IMAGENET_SAMPLES)),
        "IMGSERVE_WEBHOOK_SECRET": SECRET,
        # the receiver is on loopback: webhook targets must be public unless allow-listed (this port only)
        "IMGSERVE_WEBHOOK_ALLOW": f"127.0.0.1:{receiver.server.server_address[1]}",
        "IMGSERVE_BATCH_CONCURRENCY": str(CONCURRENCY),
        "IMGSERVE_BATCH_POLL_S": "1",
    }


_SYNC_ANSWERS: dict[str, tuple[int, float, float]] = {}  # same model and pipeline on every server: ask once


def _sync_top1(url: str, paths: list[Path]) -> dict[str, tuple[int, float, float]]:
    """name -> (top-1 index, its score, runner-up score) from the synchronous endpoint, 8 requests at a time."""
    missing = [p for p in paths if p.name not in _SYNC_ANSWERS]
    if missing:
        start = time.monotonic()
        _SYNC_ANSWERS.update(_ask_sync(url, missing))
        print(f"\nsync /v1/classify, 8 concurrent: {len(missing) / (time.monotonic() - start):.1f} img/s")
    return {p.name: _SYNC_ANSWERS[p.name] for p in paths}


def _ask_sync(url: str, paths: list[Path]) -> dict[str, tuple[int, float, float]]:
    with httpx.Client(base_url=url, timeout=120) as http:

        def one(path: Path) -> tuple[str, tuple[int, float, float]]:
            response = http.post("/v1/classify", content=path.read_bytes(), params={"top_k": 2})
            response.raise_for_status()
            first, second = response.json()["results"][0]["predictions"]
            return path.name, (first["index"], first["score"], second["score"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(one, paths))


def _check_against_sync(url: str, results: list[dict[str, Any]], paths: list[Path]) -> None:
    """Every item done once, and its top-1 is the sync answer (a near-tie may swap; scores agree to 1e-3)."""
    assert sorted(r["index"] for r in results) == list(range(len(paths)))
    assert {r["name"] for r in results} == {p.name for p in paths}
    reference = _sync_top1(url, paths)
    for row in results:
        assert row["status"] == "done", row
        top = row["result"]["classification"]["predictions"][0]
        index, score, runner_up = reference[row["name"]]
        if top["index"] != index:
            assert score - runner_up < 1e-3, f"{row['name']}: job says {top}, sync says {index} ({score})"
        assert abs(top["score"] - score) < 1e-3, (row["name"], top["score"], score)


def _results(url: str, job_id: str, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}/results", params=params, timeout=120)
    response.raise_for_status()
    return [json.loads(line) for line in response.text.splitlines() if line]


def _item_rows(database_url: str, job_id: str) -> dict[int, tuple[str, int, int, float | None]]:
    """idx -> (status, attempts, result rows, result created_at), straight from the job store."""
    engine = sa.create_engine(database_url)
    query = sa.text(
        "SELECT i.idx, i.status, i.attempts, COUNT(r.id), MAX(r.created_at) FROM job_items i "
        "LEFT JOIN job_results r ON r.item_id = i.id WHERE i.job_id = :job GROUP BY i.idx, i.status, i.attempts"
    )
    try:
        with engine.connect() as conn:
            return {row[0]: (row[1], row[2], row[3], row[4]) for row in conn.execute(query, {"job": job_id})}
    finally:
        engine.dispose()


def _check_webhook(receiver: WebhookReceiver, path: str, job_id: str, done: int, url: str) -> None:
    calls = receiver.wait_for(path)
    assert len(calls) == 1, f"expected exactly one webhook call, got {len(calls)}"
    _, headers, body = calls[0]
    assert verify(body, SECRET.encode(), headers.get(SIGNATURE_HEADER)), "webhook signature does not verify"
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == "completed" and payload["counts"]["done"] == done
    deliveries = httpx.get(f"{url}/v1/jobs/{job_id}/events").json()["webhook_deliveries"]
    assert [(d["outcome"], d["status_class"]) for d in deliveries] == [("delivered", "2xx")], deliveries


class LatencyProbe(ClientThreads):
    """Sync /v1/classify calls from `workers` threads until stopped: the online latency while a job runs."""

    def __init__(self, url: str, workers: int = 2):
        self.url, self.workers = url, workers
        self.latencies: list[float] = []
        self.errors = 0
        self._data = (require(IMAGENET_SAMPLES) / PROBE_IMAGE).read_bytes()
        super().__init__([self._run] * workers)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.stopped():
                start = time.perf_counter()
                response = http.post("/v1/classify", content=self._data, params={"top_k": 1})
                if response.status_code == 200:
                    self.latencies.append(time.perf_counter() - start)
                else:
                    self.errors += 1
                time.sleep(0.05)

    def summary(self) -> str:
        ms = np.array(self.latencies) * 1000.0
        return f"n={len(ms)} p50={np.percentile(ms, 50):.1f} ms p99={np.percentile(ms, 99):.1f} ms errors={self.errors}"


# ---- PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[tuple[BatchServer, str]]:
    require(MOBILENET_DIR)
    with running_postgres() as pg:
        tmp = tmp_path_factory.mktemp("batch-pg")
        server = BatchServer(tmp, _server_env(tmp, pg.url, receiver))
        server.start()
        try:
            yield server, pg.url
        finally:
            server.stop()


def test_1000_photos_on_postgresql_match_the_sync_endpoint(
    pg_server: tuple[BatchServer, str], receiver: WebhookReceiver
) -> None:
    server, database_url = pg_server
    photos = _photos()
    with LatencyProbe(server.url) as idle:
        time.sleep(5)
    with Client(server.url) as client:
        submitted = time.monotonic()
        job = client.submit_batch(require(IMAGENET_SAMPLES), top_k=2, webhook_url=f"{receiver.url}/hook/pg1000")
        accepted_s = time.monotonic() - submitted
        assert job.total == 1000 and job.status in ("queued", "running")
        with LatencyProbe(server.url) as busy:
            final = client.wait(job, poll_s=0.5, timeout=900)
    assert final.status == "completed" and final.done == 1000 and final.failed == 0
    status = httpx.get(f"{server.url}/v1/jobs/{job.job_id}").json()
    assert status["attempts"] == 1000 and status["rerun_items"] == 0 and status["progress"] == 1.0
    rows = _item_rows(database_url, job.job_id)
    assert len(rows) == 1000 and all(r[:3] == ("done", 1, 1) for r in rows.values())
    print(
        f"\n[pg] 1000-image job: upload+accept {accepted_s:.1f}s, {status['timings']['running_s']:.1f}s running, "
        f"{status['timings']['images_per_s']:.1f} img/s\n[pg] sync /v1/classify idle: {idle.summary()}\n"
        f"[pg] sync /v1/classify during the job: {busy.summary()}"
    )
    _check_against_sync(server.url, _results(server.url, job.job_id), photos)
    _check_webhook(receiver, "/hook/pg1000", job.job_id, 1000, server.url)
    csv_text = httpx.get(f"{server.url}/v1/jobs/{job.job_id}/results", params={"format": "csv"}).text
    lines = csv_text.splitlines()
    header = "index,name,status,model,top1_label,top1_score,error_kind,error,output_name,output_bytes,compression_ratio"
    assert lines[0] == header and len(lines) == 1001
    first = next(csv.DictReader(io.StringIO(csv_text)))  # a classifier job: its model, no output
    assert first["model"] == job.raw["model"] and first["top1_label"] and first["output_name"] == "", first
    page = _results(server.url, job.job_id, after=499, limit=10)
    assert [r["index"] for r in page] == list(range(500, 510))


def _zip(entries: list[tuple[str, bytes]], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_hostile_inputs_give_item_errors_or_4xx(pg_server: tuple[BatchServer, str], tmp_path: Path) -> None:
    server, _ = pg_server
    photo = (require(IMAGENET_SAMPLES) / PROBE_IMAGE).read_bytes()
    escape = f"../../../../../../../tmp/imgserve-escape-{tmp_path.name}.jpg"
    archive = _zip(
        [
            ("good/streetcar.jpg", photo),
            ("corrupt.jpg", photo[: len(photo) // 3]),  # truncated JPEG
            ("notes.txt", b"not an image"),
            (escape, photo),
            ("/abs/evil.jpg", photo),
            ("bomb.bmp", b"\0" * (20 * 1024 * 1024)),  # ~1000:1 deflate ratio
        ],
        symlink="link.jpg",
    )
    response = httpx.post(
        f"{server.url}/v1/batch", files=[("archive", ("hostile.zip", archive, "application/zip"))], timeout=60
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    with Client(server.url) as client:
        final = client.wait(job_id, poll_s=0.5, timeout=120)
    assert final.status == "completed" and final.total == 7 and final.done == 1 and final.failed == 6
    kinds = {r["name"].split("/", 1)[1]: (r["error"] or {}).get("kind") for r in _results(server.url, job_id)}
    assert kinds == {
        "good/streetcar.jpg": None,
        "corrupt.jpg": "invalid_image",
        "notes.txt": "unsupported_format",
        escape: "unsafe_entry",
        "/abs/evil.jpg": "unsafe_entry",
        "bomb.bmp": "too_large",
        "link.jpg": "unsafe_entry",
    }
    assert not Path(f"/tmp/imgserve-escape-{tmp_path.name}.jpg").exists() and not Path("/abs/evil.jpg").exists()
    objects = server.tmp / "objects" / "sha256"
    assert all(len(p.name) == 64 for p in objects.rglob("*") if p.is_file()), "only content-addressed files"

    def refused(response: httpx.Response, status: int, kind: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["kind"] == kind

    root = require(IMAGENET_SAMPLES)
    for uri in [f"file://{root}/../README.md", "file:///etc/passwd", "http://127.0.0.1:1/x.jpg"]:
        refused(httpx.post(f"{server.url}/v1/batch", json={"uris": [uri]}), 403, "forbidden_uri")
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"{i}.bmp")
            info.size = 8 * 1024 * 1024
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
    tar_bomb = bomb.getvalue()
    refused(
        httpx.post(f"{server.url}/v1/batch", content=tar_bomb, headers={"content-type": "application/gzip"}),
        413,
        "too_large",
    )
    refused(
        httpx.post(f"{server.url}/v1/batch", content=b"garbage" * 100, headers={"content-type": "application/zip"}),
        400,
        "invalid_archive",
    )
    refused(httpx.post(f"{server.url}/v1/batch", json={"uris": []}), 400, "bad_request")
    refused(httpx.post(f"{server.url}/v1/batch", params={"stages": "anomaly"}, json={"uris": []}), 400, "bad_request")
    refused(httpx.post(f"{server.url}/v1/batch", params={"model": "nope"}, json={"uris": []}), 404, "unknown_model")
    refused(httpx.get(f"{server.url}/v1/jobs/0123456789abcdef"), 404, "unknown_job")
    refused(httpx.get(f"{server.url}/v1/jobs/ab%00cd/results"), 400, "bad_request")  # PostgreSQL holds no NUL (a 500)
    # An upload whose file name holds a NUL (PostgreSQL's text cannot): its item shows it as U+FFFD (it was a 5xx).
    body = (
        b'--b\r\nContent-Disposition: form-data; name=image; filename="a\x00b.jpg"\r\n\r\n' + photo + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        f"{server.url}/v1/batch", content=body, headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60
    )
    assert response.status_code == 202, response.text
    with Client(server.url) as client:
        assert client.wait(response.json()["job_id"], poll_s=0.5, timeout=120).done == 1
    assert [r["name"] for r in _results(server.url, response.json()["job_id"])] == ["a\ufffdb.jpg"]
    assert httpx.post(f"{server.url}/v1/classify", content=photo).status_code == 200  # still serving


def test_uris_cli_list_and_cancel(pg_server: tuple[BatchServer, str], tmp_path: Path) -> None:
    server, _ = pg_server
    photos = _photos()
    uris = [p.as_uri() for p in photos[:5]] + [(require(IMAGENET_SAMPLES) / "missing.JPEG").as_uri()]
    with Client(server.url) as client:
        job = client.batch.submit_uris(uris, top_k=1, stages=["classify", "metadata"])
        final = client.wait(job, poll_s=0.5, timeout=120)
        assert final.done == 5 and final.failed == 1
        assert final.raw["stages"] == ["classification", "metadata"]
        results = list(client.job_results(job))
        assert results[0].analysis is not None and results[0].analysis.classification is not None
        assert results[0].analysis.classification.predictions[0].label.startswith("tench")
        assert isinstance(results[0].analysis.metadata, dict) and results[0].analysis.metadata
        assert results[5].error_kind == "missing_input"
        big = client.submit_batch([p for p in photos[:300]], chunk_bytes=8 * 1024 * 1024)
        cancelled = client.batch.cancel(big)
        assert cancelled is not None and cancelled.status == "cancelled"
        assert client.batch.cancel(big) is None  # already finished: 409 -> None
        listed = {j.job_id: j.status for j in client.batch.jobs()}
        assert listed[big.job_id] == "cancelled" and listed[job.job_id] == "completed"
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:12]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "results.jsonl"
    cli = [str(Path(PROJECT_ROOT / ".venv" / "bin" / "imgserve")), "batch", str(folder), "--url", server.url]
    done = subprocess.run([*cli, "--out", str(out), "--poll", "0.3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "12/12" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and {r["name"] for r in rows} == {p.name for p in photos[:12]}


def test_convert_stage_outputs_zip(pg_server: tuple[BatchServer, str]) -> None:
    """A convert-only job on PostgreSQL: every output named after its input, sized, totalled in the job status, and
    downloadable as one streamed zip; a corrupt input fails alone."""
    server, _ = pg_server
    photos = _photos()[:6]
    files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    files.append(("image", ("broken.jpg", b"\xff\xd8\xff\xe0 broken", "image/jpeg")))
    params = {"stages": "convert", "convert": "format=webp,quality=70,max_side=128", "output_suffix": "_thumb"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        submitted = http.post("/v1/batch", params=params, files=files)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert (
            http.post(
                "/v1/batch", params={"stages": "convert", "convert": "format=webp,quality=0"}, files=files[:1]
            ).status_code
            == 400
        )
        deadline = time.time() + 120
        while (status := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("completed", "failed"):
            assert time.time() < deadline, status
            time.sleep(0.3)
        assert status["counts"]["done"] == 6 and status["counts"]["failed"] == 1 and status["stages"] == []
        outputs = status["outputs"]
        assert outputs["count"] == 6 and outputs["input_bytes"] == sum(p.stat().st_size for p in photos)
        assert outputs["compression_ratio"] > 5 and status["outputs_url"] == f"/v1/jobs/{job_id}/outputs.zip"
        rows = [json.loads(line) for line in http.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
        done = [r for r in rows if r["status"] == "done"]
        assert {r["result"]["output"]["name"] for r in done} == {f"{p.stem}_thumb.webp" for p in photos}
        assert all(max(r["result"]["output"]["size"]) == 128 for r in done)
        response = http.get(status["outputs_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == sorted(f"{p.stem}_thumb.webp" for p in photos)
    assert sum(i.file_size for i in archive.infolist()) == outputs["output_bytes"]


# ---- SQLite: kill -9 mid-job, restart, nothing lost or done twice ------------------------------------------
def test_kill_and_restart_mid_job_on_sqlite(tmp_path: Path, receiver: WebhookReceiver) -> None:
    require(MOBILENET_DIR)
    database_url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    server = BatchServer(tmp_path, _server_env(tmp_path, database_url, receiver))
    photos = _photos()
    server.start()
    try:
        with Client(server.url) as client:
            job = client.submit_batch(photos, top_k=2, webhook_url=f"{receiver.url}/hook/restart")
            deadline = time.monotonic() + 600
            while (state := client.batch.job(job)).done < 250:
                assert not state.finished and time.monotonic() < deadline
                time.sleep(0.2)
        server.kill()
        before = _item_rows(database_url, job.job_id)
        done_before = {i: r for i, r in before.items() if r[0] == "done"}
        in_flight = {i for i, r in before.items() if r[0] == "running"}
        assert 250 <= len(done_before) < 1000 and in_flight, "the kill should land mid-job with items in flight"
        server.start()  # same database and object store; nothing is uploaded again
        with Client(server.url) as client:
            final = client.wait(job.job_id, poll_s=0.5, timeout=900)
        assert final.status == "completed" and final.done == 1000 and final.failed == 0
        after = _item_rows(database_url, job.job_id)
        assert all(r[0] == "done" and r[2] == 1 for r in after.values()), "every item exactly one result"
        for i, row in done_before.items():
            assert after[i][1] == 1 and after[i][3] == row[3], f"item {i} was done before the kill and ran again"
        reruns = {i for i, r in after.items() if r[1] > 1}
        assert reruns == in_flight and all(after[i][1] == 2 for i in reruns)
        assert len(reruns) <= CONCURRENCY
        print(
            f"\n[sqlite] killed with {len(done_before)} done and {len(in_flight)} in flight; "
            f"re-run after restart: {len(reruns)} items; every item has one result"
        )
        events = [e["event"] for e in httpx.get(f"{server.url}/v1/jobs/{job.job_id}/events").json()["events"]]
        assert "items_requeued" in events and "resumed" in events and events.count("completed") == 1
        _check_against_sync(server.url, _results(server.url, job.job_id), photos)
        _check_webhook(receiver, "/hook/restart", job.job_id, 1000, server.url)
    finally:
        server.stop()


# ---- collections on PostgreSQL ---------------------------------------------------------------------------
def test_collections_over_http_on_postgresql(pg_server: tuple[BatchServer, str], tmp_path: Path) -> None:
    """A collection made by the CLI (Ray Data) into PostgreSQL (JSONB documents) read over HTTP: list, filtered
    pages, CSV export, report as JSON and HTML, 404s, delete; and a finished batch job saved as a
    collection of its results."""
    from tests.integration.collection_cli import cli_env, run_collection

    server, database_url = pg_server
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in _photos()[:12]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    env = {**cli_env(tmp_path / "unused.sqlite"), "IMGSERVE_DATABASE_URL": database_url}
    run_collection(env, "analyze", str(folder), "--name", "web-sample")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        listed = http.get("/v1/collections").json()["collections"]
        (info,) = [c for c in listed if c["name"] == "web-sample"]
        assert (info["images"], info["failed"], info["status"]) == (12, 1, "ready")
        page = http.get(f"/v1/collections/{info['id']}/images", params={"limit": 5}).json()
        assert len(page["images"]) == 5 and page["next"] is not None
        rest = http.get(f"/v1/collections/{info['id']}/images", params={"after": page["next"], "limit": 50}).json()
        assert len(page["images"]) + len(rest["images"]) == 13 and rest["next"] is None
        failed = http.get("/v1/collections/web-sample/images", params={"failed": "true"}).json()["images"]
        assert [i["name"] for i in failed] == ["broken.jpg"] and failed[0]["error"].startswith("invalid_image")
        good = http.get("/v1/collections/web-sample/images", params={"min_score": 50, "analysis": "true"}).json()
        assert good["images"] and all(i["quality_score"] >= 50 for i in good["images"])
        assert good["images"][0]["analysis"]["classification"]["predictions"]  # the JSONB document, whole
        exported = http.get("/v1/collections/web-sample/export", params={"format": "csv", "min_score": 50})
        assert exported.headers["content-type"].startswith("text/csv")
        assert len(exported.text.strip().splitlines()) == len(good["images"]) + 1
        report = http.get("/v1/collections/web-sample/report", params={"format": "json"}).json()
        assert report["images"] == 12 and report["formats"] == {"JPEG": 12} and report["failed"] == 1
        html = http.get("/v1/collections/web-sample/report")
        assert (
            html.headers["content-type"].startswith("text/html")
            and "default-src 'none'" in html.headers["content-security-policy"]
            and "frame-ancestors 'none'" in html.headers["content-security-policy"]  # not framed by another site
            and html.headers["x-content-type-options"] == "nosniff"
        )
        assert "web-sample" in html.text and "data:image/jpeg;base64," in html.text  # thumbnails read back
        assert http.get("/v1/collections/nope").status_code == 404
        assert http.get("/v1/collections/web-sample/images", params={"min_score": 101}).status_code in (400, 422)

        files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in _photos()[20:24]]
        submitted = http.post("/v1/batch", params={"stages": "quality,metadata"}, files=files)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.time() + 120
        while http.get(f"/v1/jobs/{job_id}").json()["status"] not in ("completed", "failed"):
            assert time.time() < deadline
            time.sleep(0.3)
        saved = http.post(f"/v1/jobs/{job_id}/collection", params={"name": "from-job"})
        assert saved.status_code == 200, saved.text
        assert saved.json()["images"] == 4 and saved.json()["job_id"] == job_id
        again = http.post(f"/v1/jobs/{job_id}/collection", params={"name": "from-job"}).json()
        assert again["images"] == 4  # saving twice records each image once
        job_report = http.get("/v1/collections/from-job/report", params={"format": "json"}).json()
        assert job_report["images"] == 4 and sum(job_report["quality"]["levels"].values()) == 4

        assert http.delete(f"/v1/collections/{info['id']}").json()["deleted"] is True
        assert http.get(f"/v1/collections/{info['id']}").status_code == 404
