"""Shared fixtures.

The model plugin packages ``tests/packages/alectio-test-digits``,
``alectio-test-slow`` and ``alectio-test-ray`` (the executor tests') are
pip-installed for real, once per session, into a temporary folder on the path (``installer.py``), so every test that uses the
``digits_lr`` model finds it through its entry point, and nothing is left
installed in the environment running the tests.
"""

from __future__ import annotations

import types

import pytest
from installer import PACKAGES, install_aside, installed_packages  # noqa: F401 (the first two: for test modules)

from alectio_core import plugins
from alectio_core.engine import Engine
from alectio_core.storage import open_storage
from alectio_core.testing import MotoS3


@pytest.fixture(scope="session", autouse=True)
def test_site():
    """The folder the test model packages are installed in, on the path."""
    with installed_packages("alectio-test-digits", "alectio-test-slow", "alectio-test-ray") as site:
        yield site


@pytest.fixture(scope="session")
def installed_test_model(test_site):
    """The digits model, installed the way a user would."""
    return "digits_lr"


@pytest.fixture
def storage(tmp_path):
    store = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    yield store
    store.close()


@pytest.fixture
def engine(storage):
    return Engine(storage)


@pytest.fixture(params=["sqlite", "s3"])
def any_engine(request, tmp_path, monkeypatch):
    """An engine on a SQLite file, then on S3 (moto, over HTTP)."""
    if request.param == "sqlite":
        store = open_storage(f"sqlite:///{tmp_path}/alectio.db")
    else:
        server = request.getfixturevalue("moto_s3")
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        store = open_storage(f"s3://{server.create_bucket()}/al", {"cache_dir": str(tmp_path / "cache")})
    yield Engine(store)
    store.close()


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
        module.train = lambda labeled, labels: {"labels": [i % 2 for i in labeled]}  # labels: from people, or None
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


@pytest.fixture(scope="module")
def moto_s3():
    """An S3 server (moto) on 127.0.0.1 over HTTP, one per test module."""
    server = MotoS3().start()
    yield server
    server.stop()
