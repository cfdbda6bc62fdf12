"""Platform mode end to end: ``POST /one_loop`` against a moto S3 server (the
platform's bucket) and a stand-in platform on 127.0.0.1 that records the
``end_of_task`` callback."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from alectio_core.config import parse_config
from alectio_core.jobs import JobRunner
from alectio_core.server import create_app
from alectio_core.storage import open_storage
from alectio_core.tokens import create_token
from alectio_plugins.storage_sqlite import SQLiteStorage

POOL = 30
PLATFORM_TOKEN = "platform-secret-123"


class StandIn:
    """The platform's backend: records every end_of_task call; answers the
    first ``fail`` of them with ``status`` (or sleeps ``delay`` seconds)."""

    def __init__(self, fail: int = 0, status: int = 503, delay: float = 0.0):
        self.calls: list[dict] = []
        self.fail, self.status, self.delay = fail, status, delay
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
                if len(stand_in.calls) <= stand_in.fail:
                    if stand_in.delay:
                        time.sleep(stand_in.delay)
                    self.send_response(stand_in.status)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class S3Proxy:
    """Between alectio and moto on 127.0.0.1: forwards every request, logs
    ``(method, key)`` in order, answers 403 AccessDenied to a PUT of a key
    ending with one of ``deny``, and holds a GET of a key ending with a
    name in ``hold`` until that event is set."""

    def __init__(self, upstream: str):
        self.log: list[tuple[str, str]] = []
        self.deny: set[str] = set()
        self.hold: dict[str, threading.Event] = {}
        self.holding = threading.Event()
        upstream_port = urlsplit(upstream).port
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: list, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self):
                body = self._body()
                key = urlsplit(self.path).path
                proxy.log.append((self.command, key))
                if self.command == "PUT" and any(key.endswith(d) for d in proxy.deny):
                    error = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>denied by the test</Message></Error>"
                    return self._answer(403, [("Content-Type", "application/xml")], error)
                held = next((e for name, e in proxy.hold.items() if self.command == "GET" and key.endswith(name)), None)
                if held is not None:
                    proxy.holding.set()
                    held.wait(60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "transfer-encoding", "connection", "content-length")}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    self._answer(response.status, response.getheaders(), response.read())
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def puts(self) -> list[str]:
        """The names written, in order (``infer_outputs_0/indices.npy``, ``metrics_0.json``, ...)."""
        return [key.split("/exp-1/", 1)[1] for method, key in self.log if method in ("PUT", "POST") and "/exp-1/" in key]

    def close(self):
        for event in self.hold.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3_proxy(moto_s3):
    proxy = S3Proxy(moto_s3.endpoint_url)
    yield proxy
    proxy.close()


@pytest.fixture
def stand_in():
    servers = []

    def make(**kw):
        servers.append(StandIn(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def platform_model(fake_model):
    fake_model("platform_model", pool=POOL)
    return "platform_model"


@pytest.fixture
def seed_bucket(moto_s3, monkeypatch):
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALECTIO_PLATFORM_TOKEN", PLATFORM_TOKEN)
    bucket = moto_s3.create_bucket()
    client = moto_s3.client()

    def put_selection(k: int, indices, project="proj-1", experiment="exp-1"):
        client.put_object(Bucket=bucket, Key=f"{project}/{experiment}/selected_indices_{k}.json", Body=json.dumps(indices))

    def get(name: str, project="proj-1", experiment="exp-1") -> bytes:
        return client.get_object(Bucket=bucket, Key=f"{project}/{experiment}/{name}")["Body"].read()

    def keys() -> list[str]:
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))

    return type("SeedBucket", (), {"name": bucket, "put_selection": staticmethod(put_selection), "get": staticmethod(get), "keys": staticmethod(keys)})


class Client:
    def __init__(self, app, token):
        self.app, self.client, self.headers = app, app.test_client(), {"Authorization": f"Bearer {token}"}

    def one_loop(self, bucket: str, cur_loop: int, **extra):
        payload = {
            "experiment_id": "exp-1",
            "project_id": "proj-1",
            "cur_loop": cur_loop,
            "user_id": 42,
            "bucket_name": bucket,
            "type": "Image Classification",
            "n_rec": 5,
            "n_loop": 4,
        }
        payload.update(extra)
        return self.client.post("/one_loop", json=payload, headers=self.headers)

    def wait(self, url: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.get(url, headers=self.headers).json
            settled = state.get("platform", {}).get("callback") in ("sent", "failed", "not sent")
            if state["status"] in ("failed", "cancelled") or (state["status"] == "done" and settled):
                return state
            time.sleep(0.05)
        raise AssertionError(f"{url} did not settle: {state}")


@pytest.fixture
def make_client(tmp_path, platform_model):
    apps = []

    def make(backend_url: str | None, retries: int = 2, timeout: float = 2.0, model: str | None = platform_model, options=None, storage=None, **platform):
        config = parse_config(
            {
                "platform": {"model": model, "backend_url": backend_url, "callback_retries": retries, "callback_timeout": timeout, **platform},
                "storage_options": options or {},
            }
        )
        storage = storage or open_storage(f"sqlite:///{tmp_path}/alectio-{len(apps)}.db")
        app = create_app(config, storage)
        apps.append(app)
        client = Client(app, create_token(storage, "platform"))
        return client

    yield make
    for app in apps:
        app.extensions["alectio"]["runner"].shutdown()


def test_one_loop_runs_writes_results_beside_the_selections_and_calls_back(make_client, seed_bucket, stand_in, moto_s3, monkeypatch):
    platform = stand_in()
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the bucket is found through storage_options.endpoint_url
    api = make_client(platform.url, options={"endpoint_url": moto_s3.endpoint_url})
    seed_bucket.put_selection(0, [3, 1, 4, 15, 9])

    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "queued" and answer.headers["Location"] == answer.json["url"]
    state = api.wait(answer.json["url"])
    assert state["status"] == "done", state
    assert state["platform"] == {"export": "done", "callback": "sent", "callback_attempts": 1, "callback_at": state["platform"]["callback_at"]}

    assert platform.calls == [
        {
            "path": "/api/end_of_task",
            "auth": f"Bearer {PLATFORM_TOKEN}",
            "body": {"experiment_id": "exp-1", "project_id": "proj-1", "user_id": 42, "n_rec": 5, "n_loop": 4},
        }
    ]
    data_map = json.loads(seed_bucket.get("data_map.json"))
    assert data_map == {str(i): f"r{i}" for i in range(POOL)}
    assert json.loads(seed_bucket.get("insights_0.json"))["num_labeled"] == 5
    assert json.loads(seed_bucket.get("test_predictions_0.json")) == [0, 1, 1, 0]
    assert json.loads(seed_bucket.get("test_ground_truth.json")) == [0, 1, 0, 0]
    assert json.loads(seed_bucket.get("metrics_0.json")) == state["metrics"]
    indices = np.load(io.BytesIO(seed_bucket.get("infer_outputs_0/indices.npy")), allow_pickle=False)
    outputs = np.load(io.BytesIO(seed_bucket.get("infer_outputs_0/outputs.npy")), allow_pickle=False)
    unlabeled = sorted(set(range(POOL)) - {1, 3, 4, 9, 15})
    assert indices.dtype == np.int64 and sorted(indices.tolist()) == unlabeled
    assert outputs.dtype == np.float32 and outputs.shape == (len(unlabeled), 2)
    np.testing.assert_array_equal(outputs[:, 0], indices % 3)  # the model's rows, matched to their indices

    # the platform picks loop 1's records and asks again
    seed_bucket.put_selection(1, [0, 2, 28])
    answer = api.one_loop(seed_bucket.name, 1)
    assert answer.status_code == 202, answer.json
    state = api.wait(answer.json["url"])
    assert state["status"] == "done" and state["labeled"] == 8
    assert len(platform.calls) == 2
    indices = np.load(io.BytesIO(seed_bucket.get("infer_outputs_1/indices.npy")), allow_pickle=False)
    assert sorted(indices.tolist()) == sorted(set(unlabeled) - {0, 2, 28})
    assert json.loads(seed_bucket.get("insights_1.json"))["num_labeled"] == 8
    assert {k.split("/")[-1] for k in seed_bucket.keys()} >= {"metrics_0.json", "metrics_1.json", "test_predictions_1.json"}


class ListIteratorStorage(SQLiteStorage):
    """A storage whose ``iter_outputs`` returns a plain iterator, not a
    generator: all the interface promises."""

    def iter_outputs(self, experiment_id, loop, attempt=None):
        return iter(list(super().iter_outputs(experiment_id, loop, attempt)))


def test_outputs_export_from_a_storage_whose_stream_is_a_plain_iterator(make_client, seed_bucket, stand_in, tmp_path):
    api = make_client(stand_in().url, storage=ListIteratorStorage(tmp_path / "plain.db"))
    seed_bucket.put_selection(0, [3, 1, 4, 15, 9])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "done" and state["platform"]["export"] == "done", state
    indices = np.load(io.BytesIO(seed_bucket.get("infer_outputs_0/indices.npy")), allow_pickle=False)
    assert sorted(indices.tolist()) == sorted(set(range(POOL)) - {1, 3, 4, 9, 15})


def test_one_loop_needs_a_token(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url)
    seed_bucket.put_selection(0, [1, 2])
    api.headers = {}
    assert api.one_loop(seed_bucket.name, 0).status_code == 401
    api.headers = {"Authorization": "Bearer nope.nope"}
    assert api.one_loop(seed_bucket.name, 0).status_code == 401


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cur_loop": -1}, "cur_loop"),
        ({"cur_loop": "0"}, "cur_loop must be integer"),
        ({"experiment_id": "../etc"}, "experiment_id"),
        ({"project_id": "a/b"}, "project_id"),
        ({"bucket_name": "Not_A_Bucket"}, "bucket_name"),
        ({"n_loop": 0}, "n_loop"),
        ({"cur_loop": 4}, "cur_loop (4) must be below n_loop (4)"),
        ({"user_id": None}, "user_id"),
    ],
)
def test_bad_payloads_are_400_and_start_nothing(make_client, seed_bucket, stand_in, change, message):
    api = make_client(stand_in().url)
    seed_bucket.put_selection(0, [1, 2])
    answer = api.one_loop(seed_bucket.name, **{"cur_loop": 0, **change})
    assert answer.status_code == 400, answer.json
    assert message in answer.json["error"]["message"]
    assert api.app.extensions["alectio"]["storage"].list_experiments() == []


def test_a_missing_field_is_named(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url)
    answer = api.client.post("/one_loop", json={"experiment_id": "e", "project_id": "p"}, headers=api.headers)
    assert answer.status_code == 400 and "required field 'cur_loop'" in answer.json["error"]["message"]


def test_a_missing_selection_names_its_key(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url)
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 404
    assert f"s3://{seed_bucket.name}/proj-1/exp-1/selected_indices_0.json does not exist" in answer.json["error"]["message"]
    seed_bucket.put_selection(0, "not a list")
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 400 and "selected_indices_0.json must be a list of integer indices" in answer.json["error"]["message"]


def test_an_unreachable_platform_bucket_is_worded_as_for_s3_storage(make_client, seed_bucket, stand_in):
    """The platform's bucket and the s3 backend share one client set-up and
    one error wording: nothing listening is "could not connect", not silence."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again before the client tries it
    api = make_client(stand_in().url, options={"endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1})
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 503, answer.json
    message = answer.json["error"]["message"]
    where = f"s3://{seed_bucket.name}/proj-1/exp-1/selected_indices_0.json"
    assert message.startswith(f"could not connect to S3 endpoint http://127.0.0.1:{port} trying to read {where} (gave up after 1 attempts)")
    assert "did not answer" not in message
    assert api.app.extensions["alectio"]["storage"].list_experiments() == []


def test_a_loop_must_follow_the_one_before(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url)
    seed_bucket.put_selection(0, [1, 2])
    seed_bucket.put_selection(1, [3])
    answer = api.one_loop(seed_bucket.name, 1)
    assert answer.status_code == 409 and "needs loop 0 done first" in answer.json["error"]["message"]


def test_platform_mode_not_configured(make_client, seed_bucket, stand_in, monkeypatch):
    seed_bucket.put_selection(0, [1, 2])
    answer = make_client(stand_in().url, model=None).one_loop(seed_bucket.name, 0)
    assert answer.status_code == 400 and "platform.model" in answer.json["error"]["message"]
    answer = make_client(None).one_loop(seed_bucket.name, 0)
    assert "platform.backend_url" in answer.json["error"]["message"]
    monkeypatch.delenv("ALECTIO_PLATFORM_TOKEN")
    answer = make_client(stand_in().url).one_loop(seed_bucket.name, 0)
    assert "ALECTIO_PLATFORM_TOKEN" in answer.json["error"]["message"]


def test_a_callback_that_keeps_failing_shows_in_the_loop_status(make_client, seed_bucket, stand_in, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's retries included
    platform = stand_in(fail=100, status=500)
    api = make_client(platform.url, retries=2)
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "done"  # the loop itself worked and its results are out
    assert state["platform"]["export"] == "done" and json.loads(seed_bucket.get("metrics_0.json"))
    assert state["platform"]["callback"] == "failed" and state["platform"]["callback_attempts"] == 3
    assert "end_of_task callback failed after 3 attempt(s)" in state["error"] and "answered 500" in state["error"]
    assert len(platform.calls) == 3
    assert all(c["auth"] == f"Bearer {PLATFORM_TOKEN}" for c in platform.calls)
    assert "end_of_task callback failed after 3 attempt(s)" in caplog.text
    assert PLATFORM_TOKEN not in caplog.text


def test_an_answer_that_is_not_worth_retrying_is_tried_once(make_client, seed_bucket, stand_in):
    platform = stand_in(fail=100, status=401)
    api = make_client(platform.url, retries=3)
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["platform"]["callback"] == "failed" and state["platform"]["callback_attempts"] == 1
    assert f"{platform.url}/end_of_task answered 401" in state["error"]
    assert len(platform.calls) == 1


def test_a_slow_then_failing_platform_is_retried_until_it_answers(make_client, seed_bucket, stand_in):
    platform = stand_in(fail=2, status=503, delay=0.0)
    api = make_client(platform.url, retries=3)
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["platform"]["callback"] == "sent" and state["platform"]["callback_attempts"] == 3
    assert state["error"] is None and len(platform.calls) == 3


def test_a_callback_that_times_out_is_retried(make_client, seed_bucket, stand_in):
    platform = stand_in(fail=1, status=200, delay=1.5)
    api = make_client(platform.url, retries=1, timeout=0.5)
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["platform"]["callback"] == "sent" and state["platform"]["callback_attempts"] == 2
    assert len(platform.calls) == 2


def test_a_failed_loop_sends_no_callback_and_can_be_asked_again(make_client, seed_bucket, stand_in, fake_model):
    platform = stand_in()
    calls = {"n": 0}

    def train(labeled):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("GPU fell off")
        return {"labels": [i % 2 for i in labeled]}

    fake_model("platform_model", pool=POOL, train=train)  # replaces the fixture's model
    api = make_client(platform.url)
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "failed" and "GPU fell off" in state["error"]
    assert platform.calls == [] and "metrics_0.json" not in {k.split("/")[-1] for k in seed_bucket.keys()}

    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "done" and state["platform"]["callback"] == "sent"
    assert len(platform.calls) == 1


# -- sending again what did not go through -------------------------------------------


def test_a_failed_export_shows_no_metrics_and_a_resent_one_loop_exports_and_calls_back(make_client, seed_bucket, stand_in, s3_proxy):
    platform = stand_in()
    api = make_client(platform.url, options={"endpoint_url": s3_proxy.url})
    seed_bucket.put_selection(0, [3, 1, 4, 15, 9])
    s3_proxy.deny = {"infer_outputs_0/outputs.npy"}

    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "done"  # the loop ran; its results did not reach the platform
    assert state["platform"]["export"] == "failed" and state["platform"]["callback"] == "not sent"
    assert "AccessDenied" in state["error"] and "outputs.npy" in state["error"]
    written = {k.split("/")[-1] for k in seed_bucket.keys()}
    assert "metrics_0.json" not in written and "insights_0.json" not in written  # a platform sees no half export
    assert platform.calls == []

    s3_proxy.deny = set()
    s3_proxy.log.clear()
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "done" and answer.json["sending_again"] == ["export", "callback"]
    state = api.wait(answer.json["url"])
    assert state["status"] == "done" and state["error"] is None
    assert state["platform"]["export"] == "done" and state["platform"]["callback"] == "sent"
    assert len(platform.calls) == 1
    puts = s3_proxy.puts()
    assert puts[:2] == ["infer_outputs_0/indices.npy", "infer_outputs_0/outputs.npy"] and puts[-1] == "metrics_0.json"
    assert set(puts) == {"infer_outputs_0/indices.npy", "infer_outputs_0/outputs.npy", "data_map.json", "test_predictions_0.json",
                         "test_ground_truth.json", "insights_0.json", "metrics_0.json"}
    assert json.loads(seed_bucket.get("metrics_0.json")) == state["metrics"]
    assert json.loads(seed_bucket.get("insights_0.json"))["num_labeled"] == 5

    again = api.one_loop(seed_bucket.name, 0)  # everything went through: nothing to do
    assert again.status_code == 409
    assert "already done" in again.json["error"]["message"] and "end_of_task was sent" in again.json["error"]["message"]
    assert len(platform.calls) == 1


def test_a_resent_one_loop_after_a_failed_callback_only_calls_back(make_client, seed_bucket, stand_in, s3_proxy):
    platform = stand_in(fail=1, status=500)
    api = make_client(platform.url, retries=0, options={"endpoint_url": s3_proxy.url})
    seed_bucket.put_selection(0, [1, 2, 3])
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["platform"]["export"] == "done" and state["platform"]["callback"] == "failed"
    assert len(platform.calls) == 1

    s3_proxy.log.clear()
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 202, answer.json
    assert answer.json["sending_again"] == ["callback"]
    state = api.wait(answer.json["url"])
    assert state["platform"]["callback"] == "sent" and state["error"] is None
    assert len(platform.calls) == 2 and platform.calls[1]["body"]["experiment_id"] == "exp-1"
    assert s3_proxy.puts() == []  # the results were there: not written again
    assert api.one_loop(seed_bucket.name, 0).status_code == 409


def test_a_send_again_job_cancelled_before_it_starts_leaves_the_done_loop_alone(engine, fake_model):
    fake_model("runner_model", pool=10)
    done = engine.create_experiment("runner_model", strategy=None, initial=2, loops=2)
    engine.record_selection(done["id"], 0, [0, 1])
    engine.run_loop(done["id"], 0)
    busy = engine.create_experiment("runner_model", strategy=None, initial=2, loops=2)
    engine.record_selection(busy["id"], 0, [0, 1])
    runner, gate = JobRunner(engine, workers=1), threading.Event()
    try:
        runner.submit(busy["id"], 0, lambda cancel: gate.wait(60))  # holds the only worker
        job = runner.submit(done["id"], 0, lambda cancel: None, runs_loop=False)
        assert runner.cancel(done["id"], 0) is job  # e.g. the server shutting down
        state = engine.get_loop(done["id"], 0)
        assert state["status"] == "done" and state.get("error") is None
        assert engine.results(done["id"], 0)["metrics"]
    finally:
        gate.set()
        runner.shutdown()


# -- selection files ---------------------------------------------------------------------


def test_a_selection_over_max_selection_bytes_is_refused_naming_the_file_and_the_setting(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url, max_selection_bytes=100)
    seed_bucket.put_selection(0, list(range(50)))  # 190 bytes
    answer = api.one_loop(seed_bucket.name, 0)
    assert answer.status_code == 413, answer.json
    assert answer.json["error"]["code"] == "too_large"
    message = answer.json["error"]["message"]
    assert f"s3://{seed_bucket.name}/proj-1/exp-1/selected_indices_0.json is 190 bytes" in message
    assert "platform.max_selection_bytes (100)" in message
    assert api.app.extensions["alectio"]["storage"].list_experiments() == []

    seed_bucket.put_selection(0, [1, 2, 3])  # a later loop's file is checked too
    state = api.wait(api.one_loop(seed_bucket.name, 0).json["url"])
    assert state["status"] == "done"
    seed_bucket.put_selection(1, list(range(10, 60)))
    answer = api.one_loop(seed_bucket.name, 1)
    assert answer.status_code == 413 and "selected_indices_1.json is 200 bytes" in answer.json["error"]["message"]
    loops = api.client.get(state["url"].rsplit("/", 1)[0], headers=api.headers).json["loops"]
    assert [s["loop"] for s in loops] == [0]  # loop 1 never queued


def test_the_size_limit_is_a_config_setting():
    assert parse_config({}).platform.max_selection_bytes == 64 * 2**20
    assert parse_config({"platform": {"max_selection_bytes": 1000}}).platform.max_selection_bytes == 1000


def test_initial_counts_unique_indices(make_client, seed_bucket, stand_in):
    api = make_client(stand_in().url)
    seed_bucket.put_selection(0, [5, 1, 5, 1, 2, 2, 2])
    answer = api.one_loop(seed_bucket.name, 0)
    state = api.wait(answer.json["url"])
    assert state["status"] == "done" and state["labeled"] == 3
    experiment = api.client.get(f"/api/v1/experiments/{answer.json['experiment_id']}", headers=api.headers).json
    assert experiment["initial"] == 3


def test_a_slow_selection_read_does_not_hold_up_another_experiment(make_client, seed_bucket, stand_in, s3_proxy):
    api = make_client(stand_in().url, options={"endpoint_url": s3_proxy.url})
    seed_bucket.put_selection(0, [1, 2, 3], experiment="slow")
    seed_bucket.put_selection(0, [4, 5, 6], experiment="quick")
    release = threading.Event()
    s3_proxy.hold = {"/slow/selected_indices_0.json": release}
    answers = {}

    def ask(name):
        client = Client(api.app, "")
        client.headers = api.headers
        answers[name] = client.one_loop(seed_bucket.name, 0, experiment_id=name)

    slow = threading.Thread(target=ask, args=("slow",))
    slow.start()
    try:
        assert s3_proxy.holding.wait(30), "the slow read never started"
        quick = threading.Thread(target=ask, args=("quick",))
        quick.start()
        quick.join(60)  # not a speed check: with the read under the lock it never ends while the slow one is held
        assert not quick.is_alive(), "a /one_loop waited for another experiment's selection read"
        assert answers["quick"].status_code == 202, answers["quick"].json
    finally:
        release.set()
        slow.join(60)
    assert answers["slow"].status_code == 202
    for answer in answers.values():
        assert api.wait(answer.json["url"])["status"] == "done"
