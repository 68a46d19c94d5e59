"""Segmentation losses: weighted BCE (class imbalance) plus a soft overlap loss (IoU or Dice),
applied to every output of a deep-supervised network."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig


def soft_overlap(prob: torch.Tensor, target: torch.Tensor, kind: str = "iou", eps: float = 1.0) -> torch.Tensor:
    dims = (1, 2, 3)
    inter = (prob * target).sum(dims)
    total = (prob + target).sum(dims)
    if kind == "dice":
        score = (2 * inter + eps) / (total + eps)
    else:
        score = (inter + eps) / (total - inter + eps)
    return (1 - score).mean()


class SegLoss(torch.nn.Module):
    def __init__(self, cfg: LossConfig, pos_weight: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.pos_weight = pos_weight

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        loss = self.cfg.bce * F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        if self.cfg.overlap_weight:
            loss = loss + self.cfg.overlap_weight * soft_overlap(torch.sigmoid(logits), target, self.cfg.overlap)
        return loss

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, target)
        loss = self.single(outputs[0], target)
        for aux in outputs[1:]:
            loss = loss + self.cfg.aux_weight * self.single(aux, target)
        return loss


def main_output(outputs) -> torch.Tensor:
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]
