"""The strategies that read more than logits: coreset, badge, typiclust (embeddings,
labeled records) and bald, mean_entropy (MC samples).

Each is checked against a plain reference written here with loops over
records in float64, on small seeded data: the same picks where the algorithm
is deterministic given its draws (the references make the same draws from
the same generator), the defining property where it is not. Then what a user
meets: chunking changes nothing, NaN/inf and k past the pool are clear
errors, tasks a strategy cannot serve are refused with a message saying what
to do.
"""

from __future__ import annotations

import importlib
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from alectio_core import plugins
from alectio_core.errors import ValidationError
from alectio_core.strategies import Labeled, select
from alectio_plugins.clustering import kmeans, kmeans_pp
from alectio_plugins.strategy_badge import Badge
from alectio_plugins.strategy_bald import BALD, MeanEntropy, mc_scores
from alectio_plugins.strategy_coreset import Coreset
from alectio_plugins.strategy_typiclust import TypiClust, pick

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

MODULES = {
    "strategy_coreset": "alectio_plugins.strategy_coreset",
    "strategy_badge": "alectio_plugins.strategy_badge",
    "strategy_typiclust": "alectio_plugins.strategy_typiclust",
    "strategy_bald": "alectio_plugins.strategy_bald",
}

# ----------------------------------------------------------------------
# Plain references
# ----------------------------------------------------------------------


def softmax_rows(x):
    out = []
    for row in np.asarray(x, np.float64):
        e = [math.exp(v - max(row)) for v in row]
        out.append([v / sum(e) for v in e])
    return np.array(out)


def dist2(u, v):
    return sum((float(a) - float(b)) ** 2 for a, b in zip(u, v))


def skip_salt(rng):
    """Every feature strategy first draws the 64-bit salt of its subsample."""
    rng.integers(0, 2**64, dtype=np.uint64)


def ref_coreset(points, labeled_points, k, rng):
    """Sener & Savarese's k-center greedy, one distance at a time."""
    n = len(points)
    if labeled_points is not None and len(labeled_points):
        nearest = [min(dist2(p, q) for q in labeled_points) for p in points]
        first = max(range(n), key=lambda i: (nearest[i], -i))
    else:
        nearest = [math.inf] * n
        first = int(rng.integers(n))
    picked = [first]
    while len(picked) < k:
        c = picked[-1]
        nearest = [min(nearest[i], dist2(points[i], points[c])) for i in range(n)]
        free = [i for i in range(n) if i not in picked]
        picked.append(max(free, key=lambda i: (nearest[i], -i)))
    return picked


def ref_d2_sampling(points, k, rng, first):
    """k-means++ seeding: each next seed drawn with probability ~ squared
    distance to the nearest seed so far."""
    n = len(points)
    picked = [first]
    while len(picked) < k:
        weights = [0.0 if i in picked else min(dist2(points[i], points[c]) for c in picked) for i in range(n)]
        total = sum(weights)
        u = rng.random() * total
        running = 0.0
        for i, w in enumerate(weights):
            running += w
            if u < running:
                picked.append(i)
                break
    return picked


def ref_badge(outputs, embeddings, k, rng):
    """BADGE with the gradient embeddings built explicitly."""
    grads = []
    for p, e in zip(softmax_rows(outputs), embeddings):
        g = list(p)
        g[int(np.argmax(p))] -= 1
        grads.append(np.outer(g, e).ravel())
    first = max(range(len(grads)), key=lambda i: (sum(v * v for v in grads[i]), -i))
    return ref_d2_sampling(grads, k, rng, first)


def ref_typiclust_pick(labels, n, k, points):
    """Hacohen et al.'s selection given the clusters: from the cluster with the
    fewest labeled-or-picked records (clusters of <= 5 last, then the
    largest), its most typical pool record."""
    labels = list(labels)
    clusters = sorted(set(labels))
    covered = {c: sum(1 for i in range(n, len(labels)) if labels[i] == c) for c in clusters}
    picked = []
    for _ in range(k):
        def key(c):
            members = [i for i in range(len(labels)) if labels[i] == c]
            left = [i for i in members if i < n and i not in picked]
            return (not left, len(members) <= 5, covered[c], -len(members), c)

        c = min(clusters, key=key)
        members = [i for i in range(len(labels)) if labels[i] == c]
        neighbours = min(20, len(members) - 1)

        def typicality(i):
            d = sorted(math.sqrt(dist2(points[i], points[j])) for j in members if j != i)[:neighbours]
            return -sum(d) / len(d) if d else math.inf

        best = max((i for i in members if i < n and i not in picked), key=lambda i: (typicality(i), -i))
        picked.append(best)
        covered[c] += 1
    return picked


def ref_mc(row, samples, task):
    """(BALD, entropy of the mean) of one row of flattened passes."""
    passes = np.asarray(row, np.float64).reshape(samples, -1)
    if task == "classification":
        probs = softmax_rows(passes)
        mean = probs.mean(axis=0)
        h = lambda p: -sum(v * math.log(v) for v in p if v > 0)  # noqa: E731
        total = h(mean)
        expected = sum(h(p) for p in probs) / samples
    else:
        hb = lambda q: -sum(v * math.log(v) for v in (q, 1 - q) if v > 0)  # noqa: E731
        probs = [[1 / (1 + math.exp(-v)) for v in p] for p in passes]
        mean = [sum(p[j] for p in probs) / samples for j in range(passes.shape[1])]
        total = sum(hb(q) for q in mean)
        expected = sum(hb(q) for p in probs for q in p) / samples
    return max(total - expected, 0.0), total


def ref_mc_top_k(values, samples, task, k, which):
    scores = [ref_mc(row, samples, task)[which] for row in values]
    return sorted(range(len(values)), key=lambda i: (-scores[i], i))[:k]


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


def data(seed, n=40, classes=4, width=5, labeled=6):
    rng = np.random.default_rng(seed)
    outputs = (rng.standard_normal((n, classes)) * 2).astype(np.float32)
    emb = rng.standard_normal((n, width)).astype(np.float32)
    indices = np.sort(rng.choice(10 * n, size=n, replace=False)).astype(np.int64)
    lab = Labeled(
        indices=np.arange(10 * n, 10 * n + labeled, dtype=np.int64),
        values=(rng.standard_normal((labeled, classes)) * 2).astype(np.float32),
        embeddings=rng.standard_normal((labeled, width)).astype(np.float32),
    )
    return indices, outputs, emb, lab


def blobs(seed, sizes, width=3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(sizes), width)) * 20
    return np.concatenate([c + rng.standard_normal((s, width)) for c, s in zip(centers, sizes)]).astype(np.float32)


def chunked(indices, rows, cuts):
    bounds = [0, *sorted(set(cuts)), len(indices)]
    return [(indices[a:b], rows[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def run(strategy, indices, outputs, k, *, seed=0, cuts=(), task="classification", num_classes=None, **inputs):
    """``strategy.select`` on chunks cut at ``cuts``, embeddings aligned."""
    if inputs.get("embeddings") is not None:
        inputs["embeddings"] = iter(chunked(indices, inputs["embeddings"], cuts))
    return strategy.select(
        iter(chunked(indices, outputs, cuts)), k, rng=np.random.default_rng(seed), task=task, num_classes=num_classes, **inputs
    ).tolist()


# ----------------------------------------------------------------------
# coreset
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_coreset_is_k_center_greedy_from_the_labeled_records(seed):
    indices, outputs, emb, lab = data(seed)
    picked = run(Coreset(), indices, outputs, 8, seed=seed, embeddings=emb, labeled=lab)
    assert picked == indices[ref_coreset(emb, lab.embeddings, 8, None)].tolist()
    # Sener & Savarese's start: the first pick is the pool record farthest from the labeled set
    farthest = max(range(len(emb)), key=lambda i: min(dist2(emb[i], q) for q in lab.embeddings))
    assert picked[0] == indices[farthest]


@pytest.mark.parametrize("seed", range(3))
def test_coreset_on_clustered_embeddings_measures_only_what_can_move_and_picks_the_same(seed):
    # tight blobs far apart: most of the pool is provably out of a new center's reach
    points = blobs(seed, [60] * 8, width=4)
    order = np.random.default_rng(seed).permutation(len(points))
    pool, known = order[5:], order[:5]
    lab = Labeled(indices=np.arange(1000, 1005), values=np.zeros((5, 1), np.float32), embeddings=points[known])
    indices = np.arange(len(pool), dtype=np.int64)
    picked = run(Coreset(), indices, np.zeros((len(pool), 1), np.float32), 24, embeddings=points[pool], labeled=lab)
    assert picked == ref_coreset(points[pool], points[known], 24, None)


@pytest.mark.parametrize("seed", range(3))
def test_coreset_with_nothing_labeled_starts_from_a_random_record(seed):
    indices, outputs, emb, _ = data(seed)
    rng = np.random.default_rng(seed)
    skip_salt(rng)
    expected = indices[ref_coreset(emb, None, 6, rng)].tolist()
    for labeled in (None, Labeled(indices=np.empty(0, np.int64))):
        assert run(Coreset(), indices, outputs, 6, seed=seed, embeddings=emb, labeled=labeled) == expected


def test_coreset_without_embeddings_reads_probabilities():
    indices, outputs, _, lab = data(7)
    picked = run(Coreset(), indices, outputs, 6, labeled=Labeled(indices=lab.indices, values=lab.values))
    assert picked == indices[ref_coreset(softmax_rows(outputs), softmax_rows(lab.values), 6, None)].tolist()


def test_coreset_pool_with_embeddings_but_labeled_without_is_a_clear_error():
    indices, outputs, emb, lab = data(1)
    with pytest.raises(ValidationError, match="coreset: the pool has embeddings but the 6 labeled records have none"):
        run(Coreset(), indices, outputs, 3, embeddings=emb, labeled=Labeled(indices=lab.indices, values=lab.values))


def test_coreset_subsample_stays_in_the_pool_and_does_not_depend_on_chunking():
    indices, outputs, emb, lab = data(3, n=200)
    small = Coreset(max_bytes=50 * 5 * 4)  # 50 rows of 5 float32
    picked = run(small, indices, outputs, 10, seed=4, embeddings=emb, labeled=lab)
    assert len(set(picked)) == 10 and set(picked) <= set(indices.tolist())
    assert run(small, indices, outputs, 10, seed=4, cuts=[1, 77, 150], embeddings=emb, labeled=lab) == picked
    assert picked != run(Coreset(), indices, outputs, 10, seed=4, embeddings=emb, labeled=lab)


# ----------------------------------------------------------------------
# badge
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_badge_is_k_means_pp_on_gradient_embeddings(seed):
    indices, outputs, emb, _ = data(seed)
    rng = np.random.default_rng(seed)
    skip_salt(rng)
    expected = indices[ref_badge(outputs, emb, 8, rng)].tolist()
    assert run(Badge(), indices, outputs, 8, seed=seed, embeddings=emb) == expected


def test_badge_without_embeddings_uses_the_gradient_of_the_bias():
    indices, outputs, emb, _ = data(2)
    rng = np.random.default_rng(0)
    skip_salt(rng)
    expected = indices[ref_badge(outputs, np.ones((len(outputs), 1)), 6, rng)].tolist()
    assert run(Badge(), indices, outputs, 6) == expected


def test_badge_on_a_model_sure_of_everything_still_picks_k_records():
    indices = np.arange(12, dtype=np.int64)
    sure = np.tile(np.array([[50, 0, 0]], np.float32), (12, 1))  # p = onehot: every gradient is 0
    picked = run(Badge(), indices, sure, 5, embeddings=np.ones((12, 2), np.float32))
    assert len(set(picked)) == 5


def test_kmeans_pp_factored_matches_the_materialised_points():
    rng = np.random.default_rng(0)
    a, e = rng.standard_normal((30, 3)).astype(np.float32), rng.standard_normal((30, 4)).astype(np.float32)
    outer = np.stack([np.outer(x, y).ravel() for x, y in zip(a, e)])
    assert kmeans_pp(a, e, 7, np.random.default_rng(1)).tolist() == kmeans_pp(outer, None, 7, np.random.default_rng(1)).tolist()


# ----------------------------------------------------------------------
# typiclust
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_typiclust_picks_like_the_reference_from_the_same_clusters(seed):
    points = blobs(seed, [30, 12, 25, 4, 18, 9], width=4)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(points))
    points = points[order]
    n = len(points) - 10  # the last 10 rows are labeled
    labels = kmeans(points, 10 + 6, np.random.default_rng(seed))
    assert pick(labels, n, 6, points).tolist() == ref_typiclust_pick(labels, n, 6, points)


def test_kmeans_ends_at_a_lloyd_fixed_point():
    points = blobs(0, [40, 30, 20, 10])
    labels = kmeans(points, 4, np.random.default_rng(0))
    centers = np.array([points[labels == c].mean(axis=0) for c in range(4)])
    for p, label in zip(points, labels):
        assert label == int(np.argmin([dist2(p, c) for c in centers]))
    assert sorted(np.bincount(labels).tolist()) == [10, 20, 30, 40]  # the four blobs


def test_typiclust_covers_the_clusters_the_labeled_set_does_not():
    points = blobs(1, [40, 40, 40, 40])  # four blobs far apart: 2 labeled + 2 picks = 4 clusters
    cluster_of = np.repeat(np.arange(4), 40)
    labeled_rows = np.array([0, 40])  # blobs 0 and 1 are covered
    pool_rows = np.setdiff1d(np.arange(160), labeled_rows)
    lab = Labeled(indices=labeled_rows, values=np.zeros((2, 2), np.float32), embeddings=points[labeled_rows])
    picked = run(
        TypiClust(), pool_rows, np.zeros((len(pool_rows), 2), np.float32), 2,
        embeddings=points[pool_rows], labeled=lab,
    )
    assert sorted(cluster_of[picked].tolist()) == [2, 3]
    for record in picked:  # the most typical record of its blob: nearest on average to its 20 nearest
        members = [i for i in range(160) if cluster_of[i] == cluster_of[record]]
        def mean_nn(i):
            return sum(sorted(math.sqrt(dist2(points[i], points[j])) for j in members if j != i)[:20])
        assert record == min((i for i in members if i in pool_rows), key=mean_nn)


def test_typiclust_past_its_cluster_cap_goes_round_the_clusters():
    points = blobs(3, [30, 30, 30, 30])
    cluster_of = np.repeat(np.arange(4), 30)
    picked = run(TypiClust(max_clusters=4), np.arange(120), np.zeros((120, 1), np.float32), 8, embeddings=points)
    assert sorted(cluster_of[picked[:4]].tolist()) == [0, 1, 2, 3]  # one in each before a second in any
    assert np.bincount(cluster_of[picked]).tolist() == [2, 2, 2, 2]


def test_typiclust_subsample_keeps_the_pool_bounded():
    points = blobs(2, [300, 300, 300])
    lab = Labeled(indices=np.arange(600, 900), values=np.zeros((300, 1), np.float32), embeddings=points[600:])
    picked = run(TypiClust(max_rows=100), np.arange(600), np.zeros((600, 1), np.float32), 5, embeddings=points[:600], labeled=lab)
    assert len(set(picked)) == 5 and all(0 <= i < 600 for i in picked)


# ----------------------------------------------------------------------
# bald, mean_entropy
# ----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "multilabel"])
@pytest.mark.parametrize("seed", range(3))
def test_bald_and_mean_entropy_match_the_reference(task, seed):
    rng = np.random.default_rng(seed)
    samples, classes = 5, 4
    values = (rng.standard_normal((30, samples * classes)) * 3).astype(np.float32)
    values[3] = np.tile(values[3, :classes], samples)  # passes that agree: BALD 0
    indices = np.arange(100, 130, dtype=np.int64)
    for strategy, which in ((BALD(), 0), (MeanEntropy(), 1)):
        got = run(strategy, indices, values, 7, task=task, mc_samples=samples, cuts=[1, 11])
        assert got == indices[ref_mc_top_k(values, samples, task, 7, which)].tolist()


def test_bald_prefers_disagreeing_passes_to_agreeing_doubt():
    doubtful = np.tile(np.array([0, 0], np.float32), 4)  # every pass says 50/50: total doubt, no disagreement
    split = np.array([5, -5, -5, 5, 5, -5, -5, 5], np.float32)  # sure passes that disagree
    values = np.stack([doubtful, split])
    assert run(BALD(), np.array([0, 1]), values, 1, mc_samples=4) == [1]
    assert run(MeanEntropy(), np.array([0, 1]), values, 1, mc_samples=4) == [0]


@pytest.mark.parametrize("task", ["classification", "multilabel"])
def test_mc_scores_at_extreme_logits_match_the_reference_without_warnings(task):
    values = (np.random.default_rng(1).standard_normal((12, 2 * 3)) * 80).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow would print in a user's loop
        for bald, which in ((True, 0), (False, 1)):
            expected = [ref_mc(row, 2, task)[which] for row in values]
            np.testing.assert_allclose(mc_scores(values, 2, task, bald=bald), expected, atol=1e-5)


def test_mc_strategies_need_mc_samples():
    for strategy in (BALD(), MeanEntropy()):
        with pytest.raises(ValidationError, match=r"needs MC samples: the model's model_info must declare \"mc_samples\": T"):
            run(strategy, np.arange(3), np.zeros((3, 4), np.float32), 1)
        with pytest.raises(ValidationError, match="outputs have 10 values per record, expected 3 x 4"):
            run(strategy, np.arange(3), np.zeros((3, 10), np.float32), 1, mc_samples=3, num_classes=4)


# ----------------------------------------------------------------------
# Shared behaviour
# ----------------------------------------------------------------------

FEATURE = [Coreset(), Badge(), TypiClust()]
ALL = [*FEATURE, BALD(), MeanEntropy()]


def inputs_for(strategy, emb, lab, samples=None):
    names = strategy.select.__code__.co_varnames
    given = {}
    if "embeddings" in names:
        given["embeddings"] = emb
    if "labeled" in names:
        given["labeled"] = lab
    if "mc_samples" in names:
        given["mc_samples"] = samples
    return given


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
@pytest.mark.parametrize("cuts", [[1], [13, 14, 29], list(range(1, 40, 3))])
def test_chunking_does_not_change_the_picks(strategy, cuts):
    indices, outputs, emb, lab = data(11, classes=6)
    kw = inputs_for(strategy, emb, lab, samples=2)  # 6 = 2 passes x 3 classes for the mc strategies
    whole = run(strategy, indices, outputs, 9, seed=3, **kw)
    assert run(strategy, indices, outputs, 9, seed=3, cuts=cuts, **kw) == whole
    assert len(set(whole)) == 9 and set(whole) <= set(indices.tolist())


@pytest.mark.parametrize("strategy", FEATURE, ids=lambda s: s.name)
def test_nan_or_inf_embeddings_are_an_error_naming_how_many(strategy):
    indices, outputs, emb, lab = data(4)
    emb[[2, 17]] = np.nan
    emb[30, 1] = np.inf
    with pytest.raises(ValidationError, match=f"{strategy.name}: 3 of 40 pool records have NaN or inf in their embedding rows"):
        run(strategy, indices, outputs, 3, cuts=[10, 20], **inputs_for(strategy, emb, lab))


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_nan_or_inf_outputs_used_are_an_error_naming_how_many(strategy):
    indices, outputs, _, _ = data(4, classes=6)
    outputs[[5, 6]] = np.nan
    with pytest.raises(ValidationError, match=f"{strategy.name}: 2 of 40 pool records have NaN or inf in their output rows"):
        run(strategy, indices, outputs, 3, **inputs_for(strategy, None, None, samples=2))


@pytest.mark.parametrize("strategy", [Coreset(), TypiClust()], ids=lambda s: s.name)
def test_nan_labeled_embeddings_are_an_error(strategy):
    indices, outputs, emb, lab = data(4)
    lab.embeddings[0, 0] = np.nan
    with pytest.raises(ValidationError, match=f"{strategy.name}: 1 of 6 labeled records have NaN or inf"):
        run(strategy, indices, outputs, 3, embeddings=emb, labeled=lab)


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_k_larger_than_the_pool_is_refused(strategy):
    indices, outputs, emb, lab = data(5, classes=6)
    kw = inputs_for(strategy, emb, lab, samples=2)
    with pytest.raises(ValidationError, match="cannot select 41 records from a pool of 40 unlabeled records"):
        run(strategy, indices, outputs, 41, cuts=[20], **kw)
    assert sorted(run(strategy, indices, outputs, 40, **kw)) == indices.tolist()


@pytest.mark.parametrize(
    "strategy, task, message",
    [
        (Badge(), "multilabel", "strategy 'badge' needs task 'classification' (one logit per class), not 'multilabel'; use 'coreset'"),
        (BALD(), "regression", "strategy 'bald' supports tasks classification and multilabel, not 'regression'"),
        (MeanEntropy(), "object_detection", "strategy 'mean_entropy' supports tasks classification and multilabel, not 'object_detection'"),
    ],
)
def test_tasks_a_strategy_cannot_serve_are_refused(strategy, task, message):
    with pytest.raises(ValidationError) as caught:
        run(strategy, np.arange(4), np.zeros((4, 4), np.float32), 1, task=task, num_classes=2, **inputs_for(strategy, None, None, 2))
    assert str(caught.value).startswith(message)


def test_coreset_and_typiclust_serve_any_task_in_output_space():
    indices, outputs, _, _ = data(6)
    for task in ("multilabel", "regression", "object_detection"):
        for strategy in (Coreset(), TypiClust()):
            assert len(set(run(strategy, indices, outputs, 4, task=task))) == 4


# ----------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------


def test_modules_are_entry_points():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["alectio.plugins"]
    for name, module in MODULES.items():
        assert declared.get(name) == module


@pytest.fixture
def registry():
    plugins.reset_plugins()
    reg = plugins.load_plugins()
    for name, module in MODULES.items():
        if reg.pm.get_plugin(name) is None:
            assert plugins.register_plugin(reg, name, lambda m=module: importlib.import_module(m))
    yield reg
    plugins.reset_plugins()


def test_strategies_are_usable_by_name_with_their_inputs(registry):
    found = plugins.get_strategies()
    assert {"coreset", "badge", "typiclust", "bald", "mean_entropy"} <= set(found)
    indices, outputs, emb, lab = data(8, classes=6)
    for name in ("coreset", "badge", "typiclust"):
        picked = select(name, outputs, 5, indices=indices, seed=9, embeddings=emb, labeled=lab).tolist()
        given = inputs_for(found[name], emb, lab)
        assert picked == run(found[name], indices, outputs, 5, seed=9, **given)
    for name in ("bald", "mean_entropy"):
        picked = select(name, outputs, 5, indices=indices, mc_samples=2).tolist()
        assert picked == run(found[name], indices, outputs, 5, mc_samples=2)
