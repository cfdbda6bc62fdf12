"""What the dashboard's pages need from the JSON API: each experiment's
``summary`` in the list (read at once for all of them), and a 400 that
names the request field at fault."""

from __future__ import annotations

import pytest
from server_support import api, hold, release, slow_model  # noqa: F401 (fixtures)

from alectio_core.metrics import headline

SMALL = {"pool_size": 60}


def summaries(api) -> dict:
    response = api.get("/api/v1/experiments")
    assert response.status_code == 200
    return {e["id"]: e["summary"] for e in response.json["experiments"]}


def test_the_list_summarises_each_experiment(api, hold):
    idle = api.create(initial=10, batch_size=10, loops=3, config=SMALL)["id"]
    partway = api.create(initial=10, batch_size=10, loops=3, config=SMALL)["id"]
    finished = api.create(initial=10, batch_size=10, loops=1, config=SMALL)["id"]
    failing = api.create(initial=10, loops=2, config={**SMALL, "fail_in": "train"})["id"]
    held = hold()
    running = api.create(initial=10, loops=2, config={**SMALL, "hold_file": held})["id"]
    for eid in (partway, finished, failing, running):
        assert api.start(eid).status_code == 202
    for eid in (partway, finished, failing):
        api.wait_status(eid, 0)
    api.wait_status(running, 0, "running")

    got = summaries(api)
    assert got[idle] == {"status": "idle", "loops_done": 0, "labeled": 0, "metric": None}
    assert got[failing] == {"status": "failed", "loops_done": 0, "labeled": 0, "metric": None}
    assert got[running]["status"] == "running" and got[running]["loops_done"] == 0
    assert got[finished]["status"] == "done"
    # Waiting for its next loop: idle, with what its last finished loop measured.
    point = api.get(f"/api/v1/experiments/{partway}/metrics").json["curve"][-1]
    assert got[partway] == {
        "status": "idle",
        "loops_done": 1,
        "labeled": point["labeled"],
        "metric": {"name": "accuracy", "value": point["metrics"]["accuracy"]},
    }
    assert point["labeled"] == 10
    release(held)
    api.wait_status(running, 0)
    assert summaries(api)[running]["status"] == "idle"


def test_a_cancelled_loop_shows_in_the_list(api, hold):
    held = hold()
    eid = api.create(initial=10, loops=2, config={**SMALL, "hold_file": held})["id"]
    api.start(eid)
    api.wait_status(eid, 0, "running")
    assert api.post(f"/api/v1/experiments/{eid}/loops/0/cancel").status_code == 202
    release(held)
    api.wait_status(eid, 0, "cancelled")
    assert summaries(api)[eid]["status"] == "cancelled"


def test_the_list_reads_every_loop_state_at_once(api):
    """200 experiments: one read of all loop states, not one per experiment."""
    ids = []
    for _ in range(200):
        ids.append(api.engine.create_experiment("slow_test", initial=5, loops=2, config={"pool_size": 10})["id"])
    storage = api.storage
    calls = {"one": 0, "all": 0}
    one, everything = storage.list_loop_states, storage.list_all_loop_states

    def list_loop_states(experiment_id):
        calls["one"] += 1
        return one(experiment_id)

    def list_all_loop_states():
        calls["all"] += 1
        return everything()

    storage.list_loop_states, storage.list_all_loop_states = list_loop_states, list_all_loop_states
    try:
        got = summaries(api)
    finally:
        del storage.list_loop_states, storage.list_all_loop_states
    assert sorted(got) == sorted(ids)
    assert calls == {"one": 0, "all": 1}


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ({"precision": 0.5, "accuracy": 0.9}, {"name": "accuracy", "value": 0.9}),
        ({"mae": 1.5, "mse": 3.0, "r2": None}, {"name": "mae", "value": 1.5}),
        ({"confusion_matrix": [[1]], "mAP": None, "mAP_50": 0.4}, {"name": "mAP_50", "value": 0.4}),
        ({"flag": True, "loss": 2}, {"name": "loss", "value": 2}),
        ({"confusion_matrix": [[1]]}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_headline_metric(metrics, expected):
    assert headline(metrics) == expected


# -- a 400 names the field ------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"model": "slow_test", "batch_size": "ten"}, "batch_size", "batch_size must be integer"),
        ({"model": "slow_test", "batch_size": -1}, "batch_size", "batch_size must be between 0"),
        ({"model": "slow_test", "initial": 0}, "initial", "initial must be between 1"),
        ({"model": "slow_test", "loops": 1.5}, "loops", "loops must be integer"),
        ({"model": "slow_test", "seed": -3}, "seed", "seed must be between"),
        ({"model": "slow_test", "initial": 1000, "config": SMALL}, "initial", "larger than the pool"),
        ({"model": "slow_test", "config": []}, "config", "config must be object"),
        ({"model": "no_such_model"}, "model", "no_such_model"),
        ({"model": ""}, "model", "model must be 1-200 characters"),
        ({"batch_size": 10}, "model", "missing the required field 'model'"),
        ({"model": "slow_test", "strategy": "no_such_strategy"}, "strategy", "no_such_strategy"),
        ({"model": "slow_test", "stop": ["no_such_stop"]}, "stop", "no_such_stop"),
        ({"model": "slow_test", "labels": "robots"}, "labels", "labels must be one of"),
        ({"model": "slow_test", "batchsize": 10}, "batchsize", "unknown field 'batchsize'"),
        ({"model": "slow_test", "id": "../x"}, "id", "id '../x' does not match"),
    ],
)
def test_a_bad_field_is_named_in_the_error(api, body, field, words):
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert api.storage.list_experiments() == []


def test_an_error_about_the_whole_body_names_no_field(api):
    response = api.post("/api/v1/experiments", json=["slow_test"])
    assert response.status_code == 400
    assert "field" not in response.json["error"]
    response = api.post("/api/v1/experiments", data="{", content_type="application/json")
    assert response.status_code == 400 and "field" not in response.json["error"]
