"""Progress bars for ``alectio run``: one per loop's stages, one for infer.

Drawn on stderr with tqdm when it is a terminal; silent otherwise, so logs
and ``--json`` output stay clean. The infer bar shows a rate only once rows
stream in (progress before the last row): rows a model returns all at once
arrive in one step, and a rate over that step means nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a bar is drawn: --json and piped runs never pay for it
    from tqdm import tqdm

#: tqdm's default bar without the rate.
NO_RATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]"


class Progress:
    def __init__(self, experiment: dict, enabled: bool, file=None):
        self.experiment, self.enabled, self.file = experiment, enabled, file  # file: stderr when None
        self.loops: tqdm | None = None
        self.rows: tqdm | None = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from tqdm import tqdm

            self.loops = tqdm(total=int(self.experiment["loops"]), desc="loops", unit="loop", position=0, leave=True, file=self.file)
        return self

    def loop(self, loop: int) -> None:
        if self.loops is not None:
            self.loops.n = loop
            self.loops.set_description(f"loop {loop}")

    def stage(self, stage: str, state: dict) -> None:
        if self.loops is None:
            return
        self.loops.set_postfix_str(stage)
        progress = state.get("progress")
        if stage == "infer" and progress:
            if self.rows is None:
                from tqdm import tqdm

                self.rows = tqdm(total=progress["total"], desc="  infer", unit="rec", position=1, leave=False, file=self.file,
                                 bar_format=NO_RATE)
            if progress["done"] < progress["total"]:
                self.rows.bar_format = None  # tqdm's own, with the rate
            self.rows.n = progress["done"]
            self.rows.refresh()
        elif self.rows is not None:
            self.rows.close()
            self.rows = None

    def __exit__(self, *exc) -> None:
        if self.rows is not None:
            self.rows.close()
        if self.loops is not None:
            if exc[0] is None and self.loops.total is not None:  # set by __enter__
                self.loops.n = self.loops.total
            self.loops.close()
