"""The training methods a config switches on, as :class:`~cleancut.train.plugin.Plugin` objects
for :class:`~cleancut.train.loop.Trainer` (``cleancut train`` and ``cleancut tune`` build them here)."""

from __future__ import annotations

from .config import Config
from .plugin import Plugin


def plugins_for(cfg: Config) -> list[Plugin]:
    """The plugins that ``cfg`` itself asks for: :class:`~cleancut.train.adversarial.AdversarialTraining`
    when ``adversarial.weight > 0``."""
    plugins: list[Plugin] = []
    if cfg.adversarial.weight > 0:
        from .adversarial import AdversarialTraining

        plugins.append(AdversarialTraining(cfg.adversarial))
    return plugins
