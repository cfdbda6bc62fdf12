"""The ray executor on a real local Ray cluster (one per test session,
``tests/ray_support.py``), with SQLite files and S3 (moto over HTTP).

The model is ``ray_mlp`` (``tests/packages/alectio-test-ray``): a fixed
numpy MLP, deterministic, which can kill its own worker or hold infer when
its config says so.
"""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from installer import PACKAGES, on_path, pip_install
from ray_support import ray_cluster, ray_s3, ray_storage_env  # noqa: F401 (fixtures)

from alectio_core import loop_run
from alectio_core.cli import cli
from alectio_core.config import parse_config
from alectio_core.engine import Engine
from alectio_core.errors import LoopCancelled, NotFoundError, ShardError
from alectio_core.leases import LeaseLost
from alectio_core.storage import open_storage

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]

CHUNK_ROWS = 50  # several chunks per shard, so a worker dies with some of its chunks stored


@pytest.fixture(params=["sqlite", "s3"])
def store(request, tmp_path):
    if request.param == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    else:
        server = request.getfixturevalue("ray_storage_env")
        storage = open_storage(f"s3://{server.create_bucket()}/al", {"endpoint_url": server.endpoint_url, "cache_dir": str(tmp_path / "cache")})
    yield storage
    storage.close()


def engine(storage, executor: dict | None = None, **sections) -> Engine:
    data = {"executor": {"name": "ray", **executor}} if executor is not None else {}
    return Engine(storage, parse_config({**data, **sections}, "test.yaml"), chunk_rows=CHUNK_ROWS)


def create(eng: Engine, eid: str, strategy: str = "diverse_margin", **config) -> str:
    return eng.create_experiment("ray_mlp", experiment_id=eid, strategy=strategy, batch_size=20, initial=20, loops=3, seed=7, config=config)["id"]


def stored(storage, eid: str, loop: int, part: str = "pool") -> bytes:
    """A loop's committed outputs and embeddings, as the bytes they are stored as, in order."""
    chunks = list(storage.iter_outputs(eid, loop, part=part, embeddings=True))
    assert chunks and all(emb is not None for _, _, emb in chunks)
    return b"".join(np.concatenate([c[n] for c in chunks]).tobytes() for n in range(3))


def run(eng: Engine, eid: str, loops: int, on_stage=None) -> None:
    for loop in range(loops):
        assert eng.run_loop(eid, loop, on_stage=on_stage)["status"] == "done"


@pytest.mark.parametrize("shards, strategy", [(1, "diverse_margin"), (3, "diverse_margin"), (2, "coreset")])
def test_ray_stores_what_local_stores_and_selects_the_same(store, shards, strategy):
    """coreset also has the labeled records scored (the "labeled" part)."""
    local, ray = engine(store), engine(store, {"shards": shards})
    create(local, "local", strategy)
    create(ray, "ray", strategy)
    run(local, "local", 2)
    progress = []
    run(ray, "ray", 2, on_stage=lambda stage, state: progress.append(state["progress"]))
    parts = ("pool", "labeled") if strategy == "coreset" else ("pool",)
    for loop in (0, 1):
        for part in parts:  # byte-identical, in the same order
            assert stored(store, "ray", loop, part) == stored(store, "local", loop, part)
    for loop in (1, 2):
        assert store.get_selection("ray", loop).tolist() == store.get_selection("local", loop).tolist()
    assert ray.results("ray", 1)["metrics"] == local.results("local", 1)["metrics"]
    total = 300 - 20  # loop 0 scores every record but the initial ones
    assert {"done": total, "total": total, "shards": {"done": shards, "total": shards}} in progress


def test_a_worker_killed_mid_shard_is_retried_and_its_partial_rows_never_count(store, tmp_path, monkeypatch):
    monkeypatch.setattr(loop_run, "PROGRESS_INTERVAL", 0)  # every progress report reaches the loop state
    local, ray = engine(store), engine(store, {"shards": 2, "max_retries": 1})
    create(local, "local")
    marker = tmp_path / "killed-once"
    # Record 250 is in the second shard; its worker dies after storing 120 rows (two chunks and a bit).
    create(ray, "ray", kill_at=250, kill_marker=str(marker), driver_pid=os.getpid())
    run(local, "local", 1)
    seen: list[int] = []
    run(ray, "ray", 1, on_stage=lambda stage, state: stage == "infer" and state["progress"] and seen.append(state["progress"]["done"]))
    assert marker.exists()  # the worker did die
    assert seen == sorted(seen) and seen[-1] == 300 - 20  # the retried shard's restart does not set the bar back
    assert stored(store, "ray", 0) == stored(store, "local", 0)
    assert ray.get_loop("ray", 0)["status"] == "done"
    if store.url.startswith("s3://"):  # the dead try's chunks are gone, not just unlisted
        keys = [o["Key"] for o in store._list(store.key("experiments", "ray", "loops", "0", ""))]
        tries = {k.split("/shards/")[1].split("/")[0] for k in keys if "/shards/" in k}
        assert len(tries) == 2 and all("-t1-" in t for t in tries if t.startswith("s00000")) and any("-t2-" in t for t in tries)


def test_a_shard_that_always_dies_fails_the_loop_naming_it_and_loses_nothing(store, tmp_path):
    ray = engine(store, {"shards": 2, "max_retries": 1})
    switch = tmp_path / "kill"
    eid = create(ray, "dies", kill_at=250, kill_switch=str(switch), driver_pid=os.getpid())
    run(ray, eid, 1)
    before = stored(store, eid, 0)
    switch.touch()
    with pytest.raises(ShardError) as failed:
        ray.run_loop(eid, 1)
    message = str(failed.value)
    assert "infer shard 2 of 2 (" in message and "unlabeled records, indices " in message
    assert "its Ray worker died 2 times" in message
    state = ray.get_loop(eid, 1)
    assert state["status"] == "failed" and state["error"] == message
    assert stored(store, eid, 0) == before and ray.results(eid, 0)["metrics"]  # loop 0 untouched
    switch.unlink()
    assert ray.run_loop(eid, 1)["status"] == "done"  # rerunnable once the cause is gone


def test_a_model_the_workers_lack_fails_the_loop_saying_to_install_it_on_every_node(tmp_path):
    """``driver_only`` is installed where only this process looks (its
    ``sys.path``): Ray's workers, started before with their own path, do not
    have it, as a package installed on the head node and not on the others."""
    site = pip_install(tmp_path / "site", PACKAGES / "alectio-test-driveronly")
    storage = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    try:
        with on_path(site):
            ray = engine(storage, {"shards": 2})
            eid = ray.create_experiment("driver_only", batch_size=20, initial=20, loops=2)["id"]
            with pytest.raises(ShardError) as failed:
                ray.run_loop(eid, 0)
    finally:
        storage.close()
    message = str(failed.value)
    assert "model 'driver_only' is not installed on Ray node" in message
    assert "install the model's package on every Ray node" in message


@pytest.mark.parametrize("stop", ["cancel", "lease"])
def test_a_cancel_or_a_lost_lease_stops_the_running_shards(store, tmp_path, stop):
    """While both shards hold in infer: a cancel (the loop ends cancelled,
    and can run again), or another server taking the loop's lease over (the
    loop stops and writes nothing more). Either way the workers are killed,
    not left running. On S3 a shard has stored chunks of its own when it is
    stopped: a cancel leaves none of them to a committed manifest."""
    storage = store
    config = parse_config({"executor": {"name": "ray", "shards": 2}, "server": {"lease_seconds": 1.5}}, "test.yaml")  # renewed every 0.5 s
    ray = Engine(storage, config, chunk_rows=20)  # a shard's first batch (40 rows) is two chunks before it holds
    hold, started = tmp_path / "hold", tmp_path / "started"
    hold.touch()
    eid = create(ray, "held", hold_file=str(hold), started_file=str(started))
    cancel = threading.Event()
    outcome: list = []

    def run_it():
        try:
            ray.run_loop(eid, 0, cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run_it)
    runner.start()
    try:
        for _ in range(600):  # until a worker is inside infer, holding
            if started.exists() and started.read_text():
                break
            time.sleep(0.05)
        pid = int(started.read_text())
        attempt = ray.get_loop(eid, 0)["attempt"]
        s3 = storage.url.startswith("s3://")
        if s3:
            assert [k for k in _attempt_keys(storage, eid, attempt) if "/outputs/shards/" in k and k.endswith(".val.npy")]
        if stop == "cancel":
            cancel.set()
        else:
            record, version = storage.read_lease(eid, 0)
            storage.write_lease(eid, 0, {**record, "owner": "elsewhere:1:x", "expires_at": time.time() + 60}, version)
        runner.join(60)
        assert isinstance(outcome[0], LoopCancelled if stop == "cancel" else LeaseLost)
        for _ in range(200):  # the held workers are killed, not left waiting on the file
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid)
        if stop == "cancel":
            assert ray.get_loop(eid, 0)["status"] == "cancelled"
            with pytest.raises(NotFoundError):  # nothing of the attempt is committed
                list(storage.iter_outputs(eid, 0))
            if s3:  # its shards' chunks are removed with it, and no joined manifest names them
                assert _attempt_keys(storage, eid, attempt) == []
            hold.unlink()
            assert ray.run_loop(eid, 0)["status"] == "done"  # rerunnable
            rows = np.concatenate([chunk[0] for chunk in storage.iter_outputs(eid, 0)])
            assert sorted(rows.tolist()) == sorted(set(rows.tolist())) and rows.size == 300 - 20  # the rerun's rows, each once
        else:
            assert ray.get_loop(eid, 0)["status"] == "running"  # the other server's to write
    finally:
        hold.unlink(missing_ok=True)
        runner.join(60)


def _attempt_keys(storage, eid: str, attempt: str) -> list[str]:
    return [o["Key"] for o in storage._list(storage.key("experiments", eid, "loops", "0", "attempts", attempt, ""))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child of the raylet may linger as a zombie until reaped
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_alectio_run_honours_the_executor_section(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("executor:\n  name: ray\n  shards: 2\n")
    db = f"sqlite:///{tmp_path}/a.db"
    args = ["run", "ray_mlp", "--loops", "2", "--initial", "20", "--batch", "20", "--strategy", "random", "--config", str(config), "--storage", db]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    storage = open_storage(db)
    try:
        (experiment,) = storage.list_experiments()
        assert [s["status"] for s in storage.list_loop_states(experiment["id"])] == ["done", "done"]
    finally:
        storage.close()


def test_shards_asking_for_more_than_the_cluster_has_are_named_in_the_log(tmp_path, caplog):
    """Ray keeps such a task waiting (an autoscaler may add a node): the log
    says why the loop does not move, and a cancel still ends it."""
    storage = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    ray = engine(storage, {"shards": 2, "num_gpus_per_shard": 1})
    eid = create(ray, "gpus")
    cancel = threading.Event()
    with pytest.raises(LoopCancelled):
        ray.run_loop(eid, 0, cancel=cancel, on_stage=lambda stage, state: stage == "infer" and cancel.set())
    assert (
        "each shard asks for 1 GPU (executor.num_gpus_per_shard) and the Ray cluster has 0 now: "
        "the shards wait until a node with them joins (cancel the loop to stop waiting)"
    ) in caplog.text
    storage.close()


def test_shards_that_disagree_on_widths_fail_the_loop_naming_both(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    ray = engine(storage, {"shards": 2})
    eid = create(ray, "widths", wide_when_scoring=299)  # the last record: in the second shard
    with pytest.raises(ShardError) as failed:
        ray.run_loop(eid, 0)
    message = str(failed.value)
    shard1 = re.escape("shard 1 of 2 (") + r"\d+ unlabeled records, indices \d+\.\.\d+\)"
    shard2 = re.escape("shard 2 of 2 (") + r"\d+ unlabeled records, indices \d+\.\.299\)"
    assert re.fullmatch(f"infer ({shard1}|{shard2}) wrote output rows of width [34], but ({shard1}|{shard2}) wrote width [34]", message), message
    assert ray.get_loop(eid, 0)["status"] == "failed"
    storage.close()
