"""The alectio hooks of ``digits_cnn``.

Settings come from the model's section of alectio's ``config.yaml``; every key
is optional (see ``DEFAULTS``, declared to alectio by ``model_info``, so a
misspelled key is an error before any loop runs)::

    models:
      digits_cnn:
        epochs: 40
        device: cpu
        mc_samples: 20   # infer writes 20 MC-dropout passes per image (for bald); 0 = off

``infer`` writes, per image, its logits (or ``mc_samples`` passes of them)
and its penultimate features as the embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from .data import CLASS_NAMES, load_splits

from alectio_core import hookimpl

if TYPE_CHECKING:  # torch is imported by the hooks that use it: discovery stays cheap
    import torch

    from .model import DigitsCNN

DEFAULTS: dict[str, Any] = {
    "epochs": 40,  # passes over the labeled records, every loop
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "width": 32,  # channels of the first convolution
    "seed": 0,
    "device": "auto",  # "auto" = cuda when available, else cpu
    "eval_batch_size": 512,
    "mc_samples": 0,  # T > 0: infer writes T MC-dropout passes per image (T x 10), for bald
}


def settings(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The defaults under ``config``. alectio itself rejects a key not in
    ``DEFAULTS`` (``model_info`` declares them), so none is checked here."""
    return {**DEFAULTS, **(config or {})}


def _build(cfg: Mapping[str, Any], weights: Optional[str], device: torch.device) -> DigitsCNN:
    import torch

    from .model import DigitsCNN

    model = DigitsCNN(num_classes=len(CLASS_NAMES), width=int(cfg["width"]))
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device)


@hookimpl
def train(
    labeled: Sequence[int],
    resume_from: Optional[str],
    ckpt_file: str,
    loop: int,
    config,
    labels: Optional[Mapping[int, int]],
):
    """``labels``: in an experiment whose labels come from people (labels
    "alectio"), their class id for each labeled record; the model trains on
    those, not on the dataset's own. None otherwise. (No default value:
    pluggy passes only the arguments a hook declares without one.)"""
    import torch

    from .model import fit, pick_device

    cfg = settings(config)
    pool, _ = load_splits()
    idx = np.asarray(labeled, dtype=np.int64)
    targets = pool.labels[idx] if labels is None else np.asarray([labels[i] for i in idx.tolist()], dtype=np.int64)
    device = pick_device(cfg["device"])
    seed = int(cfg["seed"]) + 1000 * int(loop)
    torch.manual_seed(seed)  # weight initialisation and dropout
    model = _build(cfg, resume_from, device)
    fit(
        model,
        pool.images[idx],
        targets,
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        seed=seed,
        device=device,
    )
    torch.save(model.cpu().state_dict(), ckpt_file)
    return {"labels": targets.tolist()}


@hookimpl
def test(ckpt_file: str, config):
    from .model import logits_in_batches, pick_device

    cfg = settings(config)
    _, split = load_splits()
    device = pick_device(cfg["device"])
    model = _build(cfg, ckpt_file, device)
    predictions = [
        logits.argmax(axis=1)
        for _, logits in logits_in_batches(model, split.images, int(cfg["eval_batch_size"]), device)
    ]
    return {
        "predictions": np.concatenate(predictions).tolist(),
        "labels": split.labels.tolist(),
    }


@hookimpl
def infer(unlabeled: Sequence[int], ckpt_file: str, loop: int, config, writer):
    from .model import outputs_in_batches, pick_device

    cfg = settings(config)
    pool, _ = load_splits()
    idx = np.asarray(unlabeled, dtype=np.int64)
    device = pick_device(cfg["device"])
    model = _build(cfg, ckpt_file, device)
    batch = int(cfg["eval_batch_size"])
    passes = mc_samples(cfg)
    seed = int(cfg["seed"]) + 1000 * int(loop)
    for start, outputs, features in outputs_in_batches(model, pool.images[idx], batch, device, mc_samples=passes, seed=seed):
        writer.extend(idx[start : start + len(outputs)], outputs, embeddings=features)
    return None


def mc_samples(cfg: Mapping[str, Any]) -> int:
    value = cfg["mc_samples"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"mc_samples must be an integer >= 0 (0 = off), got {value!r}")
    return value


@hookimpl
def assign_index():
    """Pool index -> position of the image in ``sklearn.datasets.load_digits()``."""
    pool, _ = load_splits()
    return pool.source.tolist()


@hookimpl
def model_info(config):
    # "settings": alectio fills in these defaults and rejects a misspelled key
    info: dict[str, Any] = {"task": "classification", "labels": list(CLASS_NAMES), "settings": dict(DEFAULTS)}
    passes = mc_samples(settings(config))
    if passes:
        info["mc_samples"] = passes  # each infer row is that many passes of 10 logits
    return info
