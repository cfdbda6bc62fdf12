"""Bearer-token authentication for every endpoint except ``GET /health``.

Runs before routing errors are raised, so an unknown route asked without a
token is a 401 too (the API's shape is not disclosed to strangers).
"""

from __future__ import annotations

from flask import Flask, g, request

from ..errors import UnauthorizedError
from ..tokens import TokenVerifier

PUBLIC_ENDPOINTS = {"api.health"}


def init_auth(app: Flask, verifier: TokenVerifier) -> None:
    from . import error_response

    def unauthorized(message: str):
        response = error_response("unauthorized", message, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="alectio"'
        return response

    @app.before_request
    def require_token():
        if request.endpoint in PUBLIC_ENDPOINTS and request.method in ("GET", "HEAD"):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
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
        return None
