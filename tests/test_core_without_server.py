"""The core never needs the HTTP server: a library user, the CLI's ``run``
and platform mode's protocol logic load no ``alectio_core.server`` module
(nor Flask through it). Only ``alectio serve`` imports the server, inside
the command."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import alectio_core

CORE = Path(alectio_core.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Every core module, in the subpackages too (plugins, testing); not the server's.
PATHS = {
    _module(p): p
    for p in CORE.rglob("*.py")
    if p.stem != "__main__"  # runs the CLI when imported
    and not _module(p).startswith("alectio_core.server")
}
MODULES = sorted(PATHS)
# (module, function) allowed to import the server: the command that serves it.
ALLOWED = {("alectio_core.cli", "serve")}


def _run(code: str) -> dict:
    """``code`` in a fresh interpreter (a clean sys.modules); its last line
    prints a JSON answer."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_any_core_module_loads_no_server_module():
    answer = _run(
        f"""
import importlib, json, sys
culprit = None
for name in {MODULES!r}:
    importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.startswith("alectio_core.server"))
    if loaded:
        culprit = [name, loaded]
        break
print(json.dumps(culprit))
"""
    )
    assert answer is None, f"importing {answer[0]} loaded {answer[1]}"


def _server_imports(name: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of every import of alectio_core.server in
    core module ``name``, at any depth (a lazy import counts too)."""
    path = PATHS[name]
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                # ``from ..x import y`` in alectio_core.plugins.loading is alectio_core.x
                anchor = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                base = ".".join(anchor + ([child.module] if child.module else []))
                names = [base] + [f"{base}.{a.name}" for a in child.names]
            if any(n == "alectio_core.server" or n.startswith("alectio_core.server.") for n in names):
                found.append((function, child.lineno))
            visit(child, function)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_no_core_module_imports_the_server_even_lazily():
    offending = []
    for name in MODULES:
        for function, line in _server_imports(name):
            if (name, function) not in ALLOWED:
                offending.append(f"{PATHS[name].relative_to(CORE.parent)}:{line} (in {function})")
    assert offending == [], "core modules import the server: " + ", ".join(offending)


def test_checking_a_one_loop_request_loads_no_server_module():
    answer = _run(
        """
import json, sys
from alectio_core.errors import ValidationError
from alectio_core.platform_mode import OneLoopRequest
payload = {"experiment_id": "exp-1", "project_id": "proj-1", "cur_loop": 0, "user_id": 42,
           "bucket_name": "a-bucket", "type": "Image Classification", "n_rec": 5, "n_loop": 4}
request = OneLoopRequest.from_payload(payload)
try:
    OneLoopRequest.from_payload(dict(payload, cur_loop="0"))
    refused = None
except ValidationError as exc:
    refused = str(exc)
print(json.dumps([request.prefix, refused, sorted(m for m in sys.modules if m.startswith("alectio_core.server"))]))
"""
    )
    assert answer == ["proj-1/exp-1", "cur_loop must be integer, got a string", []]
