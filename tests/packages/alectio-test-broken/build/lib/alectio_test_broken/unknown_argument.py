from alectio_core import hookimpl


@hookimpl
def register_strategies(register, budget):
    pass
