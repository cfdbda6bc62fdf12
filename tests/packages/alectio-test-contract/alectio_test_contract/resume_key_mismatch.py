"""train saves the centroids under one key and resumes from another."""

import numpy as np

from .good import CLASSES, assign_index, data, fit, infer, model_info, test  # noqa: F401


def train(labeled, resume_from, ckpt_file, config):
    centroids = fit(labeled, None, config)
    if resume_from:
        with np.load(resume_from) as previous:
            centroids = (previous["weights"] + centroids) / 2
    with open(ckpt_file, "wb") as f:
        np.savez(f, centroids=centroids)
    return {"labels": [CLASSES[c] for c in data()[1][labeled]]}
