"""infer returns its outputs, dropping the scores of a class for some records."""

from .good import assign_index, data, logits, model_info, test, train  # noqa: F401


def infer(unlabeled, ckpt_file):
    rows = logits(ckpt_file, data()[0][unlabeled])
    return {"outputs": {i: row[:2] if i % 2 else row for i, row in zip(unlabeled, rows)}}
