from alectio_core import hookimpl


@hookimpl
def loop_finished(experiment, loop, status):
    pass
