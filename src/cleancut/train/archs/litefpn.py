"""LiteFPN: an ImageNet-pretrained EfficientNet-Lite encoder with a light top-down decoder.

- Encoder: ``_encoders.EfficientNetLite`` (features at strides 2 ... 32); ``model.pretrained``
  loads its ImageNet weights (see ``Trainer``), which is what lets the model know objects its
  segmentation data never showed it.
- Context: pyramid pooling on the stride-32 features (as in CutNet).
- Decoder: top-down path through strides 16, 8, 4, 2; each step adds a projected encoder skip to
  the upsampled coarser map and refines with a separable conv; its width narrows towards the
  fine levels (``decoder``, ``decoder``, 3/4, 1/2) to keep the high-resolution steps cheap.
- Deep supervision: a logit head per decoder level; inference uses the finest (stride 2).
- Detail branch (``detail`` channels, 0 = none): the photo's own pixels at full resolution (one
  3x3 conv at stride 1), fused with the stride-2 decoder map enlarged to them (a separable conv),
  and a logit head there, which becomes the main output (the stride-2 head stays as deep
  supervision). The network then draws its edge at the resolution it is given, instead of at
  half of it stretched twice (issue 31: edges within a pixel or two of the photo's).

Input sizes must be multiples of 32 (the stride-32 map); the pyramid pooling exports as exact
adaptive pooling at any such size.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register
from ._base import Segmenter
from ._blocks import ConvBNReLU, PyramidPooling, SeparableConv, decode_top_down, upsample_like
from ._encoders import build_encoder


@register("litefpn")
class LiteFPN(Segmenter):
    def __init__(self, in_channels: int = 3, encoder: str = "efficientnet-lite0", decoder: int = 64,
                 dropout: float = 0.1, deep_supervision: bool = True, detail: int = 0):
        super().__init__()
        self.encoder = build_encoder(encoder, in_channels)
        skips = self.encoder.out_channels[:-1]  # strides 2, 4, 8, 16
        widths = [decoder, decoder, max(8, decoder * 3 // 4 // 8 * 8), max(8, decoder // 2 // 8 * 8)]  # s16 .. s2
        self.context = PyramidPooling(self.encoder.out_channels[-1], decoder)
        self.dropout = nn.Dropout2d(dropout)
        prev = [decoder] + widths[:-1]
        self.proj = nn.ModuleList(ConvBNReLU(s, p, 1) for s, p in zip(reversed(skips), prev))
        self.fuse = nn.ModuleList(SeparableConv(p, w) for p, w in zip(prev, widths))
        self.heads = nn.ModuleList(nn.Conv2d(w, 1, 3, padding=1) for w in widths)
        self.deep_supervision = deep_supervision
        self.detail = None
        if detail:
            self.detail = nn.ModuleDict({
                "photo": ConvBNReLU(in_channels, detail, 3),
                "fuse": SeparableConv(widths[-1] + detail, detail),
                "head": nn.Conv2d(detail, 1, 3, padding=1),
            })

    def forward(self, x):
        feats = self.encoder(x)
        y = self.dropout(self.context(feats.pop()))
        fine: list = []
        outs = decode_top_down(y, feats, self.proj, self.fuse, self.heads, fine)  # finest (main) first
        if self.detail is not None:
            pixels = self.detail["photo"](x)
            z = self.detail["fuse"](torch.cat([upsample_like(fine[0], pixels), pixels], 1))
            outs = [self.detail["head"](z)] + outs
        return outs if (self.training and self.deep_supervision) else outs[0]
