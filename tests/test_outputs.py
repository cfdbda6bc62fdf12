"""The streaming writer and the seed SQL-client migration path."""

from __future__ import annotations

import numpy as np
import pytest

from alectio_core import sql_client
from alectio_core.errors import NotFoundError, PluginError
from alectio_core.outputs import OutputWriter
from alectio_core.storage import OutputSink


class ListSink(OutputSink):
    def __init__(self):
        self.chunks = []
        self.closed = False

    def write(self, indices, values):
        self.chunks.append((indices.copy(), values.copy()))

    def close(self):
        self.closed = True


def writer_for(pool=100, labeled=(), chunk_rows=8):
    unlabeled = np.setdiff1d(np.arange(pool), np.asarray(labeled, dtype=np.int64))
    sink = ListSink()
    return OutputWriter(sink, model="m", pool_size=pool, unlabeled=unlabeled, chunk_rows=chunk_rows), sink, unlabeled


def test_rows_arrive_in_bounded_chunks_in_any_mix_of_add_and_extend():
    writer, sink, unlabeled = writer_for(pool=100, labeled=[0, 1], chunk_rows=8)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(100, 3)).astype(np.float32)
    writer.add(unlabeled[0], values[unlabeled[0]].tolist())
    writer.extend(unlabeled[1:30], values[unlabeled[1:30]])
    for i in unlabeled[30:]:
        writer.add(int(i), values[i])
    assert writer.close() == 98 and sink.closed
    assert all(len(idx) <= 8 for idx, _ in sink.chunks)
    idx = np.concatenate([c[0] for c in sink.chunks])
    got = np.concatenate([c[1] for c in sink.chunks])
    np.testing.assert_array_equal(idx, unlabeled)
    np.testing.assert_array_equal(got, values[unlabeled])
    assert got.dtype == np.float32


def test_large_extend_streams_without_copying_into_one_buffer():
    writer, sink, unlabeled = writer_for(pool=1000, chunk_rows=64)
    writer.extend(unlabeled, np.zeros((1000, 2)))
    writer.close()
    assert [len(c[0]) for c in sink.chunks] == [64] * 15 + [40]


def test_bad_shapes_name_the_index():
    writer, _, _ = writer_for()
    with pytest.raises(PluginError, match="model 'm', hook 'infer', index 5: output must be a 1-D array"):
        writer.add(5, np.zeros((2, 2)))
    with pytest.raises(PluginError, match="index must be an integer"):
        writer.add("five", [1.0])
    with pytest.raises(PluginError, match=r"expected a \(2, width\) array"):
        writer.extend([1, 2], np.zeros((3, 2)))


def test_sql_client_routes_to_the_running_loop(engine, fake_model):
    def infer(unlabeled):  # the seed's pattern, unchanged
        conn = sql_client.create_database("infer_outputs.db")
        for i in unlabeled:
            sql_client.add_index(conn, i, np.array([i, 2 * i], dtype=np.float64))
        conn.close()

    fake_model("seed_style", infer=infer)
    exp = engine.create_experiment("seed_style", strategy=None, initial=5, loops=1)
    engine.run_loop(exp["id"], 0)
    idx, values = engine.outputs(exp["id"], 0)
    assert idx.size == 15
    np.testing.assert_array_equal(values[:, 1], 2 * idx)


def test_sql_client_outside_a_loop_writes_a_real_file(tmp_path):
    path = tmp_path / "outputs.db"
    with sql_client.create_database(path) as conn:
        sql_client.add_index(conn, 3, [0.5, 1.5])
        sql_client.add_index(conn, 1, np.array([2.0, 3.0]))
    rows = list(sql_client.read_outputs(path))
    assert [i for i, _ in rows] == [1, 3]
    np.testing.assert_array_equal(rows[1][1], np.array([0.5, 1.5], np.float32))


@pytest.mark.parametrize("size", [3, 5000])
def test_a_record_repeated_inside_one_batch_is_named(size):
    writer, _, unlabeled = writer_for(pool=10_000, chunk_rows=64)
    idx = unlabeled[:size].copy()
    idx[-1] = idx[1]
    with pytest.raises(PluginError, match=f"index {idx[1]}: index {idx[1]} was given more than once"):
        writer.extend(idx, np.zeros((size, 2)))


def test_a_record_repeated_across_batches_is_named():
    writer, _, unlabeled = writer_for(pool=10_000)
    writer.extend(unlabeled[:2000], np.zeros((2000, 2)))
    with pytest.raises(PluginError, match=f"index {unlabeled[5]} was given more than once"):
        writer.extend(unlabeled[5:3000], np.zeros((2995, 2)))


# -- chunks sized in bytes ----------------------------------------------------


def test_very_wide_rows_on_a_small_pool_store_fine_with_a_bounded_buffer(engine, fake_model):
    """200,000-wide rows on a 200-record pool: today's 65,536-row buffer would
    need 48.8 GiB. A chunk's buffers stay within a chunk's byte budget."""
    from alectio_core.outputs import DEFAULT_CHUNK_BYTES

    width, seen = 200_000, {}

    def infer(unlabeled, writer):
        seen["writer"] = writer
        for i in unlabeled:
            writer.add(i, np.full(width, i, dtype=np.float32))

    fake_model("wide", pool=200, infer=infer)
    exp = engine.create_experiment("wide", strategy=None, initial=100, loops=1)
    assert engine.run_loop(exp["id"], 0)["status"] == "done"

    writer = seen["writer"]
    assert writer._buf_val.nbytes + writer._buf_idx.nbytes <= DEFAULT_CHUNK_BYTES
    rows = 0
    for idx, values in engine.storage.iter_outputs(exp["id"], 0):
        assert values.shape[1] == width
        np.testing.assert_array_equal(values[:, 0], idx)
        np.testing.assert_array_equal(values[:, -1], idx)
        rows += idx.size
    assert rows == 100


def test_a_chunk_never_holds_more_rows_than_there_are_unlabeled_records():
    writer, sink, unlabeled = writer_for(pool=200, labeled=range(150), chunk_rows=65536)
    for i in unlabeled:
        writer.add(int(i), [1.0, 2.0])
    writer.close()
    assert writer._buf_idx.shape == (50,) and writer._buf_val.shape == (50, 2)
    assert [len(c[0]) for c in sink.chunks] == [50]


# -- indices that are no record index ------------------------------------------


HUGE = 10**30


@pytest.mark.parametrize(
    "give, named",
    [
        (lambda w: w.add(HUGE, [1.0]), f"index {HUGE}: index {HUGE} is not in the pool"),
        (lambda w: w.add(2**63, [1.0]), f"index {2**63}: index {2**63} is not in the pool"),
        (lambda w: w.add(2.5, [1.0]), "index must be an integer, got 2.5"),
        (lambda w: w.add(True, [1.0]), "index must be an integer, got True"),
        (lambda w: w.extend([1, HUGE], [[1.0], [2.0]]), f"index {HUGE}: index {HUGE} is not in the pool"),
        (lambda w: w.extend([1, 2**63], [[1.0], [2.0]]), f"index {2**63}: index {2**63} is not in the pool"),
        (lambda w: w.extend([-1, 2**64], [[1.0], [2.0]]), "index -1: index -1 is not in the pool"),
        (
            lambda w: w.extend(np.array([3, 2**64 - 1], dtype=np.uint64), [[1.0], [2.0]]),
            f"index {2**64 - 1}: index {2**64 - 1} is not in the pool",
        ),
        (lambda w: w.extend(np.array([3.0, 4.5]), [[1.0], [2.0]]), "index must be an integer, got 3.0"),
    ],
)
def test_an_index_that_is_no_int64_names_model_hook_and_index(give, named):
    writer, _, _ = writer_for()
    with pytest.raises(PluginError) as info:
        give(writer)
    assert f"model 'm', hook 'infer'" in str(info.value)
    assert named in str(info.value)


def test_infer_returning_a_huge_index_fails_the_loop_with_a_plugin_error(engine, fake_model):
    fake_model("huge", infer=lambda unlabeled: {"outputs": {HUGE: [1.0], **{i: [1.0] for i in unlabeled}}})
    exp = engine.create_experiment("huge", strategy=None, initial=5, loops=1)
    with pytest.raises(PluginError) as info:
        engine.run_loop(exp["id"], 0)
    assert str(info.value) == f"model 'huge', hook 'infer', index {HUGE}: index {HUGE} is not in the pool (indices 0..19)"
    assert engine.get_loop(exp["id"], 0)["error"] == str(info.value)


def test_the_infer_hook_declares_its_writer_as_an_output_writer():
    """A plugin author's editor and type checker learn what ``writer`` offers
    (``add``, ``extend``) from the hook's signature."""
    import typing

    from alectio_core import hookspecs, outputs

    hints = typing.get_type_hints(hookspecs.ModelSpecs.infer, localns=vars(outputs))
    assert hints["writer"] is OutputWriter


# -- embeddings beside the outputs ---------------------------------------------


class EmbeddingSink(ListSink):
    def write(self, indices, values, embeddings=None):
        self.chunks.append((indices.copy(), values.copy(), None if embeddings is None else embeddings.copy()))


def embedding_writer(pool=100, labeled=(), **kwargs):
    unlabeled = np.setdiff1d(np.arange(pool), np.asarray(labeled, dtype=np.int64))
    sink = EmbeddingSink()
    return OutputWriter(sink, model="m", pool_size=pool, unlabeled=unlabeled, **kwargs), sink, unlabeled


def test_embeddings_are_stored_beside_their_rows_in_any_mix_of_add_and_extend():
    writer, sink, unlabeled = embedding_writer(pool=60, labeled=[0, 7], chunk_rows=8)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(60, 3)).astype(np.float32)
    features = rng.normal(size=(60, 5)).astype(np.float32)
    writer.add(unlabeled[0], values[unlabeled[0]], embedding=features[unlabeled[0]].tolist())
    writer.extend(unlabeled[1:20], values[unlabeled[1:20]], embeddings=features[unlabeled[1:20]])
    for i in unlabeled[20:]:
        writer.add(int(i), values[i], features[i])
    writer.close()
    assert all(len(idx) <= 8 and emb.shape == (len(idx), 5) for idx, _, emb in sink.chunks)
    idx = np.concatenate([c[0] for c in sink.chunks])
    np.testing.assert_array_equal(idx, unlabeled)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in sink.chunks]), values[unlabeled])
    emb = np.concatenate([c[2] for c in sink.chunks])
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, features[unlabeled])


def test_a_writer_without_embeddings_hands_the_sink_none():
    writer, sink, unlabeled = embedding_writer(pool=10)
    writer.extend(unlabeled, np.zeros((10, 2)))
    writer.close()
    assert [c[2] for c in sink.chunks] == [None]


def test_a_chunks_byte_budget_counts_the_embeddings():
    # 8 index bytes + 2 * 4 value bytes + 6 * 4 embedding bytes = 40 bytes a row
    writer, sink, unlabeled = embedding_writer(pool=100, chunk_bytes=400)
    writer.extend(unlabeled, np.zeros((100, 2)), embeddings=np.ones((100, 6)))
    writer.close()
    assert [len(c[0]) for c in sink.chunks] == [10] * 10
    assert writer._buf_emb is None or writer._buf_emb.nbytes + writer._buf_val.nbytes + writer._buf_idx.nbytes <= 400


@pytest.mark.parametrize(
    "give, message",
    [
        (
            lambda w: (w.add(1, [1.0], embedding=[1.0, 2.0]), w.add(2, [1.0])),
            "model 'm', hook 'infer', index 2: index 2 has no embedding, but earlier records had one "
            "(give an embedding for every record of an infer call, or for none)",
        ),
        (
            lambda w: (w.add(1, [1.0]), w.add(2, [1.0], embedding=[1.0, 2.0])),
            "model 'm', hook 'infer', index 2: index 2 has an embedding, but earlier records had none "
            "(give an embedding for every record of an infer call, or for none)",
        ),
        (
            lambda w: (w.extend([1, 2], [[1.0], [1.0]], embeddings=[[1.0, 2.0], [3.0, 4.0]]), w.extend([3], [[1.0]])),
            "model 'm', hook 'infer', index 3: index 3 has no embedding, but earlier records had one",
        ),
        (
            lambda w: (w.add(1, [1.0], embedding=[1.0, 2.0]), w.add(2, [1.0], embedding=[1.0, 2.0, 3.0])),
            "model 'm', hook 'infer', index 2: embedding has width 3, earlier embeddings have width 2",
        ),
        (
            lambda w: w.extend([1, 2], [[1.0], [1.0]], embeddings=[[1.0, 2.0], [np.inf, 4.0]]),
            "model 'm', hook 'infer', index 2: embedding holds NaN or inf",
        ),
        (lambda w: w.add(4, [1.0], embedding=[[1.0], [2.0]]), "model 'm', hook 'infer', index 4: embedding must be a 1-D array, got shape (2, 1)"),
        (lambda w: w.add(4, [1.0], embedding=[]), "model 'm', hook 'infer', index 4: embedding is empty (width 0)"),
        (lambda w: w.add(4, [1.0], embedding=["a"]), "model 'm', hook 'infer', index 4: embedding is not a numeric array"),
        (
            lambda w: w.extend([1, 2], [[1.0], [1.0]], embeddings=np.zeros((3, 2))),
            r"model 'm', hook 'infer': expected a (2, width) array of embeddings, got shape (3, 2)",
        ),
    ],
)
def test_each_embedding_violation_names_model_hook_and_index(give, message):
    writer, _, _ = embedding_writer()
    with pytest.raises(PluginError) as info:
        give(writer)
    assert str(info.value).startswith(message)


def test_mixed_embeddings_fail_the_loop_and_commit_nothing(engine, fake_model):
    def infer(unlabeled, writer):
        for n, i in enumerate(unlabeled):
            writer.add(i, [1.0, 2.0], embedding=[0.5, 0.25] if n < 3 else None)

    fake_model("half_embedded", infer=infer)
    exp = engine.create_experiment("half_embedded", strategy=None, initial=5, loops=1)
    with pytest.raises(PluginError) as info:
        engine.run_loop(exp["id"], 0)
    fourth = sorted(set(range(20)) - set(engine.labeled(exp["id"], 0).tolist()))[3]
    assert str(info.value).startswith(f"model 'half_embedded', hook 'infer', index {fourth}: index {fourth} has no embedding")
    state = engine.get_loop(exp["id"], 0)
    assert state["status"] == "failed" and state["error"] == str(info.value)
    with pytest.raises(NotFoundError):
        engine.outputs(exp["id"], 0)


def test_infer_may_return_embeddings_with_its_outputs(engine, fake_model):
    fake_model(
        "returns_embeddings",
        infer=lambda unlabeled: {
            "outputs": {i: [float(i), 1.0] for i in unlabeled},
            "embeddings": {i: [float(i), -float(i), 0.5] for i in unlabeled},
        },
    )
    exp = engine.create_experiment("returns_embeddings", strategy=None, initial=5, loops=1)
    engine.run_loop(exp["id"], 0)
    chunks = list(engine.storage.iter_outputs(exp["id"], 0, embeddings=True))
    idx = np.concatenate([c[0] for c in chunks])
    emb = np.concatenate([c[2] for c in chunks])
    np.testing.assert_array_equal(emb, np.stack([idx, -idx, np.full(idx.size, 0.5)], axis=1).astype(np.float32))


@pytest.mark.parametrize(
    "returned, message",
    [
        ({"outputs": {1: [1.0]}, "embeddings": [[1.0]]}, "'embeddings' must be a dict {index: embedding}, got list"),
        ({"outputs": {1: [1.0]}, "embeddings": {2: [1.0]}}, "index 2: index 2 has an embedding but no output"),
    ],
)
def test_returned_embeddings_that_do_not_fit_are_named(returned, message):
    from alectio_core.hook_results import check_infer

    with pytest.raises(PluginError) as info:
        check_infer("m", returned)
    where = ", " if message.startswith("index") else ": "
    assert str(info.value) == f"model 'm', hook 'infer'{where}{message}"
