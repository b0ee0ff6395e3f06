"""Who is calling: an API key (`Bearer isk_...`) looked up in the database, or a JWT checked against a configured
public key / JWKS, with role and tenant from its claims.

Keys are cached per replica by key id for `key_cache_s` (default 5 s; least recently used evicted first): the hot
path costs a dict lookup and one SHA-256, a wrong secret for a known id is refused from the cache, and a revoked key
stops working everywhere within that time. A key whose id no key has is refused from the replica's list of key ids
(serving.security.key_ids) without a lookup, so guessing costs the guesser, not the database. JWTs must be signed
with an asymmetric algorithm (RS/PS, ES, EdDSA: serving.security.jwt_keys; no HS256, so a public key can never be
used as an HMAC secret) and
carry `exp`, checked with `jwt_leeway_s` of clock leeway; claims `tenant` and `role` (or `imgserve_tenant` /
`imgserve_role`) name the tenant and role, `sub` the caller, whose requests are rate-limited by `jwt_rate` /
`jwt_burst` (shared by every replica, like a key's rate).
"""

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa

from serving.security.errors import UnauthenticatedError
from serving.security.jwt_keys import KeySet, SigningKey, key_algorithms
from serving.security.key_ids import KnownKeyIds
from serving.security.keys import KeyStore, StoredKey, parse_key
from serving.security.principal import Principal, check_role, check_tenant
from serving.security.settings import SecuritySettings
from serving.security.tables import api_keys

logger = logging.getLogger("imgserve.security")
CACHE_ENTRIES = 10_000


def one_authorization(values: list[str]) -> str | None:
    """The request's one `Authorization` header (or gRPC `authorization` metadata entry); None when it has none.
    Two or more are refused: servers, proxies and frameworks disagree on which one counts (the first, the last, or
    all joined with commas), so a request must not pass on whichever this server happens to read (a second key, or
    garbage, behind a valid one was ignored)."""
    if len(values) > 1:
        raise UnauthenticatedError(
            f"ambiguous credentials: {len(values)} Authorization headers were sent; send exactly one "
            "'Authorization: Bearer <api key or JWT>'"
        )
    return values[0] if values else None


# The longest Authorization value read (an API key is ~60 characters; identity providers' JWTs are 1-4 KB). The
# edges read one character more, so a longer one is refused as too long rather than cut into an "invalid API key".
MAX_AUTHORIZATION = 8192


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("missing credentials: send 'Authorization: Bearer <api key or JWT>'")
    if len(authorization) > MAX_AUTHORIZATION:
        raise UnauthenticatedError(f"the Authorization header is longer than {MAX_AUTHORIZATION} characters")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("unsupported credentials: send 'Authorization: Bearer <api key or JWT>'")
    return token.strip()


class JwtVerifier:
    """Checks JWTs against a public key file or a JWKS file. The JWKS file is read again when it changes (looked at
    every `JWKS_RECHECK_S` and whenever a token names a key id not known yet), so an identity provider's key
    rotation needs no restart, and a key removed from the file stops working. Keys that do not sign (`use: enc`)
    or that this library cannot read are left out, with a warning, instead of stopping the server."""

    JWKS_RECHECK_S = 5.0

    def __init__(self, settings: SecuritySettings):
        import jwt

        self._jwt = jwt
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience
        self.leeway_s, self.limits = settings.jwt_leeway_s, settings.jwt_limits()
        key_file = settings.jwt_public_key_file
        self._public_key = _public_key(key_file.read_bytes()) if key_file else None
        self._jwks_file = settings.jwks_file
        self._jwks_stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._keys = KeySet([])
        self._load_keys()

    def _load_keys(self) -> None:
        keys: list[SigningKey] = []
        if self._public_key is not None:
            algorithms = key_algorithms(self._public_key)
            if not algorithms:
                raise ValueError(
                    "the public key file's key signs with no JWT algorithm (RSA, P-256/384/521, Ed25519/448)"
                )
            keys.append(SigningKey(self._public_key, algorithms))
        if self._jwks_file is not None:
            stat = self._jwks_file.stat()
            self._jwks_stamp = (stat.st_mtime, stat.st_size)
            document = json.loads(self._jwks_file.read_text())
            jwks = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(jwks, list):  # `[]`, `null`: an AttributeError, a 500 for the token that read it
                raise ValueError(f"{self._jwks_file} is not a JWKS document (an object with a list of `keys`)")
            for jwk in jwks:
                if not isinstance(jwk, dict):
                    logger.warning("JWKS entry left out: a %s, not an object", type(jwk).__name__)
                    continue
                if jwk.get("use", "sig") != "sig":
                    continue  # an encryption key (Keycloak publishes one beside its signing keys)
                kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
                try:
                    key = self._jwt.PyJWK(jwk).key
                except Exception as exc:  # noqa: BLE001 - one unusable key must not stop the others
                    logger.warning("JWKS key %r left out: %s", kid, exc)
                    continue
                algorithms = key_algorithms(key, jwk.get("alg"))
                if not algorithms:  # an `oct` HMAC key, a curve no JWT algorithm uses, an `alg` not its type's
                    logger.warning("JWKS key %r left out: it signs with no asymmetric JWT algorithm", kid)
                    continue
                keys.append(SigningKey(key, algorithms, kid))
        self._keys = KeySet(keys)

    @property
    def key_count(self) -> int:
        """Signing keys read (the public key file's and the JWKS's usable ones): none means no token can pass."""
        return len(self._keys)

    def _refresh(self, kid: str | None) -> None:
        """Read the JWKS file again if it changed (at most every JWKS_RECHECK_S, or at once for an unknown kid)."""
        if self._jwks_file is None:
            return
        now = time.monotonic()
        if self._keys.knows(kid) and now - self._checked < self.JWKS_RECHECK_S:
            return
        self._checked = now
        try:
            stat = self._jwks_file.stat()
            if (stat.st_mtime, stat.st_size) != self._jwks_stamp:
                self._load_keys()
        except (OSError, ValueError) as exc:  # a file being rewritten: keep the keys read last
            logger.warning("JWKS file %s could not be read again: %s", self._jwks_file, exc)

    def _decode(self, token: str, candidates: list[SigningKey]) -> dict[str, Any]:
        """The token's claims, checked against the first of `candidates` whose signature matches (a wrong key's
        "Signature verification failed" moves on to the next; an expired or wrong-audience token fails at once)."""
        failure: Exception | None = None
        for candidate in candidates:
            try:
                return self._jwt.decode(
                    token,
                    candidate.key,
                    algorithms=list(candidate.algorithms),
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                )
            except self._jwt.InvalidSignatureError as exc:
                failure = exc
        raise failure or UnauthenticatedError("JWT signed by an unknown key")

    def principal(self, token: str) -> Principal:
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            self._refresh(kid)
            # A kid names one key of the JWKS; the keys without one (the public key file, a JWKS written by hand)
            # are tried for any other token, each with the algorithms its type signs with
            candidates = self._keys.candidates(kid, header.get("alg"))
            if not candidates:
                raise UnauthenticatedError(
                    "JWT signed by an unknown key"
                    if not self._keys.unnamed
                    else f"JWT algorithm {str(header.get('alg'))[:20]!r} is not one the configured keys sign with"
                )
            claims = self._decode(token, candidates)
            if not isinstance(claims["sub"], str) or not claims["sub"].strip():  # one rate bucket for every blank
                raise UnauthenticatedError("invalid JWT: its sub claim must name the caller")
            tenant = check_tenant(_text_claim(claims, "imgserve_tenant", "tenant"))
            role = check_role(_text_claim(claims, "imgserve_role", "role"))
        except UnauthenticatedError:
            raise
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # TypeError: a key of another type than `alg`
            raise UnauthenticatedError(f"invalid JWT: {str(exc)[:200]}") from None
        rate, burst = self.limits or (None, None)
        key_id = jwt_key_id(claims, tenant)
        return Principal(key_id=key_id, tenant=tenant, role=role, source="jwt", rate_per_s=rate, burst=burst)


def _public_key(pem: bytes) -> Any:
    """The public key of a PEM file, or ValueError: a private key, a certificate or garbage was taken at start and
    every token was then refused ("Could not parse the provided public key")."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key (-----BEGIN PUBLIC KEY-----): {exc}") from None


def _text_claim(claims: dict[str, Any], *names: str) -> str:
    """The one value of the `names` present, as a string ("tenant": true was the tenant "True"); two that disagree
    are refused ("tenant": "acme" beside "imgserve_tenant": "beta" was tenant beta, without a word)."""
    present = {name: claims[name] for name in names if claims.get(name) not in (None, "")}
    if len({repr(v) for v in present.values()}) > 1:
        raise ValueError(f"claims {' and '.join(present)} disagree")
    value = next(iter(present.values()), "")
    if not isinstance(value, str):
        raise ValueError(f"claim {names[-1]} must be a string, got {type(value).__name__}")
    return value


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
        self.known_ids = KnownKeyIds(self.keys.ids)
        self._cache: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()  # key id -> (until, key)

    async def _stored(self, key_id: str) -> StoredKey | None:
        """The key named `key_id` (cached), or None when there is none."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key_id)  # least recently used first out: guesses cannot evict live keys
            return cached[1]
        if not await self.known_ids.may_exist(key_id):
            return None  # not cached either: a flood of guesses would push live keys out
        stored = await asyncio.to_thread(self.keys.stored, key_id)
        self._cache[key_id] = (now + self.ttl_s, stored)
        self._cache.move_to_end(key_id)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return stored

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        key_id = parse_key(token)
        if key_id is None:
            if self.jwt is not None and token.count(".") == 2:
                return self.jwt.principal(token)
            raise UnauthenticatedError("invalid API key")
        stored = await self._stored(key_id)
        if stored is None:
            raise UnauthenticatedError("invalid or revoked API key")
        if not stored.accepts(token):  # the same answer: whether an id exists is not told
            raise UnauthenticatedError("invalid or revoked API key", key_id=key_id, tenant=stored.record.tenant)
        return stored.record.principal()


def has_keys(engine: sa.Engine) -> bool:
    with engine.begin() as conn:
        return (
            conn.execute(sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)).first() is not None
        )
