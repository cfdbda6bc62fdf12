"""Registering a plugin so that pluggy's refusals (unknown hooks, unknown
arguments) come out in our words, naming the plugin and what to fix."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Iterator

import pluggy

from ..errors import AlectioError, did_you_mean

log = logging.getLogger("alectio_core.plugins")


class Rejected(Exception):
    """A plugin that cannot be registered; the message says why, in our words."""


def reason(exc: BaseException) -> str:
    """A load failure as the one line ``alectio plugins`` shows."""
    if isinstance(exc, (Rejected, AlectioError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _implementations(pm: pluggy.PluginManager, plugin: Any) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """``(hook, the arguments alectio passes it, the parameters asked for)``
    for each of ``plugin``'s implementations of a known hook."""
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        hook = (opts.get("specname") if opts else None) or attr
        caller = getattr(pm.hook, hook, None)
        if opts is None or caller is None or caller.spec is None:
            continue
        try:
            parameters = inspect.signature(getattr(plugin, attr)).parameters.values()
        except (TypeError, ValueError):
            continue
        yield hook, caller.spec.argnames, parameters


def _unpassed_argument(pm: pluggy.PluginManager, plugin: Any, name: str, kind: str) -> str | None:
    """Why pluggy refused ``plugin``, in our words, when an implementation
    asks for an argument its hook does not pass (None if that is not it)."""
    for hook, passed, parameters in _implementations(pm, plugin):
        for p in parameters:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty and p.name not in passed:
                return (
                    f"hook {hook!r} of {kind} {name!r} asks for argument {p.name!r}{did_you_mean(p.name, passed)}, "
                    f"which alectio does not pass; {hook} takes: {', '.join(passed)}"
                )
    return None


def register_checked(pm: pluggy.PluginManager, plugin: Any, name: str, kind: str) -> None:
    """Register, rejecting unknown hooks and arguments with the plugin's name."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise Rejected(_unpassed_argument(pm, plugin, name, kind) or " ".join(str(exc).split())) from None
    _warn_defaults(pm, plugin, name, kind)
    unknown = [hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
    if unknown:
        pm.unregister(plugin)
        known = sorted(n for n in dir(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec())
        raise Rejected(
            f"unknown hook {unknown[0]!r}{did_you_mean(unknown[0], known)} in {kind} {name!r}; "
            f"known hooks: {', '.join(known)}"
        )


def _warn_defaults(pm: pluggy.PluginManager, plugin: Any, name: str, kind: str) -> None:
    """pluggy never passes an argument its implementation gives a default
    (``def train(labeled, labels=None)`` always sees None): say so when the
    plugin loads, rather than let it train on nothing. Read from the
    implementations pluggy just registered, not by walking the plugin again."""
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is None:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            for p, default in zip(impl.kwargnames, _defaults(impl.function)):
                if p in caller.spec.argnames:
                    log.warning(
                        "hook %r of %s %r gives argument %r a default, so it is never passed (pluggy passes only "
                        "arguments declared without one): write %r without '=%r'",
                        caller.name, kind, name, p, p, default,
                    )


def _defaults(function: Any) -> tuple:
    return getattr(function, "__defaults__", None) or ()
