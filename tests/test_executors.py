"""Executors without a Ray cluster: the ``executor:`` section and its
errors, the ``register_executors`` hook, and the ray executor's checkpoint
lookup in a worker. (On Ray itself: test_executor_ray.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alectio_core import hookimpl, plugins
from alectio_core.cli import cli
from alectio_core.config import ExecutorSettings, load_config, parse_config
from alectio_core.engine import Engine
from alectio_core.errors import ConfigError, StorageError
from alectio_core.server import close_app, create_app
from alectio_core.storage import open_storage
from alectio_plugins import executor_ray
from alectio_plugins.executor_local import LocalExecutor


def run_with(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    args = ["run", "ray_mlp", "--loops", "1", "--initial", "3", "--strategy", "random", "--config", str(path), "--storage", f"sqlite:///{tmp_path}/a.db"]
    return path, CliRunner().invoke(cli, args)


def test_local_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.executor == ExecutorSettings(name="local", settings={})
    assert isinstance(Engine(open_storage(f"sqlite:///{tmp_path}/a.db"), config).executor, LocalExecutor)


@pytest.mark.parametrize(
    "section, message",
    [
        ("name: ray\n  shard: 2", "{path}: unknown key 'executor.shard' (did you mean 'shards'?); known keys: address, max_retries, num_cpus_per_shard, num_gpus_per_shard, shards"),
        ("name: ray\n  shards: 0", "{path}: key 'executor.shards' must be >= 1"),
        ("name: ray\n  num_gpus_per_shard: one", "{path}: key 'executor.num_gpus_per_shard' must be float, got str 'one'"),
        ("name: rai", "{path}: key 'executor.name': no executor 'rai' is installed (did you mean 'ray'?); installed: local, ray"),
        ("name: local\n  shards: 2", "{path}: unknown key 'executor.shards': the local executor takes no settings (only 'name')"),
    ],
)
def test_a_bad_executor_section_is_one_error_line_naming_the_key(tmp_path, section, message):
    path, result = run_with(tmp_path, f"executor:\n  {section}\n")
    assert result.exit_code == 1
    assert result.output.splitlines() == ["Error: " + message.format(path=path)]


def test_without_ray_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives: import ray fails
    path, result = run_with(tmp_path, "executor:\n  name: ray\n  shards: 2\n")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {path}: key 'executor.name': the ray executor needs Ray, which is not installed: pip install 'alectio[ray]'"
    ]


def test_the_server_refuses_to_start_with_a_bad_executor_and_takes_a_good_one(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'executor.max_retry' \\(did you mean 'max_retries'\\?\\)"):
        create_app(parse_config({"executor": {"name": "ray", "max_retry": 1}}, "serve.yaml"), storage=f"sqlite:///{tmp_path}/a.db")
    app = create_app(parse_config({"executor": {"name": "ray", "shards": 4}}, "serve.yaml"), storage=f"sqlite:///{tmp_path}/a.db")
    try:
        executor = app.extensions["alectio"]["engine"].executor
        assert isinstance(executor, executor_ray.RayExecutor) and executor.settings.shards == 4
    finally:
        close_app(app)


class Recording:
    """An executor that runs jobs locally and keeps what it was given."""

    def __init__(self, settings, source):
        self.settings, self.source = settings, source
        self.jobs = []

    def score(self, job):
        self.jobs.append((job.part, job.records.tolist()))
        LocalExecutor().score(job)


class RecordingPlugin:
    def __init__(self):
        self.made: list[Recording] = []

    @hookimpl
    def register_executors(self, register):
        def factory(settings, source):
            self.made.append(Recording(settings, source))
            return self.made[-1]

        register("recording", factory)


@pytest.fixture
def recording():
    registry = plugins.load_plugins()
    plugin = RecordingPlugin()
    plugins.register_plugin(registry, "recording_executor", lambda: plugin)
    registry.forget_contributions()
    yield plugin
    registry.pm.unregister(name="recording_executor")
    registry.plugins = [p for p in registry.plugins if p["name"] != "recording_executor"]
    registry.forget_contributions()


def test_hook_register_executors(recording, storage, fake_model):
    """A third-party executor named in config.yaml gets its settings and runs each loop's infer."""
    fake_model("scored", pool=30)
    engine = Engine(storage, parse_config({"executor": {"name": "recording", "nodes": 3}}, "test.yaml"))
    assert isinstance(recording, RecordingPlugin)
    [executor] = recording.made
    assert executor.settings == {"nodes": 3} and executor.source == "test.yaml"
    assert {r["name"]: r for r in plugins.report()}["recording_executor"]["kind"] == "executor"
    eid = engine.create_experiment("scored", initial=5, batch_size=5, loops=2, strategy="random")["id"]
    assert engine.run_loop(eid, 0)["status"] == "done"
    labeled = set(storage.get_selection(eid, 0).tolist())
    assert executor.jobs == [("pool", [i for i in range(30) if i not in labeled])]
    indices, _ = engine.outputs(eid, 0)
    assert sorted(indices.tolist()) == executor.jobs[0][1]


# -- the ray executor's checkpoint in a worker (no cluster needed) -------------


def shard_spec(storage, eid: str, attempt: str, path: str, checkpoint) -> dict:
    return {
        "storage_url": storage.url,
        "storage_options": dict(getattr(storage, "options", {}) or {}),
        "job": {"ckpt_file": path, "checkpoint": checkpoint, "experiment_id": eid, "loop": 0, "attempt": attempt},
    }


def test_a_worker_without_the_checkpoint_file_downloads_the_attempts_copy_from_s3(moto_s3, monkeypatch, tmp_path):
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    storage = open_storage(f"s3://{moto_s3.create_bucket()}/al", {"cache_dir": str(tmp_path / "cache")})
    path = storage.checkpoint_path("exp", 0, "attempt1")
    with open(path, "w") as f:
        f.write('{"seed": 7}')
    reference = storage.save_checkpoint("exp", 0, "attempt1")
    storage.put_result("exp", 0, "attempt1", "checkpoint", reference)  # staged, not committed
    os.remove(path)  # as on another machine: the file train wrote is not there
    worker_cache = tmp_path / "other-node"
    spec = shard_spec(storage, "exp", "attempt1", path, reference)
    spec["storage_options"]["cache_dir"] = str(worker_cache)  # that machine's own cache
    got = executor_ray._checkpoint(spec)
    assert got.startswith(str(worker_cache)) and open(got).read() == '{"seed": 7}'
    storage.close()


def test_a_worker_that_cannot_read_a_sqlite_loops_checkpoint_says_to_share_the_folder(storage, tmp_path):
    spec = shard_spec(storage, "exp", "attempt1", str(tmp_path / "elsewhere" / "attempt1.ckpt"), {"path": "x"})
    with pytest.raises(StorageError, match="is not on this Ray node, and sqlite:///.* cannot send it: share its folder between the nodes"):
        executor_ray._checkpoint(spec)


def test_a_worker_that_can_read_the_checkpoint_uses_it_where_it_is(storage, tmp_path):
    path = tmp_path / "attempt1.ckpt"
    path.write_text("{}")
    assert executor_ray._checkpoint(shard_spec(storage, "exp", "attempt1", str(path), {"path": str(path)})) == str(path)


RUN_A_LOOP = """
import sys
from alectio_core.config import parse_config
from alectio_core.engine import Engine
from alectio_core.storage import open_storage
engine = Engine(open_storage(sys.argv[1]), parse_config({"executor": {"name": sys.argv[2]}}, "test.yaml"))
if sys.argv[2] == "local":
    eid = engine.create_experiment("ray_mlp", initial=20, batch_size=20, loops=2)["id"]
    engine.run_loop(eid, 0)
print("ray" in sys.modules)
"""


@pytest.mark.parametrize("name", ["local", "ray"])
def test_ray_is_imported_only_by_a_loop_that_runs_on_it(tmp_path, name):
    """A loop on ``local`` never imports Ray (seconds and a few hundred MB),
    and configuring ``ray`` does not either until a loop runs."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_A_LOOP, f"sqlite:///{tmp_path}/a.db", name], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
