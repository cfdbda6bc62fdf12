"""``alectio init NAME``: a new model plugin package that works as generated.

The generated model is a nearest-centroid classifier on seeded synthetic
data (numpy only), so ``pip install`` + ``alectio run NAME`` runs at once;
the comments say what to replace with your own model and data.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ValidationError

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An alectio model plugin: {name}."
dependencies = ["alectio", "numpy"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points."alectio.models"]
{name} = "{name}.hooks"

[tool.setuptools]
packages = ["{name}"]
'''

HOOKS = '''\
"""alectio hooks for the {name} model.

Replace the synthetic data and the nearest-centroid model with yours; keep
the hook names, the arguments you need, and the return formats.
"""

import numpy as np

from alectio_core import hookimpl

CLASSES = ["a", "b", "c"]


def _data(config):
    """The training pool and the test set. Replace with your own loading."""
    rng = np.random.default_rng(int(config.get("seed", 0)))
    centres = rng.normal(scale=3.0, size=(len(CLASSES), 8))
    y = rng.integers(len(CLASSES), size=int(config.get("pool_size", 2000)) + 500)
    x = centres[y] + rng.normal(size=(y.size, 8))
    return x[:-500], y[:-500], x[-500:], y[-500:]


def _logits(centroids, x):
    return -((x[:, None, :] - centroids[None]) ** 2).sum(axis=2)


@hookimpl
def model_info(config):
    return {{"task": "classification", "labels": CLASSES}}


@hookimpl
def assign_index(config):
    pool_x, _, _, _ = _data(config)
    return [f"record-{{i}}" for i in range(len(pool_x))]


@hookimpl
def train(labeled, resume_from, ckpt_file, config):
    pool_x, pool_y, _, _ = _data(config)
    x, y = pool_x[labeled], pool_y[labeled]
    centroids = np.zeros((len(CLASSES), x.shape[1]))
    if resume_from:  # start from the previous loop's model
        with np.load(resume_from) as previous:
            centroids = previous["centroids"]
    for c in range(len(CLASSES)):
        if (y == c).any():
            centroids[c] = x[y == c].mean(axis=0)
    with open(ckpt_file, "wb") as f:
        np.savez(f, centroids=centroids)
    return {{"labels": [CLASSES[c] for c in y]}}


@hookimpl
def test(ckpt_file, config):
    _, _, test_x, test_y = _data(config)
    with np.load(ckpt_file) as f:
        predictions = _logits(f["centroids"], test_x).argmax(axis=1)
    return {{"predictions": predictions.tolist(), "labels": test_y.tolist()}}


@hookimpl
def infer(unlabeled, ckpt_file, config, writer):
    pool_x, _, _, _ = _data(config)
    with np.load(ckpt_file) as f:
        centroids = f["centroids"]
    for batch in np.array_split(np.asarray(unlabeled), max(1, len(unlabeled) // 10_000)):
        writer.extend(batch, _logits(centroids, pool_x[batch]))  # pre-activation outputs
'''

TEST = '''\
"""Call the hooks the way alectio does."""

import numpy as np

from {name} import hooks


class Writer:
    def __init__(self):
        self.rows = {{}}

    def extend(self, indices, values):
        self.rows.update(zip(np.asarray(indices).tolist(), np.asarray(values)))


def test_one_loop(tmp_path):
    pool = len(hooks.assign_index({{}}))
    labeled = list(range(0, pool, 10))
    ckpt = str(tmp_path / "loop_0.ckpt")
    hooks.train(labeled=labeled, resume_from=None, ckpt_file=ckpt, config={{}})
    result = hooks.test(ckpt_file=ckpt, config={{}})
    assert len(result["predictions"]) == len(result["labels"])
    unlabeled = sorted(set(range(pool)) - set(labeled))
    writer = Writer()
    hooks.infer(unlabeled=unlabeled, ckpt_file=ckpt, config={{}}, writer=writer)
    assert sorted(writer.rows) == unlabeled
'''

README = '''\
# {dist}

An alectio model plugin: `{name}`.

    pip install -e .
    alectio run {name} --loops 5 --initial 50 --batch 50

Edit `{name}/hooks.py`: replace the synthetic data and the nearest-centroid
model with your own. Settings come from the `models.{name}` section of
alectio's `config.yaml`, handed to each hook as `config`.
'''

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def scaffold(name: str, parent: Path) -> Path:
    """Write the package ``alectio-NAME`` under ``parent`` and return its folder."""
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"invalid model name {name!r}: use lowercase letters, digits and '_', starting with a letter"
        )
    dist = f"alectio-{name.replace('_', '-')}"
    root = parent / dist
    if root.exists():
        raise ValidationError(f"{root} already exists; pick another name or remove it")
    files = {
        "pyproject.toml": PYPROJECT,
        f"{name}/__init__.py": '"""The {name} alectio model plugin."""\n',
        f"{name}/hooks.py": HOOKS,
        "tests/test_hooks.py": TEST,
        "README.md": README,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(name=name, dist=dist))
    return root
