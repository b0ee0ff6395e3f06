"""What `/v1/models`, gRPC ListModels and the OIP repository index say about each model and each of its versions:
state, reason, backend, the share of traffic a version gets, and the accuracy a training job recorded."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.config.model_entry import ModelEntry
from serving.model_versions import recorded_accuracy

if TYPE_CHECKING:
    from serving.service import InferenceService


@dataclass
class ModelStatus:
    name: str
    version: str
    task: str
    state: str  # "READY", "UNAVAILABLE"
    reason: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)  # every version: version, state, reason, accuracy


async def model_statuses(service: "InferenceService") -> list[ModelStatus]:
    """One status per model (its served version, or its newest when none is loaded), every version listed."""
    statuses = []
    for name, versions in sorted(service.repository.versions.items()):
        served = service.repository.entries.get(name)
        rows = [_version_row(service, name, entry, served) for _, entry in sorted(versions.items(), key=_version_key)]
        if served is not None and served.version not in versions:  # listed before a refresh: still served
            rows.append(_version_row(service, name, served, served))
        if served is not None and name in service.pipeline.model_names:
            info = await service.backend_info(name)
            statuses.append(ModelStatus(name, served.version, served.config.task, "READY", None, info, rows))
        else:
            shown = served or max(versions.values(), key=lambda e: _version_key((e.version, e)))
            reason = rows[-1]["reason"] if served is None else None
            reason = reason or shown.unavailable_reason or "not deployed in this application"
            statuses.append(ModelStatus(name, shown.version, shown.config.task, "UNAVAILABLE", reason, {}, rows))
    return statuses


async def repository_index(service: "InferenceService", ready_only: bool = False) -> list[dict[str, Any]]:
    """Triton's repository index: one row per model version (name, version, state, reason when not READY)."""
    rows = []
    for status in await model_statuses(service):
        for version in status.versions:
            if ready_only and version["state"] != "READY":
                continue
            row = {"name": status.name, "version": version["version"], "state": version["state"]}
            rows.append({**row, "reason": version["reason"]} if version["reason"] else row)
    return rows


def _version_row(
    service: "InferenceService", name: str, entry: ModelEntry, served: ModelEntry | None
) -> dict[str, Any]:
    canary = service.repository.canaries.get(name) if served is not None else None
    share = 0.0
    if served is not None and served.version == entry.version:
        ready, share = name in service.pipeline.model_names, 100.0 - (canary[1] if canary else 0.0)
    elif canary is not None and canary[0].version == entry.version:
        ready, share = canary[0].key in service.pipeline.model_names, canary[1]
    else:
        ready = False
    if ready:
        reason = None
    elif served is None and entry.available:
        reason = "not loaded"
    else:
        reason = entry.unavailable_reason or "not deployed in this application"
    return {
        "version": entry.version,
        "state": "READY" if ready else "UNAVAILABLE",
        "reason": reason,
        "accuracy": recorded_accuracy(entry.folder),
        "traffic_percent": share if ready else 0.0,
    }


def _version_key(item: tuple[str, Any]) -> tuple[int, str]:
    """Versions in numeric order where they are numbers (Triton's), by text otherwise."""
    version = item[0]
    return (int(version), "") if version.isdigit() else (-1, version)
