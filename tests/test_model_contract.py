"""The model contract (``alectio_core.testing.ModelContract``) itself: it
passes a model that honours every rule, and each of its tests fails, saying
why, for a model that breaks that rule.

The models are the package ``tests/packages/alectio-test-contract``,
pip-installed for real; the contract runs on them in a pytest of its own,
as a plugin author runs it, and its JUnit report says what passed.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from installer import installed_packages

from alectio_core.testing import ModelContract

pytestmark = pytest.mark.slow  # installs a package, runs pytest in a process of its own

ORDER = [name for name in vars(ModelContract) if name.startswith("test_")]

# model -> (the contract's test that must fail, what its failure must say)
BROKEN = {
    "contract_unknown_argument": (
        "test_the_model_is_installed_and_loads",
        "hook 'train' of model 'contract_unknown_argument' asks for argument 'checkpoint_file' (did you mean 'ckpt_file'?)",
    ),
    "contract_bad_task": ("test_model_info_names_the_task_and_takes_the_config", "unknown task 'classify'"),
    "contract_index_from_one": (
        "test_assign_index_names_every_record_of_the_pool",
        "model 'contract_index_from_one', hook 'assign_index', index 200: keys must be exactly 0..199, found 200",
    ),
    "contract_savez_suffix": ("test_train_writes_its_checkpoint", "hook 'train' (loop 0): wrote nothing at ckpt_file"),
    "contract_probabilities_as_predictions": (
        "test_test_returns_predictions_and_labels_in_the_task_format",
        "hook 'test': results do not fit task 'classification'",
    ),
    "contract_boxes_without_objects": (
        "test_test_returns_predictions_and_labels_in_the_task_format",
        "results do not fit task 'object_detection': ValueError: object_detection prediction 0 must be a dict with 'boxes' and 'objects'",
    ),
    "contract_scores_the_whole_pool": (
        "test_infer_scores_exactly_the_unlabeled_records",
        "is labeled; outputs must cover only the unlabeled records",
    ),
    "contract_nan_rows": ("test_infer_scores_exactly_the_unlabeled_records", "hook 'infer', index 0: output holds NaN or inf"),
    "contract_ragged_rows": ("test_infer_scores_exactly_the_unlabeled_records", "output has width 2, earlier rows have width 3"),
    "contract_resume_key_mismatch": (
        "test_a_second_loop_resumes_from_the_first_checkpoint",
        "model 'contract_resume_key_mismatch', hook 'train': raised KeyError: 'weights is not a file in the archive'",
    ),
    "contract_unseeded": (
        "test_the_same_records_and_config_give_the_same_outputs",
        "model 'contract_unseeded': trained twice on the same records with the same config, infer gave different outputs",
    ),
}

SUITE = """
from alectio_core.testing import ModelContract

class TestUnseededWithoutTheClaim(ModelContract):
    model = "contract_unseeded"
"""
CLASS = """
class Test_{model}(ModelContract):
    model = "{model}"
    deterministic = True
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """(class, test) -> (outcome, message) of the contract run on every model of the package."""
    folder = tmp_path_factory.mktemp("contract")
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_contracts.py").write_text(SUITE + "".join(CLASS.format(model=m) for m in ["contract_good", *BROKEN]))
    with installed_packages("alectio-test-contract"):
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--junitxml", "report.xml", "test_contracts.py"],
            cwd=folder, capture_output=True, text=True, timeout=300,
        )
    assert (folder / "report.xml").exists(), run.stdout + run.stderr
    found = {}
    for case in ET.parse(folder / "report.xml").iter("testcase"):
        problem = next(iter(case), None)
        outcome = "passed" if problem is None else {"failure": "failed", "error": "error", "skipped": "skipped"}[problem.tag]
        text = "" if problem is None else f"{problem.get('message', '')}\n{problem.text or ''}"
        found[case.get("classname").rsplit(".", 1)[1], case.get("name")] = (outcome, text)
    return found


def test_a_model_that_honours_the_contract_passes_every_test(outcomes):
    assert {name: outcomes["Test_contract_good", name][0] for name in ORDER} == {name: "passed" for name in ORDER}


@pytest.mark.parametrize("model", BROKEN)
def test_each_rule_broken_fails_its_test_saying_why(outcomes, model):
    rule, message = BROKEN[model]
    cls = f"Test_{model}"
    outcome, text = outcomes[cls, rule]
    assert outcome == "failed", (outcome, text)
    assert message in text, text
    # The rules before it hold, and their tests pass: the first failure names the mistake.
    before = ORDER[: ORDER.index(rule)]
    assert {name: outcomes[cls, name][0] for name in before} == {name: "passed" for name in before}


def test_every_test_of_the_contract_is_shown_failing(outcomes):
    assert {rule for rule, _ in BROKEN.values()} == set(ORDER)


def test_determinism_is_checked_only_where_the_author_claims_it(outcomes):
    outcome, text = outcomes["TestUnseededWithoutTheClaim", "test_the_same_records_and_config_give_the_same_outputs"]
    assert outcome == "skipped" and "TestUnseededWithoutTheClaim does not set deterministic = True" in text
    assert all(outcomes["TestUnseededWithoutTheClaim", name][0] == "passed" for name in ORDER[:-1])
