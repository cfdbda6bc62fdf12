"""What ``pip install`` gives a user, and what the test suite leaves behind.

The wheels of alectio and of every example hold each file of their source
packages; the installed ``alectio`` command works from a folder outside this
checkout (so nothing is imported from it); the test packages live only in
the suite's temporary folder; the examples skip, saying why, without torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import requests
from installer import copy_source
from server_support import free_port, wait_for

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/pyproject.toml"))
TORCH_EXAMPLES = ["image_classification", "object_detection", "topic_classification"]
BUILTINS = {
    "sqlite", "s3", "metrics_classification", "metrics_detection", "metrics_segmentation", "metrics_regression",
    "strategy_random", "strategy_uncertainty", "strategy_kcenter",
    "stopping_stabilizing", "stopping_uncertainty", "stopping_plateau",
    "strategy_coreset", "strategy_badge", "strategy_typiclust", "strategy_bald",
}


def packages(project: Path) -> list[Path]:
    """The project's top-level import packages."""
    return sorted(path for path in project.iterdir() if (path / "__init__.py").is_file())


def package_files(project: Path) -> set[str]:
    """Every file of the project's packages, as its wheel names it."""
    return {
        path.relative_to(project).as_posix()
        for package in packages(project)
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def distribution_name(project: Path) -> str:
    return tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"]


def plain_env(**extra: str) -> dict:
    """A user's environment: no PYTHONPATH from the suite, no config file."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "ALECTIO_CONFIG": "", **extra}


# -- the wheels ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("project", [ROOT, *EXAMPLES], ids=lambda p: "alectio" if p == ROOT else p.name)
def test_the_wheel_holds_every_file_of_its_packages(project, tmp_path):
    expected = package_files(project)
    assert expected, f"no package found in {project}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(copy_source(project, tmp_path))],
        check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    missing = expected - set(zipfile.ZipFile(wheel).namelist())
    assert not missing, f"{wheel.name} lacks {sorted(missing)}"


# -- the installed command, from outside the checkout ---------------------------


# Run by the command's Python from outside the checkout: for each distribution
# given with its packages, whether and how it is installed, its entry points,
# and where its packages are imported from.
INSPECT = """
import importlib, importlib.metadata as m, json, sys
seen = {}
for name, modules in json.loads(sys.argv[1]).items():
    try:
        dist = m.distribution(name)
    except m.PackageNotFoundError:
        continue
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    seen[name] = {
        "editable": url.get("dir_info", {}).get("editable", False),
        "entry_points": sorted(ep.name for ep in dist.entry_points if ep.group.startswith("alectio.")),
        "files": {module: importlib.import_module(module).__file__ for module in modules},
    }
print(json.dumps(seen))
"""


def installed(env: dict, cwd: Path) -> dict:
    """What the user's Python sees of alectio and of each example."""
    wanted = {distribution_name(p): [m.name for m in packages(p)] for p in [ROOT, *EXAMPLES]}
    wanted["alectio"].append("alectio_core.server")
    result = subprocess.run([sys.executable, "-c", INSPECT, json.dumps(wanted)], capture_output=True, text=True,
                            timeout=120, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def alectio(tmp_path, test_site):
    """Run the ``alectio`` console script this Python has installed, in an
    empty folder, seeing the test models only through ``PYTHONPATH``."""
    script = Path(sysconfig.get_path("scripts")) / "alectio"
    assert script.is_file(), f"no alectio command in {script.parent}: pip install . first"
    env = plain_env(PYTHONPATH=str(test_site))

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path, env=env, **kw)
        assert result.returncode == 0, f"alectio {' '.join(args)}: {result.stderr}"
        return result

    run.script, run.env, run.cwd = script, env, tmp_path
    return run


@pytest.mark.slow
def test_the_installed_command_imports_nothing_from_the_checkout(alectio, record_property):
    """The command's Python finds alectio's modules and each installed
    example's where pip put them: in its site-packages when installed
    non-editable (as CI installs them), not in this checkout."""
    seen = installed(alectio.env, alectio.cwd)
    assert "alectio" in seen
    record_property("alectio_core_imported_from", seen["alectio"]["files"]["alectio_core"])
    print("alectio_core imported from", seen["alectio"]["files"]["alectio_core"])
    site = Path(sysconfig.get_path("purelib")).resolve()
    for name, dist in seen.items():
        if dist["editable"]:  # pip install -e: its modules stay where they are
            continue
        for module, where in dist["files"].items():
            assert Path(where).resolve().is_relative_to(site), f"{module} imported from {where}, not from {site}"


@pytest.mark.slow
def test_the_installed_command_lists_runs_and_serves(alectio, tmp_path):
    # the plugins: built-ins, the installed examples' and the test models
    rows = {row["name"]: row for row in json.loads(alectio("plugins", "--all").stdout)}
    seen = installed(alectio.env, alectio.cwd)
    examples = {ep for name, dist in seen.items() if name != "alectio" for ep in dist["entry_points"]}
    assert BUILTINS | examples | {"digits_lr"} <= set(rows), sorted(rows)
    assert not [row for row in rows.values() if "error" in row]

    # one short run
    db = f"sqlite:///{tmp_path}/alectio.db"
    run = alectio("run", "digits_lr", "--loops", "2", "--initial", "30", "--batch", "30", "--json", "--storage", db)
    assert [point["labeled"] for point in json.loads(run.stdout)] == [30, 60]

    # the server, over HTTP, with a token made first
    token = alectio("token", "create", "--name", "ci", "--storage", db).stdout.strip().splitlines()[-1]
    port = free_port()
    with open(tmp_path / "serve.log", "w+") as log:
        server = subprocess.Popen([str(alectio.script), "serve", "--port", str(port), "--storage", db],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=alectio.env)
        try:
            url = f"http://127.0.0.1:{port}"

            def up():
                assert server.poll() is None, f"server exited: {Path(log.name).read_text()}"
                try:
                    return requests.get(f"{url}/health", timeout=2)
                except requests.ConnectionError:
                    return None

            assert wait_for(up, timeout=120, interval=0.2, what="alectio serve to answer").json() == {"status": "ok"}
            assert requests.get(f"{url}/api/v1/models", timeout=10).status_code == 401
            # the dashboard's files come from the installed package
            assert 'name="token"' in requests.get(f"{url}/", timeout=10).text
            assert requests.get(f"{url}/static/app.js", timeout=10).status_code == 200
            # the first listing imports every model plugin (torch for the examples)
            models = requests.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=300)
            assert models.status_code == 200
            assert {"digits_lr"} | (examples - {"folder"}) <= {m["name"] for m in models.json()["models"]}
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(30)
    assert token not in Path(log.name).read_text()


# -- what the suite leaves behind -------------------------------------------------


def test_the_test_packages_are_installed_only_in_the_suites_folder(test_site):
    for name in ("alectio-test-digits", "alectio-test-slow"):
        where = Path(metadata.distribution(name).locate_file("")).resolve()
        assert where == Path(test_site).resolve(), (name, where)


def test_a_user_sees_no_test_model_after_the_suite(tmp_path):
    """``alectio plugins`` in the user's environment (no PYTHONPATH from the
    suite) shows no test model that the suite installed: it never installs
    into the Python running it, which is where pip would have put them."""
    shown = subprocess.run([sys.executable, "-m", "alectio_core", "plugins"], capture_output=True, text=True,
                           check=True, cwd=tmp_path, env=plain_env()).stdout
    shown = {row["distribution"] for row in json.loads(shown) if row["distribution"].startswith("alectio-test-")}
    where = (
        "import importlib.metadata as m, json, sysconfig\n"
        "print(json.dumps({'site': [sysconfig.get_path(k) for k in ('purelib', 'platlib')],\n"
        "  'found': {d.metadata['Name']: str(d.locate_file('')) for d in m.distributions()\n"
        "            if d.metadata['Name'].startswith('alectio-test-')}}))\n"
    )
    seen = json.loads(subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, check=True,
                                     cwd=tmp_path, env=plain_env()).stdout)
    site = {Path(folder).resolve() for folder in seen["site"]}
    leaked = {name: folder for name, folder in seen["found"].items() if Path(folder).resolve() in site}
    assert not leaked, f"left installed: {leaked}"
    # Only a Python that also sees system packages may have some from elsewhere
    # (a brand-new venv, as in CI, has none: then nothing is shown).
    assert shown <= set(seen["found"]), shown


# -- the examples without torch ----------------------------------------------------


def test_the_examples_skip_with_a_reason_without_torch(tmp_path):
    """``pytest`` where torch is not installed: the torch examples' tests are
    skipped, saying why, instead of stopping the run with collection errors."""
    # None in sys.modules makes "import torch" fail as if torch were not installed.
    code = "import sys, pytest; sys.modules['torch'] = None; sys.exit(pytest.main(sys.argv[1:]))"
    folders = [str(ROOT / "examples" / name) for name in TORCH_EXAMPLES]
    result = subprocess.run([sys.executable, "-c", code, "-q", "-rs", "-p", "no:cacheprovider", *folders],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    # skipped while collected: pytest says "no tests ran" (exit 5), not errors (2)
    assert result.returncode in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert "error" not in summary and "passed" not in summary and "skipped" in summary, summary
    modules = [path for name in TORCH_EXAMPLES for path in (ROOT / "examples" / name / "tests").glob("test_*.py")]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == len(modules) and all("this example needs torch: pip install torch" in line for line in skipped), skipped
