"""The label file formats (``alectio_core.labels_io``): what a person's csv
or jsonl file becomes, every bad row named, and what an export looks like."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alectio_core.labels_io import BadLabels, LabelRow, dump, read_labels, rows_from_body


def problems(data, name="labels.csv"):
    with pytest.raises(BadLabels) as caught:
        read_labels(data, name)
    return [(p["where"], p["index"], p["message"]) for p in caught.value.problems], caught.value


def test_a_csv_file_gives_labels_skips_and_json_labels():
    data = 'index,label,skip\n17,cat,\n42,"[1, 3]",\n8,,true\n9,,\n\n5,3,no\n'.encode("utf-8-sig")  # a spreadsheet's BOM
    assert read_labels(data, "batch.csv") == [
        LabelRow("line 2", 17, "cat"),
        LabelRow("line 3", 42, [1, 3]),
        LabelRow("line 4", 8, None, skip=True),
        LabelRow("line 7", 5, "3"),  # line 5 left blank (not labelled yet), line 6 empty
    ]


def test_a_bare_csv_cell_is_text_a_json_list_object_or_quoted_string_is_json():
    # A bare 1 may name the class "1": the engine reads text as a name first, then as an id.
    text = 'index,label\n1,1\n2,2.5\n3,"[1, 3]"\n4,"""7"""\n5,"{""boxes"": [], ""objects"": []}"\n6,nan\n'
    assert [(r.index, r.label) for r in read_labels(text, "x.csv")] == [
        (1, "1"), (2, "2.5"), (3, [1, 3]), (4, "7"), (5, {"boxes": [], "objects": []}), (6, "nan")
    ]


def test_a_jsonl_file_gives_labels_and_skips():
    text = '{"index": 3, "label": {"boxes": [[0, 0, 2, 2]], "objects": [1]}}\n\n{"index": 4, "skip": true}\n{"index": 5, "label": null}\n'
    assert read_labels(text, "batch.jsonl") == [
        LabelRow("line 1", 3, {"boxes": [[0, 0, 2, 2]], "objects": [1]}),
        LabelRow("line 3", 4, None, skip=True),
    ]


def test_every_bad_csv_row_is_named_by_line_and_index():
    text = "index,label\nx,1\n-2,3\n1,cat\n1,dog\n5,1,2\n6,{bad\n7,\"[1,2]\"\n1.5,2\n"
    found, error = problems(text)
    assert found == [
        ("line 2", None, "index 'x' is not an integer"),
        ("line 3", None, "index '-2' is below 0"),
        ("line 5", 1, "duplicate row: index 1 is on line 4 too"),
        ("line 6", None, "3 cells, the header has 2 (quote a label holding commas)"),
        ("line 7", 6, "label '{bad' is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("line 9", None, "index '1.5' is not an integer"),
    ]
    assert str(error).startswith("labels.csv: 6 bad rows, nothing stored: line 2: index 'x' is not an integer; ")


def test_every_bad_jsonl_row_is_named():
    text = "\n".join(
        [
            '{"index": 1, "label": 2}',
            '{"index": 1, "skip": true}',
            "[1]",
            '{"index": "3", "label": 1}',
            '{"index": 4, "lable": 1}',
            '{"index": 5, "label": 1, "skip": true}',
            '{"index": 6, "skip": "yes"}',
            "nope",
            '{"label": 1}',
        ]
    )
    found, _ = problems(text, "batch.jsonl")
    assert [(w, i) for w, i, _ in found] == [
        ("line 2", 1), ("line 3", None), ("line 4", None), ("line 5", 4), ("line 6", 5), ("line 7", 6), ("line 8", None), ("line 9", None)
    ]
    messages = [m for _, _, m in found]
    assert messages[0] == "duplicate row: index 1 is on line 1 too"
    assert messages[2] == 'index "3" is not an integer'
    assert messages[3] == "unknown field 'lable'; known fields: index, label, skip"
    assert messages[4] == "has both a label and skip; give one"
    assert messages[7] == "no index"


def test_a_csv_without_index_and_label_columns_is_refused():
    found, _ = problems("id,class\n1,2\n")
    assert found == [("line 1", None, "the header must name the columns index and label (and optionally skip), got 'id,class'")]


def test_not_utf8_is_refused():
    found, _ = problems(b"index,label\n1,\xff\n")
    assert found == [("byte 14", None, "not UTF-8 text")]


def test_a_request_body_names_each_bad_entry():
    with pytest.raises(BadLabels) as caught:
        rows_from_body({"labels": {"1": 2, "x": 3, "01": 4, "2": None}, "skip": [1, 5, 5]})
    assert [(p["where"], p["index"]) for p in caught.value.problems] == [
        ('labels["x"]', None), ('labels["01"]', 1), ('labels["2"]', 2), ("skip[0]", 1), ("skip[2]", 5)
    ]
    assert caught.value.problems[3]["message"] == 'index 1 is in labels["1"] too; label it or skip it'
    assert caught.value.problems[4]["message"] == "index 5 is in skip[1] too; a duplicate"
    assert rows_from_body({"labels": {"7": "cat"}, "skip": [3]}) == [LabelRow('labels["7"]', 7, "cat"), LabelRow("skip[0]", 3, skip=True)]


ROWS = [
    {"index": 12, "reference": "img/12.png", "score": np.float32(0.75), "prediction": 1, "label": None, "skipped": False},
    {"index": 4, "reference": "img/4.png", "score": None, "prediction": 0, "label": 1, "skipped": False},
    {"index": 9, "reference": "img/9.png", "score": float("nan"), "prediction": None, "label": None, "skipped": True},
]
EXPERIMENT = {"id": "exp1", "task": "classification", "labels": ["cat", "dog"]}


def test_csv_and_jsonl_exports_go_back_in_once_labelled():
    text = dump(EXPERIMENT, 2, ROWS, "csv")
    assert text.splitlines() == [
        "index,reference,score,prediction,label,skip",
        "12,img/12.png,0.75,dog,,",  # class names, as people type them
        "4,img/4.png,,cat,dog,",
        "9,img/9.png,,,,true",
    ]
    assert read_labels(text.replace("12,img/12.png,0.75,dog,,", "12,img/12.png,0.75,dog,dog,"), "x.csv") == [
        LabelRow("line 2", 12, "dog"), LabelRow("line 3", 4, "dog"), LabelRow("line 4", 9, None, skip=True)
    ]
    lines = dump(EXPERIMENT, 2, ROWS, "jsonl").splitlines()
    assert json.loads(lines[0]) == {"index": 12, "reference": "img/12.png", "score": 0.75, "prediction": "dog", "label": None, "skip": False}
    assert json.loads(lines[1])["label"] == "dog"
    odd = {**EXPERIMENT, "labels": ["cat", "[dog]"]}  # a name that looks like JSON goes out quoted, comes back a name
    assert [r.label for r in read_labels(dump(odd, 2, [dict(ROWS[1], label=1)], "csv"), "x.csv")] == ["[dog]"]
    assert [r.index for r in read_labels("\n".join(lines), "x.jsonl")] == [4, 9]


def test_label_studio_tasks_carry_the_reference_prediction_and_score():
    tasks = json.loads(dump(EXPERIMENT, 2, ROWS, "labelstudio"))
    assert tasks[0] == {
        "data": {"reference": "img/12.png", "alectio_index": 12},
        "predictions": [
            {
                "model_version": "exp1/2",
                "score": 0.75,
                "result": [{"from_name": "label", "to_name": "item", "type": "choices", "value": {"choices": ["dog"]}}],
            }
        ],
    }
    assert "score" not in tasks[1]["predictions"][0]
    assert "predictions" not in tasks[2]  # no prediction, no score
    multilabel = json.loads(dump({**EXPERIMENT, "task": "multilabel"}, 1, [dict(ROWS[0], prediction=[0, 1])], "labelstudio"))
    assert multilabel[0]["predictions"][0]["result"][0]["value"] == {"choices": ["cat", "dog"]}
    regression = json.loads(dump({"id": "r", "task": "regression"}, 1, [dict(ROWS[0], prediction=2.5)], "labelstudio"))
    assert regression[0]["predictions"][0]["result"][0] == {"from_name": "label", "to_name": "item", "type": "number", "value": {"number": 2.5}}


def test_a_large_segmentation_mask_goes_out_and_back_in_as_csv():
    """A 300x300 mask is a cell of 270 kB: over the csv module's default field limit (128 kB)."""
    mask = [[n % 3 for n in range(300)] for _ in range(300)]
    text = dump({"id": "exp1", "task": "segmentation"}, 0, [{"index": 5, "reference": "m.png", "label": mask}], "csv")
    assert read_labels(text.encode(), "masks.csv") == [LabelRow("line 2", 5, mask)]
