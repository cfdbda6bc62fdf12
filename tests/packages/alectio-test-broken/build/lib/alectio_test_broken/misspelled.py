from alectio_core import hookimpl


def assign_index():
    return ["a", "b"]


def train(labeled):
    pass


def test():
    return {"predictions": [], "labels": []}


def infer(unlabeled, writer):
    pass


@hookimpl
def infrence(unlabeled):  # the typo discovery must catch
    pass
