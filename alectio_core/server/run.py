"""``alectio serve``: the app on waitress, set up for a long-running process.

* an API token is created (and printed once) when none exists;
* log records are written by a background thread (:mod:`.logs`);
* objects made at start-up are frozen out of the cyclic garbage collector,
  so a full collection takes microseconds rather than ~10 ms mid-request;
* SIGTERM stops the server like Ctrl-C: running loops are cancelled and
  given a few seconds to record it (a loop killed harder is marked
  "interrupted" once its lease expires).
"""

from __future__ import annotations

import gc
import signal

import click

from ..config import Config, parse_config
from . import create_app
from .logs import log_in_background, quiet_waitress_queue


def serve(config: Config, host: str, port: int) -> None:
    import waitress

    from ..tokens import ensure_token

    restore_logging = log_in_background()
    quiet_waitress_queue()
    previous = None
    app = None
    try:
        app = create_app(config)
        new_token = ensure_token(app.extensions["alectio"]["storage"])
        if new_token:
            click.echo("No API token existed, so one named 'default' was created. It is shown only now:", err=True)
            click.echo(new_token)
        click.echo(f"alectio serving on http://{host}:{port} (storage {config.storage})", err=True)

        def stop(signum, frame):
            raise KeyboardInterrupt  # waitress shuts down cleanly on it

        previous = signal.signal(signal.SIGTERM, stop)
        gc.collect()
        gc.freeze()
        threads = {**parse_config({}).server, **config.server}["threads"]
        waitress.serve(app, host=host, port=port, threads=threads, ident="alectio")
    finally:
        if app is not None:
            app.extensions["alectio"]["runner"].shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        gc.unfreeze()
        restore_logging()
