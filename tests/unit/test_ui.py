"""The web UI's pages as the server hands them out: static, open, strictly confined (no data, no other origin)."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving import ui
from serving.security.principal import http_role


def _client() -> TestClient:
    app = FastAPI(docs_url=None, redoc_url=None)  # as create_http_app: /docs is the UI package's
    app.include_router(ui.router)
    return TestClient(app, raise_server_exceptions=False)


def test_pages_are_served_with_a_strict_policy() -> None:
    client = _client()
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/ui/server.py").status_code == 404 and client.get("/ui/%2E%2E%2Fapp.py").status_code == 404


def test_the_pages_load_nothing_from_elsewhere_and_never_write_markup_from_data() -> None:
    client = _client()
    html = client.get("/ui").text
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN, no other origin
    assert "<script>" not in html and " on" not in re.sub(r"\s+", " ", html).replace(" only", "")  # no inline code
    for module in ui.MODULES:
        js = client.get(f"/ui/{module}.js").text.replace('"http://www.w3.org/2000/svg"', "SVG_NS")  # a name, no fetch
        assert js.startswith("//"), module  # the module itself, not a 404 body
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "http://", "https://"):
            assert banned not in js, (module, banned)


def test_only_reading_the_pages_is_open() -> None:
    assert http_role("GET", "/ui") is None and http_role("GET", "/ui/app.js") is None
    assert http_role("GET", "/docs") is None and http_role("GET", "/ui/swagger/swagger-ui.css") is None
    assert http_role("GET", "/openapi.json") == "viewer"  # the description behind /docs needs a key
    assert http_role("GET", "/docs/x") == "admin" and http_role("GET", "/redoc") == "admin"
    assert http_role("HEAD", "/ui/") is None
    assert http_role("POST", "/ui") == "admin"  # nothing else under /ui is open
    assert http_role("GET", "/uix") == "admin" and http_role("GET", "/v1/whoami") == "viewer"


def test_progress_streams_hold_no_admission_slot() -> None:
    from serving.admission import holds_no_slot

    assert holds_no_slot("/v1/jobs/abc/progress") and holds_no_slot("/metrics")
    assert not holds_no_slot("/v1/jobs/abc") and not holds_no_slot("/v1/analyze")
    assert not holds_no_slot("/v1/collections/x/progress")  # only a job's stream


def test_the_api_reference_is_served_here_not_from_a_cdn() -> None:
    """FastAPI's own /docs loads Swagger UI from a CDN: a blank page on a cluster without internet access."""
    client = _client()
    page = client.get("/docs")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text) and "<script>" not in page.text
    assert '<script type="module" src="/ui/docs.js">' in page.text
    for asset in ui.SWAGGER_ASSETS:
        assert f'"/ui/swagger/{asset}"' in page.text
    assert client.get("/ui/swagger/package.json").status_code == 404  # only the listed files
    assert client.get("/ui/swagger/..%2F..%2Fpackage.json").status_code == 404


def test_swagger_ui_assets_come_from_the_npm_package_when_installed() -> None:
    installed = ui._swagger_asset("swagger-ui-bundle.js") is not None
    if not installed:
        import pytest

        pytest.skip("swagger-ui-dist is not installed (make ui; needs npm)")
    bundle = _client().get("/ui/swagger/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    css = _client().get("/ui/swagger/swagger-ui.css")
    assert css.status_code == 200 and b".swagger-ui" in css.content
