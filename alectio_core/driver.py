"""Self-driven experiments: run every loop, letting the strategy choose.

``drive`` is what ``alectio run`` does, usable from Python too. It resumes
an interrupted experiment from its last finished loop.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

from .engine import Engine
from .errors import ConflictError, ValidationError
from .labels import check_labelled

#: The one number per task a learning curve shows unless asked for another
#: (for detection, mAP at IoU 0.5: what the detection literature and the
#: example's README quote).
HEADLINE = {
    "classification": "accuracy",
    "multilabel": "subset_accuracy",
    "object_detection": "mAP_50",
    "segmentation": "mean_iou",
    "regression": "r2",
}


def drive(
    engine: Engine,
    experiment_id: str,
    *,
    on_loop: Callable[[int], None] | None = None,
    on_stage: Callable[[str, dict], None] | None = None,
    on_exhausted: Callable[[int, int, int], None] | None = None,
) -> list[dict]:
    """Run the experiment's remaining loops; return its learning curve.

    When every record is labelled before the last loop, the experiment ends
    there: ``on_exhausted(loop, labeled, pool_size)`` is told which loop
    was the last. When a stopping criterion fires, it ends too: the last
    point of the curve carries its ``stop``. In labels mode "alectio" it
    raises ``LabelsMissing`` at the first loop whose records people have
    yet to label.
    """
    experiment = engine.get_experiment(experiment_id)
    for loop in range(engine.next_loop(experiment_id), int(experiment["loops"])):
        if loop > 0 and engine.stopped(experiment_id):
            break
        if loop > 0 and not engine.has_selection(experiment_id, loop):
            # No selection: the pool ran out, or the process stopped between
            # a loop's commit and storing the strategy's pick (then pick
            # again, seeded, so the same records).
            labeled = engine.labeled(experiment_id, loop - 1).size
            if not engine.wants_selection(experiment, loop - 1, labeled):
                pool = int(experiment["pool_size"])
                if on_exhausted and labeled >= pool:
                    on_exhausted(loop - 1, int(labeled), pool)
                break
            engine.record_selection(experiment_id, loop, *engine.pick_next(experiment, loop - 1), ranked=True)
        check_labelled(engine.storage, experiment, loop)  # labels mode "alectio": LabelsMissing before the loop shows
        if on_loop:
            on_loop(loop)
        engine.run_loop(experiment_id, loop, on_stage=on_stage)
    return engine.learning_curve(experiment_id)


def resume(engine: Engine, experiment_id: str, given: Mapping[str, tuple[str, Any]], loops: int | None = None) -> dict:
    """Check what was given along with a resume against the stored
    experiment, and set its number of loops; return the experiment.

    ``given`` maps the name the user knows a setting by (``--batch``) to the
    stored field and the value given (``("batch_size", 50)``): a value other
    than the stored one is a ``ConflictError``. ``loops`` may extend a
    finished experiment or shorten an unfinished one, never below the loops
    already done.
    """
    experiment = engine.get_experiment(experiment_id)
    for name, (field, value) in given.items():
        stored = experiment.get(field)
        if isinstance(value, list):  # a repeatable option (--stop): shown as given, none when it was not
            stored = list(stored or [])
            if value != stored:
                was = " ".join(f"{name} {v}" for v in stored) or f"no {name}"
                shown = " ".join(f"{name} {v}" for v in value)
                raise ConflictError(f"{shown} conflicts with experiment {experiment_id!r}: it was created with {was}")
        elif value != stored:
            raise ConflictError(f"{name} {value} conflicts with experiment {experiment_id!r}: it was created with {name} {stored}")
    if loops is not None and loops != int(experiment["loops"]):
        done = engine.next_loop(experiment_id)
        if loops < done:
            raise ValidationError(f"--loops {loops} is fewer than the {done} loops experiment {experiment_id!r} has done")
        experiment = engine.storage.update_experiment(experiment_id, {"loops": loops})
    return experiment


def headline(experiment: dict, metrics: dict | None, metric: str | None = None) -> tuple[str, float | None]:
    """The name and value of ``metric``, or of the task's headline metric."""
    name = metric or HEADLINE.get(experiment.get("task", "classification"), "accuracy")
    return name, (metrics or {}).get(name)


def check_metric(curve: list[dict], metric: str) -> None:
    """A ``ValidationError`` listing the metrics the curve has when
    ``metric`` is not one of them (nothing to check on an empty curve)."""
    if not curve:
        return
    scalar = lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))  # noqa: E731
    names = sorted({k for p in curve for k, v in (p["metrics"] or {}).items() if scalar(v)}, key=str.lower)
    if metric not in names:
        raise ValidationError(f"unknown metric {metric!r}; available: {', '.join(names)}")


def check_plot_path(path: str) -> None:
    """Refuse a plot that cannot be written before the experiment runs, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValidationError(f"cannot write the plot to {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValidationError(f"cannot write the plot to {path!r}: folder {folder!r} is not writable")


def plot_curve(experiment: dict, curve: list[dict], path: str, metric: str | None = None) -> None:
    """Draw the learning curve (labeled records vs. ``metric``, by default the headline one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = headline(experiment, None, metric)[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [(p["metrics"] or {}).get(name) for p in curve]
    # A loop without the metric is a gap (matplotlib reads None as nan too).
    ax.plot([p["labeled"] for p in curve], [math.nan if v is None else v for v in values], marker="o")
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
