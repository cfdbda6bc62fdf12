"""Domain errors. The CLI turns them into one-line messages, the server into
JSON ``{"error": {"code", "message"}}``; the core never formats for either.

Each error carries a stable ``code`` and the HTTP status it maps to.
"""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class AlectioError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote it
        return self.message


def describe(exc: BaseException) -> str:
    """One line for a log or a stored error: an alectio error's own message,
    anything else as ``Type: message``."""
    return exc.message if isinstance(exc, AlectioError) else f"{type(exc).__name__}: {exc}"


class ConfigError(AlectioError):
    code = "bad_config"
    status = 400


class ValidationError(AlectioError, ValueError):
    """Input (a request, a selection, a plugin's return value) is malformed.
    ``field``: the one request key at fault, when there is one (a form shows
    the message next to it)."""

    code = "invalid"
    status = 400
    field: str | None = None

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnauthorizedError(AlectioError):
    """An API token that cannot be accepted, with the reason a user can act on."""

    code = "unauthorized"
    status = 401


class TooLargeError(ValidationError):
    """An input over a configured size limit."""

    code = "too_large"
    status = 413


class NotFoundError(AlectioError, KeyError):
    code = "not_found"
    status = 404


class UnknownModelError(NotFoundError):
    code = "unknown_model"


class UnknownStrategyError(NotFoundError):
    code = "unknown_strategy"


class UnknownStoppingError(NotFoundError):
    code = "unknown_stopping"


class UnknownTaskError(NotFoundError):
    code = "unknown_task"


class UnknownStorageError(NotFoundError):
    code = "unknown_storage"


class ConflictError(AlectioError):
    code = "conflict"
    status = 409


class PluginError(AlectioError):
    """A plugin raised, or returned something that breaks the contract.

    The message always names the model (or plugin), the hook and, where there
    is one, the offending record index.
    """

    code = "plugin_error"
    status = 500

    def __init__(self, model: str, hook: str, message: str, index: int | None = None):
        where = f"model {model!r}, hook {hook!r}"
        if index is not None:
            where += f", index {index}"
        super().__init__(f"{where}: {message}")
        self.model: str | None = model  # None where no model is to blame (ContributionError)
        self.hook = hook
        self.index = index


class PluginLoadError(PluginError):
    """A model that is installed but could not be imported or registered."""

    def __init__(self, model: str, message: str):
        AlectioError.__init__(self, message)
        self.model = model
        self.hook = "load"
        self.index = None


class ContributionError(PluginError):
    """What a plugin contributed (a query strategy, a metrics function)
    raised or broke its contract. The message names the kind of plugin, the
    plugin and its distribution, and where it failed; there is no model to
    blame."""

    def __init__(self, hook: str, message: str):
        AlectioError.__init__(self, message)
        self.model = None
        self.hook = hook
        self.index = None


class StoppedError(ConflictError):
    """A stopping criterion ended the experiment: no loop comes after."""

    code = "stopped"


class StorageError(AlectioError):
    code = "storage_error"
    status = 503


class ShardError(AlectioError):
    """A shard of a loop's infer stage, run by an executor (Ray), failed:
    the message names the shard (its records) and why."""

    code = "shard_failed"
    status = 500


class LoopCancelled(AlectioError):
    code = "cancelled"
    status = 409


class LabelsMissing(ConflictError):
    """A loop of an experiment in labels mode "alectio" cannot start: some of
    its selected records are neither labelled nor skipped. ``missing`` is
    how many."""

    code = "labels_missing"

    def __init__(self, loop: int, missing: int, selected: int):
        super().__init__(f"loop {loop} needs {missing} more labels ({selected} selected): label or skip them first")
        self.loop = loop
        self.missing = missing


class InvalidLabels(ValidationError):
    """Labels (or skips) that cannot be stored; none of them were. The
    message names the first bad row; ``problems`` holds every one, as
    ``{"index", "label", "skip", "message"}`` (``index`` as given), so a
    file's rows can each be reported."""

    def __init__(self, problems: list[dict]):
        more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        super().__init__(problems[0]["message"] + more)
        self.problems = problems
