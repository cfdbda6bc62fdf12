"""Strategies from MC samples: ``bald`` and ``mean_entropy``.

A model that declares ``"mc_samples": T`` in ``model_info`` writes each
record's row as T stochastic forward passes (MC dropout, an ensemble)
flattened sample-major: T blocks of pre-activation outputs, one per pass.

* ``bald`` (Houlsby et al. 2011; Gal et al. 2017): the mutual information
  between the prediction and the model's parameters,
  ``H[mean_t p_t] - mean_t H[p_t]``: high where the passes disagree, low
  where they agree, even on an ambiguous record.
* ``mean_entropy``: the entropy of the mean prediction, ``H[mean_t p_t]``
  (total uncertainty; the same score ``entropy`` gives these rows, since a
  strategy without ``mc_samples`` sees the log of the mean probability).

``classification``: ``p_t`` is the softmax of pass t's logits. ``multilabel``:
a sigmoid per label and pass, and the score is the sum over labels of the
binary terms. Other tasks are refused, and so are rows holding NaN or inf
(an error naming how many). Scores are computed in float32 per cache-sized
block of rows (memory O(block + k), as the uncertainty strategies), and the
k highest are picked, ties to the lower record index. BALD is clipped at 0
(it is a mutual information; rounding can push identical passes a hair
below).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from alectio_core.errors import ValidationError
from alectio_core.hookspecs import hookimpl
from alectio_core.strategies import BLOCK_VALUES, Chunks, TopK

TASKS = ("classification", "multilabel")


def _xlogx(p: np.ndarray) -> np.ndarray:
    return p * np.log(np.maximum(p, np.finfo(p.dtype).tiny))  # 0 log 0 = 0


def mc_scores(values: np.ndarray, samples: int, task: str, *, bald: bool) -> np.ndarray:
    """BALD (``bald=True``) or the entropy of the mean per row of ``values``
    (rows x samples*classes, sample-major). The block is transposed to
    (samples, classes, rows) so that every reduction is elementwise over
    rows, as the uncertainty strategies do."""
    rows = len(values)
    t = np.ascontiguousarray(np.asarray(values, np.float32).T).reshape(samples, -1, rows)
    if task == "classification":
        t -= t.max(axis=1, keepdims=True)
        p = np.exp(t)
        total_p = p.sum(axis=1, keepdims=True)
        p /= total_p
        mean = p.mean(axis=0)
        score = -_xlogx(mean).sum(axis=0)
        if bald:
            # each pass's entropy, log(sum exp z) - sum p z, with z the shifted logits
            score -= (np.log(total_p[:, 0]) - (p * t).sum(axis=1)).mean(axis=0)
    else:
        p = 0.5 + 0.5 * np.tanh(0.5 * t)  # the sigmoid, without overflow at large negative logits
        mean = p.mean(axis=0)
        score = -(_xlogx(mean) + _xlogx(1 - mean)).sum(axis=0)
        if bald:
            # binary entropy from the logit: softplus(x) - x * sigmoid(x), exact at either tail
            score -= (np.logaddexp(0, t) - t * p).sum(axis=1).mean(axis=0)
    return np.maximum(score, 0.0) if bald else score


class MCStrategy:
    """Shared select: checks the inputs, scores block by block, keeps the top k."""

    name = ""
    bald = True

    def select(
        self,
        chunks: Chunks,
        k: int,
        *,
        rng: np.random.Generator,
        task: str,
        num_classes: Optional[int],
        mc_samples: Optional[int] = None,
    ) -> np.ndarray:
        if task not in TASKS:
            raise ValidationError(f"strategy {self.name!r} supports tasks {' and '.join(TASKS)}, not {task!r}")
        if not mc_samples:
            raise ValidationError(
                f"strategy {self.name!r} needs MC samples: the model's model_info must declare "
                '"mc_samples": T and its infer must write T stochastic passes per record (T x classes, flattened)'
            )
        best = TopK(k)
        bad = 0
        for indices, values in chunks:
            indices = np.asarray(indices, np.int64)
            values = np.asarray(values)
            if values.ndim != 2 or len(indices) != len(values):
                raise ValidationError(f"{self.name}: a chunk has {len(indices)} indices for outputs of shape {values.shape}")
            width = values.shape[1]
            if width % mc_samples or (num_classes is not None and width != mc_samples * num_classes):
                expected = f"{mc_samples} x {num_classes}" if num_classes is not None else f"a multiple of {mc_samples}"
                raise ValidationError(
                    f"{self.name}: outputs have {width} values per record, expected {expected} (mc_samples x classes)"
                )
            rows = max(1, BLOCK_VALUES // max(1, width))
            scores = np.empty(len(values), np.float32)
            for start in range(0, len(values), rows):
                block = values[start : start + rows]
                n = len(block)
                if n == 1:  # numpy sums a lone column in another order; keep scores independent of chunking
                    block = np.repeat(block, 2, axis=0)
                scores[start : start + n] = mc_scores(block, mc_samples, task, bald=self.bald)[:n]
            bad += int(np.count_nonzero(~np.isfinite(values).all(axis=1)))
            best.add(scores, indices)
        if bad:
            raise ValidationError(
                f"{self.name}: {bad:,} of {best.seen:,} pool records have NaN or inf in their output rows; "
                "the model's infer must write finite outputs"
            )
        return best.result()

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


class BALD(MCStrategy):
    name = "bald"
    bald = True


class MeanEntropy(MCStrategy):
    name = "mean_entropy"
    bald = False


@hookimpl(trylast=True)  # a third-party plugin registering the same name is called first, and wins
def register_strategies(register: Callable[..., None]) -> None:
    register(BALD())
    register(MeanEntropy())
