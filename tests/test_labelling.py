"""The labelling service with a labeller kept in memory: what goes out, what
comes back, what is refused or ignored, retries, auto_next, the webhook
route and the server's wiring. (Label Studio itself: test_labelstudio.py.)"""

from __future__ import annotations

import logging
import re
import sys

import pytest
from labelling_support import pets  # noqa: F401 (a fixture)
from server_support import Api, wait_for

from alectio_core import hookimpl, plugins
from alectio_core.config import parse_config
from alectio_core.errors import ConfigError
from alectio_core.labelling import SKIP
from alectio_core.server import close_app, create_app
from alectio_core.tokens import create_token

class MemoryLabeller:
    """Keeps what it is sent; annotations are ``{"experiment_id", "index", "label" | "skip"}``."""

    def __init__(self):
        self.sent: dict[tuple[str, int], list[dict]] = {}
        self.down = False
        self.finished: list[dict] = []

    def send(self, experiment, loop, rows, state):
        if self.down:
            raise ConnectionError("connection refused")
        self.sent[(experiment["id"], loop)] = rows
        return {**state, "sends": state.get("sends", 0) + 1}

    def collect(self, experiment, loop, state):
        return [a for a in self.finished if a["experiment_id"] == experiment["id"]]

    def receive(self, body):
        if "annotations" not in body:
            raise ValueError("no 'annotations' in the body")
        return body["annotations"]

    def convert(self, experiment, annotation):
        if annotation.get("skip"):
            return SKIP
        if annotation["label"] not in experiment["labels"]:
            raise ValueError(f"label {annotation['label']!r} is not one of the model's classes")
        return experiment["labels"].index(annotation["label"])


class MemoryPlugin:
    def __init__(self):
        self.labeller = MemoryLabeller()
        self.settings = []

    @hookimpl
    def register_labellers(self, register):
        def factory(settings, source):
            self.settings.append((settings, source))
            return self.labeller

        register("memory", factory)


@pytest.fixture
def memory():
    registry = plugins.load_plugins()
    plugin = MemoryPlugin()
    plugins.register_plugin(registry, "memory_labeller", lambda: plugin)
    registry.forget_contributions()
    yield plugin
    registry.pm.unregister(name="memory_labeller")
    registry.plugins = [p for p in registry.plugins if p["name"] != "memory_labeller"]
    registry.forget_contributions()


@pytest.fixture
def served(tmp_path, memory, pets):
    apps = []

    def make(**labeller):
        config = parse_config({"labeller": {"name": "memory", "poll_seconds": 3600, **labeller}}, "test.yaml")
        app = create_app(config, storage=f"sqlite:///{tmp_path}/alectio.db")
        apps.append(app)
        return Api(app, create_token(app.extensions["alectio"]["storage"], "tests"))

    yield make
    for app in apps:
        close_app(app)


def create(api: Api) -> str:
    return api.create("pets", labels="alectio", initial=4, batch_size=3, loops=3)["id"]


def webhook(api, *annotations, name="memory"):
    return api.post(f"/api/v1/labellers/{name}/webhook", json={"annotations": list(annotations)})


def test_hook_register_labellers(served, memory):
    """A third-party labeller named in config.yaml gets its settings, and each
    new selection of a labels-mode experiment is sent to it."""
    api = served(url="http://tool")
    assert isinstance(memory, MemoryPlugin) and memory.settings == [({"url": "http://tool"}, "test.yaml")]
    assert plugins.report() and {r["name"]: r for r in plugins.report()}["memory_labeller"]["kind"] == "labeller"
    eid = create(api)
    rows = memory.labeller.sent[(eid, 0)]
    assert [r["index"] for r in rows] == api.storage.get_selection(eid, 0).tolist()
    assert {"reference", "score", "prediction"} <= set(rows[0])
    record = api.engine.get_experiment(eid)["labeller"]
    assert record["name"] == "memory" and record["sent"] == [0] and record["state"] == {"sends": 1}


def test_plugin_mode_experiments_are_not_sent(served, memory):
    api = served()
    api.create("pets", initial=4, loops=2)
    assert memory.labeller.sent == {}


def test_webhook_labels_train_the_next_loop_and_auto_next_starts_it(served, memory, pets):
    api = served(auto_next=True)
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()
    response = webhook(api, *({"experiment_id": eid, "index": i, "label": "dog", "by": "ann"} for i in first[:3]))
    assert response.status_code == 200, response.json
    assert response.json["experiments"][eid] == {"stored": 3, "skipped": 0, "ignored": 0, "refused": [], "loop": 0, "missing": 1}
    assert not api.engine.active_loops(eid) and api.storage.list_loop_states(eid) == []  # one record left: not started
    webhook(api, {"experiment_id": eid, "index": first[3], "skip": True})
    api.wait_status(eid, 0, "done")
    assert pets == [{i: 1 for i in first[:3]}]  # the skipped record is not trained on
    wait_for(lambda: (eid, 1) in memory.labeller.sent, what="loop 1's selection sent")
    assert [e["by"] for e in api.engine.label_history(eid)][:3] == ["ann"] * 3


def test_unselected_records_are_ignored_and_wrong_labels_refused_naming_the_record(served, caplog):
    api = served()
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()
    stranger = next(i for i in range(30) if i not in first)
    with caplog.at_level(logging.INFO):
        response = webhook(
            api,
            {"experiment_id": eid, "index": stranger, "label": "cat"},
            {"experiment_id": eid, "index": first[0], "label": "horse"},
            {"experiment_id": eid, "index": first[1], "label": "cat"},
        )
    summary = response.json["experiments"][eid]
    assert (summary["stored"], summary["ignored"]) == (1, 1)
    assert summary["refused"] == [f"record {first[0]} ('r{first[0]}'): label 'horse' is not one of the model's classes"]
    assert f"an annotation for record {stranger}, which is not in a selection, was ignored" in caplog.text
    assert f"record {first[0]} ('r{first[0]}'): label 'horse'" in caplog.text
    assert set(api.engine.labels(eid)) == {first[1]}  # nothing else stored
    assert api.engine.get_experiment(eid)["labeller"]["refused"] == {str(first[0]): summary["refused"][0]}

    webhook(api, {"experiment_id": eid, "index": first[0], "label": "bird"})  # corrected
    assert api.engine.labels(eid)[first[0]]["label"] == 2
    assert api.engine.get_experiment(eid)["labeller"]["refused"] == {}


def test_the_same_annotation_twice_is_stored_once_and_a_change_is_kept_as_history(served):
    api = served()
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()
    for label in ("cat", "cat", "dog"):
        webhook(api, {"experiment_id": eid, "index": first[0], "label": label})
    assert [e["label"] for e in api.engine.label_history(eid)] == [0, 1]


def test_a_send_that_fails_is_logged_kept_and_retried_by_the_poller(served, memory, caplog):
    api = served(poll_seconds=0.05)
    memory.labeller.down = True
    with caplog.at_level(logging.ERROR):
        eid = create(api)  # creating the experiment is not held back by the tool being down
    assert f"could not send loop 0's selection of experiment {eid} (ConnectionError: connection refused)" in caplog.text
    assert api.engine.get_experiment(eid)["labeller"]["unsent"] == {"0": "ConnectionError: connection refused"}
    assert api.storage.get_selection(eid, 0).size == 4  # nothing lost
    memory.labeller.down = False
    wait_for(lambda: (eid, 0) in memory.labeller.sent, what="the retried send")
    record = wait_for(lambda: (r := api.engine.get_experiment(eid)["labeller"])["sent"] == [0] and r, what="the record")
    assert record["unsent"] == {}


def test_polling_collects_finished_work(served, memory):
    api = served(poll_seconds=0.05)
    eid = create(api)
    first = api.storage.get_selection(eid, 0).tolist()
    memory.labeller.finished = [{"experiment_id": eid, "index": i, "label": "bird"} for i in first[:2]]
    memory.labeller.finished.append({"experiment_id": eid, "index": first[2], "skip": True})
    wait_for(lambda: len(api.engine.labels(eid)) == 3, what="polled labels")
    assert {i: (e["label"], e["skip"], e["source"]) for i, e in api.engine.labels(eid).items()} == {
        first[0]: (2, False, "memory"), first[1]: (2, False, "memory"), first[2]: (None, True, "memory")
    }


def test_the_webhook_needs_a_token_and_the_configured_labellers_name(served):
    api = served()
    assert api.client.post("/api/v1/labellers/memory/webhook", json={"annotations": []}).status_code == 401
    response = webhook(api, name="labelstudio")
    assert response.status_code == 404
    assert response.json["error"]["message"] == "no labeller 'labelstudio' here: the configured labeller is 'memory'"
    response = api.post("/api/v1/labellers/memory/webhook", json={"what": 1})
    assert response.status_code == 400 and "no 'annotations' in the body" in response.json["error"]["message"]


def test_no_labeller_configured(tmp_path):
    app = create_app(parse_config({}, "test"), storage=f"sqlite:///{tmp_path}/a.db")
    api = Api(app, create_token(app.extensions["alectio"]["storage"], "t"))
    response = webhook(api, name="labelstudio")
    assert response.status_code == 404 and "no labeller is configured (labeller: in config.yaml)" in response.json["error"]["message"]
    close_app(app)


def test_an_unknown_labeller_is_a_config_error_naming_the_installed_ones(tmp_path):
    config = parse_config({"labeller": {"name": "labelstudoi"}}, "config.yaml")
    with pytest.raises(ConfigError, match=r"config.yaml: key 'labeller.name': no labeller 'labelstudoi' is installed \(did you mean 'labelstudio'\?\); installed: labelstudio"):
        create_app(config, storage=f"sqlite:///{tmp_path}/a.db")


def test_labelstudio_without_its_client_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # as if not installed
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "x")
    config = parse_config({"labeller": {"name": "labelstudio"}}, "config.yaml")
    with pytest.raises(ConfigError, match=r"the labelstudio labeller needs the Label Studio client: pip install 'alectio\[labelstudio\]'"):
        create_app(config, storage=f"sqlite:///{tmp_path}/a.db")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ur": "http://x"}, "unknown key 'labeller.ur' (did you mean 'url'?)"),
        ({"object": "video"}, "key 'labeller.object' must be one of image, text"),
        ({"api_key_env": "NO_SUCH_VARIABLE_HERE"}, "key 'labeller.api_key_env': the variable NO_SUCH_VARIABLE_HERE is not set"),
        ({"webhook_url": "http://127.0.0.1:5000"}, "key 'labeller.webhook_token_env' is missing"),
        ({"data": "/img/{ref}.png"}, "key 'labeller.data': '/img/{ref}.png' is not a template of {reference}, {index}"),
        ({"project": "alectio {id}"}, "key 'labeller.project': 'alectio {id}' is not a template of {experiment}, {model}"),
    ],
)
def test_bad_labelstudio_settings_name_the_key(tmp_path, monkeypatch, settings, message):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "x")
    config = parse_config({"labeller": {"name": "labelstudio", **settings}}, "config.yaml")
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app(config, storage=f"sqlite:///{tmp_path}/a.db")


def test_alectio_does_not_import_the_label_studio_client_unless_configured():
    import subprocess

    code = "import sys; from alectio_core.plugins.contributions import collect_all; collect_all(); print('label_studio_sdk' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_the_server_polls_in_the_background_until_it_is_closed(tmp_path, memory, pets):
    config = parse_config({"labeller": {"name": "memory", "poll_seconds": 0.05}}, "test.yaml")
    app = create_app(config, storage=f"sqlite:///{tmp_path}/alectio.db")
    service = app.extensions["alectio"]["labelling"]
    assert service.selection_made in service.engine.on_selection
    thread = service._thread
    assert thread.is_alive() and thread.daemon
    close_app(app)
    assert not thread.is_alive()


def test_a_tool_that_stays_down_is_logged_once_not_at_every_retry(served, memory, caplog):
    api = served(poll_seconds=0.02)
    memory.labeller.down = True
    with caplog.at_level(logging.ERROR):
        eid = create(api)
        service = api.app.extensions["alectio"]["labelling"]
        for _ in range(3):
            service.poll()
    assert caplog.text.count(f"could not send loop 0's selection of experiment {eid}") == 1
