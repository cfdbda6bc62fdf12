"""Authentication for every endpoint except ``GET /health`` and the dashboard's
own pages: a Bearer token, or the dashboard's session cookie.

Runs before routing errors are raised, so an unknown route asked without a
token is a 401 too (the API's shape is not disclosed to strangers).

A request authenticated by the cookie that changes something (POST, PUT,
PATCH, DELETE) must also carry the session's CSRF token in ``X-CSRF-Token``:
another site can make a browser send the cookie, but cannot read the page
the token is in. Bearer clients need none: no browser adds that header for
another site.
"""

from __future__ import annotations

from typing import Callable

from flask import Flask, g, request

from ..errors import UnauthorizedError
from ..tokens import TokenVerifier
from .sessions import COOKIE, Sessions, csrf_matches

PUBLIC_ENDPOINTS = {"api.health"}
#: The dashboard checks its sessions itself (``/`` shows the sign-in form without one).
DASHBOARD_ENDPOINTS = {"dashboard.index", "dashboard.signin_form", "dashboard.signin", "dashboard.signout", "dashboard.static_file"}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def init_auth(app: Flask, verifier: TokenVerifier, sessions: Sessions) -> None:
    from . import error_response

    def unauthorized(message: str):
        response = error_response("unauthorized", message, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="alectio"'
        return response

    @app.before_request
    def require_token():
        if request.endpoint in PUBLIC_ENDPOINTS and request.method in ("GET", "HEAD"):
            return None
        if request.endpoint in DASHBOARD_ENDPOINTS:
            return None
        header = request.headers.get("Authorization", "")
        if not header and COOKIE in request.cookies:
            return _session(sessions, unauthorized)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return unauthorized("send an API token as 'Authorization: Bearer TOKEN' (create one with 'alectio token create')")
        try:
            name = verifier.verify(token)
        except UnauthorizedError as exc:
            return unauthorized(exc.message)
        if name is None:
            return unauthorized("the API token is not valid (revoked, or mistyped)")
        g.token_name = name
        g.recheck = lambda: verifier.verify(token) is not None
        return None


def _session(sessions: Sessions, unauthorized):
    from . import error_response

    cookie = request.cookies.get(COOKIE)
    session = sessions.check(cookie)
    if session is None:
        return unauthorized("the dashboard session has expired or was ended: sign in again")
    g.token_name = session.token_name
    g.recheck = lambda: sessions.check(cookie) is not None
    if request.method not in SAFE_METHODS and not csrf_matches(session, request.headers.get("X-CSRF-Token")):
        return error_response("csrf", "this request needs the page's X-CSRF-Token header (a cross-site request is refused)", 403)
    return None


def still_authorized() -> Callable[[], bool]:
    """For a response that outlives its request (an event stream): whether
    the credentials this request was let in with are still good, so a
    sign-out or a revoke ends it (within the caches' 10 s, as elsewhere).
    ``require_token`` recorded how to ask, for the credential it checked."""
    recheck: Callable[[], bool] = g.recheck
    return recheck
