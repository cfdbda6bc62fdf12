"""Streaming infer outputs: validate rows as they arrive, store them in chunks.

``OutputWriter`` is what a model's ``infer`` hook receives as ``writer``.
Each row may come with an embedding (a fixed-width feature vector of the
record, for diversity strategies), stored beside it. Memory is bounded by
one chunk (at most ``chunk_bytes``, embeddings included, however wide the
rows) plus one byte per pool record for bookkeeping, however large the pool.
"""

from __future__ import annotations

import contextvars
import operator
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import numpy as np

from .errors import PluginError
from .hook_results import check_infer
from .storage import OutputSink, takes

if TYPE_CHECKING:
    from .plugins import Model

#: Most rows in a chunk: progress and cancellation are checked once a chunk.
DEFAULT_CHUNK_ROWS = 65536
#: Most bytes a chunk's buffers hold (indices and values): a chunk of very
#: wide rows has fewer rows, never more memory.
DEFAULT_CHUNK_BYTES = 16 << 20

# Bookkeeping per pool record.
_NOT_EXPECTED, _EXPECTED, _SEEN = 0, 1, 2

#: The writer of the infer call running in this context (see ``sql_client``).
current_writer: contextvars.ContextVar[Optional["OutputWriter"]] = contextvars.ContextVar(
    "alectio_current_writer", default=None
)


class OutputWriter:
    """Receives ``infer`` rows, checks them, streams them to a sink.

    Rows must cover exactly the ``unlabeled`` indices: each once, finite,
    with one width. Embeddings are all or none within one writer (one infer
    call), finite, with one width. Every violation raises a
    :class:`PluginError` naming the model, the ``infer`` hook and the
    offending index.
    """

    def __init__(
        self,
        sink: OutputSink,
        *,
        model: str,
        pool_size: int,
        unlabeled: np.ndarray,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        on_chunk: Callable[[int], None] | None = None,
        records: str = "unlabeled",
        mc_samples: int | None = None,
    ):
        self.sink = sink
        self.model = model
        self.records = records  # which records this call scores ("unlabeled", or "labeled"), for messages
        self.mc_samples = mc_samples  # rows are this many passes flattened (model_info)
        self.pool_size = pool_size
        self.chunk_rows = chunk_rows  # the most rows a chunk may hold
        self.chunk_bytes = chunk_bytes
        self.on_chunk = on_chunk  # called with rows written so far; may raise to cancel
        self._state = np.zeros(pool_size, dtype=np.uint8)
        self._state[unlabeled] = _EXPECTED
        self._seen = 0  # records given so far
        self._expected = len(unlabeled)
        self.width: int | None = None
        self._rows = 0  # rows a chunk holds, set with the width
        self._buf_idx: np.ndarray | None = None
        self._buf_val: np.ndarray | None = None
        self._buf_emb: np.ndarray | None = None
        self._fill = 0
        self.written = 0
        self.embedding_width: int | None = None  # set by the first rows: 0 when they came without embeddings
        # A sink written before embeddings existed stores rows only: its
        # embeddings are dropped here, and a strategy that needs them is
        # refused before infer runs (see loop_run), naming the backend.
        self._sink_embeds = takes(sink.write, "embeddings")

    def _error(self, message: str, index: int | None = None) -> PluginError:
        return PluginError(self.model, "infer", message, index=index)

    # -- the two ways in --------------------------------------------------

    def add(self, index: int, output, embedding=None) -> None:
        """One record's output row and, optionally, its embedding (both 1-D)."""
        i = self._index(index)
        if np.ndim(output) > 1:
            raise self._error(f"output must be a 1-D array, got shape {np.shape(output)}", i)
        rows = np.asarray(output, dtype=np.float32).reshape(1, -1)
        embeddings = None
        if embedding is not None:
            if np.ndim(embedding) != 1:
                raise self._error(f"embedding must be a 1-D array, got shape {np.shape(embedding)}", i)
            embeddings = self._floats(embedding, "embedding is not a numeric array", i).reshape(1, -1)
        self.extend(np.array([i], dtype=np.int64), rows, embeddings)

    def extend(self, indices, outputs, embeddings=None) -> None:
        """Many rows at once: ``indices`` (n,), ``outputs`` (n, width) and,
        optionally, ``embeddings`` (n, embedding width)."""
        idx = self._indices(indices)
        first = int(idx[0]) if idx.size else None
        values = self._floats(outputs, "outputs are not numeric arrays", first)
        if values.ndim != 2 or values.shape[0] != idx.shape[0]:
            raise self._error(f"expected a ({idx.shape[0]}, width) array of outputs, got shape {values.shape}")
        emb = None
        if embeddings is not None:
            emb = self._floats(embeddings, "embeddings are not numeric arrays", first)
            if emb.ndim != 2 or emb.shape[0] != idx.shape[0]:
                raise self._error(f"expected a ({idx.shape[0]}, width) array of embeddings, got shape {emb.shape}")
        if idx.size == 0:
            return
        self._check(idx, values, emb)
        # Fill the buffer; a batch larger than a chunk streams straight through.
        start = 0
        while start < idx.size:
            if self._fill == 0 and idx.size - start >= self._rows:
                stop = start + self._rows
                self._write(idx[start:stop], values[start:stop], None if emb is None else emb[start:stop])
                start = stop
                continue
            take = min(self._rows - self._fill, idx.size - start)
            if self._buf_idx is None or self._buf_val is None:
                self._buf_idx = np.empty(self._rows, dtype=np.int64)
                self._buf_val = np.empty((self._rows, values.shape[1]), dtype=np.float32)  # the width _check set
                if emb is not None:
                    self._buf_emb = np.empty((self._rows, emb.shape[1]), dtype=np.float32)
            self._buf_idx[self._fill : self._fill + take] = idx[start : start + take]
            self._buf_val[self._fill : self._fill + take] = values[start : start + take]
            if emb is not None and self._buf_emb is not None:
                self._buf_emb[self._fill : self._fill + take] = emb[start : start + take]
            self._fill += take
            start += take
            if self._fill == self._rows:
                self._flush()

    def add_returned(self, outputs: Mapping, embeddings: Mapping | None = None) -> None:
        """What ``infer`` returned instead of streaming (see ``check_infer``)."""
        for index, output in outputs.items():
            self.add(index, output, None if embeddings is None else embeddings.get(index))

    # -- checks ------------------------------------------------------------

    def _not_in_pool(self, i: int) -> PluginError:
        return self._error(f"index {i} is not in the pool (indices 0..{self.pool_size - 1})", i)

    def _index(self, value) -> int:
        """One record index: an integer (or a string of one) in the pool."""
        try:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError
            i = int(value) if isinstance(value, str) else operator.index(value)  # 2.5 is no index
        except (TypeError, ValueError):
            raise self._error(f"index must be an integer, got {value!r}") from None
        if not 0 <= i < self.pool_size:  # also what int64 cannot hold
            raise self._not_in_pool(i)
        return i

    def _indices(self, indices) -> np.ndarray:
        """A batch's indices as int64, naming the first entry that is not one."""
        try:
            idx = np.asarray(indices)
        except (TypeError, ValueError) as exc:
            raise self._error(f"indices must be a 1-D array of integers ({exc})") from None
        if idx.ndim != 1:
            raise self._error(f"indices must be a 1-D array of integers, got shape {idx.shape}")
        if idx.dtype.kind == "i" or idx.size == 0:
            return idx.astype(np.int64, copy=False)
        if idx.dtype.kind == "u":  # uint64 would wrap to negative in int64
            beyond = idx >= self.pool_size
            if beyond.any():
                raise self._not_in_pool(int(idx[beyond.argmax()]))
            return idx.astype(np.int64)
        # Floats, objects, text: numpy may have turned a too-large int into a
        # float, so look at what the model gave to name the culprit.
        given = indices if isinstance(indices, (list, tuple)) else idx.tolist()
        return np.array([self._index(v) for v in given], dtype=np.int64)

    def _floats(self, array, problem: str, index: int | None) -> np.ndarray:
        try:
            return np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise self._error(f"{problem} ({exc})", index) from None

    def _check(self, idx: np.ndarray, values: np.ndarray, emb: np.ndarray | None) -> None:
        emb_width = 0 if emb is None else emb.shape[1]
        if self.width is None:
            if values.shape[1] == 0:
                raise self._error("output rows are empty (width 0)", int(idx[0]))
            if emb is not None and emb_width == 0:
                raise self._error("embedding is empty (width 0)", int(idx[0]))
            if self.mc_samples and values.shape[1] % self.mc_samples:
                raise self._error(
                    f"output has width {values.shape[1]}, not a multiple of mc_samples ({self.mc_samples}, from model_info): "
                    "each row is that many stochastic passes flattened",
                    int(idx[0]),
                )
            self.width, self.embedding_width = values.shape[1], emb_width
            row_bytes = 8 + 4 * self.width + 4 * emb_width
            self._rows = max(1, min(self.chunk_rows, self.chunk_bytes // row_bytes, self._expected))
        elif values.shape[1] != self.width:
            raise self._error(f"output has width {values.shape[1]}, earlier rows have width {self.width}", int(idx[0]))
        if (emb is None) != (self.embedding_width == 0):
            i = int(idx[0])
            given, earlier = ("no embedding", "one") if emb is None else ("an embedding", "none")
            raise self._error(
                f"index {i} has {given}, but earlier records had {earlier} "
                "(give an embedding for every record of an infer call, or for none)",
                i,
            )
        if emb is not None and emb_width != self.embedding_width:
            raise self._error(f"embedding has width {emb_width}, earlier embeddings have width {self.embedding_width}", int(idx[0]))
        bad = (idx < 0) | (idx >= self.pool_size)
        if bad.any():
            i = int(idx[bad.argmax()])
            raise self._error(f"index {i} is not in the pool (indices 0..{self.pool_size - 1})", i)
        state = self._state[idx]
        if (state != _EXPECTED).any():
            pos = int((state != _EXPECTED).argmax())
            i = int(idx[pos])
            if state[pos] == _SEEN:
                raise self._error(f"index {i} was given more than once", i)
            if self.records == "unlabeled":
                raise self._error(f"index {i} is labeled; outputs must cover only the unlabeled records", i)
            raise self._error(f"index {i} is not one of the {self.records} records this infer call scores", i)
        self._mark(idx)
        for what, array in (("output", values), ("embedding", emb)):
            if array is None:
                continue
            finite = np.isfinite(array)
            if not finite.all():
                row = int(finite.all(axis=1).argmin())
                raise self._error(f"{what} holds NaN or inf", int(idx[row]))

    def _mark(self, idx: np.ndarray) -> None:
        """Mark a batch given; a record named twice in it is an error. Small
        batches sort; large ones count the pool's marks (O(pool) bytes,
        amortised over >= 1024 rows), so no per-record index is kept."""
        self._state[idx] = _SEEN
        if idx.size < 1024:
            ordered = np.sort(idx)
            repeated = bool((ordered[1:] == ordered[:-1]).any())
        else:
            repeated = np.count_nonzero(self._state == _SEEN) != self._seen + idx.size
        if repeated:
            uniq, counts = np.unique(idx, return_counts=True)
            i = int(uniq[counts.argmax()])
            raise self._error(f"index {i} was given more than once", i)
        self._seen += idx.size

    # -- storage -------------------------------------------------------------

    def _write(self, idx: np.ndarray, values: np.ndarray, emb: np.ndarray | None) -> None:
        if emb is not None and self._sink_embeds:
            self.sink.write(idx, values, embeddings=emb)
        else:  # the argument only when there is one: a sink written before embeddings keeps working
            self.sink.write(idx, values)
        self.written += idx.size
        if self.on_chunk is not None:
            self.on_chunk(self.written)

    def _flush(self) -> None:
        if self._fill and self._buf_idx is not None and self._buf_val is not None:
            emb = None if self._buf_emb is None else self._buf_emb[: self._fill]
            self._write(self._buf_idx[: self._fill], self._buf_val[: self._fill], emb)
            self._fill = 0

    def close(self) -> int:
        """Flush, then check every unlabeled record got its row."""
        self._flush()
        if self.written != self._expected:
            missing = np.flatnonzero(self._state == _EXPECTED)
            first = int(missing[0]) if missing.size else None
            raise self._error(f"outputs miss {missing.size} {self.records} record(s), first index {first}", first)
        self.sink.close()
        return self.written


def call_infer(model: Model, writer: OutputWriter, **arguments: Any) -> tuple[Mapping, Mapping | None] | None:
    """Call ``model``'s ``infer`` hook with ``writer``, which is also the
    current writer meanwhile (the seed's SQL client writes through it).
    Returns the outputs and embeddings the hook returned instead of streaming
    them, checked, for the caller to hand to ``writer.add_returned``; None
    when it streamed."""
    token = current_writer.set(writer)
    try:
        result = model.call("infer", writer=writer, **arguments)
    finally:
        current_writer.reset(token)
    return check_infer(model.name, result)
