"""What plugins contribute (storage backends, query strategies, metrics,
stopping criteria, labellers),
looked up by name; lifecycle listeners told what happened; and the plugin
behind a contribution named when it fails."""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any, Callable

from ..errors import ConfigError, UnknownStoppingError, UnknownStorageError, UnknownStrategyError, UnknownTaskError, did_you_mean
from .loading import load_plugins
from .manager import each_plugin
from .model import TASKS

log = logging.getLogger("alectio_core.plugins")

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


def _validate_criterion(criterion: Any = None) -> tuple[str, Any]:
    name = getattr(criterion, "name", None)
    if inspect.isclass(criterion):
        raise TypeError(f"register() needs a stopping criterion instance, got the class {criterion.__name__}; forgotten the '()'?")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not callable(getattr(criterion, "check", None)):
        raise TypeError(f"register() needs an object with a 'name' string and a 'check' method, got {criterion!r}")
    if not isinstance(getattr(criterion, "settings", {}), dict):
        raise TypeError(f"stopping criterion {name!r}: 'settings' must be a dict of parameter -> default")
    return name, criterion


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


def get_stopping_criteria() -> dict[str, Any]:
    return load_plugins().contributions("register_stopping", _validate_criterion)


def get_stopping_criterion(name: str) -> Any:
    return _pick(get_stopping_criteria(), name, UnknownStoppingError, "unknown stopping criterion")


def get_labellers() -> dict[str, Callable]:
    """Labeller factories by name (see :mod:`alectio_core.labelling`)."""
    return load_plugins().contributions("register_labellers", _validate_named("labeller factory"))


def get_executors() -> dict[str, Callable]:
    """Executor factories by name (see :mod:`alectio_core.executors`)."""
    return load_plugins().contributions("register_executors", _validate_named("executor factory"))


def make_configured(kind: str, factories: dict[str, Callable], name: str, settings: dict[str, Any], source: str) -> Any:
    """The ``kind`` (``labeller``, ``executor``) a config section names, made
    by its factory from the section's other keys."""
    if name not in factories:
        raise ConfigError(
            f"{source}: key '{kind}.name': no {kind} {name!r} is installed{did_you_mean(name, factories)}; "
            f"installed: {', '.join(sorted(factories)) or 'none'}"
        )
    return factories[name](dict(settings), source)


def collect_all() -> None:
    """Call every contribution hook, so their failures are in ``errors``."""
    get_storage_factories()
    get_strategies()
    get_metrics()
    get_stopping_criteria()
    get_labellers()
    get_executors()


def _origin(*parts: str | None) -> str:
    given = [part for part in parts if part]
    return f" ({', '.join(given)})" if given else ""


def origin(hook: str, name: str, contributed: Any) -> str:
    """`` (plugin 'x', distribution d)`` for the plugin whose ``register`` in
    ``hook`` gave ``contributed`` as ``name``; '' for an object that no
    plugin registered (a strategy passed to ``select`` directly)."""
    row = load_plugins().contributor(hook, name, contributed)
    distribution = row.get("distribution")
    return _origin(row.get("name") and f"plugin {row['name']!r}", distribution and f"distribution {distribution}")


def notify(hook: str, **kwargs: Any) -> None:
    """Tell lifecycle listeners, each on its own: one that raises is logged
    naming it, and the others are still told."""
    registry = load_plugins()
    for plugin, caller in each_plugin(registry.pm, hook):
        try:
            caller(**kwargs)
        except Exception:
            distribution = registry.plugin(plugin).get("distribution")
            log.exception("listener %r%s failed in %s", plugin, _origin(distribution and f"distribution {distribution}"), hook)
