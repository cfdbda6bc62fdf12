"""The sqlite backend: what is on disk, atomic loop visibility, a real kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from alectio_core import plugins
from alectio_core.engine import Engine
from alectio_core.errors import NotFoundError, StorageError, UnknownStorageError, ValidationError
from alectio_core.storage import open_storage
from server_support import wait_for

# A model module importable by a child process: pool of 200,000 records so
# infer writes several chunks; ``hang_in_infer`` stops half-way, for kill -9.
MODEL = textwrap.dedent(
    """
    import sys, time
    import numpy as np

    def assign_index():
        return [str(i) for i in range(200_000)]

    def train(labeled, ckpt_file):
        open(ckpt_file, "w").write("w")

    def test():
        return {"predictions": [1, 0], "labels": [1, 1]}

    def infer(unlabeled, writer, config):
        idx = np.asarray(unlabeled)
        half = idx.size // 2
        writer.extend(idx[:half], np.ones((half, 4), np.float32))
        if config.get("hang_in_infer"):
            print("HALF-WAY", flush=True)
            time.sleep(600)
        writer.extend(idx[half:], np.ones((idx.size - half, 4), np.float32))
    """
)


@pytest.fixture
def big_model(tmp_path, monkeypatch):
    (tmp_path / "big_model.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import big_model

    registry = plugins.load_plugins()
    plugins.register_model(registry, "big", lambda: big_model)
    yield "big"
    registry.models.pop("big", None)
    sys.modules.pop("big_model", None)


def test_killed_mid_loop_leaves_earlier_loops_intact(tmp_path, big_model):
    db = tmp_path / "alectio.db"
    engine = Engine(open_storage(f"sqlite:///{db}"))
    engine.create_experiment("big", strategy=None, initial=1000, loops=3, experiment_id="exp1")
    engine.record_selection("exp1", 0, list(range(1000)))
    engine.run_loop("exp1", 0)
    engine.record_selection("exp1", 1, list(range(5000, 6000)))
    before = engine.outputs("exp1", 0)

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys; sys.path.insert(0, {str(tmp_path)!r})
                import big_model
                from alectio_core import plugins, Engine, open_storage
                from alectio_core.config import parse_config
                plugins.register_model(plugins.load_plugins(), "big", lambda: big_model)
                engine = Engine(open_storage("sqlite:///{db}"), parse_config({{"server": {{"lease_seconds": 1}}}}))
                engine.storage.update_experiment("exp1", {{"config": {{"hang_in_infer": True}}}})
                engine.run_loop("exp1", 1)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "HALF-WAY"
        # the child has streamed chunks of loop 1 into the database by now
        raw = sqlite3.connect(db)
        assert raw.execute("SELECT COUNT(*) FROM output_chunks WHERE loop = 1").fetchone()[0] >= 1
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    engine = Engine(open_storage(f"sqlite:///{db}"))
    state = engine.get_loop("exp1", 1)
    assert state["status"] == "running" and state["stage"] == "infer"  # visibly not done
    with pytest.raises(NotFoundError):
        engine.storage.get_result("exp1", 1, "metrics")
    with pytest.raises(NotFoundError):
        next(engine.storage.iter_outputs("exp1", 1))
    # loop 0 reads back exactly as before
    assert engine.get_loop("exp1", 0)["status"] == "done"
    after = engine.outputs("exp1", 0)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert engine.results("exp1", 0)["metrics"]["accuracy"] == 0.5

    # once the dead process's lease expires, start-up recovery marks it failed;
    # it then runs again and its leftovers are gone
    assert wait_for(engine.recover_interrupted, what="the killed loop's lease to expire") == [("exp1", 1)]
    assert engine.get_loop("exp1", 1)["error"] == "interrupted"
    engine.storage.update_experiment("exp1", {"config": {}})
    assert engine.run_loop("exp1", 1)["status"] == "done"
    raw = sqlite3.connect(db)
    attempts = raw.execute("SELECT COUNT(DISTINCT attempt) FROM output_chunks WHERE loop = 1").fetchone()[0]
    assert attempts == 1
    assert sum(i.size for i, _ in engine.storage.iter_outputs("exp1", 1)) == 200_000 - 2000


def test_outputs_are_float32_chunks_not_rows_or_one_blob(tmp_path, big_model):
    db = tmp_path / "alectio.db"
    engine = Engine(open_storage(f"sqlite:///{db}"))
    engine.create_experiment("big", strategy=None, initial=1000, loops=1, experiment_id="e")
    engine.run_loop("e", 0)
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = raw.execute("SELECT rows, width, indices, vals FROM output_chunks ORDER BY seq").fetchall()
    assert 2 <= len(rows) <= 6 and sum(r[0] for r in rows) == 199_000
    n, width, idx, vals = rows[0]
    # raw little-endian arrays: readable by any numpy, no pickle anywhere
    assert len(vals) == n * width * 4 and len(idx) == n * 8
    assert np.frombuffer(vals, "<f4").tolist()[:4] == [1.0] * 4
    assert not (raw.execute("SELECT COUNT(*) FROM results WHERE data LIKE '%pickle%'").fetchone()[0])


def test_sqlite_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_storage("sqlite:///rel.db").path.resolve() == tmp_path / "rel.db"
    assert open_storage(f"sqlite:///{tmp_path}/sub/abs.db").path == tmp_path / "sub" / "abs.db"
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    assert open_storage().path.name == "alectio.db"  # the default: ./alectio.db
    monkeypatch.setenv("ALECTIO_STORAGE", f"sqlite:///{tmp_path}/env.db")
    assert open_storage().path.name == "env.db"
    with pytest.raises(UnknownStorageError, match="no storage backend for scheme 'ftp'; installed: .*sqlite"):
        open_storage("ftp://somewhere")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot open SQLite database"):
        open_storage(f"sqlite:///{tmp_path}/file/x.db")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x" * 65, ".hidden", "sp ace"])
def test_identifiers_that_become_paths_are_validated(storage, bad):
    with pytest.raises(ValidationError, match="invalid experiment id"):
        storage.create_experiment({"id": bad})
    with pytest.raises(ValidationError):
        storage.checkpoint_path(bad, 0, "a1")


# -- a damaged database file ----------------------------------------------------


def damage(db, table: str) -> None:
    """Write garbage over ``table``'s first page, as a disk fault would."""
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file first
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    root = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    raw.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def assert_one_line_about(db, stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: SQLite database {db}") and "database disk image is malformed" in lines[0]


@pytest.mark.parametrize(
    "command", [["serve", "--host", "127.0.0.1", "--port", "0"], ["token", "create", "--name", "ci"]], ids=["serve", "token-create"]
)
def test_a_damaged_database_is_one_error_line_from_the_cli(tmp_path, command):
    db = tmp_path / "alectio.db"
    open_storage(f"sqlite:///{db}").close()
    damage(db, "tokens")
    result = subprocess.run(
        [sys.executable, "-m", "alectio_core", *command, "--storage", f"sqlite:///{db}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_about(db, result.stderr)


def test_a_damaged_database_answers_503_storage_error_over_http(tmp_path, fake_model):
    from alectio_core.server import create_app
    from alectio_core.tokens import create_token

    fake_model("m")
    db = tmp_path / "alectio.db"
    store = open_storage(f"sqlite:///{db}")
    token = create_token(store, "tests")
    store.close()
    damage(db, "index_maps")
    app = create_app(storage=f"sqlite:///{db}")
    try:
        response = app.test_client().post(
            "/api/v1/experiments", json={"model": "m", "initial": 2}, headers={"Authorization": f"Bearer {token}"}
        )
    finally:
        app.extensions["alectio"]["runner"].shutdown(timeout=5)
        app.extensions["alectio"]["storage"].close()
    assert response.status_code == 503, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == "storage_error"
    assert error["message"].startswith(f"SQLite database {db}") and "malformed" in error["message"]


def test_damage_found_while_streaming_outputs_is_a_storage_error(tmp_path):
    db = tmp_path / "alectio.db"
    store = open_storage(f"sqlite:///{db}")
    store.create_experiment({"id": "e"})
    sink = store.open_output_sink("e", 0, "a1")
    sink.write(np.arange(5), np.ones((5, 2), np.float32))
    sink.close()
    store.commit_loop("e", 0, "a1", {"loop": 0, "status": "done"})
    store.close()
    damage(db, "output_chunks")
    store = open_storage(f"sqlite:///{db}")
    try:
        with pytest.raises(StorageError, match=f"SQLite database {db}.*malformed"):
            list(store.iter_outputs("e", 0))
        with pytest.raises(StorageError, match=f"SQLite database {db}.*malformed"):
            store.open_output_sink("e", 0, "a2").write(np.arange(2), np.ones((2, 2), np.float32))
    finally:
        store.close()


def test_a_tampered_checkpoint_reference_is_not_followed(storage):
    """The stored reference is informational: the checkpoint's path comes
    from the validated experiment id and loop, never from what is stored."""
    storage.create_experiment({"id": "e1"})
    Path(storage.checkpoint_path("e1", 0, "a1")).write_text("weights")
    storage.put_result("e1", 0, "a1", "checkpoint", {"path": "/etc/hostname", "bytes": 1})
    storage.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})
    assert storage.fetch_checkpoint("e1", 0) == storage.checkpoint_path("e1", 0, "a1")


def test_a_database_from_before_embeddings_keeps_its_outputs_and_takes_embeddings(tmp_path):
    """A file written by an alectio without embeddings: its output chunks read
    back (embeddings None), and new chunks with embeddings store beside them."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE output_chunks (
            experiment_id TEXT NOT NULL, loop INTEGER NOT NULL, attempt TEXT NOT NULL,
            seq INTEGER NOT NULL, rows INTEGER NOT NULL, width INTEGER NOT NULL,
            indices BLOB NOT NULL, vals BLOB NOT NULL,
            PRIMARY KEY (experiment_id, loop, attempt, seq));
        """
    )
    values = np.array([[1.5, -2.0]], dtype="<f4")
    old.execute(
        "INSERT INTO output_chunks VALUES ('e', 0, 'a', 0, 1, 2, ?, ?)", (np.array([7], dtype="<i8").tobytes(), values.tobytes())
    )
    old.commit()
    old.close()
    store = open_storage(f"sqlite:///{path}")
    try:
        [(idx, val, emb)] = list(store.iter_outputs("e", 0, attempt="a", embeddings=True))
        assert idx.tolist() == [7] and val.tobytes() == values.tobytes() and emb is None
        sink = store.open_output_sink("e", 1, "b")
        sink.write(np.array([3], dtype=np.int64), values, embeddings=np.array([[0.25, 0.5, 1.0]], dtype=np.float32))
        [(_, _, emb)] = list(store.iter_outputs("e", 1, attempt="b", embeddings=True))
        assert emb.tolist() == [[0.25, 0.5, 1.0]]
    finally:
        store.close()
    open_storage(f"sqlite:///{path}").close()  # opening again adds nothing twice
