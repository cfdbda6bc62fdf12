"""``alectio export`` and ``alectio labels import``: labelling without a
labelling tool plugged in. Export a loop's selection, label it anywhere,
import the labels; the formats are in :mod:`.labels_io`."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from .cli_options import config_option, domain_errors, open_engine, storage_option
from .errors import ConflictError
from .labels_io import EXTENSIONS, FORMATS

WORKFLOW = """\b
Labelling a loop's selection without a labelling tool:
  alectio export ID -o batch.csv     # the records the next loop needs
  (fill in the label column, in a spreadsheet or any tool)
  alectio labels import ID batch.csv
  # then start the next loop (POST /api/v1/experiments/ID/loops)"""


@click.command(epilog=WORKFLOW)
@click.argument("experiment_id", metavar="ID")
@click.option("--loop", type=click.IntRange(min=0), help="The loop whose selection to export (default: the next loop to run, the one waiting for labels).")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS),
    help="csv (index, reference, score, prediction, label, skip), jsonl (the same as JSON objects) or labelstudio "
    "(tasks to import into a Label Studio project, the prediction as a pre-annotation). "
    "Default: from -o's extension (.csv, .jsonl, .json), else csv.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (default: standard output).")
@config_option
@storage_option
@domain_errors
def export(experiment_id, loop, fmt, output, config_path, storage):
    """Export a loop's selection of experiment ID for labelling, best first:
    each record's index, its reference (assign_index's), the strategy's
    score and the previous loop's prediction, with its label or skip so far.

    Fill in the label column (a class id or name, or the task's JSON label)
    or set skip, and bring the file back with 'alectio labels import'.
    Rows left blank stay unlabelled.
    """
    from . import labels_io

    engine = open_engine(config_path, storage)
    experiment = engine.get_experiment(experiment_id)
    if loop is None:
        loop = engine.next_loop(experiment_id)
        if loop >= int(experiment["loops"]):
            raise ConflictError(
                f"experiment {experiment_id!r} has run all of its {experiment['loops']} loops: no selection waits for labels "
                "(--loop K exports loop K's)"
            )
    fmt = fmt or (EXTENSIONS.get(Path(output).suffix.lower(), "csv") if output else "csv")
    rows = engine.selection(experiment_id, loop)
    text = labels_io.dump(experiment, loop, rows, fmt)
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    else:
        click.echo(text, nl=False)
    labelled = sum(1 for r in rows if r.get("label") is not None)
    skipped = sum(1 for r in rows if r.get("skipped"))
    where = f"written to {output}" if output else "written"
    click.echo(f"loop {loop} of experiment {experiment_id}: {len(rows)} records ({labelled} labelled, {skipped} skipped) {where} as {fmt}", err=True)


@click.group()
def labels():
    """Labels made by people, for experiments created with labels "alectio"."""


@labels.command("import", epilog=WORKFLOW)
@click.argument("experiment_id", metavar="ID")
@click.argument("file", type=click.File("rb"))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from FILE's extension, else what its first line looks like.")
@config_option
@storage_option
@domain_errors
def import_(experiment_id, file, fmt, config_path, storage):
    """Store the labels in FILE ('-': standard input) into experiment ID.

    \b
    csv: a header naming index and label, and optionally skip:
      index,label,skip
      17,cat,
      42,"[1, 3]",       (a JSON label: a list, an object, a number)
      8,,true            (skipped: never trained on, never picked again)
    jsonl: one object per line:
      {"index": 17, "label": "cat"}
      {"index": 8, "skip": true}

    A classification label is a class id or a class name. Rows with neither
    a label nor skip are left unlabelled; other columns (those 'alectio
    export' writes) are ignored. Every bad row is reported (its line, index
    and why) and then nothing is stored. Labelling a record again keeps its
    history; the latest label counts.
    """
    from . import labels_io

    name = file.name if file.name != "<stdin>" else "-"
    data = file.read()
    engine = open_engine(config_path, storage)
    experiment = engine.get_experiment(experiment_id)
    try:
        rows, problems = labels_io.parse_file(data, name, fmt)
        summary = labels_io.store_labels(engine, experiment_id, rows, source="cli", by=_user(), name=name, problems=problems)
    except labels_io.BadLabels as exc:
        click.echo(f"Error: {exc.source}: {len(exc.problems)} bad row{'' if len(exc.problems) == 1 else 's'}, nothing stored:", err=True)
        for problem in exc.problems:
            click.echo(f"  {labels_io.describe(problem)}", err=True)
        raise SystemExit(1) from None
    click.echo(f"stored {summary['stored']} label{'' if summary['stored'] == 1 else 's'} and {summary['skipped']} skip{'' if summary['skipped'] == 1 else 's'}")
    missing, loop = summary["missing"], summary["loop"]
    if loop >= int(experiment["loops"]):
        click.echo(f"experiment {experiment_id} has run all of its {experiment['loops']} loops")
    elif missing:
        click.echo(f"loop {loop} still needs {missing} label{'' if missing == 1 else 's'} (label or skip them)")
    else:
        click.echo(f"loop {loop} has every label it needs")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        return None
