"""test returns each record's class scores instead of its class id."""

from .good import assign_index, data, infer, logits, model_info, train  # noqa: F401


def test(ckpt_file):
    _, _, x, y = data()
    return {"predictions": logits(ckpt_file, x).tolist(), "labels": y.tolist()}
