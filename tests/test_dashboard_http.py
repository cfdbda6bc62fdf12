"""The dashboard's server side over HTTP (Flask's test client): signing in and
out, the session cookie, CSRF, the security headers and the page's files.
The same in a real browser: tests/test_dashboard_security.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sqlite3
import time

import boto3
import pytest
from server_support import Api, make_app, slow_model, wait_for  # noqa: F401 (a fixture)

from alectio_core.config import parse_config
from alectio_core.errors import ConfigError
from alectio_core.server import create_app
from alectio_core.tokens import create_token, revoke_token

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture
def dash(tmp_path, slow_model):
    made = make_app(tmp_path)
    yield made
    made.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def sign_in(client, token: str, **kw):
    return client.post("/signin", data={"token": token}, **kw)


def session_cookie(client):
    return client.get_cookie("alectio_session")


def csrf_of(client) -> str:
    """The CSRF token the signed-in page holds."""
    page = client.get("/").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)


def assert_security_headers(response):
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


# -- signing in ------------------------------------------------------------------


def test_without_a_session_the_page_is_the_sign_in_form(dash):
    response = dash.client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<form method="post" action="/signin"' in page
    assert re.findall(r"<input [^>]*name=\"(\w+)\"", page) == ["token"]
    assert "<script" not in page and "style=" not in page


def test_a_valid_token_starts_a_session_in_a_strict_httponly_cookie(dash):
    client = dash.app.test_client()
    response = sign_in(client, dash.token)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    header = response.headers["Set-Cookie"]
    assert header.startswith("alectio_session=")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert flags["httponly"] and flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/"
    assert flags["max-age"] == "Max-Age=43200"
    assert "secure" not in flags  # plain http here
    cookie = session_cookie(client).value
    assert dash.token.split(".")[1] not in cookie  # never the token's secret
    page = client.get("/").get_data(as_text=True)
    assert 'name="token"' not in page and 'name="csrf-token"' in page
    assert client.get("/api/v1/experiments").status_code == 200


def test_a_browser_landing_on_signin_by_get_is_sent_to_the_form(dash):
    """A bookmark or the back button opens /signin with GET: the browser is
    sent to the page (the form, or the dashboard when signed in), not shown
    the API's JSON 401."""
    client = dash.app.test_client()
    response = client.get("/signin")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert 'name="token"' in client.get("/signin", follow_redirects=True).get_data(as_text=True)
    sign_in(client, dash.token)
    page = client.get("/signin", follow_redirects=True).get_data(as_text=True)
    assert 'name="csrf-token"' in page and 'name="token"' not in page


def test_a_session_over_https_is_a_secure_cookie(dash):
    response = sign_in(dash.app.test_client(), dash.token, base_url="https://localhost")
    assert "Secure" in response.headers["Set-Cookie"].split("; ")


@pytest.mark.parametrize("token", ["", "nonsense", "tests.wrongsecret", "nosuchtoken.abcdef"])
def test_a_wrong_token_is_refused_with_the_form_and_a_message(dash, token):
    client = dash.app.test_client()
    response = sign_in(client, token)
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "That token is not valid" in page and 'name="token"' in page
    assert "Set-Cookie" not in response.headers
    assert client.get("/api/v1/experiments").status_code == 401


def test_using_the_dashboard_counts_as_using_the_token(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    dash.storage.touch_token("tests", "2000-01-01T00:00:00.000+00:00")
    dash.app.extensions["alectio"]["tokens"].TOUCH_INTERVAL = 0  # as if a minute had passed since the sign-in
    assert client.get("/api/v1/experiments").status_code == 200
    assert dash.storage.get_token("tests")["last_used"] > "2000-01-01T00:00:00.000+00:00"


def test_a_forged_or_tampered_cookie_is_refused(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    cookie = session_cookie(client).value
    flipped = "A" if cookie[0] != "A" else "B"
    for forged in (
        flipped + cookie[1:],
        cookie[:-1],
        cookie + "A",
        hashlib.sha256(cookie.encode()).hexdigest(),  # what storage holds
        f"tests.{int(time.time()) + 3600}.{'ab' * 16}.{'0' * 64}",  # a signed cookie, as sessions were before they were stored
        dash.token,
    ):
        other = dash.app.test_client()
        other.set_cookie("alectio_session", forged)
        response = other.get("/api/v1/experiments")
        assert response.status_code == 401, forged
        assert response.json["error"]["code"] == "unauthorized"
        assert 'name="token"' in other.get("/").get_data(as_text=True)


def test_revoking_the_token_ends_its_sessions(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    assert client.get("/api/v1/experiments").status_code == 200
    revoke_token(dash.storage, "tests")
    dash.app.extensions["alectio"]["tokens"].forget()  # the cache another process would let expire
    response = client.get("/api/v1/experiments")
    assert response.status_code == 401
    assert "sign in again" in response.json["error"]["message"]
    assert 'name="token"' in client.get("/").get_data(as_text=True)
    create_token(dash.storage, "tests")  # a new token of the same name does not bring the session back
    assert client.get("/api/v1/experiments").status_code == 401


def test_a_session_expires_after_session_seconds(tmp_path, slow_model):
    dash = make_app(tmp_path, session_seconds=1)
    client = dash.app.test_client()
    response = sign_in(client, dash.token)
    assert "Max-Age=1" in response.headers["Set-Cookie"]
    cookie = session_cookie(client).value
    # A client that keeps the cookie past Max-Age is refused all the same.
    stale = dash.app.test_client()
    stale.set_cookie("alectio_session", cookie)
    wait_for(lambda: stale.get("/api/v1/experiments").status_code == 401, timeout=10, what="the session to expire")
    assert 'name="token"' in stale.get("/").get_data(as_text=True)
    dash.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_another_server_on_the_same_storage_accepts_the_session(tmp_path, slow_model):
    first = make_app(tmp_path)
    second = create_app(parse_config({}, "test"), storage=f"sqlite:///{tmp_path}/alectio.db")
    try:
        client = first.app.test_client()
        sign_in(client, first.token)
        csrf = csrf_of(client)
        other = second.test_client()
        other.set_cookie("alectio_session", session_cookie(client).value)
        assert other.get("/api/v1/experiments").status_code == 200
        created = other.post("/api/v1/experiments", json={"model": "slow_test"}, headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.json
    finally:
        first.app.extensions["alectio"]["runner"].shutdown(timeout=5)
        second.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_signing_out_on_one_server_ends_the_session_on_another(tmp_path, slow_model):
    first = make_app(tmp_path)
    second = create_app(parse_config({}, "test"), storage=f"sqlite:///{tmp_path}/alectio.db")
    try:
        client = first.app.test_client()
        sign_in(client, first.token)
        other = second.test_client()
        other.set_cookie("alectio_session", session_cookie(client).value)
        assert other.get("/api/v1/experiments").status_code == 200
        assert client.post("/signout", data={"csrf_token": csrf_of(client)}).status_code == 303
        second.extensions["alectio"]["tokens"].cache_seconds = 0  # what it remembered, as if 10 s had passed
        assert other.get("/api/v1/experiments").status_code == 401
        assert 'name="token"' in other.get("/").get_data(as_text=True)
    finally:
        first.app.extensions["alectio"]["runner"].shutdown(timeout=5)
        second.extensions["alectio"]["runner"].shutdown(timeout=5)


def stored_bytes(storage_url: str, tmp_path) -> list[bytes]:
    """Everything a reader of the storage sees: every value of every row of
    the SQLite file, or every object under the S3 prefix, read directly."""
    if storage_url.startswith("sqlite:"):
        db = sqlite3.connect(tmp_path / "alectio.db")
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = [row for t in tables for row in db.execute(f"SELECT * FROM {t}")]
        finally:
            db.close()
        return [v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row]
    bucket, _, prefix = storage_url[len("s3://"):].partition("/")
    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    return [key.encode() for key in keys] + [s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys]


def cookies_from_storage(stored: list[bytes]) -> list[tuple[str, str]]:
    """What a reader of the storage could send, as (session cookie, CSRF
    token): a cookie and CSRF token signed with a stored token hash (how
    sessions were signed before they were stored), and every stored string that
    looks like a secret or a digest (with a CSRF token derived from it)."""
    forged = []
    for value in stored:
        try:
            record = json.loads(value)
        except (UnicodeDecodeError, ValueError):
            record = None
        if isinstance(record, dict) and "hash" in record and "name" in record:
            key = hmac.new(bytes.fromhex(record["hash"]), b"alectio dashboard session", hashlib.sha256).digest()
            nonce = "ab" * 16
            payload = f"{record['name']}.{int(time.time()) + 3600}.{nonce}"
            sign = lambda message: hmac.new(key, message.encode(), hashlib.sha256).hexdigest()  # noqa: E731
            forged.append((f"{payload}.{sign('session:' + payload)}", sign("csrf:" + nonce)))
    text = b" ".join(stored).decode("latin-1")
    for found in sorted(set(re.findall(r"[A-Za-z0-9_-]{32,}", text))):
        forged.append((found, hmac.new(found.encode(), b"csrf", hashlib.sha256).hexdigest()))
    return forged


@pytest.fixture(params=["sqlite", "s3"])
def dash_on(request, tmp_path, monkeypatch, slow_model):
    """A dashboard on a SQLite file, then on S3 (moto, over HTTP); its storage URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/alectio.db"
    else:
        server = request.getfixturevalue("moto_s3")
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ALECTIO_CACHE_DIR", str(tmp_path / "cache"))
        url = f"s3://{server.create_bucket()}/dash"
    app = create_app(parse_config({}, "test"), storage=url)
    yield Api(app, create_token(app.extensions["alectio"]["storage"], "tests")), url
    app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_a_session_cannot_be_made_from_what_storage_holds(dash_on, tmp_path):
    dash, url = dash_on
    client = dash.app.test_client()
    sign_in(client, dash.token)
    cookie, csrf = session_cookie(client).value, csrf_of(client)
    assert client.get("/api/v1/experiments").status_code == 200
    stored = stored_bytes(url, tmp_path)
    assert not any(cookie.encode() in value or csrf.encode() in value for value in stored)
    forged = cookies_from_storage(stored)
    assert len(forged) > 2
    for candidate, candidate_csrf in forged:
        other = dash.app.test_client()
        other.set_cookie("alectio_session", candidate)
        assert other.get("/api/v1/experiments").status_code == 401, candidate
        response = other.post("/api/v1/experiments", json={"model": "slow_test"}, headers={"X-CSRF-Token": candidate_csrf})
        assert response.status_code == 401, candidate
        assert 'name="token"' in other.get("/").get_data(as_text=True)
    assert dash.storage.list_experiments() == []


# -- CSRF and origins --------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "wrong", "x" * 64])
def test_a_cookie_authenticated_change_without_the_csrf_token_is_refused_and_stores_nothing(dash, header):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    headers = {} if header is None else {"X-CSRF-Token": header}
    response = client.post("/api/v1/experiments", json={"model": "slow_test"}, headers=headers)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "csrf"
    assert dash.storage.list_experiments() == []


def test_the_pages_csrf_token_lets_the_page_change_things(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    response = client.post("/api/v1/experiments", json={"model": "slow_test"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert response.status_code == 201, response.json
    assert [e["id"] for e in dash.storage.list_experiments()] == [response.json["id"]]


def test_bearer_clients_are_unchanged(dash):
    response = dash.post("/api/v1/experiments", json={"model": "slow_test"})  # no CSRF header, no cookie
    assert response.status_code == 201
    # A Bearer token wins over a stale cookie sent beside it.
    dash.client.set_cookie("alectio_session", "tests.1.x.y")
    assert dash.get("/api/v1/experiments").status_code == 200
    assert dash.client.get("/api/v1/experiments", headers={"Authorization": "Bearer tests.wrong"}).status_code == 401


@pytest.mark.parametrize("header", [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Referer": "http://evil.example/page"},
                                    {"Origin": "http://localhost:8080"}])
def test_sign_in_from_another_origin_is_refused(dash, header):
    client = dash.app.test_client()
    response = sign_in(client, dash.token, headers=header)
    assert response.status_code == 403
    assert "another site" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers


def test_sign_in_from_this_origin_is_accepted(dash):
    response = sign_in(dash.app.test_client(), dash.token, headers={"Origin": "http://localhost"})
    assert response.status_code == 303


def test_sign_in_behind_an_https_proxy_is_accepted_with_a_secure_cookie(dash):
    """README: serve it behind https (a reverse proxy). The browser then says
    https://the-public-name while the server sees http://127.0.0.1:8000; the
    browser's own Sec-Fetch-Site says whether the form is this site's."""
    headers = {"Origin": "https://alectio.example.com", "Sec-Fetch-Site": "same-origin"}
    response = sign_in(dash.app.test_client(), dash.token, headers=headers)
    assert response.status_code == 303, response.get_data(as_text=True)
    assert "Secure" in response.headers["Set-Cookie"].split("; ")


def test_a_browser_saying_cross_site_is_refused_whatever_the_origin_says(dash):
    response = sign_in(dash.app.test_client(), dash.token, headers={"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403 and "Set-Cookie" not in response.headers


def test_signing_out_needs_the_csrf_token_then_ends_the_session(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    cookie = session_cookie(client).value
    assert client.post("/signout").status_code == 403
    assert client.post("/signout", data={"csrf_token": "wrong"}).status_code == 403
    assert client.post("/signout", data={"csrf_token": csrf_of(client)}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/v1/experiments").status_code == 200  # still signed in
    response = client.post("/signout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert "alectio_session=;" in response.headers["Set-Cookie"]
    assert session_cookie(client) is None
    replayed = dash.app.test_client()
    replayed.set_cookie("alectio_session", cookie)  # a copy of the cookie kept from before
    assert replayed.get("/api/v1/experiments").status_code == 401
    assert dash.storage.get_session(hashlib.sha256(cookie.encode()).hexdigest()) is None  # deleted, not just refused


def test_signing_out_with_the_csrf_header(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    assert client.post("/signout", headers={"X-CSRF-Token": csrf_of(client)}).status_code == 303
    assert client.get("/api/v1/experiments").status_code == 401


def test_the_access_log_names_the_token_for_cookie_requests_and_never_shows_the_cookie(dash, caplog):
    client = dash.app.test_client()
    with caplog.at_level(logging.INFO, logger="alectio_core.server.access"):
        sign_in(client, dash.token)
        client.get("/api/v1/experiments")
    cookie = session_cookie(client).value
    lines = [r.getMessage() for r in caplog.records if r.name == "alectio_core.server.access"]
    assert any(line.startswith("GET /api/v1/experiments 200") and line.endswith("token=tests") for line in lines), lines
    assert any(line.startswith("POST /signin 303") and line.endswith("token=tests") for line in lines), lines
    text = caplog.text
    assert cookie not in text and cookie.split(".")[-1] not in text and dash.token not in text


# -- headers and files ---------------------------------------------------------------


def test_every_dashboard_response_carries_the_csp(dash):
    client = dash.app.test_client()
    responses = [client.get("/"), sign_in(client, "wrong"), sign_in(client, dash.token, headers={"Origin": "http://evil.example"})]
    responses += [sign_in(client, dash.token), client.get("/"), client.get("/static/app.js"), client.get("/static/app.css")]
    responses += [client.get("/static/no-such-file.js"), client.post("/signout")]
    responses += [client.post("/signout", data={"csrf_token": csrf_of(client)})]
    assert [r.status_code for r in responses] == [200, 401, 403, 303, 200, 200, 200, 404, 403, 303]
    for response in responses:
        assert_security_headers(response)
    assert responses[4].headers["Cache-Control"] == "no-store"  # the page holds the CSRF token


def test_the_pages_files_are_served_with_their_content_types_and_revalidated(dash):
    client = dash.app.test_client()
    js = client.get("/static/app.js")
    assert js.status_code == 200
    assert js.mimetype in ("text/javascript", "application/javascript")
    assert client.get("/static/app.css").mimetype == "text/css"
    assert js.headers["Cache-Control"] == "no-cache" and js.headers["ETag"]
    again = client.get("/static/app.js", headers={"If-None-Match": js.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    ["/static/../dashboard.py", "/static/..%2fdashboard.py", "/static/%2e%2e/%2e%2e/sessions.py", "/static/../templates/signin.html",
     "/static//etc/passwd", "/static/..\\..\\sessions.py", "/static/", "/static/."],
)
def test_a_path_out_of_the_static_folder_is_not_found(dash, path):
    response = dash.app.test_client().get(path)
    # 404; a path no route matches at all is an unknown route, 401 without a token
    assert response.status_code in (404, 401), path
    assert b"import" not in response.data and b"<form" not in response.data


@pytest.mark.parametrize("key", ["session_seconds", "events_seconds"])
@pytest.mark.parametrize("value", [0, -5])
def test_session_and_event_seconds_must_be_positive(key, value):
    with pytest.raises(ConfigError, match=f"key 'server.{key}' must be > 0"):
        parse_config({"server": {key: value}}, "config.yaml")


def test_the_shell_is_told_the_labellers_auto_next(tmp_path, slow_model):
    token_holder = {}
    for auto_next in (False, True):
        config = {"server": {}}
        app = create_app(parse_config(config, "test"), storage=f"sqlite:///{tmp_path}/a{auto_next}.db")
        token_holder[auto_next] = create_token(app.extensions["alectio"]["storage"], "tests")
        app.extensions["alectio"]["config"].labeller = (
            parse_config({"labeller": {"name": "any", "auto_next": True}}, "test").labeller if auto_next else None
        )
        client = app.test_client()
        sign_in(client, token_holder[auto_next])
        page = client.get("/").get_data(as_text=True)
        assert f'<meta name="auto-next" content="{"true" if auto_next else "false"}">' in page
        app.extensions["alectio"]["runner"].shutdown(timeout=5)
