"""train asks for an argument alectio does not pass (its name in an older SDK)."""

from .good import assign_index, infer, model_info, test  # noqa: F401
from .good import train as _train


def train(labeled, checkpoint_file, config):
    return _train(labeled, None, checkpoint_file, config)
