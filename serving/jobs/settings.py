"""Batch-job settings, read from `IMGSERVE_*` environment variables (the job store, object store, limits)."""

import os
from pathlib import Path

import fsspec
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from serving.config.settings import ServerSettings, settings_error
from serving.jobs.remote_access import RemoteAccess, check_prefix
from serving.security.egress import EgressAllowList
from serving.security.principal import check_tenant

TENANT_FOLDER = "{tenant}"
TURNS_OF_CONCURRENCY = 4  # the default turn: this many rounds of `concurrency` items


def tenant_folder(root: Path | None, tenant: str) -> Path | None:
    """`root` for `tenant`: a root naming `{tenant}` (IMGSERVE_BATCH_ALLOWED_ROOT=/data/{tenant}) is each tenant's
    own folder, so one tenant's jobs can neither read another's files nor overwrite its outputs; a root without it
    is shared by every tenant (a single-team server)."""
    if root is None or TENANT_FOLDER not in str(root):
        return root
    return Path(str(root).replace(TENANT_FOLDER, check_tenant(tenant)))


# Field -> environment variable. Store locations keep short names; the rest are IMGSERVE_BATCH_* / _WEBHOOK_*.
ENV_NAMES = {
    "database_url": "IMGSERVE_DATABASE_URL",
    "object_store": "IMGSERVE_OBJECT_STORE",
    "allowed_root": "IMGSERVE_BATCH_ALLOWED_ROOT",
    "output_root": "IMGSERVE_BATCH_OUTPUT_ROOT",
    "allowed_remote": "IMGSERVE_BATCH_ALLOWED_REMOTE",
    "concurrency": "IMGSERVE_BATCH_CONCURRENCY",
    "turn_items": "IMGSERVE_BATCH_TURN_ITEMS",
    "poll_interval_s": "IMGSERVE_BATCH_POLL_S",
    "max_items": "IMGSERVE_BATCH_MAX_ITEMS",
    "max_files_per_request": "IMGSERVE_BATCH_MAX_FILES_PER_REQUEST",
    "max_archive_bytes": "IMGSERVE_BATCH_MAX_ARCHIVE_BYTES",
    "max_request_archive_bytes": "IMGSERVE_BATCH_MAX_REQUEST_ARCHIVE_BYTES",
    "max_compression_ratio": "IMGSERVE_BATCH_MAX_RATIO",
    "max_attempts": "IMGSERVE_BATCH_MAX_ATTEMPTS",
    "heartbeat_s": "IMGSERVE_BATCH_HEARTBEAT_S",
    "worker_stale_s": "IMGSERVE_BATCH_WORKER_STALE_S",
    "unhealthy_after_s": "IMGSERVE_BATCH_UNHEALTHY_AFTER_S",
    "webhook_secret": "IMGSERVE_WEBHOOK_SECRET",
    "webhook_allow": "IMGSERVE_WEBHOOK_ALLOW",
    "webhook_max_attempts": "IMGSERVE_WEBHOOK_MAX_ATTEMPTS",
    "webhook_backoff_s": "IMGSERVE_WEBHOOK_BACKOFF_S",
    "webhook_timeout_s": "IMGSERVE_WEBHOOK_TIMEOUT_S",
}


def check_object_store(url: str) -> str:
    """IMGSERVE_OBJECT_STORE, checked at startup: an absolute local path (or `file://` and one), or
    `<protocol>://<bucket>[/prefix]` of a filesystem fsspec has installed (s3://, gs://). Anything else fsspec would
    take for a local folder relative to each replica's working directory (`s3:/bucket`, one slash: a folder `s3:`),
    or fail on in a replica (an unknown protocol, a missing s3fs)."""
    protocol, sep, rest = url.partition("://")
    if not sep:
        if not Path(url).is_absolute():
            raise ValueError("expected an absolute local path or <protocol>://<bucket>[/prefix], e.g. s3://bucket/x")
        return url
    if protocol == "file":
        if not rest.startswith("/"):
            raise ValueError("a file:// object store needs an absolute path (file:///srv/objects)")
        return url
    if not rest.split("/", 1)[0]:
        raise ValueError("no bucket: expected <protocol>://<bucket>[/prefix], e.g. s3://bucket/x")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(f"the {protocol}:// filesystem is not installed ({exc})") from None
    except ValueError:
        raise ValueError(f"unknown protocol {protocol!r}: expected an absolute local path, s3:// or gs://") from None
    return url


def normalize_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean the psycopg (v3) driver, the one this package depends on."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class JobSettings(BaseModel):
    """Where jobs and their inputs live, and the limits of `/v1/batch`. None of these change at runtime."""

    model_config = ConfigDict(frozen=True)

    database_url: str = Field(
        description="SQLAlchemy URL of the job store (IMGSERVE_DATABASE_URL); default an SQLite file in the cache dir."
    )
    object_store: str = Field(
        description="fsspec URL/path of the content-addressed input store (IMGSERVE_OBJECT_STORE); "
        "default <cache dir>/objects; s3://bucket/prefix with s3fs installed."
    )
    allowed_root: Path | None = Field(
        default=None,
        description="file:// URIs must resolve under this folder ('{tenant}' in it: each tenant's own); unset = "
        "file:// URIs are refused.",
    )
    output_root: Path | None = Field(
        default=None,
        description="file:// output destinations of image operations must resolve under this folder ('{tenant}' in "
        "it: each tenant's own); unset = refused.",
    )
    allowed_remote: list[str] | None = Field(
        default=None,
        description="s3:// / gs:// prefixes a tenant's inputs and output_uri must be under (IMGSERVE_BATCH_ALLOWED_"
        "REMOTE, comma-separated; '{tenant}' in one: the job's tenant; '*': anywhere; 'none': nowhere). Unset: "
        "anywhere for the default tenant (a server without tenants), nowhere for the others. Never the object store.",
    )
    concurrency: int = Field(default=8, ge=1, description="Job items in flight at once (bounds the load on the graph).")
    turn_items: int | None = Field(
        default=None,
        ge=1,
        description="Items a job loop claims for one job before it lets another tenant with work waiting have a turn "
        "(fair sharing between tenants; alone, a job runs on). Unset: 4 x concurrency.",
    )
    poll_interval_s: float = Field(default=2.0, gt=0, description="How often the worker looks for work unprompted.")
    max_items: int = Field(default=100_000, ge=1, description="Most items in one job.")
    max_files_per_request: int = Field(default=10_000, ge=1, description="Most multipart files in one request.")
    max_archive_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="Most uncompressed bytes read from one archive (zip bombs)."
    )
    max_request_archive_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="Most uncompressed bytes read from all the archives of one request together (zip bombs).",
    )
    max_compression_ratio: float = Field(
        default=100.0,
        gt=1,
        description="Largest uncompressed/compressed ratio of a big archive entry, of the small entries together "
        "and of a whole archive (zip bombs).",
    )
    max_image_bytes: int = Field(
        default=32 * 1024 * 1024, description="Largest single input (IMGSERVE_MAX_IMAGE_BYTES)."
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Dispatches of one item before an internal error or a worker crash is final.",
    )
    heartbeat_s: float = Field(default=2.0, gt=0, description="How often a job loop refreshes its worker heartbeat.")
    worker_stale_s: float = Field(
        default=15.0,
        gt=0,
        description="A worker on another host whose heartbeat is older than this is dead: its running items are "
        "requeued (on the same host a worker is dead as soon as its process is gone).",
    )
    unhealthy_after_s: float = Field(
        default=60.0,
        gt=0,
        description="The graph placement's BatchWorker reports unhealthy (Ray restarts it) once the job store has "
        "failed for this long; writes are retried with backoff meanwhile.",
    )
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 key for webhook signatures.")
    webhook_allow: list[str] = Field(
        default_factory=list,
        description="Webhook targets allowed to resolve to non-public addresses (IMGSERVE_WEBHOOK_ALLOW, "
        "comma-separated): CIDRs or addresses (`10.0.0.0/8`, `::1`), `address:port` (`127.0.0.1:8080`, "
        "`[::1]:8080`), host names or `name:port` (`hooks.internal:8443`). Empty: public addresses only.",
    )
    webhook_max_attempts: int = Field(default=6, ge=1, description="Webhook delivery attempts before giving up.")
    webhook_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles per attempt.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one webhook POST.")

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("object_store")
    @classmethod
    def _store_location(cls, value: str) -> str:
        return check_object_store(value)

    @field_validator("webhook_allow", "allowed_remote", mode="before")
    @classmethod
    def _allow_csv(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("allowed_remote")
    @classmethod
    def _remote_entries(cls, value: list[str] | None) -> list[str] | None:
        if value is None or value == ["none"]:
            return None if value is None else []
        return [check_prefix(entry) for entry in value]

    @field_validator("webhook_allow")
    @classmethod
    def _allow_entries(cls, value: list[str]) -> list[str]:
        EgressAllowList.parse(value)  # a bad entry is a ValueError at startup, not a surprise at delivery
        return value

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "JobSettings":
        """Settings from the environment, with defaults under the server's cache directory."""
        env = dict(os.environ if env is None else env)
        server = ServerSettings.from_env(env)
        values: dict[str, object] = {
            "database_url": f"sqlite:///{server.cache_dir / 'jobs.sqlite3'}",
            "object_store": str((server.cache_dir / "objects").absolute()),
            "max_image_bytes": server.max_image_bytes,
        }
        values.update({field: env[name] for field, name in ENV_NAMES.items() if env.get(name)})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise settings_error(exc, values, lambda field: ENV_NAMES.get(field, field)) from None

    def items_per_turn(self) -> int:
        """`turn_items`, or a few rounds of `concurrency` where unset (a turn shorter than that drains the items in
        flight too often, one much longer keeps other tenants waiting)."""
        return self.turn_items if self.turn_items is not None else TURNS_OF_CONCURRENCY * self.concurrency

    def secret_bytes(self) -> bytes | None:
        return self.webhook_secret.get_secret_value().encode() if self.webhook_secret else None

    def webhook_allow_list(self) -> EgressAllowList:
        return EgressAllowList.parse(self.webhook_allow)

    def read_root(self, tenant: str) -> Path | None:
        """Where `tenant`'s file:// inputs (batch items, training datasets) must be."""
        return tenant_folder(self.allowed_root, tenant)

    def write_root(self, tenant: str) -> Path | None:
        """Where `tenant`'s file:// output destinations must be."""
        return tenant_folder(self.output_root, tenant)

    def remote_access(self, tenant: str) -> RemoteAccess:
        """Which s3:// / gs:// locations `tenant`'s inputs and output destinations may be."""
        return RemoteAccess.for_tenant(self.allowed_remote, tenant, self.object_store)
