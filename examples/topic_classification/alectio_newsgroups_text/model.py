"""A tf-idf bag-of-words classifier in plain PyTorch.

``nn.EmbeddingBag(mode="sum")`` with the tf-idf weights as
``per_sample_weights`` is exactly a linear layer over the sparse tf-idf
vector; ``hidden > 0`` puts one ReLU layer behind it.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from .data import Bags


class BagClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        width = hidden or num_classes
        # Sparse gradients: a step touches only the rows of the batch's terms.
        self.bag = nn.EmbeddingBag(vocab_size, width, mode="sum", sparse=True)
        self.bias = nn.Parameter(torch.zeros(width))
        self.head = (
            nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
            if hidden
            else nn.Identity()
        )
        nn.init.normal_(self.bag.weight, std=0.01)

    def forward(self, ids, offsets, weights) -> torch.Tensor:
        return self.head(self.hidden(ids, offsets, weights))

    def hidden(self, ids, offsets, weights) -> torch.Tensor:
        """The tf-idf layer's output, before the ReLU (the logits themselves when ``hidden`` is 0)."""
        return self.bag(ids, offsets, per_sample_weights=weights) + self.bias

    def embed(self, hidden: torch.Tensor) -> torch.Tensor:
        """A document's embedding: its hidden representation (after the ReLU)."""
        return torch.relu(hidden) if isinstance(self.head, nn.Sequential) else hidden


def pick_device(setting: Optional[str] = None) -> torch.device:
    """``cuda`` when available, CPU otherwise; ``config['device']`` overrides."""
    if setting and setting != "auto":
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensors(bags: Bags, device: torch.device):
    return (
        torch.from_numpy(bags.ids).to(device),
        torch.from_numpy(bags.offsets).to(device),
        torch.from_numpy(bags.weights).to(device),
    )


def fit(
    model: nn.Module,
    bags: Bags,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
) -> None:
    """Adam on cross-entropy over seeded mini-batches.

    The embedding table gets ``SparseAdam`` (rows of absent terms are left
    alone); the dense rest gets Adam with ``weight_decay``.
    """
    generator = torch.Generator().manual_seed(seed)
    sparse = [model.bag.weight]
    dense = [p for p in model.parameters() if p is not model.bag.weight]
    optimizers = [
        torch.optim.SparseAdam(sparse, lr=lr),
        torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay),
    ]
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.from_numpy(bags.labels)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(bags), generator=generator).numpy()
        for start in range(0, len(order), batch_size):
            batch = bags.take(order[start : start + batch_size])
            for optimizer in optimizers:
                optimizer.zero_grad()
            logits = model(*_tensors(batch, device))
            loss_fn(logits, labels[order[start : start + batch_size]].to(device)).backward()
            for optimizer in optimizers:
                optimizer.step()


@torch.no_grad()
def outputs_in_batches(
    model: BagClassifier, bags: Bags, batch_size: int, device: torch.device
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, logits, embeddings)`` for consecutive batches of documents."""
    model.eval()
    for start in range(0, len(bags), batch_size):
        batch = bags.take(np.arange(start, min(start + batch_size, len(bags))))
        hidden = model.hidden(*_tensors(batch, device))
        yield start, model.head(hidden).float().cpu().numpy(), model.embed(hidden).float().cpu().numpy()


@torch.no_grad()
def logits_in_batches(
    model: nn.Module, bags: Bags, batch_size: int, device: torch.device
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, logits)`` for consecutive batches of documents."""
    model.eval()
    for start in range(0, len(bags), batch_size):
        batch = bags.take(np.arange(start, min(start + batch_size, len(bags))))
        yield start, model(*_tensors(batch, device)).float().cpu().numpy()
