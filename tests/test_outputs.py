"""The streaming writer and the seed SQL-client migration path."""

from __future__ import annotations

import numpy as np
import pytest

from alectio_core import sql_client
from alectio_core.errors import PluginError
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
