"""The baseline: a classic CNN *classifier* (conv + pool blocks, fully-connected layers, sigmoid)
that labels an image patch as foreground or background.

The classifier sees a ``patch`` x ``patch`` window. Its fully-connected layers are written as
convolutions (the first one's kernel spans the whole feature window, the others are 1x1), which is
exactly the same function as flatten + Linear but lets the classifier slide over the image: one
forward pass classifies every patch on a grid with stride 2**blocks (OverFeat-style dense
classification). The coarse grid of patch probabilities is upsampled to a mask.
"""

from __future__ import annotations

from torch import nn

from . import register
from ._base import Segmenter
from ._blocks import ConvBNReLU


@register("cnn")
class PatchCNN(Segmenter):
    def __init__(self, in_channels: int = 3, width: int = 32, blocks: int = 4, window: int = 3,
                 fc: int = 128, dropout: float = 0.3):
        super().__init__()
        self.size_multiple = 2 ** blocks  # the feature grid's stride
        layers, c = [], in_channels
        for i in range(blocks):  # conv + pool blocks
            cout = width * 2 ** min(i, 3)
            layers += [ConvBNReLU(c, cout), ConvBNReLU(cout, cout), nn.MaxPool2d(2)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.patch = window * 2 ** blocks  # pixels one classification looks at (plus receptive halo)
        # fully-connected classifier over a window x window block of features, as convolutions
        self.classifier = nn.Sequential(
            nn.Conv2d(c, fc, window, padding=window // 2),  # FC 1 (over the flattened window)
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc, fc, 1),  # FC 2
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc, 1, 1),  # FC 3 -> one logit (sigmoid at inference)
        )

    def forward(self, x):
        return self.classifier(self.features(x))
