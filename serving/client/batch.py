"""Batch jobs from the SDK (HTTP): submit files or a folder, poll or watch live, stream results, cancel.

Large inputs go up in chunks of about `chunk_bytes` and at most `chunk_files` files: the job is created open
(`?start=false`), each further chunk is added (`POST /v1/jobs/{id}/items`), then it is started, so no single
request nears the server's body limit or its files-per-request limit, and the job still runs as one.

The request that creates the job carries an `Idempotency-Key` (a uuid4 per `submit`, or the caller's), so it is
retried like any call (UNAVAILABLE: a connection lost after the server took the job in) and a retry answers the job
the first try made instead of making a second one. Adding items and starting are not retried: a lost answer there
is not known to have been ignored, and the job is cancelled instead of being left half-uploaded.
"""

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serving.client.errors import ImgServeError, from_http_response, from_http_transport_error, make_error
from serving.client.http_transport import analysis_from_json
from serving.client.routes import HttpRoutes, poll_until, segment
from serving.client.types import Analysis
from serving.image_files import IMAGE_SUFFIXES as IMAGE_SUFFIXES  # the SDK's name for it
from serving.image_files import folder_images

FINAL_STATES = ("completed", "failed", "cancelled")
CHUNK_BYTES = 32 * 1024 * 1024
# Files per upload request: a tenth of the server's default IMGSERVE_BATCH_MAX_FILES_PER_REQUEST (10,000), which no
# endpoint reports; a server configured lower names its limit in the 413 and the upload is split again to fit it.
CHUNK_FILES = 1000
SERVER_FILE_LIMIT = re.compile(r"Too many files\. Maximum number of files is (\d+)")
IDEMPOTENCY_HEADER = "Idempotency-Key"  # serving.jobs.idempotency's (the SDK imports nothing of the server)
HEARTBEAT_GRACE_S = 60.0  # the server sends a comment every 15 s: a read this long with nothing is a dead stream
BatchInputs = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


@dataclass(frozen=True)
class BatchJob:
    """A job's state as the server last reported it."""

    job_id: str
    status: str
    total: int
    done: int
    failed: int
    progress: float
    images_per_s: float | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES


@dataclass(frozen=True)
class JobResult:
    """One item's recorded result: `analysis` when it succeeded, `error_kind`/`error` when it failed."""

    index: int
    name: str
    status: str
    analysis: Analysis | None = None
    error_kind: str | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def job_from_json(data: dict[str, Any]) -> BatchJob:
    counts = data.get("counts") or {}
    return BatchJob(
        job_id=str(data["job_id"]),
        status=str(data["status"]),
        total=int(counts.get("total", 0)),
        done=int(counts.get("done", 0)),
        failed=int(counts.get("failed", 0)),
        progress=float(data.get("progress", 0.0)),
        images_per_s=(data.get("timings") or {}).get("images_per_s"),
        error=data.get("error"),
        raw=data,
    )


def result_from_json(data: dict[str, Any]) -> JobResult:
    error = data.get("error") or {}
    analysis = analysis_from_json(data["result"]) if data.get("result") else None
    return JobResult(
        int(data["index"]),
        str(data["name"]),
        str(data["status"]),
        analysis,
        error.get("kind"),
        error.get("message"),
        data,
    )


def batch_files(inputs: BatchInputs) -> list[tuple[str, Path]]:
    """(name, path) per image: folders are walked (sorted, image suffixes only, hidden and system names left out as
    the server leaves them out, names relative to the folder)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[tuple[str, Path]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():  # hidden and system files (`._x.jpg`, `@eaDir/`) are not sent: the server would skip them
            files.extend((p.relative_to(path).as_posix(), p) for p in folder_images(path))
        elif path.is_file():
            files.append((path.name, path))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return files


def _first_chunk(files: list[tuple[str, Path]], chunk_bytes: int, chunk_files: int) -> list[tuple[str, Path]]:
    """The leading files that fit one request: about `chunk_bytes` (one file at least) and `chunk_files` at most."""
    size = 0
    for count, (_, path) in enumerate(files[:chunk_files]):
        size += path.stat().st_size
        if count and size > chunk_bytes:
            return files[:count]
    return files[:chunk_files]


def server_file_limit(error: ImgServeError) -> int | None:
    """The files-per-request limit a server's 413 names (its multipart parser's "Too many files" message)."""
    found = SERVER_FILE_LIMIT.search(error.message) if error.kind == "too_large" else None
    return int(found.group(1)) if found else None


class BatchClient(HttpRoutes):
    """The batch-job routes; with `api_key`, every request carries `Authorization: Bearer <key>`."""

    def _upload(
        self, path: str, chunk: list[tuple[str, Path]], params: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST the chunk's files; retried only with an idempotency key (a retry cannot make a second job)."""
        files = [("image", (name, p.read_bytes(), "application/octet-stream")) for name, p in chunk]
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        retry = idempotency_key is not None
        return self._send("POST", path, retry=retry, params=params, files=files, headers=headers).json()

    def submit(
        self,
        inputs: BatchInputs,
        model: str | None = None,
        top_k: int = 5,
        stages: list[str] | None = None,
        webhook_url: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        chunk_files: int = CHUNK_FILES,
        idempotency_key: str | None = None,
    ) -> BatchJob:
        """Upload image files and/or folders as one job and start it. `idempotency_key`: the job-creating request's
        key (default: a new uuid4); pass your own to make a submission that your process repeats after a crash
        answer the same job (the key lasts as long as that job)."""
        files = batch_files(inputs)
        if not files:
            raise ValueError("no image files to submit")
        if chunk_files < 1:
            raise ValueError(f"chunk_files must be at least 1, got {chunk_files}")
        params: dict[str, Any] = {"top_k": top_k, "stages": stages or [], "model": model, "webhook_url": webhook_url}
        params = {k: v for k, v in params.items() if v not in (None, [])}
        key = idempotency_key or new_idempotency_key()
        job: BatchJob | None = None
        try:
            while files:
                chunk = _first_chunk(files, chunk_bytes, chunk_files)
                last = len(chunk) == len(files)
                try:
                    if job is None:  # the first chunk creates the job: started at once when it is the only one
                        # a 413 below is a refusal before the job was written: the key is still unused
                        chunk_params = params if last else {**params, "start": "false"}
                        job = job_from_json(self._upload("/v1/batch", chunk, chunk_params, key))
                        if last:
                            return job
                    else:
                        self._upload(f"/v1/jobs/{_id(job)}/items", chunk, {})
                except ImgServeError as exc:  # refused before any of it was taken: split again at its limit
                    limit = server_file_limit(exc)
                    if limit is None or not 0 < limit < len(chunk):
                        raise
                    chunk_files = limit
                    continue
                files = files[len(chunk) :]
            assert job is not None  # files was not empty
            return job_from_json(self._send("POST", f"/v1/jobs/{_id(job)}/start", retry=False).json())
        except BaseException as failure:
            if job is not None:
                try:
                    self.cancel(job.job_id)  # do not leave a half-uploaded job open
                except Exception as cancel_error:  # noqa: BLE001 - the upload's failure is the one to raise
                    failure.add_note(
                        f"the half-uploaded job {job.job_id} could not be cancelled either: {cancel_error}"
                    )
            raise

    def submit_uris(
        self,
        uris: list[str],
        model: str | None = None,
        top_k: int = 5,
        stages: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchJob:
        """A job over inputs the server reads itself (file:// under its allowed root, s3://, gs://); retried with
        an idempotency key (`idempotency_key`, default a new uuid4) as `submit`'s first request is."""
        body = {"uris": uris, "model": model, "top_k": top_k, "stages": stages}
        headers = {IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key()}
        return job_from_json(self._send("POST", "/v1/batch", json=body, headers=headers).json())

    def job(self, job: BatchJob | str) -> BatchJob:
        return job_from_json(self._send("GET", f"/v1/jobs/{_id(job)}").json())

    def jobs(self, status: str | None = None, limit: int = 50) -> list[BatchJob]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return [job_from_json(j) for j in self._send("GET", "/v1/jobs", params=params).json()["jobs"]]

    def wait(
        self,
        job: BatchJob | str,
        poll_s: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[BatchJob], None] | None = None,
    ) -> BatchJob:
        """Poll until the job is completed, failed or cancelled; TimeoutError after `timeout` seconds."""
        return poll_until(lambda: self.job(job), lambda s: s.finished, poll_s, timeout, on_progress, f"job {_id(job)}")

    def watch(self, job: BatchJob | str, timeout: float | None = None) -> Iterator[BatchJob]:
        """The job's state each time it changes, pushed by the server (server-sent events from
        `GET /v1/jobs/{id}/progress`, one connection, no polling) until it is completed, failed or cancelled; the
        last one yielded is the final state. A stream cut before the end is opened again (up to 5 times in a row);
        an error the server sends (the job purged, the key revoked) is raised. TimeoutError when the job has not
        changed for `timeout` seconds."""
        cuts, changed = 0, time.monotonic()
        while True:
            for event, data in self._progress_events(_id(job), timeout, changed):
                if event == "progress":
                    cuts, changed = 0, time.monotonic()
                    yield job_from_json(data)
                elif event == "end":
                    return
                elif event == "error":  # with the code a plain call gets (a revoked key, a purged job: not retryable)
                    kind = data.get("kind", "error")
                    message = data.get("error", "progress stream failed")
                    raise make_error(data.get("code") or "UNAVAILABLE", kind, message)
            cuts += 1
            if cuts > 5:
                message = f"the progress stream of job {_id(job)} keeps ending early"
                raise ImgServeError("UNAVAILABLE", "unavailable", message)

    def _progress_events(self, job_id: str, timeout: float | None, changed: float) -> Iterator[tuple[str, Any]]:
        """(event, data) of one progress stream until it closes; heartbeats count toward `timeout` as silence."""
        read = httpx.Timeout(self._http.timeout.connect, read=HEARTBEAT_GRACE_S if timeout is None else timeout)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/progress", timeout=read) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_http_response(response, self._api_key)
                event, data = "message", []
                for line in response.iter_lines():
                    if timeout is not None and time.monotonic() - changed > timeout:
                        raise TimeoutError(f"job {job_id} did not change for {timeout:.0f} s")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield event, json.loads("\n".join(data))
                        if event == "progress":
                            changed = time.monotonic()
                        event, data = "message", []
        except httpx.ReadTimeout:
            if timeout is not None and time.monotonic() - changed > timeout:
                raise TimeoutError(f"job {job_id} did not change for {timeout:.0f} s") from None
        except httpx.TransportError as exc:
            raise from_http_transport_error(exc) from exc

    def results(self, job: BatchJob | str, status: str | None = None) -> Iterator[JobResult]:
        """Every recorded result in index order, streamed (JSON lines)."""
        params = {"status": status} if status else {}
        try:
            with self._http.stream("GET", f"/v1/jobs/{_id(job)}/results", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_http_response(response, self._api_key)
                for line in response.iter_lines():
                    if line.strip():
                        yield result_from_json(json.loads(line))
        except httpx.TransportError as exc:
            raise from_http_transport_error(exc) from exc

    def results_csv(self, job: BatchJob | str) -> str:
        return self._send("GET", f"/v1/jobs/{_id(job)}/results", params={"format": "csv"}).text

    def cancel(self, job: BatchJob | str) -> BatchJob | None:
        """Cancel; None if it had already finished."""
        try:
            return job_from_json(self._send("DELETE", f"/v1/jobs/{_id(job)}", retry=False).json())
        except ImgServeError as exc:
            if exc.status == 409:
                return None
            raise


def new_idempotency_key() -> str:
    """A key for one logical submission, reused by its own retries only."""
    return str(uuid.uuid4())


def _id(job: BatchJob | str) -> str:
    """The job's id as one escaped path segment (`routes.segment`: ValueError for "", "." and "..")."""
    return segment(job if isinstance(job, str) else job.job_id, "job id")
