"""``shapes_detector`` honours alectio's model contract (needs this package installed)."""

import pytest

pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_core.testing import ModelContract  # noqa: E402


class TestShapesDetector(ModelContract):
    model = "shapes_detector"
    # A small generated pool and a few training steps: the contract checks the wiring, not the quality.
    config = {"pool_size": 200, "test_size": 40, "min_steps": 4, "max_steps": 4, "device": "cpu"}
    embeddings = True  # infer writes an embedding for every record
    deterministic = True  # train seeds torch and numpy from config["seed"] and the loop
