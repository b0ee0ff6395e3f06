"""The web UI (issue #20, first pages) in a real browser (Debian's headless Chromium) against the security tests'
server (keys required): sign in, analyze a real photo and see its top class and quality, the server page, the
admin's audit page; a viewer key gets no admin control; no console error, no request leaves the server's origin.

With IMGSERVE_UI_SCREENSHOTS=<folder> each page is saved there as a PNG (docs/ui/ holds the committed ones).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.paths import IMAGENET_SAMPLES, require
from tooling.collections.browser import console_messages, devtools_events, make_driver, missing_browser

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WIDTH, HEIGHT = 1280, 900
PHOTO = "n04335435_streetcar.JPEG"


@pytest.fixture(scope="module")
def world(secure: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The security tests' server (keys required), its tenant-a admin and viewer keys, one browser."""
    reason = missing_browser()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    require(IMAGENET_SAMPLES)
    keys = {"admin": secure["keys"]["a_admin"], "viewer": secure["keys"]["a_viewer"]}
    driver = make_driver(WIDTH, HEIGHT)
    try:
        yield {"server": secure["server"], "keys": keys, "driver": driver}
    finally:
        driver.quit()


def wait_for(driver: "WebDriver", script: str, timeout: float = 60.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: d.execute_script(script))


def screenshot(driver: "WebDriver", name: str) -> None:
    png = driver.get_screenshot_as_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    folder = os.environ.get("IMGSERVE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(png)


def sign_in(driver: "WebDriver", url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/ui#/signin")
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    wait_for(driver, "return !document.querySelector('#page-analyze').hidden")


def test_admin_signs_in_analyzes_a_photo_and_sees_the_server(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    assert wait_for(driver, "return !document.querySelector('#page-signin').hidden")  # no key yet: sign in first
    screenshot(driver, "signin")
    wrong = driver.find_element(By.ID, "api-key")
    wrong.send_keys("isk_not_a_real_key")
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    assert "not accepted" in wait_for(driver, "return document.querySelector('#signin-error').textContent")
    console_messages(driver)  # the refused sign-in's 401 is logged by the browser; what follows must be clean
    sign_in(driver, url, world["keys"]["admin"])
    assert "admin" in driver.find_element(By.ID, "who").text
    assert driver.find_elements(By.CSS_SELECTOR, "#nav a[data-page=audit]")  # the admin's page is there

    wait_for(driver, "return document.querySelector('#model').options.length > 0")
    driver.find_element(By.ID, "files").send_keys(str(require(IMAGENET_SAMPLES) / PHOTO))
    wait_for(driver, "const c = document.querySelector('.result'); return c && !c.hasAttribute('aria-busy')")
    card = driver.find_element(By.CSS_SELECTOR, ".result")
    assert "streetcar" in card.find_element(By.CSS_SELECTOR, ".classes li .label").text
    assert "/ 100" in card.find_element(By.CSS_SELECTOR, ".level").text
    assert card.find_elements(By.CSS_SELECTOR, ".tags li")
    decoded = "const i = document.querySelector('.preview img'); return i.complete && i.naturalWidth"
    assert driver.execute_script(decoded) > 0
    assert driver.find_element(By.ID, "download-json").is_enabled()
    screenshot(driver, "analyze")

    driver.get(f"{url}/ui#/server")
    wait_for(driver, "return document.querySelectorAll('#models-table tbody tr').length > 0")
    rows = driver.find_element(By.ID, "models-table").text
    assert "mobilenet_v2_imagenet" in rows and "READY" in rows
    wait_for(driver, "return document.querySelectorAll('#deployments-table tbody tr').length > 0")
    assert "Ingress" in driver.find_element(By.ID, "deployments-table").text
    screenshot(driver, "server")

    driver.get(f"{url}/ui#/audit")
    wait_for(driver, "return document.querySelectorAll('#audit-table tbody tr').length > 0")
    assert "auth.unauthenticated" in driver.find_element(By.ID, "audit-table").text  # the wrong key, newest first
    screenshot(driver, "audit")

    bad = [m for m in console_messages(driver) if m["level"] in ("SEVERE", "WARNING")]
    assert not bad, bad
    events = devtools_events(driver, "Network.requestWillBeSent")
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    outside = [u for u in requests if not u.startswith((url, "blob:", "data:"))]
    assert requests and not outside, outside


def test_a_viewer_gets_no_admin_control(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    sign_in(driver, url, world["keys"]["viewer"])
    assert "viewer" in driver.find_element(By.ID, "who").text
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-role=admin]")
    driver.get(f"{url}/ui#/server")
    wait_for(driver, "return document.querySelector('#deployments-note').textContent.length > 0")
    assert "operator" in driver.find_element(By.ID, "deployments-note").text  # /v1/status is refused to a viewer


def test_the_pages_need_no_key_and_carry_a_strict_policy(world: dict[str, Any]) -> None:
    url = world["server"].http_url
    page = httpx.get(f"{url}/ui")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{url}/ui/..%2Fconfig.yaml").status_code == 404
    assert httpx.get(f"{url}/v1/whoami").status_code == 401  # the data behind the pages needs the key
