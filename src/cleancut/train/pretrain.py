"""Self-supervised pre-training: the segmentation network learns to inpaint unlabelled photos.

    cleancut pretrain --data ../shared/data --split train --out runs/pre --config configs/cutnet.yaml
    cleancut pretrain --images photos/ more_photos/ --out runs/pre --arch unet train.epochs=5
    cleancut train --config configs/cutnet.yaml --init runs/pre --out runs/cutnet-pre

The network is the very architecture that will be trained for segmentation, with its 1-channel
logit head(s) swapped for 3-channel reconstruction heads: a masked (and denoising) autoencoder. Each
photo is cut into ``patch`` x ``patch`` cells, ``mask_ratio`` of them are blanked (set to the dataset
mean) and Gaussian noise is added to the rest; the loss is the L1 distance to the clean photo on the
blanked cells (weight 1) and on the visible ones (weight ``visible_weight``). Filling a blank cell
needs context, so the encoder has to learn what objects and backgrounds look like, without masks.

The checkpoint (``RUN/checkpoints/best.pt``) holds the whole network; ``cleancut train --init RUN``
copies every tensor whose name and shape match (all but the heads) and reports the count. The
config's ``model``, ``data.size``, ``optim`` and ``train`` (epochs, batch size, seed, threads,
steps_per_epoch, time_budget_min) sections are used; use the same ``model`` section for both steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from ..io import IMAGE_SUFFIXES, find_images
from ..preprocess import normalise
from .config import Config
from .data import MEAN, STD, load_rgb
from .loop import Trainer


# -- data -----------------------------------------------------------------------------------------

def list_images(sources: list[str | Path]) -> list[Path]:
    """Image files given directly or found (recursively) in folders. In a DUTS-layout folder only
    ``im/`` is used, and ``gt/`` folders (masks) are always skipped."""
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            if (p / "im").is_dir() and (p / "gt").is_dir():
                p = p / "im"
            out += find_images(p, skip_dirs=("gt",))
        else:
            raise DatasetError(f"--images {p}: not an image file or folder")
    if not out:
        raise DatasetError(f"no images found in {', '.join(map(str, sources))} (extensions: {', '.join(IMAGE_SUFFIXES)})")
    return out


def split_images(roots: list[str], split: str, seed: int = 0) -> list[Path]:
    """The photos of one split of labelled dataset roots (their masks are not used)."""
    from .. import datasets

    pairs = datasets.select(roots, [split], seed=seed)[split]
    if not pairs:
        raise DatasetError(f"split '{split}' is empty in {roots}")
    return [p.image for p in pairs]


class MaskedImageDataset(Dataset):
    """``(corrupted, clean, weight)``: normalised ``[C,S,S]`` photos and the per-pixel loss weight
    ``[1,S,S]`` (1 on blanked cells, ``visible_weight`` elsewhere). Every random choice is drawn
    from ``(seed, epoch, index)``, as in :class:`~cleancut.train.data.SegDataset`."""

    def __init__(self, paths: list[Path], size: int, grayscale: bool = False, seed: int = 0, mask_ratio: float = 0.5,
                 patch: int = 16, noise: float = 0.1, visible_weight: float = 0.1, max_scale: float = 1.3):
        import cv2

        if not 0 <= mask_ratio < 1:
            raise ConfigError(f"mask ratio must be in [0, 1), got {mask_ratio}")
        if patch < 1 or size % patch:
            raise ConfigError(f"patch ({patch}) must divide data.size ({size})")
        self.size, self.grayscale, self.seed, self.epoch = size, grayscale, seed, 0
        self.mask_ratio, self.patch, self.noise, self.visible_weight = mask_ratio, patch, noise, visible_weight
        self.big = int(round(size * max_scale))
        # decoded once, squashed to a square like the segmentation input, a little larger for crops
        self.images = [cv2.resize(load_rgb(p), (self.big, self.big), interpolation=cv2.INTER_AREA) for p in paths]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import cv2

        rng = np.random.default_rng([self.seed, self.epoch, i])
        s = int(rng.integers(self.size, self.big + 1))
        img = self.images[i] if s == self.big else cv2.resize(self.images[i], (s, s), interpolation=cv2.INTER_AREA)
        y0, x0 = rng.integers(0, s - self.size + 1, 2)
        img = img[y0:y0 + self.size, x0:x0 + self.size]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if self.grayscale:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        clean = normalise(np.ascontiguousarray(img), MEAN, STD)
        cells = self.size // self.patch
        hidden = rng.random((cells, cells)) < self.mask_ratio
        hidden = np.kron(hidden, np.ones((self.patch, self.patch), bool))
        corrupted = clean + self.noise * rng.standard_normal(clean.shape).astype(np.float32)
        corrupted[:, hidden] = 0.0  # the dataset mean
        weight = np.where(hidden, 1.0, self.visible_weight).astype(np.float32)[None]
        return torch.from_numpy(corrupted), torch.from_numpy(clean), torch.from_numpy(weight)


# -- model ----------------------------------------------------------------------------------------

def add_reconstruction_heads(model: nn.Module, channels: int) -> list[str]:
    """Swap every 1-channel output convolution (the logit heads) for a ``channels``-channel one."""
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d) and module.out_channels == 1:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            new = nn.Conv2d(module.in_channels, channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
            setattr(parent, name.rsplit(".", 1)[-1], new)
            replaced.append(name)
    if not replaced:
        raise ConfigError(f"{type(model).__name__}: no 1-channel output convolution to turn into a reconstruction head")
    return replaced


def reconstruction_loss(outputs, clean: torch.Tensor, weight: torch.Tensor, aux_weight: float = 0.4) -> torch.Tensor:
    """Weighted L1 over every output (deep-supervision outputs weighted by ``aux_weight``)."""
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    total = 0.0
    for k, out in enumerate(outs):
        out = out.float()
        if out.shape[-2:] != clean.shape[-2:]:
            out = F.interpolate(out, size=clean.shape[-2:], mode="bilinear", align_corners=False)
        l1 = ((out - clean).abs().mean(1, keepdim=True) * weight).sum() / weight.sum()
        total = total + (1.0 if k == 0 else aux_weight) * l1
    return total


def main_recon(outputs, size) -> torch.Tensor:
    out = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False) if out.shape[-2:] != tuple(size) else out.float()


# -- the run: the training loop of Trainer, with this task's data, heads and loss ----------------


class Pretrainer(Trainer):
    """:class:`~cleancut.train.loop.Trainer` on the masked-autoencoder task: the same loop,
    checkpoints (``--resume`` included), schedule and atomic logs; the data are photos, the
    network has reconstruction heads, the loss is :func:`reconstruction_loss`, and there is no
    validation (the last checkpoint is also ``best.pt``)."""

    loss_name = "recon_loss"
    track_accuracy = False

    def __init__(self, cfg: Config, images: list[Path], out_dir: str | Path, *, mask_ratio: float = 0.5,
                 patch: int = 16, noise: float = 0.1, visible_weight: float = 0.1, max_images: int | None = None,
                 resume: bool = False):
        images = list(images)
        if max_images and len(images) > max_images:
            idx = np.random.default_rng(cfg.train.seed).permutation(len(images))[:max_images]
            images = [images[i] for i in sorted(idx)]
        self.images = images
        self.settings = {"images": len(images), "mask_ratio": mask_ratio, "patch": patch, "noise": noise,
                         "visible_weight": visible_weight}
        super().__init__(cfg, out_dir, resume=resume)

    def _build_data(self) -> None:
        cfg, s = self.cfg, self.settings
        t_load = time.perf_counter()
        self.dataset = MaskedImageDataset(self.images, cfg.data.size, cfg.data.grayscale, cfg.train.seed,
                                          s["mask_ratio"], s["patch"], s["noise"], s["visible_weight"])
        self.load_seconds = time.perf_counter() - t_load
        self.train_pairs, self.val_pairs = None, {}
        self._count_steps("images")

    def adapt_model(self, model: nn.Module) -> nn.Module:
        self.settings["heads"] = add_reconstruction_heads(model, 1 if self.cfg.data.grayscale else 3)
        return model

    def _pos_weight(self) -> float | None:
        return None  # no masks

    def batch_loss(self, batch, autocast) -> tuple:
        corrupted, clean, weight = (t.to(self.dist.device, non_blocking=True) for t in batch)
        if self.cfg.train.channels_last:
            corrupted = corrupted.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = self.ddp(corrupted)
        return corrupted, clean, outputs, reconstruction_loss(outputs, clean, weight, self.cfg.loss.aux_weight)

    def checkpoint_extra(self) -> dict:
        return {"pretrain": self.settings}

    def header(self) -> str:
        s = self.settings
        return (f"cleancut pretrain: {self.cfg.model.arch} masked autoencoder on {s['images']} photos "
                f"({self.load_seconds:.0f} s to decode), {self.steps_per_epoch} steps/epoch of "
                f"{self.cfg.train.batch_size}, mask {s['mask_ratio']:.0%} of {s['patch']}px cells, noise "
                f"{s['noise']}, on {self.dist.device}")


def pretrain(cfg: Config, images: list[Path], out_dir: str | Path, *, mask_ratio: float = 0.5, patch: int = 16,
             noise: float = 0.1, visible_weight: float = 0.1, max_images: int | None = None,
             resume: bool = False) -> dict:
    """Train ``cfg.model`` as a masked autoencoder on ``images``; write ``out_dir`` (config.yaml,
    log.csv, history.json, curves.png, recon.png, checkpoints/{last,best}.pt). Returns a summary."""
    trainer = Pretrainer(cfg, images, out_dir, mask_ratio=mask_ratio, patch=patch, noise=noise,
                         visible_weight=visible_weight, max_images=max_images, resume=resume)
    summary = trainer.fit()
    plot_reconstructions(trainer.model, trainer.dataset, Path(out_dir) / "recon.png", trainer.dist.device)
    return {"epochs": summary["epochs"], "recon_loss": trainer.history[-1]["recon_loss"], "run": summary["run"],
            "images": len(trainer.images)}


def _show(x: torch.Tensor) -> np.ndarray:
    c = x.shape[0]
    mean = torch.tensor(MEAN[:c] if c == 3 else [float(np.mean(MEAN))]).view(c, 1, 1)
    std = torch.tensor(STD[:c] if c == 3 else [float(np.mean(STD))]).view(c, 1, 1)
    img = (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return img[..., 0] if c == 1 else img


@torch.no_grad()
def plot_reconstructions(model: nn.Module, ds: MaskedImageDataset, path: Path, device, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(int)
    samples = [ds[int(i)] for i in idx]
    xc = torch.stack([s[0] for s in samples]).to(device)
    rec = main_recon(model(xc), xc.shape[-2:])
    fig, axes = plt.subplots(3, len(samples), figsize=(2.2 * len(samples), 6.6), squeeze=False)
    for j, (corrupted, clean, _) in enumerate(samples):
        for r, (img, title) in enumerate([(corrupted, "input (masked + noise)"), (rec[j], "reconstruction"), (clean, "photo")]):
            axes[r, j].imshow(_show(img), cmap="gray")
            axes[r, j].set_axis_off()
            if j == 0:
                axes[r, j].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
