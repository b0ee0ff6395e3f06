"""Security settings, read from `IMGSERVE_*` environment variables.

`IMGSERVE_AUTH`:
- `required`: every route and RPC except the liveness/readiness probes needs an API key or a JWT.
- `off`: no authentication. Allowed only while every listener (imgserve's and Ray's) binds loopback; the server
  refuses to start otherwise, and its ready banner says auth is off.
- unset (`auto`): `required` when any listener binds beyond loopback, else `off`.
"""

import ipaddress
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.config.settings import model_from_env

AuthMode = Literal["auto", "required", "off"]
JWT_MIN_BURST = 10  # the default burst of a JWT caller at a low rate: a web page sends a few requests at once


def is_loopback_host(host: str) -> bool:
    """True for a bind address only this machine can reach: 127.0.0.0/8, ::1, `localhost`."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


RATE_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def requests_per_second(text: str) -> float:
    """`5`, `5/s`, `300/min`, `1000/h` -> requests per second (ValueError otherwise); `imgserve keys create --rate`
    and IMGSERVE_JWT_RATE read rates alike."""
    count, _, unit = text.partition("/")
    per = RATE_UNITS.get(unit.strip().lower())
    try:
        if per is None:
            raise ValueError
        return float(count) / per
    except ValueError:
        raise ValueError(f"a rate looks like 5, 5/s, 300/min or 1000/h, got {text!r}") from None


def _per_second(value: object) -> object:
    return requests_per_second(value) if isinstance(value, str) else value


class SecuritySettings(BaseModel):
    """What protects the server. None of these change at runtime."""

    model_config = ConfigDict(frozen=True)

    auth: AuthMode = Field(default="auto", description="IMGSERVE_AUTH: required | off | auto (see module doc).")
    jwt_public_key_file: Path | None = Field(
        default=None,
        description="IMGSERVE_JWT_PUBLIC_KEY_FILE: PEM public key (RSA, EC P-256/384/521, Ed25519/448) signing JWTs.",
    )
    jwks_file: Path | None = Field(default=None, description="IMGSERVE_JWKS_FILE: a JWKS document (keys by `kid`).")
    jwt_issuer: str | None = Field(default=None, description="IMGSERVE_JWT_ISSUER: required `iss` claim, if set.")
    jwt_audience: str | None = Field(default=None, description="IMGSERVE_JWT_AUDIENCE: required `aud` claim, if set.")
    cors_origins: list[str] = Field(
        default_factory=list, description="IMGSERVE_CORS_ORIGINS: comma-separated allowed origins; empty = CORS off."
    )
    retention_days: float | None = Field(
        default=None, gt=0, description="IMGSERVE_RETENTION_DAYS: jobs older than this are deleted; unset = kept."
    )
    retention_sweep_s: float = Field(
        default=600.0, gt=0, description="IMGSERVE_RETENTION_SWEEP_S: how often the sweeper looks for expired jobs."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="IMGSERVE_ALLOWED_HOSTS: with auth off, host names besides loopback ones that HTTP requests may be "
        "addressed to (Host, Origin), comma-separated; `*`: any (serving/http/host_guard.py).",
    )
    key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="IMGSERVE_KEY_CACHE_S: how long a replica trusts a looked-up key (a revoke takes effect within).",
    )
    jwt_rate: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="IMGSERVE_JWT_RATE: requests per second each JWT caller (issuer, subject and tenant) may make, "
        "shared by every replica like a key's `--rate` (`50`, `50/s`, `600/min`, `1000/h`); 0 (the default, as a key "
        "made without --rate) = no limit.",
    )
    jwt_burst: int | None = Field(
        default=None,
        ge=1,
        description="IMGSERVE_JWT_BURST: requests a JWT caller may send at once; unset = one second's worth of "
        "IMGSERVE_JWT_RATE, at least 10 (a web page's first requests).",
    )
    jwt_leeway_s: float = Field(
        default=30.0,
        ge=0,
        allow_inf_nan=False,
        le=300,
        description="IMGSERVE_JWT_LEEWAY_S: seconds of clock difference with the identity provider allowed when "
        "checking a JWT's `exp`, `nbf` and `iat` (an expired token works this much longer).",
    )

    _cors = field_validator("cors_origins", mode="before")(_csv)
    _hosts = field_validator("allowed_hosts", mode="before")(_csv)
    _jwt_rate = field_validator("jwt_rate", mode="before")(_per_second)

    def jwt_limits(self) -> tuple[float, int] | None:
        """(requests/s, burst) of each JWT caller's rate limit; None = not limited."""
        if self.jwt_rate == 0:
            return None
        return self.jwt_rate, self.jwt_burst or max(JWT_MIN_BURST, math.ceil(self.jwt_rate))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "SecuritySettings":
        """Settings with any `IMGSERVE_<FIELD>` environment variable applied; ValueError naming the variables and
        values that are not valid (`invalid setting: NAME='value': why`), or that are set but empty."""
        return model_from_env(cls, env)

    def effective_auth(self, bind_hosts: list[str]) -> Literal["required", "off"]:
        """The auth mode for a server whose listeners bind `bind_hosts`; raises ValueError for an exposed server
        with auth explicitly off (the server must refuse to start)."""
        exposed = sorted({h for h in bind_hosts if not is_loopback_host(h)})
        if self.auth == "off" and exposed:
            raise ValueError(
                f"IMGSERVE_AUTH=off but listeners bind beyond loopback ({', '.join(exposed)}): anyone who can reach "
                "them could use the server. Set IMGSERVE_AUTH=required (and create keys with `imgserve keys create`) "
                "or bind 127.0.0.1."
            )
        if self.auth == "auto":
            return "required" if exposed else "off"
        return self.auth
