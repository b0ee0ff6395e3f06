"""Headless Debian Chromium through Selenium and chromedriver, for the report screenshot CLI and the browser tests.

The driver records the browser console (`browser` log) and the Chrome DevTools events (`performance` log, which holds
`Network.requestWillBeSent` for every request the page makes). Paths can be overridden with IMGSERVE_CHROMIUM and
IMGSERVE_CHROMEDRIVER; otherwise Debian's /usr/bin/chromium and /usr/bin/chromedriver (or whatever is on PATH).
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars")


def _binary(env: str, default: str, name: str) -> str | None:
    path = os.environ.get(env) or default
    return path if Path(path).is_file() else shutil.which(name)


def chromium_path() -> str | None:
    return _binary("IMGSERVE_CHROMIUM", "/usr/bin/chromium", "chromium")


def chromedriver_path() -> str | None:
    return _binary("IMGSERVE_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")


def missing_browser() -> str | None:
    """Why a headless browser cannot be started here, or None when it can."""
    if importlib.util.find_spec("selenium") is None:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install chromium)"
    if chromedriver_path() is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def make_driver(width: int = 1280, height: int = 900) -> "WebDriver":
    """Headless Chromium with a `width` x `height` viewport, console and DevTools (performance) logs recorded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = missing_browser()
    if reason:
        raise RuntimeError(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()  # type: ignore[assignment]
    for flag in (*CHROME_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver_path()))
    try:
        set_viewport(driver, width, height)
    except Exception:
        driver.quit()
        raise
    return driver


def set_viewport(driver: "WebDriver", width: int, height: int) -> None:
    """The page's layout viewport exactly `width` x `height` CSS pixels at scale 1 (the screenshot's size)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def devtools_events(driver: "WebDriver", method_prefix: str = "") -> list[dict[str, Any]]:
    """The DevTools events recorded since the last call (`{"method", "params"}`), those starting with the prefix."""
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [e for e in events if e.get("method", "").startswith(method_prefix)]


def console_messages(driver: "WebDriver") -> list[dict[str, Any]]:
    """The console messages recorded since the last call: `{"level": "SEVERE"|"WARNING"|"INFO"|..., "message"}`."""
    return list(driver.get_log("browser"))


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 900) -> Path:
    """A PNG of the first screen (`width` x `height`) of the local HTML file."""
    driver = make_driver(width, height)
    try:
        driver.get(html.resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.get_screenshot_as_file(str(out)):
            raise RuntimeError(f"chromium could not write {out}")
    finally:
        driver.quit()
    return out
