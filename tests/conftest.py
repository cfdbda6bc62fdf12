"""Shared fixtures.

The suite pip-installs the model plugin package ``tests/packages/
alectio-test-digits`` for real at the start of the session, so every test
that uses the ``digits_lr`` model found it through its entry point.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from alectio_core import plugins
from alectio_core.engine import Engine
from alectio_core.storage import open_storage

PACKAGES = Path(__file__).parent / "packages"


def pip_install(path: Path, *extra: str, python: str = sys.executable) -> None:
    """pip-install a package from a copy, so no build output lands in the tree."""
    with tempfile.TemporaryDirectory(prefix="alectio-pkg-") as folder:
        copy = Path(folder) / path.name
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", *extra, str(copy)],
            check=True,
            env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )


def install_aside(path: Path, target: Path) -> dict:
    """pip-install a package into ``target`` and return an environment whose
    Python sees it on top of this one (as a user's extra install would)."""
    pip_install(path, "--target", str(target))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="session", autouse=True)
def installed_test_model():
    """Install the digits model package the way a user would."""
    pip_install(PACKAGES / "alectio-test-digits")
    importlib.invalidate_caches()
    plugins.reset_plugins()
    yield "digits_lr"


@pytest.fixture
def storage(tmp_path):
    store = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    yield store
    store.close()


@pytest.fixture
def engine(storage):
    return Engine(storage)


@pytest.fixture
def fake_model():
    """Register model hooks given as functions under a name, for one test.

    ``fake_model("name", train=fn, test=fn, ...)``; hooks left out get
    working defaults over a pool of ``pool`` records.
    """
    registry = plugins.load_plugins()
    added = []

    def make(name: str, pool: int = 20, **hooks):
        module = types.ModuleType(name)
        module.assign_index = lambda: [f"r{i}" for i in range(pool)]
        module.train = lambda labeled: {"labels": [i % 2 for i in labeled]}
        module.test = lambda: {"predictions": [0, 1, 1, 0], "labels": [0, 1, 0, 0]}

        def infer(unlabeled, writer):
            for i in unlabeled:
                writer.add(i, [float(i % 3), 1.0])

        module.infer = infer
        for hook, fn in hooks.items():
            setattr(module, hook, fn)
        assert plugins.register_model(registry, name, lambda: module), registry.errors[-1]
        added.append(name)
        return registry.models[name]

    yield make
    for name in added:
        registry.models.pop(name, None)
