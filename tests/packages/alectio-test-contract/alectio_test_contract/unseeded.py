"""train jitters the centroids with an unseeded generator."""

import numpy as np

from .good import CLASSES, assign_index, data, fit, infer, model_info, test  # noqa: F401


def train(labeled, resume_from, ckpt_file, config):
    centroids = fit(labeled, resume_from, config) + np.random.default_rng().normal(scale=0.01, size=(len(CLASSES), 4))
    with open(ckpt_file, "wb") as f:
        np.savez(f, centroids=centroids)
    return {"labels": [CLASSES[c] for c in data()[1][labeled]]}
