"""The contract of a method plugged into :class:`~cleancut.train.loop.Trainer` (adversarial
training, Optuna pruning, ...) without forking the loop. The loop and the methods import this
module; the loop never imports a method (:func:`cleancut.train.methods.plugins_for` builds the
plugins a config asks for), so there is no cycle between them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .loop import Trainer


class Plugin:
    """A method plugged into :class:`Trainer` (adversarial training, Optuna pruning...) without
    forking the loop. Every hook is optional; ``state_dict`` goes into the checkpoints (under
    ``plugins/<name>``) so that ``--resume`` restores it exactly."""

    name = "plugin"

    def setup(self, trainer: "Trainer") -> None:
        """Called once in ``Trainer.__init__``, after the model is built and before a resume."""

    def loss(self, trainer: "Trainer", images, targets, outputs):
        """A term added to the segmenter's loss of this step (or None)."""
        return None

    def after_step(self, trainer: "Trainer", images, targets, outputs) -> None:
        """Called after the segmenter's optimiser step (e.g. to train a discriminator)."""

    def epoch_metrics(self, trainer: "Trainer") -> dict[str, float]:
        """Figures merged into the epoch's log row (this process's values)."""
        return {}

    def epoch_end(self, trainer: "Trainer", row: dict) -> None:
        """Called after the epoch is validated, logged and checkpointed; may raise to stop the run."""

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

