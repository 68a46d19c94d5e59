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


def decode_top_down(y: torch.Tensor, skips: list[torch.Tensor], proj: nn.ModuleList, fuse: nn.ModuleList,
                    heads: nn.ModuleList, features: list | None = None) -> list[torch.Tensor]:
    """The FPN-style decoder cutnet and litefpn share: from the coarsest map ``y`` through the
    encoder's ``skips`` (coarse to fine: the list is walked in reverse), each step upsampling,
    adding the projected skip and fusing; one logit head per step. Returns the logits finest
    (the main output) first; ``features``, when given, receives the finest step's feature map."""
    outs = []
    for project, merge, head, skip in zip(proj, fuse, heads, reversed(skips)):
        y = merge(upsample_like(y, skip) + project(skip))
        outs.append(head(y))
    outs.reverse()
    if features is not None:
        features.append(y)
    return outs


def _bin_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size) matrix whose row i averages the window AdaptiveAvgPool gives bin i."""
    m = torch.zeros(bins, size, dtype=like.dtype, device=like.device)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_matmul(x: torch.Tensor, bins: int, h: int, w: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, bins)`` for a known spatial size, as ``Mh @ x @ Mw^T``."""
    return torch.matmul(torch.matmul(_bin_matrix(h, bins, x), x), _bin_matrix(w, bins, x).t())


def _bin_matrix_traced(x: torch.Tensor, dim: int, bins: int) -> torch.Tensor:
    """:func:`_bin_matrix` for the size of ``x`` along ``dim`` computed from the tensor itself, so
    that an ONNX export with a free height and width computes it per input (Range, Floor, Ceil)."""
    j = torch.arange(x.shape[dim], device=x.device).to(x.dtype)  # [size]
    n = j[-1:] + 1  # the size, as a tensor
    i = torch.arange(bins, device=x.device).to(x.dtype)[:, None]  # [bins, 1]
    start, end = torch.floor(i * n / bins), torch.ceil((i + 1) * n / bins)
    inside = ((j >= start) & (j < end)).to(x.dtype)
    return inside / (end - start)


class PyramidPooling(nn.Module):
    # set by ``cleancut export --keep-aspect``: compute the pooling matrices from the input's size
    # in the graph instead of baking in the export size
    free_size = False

    def __init__(self, cin: int, cout: int, bins=(1, 2, 4)):
        super().__init__()
        branch = max(cin // 4, 8)
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, branch, 1, bias=False), nn.ReLU(inplace=True)) for b in bins
        )
        self.fuse = ConvBNReLU(cin + branch * len(bins), cout, 1)

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            # the exporter cannot size an adaptive pool whose input size it cannot infer (after an
            # explicit Pad with a dynamic batch); at a fixed export size the pool is two products
            # with constant averaging matrices, exact for any size (a 10x10 map into 4 bins has
            # overlapping windows, which no plain average pool reproduces)
            if self.free_size:
                pooled = [stage[1:](torch.matmul(torch.matmul(_bin_matrix_traced(x, -2, b), x),
                                                 _bin_matrix_traced(x, -1, b).t())) if b > 1 else stage(x)
                          for b, stage in zip(self.bins, self.stages)]
            else:
                h, w = int(x.shape[-2]), int(x.shape[-1])
                pooled = [stage[1:](adaptive_avg_matmul(x, b, h, w)) if b > 1 else stage(x)
                          for b, stage in zip(self.bins, self.stages)]
        else:
            pooled = [stage(x) for stage in self.stages]
        feats = [x] + [upsample_like(p, x) for p in pooled]
        return self.fuse(torch.cat(feats, dim=1))
