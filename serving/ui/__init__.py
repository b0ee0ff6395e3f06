"""The web UI at `/ui` and the API reference at `/docs`: a few plain pages (HTML, CSS, ES modules) shipped in this
package, no build step, no CDN. `/docs` is Swagger UI from the swagger-ui-dist npm package (`make ui`) over
`/openapi.json`, which needs a viewer key when keys are required: the page sends the key signed in to the UI.

The pages are static and hold no data, so they load without a key; every figure on them comes from the same `/v1`
and `/v2` routes a script calls, with the API key the person signed in with (kept in the tab's sessionStorage) as
`Authorization: Bearer`. The server's own answer decides what a role sees. A strict Content-Security-Policy allows
nothing but this origin (and the `blob:`/`data:` images the pages make from the files a person picks).
"""

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["web UI"], include_in_schema=False)

MODULES = ("app", "core", "analyze", "operations", "jobs", "collections", "server", "map", "docs")  # one per page
ASSETS = {"app.css": "text/css; charset=utf-8", **{f"{m}.js": "text/javascript; charset=utf-8" for m in MODULES}}
# Natural Earth 1:110m land (public domain) from the world-atlas npm package, installed by `make ui` (a build output,
# not a commit). Without it the maps draw the graticule and the points only.
LAND = ("node_modules", "world-atlas", "land-110m.json")
EMPTY_TOPOLOGY = b'{"type":"Topology","objects":{},"arcs":[]}'
# Swagger UI's browser bundle and stylesheet from the swagger-ui-dist npm package (`make ui`; a build output).
SWAGGER = ("node_modules", "swagger-ui-dist")
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("serving.ui").joinpath("static", name).read_bytes()


@router.get("/ui")
@router.get("/ui/")
async def index() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers=HEADERS)


@router.get("/ui/land-110m.json")
async def land() -> Response:
    path = resources.files("serving.ui").joinpath(*LAND)
    body = path.read_bytes() if path.is_file() else EMPTY_TOPOLOGY
    return Response(body, media_type="application/json", headers={**HEADERS, "Cache-Control": "max-age=86400"})


@router.get("/ui/{asset}")
async def asset(asset: str) -> Response:
    """Only the listed files: no path is ever joined from the request."""
    if asset not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no UI asset {asset[:100]!r}")
    return Response(_read(asset), media_type=ASSETS[asset], headers=HEADERS)


@router.get("/docs")
async def api_reference() -> HTMLResponse:
    """Swagger UI for this server's OpenAPI description; without swagger-ui-dist it says where the description is."""
    return HTMLResponse(_read("docs.html"), headers=HEADERS)


@cache
def _swagger_asset(name: str) -> bytes | None:
    path = resources.files("serving.ui").joinpath(*SWAGGER, name)
    return path.read_bytes() if path.is_file() else None


@router.get("/ui/swagger/{asset}")
async def swagger_asset(asset: str) -> Response:
    body = _swagger_asset(asset) if asset in SWAGGER_ASSETS else None
    if body is None:
        raise HTTPException(status_code=404, detail=f"no Swagger UI asset {asset[:100]!r} (install it with make ui)")
    return Response(body, media_type=SWAGGER_ASSETS[asset], headers={**HEADERS, "Cache-Control": "max-age=86400"})
