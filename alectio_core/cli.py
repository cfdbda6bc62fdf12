"""The ``alectio`` command. Domain errors become one-line messages here and
nowhere else."""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from . import plugins
from .config import LOG_LEVELS, Config, load_config
from .errors import AlectioError


def domain_errors(fn):
    """Turn alectio's errors into ``Error: ...`` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AlectioError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper


def _config(path: str | None, storage: str | None) -> Config:
    config = load_config(path)
    if storage:
        config.storage = storage
    return config


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config.yaml to read (default: $ALECTIO_CONFIG or ./config.yaml).")
storage_option = click.option("--storage", help="Storage URL, e.g. sqlite:///alectio.db or s3://bucket/prefix (default: config, $ALECTIO_STORAGE).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alectio")
def cli():
    """alectio: run active-learning loops around your own model.

    Install a model plugin (a package with an ``alectio.models`` entry point),
    then ``alectio run MODEL`` for a self-driven experiment or ``alectio
    serve`` for the HTTP API.
    """


@cli.command()
@config_option
@storage_option
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 5000).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="Log level (default info).")
@domain_errors
def serve(config_path, storage, host, port, log_level):
    """Serve the HTTP API on a production WSGI server (waitress)."""
    import waitress

    from .server import create_app

    config = _config(config_path, storage)
    server = config.server
    host = host or server["host"]
    port = server["port"] if port is None else port
    _logging(log_level or server["log_level"])
    app = create_app(config)
    click.echo(f"alectio serving on http://{host}:{port} (storage {config.storage})", err=True)
    waitress.serve(app, host=host, port=port, threads=server["threads"], ident="alectio")


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include built-in plugins.")
def list_plugins(show_all):
    """Print every discovered plugin as JSON: name, kind, version,
    distribution, hooks, and load errors."""
    rows = plugins.report()
    if not show_all:
        rows = [r for r in rows if r.get("distribution") != plugins.BUILTIN_DISTRIBUTION]
    click.echo(json.dumps(rows, indent=2))


def main() -> None:  # pragma: no cover - console entry point
    cli(prog_name="alectio")
