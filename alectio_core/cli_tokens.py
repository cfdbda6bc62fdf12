"""``alectio token create/list/revoke``: API tokens for the HTTP server.

Tokens are kept as keyed hashes (HMAC-SHA-256) in the storage backend the server uses;
a new token is printed once, alone on the last line of stdout, so scripts
can take it with ``| tail -n 1``.
"""

from __future__ import annotations

import json

import click

from .cli_options import config_option, domain_errors, read_config, storage_option


def _storage(config_path, storage):
    from .storage import open_storage  # numpy and the engine load only when a token command runs

    config = read_config(config_path, storage)
    return open_storage(config.storage, config.storage_options)


@click.group()
def token():
    """Create, list and revoke API tokens (Authorization: Bearer TOKEN)."""


@token.command("create")
@click.option("--name", required=True, help="A name for the token: letters, digits, '_' or '-'.")
@config_option
@storage_option
@domain_errors
def create(name, config_path, storage):
    """Create a token; it is shown once, on the last line."""
    from .tokens import create_token

    store = _storage(config_path, storage)
    secret = create_token(store, name)
    click.echo(f"Created API token {name!r}. It is shown only now; keep it somewhere safe:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@storage_option
@domain_errors
def list_(as_json, config_path, storage):
    """Names, creation and last use of every token (never the tokens)."""
    from .tokens import list_tokens

    rows = list_tokens(_storage(config_path, storage))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No API tokens. Create one with: alectio token create --name NAME")
        return
    width = max(4, *(len(r["name"]) for r in rows))
    click.echo(f"{'NAME':<{width}}  {'CREATED':<29}  LAST USED")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['created'] or '-':<29}  {r['last_used'] or 'never'}")


@token.command("revoke")
@click.argument("name")
@config_option
@storage_option
@domain_errors
def revoke(name, config_path, storage):
    """Delete the token NAME; a running server refuses it within 10 seconds."""
    from .tokens import revoke_token

    revoke_token(_storage(config_path, storage), name)
    click.echo(f"Revoked API token {name!r}.")
