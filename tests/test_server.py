"""The HTTP API through the app's test client: experiments, loops as
background jobs, selections, cancel, the worker pool, logs."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from server_support import api, hold, make_app, release, slow_model, wait_for  # noqa: F401 (fixtures)

from alectio_core import hookimpl, plugins
from alectio_core.config import DEFAULT_STRATEGY

BASE = "/api/v1/experiments"


# -- experiments ---------------------------------------------------------------


def test_health_answers_without_a_token(api):
    response = api.client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_models_and_plugins_are_listed(api):
    models = api.get("/api/v1/models").json["models"]
    slow = next(m for m in models if m["name"] == "slow_test")
    assert slow["distribution"] == "alectio-test-slow"
    assert {"train", "test", "infer", "assign_index"} <= set(slow["hooks"])
    names = {p["name"] for p in api.get("/api/v1/plugins").json["plugins"]}
    assert {"sqlite", "slow_test"} <= names


def test_each_plugin_lists_the_names_it_provides(api):
    rows = {p["name"]: p for p in api.get("/api/v1/plugins").json["plugins"]}
    assert rows["strategy_random"]["provides"] == {"strategies": ["random"]}
    assert rows["s3"]["provides"] == {"storage": ["s3"]}
    assert rows["stopping_plateau"]["provides"] == {"stopping": ["plateau"]}
    assert rows["labeller_labelstudio"]["provides"] == {"labellers": ["labelstudio"]}
    assert rows["executor_local"]["provides"] == {"executors": ["local"]}
    assert "provides" not in rows["slow_test"]  # a model provides itself
    # Every strategy an experiment can name, the default among them: what the new-experiment form offers.
    strategies = [n for row in rows.values() for n in row.get("provides", {}).get("strategies", [])]
    assert sorted(strategies) == sorted(plugins.get_strategies()) and DEFAULT_STRATEGY in strategies


def test_create_experiment_answers_201_with_every_field(api):
    body = {
        "model": "slow_test",
        "strategy": "random",
        "batch_size": 7,
        "initial": 11,
        "loops": 4,
        "seed": 3,
        "config": {"pool_size": 300},
    }
    response = api.post(BASE, json=body)
    assert response.status_code == 201
    created = response.json
    assert created["id"]
    assert {k: created[k] for k in body if k != "config"} == {k: v for k, v in body.items() if k != "config"}
    assert created["config"]["pool_size"] == 300
    assert created["pool_size"] == 300
    assert response.headers["Location"] == created["url"] == f"{BASE}/{created['id']}"

    shown = api.get(created["url"])
    assert shown.status_code == 200 and shown.json == created
    listed = api.get(BASE).json["experiments"]
    assert [e["id"] for e in listed] == [created["id"]]


def test_create_experiment_fills_defaults_and_takes_an_id(api):
    created = api.create(id="my-exp")
    assert created["id"] == "my-exp"
    assert (created["strategy"], created["batch_size"], created["initial"], created["loops"], created["seed"]) == (
        "diverse_margin",  # the one default, as in `alectio run`
        100,
        100,
        5,
        0,
    )
    again = api.post(BASE, json={"model": "slow_test", "id": "my-exp"})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


def test_a_refused_create_stores_nothing(api, tmp_path):
    from server_support import snapshot

    api.create(id="kept", initial=5, config={"pool_size": 200})
    before = snapshot(tmp_path / "alectio.db")
    again = api.post(BASE, json={"model": "slow_test", "id": "kept", "initial": 5, "config": {"pool_size": 300}})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    assert snapshot(tmp_path / "alectio.db") == before  # byte for byte: the pool was not replaced
    assert api.storage.get_index_map("kept") == [f"record_{i}" for i in range(200)]


def test_experiments_are_listed_oldest_first(api):
    ids = [api.create(initial=5)["id"] for _ in range(3)]
    assert [e["id"] for e in api.get(BASE).json["experiments"]] == ids


def test_an_experiment_shows_its_loops_done_and_latest_metrics(api):
    experiment = api.create(initial=20, batch_size=10, loops=3)
    assert (experiment["loops_done"], experiment["latest_metrics"]) == (0, None)
    eid = experiment["id"]
    for loop in (0, 1):
        api.start(eid)
        assert api.wait_status(eid, loop)["status"] == "done"
    shown = api.get(f"{BASE}/{eid}").json
    assert shown["loops_done"] == 2
    assert shown["latest_metrics"] == api.loop(eid, 1)["metrics"]
    assert shown["latest_metrics"]["accuracy"] != api.loop(eid, 0)["metrics"]["accuracy"]  # loop 1's, not loop 0's


# -- deleting -----------------------------------------------------------------------


def _rows_of(api, eid):
    """Every stored row that names the experiment, table by table, and its checkpoint folder."""
    from pathlib import Path

    from server_support import snapshot

    db = Path(api.storage.path)
    rows = {t: [r for r in found if eid in map(str, r)] for t, found in snapshot(db).items() if t != "tokens"}
    return {t: r for t, r in rows.items() if r}, (db.parent / "alectio-checkpoints" / eid).exists()


def test_delete_removes_an_experiment_and_everything_stored_for_it(api):
    keep = api.create(initial=10, loops=2)
    experiment = api.create(initial=10, batch_size=10, loops=2)
    eid = experiment["id"]
    for e in (keep["id"], eid):
        api.start(e)
        assert api.wait_status(e, 0)["status"] == "done"
    rows, checkpoints = _rows_of(api, eid)
    assert {"experiments", "loops", "selections", "index_maps", "results", "output_chunks"} <= set(rows) and checkpoints

    response = api.client.delete(f"{BASE}/{eid}", headers=api.headers)
    assert response.status_code == 200
    assert response.json == {"id": eid, "deleted": True, "loops": 1}
    assert _rows_of(api, eid) == ({}, False)
    for path in (f"{BASE}/{eid}", f"{BASE}/{eid}/loops/0", f"{BASE}/{eid}/metrics"):
        assert api.get(path).status_code == 404, path
    assert [e["id"] for e in api.get(BASE).json["experiments"]] == [keep["id"]]
    assert api.get(f"{BASE}/{keep['id']}").json["loops_done"] == 1
    again = api.client.delete(f"{BASE}/{eid}", headers=api.headers)
    assert again.status_code == 404 and again.json["error"]["code"] == "not_found"


def test_delete_is_refused_while_a_loop_runs(api, hold):
    held = hold()
    experiment = api.create(initial=10, config={"hold_file": held})
    eid = experiment["id"]
    api.start(eid)
    wait_for(lambda: api.loop(eid, 0)["stage"] == "train", what="train")
    response = api.client.delete(f"{BASE}/{eid}", headers=api.headers)
    assert response.status_code == 409
    assert response.json["error"] == {
        "code": "conflict",
        "message": f"experiment {eid!r} has loop 0 running; cancel it or let it finish before deleting the experiment",
    }
    release(held)
    assert api.wait_status(eid, 0)["status"] == "done"  # the loop was not disturbed
    assert api.client.delete(f"{BASE}/{eid}", headers=api.headers).status_code == 200


def test_delete_needs_a_token(api):
    eid = api.create(initial=10)["id"]
    assert api.client.delete(f"{BASE}/{eid}").status_code == 401
    assert api.get(f"{BASE}/{eid}").status_code == 200


# -- loops as background jobs -----------------------------------------------------


def test_start_answers_202_while_train_still_runs(api, hold):
    held = hold()
    experiment = api.create(initial=10, batch_size=10, loops=3, config={"hold_file": held})
    response = api.start(experiment["id"])
    # The train stage cannot finish while the hold file exists: the answer came first.
    assert response.status_code == 202
    assert response.json == {
        "experiment_id": experiment["id"],
        "loop": 0,
        "status": "queued",
        "url": f"{BASE}/{experiment['id']}/loops/0",
    }
    assert response.headers["Location"] == response.json["url"]
    running = wait_for(lambda: (s := api.loop(experiment["id"], 0))["stage"] == "train" and s, what="train stage")
    assert running["status"] == "running"
    assert running["started_at"] and running["finished_at"] is None and running["error"] is None
    release(held)
    done = api.wait_status(experiment["id"], 0)
    assert done["status"] == "done"


def test_a_finished_loop_shows_timestamps_stage_times_and_metrics(api):
    experiment = api.create(initial=20, batch_size=10, loops=3)
    api.start(experiment["id"])
    state = api.wait_status(experiment["id"], 0)
    assert state["status"] == "done", state
    assert state["started_at"] <= state["finished_at"]
    assert set(state["stage_times"]) == {"train", "test", "metrics", "infer", "select"}
    assert state["metrics"]["accuracy"] == pytest.approx(0.7)  # the slow model: 20 labeled -> 30 of 100 wrong
    assert state["labeled"] == 20
    assert state["error"] is None and state["stage"] is None
    loops = api.get(f"{BASE}/{experiment['id']}/loops").json["loops"]
    assert [(s["loop"], s["status"]) for s in loops] == [(0, "done")]


def test_loop_0_takes_initial_seeded_random_records(api):
    a = api.create(initial=25, seed=5)
    b = api.create(initial=25, seed=5)
    c = api.create(initial=25, seed=6)
    for experiment in (a, b, c):
        api.start(experiment["id"])
        assert api.wait_status(experiment["id"], 0)["status"] == "done"
    chosen = [api.storage.get_selection(e["id"], 0) for e in (a, b, c)]
    assert len(chosen[0]) == 25 and len(set(chosen[0].tolist())) == 25
    assert np.array_equal(chosen[0], chosen[1])
    assert not np.array_equal(chosen[0], chosen[2])


def test_later_loops_train_on_what_the_strategy_picked(api):
    experiment = api.create(initial=20, batch_size=15, loops=3)
    eid = experiment["id"]
    api.start(eid)
    api.wait_status(eid, 0)
    picked = api.storage.get_selection(eid, 1)
    assert len(picked) == 15
    response = api.start(eid)
    assert response.status_code == 202 and response.json["loop"] == 1
    state = api.wait_status(eid, 1)
    assert state["status"] == "done" and state["labeled"] == 35
    assert set(picked.tolist()) <= set(api.engine.labeled(eid, 1).tolist())
    curve = api.get(f"{BASE}/{eid}/metrics").json
    assert curve["experiment_id"] == eid
    assert [(p["loop"], p["labeled"]) for p in curve["curve"]] == [(0, 20), (1, 35)]
    assert curve["curve"][1]["metrics"]["accuracy"] > curve["curve"][0]["metrics"]["accuracy"]


def test_a_labeller_supplies_selected_indices(api):
    experiment = api.create(initial=10, batch_size=5, loops=3)
    eid = experiment["id"]
    assert api.start(eid, selected=[4, 2, 9]).status_code == 202
    assert api.wait_status(eid, 0)["labeled"] == 3
    assert api.storage.get_selection(eid, 0).tolist() == [2, 4, 9]
    # The strategy picked loop 1's records; the labeller's choice replaces them.
    assert api.start(eid, selected=[100, 101]).status_code == 202
    assert api.wait_status(eid, 1)["labeled"] == 5
    assert api.engine.labeled(eid, 1).tolist() == [2, 4, 9, 100, 101]


@pytest.mark.parametrize(
    "selected, message",
    [
        ([1, -3], "-3"),
        ([5, 5], "more than once"),
        ([499, 500], "outside the pool"),
        ([2], "already selected"),
        ([], "at least 1"),
        ([1, 2.5], "integer"),
        ([True], "integer"),
        ("1,2", "array"),
    ],
)
def test_a_bad_selection_is_400_and_changes_nothing(api, selected, message):
    experiment = api.create(initial=10, batch_size=5, loops=3)
    eid = experiment["id"]
    api.start(eid, selected=[2, 3])
    assert api.wait_status(eid, 0)["status"] == "done", api.loop(eid, 0)
    before = api.storage.get_selection(eid, 1).tolist()
    response = api.start(eid, selected=selected)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid"
    assert message in response.json["error"]["message"]
    assert api.storage.get_selection(eid, 1).tolist() == before
    assert api.get(f"{BASE}/{eid}/loops/1").status_code == 404


def test_starting_a_loop_while_one_runs_is_409(api, hold):
    held = hold()
    experiment = api.create(initial=10, config={"hold_file": held})
    eid = experiment["id"]
    assert api.start(eid).status_code == 202
    second = api.start(eid)
    assert second.status_code == 409
    assert second.json["error"]["code"] == "conflict"
    assert "busy" in second.json["error"]["message"]
    with_selection = api.start(eid, selected=[1, 2])
    assert with_selection.status_code == 409
    release(held)
    assert api.wait_status(eid, 0)["status"] == "done"
    assert len(api.storage.get_selection(eid, 0)) == 10  # the refused selection was not stored


def test_without_a_strategy_later_loops_need_selected(api):
    experiment = api.create(initial=10, strategy=None, loops=3)
    eid = experiment["id"]
    api.start(eid)
    api.wait_status(eid, 0)
    refused = api.start(eid)
    assert refused.status_code == 409
    assert "selected" in refused.json["error"]["message"]
    assert api.start(eid, selected=[400, 401]).status_code == 202
    assert api.wait_status(eid, 1)["status"] == "done"


def test_no_loop_starts_past_the_experiments_loops(api):
    experiment = api.create(initial=10, batch_size=5, loops=1)
    api.start(experiment["id"])
    api.wait_status(experiment["id"], 0)
    refused = api.start(experiment["id"])
    assert refused.status_code == 409 and "all of its 1 loops" in refused.json["error"]["message"]


def test_a_failing_hook_fails_the_loop_which_can_run_again(api):
    experiment = api.create(initial=10, config={"fail_in": "test"})
    eid = experiment["id"]
    api.start(eid)
    state = api.wait_status(eid, 0)
    assert state["status"] == "failed"
    assert state["stage"] == "test"
    assert "slow_test" in state["error"] and "'test'" in state["error"] and "failed on purpose" in state["error"]
    assert state["finished_at"]
    assert api.client.get("/health").status_code == 200
    assert api.start(eid).status_code == 202  # a failed loop can be started again
    assert api.wait_status(eid, 0)["status"] == "failed"


class SlowListener:
    """Keeps a loop's job busy after its outcome is stored (as a slow
    ``loop_finished`` listener does) until ``release`` is set."""

    def __init__(self):
        self.release = threading.Event()

    @hookimpl
    def loop_finished(self, loop, status):
        self.release.wait(30)


@pytest.fixture
def slow_listener(api, monkeypatch):
    """A registered ``SlowListener``, released as soon as a request finds
    the job it keeps busy (the moment a client that saw the loop's outcome
    could hit it)."""
    listener = SlowListener()
    registry = plugins.load_plugins()
    plugins.register_plugin(registry, "slow-listener", lambda: listener)
    runner = api.app.extensions["alectio"]["runner"]
    finishing = runner._finishing

    def saw_finishing(job):
        answer = finishing(job)
        listener.release.set()
        return answer

    monkeypatch.setattr(runner, "_finishing", saw_finishing)
    yield listener
    listener.release.set()
    registry.pm.unregister(name="slow-listener")
    registry.plugins = [p for p in registry.plugins if p["name"] != "slow-listener"]


def test_a_client_that_saw_done_can_start_the_next_loop_at_once(api, slow_listener):
    runner = api.app.extensions["alectio"]["runner"]
    experiment = api.create(initial=10, batch_size=5, loops=3)
    api.start(experiment["id"])
    assert api.wait_status(experiment["id"], 0)["status"] == "done"
    assert runner.active(experiment["id"]) is not None  # the job is still returning
    response = api.start(experiment["id"])
    assert response.status_code == 202, response.json
    assert response.json["loop"] == 1
    assert api.wait_status(experiment["id"], 1)["status"] == "done"


def test_a_client_that_saw_done_can_delete_the_experiment_at_once(api, slow_listener):
    runner = api.app.extensions["alectio"]["runner"]
    eid = api.create(initial=10, batch_size=10, loops=2)["id"]
    api.start(eid)
    assert api.wait_status(eid, 0)["status"] == "done"
    assert runner.active(eid) is not None  # the job is still returning, holding the loop's lease
    assert api.loop(eid, 0)["status"] == "done" and api.get(f"{BASE}/{eid}").json["loops_done"] == 1
    response = api.client.delete(f"{BASE}/{eid}", headers=api.headers)
    assert response.status_code == 200, response.json
    assert response.json == {"id": eid, "deleted": True, "loops": 1}
    assert _rows_of(api, eid) == ({}, False)  # the lease the job gave back too


# -- cancel ----------------------------------------------------------------------


def test_cancel_stops_a_loop_between_stages(api, hold):
    held = hold()
    experiment = api.create(initial=10, config={"hold_file": held})
    eid = experiment["id"]
    api.start(eid)
    wait_for(lambda: api.loop(eid, 0)["stage"] == "train", what="train")
    response = api.post(f"{BASE}/{eid}/loops/0/cancel")
    assert response.status_code == 202
    assert response.json["cancel_requested"] is True
    release(held)
    state = api.wait_status(eid, 0)
    assert state["status"] == "cancelled"
    assert state["stage"] == "train"  # stopped before test started
    assert "cancelled" in state["error"]
    assert api.get(f"{BASE}/{eid}/metrics").json["curve"] == []
    # It can be started again, and runs to the end.
    assert api.start(eid).status_code == 202
    assert api.wait_status(eid, 0)["status"] == "done"


def test_cancel_stops_a_loop_inside_infer(api, hold):
    held = hold("infer")
    experiment = api.create(initial=10, config={"pool_size": 140_000, "infer_hold_file": held})
    eid = experiment["id"]
    api.start(eid)
    # infer streamed its first chunk and is paused: progress is known.
    state = wait_for(lambda: (s := api.loop(eid, 0))["progress"] and s, what="infer progress")
    assert state["stage"] == "infer"
    assert state["progress"] == {"done": 65536, "total": 140_000 - 10}
    assert api.post(f"{BASE}/{eid}/loops/0/cancel").status_code == 202
    release(held)
    state = api.wait_status(eid, 0)
    assert state["status"] == "cancelled"
    assert state["stage"] == "infer"
    assert state["progress"]["done"] < state["progress"]["total"]


def test_a_queued_loop_is_cancelled_at_once(tmp_path, slow_model, hold):
    api = make_app(tmp_path, workers=1)
    try:
        held = hold()
        busy = api.create(initial=10, config={"hold_file": held})
        waiting = api.create(initial=10)
        api.start(busy["id"])
        api.start(waiting["id"])
        assert api.loop(waiting["id"], 0)["status"] == "queued"
        response = api.post(f"{BASE}/{waiting['id']}/loops/0/cancel")
        assert response.status_code == 202
        assert response.json["status"] == "cancelled"
        release(held)
        assert api.wait_status(busy["id"], 0)["status"] == "done"
        assert api.loop(waiting["id"], 0)["status"] == "cancelled"
        assert api.start(waiting["id"]).status_code == 202
        assert api.wait_status(waiting["id"], 0)["status"] == "done"
    finally:
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_cancel_of_a_finished_or_unknown_loop(api):
    experiment = api.create(initial=10, loops=2)
    eid = experiment["id"]
    api.start(eid)
    api.wait_status(eid, 0)
    finished = api.post(f"{BASE}/{eid}/loops/0/cancel")
    assert finished.status_code == 409 and "already done" in finished.json["error"]["message"]
    assert api.post(f"{BASE}/{eid}/loops/1/cancel").status_code == 404
    assert api.post(f"{BASE}/nope/loops/0/cancel").status_code == 404


# -- the worker pool -----------------------------------------------------------------


def test_experiments_run_side_by_side_within_the_worker_pool(tmp_path, slow_model, hold):
    api = make_app(tmp_path, workers=2)
    try:
        held = hold()
        experiments = [api.create(initial=10, config={"hold_file": held})["id"] for _ in range(3)]
        for eid in experiments:
            assert api.start(eid).status_code == 202

        def two_running():
            states = [api.loop(eid, 0)["status"] for eid in experiments]
            return states if states.count("running") == 2 else None

        states = wait_for(two_running, what="two loops running")
        assert states.count("queued") == 1  # the pool holds two; both are blocked in train
        release(held)
        for eid in experiments:
            assert api.wait_status(eid, 0)["status"] == "done"
    finally:
        api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


# -- logs --------------------------------------------------------------------------


def test_a_log_line_per_request_without_the_token(api, caplog):
    caplog.set_level(logging.INFO)
    api.get(f"{BASE}/nope")
    api.client.get(f"{BASE}?token={api.token}")  # no auth header, token in the query
    lines = [r.getMessage() for r in caplog.records if r.name == "alectio_core.server.access"]
    assert len(lines) == 2
    method, path, status, duration, who = lines[0].split()
    assert (method, path, status, who) == ("GET", f"{BASE}/nope", "404", "token=tests")
    assert duration.endswith("ms") and float(duration[:-2]) >= 0
    assert lines[1].split()[:3] == ["GET", BASE, "401"]
    assert not any(api.token in r.getMessage() or api.token.split(".")[1] in r.getMessage() for r in caplog.records)


def test_a_log_line_per_loop_stage(api, caplog):
    caplog.set_level(logging.INFO)
    experiment = api.create(initial=10, loops=2)
    api.start(experiment["id"])
    api.wait_status(experiment["id"], 0)
    stage_lines = [r.getMessage() for r in caplog.records if " stage " in r.getMessage()]
    for stage in ("train", "test", "metrics", "infer", "select"):
        assert any(line.startswith(f"experiment {experiment['id']} loop 0 stage {stage} took ") for line in stage_lines), stage


def test_a_wrong_method_is_405_and_says_what_is_allowed(api):
    response = api.client.delete("/api/v1/experiments", headers=api.headers)
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
