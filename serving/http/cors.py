"""CORS for browser pages of other origins (`IMGSERVE_CORS_ORIGINS`), with refusals in the API's error format.

Starlette's CORSMiddleware answers a preflight it refuses with a plain-text 400 ("Disallowed CORS origin"), the one
error of the API that was not JSON `{"error", "kind"}`. The browser shows neither to the page, but a developer
reading the network panel or curl gets the same shape as every other refusal, naming what was refused."""

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

REFUSED_PREFIX = "Disallowed CORS "


class JsonCorsMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        text = bytes(response.body).decode("utf-8", errors="replace")
        if response.status_code != 400 or not text.startswith(REFUSED_PREFIX):
            return response
        refused = text.removeprefix(REFUSED_PREFIX)  # "origin", "method", "headers", "private-network", joined by ", "
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        message = (  # the allowed origins are not listed: a page of any origin may read this
            f"CORS preflight refused ({refused} not allowed): the allowed origins are the server's "
            f"IMGSERVE_CORS_ORIGINS, the methods {', '.join(self.allow_methods)}"
        )
        return JSONResponse({"error": message, "kind": "bad_request"}, status_code=400, headers=headers)
