"""The security parts on their own: keys, JWTs, roles, the shared rate-limit bucket, quotas, anonymisation."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipelines.metadata.anonymize import anonymize_metadata
from serving.jobs.database import create_store_engine, migrate
from serving.security.authenticator import Authenticator
from serving.security.errors import QuotaExceededError, RateLimitedError, UnauthenticatedError
from serving.security.keys import KeyStore, parse_key
from serving.security.limits import RateLimiter, UsageMeter
from serving.security.principal import SERVER_WIDE_GRPC_METHODS, Principal, grpc_role, http_role, is_server_wide
from serving.security.settings import SecuritySettings, is_loopback_host

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path):  # noqa: ANN201
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def test_keys_are_random_prefixed_and_stored_hashed(engine) -> None:  # noqa: ANN001
    store = KeyStore(engine)
    record, key = store.create("ci", "analyst", "acme")
    assert key.startswith("isk_") and parse_key(key) == record.id and len(key) == 4 + 12 + 1 + 43
    with engine.begin() as conn:
        assert key not in str(conn.exec_driver_sql("SELECT * FROM api_keys").all())
    assert store.verify(key) == record
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    store.revoke(record.id)
    assert store.verify(key) is None
    with pytest.raises(ValueError):
        store.create("x", "root", "acme")
    with pytest.raises(ValueError):
        store.create("x", "admin", "../etc")


def test_auth_modes_follow_the_binds() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("10.0.0.5") and not is_loopback_host("example")
    auto = SecuritySettings()
    assert auto.effective_auth(["127.0.0.1"]) == "off" and auto.effective_auth(["0.0.0.0"]) == "required"
    with pytest.raises(ValueError, match="IMGSERVE_AUTH=off"):
        SecuritySettings(auth="off").effective_auth(["127.0.0.1", "0.0.0.0"])
    assert SecuritySettings(auth="required").effective_auth(["127.0.0.1"]) == "required"


def test_route_policy_is_closed_by_default() -> None:
    assert http_role("GET", "/v2/health/live") is None and grpc_role("Check") is None
    assert http_role("GET", "/v1/jobs/abc") == "viewer" and http_role("POST", "/v1/classify") == "analyst"
    assert http_role("GET", "/metrics") == "operator" and http_role("GET", "/v1/audit") == "admin"
    assert http_role("PUT", "/v1/classify") == "admin" and http_role("GET", "/v1/something-new") == "admin"
    assert grpc_role("Classify") == "analyst" and grpc_role("SomeNewRpc") == "admin"
    # Triton's model list: viewers over gRPC, so viewers over HTTP too (it was admin-only there)
    assert http_role("POST", "/v2/repository/index") == grpc_role("RepositoryIndex") == "viewer"
    # Triton's model configuration: what GET /v2/models/{m}/config needs (gRPC's ModelConfig was admin-only)
    assert http_role("GET", "/v2/models/m/config") == grpc_role("ModelConfig") == "viewer"
    assert http_role("POST", "/v2/repository/models/m/load") == "admin"
    # Triton's statistics: every tenant's traffic, so the server's operators only (server-wide, as /metrics)
    for path in ("/v2/models/stats", "/v2/models/m/stats", "/v2/models/m/versions/2/stats"):
        assert http_role("GET", path) == grpc_role("ModelStatistics") == "operator" and is_server_wide(path), path
    assert "ModelStatistics" in SERVER_WIDE_GRPC_METHODS and not is_server_wide("/v2/models/m/config")


def _ec_keys(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "jwt.pem"
    public.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _hs256(claims: dict[str, object], secret: bytes) -> str:
    """A hand-made HS256 token (PyJWT refuses to sign one with a PEM key, as a forger would not)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + part(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


def test_jwts_from_the_configured_issuer(engine, tmp_path: Path) -> None:  # noqa: ANN001
    private, public = _ec_keys(tmp_path)
    settings = SecuritySettings(auth="required", jwt_public_key_file=public, jwt_issuer="https://idp")
    auth = Authenticator(engine, settings)
    claims = {"sub": "alice", "tenant": "acme", "role": "analyst", "iss": "https://idp", "exp": time.time() + 60}
    principal = asyncio.run(auth.authenticate("Bearer " + jwt.encode(claims, private, algorithm="ES256")))
    assert (principal.tenant, principal.role, principal.source) == ("acme", "analyst", "jwt")
    # Callers go by issuer, subject and tenant: two service accounts whose subjects share 12 characters, in two
    # tenants, shared one rate bucket and one quota row.
    ids = {
        asyncio.run(auth.authenticate("Bearer " + jwt.encode({**claims, **extra}, private, algorithm="ES256"))).key_id
        for extra in ({"sub": "svc-account-tenant-c"}, {"sub": "svc-account-tenant-d"}, {"tenant": "globex"})
    }
    again = asyncio.run(auth.authenticate("Bearer " + jwt.encode(claims, private, algorithm="ES256"))).key_id
    assert len(ids | {principal.key_id}) == 4 and again == principal.key_id and len(again) == 16
    other, _ = _ec_keys(tmp_path / "..")
    forged = [
        jwt.encode(claims, other, algorithm="ES256"),  # someone else's key
        jwt.encode({**claims, "exp": time.time() - 300}, private, algorithm="ES256"),  # expired (past the leeway)
        jwt.encode({**claims, "iss": "https://evil"}, private, algorithm="ES256"),  # wrong issuer
        jwt.encode({**claims, "role": "root"}, private, algorithm="ES256"),  # no such role
        _hs256(claims, public.read_bytes()),  # the public key used as an HMAC secret (algorithm confusion)
    ]
    for token in forged:
        with pytest.raises(UnauthenticatedError):
            asyncio.run(auth.authenticate(f"Bearer {token}"))


def test_rate_limit_is_shared_between_replicas(engine) -> None:  # noqa: ANN001
    """Two limiters (two replicas) over one database: together they admit the burst, then the rate."""
    key = Principal(key_id="k1", tenant="t", role="analyst", rate_per_s=5.0, burst=5)

    async def burst() -> int:
        replicas = [RateLimiter(engine), RateLimiter(engine)]
        admitted = 0
        for i in range(40):
            try:
                await replicas[i % 2].take(key)
                admitted += 1
            except RateLimitedError as error:
                assert 0 < error.retry_after_s <= 0.2 + 1e-6 or error.retry_after_s <= 1
        return admitted

    start = time.monotonic()
    admitted = asyncio.run(burst())
    elapsed = time.monotonic() - start
    assert 5 <= admitted <= 5 + 5 * elapsed + 1, (admitted, elapsed)


def test_daily_quota(engine) -> None:  # noqa: ANN001
    key = Principal(key_id="q1", tenant="t", role="analyst", quota_images_per_day=10)

    async def run() -> None:
        meter = UsageMeter(engine)
        await meter.charge(key, 6)
        await meter.flush()
        other_replica = UsageMeter(engine)
        await other_replica.charge(key, 4)
        with pytest.raises(QuotaExceededError):
            await other_replica.charge(key, 1)
        with pytest.raises(QuotaExceededError):
            await UsageMeter(engine).charge(Principal("q2", "t", "analyst"), 1, tenant_quota=6)

    asyncio.run(run())


def test_quota_counts_images_while_a_flush_is_writing_them(engine) -> None:  # noqa: ANN001
    """The counts a flush is writing stay counted until the database read includes them (a CI run once let a
    fourth image through a quota of 3 in that window)."""
    key = Principal(key_id="q3", tenant="t", role="analyst", quota_images_per_day=3)

    async def run() -> None:
        meter = UsageMeter(engine)
        await meter.charge(key, 3)
        write = meter._write
        writing = asyncio.Event()

        def slow_write(pending: dict) -> None:  # noqa: ANN001
            writing.set()
            time.sleep(0.3)
            write(pending)

        meter._write = slow_write  # type: ignore[method-assign]
        flush = asyncio.create_task(meter.flush())
        await writing.wait()
        with pytest.raises(QuotaExceededError):
            await meter.charge(key, 1)  # during the write
        await flush
        with pytest.raises(QuotaExceededError):
            await meter.charge(key, 1)  # after it: read back from the database

    asyncio.run(run())


def test_anonymize_drops_location_and_names() -> None:
    document = {
        "file": {"sha256": "ab"},
        "exif": {"make": "Canon", "model": "EOS"},
        "gps": {"latitude_deg": 1.0},
        "xmp": {"creators": ["Ann"], "rating": 5, "title": "t", "description": "d"},
        "iptc": {"by_line": ["Ann"], "city": "Oslo", "keywords": ["x"], "credit": "c", "copyright_notice": "(c)"},
        "errors": ["gps.altitude: bad"],
    }
    out = anonymize_metadata(document)
    assert out["gps"] is None and out["xmp"]["creators"] == [] and out["iptc"]["by_line"] == []
    assert out["iptc"]["city"] is None and out["iptc"]["keywords"] == ["x"] and out["xmp"]["rating"] == 5
    assert out["exif"] == document["exif"] and out["anonymized"] is True and out["errors"] == []
    assert document["gps"] == {"latitude_deg": 1.0}  # the input is not changed


def test_jwks_keys_are_chosen_by_kid(engine, tmp_path: Path) -> None:  # noqa: ANN001
    private, _ = _ec_keys(tmp_path)
    other, _ = _ec_keys(tmp_path / "..")
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256"}]}))
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))
    claims = {"sub": "svc", "imgserve_tenant": "acme", "imgserve_role": "viewer", "exp": time.time() + 60}
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    assert asyncio.run(auth.authenticate(f"Bearer {token}")).role == "viewer"
    for bad in (
        jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k1"}),  # right kid, wrong key
        jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k9"}),  # unknown kid
    ):
        with pytest.raises(UnauthenticatedError):
            asyncio.run(auth.authenticate(f"Bearer {bad}"))


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join((part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(b"garbage" * 20)))


def _jwk(public_pem: bytes, kid: str, **extra: str) -> dict[str, object]:
    key = serialization.load_pem_public_key(public_pem)
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "kid": kid, "use": "sig", **extra}


def test_a_jwks_is_read_again_when_it_changes_and_keys_it_cannot_use_are_left_out(engine, tmp_path: Path) -> None:  # noqa: ANN001
    """The JWKS was read once at start (a rotated-in key refused, a removed one working until restart); an
    encryption key in it (Keycloak publishes one) stopped the server from starting; a token whose algorithm does not
    match its key's type was a 500; a kid the JWKS does not hold fell back to a key without kid; a tenant claim
    `true` was the tenant "True"."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_public = _ec_keys(tmp_path / "a")
    second, second_public = _ec_keys(tmp_path / "b")
    jwks = tmp_path / "jwks.json"
    encryption = {"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc1", "n": "sXch", "e": "AQAB"}
    jwks.write_text(json.dumps({"keys": [_jwk(first_public.read_bytes(), "k1"), encryption]}))
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))  # starts despite the enc key
    auth.jwt.JWKS_RECHECK_S = 0.0  # type: ignore[union-attr]
    claims = {"sub": "alice", "tenant": "acme", "role": "analyst", "exp": time.time() + 60}

    def token(key: object, kid: str, **changes: object) -> str:
        return "Bearer " + jwt.encode({**claims, **changes}, key, algorithm="ES256", headers={"kid": kid})

    assert asyncio.run(auth.authenticate(token(first, "k1"))).tenant == "acme"
    time.sleep(0.01)
    jwks.write_text(json.dumps({"keys": [_jwk(second_public.read_bytes(), "k2")]}))  # the IdP rotated its key
    assert asyncio.run(auth.authenticate(token(second, "k2"))).tenant == "acme"
    refused = [
        token(first, "k1"),  # removed from the JWKS
        token(second, "k9"),  # a kid the JWKS does not hold
        token(second, "k2", tenant=True),
        token(second, "k2", tenant="acme\n"),
        "Bearer " + _unsigned({"alg": "RS256", "kid": "k2"}, claims),  # an RSA algorithm for an EC key: was a 500
    ]
    for bearer in refused:
        with pytest.raises(UnauthenticatedError):
            asyncio.run(auth.authenticate(bearer))


def test_an_audit_entry_added_during_a_write_is_written_too(engine) -> None:  # noqa: ANN001
    """An entry queued while the writer was writing the previous batch stayed in memory until another entry came
    (and was lost at a stop)."""
    import threading

    from serving.security.audit import AuditEntry, AuditWriter, query_audit

    writer = AuditWriter(engine, interval_s=0.01)
    writing = threading.Event()
    original = writer._write

    def slow_write(entries: list) -> None:
        writing.set()
        time.sleep(0.2)
        original(entries)

    writer._write = slow_write  # type: ignore[method-assign]

    async def scenario() -> None:
        writer.add(AuditEntry(action="auth.first", client="t"))
        await asyncio.to_thread(writing.wait, 5)
        writer.add(AuditEntry(action="auth.second", client="t"))  # while the first batch is being written
        await asyncio.sleep(1.0)

    asyncio.run(scenario())
    assert [e["action"] for e in query_audit(engine, action="auth.*")] == ["auth.first", "auth.second"]


def test_a_jwks_without_key_ids_accepts_a_token_naming_one(engine, tmp_path: Path) -> None:  # noqa: ANN001
    """A hand-made JWKS of one key without `kid` must not lock out tokens that carry a kid (only a JWKS whose keys
    have ids decides by kid)."""
    private, public = _ec_keys(tmp_path)
    jwk = _jwk(public.read_bytes(), "unused")
    del jwk["kid"]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))
    claims = {"sub": "alice", "tenant": "acme", "role": "analyst", "exp": time.time() + 60}
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "idp-key-7"})
    assert asyncio.run(auth.authenticate(f"Bearer {token}")).tenant == "acme"
