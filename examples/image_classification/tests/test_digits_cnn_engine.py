"""The installed package, found through its entry point, driven by alectio's engine.

Needs ``alectio`` and this package installed (``pip install -e``).
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

import alectio_digits_cnn.hooks as hooks  # noqa: E402

plugins = pytest.importorskip("alectio_core.plugins")
from alectio_core.engine import Engine  # noqa: E402
from alectio_core.storage import open_storage  # noqa: E402

MODEL = "digits_cnn"


def test_entry_point_is_installed_and_discovered():
    (entry,) = [ep for ep in metadata.entry_points(group="alectio.models") if ep.name == MODEL]
    assert entry.value == "alectio_digits_cnn.hooks"
    plugins.reset_plugins()
    model = plugins.get_model(MODEL)
    assert model.module is hooks
    assert model.distribution == "alectio-digits-cnn"
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
        MODEL, strategy="random", batch_size=100, initial=200, loops=2, seed=0
    )
    assert experiment["task"] == "classification" and experiment["pool_size"] == 1437
    eid = experiment["id"]

    state0 = engine.run_loop(eid, 0)
    assert state0["status"] == "done"
    assert state0["metrics"]["accuracy"] > 0.8, state0["metrics"]
    labeled0 = engine.labeled(eid, 0)
    indices, rows = engine.outputs(eid, 0)
    assert np.array_equal(np.sort(indices), np.setdiff1d(np.arange(1437), labeled0))
    assert rows.shape == (1437 - 200, 10) and np.isfinite(rows).all()
    assert built_from[0] is None  # loop 0 starts from scratch

    built_from.clear()
    state1 = engine.run_loop(eid, 1)
    assert state1["status"] == "done" and state1["labeled"] == 300
    indices, _ = engine.outputs(eid, 1)
    assert np.array_equal(np.sort(indices), np.setdiff1d(np.arange(1437), engine.labeled(eid, 1)))
    # train (first build) resumed from loop 0's stored checkpoint
    resumed, loop0_ckpt = built_from[0], engine.storage.fetch_checkpoint(eid, 0)
    assert resumed is not None and loop0_ckpt is not None
    a = torch.load(resumed, weights_only=True)
    b = torch.load(loop0_ckpt, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_labels_mode_trains_on_the_labels_people_send(engine):
    """An experiment whose labels come from people: loop 0 waits for them,
    then the CNN learns what they said (here, every digit called "3")."""
    from alectio_core.errors import LabelsMissing

    plugins.reset_plugins()
    eid = engine.create_experiment(MODEL, labels="alectio", strategy="margin", initial=100, batch_size=50, loops=2,
                                   config={"epochs": 10})["id"]
    with pytest.raises(LabelsMissing):
        engine.run_loop(eid, 0)
    rows = engine.selection(eid, 0)
    summary = engine.add_labels(eid, {r["index"]: "3" for r in rows}, source="test")
    assert summary == {"stored": 100, "skipped": 0, "loop": 0, "missing": 0}
    state = engine.run_loop(eid, 0)
    assert state["status"] == "done"
    predictions = np.asarray(engine.results(eid, 0)["predictions"])
    assert np.mean(predictions == 3) > 0.9  # it calls (nearly) every test image a 3
    assert state["metrics"]["accuracy"] < 0.2, state["metrics"]


def alectio(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alectio_core", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_misspelled_setting_is_one_error_before_any_loop(tmp_path):
    (tmp_path / "config.yaml").write_text("models:\n  digits_cnn:\n    epocs: 3\n")
    result = alectio("run", MODEL, "--loops", "2", "--storage", "a.db", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: config.yaml: unknown key 'models.digits_cnn.epocs' (did you mean 'epochs'?); model 'digits_cnn' "
        "has the settings: batch_size, device, epochs, eval_batch_size, lr, mc_samples, seed, weight_decay, width"
    ]


def test_a_run_with_good_settings_warns_about_nothing(tmp_path):
    (tmp_path / "config.yaml").write_text("models:\n  digits_cnn:\n    epochs: 2\n    device: cpu\n")
    result = alectio("run", MODEL, "--loops", "2", "--initial", "50", "--batch", "50", "--storage", "a.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("experiment "), lines  # no warnings
