"""What ``load_plugins()`` found: models, plugins, load errors, and what the
plugins contribute through the ``register_*`` hooks."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

# The backport (a dependency) behaves the same on every Python we support.
import importlib_metadata as metadata

from .manager import each_plugin
from .model import Model

log = logging.getLogger("alectio_core.plugins")

MODELS_GROUP = "alectio.models"
PLUGINS_GROUP = "alectio.plugins"
BUILTIN_DISTRIBUTION = "alectio"

KIND_BY_HOOK = {
    "register_storage": "storage",
    "register_strategies": "strategy",
    "register_metrics": "metrics",
    "register_stopping": "stopping",
    "register_labellers": "labeller",
    "register_executors": "executor",
    "loop_started": "listener",
    "stage_started": "listener",
    "loop_finished": "listener",
}

#: What ``alectio plugins`` lists under a plugin's ``provides``: the names it
#: registered in each contribution hook.
PROVIDES_BY_HOOK = {
    "register_storage": "storage",  # URL schemes
    "register_strategies": "strategies",
    "register_metrics": "metrics",  # task types
    "register_stopping": "stopping",
    "register_labellers": "labellers",
    "register_executors": "executors",
}


class BadRegistration(Exception):
    """A plugin called ``register`` with something it does not take."""


@dataclass
class Registry:
    """Everything ``load_plugins()`` found."""

    pm: pluggy.PluginManager
    models: dict[str, Model] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    plugins: list[dict] = field(default_factory=list)
    # Model entry points not imported yet: a model's module (and its torch or
    # sklearn) is imported when that model is first asked for.
    pending_models: dict[str, metadata.EntryPoint] = field(default_factory=dict)
    _contributions: dict[str, dict] = field(default_factory=dict)
    _contributors: dict[str, dict[str, str]] = field(default_factory=dict)  # hook -> name -> plugin
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _model_locks: dict[str, threading.Lock] = field(default_factory=dict)  # one per model being imported

    def plugin(self, name: str | None) -> dict:
        """The ``alectio plugins`` row of a registered plugin (``{}`` if none)."""
        return next((p for p in self.plugins if p["name"] == name), {})

    def contributions(self, hook: str, validate: Callable[..., tuple[str, Any]]) -> dict:
        """Collect what plugins hand to ``register`` in ``hook``, once.

        Plugins are called one at a time in pluggy's order (built-ins are
        ``trylast``), and the first registration of a name wins, so a plugin
        can replace a built-in. A plugin whose hook raises, registers
        something ``validate`` refuses or returns a value is recorded in
        ``errors`` with its name and distribution; the others still count.
        """
        with self._lock:
            if hook in self._contributions:
                return self._contributions[hook]
            found: dict[str, Any] = {}
            contributors: dict[str, str] = {}

            def registering(plugin: str) -> Callable[..., None]:
                def register(*args: Any, **kwargs: Any) -> None:
                    try:
                        name, value = validate(*args, **kwargs)
                    except TypeError as exc:
                        raise BadRegistration(str(exc)) from None
                    if name in found:
                        log.info("%s: %r from plugin %r is shadowed by plugin %r", hook, name, plugin, contributors[name])
                        return
                    found[name] = value
                    contributors[name] = plugin

                return register

            for plugin, caller in each_plugin(self.pm, hook):
                try:
                    returned = [r for r in caller(register=registering(plugin)) if r is not None]
                except BadRegistration as exc:
                    self.contribution_failed(plugin, hook, f"hook {hook!r}: {exc}")
                except Exception as exc:
                    self.contribution_failed(plugin, hook, f"hook {hook!r} raised {type(exc).__name__}: {exc}")
                else:
                    if returned:
                        self.contribution_failed(
                            plugin, hook,
                            f"hook {hook!r} returned a {type(returned[0]).__name__}, which alectio ignores; "
                            "contribute by calling register(...) instead",
                        )
            self._contributions[hook] = found
            self._contributors[hook] = contributors
            return found

    def contributor(self, hook: str, name: str, contributed: Any) -> dict:
        """The row of the plugin whose ``register`` in ``hook`` gave
        ``contributed`` as ``name`` (``{}`` if no plugin did)."""
        if self._contributions.get(hook, {}).get(name) is not contributed:
            return {}
        return self.plugin(self._contributors[hook][name])

    def provided(self, plugin: str) -> dict[str, list[str]]:
        """The names ``plugin`` contributed and that are in use (a name
        another plugin registered first is not), by ``PROVIDES_BY_HOOK``
        kind; only the hooks collected so far."""
        provided = {}
        for hook, kind in PROVIDES_BY_HOOK.items():
            names = sorted(name for name, by in self._contributors.get(hook, {}).items() if by == plugin)
            if names:
                provided[kind] = names
        return provided

    def forget_contributions(self) -> None:
        """Collect contributions again on next use (after a plugin is added)."""
        self._contributions.clear()
        self._contributors.clear()

    def contribution_failed(self, plugin: str, hook: str, error: str) -> None:
        row = self.plugin(plugin)
        self.record_error(plugin, PLUGINS_GROUP, row.get("distribution"), row.get("version"), error, KIND_BY_HOOK.get(hook))

    def record_error(
        self,
        name: str,
        group: str,
        distribution: str | None,
        version: str | None,
        error: str,
        kind: str | None = None,
        announce: bool = True,
    ) -> None:
        if announce:
            log.warning('Error loading plugin "%s" (distribution %s): %s', name, distribution, error)
        entry = {"name": name, "group": group, "distribution": distribution, "version": version, "error": error}
        if kind is not None:
            entry["kind"] = kind
        self.errors.append(entry)
