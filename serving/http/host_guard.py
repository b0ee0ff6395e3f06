"""With auth off, the direct HTTP listener answers only requests addressed to this machine by a loopback name.

Auth is off only when every listener binds loopback (serving.security.settings), but a web page the developer
opens can still reach http://127.0.0.1:8000 through the browser: a cross-site form POST (a batch job submitted in
their name), and with DNS rebinding (a name the page's author controls, first resolved to their server, then to
127.0.0.1) same-origin reads of the answers: jobs, results, outputs, collections. Without a key to ask for, the
`Host` and `Origin` headers tell such requests apart, as Jupyter and webpack's dev server check them: a `Host`
that is not `localhost`, a loopback address or a name in IMGSERVE_ALLOWED_HOSTS, or an `Origin` whose host is none
of those, is a 403 `forbidden_host`. An `Origin` the operator listed by name in IMGSERVE_CORS_ORIGINS passes too (the
same exact comparison the CORS layer makes; `*` does not count): listing it says pages of that origin may call the
API (the `Host` must still be this machine's). Servers with auth on need no such check (a key is asked for); Ray
Serve's proxy (`--ray-proxy`) is not guarded here.
"""

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from serving.metrics import ERRORS
from serving.security.settings import is_loopback_host

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _host_name(url: str) -> str:
    """`//example.com:8000` or `https://example.com` -> `example.com`, `//[::1]:8000` -> `::1`; `null` -> ``; a
    host that does not parse (`//[::1`, `//[zz]`) -> `` too (refused: it names no host this machine answers to; it
    raised ValueError out of the guard, a plain-text 500)."""
    try:
        return (urlsplit(url).hostname or "").lower() if "//" in url else ""
    except ValueError:
        return ""


class LoopbackHostGuard:
    """`extra_hosts`: names besides loopback ones (SecuritySettings.allowed_hosts, IMGSERVE_ALLOWED_HOSTS); `*`
    lets every host through. `cors_origins`: origins whose pages may call the API (SecuritySettings.cors_origins,
    IMGSERVE_CORS_ORIGINS), each named: a `*` there lets no origin past this guard (with auth off every caller is
    the anonymous admin, and `*` would hand that to any page the developer opens)."""

    def __init__(self, app: ASGIApp, extra_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()):
        self.app = app
        self.extra = frozenset(name.lower() for name in extra_hosts)
        self.cors_origins = frozenset(origin for origin in cors_origins if origin != "*")

    def origin_allowed(self, origin: str) -> bool:
        return origin in self.cors_origins or self.allowed(_host_name(origin))

    def allowed(self, name: str) -> bool:
        return "*" in self.extra or name in self.extra or (bool(name) and is_loopback_host(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host, origin = b"", None
        for key, value in scope["headers"]:  # lower case by ASGI's rule; not trusted to every server
            name = key.lower()
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value.decode("latin-1")
        host_text = host.decode("latin-1")
        host_name = _host_name("//" + host_text)
        refused = None
        if not self.allowed(host_name):
            refused = f"Host {host_name or host_text[:200] or '(none)'!r}"
        elif origin is not None and not self.origin_allowed(origin):
            refused = f"Origin {origin[:200]!r}"
        if refused is None:
            await self.app(scope, receive, send)
            return
        message = (
            f"{refused} is not this machine: with auth off this server answers requests to localhost or a loopback "
            "address only (a web page cannot reach it through the browser); add names to IMGSERVE_ALLOWED_HOSTS, or a"
            " web page's origin to IMGSERVE_CORS_ORIGINS"
        )
        ERRORS.labels("(listener)", "forbidden_host").inc()  # every error is counted (README "Errors")
        body = json.dumps({"error": message, "kind": "forbidden_host"}).encode()
        content = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        content.append((b"connection", b"close"))  # its body is never read: no keep-alive for it to trickle on
        await send({"type": "http.response.start", "status": 403, "headers": content})
        await send({"type": "http.response.body", "body": body})
