"""``cleancut explain``: one figure that shows what a checkpoint predicts, where it is unsure, and why.

Panels: the photo; the predicted probability; the test-time-augmentation uncertainty
(:func:`cleancut.explain.tta_uncertainty`: flips and zooms); the Monte-Carlo-dropout uncertainty
(the dropout layers left on, ``mc`` stochastic passes, standard deviation); the uncertain band
(:func:`cleancut.explain.uncertain_band`) over the photo; and a Grad-CAM map (Selvaraju et al. 2017):
the gradient of the summed foreground logit (over the pixels predicted foreground) with respect to a
late encoder feature map, averaged per channel, weights that feature map; its positive part shows
which regions drove the "this is the subject" decision.

`cleancut explain` (:mod:`cleancut.cli.explain`) draws the figure (torch-free for exported models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..preprocess import resize_alpha, to_input
from .checkpoint import load, model_from_checkpoint
from .losses import main_output
from .predict import spec_for

# a late encoder feature map per architecture (the deepest stage before the decoder)
ENCODER_LAYER = {"unet": "down.{last}", "cutnet": "stages.{last}", "cnn": "features"}


def default_layer(model: torch.nn.Module, arch: str) -> str:
    name = ENCODER_LAYER.get(arch)
    if name is None:
        raise ValueError(f"no default Grad-CAM layer for architecture {arch!r}; pass --layer (one of the module names)")
    if "{last}" in name:
        seq = model.get_submodule(name.split(".")[0])
        name = name.format(last=len(seq) - 1)
    return name


class Explainer:
    """A checkpoint's model with the three probes (prediction, MC dropout, Grad-CAM)."""

    def __init__(self, checkpoint: str | Path, layer: str | None = None):
        ckpt = load(checkpoint)
        if "pretrain" in ckpt:
            raise ValueError(f"{checkpoint} is a pre-training (reconstruction) run; explain a segmentation checkpoint")
        self.model, self.cfg = model_from_checkpoint(ckpt)
        self.spec = spec_for(self.cfg, name=str(checkpoint))
        self.layer = layer or default_layer(self.model, self.cfg.model.arch)
        try:
            self.model.get_submodule(self.layer)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n][:40]
            raise ValueError(f"--layer {self.layer!r} is not a module of {self.cfg.model.arch}; e.g. {', '.join(names)}") from None

    def _input(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_input(Image.fromarray(rgb), self.spec))[None]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = main_output(self.model(x)).float()
        if logits.shape[-2:] != x.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB HxWx3 -> probability HxW at the photo's size (a ``predict_fn``)."""
        self.model.eval()
        prob = torch.sigmoid(self._logits(self._input(rgb)))[0, 0].numpy()
        return resize_alpha(prob, (rgb.shape[1], rgb.shape[0]))

    def dropout_layers(self) -> list[torch.nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]

    @torch.no_grad()
    def mc_dropout(self, rgb: np.ndarray, passes: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and std over ``passes`` forward passes with dropout on (batch norm stays in eval
        mode); None when the model has no dropout."""
        drops = self.dropout_layers()
        if not drops or passes < 2:
            return None
        self.model.eval()
        for m in drops:
            m.train()
        try:
            torch.manual_seed(seed)
            x = self._input(rgb).repeat(passes, 1, 1, 1)
            probs = torch.sigmoid(self._logits(x))[:, 0].numpy()
        finally:
            self.model.eval()
        size = (rgb.shape[1], rgb.shape[0])
        return resize_alpha(probs.mean(0), size), np.clip(resize_alpha(probs.std(0), size), 0, 0.5)

    def grad_cam(self, rgb: np.ndarray) -> np.ndarray:
        """Grad-CAM in [0, 1] at the photo's size, for the summed foreground logit."""
        self.model.eval()
        store: dict[str, torch.Tensor] = {}
        module = self.model.get_submodule(self.layer)

        def hook(_m, _inp, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            out.retain_grad()
            store["act"] = out

        handle = module.register_forward_hook(hook)
        try:
            x = self._input(rgb).requires_grad_(False)
            logits = self._logits(x)
            fg = logits > 0
            target = (logits * fg).sum() if fg.any() else logits.sum()
            self.model.zero_grad(set_to_none=True)
            target.backward()
        finally:
            handle.remove()
        act, grad = store["act"], store["act"].grad
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(1))[0].detach().float().numpy()
        cam = np.maximum(resize_alpha(cam / max(float(cam.max()), 1e-12), (rgb.shape[1], rgb.shape[0])), 0)
        return cam / cam.max() if cam.max() > 0 else cam
