"""The ``plateau`` stopping criterion: stop when the test metric has
improved by less than ``min_delta`` over the last ``patience`` loops (the
rule of early stopping, applied to labels instead of epochs).

At loop k (k >= ``patience``) the gain is the best value of loops
k-patience+1..k minus the best before them; ``mode: min`` for a metric
where lower is better. ``metric`` defaults to the task's headline metric
(accuracy, mAP_50, ...; what ``alectio run`` shows).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from alectio_core.driver import headline
from alectio_core.errors import ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.stopping import StopContext


class Plateau:
    name = "plateau"
    settings: dict[str, Any] = {"patience": 3, "min_delta": 0.005, "metric": None, "mode": "max"}

    def validate(self, task: str, settings: Mapping[str, Any]) -> None:
        if settings["patience"] < 1:
            raise ValueError(f"patience must be >= 1, got {settings['patience']}")
        if settings["min_delta"] < 0:
            raise ValueError(f"min_delta must be >= 0, got {settings['min_delta']}")
        if settings["mode"] not in ("max", "min"):
            raise ValueError(f"mode must be max (higher is better) or min, got {settings['mode']!r}")

    def check(self, context: StopContext) -> str | None:
        patience, min_delta = context.settings["patience"], context.settings["min_delta"]
        if len(context.curve) <= patience:
            return None
        name = headline(dict(context.experiment), None, context.settings["metric"])[0]
        values = []
        for point in context.curve:
            value = (point.get("metrics") or {}).get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                available = sorted(k for k, v in (point.get("metrics") or {}).items() if isinstance(v, (int, float)))
                raise ValidationError(
                    f"stopping criterion 'plateau': loop {point['loop']} has no metric {name!r}; available: {', '.join(available)}"
                )
            values.append(float(value))
        recent, before = values[-patience:], values[:-patience]
        if context.settings["mode"] == "max":
            gain, best = max(recent) - max(before), max(values)
        else:
            gain, best = min(before) - min(recent), min(values)
        if gain >= min_delta:
            return None
        return f"{name} improved by {gain:+.4f} (< {min_delta}) over the last {patience} loops; best {best:.4f}"

    def __repr__(self) -> str:
        return f"<stopping criterion {self.name}>"


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_stopping(register: Callable[..., None]) -> None:
    register(Plateau())
