"""The contract of an architecture, as a base class with every hook named.

An architecture is an ``nn.Module`` subclass of :class:`Segmenter`, registered with
``@register("name")`` and built as ``Model(in_channels=3, **kwargs)``:

* ``forward(x)`` takes a normalised ``[N, C, H, W]`` batch and returns foreground *logits*: one
  tensor ``[N, 1, h, w]``, or a list with the main output first and deep-supervision outputs after
  (any resolution: the loss and the exporter upsample to the input size);
* ``encoder``: the backbone that ImageNet weights, ``optim.encoder_lr_mult`` and
  ``train.freeze_encoder_epochs`` apply to, or None for an architecture trained from scratch;
* ``load_pretrained(source)``: load those weights into the encoder and say what was loaded
  (``model.pretrained``); an architecture without an encoder refuses with a ConfigError;
* ``size_multiple``: input height and width must be multiples of it; ``free_input_size``: any
  such size works with the same weights (what ``cleancut export --keep-aspect`` needs).
"""

from __future__ import annotations

from torch import nn

from ...errors import ConfigError


class Segmenter(nn.Module):
    """Base class of every registered architecture (see the module docstring)."""

    arch_name = "unregistered"
    size_multiple = 32
    free_input_size = True

    @property
    def encoder(self) -> nn.Module | None:
        return self._modules.get("encoder")

    def load_pretrained(self, source: str = "auto") -> str:
        encoder = self.encoder
        if encoder is None or not hasattr(encoder, "load_pretrained"):
            raise ConfigError(f"architecture {self.arch_name!r} has no pretrained encoder; model.pretrained "
                              "applies to architectures with one (e.g. litefpn)")
        return encoder.load_pretrained(source)
