"""The loop engine: what one loop passes to the hooks, what it stores, and
how every kind of bad input fails the loop while earlier loops stay intact."""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest

from alectio_core import hookimpl, plugins
from alectio_core.errors import ConflictError, LoopCancelled, NotFoundError, PluginError, ValidationError


def run_two_good_loops(engine, name, **experiment):
    exp = engine.create_experiment(name, strategy=None, initial=4, loops=5, **experiment)
    engine.record_selection(exp["id"], 0, [0, 1, 2, 3])
    engine.run_loop(exp["id"], 0)
    engine.record_selection(exp["id"], 1, [10, 11])
    engine.run_loop(exp["id"], 1)
    return exp


def assert_loops_intact(engine, exp, loops=(0, 1)):
    for k in loops:
        state = engine.get_loop(exp["id"], k)
        assert state["status"] == "done"
        results = engine.results(exp["id"], k)
        assert results["metrics"]["accuracy"] == 0.75
        idx, _ = engine.outputs(exp["id"], k)
        assert idx.size == exp["pool_size"] - state["labeled"]


# -- the happy path ------------------------------------------------------------


def test_hook_train(engine, fake_model):
    """train gets the union of the selections, loop k-1's checkpoint and a new path to write."""
    seen = []

    def train(labeled, resume_from, ckpt_file, loop, config, payload):
        seen.append(dict(labeled=labeled, resume_from=resume_from, ckpt_file=ckpt_file, loop=loop, config=config, payload=payload))
        with open(ckpt_file, "w") as f:
            f.write(f"weights after loop {loop}")
        return {"labels": ["cat" if i % 2 else "dog" for i in labeled]}

    fake_model("m", train=train)
    exp = engine.create_experiment("m", strategy=None, initial=3, loops=3, config={"lr": 0.1})
    engine.record_selection(exp["id"], 0, [5, 1, 3])
    state0 = engine.run_loop(exp["id"], 0)
    engine.record_selection(exp["id"], 1, [0, 7])
    engine.run_loop(exp["id"], 1)

    first, second = seen
    assert first["labeled"] == [1, 3, 5] and first["resume_from"] is None and first["loop"] == 0
    assert second["labeled"] == [0, 1, 3, 5, 7] and second["loop"] == 1
    # resume_from is loop 0's real checkpoint file, ckpt_file a new path in the experiment's folder
    assert second["resume_from"] == first["ckpt_file"]
    assert open(second["resume_from"]).read() == "weights after loop 0"
    assert os.path.dirname(first["ckpt_file"]).endswith(os.path.join(exp["id"], "loop_0")) and first["ckpt_file"] != second["ckpt_file"]
    assert first["config"] == {"lr": 0.1}
    # the seed's payload carries the same data
    assert second["payload"]["labeled"] == second["labeled"] and second["payload"]["resume_from"] == first["ckpt_file"]

    assert state0["status"] == "done" and state0["labeled"] == 3
    assert state0["per_class_counts"] == {"cat": 3}
    assert engine.results(exp["id"], 1)["insights"]["per_class_counts"] == {"cat": 4, "dog": 1}
    assert state0["started_at"] <= state0["finished_at"] and state0["train_time"] >= 0
    assert set(state0["stage_times"]) == {"train", "test", "metrics", "infer"}


def test_hook_test(engine, fake_model):
    """test gets the checkpoint train wrote in this loop; what it returns is
    stored as the loop's predictions and ground truth, and scored."""
    seen = []

    def train(ckpt_file, loop):
        with open(ckpt_file, "w") as f:
            f.write(f"weights {loop}")

    def test(ckpt_file, loop, config, payload):
        seen.append((open(ckpt_file).read(), loop, config, payload["ckpt_file"] == ckpt_file))
        return {"predictions": [1, 0, 1, 1], "labels": [1, 0, 0, 1]}

    fake_model("m", train=train, test=test)
    exp = run_two_good_loops(engine, "m", config={"lr": 0.1})
    assert seen == [("weights 0", 0, {"lr": 0.1}, True), ("weights 1", 1, {"lr": 0.1}, True)]
    results = engine.results(exp["id"], 1)
    assert (results["predictions"], results["ground_truth"]) == ([1, 0, 1, 1], [1, 0, 0, 1])
    assert results["metrics"]["accuracy"] == 0.75


def test_hook_infer(engine, fake_model):
    """infer gets the sorted records not labeled yet and this loop's
    checkpoint; the rows it streams are the loop's outputs."""
    seen = []

    def train(ckpt_file, loop):
        with open(ckpt_file, "w") as f:
            f.write(f"weights {loop}")

    def infer(unlabeled, ckpt_file, loop, config, writer):
        seen.append((list(unlabeled), open(ckpt_file).read(), loop, config))
        writer.extend(unlabeled, [[float(i), -1.0] for i in unlabeled])

    fake_model("m", train=train, infer=infer)
    exp = run_two_good_loops(engine, "m", config={"lr": 0.1})
    assert seen == [
        ([i for i in range(20) if i > 3], "weights 0", 0, {"lr": 0.1}),
        ([i for i in range(20) if i > 3 and i not in (10, 11)], "weights 1", 1, {"lr": 0.1}),
    ]
    idx, values = engine.outputs(exp["id"], 1)
    assert sorted(idx.tolist()) == seen[1][0]
    np.testing.assert_array_equal(values[:, 0], idx)


def test_hook_assign_index(engine, fake_model):
    """assign_index gets the experiment's config; its mapping is the pool."""
    seen = []

    def assign_index(config, payload):
        seen.append((config, payload))
        return {i: f"img_{i}.png" for i in range(config["pool"])}

    fake_model("m", assign_index=assign_index)
    exp = engine.create_experiment("m", strategy=None, initial=2, loops=1, config={"pool": 30})
    assert seen == [({"pool": 30}, {"config": {"pool": 30}})]
    assert exp["pool_size"] == 30
    assert engine.storage.get_index_map(exp["id"]) == [f"img_{i}.png" for i in range(30)]


def test_hook_model_info(engine, fake_model):
    """model_info's task, labels and declared settings shape the experiment."""
    seen = []

    def model_info(config):
        seen.append(dict(config))
        return {"task": "multilabel", "labels": ["cat", "dog"], "settings": {"epochs": 10, "lr": 0.1}}

    fake_model("m", model_info=model_info, test=lambda: {"predictions": [[0], [0, 1]], "labels": [[0], [1]]})
    exp = engine.create_experiment("m", strategy=None, initial=2, loops=1, config={"lr": 0.5})
    assert seen and seen[0] == {"lr": 0.5}
    assert (exp["task"], exp["labels"], exp["config"]) == ("multilabel", ["cat", "dog"], {"epochs": 10, "lr": 0.5})
    assert "hamming_loss" in engine.run_loop(exp["id"], 0)["metrics"]  # scored as the task it declared


def test_results_are_stored_and_read_back(engine, fake_model):
    fake_model("m")
    exp = run_two_good_loops(engine, "m")
    results = engine.results(exp["id"], 1)
    assert results["predictions"] == [0, 1, 1, 0] and results["ground_truth"] == [0, 1, 0, 0]
    assert results["metrics"]["accuracy"] == 0.75
    assert results["insights"]["num_labeled"] == 6
    idx, values = engine.outputs(exp["id"], 1)
    labeled = engine.labeled(exp["id"], 1)
    assert sorted(idx.tolist()) == sorted(set(range(20)) - set(labeled.tolist()))
    assert values.dtype == np.float32 and values.shape == (14, 2)
    np.testing.assert_array_equal(values[:, 0], idx % 3)
    assert engine.storage.get_index_map(exp["id"])[7] == "r7"
    assert [p["loop"] for p in engine.learning_curve(exp["id"])] == [0, 1]


def test_seed_style_plugin_installed_from_a_package(engine, installed_test_model):
    """digits_lr is pip-installed by conftest and written as ``def train(payload)``."""
    exp = engine.create_experiment(installed_test_model, strategy=None, initial=60, loops=2, seed=3)
    assert exp["pool_size"] == 1400 and exp["task"] == "classification"
    state = engine.run_loop(exp["id"], 0)
    assert state["status"] == "done" and state["metrics"]["accuracy"] > 0.6
    assert sum(state["per_class_counts"].values()) == 60


def test_dict_predictions_are_aligned_by_key(engine, fake_model):
    fake_model("m", test=lambda: {"predictions": {"b": 1, "a": 0}, "labels": {"a": 0, "b": 0}})
    exp = engine.create_experiment("m", strategy=None, initial=2, loops=1)
    engine.run_loop(exp["id"], 0)
    assert engine.results(exp["id"], 0)["predictions"] == [0, 1]
    assert engine.results(exp["id"], 0)["ground_truth"] == [0, 0]


def test_infer_may_return_outputs_instead_of_streaming(engine, fake_model):
    fake_model("m", infer=lambda unlabeled: {"outputs": {i: np.array([i, -i], dtype=np.float64) for i in unlabeled}})
    exp = engine.create_experiment("m", strategy=None, initial=5, loops=1)
    engine.run_loop(exp["id"], 0)
    idx, values = engine.outputs(exp["id"], 0)
    assert idx.size == 15
    np.testing.assert_array_equal(values[:, 1], -idx)


# -- selections --------------------------------------------------------------


@pytest.mark.parametrize(
    "selection, message",
    [
        ([1, 2, 2], "index 2 appears more than once"),
        ([1, -3], "index -3 is outside the pool 0..19"),
        ([1, 20], "index 20 is outside the pool 0..19"),
        ([1, "x"], "must hold integer indices"),
        ([], "is empty"),
    ],
)
def test_bad_selections_are_rejected(engine, fake_model, selection, message):
    fake_model("m")
    exp = engine.create_experiment("m", strategy=None, initial=2, loops=2)
    with pytest.raises(ValidationError, match=message):
        engine.record_selection(exp["id"], 0, selection)
    with pytest.raises(NotFoundError):
        engine.storage.get_selection(exp["id"], 0)


def test_selection_cannot_repeat_an_earlier_loop_or_change_a_finished_one(engine, fake_model):
    fake_model("m")
    exp = run_two_good_loops(engine, "m")
    first = engine.storage.get_selection(exp["id"], 0)
    with pytest.raises(ValidationError, match=f"index {first[0]} was already selected"):
        engine.record_selection(exp["id"], 2, [int(first[0])])
    with pytest.raises(ConflictError, match="loop 1 is done"):
        engine.record_selection(exp["id"], 1, [12])
    assert engine.storage.get_selection(exp["id"], 1).tolist() == [10, 11]


def test_loops_run_in_order_and_only_once(engine, fake_model):
    fake_model("m")
    exp = engine.create_experiment("m", strategy=None, initial=2, loops=3)
    engine.record_selection(exp["id"], 1, [9])
    with pytest.raises(ConflictError, match="needs loop 0 done first"):
        engine.run_loop(exp["id"], 1)
    engine.run_loop(exp["id"], 0)
    with pytest.raises(ConflictError, match="already done"):
        engine.run_loop(exp["id"], 0)


# -- plugins that misbehave ----------------------------------------------------


def _boom(**_):
    raise RuntimeError("CUDA out of memory")


def _writer_rows(rows):
    def infer(unlabeled, writer):
        for i, row in rows(unlabeled):
            writer.add(i, row)

    return infer


BAD_HOOKS = {
    "train raises": (dict(train=lambda labeled: _boom()), "model 'bad', hook 'train': raised RuntimeError: CUDA out of memory"),
    "test raises": (dict(test=lambda: _boom()), "hook 'test': raised RuntimeError"),
    "test misses labels": (dict(test=lambda: {"predictions": [1]}), "hook 'test': result is missing key(s) labels"),
    "test lengths differ": (
        dict(test=lambda: {"predictions": [1, 0], "labels": [1]}),
        "hook 'test': 2 predictions but 1 labels",
    ),
    "test not a dict": (dict(test=lambda: [1, 2]), "hook 'test': must return a dict"),
    "infer raises": (dict(infer=lambda unlabeled: _boom()), "hook 'infer': raised RuntimeError"),
    "infer misses a record": (
        dict(infer=_writer_rows(lambda u: [(i, [1.0]) for i in u[1:]])),
        "hook 'infer', index {first}: outputs miss 1 unlabeled record",
    ),
    "infer adds a labeled record": (
        dict(infer=_writer_rows(lambda u: [(i, [1.0]) for i in u] + [(min(set(range(20)) - set(u)), [1.0])])),
        "hook 'infer', index {labeled}: index {labeled} is labeled",
    ),
    "infer adds an unknown record": (
        dict(infer=_writer_rows(lambda u: [(i, [1.0]) for i in u] + [(99, [1.0])])),
        "hook 'infer', index 99: index 99 is not in the pool",
    ),
    "infer repeats a record": (
        dict(infer=lambda unlabeled, writer: writer.extend([unlabeled[0], unlabeled[0]], [[1.0], [2.0]])),
        "hook 'infer', index {first}: index {first} was given more than once",
    ),
    "infer mixes widths": (
        dict(infer=_writer_rows(lambda u: [(i, [1.0] * (1 if i == u[0] else 2)) for i in u])),
        "hook 'infer', index {second}: output has width 2, earlier rows have width 1",
    ),
    "infer returns NaN": (
        dict(infer=_writer_rows(lambda u: [(i, [math.nan if i == u[2] else 0.0]) for i in u])),
        "hook 'infer', index {third}: output holds NaN or inf",
    ),
    "infer returns inf in a dict": (
        dict(infer=lambda unlabeled: {"outputs": {i: [math.inf] for i in unlabeled}}),
        "hook 'infer', index {first}: output holds NaN or inf",
    ),
    "infer returns garbage": (dict(infer=lambda unlabeled: "outputs"), "hook 'infer': must return"),
}


@pytest.mark.parametrize("case", sorted(BAD_HOOKS))
def test_bad_plugin_fails_the_loop_and_keeps_earlier_loops(engine, fake_model, case):
    hooks, message = BAD_HOOKS[case]
    fake_model("m")
    exp = run_two_good_loops(engine, "m")
    engine.record_selection(exp["id"], 2, [12])
    labeled = engine.labeled(exp["id"], 2).tolist()
    unlabeled = sorted(set(range(20)) - set(labeled))
    expected = message.replace("bad", "m").format(
        first=unlabeled[0], second=unlabeled[1], third=unlabeled[2], labeled=labeled[0]
    )
    fake_model("m", **hooks)  # the model misbehaves from loop 2 on

    with pytest.raises(PluginError) as info:
        engine.run_loop(exp["id"], 2)

    assert expected in str(info.value)
    state = engine.get_loop(exp["id"], 2)
    assert state["status"] == "failed" and state["error"] == str(info.value)
    with pytest.raises(NotFoundError):
        engine.storage.get_result(exp["id"], 2, "metrics")
    with pytest.raises(NotFoundError):
        next(engine.storage.iter_outputs(exp["id"], 2))
    assert_loops_intact(engine, exp)
    # the failed loop can run again once the model is fixed
    fake_model("m")
    assert engine.run_loop(exp["id"], 2)["status"] == "done"


class Recorder:
    """A lifecycle listener plugin."""

    def __init__(self):
        self.events = []

    @hookimpl
    def loop_started(self, experiment, loop):
        self.events.append(("loop_started", experiment["id"], loop))

    @hookimpl
    def stage_started(self, loop, stage):
        self.events.append(("stage_started", loop, stage))

    @hookimpl
    def loop_finished(self, loop, status, error):
        self.events.append(("loop_finished", loop, status, error))


@pytest.fixture
def heard(engine, fake_model):
    """What a listener plugin hears over a loop that succeeds and one whose test hook fails."""
    recorder = Recorder()
    registry = plugins.load_plugins()
    plugins.register_plugin(registry, "recorder", lambda: recorder)
    try:
        fake_model("m")
        exp = engine.create_experiment("m", strategy=None, initial=3, loops=2)
        engine.run_loop(exp["id"], 0)
        fake_model("m", test=lambda: None)
        engine.record_selection(exp["id"], 1, [int(i) for i in set(range(20)) - set(engine.labeled(exp["id"], 0).tolist())][:2])
        with pytest.raises(PluginError):
            engine.run_loop(exp["id"], 1)
    finally:
        registry.pm.unregister(name="recorder")
        registry.plugins = [p for p in registry.plugins if p["name"] != "recorder"]
    return exp, recorder.events


def test_hook_loop_started(heard):
    exp, events = heard
    assert [e for e in events if e[0] == "loop_started"] == [("loop_started", exp["id"], 0), ("loop_started", exp["id"], 1)]
    assert events[0][0] == "loop_started"  # before any stage


def test_hook_stage_started(heard):
    _, events = heard
    assert [e for e in events if e[0] == "stage_started"] == [
        ("stage_started", 0, "train"),
        ("stage_started", 0, "test"),
        ("stage_started", 0, "metrics"),
        ("stage_started", 0, "infer"),
        ("stage_started", 1, "train"),
        ("stage_started", 1, "test"),
    ]


def test_hook_loop_finished(heard):
    _, events = heard
    finished = [e for e in events if e[0] == "loop_finished"]
    assert finished[0] == ("loop_finished", 0, "done", None) and events[5] == finished[0]  # after loop 0's stages
    assert finished[1][:3] == ("loop_finished", 1, "failed") and events[-1] == finished[1]
    assert "hook 'test': must return a dict" in finished[1][3]


def test_cancel_between_stages_and_inside_infer(engine, fake_model):
    cancel = threading.Event()

    def train(labeled):
        cancel.set()  # cancelled while training: the loop stops before test

    fake_model("m", train=train)
    exp = engine.create_experiment("m", strategy=None, initial=3, loops=2)
    with pytest.raises(LoopCancelled):
        engine.run_loop(exp["id"], 0, cancel=cancel)
    state = engine.get_loop(exp["id"], 0)
    assert state["status"] == "cancelled" and state["stage"] == "train"

    cancel.clear()
    calls = []

    def infer(unlabeled, writer):
        for i in unlabeled:
            calls.append(i)
            if len(calls) == 3:
                cancel.set()
            writer.add(i, [1.0])

    fake_model("m", infer=infer)
    engine.chunk_rows = 1  # every row is a chunk, so the writer checks after each
    with pytest.raises(LoopCancelled):
        engine.run_loop(exp["id"], 0, cancel=cancel)
    assert len(calls) == 3 and engine.get_loop(exp["id"], 0)["status"] == "cancelled"


@pytest.mark.parametrize(
    "pool, message",
    [
        ({0: "a", 2: "c"}, "model 'm', hook 'assign_index', index 2: keys must be exactly 0..1, found 2"),
        ({0: "a", "one": "b"}, "hook 'assign_index': key 'one' is not an integer index"),
        ("a.png,b.png", "hook 'assign_index': must return a mapping index -> reference, got str"),
    ],
)
def test_bad_index_maps_are_refused_and_nothing_is_created(engine, fake_model, pool, message):
    fake_model("m", assign_index=lambda: pool)
    with pytest.raises(PluginError, match=message):
        engine.create_experiment("m", strategy=None, initial=1, loops=1)
    assert engine.storage.list_experiments() == []


def test_index_map_keys_may_be_strings_of_integers(engine, fake_model):
    fake_model("m", assign_index=lambda: {"1": "b.png", "0": "a.png"})
    exp = engine.create_experiment("m", strategy=None, initial=1, loops=1)
    assert engine.storage.get_index_map(exp["id"]) == ["a.png", "b.png"]


def test_a_queued_loop_0_takes_its_initial_records_when_it_runs(engine, fake_model):
    fake_model("m")
    exp = engine.create_experiment("m", strategy=None, initial=4, loops=1)
    queued = engine.queue_loop(exp["id"], 0)
    state = engine.run_loop(exp["id"], 0)
    assert state["status"] == "done" and state["labeled"] == 4
    assert state["queued_at"] == queued["queued_at"] <= state["started_at"]


@pytest.mark.parametrize("bad", [[2**70], ["7\n"], [1.5]])
def test_selections_that_are_not_indices_are_400s_not_crashes(engine, fake_model, bad):
    fake_model("m")
    exp = engine.create_experiment("m", strategy=None, initial=1, loops=1)
    with pytest.raises(ValidationError):
        engine.record_selection(exp["id"], 0, bad)


def test_identifiers_with_a_trailing_newline_are_refused(engine, fake_model):
    fake_model("m")
    with pytest.raises(ValidationError, match="invalid experiment id"):
        engine.create_experiment("m", strategy=None, initial=1, loops=1, experiment_id="abc\n")


# -- deleting next to leases ---------------------------------------------------------


def test_a_loop_left_running_by_a_dead_process_does_not_block_deleting(engine, fake_model):
    fake_model("deletable")
    exp = engine.create_experiment("deletable", initial=5, loops=2)
    # what `alectio run` killed with -9 leaves: running, and no live lease
    engine.storage.put_loop_state(exp["id"], 0, {"experiment_id": exp["id"], "loop": 0, "status": "running"})
    engine.delete_experiment(exp["id"])
    with pytest.raises(NotFoundError):
        engine.get_experiment(exp["id"])


def test_a_loop_another_process_holds_refuses_deleting(engine, fake_model):
    import time

    fake_model("held")
    exp = engine.create_experiment("held", initial=5, loops=2)
    engine.run_loop(exp["id"], 0)
    # another server holds the done loop (platform mode sending its results again)
    found = engine.storage.read_lease(exp["id"], 0)
    engine.storage.write_lease(exp["id"], 0, {"owner": "other:1:x", "expires_at": time.time() + 60}, found and found[1])
    with pytest.raises(ConflictError, match="loop 0"):
        engine.delete_experiment(exp["id"])
    assert engine.get_experiment(exp["id"])["id"] == exp["id"]


def test_an_id_deleted_and_created_again_elsewhere_has_its_new_pool(storage, fake_model):
    from alectio_core.engine import Engine

    fake_model("big", pool=20)
    fake_model("small", pool=8)
    here, elsewhere = Engine(storage), Engine(storage)
    here.create_experiment("big", experiment_id="same", initial=2, strategy=None)
    here.record_selection("same", 0, [15])  # this process has seen the 20-record pool
    elsewhere.delete_experiment("same")
    elsewhere.create_experiment("small", experiment_id="same", initial=2, strategy=None)
    with pytest.raises(ValidationError, match="index 15 is outside the pool 0..7"):
        here.record_selection("same", 0, [15])
