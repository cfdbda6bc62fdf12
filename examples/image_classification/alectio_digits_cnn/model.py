"""The network and the training loop, plain PyTorch."""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Three 3x3 convolutions and two pools (8x8 -> 2x2), then a small MLP."""

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 2 * 2, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (after the hidden layer's ReLU): the record's embedding."""
        return self.head[:3](self.features(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head[3:](embedding)


def pick_device(setting: Optional[str] = None) -> torch.device:
    """``cuda`` when available, CPU otherwise; ``config['device']`` overrides."""
    if setting and setting != "auto":
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
) -> None:
    """Adam with cross-entropy and light shift augmentation; seeded batches."""
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x = _shift(x_all[batch], generator).to(device)
            y = y_all[batch].to(device)
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by -1, 0 or +1 pixel in each direction (zero fill)."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    offsets = torch.randint(0, 3, (len(x), 2), generator=generator)
    return torch.stack(
        [padded[i, :, dy : dy + 8, dx : dx + 8] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


@torch.no_grad()
def outputs_in_batches(
    model: DigitsCNN, images: np.ndarray, batch_size: int, device: torch.device, *, mc_samples: int = 0, seed: int = 0
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, outputs, embeddings)`` for consecutive batches of
    ``images``: the logits, or with ``mc_samples`` T > 0 the logits of T
    passes with dropout on (MC dropout, seeded), flattened to T x classes;
    and the penultimate features. The layers before dropout run once."""
    model.eval()
    dropout = model.head[3]
    assert isinstance(dropout, nn.Dropout)
    keep = 1.0 - dropout.p
    generator = torch.Generator(device=device).manual_seed(seed) if mc_samples else None
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device)
        embedding = model.embed(x)
        if mc_samples:
            passes = []
            for _ in range(mc_samples):
                mask = torch.rand(embedding.shape, generator=generator, device=device) < keep
                passes.append(model.head[4](embedding * mask / keep))
            outputs = torch.stack(passes, dim=1).flatten(1)
        else:
            outputs = model.classify(embedding)
        yield start, outputs.float().cpu().numpy(), embedding.float().cpu().numpy()


@torch.no_grad()
def logits_in_batches(
    model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, logits)`` for consecutive batches of ``images``."""
    model.eval()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(device)
        yield start, model(x).float().cpu().numpy()
