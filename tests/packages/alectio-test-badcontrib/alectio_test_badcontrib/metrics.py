from alectio_core import hookimpl


def regression(predictions, labels, class_labels=None):
    return {"mean_error": sum(abs(p - t) for p, t in zip(predictions, labels)) / len(labels[:0])}  # a bug: / 0


@hookimpl
def register_metrics(register):
    register("regression", regression)
