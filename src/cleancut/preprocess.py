"""Image <-> network tensors, in numpy only. Shared by training, evaluation and inference so that
a model sees exactly the same input everywhere."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .models import ModelSpec


def to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """PIL RGB image -> float32 ``[channels, H, W]`` at the model's size, normalised."""
    h, w = spec.input_size
    img = image.convert("L" if spec.channels == 1 else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return normalise(np.asarray(img), spec.mean, spec.std)


def normalise(array: np.ndarray, mean, std) -> np.ndarray:
    """uint8 ``HxW`` or ``HxWxC`` -> float32 ``CxHxW`` scaled to [0, 1] then ``(x - mean) / std``."""
    x = array.astype(np.float32) / 255.0
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[2]
    m = np.asarray(mean[:c] if len(mean) >= c else [np.mean(mean)] * c, np.float32)
    s = np.asarray(std[:c] if len(std) >= c else [np.mean(std)] * c, np.float32)
    x = (x - m) / s
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float alpha ``HxW`` in [0, 1] -> float32 alpha at ``size=(width, height)`` (bilinear)."""
    a = np.asarray(alpha, np.float32)
    if (a.shape[1], a.shape[0]) == tuple(size):
        return a
    img = Image.fromarray(a, mode="F").resize(tuple(size), Image.BILINEAR)
    return np.clip(np.asarray(img, np.float32), 0.0, 1.0)
