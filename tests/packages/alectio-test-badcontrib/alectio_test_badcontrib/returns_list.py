from alectio_core import hookimpl


class Last:
    name = "last"

    def select(self, chunks, k, *, rng, task, num_classes):
        return [int(i) for idx, _ in chunks for i in idx][-k:]


@hookimpl
def register_strategies(register):
    return [Last()]  # written as if contributions were returned, not registered
