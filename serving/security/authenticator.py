"""Who is calling: an API key (`Bearer isk_...`) looked up in the database, or a JWT checked against a configured
public key / JWKS, with role and tenant from its claims.

Lookups are cached per replica for `key_cache_s` (default 5 s): the hot path costs a dict lookup and one SHA-256,
and a revoked key stops working everywhere within that time. Unknown well-formed keys are cached as refusals too
(bounded), so guessing costs the guesser, not the database. JWTs must be signed with an asymmetric algorithm
(RS256/ES256/EdDSA; no HS256, so a public key can never be used as an HMAC secret) and carry `exp`; claims
`tenant` and `role` (or `imgserve_tenant` / `imgserve_role`) name the tenant and role, `sub` the caller.
"""

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa

from serving.security.errors import UnauthenticatedError
from serving.security.keys import KeyStore, key_hash, parse_key
from serving.security.principal import Principal, check_role, check_tenant
from serving.security.settings import SecuritySettings
from serving.security.tables import api_keys

JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
CACHE_ENTRIES = 10_000


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("missing credentials: send 'Authorization: Bearer <api key or JWT>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("unsupported credentials: send 'Authorization: Bearer <api key or JWT>'")
    return token.strip()


class JwtVerifier:
    def __init__(self, settings: SecuritySettings):
        import jwt

        self._jwt = jwt
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience
        self._keys: dict[str | None, Any] = {}
        if settings.jwt_public_key_file is not None:
            self._keys[None] = settings.jwt_public_key_file.read_text()
        if settings.jwks_file is not None:
            for jwk in json.loads(settings.jwks_file.read_text()).get("keys", []):
                self._keys[jwk.get("kid")] = jwt.PyJWK(jwk).key

    def principal(self, token: str) -> Principal:
        jwt = self._jwt
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) or self._keys.get(None)
            if key is None:
                raise UnauthenticatedError("JWT signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=JWT_ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
            tenant = check_tenant(str(claims.get("imgserve_tenant") or claims.get("tenant") or ""))
            role = check_role(str(claims.get("imgserve_role") or claims.get("role") or ""))
        except UnauthenticatedError:
            raise
        except (jwt.PyJWTError, ValueError) as exc:
            raise UnauthenticatedError(f"invalid JWT: {exc}") from None
        return Principal(key_id=jwt_key_id(claims, tenant), tenant=tenant, role=role, source="jwt")


def jwt_key_id(claims: dict[str, Any], tenant: str) -> str:
    """The id a JWT caller's rate limit, quota and audit entries go by: `jwt:` and 12 hex digits of the issuer,
    subject and tenant (16 characters, the key-id column's size). It was `jwt:` + the subject's first 12
    characters, so `svc-account-a` in one tenant and `svc-account-b` in another shared a rate bucket and a daily
    quota row (counted against whichever tenant came first)."""
    identity = "\0".join((str(claims.get("iss") or ""), str(claims["sub"]), tenant))
    return "jwt:" + hashlib.sha256(identity.encode()).hexdigest()[:12]


class Authenticator:
    def __init__(self, engine: sa.Engine, settings: SecuritySettings):
        self.keys = KeyStore(engine)
        self.ttl_s = settings.key_cache_s
        self.jwt = JwtVerifier(settings) if settings.jwt_public_key_file or settings.jwks_file else None
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def _lookup(self, key: str) -> Principal | None:
        record = self.keys.verify(key)
        return None if record is None else record.principal()

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if parse_key(token) is None:
            if self.jwt is not None and token.count(".") == 2:
                return self.jwt.principal(token)
            raise UnauthenticatedError("invalid API key")
        digest = key_hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or cached[0] <= now:
            principal = await asyncio.to_thread(self._lookup, token)
            self._cache[digest] = (now + self.ttl_s, principal)
            self._cache.move_to_end(digest)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        else:
            principal = cached[1]
        if principal is None:
            raise UnauthenticatedError("invalid or revoked API key")
        return principal


def has_keys(engine: sa.Engine) -> bool:
    with engine.begin() as conn:
        return (
            conn.execute(sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)).first() is not None
        )
