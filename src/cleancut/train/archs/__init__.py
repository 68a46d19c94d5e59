"""Architecture registry. Adding an architecture is a one-file change: drop a module in this
package that decorates its :class:`~cleancut.train.archs._base.Segmenter` subclass with
``@register("name")``. The contract (forward, ``encoder``, ``load_pretrained``, input sizes) is
written out in :mod:`cleancut.train.archs._base`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from ...errors import ConfigError

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        from ._base import Segmenter

        if not issubclass(cls, Segmenter):
            raise TypeError(f"architecture {name!r}: {cls.__name__} must subclass archs._base.Segmenter")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"architecture {name!r} registered twice")
        cls.arch_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build(name: str, in_channels: int = 3, **kwargs):
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](in_channels=in_channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {name!r}: bad model.kwargs ({exc})") from None
