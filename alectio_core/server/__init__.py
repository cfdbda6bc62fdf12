"""The HTTP server: a Flask app factory and its blueprints.

``create_app`` builds everything from a :class:`~alectio_core.config.Config`
and a storage URL, so tests use the app's test client and ``alectio serve``
hands the same app to waitress.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..config import Config
from ..engine import Engine
from ..errors import AlectioError
from ..storage import open_storage

log = logging.getLogger(__name__)


def error_response(code: str, message: str, status: int):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def create_app(config: Config | None = None, storage=None) -> Flask:
    """Build the app. ``storage`` (a Storage or URL) overrides ``config.storage``."""
    config = config or Config()
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage or config.storage, config.storage_options)
    app = Flask("alectio")
    app.config["MAX_CONTENT_LENGTH"] = config.server.get("max_body_bytes")
    app.extensions["alectio"] = {"config": config, "storage": storage, "engine": Engine(storage, config)}

    from .api import api

    app.register_blueprint(api)

    @app.errorhandler(AlectioError)
    def domain_error(exc: AlectioError):
        return error_response(exc.code, exc.message, exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(code, exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response("internal_error", "internal server error; see the server log", 500)

    return app
