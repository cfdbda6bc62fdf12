"""The JSON API blueprint."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import plugins

api = Blueprint("api", __name__)


@api.get("/health")
def health():
    return jsonify({"status": "ok"})


@api.get("/api/v1/plugins")
def list_plugins():
    return jsonify({"plugins": plugins.report()})


@api.get("/api/v1/models")
def list_models():
    return jsonify(
        {
            "models": [
                {"name": m.name, "distribution": m.distribution, "version": m.version, "hooks": m.hooks}
                for m in sorted(plugins.get_models().values(), key=lambda m: m.name)
            ]
        }
    )
