"""The checks on what a model's hooks return, called directly: the public
home the engine and ``ModelContract`` share. (Through a whole loop they are
exercised in test_engine.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alectio_core.errors import PluginError, ValidationError
from alectio_core.hook_results import as_indices, check_assign_index, check_infer, check_test, check_train


def test_assign_index_gives_the_references_in_index_order():
    assert check_assign_index("m", {1: "b.png", "0": "a.png"}) == ["a.png", "b.png"]
    assert check_assign_index("m", ("x", 7)) == ["x", "7"]


@pytest.mark.parametrize(
    "result, message",
    [
        ({0: "a", 2: "c"}, "model 'm', hook 'assign_index', index 2: keys must be exactly 0..1, found 2"),
        ({"zero": "a"}, "model 'm', hook 'assign_index': key 'zero' is not an integer index"),
        ("a,b", "model 'm', hook 'assign_index': must return a mapping index -> reference, got str"),
    ],
)
def test_assign_index_errors_name_model_hook_and_index(result, message):
    with pytest.raises(PluginError) as caught:
        check_assign_index("m", result)
    assert str(caught.value) == message


def test_train_gives_its_labels_as_plain_values():
    labels = check_train("m", {"labels": np.array([1, 0, 1], dtype=np.int32)})
    assert labels == [1, 0, 1] and all(type(v) is int for v in labels)
    assert check_train("m", None) is None and check_train("m", {"loss": 0.1}) is None
    with pytest.raises(PluginError, match=r"^model 'm', hook 'train': 'labels' must be a list of class labels$"):
        check_train("m", {"labels": "cat"})


def test_test_results_keyed_by_record_come_back_in_key_order_as_plain_lists():
    predictions, labels = check_test("m", {"predictions": {"b": np.int64(1), "a": 0}, "labels": {"a": 0, "b": 1}})
    assert (predictions, labels) == ([0, 1], [0, 1]) and type(predictions[1]) is int


def test_test_results_keep_nan_for_the_storage_to_refuse():
    predictions, _ = check_test("m", {"predictions": np.array([math.nan]), "labels": [1.0]})
    assert math.isnan(predictions[0])


@pytest.mark.parametrize(
    "result, message",
    [
        ({"predictions": [1]}, "result is missing key(s) labels"),
        ({"predictions": [1, 2], "labels": [1]}, "2 predictions but 1 labels"),
        ({"predictions": {"a": 1}, "labels": [1]}, "'predictions' and 'labels' must both be lists or both be dicts"),
        ({"predictions": {"a": 1}, "labels": {"b": 1}}, "predictions and labels cover different records, e.g. a"),
    ],
)
def test_test_errors_name_model_and_hook(result, message):
    with pytest.raises(PluginError) as caught:
        check_test("m", result)
    assert str(caught.value) == f"model 'm', hook 'test': {message}"


def test_infer_returns_its_outputs_or_none_after_streaming():
    assert check_infer("m", None) is None
    assert check_infer("m", {"outputs": {0: [0.5]}}) == ({0: [0.5]}, None)
    assert check_infer("m", {"outputs": {0: [0.5]}, "embeddings": {0: [1.0, 2.0]}}) == ({0: [0.5]}, {0: [1.0, 2.0]})
    with pytest.raises(PluginError, match=r"^model 'm', hook 'infer': must return \{'outputs'"):
        check_infer("m", {"outputs": [[0.5]]})


def test_as_indices_names_what_is_wrong():
    assert as_indices([3, np.int32(1)], "selection").tolist() == [3, 1]
    with pytest.raises(ValidationError, match="selection must hold integer indices, got 1.5"):
        as_indices([1.5], "selection")
    with pytest.raises(ValidationError, match="selection holds an index too large for any pool"):
        as_indices([2**70], "selection")
