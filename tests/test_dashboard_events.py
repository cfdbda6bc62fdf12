"""``GET /api/v1/experiments/ID/events``: server-sent events, through a real
``alectio serve`` (waitress) process, arriving while the loop runs."""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path

import pytest
import requests
from browser_support import start_dashboard
from server_support import make_app, release, slow_model, wait_for  # noqa: F401 (a fixture)


def read_events(response):
    """``(event, data)`` of a text/event-stream as it arrives; comments and
    ``retry:`` lines come as ``(":", text)`` and ``("retry", value)``."""
    name, data = None, []
    for line in response.iter_lines(chunk_size=1, decode_unicode=True):
        if line.startswith(":"):
            yield ":", line[1:].strip()
        elif line.startswith("retry:"):
            yield "retry", line.split(":", 1)[1].strip()
        elif line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif line == "" and name is not None:
            yield name, json.loads("\n".join(data))
            name, data = None, []


class Listener:
    """Reads a stream in a thread and keeps every event, so a test waits
    for one while it does other things."""

    def __init__(self, response):
        self.events: list[tuple[str, object]] = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self.thread.start()

    def _read(self, response):
        try:
            for event in read_events(response):
                self.events.append(event)
        except (requests.RequestException, AttributeError, ValueError):
            pass  # the test closed the stream (urllib3 then reads from None)
        finally:
            self.ended.set()

    def wait(self, test, what: str, timeout: float = 60.0):
        return wait_for(lambda: next((data for name, data in list(self.events) if test(name, data)), None), timeout, what=what)


@pytest.mark.slow
def test_events_arrive_through_waitress_while_the_loop_runs(tmp_path):
    dashboard = start_dashboard(tmp_path, config={"server": {"events_seconds": 120}})
    headers = {"Authorization": f"Bearer {dashboard.token}"}
    train_hold, infer_hold = tmp_path / "train.hold", tmp_path / "infer.hold"
    train_hold.touch()
    infer_hold.touch()
    try:
        body = {"model": "slow_test", "initial": 20, "batch_size": 10, "loops": 2,
                "config": {"hold_file": str(train_hold), "infer_hold_file": str(infer_hold), "pool_size": 140000}}
        experiment = requests.post(f"{dashboard.url}/api/v1/experiments", json=body, headers=headers, timeout=60).json()
        eid = experiment["id"]
        stream = requests.get(f"{dashboard.url}/api/v1/experiments/{eid}/events", headers=headers, stream=True, timeout=60)
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        listener = Listener(stream)
        first = listener.wait(lambda n, d: n == "experiment", "the experiment's current state")
        assert first["id"] == eid and first["loops_done"] == 0

        assert requests.post(f"{dashboard.url}/api/v1/experiments/{eid}/loops", headers=headers, timeout=30).status_code == 202
        # The loop cannot leave train while the hold file exists: this event came while it runs.
        running = listener.wait(lambda n, d: n == "loop" and d["status"] == "running" and d["stage"] == "train", "loop 0 in train")
        assert running["loop"] == 0 and running["url"] == f"/api/v1/experiments/{eid}/loops/0"
        release(str(train_hold))
        moving = listener.wait(
            lambda n, d: n == "loop" and d["stage"] == "infer" and (d["progress"] or {}).get("done", 0) > 0, "infer's progress"
        )
        assert moving["status"] == "running" and moving["progress"]["done"] < moving["progress"]["total"]
        assert not any(n == "loop" and d["status"] == "done" for n, d in listener.events)
        release(str(infer_hold))
        done = listener.wait(lambda n, d: n == "loop" and d["status"] == "done", "loop 0 done")
        assert done["metrics"]
        after = listener.wait(lambda n, d: n == "experiment" and d["loops_done"] == 1, "the experiment's loops done")
        assert after["latest_metrics"] == done["metrics"]
        # What the stream said is what the API says.
        assert requests.get(f"{dashboard.url}/api/v1/experiments/{eid}/loops/0", headers=headers, timeout=30).json() == done
        stream.close()
    finally:
        for hold in (train_hold, infer_hold):
            Path(hold).unlink(missing_ok=True)
        dashboard.server.stop()


def test_the_stream_ends_after_events_seconds_telling_the_browser_to_reconnect(tmp_path, slow_model):
    api = make_app(tmp_path, events_seconds=1)
    try:
        eid = api.create()["id"]
        response = api.get(f"/api/v1/experiments/{eid}/events", buffered=False)
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        text = b"".join(response.response).decode()  # returns only because the stream ends
        assert text.startswith("event: experiment\ndata: ")
        assert text.endswith("retry: 1000\n\n")
        body = json.loads(text.split("\n")[1][len("data: "):])
        assert body == api.get(f"/api/v1/experiments/{eid}").json
    finally:
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_events_of_an_unknown_experiment_are_a_404_and_need_a_token(tmp_path, slow_model):
    api = make_app(tmp_path)
    try:
        response = api.get("/api/v1/experiments/nosuch/events")
        assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
        eid = api.create()["id"]
        assert api.client.get(f"/api/v1/experiments/{eid}/events").status_code == 401
    finally:
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


@pytest.mark.slow
def test_a_stopping_server_ends_its_streams_so_browsers_reconnect(tmp_path):
    """SIGTERM: the open stream ends with ``retry: 1000`` (an EventSource
    reconnects, to another server behind a load balancer), and waitress is
    not left waiting for the stream's thread."""
    dashboard = start_dashboard(tmp_path)
    headers = {"Authorization": f"Bearer {dashboard.token}"}
    try:
        eid = requests.post(f"{dashboard.url}/api/v1/experiments", json={"model": "slow_test", "initial": 10, "config": {"pool_size": 30}},
                            headers=headers, timeout=60).json()["id"]
        stream = requests.get(f"{dashboard.url}/api/v1/experiments/{eid}/events", headers=headers, stream=True, timeout=60)
        listener = Listener(stream)
        listener.wait(lambda n, d: n == "experiment", "the experiment's current state")
        dashboard.server.process.send_signal(signal.SIGTERM)
        listener.ended.wait(60)
        assert listener.events[-1] == ("retry", "1000")
        assert dashboard.server.process.wait(60) == 0
        assert "still running" not in dashboard.server.log()
    finally:
        dashboard.server.stop()


def test_a_quiet_stream_sends_keepalive_comments(tmp_path, slow_model, monkeypatch):
    from alectio_core.server import events

    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.2)  # 15 s in the server; a test need not wait that long
    api = make_app(tmp_path, events_seconds=1)
    try:
        eid = api.create()["id"]
        text = b"".join(api.get(f"/api/v1/experiments/{eid}/events", buffered=False).response).decode()
        assert text.count("event: experiment") == 1  # nothing changed after the first state
        assert ": keepalive\n\n" in text
        assert text.endswith("retry: 1000\n\n")
    finally:
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def read_to_the_end(chunks, stopping) -> bytes:
    """The rest of a stream that must end by itself: should it run on (until
    events_seconds), the server's stop ends it after 30 s and the test fails."""
    safety_net = threading.Timer(30, stopping.set)
    safety_net.start()
    try:
        rest = b"".join(chunks)  # read here: the stream's request context lives in this thread
    finally:
        safety_net.cancel()
    assert not stopping.is_set(), "the stream ran on: the test's safety net ended it"
    return rest


def test_signing_out_ends_the_sessions_open_stream(tmp_path, slow_model):
    """A stream outlives its request: once the session is signed out it must
    stop sending the experiment's changes, not run on for events_seconds."""
    api = make_app(tmp_path, events_seconds=120)
    stopping = api.app.extensions["alectio"]["stopping"]
    try:
        eid = api.create()["id"]
        browser = api.app.test_client()
        assert browser.post("/signin", data={"token": api.token}).status_code == 303
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/").get_data(as_text=True)).group(1)
        chunks = iter(browser.get(f"/api/v1/experiments/{eid}/events", buffered=False).response)
        assert next(chunks).decode().startswith("event: experiment\n")
        assert browser.post("/signout", headers={"X-CSRF-Token": csrf}).status_code == 303

        rest = read_to_the_end(chunks, stopping)
        assert b"event:" not in rest and rest.endswith(b"retry: 1000\n\n")
        assert browser.get(f"/api/v1/experiments/{eid}/events").status_code == 401  # the reconnect is refused
    finally:
        stopping.set()
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_revoking_the_token_ends_its_open_stream(tmp_path, slow_model):
    from alectio_core.tokens import revoke_token

    api = make_app(tmp_path, events_seconds=120)
    api.app.extensions["alectio"]["tokens"].cache_seconds = 0  # this test need not wait out the 10 s cache
    stopping = api.app.extensions["alectio"]["stopping"]
    try:
        eid = api.create()["id"]
        chunks = iter(api.get(f"/api/v1/experiments/{eid}/events", buffered=False).response)
        assert next(chunks).decode().startswith("event: experiment\n")
        revoke_token(api.storage, "tests")
        assert read_to_the_end(chunks, stopping).endswith(b"retry: 1000\n\n")
    finally:
        stopping.set()
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)
