"""One local Ray cluster for the whole test session (``ray_cluster``).

It starts after the test model packages are on ``PYTHONPATH`` (the
``test_site`` fixture): Ray's workers inherit that environment, so they find
the models by entry point, as a cluster's nodes find the packages installed
on them. An S3 server (moto, over HTTP) is started with it, and its
variables are given to the workers only (Ray's ``runtime_env``): a worker
opens S3 storage by its URL through boto3's standard chain, as a node
configured for the bucket does, while this process's environment is left
as the other tests expect it.
"""

from __future__ import annotations

import os

import pytest

from alectio_core.testing import MotoS3


@pytest.fixture(scope="session")
def ray_s3(test_site):
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(test_site, ray_s3):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'alectio[ray]'")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster: no token note
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": ray_s3.env})
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_storage_env(ray_s3, monkeypatch):
    """This process's S3 variables for one test (the workers have them from the start)."""
    for key, value in ray_s3.env.items():
        monkeypatch.setenv(key, value)
    return ray_s3
