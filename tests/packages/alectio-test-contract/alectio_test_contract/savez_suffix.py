"""train saves with np.savez on the bare path, which writes ckpt_file + '.npz'
(and test and infer read that): alectio would store no checkpoint."""

import numpy as np

from . import good
from .good import CLASSES, assign_index, data, fit, model_info  # noqa: F401


def train(labeled, resume_from, ckpt_file, config):
    np.savez(ckpt_file, centroids=fit(labeled, resume_from and resume_from + ".npz", config))
    return {"labels": [CLASSES[c] for c in data()[1][labeled]]}


def test(ckpt_file):
    return good.test(ckpt_file + ".npz")


def infer(unlabeled, ckpt_file, writer):
    good.infer(unlabeled, ckpt_file + ".npz", writer)
