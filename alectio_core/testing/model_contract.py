"""The model contract: pytest tests that a model plugin's hooks honour what alectio relies on.

Subclass :class:`ModelContract` in your plugin package's tests and name the
model (its entry point in ``alectio.models``; install the package first)::

    from alectio_core.testing import ModelContract

    class TestMyModel(ModelContract):
        model = "my_model"
        config = {"epochs": 1}  # your settings, as under models.my_model in config.yaml
        deterministic = True    # opt in: same records and config, same outputs

The hooks are called as the engine calls them (found through the entry
point, named arguments and ``payload``, a real ``OutputWriter``), and what
they return goes through the engine's own checks: a model that passes runs
in alectio. Two loops run, over a few records so the suite stays quick:
loop 0 trains on ``labeled`` records, loop 1 on ``batch`` more, resuming
from loop 0's checkpoint; ``infer`` scores ``unlabeled`` records (None: the
rest of the pool, as alectio does). The loops run once per subclass; a hook
that fails makes the test of its rule fail, and those after it with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

# The engine's own checks of what hooks return: the contract cannot pass a model the engine refuses.
from ..hook_results import check_assign_index, check_test, check_train
from ..hookspecs import REQUIRED_MODEL_HOOKS
from ..metrics import compute_metrics
from ..outputs import OutputWriter, call_infer
from ..storage import OutputSink


class _Rows(OutputSink):
    """Keeps what the writer streams (a copy: the writer reuses its buffers)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self.embeddings: list[np.ndarray] = []

    def write(self, indices: np.ndarray, values: np.ndarray, embeddings: np.ndarray | None = None) -> None:
        self.chunks.append((indices.copy(), values.copy()))
        if embeddings is not None:
            self.embeddings.append(embeddings.copy())


def run_infer(model: Any, *, unlabeled, ckpt_file: str, loop: int = 0, config: dict | None = None,
              pool_size: int | None = None, mc_samples: int | None = None, embeddings: bool = False) -> tuple:
    """Call ``model``'s ``infer`` (a name or a loaded model) as the engine
    does, through a real :class:`~alectio_core.outputs.OutputWriter`;
    return the rows it gave, ordered by index: (int64 indices, float32 rows),
    and with ``embeddings=True`` also the embeddings in the same order (None
    when it wrote none). Rows that break the rules (not exactly
    ``unlabeled``, not finite, not one width, not a multiple of
    ``mc_samples``; embeddings for some records only) raise the engine's
    ``PluginError``."""
    from .. import plugins

    model = plugins.get_model(model) if isinstance(model, str) else model
    unlabeled = np.asarray(unlabeled, dtype=np.int64)
    if pool_size is None:
        pool_size = int(unlabeled.max()) + 1 if unlabeled.size else 0
    rows = _Rows()
    writer = OutputWriter(rows, model=model.name, pool_size=pool_size, unlabeled=unlabeled, mc_samples=mc_samples)
    returned = call_infer(model, writer, unlabeled=unlabeled.tolist(), ckpt_file=ckpt_file, loop=loop, config=config or {})
    if returned is not None:
        writer.add_returned(*returned)
    writer.close()
    if not rows.chunks:
        empty = (np.empty(0, np.int64), np.empty((0, 0), np.float32))
        return (*empty, None) if embeddings else empty
    indices = np.concatenate([i for i, _ in rows.chunks])
    values = np.concatenate([v for _, v in rows.chunks])
    order = np.argsort(indices, kind="stable")
    if not embeddings:
        return indices[order], values[order]
    found = np.concatenate(rows.embeddings)[order] if rows.embeddings else None
    return indices[order], values[order], found


def _once(method: Callable) -> property:
    """A property computed on first use; later uses get the same value, or
    the same error (a broken hook is called once, not once per test)."""
    name = method.__name__

    @functools.wraps(method)
    def get(self):
        if name not in self._done:
            try:
                self._done[name] = (True, method(self))
            except Exception as exc:
                self._done[name] = (False, exc)
        ok, value = self._done[name]
        if not ok:
            raise value
        return value

    return property(get)


def _fingerprint(path: str) -> str:
    """A hash of a checkpoint file, or of every file under a checkpoint folder."""
    digest, root = hashlib.sha256(), Path(path)
    for file in sorted(p for p in [root, *(root.rglob("*") if root.is_dir() else [])] if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class _Run:
    """One subclass's model, driven through two loops on first use."""

    def __init__(self, contract: type["ModelContract"], folder: Path) -> None:
        self.contract, self.folder = contract, folder
        self._done: dict[str, tuple[bool, Any]] = {}

    @_once
    def model(self):
        from .. import plugins

        if not self.contract.model:
            pytest.fail(f"{self.contract.__name__}: set model = 'NAME', the model's entry-point name", pytrace=False)
        return plugins.get_model(self.contract.model)

    @_once
    def info(self) -> dict:
        """``model_info`` checked as the engine checks it, and the settings
        (the contract's ``config`` over the declared defaults)."""
        info = self.model.info(dict(self.contract.config))
        source = f"{self.contract.__name__}.config"
        return dict(info, config=self.model.settings(info["settings"], dict(self.contract.config), source))

    @property
    def config(self) -> dict:
        return self.info["config"]

    @_once
    def pool(self) -> list[str]:
        return check_assign_index(self.model.name, self.model.call("assign_index", config=self.config))

    @_once
    def records(self) -> dict:
        """Loop 0's labeled records, loop 1's new ones and the records
        infer scores in loop 1 (loop 0's are those plus loop 1's new ones)."""
        c, pool = self.contract, len(self.pool)
        needed = c.labeled + c.batch + 1
        if pool < needed:
            pytest.fail(f"{c.__name__}: the pool has {pool} records; labeled + batch + 1 = {needed} are needed", pytrace=False)
        order = np.random.default_rng(c.seed).permutation(pool)
        rest = order[c.labeled + c.batch :] if c.unlabeled is None else order[c.labeled + c.batch :][: c.unlabeled]
        first, new = np.sort(order[: c.labeled]), np.sort(order[c.labeled : c.labeled + c.batch])
        return {
            "labeled": [first.tolist(), np.union1d(first, new).tolist()],
            "unlabeled": [np.union1d(new, rest).tolist(), np.sort(rest).tolist()],
        }

    def ckpt_file(self, loop: int) -> str:
        """A new path in a folder that exists, named like the storages' (no
        suffix added for you: ``np.savez`` on it writes another file)."""
        folder = self.folder / f"loop_{loop}"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{uuid.uuid4().hex}.ckpt")

    def train(self, loop: int, resume_from: str | None) -> dict:
        ckpt_file = self.ckpt_file(loop)
        labeled = self.records["labeled"][loop]
        result = self.model.call(
            "train", labeled=labeled, labels=None, resume_from=resume_from, ckpt_file=ckpt_file, loop=loop, config=self.config
        )
        check_train(self.model.name, result)
        assert Path(ckpt_file).exists(), (
            f"model {self.model.name!r}, hook 'train' (loop {loop}): wrote nothing at ckpt_file {ckpt_file}; "
            "test, infer and the next loop's train read the checkpoint there (np.savez adds '.npz' to a bare "
            "path: open the file and save into it)"
        )
        return {"loop": loop, "ckpt_file": ckpt_file, "resume_from": resume_from}

    @_once
    def loop0(self) -> dict:
        return self.train(0, None)

    @_once
    def loop1(self) -> dict:
        resume_from = self.loop0["ckpt_file"]
        before = _fingerprint(resume_from)
        trained = self.train(1, resume_from)
        assert _fingerprint(resume_from) == before, (
            f"model {self.model.name!r}, hook 'train' (loop 1): changed the checkpoint it resumed from "
            f"({resume_from}); write only to ckpt_file"
        )
        return trained

    def test(self, trained: dict) -> tuple[list, list]:
        name, task = self.model.name, self.info["task"]
        result = self.model.call("test", ckpt_file=trained["ckpt_file"], loop=trained["loop"], config=self.config)
        predictions, labels = check_test(name, result)
        try:  # what every storage backend does with them
            json.dumps([predictions, labels], allow_nan=False)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"model {name!r}, hook 'test': results are not JSON data: {exc}")
        try:
            compute_metrics(task, predictions, labels, class_labels=self.info["labels"])
        except Exception as exc:
            pytest.fail(f"model {name!r}, hook 'test': results do not fit task {task!r}: {type(exc).__name__}: {exc}")
        return predictions, labels

    def infer(self, trained: dict) -> tuple[np.ndarray, np.ndarray]:
        indices, rows, _ = self.infer_with_embeddings(trained)
        return indices, rows

    def infer_with_embeddings(self, trained: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        unlabeled = self.records["unlabeled"][trained["loop"]]
        indices, rows, embeddings = run_infer(
            self.model, unlabeled=unlabeled, ckpt_file=trained["ckpt_file"], loop=trained["loop"],
            config=self.config, pool_size=len(self.pool), mc_samples=self.info.get("mc_samples"), embeddings=True,
        )
        assert indices.tolist() == unlabeled  # the writer's close checked it; this checks run_infer
        return indices, rows, embeddings


class ModelContract:
    """Tests a model plugin's hooks against alectio's contract.

    Set ``model``; tune the class attributes below. Every test calls the
    hooks through the installed entry point, as the engine does.
    """

    #: The model's entry-point name (group ``alectio.models``).
    model: str = ""
    #: The model's settings, as under ``models.NAME`` in ``config.yaml``
    #: (declared ones are checked and their defaults filled in, as alectio does).
    config: dict = {}
    #: Records labeled at loop 0, and added at loop 1.
    labeled: int = 20
    batch: int = 10
    #: Records ``infer`` scores each loop; None: every record not labeled.
    unlabeled: int | None = 100
    #: Picks the records above.
    seed: int = 0
    #: Opt in when the model promises the same outputs for the same records
    #: and config (e.g. it seeds its random generators from ``config``).
    deterministic: bool = False
    #: Opt in when ``infer`` writes an embedding for every record
    #: (``writer.add(index, output, embedding=...)``): checked present.
    embeddings: bool = False

    @pytest.fixture(scope="class")
    @classmethod  # a class-scoped fixture on an instance method is deprecated (pytest 9)
    def contract(cls, request, tmp_path_factory) -> _Run:
        return _Run(request.cls, tmp_path_factory.mktemp(f"contract-{request.cls.__name__}"))

    def test_the_model_is_installed_and_loads(self, contract):
        assert set(REQUIRED_MODEL_HOOKS) <= set(contract.model.hooks)

    def test_model_info_names_the_task_and_takes_the_config(self, contract):
        assert contract.info["task"]

    def test_assign_index_names_every_record_of_the_pool(self, contract):
        assert len(contract.pool) > 0, f"model {contract.model.name!r}, hook 'assign_index': the pool is empty"

    def test_train_writes_its_checkpoint(self, contract):
        assert contract.loop0["resume_from"] is None

    def test_test_returns_predictions_and_labels_in_the_task_format(self, contract):
        predictions, labels = contract.test(contract.loop0)
        assert len(predictions) == len(labels) > 0

    def test_infer_scores_exactly_the_unlabeled_records(self, contract):
        indices, rows, embeddings = contract.infer_with_embeddings(contract.loop0)
        assert rows.shape[0] == len(indices) and np.isfinite(rows).all()
        if self.embeddings:  # one width for all records, finite: the writer refuses anything else
            assert embeddings is not None, f"model {contract.model.name!r}, hook 'infer': wrote no embeddings"
            assert embeddings.shape[0] == len(indices) and embeddings.shape[1] > 0

    def test_a_second_loop_resumes_from_the_first_checkpoint(self, contract):
        assert contract.loop1["resume_from"] == contract.loop0["ckpt_file"]
        contract.test(contract.loop1)
        contract.infer(contract.loop1)

    def test_the_same_records_and_config_give_the_same_outputs(self, contract):
        if not self.deterministic:
            pytest.skip(f"{type(self).__name__} does not set deterministic = True")
        again = contract.train(0, None)
        name = contract.model.name
        assert contract.test(again) == contract.test(contract.loop0), (
            f"model {name!r}: trained twice on the same records with the same config, test gave different predictions"
        )
        (_, first), (_, second) = contract.infer(contract.loop0), contract.infer(again)
        assert np.array_equal(first, second), (
            f"model {name!r}: trained twice on the same records with the same config, infer gave different outputs"
        )
