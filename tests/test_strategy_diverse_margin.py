"""``diverse_margin``: margin's short list, one record per k-means cluster."""

from __future__ import annotations

import numpy as np
import pytest

from alectio_core import plugins
from alectio_core.errors import ValidationError
from alectio_core.strategies import reduce_mc, select
from alectio_plugins.strategy_diverse_margin import DiverseMargin, kmeans
from alectio_plugins.strategy_uncertainty import Margin


def confusions(rng, groups):
    """Logits where group g's records hesitate between classes 2g and 2g+1,
    by the gap given (smaller = more uncertain)."""
    rows = []
    for g, (count, gap) in enumerate(groups):
        x = np.full((count, 10), -5.0, np.float32)
        x[:, 2 * g] = 3.0
        x[:, 2 * g + 1] = 3.0 - gap - rng.uniform(0, 0.01, count)
        rows.append(x)
    return np.vstack(rows)


def test_a_batch_spreads_over_confusions_that_margin_piles_onto_one():
    x = confusions(np.random.default_rng(0), [(60, 0.0), (60, 0.05)])  # 0-vs-1 slightly more uncertain than 2-vs-3
    assert all(i < 60 for i in select("margin", x, 10))
    picked = select(DiverseMargin(), x, 10, seed=3)
    assert any(i < 60 for i in picked) and any(i >= 60 for i in picked)


def test_picks_come_from_margins_short_list_most_uncertain_first():
    x = np.random.default_rng(1).standard_normal((2000, 6)).astype(np.float32)
    picked = select(DiverseMargin(beta=5), x, 25, seed=0)
    assert len(set(picked.tolist())) == 25
    assert set(picked.tolist()) <= set(select("margin", x, 125).tolist())
    scores = Margin().score_all(x, task="classification", num_classes=None)[picked]
    assert np.all(np.diff(scores) <= 0)


def test_seeded_and_independent_of_chunking():
    x = np.random.default_rng(2).standard_normal((1500, 10)).astype(np.float32)
    whole = select("diverse_margin", x, 30, seed=7)
    chunks = ((np.arange(i, i + 400), x[i : i + 400]) for i in range(0, 1500, 400))
    assert select("diverse_margin", chunks, 30, seed=7).tolist() == whole.tolist()
    assert select("diverse_margin", x, 30, seed=7).tolist() == whole.tolist()


def test_a_pool_no_larger_than_k_is_taken_whole_and_duplicates_do_not_break_it():
    x = np.zeros((12, 3), np.float32)  # every record the same: one cluster, filled up by uncertainty order
    assert sorted(select("diverse_margin", x, 12, seed=0).tolist()) == list(range(12))
    assert len(set(select("diverse_margin", x, 5, seed=0).tolist())) == 5


def test_kmeans_separates_separated_groups():
    rng = np.random.default_rng(4)
    points = np.vstack([rng.normal(c, 0.01, (20, 2)) for c in ((0, 0), (1, 0), (0, 1))])
    labels = kmeans(points, 3, np.random.default_rng(0), 20)
    assert len({tuple(labels[i : i + 20]) for i in (0, 20, 40)}) == 3
    assert all(len(set(labels[i : i + 20])) == 1 for i in (0, 20, 40))


def test_detection_rows_are_read_as_boxes_by_classes():
    x = np.random.default_rng(5).standard_normal((300, 24)).astype(np.float32)
    picked = select("diverse_margin", x, 8, seed=1, task="object_detection", num_classes=3)
    assert set(picked.tolist()) <= set(select("margin", x, 80, task="object_detection", num_classes=3).tolist())


def test_installed_as_a_builtin_strategy():
    assert "diverse_margin" in plugins.get_strategies()


def test_kmeans_in_small_blocks_gives_the_same_clusters(monkeypatch):
    import alectio_plugins.strategy_diverse_margin as module

    points = np.random.default_rng(6).dirichlet(np.ones(10) * 0.3, size=500)
    whole = kmeans(points, 50, np.random.default_rng(1), 20)
    monkeypatch.setattr(module, "BLOCK", 37)  # one row (of 50 centres) per block
    assert kmeans(points, 50, np.random.default_rng(1), 20).tolist() == whole.tolist()


def test_a_task_it_cannot_score_is_an_error_naming_diverse_margin_not_margin():
    """The default strategy: a user who never named margin must not be told about it."""
    x = np.zeros((12, 3), np.float32)
    with pytest.raises(ValidationError) as error:
        select("diverse_margin", x, 2, task="regression")
    assert str(error.value) == "strategy 'diverse_margin' cannot score task 'regression'; use 'random' or 'kcenter'"
    with pytest.raises(ValidationError) as error:
        select("diverse_margin", x, 2, num_classes=4)
    assert str(error.value) == "diverse_margin: outputs have 3 values per record, expected 4 classes"


@pytest.mark.parametrize("task, num_classes", [("classification", 3), ("multilabel", 3), ("object_detection", 3)])
def test_mc_samples_rows_are_picked_as_their_mean_pass(task, num_classes):
    x = np.random.default_rng(2).standard_normal((300, 4 * 6)).astype(np.float32)  # 4 passes of 6 values
    width = 6 if task == "object_detection" else num_classes
    x = x[:, : 4 * width]
    picked = select("diverse_margin", x, 8, seed=5, task=task, num_classes=num_classes, mc_samples=4)
    reference = select("diverse_margin", reduce_mc(x, 4, task), 8, seed=5, task=task, num_classes=num_classes)
    np.testing.assert_array_equal(picked, reference)
