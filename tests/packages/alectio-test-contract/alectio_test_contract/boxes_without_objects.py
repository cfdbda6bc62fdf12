"""An object detector whose test predictions give boxes but not their classes."""

from .good import assign_index, data, infer, train  # noqa: F401


def model_info():
    return {"task": "object_detection", "labels": ["a", "b", "c"], "settings": {"shrink": 0.5}}


def test(ckpt_file):
    truth = {"boxes": [[0, 0, 10, 10]], "objects": [1]}
    return {"predictions": [{"boxes": [[0, 0, 10, 9]], "scores": [0.9]}] * 5, "labels": [truth] * 5}
