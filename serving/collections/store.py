"""Collections in the job database: one `collections` row per dataset, one `collection_images` row per image.

Each image is recorded once: `(collection_id, name)` is unique, so a resumed or repeated run never records an image
twice. An analysed image's row is kept; a failed one is replaced when a later run analyses it (the next run tries
failed images again: a network error is not a verdict). `collection analyze --refresh` replaces the row of an image
whose file changed (`add_each(replace=...)`: the same row, never a second one), `--prune` removes those of files
gone from their sources (`remove`); `serving.collections.refresh` decides which. Reads are tenant-scoped like jobs:
another tenant's collection is "not found".
"""

import dataclasses
import logging
import os
import re
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.collections.record import ImageRecord, failed_record
from serving.collections.filters import ImageFilter
from serving.collections.rows import RecordedFile, RecordedImage, record_row, row_record
from serving.collections.sources import is_uri, place
from serving.errors import BadRequestError
from serving.jobs.errors import CollectionNotFoundError
from serving.jobs.tables import collection_images, collections, located_job
from serving.security.audit import AuditEntry, write_entry

logger = logging.getLogger("imgserve.collections")
# 1-200 characters, no '/' or C0/C1 control characters, no white space at either end ("trip " and "trip" look alike)
NAME_PATTERN = re.compile(r"[^/\x00-\x1f\x7f-\x9f\s](?:[^/\x00-\x1f\x7f-\x9f]{0,198}[^/\x00-\x1f\x7f-\x9f\s])?")


@dataclass(frozen=True)
class CollectionInfo:
    id: str
    tenant: str
    name: str
    status: str
    stages: list[str]
    sources: list[str]
    job_id: str | None
    created_at: float
    updated_at: float
    images: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CollectionStore:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def _info(self, conn: sa.Connection, row: Any) -> CollectionInfo:
        c = collection_images.c
        counts = conn.execute(sa.select(c.ok, sa.func.count()).where(c.collection_id == row.id).group_by(c.ok)).all()
        by_ok = {bool(ok): n for ok, n in counts}
        return CollectionInfo(
            row.id, row.tenant, row.name, row.status, list(row.stages), list(row.sources), row.job_id,
            row.created_at, row.updated_at, by_ok.get(True, 0), by_ok.get(False, 0),
        )  # fmt: skip

    def open(
        self,
        name: str,
        stages: Sequence[str],
        sources: Sequence[str],
        tenant: str = "default",
        job_id: str | None = None,
    ) -> CollectionInfo:
        """The tenant's collection `name`, created when new (status analyzing); an existing one is reopened to add
        to (its stages must match: a collection's images are analysed alike)."""
        if not NAME_PATTERN.fullmatch(name):
            raise BadRequestError(
                "a collection name is 1 to 200 characters, without '/' or control characters,"
                " not starting or ending with a space"
            )
        try:
            return self._open(name, stages, sources, tenant, job_id)
        except sa.exc.IntegrityError:  # made by another run (or request) in the same instant: reopen that one
            return self._open(name, stages, sources, tenant, job_id)

    def _open(
        self, name: str, stages: Sequence[str], sources: Sequence[str], tenant: str, job_id: str | None
    ) -> CollectionInfo:
        now = time.time()
        with self.engine.begin() as conn:
            row = _by_name(conn, name, tenant)
            if row is None:
                values = dict(
                    id=uuid.uuid4().hex, tenant=tenant, name=name, status="analyzing", stages=list(stages),
                    sources=list(sources), job_id=job_id, created_at=now, updated_at=now,
                )  # fmt: skip
                conn.execute(sa.insert(collections).values(**values))
                row = conn.execute(sa.select(collections).where(collections.c.id == values["id"])).one()
            else:
                if sorted(row.stages) != sorted(stages):
                    raise BadRequestError(
                        f"collection {name!r} was analysed with stages {sorted(row.stages)}, not {sorted(stages)}"
                    )
                merged = list(dict.fromkeys([*row.sources, *sources]))
                conn.execute(
                    sa.update(collections)
                    .where(collections.c.id == row.id)
                    .values(status="analyzing", sources=merged, updated_at=now)
                )
                row = conn.execute(sa.select(collections).where(collections.c.id == row.id)).one()
            return self._info(conn, row)

    def names_recorded_elsewhere(self, name: str, tenant: str, wanted: Mapping[str, str]) -> dict[str, str]:
        """Of `wanted` (image name -> where this run reads it, `sources.place`), the names the tenant's collection
        `name` already records as read from another place, with that place. Names are unique in a collection, so
        such an image would be taken as analysed already and never read. A row saved from a batch job has no place
        (always a clash); one recorded before places were absolute (a relative path) cannot be compared."""
        clashes: dict[str, str] = {}
        for image in self._recorded(name, tenant, list(wanted)):
            if not image.location or located_job(image.location):
                clashes[image.name] = "a batch job saved into the collection"
            elif (recorded := place(image.location, image.member)) != wanted[image.name] and (
                os.path.isabs(recorded) or is_uri(recorded)
            ):
                clashes[image.name] = recorded
        return clashes

    def recorded_under_other_names(self, name: str, tenant: str, wanted: Mapping[str, str]) -> dict[str, str]:
        """Of `wanted` (image name -> where this run reads it, `sources.place`), the images the tenant's collection
        `name` already records from that very place under another name (another set of sources, or another
        --prefix, names the same files differently), with that name: analysed again, each would count twice."""
        by_place = {where: image for image, where in wanted.items()}
        c = collection_images.c
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            row = _by_name(conn, name, tenant)
            if row is None:
                return found
            query = sa.select(c.name, c.location, c.member).where(c.collection_id == row.id, c.location.is_not(None))
            for image in conn.execute(query):
                mine = by_place.get(place(image.location, image.member))
                if mine is not None and mine != image.name:
                    found[mine] = image.name
        return found

    def recorded_names(self, name: str, tenant: str, names: Sequence[str]) -> list[str]:
        """Which of `names` the tenant's collection `name` records (analysed or failed); none when it is new."""
        return [image.name for image in self._recorded(name, tenant, names)]

    def find(self, name: str, tenant: str) -> CollectionInfo | None:
        """The tenant's collection `name` (by name only: `get` takes an id too); None when there is none yet."""
        with self.engine.connect() as conn:
            row = _by_name(conn, name, tenant)
            return None if row is None else self._info(conn, row)

    def recorded_sources(self, name: str, tenant: str) -> list[str]:
        """The sources the tenant's collection `name` was made from (folders, URIs, `job:<id>`); none when it is new."""
        with self.engine.connect() as conn:
            row = _by_name(conn, name, tenant)
        return [] if row is None else list(row.sources)

    def _recorded(self, name: str, tenant: str, names: Sequence[str]) -> list[Any]:
        with self.engine.connect() as conn:
            row = _by_name(conn, name, tenant)
            return [] if row is None else _named_images(conn, row.id, names)

    def done_names(self, collection_id: str) -> set[str]:
        """Names analysed already (failed ones are not: a run tries them again)."""
        c = collection_images.c
        with self.engine.connect() as conn:
            query = sa.select(c.name).where(c.collection_id == collection_id, c.ok == sa.true())
            return set(conn.execute(query).scalars())

    def add(self, collection_id: str, items: Sequence[RecordedImage]) -> int:
        """Record analysed images: a name not yet there is added, a failed one replaced, an analysed one kept.
        Returns how many rows were written (`add_each` says which images were stored as failed)."""
        return self.add_each(collection_id, items)[0]

    def add_each(
        self,
        collection_id: str,
        items: Sequence[RecordedImage],
        replace: Collection[str] = frozenset(),
        read_since: float | None = None,
    ) -> tuple[int, list[RecordedImage]]:
        """`add`, and the images as recorded; the analysed images named in `replace` (their files changed: --refresh)
        are replaced too, in their own rows. `read_since`: a time at or before the files were read (the run's start;
        default now), which `--refresh` compares their change times with. The batch is one statement; when the
        database refuses it (a value no column holds), each image is written alone, and one it refuses is recorded
        as failed with the reason, so one bad row never costs the others. A database that refuses even that (it is
        down) raises."""
        try:
            return self._insert(collection_id, items, replace, read_since), list(items)
        except CollectionNotFoundError:  # deleted during the run: no image of it can be stored
            raise
        except Exception:  # noqa: BLE001 - which row? each is tried alone below
            logger.info("collection %s: a batch of %d was refused; storing one by one", collection_id, len(items))
        written, recorded = 0, []
        for item in items:
            try:
                written += self._insert(collection_id, [item], replace, read_since)
            except Exception as exc:  # noqa: BLE001 - this image's values: it becomes a failed record saying why
                if not item.record.ok or isinstance(exc, CollectionNotFoundError):
                    raise
                cause = getattr(exc, "orig", None) or exc  # the driver's error, without SQLAlchemy's statement
                reason = f"unstorable: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
                logger.warning("collection %s: %r %s", collection_id, item.record.name, reason)
                item = RecordedImage(failed_record(item.record.name, reason), None, item.location, item.member)
                written += self._insert(collection_id, [item], replace, read_since)
            recorded.append(item)
        return written, recorded

    def _insert(
        self, collection_id: str, items: Sequence[RecordedImage], replace: Collection[str], read_since: float | None
    ) -> int:
        if not items:
            return 0
        now = time.time()
        rows = [record_row(collection_id, item, now if read_since is None else read_since) for item in items]
        c = collection_images.c
        replaced = [row["name"] for row in rows if row["name"] in replace]
        replaceable = sa.or_(c.ok == sa.false(), *(c.name == name for name in replaced))  # a few: no IN list
        with self.engine.begin() as conn:
            _touch(conn, collection_id, updated_at=now)  # first: a deleted collection is said, not a foreign key error
            insert = (
                postgresql.insert(collection_images)
                if conn.dialect.name == "postgresql"
                else sqlite.insert(collection_images)
            )
            values = {column: insert.excluded[column] for column in rows[0] if column not in ("collection_id", "name")}
            statement = insert.on_conflict_do_update(
                index_elements=["collection_id", "name"], set_=values, where=replaceable
            )
            # the rows inserted or updated (not those the WHERE kept); an executemany's rowcount is 0 on PostgreSQL
            return len(conn.execute(statement.returning(c.id), rows).all())

    def recorded_files(self, collection_id: str, page: int = 5000) -> Iterator[RecordedFile]:
        """What each row says of its file (`RecordedFile`), in recording order, read a page at a time."""
        c, after = collection_images.c, 0
        columns = (c.id, c.name, c.ok, c.location, c.member, c.size_bytes, c.sha256, c.created_at)
        while True:
            query = sa.select(*columns).where(c.collection_id == collection_id, c.id > after).order_by(c.id)
            with self.engine.connect() as conn:
                rows = conn.execute(query.limit(page)).all()
            for r in rows:
                yield RecordedFile(r.name, bool(r.ok), r.location, r.member, r.size_bytes, r.sha256, r.created_at)
            if len(rows) < page:
                return
            after = rows[-1].id

    def remove(self, collection_id: str, names: Sequence[str]) -> int:
        """Delete the images `names` (their files are gone: --prune) in one transaction; how many there were."""
        with self.engine.begin() as conn:
            _touch(conn, collection_id, updated_at=time.time())
            deletes = (sa.delete(collection_images).where(*mine) for mine in _named(collection_id, names))
            return sum(max(0, conn.execute(statement).rowcount or 0) for statement in deletes)

    def confirm(self, collection_id: str, names: Sequence[str], read_since: float) -> None:
        """The analysed images `names` were read again from `read_since` on and had the sha256 recorded (--refresh):
        their rows say so (`created_at`), so a later --refresh does not read them again while they stay as they are."""
        c = collection_images.c
        with self.engine.begin() as conn:
            for mine in _named(collection_id, names):
                newer = sa.update(collection_images).where(*mine, c.ok == sa.true(), c.created_at < read_since)
                conn.execute(newer.values(created_at=read_since))

    def finish(self, collection_id: str) -> None:
        with self.engine.begin() as conn:
            _touch(conn, collection_id, status="ready", updated_at=time.time())

    def _row(self, conn: sa.Connection, ref: str, tenant: str | None) -> Any:
        query = sa.select(collections).where(sa.or_(collections.c.id == ref, collections.c.name == ref))
        if tenant is not None:
            query = query.where(collections.c.tenant == tenant)
        rows = conn.execute(query).all()
        match = next((r for r in rows if r.id == ref), rows[0] if len(rows) == 1 else None)
        if match is None and rows:  # a name several tenants use, asked across tenants (an operator): not a 404
            tenants = sorted(r.tenant for r in rows)
            raise BadRequestError(f"collection name {ref!r} is used by tenants {tenants}: ask for it by its id")
        if match is None:
            raise CollectionNotFoundError(f"collection {ref!r} not found")
        return match

    def get(self, ref: str, tenant: str | None = None) -> CollectionInfo:
        """By id or name; `tenant`: only that tenant's."""
        with self.engine.connect() as conn:
            return self._info(conn, self._row(conn, ref, tenant))

    def list_collections(self, tenant: str | None = None, limit: int = 100, offset: int = 0) -> list[CollectionInfo]:
        # the id breaks ties of created_at: pages by offset must not repeat or skip collections made at one instant
        order = (collections.c.created_at.desc(), collections.c.id.desc())
        query = sa.select(collections).order_by(*order).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(collections.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [self._info(conn, row) for row in conn.execute(query).all()]

    def delete(self, ref: str, tenant: str | None = None, audit: AuditEntry | None = None) -> CollectionInfo:
        """Delete the collection and its rows; `audit` is written in the same transaction."""
        with self.engine.begin() as conn:
            # Locked first, as a run recording into it does (`_touch`; no deadlock): a run holding it commits, then
            # its images are counted (a new statement sees them), one after waits and finds it gone.
            found = sa.select(collections).where(collections.c.id == self._row(conn, ref, tenant).id)
            row = conn.execute(found.with_for_update()).first()
            if row is None:  # deleted by another request while this one waited
                raise CollectionNotFoundError(f"collection {ref!r} not found")
            info = self._info(conn, row)
            conn.execute(sa.delete(collection_images).where(collection_images.c.collection_id == row.id))
            conn.execute(sa.delete(collections).where(collections.c.id == row.id))
            if audit is not None:
                detail = {"name": info.name, "images": info.images + info.failed}
                write_entry(conn, dataclasses.replace(audit, target=info.id, detail=detail))
            return info

    def images(
        self,
        collection_id: str,
        where: ImageFilter = ImageFilter(),
        after: int = 0,
        limit: int = 100,
        documents: bool = True,
    ) -> list[tuple[int, RecordedImage]]:
        """A page of images in recording order (keyset: ids above `after`), with their analysis documents unless
        `documents` is False."""
        c = collection_images.c
        columns = [col for col in collection_images.c if documents or col.name != "document"]
        query = (
            sa.select(*columns)
            .where(c.collection_id == collection_id, c.id > after, *where.clauses())
            .order_by(c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            return [
                (r.id, RecordedImage(row_record(r), r.document if documents else None, r.location, r.member))
                for r in rows
            ]

    def image(self, collection_id: str, image_id: int) -> RecordedImage | None:
        """One image (without its analysis document) by the `id` its listing gives; None if the collection has no
        such image."""
        c = collection_images.c
        columns = [col for col in collection_images.c if col.name != "document"]
        query = sa.select(*columns).where(c.collection_id == collection_id, c.id == image_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else RecordedImage(row_record(row), None, row.location, row.member)

    def iter_images(
        self, collection_id: str, where: ImageFilter = ImageFilter(), page: int = 1000, documents: bool = True
    ) -> Iterator[RecordedImage]:
        """Every matching image, read a page at a time (bounded memory)."""
        after = 0
        while True:
            rows = self.images(collection_id, where, after, page, documents)
            yield from (image for _, image in rows)
            if len(rows) < page:
                return
            after = rows[-1][0]

    def records(self, collection_id: str, where: ImageFilter = ImageFilter()) -> Iterator[ImageRecord]:
        return (image.record for image in self.iter_images(collection_id, where, documents=False))

    def locations(self, collection_id: str, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Where each named image was read (location, archive member or ""), for the report's thumbnails: a path or
        URI, `job:<id>` for an image saved from a batch job, "" for one saved before images named their job."""
        with self.engine.connect() as conn:
            rows = _named_images(conn, collection_id, names)
        return {row.name: (row.location or "", row.member or "") for row in rows}


def _touch(conn: sa.Connection, collection_id: str, **values: Any) -> None:
    """Update the collection's row; CollectionNotFoundError when it is gone (deleted while a run records into it)."""
    result = conn.execute(sa.update(collections).where(collections.c.id == collection_id).values(**values))
    if result.rowcount == 0:
        raise CollectionNotFoundError(f"collection {collection_id} was deleted while images were recorded into it")


def _by_name(conn: sa.Connection, name: str, tenant: str) -> Any:
    """The tenant's collection row named `name` (by name only: `get` takes an id too), or None."""
    query = sa.select(collections).where(collections.c.tenant == tenant, collections.c.name == name)
    return conn.execute(query).first()


def _named(collection_id: str, names: Sequence[str]) -> Iterator[tuple[sa.ColumnElement[bool], ...]]:
    """The conditions that select the collection's rows of `names`, 500 names at a time."""
    c = collection_images.c
    for start in range(0, len(names), 500):
        yield c.collection_id == collection_id, c.name.in_(names[start : start + 500])


def _named_images(conn: sa.Connection, collection_id: str, names: Sequence[str]) -> list[Any]:
    """The collection's rows (name, location, member) of `names`."""
    c = collection_images.c
    queries = (sa.select(c.name, c.location, c.member).where(*mine) for mine in _named(collection_id, names))
    return [row for query in queries for row in conn.execute(query)]
