"""The HTTP server: a Flask app factory and its blueprints.

``create_app`` builds everything from a :class:`~alectio_core.config.Config`
and a storage URL, so tests use the app's test client and ``alectio serve``
hands the same app to waitress. Several servers may share one storage
(see :mod:`alectio_core.leases`): at start-up, loops left ``running`` by a
server whose lease expired are marked failed ("interrupted"); loops a live
server holds are left to it.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..config import Config
from ..engine import Engine
from ..errors import AlectioError
from ..jobs import JobRunner
from ..storage import open_storage
from ..tokens import TokenVerifier
from .sessions import Sessions

log = logging.getLogger(__name__)
access_log = logging.getLogger("alectio_core.server.access")
_SECRET = re.compile(r"\.[A-Za-z0-9_-]{40,}")  # the secret half of a token (name.secret)


#: What some errors carry besides their message (see the Error schema).
ERROR_FIELDS = ("missing", "problems", "field")


def error_response(code: str, message: str, status: int, **fields):
    response = jsonify({"error": {"code": code, "message": message, **fields}})
    response.status_code = status
    return response


def create_app(config: Config | None = None, storage=None, *, recover: bool = True) -> Flask:
    """Build the app. ``storage`` (a Storage or URL) overrides ``config.storage``.

    ``app.extensions["alectio"]`` holds the config, storage, engine, the
    loop ``runner`` (:class:`~alectio_core.jobs.JobRunner`), the token
    verifier, the dashboard's ``sessions`` and the ``labelling`` service (None without ``labeller:``);
    :func:`close_app` stops them.
    """
    config = config or Config()
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage or config.storage, config.storage_options)
    app = Flask("alectio", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    engine = Engine(storage, config)
    tokens = TokenVerifier(storage)
    if recover:
        engine.recover_interrupted()
    app.extensions["alectio"] = {
        "config": config,
        "storage": storage,
        "engine": engine,
        "runner": JobRunner(engine, workers=config.server.workers),
        "tokens": tokens,
        "sessions": Sessions(tokens, config.server.session_seconds),
        "labelling": _labelling(app, engine, config),
    }

    _request_log(app)
    from .auth import init_auth

    init_auth(app, tokens, app.extensions["alectio"]["sessions"])

    from .api import api
    from .dashboard import dashboard
    from .events import events
    from .labellers import labellers
    from .one_loop import platform

    app.register_blueprint(api)
    app.register_blueprint(labellers)
    app.register_blueprint(platform)
    app.register_blueprint(events)
    app.register_blueprint(dashboard)

    @app.errorhandler(AlectioError)
    def domain_error(exc: AlectioError):
        fields = {name: getattr(exc, name) for name in ERROR_FIELDS if getattr(exc, name, None) is not None}
        return error_response(exc.code, exc.message, exc.status, **fields)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(code, exc.description or exc.name, exc.code or 500)
        allowed = getattr(exc, "valid_methods", None)  # a 405 says what is allowed
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response("internal_error", "internal server error; see the server log", 500)

    return app


def _labelling(app: Flask, engine: Engine, config: Config):
    """The labelling service when ``labeller:`` is configured: told of every
    new selection, polling in the background (``close_app`` stops it)."""
    if config.labeller is None:
        return None
    from ..labelling import LabellingService, open_labeller
    from .api import queue_next_loop

    def start_loop(experiment_id: str) -> int:
        with app.app_context():  # the path POST .../loops takes
            return queue_next_loop(engine.get_experiment(experiment_id))

    service = LabellingService(engine, config.labeller, open_labeller(config), start_loop=start_loop)
    engine.on_selection.append(service.selection_made)
    service.start()
    return service


def close_app(app: Flask) -> None:
    """Stop what the app runs in the background: the labeller's poller, the loops."""
    labelling = app.extensions["alectio"].get("labelling")
    if labelling is not None:
        labelling.stop()
    app.extensions["alectio"]["runner"].shutdown()


def _request_log(app: Flask) -> None:
    """One line per request: method, path (no query string), status,
    duration, and the token's name (never the token)."""

    @app.before_request
    def started():
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        path = quote(request.path, safe="/:@!$&'()*+,;=-._~")  # no forged log lines
        path = _SECRET.sub(".[redacted]", path)  # a token pasted into a URL
        access_log.info(
            "%s %s %d %.1fms token=%s", request.method, path, response.status_code, elapsed, g.get("token_name", "-")
        )
        return response
