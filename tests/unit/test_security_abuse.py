"""Limits of callers the key checks did not cover: JWT callers' rate limit and clock leeway, a flood of random API
keys (database lookups and audit rows), and requests of one tenant sent together against its stored-bytes quota."""

import asyncio
import io
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from serving.http.auth import AuthMiddleware
from serving.jobs.database import create_store_engine, migrate
from serving.security import keys as key_module
from serving.security.errors import UnauthenticatedError
from serving.security.gate import SecurityGate
from serving.security.key_ids import KnownKeyIds
from serving.security.keys import KeyStore
from serving.security.settings import SecuritySettings
from serving.security.tables import audit_log

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def _signing_key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "jwt.pem"
    public.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _token(private: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    base = {"sub": "svc", "tenant": "acme", "role": "analyst", "exp": time.time() + 600}
    return jwt.encode({**base, **claims}, private, algorithm="ES256")


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, credentials: str | None, client: str = "10.1.2.3") -> tuple[int, dict[str, str], bytes]:
    """One GET /v1/models through `app`: (status, headers, body)."""
    answer: dict[str, Any] = {"headers": {}, "body": b""}
    headers = [(b"authorization", f"Bearer {credentials}".encode())] if credentials else []
    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": headers, "client": (client, 5555)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["headers"], answer["body"]


def test_a_jwt_caller_is_rate_limited_like_a_key(engine: sa.Engine, tmp_path: Path) -> None:
    """A JWT caller had no rate limit at all (200 requests back to back: 200 admitted) while an API key of the same
    tenant and role at 2/s got 2."""
    private, public = _signing_key(tmp_path)
    settings = SecuritySettings(auth="required", jwt_public_key_file=public, jwt_rate=2, jwt_burst=3)
    gate = SecurityGate("required", engine, settings)
    app = AuthMiddleware(_ok_app, gate)
    _, key = KeyStore(engine).create("limited", "analyst", "acme", rate_per_s=2.0, burst=3)

    async def run() -> None:
        for credentials in (_token(private), key):
            answers = [await _call(app, credentials) for _ in range(30)]
            statuses = [status for status, _, _ in answers]
            assert statuses[:3] == [200] * 3 and 3 <= statuses.count(200) <= 5 and 429 in statuses, statuses
            status, headers, body = next(answer for answer in answers if answer[0] == 429)
            assert json.loads(body)["kind"] == "rate_limited" and 1 <= int(headers["retry-after"]) <= 2
        # each caller (issuer, subject, tenant) has a bucket of its own
        other = [(await _call(app, _token(private, sub="other-svc")))[0] for _ in range(3)]
        assert other == [200] * 3

    asyncio.run(run())


def test_jwt_rate_settings() -> None:
    assert SecuritySettings().jwt_limits() is None  # the documented default: as a key made without --rate
    assert SecuritySettings(jwt_rate=50).jwt_limits() == (50.0, 50)
    assert SecuritySettings.from_env({"IMGSERVE_JWT_RATE": "120/min"}).jwt_limits() == (2.0, 10)
    assert SecuritySettings.from_env({"IMGSERVE_JWT_RATE": "0"}).jwt_limits() is None  # 0: not limited
    for bad in ("-1", "inf", "5/week"):
        with pytest.raises(ValueError):
            SecuritySettings.from_env({"IMGSERVE_JWT_RATE": bad})


def test_jwt_time_claims_have_a_clock_leeway(engine: sa.Engine, tmp_path: Path) -> None:
    """A token minted by an identity provider whose clock is a few seconds ahead (or that expired a moment ago by
    its clock) was refused: no leeway. 30 s by default; one expired far beyond it is still refused with 401."""
    private, public = _signing_key(tmp_path)
    now = time.time()
    app, strict = (
        AuthMiddleware(
            _ok_app,
            SecurityGate("required", engine, SecuritySettings(auth="required", jwt_public_key_file=public, **leeway)),
        )
        for leeway in ({}, {"jwt_leeway_s": 0})
    )

    async def status(target: Any, token: str) -> int:
        return (await _call(target, token))[0]

    async def run() -> None:
        assert await status(app, _token(private, exp=now - 10)) == 200
        assert await status(app, _token(private, iat=now + 10, nbf=now + 10)) == 200  # the IdP's clock 10 s ahead
        assert await status(app, _token(private, exp=now - 120)) == 401
        assert await status(strict, _token(private, exp=now - 10)) == 401  # IMGSERVE_JWT_LEEWAY_S=0

    asyncio.run(run())


def _count_key_lookups(engine: sa.Engine) -> dict[str, int]:
    seen = {"lookups": 0}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:  # noqa: ARG001
        if "FROM api_keys" in statement:
            seen["lookups"] += 1

    return seen


def _random_key() -> str:
    return f"isk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def test_random_keys_cost_no_lookup_each_and_new_keys_still_work(engine: sa.Engine) -> None:
    """500 random well-formed keys made 500 SELECTs on api_keys (the refusal cache only helped a repeated key); a
    live key used during the flood was looked up again when the flood pushed it out of the cache."""
    gate = SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=300))
    store = KeyStore(engine)
    _, live = store.create("live", "viewer", "t")
    seen = _count_key_lookups(engine)

    async def run() -> None:
        assert (await gate.authenticator.authenticate(f"Bearer {live}")).tenant == "t"  # type: ignore[union-attr]
        before = seen["lookups"]
        start = time.monotonic()
        for i in range(500):
            with pytest.raises(UnauthenticatedError):
                await gate.authenticator.authenticate(f"Bearer {_random_key()}")  # type: ignore[union-attr]
            if i % 50 == 0:
                await gate.authenticator.authenticate(f"Bearer {live}")  # type: ignore[union-attr]
        reloads_allowed = 3 + (time.monotonic() - start) / 0.25 + 1
        assert seen["lookups"] - before <= reloads_allowed, (seen["lookups"] - before, reloads_allowed)
        # A key made in this process works at once, flood or not
        _, fresh = store.create("fresh", "viewer", "t")
        assert (await gate.authenticator.authenticate(f"Bearer {fresh}")).tenant == "t"  # type: ignore[union-attr]
        # ... one made by another process (imgserve keys create) within the reload interval, during a flood
        for _ in range(10):
            with pytest.raises(UnauthenticatedError):
                await gate.authenticator.authenticate(f"Bearer {_random_key()}")  # type: ignore[union-attr]
        made_here = key_module._made_here[0]
        _, elsewhere = store.create("elsewhere", "viewer", "t")
        key_module._made_here[0] = made_here  # as if another process had made it
        await asyncio.sleep(0.3)
        assert (await gate.authenticator.authenticate(f"Bearer {elsewhere}")).tenant == "t"  # type: ignore[union-attr]

    asyncio.run(run())


def test_refusals_naming_no_key_are_counted_per_client_and_known_keys_one_by_one(engine: sa.Engine) -> None:
    """Every refused random key was an audit row of its own (1500 requests: 1500 rows)."""
    gate = SecurityGate("required", engine, SecuritySettings(auth="required"))
    store = KeyStore(engine)
    record, key = store.create("gone", "viewer", "t")
    store.revoke(record.id)
    wrong_secret = key[:-1] + ("A" if key[-1] != "A" else "B")

    async def refuse(credentials: str | None, client: str) -> None:
        with pytest.raises(UnauthenticatedError):
            await gate.admit(f"Bearer {credentials}" if credentials else None, client, "viewer", "/v1/models")

    async def run() -> None:
        for _ in range(200):
            await refuse(_random_key(), "10.0.0.1")
        for _ in range(3):
            await refuse(None, "10.0.0.2")
        for credentials in (key, wrong_secret, key):
            await refuse(credentials, "10.0.0.1")
        await gate.audit_writer.flush()  # type: ignore[union-attr]  # what GET /v1/audit does first

    asyncio.run(run())
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]
    anonymous = [(r["client"], (r["detail"] or {}).get("repeated")) for r in rows if r["key_id"] is None]
    assert sorted(anonymous, key=str) == sorted(
        [("10.0.0.1", None), ("10.0.0.1", 199), ("10.0.0.2", None), ("10.0.0.2", 2)], key=str
    )
    known = [r for r in rows if r["key_id"] == record.id]
    assert len(known) == 3 and all(r["action"] == "auth.unauthenticated" for r in known)


def test_a_window_of_counted_refusals_is_written_when_it_ends(engine: sa.Engine) -> None:
    from serving.security.audit import AuditEntry, AuditWriter, query_audit

    writer = AuditWriter(engine, interval_s=0.02, window_s=0.2)

    async def run() -> None:
        for _ in range(5):
            writer.add_repeated(AuditEntry(action="auth.unauthenticated", outcome="denied", client="c"))
        await asyncio.sleep(0.6)  # nobody reads the log: the writer writes the count itself
        writer.add_repeated(AuditEntry(action="auth.unauthenticated", outcome="denied", client="c"))  # a new window
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert [(e["detail"] or {}).get("repeated") for e in query_audit(engine)] == [None, 4, None]


def _png() -> bytes:
    """About 11 KB of noise (PNG cannot compress it)."""
    import os

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (60, 60), os.urandom(60 * 60 * 3)).save(out, "PNG")
    return out.getvalue()


def test_uploads_sent_together_stay_within_the_stored_bytes_quota(tmp_path: Path) -> None:
    """Each request read the tenant's stored total before any of them wrote its items: 8 uploads sent at once stored
    118 KB for a 100 KB quota. The images of a refused request are given back to the key's daily quota."""
    from serving.jobs.intake import InputPart
    from serving.jobs.records import JobSpec
    from serving.jobs.service import JobService
    from serving.jobs.settings import JobSettings
    from serving.security.gate import CURRENT_PRINCIPAL
    from serving.security.limits import utc_day
    from serving.security.tables import usage_daily
    from serving.security.tenants import TenantStore

    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "obj"))
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    gate = SecurityGate("required", engine, SecuritySettings(auth="required"))
    jobs = JobService(None, settings, None, gate)
    images = [_png() for _ in range(8)]
    size = len(images[0])
    TenantStore(engine).update("race", quota_stored_bytes=3 * size + size // 2)  # room for three
    record, _ = KeyStore(engine).create("r", "analyst", "race")
    principal = record.principal()
    spec = JobSpec("tiny", 1, ("classification",))

    async def submit(data: bytes) -> str:
        CURRENT_PRINCIPAL.set(principal)
        try:
            parts = [InputPart("image", "x.png", io.BytesIO(data))]
            await jobs.submit(spec, parts, start=False, principal=principal)
        except Exception as error:  # noqa: BLE001
            return getattr(error, "kind", repr(error))
        return "accepted"

    async def run() -> list[str]:
        outcomes = await asyncio.gather(*(submit(data) for data in images))
        await gate.usage.flush()  # type: ignore[union-attr]
        return outcomes

    outcomes = asyncio.run(run())
    assert outcomes.count("accepted") == 3 and outcomes.count("quota_exceeded") == 5, outcomes
    assert jobs.store.stored_bytes("race") <= 3 * size + size // 2
    with engine.begin() as conn:
        charged = conn.execute(
            sa.select(usage_daily.c.images).where(usage_daily.c.key_id == record.id, usage_daily.c.day == utc_day())
        ).scalar()
    assert charged == 3


def test_items_added_to_an_open_job_are_checked_in_their_transaction(engine: sa.Engine) -> None:
    """`add_items` (POST /v1/jobs/{id}/items) charges the quota in its transaction too; URIs store nothing."""
    from serving.jobs.records import JobSpec, NewItem
    from serving.jobs.store import JobStore
    from serving.security.errors import QuotaExceededError
    from serving.security.tenants import TenantStore

    store = JobStore(engine, 100)
    TenantStore(engine).update("t", quota_stored_bytes=1000)
    job = store.create_job(JobSpec("m", 1, ()), [NewItem("a", "object", "d1", 600)], False, "t", None, 1000)
    with pytest.raises(QuotaExceededError, match="600 stored, 500 more"):
        store.add_items(job, [NewItem("b", "object", "d2", 500)], "t", 1000)
    assert store.get_job(job).total == 1 and store.stored_bytes("t") == 600
    assert store.add_items(job, [NewItem("c", "object", "d3", 400)], "t", 1000) == 2
    assert store.add_items(job, [NewItem("u", "uri", "file:///x")], "t", 1000) == 3  # no bytes: no check


def test_a_flood_reads_only_the_keys_made_since_the_last_read() -> None:
    """Each reload read every key id (200,000 ids: 120-160 ms, 4 times a second during a flood); after the first read
    only ids made since the last one (less a clock margin) are asked for, and all of them again now and then."""
    calls: list[float | None] = []
    made: dict[str, float] = {"a": time.time() - 3600}

    def load(limit: int, since: float | None) -> list[str]:
        calls.append(since)
        return [key for key, at in made.items() if since is None or at >= since][:limit]

    known = KnownKeyIds(load, reload_every_s=1e-9, full_read_every_s=3600)

    async def run() -> None:
        assert await known.may_exist("a") and calls == [None]  # the first read: every id
        for i in range(5):
            assert not await known.may_exist(f"unknown{i}")
        assert len(calls) == 6 and all(since is not None and since > made["a"] for since in calls[1:])
        made["b"] = time.time()  # made by another replica: found by the next read of recent keys
        assert await known.may_exist("b") and calls[-1] is not None
        made["late"] = time.time() - 3000  # a host whose clock is far behind: only a read of every id finds it
        assert not await known.may_exist("late")
        known.full_read_every_s = 0.0
        assert await known.may_exist("late") and calls[-1] is None

    asyncio.run(run())
