"""The installed package, found through its entry point, driven by alectio's engine.

Needs ``alectio`` and this package installed (``pip install -e``).
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

import alectio_shapes_detector.hooks as hooks  # noqa: E402

plugins = pytest.importorskip("alectio_core.plugins")
from alectio_core.engine import Engine  # noqa: E402
from alectio_core.storage import open_storage  # noqa: E402

MODEL = "shapes_detector"
POOL = 600
# Short training: this checks the wiring, test_shapes_detector_hooks.py the quality.
CONFIG = {"pool_size": POOL, "test_size": 100, "min_steps": 100, "max_steps": 100}


def test_entry_point_is_installed_and_discovered():
    (entry,) = [ep for ep in metadata.entry_points(group="alectio.models") if ep.name == MODEL]
    assert entry.value == "alectio_shapes_detector.hooks"
    plugins.reset_plugins()
    model = plugins.get_model(MODEL)
    assert model.module is hooks
    assert model.distribution == "alectio-shapes-detector"
    assert set(model.hooks) == {"train", "test", "infer", "assign_index", "model_info"}


@pytest.fixture
def engine(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    yield Engine(storage)
    storage.close()


def test_two_loops_through_the_engine_resume_from_the_first_checkpoint(engine, monkeypatch):
    plugins.reset_plugins()
    built_from = []
    original_build = hooks._build

    def spy_build(cfg, weights, device):
        built_from.append(weights)
        return original_build(cfg, weights, device)

    monkeypatch.setattr(hooks, "_build", spy_build)

    experiment = engine.create_experiment(
        MODEL, strategy="entropy", batch_size=100, initial=200, loops=2, seed=0, config=CONFIG
    )
    assert experiment["task"] == "object_detection"
    assert experiment["labels"] == ["square", "disc", "triangle"] and experiment["pool_size"] == POOL
    eid = experiment["id"]

    state0 = engine.run_loop(eid, 0)
    assert state0["status"] == "done"
    assert state0["metrics"]["mAP_50"] > 0.05, state0["metrics"]
    indices, rows = engine.outputs(eid, 0)
    assert np.array_equal(np.sort(indices), np.setdiff1d(np.arange(POOL), engine.labeled(eid, 0)))
    assert rows.shape == (POOL - 200, 8 * 3) and np.isfinite(rows).all()
    assert built_from[0] is None  # loop 0 starts from scratch

    built_from.clear()
    state1 = engine.run_loop(eid, 1)
    assert state1["status"] == "done" and state1["labeled"] == 300
    indices, _ = engine.outputs(eid, 1)
    assert np.array_equal(np.sort(indices), np.setdiff1d(np.arange(POOL), engine.labeled(eid, 1)))
    resumed, loop0_ckpt = built_from[0], engine.storage.fetch_checkpoint(eid, 0)
    assert resumed is not None and loop0_ckpt is not None
    a = torch.load(resumed, weights_only=True)
    b = torch.load(loop0_ckpt, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)
