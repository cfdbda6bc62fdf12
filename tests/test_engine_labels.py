"""Labels from people (labels mode "alectio") in the engine, on a real
SQLite file: loop 0's selection at creation, labels checked per task and
stored all or nothing, loops refused until their selection is labelled or
skipped, and ``train`` getting exactly the latest labels."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alectio_core.engine import Engine
from alectio_core.errors import ConflictError, InvalidLabels, LabelsMissing, NotFoundError, StorageError, ValidationError
from alectio_core.storage import Storage, open_storage
from alectio_plugins.storage_sqlite import SQLiteStorage

CLASSES = ["cat", "dog", "bird"]


def three_classes(**hooks):
    """A 3-class model over 20 records: loop k's outputs rank record i by i's logits."""

    def infer(unlabeled, writer):
        for i in unlabeled:
            writer.add(i, [float(i % 3), float(i % 5) / 2, 0.5])

    defaults = dict(model_info=lambda: {"task": "classification", "labels": CLASSES}, infer=infer)
    return {**defaults, **hooks}


def labelled(engine, eid, loop, label=0):
    """Label every record of loop ``loop``'s selection with ``label``."""
    picked = engine.storage.get_selection(eid, loop).tolist()
    return engine.add_labels(eid, {i: label for i in picked}, source="test")


def test_loop_0_selection_exists_at_creation_and_the_mode_is_stored(engine, installed_test_model):
    exp = engine.create_experiment(installed_test_model, initial=10, loops=3, labels="alectio")
    assert exp["labels_mode"] == "alectio" and engine.get_experiment(exp["id"])["labels_mode"] == "alectio"
    rows = engine.selection(exp["id"], 0)
    assert len(rows) == 10 and [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    first = rows[0]
    assert first == {
        "index": first["index"],
        "reference": f"digit_{first['index']}.png",
        "score": None,
        "prediction": None,
        "label": None,
        "skipped": False,
    }
    assert engine.missing_labels(exp["id"], 0).tolist() == [r["index"] for r in rows]

    plain = engine.create_experiment(installed_test_model, initial=10, loops=3)
    assert plain["labels_mode"] == "plugin" and not engine.has_selection(plain["id"], 0)
    older = {k: v for k, v in plain.items() if k != "labels_mode"}
    engine.storage.create_experiment(dict(older, id="older"), ["r0"])  # as a store written before labels modes holds it
    assert engine.get_experiment("older")["labels_mode"] == "plugin" == engine.summary(older)["labels_mode"]
    with pytest.raises(ValidationError, match="labels must be one of 'plugin', 'alectio', got 'people'"):
        engine.create_experiment(installed_test_model, labels="people")


def test_a_loop_waits_for_its_labels(engine, installed_test_model):
    exp = engine.create_experiment(installed_test_model, initial=10, batch_size=10, loops=3, labels="alectio")
    eid = exp["id"]
    with pytest.raises(LabelsMissing) as caught:
        engine.run_loop(eid, 0)
    assert caught.value.code == "labels_missing" and caught.value.status == 409 and caught.value.missing == 10
    assert str(caught.value) == "loop 0 needs 10 more labels (10 selected): label or skip them first"
    with pytest.raises(LabelsMissing):
        engine.queue_loop(eid, 0)  # what the server calls before it queues a loop
    assert engine.loop_states(eid) == []  # nothing ran, nothing was recorded

    picked = engine.storage.get_selection(eid, 0).tolist()
    summary = engine.add_labels(eid, {i: "3" for i in picked[:7]}, skip=picked[7:8], source="test", by="ann")
    assert summary == {"stored": 7, "skipped": 1, "loop": 0, "missing": 2}
    with pytest.raises(LabelsMissing, match="loop 0 needs 2 more labels"):
        engine.run_loop(eid, 0)
    assert engine.add_labels(eid, {picked[8]: 1}, skip=[picked[9]], source="test") == {"stored": 1, "skipped": 1, "loop": 0, "missing": 0}
    state = engine.run_loop(eid, 0)
    assert state["status"] == "done" and state["labeled"] == 8  # the two skipped records are not trained on
    after = engine.add_labels(eid, {}, source="test")
    assert after["loop"] == 1 and after["missing"] == 10 == engine.missing_labels(eid, 1).size


def test_a_loop_with_every_record_skipped_has_nothing_to_train_on(engine, fake_model):
    fake_model("skipped", **three_classes())
    exp = engine.create_experiment("skipped", strategy=None, initial=3, loops=2, labels="alectio")
    picked = engine.storage.get_selection(exp["id"], 0).tolist()
    engine.add_labels(exp["id"], {}, skip=picked, source="test")
    with pytest.raises(ConflictError, match="^loop 0 has nothing to train on: every record selected so far was skipped"):
        engine.run_loop(exp["id"], 0)
    engine.add_labels(exp["id"], {picked[1]: "bird"}, source="test")  # a skipped record labelled after all
    assert engine.run_loop(exp["id"], 0)["labeled"] == 1


def test_hook_train(any_engine, fake_model):
    """``train`` gets ``labels``: index -> the latest label of each record it
    trains on, skipped records left out of both ``labeled`` and ``labels``
    (on SQLite and on S3)."""
    engine, seen = any_engine, []

    def train(labeled, labels, ckpt_file):
        seen.append((labeled, labels))
        open(ckpt_file, "w").close()

    fake_model("people", **three_classes(train=train))
    exp = engine.create_experiment("people", strategy="entropy", initial=4, batch_size=3, loops=3, labels="alectio")
    eid = exp["id"]
    first = engine.storage.get_selection(eid, 0).tolist()
    engine.add_labels(eid, {first[0]: "dog", first[1]: 2, first[2]: 0}, skip=[first[3]], source="test")
    engine.run_loop(eid, 0)
    assert seen[0] == (sorted(first[:3]), {first[0]: 1, first[1]: 2, first[2]: 0})

    rows = engine.selection(eid, 1)
    scores = [r["score"] for r in rows]
    assert len(rows) == 3 and all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert first[3] not in [r["index"] for r in rows]  # a skipped record is never picked again
    for row in rows:  # loop 0's model's prediction: the class of the largest logit infer gave
        i = row["index"]
        assert row["prediction"] == int(np.argmax([i % 3, (i % 5) / 2, 0.5]))

    second = [r["index"] for r in rows]
    engine.add_labels(eid, {i: "bird" for i in second}, source="test")
    engine.add_labels(eid, {first[0]: "cat"}, source="review", by="lead")  # a correction: the latest wins
    engine.run_loop(eid, 1)
    labeled, labels = seen[1]
    assert labeled == sorted(first[:3] + second)
    assert labels == {first[0]: 0, first[1]: 2, first[2]: 0, **{i: 2 for i in second}}

    history = [e for e in engine.label_history(eid) if e["index"] == first[0]]
    assert [(e["label"], e["source"], e["by"], e["loop"]) for e in history] == [(1, "test", None, 0), (0, "review", "lead", 0)]
    assert engine.labels(eid)[first[0]]["label"] == 0 and engine.labels(eid)[first[3]]["skip"] is True
    assert engine.results(eid, 1)["insights"]["per_class_counts"] == {"0": 2, "2": 4}  # from people's labels


ROWS = {  # record i's infer row
    "classification": lambda i: [float(i % 3), 1.0, 0.0],
    "multilabel": lambda i: [1.0 if i % 2 else -1.0, -2.0, 0.5],
    "regression": lambda i: [i / 4],
    "object_detection": lambda i: [0.1] * 6,
}


TESTED = {  # what test returns, in each task's format
    "classification": {"predictions": [0, 1], "labels": [0, 0]},
    "multilabel": {"predictions": [[0], [1, 2]], "labels": [[0], [2]]},
    "regression": {"predictions": [1.0, 2.0], "labels": [1.5, 2.0]},
    "object_detection": {
        "predictions": [{"boxes": [[0, 0, 4, 4]], "objects": [1], "scores": [0.75]}],
        "labels": [{"boxes": [[0, 0, 4, 5]], "objects": [1]}],
    },
}


@pytest.mark.parametrize("task", ROWS)
def test_a_selection_shows_the_loop_befores_prediction_in_the_tasks_format(engine, fake_model, task):
    row = ROWS[task]

    def infer(unlabeled, writer):
        for i in unlabeled:
            writer.add(i, row(i))

    fake_model(f"p-{task}", model_info=lambda: {"task": task, "labels": CLASSES}, infer=infer, test=lambda: TESTED[task])
    exp = engine.create_experiment(f"p-{task}", strategy="random", initial=3, batch_size=4, loops=2, labels="alectio")
    labelled(engine, exp["id"], 0, label={"classification": 0, "multilabel": [0], "regression": 1.5, "object_detection": {"boxes": [], "objects": []}}[task])
    engine.run_loop(exp["id"], 0)
    rows = engine.selection(exp["id"], 1)
    expected = {
        "classification": lambda i: int(np.argmax(row(i))),
        "multilabel": lambda i: [c for c, v in enumerate(row(i)) if v > 0],
        "regression": lambda i: i / 4,
        "object_detection": lambda i: None,
    }[task]
    assert len(rows) == 4 and [r["prediction"] for r in rows] == [expected(r["index"]) for r in rows]
    assert all(r["score"] is None for r in rows)  # random gives no scores


def test_mc_rows_are_reduced_to_one_pass_before_the_prediction(engine, fake_model):
    def infer(unlabeled, writer):  # two passes: the first says class 0, the second class 1 more strongly
        for i in unlabeled:
            writer.add(i, [2.0, 0.0, 0.0, 0.0, 9.0, 0.0])

    fake_model("mc", model_info=lambda: {"task": "classification", "labels": CLASSES, "mc_samples": 2}, infer=infer)
    exp = engine.create_experiment("mc", strategy="entropy", initial=3, batch_size=2, loops=2, labels="alectio")
    labelled(engine, exp["id"], 0)
    engine.run_loop(exp["id"], 0)
    assert [r["prediction"] for r in engine.selection(exp["id"], 1)] == [1, 1]


def test_train_gets_no_labels_when_the_plugin_knows_them(engine, fake_model):
    seen = []
    fake_model("plugin", train=lambda labeled, labels: seen.append(labels))
    exp = engine.create_experiment("plugin", strategy=None, initial=3, loops=1)
    engine.run_loop(exp["id"], 0)
    assert seen == [None]
    with pytest.raises(ConflictError, match="labels mode 'plugin'"):
        engine.add_labels(exp["id"], {0: 1}, source="test")


BAD = [
    ({"7": 0}, (), "index 7 is in no selection of experiment"),
    ({99: 0}, (), "index 99 is outside the pool 0..19"),
    ({"x": 0}, (), "index 'x' is not an integer record index"),
    ({"--5": 0}, (), "index '--5' is not an integer record index"),
    ({"\u00b2": 0}, (), "index '\u00b2' is not an integer record index"),  # a digit to str.isdigit, not to int()
    ({"@0": "horse"}, (), "index @0: label 'horse' is not a classification label: 'horse' is not one of the experiment's labels ('cat', 'dog', 'bird')"),
    ({"@0": 3}, (), "index @0: label 3 is not a classification label: class id 3 is out of range (0..2)"),
    ({"@0": 1.0}, (), "index @0: label 1.0 is not a classification label: a class must be a class id or name, got float"),
    ({"@0": True}, (), "index @0: label True is not a classification label"),
    ({"@0": None}, (), "index @0: the label is missing (to leave the record out, skip it)"),
    ({"@0": 1}, ("@0",), "index @0 is given in both labels and skip"),
    ({}, ("@1", "@1"), "index @1 is given more than once"),
]


@pytest.mark.parametrize("labels, skip, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_a_bad_row_stores_nothing(engine, fake_model, labels, skip, message):
    fake_model("strict", **three_classes())
    exp = engine.create_experiment("strict", strategy=None, initial=3, loops=2, labels="alectio")
    eid = exp["id"]
    picked = engine.storage.get_selection(eid, 0).tolist()
    assert 7 not in picked or pytest.skip("record 7 was selected")

    def real(key):
        return picked[int(key[1:])] if isinstance(key, str) and key.startswith("@") else key

    good = {picked[2]: "cat"}  # a good row before the bad one is not stored either
    engine.add_labels(eid, {picked[1]: 1}, source="before")
    before = engine.label_history(eid)
    rows = {**good, **{real(k): v for k, v in labels.items()}}
    expected = message
    for n in range(3):
        expected = expected.replace(f"@{n}", str(picked[n]))
    with pytest.raises(ValidationError) as caught:
        engine.add_labels(eid, rows, skip=[real(k) for k in skip], source="test")
    assert expected in str(caught.value)
    assert engine.label_history(eid) == before


def test_every_bad_row_is_reported(engine, fake_model):
    """One call names every bad row (a file's import reports each line), and stores none."""
    fake_model("rows", **three_classes())
    exp = engine.create_experiment("rows", strategy=None, initial=3, loops=2, labels="alectio")
    a, b, c = engine.storage.get_selection(exp["id"], 0).tolist()
    with pytest.raises(InvalidLabels) as caught:
        engine.add_labels(exp["id"], {a: "cat", b: "horse", "x": 1, c: 1}, skip=[c], source="file")
    assert [(p["index"], p["message"]) for p in caught.value.problems] == [
        (b, f"index {b}: label 'horse' is not a classification label: 'horse' is not one of the experiment's labels ('cat', 'dog', 'bird')"),
        ("x", "index 'x' is not an integer record index"),
        (c, f"index {c} is given in both labels and skip"),
    ]
    assert str(caught.value).endswith("(and 2 more bad rows)") and isinstance(caught.value, ValidationError)
    assert engine.label_history(exp["id"]) == []


TASK_LABELS = [
    ("multilabel", ["dog", 0], [1, 0], [0, "cat"], "a class appears more than once"),
    ("object_detection", {"boxes": [[1, 2, 3.5, 4]], "objects": ["bird"]}, {"boxes": [[1.0, 2.0, 3.5, 4.0]], "objects": [2]},
     {"boxes": [[3, 2, 1, 4]], "objects": [0]}, "box 0 has x2 < x1 or y2 < y1"),
    ("object_detection", {"boxes": [], "objects": []}, {"boxes": [], "objects": []},
     {"boxes": [[0, 0, 1, 1]], "objects": []}, '"boxes" and "objects" must be lists of the same length'),
    ("segmentation", [[0, 1], [2, 2]], [[0, 1], [2, 2]], [[0, 1], [2]], "segmentation rows must all have the same, non-zero length"),
    ("segmentation", [[0]], [[0]], [["cat"]], "a class must be a class id, got str"),
    ("segmentation", [[2, 1, 0]], [[2, 1, 0]], [[0, 1], [3, 0]], "class id 3 is out of range (0..2)"),
    ("regression", 2.5, 2.5, float("nan"), "regression labels are finite numbers"),
    ("regression", "2.5", 2.5, "nan", "regression labels are finite numbers"),  # a csv cell is text
    ("regression", "-3", -3, "inf", "regression labels are finite numbers"),
    ("regression", 1, 1, "1_0", "regression labels are finite numbers"),
]


@pytest.mark.parametrize("task, good, stored, bad, why", TASK_LABELS, ids=[f"{t[0]}-{n}" for n, t in enumerate(TASK_LABELS)])
def test_labels_are_checked_in_the_tasks_format(engine, fake_model, task, good, stored, bad, why):
    fake_model(f"m-{task}", model_info=lambda: {"task": task, "labels": CLASSES}, test=lambda: {"predictions": [], "labels": []})
    exp = engine.create_experiment(f"m-{task}", strategy=None, initial=2, loops=1, labels="alectio")
    first, second = engine.storage.get_selection(exp["id"], 0).tolist()
    engine.add_labels(exp["id"], {first: good}, source="test")
    assert engine.labels(exp["id"])[first]["label"] == stored
    with pytest.raises(ValidationError, match=f"index {second}: label .* is not a {task} label: ") as caught:
        engine.add_labels(exp["id"], {second: bad}, source="test")
    assert why in str(caught.value)
    assert list(engine.labels(exp["id"])) == [first]


STARS = ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("task, wrap", [("classification", lambda v: v), ("multilabel", lambda v: [v])])
def test_a_string_is_a_class_name_first_then_an_id_and_a_number_is_an_id(engine, fake_model, task, wrap):
    fake_model("stars", model_info=lambda: {"task": task, "labels": STARS}, test=lambda: {"predictions": [], "labels": []})
    exp = engine.create_experiment("stars", strategy=None, initial=4, loops=1, labels="alectio")
    a, b, c, d = engine.storage.get_selection(exp["id"], 0).tolist()
    # "1" is the class named "1" (id 0); 1 (a number) is id 1; "0" names no class: it is id 0
    engine.add_labels(exp["id"], {a: wrap("1"), b: wrap(1), c: wrap("5"), d: wrap("0")}, source="test")
    assert {i: e["label"] for i, e in engine.labels(exp["id"]).items()} == {a: wrap(0), b: wrap(1), c: wrap(4), d: wrap(0)}
    with pytest.raises(ValidationError) as caught:
        engine.add_labels(exp["id"], {a: wrap("7"), b: wrap("one")}, source="test")
    assert [p["message"] for p in caught.value.problems] == [
        f"index {a}: label {wrap('7')!r} is not a {task} label: class id 7 is out of range (0..4)",
        f"index {b}: label {wrap('one')!r} is not a {task} label: 'one' is not one of the experiment's labels ('1', '2', '3', '4', '5')",
    ]


def test_a_process_killed_while_storing_labels_stores_none(tmp_path, installed_test_model, test_site):
    """The child stores 200 label events and is killed (SIGKILL) after
    writing half of them, inside the write: the file holds none."""
    url = f"sqlite:///{tmp_path}/alectio.db"
    engine = Engine(open_storage(url))
    exp = engine.create_experiment(installed_test_model, initial=200, loops=2, labels="alectio")
    child = textwrap.dedent(
        f"""
        import os, signal
        import alectio_plugins.storage_sqlite as backend
        from alectio_core.engine import Engine
        from alectio_core.storage import open_storage

        written = 0
        dumps = backend._dumps

        def dying_dumps(value):
            global written
            written += 1
            if written == 100:  # the 100th event: the transaction is open, half of them are in it
                os.kill(os.getpid(), signal.SIGKILL)
            return dumps(value)

        engine = Engine(open_storage({url!r}))
        picked = engine.storage.get_selection({exp['id']!r}, 0).tolist()
        backend._dumps = dying_dumps
        engine.add_labels({exp['id']!r}, {{i: i % 10 for i in picked}}, source="killed")
        """
    )
    env = {"PYTHONPATH": str(test_site)}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert done.returncode == -9, done.stderr
    again = Engine(open_storage(url))
    assert again.label_history(exp["id"]) == [] and again.missing_labels(exp["id"], 0).size == 200


def test_selection_listeners(engine, fake_model, caplog):
    fake_model("listened", **three_classes())
    heard = []

    def broken(experiment, loop):
        raise RuntimeError("the labelling tool is down")

    engine.on_selection += [broken, lambda experiment, loop: heard.append((experiment["id"], loop))]
    exp = engine.create_experiment("listened", strategy="margin", initial=3, batch_size=2, loops=3, labels="alectio")
    eid = exp["id"]
    assert heard == [(eid, 0)]
    labelled(engine, eid, 0)
    assert engine.run_loop(eid, 0)["status"] == "done"  # a failing listener never fails the loop
    assert heard == [(eid, 0), (eid, 1)] and "the labelling tool is down" in caplog.text

    other = engine.create_experiment("listened", strategy=None, initial=3, loops=3)
    assert heard[-1] == (eid, 1)  # labels mode "plugin": no selection at creation
    engine.record_selection(other["id"], 0, [4, 2, 9])
    assert heard[-1] == (other["id"], 0)
    assert engine.storage.get_selection(other["id"], 0).tolist() == [2, 4, 9]  # no ranking: sorted


def test_selection_of_a_loop_that_has_none(engine, installed_test_model):
    exp = engine.create_experiment(installed_test_model, initial=10, loops=3, labels="alectio")
    with pytest.raises(NotFoundError, match="no selection for loop 1"):
        engine.selection(exp["id"], 1)
    with pytest.raises(NotFoundError):
        engine.missing_labels(exp["id"], 1)


class PreLabelsStorage(SQLiteStorage):
    """A backend written before labels and scores: the base class's
    ``add_labels``, ``list_labels`` and ``get_selection_scores``, and
    ``put_selection`` without ``scores``."""

    add_labels = Storage.add_labels
    list_labels = Storage.list_labels
    get_selection_scores = Storage.get_selection_scores

    def put_selection(self, experiment_id, loop, indices):  # type: ignore[override]
        super().put_selection(experiment_id, loop, indices)


def test_a_backend_written_before_labels(tmp_path, fake_model):
    engine = Engine(PreLabelsStorage(tmp_path / "old.db"))
    fake_model("old", **three_classes())
    exp = engine.create_experiment("old", strategy="entropy", initial=3, batch_size=2, loops=2)
    engine.run_loop(exp["id"], 0)  # the strategy's scores are dropped, its pick stored
    assert [r["score"] for r in engine.selection(exp["id"], 1)] == [None, None]
    with pytest.raises(StorageError) as refused:
        engine.create_experiment("old", initial=3, loops=2, labels="alectio", experiment_id="people")
    assert str(refused.value) == (
        f"the storage backend PreLabelsStorage ({engine.storage.url}) cannot store labels, which labels 'alectio' needs: "
        "it was written for an older alectio; see docs/storage-plugins.md"
    )
    assert [e["id"] for e in engine.storage.list_experiments()] == [exp["id"]]  # nothing stored


def test_a_model_whose_train_takes_no_labels_is_refused_labels_from_people(engine, fake_model):
    """Its train would never see what people sent (it would learn its own
    labels, or none): refused at creation, nothing stored."""
    fake_model("deaf", **three_classes(train=lambda labeled: None))
    with pytest.raises(ValidationError) as refused:
        engine.create_experiment("deaf", initial=3, loops=2, labels="alectio")
    assert str(refused.value) == (
        "model 'deaf' cannot learn labels from people: its train hook takes no 'labels' argument; "
        "add one (train(labeled, labels, ...)) or create the experiment with labels 'plugin'"
    )
    assert engine.storage.list_experiments() == []
    assert engine.create_experiment("deaf", initial=3, loops=2)["labels_mode"] == "plugin"
    fake_model("whole", **three_classes(train=lambda payload: None))  # payload holds labels too
    assert engine.create_experiment("whole", initial=3, loops=2, labels="alectio")["labels_mode"] == "alectio"
