"""``alectio init NAME``: a new model plugin package that works as generated.

The generated model is a softmax regression on seeded synthetic data (numpy
only), so ``pip install`` + ``alectio run NAME`` runs at once and shows a
learning curve that rises and a strategy that beats random; the comments say
what to replace with your own model and data.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The backport (a dependency) behaves the same on every Python we support.
import importlib_metadata as metadata

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

# Find the package and any subpackage added later (a hand-made list misses them).
[tool.setuptools.packages.find]
include = ["{name}*"]
'''

HOOKS = '''\
"""alectio hooks for the {name} model.

A softmax regression on seeded synthetic data, numpy only. The data is made
so that active learning shows: the learning curve rises over five loops, and
margin sampling beats random. Replace the data and the
model with yours; keep the hook names, the arguments you need, and the return
formats.
"""

import numpy as np

from alectio_core import hookimpl

CLASSES = ["a", "b", "c", "d", "e", "f"]
FEATURES = 8

# Your settings: the `models.{name}` section of alectio's config.yaml. Declared
# in model_info, so alectio fills in these defaults and a misspelled key is an
# error naming it.
SETTINGS = {{"seed": 0, "pool_size": 3000, "test_size": 1000, "steps": 300, "learning_rate": 0.5}}


def _data(config):
    """The training pool and the test set. Replace with your own loading.

    Points in a cube, labelled by a hidden linear rule. Most lie far from any
    class boundary, easy and redundant; accuracy depends on the few near one,
    which is why choosing what to label beats labelling at random.
    """
    rng = np.random.default_rng(config["seed"])
    rule = rng.normal(size=(FEATURES, len(CLASSES)))
    x = rng.uniform(-1.0, 1.0, size=(config["pool_size"] + config["test_size"], FEATURES))
    y = (x @ rule).argmax(axis=1)
    n = config["pool_size"]
    return x[:n], y[:n], x[n:], y[n:]


def _logits(weights, x):
    return x @ weights[:-1] + weights[-1]


@hookimpl
def model_info():
    return {{"task": "classification", "labels": CLASSES, "settings": SETTINGS}}


@hookimpl
def assign_index(config):
    pool_x, _, _, _ = _data(config)
    return [f"record-{{i}}" for i in range(len(pool_x))]


@hookimpl
def train(labeled, resume_from, ckpt_file, config):
    pool_x, pool_y, _, _ = _data(config)
    x, y = pool_x[labeled], pool_y[labeled]
    weights = np.zeros((FEATURES + 1, len(CLASSES)))  # last row: the biases
    if resume_from:  # start from the previous loop's model
        with np.load(resume_from) as previous:
            weights = previous["weights"]
    onehot = np.eye(len(CLASSES))[y]
    for _ in range(config["steps"]):  # gradient descent on the cross-entropy
        z = _logits(weights, x)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(y)
        weights[:-1] -= config["learning_rate"] * (x.T @ grad + 1e-3 * weights[:-1])
        weights[-1] -= config["learning_rate"] * grad.sum(axis=0)
    with open(ckpt_file, "wb") as f:
        np.savez(f, weights=weights)
    return {{"labels": [CLASSES[c] for c in y]}}


@hookimpl
def test(ckpt_file, config):
    _, _, test_x, test_y = _data(config)
    with np.load(ckpt_file) as f:
        predictions = _logits(f["weights"], test_x).argmax(axis=1)
    return {{"predictions": predictions.tolist(), "labels": test_y.tolist()}}


@hookimpl
def infer(unlabeled, ckpt_file, config, writer):
    pool_x, _, _, _ = _data(config)
    with np.load(ckpt_file) as f:
        weights = f["weights"]
    for batch in np.array_split(np.asarray(unlabeled), max(1, len(unlabeled) // 10_000)):
        writer.extend(batch, _logits(weights, pool_x[batch]))  # pre-activation outputs
'''

TEST = '''\
"""The {name} model honours alectio's model contract: its hooks are called as
alectio calls them, and what they return is checked as alectio checks it.
Install the package first (pip install -e .). Tests of your own (accuracy,
your data) go beside it."""

from alectio_core.testing import ModelContract


class Test{cls}(ModelContract):
    model = "{name}"
    config = {{"pool_size": 300, "test_size": 100, "steps": 50}}  # small, so the contract runs quickly
    deterministic = True  # the data and the training depend on config["seed"] only
'''

README = '''\
# {dist}

An alectio model plugin: `{name}`.

    pip install -e .
    alectio run {name} --loops 5 --initial 50 --batch 50 --strategy margin
    alectio run {name} --loops 5 --initial 50 --batch 50 --strategy random   # to compare

The generated model is a softmax regression on synthetic data where most
records are easy and a few decide the accuracy: the curve rises loop after
loop, and margin sampling gets there with fewer labels than
random. Edit `{name}/hooks.py`: replace the data and the model with your own.

Settings come from the `models.{name}` section of alectio's `config.yaml`,
handed to each hook as `config`. `model_info` declares them with their
defaults (`SETTINGS`), so alectio fills in the defaults and rejects a
misspelled key; add yours there.

`pytest tests` runs alectio's model contract on the installed model
(`tests/test_hooks.py`): the hooks are called and checked as alectio does.
'''

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def collision(name: str) -> str | None:
    """What installing the package would clash with, in one line, or None:
    an installed distribution of the same name, one that already provides
    the import name or the model name (``pip install`` would replace or
    shadow it)."""
    dist = f"alectio-{name.replace('_', '-')}"
    try:
        found = metadata.distribution(dist)
        return f"a distribution named {found.metadata['Name']} ({found.version}) is already installed"
    except metadata.PackageNotFoundError:
        pass
    providers = metadata.packages_distributions().get(name)
    if providers:
        owner = metadata.distribution(providers[0])
        return f"the import name {name!r} is already provided by the installed distribution {owner.metadata['Name']} ({owner.version})"
    for ep in metadata.entry_points(group="alectio.models", name=name):
        installer = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        return f"a model named {name!r} is already installed by the distribution {installer}"
    if name in sys.stdlib_module_names:
        return f"the import name {name!r} is a module of Python's standard library"
    return None


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
        path.write_text(template.format(name=name, dist=dist, cls=name.title().replace("_", "")))
    return root
