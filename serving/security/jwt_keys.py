"""The keys a JWT is checked against, and the algorithms each may sign with.

A key signs with the asymmetric algorithms of its type (RSA: RS256-512 and PS256-512; an EC key: the ES algorithm of
its curve, P-256 ES256, P-384 ES384, P-521 ES512; Ed25519/Ed448: EdDSA), narrowed to its JWK's `alg` where it names
one (RFC 8725). A key with none of them (an `oct` HMAC key, a curve no JWT algorithm uses) is left out with a
warning and not counted, so a JWKS of only such keys is refused at start instead of refusing every token.

Keys with an id (`kid`) are found by the id a token names. Keys without one (the public key file, a JWKS written by
hand) are all tried, in order, for a token naming no id or an id no key has: before, a second key without an id
replaced the first (and the public key file), so every token of the other keys was refused."""

from dataclasses import dataclass
from typing import Any

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def key_algorithms(key: Any, declared: object = None) -> tuple[str, ...]:
    """The algorithms `key` may verify: those of its type, only `declared` (its JWK's `alg`) where one is given."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        fits: tuple[str, ...] = RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        fits = (EC_ALGORITHMS[key.curve.name],) if key.curve.name in EC_ALGORITHMS else ()
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        fits = ("EdDSA",)
    else:
        fits = ()
    return tuple(a for a in fits if a == declared) if isinstance(declared, str) else fits


@dataclass(frozen=True)
class SigningKey:
    key: Any
    algorithms: tuple[str, ...]
    kid: str | None = None


class KeySet:
    """Keys by id, and the keys without one."""

    def __init__(self, keys: list[SigningKey]):
        self.named = {k.kid: k for k in keys if k.kid is not None}
        self.unnamed = [k for k in keys if k.kid is None]

    def __len__(self) -> int:
        return len(self.named) + len(self.unnamed)

    def knows(self, kid: object) -> bool:
        return kid in self.named if isinstance(kid, str) else bool(self.unnamed)

    def candidates(self, kid: object, algorithm: object) -> list[SigningKey]:
        """The keys to try for a token naming `kid` and `algorithm`: the key of that id, else each key without one
        that signs with that algorithm."""
        if isinstance(kid, str) and kid in self.named:
            return [self.named[kid]]
        return [k for k in self.unnamed if algorithm in k.algorithms]
