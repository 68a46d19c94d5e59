"""Segmentation losses: weighted BCE (class imbalance) plus a soft overlap loss (IoU or Dice),
applied to every output of a deep-supervised network."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig


def soft_overlap(prob: torch.Tensor, target: torch.Tensor, kind: str = "iou", eps: float = 1.0,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    dims = (1, 2, 3)
    w = 1.0 if weight is None else weight
    inter = (prob * target * w).sum(dims)
    total = ((prob + target) * w).sum(dims)
    if kind == "dice":
        score = (2 * inter + eps) / (total + eps)
    else:
        score = (inter + eps) / (total - inter + eps)
    return (1 - score).mean()


def boundary_weight(target: torch.Tensor, strength: float, kernel: int) -> torch.Tensor:
    """Per-pixel weights ``1 + strength * |local mean of the target - target|``: large near the
    object's outline, 1 in flat regions (the weighting of F3Net's "structure loss", Wei et al. 2020),
    so that the loss spends its attention on edges and thin parts rather than easy interiors."""
    k = max(3, int(kernel) // 2 * 2 + 1)
    # The k x k mean as two 1-D means (exact, border counts included: they factorise by rows and
    # columns): 2k instead of k^2 reads a pixel, which made this loss cost more than the network.
    local = F.avg_pool2d(target, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)
    local = F.avg_pool2d(local, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    return 1.0 + strength * (local - target).abs()


class SegLoss(torch.nn.Module):
    def __init__(self, cfg: LossConfig, pos_weight: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.pos_weight = pos_weight

    def single(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one output; ``weight`` is :func:`boundary_weight` of ``target`` (or None)."""
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        if weight is None:
            bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        else:
            bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
            bce = ((bce * weight).sum((2, 3)) / weight.sum((2, 3))).mean()
        loss = self.cfg.bce * bce
        if self.cfg.overlap_weight:
            loss = loss + self.cfg.overlap_weight * soft_overlap(torch.sigmoid(logits), target, self.cfg.overlap,
                                                                 weight=weight)
        return loss

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        # the boundary weights depend on the target only: computed once for every output
        weight = boundary_weight(target, self.cfg.boundary, self.cfg.boundary_kernel) if self.cfg.boundary else None
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, target, weight)
        loss = self.single(outputs[0], target, weight)
        for aux in outputs[1:]:
            loss = loss + self.cfg.aux_weight * self.single(aux, target, weight)
        return loss


def main_output(outputs) -> torch.Tensor:
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]
