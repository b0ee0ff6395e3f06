"""API keys on the client side: where the key comes from and how it goes on the wire.

A server started with `IMGSERVE_AUTH=required` wants `Authorization: Bearer <key>` on every HTTP request and
`authorization: Bearer <key>` metadata on every gRPC call. The key is an argument (`Client(..., api_key=)`,
`--api-key`) or, when none is given, the `IMGSERVE_API_KEY` environment variable (preferred on a shared
machine: command-line flags show in `ps`). An empty key means "send none", so `api_key=""` overrides the
environment. Keys are checked for characters a header cannot carry, and never shown in messages.
"""

import os
import re

API_KEY_ENV = "IMGSERVE_API_KEY"
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: no spaces, newlines or other control characters


def resolve_api_key(api_key: str | None, env: dict[str, str] | None = None) -> str | None:
    """`api_key`, or `IMGSERVE_API_KEY` when it is None; None when neither is set (or either is empty).

    A key with characters a header cannot carry (spaces, newlines, non-ASCII) is a ValueError whose message
    does not repeat the key.
    """
    key = (os.environ if env is None else env).get(API_KEY_ENV) if api_key is None else api_key
    key = (key or "").strip()
    if not key:
        return None
    if not _HEADER_SAFE.match(key):
        source = "api_key" if api_key is not None else API_KEY_ENV
        raise ValueError(f"{source} has characters an Authorization header cannot carry (spaces, control, non-ASCII)")
    return key


def bearer(api_key: str) -> str:
    return f"Bearer {api_key}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """`{"Authorization": "Bearer <key>"}`, or no header without a key."""
    return {"Authorization": bearer(api_key)} if api_key else {}


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    """gRPC call metadata `(("authorization", "Bearer <key>"),)` (keys are lowercase on the wire), or None."""
    return (("authorization", bearer(api_key)),) if api_key else None


def redact(text: str, api_key: str | None) -> str:
    """`text` with the key replaced (a message that came back from somewhere may quote what it was sent)."""
    return text.replace(api_key, "[api key]") if api_key and api_key in text else text
