"""``GET /api/v1/experiments/ID/events``: an experiment's changes as
server-sent events, for the dashboard.

The stream reads the loop states from storage (not from this server's
jobs), so it reports loops any server sharing the storage runs. It sends
``event: loop`` (the body of ``GET .../loops/K``) whenever a loop's state
changes and ``event: experiment`` (the body of ``GET .../ID``) when the
experiment's does; the current state of both first. A ``: keepalive``
comment goes out after ``KEEPALIVE_SECONDS`` of quiet, which is also how a
closed browser tab is noticed. After ``server.events_seconds`` the stream
ends with ``retry: 1000``, so the browser reconnects within a second and
no waitress thread is held for ever; a server that stops ends its streams
the same way at once, and so does a sign-out or a revoke of what the
stream was opened with (the reconnect is then refused).

waitress sends what the app yields at once (``send_bytes`` is 1 since
waitress 3.0), so each event reaches the browser when it is written.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

from flask import Blueprint, Response, current_app, stream_with_context

from ..errors import NotFoundError
from .api import _experiment, _experiment_view, _loop_view
from .auth import still_authorized

events = Blueprint("events", __name__)

#: How often storage is read for changes.
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _event(name: str, body: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


@events.get("/api/v1/experiments/<experiment_id>/events")
def experiment_events(experiment_id: str):
    _experiment(experiment_id)  # 404 now, not inside a 200 stream
    seconds = current_app.extensions["alectio"]["config"].server.events_seconds
    changes = _changes(experiment_id, seconds, still_authorized())
    response = Response(stream_with_context(changes), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front (nginx) must not hold events back
    return response


def _changes(experiment_id: str, seconds: float, authorized: Callable[[], bool]) -> Iterator[str]:
    engine, stopping = current_app.extensions["alectio"]["engine"], current_app.extensions["alectio"]["stopping"]
    started = last_sent = time.monotonic()
    loops: dict[int, dict] = {}
    experiment = None
    while True:
        if not authorized():  # signed out or revoked: the reconnect gets the 401
            yield "retry: 1000\n\n"
            return
        try:
            changed = [view for view in map(_loop_view, engine.loop_states(experiment_id)) if loops.get(view["loop"]) != view]
            # The experiment's body changes only with its loops (loops done, latest metrics).
            latest = _experiment_view(engine.summary(engine.get_experiment(experiment_id))) if changed or experiment is None else experiment
        except NotFoundError:  # deleted: nothing more will change
            return
        out = [_event("loop", view) for view in changed]
        loops.update((view["loop"], view) for view in changed)
        if latest != experiment:
            experiment = latest
            out.append(_event("experiment", latest))
        t = time.monotonic()
        if out:
            last_sent = t
            yield "".join(out)
        elif t - last_sent >= KEEPALIVE_SECONDS:
            last_sent = t
            yield ": keepalive\n\n"
        if t - started >= seconds or stopping.wait(POLL_SECONDS):
            yield "retry: 1000\n\n"
            return
