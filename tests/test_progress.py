"""What ``alectio run`` draws on stderr while a loop runs (``Progress``),
fed by a real loop of the engine."""

from __future__ import annotations

import io

from alectio_core.engine import Engine
from alectio_core.progress import Progress


def drawn(engine, name):
    experiment = engine.create_experiment(name, strategy="random", initial=8, loops=1)
    out = io.StringIO()
    with Progress(experiment, enabled=True, file=out) as progress:
        engine.run_loop(experiment["id"], 0, on_stage=progress.stage)
    return out.getvalue()


def test_outputs_returned_at_once_show_no_rate(storage, fake_model):
    fake_model("at_once", pool=100, infer=lambda unlabeled: {"outputs": {i: [float(i % 3), 1.0] for i in unlabeled}})
    screen = drawn(Engine(storage, chunk_rows=8), "at_once")
    assert "92/92" in screen  # the bar is there, complete
    assert "rec/s" not in screen


def test_rows_streamed_in_chunks_show_a_rate(storage, fake_model):
    def infer(unlabeled, writer):
        for start in range(0, len(unlabeled), 8):
            part = unlabeled[start : start + 8]
            writer.extend(part, [[float(i % 3), 1.0] for i in part])

    fake_model("streaming", pool=100, infer=infer)
    screen = drawn(Engine(storage, chunk_rows=8), "streaming")
    assert "92/92" in screen
    assert "rec/s" in screen
