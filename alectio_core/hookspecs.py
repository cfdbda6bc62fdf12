"""Hook specifications: the whole contract between alectio and its plugins.

Two families live here. Model hooks (``ModelSpecs``) are implemented by a
model plugin, one model per ``alectio.models`` entry point; each model gets a
plugin manager of its own so calling ``train`` reaches exactly that model.
Everything else (``PluginSpecs``) is implemented by ``alectio.plugins``
entry points: storage backends, query strategies, metrics, listeners.

Implementations accept any subset of a hook's arguments (pluggy "opt-in
arguments"); new arguments are only ever added, so old plugins keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import pluggy

if TYPE_CHECKING:  # numpy loads with the writer: not on `import alectio_core`
    from .outputs import OutputWriter

PROJECT = "alectio"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ModelSpecs:
    """The four processes a user writes, plus optional ``model_info``."""

    # ------------------------------------------------------------------
    # Model hooks
    # ------------------------------------------------------------------

    @hookspec(firstresult=True)
    def train(
        self,
        labeled: Sequence[int],
        labels: Optional[Mapping[int, Any]],
        resume_from: Optional[str],
        ckpt_file: str,
        loop: int,
        config: Mapping[str, Any],
        payload: Mapping[str, Any],
    ) -> Optional[Mapping[str, Any]]:
        """Train the model on the labeled records of this loop.

        :param labeled: sorted, unique record indices selected in loops
            0..``loop`` (the union of all selections so far; for an
            experiment whose labels come from people, minus the records
            they skipped).
        :param labels: for an experiment whose labels come from people
            (labels mode ``"alectio"``): each of ``labeled``'s label, index
            -> label in the task's format (class id; list of class ids;
            ``{"boxes", "objects"}``; 2-D list of class ids; number), the
            latest one sent. None when the model knows its labels itself.
        :param resume_from: path of the previous loop's checkpoint, or None at
            loop 0 (or when the previous loop wrote none).
        :param ckpt_file: path this loop's checkpoint must be written to; its
            folder exists.
        :param loop: the loop number, starting at 0.
        :param config: the model's section of ``config.yaml`` (may be empty).
        :param payload: all of the above as one dict, for plugins written as
            ``def train(payload)``.
        :returns: None, or ``{"labels": [...]}`` with the class label of each
            trained record so alectio can store per-class counts.
        """

    @hookspec(firstresult=True)
    def test(
        self,
        ckpt_file: str,
        loop: int,
        config: Mapping[str, Any],
        payload: Mapping[str, Any],
    ) -> Optional[Mapping[str, Any]]:
        """Evaluate this loop's checkpoint on the held-out test set.

        :param ckpt_file: the checkpoint ``train`` wrote in this loop.
        :returns: ``{"predictions": ..., "labels": ...}``, both lists (or dicts
            keyed by test-record id) of equal length, in the task's format:
            class ids for ``classification``; lists of class ids for
            ``multilabel``; per image ``{"boxes": [[x1, y1, x2, y2], ...],
            "objects": [class ids], "scores": [...]}`` (labels without
            ``scores``) for ``object_detection``; per image a 2-D list of
            class ids for ``segmentation``; numbers for ``regression``.
        """

    @hookspec(firstresult=True)
    def infer(
        self,
        unlabeled: Sequence[int],
        ckpt_file: str,
        loop: int,
        config: Mapping[str, Any],
        payload: Mapping[str, Any],
        writer: OutputWriter,
    ) -> Optional[Mapping[str, Any]]:
        """Score every unlabeled record with this loop's checkpoint.

        :param unlabeled: sorted indices of the pool minus ``labeled``.
        :param ckpt_file: the checkpoint ``train`` wrote in this loop.
        :param writer: an :class:`alectio_core.outputs.OutputWriter`; stream
            rows with ``writer.add(index, output, embedding=None)`` or
            ``writer.extend(indices, outputs_2d, embeddings=None)`` to keep
            memory bounded; an embedding is a fixed-width feature vector of
            the record, given for every record of the call or for none.
        :returns: ``{"outputs": {index: pre-activation output}}`` (and
            optionally ``"embeddings": {index: embedding}``), or None after
            streaming every row through ``writer``. Either way the
            outputs must cover exactly ``unlabeled``, one finite 1-D row of
            the same width per record.
        """

    @hookspec(firstresult=True)
    def assign_index(
        self,
        config: Mapping[str, Any],
        payload: Mapping[str, Any],
    ) -> Any:
        """Name every record of the training pool.

        :returns: a mapping ``index -> record reference`` (file name, id)
            whose keys are exactly ``0..N-1``, or a list (position = index).
            Its length is the pool size.
        """

    @hookspec(firstresult=True)
    def model_info(self, config: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """Optional: describe the model.

        :returns: ``{"task": one of classification, multilabel,
            object_detection, segmentation, regression, "labels": [class
            names], "settings": {name: default}}``. Without it the task is
            ``classification``. ``settings``, when given, declares every key
            the model's section of ``config.yaml`` may hold: alectio fills in
            the defaults before handing ``config`` to the hooks, and a key
            not declared is an error naming the key, the model and the file
            (with the closest declared name). Without ``settings`` any key
            is passed through unchecked. ``"mc_samples": T`` (a positive
            integer) says each ``infer`` row is T stochastic passes
            flattened (T x classes), for ``bald`` and ``mean_entropy``
            (everything else reads each row reduced to one pass).
        """


class PluginSpecs:
    """Hooks for everything that is not a model."""

    # ------------------------------------------------------------------
    # Contributions: each receives a ``register`` callback that validates
    # what it is given and says how to fix a bad registration. Plugins are
    # called one at a time in pluggy's order and the first registration of
    # a name wins; built-ins are ``trylast``, so a plugin replaces them. A
    # hook that raises or returns a value is reported, naming its plugin.
    # ------------------------------------------------------------------

    @hookspec
    def register_storage(self, register: Callable[..., None]) -> None:
        """Contribute storage backends.

        Call ``register(scheme, factory)`` where ``factory(url, options)``
        returns an :class:`alectio_core.storage.Storage` for URLs
        ``scheme://...``; ``options`` is the ``storage_options`` section of
        the configuration.
        """

    @hookspec
    def register_strategies(self, register: Callable[..., None]) -> None:
        """Contribute query strategies.

        Call ``register(strategy)`` with an object that has a ``name`` and a
        ``select(chunks, k, *, rng, task, num_classes)`` method returning k
        distinct record indices; it may also declare ``embeddings``,
        ``labeled`` and ``mc_samples`` (see :mod:`alectio_core.strategies`).
        """

    @hookspec
    def register_metrics(self, register: Callable[..., None]) -> None:
        """Contribute metrics for a task.

        Call ``register(task, function)`` where ``function(predictions,
        labels, *, class_labels=None)`` returns a JSON-serialisable dict.
        It raises ``ValueError`` when the results do not fit the task (that
        is reported against the model's ``test`` hook); anything else it
        raises is reported as this plugin's failure.
        """

    @hookspec
    def register_stopping(self, register: Callable[..., None]) -> None:
        """Contribute stopping criteria.

        Call ``register(criterion)`` with an object that has a ``name``, a
        ``settings`` mapping (each parameter and its default) and a
        ``check(context)`` method returning None to go on, or a reason (a
        string) to stop the experiment after this loop; ``context`` is an
        :class:`alectio_core.stopping.StopContext`. It may also have
        ``validate(task, settings)``, raising ``ValueError`` when it cannot
        work on the task or with the settings (see
        :mod:`alectio_core.stopping`).
        """

    @hookspec
    def register_labellers(self, register: Callable[..., None]) -> None:
        """Contribute labellers: tools that people label selections in.

        Call ``register(name, factory)``; ``factory(settings, source)``
        returns the labeller for the ``labeller:`` section of
        ``config.yaml`` naming it. ``settings`` are the section's keys
        other than ``name``, ``auto_next`` and ``poll_seconds``; ``source``
        is the file, for messages (raise
        :class:`alectio_core.errors.ConfigError` naming the key). The
        labeller has ``send(experiment, loop, rows, state)`` (put a
        selection out to be labelled; ``rows`` as
        ``Engine.selection``; ``state`` what it returned last for this
        experiment; returns its new state, JSON), ``collect(experiment,
        loop, state)`` (the finished work on loop ``loop``'s records, for
        polling), ``receive(body)`` (a
        webhook's body) and ``convert(experiment, annotation)`` (one
        annotation as a label); see :mod:`alectio_core.labelling`.
        """

    @hookspec
    def register_executors(self, register: Callable[..., None]) -> None:
        """Contribute executors: where a loop's infer stage runs.

        Call ``register(name, factory)``; ``factory(settings, source)``
        returns the executor for the ``executor:`` section of
        ``config.yaml`` naming it. ``settings`` are the section's keys other
        than ``name``; ``source`` is the file, for messages (raise
        :class:`alectio_core.errors.ConfigError` naming the key). The
        executor has ``score(job)`` (run ``infer`` for one
        :class:`alectio_core.executors.ScoreJob`, its rows staged under the
        job's attempt) and ``close()``; see :mod:`alectio_core.executors`.
        """

    # ------------------------------------------------------------------
    # Lifecycle listeners: told what happened, their return value ignored.
    # ------------------------------------------------------------------

    @hookspec
    def loop_started(self, experiment: Mapping[str, Any], loop: int) -> None:
        """A loop of ``experiment`` started running."""

    @hookspec
    def stage_started(self, experiment: Mapping[str, Any], loop: int, stage: str) -> None:
        """A loop entered ``stage`` (train, test, metrics, infer, stop, select)."""

    @hookspec
    def loop_finished(
        self,
        experiment: Mapping[str, Any],
        loop: int,
        status: str,
        error: Optional[str],
    ) -> None:
        """A loop ended with ``status`` (done, failed, cancelled)."""


MODEL_HOOKS = ("train", "test", "infer", "assign_index", "model_info")
REQUIRED_MODEL_HOOKS = ("train", "test", "infer", "assign_index")
