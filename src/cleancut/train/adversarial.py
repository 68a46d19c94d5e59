"""Adversarial (GAN) training of the segmenter, plugged into the ordinary training loop.

    cleancut train --config configs/cutnet.yaml --out runs/cutnet-adv --adversarial        # weight 0.01
    cleancut train --config configs/cutnet.yaml --out runs/cutnet-adv adversarial.weight=0.05

A PatchGAN discriminator ``D`` (pix2pix, Isola et al. 2017; spectral norm on every convolution as in
Miyato et al. 2018, no batch norm) judges ``(image, mask)`` pairs: real pairs carry the ground-truth
mask, fake pairs the segmenter's predicted probabilities (Luc et al., "Semantic Segmentation using
Adversarial Networks", 2016). Every training step:

1. the segmenter ``G`` gets its usual loss plus ``w(t) * L_adv``, where ``L_adv`` rewards masks that
   ``D`` takes for real and ``w(t)`` ramps linearly from 0 to ``adversarial.weight`` over
   ``adversarial.warmup_epochs`` (``D`` is frozen for this term: no gradient reaches it);
2. after ``G``'s optimiser step, ``D`` takes one step of its own Adam on the same batch (ground
   truth vs the detached prediction).

``D``'s weights, its optimiser and the step counter are saved in every checkpoint
(``plugins/adversarial``), so ``--resume`` continues exactly. Under ``torchrun`` ``D`` is wrapped in
DDP for its own step.

The module also holds the boundary measures used to judge what adversarial training is meant to
improve (crisper, more plausible edges): :func:`boundary_iou` and :func:`boundary_f`, in
numpy/scipy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..metrics import band_width, binary, boundary_iou, inner_band  # noqa: F401 (re-exported)
from .config import AdversarialConfig
from .losses import main_output
from .plugin import Plugin


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``layers`` stride-2 4x4 convolutions, one stride-1 layer, then a 1-channel map of
    real/fake logits, one per overlapping patch (70x70 pixels for ``layers=3``)."""

    def __init__(self, in_channels: int = 4, width: int = 32, layers: int = 3):
        super().__init__()
        mods, c = [], in_channels
        for i in range(layers):
            cout = width * min(2 ** i, 8)
            mods += [spectral_norm(nn.Conv2d(c, cout, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c = cout
        cout = width * min(2 ** layers, 8)
        mods += [spectral_norm(nn.Conv2d(c, cout, 4, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                 spectral_norm(nn.Conv2d(cout, 1, 4, 1, 1))]
        self.net = nn.Sequential(*mods)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], dim=1))


def probability(outputs, size) -> torch.Tensor:
    """The segmenter's main output as a probability map ``[N, 1, H, W]`` at the input size."""
    logits = main_output(outputs).float()
    if logits.shape[-2:] != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return torch.sigmoid(logits)


def generator_gan_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "lsgan":
        return ((fake_logits - 1) ** 2).mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str,
                           real_label: float = 1.0) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "lsgan":
        return 0.5 * (((real_logits - real_label) ** 2).mean() + (fake_logits ** 2).mean())
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


class AdversarialTraining(Plugin):
    """The :class:`~cleancut.train.plugin.Plugin` that adds the discriminator to a :class:`Trainer`."""

    name = "adversarial"

    def __init__(self, cfg: AdversarialConfig):
        self.cfg = cfg
        self.step = 0  # segmenter steps taken with this plugin (drives the warm-up)
        self._sums: dict[str, float] = {}
        self._count = 0

    def setup(self, trainer) -> None:
        in_ch = (1 if trainer.cfg.data.grayscale else 3) + 1
        self.disc = PatchDiscriminator(in_ch, self.cfg.width, self.cfg.layers).to(trainer.dist.device)
        self.disc_ddp = self.disc
        if trainer.dist.world > 1:
            dev = trainer.dist.device
            self.disc_ddp = nn.parallel.DistributedDataParallel(self.disc, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.lr, betas=tuple(self.cfg.betas))
        self.warmup_steps = int(round(self.cfg.warmup_epochs * trainer.steps_per_epoch))

    def current_weight(self) -> float:
        if self.warmup_steps <= 0:
            return float(self.cfg.weight)
        return float(self.cfg.weight) * min(1.0, self.step / self.warmup_steps)

    # -- hooks ----------------------------------------------------------------------------------
    def loss(self, trainer, images, targets, outputs):
        """``w(t) * L_adv(G)``; D's parameters are frozen while this graph is built, so the term's
        gradient reaches only the segmenter."""
        w = self.current_weight()
        self.disc.requires_grad_(False)
        try:
            fake = self.disc(images.float(), probability(outputs, images.shape[-2:]))  # not the DDP wrapper: no D sync
        finally:
            self.disc.requires_grad_(True)
        g_loss = generator_gan_loss(fake, self.cfg.gan_loss)
        self._add(adv_g=g_loss.item(), adv_w=w)
        return w * g_loss

    def after_step(self, trainer, images, targets, outputs) -> None:
        x = images.float().detach()
        fake_mask = probability(outputs, images.shape[-2:]).detach()
        n = x.shape[0]  # one forward for both halves (DDP expects one forward per backward)
        logits = self.disc_ddp(torch.cat([x, x]), torch.cat([targets.float(), fake_mask]))
        real, fake = logits[:n], logits[n:]
        d_loss = discriminator_gan_loss(real, fake, self.cfg.gan_loss, self.cfg.real_label)
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer.step()
        with torch.no_grad():  # how often D is right, per patch
            d_acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item()
        self._add(d_loss=d_loss.item(), d_acc=d_acc)
        self.step += 1

    def epoch_metrics(self, trainer) -> dict[str, float]:
        out = {k: v / max(1, self._count) for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return out

    def _add(self, **values: float) -> None:
        if "adv_g" in values:
            self._count += 1
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


# -- boundary measures (numpy / scipy) --------------------------------------------------------------
# Boundary IoU and its bands live in cleancut.metrics (the product's edge figures); boundary F here.


def contour(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner contour (4-connectivity erosion residue; the image frame is not a contour)."""
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=1)
    return mask & ~eroded


def boundary_f(pred: np.ndarray, gt: np.ndarray, ratio: float = 0.0075, threshold: float = 0.5) -> float:
    """Boundary F-measure (DAVIS ``F``, Perazzi et al. 2016): precision = share of predicted contour
    pixels within ``d`` = ``ratio`` x diagonal of a ground-truth contour pixel, recall the
    converse, F = harmonic mean. Both contours empty: 1; one empty: 0."""
    from scipy import ndimage

    pc, gc = contour(binary(pred, threshold)), contour(binary(gt, 128 / 255))
    if not pc.any() and not gc.any():
        return 1.0
    if not pc.any() or not gc.any():
        return 0.0
    d = band_width(gc.shape, ratio)
    near_g = ndimage.distance_transform_edt(~gc) <= d
    near_p = ndimage.distance_transform_edt(~pc) <= d
    precision = (pc & near_g).sum() / pc.sum()
    recall = (gc & near_p).sum() / gc.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


class BoundaryMetrics:
    """Per-image mean Boundary IoU (``BIoU``) and boundary F (``BF``), at ground-truth resolution."""

    def __init__(self, ratio_iou: float = 0.02, ratio_f: float = 0.0075):
        self.ratio_iou, self.ratio_f = ratio_iou, ratio_f
        self.biou: list[float] = []
        self.bf: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.biou.append(boundary_iou(pred, gt, self.ratio_iou))
        self.bf.append(boundary_f(pred, gt, self.ratio_f))

    def results(self) -> dict[str, float]:
        return {"BIoU": float(np.mean(self.biou)), "BF": float(np.mean(self.bf))}


def evaluate_with_boundary(model, pairs, batch_size: int = 8) -> dict[str, float]:
    """The field's metrics (:func:`cleancut.evaluate.evaluate`'s protocol) plus BIoU and BF."""
    from ..evaluate import _batches
    from ..metrics import SODMetrics
    from ..preprocess import resize_alpha

    sod, bnd = SODMetrics(), BoundaryMetrics()
    for x, gts in _batches(pairs, model.spec, batch_size):
        for prob, gt in zip(model.predict_batch(x), gts):
            pred = resize_alpha(prob, (gt.shape[1], gt.shape[0]))
            sod.add(pred, gt)
            bnd.add(pred, gt)
    return {**sod.results(), **bnd.results()}
