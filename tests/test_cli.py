"""The CLI as a user meets it: help, JSON output, one-line errors."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from alectio_core.cli import cli


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:", 1)[1].split()
    for command in ("serve", "plugins", "run", "token", "init"):
        assert command in listed, command


def test_serve_help_documents_its_options():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--storage", "--config", "--log-level"):
        assert option in result.output


def test_plugins_prints_json():
    result = CliRunner().invoke(cli, ["plugins", "--all"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["digits_lr"]["kind"] == "model" and rows["sqlite"]["kind"] == "storage"


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("server:\n  port: high\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {bad}: key 'server.port' must be int, got str 'high'"


def test_invalid_yaml_is_one_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("server:\n  port: 5000\n   host: x\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {bad}: not valid YAML: line 3, column 8: mapping values are not allowed here"
    ]


def test_init_scaffolds_a_package_that_installs_and_runs(tmp_path):
    import subprocess
    import sys

    from conftest import install_aside

    result = CliRunner().invoke(cli, ["init", "my_model", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    package = tmp_path / "alectio-my-model"
    assert (package / "my_model" / "hooks.py").exists()
    (package / "my_model" / "data").mkdir()  # a subpackage a user adds later ships too
    (package / "my_model" / "data" / "__init__.py").write_text("")

    env = install_aside(package, tmp_path / "site")
    assert (tmp_path / "site" / "my_model" / "data" / "__init__.py").exists()

    def accuracies(strategy, seed):
        run = subprocess.run(
            [sys.executable, "-m", "alectio_core", "run", "my_model", "--strategy", strategy, "--seed", str(seed),
             "--loops", "5", "--initial", "50", "--batch", "50", "--json", "--storage", f"sqlite:///{tmp_path}/{strategy}-{seed}.db"],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert run.returncode == 0, run.stderr
        curve = json.loads(run.stdout)
        assert [p["labeled"] for p in curve] == [50, 100, 150, 200, 250]
        return [p["metrics"]["accuracy"] for p in curve]

    # The README's command shows active learning: the curve rises from well
    # below 1.0, and margin sampling ends higher than random on every seed.
    for seed in (0, 1):
        margin, random = accuracies("margin", seed), accuracies("random", seed)
        assert margin[0] == random[0] < 0.85, (margin, random)  # the same initial labels
        assert margin[-1] > margin[0] + 0.1, margin
        assert sum(margin) > sum(random) and margin[-1] > random[-1], (margin, random)
    # its own test passes too
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert tests.returncode == 0, tests.stdout
    # ... and it is alectio's model contract, every test of it (determinism included)
    from alectio_core.testing import ModelContract

    summary = tests.stdout.strip().splitlines()[-1]  # e.g. "8 passed in 1.2s" (", 1 warning" may follow a library's deprecation)
    contract_tests = sum(name.startswith("test_") for name in vars(ModelContract))
    assert re.match(rf"{contract_tests} passed\b", summary) and "skipped" not in summary, tests.stdout


def test_init_refuses_bad_names_and_existing_folders(tmp_path):
    result = CliRunner().invoke(cli, ["init", "../evil", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "invalid model name '../evil'" in result.output
    CliRunner().invoke(cli, ["init", "twice", "--dir", str(tmp_path)])
    again = CliRunner().invoke(cli, ["init", "twice", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output


# -- the first hour: help and defaults ------------------------------------------


def _commands(group, prefix=()):
    """Every command path under the group, the group itself first."""
    yield prefix
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_no_help_text_shows_markup():
    for path in _commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "`" not in result.output, (path, result.output)


def test_alectio_alone_prints_the_help_and_succeeds():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0
    assert result.output == CliRunner().invoke(cli, ["--help"]).output
    assert "Commands:" in result.output


def test_run_help_lists_the_installed_strategies_the_default_and_the_storage():
    from alectio_core import plugins
    from alectio_core.strategies import DEFAULT_STRATEGY

    plugins.reset_plugins()
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "digits_lr" in plugins.load_plugins().pending_models  # no model was imported to write the help
    text = " ".join(result.output.split())  # unwrap
    for name in plugins.get_strategies():
        assert name in text, name
    assert f"[default: {DEFAULT_STRATEGY}]" in text
    assert "sqlite:///alectio.db" in text and "./alectio.db" in text


# -- alectio experiments list / show / delete ----------------------------------------


import pytest  # noqa: E402

from alectio_core import Engine, open_storage  # noqa: E402
from alectio_core.config import DEFAULT_STRATEGY  # noqa: E402


@pytest.fixture
def stored(tmp_path):
    db = f"sqlite:///{tmp_path}/alectio.db"
    engine = Engine(open_storage(db))
    ran = engine.create_experiment("digits_lr", initial=30, batch_size=20, loops=3)
    engine.run_loop(ran["id"], 0)
    fresh = engine.create_experiment("digits_lr", strategy="random", initial=30, loops=2)
    return db, engine, ran, fresh


def test_experiments_list_shows_progress_and_the_latest_headline_metric(stored):
    db, engine, ran, fresh = stored
    result = CliRunner().invoke(cli, ["experiments", "list", "--storage", db])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["ID", "MODEL", "STRATEGY", "LOOPS", "LATEST", "CREATED"]
    accuracy = engine.learning_curve(ran["id"])[0]["metrics"]["accuracy"]
    assert lines[1].split() == [ran["id"], "digits_lr", DEFAULT_STRATEGY, "1/3", f"accuracy={accuracy:.4f}", ran["created"]]
    assert lines[2].split() == [fresh["id"], "digits_lr", "random", "0/2", "-", fresh["created"]]
    as_json = json.loads(CliRunner().invoke(cli, ["experiments", "list", "--json", "--storage", db]).output)
    assert [(e["id"], e["loops_done"]) for e in as_json] == [(ran["id"], 1), (fresh["id"], 0)]


def test_experiments_show_prints_one_as_json(stored):
    db, engine, ran, _ = stored
    result = CliRunner().invoke(cli, ["experiments", "show", ran["id"], "--storage", db])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["id"] == ran["id"] and shown["loops_done"] == 1
    assert shown["latest_metrics"] == engine.learning_curve(ran["id"])[0]["metrics"]
    missing = CliRunner().invoke(cli, ["experiments", "show", "nope", "--storage", db])
    assert missing.exit_code == 1 and missing.output.strip() == "Error: unknown experiment 'nope'"


def test_experiments_delete_asks_first(stored):
    db, engine, ran, _ = stored
    declined = CliRunner().invoke(cli, ["experiments", "delete", ran["id"], "--storage", db], input="n\n")
    assert declined.exit_code == 1
    assert f"Delete experiment {ran['id']} (digits_lr, 1 of 3 loops done) and everything stored for it?" in declined.output
    assert engine.get_experiment(ran["id"])["id"] == ran["id"]
    confirmed = CliRunner().invoke(cli, ["experiments", "delete", ran["id"], "--storage", db], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert confirmed.output.strip().splitlines()[-1] == f"Deleted experiment {ran['id']} (1 loop done)."
    assert ran["id"] not in [e["id"] for e in engine.storage.list_experiments()]
    assert engine.storage.list_loop_states(ran["id"]) == []


def test_experiments_delete_yes_skips_the_question_and_a_running_loop_refuses(stored):
    db, engine, ran, fresh = stored
    engine.storage.put_loop_state(fresh["id"], 0, {"experiment_id": fresh["id"], "loop": 0, "status": "running"})
    import time  # a live process runs it: it holds the loop's lease

    engine.storage.write_lease(fresh["id"], 0, {"owner": "server:1:x", "expires_at": time.time() + 60}, None)
    busy = CliRunner().invoke(cli, ["experiments", "delete", fresh["id"], "--yes", "--storage", db])
    assert busy.exit_code == 1
    assert busy.output.strip() == (
        f"Error: experiment {fresh['id']!r} has loop 0 running; cancel it or let it finish before deleting the experiment"
    )
    assert engine.get_experiment(fresh["id"])["id"] == fresh["id"]
    done = CliRunner().invoke(cli, ["experiments", "delete", ran["id"], "--yes", "--storage", db])
    assert done.exit_code == 0 and done.output.strip() == f"Deleted experiment {ran['id']} (1 loop done)."


def test_init_warns_when_the_package_collides_with_an_installed_one(tmp_path):
    fresh = CliRunner().invoke(cli, ["init", "fresh_name", "--dir", str(tmp_path)])
    assert fresh.exit_code == 0 and fresh.stderr == ""
    # the test suite installs alectio-test-digits 0.2.0 (model digits_lr)
    same_dist = CliRunner().invoke(cli, ["init", "test_digits", "--dir", str(tmp_path)])
    assert same_dist.exit_code == 0
    assert same_dist.stderr.splitlines() == [
        "warning: a distribution named alectio-test-digits (0.2.0) is already installed; installing "
        "alectio-test-digits would replace or shadow it (pick another NAME unless that is meant)"
    ]
    same_import = CliRunner().invoke(cli, ["init", "numpy", "--dir", str(tmp_path)])
    assert same_import.stderr.startswith(
        "warning: the import name 'numpy' is already provided by the installed distribution numpy ("
    )
    same_model = CliRunner().invoke(cli, ["init", "digits_lr", "--dir", str(tmp_path)])
    assert same_model.stderr.startswith(
        "warning: a model named 'digits_lr' is already installed by the distribution alectio-test-digits;"
    )


# -- the command modules: no import cycle, one entry point ----------------------------


def _module_level_imports(path, package="alectio_core"):
    """The alectio_core modules that ``path`` imports when it is imported
    (imports inside functions run later, once every module is loaded)."""
    import ast

    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(f"{package}.{node.module}")
            else:
                found.update(f"{package}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(package + "."))
    return found


def test_no_cli_module_imports_one_that_imports_it_back():
    from pathlib import Path

    import alectio_core

    root = Path(alectio_core.__file__).parent
    graph = {f"alectio_core.{p.stem}": _module_level_imports(p) for p in root.glob("*.py")}
    for module in (m for m in graph if m.split(".")[-1].startswith("cli")):
        seen, todo = set(), list(graph[module])
        while todo:
            name = todo.pop()
            assert name != module, f"{module} imports a module that imports it back"
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))


def test_each_command_module_imports_on_its_own():
    import subprocess
    import sys

    for module, command in (("cli_tokens", "token"), ("cli_experiments", "experiments")):
        code = f"import alectio_core.{module} as m; print(m.{command}.name)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == command


def test_the_console_script_is_the_click_group():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="alectio")
    assert script.value == "alectio_core.cli:cli" and script.load() is cli
