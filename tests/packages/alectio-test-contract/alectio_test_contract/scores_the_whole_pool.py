"""infer scores every record of the pool, not just ``unlabeled``."""

import numpy as np

from .good import assign_index, data, logits, model_info, test, train  # noqa: F401


def infer(ckpt_file, writer):
    x = data()[0]
    writer.extend(np.arange(len(x)), logits(ckpt_file, x))
