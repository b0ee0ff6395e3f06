"""The HTTP routes client the SDK's job-like APIs share (batch jobs, training jobs, model control): one httpx
client, the API key on every request, transport errors and 4xx/5xx answers as `ImgServeError`, retries."""

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from serving.client.auth import auth_headers
from serving.client.errors import from_http_response, from_http_transport_error
from serving.client.retry import with_retries

T = TypeVar("T")


def poll_until(
    fetch: Callable[[], T],
    finished: Callable[[T], bool],
    poll_s: float,
    timeout: float | None,
    on_progress: Callable[[T], None] | None,
    what: str,
) -> T:
    """`fetch()` every `poll_s` seconds until `finished`; TimeoutError naming `what` after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = fetch()
        if on_progress:
            on_progress(state)
        if finished(state):
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} still running after {timeout}s: {state}")
        time.sleep(poll_s)


def segment(value: object, what: str = "id") -> str:
    """`value` (a job id, model name, version) as one segment of a URL path: every `/`, `?`, `#`, `%` escaped, so
    `../models/x` stays a job id instead of reaching `/v1/models/x`. ValueError, before anything is sent, for an
    empty value and for `.` and `..`, which escaping leaves as they are and a URL reads as "here" and "up"."""
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"{what} {text!r} cannot name anything on the server")
    return quote(text, safe="")


class HttpRoutes:
    """With `api_key`, every request carries `Authorization: Bearer <key>`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 60.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ):
        self.retries = retries
        self._api_key = api_key
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=auth_headers(api_key)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._http.base_url)!r}, authenticated={self._api_key is not None})"

    def _send(self, method: str, path: str, retry: bool = True, **kwargs: Any) -> httpx.Response:
        def attempt() -> httpx.Response:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise from_http_transport_error(exc) from exc
            if response.status_code >= 400:
                raise from_http_response(response, self._api_key)
            return response

        return with_retries(attempt, self.retries if retry else 0)

    def close(self) -> None:
        self._http.close()
