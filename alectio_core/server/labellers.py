"""The labeller's webhook: ``POST /api/v1/labellers/<name>/webhook``.

Protected by an API token like every endpoint (a labelling tool sends it
as a header it is configured with). Answers what was stored per experiment;
an annotation that could not be read is named under ``refused``.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..errors import NotFoundError
from .api import json_body

labellers = Blueprint("labellers", __name__)


@labellers.post("/api/v1/labellers/<name>/webhook")
def webhook(name: str):
    service = current_app.extensions["alectio"].get("labelling")
    if service is None or service.name != name:
        configured = f"the configured labeller is {service.name!r}" if service is not None else "no labeller is configured (labeller: in config.yaml)"
        raise NotFoundError(f"no labeller {name!r} here: {configured}")
    return jsonify({"labeller": name, "experiments": service.receive(json_body(None))})
