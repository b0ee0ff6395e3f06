"""The offline HTML collection report in a real browser (Debian's headless Chromium through chromedriver).

Checks what only a browser can: no console error or warning (a Content-Security-Policy violation is one), no
network request but the file itself (from the DevTools `Network.requestWillBeSent` events), every chart rendered
with a non-zero size, every thumbnail decoded. With IMGSERVE_REPORT_SCREENSHOT set, the first screen (1280x900) is
saved there as a PNG. No server is needed.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipelines.collections.report_html import render_report_html
from tests.collection_report_fixture import EXPECTED_SVGS, report, thumbnails
from tooling.collections.browser import console_messages, devtools_events, make_driver, missing_browser

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WIDTH, HEIGHT = 1280, 900
SVG_BOXES = """return Array.from(document.querySelectorAll('svg')).map(s => {
  const r = s.getBoundingClientRect(); return [s.getAttribute('aria-label'), r.width, r.height]; });"""
IMAGES = """return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The fixture report loaded once: its URL, the console messages and request URLs of the load, and the driver."""
    reason = missing_browser()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report_html(report(), thumbnails()), encoding="utf-8")
    driver = make_driver(WIDTH, HEIGHT)
    try:
        driver.get(path.as_uri())
        requests = [e["params"]["request"]["url"] for e in devtools_events(driver, "Network.requestWillBeSent")]
        console = console_messages(driver)
        yield {"url": path.as_uri(), "requests": requests, "console": console, "driver": driver}
    finally:
        driver.quit()


def test_no_console_errors_or_warnings(page: dict[str, Any]) -> None:
    bad = [m for m in page["console"] if m["level"] in ("SEVERE", "WARNING")]
    assert not bad, bad


def test_console_log_is_recorded(page: dict[str, Any]) -> None:
    """The console channel the test above reads really carries errors (so an empty list means something)."""
    driver: WebDriver = page["driver"]
    driver.execute_script("console.error('imgserve-probe')")
    assert any("imgserve-probe" in m["message"] and m["level"] == "SEVERE" for m in console_messages(driver))


def test_no_network_request_but_the_file(page: dict[str, Any]) -> None:
    assert page["url"] in page["requests"], page["requests"]  # the DevTools network log works
    others = [url for url in page["requests"] if url != page["url"] and not url.startswith("data:image/")]
    assert not others, others


def test_every_chart_rendered(page: dict[str, Any]) -> None:
    boxes = page["driver"].execute_script(SVG_BOXES)
    assert len(boxes) == EXPECTED_SVGS
    assert all(width > 0 and height > 0 for _, width, height in boxes), boxes


def test_thumbnails_decoded(page: dict[str, Any]) -> None:
    images = page["driver"].execute_script(IMAGES)
    assert len(images) >= len(thumbnails())
    assert all(complete and width > 0 for _, complete, width in images), images


def test_nothing_injected(page: dict[str, Any]) -> None:
    driver: WebDriver = page["driver"]
    assert driver.execute_script("return document.querySelectorAll('script').length") == 0
    assert driver.title.startswith("Collection report: Holiday & <b>family</b>")


def test_first_screen_screenshot(page: dict[str, Any]) -> None:
    driver: WebDriver = page["driver"]
    size = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert size == [WIDTH, HEIGHT]
    png = driver.get_screenshot_as_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == WIDTH and int.from_bytes(png[20:24], "big") == HEIGHT
    target = os.environ.get("IMGSERVE_REPORT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(png)
