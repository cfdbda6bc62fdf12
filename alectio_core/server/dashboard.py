"""The dashboard: its pages and files, and signing in and out.

``GET /`` is the sign-in form without a session and the dashboard's shell
with one; the shell's script then talks to the JSON API with the session
cookie (see :mod:`.sessions` and :mod:`.auth`). Every response here carries
a Content-Security-Policy that allows only this origin's own files: no
inline script or style, nothing from elsewhere, no framing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, send_from_directory, url_for

from ..config import DEFAULT_STRATEGY
from ..errors import UnauthorizedError
from .sessions import COOKIE, Session, csrf_matches

FILES = Path(__file__).parent / "dashboard"
dashboard = Blueprint("dashboard", __name__, template_folder=str(FILES / "templates"))

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _sessions():
    return current_app.extensions["alectio"]["sessions"]


def _session() -> Session | None:
    session = _sessions().check(request.cookies.get(COOKIE))
    if session is not None:
        g.token_name = session.token_name  # the access log names the token
    return session


def _signin_page(error: str | None = None, status: int = 200):
    return render_template("signin.html", error=error), status


def _same_origin() -> bool:
    """Whether a form post comes from a page of this server. A browser says
    so itself in Sec-Fetch-Site, right behind a reverse proxy too (where the
    server sees another scheme and host than the browser). Older browsers
    send Origin with every POST (Referer as the fallback); a client that
    sends none of them is not a browser another site could drive."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    sent = request.headers.get("Origin") or request.headers.get("Referer")
    if sent is None:
        return True
    parts = urlsplit(sent)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.scheme}://{request.host}"


def _https() -> bool:
    """Whether the browser is on https: this server's own, or a TLS proxy's
    in front of it (the form's Origin says so)."""
    return request.is_secure or (request.headers.get("Origin") or "").startswith("https://")


CROSS_SITE = "refused: the form was sent from another site"


@dashboard.after_request
def security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static_file":
        response.headers["Cache-Control"] = "no-store"  # pages hold the CSRF token
    return response


@dashboard.get("/")
def index():
    session = _session()
    if session is None:
        return _signin_page()
    labeller = current_app.extensions["alectio"]["config"].labeller
    return render_template(
        "shell.html",
        csrf_token=session.csrf_token,
        token_name=session.token_name,
        auto_next=bool(labeller and labeller.auto_next),
        default_strategy=DEFAULT_STRATEGY,  # what the new-experiment form picks first
    )


@dashboard.get("/signin")
def signin_form():
    """A bookmark or the back button lands here by GET: the form is at ``/``."""
    return redirect(url_for("dashboard.index"), 303)


@dashboard.post("/signin")
def signin():
    if not _same_origin():
        return _signin_page(CROSS_SITE, 403)
    try:
        started = _sessions().start(request.form.get("token", "").strip())
    except UnauthorizedError as exc:  # a token made by an older alectio: say what to do
        return _signin_page(exc.message, 401)
    if started is None:
        return _signin_page("That token is not valid (revoked, or mistyped). Try again.", 401)
    cookie, session = started
    g.token_name = session.token_name
    response = redirect(url_for("dashboard.index"), 303)
    response.set_cookie(COOKIE, cookie, max_age=_sessions().seconds, path="/", httponly=True, samesite="Strict", secure=_https())
    return response


@dashboard.post("/signout")
def signout():
    if not _same_origin():
        return _signin_page(CROSS_SITE, 403)
    session = _session()
    if session is not None:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
        if not csrf_matches(session, sent):
            return _signin_page("refused: signing out needs the page's CSRF token", 403)
        _sessions().end(session)
    response = redirect(url_for("dashboard.index"), 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_https())
    return response


@dashboard.get("/static/<path:path>")
def static_file(path: str):
    """The page's files; revalidated by ETag on each load, so an upgrade
    shows at once and an unchanged file costs a 304."""
    response = send_from_directory(FILES / "static", path, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
