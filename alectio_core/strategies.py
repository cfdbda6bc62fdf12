"""Query strategies: the interface, the streaming top-k, and ``select()``.

A strategy is any object with a ``name`` and a method
``select(chunks, k, *, rng, task, num_classes) -> int64 array`` returning k
distinct record indices, most informative first. ``chunks`` is an iterable of
``(indices, values)`` pairs (int64 1-D, float32 2-D) exactly as
``Storage.iter_outputs`` streams a loop's infer outputs, and may only be
iterated once. Strategies are contributed through the ``register_strategies``
hook; the built-ins live in ``alectio_plugins.strategy_*``.

Most strategies score each record on its own: subclass :class:`ScoreStrategy`
and implement ``score``; the base class feeds it cache-sized blocks and keeps
only the best k records while streaming, so memory is O(chunk + k).

Every selection is a total order: higher score first, then lower record
index, so results are deterministic and do not depend on how the outputs were
chunked.

Inputs beyond logits. A strategy's ``select`` may also declare any of these
keyword parameters; it receives only the ones it declares (as pluggy passes a
hook only the arguments it names), so the engine computes nothing a strategy
does not use:

* ``embeddings``: an iterable of ``(indices, embeddings)`` chunks (int64
  1-D, float32 2-D) aligned one to one with ``chunks`` (same indices, same
  order), or ``None`` when the model wrote no embeddings
  (``writer.add(index, output, embedding=...)``).
* ``labeled``: a :class:`Labeled`, the records already labeled with this
  loop's model's outputs and embeddings for them (diversity strategies start
  from it, as Sener & Savarese do).
* ``mc_samples``: ``T`` when the model's ``model_info`` declares
  ``"mc_samples": T`` (each output row is then T stochastic passes
  flattened, T x classes), else ``None``. A strategy that does not declare
  ``mc_samples`` sees each row reduced to the log of the mean probability
  over the T passes, so uncertainty strategies keep working unchanged.

Only parameters named in the signature count (a ``**kwargs`` receives none
of them: the labeled records cost an extra ``infer`` call, which the
engine makes only for a strategy that names ``labeled``). The signature is
read once per strategy object (:func:`declared_inputs`).

Scores. A strategy may also have ``select_with_scores``, with the same
arguments as its ``select``, returning ``(indices, scores)``: each picked
record's score (higher = more informative), which people labelling the
selection can sort by. ``select(..., return_scores=True)`` calls it when
there is one (:class:`ScoreStrategy` has it), else gives None for scores.
"""

from __future__ import annotations

import inspect
import operator
import weakref
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Literal, Optional, Protocol, Union, overload, runtime_checkable

import numpy as np

from .config import DEFAULT_STRATEGY as DEFAULT_STRATEGY  # defined with the other defaults; imported from here too
from .errors import AlectioError, ContributionError, UnknownStrategyError, ValidationError
from .plugins import TASKS, get_strategies, origin

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Labeled:
    """The labeled records as a strategy sees them (the ``labeled`` input).

    ``indices`` are sorted record indices; ``values`` and ``embeddings`` hold
    this loop's model's outputs and embeddings for them, row i for
    ``indices[i]``, or ``None`` when not available (no embeddings written,
    or nothing labeled yet)."""

    indices: np.ndarray
    values: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None

#: The inputs beyond logits a strategy's ``select`` may declare.
INPUTS = ("embeddings", "labeled", "mc_samples")

_declared: "weakref.WeakKeyDictionary[Any, frozenset[str]]" = weakref.WeakKeyDictionary()


def declared_inputs(strategy: Any) -> frozenset[str]:
    """Which of :data:`INPUTS` ``strategy.select`` names, read once per
    strategy object."""
    try:
        return _declared[strategy]
    except (KeyError, TypeError):  # TypeError: an object that takes no weak reference is read each time
        pass
    try:
        parameters = inspect.signature(strategy.select).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    found = frozenset(name for name in INPUTS if name in parameters and parameters[name].kind is not inspect.Parameter.VAR_KEYWORD)
    try:
        _declared[strategy] = found
    except TypeError:
        pass
    return found


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(x - top).sum(axis=axis))


def reduce_mc(values: np.ndarray, mc_samples: int, task: str) -> np.ndarray:
    """Rows of ``mc_samples`` stochastic passes flattened, reduced to one
    pass as a strategy that does not declare ``mc_samples`` reads it:
    ``classification``, the log of the mean softmax; ``multilabel`` and
    ``object_detection``, the logit of the mean sigmoid; other tasks, the
    mean. Computed in log space, so finite rows give finite rows."""
    values = np.asarray(values)
    n, width = values.shape
    if width % mc_samples:
        raise ValidationError(f"outputs have width {width}, not a multiple of mc_samples ({mc_samples} passes a row)")
    x = values.reshape(n, mc_samples, width // mc_samples).astype(np.float64)
    if task == "classification":
        log_p = x - _logsumexp(x, axis=2)[:, :, None]
        out = _logsumexp(log_p, axis=1) - np.log(mc_samples)
    elif task in ("multilabel", "object_detection"):
        # log mean sigmoid - log mean (1 - sigmoid); the 1/T cancels
        out = _logsumexp(-np.logaddexp(0, -x), axis=1) - _logsumexp(-np.logaddexp(0, x), axis=1)
    else:
        out = x.mean(axis=1)
    return out.astype(np.float32)


#: Values per block handed to ``ScoreStrategy.score`` (float32: 512 KiB, so a
#: block and its temporaries stay in a core's L2 cache).
BLOCK_VALUES = 1 << 17


@runtime_checkable
class Strategy(Protocol):
    """What ``register(strategy)`` accepts."""

    name: str

    def select(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> np.ndarray: ...


def check_pool(k: int, pool: int) -> None:
    """Raise ``ValueError`` when ``k`` records cannot be drawn from ``pool``."""
    if k > pool:
        raise ValidationError(f"cannot select {k} records from a pool of {pool} unlabeled records; lower k (the batch size)")


def top_k_positions(scores: np.ndarray, indices: np.ndarray, k: int, *, ordered: bool = True) -> np.ndarray:
    """Positions of the ``k`` best entries: highest score first, ties to the
    lower record index, NaN scores last. O(n) plus O(k log k) for the
    ordering, which ``ordered=False`` skips (same set, any order)."""
    scores = np.asarray(scores)
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)
        need = k - len(above)
        if len(ties) > need:
            ties = ties[np.argsort(indices[ties], kind="stable")[:need]]
        keep = np.concatenate([above, ties])
    else:
        keep = np.arange(n)
    return keep[np.lexsort((indices[keep], -scores[keep]))] if ordered else keep


def top_k(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(scores, indices)``, ordered as :func:`top_k_positions`."""
    keep = top_k_positions(scores, indices, k)
    return np.asarray(scores)[keep], indices[keep]


class TopK:
    """Streaming top-k: ``add`` chunks of (scores, indices), then ``result``."""

    def __init__(self, k: int):
        self.k = k
        self.seen = 0
        self.scores: Optional[np.ndarray] = None
        self.indices = np.empty(0, np.int64)

    def add(self, scores: np.ndarray, indices: np.ndarray) -> None:
        self.seen += len(indices)
        scores, indices = top_k(scores, indices, self.k)
        if self.scores is not None:
            scores = np.concatenate([self.scores, scores])
            indices = np.concatenate([self.indices, indices])
            scores, indices = top_k(scores, indices, self.k)
        self.scores, self.indices = scores, indices

    def result(self) -> np.ndarray:
        """The k best indices, best first; ``ValueError`` if fewer were seen."""
        check_pool(self.k, self.seen)
        return self.indices.astype(np.int64, copy=False)


def hash_keys(indices: np.ndarray, salt: int) -> np.ndarray:
    """Uniform pseudo-random keys in [0, 1), a pure function of (index, salt)
    (splitmix64), so random draws do not depend on chunking or order."""
    z = indices.astype(np.uint64) + np.uint64(salt)
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def draw_salt(rng: np.random.Generator) -> int:
    """A 64-bit salt for :func:`hash_keys` from the strategy's generator."""
    return int(rng.integers(0, 2**64, dtype=np.uint64))


class ScoreStrategy:
    """Base for strategies that score each record independently.

    Subclasses set ``name`` and implement ``score(values, *, task,
    num_classes)`` returning one float per row, higher = more informative;
    ``values`` is a C-contiguous float32 block of at most ``BLOCK_VALUES``
    values. Raise ``ValueError`` for a task the strategy cannot score.
    """

    name: str = ""

    def score(self, values: np.ndarray, *, task: str, num_classes: Optional[int]) -> np.ndarray:
        raise NotImplementedError

    def score_all(self, values: np.ndarray, *, task: str, num_classes: Optional[int]) -> np.ndarray:
        """Scores of every row of ``values``, computed block by block."""
        values = np.asarray(values)
        if values.ndim != 2:
            raise ValidationError(f"strategy {self.name!r} needs 2-D outputs, got shape {values.shape}")
        out = np.empty(len(values), np.float32)
        rows = max(1, BLOCK_VALUES // max(1, values.shape[1]))
        for start in range(0, len(values), rows):
            block = np.ascontiguousarray(values[start : start + rows], dtype=np.float32)
            n = len(block)
            if n == 1:  # numpy sums a lone column in another order; keep scores independent of chunking
                block = np.repeat(block, 2, axis=0)
            out[start : start + n] = self.score(block, task=task, num_classes=num_classes)[:n]
        return out

    def select(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> np.ndarray:
        """The k highest-scoring records (ties to the lower index)."""
        return self.select_with_scores(chunks, k, rng=rng, task=task, num_classes=num_classes)[0]

    def select_with_scores(
        self, chunks: Chunks, k: int, *, rng: np.random.Generator, task: str, num_classes: Optional[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``select``'s records and their scores, best first."""
        best = TopK(k)
        for indices, values in chunks:
            indices = np.asarray(indices, np.int64)
            if len(indices) != len(values):
                raise ValidationError(f"a chunk has {len(indices)} indices for {len(values)} rows of outputs")
            best.add(self.score_all(values, task=task, num_classes=num_classes), indices)
        picked = best.result()
        return picked, np.asarray(best.scores, dtype=np.float64)

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


def _chunks(outputs: Any, indices: Optional[np.ndarray]) -> tuple[Union[list, Iterator], Optional[int]]:
    """Normalise ``outputs`` to chunks; also return the pool size when known."""
    if isinstance(outputs, np.ndarray):
        if outputs.ndim != 2:
            raise ValidationError(f"outputs must be a 2-D array (records x values), got shape {outputs.shape}")
        n = len(outputs)
        idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.shape != (n,):
            raise ValidationError(f"indices must be 1-D with one entry per output row ({n}), got shape {idx.shape}")
        return [(idx, outputs)], n
    if indices is not None:
        raise ValidationError("indices= is only for an in-memory array; chunks carry their own indices")
    return iter(outputs), None


def _resolve(strategy: Union[str, Strategy]) -> Strategy:
    if not isinstance(strategy, str):
        return strategy
    strategies = get_strategies()
    if strategy not in strategies:
        known = ", ".join(sorted(strategies)) or "none installed"
        raise UnknownStrategyError(f"unknown strategy {strategy!r}; known strategies: {known}")
    return strategies[strategy]


def _embedding_chunks(embeddings: Any, outputs: Any, chunks: Union[list, Iterator]) -> Optional[Iterable]:
    """``embeddings`` as chunks aligned with ``chunks``: an array beside an
    in-memory ``outputs`` becomes one chunk with the same indices."""
    if embeddings is None:
        return None
    if isinstance(outputs, np.ndarray):
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(outputs):
            raise ValidationError(
                f"embeddings must be a 2-D array with one row per output row ({len(outputs)}), got shape {emb.shape}"
            )
        assert isinstance(chunks, list)
        return [(chunks[0][0], emb)]
    if isinstance(embeddings, np.ndarray):
        raise ValidationError("embeddings as an array go with outputs as an array; with chunks, give (indices, embeddings) chunks")
    return embeddings


def _labeled(labeled: Any) -> Labeled:
    if labeled is None:
        return Labeled(np.empty(0, np.int64))
    if isinstance(labeled, Labeled):
        return labeled
    return Labeled(np.unique(np.asarray(labeled, dtype=np.int64)))


@overload
def select(
    strategy: Union[str, Strategy],
    outputs: Union[np.ndarray, Chunks],
    k: int,
    *,
    indices: Optional[np.ndarray] = ...,
    seed: Optional[int] = ...,
    task: str = ...,
    num_classes: Optional[int] = ...,
    embeddings: Union[np.ndarray, Chunks, None] = ...,
    labeled: Union[Labeled, np.ndarray, None] = ...,
    mc_samples: Optional[int] = ...,
    return_scores: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def select(
    strategy: Union[str, Strategy],
    outputs: Union[np.ndarray, Chunks],
    k: int,
    *,
    indices: Optional[np.ndarray] = ...,
    seed: Optional[int] = ...,
    task: str = ...,
    num_classes: Optional[int] = ...,
    embeddings: Union[np.ndarray, Chunks, None] = ...,
    labeled: Union[Labeled, np.ndarray, None] = ...,
    mc_samples: Optional[int] = ...,
    return_scores: Literal[True],
) -> tuple[np.ndarray, Optional[np.ndarray]]: ...


def select(
    strategy: Union[str, Strategy],
    outputs: Union[np.ndarray, Chunks],
    k: int,
    *,
    indices: Optional[np.ndarray] = None,
    seed: Optional[int] = None,
    task: str = "classification",
    num_classes: Optional[int] = None,
    embeddings: Union[np.ndarray, Chunks, None] = None,
    labeled: Union[Labeled, np.ndarray, None] = None,
    mc_samples: Optional[int] = None,
    return_scores: bool = False,
) -> Union[np.ndarray, tuple[np.ndarray, Optional[np.ndarray]]]:
    """Pick the ``k`` most informative records.

    :param strategy: a registered strategy name (``"entropy"``) or a strategy
        object.
    :param outputs: a 2-D array of pre-activation outputs, one row per
        record, or an iterable of ``(indices, values)`` chunks as
        ``Storage.iter_outputs`` yields them.
    :param k: how many records; 0 gives an empty array, more than the pool is
        a ``ValueError``.
    :param indices: with an array, each row's record index (default
        ``0..n-1``).
    :param seed: makes random choices (``random``, ``kcenter``) repeatable.
    :param task: the model's task; decides how outputs are read.
    :param num_classes: the number of classes (labels): required for
        ``object_detection`` (rows are boxes x classes), checked against the
        row width for ``classification`` when given.
    :param embeddings: one embedding row per output row: with an array of
        outputs, a 2-D array aligned with it; with chunks, ``(indices,
        embeddings)`` chunks aligned one to one with them.
    :param labeled: the records already labeled: a :class:`Labeled` (with
        the model's outputs and embeddings for them) or their indices.
    :param mc_samples: ``T`` when each output row is T stochastic passes
        flattened (``model_info``'s ``mc_samples``).
    :param return_scores: return ``(indices, scores)``: the strategy's
        score of each picked record (float64, aligned with the indices) from
        its ``select_with_scores``, or None for a strategy without one.
    :returns: int64 array of k distinct record indices, most informative first.

    The strategy receives only the inputs beyond logits its ``select``
    declares (see the module docstring); one that does not declare
    ``mc_samples`` sees rows reduced to one pass (:func:`reduce_mc`).
    """
    strat = _resolve(strategy)
    k = operator.index(k)
    if k < 0:
        raise ValidationError(f"k must be >= 0, got {k}")
    if task not in TASKS:
        raise ValidationError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1):
        raise ValidationError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    chunks, pool = _chunks(outputs, indices)
    emb_chunks = _embedding_chunks(embeddings, outputs, chunks)
    if pool is not None:
        check_pool(k, pool)
    if k == 0:
        return (np.empty(0, np.int64), None) if return_scores else np.empty(0, np.int64)
    wants = declared_inputs(strat)
    extra: dict[str, Any] = {}
    if "embeddings" in wants:
        extra["embeddings"] = emb_chunks
    if "labeled" in wants:
        extra["labeled"] = _labeled(labeled)
    if "mc_samples" in wants:
        extra["mc_samples"] = None if mc_samples is None else int(mc_samples)
    elif mc_samples is not None:
        T = int(mc_samples)
        chunks = ((i, reduce_mc(v, T, task)) for i, v in chunks)
        if "labeled" in wants and extra["labeled"].values is not None:
            extra["labeled"] = replace(extra["labeled"], values=reduce_mc(extra["labeled"].values, T, task))
    rng = np.random.default_rng(seed)
    name = getattr(strat, "name", repr(strat))
    scorer = getattr(strat, "select_with_scores", None) if return_scores else None
    scores: Any = None
    try:
        if callable(scorer):
            found = scorer(chunks, k, rng=rng, task=task, num_classes=num_classes, **extra)
            if not (isinstance(found, tuple) and len(found) == 2):
                raise ValidationError(f"strategy {name!r}: select_with_scores must return (indices, scores)")
            picked, scores = np.asarray(found[0]), found[1]
        else:
            picked = np.asarray(strat.select(chunks, k, rng=rng, task=task, num_classes=num_classes, **extra))
    except AlectioError:
        raise
    except Exception as exc:
        where = origin("register_strategies", name, strat)
        raise ContributionError("select", f"strategy {name!r}{where} failed in select: {type(exc).__name__}: {exc}") from exc
    if picked.shape != (k,) or picked.dtype.kind not in "iu":
        raise ValidationError(f"strategy {name!r} returned {picked.shape} {picked.dtype}, expected {k} integer indices")
    if len(np.unique(picked)) != k:
        raise ValidationError(f"strategy {name!r} returned duplicate record indices")
    picked = picked.astype(np.int64, copy=False)
    if not return_scores:
        return picked
    if scores is not None:
        try:
            scores = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(f"strategy {name!r} returned scores that are not numbers") from None
        if scores.shape != (k,):
            raise ValidationError(f"strategy {name!r} returned {scores.shape} scores for {k} records")
    return picked, scores
