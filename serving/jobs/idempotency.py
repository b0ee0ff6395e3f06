"""`Idempotency-Key` on batch submission: a client's retry of `POST /v1/batch` answers the job it already made.

The first request with a key creates the job as any other, and the job's row keeps the key and a fingerprint of the
request (`jobs.idempotency_key`, `jobs.request_fingerprint`, unique per tenant and key: migration 0009). A later
request of the same tenant with the same key answers that job (replayed: nothing stored, no quota charged) when its
fingerprint is the same, and is refused (422, as the IETF draft "The Idempotency-Key HTTP Header Field" says; Stripe
calls it an `idempotency_error`) when it differs. Two requests sent together with one key both take their inputs in,
but the unique index lets one job be written: the other's write fails, its images are given back, and it answers the
winner's job, which is whole by then (the key is written in the transaction that writes the job and its items).
A key lives as long as its job: a purged, expired (retention) or erased job frees it.

The fingerprint is SHA-256 over the job's spec (model, top_k, stages, webhook, anonymize, image operations), whether
it starts at once, and each input in request order: its kind, its name and, for an uploaded file or archive, the
SHA-256 of its bytes (one more read of the spooled upload, only when a key is sent); a URI is itself.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from serving.errors import BadRequestError, ServiceError
from serving.jobs.intake import InputPart
from serving.jobs.records import JobRecord, JobSpec
from serving.jobs.tables import jobs

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
FINGERPRINT_VERSION = 1  # part of what is hashed: a changed recipe never matches an old fingerprint by accident
_READ_CHUNK = 1024 * 1024


class IdempotencyKeyReusedError(ServiceError):
    """The key was used by this tenant for a different request."""

    http_status = 422
    grpc_code = "FAILED_PRECONDITION"
    kind = "idempotency_key_reused"


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's key and fingerprint, written with the job it creates."""

    key: str
    fingerprint: str

    def columns(self) -> dict[str, str]:
        return {"idempotency_key": self.key, "request_fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Submission:
    """What a batch submission answers: the job, and whether it was made by an earlier request with the same key."""

    job: JobRecord
    replayed: bool = False


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The key of a request's `Idempotency-Key` header values (None: none sent). 1 to 255 printable ASCII
    characters; the draft's structured-field form (a quoted string) is accepted and means the same key. Several
    headers, an empty one, a longer one or control or non-ASCII characters are a 400."""
    if not values:
        return None
    if len(values) > 1:
        raise BadRequestError(f"send one {IDEMPOTENCY_HEADER} header, not {len(values)}")
    key = values[0]
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS:
        raise BadRequestError(f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_CHARS} characters, got {len(key)}")
    if not all(" " <= char <= "~" for char in key):
        raise BadRequestError(f"{IDEMPOTENCY_HEADER} must be printable ASCII (no control or non-ASCII characters)")
    return key


def _file_digest(part: InputPart) -> str:
    """SHA-256 of the upload's bytes from where the intake will read them; the read position is put back."""
    assert part.file is not None
    position = part.file.tell()
    digest = hashlib.sha256()
    while chunk := part.file.read(_READ_CHUNK):
        digest.update(chunk)
    part.file.seek(position)
    return digest.hexdigest()


def request_fingerprint(spec: JobSpec, parts: Sequence[InputPart], start: bool) -> str:
    """What the request asks for (see the module docstring). Blocking (reads the uploads): call in a thread."""
    inputs = [[part.kind, part.name, _file_digest(part) if part.file is not None else ""] for part in parts]
    document: dict[str, Any] = {"v": FINGERPRINT_VERSION, "spec": asdict(spec), "start": start, "inputs": inputs}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def keyed_job(engine: sa.Engine, tenant: str, claim: IdempotencyClaim) -> str | None:
    """The id of the tenant's job made with the claim's key (None: none); 422 when it was made by another request."""
    query = sa.select(jobs.c.id, jobs.c.request_fingerprint).where(
        jobs.c.tenant == tenant, jobs.c.idempotency_key == claim.key
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    if row.request_fingerprint != claim.fingerprint:
        raise IdempotencyKeyReusedError(
            f"{IDEMPOTENCY_HEADER} {claim.key!r} was already used for a different batch request (other inputs or "
            f"options) of job {row.id}: send a new key for a new request"
        )
    return str(row.id)
