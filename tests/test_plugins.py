"""Discovery through entry points, load errors, validation of implementations."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from alectio_core import hookimpl, plugins
from alectio_core.errors import PluginError, UnknownModelError

from conftest import PACKAGES, install_aside


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory):
    """An environment that sees this one's packages plus the broken plugin
    package, installed for real with pip."""
    return install_aside(PACKAGES / "alectio-test-broken", tmp_path_factory.mktemp("site"))


def alectio(env: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alectio_core", *args], capture_output=True, text=True, env={**env, **extra}, timeout=120
    )


def by_name(rows):
    return {row["name"]: row for row in rows}


def test_plugins_command_reports_every_plugin_and_load_error(broken_env):
    result = alectio(broken_env, "plugins", "--all")
    assert result.returncode == 0, result.stderr
    rows = by_name(json.loads(result.stdout))

    # good ones, built-ins included, with their kind, version and hooks
    assert rows["sqlite"]["kind"] == "storage" and rows["sqlite"]["distribution"] == "alectio"
    assert rows["digits_lr"] == {
        "name": "digits_lr",
        "kind": "model",
        "distribution": "alectio-test-digits",
        "version": "0.2.0",
        "hooks": ["assign_index", "infer", "model_info", "test", "train"],
        "group": "alectio.models",
    }
    assert rows["good_listener"]["kind"] == "listener" and rows["good_listener"]["hooks"] == ["loop_finished"]
    # and the names each one provides, by kind
    assert rows["sqlite"]["provides"] == {"storage": ["sqlite"]}
    assert rows["strategy_uncertainty"]["provides"] == {"strategies": ["entropy", "least_confidence", "margin"]}
    assert rows["metrics_classification"]["provides"] == {"metrics": ["classification", "multilabel"]}
    assert rows["good_listener"]["provides"] == {}

    # each broken one, named with its distribution and what went wrong
    for name in ("needs_missing_lib", "misspelled_hook", "incomplete", "unknown_argument"):
        assert rows[name]["distribution"] == "alectio-test-broken", name
    assert "No module named 'a_library_nobody_installed'" in rows["needs_missing_lib"]["error"]
    assert "unknown hook 'infrence'" in rows["misspelled_hook"]["error"]
    assert "does not implement hook(s) test, infer, assign_index" in rows["incomplete"]["error"]
    assert "budget" in rows["unknown_argument"]["error"] and "unknown_argument" in rows["unknown_argument"]["error"]
    # the failures are logged with the plugin's name, and nothing else broke
    assert 'Error loading plugin "needs_missing_lib" (distribution alectio-test-broken)' in result.stderr


def test_plugins_without_all_hides_builtins(broken_env):
    rows = by_name(json.loads(alectio(broken_env, "plugins").stdout))
    assert "sqlite" not in rows and "digits_lr" in rows


def test_load_plugins_env_var_loads_only_the_named(broken_env):
    result = alectio(broken_env, "plugins", "--all", ALECTIO_LOAD_PLUGINS="digits_lr")
    rows = by_name(json.loads(result.stdout))
    assert "digits_lr" in rows and "sqlite" in rows  # built-ins always load
    assert not {"needs_missing_lib", "good_listener", "unknown_argument"} & set(rows)
    assert result.stderr == ""


def test_broken_plugins_do_not_stop_a_loop(broken_env, tmp_path):
    script = (
        "from alectio_core import Engine, open_storage\n"
        f"e = Engine(open_storage('sqlite:///{tmp_path}/a.db'))\n"
        "x = e.create_experiment('digits_lr', strategy=None, initial=30, loops=1)\n"
        "print(e.run_loop(x['id'], 0)['status'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=broken_env)
    assert result.stdout.strip() == "done", result.stderr


def test_a_misspelled_hook_is_one_line_suggesting_the_spec_hook(broken_env, tmp_path):
    result = alectio(broken_env, "run", "misspelled_hook", "--storage", str(tmp_path / "a.db"), ALECTIO_LOAD_PLUGINS="misspelled_hook")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: model 'misspelled_hook' (distribution alectio-test-broken) failed to load: unknown hook 'infrence' "
        "(did you mean 'infer'?) in model 'misspelled_hook'; known hooks: assign_index, infer, model_info, test, train"
    ]


def test_a_plugin_that_fails_to_load_is_one_line_each(broken_env):
    result = alectio(broken_env, "plugins")
    lines = result.stderr.splitlines()
    assert all(line.startswith('Error loading plugin "') for line in lines), lines
    assert sorted(line.split('"')[1] for line in lines) == ["incomplete", "misspelled_hook", "needs_missing_lib", "unknown_argument"]
    assert (
        'Error loading plugin "unknown_argument" (distribution alectio-test-broken): hook \'register_strategies\' of plugin '
        "'unknown_argument' asks for argument 'budget', which alectio does not pass; register_strategies takes: register"
    ) in lines


def test_nothing_is_loaded_at_import_time():
    code = (
        "import sys, alectio_core, alectio_core.plugins as p\n"
        "assert p.loading._registry is None\n"
        "assert 'alectio_test_digits' not in sys.modules and 'flask' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- in-process: fake plugins registered by name -----------------------------------


def test_unknown_model_lists_installed_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'nope'; installed models: .*digits_lr"):
        plugins.get_model("nope")


def test_model_hook_with_unknown_argument_is_rejected_naming_the_plugin():
    registry = plugins.load_plugins()
    module = types.ModuleType("typo")
    module.train = lambda labelled: None  # British spelling is not an argument of train
    assert not plugins.register_model(registry, "typo_model", lambda: module)
    error = registry.errors.pop()
    assert error["name"] == "typo_model" and "labelled" in error["error"] and "typo_model" in error["error"]
    assert "typo_model" not in registry.models


def test_a_misspelled_argument_is_named_with_the_closest_one():
    registry = plugins.load_plugins()
    module = types.ModuleType("typo")
    module.train = lambda labelled, ckpt_file: None
    assert not plugins.register_model(registry, "typo_model", lambda: module)
    assert registry.errors.pop()["error"] == (
        "hook 'train' of model 'typo_model' asks for argument 'labelled' (did you mean 'labeled'?), which alectio "
        "does not pass; train takes: labeled, labels, resume_from, ckpt_file, loop, config, payload"
    )


def test_a_hook_argument_with_a_default_is_flagged_when_the_model_loads(caplog):
    # pluggy passes no argument an implementation gives a default: this train would
    # always see labels=None, so train on nothing people labelled.
    registry = plugins.load_plugins()
    module = types.ModuleType("defaults")
    module.train = lambda labeled, ckpt_file, labels=None: None
    module.test = lambda ckpt_file: {"predictions": [], "labels": []}
    module.infer = lambda unlabeled, ckpt_file: {"outputs": {}}
    module.assign_index = lambda: ["a"]
    with caplog.at_level("WARNING", logger="alectio_core.plugins"):
        assert plugins.register_model(registry, "defaults_model", lambda: module)
    assert "hook 'train' of model 'defaults_model' gives argument 'labels' a default, so it is never passed" in caplog.text
    assert "write 'labels' without '=None'" in caplog.text


def test_a_misspelled_listener_hook_lists_only_the_spec_hooks():
    class Listener:
        @hookimpl
        def loop_finishd(self, experiment):
            pass

    registry = plugins.load_plugins()
    assert not plugins.register_plugin(registry, "typo_listener", Listener)
    error = registry.errors.pop()["error"]
    assert error.startswith("unknown hook 'loop_finishd' (did you mean 'loop_finished'?) in plugin 'typo_listener'; known hooks: ")
    known = error.split("known hooks: ")[1].split(", ")
    assert "loop_finishd" not in known and {"loop_finished", "register_storage"} <= set(known)


class FakeStrategy:
    name = "always_first"

    def select(self, chunks, k, *, rng, task, num_classes):
        return [int(i) for idx, _ in chunks for i in idx][:k]


class FakeStrategyPlugin:
    @hookimpl
    def register_strategies(self, register):
        register(FakeStrategy())


class WrongRegistration:
    @hookimpl
    def register_strategies(self, register):
        register(FakeStrategy)  # the class, not an instance


@pytest.fixture
def registered():
    registry = plugins.load_plugins()
    names = []

    def add(name, plugin):
        plugins.register_plugin(registry, name, lambda: plugin)
        names.append(name)
        return registry

    yield add
    for name in names:
        registry.pm.unregister(name=name)
        registry.plugins = [p for p in registry.plugins if p["name"] != name]
    registry._contributions.clear()
    registry.errors = [e for e in registry.errors if e["name"] not in names]


def test_hook_register_strategies(registered):
    """A third-party strategy is usable by name."""
    registered("fake_strategies", FakeStrategyPlugin())
    assert isinstance(plugins.get_strategy("always_first"), FakeStrategy)
    report = by_name(plugins.report())
    assert report["fake_strategies"]["kind"] == "strategy"
    assert report["fake_strategies"]["provides"] == {"strategies": ["always_first"]}


def test_bad_registration_names_plugin_and_says_how_to_fix(registered):
    registry = registered("wrong_registration", WrongRegistration())
    plugins.get_strategies()
    error = registry.errors[-1]
    assert error["name"] == "wrong_registration"
    assert "forgotten the '()'" in error["error"]


def test_model_call_wraps_plugin_exceptions(fake_model):
    model = fake_model("m", train=lambda labeled: 1 / 0)
    with pytest.raises(PluginError, match="model 'm', hook 'train': raised ZeroDivisionError"):
        model.call("train", labeled=[1], labels=None, resume_from=None, ckpt_file="x", loop=0, config={})


class TeamStorage:
    """A third-party storage plugin: a scheme that maps to sqlite files in a team folder."""

    def __init__(self, folder):
        self.folder = folder

    @hookimpl
    def register_storage(self, register):
        from alectio_plugins.storage_sqlite import SQLiteStorage

        register("team", lambda url, options: SQLiteStorage(self.folder / (url.split("://", 1)[1] + ".db")))


class CustomMetrics:
    @hookimpl
    def register_metrics(self, register):
        register("regression", lambda predictions, labels, class_labels=None: {"max_error": max(abs(p - t) for p, t in zip(predictions, labels))})


def test_hook_register_storage(registered, tmp_path):
    """A third-party storage scheme is opened by URL."""
    from alectio_core.storage import open_storage

    registered("team_storage", TeamStorage(tmp_path))
    store = open_storage("team://project1")
    assert store.path == tmp_path / "project1.db" and store.path.exists()


def test_hook_register_metrics(registered):
    """Third-party metrics replace the built-in ones for a task."""
    from alectio_core import compute_metrics

    registered("custom_metrics", CustomMetrics())
    assert compute_metrics("regression", [1.0, 5.0], [2.0, 2.0]) == {"max_error": 3.0}


# -- a model first asked for by several threads at once ------------------------


class GatedEntryPoint:
    """A pending ``alectio.models`` entry point whose import is slow: it
    holds until every other caller has looked the model up."""

    def __init__(self, name: str, callers: int, fail: bool = False):
        self.name, self.dist, self.fail = name, None, fail
        self.loads = 0
        self.callers = callers
        self.looked: set[int] = set()  # threads other than the importer that looked it up
        self.all_looked = threading.Event()
        self.importer: int | None = None

    def saw(self) -> None:
        me = threading.get_ident()
        if me != self.importer:
            self.looked.add(me)
            if len(self.looked) == self.callers - 1:
                self.all_looked.set()

    def load(self):
        self.loads += 1
        self.importer = threading.get_ident()
        self.looked.discard(self.importer)
        if len(self.looked) == self.callers - 1:
            self.all_looked.set()
        # Deadlock guard only: every caller looks the model up before waiting for it.
        assert self.all_looked.wait(60), "the other callers never looked the model up"
        if self.fail:
            raise ImportError("No module named 'torchvision'")
        module = types.ModuleType(self.name)
        module.assign_index = lambda: ["a", "b"]
        module.train = lambda: None
        module.test = lambda: {"predictions": [], "labels": []}
        module.infer = lambda unlabeled, writer: None
        return module


class WatchedPending(dict):
    """``registry.pending_models``, telling the entry point who looks it up."""

    def __init__(self, items, watch: GatedEntryPoint):
        super().__init__(items)
        self.watch = watch

    def get(self, key, default=None):
        if key == self.watch.name:
            self.watch.saw()
        return super().get(key, default)

    def pop(self, key, *default):
        if key == self.watch.name:
            self.watch.saw()
        return super().pop(key, *default)

    def __contains__(self, key):
        if key == self.watch.name:
            self.watch.saw()
        return super().__contains__(key)


@pytest.fixture
def gated_model():
    registry = plugins.load_plugins()
    original = registry.pending_models

    def make(callers: int, fail: bool = False) -> GatedEntryPoint:
        ep = GatedEntryPoint(f"gated_{len(registry.errors)}_{callers}_{fail}", callers, fail)
        registry.pending_models = WatchedPending({**original, ep.name: ep}, ep)
        return ep

    yield make
    for name in [n for n in registry.models if n.startswith("gated_")]:
        del registry.models[name]
    registry.errors[:] = [e for e in registry.errors if not e["name"].startswith("gated_")]
    registry.pending_models = original


def first_touch_from_threads(name: str, callers: int) -> list:
    start = threading.Barrier(callers)

    def call(_):
        start.wait()
        try:
            return plugins.get_model(name)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(call, range(callers)))


def test_concurrent_first_callers_all_get_the_model_imported_once(gated_model):
    ep = gated_model(callers=4)
    got = first_touch_from_threads(ep.name, 4)
    assert [type(g).__name__ for g in got] == ["Model"] * 4, got
    assert len({id(g) for g in got}) == 1
    assert ep.loads == 1


def test_concurrent_first_callers_all_get_the_load_error(gated_model):
    ep = gated_model(callers=3, fail=True)
    got = first_touch_from_threads(ep.name, 3)
    assert all(isinstance(g, PluginError) for g in got), got
    assert {str(g) for g in got} == {
        f"model {ep.name!r} failed to load: ImportError: No module named 'torchvision'"
    }
    assert ep.loads == 1


class OlderStorage:
    """A storage plugin written for alectio 0.1: its backend lacks the lease methods."""

    @hookimpl
    def register_storage(self, register):
        from alectio_core.storage import Storage

        class Old(Storage):  # every 0.1 method, none of the lease ones
            pass

        for name in set(Storage.__abstractmethods__) - {"read_lease", "write_lease"}:
            setattr(Old, name, lambda self, *a, **k: None)
        Old.__abstractmethods__ = frozenset({"read_lease", "write_lease"})
        register("old", lambda url, options: Old())


def test_a_storage_plugin_for_an_older_interface_is_one_line_naming_what_it_lacks(registered):
    from alectio_core.errors import StorageError
    from alectio_core.storage import open_storage

    registered("old_storage", OlderStorage())
    with pytest.raises(StorageError) as info:
        open_storage("old://x")
    message = str(info.value)
    assert "\n" not in message and "'old' storage plugin does not implement" in message
    assert "read_lease" in message and "write_lease" in message and "docs/storage-plugins.md" in message
