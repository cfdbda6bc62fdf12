"""API tokens: the CLI, what storage keeps, and the server's checks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys

import pytest
import requests
from click.testing import CliRunner
from server_support import api, free_port, slow_model, wait_for  # noqa: F401 (fixtures)

from alectio_core import cli as cli_module
from alectio_core import tokens
from alectio_core.cli import cli
from alectio_core.server import create_app
from alectio_core.storage import open_storage

TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{40,}$")


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path}/alectio.db"


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result


def create(url, name="ci"):
    result = run("token", "create", "--name", name, "--storage", url)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


# -- the CLI and what is stored --------------------------------------------------


def test_create_prints_the_token_alone_on_the_last_line(url):
    token = create(url)
    assert TOKEN.match(token)
    assert token.startswith("ci.")


def test_storage_keeps_only_a_keyed_hash(url):
    first, second = create(url, "a"), create(url, "b")
    records = {r["name"]: r for r in open_storage(url).list_tokens()}
    assert set(records) == {"a", "b"}
    for token, record in ((first, records["a"]), (second, records["b"])):
        secret = token.split(".", 1)[1]
        stored = json.dumps(record)
        assert token not in stored and secret not in stored
        assert record["algorithm"] == "hmac-sha256"
        key = bytes.fromhex(record["salt"])
        assert len(key) == 32
        assert hmac.new(key, secret.encode(), hashlib.sha256).hexdigest() == record["hash"]
    assert records["a"]["salt"] != records["b"]["salt"]


def test_list_shows_names_and_dates_never_tokens(url, tmp_path):
    token = create(url, "laptop")
    result = run("token", "list", "--storage", url)
    assert result.exit_code == 0
    assert "laptop" in result.output and "never" in result.output
    assert token not in result.output and token.split(".")[1] not in result.output
    app = create_app(storage=url)
    assert app.test_client().get("/api/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    rows = json.loads(run("token", "list", "--json", "--storage", url).output)
    assert [r["name"] for r in rows] == ["laptop"]
    assert set(rows[0]) == {"name", "created", "last_used"}
    assert rows[0]["last_used"] >= rows[0]["created"]


def test_revoke_removes_the_token(url):
    token = create(url, "old")
    app = create_app(storage=url)
    app.extensions["alectio"]["tokens"].cache_seconds = 0  # re-read storage on every request
    headers = {"Authorization": f"Bearer {token}"}
    assert app.test_client().get("/api/v1/experiments", headers=headers).status_code == 200
    result = run("token", "revoke", "old", "--storage", url)
    assert result.exit_code == 0 and "old" in result.output
    assert open_storage(url).list_tokens() == []
    response = app.test_client().get("/api/v1/experiments", headers=headers)
    assert response.status_code == 401


def test_token_errors_are_one_line_messages(url):
    create(url, "dup")
    again = run("token", "create", "--name", "dup", "--storage", url)
    assert again.exit_code == 1 and "dup" in again.output and "Traceback" not in again.output
    bad = run("token", "create", "--name", "has.dot", "--storage", url)
    assert bad.exit_code == 1 and "invalid token name" in bad.output
    unknown = run("token", "revoke", "ghost", "--storage", url)
    assert unknown.exit_code == 1 and "ghost" in unknown.output


def test_serve_writes_its_first_token_to_a_private_file_only_when_none_exists(url, tmp_path, monkeypatch):
    monkeypatch.setenv("ALECTIO_HOME", str(tmp_path / "home"))
    served = []
    monkeypatch.setattr("waitress.serve", lambda app, **kw: served.append(app))
    first = run("serve", "--storage", url, "--port", "0")
    assert first.exit_code == 0, first.output
    path = tmp_path / "home" / "first-token"
    token = path.read_text().strip()
    assert TOKEN.match(token) and token.startswith("default.")
    assert first.stdout == "" and token not in first.output and str(path) in first.output
    assert [t["name"] for t in open_storage(url).list_tokens()] == ["default"]
    client = served[0].test_client()
    assert client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    second = run("serve", "--storage", url, "--port", "0")
    assert second.exit_code == 0
    assert str(path) not in second.output  # a token exists: none is made
    assert path.read_text().strip() == token
    assert cli_module  # the serve command lives here


def test_serve_refuses_to_start_when_it_cannot_write_the_first_token(url, tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("ALECTIO_HOME", str(blocked))
    monkeypatch.setattr("waitress.serve", lambda app, **kw: pytest.fail("served without a usable token"))
    result = run("serve", "--storage", url, "--port", "0")
    assert result.exit_code == 1
    assert "cannot write the first API token" in result.output and "ALECTIO_HOME" in result.output
    assert "alectio token create" in result.output and "Traceback" not in result.output
    assert open_storage(url).list_tokens() == []  # nobody could know it: not kept


@pytest.mark.slow
def test_a_real_serve_never_prints_its_first_token(url, tmp_path, slow_model):
    home = tmp_path / "home"
    port = free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "alectio_core", "serve", "--port", str(port), "--storage", url, "--log-level", "debug"],
            stdout=stdout, stderr=stderr, cwd=tmp_path,
            env={**os.environ, "ALECTIO_CONFIG": "", "ALECTIO_HOME": str(home), "ALECTIO_LOAD_PLUGINS": "slow_test"},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(base, process), timeout=60, interval=0.1, what="the server to answer")
            path = home / "first-token"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            token = path.read_text().strip()
            assert TOKEN.match(token)
            headers = {"Authorization": f"Bearer {token}"}
            assert requests.get(f"{base}/api/v1/experiments", headers=headers, timeout=10).status_code == 200
            assert requests.get(f"{base}/api/v1/experiments", timeout=10).status_code == 401
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    printed = out.read_text() + err.read_text()
    secret = token.split(".")[1]
    assert secret not in printed
    assert str(path) in err.read_text()


def _answers(base, process):
    if process.poll() is not None:
        raise AssertionError("alectio serve exited early")
    try:
        return requests.get(f"{base}/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


# -- the server's checks -----------------------------------------------------------


def _routes(app):
    """The API's routes (the dashboard's pages answer without a token: the
    sign-in form; tests/test_dashboard_http.py checks them)."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard."):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = re.sub(r"<(?:int:)?([^>]+)>", lambda m: "0" if m.group(1) == "loop" else "abc", rule.rule)
            yield method, path


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer wrong", "Bearer tests.wrong"])
def test_every_endpoint_but_health_needs_a_valid_token(api, header):
    headers = {"Authorization": header} if header is not None else {}
    checked = 0
    for method, path in _routes(api.app):
        response = api.client.open(path, method=method, headers=headers)
        if path == "/health":
            assert response.status_code == 200
            continue
        assert response.status_code == 401, (method, path)
        assert response.json["error"]["code"] == "unauthorized"
        assert response.json["error"]["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 10
    assert api.client.get("/no/such/route", headers=headers).status_code == 401


def test_a_valid_token_with_another_secret_is_refused(api):
    name, secret = api.token.split(".")
    forged = f"{name}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert api.client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert api.get("/api/v1/experiments").status_code == 200
    assert api.client.get("/api/v1/experiments", headers={"Authorization": f"bearer {api.token}"}).status_code == 200


class CountingStorage:
    """The storage, counting token reads (a plain wrapper, nothing patched)."""

    def __init__(self, storage):
        self.storage, self.reads = storage, []

    def get_token(self, name):
        self.reads.append(name)
        return self.storage.get_token(name)

    def __getattr__(self, name):
        return getattr(self.storage, name)


def test_made_up_tokens_never_run_scrypt(url, monkeypatch):
    store = open_storage(url)
    token = tokens.create_token(store, "real")
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: pytest.fail("a token check ran scrypt"))
    verifier = tokens.TokenVerifier(store)
    secret = token.split(".")[1]
    made_up = ["ghost." + secret, "real." + secret[:-1] + ("A" if secret[-1] != "A" else "B"), "real.x", "nobody.abc"]
    assert [verifier.verify(t) for t in made_up] == [None] * 4
    assert verifier.verify(token) == "real"


def test_a_known_token_reads_its_record_once_per_cache_period(url):
    store = CountingStorage(open_storage(url))
    token = tokens.create_token(store.storage, "fast")
    verifier = tokens.TokenVerifier(store, cache_seconds=60)
    assert [verifier.verify(token) for _ in range(50)] == ["fast"] * 50
    assert store.reads == ["fast"]
    assert verifier.verify(token + "x") is None and verifier.verify("fast.nope") is None
    assert verifier.verify("ghost.nope") is None and verifier.verify("ghost.nope") is None
    assert store.reads == ["fast", "ghost", "ghost"]  # made-up names: one read by name each, never cached
    assert verifier.verify("no-dot") is None and verifier.verify("") is None


def test_an_expired_cache_entry_rereads_storage(url):
    store = open_storage(url)
    token = tokens.create_token(store, "t")
    verifier = tokens.TokenVerifier(store, cache_seconds=0)
    assert verifier.verify(token) == "t"
    tokens.revoke_token(store, "t")
    assert verifier.verify(token) is None


def test_a_token_made_by_0_1_0_is_refused_saying_to_make_a_new_one(url):
    # the record 0.1.0 stored: a scrypt hash of the secret
    secret, salt = "s" * 43, bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    old = {"name": "old", "algorithm": "scrypt", "params": {"n": 2**14, "r": 8, "p": 1}, "salt": salt.hex(),
           "hash": digest.hex(), "created": "2026-01-01T00:00:00", "last_used": None}
    open_storage(url).put_token(old)
    client = create_app(storage=url).test_client()
    response = client.get("/api/v1/experiments", headers={"Authorization": f"Bearer old.{secret}"})
    assert response.status_code == 401
    message = response.json["error"]["message"]
    assert "'old'" in message and "alectio token create" in message and "alectio token revoke old" in message
    assert secret not in message


# -- S3: one read by name, and no resurrection --------------------------------------


@pytest.fixture
def s3_url(moto_s3, monkeypatch, tmp_path):
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALECTIO_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://{moto_s3.create_bucket()}/team"


def _count_requests(store) -> list[str]:
    """Every HTTP request the storage's client sends, by operation."""
    sent: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda request, **kw: sent.append(request.method))
    store.client.meta.events.register("before-call.s3", lambda model, **kw: sent.append(model.name))
    return sent


def test_an_unknown_token_costs_one_s3_read(s3_url):
    store = open_storage(s3_url)
    for i in range(100):
        store.put_token({"name": f"t{i}", "algorithm": "hmac-sha256", "salt": "00" * 32, "hash": "00" * 32, "created": "x"})
    verifier = tokens.TokenVerifier(store)
    sent = _count_requests(store)
    assert verifier.verify("ghost." + "A" * 43) is None
    assert sent == ["GetObject", "GET"]  # one call, one request


def test_a_touch_racing_a_revoke_never_brings_the_token_back_on_s3(s3_url):
    store, other = open_storage(s3_url), open_storage(s3_url)
    token = tokens.create_token(store, "laptop")

    def revoke_first(**kw):  # another process revokes just before this one records a use
        if not revoked:
            revoked.append(1)
            tokens.revoke_token(other, "laptop")

    revoked: list[int] = []
    store.client.meta.events.register("before-call.s3.PutObject", revoke_first)
    assert tokens.TokenVerifier(store).verify(token) == "laptop"  # checked, then its use recorded
    assert revoked
    assert tokens.list_tokens(other) == [] and other.get_token("laptop") is None
    assert tokens.TokenVerifier(other).verify(token) is None


def test_tokens_never_reach_the_logs(url, caplog):
    caplog.set_level(logging.DEBUG)
    token = create(url, "secretive")
    app = create_app(storage=url)
    client = app.test_client()
    client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}"})
    client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}x"})
    client.get(f"/api/v1/{token}", headers={"Authorization": f"Bearer {token}"})
    secret = token.split(".")[1]
    messages = [r.getMessage() for r in caplog.records]
    assert any("GET /api/v1/experiments 200" in m for m in messages)
    assert not any(secret in m for m in messages)
