"""Several ``alectio serve`` processes on one storage (SQLite file, S3 prefix
on a moto server), and a storage that stops answering mid-loop: exactly one
process runs a loop, any answers its status, a loop is interrupted only
once its lease expired, and a failure the storage could not take is saved
when it answers again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from balancer import Balancer
from installer import with_path
from server_support import Api, Server, slow_model, wait_for  # noqa: F401 (fixtures)

from alectio_core.config import parse_config
from alectio_core.leases import live
from alectio_core.server import create_app
from alectio_core.storage import open_storage
from alectio_core.testing import MotoS3
from alectio_core.tokens import create_token

pytestmark = pytest.mark.slow

LEASE = {"server": {"lease_seconds": 4}}  # renewed every 1.3 s; a dead holder's loop is free 4 s later
SKEWED_CLOCK = Path(__file__).parent / "skewed_clock"  # its sitecustomize moves a process's clock


class Shared:
    """One storage for several processes: its URL, the environment a
    process needs to reach it, and what is stored for a loop."""

    def __init__(self, kind: str, tmp: Path):
        self.kind, self.tmp = kind, tmp
        self.moto = None
        if kind == "sqlite":
            self.url, self.env = f"sqlite:///{tmp}/alectio.db", {}
        else:
            self.moto = MotoS3().start()
            self.bucket = self.moto.create_bucket()
            self.url, self.env = f"s3://{self.bucket}/shared", dict(self.moto.env)
        self.config = tmp / "lease.yaml"
        self.config.write_text(json.dumps(LEASE))

    def process_env(self, name: str) -> dict:
        """Each process is its own machine: its own checkpoint cache."""
        return {**self.env, "ALECTIO_CACHE_DIR": str(self.tmp / f"cache-{name}")}

    def server(self, name: str) -> Server:
        return Server(self.tmp, self.url, name, config=LEASE, env=self.process_env(name))

    def open(self):
        return open_storage(self.url, {"cache_dir": str(self.tmp / "cache-test")} if self.moto else None)

    def attempts(self, eid: str, loop: int) -> tuple[str, set[str]]:
        """The committed attempt of a loop, and every attempt with anything stored."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.tmp / "alectio.db")
            try:
                committed = db.execute("SELECT committed_attempt FROM loops WHERE experiment_id = ? AND loop = ?", (eid, loop)).fetchone()[0]
                found = {
                    r[0]
                    for table in ("results", "output_chunks")
                    for r in db.execute(f"SELECT attempt FROM {table} WHERE experiment_id = ? AND loop = ?", (eid, loop))
                }
            finally:
                db.close()
            return committed, found
        prefix = f"shared/experiments/{eid}/loops/{loop}/"
        client = self.moto.client()
        committed = json.loads(client.get_object(Bucket=self.bucket, Key=prefix + "loop.json")["Body"].read())["committed"]
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "attempts/") for o in page.get("Contents", [])]
        return committed, {k[len(prefix + "attempts/") :].split("/")[0] for k in keys}

    def close(self) -> None:
        if self.moto is not None:
            self.moto.stop()


@pytest.fixture(params=["sqlite", "s3"])
def shared(request, tmp_path, monkeypatch):
    made = Shared(request.param, tmp_path)
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    yield made
    made.close()


class Client:
    def __init__(self, server: Server | Balancer, token: str):
        self.url, self.headers = server.url, {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **kw):
        return requests.get(self.url + path, headers=self.headers, timeout=30, **kw)

    def post(self, path: str, **kw):
        return requests.post(self.url + path, headers=self.headers, timeout=30, **kw)

    def loop(self, eid: str, loop: int) -> dict:
        response = requests.get(f"{self.url}/api/v1/experiments/{eid}/loops/{loop}", headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def start(self, eid: str):
        return self.post(f"/api/v1/experiments/{eid}/loops")

    def until(self, eid: str, loop: int, check, what: str) -> dict:
        def reached():
            response = requests.get(f"{self.url}/api/v1/experiments/{eid}/loops/{loop}", headers=self.headers, timeout=30)
            return response.status_code == 200 and check(response.json()) and response.json()

        return wait_for(reached, timeout=90, interval=0.1, what=what)


def resume(shared: Shared, eid: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alectio_core", "run", "slow_test", "--resume", eid, "--storage", shared.url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=shared.tmp,
        env={**os.environ, **shared.process_env("cli"), "ALECTIO_CONFIG": str(shared.config), "ALECTIO_LOAD_PLUGINS": "slow_test"},
    )


def test_servers_sharing_a_storage_run_each_loop_once(shared, slow_model, tmp_path):
    store = shared.open()
    token = create_token(store, "tests")
    hold = tmp_path / "train.hold"
    hold.touch()
    a, b = shared.server("a"), None
    try:
        A = Client(a, token)
        body = {"model": "slow_test", "initial": 20, "batch_size": 10, "loops": 3, "config": {"hold_file": str(hold)}}
        created = A.post("/api/v1/experiments", json=body)
        assert created.status_code == 201, created.text
        eid = created.json()["id"]

        # A runs loop 0; B, started meanwhile, leaves it alone, answers its
        # status and refuses to run it too.
        assert A.start(eid).status_code == 202
        A.until(eid, 0, lambda s: s["stage"] == "train", "loop 0 in train")
        b = shared.server("b")
        B = Client(b, token)
        state = B.until(eid, 0, lambda s: s["stage"] == "train", "loop 0 in train, seen from B")
        assert state["status"] == "running" and f":{a.process.pid}:" in state["owner"]
        refused = B.start(eid)
        assert refused.status_code == 409
        message = refused.json()["error"]["message"]
        assert message.startswith(f"loop 0 of experiment {eid!r} is running on another server (") and f":{a.process.pid}:" in message
        assert A.start(eid).status_code == 409  # and A, of course

        # Cancel through B: A sees the request at its next renewal and stops.
        cancelled = B.post(f"/api/v1/experiments/{eid}/loops/0/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
        hold.unlink()  # train returns; the next stage sees the cancel
        state = B.until(eid, 0, lambda s: s["status"] != "running", "loop 0 to stop")
        assert state["status"] == "cancelled" and "cancelled" in state["error"]

        # A dies mid-loop (kill -9): its loop is running until its lease
        # expires, then interrupted; B runs it again and only B's attempt is stored.
        hold.touch()
        assert A.start(eid).status_code == 202
        B.until(eid, 0, lambda s: s["stage"] == "train", "loop 0 in train again")
        a.kill9()
        assert B.start(eid).status_code == 409  # the lease outlives the process by up to its time to live
        state = B.until(eid, 0, lambda s: s["status"] != "running", "A's lease to expire")
        assert (state["status"], state["error"]) == ("failed", "interrupted")
        hold.unlink()
        assert B.start(eid).status_code == 202
        state = B.until(eid, 0, lambda s: s["status"] in ("done", "failed", "cancelled"), "loop 0 on B")
        assert state["status"] == "done" and state["labeled"] == 20 and f":{b.process.pid}:" in state["owner"]
        committed, stored = shared.attempts(eid, 0)
        assert stored == {committed}

        # `alectio run --resume` next to the server holding loop 1: one line, exit 1, nothing changed.
        hold.touch()
        assert B.start(eid).status_code == 202
        B.until(eid, 1, lambda s: s["stage"] == "train", "loop 1 in train")
        before = store.get_loop_state(eid, 1), store.get_selection(eid, 1).tolist()
        result = resume(shared, eid)
        assert result.returncode == 1, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"Error: loop 1 of experiment {eid!r} is running on another server (") and f":{b.process.pid}:" in last
        assert "--resume" not in last
        assert (store.get_loop_state(eid, 1), store.get_selection(eid, 1).tolist()) == before
        hold.unlink()
        assert B.until(eid, 1, lambda s: s["status"] != "running", "loop 1 on B")["status"] == "done"

        # B stalls (SIGSTOP) in loop 2's train past its lease; `alectio run
        # --resume` takes the loop over and commits it; B, woken, must not commit.
        hold.touch()
        assert B.start(eid).status_code == 202
        B.until(eid, 2, lambda s: s["stage"] == "train", "loop 2 in train")
        b.process.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: not live(store.read_lease(eid, 2)[0]), timeout=60, interval=0.1, what="B's lease to expire")
            hold.unlink()
            result = resume(shared, eid)
            assert result.returncode == 0, result.stderr
            taken = store.get_loop_state(eid, 2)
            assert taken["status"] == "done" and ":" in taken["owner"] and f":{b.process.pid}:" not in taken["owner"]
        finally:
            b.process.send_signal(signal.SIGCONT)
        wait_for(lambda: f"experiment {eid} loop 2 job ended" in b.log(), what="B's loop 2 job to end")
        assert "lost its lease" in b.log() or "not renewed" in b.log()
        assert store.get_loop_state(eid, 2) == taken
        assert B.loop(eid, 2)["status"] == "done"
        committed, stored = shared.attempts(eid, 2)
        assert committed == taken["attempt"] and stored <= {committed}
    finally:
        a.stop()
        if b is not None:
            b.stop()
        store.close()


def test_a_failure_the_storage_could_not_take_is_saved_when_it_answers(slow_model, tmp_path, monkeypatch):
    """S3 stops answering mid-loop: the loop stops; once S3 is back, its
    status is failed with the storage's error (never ``running``), stored
    so, and the loop can run again."""
    moto = MotoS3().start()
    try:
        for key, value in moto.env.items():
            monkeypatch.setenv(key, value)
        url = f"s3://{moto.create_bucket()}/outage"
        options = {"max_attempts": 2, "connect_timeout": 1, "read_timeout": 2, "cache_dir": str(tmp_path / "cache")}
        app = create_app(parse_config({"server": {"lease_seconds": 2}}, "test"), storage=open_storage(url, options))
        api = Api(app, create_token(app.extensions["alectio"]["storage"], "tests"))
        hold = tmp_path / "train.hold"
        hold.touch()
        eid = api.create(initial=20, loops=2, config={"hold_file": str(hold)})["id"]
        assert api.start(eid).status_code == 202
        wait_for(lambda: api.loop(eid, 0)["stage"] == "train", what="loop 0 in train")

        moto.stop()
        hold.unlink()  # train returns into a storage that does not answer
        down = wait_for(lambda: (r := api.get(f"/api/v1/experiments/{eid}/loops/0")).status_code != 200 and r, what="a storage error")
        assert down.status_code == 503 and down.json["error"]["code"] == "storage_error"
        wait_for(lambda: api.app.extensions["alectio"]["runner"].active(eid) is None, what="the loop's job to end")

        moto.start()  # same port, same data
        state = api.loop(eid, 0)
        assert state["status"] == "failed" and "could not connect to S3 endpoint" in state["error"], state
        stored = wait_for(lambda: (s := open_storage(url, options).get_loop_state(eid, 0))["status"] != "running" and s, what="the failure to be stored")
        assert (stored["status"], stored["error"]) == ("failed", state["error"])

        again = api.start(eid)
        assert again.status_code == 202, again.json
        assert api.wait_status(eid, 0)["status"] == "done"
    finally:
        if "app" in locals():
            app.extensions["alectio"]["runner"].shutdown(timeout=5)
        moto.stop()


@pytest.mark.parametrize("shared", ["s3"], indirect=True)
def test_servers_behind_a_load_balancer_look_like_one(shared, slow_model, tmp_path):
    """The user's view of N servers on one S3 prefix: the client only talks
    to a round-robin TCP balancer in front of two ``alectio serve``
    processes, never to a server by name."""
    store = shared.open()
    token = create_token(store, "tests")
    hold = tmp_path / "train.hold"
    hold.touch()
    servers = [shared.server("a"), shared.server("b")]
    balancer = Balancer([("127.0.0.1", s.port) for s in servers])
    try:
        lb = Client(balancer, token)
        body = {"model": "slow_test", "initial": 20, "batch_size": 10, "loops": 3, "config": {"hold_file": str(hold)}}
        created = lb.post("/api/v1/experiments", json=body)
        assert created.status_code == 201, created.text
        eid = created.json()["id"]

        # Started through the balancer, loop 0 runs on one server; polls
        # land on both and agree; a second start is refused wherever it lands.
        assert lb.start(eid).status_code == 202
        lb.until(eid, 0, lambda s: s["stage"] == "train", "loop 0 in train")
        first = len(balancer.served)
        seen = [lb.loop(eid, 0) for _ in range(6)]
        assert set(balancer.served[first:]) == {0, 1}
        keys = ("status", "stage", "owner", "started_at", "progress")
        assert all({k: s[k] for k in keys} == {k: seen[0][k] for k in keys} for s in seen)
        assert seen[0]["status"] == "running"
        running = [s for s in servers if f":{s.process.pid}:" in seen[0]["owner"]]
        assert len(running) == 1
        running, survivor = running[0], next(s for s in servers if s is not running[0])
        refusals = [lb.start(eid) for _ in range(2)]  # one lands on each server
        assert [r.status_code for r in refusals] == [409, 409]
        messages = sorted(r.json()["error"]["message"] for r in refusals)
        assert messages[0] == f"experiment {eid!r} is busy: loop 0 is running"  # the server running it
        assert messages[1].startswith(f"loop 0 of experiment {eid!r} is running on another server (")
        assert f"experiment {eid} loop 0" not in survivor.log()

        # The running server dies (kill -9): through the balancer the loop
        # reads running until its lease expires, then interrupted; a start
        # reruns it on the survivor, which commits only its own attempt.
        running.kill9()
        state = lb.until(eid, 0, lambda s: s["status"] != "running", "the dead server's lease to expire")
        assert (state["status"], state["error"]) == ("failed", "interrupted")
        hold.unlink()
        assert lb.start(eid).status_code == 202
        state = lb.until(eid, 0, lambda s: s["status"] in ("done", "failed", "cancelled"), "loop 0 rerun")
        assert state["status"] == "done" and state["labeled"] == 20 and f":{survivor.process.pid}:" in state["owner"]
        committed, stored = shared.attempts(eid, 0)
        assert stored == {committed} and committed == store.get_loop_state(eid, 0)["attempt"]

        # The experiment goes on to its end through the balancer.
        for loop in (1, 2):
            assert lb.start(eid).status_code == 202
            state = lb.until(eid, loop, lambda s: s["status"] in ("done", "failed", "cancelled"), f"loop {loop}")
            assert (state["status"], state["labeled"]) == ("done", 20 + 10 * loop)
        assert lb.get(f"/api/v1/experiments/{eid}").json()["loops_done"] == 3
        assert lb.start(eid).status_code == 409
    finally:
        balancer.close()
        for server in servers:
            server.stop()
        store.close()


@pytest.mark.parametrize("shared", ["s3"], indirect=True)
def test_relabels_on_two_servers_keep_the_order_people_sent_them_in(shared, slow_model, tmp_path):
    """Two people correct one record through two servers whose clocks
    disagree by 30 s: the later correction is the record's label, whichever
    server took it and whichever server is asked."""
    store = shared.open()
    token = create_token(store, "tests")
    fast_env = {**shared.process_env("fast"), "ALECTIO_TEST_CLOCK_SKEW": "30", "PYTHONPATH": with_path(SKEWED_CLOCK)["PYTHONPATH"]}
    fast = Server(shared.tmp, shared.url, "fast", config=LEASE, env=fast_env)
    right = shared.server("right")
    try:
        Fast, Right = Client(fast, token), Client(right, token)
        dates = [parsedate_to_datetime(c.get("/health").headers["Date"]) for c in (Fast, Right)]
        assert (dates[0] - dates[1]).total_seconds() >= 25  # the fast server's clock really is ahead
        created = Fast.post("/api/v1/experiments", json={"model": "slow_test", "labels": "alectio", "initial": 4, "loops": 2})
        assert created.status_code == 201, created.text
        eid = created.json()["id"]
        index = Right.get(f"/api/v1/experiments/{eid}/loops/0/selection").json()["rows"][0]["index"]

        sent = [(Fast, "odd"), (Right, "even"), (Fast, "odd"), (Right, "even")]
        for client, label in sent:
            assert client.post(f"/api/v1/experiments/{eid}/labels", json={"labels": {str(index): label}}).status_code == 200
        for client in (Fast, Right):
            history = client.get(f"/api/v1/experiments/{eid}/labels?history=1").json()["labels"]
            assert [e["label"] for e in history if e["index"] == index] == [1, 0, 1, 0]
            latest = client.get(f"/api/v1/experiments/{eid}/labels").json()["labels"]
            assert [e["label"] for e in latest if e["index"] == index] == [0]
    finally:
        fast.stop()
        right.stop()
        store.close()
