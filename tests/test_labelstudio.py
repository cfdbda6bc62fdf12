"""The ``labelstudio`` labeller against a real Label Studio 1.23.2.

Label Studio is installed into a virtualenv of its own and started once for
this module (``labelstudio_server.py``); alectio runs on a real socket so
Label Studio's webhooks reach it. Everything an annotator does goes
through Label Studio's own HTTP API, as its browser would.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests
from labelling_support import CLASSES, pets  # noqa: F401 (a fixture)
from labelstudio_server import Gate, LabelStudioServer, free_port
from server_support import Api, slow_model, wait_for  # noqa: F401 (slow_model: a fixture)
from werkzeug.serving import make_server

from alectio_core.config import parse_config
from alectio_core.server import close_app, create_app
from alectio_core.tokens import create_token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    started = time.monotonic()
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"))
    print(f"\nLabel Studio: installed and started in {time.monotonic() - started:.0f}s (start alone {server.start_seconds:.0f}s)")
    yield server
    server.stop()


@pytest.fixture
def alectio(tmp_path, label_studio, monkeypatch, pets):  # noqa: F811
    """``alectio(**labeller)``: alectio serving on 127.0.0.1 with the
    labelstudio labeller; ``webhook=True`` has Label Studio call it back."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    running = []

    def make(webhook: bool = False, **labeller) -> Api:
        port = free_port()
        settings = {"name": "labelstudio", "url": label_studio.url, "poll_seconds": 3600, **labeller}
        storage = f"sqlite:///{tmp_path}/alectio-{len(running)}.db"
        if webhook:
            settings.update(webhook_url=f"http://127.0.0.1:{port}", webhook_token_env="ALECTIO_WEBHOOK_TOKEN")
            from alectio_core.storage import open_storage

            store = open_storage(storage)
            monkeypatch.setenv("ALECTIO_WEBHOOK_TOKEN", create_token(store, "labelstudio"))
            store.close()
        app = create_app(parse_config({"labeller": settings}, "config.yaml"), storage=storage)
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((app, server))
        return Api(app, create_token(app.extensions["alectio"]["storage"], "tests"))

    yield make
    for app, server in running:
        server.shutdown()
        close_app(app)


# -- Label Studio, as an annotator's browser uses it ------------------------------


def project(ls, experiment_id: str) -> dict | None:
    title = f"alectio {experiment_id}"
    found = [p for p in ls.api("GET", "/api/projects/", params={"title": title}).json()["results"] if p["title"] == title]
    return found[0] if found else None


def tasks(ls, project_id: int, loop: int | None = None) -> list[dict]:
    response = ls.api("GET", "/api/tasks/", params={"project": project_id, "fields": "all", "page_size": 1000})
    assert response.status_code == 200, response.text
    found = response.json()["tasks"]
    return [t for t in found if loop is None or t["data"].get("alectio_loop") == loop]


def annotate(ls, task: dict, *choices: str, cancelled: bool = False) -> dict:
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": list(choices)}}] if choices else []
    response = ls.api("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": result, "was_cancelled": cancelled})
    assert response.status_code == 201, response.text
    return response.json()


def by_index(found: list[dict]) -> dict[int, dict]:
    return {t["data"]["alectio_index"]: t for t in found}


def create(api: Api, **fields) -> str:
    return api.create("pets", labels="alectio", strategy="entropy", initial=4, batch_size=3, loops=3, **fields)["id"]


# -- the tests --------------------------------------------------------------------


def test_selection_out_webhook_in_next_loop_trains_on_exactly_those_labels(alectio, label_studio, pets, caplog):  # noqa: F811
    ls = label_studio
    api = alectio(webhook=True, auto_next=True)
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()

    # loop 0's selection is in Label Studio as tasks carrying the record
    found = project(ls, eid)
    assert found is not None and found["label_config"].count("<Choice ") == 3
    sent = by_index(tasks(ls, found["id"]))
    assert sorted(sent) == sorted(first)
    assert {i: t["data"]["image"] for i, t in sent.items()} == {i: f"r{i}" for i in first}
    assert all(not t["predictions"] for t in sent.values())  # loop 0's records were picked at random: nothing predicted

    # someone adds a task for a record alectio never selected, and labels it
    stranger = next(i for i in range(30) if i not in first)
    ls.api("POST", f"/api/projects/{found['id']}/import", json=[{"image": "x", "alectio_experiment": eid, "alectio_loop": 0, "alectio_index": stranger}])
    (extra,) = [t for t in tasks(ls, found["id"]) if t["data"]["alectio_index"] == stranger]
    with caplog.at_level(logging.INFO):
        annotate(ls, extra, "cat")
        wait_for(lambda: f"an annotation for record {stranger}, which is not in a selection, was ignored" in caplog.text, what="the log line")
    assert api.engine.labels(eid) == {}

    # the annotator labels three records and skips one
    given = {first[0]: "cat", first[1]: "bird", first[2]: "dog"}
    for index, name in given.items():
        annotate(ls, sent[index], name)
    submitted = time.monotonic()  # the batch's last annotation: Label Studio stores it and calls the webhook
    annotate(ls, sent[first[3]], cancelled=True)
    api.wait_status(eid, 0, "running", "done")  # auto_next started it
    print(f"\nlast annotation submitted -> next loop running: {time.monotonic() - submitted:.2f}s (webhook, auto_next)")
    api.wait_status(eid, 0, "done")
    assert pets == [{i: CLASSES.index(name) for i, name in given.items()}]
    assert api.engine.labels(eid)[first[3]]["skip"] is True
    assert {e["source"] for e in api.engine.label_history(eid)} == {"labelstudio"}

    # and loop 1's selection appears, each with loop 0's prediction and the strategy's score
    rows = {r["index"]: r for r in api.engine.selection(eid, 1)}
    second = wait_for(lambda: by_index(tasks(ls, found["id"], loop=1)), what="loop 1's tasks")
    assert sorted(second) == sorted(rows)
    for index, task in second.items():
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == f"{eid}/1"  # the selection of experiment eid's loop 1 (made by loop 0's model)
        assert prediction["score"] == pytest.approx(rows[index]["score"])
        assert prediction["result"][0]["value"]["choices"] == [CLASSES[rows[index]["prediction"]]]


def test_polling_brings_labels_refuses_a_wrong_label_naming_the_record(alectio, label_studio, pets, caplog):  # noqa: F811
    ls = label_studio
    api = alectio(poll_seconds=0.2)
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()
    found = project(ls, eid)
    sent = by_index(tasks(ls, found["id"]))

    with caplog.at_level(logging.WARNING):
        wrong = annotate(ls, sent[first[0]], "horse")  # a label the project was edited to offer, say
        annotate(ls, sent[first[1]], "dog")
        annotate(ls, sent[first[2]], "dog")
        annotate(ls, sent[first[3]], cancelled=True)
        wait_for(lambda: len(api.engine.labels(eid)) == 3, what="the polled labels")
        message = f"record {first[0]} ('r{first[0]}'): label 'horse' is not one of the model's classes: cat, dog, bird"
        record = wait_for(lambda: api.engine.get_experiment(eid)["labeller"]["refused"], what="the refusal")
    assert record == {str(first[0]): message}
    assert message in caplog.text
    assert first[0] not in api.engine.labels(eid) and api.engine.labels(eid)[first[3]]["skip"] is True
    assert api.start(eid).json["error"]["code"] == "labels_missing"  # not started with a record unlabelled

    response = ls.api("PATCH", f"/api/annotations/{wrong['id']}/", json={"result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["bird"]}}]})
    assert response.status_code == 200, response.text
    wait_for(lambda: first[0] in api.engine.labels(eid), what="the corrected label")
    assert api.engine.get_experiment(eid)["labeller"]["refused"] == {}

    submitted = time.monotonic()
    assert api.start(eid).status_code == 202
    api.wait_status(eid, 0, "done")
    print(f"\nannotations stored -> loop 0 done: {time.monotonic() - submitted:.2f}s")
    assert pets == [{first[0]: 2, first[1]: 1, first[2]: 1}]
    wait_for(lambda: tasks(ls, found["id"], loop=1), what="loop 1's tasks")


def test_label_studio_down_when_alectio_sends(alectio, label_studio, caplog):
    gate = Gate(label_studio.port)  # closed: nothing listens there
    api = alectio(url=gate.url, poll_seconds=0.2)
    with caplog.at_level(logging.ERROR):
        eid = create(api)
    assert f"labeller 'labelstudio': could not send loop 0's selection of experiment {eid} (ConnectError" in caplog.text
    assert "trying again every 0.2s" in caplog.text
    assert "0" in api.engine.get_experiment(eid)["labeller"]["unsent"]
    assert api.storage.get_selection(eid, 0).size == 4 and project(label_studio, eid) is None  # kept, not sent

    gate.open()
    try:
        record = wait_for(lambda: (r := api.engine.get_experiment(eid)["labeller"])["sent"] == [0] and r, what="the retry")
        assert record["unsent"] == {}
        found = project(label_studio, eid)
        assert sorted(by_index(tasks(label_studio, found["id"]))) == sorted(api.storage.get_selection(eid, 0).tolist())
        api.app.extensions["alectio"]["labelling"].poll()  # a later poll sends nothing again
        assert len(tasks(label_studio, found["id"])) == 4
    finally:
        gate.close()


def test_a_project_whose_labels_are_not_the_models_classes_is_refused_naming_the_label(alectio, label_studio, caplog):
    config = '<View><Image name="image" value="$image"/><Choices name="label" toName="image"><Choice value="cat"/><Choice value="dog"/><Choice value="horse"/></Choices></View>'
    response = label_studio.api("POST", "/api/projects/", json={"title": "alectio mismatched", "label_config": config})
    assert response.status_code == 201, response.text
    api = alectio()
    with caplog.at_level(logging.ERROR):
        create(api, id="mismatched")
    message = "experiment mismatched: the Label Studio project offers the label 'horse', which is not one of the model's classes: cat, dog, bird"
    assert message in caplog.text
    assert message in api.engine.get_experiment("mismatched")["labeller"]["unsent"]["0"]
    assert tasks(label_studio, response.json()["id"]) == []


def test_a_project_made_by_hand_with_the_models_classes_is_reused_and_gets_the_webhook(alectio, label_studio):
    config = '<View><Image name="picture" value="$img"/><Choices name="pet" toName="picture"><Choice value="bird"/><Choice value="cat"/><Choice value="dog"/></Choices></View>'
    made = label_studio.api("POST", "/api/projects/", json={"title": "alectio byhand", "label_config": config}).json()
    api = alectio(webhook=True)
    create(api, id="byhand")
    sent = by_index(tasks(label_studio, made["id"]))  # the project's own field names are used
    assert sorted(sent) == sorted(api.storage.get_selection("byhand", 0).tolist())
    assert {t["data"]["img"] for t in sent.values()} == {f"r{i}" for i in sent}
    hooks = label_studio.api("GET", "/api/webhooks/", params={"project": made["id"]}).json()
    assert [h["url"].rsplit("/api/", 1)[1] for h in hooks] == ["v1/labellers/labelstudio/webhook"]
    annotate_as = {"from_name": "pet", "to_name": "picture", "type": "choices", "value": {"choices": ["dog"]}}
    index, task = next(iter(sent.items()))
    label_studio.api("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": [annotate_as]})
    assert wait_for(lambda: api.engine.labels("byhand").get(index), what="the label")["label"] == 1


def test_alectio_serve_with_the_labeller_configured(tmp_path, label_studio, slow_model):
    """The real process: ``alectio serve`` reads ``labeller:``, sends, polls,
    and stops its poller with the server on SIGTERM."""
    from server_support import Server

    config = {"labeller": {"name": "labelstudio", "url": label_studio.url, "poll_seconds": 0.2}}
    server = Server(tmp_path, f"sqlite:///{tmp_path}/alectio.db", "serve", config=config, env={"LABEL_STUDIO_API_KEY": label_studio.token})
    try:
        headers = {"Authorization": f"Bearer {(tmp_path / 'home' / 'first-token').read_text().strip()}"}
        body = {"model": slow_model, "labels": "alectio", "initial": 3, "loops": 2, "config": {"pool_size": 20}}
        response = requests.post(f"{server.url}/api/v1/experiments", json=body, headers=headers, timeout=60)
        assert response.status_code == 201, response.text
        eid = response.json()["id"]
        sent = by_index(tasks(label_studio, project(label_studio, eid)["id"]))
        assert len(sent) == 3
        for task in sent.values():
            result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["odd"]}}]
            label_studio.api("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": result})

        def labels():
            got = requests.get(f"{server.url}/api/v1/experiments/{eid}/labels", headers=headers, timeout=30).json()
            return got if len(got["labels"]) == 3 else None

        got = wait_for(labels, what="the polled labels over HTTP")
        assert sorted(row["index"] for row in got["labels"]) == sorted(sent)
        assert {row["label"] for row in got["labels"]} == {1}
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()
