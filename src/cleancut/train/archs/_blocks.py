"""Small building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1, act: bool = True):
        pad = dilation * (k - 1) // 2
        layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1: a cheap 3x3 conv for CPU inference."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__(
            ConvBNReLU(cin, cin, 3, stride, groups=cin, dilation=dilation),
            ConvBNReLU(cin, cout, 1),
        )


def upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
