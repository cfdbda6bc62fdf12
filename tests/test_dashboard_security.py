"""The dashboard's sign-in and its defences, in headless Chromium against a
real ``alectio serve``: a wrong token, an expired session, and a page on
another site trying to make the signed-in browser change something."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import requests
from browser_support import browser, dashboard_server, fresh_browser, save_screenshot, sign_in, start_dashboard  # noqa: F401
from server_support import wait_for

pytestmark = pytest.mark.slow


def by(name):
    from selenium.webdriver.common.by import By

    return getattr(By, name)


def signed_in(browser) -> bool:
    return bool(browser.find_elements(by("CSS_SELECTOR"), 'meta[name="csrf-token"]'))


def sign_in_form(browser) -> bool:
    return bool(browser.find_elements(by("NAME"), "token"))


def experiments(dashboard) -> list:
    response = requests.get(f"{dashboard.url}/api/v1/experiments", headers={"Authorization": f"Bearer {dashboard.token}"}, timeout=30)
    return response.json()["experiments"]


def test_a_wrong_token_shows_the_error_on_the_form(fresh_browser, dashboard_server, tmp_path):
    sign_in(fresh_browser, dashboard_server, token="browser.not-the-secret")
    error = fresh_browser.find_element(by("ID"), "signin-error")
    assert "That token is not valid" in error.text
    assert sign_in_form(fresh_browser) and not signed_in(fresh_browser)
    assert fresh_browser.get_cookie("alectio_session") is None
    save_screenshot(fresh_browser, tmp_path, "signin-wrong-token")

    sign_in(fresh_browser, dashboard_server)
    assert signed_in(fresh_browser)
    cookie = fresh_browser.get_cookie("alectio_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert fresh_browser.execute_script("return document.cookie") == ""  # the page's script cannot read it


def test_an_expired_session_brings_back_the_sign_in_form(fresh_browser, tmp_path, test_site):
    dashboard = start_dashboard(tmp_path, config={"server": {"session_seconds": 2}})
    try:
        sign_in(fresh_browser, dashboard)
        assert signed_in(fresh_browser)

        def expired():
            fresh_browser.refresh()
            return sign_in_form(fresh_browser)

        wait_for(expired, timeout=20, interval=0.5, what="the sign-in form after the session expired")
        assert not signed_in(fresh_browser)
        save_screenshot(fresh_browser, tmp_path, "signin-expired")
    finally:
        dashboard.server.stop()


ATTACK = """<!doctype html><html><body>
<form id="attack" method="post" action="{action}" enctype="text/plain">
<input name='{{"model": "slow_test", "pad": "' value='"}}'>
</form>
<script>document.getElementById("attack").submit();</script>
</body></html>"""


class OtherSite:
    """Pages served by ``http.server`` on 127.0.0.1, visited as
    ``http://localhost:PORT``: another site than ``http://127.0.0.1:PORT2``."""

    def __init__(self, folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://localhost:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def other_site(tmp_path):
    folder = tmp_path / "other-site"
    folder.mkdir()
    site = OtherSite(folder)
    site.folder = folder
    yield site
    site.stop()


@pytest.mark.parametrize("target", ["/api/v1/experiments", "/signout"])
def test_a_cross_site_post_is_refused_and_changes_nothing(fresh_browser, dashboard_server, other_site, tmp_path, target):
    sign_in(fresh_browser, dashboard_server)
    assert signed_in(fresh_browser)
    (other_site.folder / "attack.html").write_text(ATTACK.format(action=dashboard_server.url + target))

    fresh_browser.get(f"{other_site.url}/attack.html")
    wait_for(lambda: fresh_browser.current_url.startswith(dashboard_server.url), timeout=20, what="the form to post")
    wait_for(lambda: fresh_browser.execute_script("return document.readyState") == "complete", timeout=10, what="the answer")
    answer = fresh_browser.find_element(by("TAG_NAME"), "body").text
    save_screenshot(fresh_browser, tmp_path, "cross-site-" + target.strip("/").replace("/", "-"))
    if target == "/signout":
        assert "refused" in answer
    else:
        assert '"code"' in answer and ("unauthorized" in answer or "csrf" in answer)
    assert experiments(dashboard_server) == []
    # Still signed in: the other site neither created anything nor signed the user out.
    fresh_browser.get(dashboard_server.url + "/")
    assert signed_in(fresh_browser)
