"""Built-in metrics checked against their reference libraries (scikit-learn,
the COCO evaluator run directly) on random and hand-computable inputs."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from alectio_core import plugins
from alectio_core.errors import ContributionError, UnknownTaskError
from alectio_core.metrics import compute_metrics
from alectio_plugins import metrics_classification, metrics_detection, metrics_regression, metrics_segmentation
from alectio_plugins.metrics_classification import classification_metrics, multilabel_metrics
from alectio_plugins.metrics_detection import detection_metrics
from alectio_plugins.metrics_regression import regression_metrics
from alectio_plugins.metrics_segmentation import segmentation_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

BUILTINS = {
    "metrics_classification": metrics_classification,
    "metrics_detection": metrics_detection,
    "metrics_segmentation": metrics_segmentation,
    "metrics_regression": metrics_regression,
}
TASKS = {"classification", "multilabel", "object_detection", "segmentation", "regression"}


def assert_plain_json(value):
    """Only what json.dumps writes without help: no numpy, no NaN."""
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert value is None or type(value) in (int, float, str, bool), type(value)


def approx_dict(names, values):
    return {str(n): pytest.approx(float(v)) for n, v in zip(names, values)}


# ----------------------------------------------------------------------
# Registration and compute_metrics
# ----------------------------------------------------------------------


@pytest.fixture
def registry():
    """The real plugin registry, with the built-in metrics plugins loaded
    through the core even when the distribution is not pip-installed."""
    plugins.reset_plugins()
    registry = plugins.load_plugins()
    loaded = {p["name"] for p in registry.plugins}
    for name, module in BUILTINS.items():
        if name not in loaded:
            plugins.register_plugin(registry, name, lambda module=module: module)
    yield registry
    plugins.reset_plugins()


def test_builtins_are_declared_as_entry_points():
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    declared = project["entry-points"]["alectio.plugins"]
    for name, module in BUILTINS.items():
        assert declared[name] == module.__name__
    deps = " ".join(project["dependencies"])
    assert "scikit-learn" in deps and "faster-coco-eval" in deps


def test_builtins_register_every_task_through_the_core(registry):
    assert not [e for e in registry.errors if e["name"] in BUILTINS]
    functions = plugins.get_metrics()
    assert TASKS <= set(functions)
    assert functions["classification"] is classification_metrics
    assert functions["object_detection"] is detection_metrics


@pytest.mark.parametrize(
    "task, predictions, labels",
    [
        ("classification", [0, 1, 1], [0, 1, 0]),
        ("multilabel", [[0], [0, 1], []], [[0], [1], [1]]),
        ("regression", [1.0, 2.0, 4.0], [1.5, 2.0, 3.0]),
        ("segmentation", [[[0, 1], [1, 1]]], [[[0, 1], [0, 1]]]),
        (
            "object_detection",
            [{"boxes": [[0, 0, 9, 9]], "objects": [0], "scores": [0.5]}],
            [{"boxes": [[0, 0, 9, 9]], "objects": [0]}],
        ),
    ],
)
def test_compute_metrics_dispatches_to_the_task_plugin(registry, task, predictions, labels):
    result = compute_metrics(task, predictions, labels, class_labels=None)
    assert result == plugins.get_metrics()[task](predictions, labels, class_labels=None)
    assert_plain_json(result)


def test_compute_metrics_unknown_task_lists_known_tasks(registry):
    with pytest.raises(UnknownTaskError) as info:
        compute_metrics("pose_estimation", [1], [1])
    for task in TASKS:
        assert task in str(info.value)


def test_compute_metrics_length_mismatch_names_both_lengths(registry):
    with pytest.raises(ValueError, match=r"3 predictions but 2 labels"):
        compute_metrics("classification", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no records"):
        compute_metrics("classification", [], [])


def test_compute_metrics_makes_a_third_party_result_json_safe(monkeypatch):
    def fake(predictions, labels, *, class_labels=None):
        return {"loss": np.float32("nan"), "n": np.int64(len(labels)), "per": {1: np.array([0.5, np.inf])}}

    monkeypatch.setattr(plugins.contributions, "get_metrics", lambda: {"regression": fake})
    assert compute_metrics("regression", [1.0], [2.0]) == {"loss": None, "n": 1, "per": {"1": [0.5, None]}}
    monkeypatch.setattr(plugins.contributions, "get_metrics", lambda: {"regression": lambda p, l, class_labels=None: [1]})
    with pytest.raises(ContributionError, match="metrics for task 'regression' failed: must return a dict, got list"):
        compute_metrics("regression", [1.0], [2.0])


# ----------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------


def check_classification(y_true, y_pred, class_labels=None):
    result = classification_metrics(list(y_pred), list(y_true), class_labels=class_labels)
    ids = list(range(len(class_labels))) if class_labels else sorted(set(y_true) | set(y_pred))
    names = [str(n) for n in class_labels] if class_labels else [str(i) for i in ids]
    # scikit-learn's default: macro over the classes present in truth or predictions;
    # a class in neither is reported as None.
    present = sorted(set(y_true) | set(y_pred))
    kw = dict(labels=present, zero_division=0)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", **kw))
    assert result["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", **kw))
    assert result["f1_score"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", **kw))
    if not class_labels:
        assert result["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", zero_division=0))
    by_id = dict(zip(ids, names))
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=None, **kw)
    for key, values in (("precision_per_class", p), ("recall_per_class", r), ("f1_per_class", f)):
        expected = {name: None for name in names} | approx_dict([by_id[i] for i in present], values)
        assert result[key] == expected
    recall = [dict(zip(present, r)).get(i, 0.0) for i in ids]
    with warnings.catch_warnings():  # sklearn warns about a 1x1 matrix even with labels given
        warnings.simplefilter("ignore", UserWarning)
        assert result["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=ids).tolist()
    assert result["class_names"] == names
    support = {i: list(y_true).count(i) for i in ids}
    for name, i, r in zip(names, ids, recall):
        if support[i]:
            assert result["acc_per_class"][name] == pytest.approx(r)
            assert result["label_disagreement"][name] == pytest.approx(1 - r)
        else:
            assert result["acc_per_class"][name] is None and result["label_disagreement"][name] is None
    assert_plain_json(result)
    return result


@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    y_true = rng.integers(0, k, 200).tolist()
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200)).tolist()
    check_classification(y_true, y_pred)
    check_classification(y_true, y_pred, class_labels=[f"c{i}" for i in range(k + 2)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_classification_matches_sklearn_property(pairs):
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    check_classification(y_true, y_pred)


def test_classification_class_never_predicted():
    result = check_classification([0, 1, 2, 2], [0, 1, 1, 1], class_labels=["cat", "dog", "bird"])
    assert result["precision_per_class"]["bird"] == 0.0
    assert result["recall_per_class"]["bird"] == 0.0
    assert result["label_disagreement"] == {"cat": 0.0, "dog": 0.0, "bird": 1.0}
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 2, 0]]


def test_classification_all_correct_and_all_wrong():
    right = check_classification([0, 1, 2, 1], [0, 1, 2, 1])
    assert right["accuracy"] == right["precision"] == right["recall"] == right["f1_score"] == 1.0
    assert set(right["label_disagreement"].values()) == {0.0}
    wrong = check_classification([0, 1, 2, 1], [1, 2, 0, 0])
    assert wrong["accuracy"] == wrong["f1_score"] == 0.0
    assert set(wrong["label_disagreement"].values()) == {1.0}


def test_classification_single_class_and_bad_ids():
    assert check_classification([3, 3], [3, 3])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="class id 5 is outside the 2 class labels"):
        classification_metrics([5], [0], class_labels=["a", "b"])
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics([0.5], [0])
    with pytest.raises(ValueError, match="flat list"):
        classification_metrics([[0, 1]], [[0, 1]])


# ----------------------------------------------------------------------
# multilabel
# ----------------------------------------------------------------------


def to_ids(matrix):
    return [np.flatnonzero(row).tolist() for row in matrix]


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    true = (rng.random((120, k)) < 0.35).astype(int)
    pred = np.where(rng.random((120, k)) < 0.75, true, 1 - true)
    pred[:, 0] = 0  # a class never predicted
    result = multilabel_metrics(to_ids(pred), to_ids(true), class_labels=[f"c{i}" for i in range(k)])
    assert result["subset_accuracy"] == pytest.approx(skm.accuracy_score(true, pred))
    assert result["hamming_loss"] == pytest.approx(skm.hamming_loss(true, pred))
    for average in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(true, pred, average=average, zero_division=0)
        assert result[f"precision_{average}"] == pytest.approx(p)
        assert result[f"recall_{average}"] == pytest.approx(r)
        assert result[f"f1_{average}"] == pytest.approx(f)
    f1 = skm.f1_score(true, pred, average=None, zero_division=0)
    assert result["f1_per_class"] == approx_dict([f"c{i}" for i in range(k)], f1)
    assert result["precision_per_class"]["c0"] == 0.0
    assert_plain_json(result)


def test_multilabel_without_class_labels_uses_the_ids_seen():
    result = multilabel_metrics([[2], [7, 2], []], [[2], [7], [7]])
    true, pred = np.array([[1, 0], [0, 1], [0, 1]]), np.array([[1, 0], [1, 1], [0, 0]])
    assert set(result["f1_per_class"]) == {"2", "7"}
    assert result["hamming_loss"] == pytest.approx(skm.hamming_loss(true, pred))
    assert result["f1_macro"] == pytest.approx(skm.f1_score(true, pred, average="macro"))


def test_multilabel_single_class_is_not_read_as_binary():
    result = multilabel_metrics([[0], [], [0], [0]], [[0], [0], [], []])
    true, pred = [1, 1, 0, 0], [1, 0, 1, 1]
    precision, recall = skm.precision_score(true, pred), skm.recall_score(true, pred)  # 1/3, 1/2
    assert result["precision_macro"] == result["precision_micro"] == pytest.approx(precision)
    assert result["recall_macro"] == result["recall_micro"] == pytest.approx(recall)
    assert result["precision_per_class"] == {"0": pytest.approx(precision)}
    assert result["subset_accuracy"] == pytest.approx(0.25)


def test_multilabel_all_correct_all_wrong_and_no_classes():
    right = multilabel_metrics([[0, 1], [1]], [[0, 1], [1]])
    assert right["subset_accuracy"] == right["f1_macro"] == 1.0 and right["hamming_loss"] == 0.0
    wrong = multilabel_metrics([[1], [0]], [[0], [1]])
    assert wrong["subset_accuracy"] == wrong["f1_micro"] == 0.0 and wrong["hamming_loss"] == 1.0
    with pytest.raises(ValueError, match="at least one class"):
        multilabel_metrics([[], []], [[], []])


# ----------------------------------------------------------------------
# One rule for macro averages, every task: scikit-learn's default, the
# classes present in truth or predictions; per-class values for every class,
# None for a class in neither.
# ----------------------------------------------------------------------


def test_classification_macro_leaves_out_a_class_in_neither_truth_nor_predictions():
    result = check_classification([0, 1, 0, 1], [0, 1, 0, 1], class_labels=["a", "b", "c"])
    assert result["accuracy"] == result["precision"] == result["recall"] == result["f1_score"] == 1.0
    assert result["f1_per_class"] == {"a": 1.0, "b": 1.0, "c": None}
    assert result["precision_per_class"]["c"] is None and result["recall_per_class"]["c"] is None
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert result["class_names"] == ["a", "b", "c"]


def test_classification_macro_counts_a_class_only_predicted_or_only_true():
    only_predicted = check_classification([0, 0, 1, 1], [0, 2, 1, 1], class_labels=["a", "b", "c", "d"])
    assert only_predicted["precision_per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0, "d": None}
    assert only_predicted["recall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    only_true = check_classification([0, 2, 1, 1], [0, 0, 1, 1], class_labels=["a", "b", "c", "d"])
    assert only_true["recall_per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0, "d": None}


def check_multilabel(true, pred, class_labels):
    result = multilabel_metrics(to_ids(pred), to_ids(true), class_labels=class_labels)
    present = np.flatnonzero(true.any(axis=0) | pred.any(axis=0)).tolist()
    names = [str(n) for n in class_labels]
    p, r, f, _ = skm.precision_recall_fscore_support(true, pred, labels=present, average="macro", zero_division=0)
    assert (result["precision_macro"], result["recall_macro"], result["f1_macro"]) == pytest.approx((p, r, f))
    per_class = skm.precision_recall_fscore_support(true, pred, labels=present, average=None, zero_division=0)
    for key, values in zip(("precision_per_class", "recall_per_class", "f1_per_class"), per_class):
        expected = {name: None for name in names} | approx_dict([names[i] for i in present], values)
        assert result[key] == expected
    micro = skm.precision_recall_fscore_support(true, pred, average="micro", zero_division=0)
    assert (result["precision_micro"], result["recall_micro"], result["f1_micro"]) == pytest.approx(micro[:3])
    assert_plain_json(result)
    return result


def test_multilabel_macro_leaves_out_a_class_in_neither_truth_nor_predictions():
    true = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]])
    result = check_multilabel(true, true.copy(), ["a", "b", "c"])
    assert result["f1_macro"] == result["precision_macro"] == result["recall_macro"] == 1.0
    assert result["f1_per_class"] == {"a": 1.0, "b": 1.0, "c": None}
    pred = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0]])  # c only predicted, b missed once
    check_multilabel(true, pred, ["a", "b", "c", "d"])


@pytest.mark.parametrize("seed", range(4))
def test_multilabel_macro_matches_sklearn_over_present_classes(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    true = (rng.random((30, k)) < 0.3).astype(int)
    pred = np.where(rng.random((30, k)) < 0.8, true, 1 - true)
    true[:, 1] = pred[:, 1] = 0  # a class in neither
    pred[:, 2] = 0  # a class never predicted
    true[:, 0] = 0  # a class never true
    check_multilabel(true, pred, [f"c{i}" for i in range(k)])


def test_segmentation_mean_leaves_out_a_class_in_neither_truth_nor_predictions():
    mask = np.array([[0, 1], [1, 0]])
    result = check_segmentation([mask], [mask], class_labels=["a", "b", "c"])
    assert result["mean_iou"] == result["mean_dice"] == 1.0
    assert result["iou_per_class"] == {"a": 1.0, "b": 1.0, "c": None}


def test_detection_map_leaves_out_a_class_without_true_boxes():
    # COCO's rule, which scikit-learn's average precision shares: AP needs a
    # true box; a class with only predictions has AP None (its boxes still
    # lower precision), a class in neither too.
    preds = [dict(label, scores=[0.9] * len(label["objects"])) for label in LABELS]
    preds[1] = {"boxes": [box(5, 5)], "objects": [2], "scores": [0.8]}  # class 2: predicted, never true
    result = detection_metrics(preds, LABELS, class_labels=["car", "person", "dog", "cat"])
    assert result["AP"] == {"car": 1.0, "person": 1.0, "dog": None, "cat": None}
    assert result["mAP"] == result["mAP_50"] == 1.0
    assert result["precision"] == pytest.approx(3 / 4)
    (m, m50, _), per_class = coco_reference(preds, LABELS, 4)
    assert (result["mAP"], result["mAP_50"]) == pytest.approx((m, m50))
    assert per_class[2:] == [None, None]


# ----------------------------------------------------------------------
# regression
# ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_regression_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=50) * 10
    y_pred = y_true + rng.normal(size=50)
    result = regression_metrics(y_pred.tolist(), y_true.tolist())
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert result["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred))
    assert result["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y_true, y_pred)))
    assert result["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    assert_plain_json(result)


@pytest.mark.parametrize("targets", [3, 1])
def test_regression_matches_sklearn_with_several_targets_and_a_constant_one(targets):
    rng = np.random.default_rng(targets)
    y_true = rng.normal(size=(40, targets))
    y_true[:, 0] = 2.0  # constant labels: r2 is 0.0 unless predicted exactly
    y_pred = y_true + rng.normal(size=(40, targets))
    result = regression_metrics(y_pred.tolist(), y_true.tolist())
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert result["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred))
    assert result["rmse"] == pytest.approx(skm.root_mean_squared_error(y_true, y_pred))
    assert result["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))


def test_regression_edge_cases():
    assert regression_metrics([1.0, 2.0], [1.0, 2.0]) == {"mae": 0.0, "mse": 0.0, "rmse": 0.0, "r2": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "R^2 not well-defined" warning either
        single = regression_metrics([3.0], [1.0])
    assert single["mse"] == 4.0 and single["rmse"] == 2.0 and single["r2"] is None
    with pytest.raises(ValueError, match="record 1"):
        regression_metrics([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="numbers"):
        regression_metrics(["a"], [1.0])


# ----------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------


def check_segmentation(preds, trues, class_labels=None):
    result = segmentation_metrics([p.tolist() for p in preds], [t.tolist() for t in trues], class_labels=class_labels)
    flat_pred = np.concatenate([p.ravel() for p in preds])
    flat_true = np.concatenate([t.ravel() for t in trues])
    ids = list(range(len(class_labels))) if class_labels else sorted(set(flat_pred) | set(flat_true))
    names = [str(n) for n in class_labels] if class_labels else [str(i) for i in ids]
    assert result["confusion_matrix"] == skm.confusion_matrix(flat_true, flat_pred, labels=ids).tolist()
    assert result["pixel_accuracy"] == pytest.approx(skm.accuracy_score(flat_true, flat_pred))
    present = [i for i in ids if i in flat_true or i in flat_pred]
    jaccard = skm.jaccard_score(flat_true, flat_pred, labels=present, average=None)
    dice = skm.f1_score(flat_true, flat_pred, labels=present, average=None)
    by_name = dict(zip(ids, names))
    assert {by_name[i]: v for i, v in zip(present, jaccard)} == pytest.approx(
        {k: v for k, v in result["iou_per_class"].items() if v is not None}
    )
    assert {by_name[i]: v for i, v in zip(present, dice)} == pytest.approx(
        {k: v for k, v in result["dice_per_class"].items() if v is not None}
    )
    assert result["mean_iou"] == pytest.approx(skm.jaccard_score(flat_true, flat_pred, labels=present, average="macro"))
    assert result["mean_dice"] == pytest.approx(np.mean(dice))
    assert_plain_json(result)
    return result


@pytest.mark.parametrize("seed", range(5))
def test_segmentation_matches_sklearn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    trues = [rng.integers(0, k, size=tuple(rng.integers(3, 20, 2))) for _ in range(4)]
    preds = [np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, k, t.shape)) for t in trues]
    check_segmentation(preds, trues)
    result = check_segmentation(preds, trues, class_labels=[f"c{i}" for i in range(k + 1)])
    assert result["iou_per_class"][f"c{k}"] is None and result["dice_per_class"][f"c{k}"] is None


def test_segmentation_sparse_ids_and_never_predicted_class():
    true = np.array([[0, 3, 3], [7, 7, 0]])
    pred = np.array([[0, 3, 0], [0, 0, 0]])
    result = check_segmentation([pred], [true])
    assert result["class_names"] == ["0", "3", "7"]
    assert result["iou_per_class"]["7"] == 0.0
    assert result["iou_per_class"]["3"] == 0.5


def test_segmentation_all_correct_all_wrong_and_bad_shapes():
    mask = np.array([[0, 1], [2, 1]])
    right = check_segmentation([mask], [mask])
    assert right["pixel_accuracy"] == right["mean_iou"] == right["mean_dice"] == 1.0
    wrong = check_segmentation([(mask + 1) % 3], [mask])
    assert wrong["pixel_accuracy"] == wrong["mean_iou"] == 0.0
    with pytest.raises(ValueError, match="record 0.*same shape"):
        segmentation_metrics([[[0, 1]]], [[[0], [1]]])
    with pytest.raises(ValueError, match="outside the 2 class labels"):
        segmentation_metrics([[[0, 2]]], [[[0, 1]]], class_labels=["a", "b"])


# ----------------------------------------------------------------------
# object detection
# ----------------------------------------------------------------------


def coco_reference(preds, labels, num_classes):
    """Run the COCO evaluator directly on hand-built COCO json: returns
    (mAP, mAP_50, mAP_75) and AP of each class evaluated on its own."""
    images = [{"id": 100 + i, "width": 640, "height": 480} for i in range(len(labels))]
    gt_anns, dt_anns = [], []
    for i, label in enumerate(labels):
        for (x1, y1, x2, y2), c in zip(label["boxes"], label["objects"]):
            gt_anns.append(
                {"id": len(gt_anns) + 1, "image_id": 100 + i, "category_id": 10 + c,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            )  # fmt: skip
    for i, pred in enumerate(preds):
        for (x1, y1, x2, y2), c, s in zip(pred["boxes"], pred["objects"], pred["scores"]):
            dt_anns.append(
                {"image_id": 100 + i, "category_id": 10 + c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    categories = [{"id": 10 + c, "name": str(c)} for c in range(num_classes)]
    gt_json = {"images": images, "annotations": gt_anns, "categories": categories}

    def run(cat_ids=None):
        gt = COCO(gt_json, print_function=lambda *a: None)
        evaluator = COCOeval_faster(gt, gt.loadRes([dict(a) for a in dt_anns]), "bbox", print_function=lambda *a: None)
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return evaluator.stats

    per_class = []
    for c in range(num_classes):
        has_truth = any(c in label["objects"] for label in labels)
        per_class.append(run([10 + c])[0] if has_truth else None)
    return run()[:3], per_class


def random_scene(rng, num_images=12, num_classes=3):
    preds, labels = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 5))  # some images have no boxes
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(10, 120, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        objects = rng.integers(0, num_classes, n)
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 6, (n, 4))
        p_boxes = boxes[keep] + jitter[keep]
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 1)
        p_objects = np.where(rng.random(n) < 0.85, objects, rng.integers(0, num_classes, n))[keep]
        m = int(rng.integers(0, 3))  # false positives
        fp_xy = rng.uniform(0, 400, (m, 2))
        p_boxes = np.vstack([p_boxes, np.hstack([fp_xy, fp_xy + rng.uniform(10, 80, (m, 2))])])
        p_objects = np.concatenate([p_objects, rng.integers(0, num_classes, m)])
        labels.append({"boxes": boxes.tolist(), "objects": objects.tolist()})
        scores = rng.random(len(p_objects)).tolist()
        preds.append({"boxes": p_boxes.tolist(), "objects": p_objects.tolist(), "scores": scores})
    return preds, labels


def greedy_reference(preds, labels):
    """Precision/recall at IoU 0.5, written out the slow way."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    tp = n_pred = n_true = 0
    for pred, label in zip(preds, labels):
        taken = set()
        order = sorted(range(len(pred["scores"])), key=lambda d: -pred["scores"][d])
        for d in order:
            best, best_iou = None, 0.5
            for g, box in enumerate(label["boxes"]):
                if g in taken or label["objects"][g] != pred["objects"][d]:
                    continue
                value = iou(pred["boxes"][d], box)
                if value >= best_iou and (best is None or value > best_iou):
                    best, best_iou = g, value
            if best is not None:
                taken.add(best)
                tp += 1
        n_pred += len(pred["objects"])
        n_true += len(label["objects"])
    return tp / n_pred if n_pred else None, tp / n_true if n_true else None


@pytest.mark.parametrize("seed", range(6))
def test_detection_matches_the_coco_evaluator_on_random_scenes(seed, capsys):
    rng = np.random.default_rng(seed)
    preds, labels = random_scene(rng)
    result = detection_metrics(preds, labels, class_labels=["car", "person", "dog"])
    (m, m50, m75), per_class = coco_reference(preds, labels, 3)
    assert result["mAP"] == pytest.approx(m)
    assert result["mAP_50"] == pytest.approx(m50)
    assert result["mAP_75"] == pytest.approx(m75)
    assert result["AP"] == pytest.approx(dict(zip(["car", "person", "dog"], per_class)))
    precision, recall = greedy_reference(preds, labels)
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix[3, 3] == 0
    assert matrix[:3].sum() == sum(len(label["objects"]) for label in labels)  # each true box once
    assert matrix[:, :3].sum() == sum(len(pred["objects"]) for pred in preds)  # each prediction once
    assert_plain_json(result)
    assert capsys.readouterr() == ("", "")  # the evaluator is silenced


def box(x, y, size=10):
    return [x, y, x + size, y + size]


LABELS = [
    {"boxes": [box(0, 0), box(50, 50)], "objects": [0, 1]},
    {"boxes": [], "objects": []},  # an image with no boxes
    {"boxes": [box(20, 20)], "objects": [1]},
]


def test_detection_perfect_predictions():
    preds = [dict(label, scores=[0.9] * len(label["objects"])) for label in LABELS]
    result = detection_metrics(preds, LABELS)
    assert result["mAP"] == result["mAP_50"] == result["mAP_75"] == 1.0
    assert result["AP"] == {"0": 1.0, "1": 1.0}
    assert result["precision"] == result["recall"] == 1.0
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert result["class_names"] == ["0", "1", "background"]


def test_detection_no_predictions_at_all():
    empty = [{"boxes": [], "objects": [], "scores": []} for _ in LABELS]
    result = detection_metrics(empty, LABELS)
    assert result["mAP"] == result["mAP_50"] == 0.0
    assert result["recall"] == 0.0 and result["precision"] is None
    assert result["confusion_matrix"] == [[0, 0, 1], [0, 0, 2], [0, 0, 0]]


def test_detection_box_shifted_beyond_iou_half():
    labels = [{"boxes": [box(0, 0)], "objects": [0]}]
    preds = [{"boxes": [box(4, 0)], "objects": [0], "scores": [0.9]}]  # IoU 60/140
    result = detection_metrics(preds, labels)
    assert result["recall"] == result["precision"] == 0.0
    assert result["mAP_50"] == result["mAP"] == 0.0
    assert result["confusion_matrix"] == [[0, 1], [1, 0]]
    near = detection_metrics([{"boxes": [box(2, 0)], "objects": [0], "scores": [0.9]}], labels)  # IoU 80/120
    assert near["recall"] == 1.0 and near["mAP_50"] == 1.0 and near["mAP_75"] == 0.0


def test_detection_half_found_is_coco_101_point_ap():
    labels = [{"boxes": [box(0, 0), box(50, 50)], "objects": [0, 0]}]
    preds = [{"boxes": [box(0, 0)], "objects": [0], "scores": [0.7]}]
    result = detection_metrics(preds, labels)
    # precision 1 at recall thresholds 0.00..0.50 (51 of 101), 0 beyond
    assert result["mAP"] == pytest.approx(51 / 101)
    assert result["recall"] == 0.5 and result["precision"] == 1.0


def test_detection_class_never_predicted_and_class_without_truth():
    preds = [
        {"boxes": [box(0, 0), box(200, 200)], "objects": [0, 2], "scores": [0.9, 0.8]},
        {"boxes": [], "objects": [], "scores": []},
        {"boxes": [], "objects": [], "scores": []},
    ]
    result = detection_metrics(preds, LABELS, class_labels=["a", "b", "c"])
    assert result["AP"] == {"a": 1.0, "b": 0.0, "c": None}  # b never predicted, c never true
    assert result["mAP"] == pytest.approx(0.5)
    assert result["precision"] == 0.5 and result["recall"] == pytest.approx(1 / 3)


def test_detection_wrong_class_and_duplicate_boxes():
    labels = [{"boxes": [box(0, 0)], "objects": [0]}]
    wrong = detection_metrics([{"boxes": [box(0, 0)], "objects": [1], "scores": [0.9]}], labels)
    assert wrong["confusion_matrix"] == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert wrong["precision"] == wrong["recall"] == 0.0
    twice = detection_metrics([{"boxes": [box(0, 0), box(1, 0)], "objects": [0, 0], "scores": [0.2, 0.9]}], labels)
    assert twice["precision"] == 0.5 and twice["recall"] == 1.0
    assert twice["confusion_matrix"] == [[1, 0], [1, 0]]


def test_detection_matching_goes_by_descending_score():
    # the confident box overlaps both truths but A most; the weak one only A
    labels = [{"boxes": [box(0, 0), box(3, 0)], "objects": [0, 0]}]
    preds = [{"boxes": [box(-1, 0), box(1, 0)], "objects": [0, 0], "scores": [0.1, 0.9]}]
    result = detection_metrics(preds, labels)
    assert result["precision"] == result["recall"] == 0.5
    assert result["confusion_matrix"] == [[1, 1], [1, 0]]
    assert (result["precision"], result["recall"]) == greedy_reference(preds, labels)


def test_detection_without_any_true_box_and_bad_records():
    preds = [{"boxes": [box(0, 0)], "objects": [0], "scores": [0.9]}]
    result = detection_metrics(preds, [{"boxes": [], "objects": []}])
    assert result["mAP"] is None and result["AP"] == {"0": None}
    assert result["precision"] == 0.0 and result["recall"] is None
    with pytest.raises(ValueError, match="prediction 0"):
        detection_metrics([{"boxes": [box(0, 0)], "objects": [0, 1]}], [{"boxes": [], "objects": []}])
    with pytest.raises(ValueError, match="x2 >= x1"):
        detection_metrics([{"boxes": [[10, 0, 0, 10]], "objects": [0]}], [{"boxes": [], "objects": []}])
    with pytest.raises(ValueError, match="'boxes' and 'objects'"):
        detection_metrics([[0, 0, 1, 1]], [{"boxes": [], "objects": []}])
