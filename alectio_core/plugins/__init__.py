"""Plugin discovery, the registry of what plugins contribute, and the models.

Nothing is imported at import time: ``load_plugins()`` runs on first use and
is idempotent. Two entry-point groups are read:

* ``alectio.models``: one model per entry point, its name is the model's
  name; each model gets a plugin manager of its own.
* ``alectio.plugins``: everything else, all on one plugin manager.

A plugin that fails to import or to validate, or whose contribution hook
fails, is recorded in ``registry.errors`` with its name and distribution and
skipped; the rest keeps working (``alectio plugins`` shows the error).

Environment:
``ALECTIO_LOAD_PLUGINS=a,b`` loads only the named third-party entry points
(built-ins from the ``alectio`` distribution always load);
``ALECTIO_TRACE_PLUGINS=1`` logs every hook call of every plugin manager.

The modules: ``manager`` (making plugin managers, tracing, calling a hook
plugin by plugin), ``checks`` (pluggy's refusals in our words), ``loading``
(entry points, ``load_plugins``, models by name), ``registry`` (what was
found), ``contributions`` (strategies, metrics, storage, stopping criteria
by name; listeners),
``model`` (calling a model's hooks), ``report`` (``alectio plugins``).
"""

from __future__ import annotations

from .contributions import (
    get_executors,
    get_labellers,
    get_metrics,
    get_metrics_function,
    get_stopping_criteria,
    get_stopping_criterion,
    get_storage_factories,
    get_storage_factory,
    get_strategies,
    get_strategy,
    make_configured,
    notify,
    origin,
)
from .loading import get_model, get_models, load_plugins, model_names, register_model, register_plugin, reset_plugins
from .manager import ModelPluginManager, get_plugin_manager, make_plugin_manager
from .model import TASKS, Model
from .registry import BUILTIN_DISTRIBUTION, MODELS_GROUP, PLUGINS_GROUP, Registry
from .report import report

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "MODELS_GROUP",
    "PLUGINS_GROUP",
    "TASKS",
    "Model",
    "ModelPluginManager",
    "Registry",
    "get_executors",
    "get_labellers",
    "get_metrics",
    "get_metrics_function",
    "get_model",
    "get_models",
    "get_plugin_manager",
    "get_stopping_criteria",
    "get_stopping_criterion",
    "get_storage_factories",
    "get_storage_factory",
    "get_strategies",
    "get_strategy",
    "make_configured",
    "load_plugins",
    "make_plugin_manager",
    "model_names",
    "notify",
    "origin",
    "register_model",
    "register_plugin",
    "report",
    "reset_plugins",
]
