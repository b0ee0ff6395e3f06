"""Training jobs and model control from the SDK (HTTP): train a classifier on a labelled folder the server can
read, wait for it, and load, unload or promote model versions.

    with Client("http://127.0.0.1:8000") as client:
        job = client.training.wait(client.training.submit("parcels", "s3://bucket/parcels/"))
        print(job.version, job.accuracy, job.promoted)
        client.training.promote("parcels", "2")   # admin: serve version 2 from now on (and roll back the same way)
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.client.routes import HttpRoutes, poll_until, segment

FINAL_STATES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class TrainingJob:
    """A training job as the server last reported it."""

    job_id: str
    model: str
    status: str
    phase: str
    done: int
    total: int
    error: str | None = None
    result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def version(self) -> str | None:
        return (self.result or {}).get("version")

    @property
    def accuracy(self) -> float | None:
        return ((self.result or {}).get("validation") or {}).get("accuracy")

    @property
    def promoted(self) -> bool:
        return bool((self.result or {}).get("promoted"))


def training_job_from_json(data: dict[str, Any]) -> TrainingJob:
    progress = data.get("progress") or {}
    return TrainingJob(
        job_id=str(data["id"]),
        model=str(data["model"]),
        status=str(data["status"]),
        phase=str(progress.get("phase", "")),
        done=int(progress.get("done", 0)),
        total=int(progress.get("total", 0)),
        error=data.get("error"),
        result=data.get("result"),
        raw=data,
    )


class TrainingClient(HttpRoutes):
    """`/v1/training-jobs` and model control (`/v1/models/{m}/load|unload|versions/{v}/promote`)."""

    def submit(self, model: str, dataset: str, **options: Any) -> TrainingJob:
        """Train `model` on `dataset` (a folder of one sub-folder per category, as a URI the server may read:
        file:// under its allowed root, s3://, gs://). Options: validation_fraction, max_train_per_class,
        backbone, promote ("if_better", "always", "never")."""
        body = {"model": model, "dataset": dataset, **{k: v for k, v in options.items() if v is not None}}
        return training_job_from_json(self._send("POST", "/v1/training-jobs", retry=False, json=body).json())

    def job(self, job: TrainingJob | str) -> TrainingJob:
        return training_job_from_json(self._send("GET", f"/v1/training-jobs/{_id(job)}").json())

    def jobs(self) -> list[TrainingJob]:
        return [training_job_from_json(j) for j in self._send("GET", "/v1/training-jobs").json()["training_jobs"]]

    def cancel(self, job: TrainingJob | str) -> TrainingJob:
        return training_job_from_json(self._send("POST", f"/v1/training-jobs/{_id(job)}/cancel", retry=False).json())

    def wait(
        self,
        job: TrainingJob | str,
        poll_s: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[TrainingJob], None] | None = None,
    ) -> TrainingJob:
        """Poll until the job is completed, failed or cancelled; TimeoutError after `timeout` seconds."""
        return poll_until(
            lambda: self.job(job), lambda s: s.finished, poll_s, timeout, on_progress, f"training job {_id(job)}"
        )

    def load(self, model: str) -> dict[str, Any]:
        """Load or reload `model` (admin): the version its policy serves."""
        return self._send("POST", f"/v1/models/{_model(model)}/load", retry=False).json()

    def unload(self, model: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/models/{_model(model)}/unload", retry=False).json()

    def promote(self, model: str, version: str) -> dict[str, Any]:
        """Serve exactly `version` of `model` from now on (admin); promoting an older version is a rollback."""
        return self._send(
            "POST", f"/v1/models/{_model(model)}/versions/{_version(version)}/promote", retry=False
        ).json()

    def canary(self, model: str, version: str, percent: float) -> dict[str, Any]:
        """Send `percent` of `model`'s requests to `version` (admin); end it with `end_canary` or `promote`."""
        body = {"version": version, "percent": percent}
        return self._send("POST", f"/v1/models/{_model(model)}/canary", retry=False, json=body).json()

    def end_canary(self, model: str) -> dict[str, Any]:
        return self._send("DELETE", f"/v1/models/{_model(model)}/canary", retry=False).json()

    def delete_version(self, model: str, version: str) -> dict[str, Any]:
        """Delete a version that is neither served nor a canary (admin); its number is never given again."""
        path = f"/v1/models/{_model(model)}/versions/{_version(version)}"
        return self._send("DELETE", path, retry=False).json()

    def delete_model(self, model: str) -> dict[str, Any]:
        """Delete a trained model with every version (admin): it stops being served (on every replica within the
        server's model poll interval); its version numbers are never given again under that name."""
        return self._send("DELETE", f"/v1/models/{_model(model)}", retry=False).json()

    def delete(self, job: TrainingJob | str) -> dict[str, Any]:
        """Delete a finished training job's record (admin); the version it registered stays."""
        return self._send("DELETE", f"/v1/training-jobs/{_id(job)}", retry=False).json()


def _id(job: TrainingJob | str) -> str:
    """The job's id as one escaped path segment (`routes.segment`: ValueError for "", "." and "..")."""
    return segment(job if isinstance(job, str) else job.job_id, "training job id")


def _model(model: str) -> str:
    return segment(model, "model name")


def _version(version: str) -> str:
    return segment(version, "model version")
