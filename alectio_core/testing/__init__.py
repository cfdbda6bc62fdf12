"""Test suites and fixtures for plugin authors (and alectio's own tests).

* :class:`StorageContract`: the tests every storage backend must pass.
* :class:`ModelContract`: the tests a model plugin's hooks must pass.
* :class:`MotoS3`: an S3 server (moto) on 127.0.0.1, over real HTTP.
"""

import pytest

# Plain ``assert`` in the contracts reports its values, as in a test module;
# registered before the modules are imported, as pytest requires.
pytest.register_assert_rewrite("alectio_core.testing.storage_contract", "alectio_core.testing.model_contract")

from .model_contract import ModelContract, run_infer  # noqa: E402
from .moto import MotoS3  # noqa: E402
from .storage_contract import (  # noqa: E402
    JSON_SAMPLES,
    StorageContract,
    assert_chunks_equal,
    attempt_id,
    make_chunks,
    make_embedded_chunks,
    new_id,
    write_chunks,
)

__all__ = [
    "JSON_SAMPLES",
    "ModelContract",
    "MotoS3",
    "StorageContract",
    "assert_chunks_equal",
    "attempt_id",
    "make_chunks",
    "make_embedded_chunks",
    "new_id",
    "run_infer",
    "write_chunks",
]
