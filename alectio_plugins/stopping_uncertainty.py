"""The ``max_uncertainty`` stopping criterion (Zhu, Wang & Hovy 2008's
"max-confidence"): stop once even the most uncertain unlabelled record is
scored below ``threshold``, i.e. the model is confident about the whole
pool and an uncertainty strategy has nothing worth asking about.

The uncertainty is a per-record query strategy's score over this loop's
infer outputs: ``measure`` names it (``least_confidence`` by default,
``1 - p_max``; ``margin`` or ``entropy`` in their own units). It streams
the outputs once, keeping only the running maximum.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from alectio_core.hookspecs import hookimpl
from alectio_core.plugins import get_strategies
from alectio_core.stopping import StopContext
from alectio_core.strategies import ScoreStrategy

TASKS = ("classification", "multilabel", "object_detection")


def measures() -> dict[str, ScoreStrategy]:
    """Installed strategies that score each record on its own."""
    return {name: s for name, s in get_strategies().items() if isinstance(s, ScoreStrategy)}


class MaxUncertainty:
    name = "max_uncertainty"
    settings: dict[str, Any] = {"threshold": 0.1, "measure": "least_confidence"}

    def validate(self, task: str, settings: Mapping[str, Any]) -> None:
        if task not in TASKS:
            raise ValueError(f"scores uncertainty on {', '.join(TASKS)} outputs, not {task!r}; use plateau")
        known = measures()
        if settings["measure"] not in known:
            raise ValueError(f"measure must be one of {', '.join(sorted(known))}, got {settings['measure']!r}")

    def check(self, context: StopContext) -> str | None:
        measure = measures()[context.settings["measure"]]
        labels = context.experiment.get("labels")
        task = context.experiment.get("task", "classification")
        highest, seen = -np.inf, 0
        for _indices, values in context.outputs(context.loop):
            if len(values):
                scores = measure.score_all(values, task=task, num_classes=len(labels) if labels else None)
                highest = max(highest, float(np.nanmax(scores)))
                seen += len(values)
        threshold = context.settings["threshold"]
        if seen == 0 or not highest < threshold:
            return None
        return f"the most uncertain of {seen:,} unlabelled records scores {highest:.4f} ({measure.name}) < {threshold}"

    def __repr__(self) -> str:
        return f"<stopping criterion {self.name}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_stopping(register: Callable[..., None]) -> None:
    register(MaxUncertainty())
