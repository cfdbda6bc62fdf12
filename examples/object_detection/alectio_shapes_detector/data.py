"""A seeded synthetic detection dataset: 1-3 shapes on a noisy background.

Every image is drawn from its own generator, seeded by ``(seed, split,
index)``, so record ``i`` is the same picture on every machine and every
call, and the pool can be regenerated instead of stored. Boxes are
``[x1, y1, x2, y2]`` in pixels (the pixels a shape covers span
``x1 <= x < x2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CLASS_NAMES = ["square", "disc", "triangle"]
IMAGE_SIZE = 48
MIN_SIZE, MAX_SIZE = 8, 20  # side of a shape's box, in pixels
MAX_OVERLAP = 0.1  # largest IoU allowed between two boxes of one image


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 3, S, S) float32 in [0, 1]
    boxes: list[np.ndarray]  # per image (n, 4) float32 x1, y1, x2, y2
    objects: list[np.ndarray]  # per image (n,) int64 class ids

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int) -> dict:
        return {"boxes": self.boxes[i].tolist(), "objects": self.objects[i].tolist()}


def _iou(box: np.ndarray, others: list[np.ndarray]) -> float:
    best = 0.0
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        inter = max(w, 0) * max(h, 0)
        union = np.prod(box[2:] - box[:2]) + np.prod(other[2:] - other[:2]) - inter
        best = max(best, inter / union)
    return best


def _mask(kind: int, box: np.ndarray, size: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    if kind == 0:  # square
        return inside
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if kind == 1:  # disc
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    # triangle, apex at the top centre, base along the bottom edge
    return inside & (np.abs(xs - cx) <= half * (ys - y1) / (y2 - y1))


def draw(rng: np.random.Generator, size: int = IMAGE_SIZE):
    """One image: a tinted noisy background and 1-3 non-overlapping shapes."""
    background = rng.uniform(0.0, 0.5, size=3)
    image = np.broadcast_to(background[:, None, None], (3, size, size)).copy()
    boxes: list[np.ndarray] = []
    objects: list[int] = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            side = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
            x1, y1 = rng.integers(0, size - side + 1, size=2)
            box = np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)
            if _iou(box, boxes) <= MAX_OVERLAP:
                break
        else:
            continue
        kind = int(rng.integers(len(CLASS_NAMES)))
        colour = np.clip(background + rng.uniform(0.35, 0.6) * rng.choice([-1, 1], size=3), 0, 1)
        mask = _mask(kind, box, size)
        image[:, mask] = colour[:, None]
        boxes.append(box)
        objects.append(kind)
    image += rng.normal(0.0, 0.06, size=image.shape)
    return (
        np.clip(image, 0, 1).astype(np.float32),
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.array(objects, dtype=np.int64),
    )


@lru_cache(maxsize=4)
def make_split(name: str, size: int, seed: int = 0) -> Split:
    """``size`` images of split ``name`` ("pool" or "test"), seeded by ``seed``."""
    split_id = {"pool": 0, "test": 1}[name]
    drawn = [draw(np.random.default_rng([seed, split_id, i])) for i in range(size)]
    return Split(
        np.stack([d[0] for d in drawn]),
        [d[1] for d in drawn],
        [d[2] for d in drawn],
    )
