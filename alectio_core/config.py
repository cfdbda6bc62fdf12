"""``config.yaml``: where things are stored, how the server runs, and each
model's own settings (handed to its hooks as ``config``).

Each section is a dataclass below, and its fields are the only place a
default is written: the server, the leases and platform mode read
``config.server.lease_seconds``, never a default of their own. One
converter, :func:`_convert`, reads the file into them, checking every key
so a typo or a wrong type is an error naming the key and the file.

Lookup order for the file: the ``--config`` option, ``$ALECTIO_CONFIG``,
then ``./config.yaml`` if present (else built-in defaults). Then
``$ALECTIO_STORAGE`` overrides ``storage``. :func:`environment` is the one
place ``ALECTIO_CONFIG``, ``ALECTIO_STORAGE`` and ``ALECTIO_HOME`` are read
(the plugin variables are read where plugins load, the platform's token
where it is sent).

Why dataclasses and not pydantic-settings: every command reads this
module, and ``alectio --help`` has 0.3 s in all. Importing pydantic and
building these models costs ~130 ms, pydantic-settings ~150-270 ms
(``python -X importtime``, this machine); dataclasses cost nothing more
(the module is already loaded). Our messages (key, file, did-you-mean)
would need pydantic's errors translated back anyway, and
pydantic-settings' nested ``ALECTIO_SERVER__PORT`` variables would add
environment overrides nobody asked for. What the file holds is three
flat sections of str/int/float, which one 40-line converter covers.
"""

from __future__ import annotations

import copy
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean

DEFAULT_STORAGE = "sqlite:///alectio.db"
#: The strategy an experiment uses when none is named (``alectio run``, the
#: HTTP API, ``Engine.create_experiment``), chosen by measurement: the one
#: whose mean over the learning curve is above random's, paired over seeds
#: 20-29, on every example and budget measured (README, "Does it pay?";
#: ``benchmarks/compare_strategies.py``). ``margin`` alone fell below random
#: on the 20-topic text. Here, not in ``strategies``, so the CLI can show it
#: without importing numpy.
DEFAULT_STRATEGY = "diverse_margin"
#: An experiment's other settings when not given (the same three places).
DEFAULT_BATCH_SIZE = 100
DEFAULT_INITIAL = 100
DEFAULT_LOOPS = 5
DEFAULT_SEED = 0
LOG_LEVELS = ("debug", "info", "warning", "error")


def _rule(test, message: str) -> dict:
    """A check beyond the type: ``message`` follows the key when ``test`` fails."""
    return {"rule": (test, message)}


@dataclass
class ServerSettings:
    """``server:``: how ``alectio serve`` runs."""

    host: str = "127.0.0.1"
    port: int = field(default=5000, metadata=_rule(lambda v: 0 <= v <= 65535, "must be between 0 and 65535"))
    workers: int = 2  # loops running at once
    threads: int = 16  # HTTP threads
    log_level: str = field(default="info", metadata=_rule(lambda v: v.lower() in LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}"))
    max_body_bytes: int = 10 * 1024 * 1024
    lease_seconds: float = field(default=30.0, metadata=_rule(lambda v: v > 0, "must be > 0"))
    # The dashboard: how long a sign-in lasts, and how long one event stream
    # holds a waitress thread before the browser reconnects.
    session_seconds: int = field(default=43200, metadata=_rule(lambda v: v > 0, "must be > 0"))
    events_seconds: float = field(default=300.0, metadata=_rule(lambda v: v > 0, "must be > 0"))


@dataclass
class PlatformSettings:
    """``platform:``: Alectio platform mode (``POST /one_loop``)."""

    model: str | None = None
    backend_url: str | None = None
    callback_timeout: float = field(default=10.0, metadata=_rule(lambda v: v > 0, "must be > 0"))
    callback_retries: int = field(default=3, metadata=_rule(lambda v: v >= 0, "must be >= 0"))
    max_selection_bytes: int = field(default=64 * 1024 * 1024, metadata=_rule(lambda v: v > 0, "must be > 0"))


@dataclass
class LabellerSettings:
    """``labeller:``: the labelling tool selections go to (see
    :mod:`alectio_core.labelling`). Keys other than these three are the
    labeller's own ``settings``, checked by the labeller when the server
    starts."""

    name: str
    auto_next: bool = False  # start the next loop as soon as a selection is labelled or skipped
    poll_seconds: float = field(default=10.0, metadata=_rule(lambda v: v > 0, "must be > 0"))
    settings: dict[str, Any] = field(default_factory=dict, metadata={"not_a_key": True})


def _labeller_section(value: Any, key: str, source: str) -> LabellerSettings | None:
    """``labeller:``: the three keys of :class:`LabellerSettings`, the rest the labeller's own."""
    if value is None:  # `labeller:` with everything commented out
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: key {key!r} must be a mapping, got {type(value).__name__}")
    if "name" not in value:
        raise ConfigError(f"{source}: key '{key}.name' is missing: name the labeller to use (e.g. labelstudio)")
    known = {f.name for f in fields(LabellerSettings) if not f.metadata.get("not_a_key")}
    section = _convert(LabellerSettings, {k: v for k, v in value.items() if k in known}, key + ".", source)
    section.settings = {str(k): v for k, v in value.items() if k not in known}
    return section


@dataclass
class Config:
    """The whole file, checked (see :func:`parse_config`)."""

    storage: str = DEFAULT_STORAGE
    storage_options: dict[str, Any] = field(default_factory=dict)
    server: ServerSettings = field(default_factory=ServerSettings)
    models: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # Settings of stopping criteria by name (``stopping: {plateau: {patience: 5}}``),
    # checked when an experiment names the criterion in ``stop``.
    stopping: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    labeller: LabellerSettings | None = field(default=None, metadata={"parse": _labeller_section})
    source: str | None = field(default=None, metadata={"not_a_key": True})  # the file it came from, for messages

    def check_models(self, installed: set[str]) -> None:
        """A section for a model that is not installed is a typo, not a no-op."""
        for name in sorted(self.models):
            if name not in installed:
                raise ConfigError(
                    f"{self.source or 'config'}: key 'models.{name}': no model {name!r} is installed{did_you_mean(name, installed)}; "
                    f"installed models: {', '.join(sorted(installed)) or 'none'}"
                )

    def model_config(self, name: str) -> dict:
        """The model's section (a copy, so a hook cannot change it for the next loop)."""
        return copy.deepcopy(self.models.get(name) or {})


# ----------------------------------------------------------------------
# The one converter: the file's mappings into the dataclasses above
# ----------------------------------------------------------------------


def _check(value: Any, kind: Any, key: str, source: str) -> Any:
    """``value`` as the annotated ``kind`` (str, int, float, X | None, dict[str, X])."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        args = typing.get_args(kind)
    if typing.get_origin(kind) is dict:
        if value is None:  # `models:` with every entry commented out
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} must be a mapping, got {type(value).__name__}")
        if args[1] is Any:
            return value
        return {name: _check(item, args[1], f"{key}.{name}", source) for name, item in value.items()}
    if value is None:  # `port:` with nothing after it
        raise ConfigError(f"{source}: key {key!r} must be {kind.__name__}, got no value")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: key {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _convert(cls: type, data: Any, prefix: str, source: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data``; keys
    it leaves out keep their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: key {prefix.rstrip('.') or '(top level)'!r} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls) if not f.metadata.get("not_a_key")}
    unknown = sorted(str(key) for key in set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r}{did_you_mean(unknown[0], known)}; known keys: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in known.items():  # in declaration order, so the first bad key is always the same one
        if name not in data:
            continue
        key, kind = prefix + name, hints[name]
        if "parse" in spec.metadata:  # a section with a reader of its own
            values[name] = spec.metadata["parse"](data[name], key, source)
            continue
        if isinstance(kind, type) and is_dataclass(kind):
            values[name] = _convert(kind, data[name], key + ".", source)
            continue
        values[name] = value = _check(data[name], kind, key, source)
        test, message = spec.metadata.get("rule", (None, ""))
        if test is not None and not test(value):
            raise ConfigError(f"{source}: key {key!r} {message}")
    return cls(**values)


def parse_section(cls: type, data: Any, prefix: str, source: str) -> Any:
    """A plugin's own section (a dataclass like the ones above), checked the
    same way: unknown keys, types and rules are errors naming ``prefix + key``."""
    return _convert(cls, data, prefix, source)


def parse_config(data: Any, source: str = "config") -> Config:
    config = _convert(Config, data, "", source)
    config.source = source
    return config


# ----------------------------------------------------------------------
# The environment and the file
# ----------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """Where the config, the storage and the server's files are (an empty variable is unset)."""

    config: str | None  # $ALECTIO_CONFIG: the config file
    storage: str | None  # $ALECTIO_STORAGE: overrides config.yaml's storage
    home: Path  # $ALECTIO_HOME: the server's first-token file goes here (~/.alectio)


def environment() -> Environment:
    """Read now, not at import: tests and wrappers set them per run."""
    return Environment(
        config=os.environ.get("ALECTIO_CONFIG") or None,
        storage=os.environ.get("ALECTIO_STORAGE") or None,
        home=Path(os.environ.get("ALECTIO_HOME") or Path("~/.alectio").expanduser()),
    )


def load_config(path: str | os.PathLike | None = None) -> Config:
    env = environment()
    explicit = path or env.config
    if explicit:
        file = Path(explicit)
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} not found")
    else:
        file = Path("config.yaml")
    if file.is_file():
        import yaml  # only when there is a file: the defaults need none of it

        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:  # its str() is a multi-line trace: keep the line and the problem
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            raise ConfigError(f"{file}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
        config = parse_config(data, str(file))
    else:
        config = parse_config({}, "defaults")
    if env.storage:
        config.storage = env.storage
    return config
