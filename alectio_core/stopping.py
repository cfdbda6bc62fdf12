"""Stopping criteria: when an experiment has labelled enough.

A criterion is any object with a ``name``, a ``settings`` dict (each
parameter and its default) and ``check(context) -> None | str``: None to go
on, or a reason, one sentence a user reads, to stop after this loop. It may
also have ``validate(task, settings)``, raising ``ValueError`` when it
cannot work on the task or with the settings; that runs when an experiment
is created, so a criterion that cannot apply is refused before any loop
runs. Criteria are contributed through the ``register_stopping`` hook; the
built-ins live in ``alectio_plugins.stopping_*``.

An experiment's ``stop`` lists the criteria to apply, in order. Their
settings are the criterion's defaults, overridden by ``config.yaml``'s
``stopping:`` section, overridden by the experiment's own ``stopping`` (the
API body); what results is stored with the experiment, so a later change
to ``config.yaml`` does not change a running experiment.

Loop k checks them after its metrics and infer, before the strategy picks
loop k+1's records (a stop wastes no selection), unless k is the last loop
anyway. The first that fires is recorded in the loop's state and the
learning curve as ``stop: {"criterion", "reason"}``, and no loop comes
after it (``StoppedError``, 409 ``stopped``). A criterion that raises
fails the loop, naming the criterion and its plugin.

:func:`replay` runs the same checks over an experiment's finished loops:
where each criterion would have fired (``benchmarks/stopping.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import AlectioError, ConfigError, ContributionError, UnknownStoppingError, ValidationError, did_you_mean
from .plugins import get_stopping_criteria, get_stopping_criterion, origin
from .strategies import reduce_mc

if TYPE_CHECKING:
    from .engine import Engine
    from .storage import Storage


@dataclass(frozen=True)
class StopContext:
    """What a criterion reads when loop ``loop`` is checked.

    ``settings`` are this criterion's, resolved (defaults filled in);
    ``curve`` is the learning curve through ``loop`` (``{"loop", "labeled",
    "metrics"}`` per finished loop, this loop's last). Outputs are read on
    demand, streamed in chunks as the strategy reads them."""

    experiment: Mapping[str, Any]
    loop: int
    settings: Mapping[str, Any]
    curve: Sequence[Mapping[str, Any]]
    storage: Storage
    attempt: Optional[str] = None  # the running attempt of ``loop``: its outputs are not committed yet

    def outputs(self, loop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, values)`` chunks of loop ``loop``'s infer outputs on
        the pool (the records unlabeled in that loop); ``loop`` <= this loop.
        A model declaring ``mc_samples`` has its rows reduced to one pass."""
        if not 0 <= loop <= self.loop:
            raise ValueError(f"loop {loop} has no outputs to read while checking loop {self.loop}")
        attempt = self.attempt if loop == self.loop else None
        chunks = self.storage.iter_outputs(self.experiment["id"], loop, attempt=attempt)
        passes = self.experiment.get("mc_samples")
        if not passes:
            return chunks
        # Rows of T stochastic passes read as one pass, as a strategy not declaring mc_samples does.
        task = self.experiment.get("task", "classification")
        return ((indices, reduce_mc(values, passes, task)) for indices, values in chunks)


@runtime_checkable
class Criterion(Protocol):
    """What ``register(criterion)`` accepts (``validate`` is optional)."""

    name: str
    settings: dict[str, Any]

    def check(self, context: StopContext) -> Optional[str]: ...


def resolve(
    names: Any,
    task: str,
    configured: Optional[Mapping[str, Any]] = None,
    given: Optional[Mapping[str, Any]] = None,
    source: str = "config",
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The criteria an experiment applies and their settings, checked.

    ``names``: the experiment's ``stop`` (None: none); ``configured``:
    ``config.yaml``'s ``stopping:`` section (``source`` names the file);
    ``given``: the experiment's own ``stopping``. An unknown name is an
    ``UnknownStoppingError`` listing the installed criteria; an unknown or
    mistyped setting, or one the criterion refuses for ``task``, a
    ``ValidationError`` naming it."""
    if names is None:
        names = []
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValidationError(f"stop must be a list of stopping criterion names, got {names!r}")
    installed = get_stopping_criteria()
    chosen: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValidationError(f"stop must be a list of stopping criterion names, got {name!r} in it")
        if name not in installed:
            raise UnknownStoppingError(
                f"unknown stopping criterion {name!r}{did_you_mean(name, installed)}; known: {', '.join(sorted(installed)) or 'none'}"
            )
        if name not in chosen:
            chosen.append(name)
    given = dict(given or {})
    extra = sorted(set(given) - set(chosen))
    if extra:
        raise ValidationError(f"stopping has settings for {extra[0]!r}, which is not in stop ({', '.join(chosen) or 'empty'})")
    resolved = {}
    for name in chosen:
        criterion = installed[name]
        settings = dict(criterion.settings)
        layers = (
            (lambda key, name=name: f"{source}: key 'stopping.{name}{key}'", (configured or {}).get(name)),
            (lambda key, name=name: f"stopping.{name}{key}", given.get(name)),
        )
        for where, layer in layers:
            if layer is None:
                continue
            if not isinstance(layer, Mapping):
                raise ValidationError(f"{where('')} must be a mapping of settings, got {type(layer).__name__}")
            for key, value in layer.items():
                settings[key] = _setting(criterion, value, where(f".{key}"), key)
        _validate(criterion, task, settings)
        resolved[name] = settings
    return chosen, resolved


def check_configured(configured: Mapping[str, Any], source: str) -> None:
    """A ``stopping:`` section of ``config.yaml`` for a criterion that is not
    installed, or with a setting it does not take, is a typo: a
    ``ConfigError`` naming the key (the settings are checked again, with
    the task, when an experiment names the criterion)."""
    installed = get_stopping_criteria()
    for name in sorted(configured):
        if name not in installed:
            raise ConfigError(
                f"{source}: key 'stopping.{name}': no stopping criterion {name!r} is installed{did_you_mean(name, installed)}; "
                f"installed: {', '.join(sorted(installed)) or 'none'}"
            )
        for key, value in (configured[name] or {}).items():  # config.py made each section a mapping
            try:
                _setting(installed[name], value, f"{source}: key 'stopping.{name}.{key}'", key)
            except ValidationError as exc:
                raise ConfigError(exc.message) from None


def _setting(criterion: Any, value: Any, where: str, key: Any) -> Any:
    """``value`` checked against the type of the criterion's default for ``key``."""
    defaults = criterion.settings
    if key not in defaults:
        known = ", ".join(sorted(defaults)) or "none"
        raise ValidationError(f"{where}: unknown setting{did_you_mean(str(key), defaults)}; {criterion.name} takes: {known}")
    default = defaults[key]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = number and bool(np.isfinite(value))
        value = float(value) if ok else value
    else:  # a name, or None meaning "decided from the experiment"
        ok = value is None or isinstance(value, str)
    if not ok:
        kind = type(default).__name__ if default is not None else "a name or null"
        raise ValidationError(f"{where} must be {kind}, got {value!r}")
    return value


def _validate(criterion: Any, task: str, settings: dict[str, Any]) -> None:
    validate = getattr(criterion, "validate", None)
    if validate is None:
        return
    try:
        validate(task, settings)
    except AlectioError:
        raise
    except ValueError as exc:
        raise ValidationError(f"stopping criterion {criterion.name!r}: {exc}") from None
    except Exception as exc:
        raise _failed(criterion, "validate", exc) from exc


def _failed(criterion: Any, method: str, exc: Exception) -> ContributionError:
    where = origin("register_stopping", criterion.name, criterion)
    return ContributionError(method, f"stopping criterion {criterion.name!r}{where} failed in {method}: {type(exc).__name__}: {exc}")


def check(
    experiment: Mapping[str, Any],
    loop: int,
    curve: Sequence[Mapping[str, Any]],
    storage: Storage,
    attempt: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
) -> Optional[dict]:
    """``{"criterion", "reason"}`` of the first of the experiment's criteria
    (or of ``names``) that fires at loop ``loop``, or None."""
    stored = experiment.get("stopping") or {}
    base = StopContext(experiment, loop, {}, curve, storage, attempt)
    for name in (experiment.get("stop") or []) if names is None else names:
        criterion = get_stopping_criterion(name)
        context = replace(base, settings={**criterion.settings, **stored.get(name, {})})
        try:
            reason = criterion.check(context)
        except AlectioError:
            raise
        except Exception as exc:
            raise _failed(criterion, "check", exc) from exc
        if reason is None:
            continue
        if not isinstance(reason, str) or not reason.strip():
            where = origin("register_stopping", name, criterion)
            raise ContributionError("check", f"stopping criterion {name!r}{where} returned {reason!r}; check returns None or a reason string")
        return {"criterion": name, "reason": reason}
    return None


def replay(
    engine: Engine, experiment_id: str, names: Sequence[str], settings: Optional[Mapping[str, Any]] = None
) -> dict[str, Optional[dict]]:
    """Where each of ``names`` would have stopped the experiment, checked on
    its finished loops with the same code a running loop uses:
    ``{name: {"loop", "labeled", "reason"} or None}`` (None: it never fired).
    As in a run, the last loop is not checked (nothing comes after it)."""
    experiment = dict(engine.get_experiment(experiment_id))
    chosen, resolved = resolve(list(names), experiment.get("task", "classification"), given=settings)
    experiment.update(stop=chosen, stopping=resolved)
    curve = engine.learning_curve(experiment_id)
    found: dict[str, Optional[dict]] = {name: None for name in chosen}
    for k, point in enumerate(curve[:-1]):
        for name in [n for n in chosen if found[n] is None]:
            fired = check(experiment, point["loop"], curve[: k + 1], engine.storage, names=[name])
            if fired is not None:
                found[name] = {"loop": point["loop"], "labeled": point["labeled"], "reason": fired["reason"]}
    return found
