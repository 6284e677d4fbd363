"""Drive Debian's headless Chromium through selenium, for tests of the pages tuneforge shows.

Uses the system `chromium` and `chromedriver` (apt: chromium chromium-driver) at fixed paths,
so selenium never tries to download a browser or a driver. Without them a test skips with
the reason, except in CI (env CI=true), where a missing browser is a failure: a browser test
that quietly skips there guards nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Running as root in a container needs --no-sandbox; the rest keeps Chromium off the network.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1200,900",
]  # fmt: skip


def _find(name: str, fallback: str) -> str | None:
    return shutil.which(name) or (fallback if Path(fallback).is_file() else None)


def browser_paths() -> tuple[str | None, str | None]:
    return _find("chromium", "/usr/bin/chromium"), _find("chromedriver", "/usr/bin/chromedriver")


def require_browser() -> tuple[str, str]:
    """The chromium and chromedriver paths; skip (or fail in CI) when either is missing."""
    chromium, driver = browser_paths()
    if chromium and driver:
        try:
            import selenium  # noqa: F401
        except ImportError:
            _missing("the selenium package is not installed (pip install selenium)")
        return chromium, driver
    _missing("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    raise AssertionError("unreachable")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test can't run in CI: {reason}")
    pytest.skip(f"browser test skipped: {reason}")


@contextmanager
def headless_chromium() -> Iterator[object]:
    """A selenium Chrome driver on a fresh profile, with the page's console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = require_browser()
    profile = tempfile.mkdtemp(prefix="tuneforge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """SEVERE console entries: script errors and Content-Security-Policy violations."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
