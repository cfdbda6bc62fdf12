"""``python -m alectio_digits_cnn.label``: an exported selection labelled in the terminal."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest

# The labeller needs no torch, but the package does (and scikit-learn probes it), so it skips with the rest.
pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from sklearn.datasets import load_digits  # noqa: E402

from alectio_digits_cnn.label import draw, label_file  # noqa: E402

EXPORTED = "index,reference,score,prediction,label,skip\n5,10,0.9,3,,\n6,11,0.8,1,,\n7,12,,,4,\n8,13,,,,\n"


def rows(path):
    with open(path, newline="") as f:
        return [(r["index"], r["label"], r["skip"]) for r in csv.DictReader(f)]


def test_each_unlabelled_digit_is_drawn_and_asked_for(tmp_path):
    path = tmp_path / "loop0.csv"
    path.write_text(EXPORTED)
    shown = io.StringIO()
    done = label_file(str(path), ask=io.StringIO("seven\n7\ns\nq\n"), out=shown)
    assert done == 2
    assert rows(path) == [("5", "7", ""), ("6", "", "true"), ("7", "4", ""), ("8", "", "")]  # 8 left for later
    text = shown.getvalue()
    assert "record 5 (1 of 3) (the model says 3):\n" + draw(load_digits().images[10]) in text
    assert text.count("digit 0-9, s to skip, q to stop: ") == 4  # 'seven' asked again


def test_from_dataset_fills_in_scikit_learns_labels_and_the_file_imports(tmp_path):
    path = tmp_path / "loop0.csv"
    path.write_text(EXPORTED)
    result = subprocess.run([sys.executable, "-m", "alectio_digits_cnn.label", str(path), "--from-dataset"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    target = load_digits().target
    assert rows(path) == [("5", str(target[10]), ""), ("6", str(target[11]), ""), ("7", "4", ""), ("8", str(target[13]), "")]
    from alectio_core.labels_io import read_labels

    # A bare csv cell is text: the engine reads it as the class name ("0".."9" here), then as an id.
    assert [r.label for r in read_labels(path.read_bytes(), str(path))] == [str(target[10]), str(target[11]), "4", str(target[13])]
