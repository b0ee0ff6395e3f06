"""A real `imgserve serve` for the batch-job tests that can be killed (SIGKILL) and started again.

Unlike the session `server` fixture, each instance has its own job store (IMGSERVE_DATABASE_URL), object
store and cache directory, so a restart finds exactly the state the killed server left behind.
"""

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadtests.server_process import ServerProcess


class BatchServer(ServerProcess):
    def __init__(self, tmp: Path, env: dict[str, str], extra_args: list[str] | None = None):
        # The project's serve_config.yaml as it is (full stage queues): the batch tests measure real behaviour.
        super().__init__(tmp, env={"IMGSERVE_CACHE_DIR": str(tmp / "cache"), **env}, extra_args=extra_args)

    @property
    def url(self) -> str:
        return self.http_url

    def start(self, timeout_s: float = 300.0) -> None:
        super().start(timeout_s)
        try:
            self._wait_jobs_api()
        except BaseException:
            self.kill()
            raise

    def _wait_jobs_api(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/jobs", params={"limit": 1}, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"/v1/jobs not answering after {timeout_s}s:\n{self.tail(3000)}")


class ClientThreads:
    """Threads running `targets` (each loops until `stopped()`) for the duration of a `with` block: the online
    clients that keep a server busy while a test does something else to it."""

    def __init__(self, targets: list[Callable[[], None]]):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=target, daemon=True) for target in targets]

    def stopped(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> Any:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def wait_for_finished_items(url: str, job_id: str, count: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """The job's status once `count` of its items are done or failed. Answers other than 200 (a job store outage's
    503, a replica being replaced) are waited out; the job must stay queued or running meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30)
        if response.status_code == 200:
            state = response.json()
            if state["counts"]["done"] + state["counts"]["failed"] >= count:
                return state
            assert state["status"] in ("queued", "running"), state
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach {count} finished items in {timeout_s}s")


def wait_for_job_end(url: str, job_id: str, count: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """The job's status once its `count` items are finished and it has ended. The runner writes a job's end in a
    transaction of its own just after its last item's result, so a poll can see every item done and the job still
    `running`; a job that stays so for 30 s after its last item is a failure."""
    state = wait_for_finished_items(url, job_id, count, timeout_s)
    deadline = time.monotonic() + 30.0
    while state["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job_id} finished its items but is still {state['status']}: {state}"
        time.sleep(0.2)
        response = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30)
        if response.status_code == 200:
            state = response.json()
    return state
