"""A real `imgserve serve` for the batch-job tests that can be killed (SIGKILL) and started again.

Unlike the session `server` fixture, each instance has its own job store (IMGSERVE_DATABASE_URL), object
store and cache directory, so a restart finds exactly the state the killed server left behind.
"""

import time
from pathlib import Path

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
