"""The storage contract (``alectio_core.testing``) against every backend we ship:
``sqlite``, ``s3`` (a moto server over HTTP) and the example plugin package
``examples/storage_folder``, pip-installed here and found by its entry point.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from installer import on_path, pip_install

from alectio_core import plugins
from alectio_core.storage import open_storage
from alectio_core.testing import StorageContract

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "storage_folder"


# ----------------------------------------------------------------------
# sqlite
# ----------------------------------------------------------------------


class TestSQLiteContract(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path):
        store = open_storage(f"sqlite:///{tmp_path}/alectio.db")
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, tmp_path):
        return lambda: open_storage(f"sqlite:///{tmp_path}/alectio.db")


# ----------------------------------------------------------------------
# s3 against a real S3 server over HTTP
# ----------------------------------------------------------------------


class TestS3Contract(StorageContract):
    @pytest.fixture
    def s3_url(self, moto_s3, monkeypatch):
        for key, value in moto_s3.env.items():
            monkeypatch.setenv(key, value)
        bucket = moto_s3.create_bucket()
        return f"s3://{bucket}/team/alectio"

    @pytest.fixture
    def storage(self, s3_url, tmp_path):
        store = open_storage(s3_url, {"cache_dir": str(tmp_path / "machine-a")})
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, s3_url, tmp_path):
        # another machine: same bucket, its own (empty) checkpoint cache
        return lambda: open_storage(s3_url, {"cache_dir": str(tmp_path / "machine-b")})


# ----------------------------------------------------------------------
# the example plugin package, installed for real
# ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_plugin(tmp_path_factory):
    """``pip install`` examples/storage_folder into a fresh target folder and
    put it on the path; alectio finds it through its entry point."""
    with on_path(pip_install(tmp_path_factory.mktemp("folder-plugin"), EXAMPLE)) as target:
        yield target


def test_folder_plugin_is_discovered_through_its_entry_point(folder_plugin):
    report = {p["name"]: p for p in plugins.load_plugins().plugins}
    assert report["folder"]["distribution"] == "alectio-storage-folder"
    assert report["folder"]["kind"] == "storage"
    assert "folder" in plugins.get_storage_factories()


class TestFolderContract(StorageContract):
    @pytest.fixture
    def storage(self, folder_plugin, tmp_path):
        store = open_storage(f"folder://{tmp_path}/store")
        assert type(store).__module__ == "alectio_storage_folder"
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, tmp_path):
        return lambda: open_storage(f"folder://{tmp_path}/store")


def test_unknown_scheme_names_the_installed_ones():
    from alectio_core.errors import UnknownStorageError

    with pytest.raises(UnknownStorageError, match=r"installed: .*s3.*sqlite"):
        open_storage(f"nosuch://{uuid.uuid4().hex}")


# ----------------------------------------------------------------------
# stored names that become paths
# ----------------------------------------------------------------------


def test_folder_checkpoint_reference_leading_out_of_the_folder_is_refused(folder_plugin, tmp_path):
    from alectio_core.errors import StorageError

    store = open_storage(f"folder://{tmp_path}/store")
    store.create_experiment({"id": "e1"})
    (tmp_path / "secret").write_text("not a checkpoint")
    store.put_result("e1", 0, "a1", "checkpoint", {"path": "../secret", "bytes": 16})
    store.commit_loop("e1", 0, "a1", {"loop": 0, "status": "done"})
    with pytest.raises(StorageError, match=r"refusing checkpoint reference '\.\./secret'"):
        store.fetch_checkpoint("e1", 0)


def test_contained_refuses_every_way_out(tmp_path):
    from alectio_core.errors import StorageError
    from alectio_core.storage import contained

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    assert contained(root, "sub/file.bin") == (root / "sub" / "file.bin").resolve()
    for name in ("../x", "sub/../../x", "/etc/passwd", "out/x", "", ".", "sub/.."):
        with pytest.raises(StorageError, match=f"refusing object key {name!r}"):
            contained(root, name, f"object key {name!r}")
