"""pip-install packages for the tests, never into the Python running them.

Test packages are installed the way a user installs a plugin (pip, then
found through their entry points), but with ``--target`` into a temporary
folder: the tests put that folder on ``sys.path``, subprocesses get it on
``PYTHONPATH``, and when the folder goes nothing is left behind in the
user's environment.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alectio_core import plugins

PACKAGES = Path(__file__).parent / "packages"

# Build output, caches and environments are not part of a source tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache"
)


def copy_source(source: Path, folder: Path) -> Path:
    """A copy of a project's source tree in ``folder``, so that building it
    leaves no ``build/`` or ``*.egg-info`` in the original."""
    copy = Path(folder) / source.name
    shutil.copytree(source, copy, ignore=NOT_SOURCE)
    return copy


def pip_install(target: Path, *sources: Path) -> Path:
    """pip-install the projects at ``sources`` into the folder ``target``."""
    with tempfile.TemporaryDirectory(prefix="alectio-pkg-") as folder:
        copies = [str(copy_source(source, Path(folder))) for source in sources]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", str(target), *copies],
            check=True,
            env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    return Path(target)


def with_path(*folders: Path, env: dict | None = None) -> dict:
    """``env`` (default: this process's) with ``folders`` first on ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*map(str, folders), env.get("PYTHONPATH")]))
    return env


def install_aside(path: Path, target: Path) -> dict:
    """pip-install a package into ``target`` and return an environment whose
    Python sees it on top of this one (as a user's extra install would)."""
    return with_path(pip_install(target, path))


@contextlib.contextmanager
def on_path(folder: Path):
    """Make what is installed in ``folder`` visible to this process (plugins
    found again) and to its subprocesses, until the block ends."""
    folder = str(folder)
    saved = os.environ.get("PYTHONPATH")
    sys.path.insert(0, folder)
    os.environ["PYTHONPATH"] = with_path(folder)["PYTHONPATH"]
    importlib.invalidate_caches()
    plugins.reset_plugins()
    try:
        yield Path(folder)
    finally:
        sys.path.remove(folder)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(folder + os.sep):
                del sys.modules[name]
        importlib.invalidate_caches()
        plugins.reset_plugins()


@contextlib.contextmanager
def installed_packages(*names: str):
    """The named packages of ``tests/packages``, installed once into a
    temporary folder that is on the path for the block and removed after."""
    with tempfile.TemporaryDirectory(prefix="alectio-test-site-") as folder:
        site = pip_install(Path(folder), *(PACKAGES / name for name in names))
        with on_path(site):
            yield site
