"""The dashboard's server side over HTTP (Flask's test client): signing in and
out, the session cookie, CSRF, the security headers and the page's files.
The same in a real browser: tests/test_dashboard_security.py."""

from __future__ import annotations

import logging
import re

import pytest
from server_support import make_app, slow_model, wait_for  # noqa: F401 (a fixture)

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


def test_a_forged_or_tampered_cookie_is_refused(dash):
    client = dash.app.test_client()
    sign_in(client, dash.token)
    name, expires, nonce, signature = session_cookie(client).value.split(".")
    for forged in (
        f"{name}.{int(expires) + 10**6}.{nonce}.{signature}",  # a later expiry
        f"{name}.{expires}.{nonce}.{'0' * len(signature)}",
        f"{name}.{expires}.{nonce}",
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
