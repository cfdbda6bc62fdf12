"""The dashboard's pages in a real browser: headless Chromium driven by
Selenium against a real ``alectio serve`` process (``browser_support``).

What a person does: sign in through the form, read the experiments, create
one from the form (a field error first), start a loop and watch it move and
the curve gain a point without a reload, overlay a second experiment, cancel
a loop, label a selection by hand. Every page: no console errors, and at
phone width (375 px) no horizontal scroll. Screenshots of each page go to
the test's temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from browser_support import Dashboard, browser, console_errors, fresh_browser, save_screenshot, sign_in, start_dashboard  # noqa: F401
from server_support import hold, release, slow_model, wait_for  # noqa: F401

from alectio_core.config import DEFAULT_STRATEGY


# -- helpers ----------------------------------------------------------------


class Rest:
    """The JSON API with the Bearer token, to set things up and to check
    what the page did."""

    def __init__(self, dashboard: Dashboard):
        self.base = dashboard.url
        self.headers = {"Authorization": f"Bearer {dashboard.token}"}

    def get(self, path: str) -> dict:
        response = requests.get(self.base + path, headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(self.base + path, headers=self.headers, json=body, timeout=10)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    def create(self, **fields) -> dict:
        return self.post("/api/v1/experiments", {"model": "slow_test", **fields})

    def run_loop(self, experiment_id: str) -> dict:
        loop = self.post(f"/api/v1/experiments/{experiment_id}/loops")["loop"]
        return wait_for(
            lambda: (s := self.get(f"/api/v1/experiments/{experiment_id}/loops/{loop}"))["status"] in ("done", "failed", "cancelled") and s,
            timeout=60,
            what=f"loop {loop} to finish",
        )


@dataclass
class Signed:
    """A browser signed in to a running dashboard, and the API beside it."""

    browser: object
    dashboard: Dashboard
    rest: Rest


@pytest.fixture
def signed(tmp_path, slow_model, fresh_browser):
    dashboard = start_dashboard(tmp_path)
    try:
        sign_in(fresh_browser, dashboard)
        until(fresh_browser, "document.body.dataset.rendered === 'experiments'", "the experiments page after signing in")
        yield Signed(fresh_browser, dashboard, Rest(dashboard))
    finally:
        dashboard.server.stop()


def find(browser, css: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def find_all(browser, css: str):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def until(browser, script: str, what: str, timeout: float = 20):
    """Wait until the JavaScript expression ``script`` is truthy in the page; return its value."""
    return wait_for(lambda: browser.execute_script(f"return ({script})"), timeout=timeout, interval=0.1, what=what)


def open_page(browser, dashboard: Dashboard, route: str, page: str) -> None:
    """Load the dashboard afresh at a hash route and wait until its page has rendered."""
    browser.get("about:blank")
    browser.get(f"{dashboard.url}/#{route}")
    until(browser, f"document.body.dataset.rendered === {page!r} && location.hash === {('#' + route)!r}", f"the {page} page")


def mark_page(browser) -> None:
    """Leave a marker in the window: it is gone if the page reloads."""
    browser.execute_script("window.notReloaded = true")


def assert_not_reloaded(browser) -> None:
    assert browser.execute_script("return window.notReloaded === true"), "the page reloaded"


def assert_fits_phone(browser) -> None:
    """At 375 px wide (a phone), the page has no horizontal scroll."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 740, "deviceScaleFactor": 1, "mobile": True})
    try:
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[1] == 375, widths
        assert widths[0] <= widths[1], f"horizontal scroll at phone width: the page is {widths[0]} px wide"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


FOCUSED = """
const el = document.activeElement, style = getComputedStyle(el);
const id = el.id || (el.dataset.overlay ? "overlay-" + el.dataset.overlay : "")
  || (el.classList.contains("point") ? "point" : "") || (el.closest("tr[data-loop]") ? "loop-link" : el.tagName.toLowerCase());
const ring = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
return {id, visible: ring || (el.classList.contains("point") && parseFloat(style.strokeWidth) >= 3)};
"""


def tab_through(browser, presses: int) -> list[dict]:
    """Press Tab ``presses`` times from the top of the page; what had focus
    after each press, and whether its focus showed."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached = []
    for _ in range(presses):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script(FOCUSED))
    return reached


def assert_no_console_errors(browser) -> None:
    assert console_errors(browser) == []


def shoot(browser, tmp_path: Path, name: str) -> None:
    """The whole page at 1280 px wide, and at phone width."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": min(height, 1600), "deviceScaleFactor": 1, "mobile": False})
    try:
        save_screenshot(browser, tmp_path, f"dashboard-{name}")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 740, "deviceScaleFactor": 1, "mobile": True})
    try:
        save_screenshot(browser, tmp_path, f"dashboard-{name}-phone")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# -- the experiments page -----------------------------------------------------


def test_experiments_page_shows_each_experiment_and_filters_by_model(tmp_path, slow_model, fresh_browser, test_site):
    browser = fresh_browser
    dashboard = start_dashboard(tmp_path, env={"ALECTIO_LOAD_PLUGINS": "slow_test,digits_lr"})
    try:
        rest = Rest(dashboard)
        ran = rest.create(strategy="margin", batch_size=5, initial=10, loops=3)
        rest.run_loop(ran["id"])
        waiting = rest.create(strategy="random", batch_size=5, initial=10, loops=2)
        digits = rest.create(model="digits_lr", strategy="entropy", batch_size=10, initial=20, loops=2)

        sign_in(browser, dashboard)
        until(browser, "document.body.dataset.rendered === 'experiments'", "the experiments page")
        rows = {r.get_attribute("data-id"): [c.text for c in r.find_elements("css selector", "td")] for r in find_all(browser, "table.list tbody tr")}
        assert set(rows) == {ran["id"], waiting["id"], digits["id"]}
        # Experiment, model, strategy, status, loops done, labels used, metric, created
        experiment, model, strategy, status, loops, labeled, metric, created = rows[ran["id"]]
        summaries = {e["id"]: e["summary"] for e in rest.get("/api/v1/experiments")["experiments"]}
        assert (model, strategy, loops, labeled) == ("slow_test", "margin", "1 / 3", "10")
        assert status == summaries[ran["id"]]["status"] and status in ("idle", "done")
        assert metric.startswith("accuracy 0.")
        assert created.startswith(ran["created"][:4])
        assert rows[waiting["id"]][3:6] == [summaries[waiting["id"]]["status"], "0 / 2", "0"]
        assert rows[digits["id"]][1:3] == ["digits_lr", "entropy"]
        assert_no_console_errors(browser)
        assert_fits_phone(browser)
        shoot(browser, tmp_path, "experiments")

        from selenium.webdriver.support.ui import Select

        Select(find(browser, "#model-filter")).select_by_value("digits_lr")
        until(browser, "location.hash === '#/?model=digits_lr' && document.querySelectorAll('table.list tbody tr').length === 1", "the filter")
        assert [r.get_attribute("data-id") for r in find_all(browser, "table.list tbody tr")] == [digits["id"]]
        find(browser, f"tr[data-id='{digits['id']}'] a").click()
        until(browser, f"document.body.dataset.rendered === 'experiment' && location.hash === '#/e/{digits['id']}'", "the experiment page")
        assert find(browser, "h1").text == f"Experiment {digits['id']}"
        assert_no_console_errors(browser)

        # Margin against random on the digits: two curves on one chart.
        random_digits = rest.create(model="digits_lr", strategy="random", batch_size=10, initial=20, loops=2)
        for experiment in (digits, random_digits):
            rest.run_loop(experiment["id"])
            rest.run_loop(experiment["id"])
        open_page(browser, dashboard, f"/e/{digits['id']}", "experiment")
        find(browser, f"input[data-overlay='{random_digits['id']}']").click()
        until(browser, "document.querySelectorAll('.chart .series circle').length === 4", "both curves")
        lines = {g.get_attribute("data-series"): len(g.find_elements("css selector", "circle")) for g in find_all(browser, ".chart .series")}
        assert lines == {f"{digits['id']} (entropy)": 2, f"{random_digits['id']} (random)": 2}
        assert {e.get_attribute("data-overlay") for e in find_all(browser, "input[data-overlay]")} == {random_digits["id"]}  # same model only
        find(browser, "#all-models").click()
        until(browser, "document.querySelectorAll('input[data-overlay]').length === 3", "experiments of every model")
        assert_no_console_errors(browser)
        shoot(browser, tmp_path, "experiment-compare")

        # By keyboard alone: Tab reaches every control in reading order, its focus visible.
        open_page(browser, dashboard, f"/e/{digits['id']}", "experiment")
        reached = tab_through(browser, 30)
        order = [r["id"] for r in reached]
        for control in ("metric", "point", "all-models", f"overlay-{random_digits['id']}", "loop-link"):
            assert control in order, (control, order)
        assert "start-loop" not in order  # every loop has run: the button is disabled
        assert order.index("metric") < order.index("point") < order.index("all-models") < order.index("loop-link")
        assert all(r["visible"] for r in reached if r["id"] != "body"), reached  # body: past the last control
    finally:
        dashboard.server.stop()


# -- the new-experiment form ----------------------------------------------------


def test_create_an_experiment_from_the_form_after_a_field_error(signed, tmp_path):
    from selenium.webdriver.support.ui import Select

    browser = signed.browser
    open_page(browser, signed.dashboard, "/new", "create")
    assert [o.get_attribute("value") for o in find_all(browser, "#f-model option")] == ["slow_test"]
    Select(find(browser, "#f-model")).select_by_value("slow_test")
    # The strategy is picked from the server's, its default first chosen.
    strategy = Select(find(browser, "#f-strategy"))
    provided = [n for p in signed.rest.get("/api/v1/plugins")["plugins"] for n in p.get("provides", {}).get("strategies", [])]
    assert [o.get_attribute("value") for o in strategy.options] == sorted(provided)
    assert {"random", "margin", DEFAULT_STRATEGY} <= set(provided)
    assert strategy.first_selected_option.get_attribute("value") == DEFAULT_STRATEGY
    strategy.select_by_value("random")
    find(browser, "#f-batch_size").send_keys("-3")
    find(browser, "#f-initial").send_keys("10")
    find(browser, "#f-loops").send_keys("2")
    find(browser, "#f-seed").send_keys("7")
    find(browser, "form.create button[type=submit]").click()

    message = until(browser, "document.querySelector('#e-batch_size').textContent", "the field's error")
    assert "batch_size" in message and "-3" in message
    assert find(browser, "#f-batch_size").get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element == find(browser, "#f-batch_size")
    assert signed.rest.get("/api/v1/experiments")["experiments"] == []  # nothing stored
    # The refused request is the only console error: the browser reports the 400.
    assert [m for m in console_errors(browser) if "status of 400" not in m] == []
    assert_fits_phone(browser)
    shoot(browser, tmp_path, "new-experiment")

    field = find(browser, "#f-batch_size")
    field.clear()
    field.send_keys("5")
    find(browser, "form.create button[type=submit]").click()
    until(browser, "location.hash.startsWith('#/e/') && document.body.dataset.rendered === 'experiment'", "the new experiment's page")
    [made] = signed.rest.get("/api/v1/experiments")["experiments"]
    assert (made["strategy"], made["batch_size"], made["initial"], made["loops"], made["seed"]) == ("random", 5, 10, 2, 7)
    assert browser.execute_script("return location.hash") == f"#/e/{made['id']}"
    assert_no_console_errors(browser)




# -- the experiment page: a loop live, the curve, overlays, cancel ------------------


def loop_status(browser, loop: int) -> str:
    return browser.execute_script(f"return document.querySelector('tr[data-loop=\"{loop}\"] .status')?.textContent || ''")


def test_a_loop_runs_live_on_the_experiment_page_and_the_curve_gains_a_point(signed, hold, tmp_path):
    browser, rest = signed.browser, signed.rest
    train_hold, infer_hold = hold("train"), hold("infer")
    # More records than one infer chunk (65536), so infer reports progress between chunks.
    config = {"hold_file": train_hold, "infer_hold_file": infer_hold, "pool_size": 140000}
    experiment = rest.create(strategy="margin", batch_size=5, initial=10, loops=3, config=config)
    other = rest.create(strategy="random", batch_size=5, initial=10, loops=3)
    rest.run_loop(other["id"])

    open_page(browser, signed.dashboard, f"/e/{experiment['id']}", "experiment")
    mark_page(browser)
    assert find_all(browser, ".series.c0 circle") == []
    find(browser, "#start-loop").click()
    until(browser, "document.querySelector('.live').dataset.stage === 'train'", "the loop to show its train stage")
    assert "Loop 0: running · train" in find(browser, ".live-text").text
    assert find(browser, "#start-loop").get_attribute("disabled") is not None

    release(train_hold)
    until(browser, "document.querySelector('.live').dataset.stage === 'infer' && document.querySelector('.live progress').value > 0", "infer's progress")
    progress = find(browser, ".live progress")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("65536", "139990")
    assert "65,536 / 139,990 records" in find(browser, ".live-text").text
    save_screenshot(browser, tmp_path, "dashboard-experiment-running")

    release(infer_hold)
    until(browser, "document.querySelectorAll('.series.c0 circle').length === 1", "the curve's first point")
    until(browser, "getComputedStyle(document.querySelector('.live')).display === 'none'", "the live panel to go once the loop is done")
    assert loop_status(browser, 0) == "done"
    assert_not_reloaded(browser)
    point = find(browser, ".series.c0 circle")
    assert point.get_attribute("tabindex") == "0"  # reachable by keyboard, its value in its label
    [first] = rest.get(f"/api/v1/experiments/{experiment['id']}/metrics")["curve"]
    assert point.get_attribute("aria-label").endswith(f"accuracy {first['metrics']['accuracy']:.4f} at 10 labels")
    row = {c.get_attribute("data-label"): c.text for c in find_all(browser, "tr[data-loop='0'] td")}
    assert "train" in row["Stage times"] and "infer" in row["Stage times"]
    queried = first["metrics"]["num_queried_per_class"]
    assert row["Queried per class"] == f"even {queried['even']} · odd {queried['odd']}" and row["Labels used"] == "10"
    assert len(find_all(browser, "details.matrix[open] svg rect")) == 4  # 2 classes: a 2 x 2 heat map

    # Another experiment on the same model, overlaid; then another metric.
    find(browser, f"input[data-overlay='{other['id']}']").click()
    until(browser, "document.querySelectorAll('.series.c1 circle').length === 1", "the overlaid curve")
    assert [li.text for li in find_all(browser, ".legend li")] == [f"{experiment['id']} (margin)", f"{other['id']} (random)"]
    from selenium.webdriver.support.ui import Select

    Select(find(browser, "#metric")).select_by_value("f1_score")
    until(browser, "[...document.querySelectorAll('.chart .label')].some(t => t.textContent === 'f1_score')", "the f1_score curve")
    assert len(find_all(browser, ".chart .series circle")) == 2
    assert_no_console_errors(browser)
    assert_fits_phone(browser)
    shoot(browser, tmp_path, "experiment")

    # The next loop's selection, best first, with the model's predictions as class names.
    open_page(browser, signed.dashboard, f"/e/{experiment['id']}/loops/1", "selection")
    cells = [{c.get_attribute("data-label"): c.text for c in r.find_elements("css selector", "td")} for r in find_all(browser, "table.selection tbody tr")]
    assert len(cells) == 5 and {c["Prediction"] for c in cells} <= {"even", "odd"}
    scores = [float(c["Score"]) for c in cells]
    assert scores == sorted(scores, reverse=True)
    assert find_all(browser, "button.choice") == []  # labels come from the plugin here
    assert_no_console_errors(browser)

    # Loop 1 held in train; cancel it from the page.
    open_page(browser, signed.dashboard, f"/e/{experiment['id']}", "experiment")
    mark_page(browser)
    Path(train_hold).touch()
    find(browser, "#start-loop").click()
    until(browser, "document.querySelector('.live').dataset.stage === 'train'", "loop 1 in train")
    find(browser, "#cancel-loop").click()
    until(browser, "document.querySelector('.live-text').textContent.includes('cancelling')", "the cancel request to show")
    release(train_hold)  # the loop stops at the end of the stage
    until(browser, "document.querySelector('tr[data-loop=\"1\"] .status')?.textContent === 'cancelled'", "loop 1 cancelled")
    assert rest.get(f"/api/v1/experiments/{experiment['id']}/loops/1")["status"] == "cancelled"
    assert find(browser, "#cancel-loop").get_attribute("disabled") is not None
    assert not find(browser, ".live").is_displayed()
    assert_not_reloaded(browser)
    assert_no_console_errors(browser)


# -- the selection page: labelling by hand --------------------------------------------


def test_label_a_selection_by_hand_and_the_next_loop_starts(signed, tmp_path):
    browser, rest = signed.browser, signed.rest
    experiment = rest.create(strategy="margin", batch_size=4, initial=6, loops=2, labels="alectio")
    selected = [r["index"] for r in rest.get(f"/api/v1/experiments/{experiment['id']}/loops/0/selection")["rows"]]

    open_page(browser, signed.dashboard, f"/e/{experiment['id']}", "experiment")
    find(browser, f"a[href='#/e/{experiment['id']}/loops/0']").click()
    until(browser, "document.body.dataset.rendered === 'selection'", "the selection page")
    rows = find_all(browser, "table.selection tbody tr")
    assert [int(r.get_attribute("data-index")) for r in rows] == selected
    assert [b.text for b in rows[0].find_elements("css selector", "button.choice")] == ["1 even", "2 odd", "s skip"]
    start_next = find(browser, "#start-next")
    assert not start_next.is_selected()  # this server has no labeller with auto_next

    # Keys on the focused row: 1 and 2 pick a class, s skips; each moves on. j moves without labelling.
    rows[0].click()
    browser.switch_to.active_element.send_keys("1")
    browser.switch_to.active_element.send_keys("2")
    browser.switch_to.active_element.send_keys("s")
    browser.switch_to.active_element.send_keys("j")
    assert browser.switch_to.active_element == rows[4]
    # Clicks on rows 4 and 5; row 3 stays unlabelled.
    rows[4].find_element("css selector", "button[data-class='odd']").click()
    rows[5].find_element("css selector", "button[data-class='even']").click()
    assert rows[0].find_element("css selector", "button[data-class='even']").get_attribute("aria-pressed") == "true"
    start_next.click()
    find(browser, "#submit-labels").click()
    until(browser, "document.querySelector('.message').textContent.includes('Stored')", "the labels to be stored")
    assert "Stored 4 labels and 1 skip; 1 record of loop 0 still needs one." in find(browser, ".message").text
    assert rest.get(f"/api/v1/experiments/{experiment['id']}/loops")["loops"] == []  # not complete: no loop yet
    stored_cells = [r.find_element("css selector", "td[data-label='Stored label']").text for r in rows]
    assert stored_cells == ["even", "odd", "skipped", "", "odd", "even"]
    assert find(browser, ".count").text == "5 of 6 labelled or skipped"
    save_screenshot(browser, tmp_path, "dashboard-selection")

    browser.execute_script("arguments[0].focus()", rows[3])
    browser.switch_to.active_element.send_keys("2")
    find(browser, "#submit-labels").click()
    until(browser, "document.querySelector('.message').textContent.includes('Loop 0 started')", "loop 0 to start")
    stored = {e["index"]: (e["label"], e["skip"]) for e in rest.get(f"/api/v1/experiments/{experiment['id']}/labels")["labels"]}
    even, odd = experiment["labels"].index("even"), experiment["labels"].index("odd")  # stored as class ids
    assert stored == {
        selected[0]: (even, False),
        selected[1]: (odd, False),
        selected[2]: (None, True),
        selected[3]: (odd, False),
        selected[4]: (odd, False),
        selected[5]: (even, False),
    }
    assert rest.get(f"/api/v1/experiments/{experiment['id']}/loops/0")["status"] in ("queued", "running", "done")
    assert_no_console_errors(browser)
    assert_fits_phone(browser)
    shoot(browser, tmp_path, "selection")


def test_the_page_polls_the_loop_when_events_cannot_connect(signed, hold):
    browser, rest = signed.browser, signed.rest
    train_hold = hold("train")
    experiment = rest.create(strategy="margin", batch_size=5, initial=10, loops=2, config={"hold_file": train_hold})
    browser.execute_cdp_cmd("Network.enable", {})
    # As a proxy that drops event streams would: the page's EventSource never connects.
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urlPatterns": [{"urlPattern": "*://*:*/api/v1/experiments/*/events", "block": True}]})
    try:
        open_page(browser, signed.dashboard, f"/e/{experiment['id']}", "experiment")
        mark_page(browser)
        find(browser, "#start-loop").click()
        until(browser, "document.querySelector('.live').dataset.stage === 'train'", "loop 0 in train")
        release(train_hold)
        until(browser, "document.querySelectorAll('.series.c0 circle').length === 1", "the curve's point, from polling")
        assert loop_status(browser, 0) == "done"
        assert_not_reloaded(browser)
        assert "/events" not in signed.dashboard.server.log()  # blocked: it never reached the server
        assert f"GET /api/v1/experiments/{experiment['id']}/loops/0 200" in signed.dashboard.server.log()
        assert [m for m in console_errors(browser) if "/events" not in m] == []
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urlPatterns": []})
        browser.execute_cdp_cmd("Network.disable", {})


def test_an_api_call_after_the_session_expired_shows_the_sign_in_form(tmp_path, slow_model, fresh_browser):
    browser = fresh_browser
    dashboard = start_dashboard(tmp_path, config={"server": {"session_seconds": 2}})
    try:
        sign_in(browser, dashboard)
        until(browser, "document.body.dataset.rendered === 'experiments'", "the experiments page")
        cookie = {"alectio_session": browser.get_cookie("alectio_session")["value"]}
        wait_for(lambda: requests.get(f"{dashboard.url}/api/v1/experiments", cookies=cookie, timeout=5).status_code == 401,
                 timeout=20, interval=0.2, what="the session to expire")
        find(browser, "a[href='#/new']").click()  # the page asks the API: 401
        until(browser, "document.querySelector('input[name=token]') !== null", "the sign-in form")
        assert browser.current_url.rstrip("/") == dashboard.url
        assert [m for m in console_errors(browser) if "status of 401" not in m] == []
    finally:
        dashboard.server.stop()


def test_a_page_left_while_it_loads_does_not_come_back_over_the_next(signed):
    """Open an experiment, and go back to the list before its data has come:
    the experiment page, arriving late, must neither cover the list nor keep
    its event stream open."""
    browser, rest = signed.browser, signed.rest
    experiment = rest.create(strategy="margin", batch_size=5, initial=10, loops=2)
    open_page(browser, signed.dashboard, "/", "experiments")
    # Hold the experiment page's GET .../loops until the test says; count the page's event streams.
    browser.execute_script("""
        const fetch0 = window.fetch, EventSource0 = window.EventSource;
        let release;
        const gate = new Promise((r) => { release = r; });
        window.releaseLoops = release;
        window.fetch = (url, options) => {
          if (!String(url).endsWith("/loops")) return fetch0(url, options);
          return gate.then(() => fetch0(url, options)).finally(() => { window.loopsSettled = true; });
        };
        window.streams = [];
        window.EventSource = class extends EventSource0 {
          constructor(...args) { super(...args); window.streams.push(this); }
        };
    """)
    browser.execute_script(f"location.hash = '#/e/{experiment['id']}'")
    until(browser, "location.hash.startsWith('#/e/')", "the experiment's route")
    browser.execute_script("document.body.dataset.rendered = ''; location.hash = '#/'")
    until(browser, "document.body.dataset.rendered === 'experiments'", "the list again")
    browser.execute_script("window.releaseLoops()")
    until(browser, "window.loopsSettled === true", "the held request done")
    # What the late page would do follows its request within a few tasks.
    browser.execute_async_script("const done = arguments[0]; setTimeout(() => setTimeout(done, 300), 0)")
    assert browser.execute_script("return location.hash") == "#/"
    assert find(browser, "#app h1").text == "Experiments"
    assert browser.execute_script("return window.streams.filter((s) => s.readyState !== EventSource.CLOSED).length") == 0
