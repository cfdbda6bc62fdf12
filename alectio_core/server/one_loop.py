"""Platform mode over HTTP: the ``POST /one_loop`` route (the seed's protocol).

Named for its route, as :mod:`.api` is for ``/api``; the protocol itself
(the platform's bucket, the loop, the ``end_of_task`` callback) is
:mod:`alectio_core.platform_mode`, which needs no server.

Token-protected like every route. The loop runs as a job on the server's
runner and the answer is 202 at once; what happens next (the loop, the
results written to the platform's bucket, the ``end_of_task`` callback)
shows in the loop's state at the returned ``url``.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, url_for

from ..platform_mode import Platform
from .api import json_body

platform = Blueprint("platform", __name__)


def _platform() -> Platform:
    ctx = current_app.extensions["alectio"]
    if "platform" not in ctx:
        ctx["platform"] = Platform(ctx["engine"], ctx["config"], ctx["runner"].submit)
    return ctx["platform"]


@platform.post("/one_loop")
def one_loop():
    """Run loop ``cur_loop`` of a platform experiment in the background."""
    started = _platform().start(json_body(None))  # checked there, against ONE_LOOP_SCHEMA
    url = url_for("api.get_loop", experiment_id=started["experiment_id"], loop=started["loop"])
    return jsonify({**started, "url": url}), 202, {"Location": url}
