"""What ``alectio plugins`` prints: every plugin (with the names it provides),
model and load error."""

from __future__ import annotations

from .contributions import collect_all
from .loading import get_models, load_plugins
from .registry import MODELS_GROUP, PLUGINS_GROUP


def report() -> list[dict]:
    """One row per plugin and model, then one per error: a plugin that failed
    to load, or whose contribution hook failed (calling them all is how
    those failures show up here)."""
    registry = load_plugins()
    get_models()
    collect_all()
    rows = [dict(p, group=PLUGINS_GROUP, provides=registry.provided(p["name"])) for p in registry.plugins]
    for model in registry.models.values():
        rows.append(
            {
                "name": model.name,
                "kind": "model",
                "distribution": model.distribution,
                "version": model.version,
                "hooks": model.hooks,
                "group": MODELS_GROUP,
            }
        )
    for error in registry.errors:
        kind = "model" if error["group"] == MODELS_GROUP else "unknown"
        rows.append({"kind": kind, **error, "hooks": []})
    return rows
