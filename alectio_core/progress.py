"""Progress bars for ``alectio run``: one per loop's stages, one for infer.

Drawn on stderr with tqdm when it is a terminal; silent otherwise, so logs
and ``--json`` output stay clean.
"""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    def __init__(self, experiment: dict, enabled: bool):
        self.experiment, self.enabled = experiment, enabled
        self.loops: tqdm | None = None
        self.rows: tqdm | None = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            self.loops = tqdm(total=int(self.experiment["loops"]), desc="loops", unit="loop", position=0, leave=True)
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
                self.rows = tqdm(total=progress["total"], desc="  infer", unit="rec", position=1, leave=False)
            self.rows.n = progress["done"]
            self.rows.refresh()
        elif self.rows is not None:
            self.rows.close()
            self.rows = None

    def __exit__(self, *exc) -> None:
        if self.rows is not None:
            self.rows.close()
        if self.loops is not None:
            self.loops.n = self.loops.total if exc[0] is None else self.loops.n
            self.loops.close()
