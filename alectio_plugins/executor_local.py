"""The ``local`` executor (the default): ``infer`` runs in this process."""

from __future__ import annotations

from typing import Any

from alectio_core import plugins
from alectio_core.errors import ConfigError
from alectio_core.executors import ScoreJob
from alectio_core.hookspecs import hookimpl
from alectio_core.outputs import call_infer


class LocalExecutor:
    def score(self, job: ScoreJob) -> None:
        model = plugins.get_model(job.model)
        at_once = False  # infer returned its outputs instead of streaming them

        def on_chunk(done: int) -> None:
            if at_once and done < job.total:
                job.check()  # storing rows the hook returned all at once is not infer progress
            else:
                job.progress(done, job.total)

        writer = job.writer(job.open_sink(), job.records, on_chunk)
        returned = call_infer(model, writer, unlabeled=job.records.tolist(), ckpt_file=job.ckpt_file, loop=job.loop, config=job.config)
        if returned is not None:
            at_once = True
            writer.add_returned(*returned)
        writer.close()


def factory(settings: dict[str, Any], source: str) -> LocalExecutor:
    if settings:  # a key meant for another executor, or a typo: never ignored
        key = sorted(settings)[0]
        raise ConfigError(f"{source}: unknown key 'executor.{key}': the local executor takes no settings (only 'name')")
    return LocalExecutor()


@hookimpl(trylast=True)  # a plugin registering "local" itself is called first, and wins
def register_executors(register):
    register("local", factory)
