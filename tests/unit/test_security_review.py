"""Security review findings: a shared rate bucket under replicas' clock skew, the list of key ids past its size
limit, a JWKS file of an unexpected shape."""

import argparse
import asyncio
import json
import os
import time
import types
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from serving.jobs.database import create_store_engine, migrate
from serving.security import limits
from serving.security.authenticator import Authenticator
from serving.security.errors import UnauthenticatedError
from serving.security.key_ids import KnownKeyIds
from serving.security.keys import KeyStore, new_key
from serving.security.limits import RateLimiter
from serving.security.settings import SecuritySettings
from serving.security.tables import api_keys

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def _leases(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, clocks: list[float], every_s: float) -> int:
    """Tokens two replicas (clocks offset by `clocks`, leasing in turn every `every_s`) get for 200 leases of one
    token of a key limited to 10/s with a burst of 10."""
    now = [1_000_000.0]
    replicas = [RateLimiter(engine), RateLimiter(engine)]
    granted = 0
    for i in range(200):
        now[0] += every_s
        offset = clocks[i % 2]
        monkeypatch.setattr(limits, "time", types.SimpleNamespace(time=lambda o=offset: now[0] + o))
        granted += replicas[i % 2]._take_lease("skewed", 10.0, 10, 1)[0]
    return granted


def test_replicas_with_skewed_clocks_do_not_refill_a_bucket_twice(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica behind moved the bucket's time back, and the one ahead counted the difference again at its next
    lease: two replicas 0.5 s apart, taking leases in turn, admitted all 200 requests of 10 s at 10/s (burst 10)."""
    granted = _leases(engine, monkeypatch, [0.5, 0.0], 0.05)
    assert granted <= 10 + 10 * 10 + 1, granted  # the burst, then 10 s at the rate


def test_a_clock_stepped_far_back_does_not_stop_the_bucket(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose clock steps back by an hour starts the bucket's time again instead of waiting an hour."""
    now = [1_000_000.0]
    monkeypatch.setattr(limits, "time", types.SimpleNamespace(time=lambda: now[0]))
    limiter = RateLimiter(engine)
    assert limiter._take_lease("stepped", 1.0, 1, 1)[0] == 1
    now[0] -= 3600.0
    granted, wait = limiter._take_lease("stepped", 1.0, 1, 1)
    assert granted == 0 and 0 < wait <= 1.0
    now[0] += 1.0
    assert limiter._take_lease("stepped", 1.0, 1, 1)[0] == 1
    # a replica a few seconds behind is told to wait until its clock reaches the bucket's time, plus one token
    now[0] -= 5.0
    granted, wait = limiter._take_lease("stepped", 1.0, 1, 1)
    assert granted == 0 and 5.0 < wait <= 6.0 + 1e-6, wait


def test_the_list_of_key_ids_is_kept_again_once_keys_are_deleted_below_its_limit(engine: sa.Engine) -> None:
    """Past `max_ids` keys the list was never read again: valid keys kept working and revoked ones stayed refused
    (each is looked up), but after keys were deleted (tenant erasure) every random key cost a lookup until a
    restart. Every id is now read again once per `full_read_every_s`."""
    store = KeyStore(engine)
    auth = Authenticator(engine, SecuritySettings(auth="required", key_cache_s=0))
    loads: list[float | None] = []

    def load(limit: int, since: float | None) -> list[str]:
        loads.append(since)
        return store.ids(limit, since)

    auth.known_ids = KnownKeyIds(load, reload_every_s=1e-9, max_ids=2, full_read_every_s=0.2)
    made = [store.create(f"k{i}", "viewer", "big" if i < 2 else "small") for i in range(3)]

    async def run() -> None:
        for record, key in made:  # three keys: past the limit, every key is looked up, and works
            assert (await auth.authenticate(f"Bearer {key}")).key_id == record.id
        assert auth.known_ids._unbounded
        store.revoke(made[0][0].id)
        with pytest.raises(UnauthenticatedError):
            await auth.authenticate(f"Bearer {made[0][1]}")
        with engine.begin() as conn:  # tenant "big" erased: one key left
            conn.execute(sa.delete(api_keys).where(api_keys.c.tenant == "big"))
        await asyncio.sleep(0.25)
        reads = len(loads)
        assert not await auth.known_ids.may_exist("0123456789ab")  # read again: kept, and the random id refused
        assert len(loads) == reads + 1 and loads[-1] is None and not auth.known_ids._unbounded
        assert (await auth.authenticate(f"Bearer {made[2][1]}")).key_id == made[2][0].id
        for _, key in made[:2]:
            with pytest.raises(UnauthenticatedError):
                await auth.authenticate(f"Bearer {key}")

    asyncio.run(run())


def test_a_jwks_file_of_another_shape_keeps_the_keys_read_last(engine: sa.Engine, tmp_path: Path) -> None:
    """A JWKS file rewritten as `[]` or `null` (an identity provider's error body saved by a fetch script) raised
    AttributeError: a 500 instead of the keys read last, as for a file that is not JSON."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())), "kid": "k1"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))
    claims = {"sub": "svc", "tenant": "acme", "role": "viewer", "exp": time.time() + 600}
    good = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    assert asyncio.run(auth.authenticate(f"Bearer {good}")).tenant == "acme"
    unknown = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k2"})  # reads the file again now
    for stamp, content in enumerate(("[]", "null", '{"keys": {"k1": 1}}', '{"keys": [1, "x"]}'), start=1):
        jwks.write_text(content)
        os.utime(jwks, (time.time() + stamp, time.time() + stamp))
        with pytest.raises(UnauthenticatedError):
            asyncio.run(auth.authenticate(f"Bearer {unknown}"))
        if stamp < 4:  # not a JWKS: the keys read last
            assert asyncio.run(auth.authenticate(f"Bearer {good}")).tenant == "acme", content
    with pytest.raises(UnauthenticatedError):  # a JWKS whose entries are not keys has no key: a 401
        asyncio.run(auth.authenticate(f"Bearer {good}"))
    with pytest.raises(ValueError, match="not a JWKS document"):
        jwks.write_text("[]")
        Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))


def test_keys_revoke_takes_the_whole_key_and_never_prints_its_secret(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`imgserve keys revoke isk_<id>_<secret>` (the leaked key at hand) looked the whole key up as an id: "no key",
    the key still working, and the secret printed in the error."""
    from serving import cli_security

    monkeypatch.setattr(cli_security, "_engine", lambda: engine)
    store = KeyStore(engine)
    record, key = store.create("leaked", "analyst", "acme")
    assert cli_security._cmd_keys_revoke(argparse.Namespace(key_id=key)) == 0
    assert store.verify(key) is None and store.list("acme", include_revoked=True)[0].revoked_at is not None
    _, other = new_key()  # a key no one made: refused, its secret not printed
    assert cli_security._cmd_keys_revoke(argparse.Namespace(key_id=other)) == 1
    assert cli_security._cmd_keys_revoke(argparse.Namespace(key_id=other[:-1] + "!")) == 1  # malformed, not an id
    printed = capsys.readouterr()
    assert key[17:] not in printed.out + printed.err and other[17:] not in printed.out + printed.err
    assert record.id in printed.out


def test_a_jwt_is_held_to_its_keys_alg_a_named_subject_and_one_tenant(engine: sa.Engine, tmp_path: Path) -> None:
    """Security walkthrough: an RSA JWK declaring "alg": "RS256" accepted PS256 and RS512 tokens; "sub": "" was a
    caller (every blank subject of a tenant one rate bucket); "tenant" and "imgserve_tenant" (or the roles) that
    disagree were decided by the second silently ("role": "viewer" beside "imgserve_role": "admin" was an admin)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())), "kid": "r1", "alg": "RS256"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))
    claims = {"sub": "svc", "tenant": "acme", "role": "viewer", "exp": time.time() + 600}

    def principal(algorithm: str = "RS256", **changed: object) -> object:
        token = jwt.encode({**claims, **changed}, private, algorithm=algorithm, headers={"kid": "r1"})
        return asyncio.run(auth.authenticate(f"Bearer {token}"))

    assert principal().tenant == "acme"  # type: ignore[attr-defined]
    assert principal(imgserve_tenant="acme").tenant == "acme"  # type: ignore[attr-defined] # the same: fine
    for algorithm, changed in (
        ("PS256", {}),
        ("RS512", {}),
        ("RS256", {"sub": ""}),
        ("RS256", {"sub": " "}),
        ("RS256", {"imgserve_tenant": "beta"}),
        ("RS256", {"imgserve_role": "admin"}),
    ):
        with pytest.raises(UnauthenticatedError):
            principal(algorithm, **changed)
