"""``alectio serve``: the app on waitress, set up for a long-running process.

* an API token is created when none exists and written to a file only its
  owner can read (``$ALECTIO_HOME/first-token``, ``~/.alectio`` by
  default); only the file's path is printed, since a service manager keeps
  a server's output in its journal;
* log records are written by a background thread (:mod:`.logs`);
* objects made at start-up are frozen out of the cyclic garbage collector,
  so a full collection takes microseconds rather than ~10 ms mid-request;
* SIGTERM stops the server like Ctrl-C: dashboard event streams end (the
  browser reconnects, to another server if there is one), running loops are
  cancelled and given a few seconds to record it (a loop killed harder is
  marked "interrupted" once its lease expires).
"""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import click

from ..config import Config, environment
from ..errors import ConfigError
from . import close_app, create_app
from .logs import log_in_background, quiet_waitress_queue


def serve(config: Config, host: str, port: int) -> None:
    import waitress

    from ..tokens import ensure_token, outdated_tokens

    restore_logging = log_in_background()
    quiet_waitress_queue()
    previous: dict = {}  # the signal handlers to put back
    app = None
    try:
        app = create_app(config)
        storage = app.extensions["alectio"]["storage"]
        new_token = ensure_token(storage)
        if new_token:
            path = first_token_file()
            try:
                write_private(path, new_token + "\n")
            except OSError as exc:
                storage.delete_token("default")  # nobody could ever know it
                raise ConfigError(
                    f"cannot write the first API token to {path} ({exc.strerror or exc}): set ALECTIO_HOME to a "
                    f"folder this user can write, or create a token with 'alectio token create --name NAME'"
                ) from None
            click.echo(
                f"No API token existed, so one named 'default' was created and written to {path} "
                f"(readable only by you). Use it as 'Authorization: Bearer $(cat {path})'.",
                err=True,
            )
        outdated = outdated_tokens(storage)
        if outdated:
            click.echo(
                f"API token(s) {', '.join(outdated)} were made by alectio 0.1.0 and are refused: create new ones "
                "with 'alectio token create --name NAME' and revoke these with 'alectio token revoke NAME'.",
                err=True,
            )
        click.echo(f"alectio serving on http://{host}:{port} (storage {config.storage})", err=True)
        click.echo(f"Dashboard: open http://{host}:{port}/ and sign in with an API token.", err=True)

        stopping = app.extensions["alectio"]["stopping"]

        def stop(signum, frame):
            stopping.set()  # event streams end now, not after waitress's 5 s wait for busy threads
            raise KeyboardInterrupt  # waitress shuts down cleanly on it

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        gc.collect()
        gc.freeze()
        waitress.serve(app, host=host, port=port, threads=config.server.threads, ident="alectio")
    finally:
        if app is not None:
            close_app(app)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        gc.unfreeze()
        restore_logging()


def first_token_file() -> Path:
    return environment().home / "first-token"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only its owner can read: created
    with mode 0600, so it is never readable by others, not even for a moment."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a file (or a link) left from an earlier store
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
