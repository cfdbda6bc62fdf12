"""``alectio export`` and ``alectio labels import`` as a user meets them,
on sqlite and on S3 (moto over HTTP): a selection out, labelled in a file,
back in; a bad file refused whole with every bad row named, nothing stored."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from labels_support import CLASSES, POOL, people_model, storage_url  # noqa: F401 (fixture)

from alectio_core.cli import cli
from alectio_core.engine import Engine
from alectio_core.storage import open_storage


@pytest.fixture
def setup(storage_url, fake_model):
    """A labels-mode experiment on ``storage_url``, and the model's train calls."""
    seen = people_model(fake_model)
    storage = open_storage(storage_url)
    engine = Engine(storage)
    experiment = engine.create_experiment("people_lab", labels="alectio", initial=6, batch_size=4, loops=3, strategy="margin")
    yield engine, experiment["id"], seen
    storage.close()


def alectio(*args, storage_url):
    result = CliRunner().invoke(cli, [*args, "--storage", storage_url])
    return result


def test_export_label_import_and_the_next_loop_trains_on_the_file(setup, storage_url, tmp_path):
    engine, eid, seen = setup
    out = tmp_path / "batch.csv"
    result = alectio("export", eid, "-o", str(out), storage_url=storage_url)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"loop 0 of experiment {eid}: 6 records (0 labelled, 0 skipped) written to {out} as csv\n"
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["index", "reference", "score", "prediction", "label", "skip"]
    assert [r["reference"] for r in rows] == [f"r{r['index']}" for r in rows]
    picked = [int(r["index"]) for r in rows]

    # A person fills in the label column: names or ids; skips the last record.
    for r, label in zip(rows, ["dog", "2", "cat", "0", "bird", ""]):
        r["label"] = label
    rows[-1]["skip"] = "true"
    filled = io.StringIO()
    writer = csv.DictWriter(filled, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    out.write_text(filled.getvalue())

    result = alectio("labels", "import", eid, str(out), storage_url=storage_url)
    assert result.exit_code == 0, result.output
    assert result.output == "stored 5 labels and 1 skip\nloop 0 has every label it needs\n"
    expected = dict(zip(picked[:5], [1, 2, 0, 0, 2]))
    assert {e["index"]: e["label"] for e in engine.label_history(eid) if not e["skip"]} == expected
    assert {(e["source"], e["loop"]) for e in engine.label_history(eid)} == {("cli", 0)}

    engine.run_loop(eid, 0)
    assert seen[-1] == {"labeled": sorted(expected), "labels": expected}

    tasks_file = tmp_path / "tasks.json"
    result = alectio("export", eid, "-o", str(tasks_file), storage_url=storage_url)  # the next loop, from the extension: labelstudio
    assert result.exit_code == 0, result.output
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 4
    first = tasks[0]
    assert first["data"] == {"reference": f"r{first['data']['alectio_index']}", "alectio_index": first["data"]["alectio_index"]}
    prediction = first["predictions"][0]
    assert prediction["model_version"] == f"{eid}/1" and isinstance(prediction["score"], float)
    assert prediction["result"][0]["value"] == {"choices": [CLASSES[first["data"]["alectio_index"] % 3]]}

    result = alectio("export", eid, "--loop", "0", "--format", "jsonl", storage_url=storage_url)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    names = {i: CLASSES[c] for i, c in expected.items()}  # exported as class names, as people type them
    assert [(r["index"], r["label"], r["skip"]) for r in lines] == [(i, names.get(i), i == picked[5]) for i in picked]


def test_class_names_that_are_numbers_round_trip_through_a_csv(storage_url, fake_model, tmp_path):
    """Star ratings named "1".."5": a person types a name, or copies the
    exported prediction into the label column; either way the class is
    the one named, never the one whose id the name happens to spell."""
    people_model(fake_model, "stars", classes=["1", "2", "3", "4", "5"])
    engine = Engine(open_storage(storage_url))
    eid = engine.create_experiment("stars", labels="alectio", initial=6, batch_size=4, loops=3, strategy="margin")["id"]
    out = tmp_path / "loop0.csv"
    assert alectio("export", eid, "-o", str(out), storage_url=storage_url).exit_code == 0
    picked = [int(r["index"]) for r in csv.DictReader(out.open())]
    out.write_text("index,label\n" + "".join(f"{i},1\n" for i in picked))  # every one typed as "1"
    result = alectio("labels", "import", eid, str(out), storage_url=storage_url)
    assert result.exit_code == 0, result.output
    assert {e["index"]: e["label"] for e in engine.label_history(eid)} == {i: 0 for i in picked}
    engine.run_loop(eid, 0)

    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"loop1.{fmt}"
        assert alectio("export", eid, "-o", str(out), storage_url=storage_url).exit_code == 0
        if fmt == "csv":
            rows = list(csv.DictReader(out.open()))
            for r in rows:
                r["label"] = r["prediction"]
            filled = io.StringIO()
            writer = csv.DictWriter(filled, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            out.write_text(filled.getvalue())
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            out.write_text("".join(json.dumps({**r, "label": r["prediction"]}) + "\n" for r in rows))
        assert [r["prediction"] for r in rows] == [str(int(r["index"]) % 5 + 1) for r in rows]  # the predicted class's name
        result = alectio("labels", "import", eid, str(out), storage_url=storage_url)
        assert result.exit_code == 0, result.output
        predicted = {int(r["index"]): int(r["index"]) % 5 for r in rows}  # record i's model predicts class id i % 5
        assert {i: e["label"] for i, e in engine.labels(eid).items() if i in predicted} == predicted
    engine.storage.close()


def test_a_bad_file_is_refused_whole_every_row_named_and_nothing_stored(setup, storage_url, tmp_path):
    engine, eid, _ = setup
    picked = engine.selection(eid, 0)
    first, second, third = (r["index"] for r in picked[:3])
    unselected = next(i for i in range(POOL) if i not in {r["index"] for r in picked})
    bad = tmp_path / "labels.csv"
    bad.write_text(f"index,label\n{first},dog\n{second},fish\n{first},cat\n{unselected},1\n999,0\n{third},\"[1]\"\n")
    result = alectio("labels", "import", eid, str(bad), storage_url=storage_url)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [  # every bad row in one report, in the file's order
        f"Error: {bad}: 5 bad rows, nothing stored:",
        f"  line 3 (index {second}): label 'fish' is not a classification label: 'fish' is not one of the experiment's labels ('cat', 'dog', 'bird')",
        f"  line 4 (index {first}): duplicate row: index {first} is on line 2 too",
        f"  line 5 (index {unselected}): index {unselected} is in no selection of experiment {eid!r}; only selected records take labels",
        f"  line 6 (index 999): index 999 is outside the pool 0..{POOL - 1}",
        f"  line 7 (index {third}): label [1] is not a classification label: a class must be a class id or name, got list",
    ]

    bad.write_text(f"index,label\n{first},dog\n{second},fish\n{unselected},1\n999,0\n{third},\"[1]\"\n")
    result = alectio("labels", "import", eid, str(bad), storage_url=storage_url)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {bad}: 4 bad rows, nothing stored:",
        f"  line 3 (index {second}): label 'fish' is not a classification label: 'fish' is not one of the experiment's labels ('cat', 'dog', 'bird')",
        f"  line 4 (index {unselected}): index {unselected} is in no selection of experiment {eid!r}; only selected records take labels",
        f"  line 5 (index 999): index 999 is outside the pool 0..{POOL - 1}",
        f"  line 6 (index {third}): label [1] is not a classification label: a class must be a class id or name, got list",
    ]
    assert engine.label_history(eid) == []


def test_import_of_an_unknown_experiment_or_a_missing_file_is_one_line(setup, storage_url, tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text('{"index": 1, "label": 0}\n')
    result = alectio("labels", "import", "nope", str(good), storage_url=storage_url)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "nope" in result.output
    result = alectio("labels", "import", setup[1], str(tmp_path / "missing.csv"), storage_url=storage_url)
    assert result.exit_code == 2 and "No such file or directory" in result.output


def test_help_shows_the_formats_and_the_workflow():
    for command in (["export", "--help"], ["labels", "import", "--help"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0
        assert "alectio labels import ID batch.csv" in result.output
    assert '{"index": 8, "skip": true}' in CliRunner().invoke(cli, ["labels", "import", "--help"]).output
    assert "csv|jsonl|labelstudio" in CliRunner().invoke(cli, ["export", "--help"]).output
    listed = CliRunner().invoke(cli, ["--help"]).output.split("Commands:", 1)[1].split()
    assert "export" in listed and "labels" in listed


def test_run_with_labels_from_people_stops_for_labels_and_resumes(storage_url, fake_model, tmp_path):
    seen = people_model(fake_model)
    args = ["run", "people_lab", "--labels", "alectio", "--initial", "6", "--batch", "4", "--loops", "2", "--strategy", "margin"]
    result = alectio(*args, storage_url=storage_url)
    assert result.exit_code == 0, result.output
    eid = result.stderr.split()[1].rstrip(":")
    assert result.stderr.splitlines()[1:] == [
        "loop 0 waits for people's labels: 6 of its records have none yet; label or skip them, then go on:",
        f"  alectio export {eid} --storage {storage_url} -o loop0.csv     # its records, to label in any tool",
        f"  alectio labels import {eid} loop0.csv --storage {storage_url}",
        f"  continue with: alectio run people_lab --resume {eid} --storage {storage_url}",
    ]
    assert result.stdout == "" and seen == []

    batch = tmp_path / "loop0.jsonl"
    assert alectio("export", eid, "-o", str(batch), storage_url=storage_url).exit_code == 0
    rows = [json.loads(line) for line in batch.read_text().splitlines()]
    batch.write_text("".join(json.dumps({"index": r["index"], "label": CLASSES[r["index"] % 3]}) + "\n" for r in rows))
    assert alectio("labels", "import", eid, str(batch), storage_url=storage_url).exit_code == 0

    conflict = alectio("run", "people_lab", "--resume", eid, "--labels", "plugin", storage_url=storage_url)
    assert conflict.exit_code == 1
    assert conflict.output == f"Error: --labels plugin conflicts with experiment {eid!r}: it was created with --labels alectio\n"

    result = alectio("run", "people_lab", "--resume", eid, storage_url=storage_url)
    assert result.exit_code == 0, result.output
    assert seen == [{"labeled": sorted(r["index"] for r in rows), "labels": {r["index"]: r["index"] % 3 for r in rows}}]
    assert "loop 1 waits for people's labels: 4 of its records have none yet" in result.stderr
    assert result.stdout.splitlines()[-1].split()[:2] == ["0", "6"]  # the curve: loop 0, 6 labeled


def test_after_the_last_loop_export_and_import_say_so(storage_url, fake_model, tmp_path):
    people_model(fake_model)
    storage = open_storage(storage_url)
    engine = Engine(storage)
    eid = engine.create_experiment("people_lab", labels="alectio", initial=3, loops=1, strategy="margin")["id"]
    picked = [r["index"] for r in engine.selection(eid, 0)]
    batch = tmp_path / "loop0.jsonl"
    batch.write_text("".join(json.dumps({"index": i, "label": 0}) + "\n" for i in picked))
    assert alectio("labels", "import", eid, str(batch), storage_url=storage_url).output.endswith("loop 0 has every label it needs\n")
    engine.run_loop(eid, 0)
    storage.close()
    result = alectio("export", eid, storage_url=storage_url)
    assert result.exit_code == 1
    assert result.output == f"Error: experiment {eid!r} has run all of its 1 loops: no selection waits for labels (--loop K exports loop K's)\n"
    again = alectio("labels", "import", eid, str(batch), storage_url=storage_url)  # a correction, after the fact
    assert again.output == f"stored 3 labels and 0 skips\nexperiment {eid} has run all of its 1 loops\n"
