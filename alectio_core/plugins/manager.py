"""Making plugin managers, tracing their calls, and calling a hook one plugin
at a time.

Every plugin manager alectio uses comes from :func:`make_plugin_manager`:
the shared one for ``alectio.plugins`` and one per model. With
``ALECTIO_TRACE_PLUGINS=1`` each of them logs every hook call (logger
``alectio_core.plugins.trace``), whatever the log level.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

import pluggy

from ..hookspecs import MODEL_HOOKS, PROJECT, ModelSpecs, PluginSpecs

trace_log = logging.getLogger("alectio_core.plugins.trace")


class ModelPluginManager(pluggy.PluginManager):
    """A plugin manager for exactly one model.

    Besides ``@hookimpl`` functions it accepts plain module-level functions
    named like a model hook, so a module written for the seed SDK
    (``def train(payload): ...``) works unchanged.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in MODEL_HOOKS and inspect.isfunction(getattr(plugin, name, None)):
            return {}
        return opts


def make_plugin_manager(specs: type, cls: type[pluggy.PluginManager] = pluggy.PluginManager) -> pluggy.PluginManager:
    """A plugin manager for ``specs``, traced when ``ALECTIO_TRACE_PLUGINS`` is set."""
    pm = cls(PROJECT)
    pm.add_hookspecs(specs)
    if os.environ.get("ALECTIO_TRACE_PLUGINS"):
        trace_log.setLevel(logging.INFO)
        pm.add_hookcall_monitoring(_before, _after)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager for ``alectio.plugins`` hooks, nothing loaded."""
    return make_plugin_manager(PluginSpecs)


def model_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager for one model's hooks."""
    return make_plugin_manager(ModelSpecs, ModelPluginManager)


def _trace(message: str) -> None:
    # The user asked for the trace: it shows whatever the log level, and on
    # stderr when nothing configured logging (``alectio plugins``, a script).
    if logging.getLogger().handlers:
        trace_log.info("%s", message)
    else:
        print(f"alectio trace: {message}", file=sys.stderr, flush=True)


def _names(impls: Sequence[pluggy.HookImpl]) -> str:
    return ", ".join(impl.plugin_name for impl in impls) or "no plugin"


def _before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    # Argument names only: values can be a million indices, or a writer.
    _trace(f"call {hook}({', '.join(kwargs)}) on {_names(impls)}")


def _after(outcome: pluggy.Result, hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    exc = outcome.exception
    ended = f"raised {type(exc).__name__}: {exc}" if exc is not None else "returned"
    _trace(f"{hook} on {_names(impls)} {ended}")


def each_plugin(pm: pluggy.PluginManager, hook: str) -> Iterator[tuple[str, pluggy.HookCaller]]:
    """``(plugin name, caller)`` for every plugin implementing ``hook``, in the
    order pluggy calls them (``tryfirst``, then the last registered first,
    ``trylast`` at the end); each caller reaches that plugin only.

    pluggy stops a hook call at the first implementation that raises, and
    offers no way to go on past it: one plugin per call, through
    ``subset_hook_caller``, is how a broken plugin is named and the others
    still heard.
    """
    impls = getattr(pm.hook, hook).get_hookimpls()
    seen: set[int] = set()
    for impl in reversed(impls):  # pluggy calls the end of this list first
        if id(impl.plugin) in seen:
            continue
        seen.add(id(impl.plugin))
        others = [other.plugin for other in impls if other.plugin is not impl.plugin]
        yield impl.plugin_name, pm.subset_hook_caller(hook, others)
