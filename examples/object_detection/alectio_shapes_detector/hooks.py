"""The alectio hooks of ``shapes_detector``.

Settings come from the model's section of alectio's ``config.yaml``; every key
is optional (see ``DEFAULTS``)::

    models:
      shapes_detector:
        pool_size: 2000
        epochs: 30
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from .data import CLASS_NAMES, IMAGE_SIZE, make_split

from alectio_core import hookimpl

if TYPE_CHECKING:  # torch is imported by the hooks that use it: discovery stays cheap
    import torch

    from .model import CenterNet

DEFAULTS: dict[str, Any] = {
    "pool_size": 2000,  # synthetic training pool, indices 0..pool_size-1
    "test_size": 300,  # fixed synthetic test split
    "data_seed": 0,  # seed of the generated images
    "epochs": 30,  # passes over the labeled records, every loop ...
    "min_steps": 400,  # ... but at least this many optimiser steps (small label sets)
    "max_steps": 1200,  # ... and at most this many (keeps a loop's time bounded)
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "width": 32,
    "top_k": 8,  # peaks per image: infer rows are top_k x num_classes logits
    "score_threshold": 0.1,  # test keeps detections scoring at least this
    "seed": 0,
    "device": "auto",  # "auto" = cuda when available, else cpu
    "eval_batch_size": 256,
}


def settings(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    unknown = set(config or {}) - set(DEFAULTS)
    if unknown:
        warnings.warn(
            f"shapes_detector: ignoring unknown config keys {sorted(unknown)}; "
            f"known: {sorted(DEFAULTS)}",
            stacklevel=3,
        )
    return {**DEFAULTS, **(config or {})}


def pool(cfg: Mapping[str, Any]):
    return make_split("pool", int(cfg["pool_size"]), int(cfg["data_seed"]))


def test_split(cfg: Mapping[str, Any]):
    return make_split("test", int(cfg["test_size"]), int(cfg["data_seed"]))


def _build(cfg, weights: Optional[str], device: torch.device) -> CenterNet:
    import torch

    from .model import CenterNet

    model = CenterNet(len(CLASS_NAMES), int(cfg["width"]))
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device)


def _flip(images: np.ndarray, boxes: list, flips: np.ndarray):
    """Mirror the images where ``flips`` is set, and their boxes with them."""
    images = np.where(flips[:, None, None, None], images[..., ::-1], images)
    boxes = [
        np.stack([IMAGE_SIZE - b[:, 2], b[:, 1], IMAGE_SIZE - b[:, 0], b[:, 3]], axis=1) if f else b
        for b, f in zip(boxes, flips)
    ]
    return np.ascontiguousarray(images), boxes


def _fit(model, data, idx: np.ndarray, cfg, seed: int, device) -> None:
    import torch

    from .model import STRIDE, loss_fn, make_targets

    rng = np.random.default_rng(seed)
    batch_size = int(cfg["batch_size"])
    per_epoch = -(-len(idx) // batch_size)
    steps = int(cfg["epochs"]) * per_epoch
    if steps:
        steps = min(max(steps, int(cfg["min_steps"])), int(cfg["max_steps"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, float(cfg["lr"]), total_steps=max(steps, 1), pct_start=0.15)
    grid = IMAGE_SIZE // STRIDE
    model.train()
    order = np.zeros(0, np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(idx)])
        batch, order = order[:batch_size], order[batch_size:]
        images, boxes = _flip(data.images[batch], [data.boxes[i] for i in batch], rng.random(len(batch)) < 0.5)
        heat_t, reg_t, mask = make_targets(boxes, [data.objects[i] for i in batch], len(CLASS_NAMES), grid)
        heat, box = model(torch.from_numpy(images).to(device))
        loss = loss_fn(heat, box, heat_t.to(device), reg_t.to(device), mask.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def _forward(model, images: np.ndarray, batch_size: int, device):
    import torch

    model.eval()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device)
        with torch.no_grad():
            heat, box = model(x)
        yield start, heat.float().cpu(), box.float().cpu()


@hookimpl
def train(labeled: Sequence[int], resume_from: Optional[str], ckpt_file: str, loop: int, config):
    import torch

    from .model import pick_device

    cfg = settings(config)
    data = pool(cfg)
    idx = np.asarray(labeled, dtype=np.int64)
    device = pick_device(cfg["device"])
    seed = int(cfg["seed"]) + 1000 * int(loop)
    torch.manual_seed(seed)  # weight initialisation
    model = _build(cfg, resume_from, device)
    _fit(model, data, idx, cfg, seed, device)
    torch.save(model.cpu().state_dict(), ckpt_file)
    # one entry per object of the trained images, for alectio's per-class counts
    return {"labels": np.concatenate([data.objects[i] for i in idx] or [np.zeros(0, np.int64)]).tolist()}


@hookimpl
def test(ckpt_file: str, config):
    from .model import decode, pick_device

    cfg = settings(config)
    data = test_split(cfg)
    device = pick_device(cfg["device"])
    model = _build(cfg, ckpt_file, device)
    predictions = []
    for _, heat, box in _forward(model, data.images, int(cfg["eval_batch_size"]), device):
        predictions += decode(heat, box, int(cfg["top_k"]), float(cfg["score_threshold"]), IMAGE_SIZE)
    return {"predictions": predictions, "labels": [data.target(i) for i in range(len(data))]}


@hookimpl
def infer(unlabeled: Sequence[int], ckpt_file: str, config, writer):
    """Stream, per image, the class logits at its ``top_k`` peaks (top_k x C,
    flattened), with its backbone features averaged over the image as the
    embedding."""
    import torch

    from .model import peak_logits, pick_device

    cfg = settings(config)
    data = pool(cfg)
    idx = np.asarray(unlabeled, dtype=np.int64)
    device = pick_device(cfg["device"])
    model = _build(cfg, ckpt_file, device)
    k, batch = int(cfg["top_k"]), int(cfg["eval_batch_size"])
    model.eval()
    images = data.images[idx]
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).to(device)
        with torch.no_grad():  # the box head is not needed here
            features = model.backbone(x)
            heat = model.heatmap(features).float().cpu()
        pooled = features.mean(dim=(2, 3)).float().cpu().numpy()
        writer.extend(idx[start : start + len(pooled)], peak_logits(heat, k).numpy(), embeddings=pooled)
    return None


@hookimpl
def assign_index(config):
    """Pool index -> ``shapes/pool/<seed>/<index>``: the seed and index regenerate it."""
    cfg = settings(config)
    return [f"shapes/pool/{int(cfg['data_seed'])}/{i}" for i in range(int(cfg["pool_size"]))]


@hookimpl
def model_info():
    return {"task": "object_detection", "labels": list(CLASS_NAMES)}
