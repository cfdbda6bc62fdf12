"""Self-driven experiments: run every loop, letting the strategy choose.

``drive`` is what ``alectio run`` does, usable from Python too. It resumes
an interrupted experiment from its last finished loop.
"""

from __future__ import annotations

import os
from typing import Callable

from .engine import Engine
from .errors import ValidationError

#: The one number per task a learning curve plots.
HEADLINE = {
    "classification": "accuracy",
    "multilabel": "subset_accuracy",
    "object_detection": "mAP",
    "segmentation": "mean_iou",
    "regression": "r2",
}


def drive(
    engine: Engine,
    experiment_id: str,
    *,
    on_loop: Callable[[int], None] | None = None,
    on_stage: Callable[[str, dict], None] | None = None,
) -> list[dict]:
    """Run the experiment's remaining loops; return its learning curve."""
    experiment = engine.get_experiment(experiment_id)
    for loop in range(engine.next_loop(experiment_id), int(experiment["loops"])):
        if loop > 0 and not engine.has_selection(experiment_id, loop):
            # The process stopped between a loop's commit and storing the
            # strategy's pick: pick again (seeded, so the same records).
            labeled = engine.labeled(experiment_id, loop - 1).size
            if not engine.wants_selection(experiment, loop - 1, labeled):
                break
            engine.record_selection(experiment_id, loop, engine.pick_next(experiment, loop - 1))
        if on_loop:
            on_loop(loop)
        engine.run_loop(experiment_id, loop, on_stage=on_stage)
    return engine.learning_curve(experiment_id)


def headline(experiment: dict, metrics: dict | None) -> tuple[str, float | None]:
    name = HEADLINE.get(experiment.get("task", "classification"), "accuracy")
    return name, (metrics or {}).get(name)


def check_plot_path(path: str) -> None:
    """Refuse a plot that cannot be written before the experiment runs, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValidationError(f"cannot write the plot to {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValidationError(f"cannot write the plot to {path!r}: folder {folder!r} is not writable")


def plot_curve(experiment: dict, curve: list[dict], path: str) -> None:
    """Draw the learning curve (labeled records vs. the headline metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = HEADLINE.get(experiment.get("task", "classification"), "accuracy")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["labeled"] for p in curve], [(p["metrics"] or {}).get(name) for p in curve], marker="o")
    ax.set_xlabel("labeled records")
    ax.set_ylabel(name)
    ax.set_title(f"{experiment['model']} — {experiment['strategy']} (experiment {experiment['id']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ValidationError(f"cannot write the plot to {path!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
