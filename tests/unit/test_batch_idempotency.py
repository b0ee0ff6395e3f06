"""`Idempotency-Key` on `POST /v1/batch` (serving.jobs.idempotency) over the real FastAPI app and job store (SQLite in a
temporary folder, tiny models, auth on with two tenants; no Ray): a client whose connection dropped after the server
took its job in retried and got a second job that stored and charged every image again."""

import asyncio
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.client.batch import BatchClient
from serving.http.app import create_http_app
from serving.jobs import service as service_module
from serving.jobs.database import _alembic_config, create_store_engine, current_revision, head_revision, migrate
from serving.jobs.idempotency import IdempotencyClaim, IdempotencyKeyReusedError
from serving.jobs.intake import InputPart
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.tables import job_items, jobs
from serving.security.gate import SecurityGate
from serving.security.keys import KeyStore
from serving.security.settings import SecuritySettings
from serving.security.tables import usage_daily
from tests.unit.test_edges_in_process import jpeg
from tests.unit.test_job_quota_refunds import CountingGate
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit
KEY_HEADER, REPLAYED = "Idempotency-Key", "idempotent-replayed"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("idempotency")
    service, settings = tiny_local_service(root)
    job_settings = JobSettings(
        database_url=f"sqlite:///{root / 'jobs.sqlite3'}",
        object_store=str(root / "objects"),
        allowed_root=root / "in" / "{tenant}",
    )
    engine = create_store_engine(job_settings.database_url)
    migrate(engine)
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))
    service.gate = gate
    job_service = JobService(service, job_settings, None, gate)
    keys = KeyStore(engine)
    made = {
        name: keys.create(name, role, tenant, None)[1]
        for name, role, tenant in (("a", "analyst", "a"), ("a_admin", "admin", "a"), ("b", "analyst", "b"))
    }
    (root / "in" / "a").mkdir(parents=True)
    for name in ("one.jpg", "two.jpg"):
        (root / "in" / "a" / name).write_bytes(jpeg())
    with TestClient(create_http_app(service, job_service, settings, gate)) as client:
        yield {"http": client, "keys": made, "engine": engine, "root": root, "jobs": job_service, "gate": gate}
    service.gate = None


def _headers(world: dict[str, Any], caller: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {world['keys'][caller]}"}
    return headers if key is None else {**headers, KEY_HEADER: key}


def _images(*colors: tuple[int, int, int]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{i}.jpg", jpeg(color), "image/jpeg")) for i, color in enumerate(colors)]


def _charged(world: dict[str, Any], tenant: str) -> int:
    """Images charged to the tenant today: the usage meter's counts, written to the database first."""
    world["http"].portal.call(world["gate"].usage.flush)
    with world["engine"].connect() as conn:
        query = sa.select(sa.func.coalesce(sa.func.sum(usage_daily.c.images), 0)).where(usage_daily.c.tenant == tenant)
        return int(conn.execute(query).scalar_one())


def _count(world: dict[str, Any], table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with world["engine"].connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def test_a_retry_with_the_same_key_answers_the_same_job_and_stores_and_charges_nothing(world: dict[str, Any]) -> None:
    http, key = world["http"], str(uuid.uuid4())
    images = _images((200, 60, 30), (30, 200, 60))
    charged = _charged(world, "a")
    first = http.post("/v1/batch?top_k=3", files=images, headers=_headers(world, "a", key))
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    job_id = first.json()["job_id"]
    assert _charged(world, "a") == charged + 2
    objects = world["jobs"].objects()
    with world["engine"].connect() as conn:
        digests = [r.source for r in conn.execute(sa.select(job_items.c.source).where(job_items.c.job_id == job_id))]
    stored_at = {digest: objects.modified(digest) for digest in digests}
    time.sleep(0.05)

    again = http.post("/v1/batch?top_k=3", files=images, headers=_headers(world, "a", key))
    assert again.status_code == 202, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json()["job_id"] == job_id and again.headers["location"] == first.headers["location"]
    assert set(again.json()) == set(first.json())  # the same body shape as the first answer
    assert _count(world, jobs, jobs.c.tenant == "a", jobs.c.idempotency_key == key) == 1
    assert _count(world, job_items, job_items.c.job_id == job_id) == 2
    assert _charged(world, "a") == charged + 2  # the daily quota is not charged twice
    assert {digest: objects.modified(digest) for digest in digests} == stored_at  # nothing stored again


def test_a_json_uri_list_is_replayed_and_another_list_with_its_key_is_422(world: dict[str, Any]) -> None:
    http, key, folder = world["http"], str(uuid.uuid4()), world["root"] / "in" / "a"
    body = {"uris": [f"file://{folder}/one.jpg", f"file://{folder}/two.jpg"], "top_k": 2}
    first = http.post("/v1/batch", json=body, headers=_headers(world, "a", key))
    assert first.status_code == 202, first.text
    again = http.post("/v1/batch", json=body, headers=_headers(world, "a", key))
    assert again.status_code == 202 and again.headers[REPLAYED] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    other = http.post("/v1/batch", json={**body, "uris": body["uris"][:1]}, headers=_headers(world, "a", key))
    assert other.status_code == 422, other.text
    assert other.json()["kind"] == "idempotency_key_reused" and KEY_HEADER in other.json()["error"]


@pytest.mark.parametrize(
    ("query", "colors"),
    [
        ("?top_k=3", [(200, 60, 30), (0, 0, 255)]),  # other bytes, same names
        ("?top_k=4", [(200, 60, 30), (30, 200, 60)]),  # other options
        ("?top_k=3", [(200, 60, 30)]),  # fewer inputs
        ("?top_k=3&start=false", [(200, 60, 30), (30, 200, 60)]),  # left open instead of started
    ],
)
def test_the_same_key_with_a_different_request_is_422_and_makes_and_charges_nothing(
    world: dict[str, Any], query: str, colors: list[tuple[int, int, int]]
) -> None:
    http, key = world["http"], str(uuid.uuid4())
    first = http.post(
        "/v1/batch?top_k=3", files=_images((200, 60, 30), (30, 200, 60)), headers=_headers(world, "a", key)
    )
    assert first.status_code == 202, first.text
    charged, made = _charged(world, "a"), _count(world, jobs, jobs.c.tenant == "a")
    other = http.post(f"/v1/batch{query}", files=_images(*colors), headers=_headers(world, "a", key))
    assert other.status_code == 422, other.text
    assert other.json()["kind"] == "idempotency_key_reused"
    assert (_charged(world, "a"), _count(world, jobs, jobs.c.tenant == "a")) == (charged, made)


def test_keys_are_per_tenant(world: dict[str, Any]) -> None:
    http, key = world["http"], str(uuid.uuid4())
    mine = http.post("/v1/batch", files=_images((1, 2, 3)), headers=_headers(world, "a", key))
    theirs = http.post("/v1/batch", files=_images((1, 2, 3)), headers=_headers(world, "b", key))
    assert mine.status_code == theirs.status_code == 202, (mine.text, theirs.text)
    assert REPLAYED not in theirs.headers and theirs.json()["job_id"] != mine.json()["job_id"]


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "a\x01b", "tab\there", "del\x7f", "ключ".encode(), b"caf\xe9"],
    ids=["empty", "256 chars", "control", "tab", "DEL", "utf-8", "latin-1"],
)
def test_a_bad_key_is_400_before_anything_is_stored(world: dict[str, Any], key: str | bytes) -> None:
    charged = _charged(world, "a")
    headers: dict[str, Any] = {**_headers(world, "a"), KEY_HEADER: key}
    answer = world["http"].post("/v1/batch", files=_images((9, 9, 9)), headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["kind"] == "bad_request" and KEY_HEADER in answer.json()["error"]
    assert _charged(world, "a") == charged


def test_two_key_headers_are_400_and_the_longest_and_the_quoted_form_are_keys(world: dict[str, Any]) -> None:
    http, auth = world["http"], _headers(world, "a")
    twice = http.post(
        "/v1/batch", files=_images((5, 5, 5)), headers=[*auth.items(), (KEY_HEADER, "k1"), (KEY_HEADER, "k2")]
    )
    assert twice.status_code == 400, twice.text
    longest = "k" * 255
    assert http.post("/v1/batch", files=_images((6, 6, 6)), headers={**auth, KEY_HEADER: longest}).status_code == 202
    plain = str(uuid.uuid4())
    first = http.post("/v1/batch", files=_images((7, 7, 7)), headers={**auth, KEY_HEADER: plain})
    quoted = http.post("/v1/batch", files=_images((7, 7, 7)), headers={**auth, KEY_HEADER: f'"{plain}"'})
    assert quoted.headers[REPLAYED] == "true" and quoted.json()["job_id"] == first.json()["job_id"]


def test_a_purged_job_frees_its_key(world: dict[str, Any]) -> None:
    http, key = world["http"], str(uuid.uuid4())
    first = http.post("/v1/batch", files=_images((4, 4, 4)), headers=_headers(world, "a", key))
    job_id = first.json()["job_id"]
    purged = http.delete(f"/v1/jobs/{job_id}?purge=true", headers=_headers(world, "a_admin"))
    assert purged.status_code == 200 and purged.json()["purged"], purged.text
    again = http.post("/v1/batch", files=_images((4, 4, 4)), headers=_headers(world, "a", key))
    assert again.status_code == 202 and REPLAYED not in again.headers, again.text
    assert again.json()["job_id"] != job_id


class AnswerLost(httpx.BaseTransport):
    """Forwards to the app; the answer to the first `POST /v1/batch` is lost on its way back (the job was made)."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.batch_keys, self.paths = inner, [], []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.paths.append(request.url.path)
        if request.method == "POST" and request.url.path == "/v1/batch":
            self.batch_keys.append(request.headers.get(KEY_HEADER))
            if len(self.batch_keys) == 1:
                response.read()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


@pytest.mark.parametrize("chunk_files", [10, 1])
def test_the_sdk_retries_a_lost_submission_with_its_key_and_gets_one_job(
    world: dict[str, Any], tmp_path: Path, chunk_files: int
) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg((i * 40, 90, 20)))
    transport = AnswerLost(world["http"]._transport)
    before = _count(world, jobs, jobs.c.tenant == "b")
    client = BatchClient("http://testserver", transport=transport, api_key=world["keys"]["b"], retries=2)
    job = client.submit(tmp_path, chunk_files=chunk_files)
    assert job.total == 3
    assert _count(world, jobs, jobs.c.tenant == "b") == before + 1  # the retry did not make a second job
    first, retry = transport.batch_keys
    assert first == retry and uuid.UUID(first or "").version == 4
    if chunk_files == 1:  # the key is the job-creating request's only
        assert transport.paths.count(f"/v1/jobs/{job.job_id}/items") == 2


def test_each_sdk_submission_has_its_own_key() -> None:
    keys: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get(KEY_HEADER))
        return httpx.Response(202, json={"job_id": "j", "status": "queued", "counts": {}})

    client = BatchClient("http://testserver", transport=httpx.MockTransport(answer))
    client.submit_uris(["s3://bucket/a.jpg"])
    client.submit_uris(["s3://bucket/a.jpg"])
    client.submit_uris(["s3://bucket/a.jpg"], idempotency_key="mine")
    assert keys[0] and keys[1] and keys[0] != keys[1] and keys[2] == "mine"


SPEC = JobSpec("m", 1, ("classification",))


def _parts(*contents: bytes) -> list[InputPart]:
    return [InputPart("image", f"{i}.jpg", io.BytesIO(data)) for i, data in enumerate(contents)]


def _service(tmp_path: Path) -> tuple[JobService, CountingGate]:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'j.sqlite3'}", object_store=str(tmp_path / "o"))
    gate = CountingGate()
    return JobService(SimpleNamespace(), settings, gate=gate), gate


@pytest.mark.parametrize("same_request", [True, False])
def test_the_loser_of_a_race_for_a_key_answers_the_winners_job_and_gets_its_images_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_request: bool
) -> None:
    """Both requests looked the key up before either wrote its job: the second write fails on the unique index."""
    service, gate = _service(tmp_path)
    looked_up: list[IdempotencyClaim] = []
    real_lookup = service_module.keyed_job

    def winner_writes_between(engine: sa.Engine, tenant: str, claim: IdempotencyClaim) -> str | None:
        if not looked_up:
            looked_up.append(claim)
            winner = claim if same_request else IdempotencyClaim(claim.key, "0" * 64)
            JobStore(engine).create_job(
                SPEC, [NewItem("0.jpg", "object", "a" * 64, 1)], tenant=tenant, idempotency=winner
            )
            return None
        return real_lookup(engine, tenant, claim)

    monkeypatch.setattr(service_module, "keyed_job", winner_writes_between)

    async def scenario() -> None:
        if same_request:
            submitted = await service.submit_with_key(SPEC, _parts(b"x", b"y"), key="k")
            assert submitted.replayed and submitted.job.total == 1  # the winner's job
        else:
            with pytest.raises(IdempotencyKeyReusedError):
                await service.submit_with_key(SPEC, _parts(b"x", b"y"), key="k")

    asyncio.run(scenario())
    assert gate.charged == 0  # the loser's two images were given back
    with service.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 1


def test_requests_sent_together_with_one_key_make_one_job(tmp_path: Path) -> None:
    service, gate = _service(tmp_path)

    async def scenario() -> list[Any]:
        return list(
            await asyncio.gather(*(service.submit_with_key(SPEC, _parts(b"x", b"y"), key="k") for _ in range(4)))
        )

    submitted = asyncio.run(scenario())
    assert len({s.job.id for s in submitted}) == 1 and sum(not s.replayed for s in submitted) == 1
    assert gate.charged == 2


def test_the_migration_adds_the_keys_and_downgrades_keeping_the_jobs(tmp_path: Path) -> None:
    from alembic import command

    engine = create_store_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    migrate(engine)
    assert current_revision(engine) == head_revision() == "0010"
    indexes = {ix["name"]: ix for ix in sa.inspect(engine).get_indexes("jobs")}
    assert indexes["ux_jobs_tenant_idempotency_key"]["unique"]
    assert indexes["ux_jobs_tenant_idempotency_key"]["column_names"] == ["tenant", "idempotency_key"]
    store = JobStore(engine)
    items = [NewItem("0.jpg", "object", "a" * 64, 1)]
    keyed = store.create_job(SPEC, items, tenant="a", idempotency=IdempotencyClaim("k", "f" * 64))
    store.create_job(SPEC, items, tenant="a")  # jobs without a key never collide (NULLs are distinct)
    store.create_job(SPEC, items, tenant="a")
    with pytest.raises(sa.exc.IntegrityError):
        store.create_job(SPEC, items, tenant="a", idempotency=IdempotencyClaim("k", "e" * 64))

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    assert current_revision(engine) == "0008"
    columns = {column["name"] for column in sa.inspect(engine).get_columns("jobs")}
    assert not {"idempotency_key", "request_fingerprint"} & columns
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 3
        assert conn.execute(sa.text("SELECT count(*) FROM job_items WHERE job_id = :j"), {"j": keyed}).scalar() == 1
    migrate(engine)
    assert current_revision(engine) == "0010"
    assert {"idempotency_key", "request_fingerprint"} <= {c["name"] for c in sa.inspect(engine).get_columns("jobs")}


def test_an_uploads_name_keeps_the_characters_multipart_escapes(world: dict[str, Any]) -> None:
    """httpx and browsers send `"`, CR and LF in a filename as %22, %0D, %0A (the HTML standard); the job's items
    were named `a%22b.jpg`. Other `%` sequences are the name itself."""
    names = ['a"b.jpg', "c\nd.jpg", "e\rf.jpg", "g%41h.jpg"]
    files = [("image", (name, jpeg((i, 2 * i, 3 * i)), "image/jpeg")) for i, name in enumerate(names)]
    answer = world["http"].post("/v1/batch", files=files, headers=_headers(world, "a"))
    assert answer.status_code == 202, answer.text
    with world["engine"].connect() as conn:
        query = (
            sa.select(job_items.c.name).where(job_items.c.job_id == answer.json()["job_id"]).order_by(job_items.c.name)
        )
        stored = list(conn.execute(query).scalars())
    assert stored == sorted(names)
