"""Plugins called through pluggy: contribution hooks one plugin at a time,
every call traced on request, and each failure naming the kind of plugin,
the plugin, its distribution and the hook. The failing plugins are the
``alectio-test-badcontrib`` package, pip-installed for real."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from server_support import make_app

from alectio_core import hookimpl, plugins
from alectio_core.cli import cli

from conftest import installed_packages

BADCONTRIB = "alectio-test-badcontrib"


@pytest.fixture(scope="module")
def badcontrib():
    with installed_packages(BADCONTRIB) as site:
        yield site


@pytest.fixture
def api(tmp_path, badcontrib):
    made = make_app(tmp_path)
    yield made
    made.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def run(*args, storage):
    return CliRunner().invoke(cli, ["run", *args, "--storage", storage])


def error_rows():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout) if "error" in row}


# -- contribution hooks ----------------------------------------------------------


def test_a_contribution_hook_that_raises_is_reported_with_its_distribution(badcontrib):
    assert error_rows()["bad_register"] == {
        "name": "bad_register",
        "kind": "strategy",
        "group": "alectio.plugins",
        "distribution": BADCONTRIB,
        "version": "0.0.3",
        "hooks": [],
        "error": "hook 'register_strategies' raised RuntimeError: the strategy table is missing",
    }
    # the plugins called after it still contribute, built-ins included
    assert {"crashing", "margin", "entropy", "kcenter"} <= set(plugins.get_strategies())


def test_a_contribution_hook_that_returns_instead_of_registering_is_reported(badcontrib):
    row = error_rows()["returns_list"]
    assert row["distribution"] == BADCONTRIB and row["kind"] == "strategy"
    assert row["error"] == (
        "hook 'register_strategies' returned a list, which alectio ignores; contribute by calling register(...) instead"
    )
    assert "last" not in plugins.get_strategies()


def test_a_third_party_strategy_replaces_the_builtin_of_the_same_name(badcontrib):
    # its entry point sorts after the built-in's: the built-in being trylast is what lets it win
    assert type(plugins.get_strategy("random")).__module__ == "alectio_test_badcontrib.strategies"


# -- errors name the kind of plugin, the plugin and the hook -------------------------

STRATEGY_FAILED = (
    f"strategy 'crashing' (plugin 'third_party_strategies', distribution {BADCONTRIB}) failed in select: "
    "RuntimeError: scores went stale"
)
METRICS_FAILED = (
    f"metrics for task 'regression' (plugin 'crashing_metrics', distribution {BADCONTRIB}) failed: "
    "ZeroDivisionError: float division by zero"
)


def regression_model(fake_model):
    return fake_model(
        "reg", model_info=lambda: {"task": "regression"}, test=lambda: {"predictions": [1.0, 2.0], "labels": [1.5, 2.0]}
    )


def test_alectio_run_names_the_strategy_that_failed(badcontrib, tmp_path):
    result = run("digits_lr", "--strategy", "crashing", "--loops", "2", "--initial", "20", "--batch", "10",
                 storage=f"sqlite:///{tmp_path}/a.db")
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith(f"Error: {STRATEGY_FAILED} (continue with: alectio run digits_lr")


def test_alectio_run_names_the_metrics_plugin_that_failed_not_the_models_test(badcontrib, fake_model, tmp_path):
    regression_model(fake_model)
    result = run("reg", "--loops", "1", "--initial", "3", storage=f"sqlite:///{tmp_path}/a.db")
    assert result.exit_code == 1, result.output
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"Error: {METRICS_FAILED} (continue with: alectio run reg") and "hook 'test'" not in line


def test_the_http_api_names_the_strategy_that_failed(api):
    experiment = api.create(model="digits_lr", strategy="crashing", loops=2, initial=20, batch_size=10)
    assert api.start(experiment["id"]).status_code == 202
    assert api.wait_status(experiment["id"], 0)["error"] == STRATEGY_FAILED


def test_the_http_api_names_the_metrics_plugin_that_failed(api, fake_model):
    regression_model(fake_model)
    experiment = api.create(model="reg", loops=1, initial=3)
    assert api.start(experiment["id"]).status_code == 202
    assert api.wait_status(experiment["id"], 0)["error"] == METRICS_FAILED


class Recorder:
    def __init__(self):
        self.heard = []

    @hookimpl
    def loop_finished(self, loop, status):
        self.heard.append((loop, status))


class Noisy:
    @hookimpl
    def loop_finished(self):
        raise RuntimeError("the webhook is down")


def test_a_listener_that_raises_is_named_and_the_others_are_still_told(engine, fake_model, caplog):
    recorder = Recorder()
    registry = plugins.load_plugins()
    # pluggy calls the last registered first: the noisy one goes before the recorder
    plugins.register_plugin(registry, "recorder", lambda: recorder)
    plugins.register_plugin(registry, "noisy", Noisy)
    try:
        fake_model("m")
        experiment = engine.create_experiment("m", strategy=None, initial=3, loops=1)
        with caplog.at_level(logging.ERROR, logger="alectio_core.plugins"):
            assert engine.run_loop(experiment["id"], 0)["status"] == "done"
    finally:
        for name in ("recorder", "noisy"):
            registry.pm.unregister(name=name)
        registry.plugins = [p for p in registry.plugins if p["name"] not in ("recorder", "noisy")]
    assert recorder.heard == [(0, "done")]
    assert "listener 'noisy' failed in loop_finished" in caplog.text and "the webhook is down" in caplog.text


# -- ALECTIO_TRACE_PLUGINS ---------------------------------------------------------


def alectio_run(tmp_path, **env):
    return subprocess.run(
        [sys.executable, "-m", "alectio_core", "run", "digits_lr", "--loops", "1", "--initial", "20",
         "--storage", str(tmp_path / "a.db")],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env}, cwd=tmp_path,
    )


def test_trace_shows_every_hook_call_with_its_plugins(tmp_path):
    result = alectio_run(tmp_path, ALECTIO_TRACE_PLUGINS="1")
    assert result.returncode == 0, result.stderr
    calls = [line.split("call ", 1)[1] for line in result.stderr.splitlines() if "alectio_core.plugins.trace: call " in line]
    for hook in ("assign_index", "train", "test", "infer"):
        assert any(c.startswith(f"{hook}(") and c.endswith(" on digits_lr") for c in calls), (hook, calls)
    assert "register_storage(register) on sqlite" in calls
    assert "register_strategies(register) on strategy_uncertainty" in calls
    assert "register_metrics(register) on metrics_classification" in calls


def test_without_the_variable_nothing_is_traced(tmp_path):
    result = alectio_run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trace" not in result.stderr
