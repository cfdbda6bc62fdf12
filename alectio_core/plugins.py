"""Plugin discovery and loading.

Nothing is imported at import time: ``load_plugins()`` runs on first use and
is idempotent. Two entry-point groups are read:

* ``alectio.models``: one model per entry point, its name is the model's
  name; each model gets a :class:`ModelPluginManager` of its own.
* ``alectio.plugins``: everything else, all on one plugin manager.

A plugin that fails to import or to validate is recorded in
``registry.errors`` with its name and distribution and skipped; the rest
keeps working (``alectio plugins`` shows the error).

Environment:
``ALECTIO_LOAD_PLUGINS=a,b`` loads only the named third-party entry points
(built-ins from the ``alectio`` distribution always load);
``ALECTIO_TRACE_PLUGINS=1`` logs every hook call.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import pluggy

# The backport (a dependency) behaves the same on every Python we support.
import importlib_metadata as metadata

from .errors import (
    AlectioError,
    ConfigError,
    PluginError,
    PluginLoadError,
    UnknownModelError,
    UnknownStorageError,
    UnknownStrategyError,
    UnknownTaskError,
    did_you_mean,
)
from .hookspecs import MODEL_HOOKS, PROJECT, REQUIRED_MODEL_HOOKS, ModelSpecs, PluginSpecs

log = logging.getLogger(__name__)

MODELS_GROUP = "alectio.models"
PLUGINS_GROUP = "alectio.plugins"
BUILTIN_DISTRIBUTION = "alectio"
TASKS = ("classification", "multilabel", "object_detection", "segmentation", "regression")

_KIND_BY_HOOK = {
    "register_storage": "storage",
    "register_strategies": "strategy",
    "register_metrics": "metrics",
    "loop_started": "listener",
    "stage_started": "listener",
    "loop_finished": "listener",
}


class ModelPluginManager(pluggy.PluginManager):
    """A plugin manager for exactly one model.

    Besides ``@hookimpl`` functions it accepts plain module-level functions
    named like a model hook, so a module written for the seed SDK
    (``def train(payload): ...``) works unchanged.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(ModelSpecs)

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in MODEL_HOOKS and inspect.isfunction(getattr(plugin, name, None)):
            return {}
        return opts


@dataclass
class Model:
    """A discovered model: its name, where it came from, and how to call it."""

    name: str
    module: ModuleType
    distribution: str | None
    version: str | None
    pm: ModelPluginManager

    @property
    def hooks(self) -> list[str]:
        return sorted(h for h in MODEL_HOOKS if getattr(self.pm.hook, h).get_hookimpls())

    def call(self, hook: str, **arguments: Any) -> Any:
        """Call ``hook`` with named arguments; ``payload`` is added as the same
        data in one dict. Exceptions from the plugin become a
        :class:`PluginError` naming the model and the hook."""
        caller = getattr(self.pm.hook, hook)
        if not caller.get_hookimpls():
            return None
        payload = dict(arguments)
        payload.pop("writer", None)
        try:
            return caller(**arguments, payload=payload)
        except AlectioError:
            raise
        except Exception as exc:
            raise PluginError(self.name, hook, f"raised {type(exc).__name__}: {exc}") from exc

    def info(self, config: dict) -> dict:
        """``model_info`` with defaults filled in and checked."""
        info = self.call("model_info", config=config) or {}
        if not isinstance(info, dict):
            raise PluginError(self.name, "model_info", f"must return a dict, got {type(info).__name__}")
        task = info.get("task", "classification")
        if task not in TASKS:
            raise PluginError(self.name, "model_info", f"unknown task {task!r}; known: {', '.join(TASKS)}")
        labels = info.get("labels")
        if labels is not None and not isinstance(labels, (list, tuple)):
            raise PluginError(self.name, "model_info", "'labels' must be a list of class names")
        settings = info.get("settings")
        if settings is not None and (not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings)):
            raise PluginError(self.name, "model_info", "'settings' must be a dict of setting name -> default value")
        return {"task": task, "labels": list(labels) if labels is not None else None, "settings": settings}

    def settings(self, declared: dict | None, section: Mapping[str, Any], source: str, prefix: str = "") -> dict:
        """``section`` over the declared defaults; a key the model did not
        declare is an error naming it, the model and ``source``. A model
        that declares nothing takes any keys."""
        if declared is None:
            return dict(section)
        for key in sorted(section):
            if key not in declared:
                raise ConfigError(
                    f"{source}: unknown key {prefix + key!r}{did_you_mean(key, declared)}; "
                    f"model {self.name!r} has the settings: {', '.join(sorted(declared)) or 'none'}"
                )
        return {**copy.deepcopy(declared), **section}


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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _model_locks: dict[str, threading.Lock] = field(default_factory=dict)  # one per model being imported

    def contributions(self, hook: str, validate: Callable[..., tuple[str, Any]]) -> dict:
        """Collect what plugins hand to ``register`` in ``hook``, once.

        Each implementation is called on its own so a bad registration names
        its plugin; third-party plugins are called before built-ins, and the
        first registration of a name wins, so a plugin can replace a built-in.
        """
        with self._lock:
            if hook in self._contributions:
                return self._contributions[hook]
            found: dict[str, Any] = {}
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            builtin = {p["name"] for p in self.plugins if p["distribution"] == BUILTIN_DISTRIBUTION}
            impls.sort(key=lambda impl: impl.plugin_name in builtin)
            for impl in impls:

                def register(*args: Any, **kwargs: Any) -> None:
                    try:
                        name, value = validate(*args, **kwargs)
                    except TypeError as exc:
                        raise PluginError(impl.plugin_name, hook, str(exc)) from None
                    if name in found:
                        log.info("%s: %r from plugin %r is shadowed by an earlier registration", hook, name, impl.plugin_name)
                        return
                    found[name] = value

                try:
                    impl.function(*[{"register": register}[a] for a in impl.argnames])
                except Exception as exc:
                    self._record_error(impl.plugin_name, PLUGINS_GROUP, None, f"{hook} failed: {exc}")
            self._contributions[hook] = found
            return found

    def _record_error(self, name: str, group: str, dist: metadata.Distribution | None, error: str, announce: bool = True) -> None:
        distribution, version = _about(dist)
        if announce:
            log.warning('Error loading plugin "%s" (distribution %s): %s', name, distribution, error)
        self.errors.append(
            {
                "name": name,
                "group": group,
                "distribution": distribution,
                "version": version,
                "error": error,
            }
        )


@functools.lru_cache(maxsize=256)
def _about(dist: metadata.Distribution | None) -> tuple[str | None, str | None]:
    """A distribution's name and version. Each ``dist.metadata`` parses the
    whole METADATA file, so it is read once per distribution object (one is
    shared by all its entry points)."""
    if dist is None:
        return None, None
    data = dist.metadata
    return data["Name"], data["Version"]


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager for ``alectio.plugins`` hooks, nothing loaded."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(PluginSpecs)
    if os.environ.get("ALECTIO_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda message: log.info("trace: %s", message.rstrip()))
        pm.enable_tracing()
    return pm


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
    dist = entry_point.dist
    if _about(dist)[0] == BUILTIN_DISTRIBUTION:
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
    found = metadata.entry_points()
    for ep in _entry_points(PLUGINS_GROUP, found):
        register_plugin(registry, ep.name, lambda ep=ep: ep.load(), ep.dist)
    registry.pending_models = {ep.name: ep for ep in _entry_points(MODELS_GROUP, found)}
    registry.pm.check_pending()
    return registry


class _Rejected(Exception):
    """A plugin that cannot be registered; the message says why, in our words."""


def _unpassed_argument(pm: pluggy.PluginManager, plugin: Any, name: str, kind: str) -> str | None:
    """Why pluggy refused ``plugin``, in our words, when an implementation
    asks for an argument its hook does not pass (None if that is not it)."""
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        hook = (opts or {}).get("specname") or attr
        caller = getattr(pm.hook, hook, None)
        if opts is None or caller is None or caller.spec is None:
            continue
        passed = caller.spec.argnames
        try:
            parameters = inspect.signature(getattr(plugin, attr)).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in parameters:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty and p.name not in passed:
                return (
                    f"hook {hook!r} of {kind} {name!r} asks for argument {p.name!r}{did_you_mean(p.name, passed)}, "
                    f"which alectio does not pass; {hook} takes: {', '.join(passed)}"
                )
    return None


def _register_checked(pm: pluggy.PluginManager, plugin: Any, name: str, kind: str) -> None:
    """Register, rejecting unknown hooks and arguments with the plugin's name."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _Rejected(_unpassed_argument(pm, plugin, name, kind) or " ".join(str(exc).split())) from None
    unknown = [hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
    if unknown:
        pm.unregister(plugin)
        known = sorted(n for n in dir(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec())
        raise _Rejected(
            f"unknown hook {unknown[0]!r}{did_you_mean(unknown[0], known)} in {kind} {name!r}; "
            f"known hooks: {', '.join(known)}"
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (_Rejected, AlectioError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def register_plugin(registry: Registry, name: str, load: Callable[[], Any], dist=None) -> bool:
    """Load and register one ``alectio.plugins`` plugin; record any failure."""
    try:
        plugin = load()
        _register_checked(registry.pm, plugin, name, "plugin")
    except Exception as exc:
        registry._record_error(name, PLUGINS_GROUP, dist, _reason(exc))
        return False
    hooks = sorted(hc.name for hc in registry.pm.get_hookcallers(plugin) or [])
    kinds = sorted({_KIND_BY_HOOK.get(h, "other") for h in hooks}) or ["other"]
    registry.plugins.append(
        {
            "name": name,
            "kind": kinds[0] if len(kinds) == 1 else "+".join(kinds),
            "distribution": _about(dist)[0],
            "version": _about(dist)[1],
            "hooks": hooks,
        }
    )
    registry._contributions.clear()
    return True


def register_model(registry: Registry, name: str, load: Callable[[], Any], dist=None, announce: bool = True) -> bool:
    """Load and register one model; record any failure (and log it, if
    ``announce``: a caller that raises it instead says it once)."""
    try:
        module = load()
        pm = ModelPluginManager()
        _register_checked(pm, module, name, "model")
        missing = [h for h in REQUIRED_MODEL_HOOKS if not getattr(pm.hook, h).get_hookimpls()]
        if missing:
            raise _Rejected(f"model {name!r} does not implement hook(s) {', '.join(missing)}")
    except Exception as exc:
        registry._record_error(name, MODELS_GROUP, dist, _reason(exc), announce)
        return False
    registry.models[name] = Model(
        name=name,
        module=module,
        distribution=_about(dist)[0],
        version=_about(dist)[1],
        pm=pm,
    )
    return True


# ----------------------------------------------------------------------
# Lookups used by the rest of the core
# ----------------------------------------------------------------------


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


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]{0,63}$")


def _validate_named(kind: str) -> Callable[..., tuple[str, Any]]:
    def validate(name: Any, value: Any = None) -> tuple[str, Any]:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TypeError(f"{kind} name must be a short identifier string, got {name!r}")
        if not callable(value):
            raise TypeError(f"register({name!r}, ...) needs a callable {kind}; did you forget to pass it?")
        return name, value

    return validate


def _validate_strategy(strategy: Any = None) -> tuple[str, Any]:
    name = getattr(strategy, "name", None)
    if inspect.isclass(strategy):
        raise TypeError(f"register() needs a strategy instance, got the class {strategy.__name__}; forgotten the '()'?")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not callable(getattr(strategy, "select", None)):
        raise TypeError(f"register() needs an object with a 'name' string and a 'select' method, got {strategy!r}")
    return name, strategy


def _validate_metrics(task: Any = None, function: Any = None) -> tuple[str, Any]:
    if task not in TASKS:
        raise TypeError(f"metrics task must be one of {', '.join(TASKS)}, got {task!r}")
    if not callable(function):
        raise TypeError(f"register({task!r}, function) needs a callable metrics function")
    return task, function


def _pick(found: dict, name: str, error: type, what: str, listed: str = "known") -> Any:
    if name not in found:
        raise error(f"{what} {name!r}; {listed}: {', '.join(sorted(found)) or 'none'}")
    return found[name]


def get_storage_factories() -> dict[str, Callable]:
    return load_plugins().contributions("register_storage", _validate_named("storage factory"))


def get_storage_factory(scheme: str) -> Callable:
    return _pick(get_storage_factories(), scheme, UnknownStorageError, "no storage backend for scheme", "installed")


def get_strategies() -> dict[str, Any]:
    return load_plugins().contributions("register_strategies", _validate_strategy)


def get_strategy(name: str) -> Any:
    return _pick(get_strategies(), name, UnknownStrategyError, "unknown strategy")


def get_metrics() -> dict[str, Callable]:
    return load_plugins().contributions("register_metrics", _validate_metrics)


def get_metrics_function(task: str) -> Callable:
    return _pick(get_metrics(), task, UnknownTaskError, "no metrics for task")


def notify(hook: str, **kwargs: Any) -> None:
    """Tell lifecycle listeners; a listener that raises is logged, not fatal."""
    try:
        getattr(load_plugins().pm.hook, hook)(**kwargs)
    except Exception:
        log.exception("a %s listener failed", hook)


def report() -> list[dict]:
    """What ``alectio plugins`` prints: every plugin, model and load error."""
    registry = load_plugins()
    get_models()
    rows = [dict(p, group=PLUGINS_GROUP) for p in registry.plugins]
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
        rows.append(dict(error, kind="model" if error["group"] == MODELS_GROUP else "unknown", hooks=[]))
    return rows
