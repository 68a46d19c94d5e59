"""Torch datasets: decoding, augmentation (albumentations), foreground compositing, normalisation.

Every random choice of a sample is drawn from a generator seeded with ``(seed, epoch, index)``, so
an epoch is a pure function of the config: a resumed run sees exactly the batches an uninterrupted
run would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._deps import require
from ..datasets import Pair
from ..errors import DatasetError
from ..io import find_images
from ..preprocess import normalise
from .config import DataConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def list_backgrounds(folders: list[str]) -> list[Path]:
    out = []
    for folder in folders:
        p = Path(folder)
        if not p.is_dir():
            raise DatasetError(f"data.backgrounds: {p} is not a folder (expected a folder of background photos)")
        out += find_images(p)
    return out


def build_augment(size: int, strength: float, grayscale: bool):
    A = require("albumentations", "training augmentation")
    import cv2

    lin = cv2.INTER_LINEAR
    if strength <= 0:
        return A.Compose([A.Resize(size, size, interpolation=cv2.INTER_AREA, mask_interpolation=lin)])
    s = min(strength, 2.0)
    ops = [
        A.Affine(scale=(1 - 0.25 * s, 1 + 0.15 * s), rotate=(-12 * s, 12 * s), translate_percent=(-0.08 * s, 0.08 * s),
                 border_mode=cv2.BORDER_REFLECT_101, mask_interpolation=lin, p=min(1.0, 0.6 * s)),
        A.RandomResizedCrop(size=(size, size), scale=(max(0.3, 1 - 0.45 * s), 1.0), ratio=(0.6, 1.6),
                            interpolation=cv2.INTER_AREA, mask_interpolation=lin),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3 * s, contrast=0.3 * s, saturation=0.3 * s, hue=0.04 * s, p=min(1.0, 0.8 * s)),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.3, 1.5)), A.MotionBlur(blur_limit=(3, 7))], p=min(1.0, 0.2 * s)),
        A.GaussNoise(std_range=(0.01, 0.05), p=min(1.0, 0.2 * s)),
        A.ImageCompression(quality_range=(40, 95), p=min(1.0, 0.3 * s)),
    ]
    if not grayscale:
        ops.append(A.ToGray(p=min(1.0, 0.05 * s)))
    return A.Compose(ops)


def _background_strip(image: np.ndarray, mask: np.ndarray, min_frac: float = 0.15) -> np.ndarray | None:
    """The largest strip of ``image`` left or right of / above or below its foreground's bounding box."""
    ys, xs = np.nonzero(mask > 128)
    h, w = mask.shape
    if len(xs) == 0:
        return image
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    strips = [image[:, :x0], image[:, x1:], image[:y0, :], image[y1:, :]]
    best = max(strips, key=lambda s: s.shape[0] * s.shape[1])
    if best.shape[0] * best.shape[1] < min_frac * h * w or min(best.shape[:2]) < 24:
        return None
    return best


class SegDataset(Dataset):
    """Training samples: (normalised image ``[C,S,S]``, mask ``[1,S,S]`` in [0, 1])."""

    def __init__(self, pairs: list[Pair], cfg: DataConfig, seed: int = 0, train: bool = True):
        if not pairs:
            raise DatasetError("no training pairs selected (check data.roots and data.train_split)")
        self.pairs = pairs
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.train = train
        self.size = 0
        self.set_size(cfg.size)
        self.backgrounds = list_backgrounds(cfg.backgrounds) if train else []
        self._cache = None
        if cfg.cache and cfg.cache_dir:
            from .cache import open_cache

            self._cache = open_cache(pairs, cfg.cache_dir, cfg.cache_side, erode=cfg.label_erode)
        elif cfg.cache:
            self._cache = [self._read(p) for p in pairs]

    def set_size(self, size: int) -> None:
        """Train at ``size`` from now on (progressive resolution: ``data.size_schedule``)."""
        if size != self.size:
            self.size = size
            self.augment = build_augment(size, self.cfg.augment if self.train else 0.0, self.cfg.grayscale)

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        mask = load_mask(pair.mask)
        px = self.cfg.label_erode.get(pair.set, 0)
        if px:
            from .cache import erode_mask

            mask = erode_mask(mask, int(px))
        return load_rgb(pair.image), mask

    def _load(self, i: int):
        if self._cache is not None:
            return self._cache[i]
        return self._read(self.pairs[i])

    def foreground_fraction(self, limit: int = 500) -> float:
        idx = np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)
        return float(np.mean([(self._load(i)[1] > 128).mean() for i in idx]))

    def _composite(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import cv2

        h, w = mask.shape
        bg = None
        if self.backgrounds and rng.random() < 0.5:
            bg = load_rgb(self.backgrounds[rng.integers(len(self.backgrounds))])
        else:
            other_img, other_mask = self._load(int(rng.integers(len(self))))
            bg = _background_strip(other_img, other_mask)
        if bg is None:
            return image
        bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
        alpha = mask.astype(np.float32)[..., None] / 255.0
        return (image * alpha + bg * (1 - alpha)).astype(np.uint8)

    def __getitem__(self, i: int):
        image, mask = self._load(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.train and self.cfg.composite_prob > 0 and rng.random() < self.cfg.composite_prob:
            image = self._composite(image, mask, rng)
        self.augment.set_random_seed(int(rng.integers(2**31 - 1)))
        out = self.augment(image=image, mask=mask)
        image, mask = out["image"], out["mask"]
        if self.cfg.grayscale:
            image = np.asarray(Image.fromarray(image).convert("L"))
        x = torch.from_numpy(normalise(image, MEAN, STD))
        y = torch.from_numpy(mask.astype(np.float32)[None] / 255.0)
        return x, y


class EvalDataset(Dataset):
    """Validation / evaluation samples: (model input ``[C,S,S]`` made exactly as at inference,
    ground truth uint8 at its own resolution)."""

    def __init__(self, pairs: list[Pair], size: int, grayscale: bool = False):
        from ..models import ModelSpec
        from ..preprocess import to_input

        self.pairs = pairs
        self.spec = ModelSpec(name="eval", file="", input_size=(size, size), channels=1 if grayscale else 3,
                              mean=MEAN, std=STD)
        self._to_input = to_input

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        pair = self.pairs[i]
        with Image.open(pair.image) as im:
            x = self._to_input(im.convert("RGB"), self.spec)
        return torch.from_numpy(x), load_mask(pair.mask)


def collate_eval(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]
