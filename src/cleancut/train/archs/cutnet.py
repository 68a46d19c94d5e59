"""CutNet: cleancut's default architecture, designed for fast CPU inference.

- Encoder: MobileNetV2-style inverted-residual stages (stride 2 ... 32), cheap depthwise convs.
- Multi-scale context: a pyramid pooling module on the stride-32 features (global, 2x2 and 4x4
  average pools), so that every pixel sees the whole image when deciding "subject or not".
- Decoder: top-down path with skip connections from every encoder stage (stride 16, 8, 4, 2),
  each step an upsample + projected skip + separable conv.
- Deep supervision: a logit head on every decoder stage; training supervises all of them,
  inference uses only the finest (main) one.

Input sizes must be multiples of 32 (the stride-32 map); the pyramid pooling exports as exact
adaptive pooling at any such size (256 is the default).
"""

from __future__ import annotations

from torch import nn

from . import register
from ._base import Segmenter
from ._blocks import ConvBNReLU, PyramidPooling, SeparableConv, decode_top_down


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4, dilation: int = 1):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBNReLU(cin, hidden, 1),
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden, dilation=dilation),
            ConvBNReLU(hidden, cout, 1, act=False),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


@register("cutnet")
class CutNet(Segmenter):
    def __init__(self, in_channels: int = 3, width: float = 1.0, decoder: int = 48, expand: int = 4,
                 dropout: float = 0.1, deep_supervision: bool = True):
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        # (channels, blocks, stride) per encoder stage after the stem
        plan = [(ch(24), 2, 2), (ch(32), 3, 2), (ch(64), 3, 2), (ch(96), 3, 2)]
        self.stem = nn.Sequential(ConvBNReLU(in_channels, ch(16), 3, 2), SeparableConv(ch(16), ch(16)))
        stages, c = [], ch(16)
        for cout, blocks, stride in plan:
            layers = [InvertedResidual(c, cout, stride, expand)]
            layers += [InvertedResidual(cout, cout, 1, expand) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c = cout
        self.stages = nn.ModuleList(stages)
        self.context = PyramidPooling(c, decoder)
        self.dropout = nn.Dropout2d(dropout)
        skips = [ch(16)] + [p[0] for p in plan[:-1]]  # stride 2, 4, 8, 16
        self.proj = nn.ModuleList(ConvBNReLU(s, decoder, 1) for s in reversed(skips))
        self.fuse = nn.ModuleList(SeparableConv(decoder, decoder) for _ in skips)
        self.heads = nn.ModuleList(nn.Conv2d(decoder, 1, 3, padding=1) for _ in skips)
        self.deep_supervision = deep_supervision

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        y = self.dropout(self.context(feats.pop()))
        outs = decode_top_down(y, feats, self.proj, self.fuse, self.heads)  # finest (main) first
        return outs if (self.training and self.deep_supervision) else outs[0]
