"""Checkpoints: written atomically, loadable for resume, evaluation and export."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from . import archs
from .config import Config, _build


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():  # a run folder: prefer its best checkpoint
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                p = p / "checkpoints" / name
                break
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path}: expected a .pt file or a run folder with checkpoints/, found nothing")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"checkpoint {p} cannot be read ({exc.__class__.__name__}: {exc}); is it a cleancut checkpoint?") from None


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[torch.nn.Module, Config]:
    cfg = _build(Config, ckpt["config"], "")
    model = archs.build(cfg.model.arch, in_channels=1 if cfg.data.grayscale else 3, **cfg.model.kwargs)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg
