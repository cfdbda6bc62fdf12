"""``GET /api/v1/experiments/ID/events``: server-sent events, through a real
``alectio serve`` (waitress) process, arriving while the loop runs."""

from __future__ import annotations

import json
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
