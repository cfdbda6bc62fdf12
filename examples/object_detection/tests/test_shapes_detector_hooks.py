"""What ``shapes_detector`` does beyond alectio's model contract
(``test_shapes_detector_contract.py``): its data, it learns, it resumes, what its rows mean."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_shapes_detector import data, hooks  # noqa: E402
from alectio_shapes_detector.evaluate import map50  # noqa: E402
from alectio_shapes_detector.model import peak_logits  # noqa: E402
from alectio_core.testing import run_infer  # noqa: E402

# A smaller pool and test split than the defaults keep the suite quick.
CONFIG = {"pool_size": 600, "test_size": 120}
NUM_CLASSES, TOP_K = 3, 8


def split(n_labeled=300, seed=0, pool=CONFIG["pool_size"]):
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(pool, n_labeled, replace=False))
    return labeled.tolist(), np.setdiff1d(np.arange(pool), labeled).tolist()


@pytest.fixture(scope="module")
def loop0(tmp_path_factory):
    """One trained checkpoint shared by the read-only tests (250 of the default 400 steps)."""
    labeled, unlabeled = split()
    ckpt = str(tmp_path_factory.mktemp("shapes") / "loop0.pt")
    config = {**CONFIG, "min_steps": 250, "max_steps": 250}
    result = hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, loop=0, config=config)
    return {"labeled": labeled, "unlabeled": unlabeled, "ckpt": ckpt, "result": result}


def test_dataset_is_seeded_and_well_formed():
    a, b = data.make_split("pool", 50, 0), data.make_split.__wrapped__("pool", 50, 0)
    assert np.array_equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not np.array_equal(a.images, data.make_split("test", 50, 0).images)
    for boxes, objects in zip(a.boxes, a.objects):
        assert 1 <= len(boxes) <= 3 and len(boxes) == len(objects)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= data.IMAGE_SIZE).all()
        sides = boxes[:, 2:] - boxes[:, :2]
        assert (sides >= data.MIN_SIZE).all() and (sides <= data.MAX_SIZE).all()
        assert set(objects.tolist()) <= {0, 1, 2}


def test_train_writes_checkpoint_and_reports_one_label_per_object(loop0):
    state = torch.load(loop0["ckpt"], weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    pool = hooks.pool(hooks.settings(CONFIG))
    expected = [int(c) for i in loop0["labeled"] for c in pool.objects[i]]
    assert loop0["result"]["labels"] == expected


def test_test_returns_boxes_per_image_and_learns(loop0):
    result = hooks.test(ckpt_file=loop0["ckpt"], config=CONFIG)
    predictions, labels = result["predictions"], result["labels"]
    assert len(predictions) == len(labels) == CONFIG["test_size"]
    for pred, truth in zip(predictions, labels):
        assert set(pred) == {"boxes", "objects", "scores"} and set(truth) == {"boxes", "objects"}
        assert len(pred["boxes"]) == len(pred["objects"]) == len(pred["scores"]) <= TOP_K
        assert all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in pred["boxes"])
        assert all(type(c) is int and 0 <= c < NUM_CLASSES for c in pred["objects"])
        assert all(0.0 <= s <= 1.0 for s in pred["scores"])
        assert len(truth["boxes"]) == len(truth["objects"]) >= 1
    score = map50(predictions, labels, NUM_CLASSES)
    assert score > 0.6, score  # about 0.85 here; 0.9 with the default 400 steps


def test_infer_streams_top_k_class_logits_per_unlabeled_index(loop0):
    indices, rows = run_infer("shapes_detector", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config=CONFIG)
    assert rows.shape == (len(loop0["unlabeled"]), TOP_K * NUM_CLASSES)
    # What the query strategies do with a row: (K, C) then a sigmoid per class.
    probs = 1 / (1 + np.exp(-rows.reshape(-1, TOP_K, NUM_CLASSES)))
    best = probs.max(axis=2)
    assert (np.diff(best, axis=1) <= 1e-6).all()  # peaks come strongest first
    assert (best[:, 0] > 0.5).mean() > 0.9  # nearly every image has a confident object


def test_infer_writes_pooled_backbone_features_as_embeddings(loop0):
    indices, _, features = run_infer(
        "shapes_detector", unlabeled=loop0["unlabeled"], ckpt_file=loop0["ckpt"], config=CONFIG, embeddings=True
    )
    width = 2 * hooks.DEFAULTS["width"]  # the backbone's channels
    assert features.shape == (len(indices), width) and features.dtype == np.float32
    assert features.std(axis=0).max() > 0  # images differ


def test_peak_logits_reads_the_logits_at_the_strongest_peaks():
    heat = torch.full((1, NUM_CLASSES, 12, 12), -9.0)
    heat[0, 2, 3, 4] = 5.0  # a triangle at cell (3, 4)
    heat[0, 0, 3, 4] = 1.0
    heat[0, 1, 9, 9] = 2.0  # a disc at cell (9, 9)
    rows = peak_logits(heat, 2).reshape(2, NUM_CLASSES)
    assert rows.tolist() == [[1.0, -9.0, 5.0], [-9.0, 2.0, -9.0]]


def test_resume_loads_previous_checkpoint(loop0, tmp_path):
    # No steps: the resumed model is exactly the checkpoint it resumed from.
    ckpt = str(tmp_path / "loop1.pt")
    hooks.train(
        labeled=loop0["labeled"], resume_from=loop0["ckpt"], ckpt_file=ckpt, loop=1,
        config={**CONFIG, "epochs": 0},
    )
    before = torch.load(loop0["ckpt"], weights_only=True)
    after = torch.load(ckpt, weights_only=True)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # A few steps from the checkpoint keep what loop 0 learnt; from scratch they do not.
    labeled, _ = split(64, seed=1)
    short = {**CONFIG, "min_steps": 20, "max_steps": 20}
    scores = {}
    for name, resume in (("scratch", None), ("resumed", loop0["ckpt"])):
        path = str(tmp_path / f"{name}.pt")
        hooks.train(labeled=labeled, resume_from=resume, ckpt_file=path, loop=1, config=short)
        result = hooks.test(ckpt_file=path, config=CONFIG)
        scores[name] = map50(result["predictions"], result["labels"], NUM_CLASSES)
    assert scores["resumed"] > scores["scratch"] + 0.3, scores


def test_assign_index_and_model_info():
    refs = hooks.assign_index(config=CONFIG)
    assert len(refs) == CONFIG["pool_size"] == len(set(refs))
    assert refs[7] == "shapes/pool/0/7"
    assert hooks.model_info() == {"task": "object_detection", "labels": ["square", "disc", "triangle"]}
