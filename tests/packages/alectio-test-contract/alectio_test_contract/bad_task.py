"""model_info names a task alectio does not know."""

from .good import assign_index, infer, test, train  # noqa: F401


def model_info():
    return {"task": "classify", "labels": ["a", "b", "c"]}
