"""The ``alectio`` command: the group (the console script's entry point),
``serve``, ``plugins``, ``run`` and ``init``. The ``token`` and
``experiments`` groups live in their own modules; the options and the
error handling they all share are in :mod:`.cli_options`."""

from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from . import plugins
from .cli_experiments import experiments
from .cli_labels import export, labels
from .cli_options import config_option, domain_errors, one_line, read_config, start_logging, storage_option
from .cli_tokens import token
from .config import DEFAULT_BATCH_SIZE, DEFAULT_INITIAL, DEFAULT_LOOPS, DEFAULT_SEED, DEFAULT_STRATEGY, LOG_LEVELS, ServerSettings
from .errors import AlectioError


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(package_name="alectio")
@click.pass_context
def cli(ctx):
    """alectio: run active-learning loops around your own model.

    Install a model plugin (a package with an alectio.models entry point),
    then 'alectio run MODEL' for a self-driven experiment or 'alectio
    serve' for the HTTP API.
    """
    if ctx.invoked_subcommand is None:  # `alectio` alone: the help, not a usage error
        click.echo(ctx.get_help())


@cli.command()
@config_option
@storage_option
@click.option("--host", help=f"Interface to listen on (default {ServerSettings.host}).")
@click.option("--port", type=int, help=f"Port (default {ServerSettings.port}).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), help=f"Log level (default {ServerSettings.log_level}).")
@domain_errors
def serve(config_path, storage, host, port, log_level):
    """Serve the HTTP API and the dashboard on a production WSGI server (waitress).

    Loops run on server.workers background threads. Every endpoint but
    /health needs an API token; when none exists, one is created and
    written to $ALECTIO_HOME/first-token (~/.alectio by default), readable
    only by you. The dashboard is at / (open the printed URL in a browser
    and sign in with a token).
    """
    from .server.run import serve as run_server

    config = read_config(config_path, storage)
    host = host or config.server.host
    port = config.server.port if port is None else port
    start_logging(log_level or config.server.log_level)
    run_server(config, host, port)


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include built-in plugins.")
def list_plugins(show_all):
    """Print every discovered plugin as JSON: name, kind, version,
    distribution, hooks, and load errors."""
    rows = plugins.report()
    if not show_all:
        rows = [r for r in rows if r.get("distribution") != plugins.BUILTIN_DISTRIBUTION]
    click.echo(json.dumps(rows, indent=2))


cli.add_command(token)
cli.add_command(experiments)
cli.add_command(export)
cli.add_command(labels)


class StrategyOption(click.Option):
    """``--strategy``: its help names the installed strategies, looked up
    only when the help is shown (plugins load, models do not)."""

    def get_help_record(self, ctx):
        self.help = f"Query strategy choosing the next records: {', '.join(sorted(plugins.get_strategies()))}."
        return super().get_help_record(ctx)


class StopOption(click.Option):
    """``--stop``: its help names the installed stopping criteria, looked up
    only when the help is shown."""

    def get_help_record(self, ctx):
        self.help = (
            "End the run early when this stopping criterion fires (repeatable; settings in config.yaml's "
            f"stopping: section): {', '.join(sorted(plugins.get_stopping_criteria()))}."
        )
        return super().get_help_record(ctx)


@cli.command()
@click.argument("model")
@click.option("--strategy", cls=StrategyOption, metavar="NAME", default=DEFAULT_STRATEGY, show_default=True)
@click.option("--loops", type=click.IntRange(min=1), default=DEFAULT_LOOPS, show_default=True, help="Loops to run.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True, help="Records the strategy adds after each loop.")
@click.option("--initial", type=click.IntRange(min=1), default=DEFAULT_INITIAL, show_default=True, help="Seeded-random records labeled for loop 0.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, show_default=True, help="Seed for the initial records and the strategy.")
@click.option("--stop", "stop", cls=StopOption, metavar="NAME", multiple=True)
@click.option(
    "--labels", type=click.Choice(["plugin", "alectio"]), default="plugin", show_default=True,  # labels.MODES (numpy-free here)
    help="Who labels the selected records: plugin (the model knows every label) or alectio (people do: the run stops "
    "at each loop whose records are not all labelled or skipped; 'alectio export', label them, 'alectio labels import', "
    "then --resume).",
)
@storage_option
@config_option
@click.option("--resume", "resume_id", metavar="ID", help="Continue experiment ID from its last finished loop; options given must match it, --loops may extend it.")
@click.option("--json", "as_json", is_flag=True, help="Print only the learning curve, as JSON, on stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the learning curve to this PNG file.")
@click.option("--metric", metavar="NAME", help="The metric the table and the plot show (default: the task's headline "
              "metric: accuracy, or mAP_50 for object detection).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="warning", show_default=True)
@domain_errors
def run(model, strategy, loops, batch, initial, seed, stop, labels, storage, config_path, resume_id, as_json, plot, metric, log_level):
    """Run a self-driven experiment on MODEL: label INITIAL random records,
    then after each loop let STRATEGY pick BATCH more. With --stop NAME,
    end early once that stopping criterion fires, and say why.

    With --resume ID, continue that experiment instead: a --strategy,
    --batch, --initial, --seed or --stop given must match what it was
    created with, and --loops N runs it up to N loops (extending a finished
    one).

    With --labels alectio, people label each loop's records: the run stops
    when a loop's are not all labelled or skipped, says how to export them
    and import the labels, and --resume goes on from there.

    \b
    Example:
      alectio run digits_cnn --loops 5 --batch 50 --initial 100
    """
    from .driver import check_metric, check_plot_path, drive, headline, plot_curve, resume
    from .engine import Engine
    from .errors import LabelsMissing
    from .interrupts import ctrl_c
    from .leases import LoopBusy
    from .progress import Progress
    from .storage import open_storage

    if plot:
        check_plot_path(plot)
    start_logging(log_level)
    config = read_config(config_path, storage)
    engine = Engine(open_storage(config.storage, config.storage_options), config)
    if resume_id:
        ctx = click.get_current_context()
        options = {"strategy": strategy, "batch": batch, "initial": initial, "seed": seed, "stop": list(dict.fromkeys(stop)),  # stored without repeats
                   "labels": labels}
        stored_as = {"batch": "batch_size", "labels": "labels_mode"}
        given = {"model": ("model", model)}
        given.update({f"--{name}": (stored_as.get(name, name), value) for name, value in options.items()
                      if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT})
        given_loops = None if ctx.get_parameter_source("loops") is ParameterSource.DEFAULT else loops
        experiment = resume(engine, resume_id, given, given_loops)
        engine.recover_interrupted(resume_id)
    else:
        experiment = engine.create_experiment(
            model, strategy=strategy, batch_size=batch, initial=initial, loops=loops, seed=seed, stop=list(stop), labels=labels
        )
    click.echo(f"experiment {experiment['id']}: model {experiment['model']}, strategy {experiment['strategy']}, "
               f"pool {experiment['pool_size']}, storage {config.storage}", err=True)
    again = f"continue with: alectio run {experiment['model']} --resume {experiment['id']}"
    exhausted: list = []  # (loop, labeled, pool) once the pool runs out
    interrupted = False
    waiting: LabelsMissing | None = None  # labels mode "alectio": a loop's records need people's labels first
    with Progress(experiment, enabled=sys.stderr.isatty() and not as_json) as progress:

        def on_loop(loop: int) -> None:
            if metric and loop > 0:  # loop 0's metrics are known: a misspelled name stops here
                check_metric(engine.learning_curve(experiment["id"]), metric)
            progress.loop(loop)

        def stop_now() -> None:
            click.echo(f"Interrupted again: stopped without recording the loop ({again})", err=True)

        try:
            with ctrl_c(on_second=stop_now):
                curve = drive(engine, experiment["id"], on_loop=on_loop, on_stage=progress.stage,
                              on_exhausted=lambda *ended: exhausted.extend(ended))
            if metric:
                check_metric(curve, metric)
        except LoopBusy:
            raise  # another server runs it: nothing to resume here
        except LabelsMissing as exc:
            waiting, curve = exc, engine.learning_curve(experiment["id"])
        except AlectioError as exc:
            raise click.ClickException(one_line(f"{exc.message} ({again})"))
        except KeyboardInterrupt:  # Ctrl-C: the engine recorded the loop as cancelled
            interrupted = True
    if interrupted:
        click.echo(f"Interrupted in loop {engine.next_loop(experiment['id'])} ({again})", err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
    if exhausted:
        loop, labeled, pool = exhausted
        click.echo(f"pool exhausted after loop {loop}: {labeled:,} of {pool:,} records labelled", err=True)
    if waiting:
        eid, k, where = experiment["id"], waiting.loop, f" --storage {storage}" if storage else ""
        click.echo(f"loop {k} waits for people's labels: {waiting.missing} of its records have none yet; label or skip them, then go on:\n"
                   f"  alectio export {eid}{where} -o loop{k}.csv     # its records, to label in any tool\n"
                   f"  alectio labels import {eid} loop{k}.csv{where}\n"
                   f"  {again}{where}", err=True)
    stopped = engine.stopped(experiment["id"])
    if stopped:
        click.echo(f"stopped after loop {stopped['loop']} by {stopped['criterion']}: {stopped['reason']}", err=True)
    if plot:
        plot_curve(experiment, curve, plot, metric)
    if as_json:
        click.echo(json.dumps(curve))
        return
    if waiting and not curve:
        return
    name = headline(experiment, None, metric)[0]
    click.echo(f"\nlearning curve ({experiment['strategy']}, experiment {experiment['id']})")
    click.echo(f"{'loop':>4}  {'labeled':>8}  {name:>10}")
    for point in curve:
        value = headline(experiment, point["metrics"], metric)[1]
        click.echo(f"{point['loop']:>4}  {point['labeled']:>8}  {'-' if value is None else f'{value:.4f}':>10}")
    if plot:
        click.echo(f"plot written to {plot}")


@cli.command()
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".", show_default=True, help="Where to create the package.")
@domain_errors
def init(name, parent):
    """Scaffold a new model plugin package for model NAME.

    The package works as generated (a small numpy model on synthetic data):
    pip install it and 'alectio run NAME', then replace the data and model.
    """
    from pathlib import Path

    from .scaffold import collision, scaffold

    root = scaffold(name, Path(parent))
    clash = collision(name)
    if clash:
        click.echo(f"warning: {clash}; installing {root.name} would replace or shadow it (pick another NAME unless that is meant)", err=True)
    click.echo(f"created {root}\nnext: pip install -e {root} && alectio run {name}")
