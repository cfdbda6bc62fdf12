"""Fixtures for the dashboard's browser tests (``from browser_support import ...``).

``browser``: one headless Chromium for the test session (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium), 1280x800, its
console log readable with :func:`console_errors`. Tests that use it skip,
saying why, only when Chromium, its driver or Selenium is not installed
(``.ci/run`` installs them).

``dashboard_server``: a real ``alectio serve`` process on 127.0.0.1 with a
fresh SQLite file and an API token (``.token``); ``start_dashboard`` starts
one with a config of the test's own (``{"server": {"session_seconds": 2}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from server_support import Server, wait_for

from alectio_core.storage import open_storage
from alectio_core.tokens import create_token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            return f"{path} is not installed (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 800)
    yield driver
    driver.quit()


@pytest.fixture
def fresh_browser(browser):
    """The session's browser with no cookies and an empty console log."""
    browser.delete_all_cookies()  # those of the page still open (about:blank has none)
    # Then leave that page: its event stream, retrying against the last
    # test's stopped server, would log errors into this test's console.
    browser.get("about:blank")
    console_log(browser)
    yield browser
    browser.delete_all_cookies()


def console_log(browser) -> list[dict]:
    """The console entries since the last call (reading clears them)."""
    return browser.get_log("browser")


def console_errors(browser) -> list[str]:
    """The console's errors since the last read, as their messages."""
    return [entry["message"] for entry in console_log(browser) if entry["level"] == "SEVERE"]


@dataclass
class Dashboard:
    """A running ``alectio serve`` and how to reach it."""

    server: Server
    token: str
    storage: str

    @property
    def url(self) -> str:
        return self.server.url


def start_dashboard(tmp: Path, config: dict | None = None, name: str = "dashboard", env: dict | None = None) -> Dashboard:
    """``alectio serve`` on a fresh SQLite file in ``tmp`` holding one token
    (``env``: e.g. ``{"ALECTIO_LOAD_PLUGINS": "slow_test,digits_lr"}`` for a second model)."""
    storage = f"sqlite:///{tmp}/{name}.db"
    store = open_storage(storage)
    try:
        token = create_token(store, "browser")
    finally:
        store.close()
    return Dashboard(Server(tmp, storage, name, config=config, env=env), token, storage)


@pytest.fixture
def dashboard_server(tmp_path, test_site):
    dashboard = start_dashboard(tmp_path)
    yield dashboard
    dashboard.server.stop()


def sign_in(browser, dashboard: Dashboard, token: str | None = None) -> None:
    """Sign in through the form, as a person would; returns once the
    answer (the dashboard, or the form again) has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(dashboard.url + "/")
    form_page = browser.find_element(By.TAG_NAME, "html")
    field = browser.find_element(By.NAME, "token")
    field.clear()
    field.send_keys(dashboard.token if token is None else token)
    field.submit()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(form_page))
    wait_for(lambda: browser.execute_script("return document.readyState") == "complete", timeout=10, what="the page to load")


def save_screenshot(browser, folder: Path, name: str) -> Path:
    """A PNG of the current page in ``folder`` (the test's temporary folder)."""
    path = Path(folder) / f"{name}.png"
    browser.save_screenshot(str(path))
    return path
