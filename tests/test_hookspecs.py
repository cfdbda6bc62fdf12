"""Meta-tests: every hook is documented, typed and has a test of its own.

As datasette does, the test of hook ``NAME`` is the test function named
``test_hook_NAME``, in any module under ``tests/``, and it uses the hook.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from alectio_core.hookspecs import ModelSpecs, PluginSpecs

HOOKS = [(cls, name) for cls in (ModelSpecs, PluginSpecs) for name in vars(cls) if not name.startswith("_")]
TESTS = Path(__file__).parent


def test_there_are_hooks():
    assert {name for _, name in HOOKS} >= {"train", "test", "infer", "assign_index", "model_info", "register_storage"}


@pytest.mark.parametrize("cls, name", HOOKS, ids=[n for _, n in HOOKS])
def test_every_hook_is_documented_and_typed(cls, name):
    fn = getattr(cls, name)
    doc = inspect.getdoc(fn)
    assert doc and len(doc) > 40, f"{name} needs a docstring saying what comes in and what goes back"
    signature = inspect.signature(fn)
    for param in list(signature.parameters.values())[1:]:
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
        if cls is ModelSpecs and param.name != "payload":
            assert param.name in doc or param.name in ("config", "loop"), f"{name} does not document {param.name}"


def hook_tests() -> dict[str, list[tuple[Path, ast.AST, dict[str, ast.AST]]]]:
    """Every ``test_hook_*`` function (module level or in a class) under
    tests/, by name, with the module's top-level definitions by name."""
    found: dict[str, list[tuple[Path, ast.AST, dict[str, ast.AST]]]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        module = ast.parse(path.read_text(), str(path))
        top = {n.name: n for n in module.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        for node in ast.walk(module):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_hook_"):
                found.setdefault(node.name, []).append((path, node, top))
    return found


def names(node: ast.AST, hook: str) -> bool:
    """Whether code names the hook: calls it, implements it, passes it as a
    keyword (``fake_model(test=...)``) or expects it in a message."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            word = n.id
        elif isinstance(n, ast.Attribute):
            word = n.attr
        elif isinstance(n, ast.keyword):
            word = n.arg
        elif isinstance(n, ast.FunctionDef):
            word = n.name
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            word = n.value
        else:
            continue
        if word == hook or f"'{hook}'" in (word or ""):
            return True
    return False


def uses(node: ast.AST, hook: str, top: dict[str, ast.AST]) -> bool:
    """Whether a test names the hook, itself or through a plugin class or a
    fixture of its module that it names."""
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {a.arg for a in node.args.args}
    return names(node, hook) or any(names(top[name], hook) for name in used & set(top) if top[name] is not node)


def test_every_hook_has_a_test_named_for_it():
    tests = hook_tests()
    missing = [name for _, name in HOOKS if f"test_hook_{name}" not in tests]
    assert not missing, "hooks without a test named test_hook_<hook> under tests/: " + ", ".join(missing)


def test_each_hook_test_uses_its_hook():
    tests = hook_tests()
    idle = [
        f"{path.name}::{node.name}"
        for _, name in HOOKS
        for path, node, top in tests.get(f"test_hook_{name}", [])
        if not uses(node, name, top)
    ]
    assert not idle, "hook tests that never name their hook: " + ", ".join(idle)
