"""Restart safety over a real socket: ``alectio serve`` killed with SIGKILL in
the middle of a loop, started again on the same storage."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from server_support import Server, slow_model, wait_for  # noqa: F401 (fixtures)

from alectio_core.engine import Engine
from alectio_core.storage import open_storage

pytestmark = pytest.mark.slow


def loop_data(storage_url: str, eid: str, loop: int) -> dict:
    """Everything stored for one loop, read straight from storage."""
    store = open_storage(storage_url)
    engine = Engine(store)
    indices, values = engine.outputs(eid, loop)
    state = store.get_loop_state(eid, loop)
    return {
        "state": state,
        "selection": store.get_selection(eid, loop).tolist(),
        "results": engine.results(eid, loop),
        "outputs": (indices.tolist(), values.tolist()),
        "checkpoint": Path(store.fetch_checkpoint(eid, loop)).read_text(),
    }


def test_a_loop_interrupted_by_kill_9_is_failed_after_restart_and_runs_again(tmp_path, slow_model):
    storage = f"sqlite:///{tmp_path}/alectio.db"
    hold = tmp_path / "train.hold"
    lease = {"server": {"lease_seconds": 2}}  # the dead server's loop is interrupted 2 s after its last renewal
    first = Server(tmp_path, storage, "first", config=lease)
    try:
        # No token existed: serve made one and wrote it to a file only we can read.
        token = (tmp_path / "home" / "first-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{first.url}/api/v1/experiments", timeout=5).status_code == 401
        body = {"model": "slow_test", "initial": 20, "batch_size": 10, "loops": 3, "config": {"hold_file": str(hold)}}
        created = requests.post(f"{first.url}/api/v1/experiments", json=body, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        eid = created.json()["id"]
        loop_url = lambda k: f"{first.url}/api/v1/experiments/{eid}/loops/{k}"  # noqa: E731

        assert requests.post(f"{first.url}/api/v1/experiments/{eid}/loops", headers=headers, timeout=5).status_code == 202
        wait_for(lambda: requests.get(loop_url(0), headers=headers, timeout=5).json()["status"] == "done", what="loop 0")
        before = loop_data(storage, eid, 0)

        hold.touch()  # loop 1's train blocks: it is mid-loop when the server dies
        started = requests.post(f"{first.url}/api/v1/experiments/{eid}/loops", headers=headers, timeout=5)
        assert started.status_code == 202 and started.json()["loop"] == 1
        wait_for(lambda: requests.get(loop_url(1), headers=headers, timeout=5).json()["stage"] == "train", what="loop 1 train")
        first.kill9()
    finally:
        first.stop()

    second = Server(tmp_path, storage, "second", config=lease)
    try:
        assert "first-token" not in second.log()  # a token exists: none is made
        loop_url = lambda k: f"{second.url}/api/v1/experiments/{eid}/loops/{k}"  # noqa: E731
        state = wait_for(
            lambda: (s := requests.get(loop_url(1), headers=headers, timeout=5).json())["status"] != "running" and s,
            what="the dead server's lease to expire",
        )
        assert state["status"] == "failed"
        assert state["error"] == "interrupted"
        assert loop_data(storage, eid, 0) == before  # the earlier loop is intact

        hold.unlink()
        again = requests.post(f"{second.url}/api/v1/experiments/{eid}/loops", headers=headers, timeout=5)
        assert again.status_code == 202 and again.json()["loop"] == 1
        wait_for(lambda: requests.get(loop_url(1), headers=headers, timeout=5).json()["status"] in ("done", "failed"), what="loop 1")
        state = requests.get(loop_url(1), headers=headers, timeout=5).json()
        assert state["status"] == "done", state
        assert state["labeled"] == 30
        assert loop_data(storage, eid, 0) == before
        curve = requests.get(f"{second.url}/api/v1/experiments/{eid}/metrics", headers=headers, timeout=5).json()["curve"]
        assert [p["loop"] for p in curve] == [0, 1]
        # Request and stage log lines, no token.
        log = second.log()
        assert f"GET /api/v1/experiments/{eid}/loops/1 200" in log
        assert f"experiment {eid} loop 1 stage train took" in log
        assert "interrupted" in log
        assert token.split(".")[1] not in log + first.log()
    finally:
        second.stop()


def test_sigterm_stops_the_server_and_cancels_its_loops(tmp_path, slow_model):
    storage = f"sqlite:///{tmp_path}/alectio.db"
    hold = tmp_path / "train.hold"
    hold.touch()
    server = Server(tmp_path, storage, "server")
    try:
        headers = {"Authorization": f"Bearer {(tmp_path / 'home' / 'first-token').read_text().strip()}"}
        body = {"model": "slow_test", "initial": 10, "config": {"hold_file": str(hold)}}
        eid = requests.post(f"{server.url}/api/v1/experiments", json=body, headers=headers, timeout=30).json()["id"]
        requests.post(f"{server.url}/api/v1/experiments/{eid}/loops", headers=headers, timeout=5)
        url = f"{server.url}/api/v1/experiments/{eid}/loops/0"
        wait_for(lambda: requests.get(url, headers=headers, timeout=5).json()["stage"] == "train", what="train")
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        hold.unlink()  # the loop notices the cancel once train returns
        assert server.process.wait(30) == 0
    finally:
        server.stop()
    assert open_storage(storage).get_loop_state(eid, 0)["status"] == "cancelled"
