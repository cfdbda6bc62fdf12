"""Labels from people over HTTP (the app's test client), on sqlite and on
S3: an experiment created with labels "alectio", its selection read, labels
posted, a loop refused until they are all in, then trained on them; and
bad labels refused whole, every bad one named, nothing stored."""

from __future__ import annotations

import pytest
from labels_support import CLASSES, POOL, people_model, storage_url  # noqa: F401 (fixture)
from server_support import Api, wait_for  # noqa: F401
from test_server_openapi import check_response

from alectio_core.config import parse_config
from alectio_core.server import create_app
from alectio_core.storage import open_storage
from alectio_core.tokens import create_token

BASE = "/api/v1/experiments"


@pytest.fixture
def client(storage_url, fake_model):
    seen = people_model(fake_model)
    app = create_app(parse_config({}, "test"), storage=storage_url)
    made = Api(app, create_token(app.extensions["alectio"]["storage"], "tests"))
    made.seen = seen
    yield made
    app.extensions["alectio"]["runner"].shutdown(timeout=5)


def create(client, **fields) -> dict:
    body = {"model": "people_lab", "labels": "alectio", "initial": 6, "batch_size": 4, "loops": 3, "strategy": "margin", **fields}
    return client.create(**body)


def stored_labels(storage_url: str, experiment_id: str) -> list[dict]:
    """What the storage holds, read by a storage of its own (not the app's)."""
    storage = open_storage(storage_url)
    try:
        return storage.list_labels(experiment_id)
    finally:
        storage.close()


def test_labels_mode_people_label_each_selection_and_the_next_loop_trains_on_them(client, storage_url):
    experiment = create(client)
    eid = experiment["id"]
    assert experiment["labels_mode"] == "alectio" and experiment["labels"] == CLASSES
    assert client.create(model="people_lab", initial=5)["labels_mode"] == "plugin"  # the default

    selection = client.get(f"{BASE}/{eid}/loops/0/selection")
    assert selection.status_code == 200
    rows = selection.json["rows"]
    assert selection.json["loop"] == 0 and len(rows) == 6
    assert all(r["reference"] == f"r{r['index']}" for r in rows)
    assert {(r["score"], r["prediction"], r["label"], r["skipped"]) for r in rows} == {(None, None, None, False)}
    picked = [r["index"] for r in rows]

    refused = client.start(eid)
    assert refused.status_code == 409
    assert refused.json["error"] == {
        "code": "labels_missing",
        "message": "loop 0 needs 6 more labels (6 selected): label or skip them first",
        "missing": 6,
    }

    half = client.post(f"{BASE}/{eid}/labels", json={"labels": {str(picked[0]): "dog", str(picked[1]): 2}})
    assert half.status_code == 200
    assert half.json == {"experiment_id": eid, "stored": 2, "skipped": 0, "loop": 0, "missing": 4}
    assert client.start(eid).json["error"]["missing"] == 4

    rest = {"labels": {str(i): i % 3 for i in picked[2:5]}, "skip": [picked[5]]}
    done = client.post(f"{BASE}/{eid}/labels", json=rest)
    assert done.json == {"experiment_id": eid, "stored": 3, "skipped": 1, "loop": 0, "missing": 0}
    assert client.start(eid).status_code == 202
    assert client.wait_status(eid, 0)["status"] == "done"
    expected = {picked[0]: 1, picked[1]: 2, **{i: i % 3 for i in picked[2:5]}}
    assert client.seen[-1] == {"labeled": sorted(expected), "labels": expected}  # the skipped record left out

    after = client.get(f"{BASE}/{eid}/loops/1/selection").json["rows"]
    assert len(after) == 4 and not set(r["index"] for r in after) & set(picked)  # skipped: never picked again
    assert all(isinstance(r["score"], float) for r in after)
    assert all(r["prediction"] == r["index"] % 3 for r in after)  # the argmax of loop 0's infer outputs
    assert client.start(eid).json["error"]["missing"] == 4

    latest = client.get(f"{BASE}/{eid}/labels").json
    assert latest["history"] is False
    assert [(e["index"], e["label"], e["skip"]) for e in latest["labels"]] == sorted(
        [(i, v, False) for i, v in expected.items()] + [(picked[5], None, True)]
    )
    assert {(e["source"], e["by"], e["loop"]) for e in latest["labels"]} == {("api", "tests", 0)}

    again = client.post(f"{BASE}/{eid}/labels", json={"labels": {str(picked[0]): "cat"}})
    assert again.json["stored"] == 1 and again.json["loop"] == 1
    history = client.get(f"{BASE}/{eid}/labels?history=1").json["labels"]
    assert [e["label"] for e in history if e["index"] == picked[0]] == [1, 0]  # the history kept
    assert next(e for e in client.get(f"{BASE}/{eid}/labels").json["labels"] if e["index"] == picked[0])["label"] == 0
    assert len(stored_labels(storage_url, eid)) == 7


def test_json_numbers_are_class_ids_and_strings_names_when_the_names_are_numbers(client, storage_url, fake_model):
    people_model(fake_model, "stars", classes=["1", "2", "3", "4", "5"])
    eid = create(client, model="stars")["id"]
    a, b, c, *_ = [r["index"] for r in client.get(f"{BASE}/{eid}/loops/0/selection").json["rows"]]
    posted = client.post(f"{BASE}/{eid}/labels", json={"labels": {str(a): 2, str(b): "2", str(c): "0"}})
    assert posted.status_code == 200, posted.json
    # 2 is class id 2 (named "3"); "2" names class id 1; "0" names no class: it is id 0
    assert {(e["index"], e["label"]) for e in stored_labels(storage_url, eid)} == {(a, 2), (b, 1), (c, 0)}


def test_bad_labels_are_refused_whole_each_named_and_nothing_is_stored(client, storage_url):
    eid = create(client)["id"]
    picked = [r["index"] for r in client.get(f"{BASE}/{eid}/loops/0/selection").json["rows"]]
    unselected = next(i for i in range(POOL) if i not in picked)
    body = {
        "labels": {
            str(picked[0]): "dog",  # fine, yet not stored: the request is refused whole
            "999": 1,  # outside the pool
            str(unselected): 0,  # in no selection
            str(picked[1]): "fish",  # not a class
            str(picked[2]): [1],  # a list for a classification task
            str(picked[3]): 7,  # class id out of range
            "abc": 1,
        },
        "skip": [picked[0]],
    }
    response = client.post(f"{BASE}/{eid}/labels", json=body)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_labels"
    found = {(p["where"], p["index"]): p["message"] for p in error["problems"]}
    assert set(found) == {  # in one answer: the entries wrong on their own and those the experiment refuses
        ('labels["abc"]', None),
        ("skip[0]", picked[0]),
        *((f'labels["{i}"]', i) for i in (999, unselected, *picked[1:4])),
    }
    assert error["message"].startswith("labels: 7 bad rows, nothing stored: ")

    del body["labels"]["abc"], body["skip"]
    error = client.post(f"{BASE}/{eid}/labels", json=body).json["error"]
    found = {p["index"]: p["message"] for p in error["problems"]}
    assert found == {
        999: f"index 999 is outside the pool 0..{POOL - 1}",
        unselected: f"index {unselected} is in no selection of experiment {eid!r}; only selected records take labels",
        picked[1]: "label 'fish' is not a classification label: 'fish' is not one of the experiment's labels ('cat', 'dog', 'bird')",
        picked[2]: "label [1] is not a classification label: a class must be a class id or name, got list",
        picked[3]: "label 7 is not a classification label: class id 7 is out of range (0..2)",
    }
    assert {p["where"] for p in error["problems"]} == {f'labels["{i}"]' for i in found}
    assert client.get(f"{BASE}/{eid}/labels").json["labels"] == []
    assert stored_labels(storage_url, eid) == []
    assert client.start(eid).json["error"]["missing"] == 6


def test_labels_for_an_experiment_the_model_labels_are_a_conflict(client, storage_url):
    eid = client.create(model="people_lab", initial=5)["id"]
    response = client.post(f"{BASE}/{eid}/labels", json={"labels": {"0": 1}})
    assert response.status_code == 409
    assert "labels mode 'plugin'" in response.json["error"]["message"]
    wrong = client.post(f"{BASE}/{eid}/labels", json={"labels": {"abc": 1}})  # no row to store either way: still the mode
    assert wrong.status_code == 409 and "labels mode 'plugin'" in wrong.json["error"]["message"]
    assert stored_labels(storage_url, eid) == []


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_the_new_endpoints_match_the_openapi_document(client):
    doc = client.get("/api/v1/openapi.json").json
    eid = create(client)["id"]
    selection, labels, loops = f"{BASE}/{{experiment_id}}/loops/{{loop}}/selection", f"{BASE}/{{experiment_id}}/labels", f"{BASE}/{{experiment_id}}/loops"
    check_response(doc, BASE, "post", client.post(BASE, json={"model": "people_lab", "labels": "people"}))
    check_response(doc, selection, "get", client.get(f"{BASE}/{eid}/loops/0/selection"))
    check_response(doc, selection, "get", client.get(f"{BASE}/{eid}/loops/4/selection"))
    check_response(doc, loops, "post", client.start(eid))  # 409 labels_missing
    picked = [r["index"] for r in client.get(f"{BASE}/{eid}/loops/0/selection").json["rows"]]
    check_response(doc, labels, "post", client.post(f"{BASE}/{eid}/labels", json={"labels": {"999": 1}}))
    check_response(doc, labels, "post", client.post(f"{BASE}/{eid}/labels", json={"labels": {"x": 1}, "skip": ["y"]}))
    check_response(doc, labels, "post", client.post(f"{BASE}/{eid}/labels", json={"labels": {str(picked[0]): "cat"}}))
    check_response(doc, labels, "get", client.get(f"{BASE}/{eid}/labels"))
    check_response(doc, labels, "get", client.get(f"{BASE}/{eid}/labels?history=1"))
    check_response(doc, labels, "get", client.get(f"{BASE}/nope/labels"))
