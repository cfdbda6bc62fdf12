"""Query strategies: scores against naive float64 references, the selection
order (score, then lower index), streaming == in-memory, seeds, k bounds,
task handling and lookup by name through the plugin registry."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alectio_core import plugins
from alectio_core.errors import UnknownStrategyError, ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import ScoreStrategy, select, top_k
from alectio_plugins.strategy_kcenter import KCenterGreedy
from alectio_plugins.strategy_random import Random
from alectio_plugins.strategy_uncertainty import Entropy, LeastConfidence, Margin

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

UNCERTAINTY = [LeastConfidence(), Margin(), Entropy()]
ALL = [*UNCERTAINTY, Random(), KCenterGreedy(), KCenterGreedy(max_rows=16)]
BUILTIN_MODULES = {
    "strategy_random": "alectio_plugins.strategy_random",
    "strategy_uncertainty": "alectio_plugins.strategy_uncertainty",
    "strategy_kcenter": "alectio_plugins.strategy_kcenter",
}

# ----------------------------------------------------------------------
# Naive references, float64
# ----------------------------------------------------------------------


def ref_softmax_scores(x: np.ndarray, name: str) -> np.ndarray:
    x = x.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.sort(p, axis=1)[:, ::-1]
    if name == "least_confidence":
        return 1 - top[:, 0]
    if name == "margin":
        second = top[:, 1] if p.shape[1] > 1 else 0.0
        return 1 - (top[:, 0] - second)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)


def ref_binary(x: np.ndarray, name: str) -> np.ndarray:
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    if name == "least_confidence":
        return 1 - np.maximum(p, 1 - p)
    if name == "margin":
        return 1 - np.abs(p - (1 - p))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    return np.nan_to_num(h)


def ref_scores(x: np.ndarray, name: str, task: str, num_classes: int | None = None) -> np.ndarray:
    if task == "classification":
        return ref_softmax_scores(x, name)
    if task == "multilabel":
        return ref_binary(x, name).sum(axis=1)
    per_box = ref_binary(x.reshape(len(x), -1, num_classes), name).sum(axis=2)
    return per_box.max(axis=1)


def logits(min_rows=1, max_rows=40, min_cols=1, max_cols=12):
    shape = st.tuples(st.integers(min_rows, max_rows), st.integers(min_cols, max_cols))
    return hnp.arrays(np.float32, shape, elements=st.floats(-30, 30, width=32))


def chunked(x: np.ndarray, cuts: list[int], indices: np.ndarray | None = None):
    indices = np.arange(len(x), dtype=np.int64) if indices is None else indices
    bounds = [0, *sorted(c % (len(x) + 1) for c in cuts), len(x)]
    return [(indices[a:b], x[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


# ----------------------------------------------------------------------
# Scores and selections against the references
# ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", UNCERTAINTY, ids=lambda s: s.name)
@pytest.mark.parametrize("task", ["classification", "multilabel", "object_detection"])
@settings(max_examples=60, deadline=None)
@given(x=logits(max_cols=12), boxes=st.integers(1, 4))
def test_scores_match_reference(strategy, task, x, boxes):
    num_classes = None
    if task == "object_detection":
        num_classes = x.shape[1]
        x = np.tile(x, (1, boxes))  # (boxes x classes) per row
    got = strategy.score_all(x, task=task, num_classes=num_classes)
    np.testing.assert_allclose(got, ref_scores(x, strategy.name, task, num_classes), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("strategy", UNCERTAINTY, ids=lambda s: s.name)
@settings(max_examples=80, deadline=None)
@given(x=logits(), data=st.data())
def test_selection_is_the_reference_top_k(strategy, x, data):
    k = data.draw(st.integers(0, len(x)))
    picked = select(strategy, x, k)
    ref = ref_scores(x, strategy.name, "classification")
    assert picked.dtype == np.int64 and len(set(picked.tolist())) == k
    rest = np.setdiff1d(np.arange(len(x)), picked)
    if k and len(rest):
        assert ref[picked].min() >= ref[rest].max() - 1e-4
    assert np.all(np.diff(ref[picked]) <= 1e-4), "most informative first"


def test_known_classification_ranking():
    x = np.array([[5, 0, 0], [0, 0, 0], [2, 2, -9], [3, 1, 0]], np.float32)
    assert select(Entropy(), x, 4).tolist() == [1, 2, 3, 0]
    assert select(LeastConfidence(), x, 4).tolist() == [1, 2, 3, 0]
    # rows 1 and 2 both have margin 0 (a tie for first place): lower index first
    assert select(Margin(), x, 4).tolist() == [1, 2, 3, 0]


def naive_margin(x: np.ndarray) -> np.ndarray:
    """1 - (p_1st - p_2nd) the way one writes it with numpy: softmax, partition."""
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1 - (top[:, 1] - top[:, 0])


@pytest.mark.parametrize("width", [2, 3, 1000])
def test_margin_matches_naive_numpy_at_any_width_with_ties(width):
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((600, width)) * 3).astype(np.float32)
    top = x.argmax(axis=1)
    x[:100, 0] = x[:100, 1] = x[:100].max(axis=1) + 1  # the two best tied: margin 0, score 1
    x[100:150] = np.round(x[100:150])  # ties among the values anywhere in the row
    x[150:200, :] = 2.0  # every class tied
    x[200:250, top[200:250]] += 40  # one class certain: score ~0
    x[250:300] = x[300:350]  # duplicate rows: ties between records
    scores = Margin().score_all(x, task="classification", num_classes=width)
    expected = naive_margin(x.astype(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=2e-5)
    assert (scores[:100] == 1.0).all() and (scores[150:200] == 1.0).all()
    picked = select(Margin(), x, 120)
    assert picked[:100].tolist() == list(range(100))  # score 1, ties to the lower index
    rest = np.setdiff1d(np.arange(len(x)), picked)
    assert expected[picked].min() >= expected[rest].max() - 1e-4


# ----------------------------------------------------------------------
# Ordering, ties, determinism, streaming
# ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", UNCERTAINTY, ids=lambda s: s.name)
def test_ties_go_to_the_lower_record_index(strategy):
    x = np.tile(np.array([[0.3, -1.0, 2.0]], np.float32), (50, 1))
    indices = np.random.default_rng(0).permutation(np.arange(1000, 1050))
    assert select(strategy, x, 5, indices=indices).tolist() == [1000, 1001, 1002, 1003, 1004]
    chunks = chunked(x, [7, 31], indices)
    assert select(strategy, chunks, 5).tolist() == [1000, 1001, 1002, 1003, 1004]


def test_top_k_orders_by_score_then_index():
    scores = np.array([1.0, 3.0, 3.0, np.nan, 2.0, 3.0])
    indices = np.array([10, 50, 40, 0, 20, 60])
    _, best = top_k(scores, indices, 4)
    assert best.tolist() == [40, 50, 60, 20]
    assert top_k(scores, indices, 6)[1].tolist() == [40, 50, 60, 20, 10, 0]


@pytest.mark.parametrize("strategy", ALL, ids=repr)
@settings(max_examples=40, deadline=None)
@given(x=logits(max_rows=80), cuts=st.lists(st.integers(0, 80), max_size=6), seed=st.integers(0, 2**32), data=st.data())
def test_streamed_chunks_select_exactly_as_in_memory(strategy, x, cuts, seed, data):
    k = data.draw(st.integers(0, len(x)))
    indices = np.arange(len(x), dtype=np.int64) * 3 + 7
    in_memory = select(strategy, x, k, indices=indices, seed=seed)
    streamed = select(strategy, iter(chunked(x, cuts, indices)), k, seed=seed)
    assert streamed.tolist() == in_memory.tolist()
    assert set(in_memory.tolist()) <= set(indices.tolist())


@pytest.mark.parametrize("strategy", UNCERTAINTY, ids=lambda s: s.name)
@pytest.mark.parametrize("task", ["classification", "multilabel", "object_detection"])
def test_a_records_score_does_not_depend_on_its_chunk(strategy, task):
    x = np.random.default_rng(6).standard_normal((64, 12)).astype(np.float32) * 4
    num_classes = 4 if task == "object_detection" else None
    one_by_one = np.concatenate([strategy.score_all(row[None], task=task, num_classes=num_classes) for row in x])
    together = strategy.score_all(x, task=task, num_classes=num_classes)
    assert one_by_one.tobytes() == together.tobytes()  # bit for bit, so near-ties rank the same


@pytest.mark.parametrize("strategy", [Random(), KCenterGreedy()], ids=repr)
def test_seeded_strategies_repeat_and_vary_with_the_seed(strategy):
    x = np.random.default_rng(1).standard_normal((500, 6)).astype(np.float32)
    a = select(strategy, x, 20, seed=42)
    assert a.tolist() == select(strategy, x, 20, seed=42).tolist()
    assert a.tolist() != select(strategy, x, 20, seed=43).tolist()


def test_random_is_uniform_over_the_pool():
    x = np.zeros((100, 2), np.float32)
    counts = np.zeros(100)
    seeds = 2000
    for seed in range(seeds):
        picked = select(Random(), x, 10, seed=seed)
        assert len(set(picked.tolist())) == 10
        counts[picked] += 1
    expected, sigma = seeds * 0.1, np.sqrt(seeds * 0.1 * 0.9)
    assert np.all(np.abs(counts - expected) < 5 * sigma), counts


# ----------------------------------------------------------------------
# k bounds and argument checks
# ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL, ids=repr)
def test_k_bounds(strategy):
    x = np.random.default_rng(2).standard_normal((8, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="cannot select 9 records from a pool of 8"):
        select(strategy, x, 9)
    with pytest.raises(ValueError, match="cannot select 9 records from a pool of 8"):
        select(strategy, iter(chunked(x, [3])), 9)
    with pytest.raises(ValueError, match="k must be >= 0"):
        select(strategy, x, -1)
    empty = select(strategy, x, 0)
    assert empty.dtype == np.int64 and empty.shape == (0,)
    assert sorted(select(strategy, x, 8, seed=0).tolist()) == list(range(8))


def test_bad_arguments_are_clear_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="unknown task 'tabular'"):
        select(Entropy(), x, 1, task="tabular")
    with pytest.raises(ValueError, match="one entry per output row"):
        select(Entropy(), x, 1, indices=np.arange(3))
    with pytest.raises(ValueError, match="expected 5 classes"):
        select(Entropy(), x, 1, num_classes=5)
    with pytest.raises(ValueError, match="cannot score task 'regression'"):
        select(Margin(), x, 1, task="regression")
    assert len(select(Random(), x, 2, task="regression", seed=0)) == 2
    assert len(select(KCenterGreedy(), x, 2, task="regression", seed=0)) == 2


def test_any_float_layout_selects_like_float32():
    x = np.random.default_rng(7).standard_normal((300, 6)).astype(np.float32)
    expected = select(Entropy(), x, 10).tolist()
    assert select(Entropy(), x.astype(np.float64), 10).tolist() == expected
    assert select(Entropy(), np.asfortranarray(x), 10).tolist() == expected
    with pytest.raises(ValueError, match="3 indices for 4 rows"):
        select(Entropy(), [(np.arange(3), np.zeros((4, 2), np.float32))], 1)


def test_a_strategy_breaking_the_contract_is_named():
    class Duplicates:
        name = "dupes"

        def select(self, chunks, k, *, rng, task, num_classes):
            return np.zeros(k, np.int64)

    with pytest.raises(ValueError, match="'dupes' returned duplicate"):
        select(Duplicates(), np.zeros((5, 2), np.float32), 3)


# ----------------------------------------------------------------------
# Multilabel and object detection
# ----------------------------------------------------------------------


def test_multilabel_sums_per_label_uncertainty():
    x = np.array([[9, -9, 9], [0, -9, 9], [0, 0, -9], [0, 0, 0]], np.float32)
    for strategy in UNCERTAINTY:
        assert select(strategy, x, 4, task="multilabel").tolist() == [3, 2, 1, 0]
    # a confident "no" is as certain as a confident "yes" (no softmax across labels)
    s = Entropy().score_all(np.array([[9, 9], [-9, -9]], np.float32), task="multilabel", num_classes=None)
    assert s[0] == pytest.approx(s[1])


def test_object_detection_scores_the_most_doubtful_box():
    confident_box, doubtful_box = [8, -8, -8], [0.1, -8, -8]
    images = np.array(
        [
            confident_box * 4,
            confident_box * 3 + doubtful_box,  # one doubtful detection among four
            [-8, -8, -8] * 4,  # confidently empty peaks
        ],
        np.float32,
    )
    for strategy in UNCERTAINTY:
        scores = strategy.score_all(images, task="object_detection", num_classes=3)
        assert scores[1] > scores[0] and scores[1] > scores[2]
        single = strategy.score_all(np.array([doubtful_box], np.float32), task="object_detection", num_classes=3)
        assert scores[1] == pytest.approx(single[0], rel=1e-6)  # max over boxes, not a sum
        assert select(strategy, images, 1, task="object_detection", num_classes=3).tolist() == [1]
    with pytest.raises(ValueError, match="num_classes"):
        select(Entropy(), images, 1, task="object_detection")
    with pytest.raises(ValueError, match="boxes x num_classes"):
        select(Entropy(), images, 1, task="object_detection", num_classes=5)


# ----------------------------------------------------------------------
# k-center greedy
# ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(x=logits(min_rows=2, max_rows=60), seed=st.integers(0, 1000), data=st.data())
def test_kcenter_is_farthest_first(x, seed, data):
    k = data.draw(st.integers(1, len(x)))
    picked = select(KCenterGreedy(), x, k, seed=seed)
    p = x.astype(np.float64)
    p = np.exp(p - p.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    chosen = picked.tolist()  # record index == row here
    assert len(set(chosen)) == k
    for j in range(1, k):
        nearest = np.min(((p[:, None, :] - p[None, chosen[:j], :]) ** 2).sum(axis=2), axis=1)
        nearest[chosen[:j]] = -1
        assert nearest[chosen[j]] >= nearest.max() - 1e-5


def test_kcenter_covers_every_cluster_uncertainty_does_not():
    rng = np.random.default_rng(3)
    centers = np.eye(5, dtype=np.float32) * 12
    x = np.concatenate([c + rng.normal(0, 0.05, (200, 5)).astype(np.float32) for c in centers])
    x[:200] = rng.normal(0, 0.05, (200, 5))  # one cluster of very uncertain rows
    for seed in range(5):
        picked = select(KCenterGreedy(), x, 5, seed=seed)
        assert sorted(picked // 200) == [0, 1, 2, 3, 4]
    assert set((select(Entropy(), x, 5) // 200).tolist()) == {0}


def test_kcenter_ties_go_to_the_lower_index_in_any_stream_order():
    # three groups of five identical points on a line (raw values for "regression")
    x = np.repeat(np.array([[0.0], [1.0], [3.0]], np.float32), 5, axis=0)
    for seed in range(10):
        picked = select(KCenterGreedy(), x, 3, task="regression", seed=seed)
        assert set(picked[1:].tolist()) <= {0, 5, 10}
        reversed_chunks = [(np.array([i]), x[i : i + 1]) for i in range(14, -1, -1)]
        assert select(KCenterGreedy(), reversed_chunks, 3, task="regression", seed=seed).tolist() == picked.tolist()


def test_kcenter_subsample_stays_in_the_pool_and_can_exceed_the_sample_for_large_k():
    x = np.random.default_rng(4).standard_normal((1000, 4)).astype(np.float32)
    picked = select(KCenterGreedy(max_rows=50), x, 30, indices=np.arange(1000) + 10**9, seed=1)
    assert len(set(picked.tolist())) == 30 and picked.min() >= 10**9
    assert len(set(select(KCenterGreedy(max_rows=10), x, 200, seed=1).tolist())) == 200


# ----------------------------------------------------------------------
# Outputs holding NaN or inf (the outputs writer refuses them, so they reach
# a strategy only through select() on an array or a third-party storage)
# ----------------------------------------------------------------------


def with_non_finite_rows(rows=60, width=4):
    x = np.random.default_rng(6).standard_normal((rows, width)).astype(np.float32)
    x[7] = np.nan  # a whole row
    x[12, 1] = np.nan  # one value
    x[30, 0] = np.inf
    x[41, 2] = np.nan
    return x


@pytest.mark.parametrize("task", ["classification", "multilabel", "regression"])
def test_kcenter_on_non_finite_outputs_says_how_many_rows(registry, task):
    x = with_non_finite_rows()
    message = r"strategy 'kcenter' needs finite outputs: 4 of 60 records hold NaN or inf \(the first: record 1007\)"
    with pytest.raises(ValidationError, match=message):
        select("kcenter", x, 5, indices=np.arange(1000, 1060), seed=0, task=task)
    with pytest.raises(ValidationError, match=message):  # streamed, through a sample smaller than the pool
        select(KCenterGreedy(max_rows=8), chunked(x, [5, 20, 44], np.arange(1000, 1060)), 5, seed=0, task=task)


@pytest.mark.parametrize("strategy", UNCERTAINTY, ids=lambda s: s.name)
def test_uncertainty_picks_rows_holding_nan_last(strategy):
    x = with_non_finite_rows()
    x[30, 0] = 0.0  # NaN only
    finite = np.setdiff1d(np.arange(60), [7, 12, 41])
    picked = select(strategy, chunked(x, [9, 33]), 60)
    assert picked[-3:].tolist() == [7, 12, 41]  # after every other row, lower index first
    assert picked[:-3].tolist() == finite[select(strategy, x[finite], 57)].tolist()
    assert 7 not in select(strategy, x, 57).tolist()


def test_random_ignores_the_values_nan_or_not():
    x = with_non_finite_rows()
    assert select("random", x, 20, seed=3).tolist() == select("random", np.zeros_like(x), 20, seed=3).tolist()


# ----------------------------------------------------------------------
# Lookup by name: built-ins and a third-party strategy
# ----------------------------------------------------------------------


class FakeStrategy:
    """Picks the k highest record indices."""

    name = "highest_index"

    def select(self, chunks, k, *, rng, task, num_classes):
        return np.sort(np.concatenate([np.asarray(i, np.int64) for i, _ in chunks]))[::-1][:k]


class FakePlugin:
    @hookimpl
    def register_strategies(self, register):
        register(FakeStrategy())


@pytest.fixture
def registry():
    """The plugin registry with the built-in strategies (registered from
    their modules when the package's entry points are not installed) and a
    fake third-party plugin; forgotten afterwards."""
    plugins.reset_plugins()
    reg = plugins.load_plugins()
    for name, module in BUILTIN_MODULES.items():
        if reg.pm.get_plugin(name) is None:
            assert plugins.register_plugin(reg, name, lambda m=module: importlib.import_module(m))
    assert plugins.register_plugin(reg, "fake-strategy", FakePlugin)
    yield reg
    plugins.reset_plugins()


def test_strategies_are_usable_by_name(registry):
    found = plugins.get_strategies()
    assert {"random", "least_confidence", "margin", "entropy", "kcenter", "highest_index"} <= set(found)
    x = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    for name in ("random", "least_confidence", "margin", "entropy", "kcenter"):
        assert select(name, x, 4, seed=9).tolist() == select(found[name], x, 4, seed=9).tolist()
    assert select("highest_index", x, 3).tolist() == [29, 28, 27]


def test_unknown_strategy_lists_the_known_ones(registry):
    with pytest.raises(UnknownStrategyError, match="unknown strategy 'entropie'.*entropy.*highest_index"):
        select("entropie", np.zeros((3, 2), np.float32), 1)


def test_builtin_strategy_modules_are_entry_points():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["alectio.plugins"]
    for name, module in BUILTIN_MODULES.items():
        assert declared.get(name) == module


def test_score_strategy_subclass_needs_only_a_score():
    class Loudest(ScoreStrategy):
        name = "loudest"

        def score(self, values, *, task, num_classes):
            return np.abs(values).max(axis=1)

    x = np.array([[1, 2], [-7, 0], [3, 3], [7, 1]], np.float32)
    assert select(Loudest(), iter(chunked(x, [1, 3])), 3).tolist() == [1, 3, 2]
