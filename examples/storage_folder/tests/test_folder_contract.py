"""The folder backend passes alectio's storage contract.

Run after ``pip install -e examples/storage_folder``: the backend is opened
by URL, through the plugin's entry point, like any user would.
"""

import pytest

from alectio_core.storage import open_storage
from alectio_core.testing import StorageContract


class TestFolderStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        store = open_storage(f"folder://{tmp_path}/store")
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, tmp_path):
        return lambda: open_storage(f"folder://{tmp_path}/store")
