"""Discovery: reading the entry points, loading and registering plugins and
models, once, and finding a model by name.

Nothing is imported at import time: ``load_plugins()`` runs on first use and
is idempotent; a model's module is imported when that model is first asked
for. This module is the one place that loads plugins.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable, Iterable

# The backport (a dependency) behaves the same on every Python we support.
import importlib_metadata as metadata

from ..errors import PluginLoadError, UnknownModelError
from ..hookspecs import REQUIRED_MODEL_HOOKS
from .checks import Rejected, reason, register_checked
from .manager import get_plugin_manager, model_plugin_manager
from .model import Model
from .registry import BUILTIN_DISTRIBUTION, KIND_BY_HOOK, MODELS_GROUP, PLUGINS_GROUP, Registry

_registry: Registry | None = None
_registry_lock = threading.Lock()


def load_plugins() -> Registry:
    """Discover and register every plugin once; later calls return the same."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = _discover()
        return _registry


def reset_plugins() -> None:
    """Forget what was loaded (tests, and after ``pip install`` in-process)."""
    global _registry
    with _registry_lock:
        _registry = None


def _selected(entry_point: metadata.EntryPoint) -> bool:
    wanted = os.environ.get("ALECTIO_LOAD_PLUGINS")
    if wanted is None:
        return True
    # importlib_metadata's IDistribution protocol leaves out __hash__; the
    # distributions it yields are plain objects, hashed by identity.
    if _about(entry_point.dist)[0] == BUILTIN_DISTRIBUTION:  # type: ignore[arg-type]
        return True
    return entry_point.name in {w.strip() for w in wanted.split(",") if w.strip()}


def _entry_points(group: str, found: metadata.EntryPoints | None = None) -> Iterable[metadata.EntryPoint]:
    seen = set()
    found = metadata.entry_points() if found is None else found  # each call reads every installed distribution
    for ep in sorted(found.select(group=group), key=lambda ep: ep.name):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        if _selected(ep):
            yield ep


def _discover() -> Registry:
    registry = Registry(pm=get_plugin_manager())
    # pluggy calls the last registered plugin first. Registering in reverse
    # name order keeps the rule that, of two third-party plugins registering
    # the same name, the one whose entry point sorts first wins.
    found = metadata.entry_points()
    for ep in reversed(list(_entry_points(PLUGINS_GROUP, found))):
        register_plugin(registry, ep.name, ep.load, ep.dist)
    registry.plugins.sort(key=lambda p: p["name"])
    registry.pending_models = {ep.name: ep for ep in _entry_points(MODELS_GROUP, found)}
    registry.pm.check_pending()
    return registry


@functools.lru_cache(maxsize=256)
def _about(dist: metadata.IDistribution | None) -> tuple[str | None, str | None]:
    """A distribution's name and version. Each ``dist.metadata`` parses the
    whole METADATA file, so it is read once per distribution object (one is
    shared by all its entry points)."""
    if dist is None:
        return None, None
    data = dist.metadata
    return data["Name"], data["Version"]


def register_plugin(registry: Registry, name: str, load: Callable[[], Any], dist=None) -> bool:
    """Load and register one ``alectio.plugins`` plugin; record any failure."""
    distribution, version = _about(dist)
    try:
        plugin = load()
        register_checked(registry.pm, plugin, name, "plugin")
    except Exception as exc:
        registry.record_error(name, PLUGINS_GROUP, distribution, version, reason(exc))
        return False
    hooks = sorted(hc.name for hc in registry.pm.get_hookcallers(plugin) or [])
    kinds = sorted({KIND_BY_HOOK.get(h, "other") for h in hooks}) or ["other"]
    registry.plugins.append(
        {
            "name": name,
            "kind": kinds[0] if len(kinds) == 1 else "+".join(kinds),
            "distribution": distribution,
            "version": version,
            "hooks": hooks,
        }
    )
    registry.forget_contributions()
    return True


def register_model(registry: Registry, name: str, load: Callable[[], Any], dist=None, announce: bool = True) -> bool:
    """Load and register one model; record any failure (and log it, if
    ``announce``: a caller that raises it instead says it once)."""
    distribution, version = _about(dist)
    try:
        module = load()
        pm = model_plugin_manager()
        register_checked(pm, module, name, "model")
        missing = [h for h in REQUIRED_MODEL_HOOKS if not getattr(pm.hook, h).get_hookimpls()]
        if missing:
            raise Rejected(f"model {name!r} does not implement hook(s) {', '.join(missing)}")
    except Exception as exc:
        registry.record_error(name, MODELS_GROUP, distribution, version, reason(exc), announce=announce)
        return False
    registry.models[name] = Model(name=name, module=module, distribution=distribution, version=version, pm=pm)
    return True


def model_names() -> set[str]:
    """Every installed model's name: loaded, not imported yet, broken, or
    left out by ``ALECTIO_LOAD_PLUGINS``."""
    registry = load_plugins()
    return (
        set(registry.models)
        | set(registry.pending_models)
        | {e["name"] for e in registry.errors if e["group"] == MODELS_GROUP}
        | {ep.name for ep in metadata.entry_points(group=MODELS_GROUP)}
    )


def _load_model(registry: Registry, name: str, announce: bool = True) -> None:
    """Import a pending model once. Callers that ask for it meanwhile wait
    for that import (the entry point stays pending until it is done), so
    each gets the model or its load error, never "unknown model"."""
    with registry._lock:
        if registry.pending_models.get(name) is None:
            return
        lock = registry._model_locks.setdefault(name, threading.Lock())
    with lock:
        with registry._lock:
            ep = registry.pending_models.get(name)  # None: loaded while this caller waited
        if ep is not None:
            register_model(registry, name, ep.load, ep.dist, announce)
            with registry._lock:
                registry.pending_models.pop(name, None)


def get_models() -> dict[str, Model]:
    """Every model, importing each one's module."""
    registry = load_plugins()
    for name in list(registry.pending_models):
        _load_model(registry, name)
    return registry.models


def get_model(name: str) -> Model:
    """One model, importing only its module."""
    registry = load_plugins()
    _load_model(registry, name, announce=False)  # a failure is raised here, not logged too
    if name not in registry.models:
        failed = next((e for e in registry.errors if e["name"] == name and e["group"] == MODELS_GROUP), None)
        if failed:
            source = f" (distribution {failed['distribution']})" if failed["distribution"] else ""
            raise PluginLoadError(name, f"model {name!r}{source} failed to load: {failed['error']}")
        known = ", ".join(sorted(set(registry.models) | set(registry.pending_models))) or "none installed"
        raise UnknownModelError(f"unknown model {name!r}; installed models: {known}")
    return registry.models[name]
