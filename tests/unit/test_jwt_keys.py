"""JWT signing keys (serving.security.jwt_keys), from a JWT review: keys without an id replaced one another (a
JWKS of two keys without `kid`, or the public key file beside a JWKS: only the last key worked, the others' tokens
were 401); a P-521 key (ES512) passed the start check and then refused every token; PS384/PS512 were refused though
asymmetric; a JWKS of only an HMAC key passed the start check."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from serving.jobs.database import create_store_engine, migrate
from serving.security.authenticator import Authenticator
from serving.security.errors import UnauthenticatedError
from serving.security.settings import SecuritySettings
from serving.start_checks import StartRefused, check_jwt_files

pytestmark = pytest.mark.unit
CLAIMS = {"sub": "svc", "tenant": "acme", "role": "viewer"}


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def _jwk(private: Any, **extra: str) -> dict[str, Any]:
    public = private.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), **extra}


def _token(private: Any, algorithm: str, **headers: str) -> str:
    return jwt.encode({**CLAIMS, "exp": time.time() + 600}, private, algorithm=algorithm, headers=headers or None)


def _tenant(auth: Authenticator, token: str) -> str:
    return asyncio.run(auth.authenticate(f"Bearer {token}")).tenant


def test_every_key_without_an_id_and_the_public_key_file_verify_their_tokens(engine: sa.Engine, tmp_path: Path) -> None:
    pem_key, second = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    first = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        pem_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(first), _jwk(second)]}))  # neither has a kid
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks, jwt_public_key_file=pem))
    assert _tenant(auth, _token(pem_key, "RS256")) == "acme"  # 401 "Signature verification failed" before
    assert _tenant(auth, _token(pem_key, "RS256", kid="x")) == "acme"  # keys without ids take any kid
    assert _tenant(auth, _token(first, "ES256")) == "acme"  # 401 "Expecting a PEM-formatted key" before
    assert _tenant(auth, _token(second, "PS512")) == "acme"  # PS384/PS512: "alg value is not allowed" before
    stranger = rsa.generate_private_key(65537, 2048)
    with pytest.raises(UnauthenticatedError, match="Signature verification failed"):
        _tenant(auth, _token(stranger, "RS256"))
    with pytest.raises(UnauthenticatedError):
        _tenant(auth, jwt.encode({**CLAIMS, "exp": time.time() + 600}, "secret", algorithm="HS256"))


def test_a_p521_key_signs_es512_and_an_hmac_only_jwks_is_refused_at_start(engine: sa.Engine, tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP521R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(private, kid="p521", alg="ES512")]}))
    check_jwt_files({"IMGSERVE_AUTH": "required", "IMGSERVE_JWKS_FILE": str(jwks)})
    auth = Authenticator(engine, SecuritySettings(auth="required", jwks_file=jwks))
    assert _tenant(auth, _token(private, "ES512", kid="p521")) == "acme"  # every token refused before
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"}]}))
    with pytest.raises(StartRefused, match="no signing key imgserve can use"):  # passed before
        check_jwt_files({"IMGSERVE_AUTH": "required", "IMGSERVE_JWKS_FILE": str(jwks)})
