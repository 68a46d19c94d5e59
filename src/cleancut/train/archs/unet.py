"""U-Net: an encoder-decoder (autoencoder family) with skip connections.

``width`` is the first stage's channels (doubled per stage), ``depth`` the number of downsampling
stages; ``separable`` swaps the 3x3 convs for depthwise-separable ones (much cheaper on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from . import register
from ._base import Segmenter
from ._blocks import ConvBNReLU, SeparableConv, upsample_like


def _double(cin: int, cout: int, separable: bool) -> nn.Sequential:
    conv = SeparableConv if separable else ConvBNReLU
    return nn.Sequential(conv(cin, cout), conv(cout, cout))


@register("unet")
class UNet(Segmenter):
    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 4, separable: bool = False,
                 dropout: float = 0.1, max_width: int = 256):
        super().__init__()
        widths = [min(width * 2 ** i, max_width) for i in range(depth + 1)]
        self.stem = _double(in_channels, widths[0], False)
        self.down = nn.ModuleList(_double(widths[i], widths[i + 1], separable) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(_double(widths[i + 1] + widths[i], widths[i], separable) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x):
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = self.dropout(skips.pop())
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([upsample_like(y, skip), skip], dim=1))
        return self.head(y)
