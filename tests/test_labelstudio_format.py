"""Label Studio's formats: interfaces made and read, tasks, annotations as labels."""

from __future__ import annotations

import pytest

from alectio_plugins.labelstudio_format import SKIP, FormatError, make_label_config, make_task, read_annotation, read_label_config

DIGITS = [str(d) for d in range(10)]


def choice(*names, name="label"):
    return {"from_name": name, "to_name": "image", "type": "choices", "value": {"choices": list(names)}}


def rectangle(x, y, w, h, label, width=200, height=100, rotation=0):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}
    return {"type": "rectanglelabels", "value": value, "original_width": width, "original_height": height}


@pytest.mark.parametrize("task", ["classification", "multilabel", "object_detection", "regression"])
def test_a_made_interface_reads_back_with_the_models_classes(task):
    config = make_label_config(task, ["cat", "dog & co"])
    interface = read_label_config(config, task, ["cat", "dog & co"])
    assert (interface.control, interface.to_name, interface.data_key) == ("label", "image", "image")
    assert interface.labels == (() if task == "regression" else ("cat", "dog & co"))


def test_a_text_interface_shows_the_text_field():
    config = make_label_config("classification", ["a", "b"], object_tag="Text")
    assert '<Text name="text" value="$text"/>' in config
    assert read_label_config(config, "classification", ["a", "b"]).data_key == "text"


def test_a_project_offering_a_label_the_model_lacks_is_refused_naming_it():
    config = make_label_config("classification", ["cat", "dog", "bird"])
    with pytest.raises(FormatError, match="offers the label 'bird', which is not one of the model's classes: cat, dog"):
        read_label_config(config, "classification", ["cat", "dog"])
    with pytest.raises(FormatError, match="does not offer the model's class 'fish'"):
        read_label_config(config, "classification", ["cat", "dog", "bird", "fish"])


def test_an_interface_of_the_wrong_kind_says_what_is_needed():
    config = make_label_config("classification", ["cat"])
    with pytest.raises(FormatError, match="needs exactly one <RectangleLabels> for task 'object_detection'; it has Choices"):
        read_label_config(config, "object_detection", ["cat"])
    with pytest.raises(FormatError, match="not valid XML"):
        read_label_config("<View><Image", "classification", ["cat"])


def test_segmentation_and_classes_without_names_are_refused_clearly():
    with pytest.raises(FormatError, match="brush masks, which the labelstudio labeller does not read yet"):
        make_label_config("segmentation", ["bg", "fg"])
    with pytest.raises(FormatError, match="gives no class names .* labeller.label_config"):
        make_label_config("classification", None)


def test_a_task_carries_the_record_and_the_prediction_as_pre_annotation():
    experiment = {"id": "e1", "task": "classification", "labels": DIGITS}
    interface = read_label_config(make_label_config("classification", DIGITS), "classification", DIGITS)
    row = {"index": 17, "reference": "img 17.png", "score": 0.25, "prediction": 3, "label": None, "skipped": False}
    task = make_task(experiment, 2, row, interface, "/data/local-files/?d=digits/{reference}")
    assert task["data"] == {
        "image": "/data/local-files/?d=digits/img 17.png",
        "reference": "img 17.png",
        "alectio_experiment": "e1",
        "alectio_loop": 2,
        "alectio_index": 17,
    }
    assert task["predictions"] == [
        {"model_version": "e1/2", "score": 0.25, "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["3"]}}]}
    ]


def test_loop_zeros_task_has_no_prediction():
    experiment = {"id": "e1", "task": "classification", "labels": DIGITS}
    interface = read_label_config(make_label_config("classification", DIGITS), "classification", DIGITS)
    task = make_task(experiment, 0, {"index": 1, "reference": "r1", "score": None, "prediction": None}, interface, "{reference}")
    assert "predictions" not in task and task["data"]["image"] == "r1"


def test_choices_become_class_ids():
    assert read_annotation("classification", DIGITS, {"result": [choice("7")]}) == 7
    assert read_annotation("multilabel", ["a", "b", "c"], {"result": [choice("c", "a")]}) == [0, 2]


def test_cancelled_annotations_are_skips():
    assert read_annotation("classification", DIGITS, {"was_cancelled": True, "result": []}) is SKIP


def test_a_wrong_label_name_is_refused_naming_it():
    with pytest.raises(FormatError, match="label 'seven' is not one of the model's classes: 0, 1, 2"):
        read_annotation("classification", DIGITS, {"result": [choice("seven")]})
    with pytest.raises(FormatError, match="has 2 choices; a classification record takes one"):
        read_annotation("classification", DIGITS, {"result": [choice("1", "2")]})
    with pytest.raises(FormatError, match="has no choices result"):
        read_annotation("classification", DIGITS, {"result": []})


def test_rectangles_in_percent_become_boxes_in_pixels():
    annotation = {"result": [rectangle(10, 20, 50, 30, "car"), rectangle(0, 0, 100, 100, "person")]}
    assert read_annotation("object_detection", ["person", "car"], annotation) == {
        "boxes": [[20.0, 20.0, 120.0, 50.0], [0.0, 0.0, 200.0, 100.0]],
        "objects": [1, 0],
    }
    assert read_annotation("object_detection", ["person", "car"], {"result": []}) == {"boxes": [], "objects": []}
    with pytest.raises(FormatError, match="rotated by 15 degrees"):
        read_annotation("object_detection", ["car"], {"result": [rectangle(1, 1, 5, 5, "car", rotation=15)]})
    with pytest.raises(FormatError, match="without the image's original_width"):
        read_annotation("object_detection", ["car"], {"result": [rectangle(1, 1, 5, 5, "car", width=None)]})


@pytest.mark.parametrize("kind, what", [("brushlabels", "brush masks"), ("polygonlabels", "polygons")])
def test_brush_and_polygon_are_refused_clearly(kind, what):
    with pytest.raises(FormatError, match=f"{what} are not read yet"):
        read_annotation("object_detection", ["car"], {"result": [{"type": kind, "value": {}}]})


def test_numbers_for_regression():
    assert read_annotation("regression", None, {"result": [{"type": "number", "value": {"number": 2.5}}]}) == 2.5
    with pytest.raises(FormatError, match="not a finite number"):
        read_annotation("regression", None, {"result": [{"type": "number", "value": {"number": "x"}}]})
