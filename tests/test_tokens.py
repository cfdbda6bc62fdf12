"""API tokens: the CLI, what storage keeps, and the server's checks."""

from __future__ import annotations

import hashlib
import json
import logging
import re

import pytest
from click.testing import CliRunner
from server_support import api, slow_model  # noqa: F401 (fixtures)

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


def test_storage_keeps_only_a_salted_hash(url):
    first, second = create(url, "a"), create(url, "b")
    records = {r["name"]: r for r in open_storage(url).list_tokens()}
    assert set(records) == {"a", "b"}
    for token, record in ((first, records["a"]), (second, records["b"])):
        secret = token.split(".", 1)[1]
        stored = json.dumps(record)
        assert token not in stored and secret not in stored
        assert record["hash"] != hashlib.sha256(secret.encode()).hexdigest()
        salt = bytes.fromhex(record["salt"])
        assert len(salt) >= 16
        p = record["params"]
        assert hashlib.scrypt(secret.encode(), salt=salt, n=p["n"], r=p["r"], p=p["p"], dklen=32).hex() == record["hash"]
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


def test_serve_creates_and_prints_a_token_only_when_none_exists(url, monkeypatch):
    served = []
    monkeypatch.setattr("waitress.serve", lambda app, **kw: served.append(app))
    first = run("serve", "--storage", url, "--port", "0")
    assert first.exit_code == 0, first.output
    token = first.stdout.splitlines()[-1]
    assert TOKEN.match(token) and token.startswith("default.")
    assert [t["name"] for t in open_storage(url).list_tokens()] == ["default"]
    client = served[0].test_client()
    assert client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    second = run("serve", "--storage", url, "--port", "0")
    assert second.exit_code == 0
    assert second.stdout == ""  # nothing printed: a token exists
    assert cli_module  # the serve command lives here


# -- the server's checks -----------------------------------------------------------


def _routes(app):
    for rule in app.url_map.iter_rules():
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


def test_a_verified_token_is_not_hashed_again(url, monkeypatch):
    store = open_storage(url)
    token = tokens.create_token(store, "fast")
    calls = []
    real = tokens._hash
    monkeypatch.setattr(tokens, "_hash", lambda *a: calls.append(1) or real(*a))
    verifier = tokens.TokenVerifier(store, cache_seconds=60)
    assert [verifier.verify(token) for _ in range(50)] == ["fast"] * 50
    assert len(calls) == 1
    assert verifier.verify(token + "x") is None
    assert verifier.verify("fast.nope") is None and verifier.verify("ghost.nope") is None
    assert verifier.verify("no-dot") is None and verifier.verify("") is None


def test_an_expired_cache_entry_rereads_storage_without_hashing(url, monkeypatch):
    store = open_storage(url)
    token = tokens.create_token(store, "t")
    verifier = tokens.TokenVerifier(store, cache_seconds=0)
    assert verifier.verify(token) == "t"
    monkeypatch.setattr(tokens, "_hash", lambda *a: pytest.fail("hashed again"))
    assert verifier.verify(token) == "t"
    tokens.revoke_token(store, "t")
    assert verifier.verify(token) is None


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
