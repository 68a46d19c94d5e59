"""Synthetic DUTS-layout datasets (random shapes on textured backgrounds), for tests and demos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_shapes_dataset(root: str | Path, n: int = 32, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` pairs: a bright-ish ellipse or polygon (foreground) on a noisy background."""
    root = Path(root)
    (root / "im").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        w = int(size * rng.uniform(0.9, 1.3))
        h = size
        bg = rng.integers(0, 90, 3)
        fg = rng.integers(150, 256, 3)
        noise = rng.normal(0, 18, (h, w, 3))
        img = np.clip(bg + noise, 0, 255).astype(np.uint8)
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        rx, ry = rng.uniform(0.12, 0.3) * w, rng.uniform(0.12, 0.3) * h
        if i % 2:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, 5))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(0.7))
        m = np.asarray(mask, np.float32)[..., None] / 255
        fg_tex = np.clip(fg + rng.normal(0, 18, (h, w, 3)), 0, 255)
        out = (fg_tex * m + img * (1 - m)).astype(np.uint8)
        Image.fromarray(out).save(root / "im" / f"s{i:03d}.jpg", quality=95)
        mask.save(root / "gt" / f"s{i:03d}.png")
    return root
