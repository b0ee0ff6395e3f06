"""Content-addressed input store: bytes are kept once under their sha256, on any fsspec filesystem.

Keys are `sha256/ab/abcdef...`; client-supplied names never become paths, so no input can be written
outside the store. Local writes go to a temporary name and are renamed into place (no torn objects after a
crash); reads verify the hash.

Objects are shared by every job that sent (or made) the same bytes, and a writer stores its object before the row that
references it exists. What orders a writer against a deleter (serving.jobs.erasure) is the digest's lock, a row of
`stored_objects` (`hold_objects`, `lock_for_delete`): a writer records its references holding it shared and checks,
still holding it, that each object is there (storing it again if not); a deleter checks references and deletes the
object holding it exclusively. So a deleter either runs wholly before the writer's check, which then stores the bytes
again, or after the writer's commit, and finds the reference.

The check must run under the lock: a check made before it could be followed by a whole deleter's run (its check finds
no reference: the writer's rows are not written yet), and nothing left in the database says so (the deleter deletes
the digest's row, which another writer may have made again since). With PostgreSQL the lock is the digest's row alone;
with SQLite it is the database's one write lock (BEGIN IMMEDIATE), held for the check's HEADs too: each is bounded by
IMGSERVE_REMOTE_TIMEOUT_S, its transient failures tried again within it (`missing`).
"""

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import fsspec
import sqlalchemy as sa
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy.dialects import postgresql, sqlite

from serving.jobs.errors import ItemInputError, JobStoreUnavailableError, storage_client_errors, storage_error_text
from serving.jobs.remote_access import RemoteAccess, call_remote, exists_remote, write_remote
from serving.jobs.remote_listing import find_objects
from serving.jobs.tables import stored_objects
from serving.jobs.uris import read_uri

LOCK_CHUNK = 500  # digests per statement when a writer takes its locks
CHECK_THREADS = 16  # HEADs at once when a writer checks its objects on an object store


class ObjectStoreUnusableError(RuntimeError):
    """IMGSERVE_OBJECT_STORE names a bucket that does not exist, or whose existence the store would not confirm: the
    replica (or CLI command) opening the store cannot start."""


class ObjectStore:
    def __init__(self, url: str):
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.url = url
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            self.fs.makedirs(self.root, exist_ok=True)
        else:
            self._check_bucket()

    def _check_bucket(self) -> None:
        """An object store's bucket must exist: it is never created (s3fs's and gcsfs's `makedirs` create it, so a
        mistyped name kept every input in a new bucket). A prefix needs nothing made: object stores have no folders.
        Asked of the store itself, bounded as every remote call (a HEAD on the bucket)."""
        bucket = self.root.split("/", 1)[0]
        try:
            found = exists_remote(self.fs, bucket)
        except (OSError, *storage_client_errors()) as exc:
            raise ObjectStoreUnusableError(
                f"IMGSERVE_OBJECT_STORE={self.url!r}: could not check that bucket {bucket!r} exists: "
                f"{storage_error_text(exc)}"
            ) from None
        if not found:
            raise ObjectStoreUnusableError(
                f"IMGSERVE_OBJECT_STORE={self.url!r}: bucket {bucket!r} does not exist (imgserve never creates "
                "buckets: create it, or correct the name)"
            )

    @contextmanager
    def _store_failures(self, what: str) -> Iterator[None]:
        """An object store's failure in the body (past IMGSERVE_REMOTE_TIMEOUT_S, or refused) as
        JobStoreUnavailableError: `what`, then the store's words. Never an OSError, which the job store's callers
        take for their database's outage and retry without end (serving.jobs.outage); local disks' errors pass as they
        are."""
        try:
            yield
        except (OSError, *storage_client_errors()) as exc:
            if self._local:
                raise
            raise JobStoreUnavailableError(f"{what}: {storage_error_text(exc)}") from None

    def _path(self, digest: str) -> str:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def put(self, data: bytes) -> str:
        """Store `data` (once) and return its sha256 hex digest. An object store that does not answer within
        IMGSERVE_REMOTE_TIMEOUT_S, or refuses, raises JobStoreUnavailableError (a submission's 503, retryable)."""
        with self._store_failures("an input could not be stored"):
            return self._store(data)[0]

    def store_again(self, data: bytes) -> str:
        """Write `data` whatever a listing cache says: a writer's object a deleter removed before the writer's
        references were recorded (`hold_objects`). A failed write to an object store raises JobStoreUnavailableError, as
        `missing` does."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        self.fs.invalidate_cache(path)
        with self._store_failures(f"stored object {digest} could not be written again"):
            self._create(path, data)
        return digest

    def missing(self, digests: Iterable[str]) -> set[str]:
        """The digests whose object is not in the store now, asked of the store itself (not a listing cache): a stat
        each on local disk, a HEAD each on an object store (`CHECK_THREADS` at once), each HEAD bounded by
        IMGSERVE_REMOTE_TIMEOUT_S with its transient failures (a 5xx, throttling, a reset) tried again within it
        (serving.jobs.remote_access). A HEAD still failing at the bound, or refused, raises JobStoreUnavailableError
        (503 for a submission; the item fails at its record): never an OSError, which the job store's callers take for
        their database's outage and retry without end (serving.jobs.outage)."""
        paths = {digest: self._path(digest) for digest in digests}
        if self._local:
            return {digest for digest, path in paths.items() if not os.path.exists(path)}

        def gone(digest: str) -> bool:
            return not exists_remote(self.fs, paths[digest])

        with self._store_failures("the object store did not say whether stored objects are there"):
            if len(paths) <= 1:
                return {digest for digest in paths if gone(digest)}
            with ThreadPoolExecutor(min(CHECK_THREADS, len(paths))) as pool:
                return {digest for digest, absent in zip(paths, pool.map(gone, paths), strict=True) if absent}

    def _store(self, data: bytes) -> tuple[str, bool]:
        """(digest, whether this call created the object)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if self._exists(path):
            # stored before: fresh again, so the orphan sweep's grace and a purge racing this submission
            # (serving.jobs.erasure: an object modified after the purged job's inputs is kept) cover it too
            try:
                self._refresh(path, data)
                return digest, False
            except FileNotFoundError:  # deleted since (a purge, the sweep; s3fs's listing cache said it was there)
                self.fs.invalidate_cache(path)
        self._create(path, data)
        return digest, True

    def _create(self, path: str, data: bytes) -> None:
        if not self._local:
            write_remote(self.fs, path, data)  # bounded, as an output's write
            return
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.part"
        try:
            with self.fs.open(temporary, "wb") as out:
                out.write(data)
            self.fs.mv(temporary, path)
        except BaseException:  # disk full, cancelled, ...: no partial file left behind
            try:
                self.fs.rm_file(temporary)
            except OSError:
                pass
            raise

    def _refresh(self, path: str, data: bytes) -> None:
        """Make a stored object's modification time now. Object stores have no touch: on S3 the object is copied
        onto itself with new metadata (a server-side copy, which sets LastModified; the bytes are not uploaded
        again); elsewhere (GCS, other fsspec filesystems) it is written again."""
        if self._local:
            os.utime(path)
        elif "s3" in _protocols(self.fs):
            call_remote(self.fs, "setxattr", path, imgserve_stored_at=f"{time.time():.3f}")
        else:
            write_remote(self.fs, path, data)

    def get(self, digest: str) -> bytes:
        """The bytes stored under `digest`; a missing or damaged object is an item error, an object store that does
        not answer within IMGSERVE_REMOTE_TIMEOUT_S (or refuses) JobStoreUnavailableError (the item is tried again)."""
        with self._store_failures(f"stored object {digest} could not be read"):
            try:
                data = call_remote(self.fs, "cat_file", self._path(digest))
            except FileNotFoundError:
                raise ItemInputError("missing_input", f"input object {digest} is not in the store") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ItemInputError("corrupt_input", f"input object {digest} does not match its hash")
        return data

    def exists(self, digest: str) -> bool:
        return self._exists(self._path(digest))

    def _exists(self, path: str) -> bool:
        return bool(call_remote(self.fs, "exists", path))

    def delete(self, digest: str) -> None:
        """Remove the object (bounded on an object store: a deleter holds the digest's lock meanwhile)."""
        try:
            call_remote(self.fs, "rm_file", self._path(digest))
        except FileNotFoundError:
            pass

    def modified(self, digest: str) -> float | None:
        """When the object was last stored (UNIX seconds), None when it is not there or the filesystem does not say.
        Asked of the store itself: s3fs and gcsfs answer `info` from the listing `stored()` cached, which a re-store
        (`_refresh`: a copy onto itself, or a write in another process) does not update."""
        path = self._path(digest)
        self.fs.invalidate_cache(path)
        try:
            return _modified(call_remote(self.fs, "info", path)) or None
        except FileNotFoundError:
            return None

    def stored(self) -> dict[str, float]:
        """Every stored object: digest -> modification time (UNIX seconds; 0 when the filesystem does not say). On an
        object store one bounded call per page of the listing (serving.jobs.remote_listing: the orphan sweep's)."""
        folder = f"{self.root}/sha256"
        if self._local:
            found = self.fs.find(folder, detail=True) if self.fs.exists(folder) else {}
        else:
            found = find_objects(self.fs, folder)
        out: dict[str, float] = {}
        for path, info in found.items():
            digest = path.rsplit("/", 1)[-1]
            if len(digest) != 64:
                continue  # a .part file being written
            out[digest] = _modified(info)
        return out


def hold_objects(
    conn: sa.Connection, digests: Iterable[str], ensure_stored: Callable[[list[str]], None] | None
) -> None:
    """A writer's side of the digests' locks, in the transaction that records its references to them, before them:
    the locks are taken shared (PostgreSQL: the `stored_objects` rows FOR SHARE, made when missing; SQLite: the
    transaction's BEGIN IMMEDIATE already excludes every deleter), then `ensure_stored(digests)` checks each object is
    in the store and stores again those a deleter removed since the writer stored them (the writer still has the
    bytes). Once it commits, a deleter waiting on a lock finds the references; so an object is in the store whenever
    a committed row references it (an item claimed, a result read). None: the caller cannot check (no store at hand)."""
    ordered = sorted(set(digests))
    if not ordered:
        return
    for start in range(0, len(ordered), LOCK_CHUNK):
        _lock(conn, ordered[start : start + LOCK_CHUNK], exclusive=False)
    if ensure_stored is not None:
        ensure_stored(ordered)


def lock_for_delete(conn: sa.Connection, digest: str) -> None:
    """A deleter's side: the digest's lock, exclusive, held until the caller's transaction ends. Check references and
    delete the object while holding it (serving.jobs.erasure), then `forget_object`."""
    _lock(conn, [digest], exclusive=True)


def forget_object(conn: sa.Connection, digest: str) -> None:
    """The digest's lock row, once its object is deleted (under `lock_for_delete`)."""
    conn.execute(stored_objects.delete().where(stored_objects.c.digest == digest))


def _lock(conn: sa.Connection, digests: Sequence[str], exclusive: bool) -> None:
    """Lock the rows of `digests` (sorted: writers taking many never deadlock), made first where missing. A row a
    deleter deleted while this waited for it is made again (READ COMMITTED skips a row deleted under its lock)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    pending = list(digests)
    while pending:
        conn.execute(insert(stored_objects).values([{"digest": d} for d in pending]).on_conflict_do_nothing())
        query = sa.select(stored_objects.c.digest).where(stored_objects.c.digest.in_(pending))
        locked = {
            row.digest
            for row in conn.execute(query.order_by(stored_objects.c.digest).with_for_update(read=not exclusive))
        }
        pending = [digest for digest in pending if digest not in locked]


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _modified(info: dict) -> float:
    """An fsspec `info` entry's modification time in UNIX seconds (0 when the filesystem does not say)."""
    modified = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    return modified.timestamp() if hasattr(modified, "timestamp") else float(modified)


def read_job_input(
    source_kind: str,
    source: str,
    objects: ObjectStore,
    allowed_root: Path | None,
    max_bytes: int,
    remote: RemoteAccess | None = None,
) -> bytes:
    """The bytes of one batch-job input: an object in the store (by sha256) or a URI this server may read; an
    ItemInputError otherwise. The job runner and training on a collection saved from a job both read through it.
    `remote`: the s3:// / gs:// locations the job's tenant may read (`JobSettings.remote_access`; None: any)."""
    if source_kind == "object":
        return objects.get(source)
    if source_kind == "uri":
        return read_uri(source, allowed_root, max_bytes, remote)
    raise ItemInputError("invalid_input", f"item has no input ({source_kind})")
