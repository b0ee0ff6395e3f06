"""The web UI (issue #20) in a real browser (Debian's headless Chromium) against the security tests' server (keys
required): sign in, analyze a real photo (top class, quality, the measured region over it, a GPS map), the server page
with live charts, the admin's audit page; convert a photo to WebP and download a file that decodes; submit a 50-image
job and see its progress reach 100 % live (server-sent events, no reload, no polling), save it as a collection, open
its report, filter by a tag and export; a viewer key gets no admin or analyst control; no console error, no request
leaves the server's origin.

With IMGSERVE_UI_SCREENSHOTS=<folder> each page is saved there as a PNG (docs/ui/ holds the committed ones).
"""

import csv
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, require
from tooling.collections.browser import console_messages, devtools_events, make_driver, missing_browser

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WIDTH, HEIGHT = 1280, 900
PHOTO = "n04335435_streetcar.JPEG"
GEOTAGGED = "DSCN0010.jpg"  # ../shared/data/exif-samples/jpg/gps: a camera photo with GPS coordinates
JOB_IMAGES = 50
LAND = Path(__file__).resolve().parents[2] / "serving" / "ui" / "node_modules" / "world-atlas" / "land-110m.json"


@pytest.fixture(scope="module")
def world(secure: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The security tests' server (keys required), its own admin (tenant default: every tenant's jobs and audit
    entries) and tenant a's viewer key, one browser."""
    reason = missing_browser()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    require(IMAGENET_SAMPLES)
    keys = {"admin": secure["keys"]["d_admin"], "viewer": secure["keys"]["a_viewer"]}
    driver = make_driver(WIDTH, HEIGHT)
    try:
        yield {
            "server": secure["server"],
            "keys": keys,
            "secure_keys": secure["keys"],
            "driver": driver,
            "tmp": tmp_path_factory.mktemp("ui"),
        }
    finally:
        driver.quit()


def wait_for(driver: "WebDriver", script: str, timeout: float = 60.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: d.execute_script(script))


def click_link(driver: "WebDriver", text: str) -> None:
    """Click the link reading `text`, found and clicked in one script: the collections list drawn again between a
    find and a click made the element found stale (a CI run failed so)."""
    script = f"const a = [...document.querySelectorAll('a')].find(e => e.textContent === {json.dumps(text)});"
    wait_for(driver, script + " if (a) a.click(); return Boolean(a);")


def screenshot(driver: "WebDriver", name: str) -> None:
    png = driver.get_screenshot_as_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    folder = os.environ.get("IMGSERVE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(png)


def downloads_to(driver: "WebDriver", folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
    return folder


def downloaded(folder: Path, suffix: str, timeout: float = 30.0) -> Path:
    """The file the browser finished saving in `folder` (Chromium writes `.crdownload` until it is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [f for f in folder.iterdir() if f.name.endswith(suffix)]
        if done and not any(f.name.endswith(".crdownload") for f in folder.iterdir()):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} file downloaded into {folder}: {sorted(f.name for f in folder.iterdir())}")


def request_urls(driver: "WebDriver") -> list[str]:
    """The URLs the page requested since the last look."""
    events = devtools_events(driver, "Network.requestWillBeSent")
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def clean_and_local(driver: "WebDriver", url: str) -> None:
    """No console error or warning since the last look, and every request the page made went to the server."""
    bad = [m for m in console_messages(driver) if m["level"] in ("SEVERE", "WARNING")]
    assert not bad, bad
    requests = request_urls(driver)
    outside = [u for u in requests if not u.startswith((url, "blob:", "data:"))]
    assert requests and not outside, outside


def sign_in(driver: "WebDriver", url: str, key: str, role: str = "admin") -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/ui#/signin")
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    wait_for(driver, f"return document.querySelector('#who').textContent.startsWith('{role} ')")
    home = "#page-collections" if role == "viewer" else "#page-analyze"  # a viewer cannot analyze
    wait_for(driver, f"return !document.querySelector('{home}').hidden")


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
    # Each tag measured in part of the image (its evidence names a region) is drawn as a box over it.
    regions = driver.execute_script(
        "return [...document.querySelectorAll('.tags li')].filter(li => li.textContent.includes('box on the image'))"
        ".length"
    )
    assert len(driver.find_elements(By.CSS_SELECTOR, ".preview .region")) == regions

    driver.find_element(By.ID, "files").send_keys(str(require(EXIF_SAMPLES) / "jpg" / "gps" / GEOTAGGED))
    wait_for(driver, "return document.querySelectorAll('.result:not([aria-busy]) svg.map circle.point').length === 1")
    facts = driver.find_element(By.CSS_SELECTOR, ".result .meta").text.splitlines()
    latitude, longitude = map(float, facts[facts.index("GPS") + 1].split(", "))
    assert 43 < latitude < 44 and 11 < longitude < 12  # a Nikon photo taken in Tuscany
    point = driver.find_element(By.CSS_SELECTOR, "svg.map circle.point")
    assert abs(float(point.get_attribute("cx")) - (180 + longitude)) < 0.01  # equirectangular, 1 unit per degree
    assert abs(float(point.get_attribute("cy")) - (90 - latitude)) < 0.01
    if LAND.is_file():  # `make ui` installed the outlines: land is drawn from them, with no tile server
        wait_for(driver, "return document.querySelector('svg.map path.land').getAttribute('d').length > 10000")
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver, "analyze")

    stop = threading.Event()
    traffic = threading.Thread(target=analyze_until, args=(url, world["keys"]["admin"], stop), daemon=True)
    traffic.start()
    try:
        driver.get(f"{url}/ui#/server")
        wait_for(driver, "return document.querySelectorAll('#models-table tbody tr').length > 0")
        rows = driver.find_element(By.ID, "models-table").text
        assert "mobilenet_v2_imagenet" in rows and "READY" in rows
        wait_for(driver, "return document.querySelectorAll('#deployments-table tbody tr').length > 0")
        assert "Ingress" in driver.find_element(By.ID, "deployments-table").text
        # Live charts from the server's own /metrics: requests/s, p50/p99 and quality-tag rates move under traffic.
        wait_for(driver, "return document.querySelectorAll('#charts figure').length === 4")
        wait_for(driver, "return document.querySelectorAll('#charts path.line').length >= 5", timeout=90)
        lines = "return document.querySelector('#charts figure:first-child path.line').getAttribute('d')"
        wait_for(driver, lines + ".split('L').length >= 4", timeout=90)  # a few intervals drawn
        latest = driver.find_element(By.CSS_SELECTOR, "#charts figure:nth-child(2) figcaption").text
        assert "p50" in latest and "p99" in latest and "— ms" not in latest, latest
    finally:
        stop.set()
        traffic.join(timeout=30)
    screenshot(driver, "server")

    driver.get(f"{url}/ui#/audit")
    wait_for(driver, "return document.querySelectorAll('#audit-table tbody tr').length > 0")
    assert "auth.unauthenticated" in driver.find_element(By.ID, "audit-table").text  # the wrong key, newest first
    screenshot(driver, "audit")

    clean_and_local(driver, url)


def admin_on(world: dict[str, Any], page: str, ready: str) -> tuple["WebDriver", str, Path]:
    """The browser signed in as the admin on `page` once `ready` (a JS expression) holds; (driver, server URL,
    the folder its downloads go to)."""
    driver, url = world["driver"], world["server"].http_url
    folder = downloads_to(driver, world["tmp"] / f"{page}-downloads")
    sign_in(driver, url, world["keys"]["admin"])
    driver.get(f"{url}/ui#/{page}")
    wait_for(driver, f"return {ready}")
    return driver, url, folder


def analyze_until(url: str, key: str, stop: threading.Event) -> None:
    """Closed-loop /v1/analyze requests until `stop` (the Server page's charts need traffic to draw)."""
    photos = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:20]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for i in range(10_000):
            if stop.is_set():
                return
            http.post("/v1/analyze", files={"image": photos[i % len(photos)].read_bytes()})


def test_convert_to_webp_and_download_a_file_that_decodes(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, url, folder = admin_on(world, "convert", "document.querySelector('#convert-format').options.length > 0")
    driver.find_element(By.ID, "convert-file").send_keys(str(require(IMAGENET_SAMPLES) / PHOTO))
    Select(driver.find_element(By.ID, "convert-format")).select_by_value("webp")
    driver.find_element(By.CSS_SELECTOR, "#convert-form input[value=auto]").click()  # enhance too: scores shown
    driver.find_element(By.CSS_SELECTOR, "#convert-form button[type=submit]").click()
    wait_for(driver, "return document.querySelector('#convert-download')")
    sides = driver.find_element(By.ID, "convert-result").text
    assert "Before" in sides and "After" in sides and "WEBP" in sides and "compression" in sides and "quality" in sides
    after = "const i = document.querySelectorAll('.side img')[1]; return i.complete && i.naturalWidth"
    assert wait_for(driver, after) > 0
    screenshot(driver, "convert")
    driver.find_element(By.ID, "convert-download").click()
    path = downloaded(folder, ".webp")
    with Image.open(path) as image:
        assert image.format == "WEBP"
        image.load()  # decodes to the end
        assert image.size == Image.open(require(IMAGENET_SAMPLES) / PHOTO).size
    clean_and_local(driver, url)


def test_a_50_image_job_progresses_live_and_its_collection_filters_by_tag(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, url, folder = admin_on(world, "jobs", "!document.querySelector('#job-form').hidden")
    driver.execute_script("window.notReloaded = true")
    photos = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[100 : 100 + JOB_IMAGES]
    driver.find_element(By.ID, "job-files").send_keys("\n".join(str(p) for p in photos))
    devtools_events(driver)  # only what follows the submit is counted below
    driver.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]").click()
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not seen or seen[-1] < 100):
        value = driver.execute_script("const p = document.querySelector('#job-progress'); return p && p.value")
        if value is not None and (not seen or seen[-1] != value):
            seen.append(int(value))
        time.sleep(0.05)
    assert seen and seen[-1] == 100, seen
    assert seen == sorted(seen)  # it only moves forward
    assert any(0 < value < 100 for value in seen), seen  # it moved while the job ran, not only at the end
    assert driver.execute_script("return window.notReloaded === true")  # the same page throughout
    assert f"{JOB_IMAGES} of {JOB_IMAGES} finished" in driver.find_element(By.ID, "job-progress-text").text
    wait_for(driver, f"return document.querySelectorAll('#job-results tbody tr').length === {JOB_IMAGES}")
    job_id = driver.execute_script("return document.querySelector('#job-detail').dataset.job")
    urls = request_urls(driver)
    assert sum(f"/v1/jobs/{job_id}/progress" in u for u in urls) == 1, urls  # one event stream...
    assert sum(u.endswith(f"/v1/jobs/{job_id}") for u in urls) <= 1, urls  # ...and no polling of the job
    screenshot(driver, "jobs")

    name = f"ui-{job_id[:8]}"
    driver.find_element(By.ID, "job-collection-name").send_keys(name)
    driver.find_element(By.ID, "job-save").click()
    wait_for(driver, "return document.querySelector('#job-message').textContent.includes('Saved')")
    driver.get(f"{url}/ui#/collections")
    listed = "return [...document.querySelectorAll('#collections-list a')].map(a => a.textContent)"
    wait_for(driver, f"{listed}.includes('{name}')")
    click_link(driver, name)
    wait_for(driver, "return document.querySelectorAll('#collection-grid .tile').length > 0")
    assert f"{JOB_IMAGES} analysed" in driver.find_element(By.ID, "collection-report").text
    chips = driver.execute_script("return [...document.querySelectorAll('.chip')].map(c => c.textContent)")
    counted = [(tag, int(n)) for tag, n in (c.rsplit(" ", 1) for c in chips)]
    tag, count = max((pair for pair in counted if pair[1] <= 12), key=lambda pair: pair[1])  # a page of them
    driver.find_element(By.CSS_SELECTOR, f".chip[data-tag='{tag}']").click()
    wait_for(driver, f"return document.querySelector('#collection-status').textContent.includes('tag {tag}')")
    tiles = driver.find_elements(By.CSS_SELECTOR, "#collection-grid .tile")
    assert len(tiles) == int(count)
    assert all(tag in tile.find_element(By.CSS_SELECTOR, ".tile-tags").text.split(" · ") for tile in tiles)
    thumbs = "return [...document.querySelectorAll('#collection-grid img')].every(i => i.complete && i.naturalWidth)"
    wait_for(driver, thumbs)
    tiles[0].click()
    wait_for(driver, "return document.querySelector('#image-detail .result .level')")
    assert tag in driver.find_element(By.CSS_SELECTOR, "#image-detail .tags").text
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver, "collections")
    driver.find_element(By.ID, "collection-export").click()
    rows = list(csv.DictReader(io.StringIO(downloaded(folder, ".csv").read_text())))
    assert len(rows) == int(count) and all(tag in row["tags"] for row in rows)
    clean_and_local(driver, url)


def test_a_viewer_gets_no_admin_or_analyst_control(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    sign_in(driver, url, world["keys"]["viewer"], "viewer")
    assert "viewer" in driver.find_element(By.ID, "who").text
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-role=admin], [data-role=analyst], #job-purge, #job-cancel")
    assert not driver.find_elements(By.CSS_SELECTOR, "#nav a[data-page=convert]")
    driver.get(f"{url}/ui#/jobs")
    wait_for(driver, "return document.querySelector('#jobs-list').children.length > 0")
    assert not driver.find_element(By.ID, "job-form").is_displayed()  # a viewer cannot submit
    driver.get(f"{url}/ui#/server")
    wait_for(driver, "return document.querySelector('#deployments-note').textContent.length > 0")
    assert "operator" in driver.find_element(By.ID, "deployments-note").text  # /v1/status is refused to a viewer
    assert not driver.find_elements(By.CSS_SELECTOR, "#charts figure")  # /metrics too
    sign_in(driver, url, world["keys"]["admin"])  # another key in the same page: its controls come back
    assert driver.find_elements(By.CSS_SELECTOR, "#nav a[data-page=audit]") and driver.find_elements(By.ID, "job-purge")


def test_the_latest_navigation_chooses_the_page(world: dict[str, Any]) -> None:
    """Two navigations in a row while the stored key is still being checked: the second (sign in) is the page
    shown. Before, the first one's late answer hid it (why the viewer test above failed now and then in CI)."""
    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()  # no key: the sign-in page, nobody signed in
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    driver.execute_script(
        "sessionStorage.setItem('imgserve.apiKey', arguments[0]);"
        "location.hash = '#/jobs'; setTimeout(() => { location.hash = '#/signin'; }, 0);",
        world["keys"]["admin"],
    )
    wait_for(driver, "return document.querySelector('#who').textContent.startsWith('admin ')")  # the key was checked
    time.sleep(1.0)
    visible = "return [...document.querySelectorAll('.page')].filter(p => !p.hidden).map(p => p.id)"
    shown = driver.execute_script(visible)
    assert shown == ["page-signin"], shown
    # A page name every object has ("constructor" is `in` {}) is no page: the home page, not a blank one.
    driver.execute_script("location.hash = '#/constructor'")
    wait_for(driver, "return [...document.querySelectorAll('.page')].some(p => !p.hidden && p.id !== 'page-signin')")


def test_the_pages_need_no_key_and_carry_a_strict_policy(world: dict[str, Any]) -> None:
    url = world["server"].http_url
    page = httpx.get(f"{url}/ui")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{url}/ui/..%2Fconfig.yaml").status_code == 404
    assert httpx.get(f"{url}/v1/whoami").status_code == 401  # the data behind the pages needs the key


def test_the_api_reference_renders_from_this_server_with_the_signed_in_key(world: dict[str, Any]) -> None:
    """/docs is Swagger UI served by imgserve (FastAPI's default page loads it from a CDN); the description needs a
    viewer key: the page uses the UI's signed-in key, or asks for one."""
    from selenium.webdriver.common.by import By

    if not (Path(__file__).resolve().parents[2] / "serving/ui/node_modules/swagger-ui-dist").is_dir():
        pytest.skip("swagger-ui-dist is not installed (make ui; needs npm)")
    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    # Unload the UI before forgetting its messages: its own requests, now without a key, are 401s too and could
    # otherwise be logged after the look below (a /v1/models 401 was, once, in a full run).
    driver.get("about:blank")
    console_messages(driver), request_urls(driver)  # forget the UI's own
    driver.get(f"{url}/docs")
    wait_for(driver, "return !document.querySelector('#docs-key').hidden")  # no key: the page asks for one
    refused = [m["message"] for m in console_messages(driver) if m["level"] in ("SEVERE", "WARNING")]
    assert all("/openapi.json" in m and "401" in m for m in refused), refused
    driver.find_element(By.ID, "docs-api-key").send_keys(world["keys"]["viewer"])
    driver.find_element(By.CSS_SELECTOR, "#docs-key button[type=submit]").click()
    wait_for(driver, "return document.querySelectorAll('.opblock').length > 20")
    paths = driver.execute_script(
        "return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.getAttribute('data-path'))"
    )
    assert "/v1/classify" in paths and "/v1/batch" in paths, paths
    screenshot(driver, "docs")
    bad = [m for m in console_messages(driver) if m["level"] in ("SEVERE", "WARNING")]
    assert not bad, bad  # a Content-Security-Policy refusal would be one
    outside = [u for u in request_urls(driver) if not u.startswith((url, "blob:", "data:"))]
    assert not outside, outside
    driver.refresh()  # the key is kept for the tab, as the UI keeps it
    wait_for(driver, "return document.querySelectorAll('.opblock').length > 20")


def test_a_key_allowed_one_request_at_a_time_still_sees_its_first_page(world: dict[str, Any]) -> None:
    """A key with a rate under 2/s has a burst of 1: the sign-in check used it, and the page's first figures were a
    429 error. The UI sends a GET refused for its rate once more when the server says it may soon."""
    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    sign_in(driver, url, world["secure_keys"]["trickle"], role="viewer")
    wait_for(driver, "return document.querySelector('#collections-list').children.length > 0", timeout=20)
    shown = driver.execute_script("return document.querySelector('#page-collections').innerText")
    assert "429" not in shown and "rate limit" not in shown.lower(), shown


# ---- what a review of the UI found (each test failed before its fix) ---------------------------------------------
# `window.fetch` wrapped in the page (core.js calls it by name): answers some requests with a made-up one, holds
# others back, and counts the analyses in flight at once.
FETCH_SPY = """
const spy = window.spy = {inFlight: 0, maxInFlight: 0, analyze: 0, fakes: arguments[0], delays: arguments[1]};
const real = window.realFetch = window.realFetch || window.fetch;
window.fetch = async (path, init) => {
  const url = String(path);
  const fake = spy.fakes.find(f => url.includes(f.path) && !f.used);
  const analyze = url.includes('/v1/analyze');
  if (analyze) { spy.analyze += 1; spy.inFlight += 1; spy.maxInFlight = Math.max(spy.maxInFlight, spy.inFlight); }
  try {
    if (fake) {
      fake.used = true;
      await new Promise(r => setTimeout(r, 50));  // answered after a moment, as by the server: uploads overlap
      const headers = {'Content-Type': 'application/json', ...fake.headers};
      return new Response(JSON.stringify(fake.body), {status: fake.status, headers});
    }
    const delay = spy.delays.find(d => url.includes(d.path) && !d.used);
    if (delay) { delay.used = true; await new Promise(r => setTimeout(r, delay.ms)); }
    return await real(path, init);
  } finally {
    if (analyze) spy.inFlight -= 1;
  }
};
"""


def spy_fetch(driver: "WebDriver", fakes: list[dict[str, Any]] = (), delays: list[dict[str, Any]] = ()) -> None:
    driver.execute_script(FETCH_SPY, list(fakes), list(delays))


def shown_page(driver: "WebDriver") -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('.page')].filter(p => !p.hidden).map(p => p.id)")


def job_shown(job_id: str) -> str:
    """A script true once the job detail shows `job_id`'s results (not the rows of the job open before)."""
    rows = "document.querySelectorAll('#job-results tbody tr').length > 0"
    return f"return document.querySelector('#job-detail').dataset.job === {job_id!r} && {rows}"


def small_jpeg(color: tuple[int, int, int], side: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), color).save(out, "JPEG")
    return out.getvalue()


def test_page_errors_show_and_a_key_revoked_mid_session_goes_back_to_sign_in(world: dict[str, Any]) -> None:
    """The Server, Collections and Audit pages have no status line of their own: their errors went to the hidden
    Analyze page's, and a key revoked while signed in left every page blank."""
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    sign_in(driver, url, world["keys"]["admin"])
    driver.get(f"{url}/ui#/audit")
    wait_for(driver, "return document.querySelectorAll('#audit-table tbody tr').length > 0")
    down = {"error": "the job database is unavailable", "kind": "store_unavailable"}
    revoked = {"error": "invalid API key", "kind": "unauthenticated"}  # what the server answers a revoked key
    spy_fetch(driver, [{"path": "/v1/audit", "status": 503, "body": down}])
    driver.execute_script("location.hash = '#/server'; setTimeout(() => { location.hash = '#/audit'; }, 300)")
    wait_for(driver, "return document.querySelector('#page-error')?.textContent.includes('unavailable')")
    assert driver.find_element(By.ID, "page-error").is_displayed() and shown_page(driver) == ["page-audit"]
    driver.execute_script("location.hash = '#/collections'")
    wait_for(driver, "return document.querySelector('#collections-list').children.length > 0")
    assert driver.find_element(By.ID, "page-error").text == ""  # each page starts without the last one's error

    spy_fetch(driver, [{"path": "/v1/models", "status": 401, "body": revoked}])
    driver.execute_script("location.hash = '#/server'")
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    assert "no longer accepted" in driver.find_element(By.ID, "signin-error").text
    assert driver.execute_script("return sessionStorage.getItem('imgserve.apiKey')") is None
    assert driver.find_element(By.ID, "who").text == "" and not driver.find_element(By.ID, "nav").is_displayed()
    # A stored key the server no longer takes (a reload after it was revoked): sign-in, saying why.
    stored = "sessionStorage.setItem('imgserve.apiKey', 'isk_revoked_key'); history.replaceState(null, '', '#/jobs')"
    driver.execute_script(stored)  # no hashchange: the reload is what asks
    driver.refresh()
    wait_for(driver, "return document.querySelector('#signin-error').textContent.includes('no longer accepted')")
    assert shown_page(driver) == ["page-signin"]
    assert driver.find_element(By.CSS_SELECTOR, "#audit-table th").get_attribute("textContent") == "When (UTC)"


def test_a_viewer_is_not_offered_analyze_and_its_address_leads_home(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    sign_in(driver, url, world["keys"]["viewer"], "viewer")
    assert not driver.find_elements(By.CSS_SELECTOR, "#nav a[data-page=analyze]")  # every upload would be a 403
    for page in ("analyze", "convert", "audit"):
        driver.execute_script(f"location.hash = '#/jobs'; setTimeout(() => {{ location.hash = '#/{page}'; }}, 200)")
        time.sleep(0.5)
        wait_for(driver, "return !document.querySelector('#page-collections').hidden")
        assert shown_page(driver) == ["page-collections"], page


def test_analyze_sends_a_few_at_a_time_retries_a_short_rate_limit_and_counts_failures(world: dict[str, Any]) -> None:
    """All the files went at once (a rate-limited key had most refused) and the status counted failures as analyzed."""
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "analyze", "document.querySelector('#model').options.length > 0")
    folder = world["tmp"] / "many"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(6):
        files.append(folder / f"p{i}.jpg")
        files[-1].write_bytes(small_jpeg((40 * i, 100, 200 - 30 * i)))
    limited = {"error": "rate limit of 5 requests/s for this key exceeded", "kind": "rate_limited"}
    spy_fetch(driver, [
        {"path": "/v1/analyze", "status": 429, "body": limited, "headers": {"Retry-After": "1"}},  # sent again
        {"path": "/v1/analyze", "status": 429, "body": limited, "headers": {"Retry-After": "30"}},  # too long: failed
    ])  # fmt: skip
    driver.execute_script("document.querySelector('#results').replaceChildren()")
    driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    status = "return document.querySelector('#analyze-status').textContent"
    wait_for(driver, f"{status}.endsWith('failed')")
    assert driver.execute_script(status) == "5 analyzed, 1 failed"
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".result .error")]
    assert len(errors) == 1 and "rate_limited" in errors[0], errors
    spy = driver.execute_script("return window.spy")
    assert 1 < spy["maxInFlight"] <= 4 and spy["analyze"] == 7, spy  # a pool; one retry


def test_exposures_read_as_a_camera_shows_them_and_whole_numbers_have_no_decimals(world: dict[str, Any]) -> None:
    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    texts = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/analyze.js').then((m) => done([30, 2, 0.4, 1 / 250, 1 / 3, 0.0167].map((t) => {
          const card = document.createElement('article');
          m.renderResult(card, '', 'x.jpg', {metadata: {exif: {exposure_time_s: t}}, quality: {score: 40, level: 'LOW',
            tags: [{name: 'small', confidence: 1, rule: 'r', evidence: {short_side: 64, ratio: 0.12345}}]}});
          return [card.querySelector('.meta dd').textContent, card.querySelector('.tags small').textContent];
        })));
    """)
    assert [exposure for exposure, _ in texts] == ["30 s", "2 s", "0.4 s", "1/250 s", "1/3 s", "1/60 s"]
    assert texts[0][1] == "short_side = 64, ratio = 0.123"


def test_manual_enhancement_never_runs_auto_fixes_and_a_later_run_is_not_overwritten(world: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, url, _ = admin_on(world, "convert", "document.querySelector('#convert-format').options.length > 0")
    driver.find_element(By.ID, "convert-file").send_keys(str(require(IMAGENET_SAMPLES) / PHOTO))
    driver.find_element(By.CSS_SELECTOR, "#convert-form input[value=manual]").click()
    request_urls(driver)
    submit = "#convert-form button[type=submit]"
    driver.find_element(By.CSS_SELECTOR, submit).click()
    wait_for(driver, "return document.querySelector('#convert-status').textContent.includes('nothing to change')")
    time.sleep(0.5)
    assert not [u for u in request_urls(driver) if "/v1/enhance" in u]  # "no option" is auto on the server
    driver.execute_script(
        "const f = document.querySelector('#factor-brightness'); f.value = '1.2';"
        "f.dispatchEvent(new Event('input', {bubbles: true}))"
    )
    driver.find_element(By.CSS_SELECTOR, submit).click()
    wait_for(driver, "return document.querySelector('#convert-download')")
    sent = [u for u in request_urls(driver) if "/v1/enhance" in u]
    assert len(sent) == 1 and "auto=false" in sent[0] and "brightness=1.2" in sent[0], sent
    assert "applied: brightness" in driver.find_element(By.ID, "convert-result").text
    first = driver.execute_script("return [...document.querySelectorAll('.side img')].map(i => i.src)")

    # Two runs in a row, the first answered last: the second's result stays.
    driver.find_element(By.CSS_SELECTOR, "#convert-form input[value=none]").click()
    spy_fetch(driver, delays=[{"path": "/v1/convert", "ms": 2500}])
    Select(driver.find_element(By.ID, "convert-format")).select_by_value("png")
    driver.find_element(By.CSS_SELECTOR, submit).click()
    Select(driver.find_element(By.ID, "convert-format")).select_by_value("webp")
    driver.find_element(By.CSS_SELECTOR, submit).click()
    wait_for(driver, "return document.querySelector('#convert-status').textContent.startsWith('Done')")
    time.sleep(3.5)  # the first (PNG) answer has come by now
    shown = driver.find_element(By.ID, "convert-result").text
    assert "WEBP" in shown and "PNG" not in shown, shown
    assert driver.find_element(By.ID, "convert-status").text.endswith(tuple("KiBMiB")), "status"
    assert ".webp" in driver.find_element(By.ID, "convert-status").text
    # The pictures of the replaced result were let go (their object URLs no longer resolve).
    revoked = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map(u => new Promise(gone => {"
        "  const i = new Image(); i.onload = () => gone(false); i.onerror = () => gone(true); i.src = u;"
        "}))).then(done)",
        first,
    )
    assert revoked == [True, True], revoked


@pytest.fixture(scope="module")
def big_job(world: dict[str, Any]) -> dict[str, str]:
    """A finished 205-image job of tenant a's analyst saved as a collection, and a one-image job of tenant b."""
    http, keys = world["server"].http_url, world["secure_keys"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(205):
            z.writestr(f"img{i:03d}.jpg", small_jpeg((i % 256, (i * 7) % 256, (i * 13) % 256)))
    with httpx.Client(base_url=http, timeout=120) as client:
        auth = lambda name: {"Authorization": f"Bearer {keys[name]}"}  # noqa: E731
        files = [("archive", ("many.zip", archive.getvalue(), "application/zip"))]
        job = client.post("/v1/batch?stages=quality", files=files, headers=auth("a_analyst")).json()["job_id"]
        one = [("image", ("b.jpg", small_jpeg((9, 9, 9)), "image/jpeg"))]
        other = client.post("/v1/batch?stages=quality", files=one, headers=auth("b_analyst")).json()["job_id"]
        deadline = time.monotonic() + 240
        while client.get(f"/v1/jobs/{job}", headers=auth("a_analyst")).json()["status"] != "completed":
            assert time.monotonic() < deadline, "the 205-image job did not finish"
            time.sleep(1)
        name = f"big-{job[:8]}"
        for collection in (name, f"again-{job[:8]}"):
            saved = client.post(f"/v1/jobs/{job}/collection?name={collection}", headers=auth("a_analyst"))
            assert saved.status_code == 200, saved.text
    return {"job": job, "other": other, "collection": name, "collection2": f"again-{job[:8]}"}


def test_a_long_jobs_table_says_it_shows_the_first_200(world: dict[str, Any], big_job: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "jobs", "document.querySelector('#jobs-list').children.length > 0")
    driver.get(f"{url}/ui#/jobs?job={big_job['job']}")
    wait_for(driver, job_shown(big_job["job"]))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#job-results tbody tr")) == 200
    assert "First 200 of 205" in driver.find_element(By.ID, "job-results").text


def test_another_tenants_job_offers_no_change_and_the_list_names_tenants(
    world: dict[str, Any], big_job: dict[str, str]
) -> None:
    """The server's admin reads every tenant's jobs but changes only its own; a tenant's admin sees its own tenant's
    jobs only, with every control."""
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "jobs", "document.querySelector('#jobs-list').children.length > 0")
    rows = (
        "return [...document.querySelectorAll('#jobs-list tbody tr')].map(r => [r.querySelector('a').textContent,"
        " r.querySelector('td.tenant')?.textContent])"
    )
    listed = driver.execute_script(rows)
    assert [big_job["other"], "tenant-b"] in listed and [big_job["job"], "tenant-a"] in listed, listed
    buttons = "return ['#job-purge', '#job-save'].map(s => !document.querySelector(s).hidden)"
    driver.get(f"{url}/ui#/jobs?job={big_job['other']}")
    wait_for(driver, job_shown(big_job["other"]))
    assert driver.execute_script(buttons) == [False, False]
    assert not driver.find_element(By.ID, "job-save-row").is_displayed()
    sign_in(driver, url, world["secure_keys"]["a_admin"])  # tenant a's admin, in the same page (no reload)
    # nothing the server's admin was shown stays on the page for the next key, not even until its list arrives
    left = "return ['#jobs-list', '#job-results'].map(s => document.querySelector(s).textContent)"
    assert driver.execute_script(left) == ["", ""]
    assert driver.execute_script("return document.querySelector('#job-detail').hidden")
    driver.get(f"{url}/ui#/jobs")
    own_list = (
        f"const text = document.querySelector('#jobs-list').textContent;"
        f" return text.includes({big_job['job']!r}) && !text.includes({big_job['other']!r})"
    )
    wait_for(driver, own_list)
    assert big_job["other"] not in [job for job, _ in driver.execute_script(rows)]
    driver.get(f"{url}/ui#/jobs?job={big_job['job']}")  # its own tenant's: all there
    wait_for(driver, job_shown(big_job["job"]))
    assert driver.execute_script(buttons) == [True, True]


def test_more_adds_each_page_once_with_the_filters_the_grid_was_loaded_with(
    world: dict[str, Any], big_job: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "collections", "document.querySelector('#collections-list').children.length")
    folder = downloads_to(driver, world["tmp"] / "more-downloads")
    click_link(driver, big_job["collection"])
    more = "return document.querySelectorAll('#collection-grid .tile').length === 48"
    wait_for(driver, more + " && !document.querySelector('#collection-more').hidden")
    driver.execute_script(
        "const b = document.querySelector('#collection-more'); b.click(); b.click()"
    )  # a double click
    wait_for(driver, "return document.querySelectorAll('#collection-grid .tile').length >= 96")
    time.sleep(1.5)
    names = driver.execute_script(
        "return [...document.querySelectorAll('#collection-grid .tile')].map(t => t.dataset.name)"
    )
    assert len(names) == 96 and len(set(names)) == 96, len(names)
    driver.execute_script("document.querySelector('#filter-min-score').value = '101'")  # typed, not submitted
    driver.find_element(By.ID, "collection-more").click()
    wait_for(driver, "return document.querySelectorAll('#collection-grid .tile').length >= 144")
    names = driver.execute_script(
        "return [...document.querySelectorAll('#collection-grid .tile')].map(t => t.dataset.name)"
    )
    assert len(set(names)) == 144 and not driver.find_element(By.ID, "collection-more").get_attribute("hidden")
    driver.find_element(By.ID, "collection-export").click()  # the loaded grid's filters: every image
    rows = list(csv.DictReader(io.StringIO(downloaded(folder, ".csv").read_text())))
    assert len(rows) == 205, len(rows)


def test_a_failed_jobs_reason_is_shown_and_an_older_collection_does_not_replace_a_newer(
    world: dict[str, Any], big_job: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "jobs", "document.querySelector('#jobs-list').children.length > 0")
    job = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.fetch(`/v1/jobs/${arguments[0]}`, {headers: {Authorization: "
        "`Bearer ${sessionStorage.getItem('imgserve.apiKey')}`}}).then(r => r.json()).then(done)",
        big_job["other"],
    )
    failed = {**job, "status": "failed", "error": "model 'gone' is no longer served"}
    spy_fetch(driver, [{"path": f"/v1/jobs/{big_job['other']}", "status": 200, "body": failed}])
    driver.execute_script(f"location.hash = '#/jobs?job={big_job['other']}'")
    wait_for(driver, "return document.querySelector('#job-message').textContent.includes('no longer served')")

    driver.get(f"{url}/ui#/collections")
    wait_for(driver, "return document.querySelector('#collections-list').children.length > 0")
    other = big_job["collection2"]
    spy_fetch(driver, delays=[{"path": "/report", "ms": 2500}])  # the first collection's report comes late
    click_link(driver, big_job["collection"])
    time.sleep(0.3)
    click_link(driver, other)
    wait_for(driver, f"return document.querySelector('#collection-title').textContent === {other!r}")
    time.sleep(3.5)
    assert driver.find_element(By.ID, "collection-title").text == other


# ---- a second review: headless Chromium against a running server (/tmp/review_ui; each failed before its fix) ------
def job_ids(url: str, key: str) -> set[str]:
    answer = httpx.get(f"{url}/v1/jobs?limit=100", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return {job["job_id"] for job in answer.json()["jobs"]}


def batch_keys(driver: "WebDriver") -> list[str | None]:
    """The Idempotency-Key of each POST /v1/batch the page sent since the last look."""
    events = devtools_events(driver, "Network.requestWillBeSent")
    sent = [e["params"]["request"] for e in events if e["method"] == "Network.requestWillBeSent"]  # not ...ExtraInfo
    posts = [r for r in sent if "/v1/batch" in r["url"] and r["method"] == "POST"]
    return [{k.lower(): v for k, v in r["headers"].items()}.get("idempotency-key") for r in posts]


# The first POST /v1/batch reaches the server but its answer is lost on the way back (a dropped connection).
LOSE_FIRST_BATCH_ANSWER = """
const real = window.realFetch = window.realFetch || window.fetch;
let lost = 0;
window.fetch = async (path, init) => {
  const answer = await real(path, init);
  if (String(path).includes('/v1/batch') && !lost++) throw new TypeError('Failed to fetch');
  return answer;
};
"""


def test_a_double_clicked_submit_makes_one_job_and_so_does_sending_it_again_after_a_lost_answer(
    world: dict[str, Any],
) -> None:
    """Double-clicking "Submit job" made two jobs: the button stayed enabled during the upload and no Idempotency-Key
    was sent. A submission sent again after its answer was lost (same form) carries the same key: still one job."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "jobs", "!document.querySelector('#job-form').hidden")
    key = world["keys"]["admin"]
    folder = world["tmp"] / "double"
    folder.mkdir(exist_ok=True)
    photos = []
    for i in range(3):
        photos.append(folder / f"d{i}.jpg")
        photos[-1].write_bytes(small_jpeg((60 * i, 90, 30)))
    submit = "#job-form button[type=submit]"
    shown = "return document.querySelector('#job-detail').dataset.job || ''"

    before, opened = job_ids(url, key), driver.execute_script(shown)
    driver.find_element(By.ID, "job-files").send_keys("\n".join(str(p) for p in photos))
    batch_keys(driver)  # only what follows is looked at
    ActionChains(driver).double_click(driver.find_element(By.CSS_SELECTOR, submit)).perform()
    wait_for(driver, f"{shown} !== {json.dumps(opened)} ? true : false")
    time.sleep(2)  # a second upload, had one been sent, has made its job by now
    made = job_ids(url, key) - before
    assert made == {driver.execute_script(shown)}, made
    first = batch_keys(driver)
    assert len(first) == 1 and first[0] and len(first[0]) == 36, first  # a uuid4

    before, opened = job_ids(url, key), driver.execute_script(shown)
    driver.execute_script(LOSE_FIRST_BATCH_ANSWER)
    driver.find_element(By.ID, "job-files").send_keys("\n".join(str(p) for p in photos[:2]))  # a new submission
    driver.find_element(By.CSS_SELECTOR, submit).click()
    wait_for(driver, "return document.querySelector('#job-status').textContent.includes('Failed to fetch')")
    assert driver.find_element(By.CSS_SELECTOR, submit).is_enabled()  # it may be sent again
    driver.find_element(By.CSS_SELECTOR, submit).click()  # the same form again: the job already made is answered
    wait_for(driver, f"{shown} !== {json.dumps(opened)} ? true : false")
    made = job_ids(url, key) - before
    assert made == {driver.execute_script(shown)}, made
    again = batch_keys(driver)
    assert len(again) == 2 and again[0] == again[1] and again[0] != first[0], again
    assert driver.execute_script("return window.isSecureContext && typeof crypto.randomUUID") == "function"
    driver.execute_script("window.fetch = window.realFetch")


def test_a_folder_dropped_with_a_slow_key_is_analyzed_whole_one_at_a_time_after_a_refusal(
    world: dict[str, Any],
) -> None:
    """A key of 1 request/s: three uploads at once, two refused, sent again together after Retry-After: 1 and refused
    again (the UI retried once): 4 of 6 failed. Now refused uploads are sent again a few times, spread out, and the
    rest go one at a time."""
    from selenium.webdriver.common.by import By

    driver, url, _ = admin_on(world, "analyze", "document.querySelector('#model').options.length > 0")
    folder = world["tmp"] / "slow"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(6):
        files.append(folder / f"s{i}.jpg")
        files[-1].write_bytes(small_jpeg((200 - 30 * i, 40 * i, 100)))
    limited = {"error": "rate limit of 1 requests/s for this key exceeded", "kind": "rate_limited"}
    refused = {"path": "/v1/analyze", "status": 429, "body": limited, "headers": {"Retry-After": "1"}}
    spy_fetch(driver, [dict(refused) for _ in range(4)])  # the first three, and the first one sent again
    driver.execute_script("document.querySelector('#results').replaceChildren()")
    driver.execute_script("document.querySelector('#files').value = ''")  # chromedriver adds to the files chosen
    driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    status = "return document.querySelector('#analyze-status').textContent"
    wait_for(driver, f"{status}.endsWith('failed')", timeout=60)  # none left to go
    assert driver.execute_script(status) == "6 analyzed, 0 failed"
    spy = driver.execute_script("return window.spy")
    assert spy["analyze"] == 10, spy  # 6, the 3 refused sent again, and the one refused twice once more
    driver.execute_script("window.fetch = window.realFetch")


def test_a_long_collection_name_wraps_in_the_table(world: dict[str, Any], big_job: dict[str, str]) -> None:
    """A 200-character name without spaces made the Collections table 2468 px wide."""
    http, keys = world["server"].http_url, world["secure_keys"]
    name = "x" * 200
    saved = httpx.post(
        f"{http}/v1/jobs/{big_job['other']}/collection?name={name}",
        headers={"Authorization": f"Bearer {keys['b_analyst']}"},
        timeout=60,
    )
    assert saved.status_code == 200, saved.text
    driver, _, _ = admin_on(world, "collections", "document.querySelector('#collections-list').children.length")
    wait_for(driver, f"return document.querySelector('#collections-list').textContent.includes({name!r})")
    widths = "const t = document.querySelector('#collections-list table'); return [t.scrollWidth, innerWidth]"
    table_width, window_width = driver.execute_script(widths)
    assert table_width < window_width, (table_width, window_width)


def test_a_key_with_other_characters_is_called_invalid_and_a_wrong_key_on_docs_is_not_kept(
    world: dict[str, Any],
) -> None:
    """A key with a non-Latin-1 character showed the browser's "Failed to execute 'set' on 'Headers'"; a wrong key
    typed on /docs was kept for the tab, and /ui then said it was "no longer accepted" (it never was)."""
    from selenium.webdriver.common.by import By

    driver, url = world["driver"], world["server"].http_url
    driver.get(f"{url}/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    driver.find_element(By.ID, "api-key").send_keys("isk_abc€")
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    error = wait_for(driver, "return document.querySelector('#signin-error').textContent")
    assert "not a valid API key" in error and "Headers" not in error, error
    assert driver.execute_script("return sessionStorage.getItem('imgserve.apiKey')") is None

    if not (Path(__file__).resolve().parents[2] / "serving/ui/node_modules/swagger-ui-dist").is_dir():
        return  # /docs asks for no key without Swagger UI
    for typed, says in (("isk_abc€", "not a valid API key"), ("isk_not_a_real_key", "not accepted")):
        driver.get(f"{url}/docs")
        wait_for(driver, "return !document.querySelector('#docs-key').hidden")
        driver.find_element(By.ID, "docs-api-key").send_keys(typed)
        driver.find_element(By.CSS_SELECTOR, "#docs-key button[type=submit]").click()
        wait_for(driver, f"return document.querySelector('#docs-message').textContent.includes({says!r})")
        assert driver.execute_script("return sessionStorage.getItem('imgserve.apiKey')") is None, typed
    driver.get(f"{url}/ui")
    wait_for(driver, "return !document.querySelector('#page-signin').hidden")
    time.sleep(0.5)
    assert driver.find_element(By.ID, "signin-error").text == ""  # not "no longer accepted"
    console_messages(driver), request_urls(driver)  # the refused keys' 401s are logged: later tests look afresh


def test_a_format_the_browser_cannot_show_says_so_and_nothing_to_change_clears_the_last_result(
    world: dict[str, Any],
) -> None:
    """TIFF (or HEIF) output was a broken "After" image; after "Manual: nothing to change" the previous result and
    its Download button stayed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, url, _ = admin_on(world, "convert", "document.querySelector('#convert-format').options.length > 0")
    driver.execute_script("document.querySelector('#convert-form').reset()")
    driver.execute_script("document.querySelector('#convert-form').dispatchEvent(new Event('change'))")
    driver.find_element(By.ID, "convert-file").send_keys(str(require(IMAGENET_SAMPLES) / PHOTO))
    Select(driver.find_element(By.ID, "convert-format")).select_by_value("tiff")
    driver.find_element(By.CSS_SELECTOR, "#convert-form input[value=none]").click()
    driver.find_element(By.CSS_SELECTOR, "#convert-form button[type=submit]").click()
    wait_for(driver, "return document.querySelector('#convert-download')")
    note = wait_for(driver, "return document.querySelector('.side .no-preview')?.textContent")
    assert "cannot show TIFF" in note, note
    assert len(driver.find_elements(By.CSS_SELECTOR, ".side img")) == 1  # the JPEG before it is shown
    assert "TIFF" in driver.find_element(By.ID, "convert-result").text

    driver.find_element(By.CSS_SELECTOR, "#convert-form input[value=manual]").click()
    driver.find_element(By.CSS_SELECTOR, "#convert-form button[type=submit]").click()
    wait_for(driver, "return document.querySelector('#convert-status').textContent.includes('nothing to change')")
    assert driver.execute_script("return document.querySelector('#convert-result').children.length") == 0
    assert not driver.find_elements(By.ID, "convert-download")
