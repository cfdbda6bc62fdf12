"""Shared by the labeller tests (``from labelling_support import pets``)."""

from __future__ import annotations

import pytest

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def pets(fake_model):
    """A 3-class model over 30 records named ``r0``..``r29``; the list it
    returns gets the ``labels`` each ``train`` was given."""
    trained = []

    def train(labeled, labels, ckpt_file):
        trained.append(labels)
        open(ckpt_file, "w").close()

    def infer(unlabeled, writer):
        for i in unlabeled:
            writer.add(i, [float(i % 3), float(i % 5) / 2, 0.5])

    fake_model("pets", pool=30, train=train, infer=infer, model_info=lambda: {"task": "classification", "labels": CLASSES})
    return trained
