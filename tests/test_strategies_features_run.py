"""coreset, badge, typiclust, bald and mean_entropy through a real loop: a
model that writes embeddings (and MC samples) into a real SQLite file,
driven by ``alectio run`` and by the HTTP API, the strategies found by name
through their entry points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from server_support import make_app
from test_strategies_features import ref_coreset

from alectio_core import open_storage
from alectio_core.cli import cli

# Four groups of 15 records far apart in embedding space, each a 5 x 3 grid
# whose centre is record 7 of the group; the model's two MC passes disagree
# on records 3, 10, 17, ... and agree everywhere else.
GROUP, POOL, T = 15, 60, 2
CORNERS = [(0.0, 0.0), (30.0, 0.0), (0.0, 30.0), (30.0, 30.0)]


def group(i: int) -> int:
    return i // GROUP


def embedding(i: int) -> list[float]:
    x, y = CORNERS[group(i)]
    return [x + (i % GROUP) % 5 * 0.5, y + (i % GROUP) // 5 * 0.5]


def passes(i: int) -> list[float]:
    if i % 7 == 3:
        return [6.0, -6.0, 0.0, -6.0, 6.0, 0.0]
    return [2.0, 0.0, -2.0] * T


@pytest.fixture
def embedder(fake_model):
    def infer(unlabeled, writer):
        for i in unlabeled:
            writer.add(i, passes(i), embedding=embedding(i))

    fake_model(
        "embedder",
        pool=POOL,
        infer=infer,
        model_info=lambda: {"task": "classification", "labels": ["a", "b", "c"], "mc_samples": T},
    )
    return "embedder"


def test_alectio_run_with_coreset_covers_from_the_labeled_records(tmp_path, embedder):
    db = f"sqlite:///{tmp_path}/alectio.db"
    result = CliRunner().invoke(
        cli, ["run", embedder, "--strategy", "coreset", "--loops", "2", "--initial", "6", "--batch", "4", "--json", "--storage", db]
    )
    assert result.exit_code == 0, result.output
    assert [row["labeled"] for row in json.loads(result.stdout)] == [6, 10]
    storage = open_storage(db)
    try:
        [experiment] = storage.list_experiments()
        labeled = storage.get_selection(experiment["id"], 0)
        picked = storage.get_selection(experiment["id"], 1)
    finally:
        storage.close()
    pool = np.setdiff1d(np.arange(POOL), labeled)
    emb = np.array([embedding(i) for i in range(POOL)], np.float32)
    expected = pool[ref_coreset(emb[pool], emb[labeled], 4, None)]
    assert sorted(picked.tolist()) == sorted(expected.tolist())
    uncovered = {0, 1, 2, 3} - {group(i) for i in labeled}
    assert uncovered <= {group(i) for i in picked}  # every group the labeled set missed gets a pick


def test_alectio_run_with_bald_on_a_model_without_mc_samples_says_what_to_declare(tmp_path, fake_model):
    fake_model("single_pass", pool=20)
    result = CliRunner().invoke(
        cli, ["run", "single_pass", "--strategy", "bald", "--loops", "2", "--initial", "5", "--batch", "2", "--storage", f"sqlite:///{tmp_path}/a.db"]
    )
    assert result.exit_code == 1
    assert "strategy 'bald' needs MC samples: the model's model_info must declare \"mc_samples\": T" in result.output


@pytest.fixture
def api(tmp_path, embedder):
    made = make_app(tmp_path)
    yield made
    made.app.extensions["alectio"]["runner"].shutdown(timeout=5)


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("coreset", None),  # one pick in each uncovered group, checked below against the reference
        ("typiclust", [37, 52]),  # the centres of the two uncovered groups
        ("bald", [3, 10]),  # the first records whose passes disagree
        ("mean_entropy", [3, 10]),  # their mean prediction is the most uncertain too
        ("badge", None),
    ],
)
def test_the_api_runs_each_strategy_on_stored_embeddings_and_mc_samples(api, strategy, expected):
    experiment = api.create("embedder", strategy=strategy, initial=2, batch_size=2, loops=2)
    eid = experiment["id"]
    labeled = [0, 15]  # a labeller's first pick: groups 0 and 1
    assert api.start(eid, selected=labeled).status_code == 202
    state = api.wait_status(eid, 0)
    assert state["status"] == "done", state.get("error")
    picked = sorted(api.storage.get_selection(eid, 1).tolist())
    assert len(set(picked)) == 2 and not set(picked) & set(labeled)
    if strategy == "coreset":
        pool = np.setdiff1d(np.arange(POOL), labeled)
        emb = np.array([embedding(i) for i in range(POOL)], np.float32)
        assert picked == sorted(pool[ref_coreset(emb[pool], emb[labeled], 2, None)].tolist())
        assert sorted(group(i) for i in picked) == [2, 3]
    elif expected is not None:
        assert picked == expected
    assert api.start(eid).status_code == 202  # the next loop trains on them
    assert api.wait_status(eid, 1)["status"] == "done"
