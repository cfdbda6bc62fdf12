"""Start-up stays cheap: a command imports the heavy libraries only where it
uses them (``benchmarks/bench_startup.py`` measures the time; these tests
check what is imported, each in a new Python process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Libraries that cost 0.1 s to 1.5 s each to import.
HEAVY = ("sklearn", "scipy", "torch", "boto3", "botocore", "flask", "werkzeug", "waitress", "matplotlib", "tqdm")


def loaded_after(code: str, env: dict | None = None) -> tuple[list[str], str]:
    """Run ``code`` in a new Python; return the heavy top-level packages it
    imported and what it printed."""
    script = f"""
import contextlib, io, json, sys
out = io.StringIO()
with contextlib.redirect_stdout(out):
{''.join('    ' + line + chr(10) for line in code.strip().splitlines())}
heavy = sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r} + ("numpy",)))
print(json.dumps({{"heavy": heavy, "out": out.getvalue()}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    return result["heavy"], result["out"]


def cli(*args: str) -> str:
    return f"""
from alectio_core.cli import cli
try:
    cli({list(args)!r}, prog_name="alectio")
except SystemExit as exc:
    assert not exc.code, exc.code
"""


def test_help_imports_neither_numpy_nor_any_heavy_library():
    heavy, out = loaded_after(cli("--help"))
    assert "Commands:" in out and "plugins" in out
    assert heavy == []


def test_plugins_lists_every_plugin_with_its_hooks_without_heavy_imports(test_site):
    # Built-ins plus the test packages only: what else is installed here is not this test's business.
    heavy, out = loaded_after(cli("plugins", "--all"), env={"ALECTIO_LOAD_PLUGINS": "digits_lr,slow_test"})
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"sqlite", "s3", "metrics_classification", "strategy_uncertainty", "digits_lr", "slow_test"} <= set(rows)
    assert rows["digits_lr"]["hooks"] == ["assign_index", "infer", "model_info", "test", "train"]
    assert rows["digits_lr"]["version"] == "0.2.0"
    assert rows["s3"]["hooks"] == ["register_storage"]
    assert not [row for row in rows.values() if row.get("error")]
    assert [name for name in heavy if name != "numpy"] == []


def test_classification_metrics_need_no_scikit_learn():
    # Computing accuracy for 100 test predictions must not cost sklearn's 1 s import.
    heavy, out = loaded_after("""
from alectio_core.metrics import compute_metrics
print(compute_metrics("classification", [0, 1, 1, 2], [0, 1, 2, 2])["accuracy"])
""")
    assert out.strip() == "0.75"
    assert [name for name in heavy if name != "numpy"] == []


def test_a_run_imports_only_what_its_model_and_storage_use(test_site, tmp_path):
    # slow_test's hooks use numpy alone: sqlite storage, classification
    # metrics, the margin strategy and no progress bar (not a terminal) need nothing more.
    heavy, out = loaded_after(cli("run", "slow_test", "--loops", "2", "--initial", "10", "--batch", "10", "--json",
                                  "--storage", f"sqlite:///{tmp_path}/alectio.db"))
    curve = json.loads(out)
    assert [point["labeled"] for point in curve] == [10, 20]
    assert all(0 <= point["metrics"]["accuracy"] <= 1 for point in curve)
    assert [name for name in heavy if name != "numpy"] == []
