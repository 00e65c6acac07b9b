"""Headless Chromium for the workspace's browser tests: Debian's chromium and chromium-driver, never a
browser fetched from elsewhere. Without them the tests that use ``chrome`` skip with that reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
SCREENSHOTS = os.environ.get("MAILROOM_SCREENSHOTS")
# For a test module of browser tests: slow, and skipped with the reason where the packages are missing.
BROWSER_TESTS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING), reason=f"no {' or '.join(MISSING)}: install Debian's chromium and chromium-driver packages"
    ),
]


@pytest.fixture
def chrome() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(argument)
    # Selenium Manager would fetch a browser or driver it thinks is missing; offline it only uses these.
    os.environ["SE_OFFLINE"] = "true"
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def resized(chrome: Any, width: int, height: int) -> None:
    """The window at ``width`` x ``height``, once the page's viewport has taken the width: on a busy machine the
    resize lands after set_window_size returns, and a page measured before it is measured at the old width."""
    from selenium.webdriver.support.wait import WebDriverWait

    chrome.set_window_size(width, height)
    WebDriverWait(chrome, 10).until(lambda driver: driver.execute_script("return window.innerWidth") <= width)


def save_screenshot(chrome: Any, name: str) -> None:
    """For `make screenshots` only: the page as the browser shows it, in MAILROOM_SCREENSHOTS."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        chrome.save_screenshot(str(Path(SCREENSHOTS) / name))


def pressed(chrome: Any, button: str, title: str) -> None:
    """Press the button (a CSS selector) and wait for the next page, whose title holds ``title``: first for the
    pressed one to go, since the next may have the same title (a search answers with the form again)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of, title_contains
    from selenium.webdriver.support.wait import WebDriverWait

    element = chrome.find_element(By.CSS_SELECTOR, button)
    element.click()
    WebDriverWait(chrome, 10).until(staleness_of(element))
    WebDriverWait(chrome, 10).until(title_contains(title))
