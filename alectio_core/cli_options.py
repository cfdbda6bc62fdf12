"""What every ``alectio`` command module shares: the ``--config`` and
``--storage`` options, reading the config they name, and turning domain
errors into one-line messages (here and nowhere else).

``cli.py`` and the command groups (``cli_tokens.py``, ``cli_experiments.py``)
import this module, never each other, so each imports on its own.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from .config import DEFAULT_STORAGE, Config, load_config
from .errors import AlectioError


def one_line(message: str) -> str:
    """Every error is one line, whatever a plugin's exception held."""
    return " ".join(message.split())


def domain_errors(fn):
    """Turn alectio's errors into ``Error: ...`` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AlectioError as exc:
            raise click.ClickException(one_line(exc.message)) from None

    return wrapper


def read_config(path: str | None, storage: str | None) -> Config:
    """The config file's settings; ``--storage`` beats the file and the environment."""
    config = load_config(path)
    if storage:
        config.storage = storage
    return config


def open_engine(config_path: str | None, storage: str | None):
    """An engine on the storage that ``--config`` and ``--storage`` name."""
    from .engine import Engine
    from .storage import open_storage

    config = read_config(config_path, storage)
    return Engine(open_storage(config.storage, config.storage_options), config)


def start_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config.yaml to read (default: $ALECTIO_CONFIG or ./config.yaml).")
storage_option = click.option(
    "--storage",
    help=f"Storage URL, e.g. sqlite:///alectio.db or s3://bucket/prefix (default: $ALECTIO_STORAGE, else config.yaml's "
    f"storage, else {DEFAULT_STORAGE}, the file ./alectio.db).",
)
