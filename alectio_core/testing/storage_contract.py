"""The storage contract: pytest tests every storage backend must pass.

Subclass :class:`StorageContract` in a test module and give it a
``storage`` fixture returning a fresh, empty backend::

    import pytest
    from alectio_core.testing import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            backend = open_storage(f"mine://{tmp_path}")
            yield backend
            backend.close()

Optionally override ``reopen``: a function returning a *second* handle on
the same data, as another process or machine would open it (for the
persistence and checkpoint-download tests; they skip without it).

The tests use only the :class:`~alectio_core.storage.Storage` interface and
check what the core relies on: round-trips of every record kind (ranked
selections with their scores, label events appended all or nothing), infer
outputs (and embeddings, and the labeled part) streamed chunk by chunk, a
loop's results appearing all at once on commit, concurrent readers, loop leases (compare-and-swap, and the
policy of :mod:`alectio_core.leases` on top: one holder, takeover after
expiry, no commit by a holder that lost its lease), and ``NotFoundError``
for what is not there.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..errors import ConflictError, NotFoundError, ValidationError
from ..outputs import OutputWriter
from ..storage import RESULT_NAMES, OutputSink, Storage

#: JSON values that must survive a round trip exactly.
JSON_SAMPLES = {
    "insights": {"train_time": 1.25, "num_labeled": 10, "per_class_counts": {"0": 4, "1": 6}},
    "predictions": [0, 1, 2, [1, 2], {"boxes": [[0.5, 1.0, 2.0, 3.5]], "objects": [1], "scores": [0.9]}],
    "ground_truth": [0, 1, 1, [2], {"boxes": [], "objects": []}],
    "metrics": {"accuracy": 0.875, "f1": None, "label": "caf\u00e9 \u2713", "nested": {"deep": [1e-12, -3, True]}},
    "checkpoint": None,
}


def make_chunks(n_chunks: int = 5, rows: int = 7, width: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Distinct chunks of (int64 indices, float32 values) covering 0..n-1."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_chunks * rows).astype(np.int64)
    return [
        (order[i * rows : (i + 1) * rows].copy(), rng.standard_normal((rows, width)).astype(np.float32))
        for i in range(n_chunks)
    ]


def make_embedded_chunks(n_chunks: int = 4, rows: int = 6, width: int = 3, embedding_width: int = 5, seed: int = 0) -> list:
    """Like :func:`make_chunks`, each chunk with float32 embeddings beside it."""
    rng = np.random.default_rng(seed + 1000)
    return [
        (idx, val, rng.standard_normal((len(idx), embedding_width)).astype(np.float32))
        for idx, val in make_chunks(n_chunks, rows, width, seed)
    ]


def write_chunks(sink: OutputSink, chunks, close: bool = True) -> None:
    """Write through reused buffers, as ``OutputWriter`` does: a sink that
    keeps references instead of the data would read back garbage. Chunks of
    three arrays carry embeddings."""
    for chunk in chunks:
        buffers = [a.copy() for a in chunk]
        if len(buffers) == 3:
            sink.write(buffers[0], buffers[1], embeddings=buffers[2])
        else:
            sink.write(buffers[0], buffers[1])
        buffers[0].fill(-1)
        for buf in buffers[1:]:
            buf.fill(np.nan)
    if close:
        sink.close()


def new_id(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def attempt_id() -> str:
    return uuid.uuid4().hex


def label_event(index: int, label: Any, **more: Any) -> dict:
    """A label event as the engine stores it."""
    event = {"index": index, "label": label, "skip": False, "loop": 0, "source": "contract", "by": None, "at": "2026-01-01T00:00:00.000+00:00"}
    return {**event, **more}


#: Labels of every task's format, and a skip, that must survive a round trip exactly.
LABEL_EVENTS = [
    label_event(3, 2),
    label_event(4, [0, 2], by="caf\u00e9 \u2713"),
    label_event(5, {"boxes": [[0.5, 1.0, 20.25, 31.0]], "objects": [1]}, source="labelstudio"),
    label_event(6, [[0, 1], [1, 1]]),
    label_event(7, -1.5e-7, loop=1),
    label_event(8, None, skip=True),
]


def _scores(storage: Storage, experiment_id: str, loop: int) -> list:
    found = storage.get_selection_scores(experiment_id, loop)
    assert found is not None, f"loop {loop}'s selection has no scores"
    return found.tolist()


def _checkpoint(storage: Storage, experiment_id: str, loop: int) -> Path:
    path = storage.fetch_checkpoint(experiment_id, loop)
    assert path is not None, f"loop {loop} has no committed checkpoint"
    return Path(path)


def _lease(storage: Storage, experiment_id: str, loop: int) -> tuple[dict, str]:
    found = storage.read_lease(experiment_id, loop)
    assert found is not None, f"loop {loop} has no lease record"
    return found


class StorageContract:
    """Behaviour every :class:`Storage` backend must show.

    Override the ``storage`` fixture; override ``reopen`` to enable the
    tests that need a second handle on the same data.
    """

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError("override the 'storage' fixture to return a fresh, empty backend")

    @pytest.fixture
    def reopen(self):
        pytest.skip("the backend's test does not override 'reopen'")

    @pytest.fixture
    def experiment(self, storage: Storage) -> dict:
        exp = {"id": new_id(), "model": "m", "pool_size": 100, "labels": ["a", "b"], "config": {"lr": 0.1}}
        storage.create_experiment(exp)
        return exp

    # ------------------------------------------------------------------
    # Experiments
    # ------------------------------------------------------------------

    def test_experiment_round_trip(self, storage: Storage):
        exp: dict[str, Any] = {"id": new_id(), "model": "m", "config": {"a": [1, 2.5, None, "\u00e9"]}, "loops": 3}
        storage.create_experiment(exp)
        assert storage.get_experiment(exp["id"]) == exp

    def test_duplicate_experiment_is_a_conflict(self, storage: Storage, experiment: dict):
        with pytest.raises(ConflictError):
            storage.create_experiment({"id": experiment["id"], "model": "other"})
        assert storage.get_experiment(experiment["id"]) == experiment

    def test_an_experiment_is_created_with_its_pool(self, storage: Storage):
        exp, refs = {"id": new_id(), "model": "m"}, [f"img_{i}.png" for i in range(50)] + ["caf\u00e9"]
        storage.create_experiment(exp, refs)
        assert storage.get_experiment(exp["id"]) == exp
        assert storage.get_index_map(exp["id"]) == refs

    def test_a_refused_create_stores_nothing(self, storage: Storage):
        """A create with an id that exists changes neither the experiment nor its pool."""
        exp: dict[str, Any] = {"id": new_id(), "model": "m", "pool_size": 3}
        refs = ["a", "b", "c"]
        storage.create_experiment(exp, refs)
        with pytest.raises(ConflictError):
            storage.create_experiment({"id": exp["id"], "model": "other", "pool_size": 2}, ["x", "y"])
        assert json.dumps(storage.get_experiment(exp["id"])) == json.dumps(exp)
        assert json.dumps(storage.get_index_map(exp["id"])) == json.dumps(refs)
        assert [e["id"] for e in storage.list_experiments()] == [exp["id"]]

    def test_a_replaced_pool_is_what_readers_see(self, storage: Storage):
        exp = {"id": new_id(), "model": "m"}
        storage.create_experiment(exp, ["a", "b"])
        storage.put_index_map(exp["id"], ["c", "d", "e"])
        assert storage.get_index_map(exp["id"]) == ["c", "d", "e"]
        assert storage.get_experiment(exp["id"]) == exp

    def test_list_experiments_oldest_first(self, storage: Storage):
        ids = [new_id(p) for p in ("zz", "aa", "mm")]
        for eid in ids:
            storage.create_experiment({"id": eid})
        assert [e["id"] for e in storage.list_experiments()] == ids

    def test_update_experiment_merges_and_persists(self, storage: Storage, experiment: dict):
        updated = storage.update_experiment(experiment["id"], {"loops": 9, "note": "x"})
        assert updated == {**experiment, "loops": 9, "note": "x"}
        assert storage.get_experiment(experiment["id"]) == updated

    @pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "x" * 65, None, 7, "-lead"])
    def test_invalid_experiment_ids_are_rejected(self, storage: Storage, bad):
        with pytest.raises(ValidationError):
            storage.create_experiment({"id": bad})
        with pytest.raises((ValidationError, NotFoundError)):
            storage.get_experiment(bad)

    def test_unknown_experiment_not_found(self, storage: Storage):
        with pytest.raises(NotFoundError):
            storage.get_experiment(new_id())
        with pytest.raises(NotFoundError):
            storage.update_experiment(new_id(), {"a": 1})
        assert storage.list_experiments() == []

    def _fill(self, storage: Storage, eid: str) -> str:
        """Everything an experiment can have stored: pool, selections,
        loop states, a committed loop with results, outputs and a
        checkpoint, and a staged attempt; returns the checkpoint's path."""
        storage.put_index_map(eid, ["a", "b", "c"])
        storage.put_selection(eid, 0, np.array([0], dtype=np.int64))
        storage.put_selection(eid, 1, np.array([2, 1], dtype=np.int64), scores=np.array([0.75, 0.5]))
        storage.add_labels(eid, LABEL_EVENTS[:2])
        storage.add_labels(eid, LABEL_EVENTS[2:])
        attempt = attempt_id()
        ckpt = storage.checkpoint_path(eid, 0, attempt)
        Path(ckpt).write_bytes(b"weights")
        storage.put_result(eid, 0, attempt, "checkpoint", storage.save_checkpoint(eid, 0, attempt))
        for name, value in JSON_SAMPLES.items():
            if name != "checkpoint":
                storage.put_result(eid, 0, attempt, name, value)
        write_chunks(storage.open_output_sink(eid, 0, attempt), make_chunks(3))
        write_chunks(storage.open_output_sink(eid, 0, attempt, part="labeled"), make_embedded_chunks(2))
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        storage.put_loop_state(eid, 1, {"loop": 1, "status": "failed"})
        staged = attempt_id()
        write_chunks(storage.open_output_sink(eid, 1, staged), make_embedded_chunks(2))
        write_chunks(storage.open_output_sink(eid, 1, staged, part="labeled"), make_embedded_chunks(1))
        return ckpt

    def test_delete_experiment_removes_everything_stored_for_it(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        kept = {"id": new_id("kept"), "model": "m"}
        storage.create_experiment(kept)
        ckpt = self._fill(storage, eid)
        kept_ckpt = self._fill(storage, kept["id"])
        storage.write_lease(eid, 0, {"owner": "gone", "expires_at": 0.0}, None)

        storage.delete_experiment(eid)

        with pytest.raises(NotFoundError):
            storage.get_experiment(eid)
        assert [e["id"] for e in storage.list_experiments()] == [kept["id"]]
        assert storage.list_loop_states(eid) == []
        assert storage.list_labels(eid) == []
        for read in (
            lambda: storage.get_loop_state(eid, 0),
            lambda: storage.get_selection(eid, 0),
            lambda: storage.get_selection_scores(eid, 1),
            lambda: storage.get_index_map(eid),
            lambda: storage.get_result(eid, 0, "metrics"),
            lambda: list(storage.iter_outputs(eid, 0)),
            lambda: list(storage.iter_outputs(eid, 0, part="labeled", embeddings=True)),
        ):
            with pytest.raises(NotFoundError):
                read()
        assert storage.fetch_checkpoint(eid, 0) is None
        assert storage.read_lease(eid, 0) is None  # a new experiment with this id starts unleased
        assert not Path(ckpt).exists()
        with pytest.raises(NotFoundError):
            storage.delete_experiment(eid)
        # the other experiment is untouched
        assert storage.get_index_map(kept["id"]) == ["a", "b", "c"]
        assert storage.list_labels(kept["id"]) == LABEL_EVENTS
        assert _scores(storage, kept["id"], 1) == [0.75, 0.5]
        assert storage.get_result(kept["id"], 0, "metrics") == JSON_SAMPLES["metrics"]
        assert_chunks_equal(storage.iter_outputs(kept["id"], 0), make_chunks(3))
        assert_chunks_equal(storage.iter_outputs(kept["id"], 0, part="labeled", embeddings=True), make_embedded_chunks(2))
        assert _checkpoint(storage, kept["id"], 0).read_bytes() == b"weights" and Path(kept_ckpt).exists()

    def test_a_deleted_id_can_be_used_again_from_scratch(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        self._fill(storage, eid)
        storage.delete_experiment(eid)
        storage.create_experiment({"id": eid, "model": "again"})
        assert storage.get_experiment(eid) == {"id": eid, "model": "again"}
        assert storage.list_loop_states(eid) == [] and storage.list_labels(eid) == []
        with pytest.raises(NotFoundError):
            storage.get_selection(eid, 1)
        with pytest.raises(NotFoundError):
            storage.get_loop_state(eid, 1)
        assert list(storage.iter_outputs(eid, 1, attempt=attempt_id())) == []
        for loop in (0, 1):  # what the old experiment staged or committed is gone
            attempt = attempt_id()
            storage.commit_loop(eid, loop, attempt, {"loop": loop, "status": "done"})
            assert list(storage.iter_outputs(eid, loop, embeddings=True)) == []
            assert list(storage.iter_outputs(eid, loop, part="labeled", embeddings=True)) == []

    def test_deleting_an_unknown_experiment_is_not_found(self, storage: Storage):
        with pytest.raises(NotFoundError):
            storage.delete_experiment(new_id())
        with pytest.raises(ValidationError):
            storage.delete_experiment("../etc")

    # ------------------------------------------------------------------
    # Loop state
    # ------------------------------------------------------------------

    def test_loop_state_round_trip_and_replace(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        storage.put_loop_state(eid, 0, {"loop": 0, "status": "queued", "progress": None})
        assert storage.get_loop_state(eid, 0) == {"loop": 0, "status": "queued", "progress": None}
        running = {"loop": 0, "status": "running", "stage": "infer", "progress": {"done": 5, "total": 10}}
        storage.put_loop_state(eid, 0, running)
        assert storage.get_loop_state(eid, 0) == running

    def test_list_loop_states_in_numeric_order(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        for loop in (10, 2, 0, 1):
            storage.put_loop_state(eid, loop, {"loop": loop, "status": "done"})
        assert [s["loop"] for s in storage.list_loop_states(eid)] == [0, 1, 2, 10]

    def test_loop_states_belong_to_their_experiment(self, storage: Storage, experiment: dict):
        other = new_id()
        storage.create_experiment({"id": other})
        storage.put_loop_state(experiment["id"], 0, {"loop": 0, "status": "done"})
        assert storage.list_loop_states(other) == []
        with pytest.raises(NotFoundError):
            storage.get_loop_state(other, 0)

    def test_all_loop_states_are_each_experiments_list(self, storage: Storage, experiment: dict):
        other, idle = new_id(), new_id()
        storage.create_experiment({"id": other})
        storage.create_experiment({"id": idle})
        for loop in (1, 0):
            storage.put_loop_state(experiment["id"], loop, {"loop": loop, "status": "done"})
        storage.put_loop_state(other, 0, {"loop": 0, "status": "running"})
        everything = storage.list_all_loop_states()
        for eid in (experiment["id"], other, idle):
            assert everything.get(eid, []) == storage.list_loop_states(eid)

    def test_unknown_loop_not_found(self, storage: Storage, experiment: dict):
        with pytest.raises(NotFoundError):
            storage.get_loop_state(experiment["id"], 3)

    def test_invalid_loop_numbers_are_rejected(self, storage: Storage, experiment: dict):
        bads: tuple[Any, ...] = (-1, "1", 1.5, True)  # not loop numbers, on purpose
        for bad in bads:
            with pytest.raises(ValidationError):
                storage.put_loop_state(experiment["id"], bad, {"status": "queued"})

    # ------------------------------------------------------------------
    # Selections and the index map
    # ------------------------------------------------------------------

    def test_selection_round_trip(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        picked = np.array([7, 3, 2**40, 0], dtype=np.int64)
        storage.put_selection(eid, 0, picked)
        got = storage.get_selection(eid, 0)
        assert got.dtype == np.int64 and got.tolist() == picked.tolist()
        storage.put_selection(eid, 0, np.array([1, 2], dtype=np.int64))
        assert storage.get_selection(eid, 0).tolist() == [1, 2]

    def test_missing_selection_not_found(self, storage: Storage, experiment: dict):
        storage.put_selection(experiment["id"], 0, np.array([1], dtype=np.int64))
        with pytest.raises(NotFoundError):
            storage.get_selection(experiment["id"], 1)
        with pytest.raises(NotFoundError):
            storage.get_selection_scores(experiment["id"], 1)

    def test_a_ranked_selection_keeps_its_order_and_scores(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        picked = np.array([42, 7, 2**40, 0], dtype=np.int64)
        scores = np.array([3.25, 1e-300, -0.0, np.nan])  # float64 exactly; NaN (an unscorable record) too
        storage.put_selection(eid, 1, picked, scores=scores)
        assert storage.get_selection(eid, 1).tolist() == picked.tolist()  # not sorted: best first
        got = storage.get_selection_scores(eid, 1)
        assert got is not None and got.dtype == np.float64
        np.testing.assert_array_equal(got, scores)
        # Replaced without scores: the old ones are gone with the old selection.
        storage.put_selection(eid, 1, np.array([9, 8], dtype=np.int64))
        assert storage.get_selection(eid, 1).tolist() == [9, 8] and storage.get_selection_scores(eid, 1) is None
        storage.put_selection(eid, 1, np.array([5, 6], dtype=np.int64), scores=np.array([2.0, 1.0], dtype=np.float32))
        assert _scores(storage, eid, 1) == [2.0, 1.0]
        storage.put_selection(eid, 0, np.array([1], dtype=np.int64))
        assert storage.get_selection_scores(eid, 0) is None  # loops are independent

    # ------------------------------------------------------------------
    # Label events (labels from people)
    # ------------------------------------------------------------------

    def test_label_events_round_trip_oldest_first(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        assert storage.list_labels(eid) == []
        storage.add_labels(eid, LABEL_EVENTS[:4])
        storage.add_labels(eid, LABEL_EVENTS[4:])
        storage.add_labels(eid, [label_event(3, 0, source="review")])  # a record labelled again: history kept
        assert storage.list_labels(eid) == LABEL_EVENTS + [label_event(3, 0, source="review")]
        storage.add_labels(eid, [])
        assert len(storage.list_labels(eid)) == len(LABEL_EVENTS) + 1

    def test_label_events_belong_to_their_experiment(self, storage: Storage, experiment: dict):
        other = {"id": new_id(), "model": "m"}
        storage.create_experiment(other)
        storage.add_labels(experiment["id"], LABEL_EVENTS[:1])
        storage.add_labels(other["id"], LABEL_EVENTS[1:2])
        assert storage.list_labels(experiment["id"]) == LABEL_EVENTS[:1]
        assert storage.list_labels(other["id"]) == LABEL_EVENTS[1:2]

    def test_labels_of_an_unknown_experiment_not_found(self, storage: Storage):
        with pytest.raises(NotFoundError):
            storage.add_labels(new_id(), LABEL_EVENTS[:1])

    def test_a_batch_of_labels_that_is_not_json_stores_nothing(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        storage.add_labels(eid, LABEL_EVENTS[:1])
        for bad in (object(), float("nan"), b"bytes"):
            with pytest.raises((TypeError, ValueError)):
                storage.add_labels(eid, [label_event(4, 1), label_event(5, bad), label_event(6, 1)])
        assert storage.list_labels(eid) == LABEL_EVENTS[:1]

    def test_concurrent_batches_of_labels_are_each_whole(self, storage: Storage, experiment: dict):
        eid = experiment["id"]

        def send(batch: int) -> None:
            storage.add_labels(eid, [label_event(batch * 10 + n, n, source=f"batch-{batch}") for n in range(5)])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(8)))
        events = storage.list_labels(eid)
        assert len(events) == 40
        for batch in range(8):  # every batch whole, its events together and in their order
            at = [n for n, e in enumerate(events) if e["source"] == f"batch-{batch}"]
            assert at == list(range(at[0], at[0] + 5))
            assert [events[n]["label"] for n in at] == [0, 1, 2, 3, 4]

    def test_index_map_round_trip(self, storage: Storage, experiment: dict):
        refs = [f"img_{i:05d}.png" for i in range(1000)] + ["caf\u00e9/\u00fcber.jpg", "with space", ""]
        storage.put_index_map(experiment["id"], refs)
        assert storage.get_index_map(experiment["id"]) == refs

    def test_missing_index_map_not_found(self, storage: Storage, experiment: dict):
        with pytest.raises(NotFoundError):
            storage.get_index_map(experiment["id"])

    # ------------------------------------------------------------------
    # Results, staged and committed
    # ------------------------------------------------------------------

    @pytest.mark.parametrize("name", RESULT_NAMES)
    def test_every_result_round_trips_after_commit(self, storage: Storage, experiment: dict, name: str):
        eid, attempt = experiment["id"], attempt_id()
        storage.put_result(eid, 0, attempt, name, JSON_SAMPLES[name])
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert storage.get_result(eid, 0, name) == JSON_SAMPLES[name]

    def test_results_are_invisible_until_commit(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        storage.put_loop_state(eid, 0, {"loop": 0, "status": "running"})
        for name, value in JSON_SAMPLES.items():
            storage.put_result(eid, 0, attempt, name, value)
        write_chunks(storage.open_output_sink(eid, 0, attempt), make_chunks())
        for name in RESULT_NAMES:
            with pytest.raises(NotFoundError):
                storage.get_result(eid, 0, name)
        with pytest.raises(NotFoundError):
            list(storage.iter_outputs(eid, 0))
        assert storage.get_loop_state(eid, 0)["status"] == "running"
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done", "metrics": {"accuracy": 0.5}})
        assert storage.get_loop_state(eid, 0) == {"loop": 0, "status": "done", "metrics": {"accuracy": 0.5}}
        assert {n: storage.get_result(eid, 0, n) for n in RESULT_NAMES} == JSON_SAMPLES
        assert sum(len(i) for i, _ in storage.iter_outputs(eid, 0)) == 35

    def test_result_not_produced_not_found(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        storage.put_result(eid, 0, attempt, "metrics", {"a": 1})
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        with pytest.raises(NotFoundError):
            storage.get_result(eid, 0, "predictions")
        with pytest.raises(NotFoundError):
            storage.get_result(eid, 1, "metrics")

    def test_results_must_be_json(self, storage: Storage, experiment: dict):
        for bad in (object(), float("nan"), {"x": np.arange(3)}, b"bytes"):
            with pytest.raises((TypeError, ValueError)):
                storage.put_result(experiment["id"], 0, attempt_id(), "metrics", bad)

    def test_state_updates_keep_committed_results(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        storage.put_result(eid, 0, attempt, "metrics", {"a": 1})
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        storage.put_loop_state(eid, 0, {"loop": 0, "status": "done", "note": "edited"})
        assert storage.get_result(eid, 0, "metrics") == {"a": 1}
        assert storage.get_loop_state(eid, 0)["note"] == "edited"

    def test_a_new_attempt_replaces_results_only_on_commit(self, storage: Storage, experiment: dict):
        eid, first, second = experiment["id"], attempt_id(), attempt_id()
        storage.put_result(eid, 0, first, "metrics", {"run": 1})
        write_chunks(storage.open_output_sink(eid, 0, first), make_chunks(2, seed=1))
        storage.commit_loop(eid, 0, first, {"loop": 0, "status": "done", "run": 1})

        storage.put_loop_state(eid, 0, {"loop": 0, "status": "running", "run": 2})
        storage.put_result(eid, 0, second, "metrics", {"run": 2})
        write_chunks(storage.open_output_sink(eid, 0, second), make_chunks(3, seed=2))
        assert storage.get_result(eid, 0, "metrics") == {"run": 1}
        assert len(list(storage.iter_outputs(eid, 0))) == 2

        storage.commit_loop(eid, 0, second, {"loop": 0, "status": "done", "run": 2})
        assert storage.get_result(eid, 0, "metrics") == {"run": 2}
        assert_chunks_equal(storage.iter_outputs(eid, 0), make_chunks(3, seed=2))
        assert list(storage.iter_outputs(eid, 0, attempt=first)) == []

    def test_discard_drops_only_an_uncommitted_attempt(self, storage: Storage, experiment: dict):
        eid, kept, dropped = experiment["id"], attempt_id(), attempt_id()
        storage.put_result(eid, 0, kept, "metrics", {"kept": True})
        write_chunks(storage.open_output_sink(eid, 0, kept), make_chunks(2))
        storage.commit_loop(eid, 0, kept, {"loop": 0, "status": "done"})
        write_chunks(storage.open_output_sink(eid, 0, dropped), make_chunks(2))
        storage.discard_attempt(eid, 0, dropped)
        assert list(storage.iter_outputs(eid, 0, attempt=dropped)) == []
        storage.discard_attempt(eid, 0, kept)  # the committed attempt stays
        assert storage.get_result(eid, 0, "metrics") == {"kept": True}
        assert_chunks_equal(storage.iter_outputs(eid, 0), make_chunks(2))

    def test_loops_are_independent(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        for loop in (0, 1):
            attempt = attempt_id()
            storage.put_result(eid, loop, attempt, "metrics", {"loop": loop})
            write_chunks(storage.open_output_sink(eid, loop, attempt), make_chunks(2, seed=loop))
            storage.commit_loop(eid, loop, attempt, {"loop": loop, "status": "done"})
        broken = attempt_id()
        storage.put_loop_state(eid, 2, {"loop": 2, "status": "running"})
        storage.put_result(eid, 2, broken, "metrics", {"loop": 2})
        storage.discard_attempt(eid, 2, broken)
        for loop in (0, 1):
            assert storage.get_result(eid, loop, "metrics") == {"loop": loop}
            assert_chunks_equal(storage.iter_outputs(eid, loop), make_chunks(2, seed=loop))
        with pytest.raises(NotFoundError):
            storage.get_result(eid, 2, "metrics")

    # ------------------------------------------------------------------
    # Infer outputs
    # ------------------------------------------------------------------

    def test_outputs_stream_back_chunk_by_chunk(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_chunks(n_chunks=12, rows=9, width=4)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks)
        assert_chunks_equal(storage.iter_outputs(eid, 0, attempt=attempt), chunks)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        stream = storage.iter_outputs(eid, 0)
        first = next(iter(stream))
        assert first[0].tolist() == chunks[0][0].tolist()  # a stream, not one concatenated array
        assert_chunks_equal(storage.iter_outputs(eid, 0), chunks)

    def test_chunks_a_reader_keeps_part_of_stay_intact(self, storage: Storage, experiment: dict):
        """A reader may keep slices of each chunk while the stream goes on; a
        backend that recycles buffers must not write over them."""
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_chunks(n_chunks=6, rows=9, width=3)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        kept = [(idx[:4], val[:, 1]) for idx, val in storage.iter_outputs(eid, 0)]
        assert [k[0].tolist() for k in kept] == [c[0][:4].tolist() for c in chunks]
        assert [k[1].tobytes() for k in kept] == [c[1][:, 1].tobytes() for c in chunks]

    def test_outputs_through_the_writer(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        pool, labeled = 1000, np.arange(0, 1000, 7)
        unlabeled = np.setdiff1d(np.arange(pool), labeled)
        writer = OutputWriter(storage.open_output_sink(eid, 0, attempt), model="m", pool_size=pool, unlabeled=unlabeled, chunk_rows=64)
        rng = np.random.default_rng(3)
        expected = rng.standard_normal((pool, 5)).astype(np.float32)
        for i in unlabeled[::-1]:  # any order, one row at a time
            writer.add(int(i), expected[i])
        writer.close()
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        chunks = list(storage.iter_outputs(eid, 0))
        assert all(len(idx) <= 64 for idx, _ in chunks) and len(chunks) == -(-unlabeled.size // 64)
        idx = np.concatenate([c[0] for c in chunks])
        val = np.concatenate([c[1] for c in chunks])
        assert idx.dtype == np.int64 and val.dtype == np.float32
        assert sorted(idx.tolist()) == unlabeled.tolist()
        np.testing.assert_array_equal(val, expected[idx])

    def test_outputs_keep_extreme_values_exactly(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        info = np.finfo(np.float32)
        values = np.array([[info.max, info.min, info.tiny, -0.0, 1e-45]], dtype=np.float32)
        write_chunks(storage.open_output_sink(eid, 0, attempt), [(np.array([2**40], dtype=np.int64), values)])
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        [(idx, val)] = list(storage.iter_outputs(eid, 0))
        assert idx.tolist() == [2**40]
        assert val.tobytes() == values.tobytes()

    def test_a_loop_without_outputs_streams_nothing(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert list(storage.iter_outputs(eid, 0)) == []

    def test_outputs_of_an_unfinished_loop_not_found(self, storage: Storage, experiment: dict):
        with pytest.raises(NotFoundError):
            list(storage.iter_outputs(experiment["id"], 0))

    # ------------------------------------------------------------------
    # Embeddings and the labeled part
    # ------------------------------------------------------------------

    def test_embeddings_round_trip_beside_their_outputs(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_embedded_chunks(n_chunks=5, rows=7, width=3, embedding_width=4)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert_chunks_equal(storage.iter_outputs(eid, 0, embeddings=True), chunks)
        # without embeddings=True: (indices, values) as ever
        assert_chunks_equal(storage.iter_outputs(eid, 0), [c[:2] for c in chunks])

    def test_outputs_without_embeddings_read_back_none(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_chunks(n_chunks=3)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        got = list(storage.iter_outputs(eid, 0, embeddings=True))
        assert [len(c) for c in got] == [3, 3, 3] and all(c[2] is None for c in got)
        assert_chunks_equal([c[:2] for c in got], chunks)

    def test_the_labeled_part_is_stored_apart_from_the_pool(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        pool = make_embedded_chunks(n_chunks=3, seed=1)
        labeled = make_embedded_chunks(n_chunks=2, rows=4, width=3, embedding_width=5, seed=2)
        write_chunks(storage.open_output_sink(eid, 0, attempt, part="pool"), pool)
        write_chunks(storage.open_output_sink(eid, 0, attempt, part="labeled"), labeled)
        assert_chunks_equal(storage.iter_outputs(eid, 0, attempt=attempt, part="labeled", embeddings=True), labeled)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert_chunks_equal(storage.iter_outputs(eid, 0, embeddings=True), pool)
        assert_chunks_equal(storage.iter_outputs(eid, 0, part="pool", embeddings=True), pool)
        assert_chunks_equal(storage.iter_outputs(eid, 0, part="labeled", embeddings=True), labeled)
        assert_chunks_equal(storage.iter_outputs(eid, 0, part="labeled"), [c[:2] for c in labeled])
        # a loop whose strategy asked for no labeled outputs has none
        other = attempt_id()
        write_chunks(storage.open_output_sink(eid, 1, other), make_chunks(2))
        storage.commit_loop(eid, 1, other, {"loop": 1, "status": "done"})
        assert list(storage.iter_outputs(eid, 1, part="labeled", embeddings=True)) == []

    def test_an_unknown_part_is_refused(self, storage: Storage, experiment: dict):
        with pytest.raises(ValidationError):
            storage.open_output_sink(experiment["id"], 0, attempt_id(), part="../pool")
        with pytest.raises(ValidationError):
            list(storage.iter_outputs(experiment["id"], 0, attempt=attempt_id(), part="everything"))

    def test_a_running_attempts_embeddings_are_readable_by_attempt(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_embedded_chunks(n_chunks=3)
        labeled = make_embedded_chunks(n_chunks=2, seed=5)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks, close=False)  # still being written
        assert_chunks_equal(storage.iter_outputs(eid, 0, attempt=attempt, embeddings=True), chunks)
        write_chunks(storage.open_output_sink(eid, 0, attempt, part="labeled"), labeled)
        assert_chunks_equal(storage.iter_outputs(eid, 0, attempt=attempt, part="labeled", embeddings=True), labeled)
        with pytest.raises(NotFoundError):  # and invisible until the commit
            list(storage.iter_outputs(eid, 0, embeddings=True))

    def test_discard_and_a_new_commit_drop_an_attempts_embeddings_and_labeled_part(self, storage: Storage, experiment: dict):
        eid, dropped, replaced, kept = experiment["id"], attempt_id(), attempt_id(), attempt_id()
        for attempt in (dropped, replaced, kept):
            write_chunks(storage.open_output_sink(eid, 0, attempt), make_embedded_chunks(2))
            write_chunks(storage.open_output_sink(eid, 0, attempt, part="labeled"), make_embedded_chunks(1, seed=3))
        storage.discard_attempt(eid, 0, dropped)
        assert list(storage.iter_outputs(eid, 0, attempt=dropped, embeddings=True)) == []
        assert list(storage.iter_outputs(eid, 0, attempt=dropped, part="labeled", embeddings=True)) == []
        storage.commit_loop(eid, 0, kept, {"loop": 0, "status": "done"})
        assert list(storage.iter_outputs(eid, 0, attempt=replaced, embeddings=True)) == []
        assert list(storage.iter_outputs(eid, 0, attempt=replaced, part="labeled", embeddings=True)) == []
        storage.discard_attempt(eid, 0, kept)  # a committed attempt stays
        assert_chunks_equal(storage.iter_outputs(eid, 0, embeddings=True), make_embedded_chunks(2))
        assert_chunks_equal(storage.iter_outputs(eid, 0, part="labeled", embeddings=True), make_embedded_chunks(1, seed=3))

    # ------------------------------------------------------------------
    # Concurrency
    # ------------------------------------------------------------------

    def test_readers_see_all_or_nothing_while_a_loop_commits(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_chunks(n_chunks=6, rows=5)
        done = threading.Event()
        seen: list[str] = []
        problems: list[str] = []

        def reader():
            while True:
                finished = done.is_set()
                try:
                    got = list(storage.iter_outputs(eid, 0))
                    metrics = storage.get_result(eid, 0, "metrics")
                except NotFoundError:
                    if finished:
                        problems.append("committed loop not visible")
                        return
                    seen.append("nothing")
                    continue
                if len(got) != len(chunks) or metrics != {"complete": True}:
                    problems.append(f"partial loop seen: {len(got)} chunks, metrics {metrics!r}")
                seen.append("all")
                if finished:
                    return

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(reader) for _ in range(3)]
            storage.put_result(eid, 0, attempt, "metrics", {"complete": True})
            sink = storage.open_output_sink(eid, 0, attempt)
            for idx, val in chunks:
                sink.write(idx, val)
            sink.close()
            storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
            done.set()
            for f in futures:
                f.result()
        assert problems == []
        assert "all" in seen

    def test_concurrent_readers_get_everything(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        chunks = make_chunks(n_chunks=8, rows=11, width=6)
        write_chunks(storage.open_output_sink(eid, 0, attempt), chunks)
        storage.put_result(eid, 0, attempt, "predictions", JSON_SAMPLES["predictions"])
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        storage.put_index_map(eid, ["r"] * 100)

        def read(_):
            out = list(storage.iter_outputs(eid, 0))
            return out, storage.get_result(eid, 0, "predictions"), storage.get_loop_state(eid, 0), len(storage.get_index_map(eid))

        with ThreadPoolExecutor(6) as pool:
            for out, predictions, state, refs in pool.map(read, range(12)):
                assert_chunks_equal(out, chunks)
                assert predictions == JSON_SAMPLES["predictions"]
                assert state["status"] == "done" and refs == 100

    def test_concurrent_writers_to_different_loops(self, storage: Storage, experiment: dict):
        eid = experiment["id"]

        def run(loop):
            attempt = attempt_id()
            storage.put_loop_state(eid, loop, {"loop": loop, "status": "running"})
            write_chunks(storage.open_output_sink(eid, loop, attempt), make_chunks(3, seed=loop))
            storage.put_result(eid, loop, attempt, "metrics", {"loop": loop})
            storage.commit_loop(eid, loop, attempt, {"loop": loop, "status": "done"})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(run, range(4)))
        assert [s["loop"] for s in storage.list_loop_states(eid)] == [0, 1, 2, 3]
        for loop in range(4):
            assert storage.get_result(eid, loop, "metrics") == {"loop": loop}
            assert_chunks_equal(storage.iter_outputs(eid, loop), make_chunks(3, seed=loop))

    # ------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------

    def test_checkpoint_path_folder_exists(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        path = Path(storage.checkpoint_path(eid, 0, attempt))
        assert path.parent.is_dir()
        assert storage.checkpoint_path(eid, 0, attempt) != storage.checkpoint_path(eid, 1, attempt)

    def test_each_attempt_writes_its_own_checkpoint(self, storage: Storage, experiment: dict):
        """An attempt that stalled past its lease and wakes after another
        attempt committed the loop writes only its own file: the committed
        checkpoint is never overwritten."""
        eid, stalled, winner = experiment["id"], attempt_id(), attempt_id()
        assert storage.checkpoint_path(eid, 0, stalled) != storage.checkpoint_path(eid, 0, winner)
        Path(storage.checkpoint_path(eid, 0, winner)).write_bytes(b"committed")
        storage.put_result(eid, 0, winner, "checkpoint", storage.save_checkpoint(eid, 0, winner))
        storage.commit_loop(eid, 0, winner, {"loop": 0, "status": "done"})
        Path(storage.checkpoint_path(eid, 0, stalled)).write_bytes(b"stale")  # its train, late
        assert _checkpoint(storage, eid, 0).read_bytes() == b"committed"

    def test_no_checkpoint_written_means_none(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        assert storage.save_checkpoint(eid, 0, attempt) is None
        storage.put_result(eid, 0, attempt, "checkpoint", None)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert storage.fetch_checkpoint(eid, 0) is None
        assert storage.fetch_checkpoint(eid, 5) is None

    def test_checkpoint_saved_and_fetched(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        content = bytes(range(256)) * 100
        Path(storage.checkpoint_path(eid, 0, attempt)).write_bytes(content)
        ref = storage.save_checkpoint(eid, 0, attempt)
        assert ref is not None
        storage.put_result(eid, 0, attempt, "checkpoint", ref)
        assert storage.fetch_checkpoint(eid, 0) is None  # not committed yet
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        assert _checkpoint(storage, eid, 0).read_bytes() == content

    def test_checkpoint_folder_saved_and_fetched(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        folder = Path(storage.checkpoint_path(eid, 0, attempt))
        (folder / "sub").mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
        (folder / "sub" / "config.json").write_text('{"a": 1}')
        ref = storage.save_checkpoint(eid, 0, attempt)
        storage.put_result(eid, 0, attempt, "checkpoint", ref)
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        got = _checkpoint(storage, eid, 0)
        assert (got / "weights.bin").read_bytes() == b"\x00\x01" * 1000
        assert (got / "sub" / "config.json").read_text() == '{"a": 1}'

    # ------------------------------------------------------------------
    # A second handle: another process or machine
    # ------------------------------------------------------------------

    def test_everything_persists_for_a_second_handle(self, storage: Storage, reopen, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        storage.put_index_map(eid, ["a", "b"])
        storage.put_selection(eid, 0, np.array([1], dtype=np.int64))
        storage.put_selection(eid, 1, np.array([0, 2], dtype=np.int64), scores=np.array([0.5, 0.25]))
        storage.add_labels(eid, LABEL_EVENTS)
        storage.put_result(eid, 0, attempt, "metrics", {"m": 1})
        write_chunks(storage.open_output_sink(eid, 0, attempt), make_chunks(3))
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        storage.put_token({"name": "t1", "salt": "s", "hash": "h", "created": "now"})
        other = reopen()
        try:
            assert other.get_experiment(eid) == experiment
            assert other.get_index_map(eid) == ["a", "b"]
            assert other.get_selection(eid, 0).tolist() == [1]
            assert other.get_selection(eid, 1).tolist() == [0, 2] and _scores(other, eid, 1) == [0.5, 0.25]
            assert other.list_labels(eid) == LABEL_EVENTS
            assert other.get_loop_state(eid, 0)["status"] == "done"
            assert other.get_result(eid, 0, "metrics") == {"m": 1}
            assert_chunks_equal(other.iter_outputs(eid, 0), make_chunks(3))
            assert [t["name"] for t in other.list_tokens()] == ["t1"]
        finally:
            other.close()

    def test_a_deletion_shows_through_a_second_handle(self, storage: Storage, reopen, experiment: dict):
        eid = experiment["id"]
        self._fill(storage, eid)
        other = reopen()
        try:
            assert other.get_loop_state(eid, 0)["status"] == "done"
            storage.delete_experiment(eid)
            with pytest.raises(NotFoundError):
                other.get_experiment(eid)
            assert other.list_experiments() == [] and other.list_loop_states(eid) == [] and other.list_labels(eid) == []
            assert other.fetch_checkpoint(eid, 0) is None
        finally:
            other.close()

    def test_checkpoint_reaches_a_second_handle(self, storage: Storage, reopen, experiment: dict):
        """The next loop may run elsewhere: ``fetch_checkpoint`` must give it
        the committed checkpoint as a local file."""
        eid, attempt = experiment["id"], attempt_id()
        Path(storage.checkpoint_path(eid, 0, attempt)).write_bytes(b"weights-v1")
        storage.put_result(eid, 0, attempt, "checkpoint", storage.save_checkpoint(eid, 0, attempt))
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"})
        other = reopen()
        try:
            path = other.fetch_checkpoint(eid, 0)
            assert path is not None and Path(path).read_bytes() == b"weights-v1"
        finally:
            other.close()

    # ------------------------------------------------------------------
    # Loop leases: compare-and-swap, and the policy of alectio_core.leases on it
    # ------------------------------------------------------------------

    def test_lease_creation_races_have_one_winner(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        assert storage.read_lease(eid, 0) is None

        def create(n):
            try:
                return n, storage.write_lease(eid, 0, {"owner": f"p{n}"}, None)
            except ConflictError:
                return n, None

        with ThreadPoolExecutor(8) as pool:
            won = [(n, version) for n, version in pool.map(create, range(8)) if version is not None]
        assert len(won) == 1
        (n, version), = won
        assert storage.read_lease(eid, 0) == ({"owner": f"p{n}"}, version)

    def test_lease_is_compare_and_swap(self, storage: Storage, experiment: dict):
        eid = experiment["id"]
        first = storage.write_lease(eid, 1, {"owner": "a", "n": 1}, None)
        second = storage.write_lease(eid, 1, {"owner": "a", "n": 2}, first)
        assert second != first
        for stale in (first, None, "not-a-version"):
            with pytest.raises(ConflictError):
                storage.write_lease(eid, 1, {"owner": "b"}, stale)
        record, version = _lease(storage, eid, 1)
        assert (record["owner"], record["n"], version) == ("a", 2, second)
        assert storage.read_lease(eid, 0) is None  # per loop

    def test_commit_under_a_changed_lease_publishes_nothing(self, storage: Storage, experiment: dict):
        eid, attempt = experiment["id"], attempt_id()
        mine = storage.write_lease(eid, 0, {"owner": "a"}, None)
        storage.put_loop_state(eid, 0, {"loop": 0, "status": "running"})
        storage.put_result(eid, 0, attempt, "metrics", {"m": 1})
        theirs = storage.write_lease(eid, 0, {"owner": "b"}, mine)
        with pytest.raises(ConflictError):
            storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"}, lease_version=mine)
        assert storage.get_loop_state(eid, 0)["status"] == "running"
        with pytest.raises(NotFoundError):
            storage.get_result(eid, 0, "metrics")
        storage.commit_loop(eid, 0, attempt, {"loop": 0, "status": "done"}, lease_version=theirs)
        assert storage.get_result(eid, 0, "metrics") == {"m": 1}

    def test_a_live_lease_is_one_processes(self, storage: Storage, experiment: dict):
        from ..leases import LoopBusy, Leases

        first, second = Leases(storage, ttl=600), Leases(storage, ttl=600)  # two servers
        lease = first.acquire(experiment["id"], 0)
        try:
            with pytest.raises(LoopBusy, match=f"running on another server \\({first.owner}\\)"):
                second.acquire(experiment["id"], 0)
            assert first.acquire(experiment["id"], 0) is lease  # the holder may take it again
            first.release(lease)
        finally:
            first.release(lease)
        second.release(second.acquire(experiment["id"], 0))  # given back: free

    def test_an_expired_lease_is_taken_over_and_its_holder_cannot_commit(self, storage: Storage, experiment: dict):
        from ..leases import LeaseLost, Leases

        eid = experiment["id"]
        first, second = Leases(storage, ttl=600), Leases(storage, ttl=600)
        lease = first.acquire(eid, 0)
        record, version = _lease(storage, eid, 0)
        storage.write_lease(eid, 0, {**record, "expires_at": 0}, version)  # as if 600 s passed without renewals
        with lease.lock:
            lease.version = _lease(storage, eid, 0)[1]  # ... and the holder's view with it
        taken = second.acquire(eid, 0)
        published: list[Any] = []
        with pytest.raises(LeaseLost, match="lost its lease"):
            first.commit(lease, published.append)
        assert published == []
        assert second.commit(taken, published.append) is None and len(published) == 1
        assert _lease(storage, eid, 0)[0]["owner"] == second.owner
        second.release(taken)
        first.release(lease)
        assert _lease(storage, eid, 0)[0]["owner"] is None

    def test_another_process_can_ask_the_holder_to_cancel(self, storage: Storage, experiment: dict):
        from ..errors import LoopCancelled
        from ..leases import Leases

        eid = experiment["id"]
        holder, other = Leases(storage, ttl=600), Leases(storage, ttl=600)
        stopped = threading.Event()
        lease = holder.acquire(eid, 0, stopped.set)
        try:
            assert other.request_cancel(eid, 0) is True
            with pytest.raises(LoopCancelled):
                holder.commit(lease, lambda version: None)
            assert stopped.is_set() and lease.cancel_requested
        finally:
            holder.release(lease)
        assert other.request_cancel(eid, 0) is False  # nobody holds it now

    # ------------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------------

    def test_tokens(self, storage: Storage):
        records = [{"name": n, "salt": "s" + n, "hash": "h" + n, "created": "2024-01-01"} for n in ("ci", "alice")]
        for r in records:
            storage.put_token(r)
        assert storage.list_tokens() == [{**r, "last_used": None} for r in sorted(records, key=lambda r: r["name"])]
        assert storage.get_token("ci") == records[0] and storage.get_token("ghost") is None
        with pytest.raises(ConflictError):
            storage.put_token({**records[0], "hash": "other"})
        storage.touch_token("ci", "2024-02-02T00:00:00")
        assert {t["name"]: t["last_used"] for t in storage.list_tokens()} == {"ci": "2024-02-02T00:00:00", "alice": None}
        assert {k: v for k, v in (storage.get_token("ci") or {}).items() if k != "last_used"} == records[0]
        storage.delete_token("ci")
        assert [t["name"] for t in storage.list_tokens()] == ["alice"] and storage.get_token("ci") is None
        with pytest.raises(NotFoundError):
            storage.delete_token("ci")
        storage.touch_token("ci", "later")  # a revoked token: it stays revoked, no error
        assert [t["name"] for t in storage.list_tokens()] == ["alice"] and storage.get_token("ci") is None
        storage.put_token(records[0])  # the name again: a new token, never used
        assert {t["name"]: t["last_used"] for t in storage.list_tokens()} == {"ci": None, "alice": None}

    # ------------------------------------------------------------------
    # Dashboard sessions
    # ------------------------------------------------------------------

    def test_a_session_is_stored_read_and_deleted(self, storage: Storage):
        digest, other = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
        record = {"token": "ci", "fingerprint": "f" * 32, "expires": time.time() + 3600}
        assert storage.get_session(digest) is None
        storage.put_session(digest, record)
        storage.put_session(other, {**record, "token": "alice"})
        assert storage.get_session(digest) == record and storage.get_session(other) == {**record, "token": "alice"}
        storage.delete_session(digest)
        storage.delete_session(digest)  # twice (signed out on two servers at once): no error
        assert storage.get_session(digest) is None and storage.get_session(other) == {**record, "token": "alice"}

    def test_an_expired_session_is_dropped(self, storage: Storage):
        expired, live = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
        storage.put_session(expired, {"token": "ci", "expires": time.time() - 1})
        storage.put_session(live, {"token": "ci", "expires": time.time() + 3600})
        assert storage.get_session(expired) is None and storage.get_session(live) is not None

    def test_a_session_digest_is_checked_before_it_becomes_a_key(self, storage: Storage):
        for bad in ("../" + "a" * 61, "A" * 64, "a" * 63, "a" * 32, "", None):
            with pytest.raises(ValidationError):
                storage.put_session(bad, {"token": "ci", "expires": time.time() + 60})  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                storage.get_session(bad)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                storage.delete_session(bad)  # type: ignore[arg-type]

    def test_a_session_is_seen_and_signed_out_through_a_second_handle(self, storage: Storage, reopen):
        digest, record = uuid.uuid4().hex * 2, {"token": "ci", "expires": time.time() + 3600}
        other = reopen()
        try:
            storage.put_session(digest, record)
            assert other.get_session(digest) == record
            other.delete_session(digest)
            assert storage.get_session(digest) is None
        finally:
            other.close()


def assert_chunks_equal(got, expected) -> None:
    """Same chunks, same order, exact dtypes and bytes (embeddings too, for
    chunks of three arrays)."""
    got = list(got)
    assert len(got) == len(expected), f"{len(got)} chunks, expected {len(expected)}"
    for g, e in zip(got, expected):
        assert len(g) == len(e), f"chunks of {len(g)} arrays, expected {len(e)}"
        gi, gv, ei, ev = g[0], g[1], e[0], e[1]
        assert gi.dtype == np.int64 and gv.dtype == np.float32
        assert gi.tolist() == ei.tolist()
        assert gv.shape == ev.shape and gv.tobytes() == ev.tobytes()
        if len(e) == 3:
            if e[2] is None:
                assert g[2] is None
            else:
                assert g[2] is not None and g[2].dtype == np.float32
                assert g[2].shape == e[2].shape and g[2].tobytes() == e[2].tobytes()
