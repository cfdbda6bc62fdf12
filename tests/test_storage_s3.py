"""The s3 backend against a real S3 server (moto in server mode) over HTTP.

The contract suite runs in ``test_storage_contract.py``; here: what is
specific to S3. Where it is, what format, configuration through boto3's
standard variables, checkpoints across machines, and failures: missing
credentials, missing bucket, access denied, a server that goes away
mid-loop or stops answering, transient errors retried.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from server_support import wait_for

from alectio_core.engine import Engine
from alectio_core.errors import ConflictError, NotFoundError, StorageError, ValidationError
from alectio_core.storage import open_storage
from alectio_core.testing import MotoS3, make_chunks, write_chunks

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture
def aws_env(moto_s3, monkeypatch, tmp_path):
    """boto3's standard variables pointing at the moto server, nothing alectio-specific."""
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALECTIO_CACHE_DIR", str(tmp_path / "cache"))
    return moto_s3


@pytest.fixture
def bucket(aws_env):
    return aws_env.create_bucket()


def all_keys(server: MotoS3, bucket: str) -> list[str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def read_object(server: MotoS3, bucket: str, key: str) -> bytes:
    return server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def ckpt_model(fake_model, name="s3_ckpt", pool=40, seen=None):
    """A model whose checkpoint is a counter: each loop resumes from the last."""
    seen = [] if seen is None else seen

    def train(labeled, resume_from, ckpt_file):
        previous = Path(resume_from).read_text() if resume_from else "0"
        seen.append((resume_from, previous))
        Path(ckpt_file).write_text(str(int(previous) + 1))
        return {"labels": [i % 2 for i in labeled]}

    return fake_model(name, pool=pool, train=train), seen


# ----------------------------------------------------------------------
# Where things are and in what format
# ----------------------------------------------------------------------


def test_a_loop_stores_everything_under_the_prefix_as_json_and_npy(aws_env, bucket, fake_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt_model(fake_model)
    storage = open_storage(f"s3://{bucket}/some/prefix")
    engine = Engine(storage)
    exp = engine.create_experiment("s3_ckpt", strategy="random", initial=10, batch_size=5, loops=2)
    engine.run_loop(exp["id"], 0)
    engine.run_loop(exp["id"], 1)

    keys = all_keys(aws_env, bucket)
    assert keys and all(k.startswith("some/prefix/") for k in keys)
    for key in keys:
        data = read_object(aws_env, bucket, key)
        if key.endswith(".json"):
            json.loads(data)
        elif key.endswith(".npy"):
            np.load(io.BytesIO(data), allow_pickle=False)
        else:  # only the checkpoint, as train wrote it
            assert "/checkpoint/" in key and data in (b"1", b"2"), key
    exp_prefix = f"some/prefix/experiments/{exp['id']}/"
    for loop in (0, 1):
        committed = json.loads(read_object(aws_env, bucket, f"{exp_prefix}loops/{loop}/loop.json"))
        assert committed["state"]["status"] == "done"
        attempt = f"{exp_prefix}loops/{loop}/attempts/{committed['committed']}/"
        for name in ("insights", "predictions", "ground_truth", "metrics", "checkpoint"):
            assert f"{attempt}{name}.json" in keys
        assert any(k.startswith(f"{attempt}outputs/") and k.endswith(".val.npy") for k in keys)
    # no database and nothing but checkpoint working copies on this machine
    assert not list(tmp_path.glob("*.db"))
    local = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert local and all(p.parent.name.startswith("loop_") and p.name.endswith((".ckpt", ".ckpt.attempt")) for p in local)


def test_a_refused_create_leaves_every_object_byte_identical(aws_env, bucket):
    storage = open_storage(f"s3://{bucket}/p")
    storage.create_experiment({"id": "e1", "model": "m"}, ["a", "b"])
    before = {k: read_object(aws_env, bucket, k) for k in all_keys(aws_env, bucket)}
    with pytest.raises(ConflictError, match="experiment 'e1' already exists"):
        storage.create_experiment({"id": "e1", "model": "other"}, ["x"])
    # nothing changed and nothing left behind (the refused pool is removed)
    assert {k: read_object(aws_env, bucket, k) for k in all_keys(aws_env, bucket)} == before


def test_a_pool_stored_before_pools_had_versions_is_still_read(aws_env, bucket):
    client = aws_env.client()
    client.put_object(Bucket=bucket, Key="p/experiments/old/experiment.json", Body=b'{"seq": 1, "experiment": {"id": "old"}}')
    client.put_object(Bucket=bucket, Key="p/experiments/old/index_map.json", Body=b'["r0", "r1"]')
    storage = open_storage(f"s3://{bucket}/p")
    assert storage.get_index_map("old") == ["r0", "r1"]
    storage.put_index_map("old", ["s0"])
    assert storage.get_index_map("old") == ["s0"]
    assert "p/experiments/old/index_map.json" not in all_keys(aws_env, bucket)


def test_labels_stored_before_numbering_stay_first_and_writers_number_after_each_other(aws_env, bucket):
    """Label objects named by the writer's clock (as stored before) come first;
    new ones are numbered after the newest, so two storages on the prefix (two
    servers) add to one history in the order their writes landed."""
    old = {"index": 1, "label": 0, "skip": False, "loop": 0, "source": "api", "by": None, "at": "2026-01-01T00:00:00.000+00:00"}
    client = aws_env.client()
    client.put_object(Bucket=bucket, Key="p/experiments/e1/experiment.json", Body=b'{"seq": 1, "experiment": {"id": "e1"}}')
    client.put_object(Bucket=bucket, Key="p/experiments/e1/labels/01764547200000000000-0a1b2c3d.json", Body=json.dumps({"events": [old]}).encode())
    a, b = open_storage(f"s3://{bucket}/p"), open_storage(f"s3://{bucket}/p")
    for n, store in enumerate([a, b, b, a]):
        store.add_labels("e1", [{**old, "label": n + 1}])
    for store in (a, b, open_storage(f"s3://{bucket}/p")):
        assert [e["label"] for e in store.list_labels("e1")] == [0, 1, 2, 3, 4]
    numbers = [k.rsplit("/", 1)[1][:20] for k in all_keys(aws_env, bucket) if "/labels/" in k]
    assert numbers == [f"{1764547200000000000 + n:020d}" for n in range(5)]


def test_labels_written_at_once_from_two_storages_are_all_kept_once(aws_env, bucket):
    """Writers at the same moment may take the same number: each batch is an
    object of its own all the same; none is lost or stored twice."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_storage(f"s3://{bucket}/p"), open_storage(f"s3://{bucket}/p")]
    stores[0].create_experiment({"id": "e1"})
    event = {"index": 1, "label": 0, "skip": False, "loop": 0, "source": "api", "by": None, "at": "2026-01-01T00:00:00.000+00:00"}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: stores[n % 2].add_labels("e1", [{**event, "label": n}]), range(40)))
    assert sorted(e["label"] for e in open_storage(f"s3://{bucket}/p").list_labels("e1")) == list(range(40))
    assert len([k for k in all_keys(aws_env, bucket) if "/labels/" in k]) == 40


def test_experiment_changes_from_several_storages_at_once_are_all_kept(aws_env, bucket):
    """Servers sharing a prefix change one experiment at the same time (a
    labeller's record, more loops, a new pool): no change undoes another."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_storage(f"s3://{bucket}/p") for _ in range(4)]
    stores[0].create_experiment({"id": "e1", "model": "m"}, ["a"])

    def change(n: int) -> None:
        if n % 8 == 0:
            stores[n % 4].put_index_map("e1", [f"pool-{n}"])
        else:
            stores[n % 4].update_experiment("e1", {f"k{n}": n})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(change, range(48)))
    reader = open_storage(f"s3://{bucket}/p")
    experiment = reader.get_experiment("e1")
    assert {k: v for k, v in experiment.items() if k.startswith("k")} == {f"k{n}": n for n in range(48) if n % 8}
    assert experiment["model"] == "m" and reader.get_index_map("e1")[0] in {f"pool-{n}" for n in range(0, 48, 8)}


def test_endpoint_from_config_option_alone(moto_s3, monkeypatch, tmp_path):
    for key, value in moto_s3.env.items():
        if key != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = moto_s3.create_bucket()
    store = open_storage(f"s3://{bucket}", {"endpoint_url": moto_s3.endpoint_url, "cache_dir": str(tmp_path)})
    store.create_experiment({"id": "e1"})
    assert all_keys(moto_s3, bucket) == ["experiments/e1/experiment.json"]


def test_standard_aws_variables_alone(aws_env, bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.endpoint_url)
    store = open_storage(f"s3://{bucket}/p")
    assert store.endpoint.rstrip("/") == aws_env.endpoint_url
    store.put_index_map("e1", ["a"])
    assert all_keys(aws_env, bucket) == ["p/experiments/e1/index_map.json"]


@pytest.mark.parametrize(
    "url, options, match",
    [
        ("s3://", {}, "names no bucket"),
        ("s3://Bad_Bucket/x", {}, "invalid S3 bucket name"),
        ("s3://fine-bucket", {"endpont_url": "x"}, "unknown s3 storage option 'endpont_url'"),
    ],
)
def test_bad_urls_and_options(url, options, match):
    with pytest.raises(ValidationError, match=match):
        open_storage(url, options)


def test_identifiers_are_checked_before_any_request(aws_env, bucket):
    store = open_storage(f"s3://{bucket}")
    for bad in ("../x", "a/b", ""):
        with pytest.raises(ValidationError):
            store.put_selection(bad, 0, np.array([1]))
        with pytest.raises(ValidationError):
            store.put_result("e1", 0, bad, "metrics", {})
    assert all_keys(aws_env, bucket) == []


# ----------------------------------------------------------------------
# Streaming: chunks go up as they come and come back one at a time
# ----------------------------------------------------------------------


def test_outputs_upload_per_chunk_and_read_back_lazily(aws_env, bucket):
    with Proxy(aws_env.port) as proxy:
        store = open_storage(f"s3://{bucket}/p", {"endpoint_url": proxy.url})
        chunks = make_chunks(n_chunks=4, rows=10)
        sink = store.open_output_sink("e1", 0, "a1")
        sink.write(*chunks[0])
        assert any(m == "PUT" and p.endswith("/outputs/000000.val.npy") for m, p in proxy.requests)
        for chunk in chunks[1:]:
            sink.write(*chunk)
        sink.close()
        store.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})

        proxy.requests.clear()
        stream = store.iter_outputs("e1", 0)
        idx, _ = next(stream)
        assert idx.tolist() == chunks[0][0].tolist()
        fetched = {p.rsplit("/", 1)[1] for m, p in proxy.requests if m == "GET" and p.endswith(".npy")}
        assert {"000000.idx.npy", "000000.val.npy"} <= fetched
        assert not any(name.startswith(("000002", "000003")) for name in fetched)  # at most one chunk ahead
        assert len(list(stream)) == 3


def test_chunks_a_reader_keeps_stay_intact_without_reference_counts(aws_env, bucket, monkeypatch):
    """Whether a chunk's arrays may be reused must not hang on CPython's
    reference counts: on a Python without ``sys.getrefcount`` (PyPy) a reader
    that keeps every chunk, and scribbles on the ones it has read, still gets
    exactly what was stored, chunk after chunk."""
    store = open_storage(f"s3://{bucket}/kept")
    chunks = make_chunks(n_chunks=5)
    write_chunks(store.open_output_sink("e1", 0, "a1"), chunks)
    store.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})
    monkeypatch.delattr(sys, "getrefcount")

    kept, copies = [], []
    for idx, val in store.iter_outputs("e1", 0):
        copies.append((idx.copy(), val.copy()))  # what this chunk held when it arrived
        if kept:
            kept[-1][0].fill(-1)  # the reader is done with the previous chunk and reuses it as scratch
            kept[-1][1].fill(np.nan)
        kept.append((idx, val))
    assert [(i.tolist(), v.tolist()) for i, v in copies] == [(i.tolist(), v.tolist()) for i, v in chunks]
    last_idx, last_val = kept[-1]  # untouched, read after the stream ended
    assert last_idx.tolist() == chunks[-1][0].tolist() and last_val.tolist() == chunks[-1][1].tolist()
    for i, v in kept[:-1]:  # a scribbled chunk is the reader's: nothing overwrote it with a later chunk
        assert (i == -1).all() and np.isnan(v).all()


# ----------------------------------------------------------------------
# Checkpoints follow the experiment to another machine
# ----------------------------------------------------------------------


def test_checkpoint_is_downloaded_before_train_on_another_machine(aws_env, bucket, fake_model, tmp_path):
    _, seen = ckpt_model(fake_model)
    url = f"s3://{bucket}/ckpt"
    machine_a = Engine(open_storage(url, {"cache_dir": str(tmp_path / "a")}))
    exp = machine_a.create_experiment("s3_ckpt", strategy="random", initial=10, batch_size=5, loops=3)
    machine_a.run_loop(exp["id"], 0)
    assert seen[-1] == (None, "0")

    machine_b = Engine(open_storage(url, {"cache_dir": str(tmp_path / "b")}))
    machine_b.run_loop(exp["id"], 1)
    resume_from, previous = seen[-1]
    assert resume_from is not None and Path(resume_from).is_relative_to(tmp_path / "b")
    assert previous == "1"  # loop 0's checkpoint, fetched from S3

    # and back on machine a, whose cache is stale for loop 1
    machine_a.run_loop(exp["id"], 2)
    assert Path(seen[-1][0]).is_relative_to(tmp_path / "a") and seen[-1][1] == "2"
    assert Path(machine_a.storage.fetch_checkpoint(exp["id"], 2)).read_text() == "3"


def test_a_checkpoint_object_named_to_escape_the_cache_is_refused(aws_env, bucket, tmp_path):
    """Someone with write access to the bucket adds an object whose key,
    under a committed checkpoint folder, climbs out with ``../``."""
    url = f"s3://{bucket}/ckpt"
    machine_a = open_storage(url, {"cache_dir": str(tmp_path / "a")})
    machine_a.create_experiment({"id": "e1"})
    folder = Path(machine_a.checkpoint_path("e1", 0, "a1"))
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    ref = machine_a.save_checkpoint("e1", 0, "a1")
    machine_a.put_result("e1", 0, "a1", "checkpoint", ref)
    machine_a.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})

    machine_b = open_storage(url, {"cache_dir": str(tmp_path / "b")})
    download = Path(machine_b.checkpoint_path("e1", 0, "a1") + ".download")
    escape = tmp_path / "escaped.txt"
    evil = ref["key"] + os.path.relpath(escape, download)
    aws_env.client().put_object(Bucket=bucket, Key=evil, Body=b"owned")
    assert evil in all_keys(aws_env, bucket)  # the key reached S3 as written

    with pytest.raises(StorageError) as info:
        machine_b.fetch_checkpoint("e1", 0)
    assert f"s3://{bucket}/{evil}" in str(info.value)
    assert not escape.exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "a")]


# ----------------------------------------------------------------------
# Failures
# ----------------------------------------------------------------------


def test_missing_credentials(aws_env, bucket, monkeypatch, tmp_path):
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match=rf"no usable AWS credentials.*s3://{bucket}/.*AWS_ACCESS_KEY_ID"):
        open_storage(f"s3://{bucket}/p")


def test_missing_bucket(aws_env):
    with pytest.raises(StorageError, match=r"S3 bucket 'no-such-bucket-here' does not exist"):
        open_storage("s3://no-such-bucket-here/p")


@pytest.fixture
def enforced_auth(aws_env):
    """Turn on moto's IAM checks for one test (they are off by default)."""
    conn = http.client.HTTPConnection("127.0.0.1", aws_env.port, timeout=10)

    def set_count(value: str):
        conn.request("POST", "/moto-api/reset-auth", body=value.encode())
        assert conn.getresponse().read()

    yield lambda: set_count("0")
    set_count("inf")
    conn.close()


def test_access_denied_names_bucket_and_key(aws_env, bucket, enforced_auth, monkeypatch):
    import boto3

    iam = boto3.client("iam", endpoint_url=aws_env.endpoint_url, region_name="us-east-1")
    iam.create_user(UserName="reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}
        ],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    enforced_auth()
    store = open_storage(f"s3://{bucket}/ro")  # reading is allowed (moto names HEAD bucket s3:HeadBucket)
    with pytest.raises(StorageError, match=rf"access denied to s3://{bucket}/ro/experiments/e1/experiment\.json"):
        store.create_experiment({"id": "e1"})


def test_server_gone_mid_loop_fails_the_loop_and_keeps_earlier_loops(aws_env, bucket, fake_model, tmp_path):
    """The S3 server goes away while infer outputs are uploading: a clear
    error naming bucket and key, loop 0 intact, loop 1 invisible, and the
    loop can be run again once the server is back."""
    pool = 3 * 65536 + 100
    stop_in_loop = {1}

    def infer(unlabeled, writer, loop):
        rows = np.asarray(unlabeled, dtype=np.int64)
        for start in range(0, rows.size, 50000):
            if loop in stop_in_loop and writer.written >= 65536:
                stop_in_loop.discard(loop)
                aws_env.stop()  # chunk 0 is up; chunk 1 will not make it
            batch = rows[start : start + 50000]
            writer.extend(batch, np.stack([batch % 7, batch % 3], axis=1).astype(np.float32))

    fake_model("s3_big", pool=pool, infer=infer)
    options = {"max_attempts": 2, "connect_timeout": 1, "read_timeout": 2, "cache_dir": str(tmp_path)}
    url = f"s3://{bucket}/fault"
    engine = Engine(open_storage(url, options))
    exp = engine.create_experiment("s3_big", strategy="random", initial=100, batch_size=100, loops=3)
    engine.run_loop(exp["id"], 0)
    before = engine.outputs(exp["id"], 0)

    with pytest.raises(StorageError) as failure:
        engine.run_loop(exp["id"], 1)
    message = str(failure.value)
    assert f"s3://{bucket}/fault/experiments/{exp['id']}/loops/1/attempts/" in message
    assert "could not connect to S3 endpoint" in message and "outputs/000001" in message
    assert "did not answer" not in message  # nothing was listening: that is not a silence

    aws_env.start()  # same port, same data
    store = open_storage(url, options)
    engine = Engine(store)
    assert store.get_loop_state(exp["id"], 0)["status"] == "done"
    after = engine.outputs(exp["id"], 0)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert store.get_result(exp["id"], 0, "metrics") is not None
    with pytest.raises(NotFoundError):
        store.get_result(exp["id"], 1, "metrics")
    with pytest.raises(NotFoundError):
        list(store.iter_outputs(exp["id"], 1))
    # the server was gone when the failure was to be recorded: it is recorded once the server answers
    state = wait_for(lambda: (s := store.get_loop_state(exp["id"], 1))["status"] != "running" and s, what="the failure to be stored")
    assert state["status"] == "failed" and "could not connect to S3 endpoint" in state["error"]
    assert engine.recover_interrupted(exp["id"]) == []

    state = engine.run_loop(exp["id"], 1)
    assert state["status"] == "done"
    idx, values = engine.outputs(exp["id"], 1)
    assert idx.size == pool - 200 and np.array_equal(values[:, 0], idx % 7)
    attempts = {k.split("/attempts/")[1].split("/")[0] for k in all_keys(aws_env, bucket) if "/loops/1/attempts/" in k}
    assert attempts == {state["attempt"]}  # the broken attempt's chunks are gone


def test_server_that_stops_answering(aws_env, bucket):
    """Connections accepted, never answered: short timeouts, a clear error
    naming the URL with its prefix."""
    with BlackHole() as hole:
        with pytest.raises(StorageError, match=rf"did not answer trying to open s3://{bucket}/al .*after 2 attempts"):
            open_storage(f"s3://{bucket}/al", {"endpoint_url": hole.url, "max_attempts": 2, "read_timeout": 0.5, "connect_timeout": 0.5})


def test_nothing_listening_is_not_called_silence(aws_env, bucket):
    """A refused connection says so, with the prefix in the URL it prints."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again before the client tries it
    with pytest.raises(StorageError) as failure:
        open_storage(f"s3://{bucket}/al", {"endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1})
    message = str(failure.value)
    assert message.startswith(f"could not connect to S3 endpoint http://127.0.0.1:{port} trying to open s3://{bucket}/al ")
    assert "did not answer" not in message


def test_missing_bucket_names_the_prefix(aws_env):
    with pytest.raises(StorageError, match=r"S3 bucket 'my-bucket' does not exist .*cannot open s3://my-bucket/al$"):
        open_storage("s3://my-bucket/al")


def test_transient_errors_are_retried(aws_env, bucket):
    with Proxy(aws_env.port, fail_first=2) as proxy:
        store = open_storage(f"s3://{bucket}/r", {"endpoint_url": proxy.url, "max_attempts": 4})
        store.create_experiment({"id": "e1"})
        assert store.get_experiment("e1") == {"id": "e1"}
        assert proxy.failed == 2
    with Proxy(aws_env.port, fail_first=10) as proxy:
        with pytest.raises(StorageError, match=rf"kept failing \(HTTP 503 .*\) trying to open s3://{bucket}/r; gave up after 2 attempts"):
            open_storage(f"s3://{bucket}/r", {"endpoint_url": proxy.url, "max_attempts": 2})
        assert proxy.failed == 2


# ----------------------------------------------------------------------
# HTTP helpers: a recording, optionally failing proxy, and a black hole
# ----------------------------------------------------------------------


class Proxy:
    """Forwards HTTP to the moto server; records ``(method, path)``; answers
    the first ``fail_first`` requests with 503 SlowDown."""

    def __init__(self, port: int, fail_first: int = 0):
        self.port, self.fail_first, self.failed = port, fail_first, 0
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests.append((self.command, self.path))
                if proxy.failed < proxy.fail_first:
                    proxy.failed += 1
                    payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers={k: v for k, v in self.headers.items() if k.lower() != "host"} | {"Host": f"127.0.0.1:{proxy.port}"})
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None  # clients that hang up are expected
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """Accepts connections and reads requests, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self._stop = False

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_reader_that_stops_early_releases_the_stream(aws_env, bucket):
    store = open_storage(f"s3://{bucket}/early")
    write_chunks(store.open_output_sink("e1", 0, "a1"), make_chunks(n_chunks=5))
    store.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})
    stream = store.iter_outputs("e1", 0)
    first = next(stream)
    second = next(stream)  # first is still held: the next download waited for nothing
    assert first[0].size == second[0].size == 7
    stream.close()  # the prefetching thread ends; no hang
    assert [len(i) for i, _ in store.iter_outputs("e1", 0)] == [7] * 5
