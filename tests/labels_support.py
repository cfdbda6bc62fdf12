"""What the labels-from-people tests share (``from labels_support import ...``):
a model that records the labels its ``train`` gets, and the two storages
(sqlite, and S3 on a moto server over HTTP) every test runs on."""

from __future__ import annotations

import numpy as np
import pytest

CLASSES = ["cat", "dog", "bird"]
POOL = 30


def people_model(fake_model, name: str = "people_lab", classes: list[str] = CLASSES) -> list[dict]:
    """Register ``name`` (pool of ``POOL`` records ``r0``..; classes
    ``classes``) and return the list its ``train`` appends
    ``{"labeled", "labels"}`` to on every call."""
    seen: list[dict] = []

    def train(labeled, labels):
        seen.append({"labeled": list(labeled), "labels": None if labels is None else dict(labels)})

    def infer(unlabeled, writer):
        for i in unlabeled:  # record i's most likely class is i % C, more surely for larger i
            row = np.zeros(len(classes), np.float32)
            row[i % len(classes)] = 1.0 + i / 10
            writer.add(i, row)

    fake_model(
        name,
        pool=POOL,
        train=train,
        infer=infer,
        test=lambda: {"predictions": [0, 1, 2, 0], "labels": [0, 1, 1, 0]},
        model_info=lambda: {"task": "classification", "labels": classes},
    )
    return seen


@pytest.fixture(params=["sqlite", "s3"])
def storage_url(request, tmp_path, monkeypatch):
    """A storage URL: a SQLite file, or a bucket on the module's moto server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/alectio.db"
    server = request.getfixturevalue("moto_s3")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALECTIO_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://{server.create_bucket()}/labels"
