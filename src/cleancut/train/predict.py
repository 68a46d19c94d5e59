"""Torch-side batch prediction for evaluation (the same contract as evaluate.OnnxModel)."""

from __future__ import annotations

import numpy as np
import torch

from ..models import ModelSpec
from .checkpoint import load, model_from_checkpoint
from .data import MEAN, STD
from .losses import main_output


def spec_for(cfg, name: str = "checkpoint", arch: str | None = None, size: int | None = None) -> ModelSpec:
    size = size or cfg.data.size
    return ModelSpec(name=name, file="", input_size=(size, size), architecture=arch or cfg.model.arch,
                     channels=1 if cfg.data.grayscale else 3, mean=MEAN, std=STD)


class TorchModel:
    def __init__(self, model: torch.nn.Module, spec: ModelSpec, device: str | torch.device = "cpu", bf16: bool = False):
        self.model = model
        self.spec = spec
        self.device = torch.device(device)
        self.bf16 = bf16

    @classmethod
    def from_checkpoint(cls, path, size: int | None = None) -> "TorchModel":
        """``size``: run at this input size instead of the training size."""
        model, cfg = model_from_checkpoint(load(path))
        return cls(model, spec_for(cfg, name=str(path), size=size))

    @torch.no_grad()
    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = main_output(self.model(xt)).float()
        if logits.shape[-2:] != xt.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=xt.shape[-2:], mode="bilinear", align_corners=False)
        self.model.train(was_training)
        return torch.sigmoid(logits)[:, 0].cpu().numpy()
