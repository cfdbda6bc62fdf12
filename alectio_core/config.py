"""``config.yaml``: where things are stored, how the server runs, and each
model's own settings (handed to its hooks as ``config``).

Read with ``yaml.safe_load``; every key is checked against ``SCHEMA`` so a
typo or a wrong type is an error naming the key and the file.

Lookup order for the file: the ``--config`` option, ``$ALECTIO_CONFIG``,
then ``./config.yaml`` if present (else built-in defaults). Then
``$ALECTIO_STORAGE`` overrides ``storage``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean

DEFAULT_STORAGE = "sqlite:///alectio.db"
#: The strategy an experiment uses when none is named (``alectio run``, the
#: HTTP API, ``Engine.create_experiment``), chosen by measurement: see the
#: README, "Does it pay?", and ``benchmarks/compare_strategies.py``. Here,
#: not in ``strategies``, so the CLI can show it without importing numpy.
DEFAULT_STRATEGY = "margin"
LOG_LEVELS = ("debug", "info", "warning", "error")

# key -> (type, default). A dict value is a nested section; ``models`` maps
# model names to free-form sections.
SCHEMA: dict[str, Any] = {
    "storage": (str, DEFAULT_STORAGE),
    "storage_options": (dict, {}),
    "server": {
        "host": (str, "127.0.0.1"),
        "port": (int, 5000),
        "workers": (int, 2),
        "threads": (int, 16),
        "log_level": (str, "info"),
        "max_body_bytes": (int, 10 * 1024 * 1024),
        "lease_seconds": (float, 30.0),
    },
    "models": (dict, {}),
    "platform": {
        "model": (str, None),
        "backend_url": (str, None),
        "callback_timeout": (float, 10.0),
        "callback_retries": (int, 3),
        "max_selection_bytes": (int, 64 * 1024 * 1024),
    },
}


@dataclass
class Config:
    storage: str = DEFAULT_STORAGE
    storage_options: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    platform: dict = field(default_factory=dict)
    source: str | None = None  # the file it came from, for messages

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


def _check(value: Any, expected: type, key: str, source: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _section(data: Any, schema: dict, prefix: str, source: str) -> dict:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: key {prefix.rstrip('.') or '(top level)'!r} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + str(unknown[0])!r}{did_you_mean(str(unknown[0]), schema)}; "
            f"known keys: {', '.join(sorted(schema))}"
        )
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _section(data.get(key), spec, f"{prefix}{key}.", source)
            continue
        expected, default = spec
        value = data.get(key, copy.deepcopy(default))
        out[key] = value if value is None else _check(value, expected, prefix + key, source)
    return out


def parse_config(data: Any, source: str = "config") -> Config:
    values = _section(data, SCHEMA, "", source)
    for name, section in values["models"].items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{source}: key 'models.{name}' must be a mapping of the model's settings")
    if values["server"]["log_level"].lower() not in LOG_LEVELS:
        raise ConfigError(f"{source}: key 'server.log_level' must be one of {', '.join(LOG_LEVELS)}")
    if not values["server"]["lease_seconds"] > 0:
        raise ConfigError(f"{source}: key 'server.lease_seconds' must be > 0")
    if not 0 <= values["server"]["port"] <= 65535:
        raise ConfigError(f"{source}: key 'server.port' must be between 0 and 65535")
    return Config(source=source, **values)


def load_config(path: str | os.PathLike | None = None) -> Config:
    explicit = path or os.environ.get("ALECTIO_CONFIG")
    if explicit:
        file = Path(explicit)
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} not found")
    else:
        file = Path("config.yaml")
    if file.is_file():
        import yaml  # ~20 ms to import: only when there is a file to read

        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:  # its str() is a multi-line trace: keep the line and the problem
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            raise ConfigError(f"{file}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
        config = parse_config(data, str(file))
    else:
        config = parse_config({}, "defaults")
    if os.environ.get("ALECTIO_STORAGE"):
        config.storage = os.environ["ALECTIO_STORAGE"]
    return config
