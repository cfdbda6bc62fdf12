"""``select(..., return_scores=True)``: the picked records with the score
the strategy gave each, best first, for people to sort a selection by."""

from __future__ import annotations

import numpy as np
import pytest

from alectio_core.errors import ValidationError
from alectio_core.strategies import select
from alectio_plugins.strategy_uncertainty import Entropy, Margin


def logits(n=60, classes=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32) * 2


def test_a_score_strategy_gives_the_scores_of_its_picks_best_first():
    outputs = logits()
    picked, scores = select("entropy", outputs, 7, return_scores=True)
    assert picked.tolist() == select("entropy", outputs, 7).tolist()  # the same records either way
    assert scores.dtype == np.float64 and scores.tolist() == sorted(scores.tolist(), reverse=True)
    np.testing.assert_allclose(scores, Entropy().score_all(outputs[picked], task="classification", num_classes=4), rtol=1e-6)
    everything = Entropy().score_all(outputs, task="classification", num_classes=4)
    assert scores[-1] >= np.sort(everything)[-7]  # no record left out scores higher

    chunks = [(np.arange(s, min(s + 9, 60)), outputs[s : s + 9]) for s in range(0, 60, 9)]
    again, chunk_scores = select("entropy", chunks, 7, return_scores=True)
    assert again.tolist() == picked.tolist() and chunk_scores.tolist() == scores.tolist()


def test_diverse_margin_gives_each_picks_margin_uncertainty():
    outputs = logits(200, seed=3)
    picked, scores = select("diverse_margin", outputs, 10, seed=5, return_scores=True)
    assert picked.tolist() == select("diverse_margin", outputs, 10, seed=5).tolist()
    np.testing.assert_allclose(scores, Margin().score_all(outputs[picked], task="classification", num_classes=4), rtol=1e-6)
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


def test_a_strategy_without_scores_gives_none():
    outputs = logits()
    picked, scores = select("random", outputs, 5, seed=1, return_scores=True)
    assert scores is None and picked.tolist() == select("random", outputs, 5, seed=1).tolist()

    class Mine:  # a third-party strategy: only select
        name = "mine"

        def select(self, chunks, k, *, rng, task, num_classes):
            return np.concatenate([i for i, _ in chunks])[:k]

    assert select(Mine(), outputs, 3, return_scores=True)[1] is None
    assert select("entropy", outputs, 0, return_scores=True)[1] is None


def test_scores_that_do_not_fit_the_picks_are_refused_naming_the_strategy():
    class Wrong:
        name = "wrong"

        def select(self, chunks, k, *, rng, task, num_classes):
            raise AssertionError("select_with_scores is the one called")

        def select_with_scores(self, chunks, k, *, rng, task, num_classes):
            return np.arange(k), np.ones(k + 1)

    with pytest.raises(ValidationError, match=r"strategy 'wrong' returned \(4,\) scores for 3 records"):
        select(Wrong(), logits(), 3, return_scores=True)
