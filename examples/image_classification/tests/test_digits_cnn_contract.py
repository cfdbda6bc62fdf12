"""``digits_cnn`` honours alectio's model contract (needs this package installed)."""

import pytest

pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_core.testing import ModelContract  # noqa: E402


class TestDigitsCNN(ModelContract):
    model = "digits_cnn"
    config = {"epochs": 2, "device": "cpu"}
    deterministic = True  # train seeds torch from config["seed"] and the loop
    embeddings = True  # the penultimate features


class TestDigitsCNNWithMCDropout(TestDigitsCNN):
    config = {"epochs": 2, "device": "cpu", "mc_samples": 3}  # rows of 3 x 10: the contract checks the width
