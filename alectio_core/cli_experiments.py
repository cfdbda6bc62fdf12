"""``alectio experiments list/show/delete``: the experiments in a storage,
as the HTTP API shows them (``GET`` / ``DELETE /api/v1/experiments``)."""

from __future__ import annotations

import json

import click

from .cli_options import config_option, domain_errors, open_engine, storage_option


@click.group()
def experiments():
    """List, show and delete experiments."""


@experiments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@storage_option
@domain_errors
def list_(as_json, config_path, storage):
    """Every experiment, oldest first: loops done and the latest headline metric."""
    from .driver import headline

    engine = open_engine(config_path, storage)
    rows = [engine.summary(e) for e in engine.storage.list_experiments()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No experiments. Start one with: alectio run MODEL")
        return
    table = [("ID", "MODEL", "STRATEGY", "LOOPS", "LATEST", "CREATED")]
    for r in rows:
        name, value = headline(r, r["latest_metrics"])
        latest = "-" if value is None else f"{name}={value:.4f}"
        table.append((r["id"], r["model"], str(r["strategy"] or "-"), f"{r['loops_done']}/{r['loops']}", latest, r.get("created") or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@experiments.command()
@click.argument("experiment_id", metavar="ID")
@config_option
@storage_option
@domain_errors
def show(experiment_id, config_path, storage):
    """One experiment as JSON, with loops_done and latest_metrics."""
    engine = open_engine(config_path, storage)
    click.echo(json.dumps(engine.summary(engine.get_experiment(experiment_id)), indent=2))


@experiments.command()
@click.argument("experiment_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
@storage_option
@domain_errors
def delete(experiment_id, yes, config_path, storage):
    """Delete experiment ID and everything stored for it: loops, selections,
    the pool, results, infer outputs and checkpoints. Refused while one of
    its loops is queued or running."""
    engine = open_engine(config_path, storage)
    experiment = engine.summary(engine.get_experiment(experiment_id))
    if not yes:
        click.confirm(
            f"Delete experiment {experiment_id} ({experiment['model']}, {experiment['loops_done']} of {experiment['loops']} "
            "loops done) and everything stored for it?",
            abort=True,
        )
    done = engine.delete_experiment(experiment_id)
    click.echo(f"Deleted experiment {experiment_id} ({done} loop{'' if done == 1 else 's'} done).")
