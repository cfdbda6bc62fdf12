"""Meta-tests: every hook is documented, typed and exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from alectio_core.hookspecs import ModelSpecs, PluginSpecs

HOOKS = [(cls, name) for cls in (ModelSpecs, PluginSpecs) for name in vars(cls) if not name.startswith("_")]
TESTS = Path(__file__).parent


def test_there_are_hooks():
    assert {name for _, name in HOOKS} >= {"train", "test", "infer", "assign_index", "model_info", "register_storage"}


@pytest.mark.parametrize("cls, name", HOOKS, ids=[n for _, n in HOOKS])
def test_hook_is_documented_and_typed(cls, name):
    fn = getattr(cls, name)
    doc = inspect.getdoc(fn)
    assert doc and len(doc) > 40, f"{name} needs a docstring saying what comes in and what goes back"
    signature = inspect.signature(fn)
    for param in list(signature.parameters.values())[1:]:
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
        if cls is ModelSpecs and param.name != "payload":
            assert param.name in doc or param.name in ("config", "loop"), f"{name} does not document {param.name}"


@pytest.mark.parametrize("cls, name", HOOKS, ids=[n for _, n in HOOKS])
def test_hook_has_a_test_that_implements_or_calls_it(cls, name):
    own = Path(__file__).name
    pattern = re.compile(rf"(def {name}\(|\b{name}=|[\"']{name}[\"'])")
    users = [p.name for p in TESTS.rglob("*.py") if p.name != own and pattern.search(p.read_text())]
    assert users, f"no test implements or calls the {name} hook"
