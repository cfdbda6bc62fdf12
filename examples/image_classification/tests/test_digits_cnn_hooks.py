"""What ``digits_cnn`` does beyond alectio's model contract (``test_digits_cnn_contract.py``):
it learns, it resumes, its settings and pool."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_digits_cnn import hooks  # noqa: E402
from alectio_core.testing import run_infer  # noqa: E402

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
    result = hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, loop=0, config={}, labels=None)
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


def test_infer_gives_ten_logits_per_record(loop0):
    indices, rows = run_infer("digits_cnn", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={})
    assert rows.shape == (len(loop0["unlabeled"]), 10)


def test_resume_loads_previous_checkpoint(loop0, tmp_path):
    # No epochs: the resumed model is exactly the checkpoint it resumed from.
    ckpt = str(tmp_path / "loop1.pt")
    hooks.train(
        labeled=loop0["labeled"], resume_from=loop0["ckpt"], ckpt_file=ckpt, loop=1,
        config={"epochs": 0}, labels=None,
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
        hooks.train(labeled=labeled, resume_from=resume, ckpt_file=path, loop=1, config={"epochs": 1}, labels=None)
        result = hooks.test(ckpt_file=path, config={})
        accuracy[name] = np.mean(np.array(result["predictions"]) == np.array(result["labels"]))
    assert accuracy["resumed"] > accuracy["scratch"] + 0.3, accuracy


def test_train_learns_the_labels_people_gave_not_the_datasets(tmp_path):
    """Labels mode: ``labels`` (index -> class id) replaces the dataset's
    labels. Given every digit as the next one, it learns that."""
    from alectio_digits_cnn.data import load_splits

    labeled, _ = split()
    pool, _ = load_splits()
    shifted = {i: int(pool.labels[i] + 1) % 10 for i in labeled}
    ckpt = str(tmp_path / "people.pt")
    result = hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, loop=0, config={}, labels=shifted)
    assert result["labels"] == [shifted[i] for i in labeled]
    tested = hooks.test(ckpt_file=ckpt, config={})
    predictions, truth = np.array(tested["predictions"]), np.array(tested["labels"])
    assert np.mean(predictions == (truth + 1) % 10) > 0.85  # what people said
    assert np.mean(predictions == truth) < 0.05  # not the dataset's labels


def test_assign_index_names_every_pool_record_once():
    refs = hooks.assign_index()
    assert len(refs) == 1437
    assert len(set(refs)) == len(refs)
    assert all(type(r) is int and 0 <= r < 1797 for r in refs)


def test_model_info_declares_the_settings():
    assert hooks.model_info({}) == {
        "task": "classification",
        "labels": [str(d) for d in range(10)],
        "settings": hooks.DEFAULTS,
    }


def test_infer_writes_the_penultimate_features_as_embeddings(loop0):
    from alectio_digits_cnn.model import DigitsCNN

    indices, rows, features = run_infer(
        "digits_cnn", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={}, embeddings=True
    )
    assert features.shape == (len(indices), 128) and features.dtype == np.float32
    assert (features >= 0).all()  # after the hidden layer's ReLU
    model = DigitsCNN()
    model.load_state_dict(torch.load(loop0["ckpt"], weights_only=True))
    model.eval()
    with torch.no_grad():  # the logits are the last layer applied to the embedding
        again = model.head[4](torch.from_numpy(features[:5])).numpy()
    np.testing.assert_allclose(again, rows[:5], rtol=1e-4, atol=1e-4)


def test_mc_samples_writes_that_many_dropout_passes_per_record(loop0):
    info = hooks.model_info({"mc_samples": 5})
    assert info["mc_samples"] == 5 and "mc_samples" not in hooks.model_info({})
    config = {"mc_samples": 5}
    _, plain = run_infer("digits_cnn", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={})
    indices, rows, features = run_infer(
        "digits_cnn", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config=config, mc_samples=5, embeddings=True
    )
    passes = rows.reshape(len(indices), 5, 10)
    assert not np.allclose(passes[:, 0], passes[:, 1])  # dropout is on
    assert np.mean(passes.mean(axis=1).argmax(axis=1) == plain.argmax(axis=1)) > 0.9  # around the plain logits
    _, again = run_infer("digits_cnn", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config=config)
    np.testing.assert_array_equal(rows, again)  # seeded: the same passes each time
    with pytest.raises(ValueError, match="mc_samples must be an integer >= 0"):
        hooks.model_info({"mc_samples": -1})
