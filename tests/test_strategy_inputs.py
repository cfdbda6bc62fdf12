"""Strategy inputs beyond logits: a strategy's ``select`` receives the
embeddings, the labeled records and ``mc_samples`` only when it declares
them, from ``select()`` and through a real loop over SQLite and S3."""

from __future__ import annotations

import numpy as np
import pytest

from alectio_core import plugins
from alectio_core.engine import Engine
from alectio_core.errors import PluginError, StorageError, ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import Labeled, declared_inputs, reduce_mc, select
from alectio_plugins.storage_sqlite import SQLiteStorage

# ----------------------------------------------------------------------
# Strategies that record what they were given
# ----------------------------------------------------------------------


class Everything:
    """Declares every input; picks the highest record indices."""

    name = "records_everything"

    def __init__(self):
        self.calls: list[dict] = []

    def select(self, chunks, k, *, rng, task, num_classes, embeddings, labeled, mc_samples):
        seen = {"chunks": [(np.array(i), np.array(v)) for i, v in chunks], "mc_samples": mc_samples, "labeled": labeled}
        seen["embeddings"] = None if embeddings is None else [(np.array(i), np.array(e)) for i, e in embeddings]
        self.calls.append(seen)
        idx = np.concatenate([i for i, _ in seen["chunks"]])
        return np.sort(idx)[::-1][:k]


class LogitsOnly:
    """Declares nothing beyond logits."""

    name = "records_logits"

    def __init__(self):
        self.calls: list[list] = []

    def select(self, chunks, k, *, rng, task, num_classes):
        got = [(np.array(i), np.array(v)) for i, v in chunks]
        self.calls.append(got)
        return np.sort(np.concatenate([i for i, _ in got]))[::-1][:k]


class EmbeddingsFirst:
    """Reads every embedding before any output (a one-pass strategy would
    not, but it must still see aligned streams)."""

    name = "embeddings_first"

    def __init__(self):
        self.calls: list[tuple] = []

    def select(self, chunks, k, *, rng, task, num_classes, embeddings):
        emb = [(np.array(i), np.array(e)) for i, e in embeddings]
        out = [(np.array(i), np.array(v)) for i, v in chunks]
        self.calls.append((emb, out))
        return np.sort(np.concatenate([i for i, _ in out]))[::-1][:k]


def naive_log_mean_softmax(x: np.ndarray, T: int) -> np.ndarray:
    x = x.astype(np.float64).reshape(len(x), T, -1)
    p = np.exp(x - x.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    return np.log(p.mean(axis=1))


# ----------------------------------------------------------------------
# select(): the Python API
# ----------------------------------------------------------------------


def test_a_strategy_receives_exactly_the_inputs_it_declares():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3)).astype(np.float32)
    emb = rng.standard_normal((12, 4)).astype(np.float32)
    everything, logits = Everything(), LogitsOnly()
    assert declared_inputs(everything) == {"embeddings", "labeled", "mc_samples"} and declared_inputs(logits) == set()

    known = Labeled(np.array([20, 21]), np.ones((2, 3), np.float32), np.zeros((2, 4), np.float32))
    assert select(everything, x, 2, indices=np.arange(12) + 100, embeddings=emb, labeled=known).tolist() == [111, 110]
    [call] = everything.calls
    np.testing.assert_array_equal(call["embeddings"][0][0], np.arange(12) + 100)
    np.testing.assert_array_equal(call["embeddings"][0][1], emb)
    assert call["labeled"] is known and call["mc_samples"] is None

    # the same inputs to a strategy that declares none: it is called as before
    assert select(logits, x, 2, embeddings=emb, labeled=known).tolist() == [11, 10]
    np.testing.assert_array_equal(logits.calls[0][0][1], x)


def test_labeled_may_be_given_as_indices_or_left_out():
    x = np.zeros((5, 2), np.float32)
    everything = Everything()
    select(everything, x, 1, labeled=np.array([9, 7, 7]))
    select(everything, x, 1)
    assert everything.calls[0]["labeled"].indices.tolist() == [7, 9] and everything.calls[0]["labeled"].values is None
    assert everything.calls[1]["labeled"].indices.tolist() == [] and everything.calls[1]["embeddings"] is None


@pytest.mark.parametrize("T", [1, 3])
def test_a_strategy_not_declaring_mc_samples_sees_the_log_of_the_mean_softmax(T):
    rng = np.random.default_rng(T)
    x = (rng.standard_normal((9, T * 4)) * 8).astype(np.float32)
    chunks = [(np.arange(0, 5), x[:5]), (np.arange(5, 9), x[5:])]
    logits = LogitsOnly()
    select(logits, iter(chunks), 3, mc_samples=T)
    got = np.concatenate([v for _, v in logits.calls[0]])
    assert got.shape == (9, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, naive_log_mean_softmax(x, T), rtol=1e-5, atol=1e-5)
    assert [len(i) for i, _ in logits.calls[0]] == [5, 4]  # chunk by chunk

    everything = Everything()
    select(everything, x, 3, mc_samples=T, labeled=Labeled(np.array([50]), x[:1]))
    assert everything.calls[0]["mc_samples"] == T
    np.testing.assert_array_equal(everything.calls[0]["chunks"][0][1], x)  # the raw passes
    np.testing.assert_array_equal(everything.calls[0]["labeled"].values, x[:1])


def test_labeled_values_are_reduced_like_the_pools_for_a_strategy_without_mc_samples():
    class LabeledOnly:
        name = "labeled_only"
        seen: list = []

        def select(self, chunks, k, *, rng, task, num_classes, labeled):
            list(chunks)
            self.seen.append(labeled)
            return np.arange(k)

    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    strategy = LabeledOnly()
    select(strategy, np.zeros((4, 6), np.float32), 1, mc_samples=2, labeled=Labeled(np.array([4, 5, 6]), x))
    np.testing.assert_allclose(strategy.seen[0].values, naive_log_mean_softmax(x, 2), rtol=1e-5, atol=1e-5)


def test_multilabel_and_detection_rows_reduce_to_the_logit_of_the_mean_sigmoid_others_to_the_mean():
    x = np.array([[0.0, 40.0, 2.0, -40.0], [-3.0, 1.0, 5.0, 1.0]], np.float32)  # T=2 passes of 2 values
    sig = 1 / (1 + np.exp(-x.astype(np.float64).reshape(2, 2, 2)))
    p = sig.mean(axis=1)
    for task in ("multilabel", "object_detection"):
        got = reduce_mc(x, 2, task)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, np.log(p) - np.log1p(-p), rtol=1e-5)
    np.testing.assert_allclose(reduce_mc(x, 2, "regression"), x.reshape(2, 2, 2).mean(axis=1))


def test_bad_inputs_beyond_logits_are_clear_errors():
    x = np.zeros((6, 4), np.float32)
    with pytest.raises(ValidationError, match=r"outputs have width 4, not a multiple of mc_samples \(3 passes a row\)"):
        select(LogitsOnly(), x, 1, mc_samples=3)
    with pytest.raises(ValidationError, match="mc_samples must be a positive integer, got 0"):
        select(LogitsOnly(), x, 1, mc_samples=0)
    with pytest.raises(ValidationError, match=r"embeddings must be a 2-D array with one row per output row \(6\), got shape \(5, 2\)"):
        select(Everything(), x, 1, embeddings=np.zeros((5, 2)))


# ----------------------------------------------------------------------
# Through a loop: real storage, a model registered for the test
# ----------------------------------------------------------------------

POOL, T, CLASSES = 30, 2, 3


def raw_row(i: int) -> list[float]:
    return [float((i * (j + 1)) % 7 - 3) for j in range(T * CLASSES)]


def embedding(i: int) -> list[float]:
    return [float(i), -0.5 * i, 1.0]


@pytest.fixture
def strategy_registry():
    """Register strategies for one test, as a third-party plugin would."""
    registry = plugins.load_plugins()
    added: list[str] = []

    def add(strategy):
        class Plugin:
            @hookimpl
            def register_strategies(self, register):
                register(strategy)

        name = f"test-strategy-{strategy.name}"
        assert plugins.register_plugin(registry, name, Plugin)
        added.append(name)
        return strategy

    yield add
    for name in added:
        registry.pm.unregister(name=name)
    plugins.reset_plugins()


@pytest.fixture
def mc_model(fake_model):
    calls: list[list[int]] = []

    def infer(unlabeled, writer):
        calls.append(list(unlabeled))
        for i in unlabeled:
            writer.add(i, raw_row(i), embedding=embedding(i))

    fake_model(
        "mc_embedder",
        pool=POOL,
        infer=infer,
        model_info=lambda: {"task": "classification", "labels": ["a", "b", "c"], "mc_samples": T},
    )
    return calls


def test_a_strategy_declaring_every_input_gets_them_from_a_real_loop(any_engine, mc_model, strategy_registry):
    strategy = strategy_registry(Everything())
    engine = any_engine
    exp = engine.create_experiment("mc_embedder", strategy="records_everything", initial=6, batch_size=4, loops=3)
    assert exp["mc_samples"] == T and engine.get_experiment(exp["id"])["mc_samples"] == T
    engine.run_loop(exp["id"], 0)

    labeled = engine.labeled(exp["id"], 0)
    unlabeled = np.setdiff1d(np.arange(POOL), labeled)
    # infer ran on the unlabeled records, then on the labeled ones, with one checkpoint
    assert mc_model == [unlabeled.tolist(), labeled.tolist()]
    [call] = strategy.calls
    idx = np.concatenate([i for i, _ in call["chunks"]])
    assert sorted(idx.tolist()) == unlabeled.tolist()
    np.testing.assert_array_equal(np.concatenate([v for _, v in call["chunks"]]), np.array([raw_row(i) for i in idx], np.float32))
    assert [i.tolist() for i, _ in call["embeddings"]] == [i.tolist() for i, _ in call["chunks"]]
    np.testing.assert_array_equal(np.concatenate([e for _, e in call["embeddings"]]), np.array([embedding(i) for i in idx], np.float32))
    assert call["mc_samples"] == T
    got = call["labeled"]
    assert isinstance(got, Labeled) and got.indices.tolist() == labeled.tolist()
    np.testing.assert_array_equal(got.values, np.array([raw_row(i) for i in labeled], np.float32))
    np.testing.assert_array_equal(got.embeddings, np.array([embedding(i) for i in labeled], np.float32))
    assert engine.get_experiment(exp["id"]) and engine.storage.get_selection(exp["id"], 1).tolist() == unlabeled[-4:][::-1].tolist()  # in the strategy's order
    # the labeled outputs are committed with the loop
    assert sum(len(c[0]) for c in engine.storage.iter_outputs(exp["id"], 0, part="labeled")) == labeled.size


def test_a_strategy_declaring_nothing_costs_no_extra_infer_call_and_sees_one_pass(any_engine, mc_model, strategy_registry):
    strategy = strategy_registry(LogitsOnly())
    engine = any_engine
    exp = engine.create_experiment("mc_embedder", strategy="records_logits", initial=6, batch_size=4, loops=2)
    engine.run_loop(exp["id"], 0)
    unlabeled = np.setdiff1d(np.arange(POOL), engine.labeled(exp["id"], 0))
    assert mc_model == [unlabeled.tolist()]  # no call for the labeled records
    assert list(engine.storage.iter_outputs(exp["id"], 0, part="labeled")) == []
    [chunks] = strategy.calls
    idx = np.concatenate([i for i, _ in chunks])
    raw = np.array([raw_row(i) for i in idx], np.float32)
    np.testing.assert_allclose(np.concatenate([v for _, v in chunks]), naive_log_mean_softmax(raw, T), rtol=1e-5, atol=1e-5)


def test_embedding_and_output_streams_stay_aligned_whichever_is_read_first(engine, mc_model, strategy_registry):
    strategy = strategy_registry(EmbeddingsFirst())
    engine.chunk_rows = 3  # many chunks: the embeddings run far ahead of the outputs
    exp = engine.create_experiment("mc_embedder", strategy="embeddings_first", initial=6, batch_size=4, loops=2)
    engine.run_loop(exp["id"], 0)
    [(emb, out)] = strategy.calls
    assert len(out) == 8 and [i.tolist() for i, _ in emb] == [i.tolist() for i, _ in out]
    for (i, e), (_, v) in zip(emb, out):
        np.testing.assert_array_equal(e, np.array([embedding(j) for j in i], np.float32))
        np.testing.assert_allclose(v, naive_log_mean_softmax(np.array([raw_row(j) for j in i], np.float32), T), rtol=1e-5, atol=1e-5)


def test_a_model_without_embeddings_gives_the_strategy_none(engine, fake_model, strategy_registry):
    strategy = strategy_registry(Everything())
    fake_model("plain", pool=20)
    exp = engine.create_experiment("plain", strategy="records_everything", initial=5, batch_size=2, loops=2)
    engine.run_loop(exp["id"], 0)
    [call] = strategy.calls
    assert call["embeddings"] is None and call["mc_samples"] is None
    assert call["labeled"].indices.tolist() == engine.labeled(exp["id"], 0).tolist()
    assert call["labeled"].embeddings is None and call["labeled"].values.shape == (5, 2)


@pytest.mark.parametrize(
    "info, message",
    [
        ({"mc_samples": 0}, "model 'bad_mc', hook 'model_info': 'mc_samples' must be a positive integer (stochastic passes in each infer row), got 0"),
        ({"mc_samples": "2"}, "model 'bad_mc', hook 'model_info': 'mc_samples' must be a positive integer (stochastic passes in each infer row), got '2'"),
    ],
)
def test_bad_mc_samples_in_model_info_is_named(engine, fake_model, info, message):
    fake_model("bad_mc", model_info=lambda: info)
    with pytest.raises(PluginError) as error:
        engine.create_experiment("bad_mc", strategy=None)
    assert str(error.value) == message


def test_rows_that_are_no_multiple_of_mc_samples_fail_the_loop_naming_the_model(engine, fake_model):
    fake_model("odd_rows", model_info=lambda: {"mc_samples": 4})  # the default infer writes rows of 2
    exp = engine.create_experiment("odd_rows", strategy=None, initial=5, loops=1)
    with pytest.raises(PluginError) as error:
        engine.run_loop(exp["id"], 0)
    assert "model 'odd_rows', hook 'infer', index" in str(error.value)
    assert "output has width 2, not a multiple of mc_samples (4, from model_info)" in str(error.value)


# ----------------------------------------------------------------------
# A storage backend written before embeddings and parts
# ----------------------------------------------------------------------


class OlderStorage(SQLiteStorage):
    """The interface as it was: no parts, no embeddings."""

    def open_output_sink(self, experiment_id, loop, attempt):  # type: ignore[override]
        sink = super().open_output_sink(experiment_id, loop, attempt)

        class Sink:
            def write(self, indices, values):
                sink.write(indices, values)

            def close(self):
                sink.close()

        return Sink()

    def iter_outputs(self, experiment_id, loop, attempt=None):  # type: ignore[override]
        return super().iter_outputs(experiment_id, loop, attempt)


def test_an_older_backend_serves_strategies_that_need_nothing_new(tmp_path, mc_model):
    engine = Engine(OlderStorage(tmp_path / "old.db"))
    exp = engine.create_experiment("mc_embedder", strategy="entropy", initial=6, batch_size=4, loops=2)
    assert engine.run_loop(exp["id"], 0)["status"] == "done"  # embeddings written, dropped
    assert engine.storage.get_selection(exp["id"], 1).size == 4


@pytest.mark.parametrize("strategy", [EmbeddingsFirst, Everything])
def test_an_older_backend_refuses_a_strategy_that_needs_more_before_infer_naming_itself(tmp_path, mc_model, strategy_registry, strategy):
    chosen = strategy_registry(strategy())
    engine = Engine(OlderStorage(tmp_path / "old.db"))
    exp = engine.create_experiment("mc_embedder", strategy=chosen.name, initial=6, batch_size=4, loops=2)
    with pytest.raises(StorageError) as error:
        engine.run_loop(exp["id"], 0)
    assert str(error.value).startswith(f"the storage backend OlderStorage (sqlite:///{tmp_path / 'old.db'}) cannot store")
    assert "see docs/storage-plugins.md" in str(error.value)
    assert mc_model == []  # refused before infer ran
    assert engine.get_loop(exp["id"], 0)["status"] == "failed"


def test_the_labeled_records_infer_shows_in_progress_and_can_be_cancelled(engine, fake_model, strategy_registry, monkeypatch):
    import threading

    from alectio_core import loop_run
    from alectio_core.errors import LoopCancelled

    monkeypatch.setattr(loop_run, "PROGRESS_INTERVAL", 0.0)  # record every chunk's progress
    strategy_registry(Everything())
    cancel, calls, progress = threading.Event(), [], []

    def infer(unlabeled, writer):
        calls.append(list(unlabeled))
        for i in unlabeled:
            if len(calls) == 2 and i == unlabeled[2]:
                cancel.set()  # cancelled while scoring the labeled records
            writer.add(i, [1.0, 2.0])

    fake_model("slow_labeled", pool=20, infer=infer)
    engine.chunk_rows = 1
    exp = engine.create_experiment("slow_labeled", strategy="records_everything", initial=5, batch_size=2, loops=2)

    def on_stage(stage, state):
        if stage == "select" and state["progress"]:
            progress.append(dict(state["progress"]))

    with pytest.raises(LoopCancelled):
        engine.run_loop(exp["id"], 0, cancel=cancel, on_stage=on_stage)
    assert [len(c) for c in calls] == [15, 5]
    assert progress[-1]["total"] == 5 and progress[-1]["done"] >= 2  # the labeled records, scored as select starts
    state = engine.get_loop(exp["id"], 0)
    assert state["status"] == "cancelled"
    assert list(engine.storage.iter_outputs(exp["id"], 0, attempt=state["attempt"], part="labeled")) == []


def test_the_installed_digits_plugin_writes_its_input_features_as_embeddings(engine, installed_test_model):
    exp = engine.create_experiment(installed_test_model, strategy=None, initial=50, loops=1)
    engine.run_loop(exp["id"], 0)
    chunks = list(engine.storage.iter_outputs(exp["id"], 0, embeddings=True))
    features = np.concatenate([c[2] for c in chunks])
    assert features.shape == (1400 - 50, 64)  # one fixed width: the 8 x 8 pixels
    assert features.min() >= 0 and features.max() <= 1 and features.std() > 0  # pixels scaled to [0, 1]
