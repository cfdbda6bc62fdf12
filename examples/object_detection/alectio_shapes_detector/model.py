"""A small CenterNet-style detector in plain PyTorch.

The backbone downsamples by ``STRIDE`` (48x48 -> 12x12). Three heads read its
features: a per-class centre heatmap (logits), the box width and height, and
the sub-cell offset of the centre. Training uses the CenterNet recipe
(Gaussian-splatted centre targets, penalty-reduced focal loss, L1 on size and
offset at the centres); decoding keeps the local maxima of the heatmap.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STRIDE = 4
SIZE_SCALE = 16.0  # sizes are regressed in units of 16 px


def _block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CenterNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.backbone = nn.Sequential(
            _block(3, w // 2),
            _block(w // 2, w, stride=2),  # 24x24
            _block(w, w),
            _block(w, 2 * w, stride=2),  # 12x12
            _block(2 * w, 2 * w),
            _block(2 * w, 2 * w, dilation=2),
            _block(2 * w, 2 * w, dilation=2),
        )
        self.heatmap = nn.Sequential(_block(2 * w, w), nn.Conv2d(w, num_classes, 1))
        self.box = nn.Sequential(_block(2 * w, w), nn.Conv2d(w, 4, 1))  # w, h, dx, dy
        # Start every centre at a prior of 0.01, as CenterNet does.
        nn.init.constant_(self.heatmap[-1].bias, -4.6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.heatmap(features), self.box(features)


def pick_device(setting: Optional[str] = None) -> torch.device:
    """``cuda`` when available, CPU otherwise; ``config['device']`` overrides."""
    if setting and setting != "auto":
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------
# Targets and loss
# ----------------------------------------------------------------------


def make_targets(boxes: list[np.ndarray], objects: list[np.ndarray], num_classes: int, grid: int):
    """Heatmap (B, C, G, G), box targets (B, 4, G, G) and a centre mask (B, G, G)."""
    n = len(boxes)
    heat = np.zeros((n, num_classes, grid, grid), np.float32)
    reg = np.zeros((n, 4, grid, grid), np.float32)
    mask = np.zeros((n, grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    for b, (image_boxes, image_objects) in enumerate(zip(boxes, objects)):
        for (x1, y1, x2, y2), k in zip(image_boxes, image_objects):
            w, h = x2 - x1, y2 - y1
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sigma = max(w, h) / STRIDE / 6 + 0.25
            gauss = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
            heat[b, k] = np.maximum(heat[b, k], gauss)
            reg[b, :, iy, ix] = (w / SIZE_SCALE, h / SIZE_SCALE, cx - ix, cy - iy)
            mask[b, iy, ix] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(mask)


def loss_fn(heat_logits, box_out, heat_t, reg_t, mask, size_weight: float = 1.0) -> torch.Tensor:
    """CenterNet: focal loss on the heatmap plus L1 on size and offset at centres."""
    p = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    pos = heat_t.eq(1).float()
    neg_weight = (1 - heat_t) ** 4
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p**2 * neg_weight * (1 - pos)).sum()
    n_pos = pos.sum().clamp(min=1)
    focal = -(pos_loss + neg_loss) / n_pos
    m = mask.unsqueeze(1)
    l1 = (F.l1_loss(box_out, reg_t, reduction="none") * m).sum() / n_pos
    return focal + size_weight * l1


# ----------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------


def peaks(heat_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` strongest local maxima of each image's class-max heatmap.

    :returns: ``(scores, positions)``, both (B, k): the peak's best class
        logit and its flat grid position, strongest first.
    """
    best = heat_logits.max(dim=1).values  # (B, G, G)
    pooled = F.max_pool2d(best.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    keep = torch.where(best == pooled, best, torch.full_like(best, -torch.inf))
    scores, positions = keep.flatten(1).topk(k, dim=1)
    return scores, positions


def peak_logits(heat_logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k * C): every class's logit at each of the top-k peaks, flattened."""
    b, c, g, _ = heat_logits.shape
    _, positions = peaks(heat_logits, k)
    flat = heat_logits.flatten(2)  # (B, C, G*G)
    gathered = flat.gather(2, positions.unsqueeze(1).expand(b, c, k))  # (B, C, k)
    return gathered.transpose(1, 2).reshape(b, k * c)


def decode(heat_logits: torch.Tensor, box_out: torch.Tensor, k: int, threshold: float, image_size: int):
    """Per image ``{"boxes", "objects", "scores"}`` from the top-k class peaks."""
    b, c, g, _ = heat_logits.shape
    heat = torch.sigmoid(heat_logits)
    pooled = F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = torch.where(heat == pooled, heat, torch.zeros_like(heat))
    scores, flat = heat.flatten(1).topk(min(k, c * g * g), dim=1)  # over classes and cells
    classes, cells = flat // (g * g), flat % (g * g)
    ys, xs = cells // g, cells % g
    results = []
    for i in range(b):
        out = box_out[i, :, ys[i], xs[i]]  # (4, k)
        w, h = out[0] * SIZE_SCALE, out[1] * SIZE_SCALE
        cx, cy = (xs[i] + out[2]) * STRIDE, (ys[i] + out[3]) * STRIDE
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        boxes = boxes.clamp(0, image_size)
        keep = (scores[i] >= threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        results.append(
            {
                "boxes": boxes[keep].tolist(),
                "objects": classes[i][keep].tolist(),
                "scores": scores[i][keep].tolist(),
            }
        )
    return results
