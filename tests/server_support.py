"""Fixtures and helpers shared by the server tests (``from server_support import ...``).

The ``slow_test`` model (``tests/packages/alectio-test-slow``) is
pip-installed for real, like a user's plugin (conftest's ``test_site``);
tests steer it through the experiment's ``config``: ``hold_file`` keeps a
loop in train while the file exists, ``infer_hold_file`` pauses infer after
its first chunk, ``train_seconds`` sleeps, ``fail_in`` makes a hook raise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from alectio_core.config import parse_config
from alectio_core.server import create_app
from alectio_core.tokens import create_token


@pytest.fixture(scope="session")
def slow_model(test_site):
    return "slow_test"


def wait_for(check, timeout: float = 60.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``check()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Api:
    """The app's test client with a token, and shortcuts for the loop API."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {token}"}

    @property
    def engine(self):
        return self.app.extensions["alectio"]["engine"]

    @property
    def storage(self):
        return self.app.extensions["alectio"]["storage"]

    def get(self, path, **kw):
        return self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def post(self, path, **kw):
        return self.client.post(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def create(self, model: str = "slow_test", **fields) -> dict:
        response = self.post("/api/v1/experiments", json={"model": model, **fields})
        assert response.status_code == 201, response.json
        return response.json

    def start(self, experiment_id: str, **body):
        return self.post(f"/api/v1/experiments/{experiment_id}/loops", json=body or None)

    def loop(self, experiment_id: str, loop: int) -> dict:
        response = self.get(f"/api/v1/experiments/{experiment_id}/loops/{loop}")
        assert response.status_code == 200, response.json
        return response.json

    def wait_status(self, experiment_id: str, loop: int, *statuses: str, timeout: float = 60.0) -> dict:
        statuses = statuses or ("done", "failed", "cancelled")

        def reached():
            state = self.loop(experiment_id, loop)
            return state if state["status"] in statuses else None

        return wait_for(reached, timeout, what=f"loop {loop} of {experiment_id} to be {'/'.join(statuses)}")


def make_app(tmp_path: Path, **server) -> Api:
    config = parse_config({"server": server}, "test")
    app = create_app(config, storage=f"sqlite:///{tmp_path}/alectio.db")
    return Api(app, create_token(app.extensions["alectio"]["storage"], "tests"))


@pytest.fixture
def api(tmp_path, slow_model):
    made = make_app(tmp_path)
    yield made
    made.app.extensions["alectio"]["runner"].shutdown(timeout=5)


@pytest.fixture
def hold(tmp_path):
    """``hold("name")`` creates a hold file and returns its path; every one
    is removed at teardown so no worker thread stays blocked."""
    made = []

    def make(name: str = "hold") -> str:
        path = tmp_path / f"{name}.hold"
        path.touch()
        made.append(path)
        return str(path)

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def release(path: str) -> None:
    Path(path).unlink()


def snapshot(db_path: Path) -> dict:
    """Every stored row of a SQLite backend (tokens without ``last_used``;
    no leases: which process last held a loop, like when a token was last
    used, is bookkeeping, not data)."""
    db = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        db.close()
    rows.pop("leases", None)
    rows["tokens"] = [(name, {k: v for k, v in json.loads(data).items() if k != "last_used"}) for name, data in rows.get("tokens", [])]
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m alectio_core serve`` as a child process."""

    def __init__(self, tmp: Path, storage: str, name: str, config: dict | None = None, env: dict | None = None):
        """``config``: a config.yaml for it (e.g. ``{"server": {"lease_seconds": 2}}``);
        ``env``: extra environment variables (S3 credentials, a cache folder)."""
        self.port = free_port()
        config_file = ""
        if config is not None:
            config_file = str(tmp / f"{name}.yaml")
            Path(config_file).write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout = open(tmp / f"{name}.out", "w+")
        self.stderr = open(tmp / f"{name}.err", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "alectio_core", "serve", "--port", str(self.port), "--storage", storage, "--log-level", "info"],
            stdout=self.stdout,
            stderr=self.stderr,
            cwd=tmp,
            env={
                **os.environ,
                "ALECTIO_CONFIG": config_file,
                "ALECTIO_LOAD_PLUGINS": "slow_test",
                "ALECTIO_HOME": str(tmp / "home"),  # a first token goes here, never to the user's home
                **(env or {}),
            },
        )
        wait_for(self._up, timeout=60, interval=0.1, what=f"server {name} to answer")

    def _up(self):
        if self.process.poll() is not None:
            raise AssertionError(f"server exited: {self.log()}")
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def output(self) -> str:
        return Path(self.stdout.name).read_text()

    def log(self) -> str:
        return Path(self.stderr.name).read_text()

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.stdout.close()
        self.stderr.close()
