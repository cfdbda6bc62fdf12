"""A discovered model: calling its hooks, its ``model_info`` and settings."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping

import pluggy

from ..errors import AlectioError, ConfigError, PluginError, did_you_mean
from ..hookspecs import MODEL_HOOKS

TASKS = ("classification", "multilabel", "object_detection", "segmentation", "regression")


@dataclass
class Model:
    """A discovered model: its name, where it came from, and how to call it."""

    name: str
    module: ModuleType
    distribution: str | None
    version: str | None
    pm: pluggy.PluginManager

    @property
    def hooks(self) -> list[str]:
        return sorted(h for h in MODEL_HOOKS if getattr(self.pm.hook, h).get_hookimpls())

    def takes(self, hook: str, argument: str) -> bool:
        """Whether an implementation of ``hook`` receives ``argument``
        (named, or inside ``payload``)."""
        return any({argument, "payload"} & set(impl.argnames) for impl in getattr(self.pm.hook, hook).get_hookimpls())

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
        mc_samples = info.get("mc_samples")
        if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1):
            raise PluginError(
                self.name,
                "model_info",
                f"'mc_samples' must be a positive integer (stochastic passes in each infer row), got {mc_samples!r}",
            )
        return {
            "task": task,
            "labels": list(labels) if labels is not None else None,
            "settings": settings,
            "mc_samples": mc_samples,
        }

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
