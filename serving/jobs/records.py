"""Plain records passed between the job store and its callers (no SQLAlchemy objects leave the store)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ITEM_STATES = ("pending", "running", "done", "failed", "cancelled")
ACTIVE_JOB_STATES = ("queued", "running")
FINAL_JOB_STATES = ("completed", "failed", "cancelled")
JOB_STATES = ("open", *ACTIVE_JOB_STATES, *FINAL_JOB_STATES)  # "open": submitted with start=false


@dataclass(frozen=True)
class JobSpec:
    """What to run on every item of a job."""

    model: str
    top_k: int
    stages: tuple[str, ...]
    webhook_url: str | None = None
    anonymize: bool = False  # drop GPS and personal fields from metadata results
    # image operations: {"convert": {raw options}, "enhance": {raw options} (optional), "suffix": "..."}; None: none
    operations: dict[str, Any] | None = None


@dataclass(frozen=True)
class OutputTotals:
    """The outputs of a job's image operations so far."""

    count: int = 0
    input_bytes: int = 0
    output_bytes: int = 0


@dataclass(frozen=True)
class NewItem:
    """An input about to become a job item: stored bytes (`object`), a URI, or an error found on intake."""

    name: str
    source_kind: str  # object | uri | none
    source: str
    size_bytes: int | None = None
    error_kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: str
    model: str
    top_k: int
    stages: tuple[str, ...]
    webhook_url: str | None
    webhook_state: str
    total: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    counts: dict[str, int] = field(default_factory=dict)
    attempts: int = 0  # dispatches to the graph over all items
    rerun_items: int = 0  # items dispatched more than once (in flight at a restart, or retried)
    tenant: str = "default"
    anonymize: bool = False
    operations: dict[str, Any] | None = None
    outputs: OutputTotals = field(default_factory=OutputTotals)

    @property
    def spec(self) -> JobSpec:
        return JobSpec(self.model, self.top_k, self.stages, self.webhook_url, self.anonymize, self.operations)


@dataclass(frozen=True)
class ClaimedItem:
    """An item handed to the worker: marked running, its `attempts` already counts this dispatch."""

    id: int
    job_id: str
    idx: int
    name: str
    source_kind: str
    source: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """The one recorded result of an item."""

    status: str  # done | failed
    model: str | None = None
    result: dict[str, Any] | None = None
    error_kind: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    output: "ItemOutput | None" = None


@dataclass(frozen=True)
class ItemOutput:
    """What an item's image operation wrote to the object store."""

    object: str  # sha256 of the output bytes
    name: str  # file name in outputs.zip: the input's name, the suffix, the output format's extension
    input_bytes: int
    output_bytes: int
    # checks the object is still in the store and stores the bytes again if not, called under the digest's lock as
    # the result is recorded (serving.jobs.objects.hold_objects): a purge may have deleted it since it was stored
    ensure_stored: Callable[[], None] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ResultRecord:
    idx: int
    name: str
    status: str
    model: str | None
    result: dict[str, Any] | None
    error_kind: str | None
    error: str | None
    duration_ms: float | None
    attempts: int


def saved_name(name: str, idx: int, taken: set[str]) -> str:
    """The name item `idx` (called `name`) gets in a collection its job is saved into: its own, or `name#idx` when
    `taken` (the names given so far, in index order) has it: names are unique in a collection. Adds it to `taken`."""
    chosen = name if name not in taken else f"{name}#{idx}"
    taken.add(chosen)
    return chosen
