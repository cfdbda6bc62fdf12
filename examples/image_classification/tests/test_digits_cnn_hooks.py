"""The hooks of ``digits_cnn`` called directly, as alectio's engine calls them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_digits_cnn import hooks  # noqa: E402

FAST = {"epochs": 8}


class FakeWriter:
    """Collects what ``infer`` streams, like alectio's OutputWriter."""

    def __init__(self):
        self.rows: dict[int, np.ndarray] = {}
        self.calls: list[str] = []

    def add(self, index, row):
        self.calls.append("add")
        assert int(index) not in self.rows, f"index {index} written twice"
        self.rows[int(index)] = np.asarray(row)

    def extend(self, indices, rows):
        self.calls.append("extend")
        rows = np.asarray(rows)
        assert rows.ndim == 2 and len(rows) == len(indices)
        for index, row in zip(indices, rows):
            self.add(index, row)


def split(n_labeled=300, seed=0):
    pool_size = len(hooks.assign_index())
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(pool_size, n_labeled, replace=False))
    return labeled.tolist(), np.setdiff1d(np.arange(pool_size), labeled).tolist()


@pytest.fixture(scope="module")
def loop0(tmp_path_factory):
    """One trained checkpoint (default settings) shared by the read-only tests."""
    labeled, unlabeled = split()
    ckpt = str(tmp_path_factory.mktemp("digits") / "loop0.pt")
    result = hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, loop=0, config={})
    return {"labeled": labeled, "unlabeled": unlabeled, "ckpt": ckpt, "result": result}


def test_train_writes_checkpoint_and_reports_labels(loop0):
    state = torch.load(loop0["ckpt"], weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    labels = loop0["result"]["labels"]
    assert len(labels) == len(loop0["labeled"])
    assert set(labels) <= set(range(10)) and all(type(x) is int for x in labels)


def test_test_returns_class_ids_and_learns(loop0):
    result = hooks.test(ckpt_file=loop0["ckpt"], config={})
    predictions, labels = result["predictions"], result["labels"]
    assert len(predictions) == len(labels) == 360
    assert all(type(p) is int and 0 <= p < 10 for p in predictions)
    accuracy = np.mean(np.array(predictions) == np.array(labels))
    assert accuracy > 0.85, accuracy  # chance is 0.10; 300 labels give about 0.96


def test_infer_streams_one_finite_row_per_unlabeled_index(loop0):
    writer = FakeWriter()
    out = hooks.infer(unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={}, writer=writer)
    assert out is None
    assert "extend" in writer.calls
    assert sorted(writer.rows) == loop0["unlabeled"]
    rows = np.stack(list(writer.rows.values()))
    assert rows.shape == (len(loop0["unlabeled"]), 10)
    assert np.isfinite(rows).all()


def test_resume_loads_previous_checkpoint(loop0, tmp_path):
    # No epochs: the resumed model is exactly the checkpoint it resumed from.
    ckpt = str(tmp_path / "loop1.pt")
    hooks.train(
        labeled=loop0["labeled"], resume_from=loop0["ckpt"], ckpt_file=ckpt, loop=1,
        config={"epochs": 0},
    )
    before = torch.load(loop0["ckpt"], weights_only=True)
    after = torch.load(ckpt, weights_only=True)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # One epoch from the checkpoint beats one epoch from scratch.
    labeled, _ = split(100, seed=1)
    accuracy = {}
    for name, resume in (("scratch", None), ("resumed", loop0["ckpt"])):
        path = str(tmp_path / f"{name}.pt")
        hooks.train(labeled=labeled, resume_from=resume, ckpt_file=path, loop=1, config={"epochs": 1})
        result = hooks.test(ckpt_file=path, config={})
        accuracy[name] = np.mean(np.array(result["predictions"]) == np.array(result["labels"]))
    assert accuracy["resumed"] > accuracy["scratch"] + 0.3, accuracy


def test_training_is_deterministic_on_cpu(tmp_path):
    labeled, _ = split(64)
    states = []
    for name in ("a", "b"):
        path = str(tmp_path / f"{name}.pt")
        hooks.train(labeled=labeled, resume_from=None, ckpt_file=path, loop=0, config=FAST)
        states.append(torch.load(path, weights_only=True))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_assign_index_names_every_pool_record_once():
    refs = hooks.assign_index()
    assert len(refs) == 1437
    assert len(set(refs)) == len(refs)
    assert all(type(r) is int and 0 <= r < 1797 for r in refs)


def test_model_info_declares_the_settings():
    assert hooks.model_info() == {
        "task": "classification",
        "labels": [str(d) for d in range(10)],
        "settings": hooks.DEFAULTS,
    }
